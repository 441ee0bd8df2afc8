//! CQL rows (as the statements select them) to records, and the names
//! enums are stored under.

use super::backend;
use crate::*;

/// How an enum is spelled in a text column: one table per enum.
const CHOICES: [(PresenceChoice, &str); 4] = [
    (PresenceChoice::Auto, "auto"),
    (PresenceChoice::Away, "away"),
    (PresenceChoice::Busy, "busy"),
    (PresenceChoice::Invisible, "invisible"),
];
const RELATIONS: [(Relation, &str); 4] = [
    (Relation::None, "none"),
    (Relation::Friends, "friends"),
    (Relation::RequestSent, "request_sent"),
    (Relation::RequestReceived, "request_received"),
];
const ROLES: [(Role, &str); 3] = [(Role::Owner, "owner"), (Role::Admin, "admin"), (Role::Member, "member")];
const KINDS: [(ChatKind, &str); 2] = [(ChatKind::Direct, "direct"), (ChatKind::Group, "group")];
const LOG_KINDS: [(LogKind, &str); 6] = [
    (LogKind::Message, "message"),
    (LogKind::Edit, "edit"),
    (LogKind::Delete, "delete"),
    (LogKind::Hide, "hide"),
    (LogKind::Receipt, "receipt"),
    (LogKind::Relation, "relation"),
];

/// The stored name of `value` in `table`.
pub(super) fn name<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> &'static str {
    table.iter().find(|(v, _)| *v == value).map_or("", |(_, name)| name)
}

/// The value stored as `stored` in `table`.
pub(super) fn parse<T: Copy>(table: &[(T, &'static str)], stored: &str, what: &str) -> StorageResult<T> {
    table
        .iter()
        .find(|(_, name)| *name == stored)
        .map(|(value, _)| *value)
        .ok_or_else(|| backend(format!("unknown {what} {stored:?} in scylla store")))
}

pub(super) fn choice_name(choice: PresenceChoice) -> &'static str {
    name(&CHOICES, choice)
}
pub(super) fn relation_name(relation: Relation) -> &'static str {
    name(&RELATIONS, relation)
}
pub(super) fn parse_relation(stored: &str) -> StorageResult<Relation> {
    parse(&RELATIONS, stored, "relation")
}
pub(super) fn role_name(role: Role) -> &'static str {
    name(&ROLES, role)
}
pub(super) fn kind_name(kind: ChatKind) -> &'static str {
    name(&KINDS, kind)
}
pub(super) fn parse_kind(stored: &str) -> StorageResult<ChatKind> {
    parse(&KINDS, stored, "chat kind")
}
pub(super) fn log_kind_name(kind: LogKind) -> &'static str {
    name(&LOG_KINDS, kind)
}

/// What an update-log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LogKind {
    Message,
    Edit,
    Delete,
    Hide,
    Receipt,
    Relation,
}

/// `users` as `USER_SELECT` reads it.
pub(super) type UserRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<i64>,
    String,
    String,
);

/// A user's names folded for search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SearchKeys {
    pub(super) username: String,
    pub(super) display_name: String,
}

/// A stored user and its search keys.
pub(super) fn user_record(row: UserRow) -> StorageResult<(UserRecord, SearchKeys)> {
    let (id, username, display_name, password_hash, pepper_version, created_at_ms, bio, avatar, email, phone) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9);
    let pepper_version = u32::try_from(pepper_version)
        .map_err(|_| backend(format!("user {id} has pepper version {pepper_version} out of range")))?;
    let presence = parse(&CHOICES, &row.10, "presence")?;
    let user = UserRecord {
        id,
        username,
        display_name,
        password_hash,
        pepper_version,
        created_at_ms,
        bio,
        avatar,
        email,
        phone,
        presence,
        status_text: row.11,
        last_seen_ms: row.12,
    };
    Ok((user, SearchKeys { username: row.13, display_name: row.14 }))
}

/// `messages` as `MESSAGE_SELECT` reads it.
pub(super) type MessageRow = (i64, i64, i64, String, String, i64, Option<i64>, i64, Option<i64>, Option<String>);

pub(super) fn message_record(row: MessageRow) -> StorageResult<MessageRecord> {
    let (chat_id, id, sender_id, client_msg_id, body, sent_at_ms, edited_at_ms, edit_count, deleted_at_ms, event) = row;
    let edit_count = u32::try_from(edit_count)
        .map_err(|_| backend(format!("message {id} has edit count {edit_count} out of range")))?;
    Ok(MessageRecord {
        id,
        chat_id,
        sender_id,
        client_msg_id,
        body,
        sent_at_ms,
        edited_at_ms,
        edit_count,
        deleted_at_ms,
        event,
    })
}

/// `chats` as `CHAT_SELECT` reads it.
pub(super) type ChatRow =
    (String, i64, Option<i64>, Option<String>, Option<String>, Option<i64>, Option<Vec<i64>>, Option<i64>);

/// A chat row, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChatHead {
    pub(super) id: i64,
    pub(super) kind: ChatKind,
    pub(super) created_at_ms: i64,
    /// Highest message ID stored in the chat (0 for none).
    pub(super) last_message_id: i64,
    /// The group's name, avatar, owner, admins and member count.
    pub(super) group: Option<GroupRecord>,
}

pub(super) fn chat_head(id: i64, row: ChatRow) -> StorageResult<ChatHead> {
    let (kind, created_at_ms, last_message_id, name, avatar, owner, admins, member_count) = row;
    let kind = parse_kind(&kind)?;
    let group = match (kind, name) {
        (ChatKind::Group, Some(name)) => {
            let mut admins = admins.unwrap_or_default();
            admins.sort_unstable();
            let member_count = member_count.unwrap_or(0);
            let member_count = u32::try_from(member_count)
                .map_err(|_| backend(format!("group {id} has member count {member_count} out of range")))?;
            Some(GroupRecord { name, avatar, owner: owner.unwrap_or(0), admins, member_count })
        }
        (ChatKind::Group, None) => return Err(backend(format!("group {id} has no name"))),
        (ChatKind::Direct, _) => None,
    };
    Ok(ChatHead { id, kind, created_at_ms, last_message_id: last_message_id.unwrap_or(0), group })
}

/// `chat_members` as `MEMBER_SELECT` and `MEMBERS_SELECT` read it.
pub(super) type MemberRow = (i64, String, i64, i64, i64, i64);

/// A member row, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) role: Role,
    pub(super) joined_at_ms: i64,
    /// The member sees messages with IDs above this.
    pub(super) history_from: i64,
    pub(super) receipt: ReceiptRecord,
}

pub(super) fn member(row: MemberRow) -> StorageResult<Member> {
    let (user_id, role, joined_at_ms, history_from, delivered_up_to, seen_up_to) = row;
    Ok(Member {
        role: parse(&ROLES, &role, "member role")?,
        joined_at_ms,
        history_from,
        receipt: ReceiptRecord { user_id, delivered_up_to, seen_up_to },
    })
}

/// The whole chat: its row and every member (ascending). The group's owner
/// and admins come from the members' roles.
pub(super) fn chat_record(head: ChatHead, members: &[Member]) -> ChatRecord {
    let group = head.group.map(|group| GroupRecord {
        owner: members.iter().find(|m| m.role == Role::Owner).map_or(group.owner, |m| m.receipt.user_id),
        admins: members.iter().filter(|m| m.role == Role::Admin).map(|m| m.receipt.user_id).collect(),
        ..group
    });
    ChatRecord {
        id: head.id,
        kind: head.kind,
        members: members.iter().map(|m| m.receipt.user_id).collect(),
        created_at_ms: head.created_at_ms,
        group,
    }
}

/// `user_updates` as `LOG_AFTER` reads it.
pub(super) type LogRow = (i64, String, Option<i64>, Option<i64>, Option<i64>, Option<String>);

/// An update-log entry before it is resolved to current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LogEntry {
    /// Names a message: message, edit, delete or hide.
    Message {
        kind: LogKind,
        chat_id: i64,
        message_id: i64,
    },
    /// `reader`'s watermarks in the chat moved.
    Receipt {
        chat_id: i64,
        reader: i64,
    },
    Relation {
        other: i64,
        relation: Relation,
    },
}

pub(super) fn log_entry(row: LogRow) -> StorageResult<(u64, LogEntry)> {
    let (seq, kind, chat_id, message_id, other_id, relation) = row;
    let seq = u64::try_from(seq).map_err(|_| backend(format!("negative seq {seq} in scylla store")))?;
    let missing = |column: &str| backend(format!("update {seq} ({kind}) has no {column}"));
    let entry = match parse(&LOG_KINDS, &kind, "update kind")? {
        LogKind::Receipt => LogEntry::Receipt {
            chat_id: chat_id.ok_or_else(|| missing("chat_id"))?,
            reader: other_id.ok_or_else(|| missing("other_id"))?,
        },
        LogKind::Relation => LogEntry::Relation {
            other: other_id.ok_or_else(|| missing("other_id"))?,
            relation: parse_relation(relation.as_deref().ok_or_else(|| missing("relation"))?)?,
        },
        message_kind => LogEntry::Message {
            kind: message_kind,
            chat_id: chat_id.ok_or_else(|| missing("chat_id"))?,
            message_id: message_id.ok_or_else(|| missing("message_id"))?,
        },
    };
    Ok((seq, entry))
}

impl LogEntry {
    /// The `LOG_INSERT` columns after `(user_id, seq)`.
    pub(super) fn columns(&self) -> (&'static str, Option<i64>, Option<i64>, Option<i64>, Option<&'static str>) {
        match *self {
            LogEntry::Message { kind, chat_id, message_id } => {
                (log_kind_name(kind), Some(chat_id), Some(message_id), None, None)
            }
            LogEntry::Receipt { chat_id, reader } => {
                (log_kind_name(LogKind::Receipt), Some(chat_id), None, Some(reader), None)
            }
            LogEntry::Relation { other, relation } => {
                (log_kind_name(LogKind::Relation), None, None, Some(other), Some(relation_name(relation)))
            }
        }
    }
}

/// `relation_pairs` as `PAIR_SELECT` reads it.
pub(super) type PairRow = (Option<String>, Option<i64>, Option<i64>, Option<i64>, i64);

/// The state of a pair `lo < hi`: the relation as `lo` sees it, since
/// when, and when each side started blocking the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pair {
    pub(super) relation: Relation,
    pub(super) since_ms: i64,
    pub(super) lo_blocks_since: Option<i64>,
    pub(super) hi_blocks_since: Option<i64>,
    /// Compare-and-set guard; 0 for a pair with no row yet.
    pub(super) version: i64,
}

pub(super) fn pair(row: PairRow) -> StorageResult<Pair> {
    let (relation, since_ms, lo_blocks_since, hi_blocks_since, version) = row;
    Ok(Pair {
        relation: relation.as_deref().map(parse_relation).transpose()?.unwrap_or_default(),
        since_ms: since_ms.unwrap_or(0),
        lo_blocks_since,
        hi_blocks_since,
        version,
    })
}

impl Pair {
    /// How `user` (one of the pair; `lo` is the lower ID) sees the pair.
    pub(super) fn view_of(&self, user: i64, lo: i64) -> RelationView {
        let (relation, mine, theirs) = if user == lo {
            (self.relation, self.lo_blocks_since, self.hi_blocks_since)
        } else {
            (relation::mirror(self.relation), self.hi_blocks_since, self.lo_blocks_since)
        };
        RelationView { relation, blocking: mine.is_some(), blocked_by: theirs.is_some() }
    }

    /// The pair after `user` moved to `view` at `now_ms`: a changed
    /// relation starts its `since`, a new block its own.
    pub(super) fn after(&self, user: i64, lo: i64, view: RelationView, now_ms: i64) -> Pair {
        let before = self.view_of(user, lo);
        let relation = if user == lo { view.relation } else { relation::mirror(view.relation) };
        let since_ms = if view.relation == before.relation { self.since_ms } else { now_ms };
        let mine = match (before.blocking, view.blocking) {
            (false, true) => Some(now_ms),
            (_, false) => None,
            (true, true) => {
                if user == lo {
                    self.lo_blocks_since
                } else {
                    self.hi_blocks_since
                }
            }
        };
        let (lo_blocks_since, hi_blocks_since) =
            if user == lo { (mine, self.hi_blocks_since) } else { (self.lo_blocks_since, mine) };
        Pair { relation, since_ms, lo_blocks_since, hi_blocks_since, version: self.version + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_row() -> UserRow {
        (
            7,
            "Zoë".into(),
            "Zoë Z".into(),
            "$argon2id$…".into(),
            2,
            100,
            "hi".into(),
            Some("avatars/7".into()),
            None,
            Some("+15550100".into()),
            "busy".into(),
            "out".into(),
            Some(555),
            "zoë".into(),
            "zoe z".into(),
        )
    }

    #[test]
    fn user_rows_map_every_column() -> StorageResult<()> {
        let (user, key) = user_record(user_row())?;
        assert_eq!(key, SearchKeys { username: "zoë".into(), display_name: "zoe z".into() });
        assert_eq!(user.id, 7);
        assert_eq!(user.username, "Zoë");
        assert_eq!(user.display_name, "Zoë Z");
        assert_eq!(user.pepper_version, 2);
        assert_eq!(user.created_at_ms, 100);
        assert_eq!(user.bio, "hi");
        assert_eq!(user.avatar.as_deref(), Some("avatars/7"));
        assert_eq!(user.email, None);
        assert_eq!(user.phone.as_deref(), Some("+15550100"));
        assert_eq!(user.presence, PresenceChoice::Busy);
        assert_eq!(user.status_text, "out");
        assert_eq!(user.last_seen_ms, Some(555));
        Ok(())
    }

    #[test]
    fn corrupt_user_rows_are_backend_errors_not_panics() {
        let mut row = user_row();
        row.4 = -1;
        assert!(matches!(user_record(row), Err(StorageError::Backend(_))));
        let mut row = user_row();
        row.10 = "sleepy".into();
        assert!(matches!(user_record(row), Err(StorageError::Backend(_))));
    }

    #[test]
    fn message_rows_map_and_reject_negative_edit_counts() -> StorageResult<()> {
        let row: MessageRow = (1, 2, 3, "c".into(), "b".into(), 4, Some(5), 6, None, Some("{}".into()));
        let message = message_record(row.clone())?;
        assert_eq!((message.chat_id, message.id, message.sender_id), (1, 2, 3));
        assert_eq!((message.edited_at_ms, message.edit_count, message.deleted_at_ms), (Some(5), 6, None));
        assert_eq!(message.event.as_deref(), Some("{}"));
        assert!(message_record((row.0, row.1, row.2, row.3, row.4, row.5, row.6, -1, row.8, row.9)).is_err());
        Ok(())
    }

    #[test]
    fn groups_take_owner_and_admins_from_member_roles() -> StorageResult<()> {
        let row: ChatRow = ("group".into(), 10, Some(99), Some("g".into()), None, Some(1), Some(vec![3, 2]), Some(3));
        let head = chat_head(5, row)?;
        assert_eq!(head.last_message_id, 99);
        assert_eq!(head.group.as_ref().map(|g| g.admins.clone()), Some(vec![2, 3]), "sorted");
        let members = [(1, "admin"), (2, "owner"), (3, "member")]
            .map(|(user_id, role)| member((user_id, role.into(), 10, 0, 0, 0)))
            .into_iter()
            .collect::<StorageResult<Vec<_>>>()?;
        let chat = chat_record(head, &members);
        assert_eq!(chat.members, vec![1, 2, 3]);
        let group = chat.group.ok_or_else(|| backend("no group".into()))?;
        assert_eq!((group.owner, group.admins, group.member_count), (2, vec![1], 3));
        Ok(())
    }

    #[test]
    fn direct_chats_have_no_group_and_nameless_groups_are_errors() -> StorageResult<()> {
        let head = chat_head(5, ("direct".into(), 10, None, None, None, None, None, None))?;
        assert_eq!((head.group, head.last_message_id), (None, 0));
        assert!(chat_head(5, ("group".into(), 10, None, None, None, None, None, None)).is_err());
        assert!(chat_head(5, ("channel".into(), 10, None, None, None, None, None, None)).is_err());
        Ok(())
    }

    #[test]
    fn log_entries_round_trip_through_their_columns() -> StorageResult<()> {
        let entries = [
            LogEntry::Message { kind: LogKind::Edit, chat_id: 1, message_id: 2 },
            LogEntry::Receipt { chat_id: 1, reader: 3 },
            LogEntry::Relation { other: 4, relation: Relation::RequestReceived },
        ];
        for (seq, entry) in entries.into_iter().enumerate() {
            let (kind, chat_id, message_id, other_id, relation) = entry.columns();
            let row = (seq as i64, kind.to_owned(), chat_id, message_id, other_id, relation.map(str::to_owned));
            assert_eq!(log_entry(row)?, (seq as u64, entry));
        }
        assert!(log_entry((1, "message".into(), Some(1), None, None, None)).is_err(), "no message_id");
        assert!(log_entry((1, "poke".into(), None, None, None, None)).is_err());
        Ok(())
    }

    #[test]
    fn pairs_are_seen_mirrored_from_the_higher_side() {
        let pair = Pair { relation: Relation::RequestSent, since_ms: 5, hi_blocks_since: Some(6), ..Pair::default() };
        assert_eq!(
            pair.view_of(1, 1),
            RelationView { relation: Relation::RequestSent, blocking: false, blocked_by: true }
        );
        assert_eq!(
            pair.view_of(2, 1),
            RelationView { relation: Relation::RequestReceived, blocking: true, blocked_by: false }
        );
    }

    #[test]
    fn pair_changes_keep_or_restart_their_times() {
        let pair = Pair { relation: Relation::RequestReceived, since_ms: 5, ..Pair::default() };
        // The higher side accepts: friends from now, seen the same from both sides.
        let friends = pair.after(2, 1, RelationView { relation: Relation::Friends, ..RelationView::default() }, 9);
        assert_eq!((friends.relation, friends.since_ms, friends.version), (Relation::Friends, 9, 1));
        // The lower side blocks: the block starts now, the relation ends.
        let blocked = friends.after(1, 1, RelationView { blocking: true, ..RelationView::default() }, 11);
        assert_eq!((blocked.relation, blocked.since_ms, blocked.lo_blocks_since), (Relation::None, 11, Some(11)));
        // Blocking again would keep the time; unblocking clears it.
        let kept = blocked.after(1, 1, RelationView { blocking: true, ..RelationView::default() }, 20);
        assert_eq!(kept.lo_blocks_since, Some(11));
        assert_eq!(blocked.after(1, 1, RelationView::default(), 30).lo_blocks_since, None);
    }
}
