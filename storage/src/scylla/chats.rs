//! Chats, members, messages and update logs in Scylla.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;

use super::relations::limit;
use super::rows::{
    self, ChatHead, ChatRow, LogEntry, LogKind, LogRow, Member, MemberRow, MessageRow, kind_name, role_name,
};
use super::statements::*;
use super::{CAS_ATTEMPTS, OrBackend, ScyllaStore, Writes, backend};
use crate::*;

/// `users` once each, in their first order.
fn distinct(users: &[i64]) -> Vec<i64> {
    let mut seen = HashSet::with_capacity(users.len());
    users.iter().copied().filter(|user| seen.insert(*user)).collect()
}

/// The watermarks after a read up to `up_to` (capped at `newest`), never lower.
fn moved(before: ReceiptRecord, up_to: i64, newest: i64, seen: bool) -> ReceiptRecord {
    let cap = up_to.min(newest);
    ReceiptRecord {
        user_id: before.user_id,
        delivered_up_to: before.delivered_up_to.max(cap),
        seen_up_to: if seen { before.seen_up_to.max(cap) } else { before.seen_up_to },
    }
}

/// The message IDs a move of watermarks covers: `(low, high]`.
fn covered(before: ReceiptRecord, after: ReceiptRecord) -> (i64, i64) {
    let moves = [(before.delivered_up_to, after.delivered_up_to), (before.seen_up_to, after.seen_up_to)];
    let moves = moves.iter().filter(|(old, new)| old != new);
    (moves.clone().map(|(old, _)| *old).min().unwrap_or(0), moves.map(|(_, new)| *new).max().unwrap_or(0))
}

/// Sort key of a chat overview: newest activity first, IDs break ties.
fn activity(overview: &ChatOverview) -> (i64, i64) {
    match &overview.last_message {
        Some(message) => (message.sent_at_ms, message.id),
        None => (overview.chat.created_at_ms, overview.chat.id),
    }
}

impl ScyllaStore {
    // ------------------------------------------------------------ update logs

    async fn latest(&self, user_id: i64) -> StorageResult<u64> {
        let seq = self.row::<1, (i64,)>(LOG_LATEST, (user_id,)).await?.map_or(0, |(seq,)| seq);
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Appends `entry` to the user's log at the next free seq: an LWT
    /// insert that only one writer of a seq wins.
    pub(super) async fn log(&self, user_id: i64, entry: LogEntry) -> StorageResult<u64> {
        let (kind, chat_id, message_id, other_id, relation) = entry.columns();
        let mut seq = self.latest(user_id).await? + 1;
        for _ in 0..CAS_ATTEMPTS {
            let at = i64::try_from(seq).map_err(|_| backend(format!("seq of user {user_id} overflows")))?;
            if self.lwt(LOG_INSERT, (user_id, at, kind, chat_id, message_id, other_id, relation)).await?.applied {
                return Ok(seq);
            }
            seq = (seq + 1).max(self.latest(user_id).await? + 1);
        }
        Err(backend(format!("update log of user {user_id}: too much contention")))
    }

    /// [`ScyllaStore::log`] for each of `users`, concurrently; seqs in `users`' order.
    async fn log_all(&self, users: &[i64], entry: LogEntry) -> StorageResult<Vec<(i64, u64)>> {
        let entry = &entry;
        self.for_each(users.iter().copied(), |user| async move { Ok((user, self.log(user, entry.clone()).await?)) })
            .await
    }

    // ------------------------------------------------------------ reads

    async fn load_head(&self, chat_id: i64) -> StorageResult<Option<ChatHead>> {
        self.row::<1, ChatRow>(CHAT_SELECT, (chat_id,)).await?.map(|row| rows::chat_head(chat_id, row)).transpose()
    }

    async fn existing_head(&self, chat_id: i64) -> StorageResult<ChatHead> {
        self.load_head(chat_id).await?.ok_or_else(|| StorageError::NotFound(format!("chat {chat_id}")))
    }

    /// Every member of the chat, by user ID ascending.
    pub(super) async fn load_members(&self, chat_id: i64) -> StorageResult<Vec<Member>> {
        self.all::<1, MemberRow>(MEMBERS_SELECT, (chat_id,)).await?.into_iter().map(rows::member).collect()
    }

    async fn load_member(&self, chat_id: i64, user_id: i64) -> StorageResult<Option<Member>> {
        self.row::<2, MemberRow>(MEMBER_SELECT, (chat_id, user_id)).await?.map(rows::member).transpose()
    }

    async fn load_chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
        let Some(head) = self.load_head(chat_id).await? else { return Ok(None) };
        Ok(Some(rows::chat_record(head, &self.load_members(chat_id).await?)))
    }

    async fn load_message(&self, chat_id: i64, message_id: i64) -> StorageResult<Option<MessageRecord>> {
        self.row::<2, MessageRow>(MESSAGE_SELECT, (chat_id, message_id)).await?.map(rows::message_record).transpose()
    }

    async fn existing_message(&self, chat_id: i64, message_id: i64) -> StorageResult<MessageRecord> {
        self.load_message(chat_id, message_id)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("message {message_id} in chat {chat_id}")))
    }

    /// IDs of the messages `user_id` hid in the chat within `(lower, upper)`.
    async fn hidden(&self, user_id: i64, chat_id: i64, upper: i64, lower: i64) -> StorageResult<HashSet<i64>> {
        let rows: Vec<(i64,)> = self.all(HIDDEN_BETWEEN, (user_id, chat_id, upper, lower)).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// How many groups the user is in.
    async fn groups_of(&self, user_id: i64) -> StorageResult<u32> {
        let chats: Vec<(i64, String)> = self.all(CHATS_OF_USER, (user_id,)).await?;
        let groups = chats.iter().filter(|(_, kind)| kind == kind_name(ChatKind::Group)).count();
        Ok(u32::try_from(groups).unwrap_or(u32::MAX))
    }

    /// The first of `users` who is in `max` groups already, if any.
    async fn over_group_limit(&self, users: &[i64], max: u32) -> StorageResult<Option<GroupRefusal>> {
        let counts = self.for_each(users.iter().copied(), |user| self.groups_of(user)).await?;
        Ok(users
            .iter()
            .zip(counts)
            .find(|(_, count)| *count >= max)
            .map(|(&user_id, _)| GroupRefusal::TooManyGroups { user_id }))
    }

    /// The chat as listed for `user_id`; `None` if it is gone or they left.
    async fn overview(&self, user_id: i64, chat_id: i64) -> StorageResult<Option<ChatOverview>> {
        let Some(head) = self.load_head(chat_id).await? else { return Ok(None) };
        let Some(me) = self.load_member(chat_id, user_id).await? else { return Ok(None) };
        let receipts: Vec<ReceiptRecord> = match head.kind {
            ChatKind::Direct => self.load_members(chat_id).await?.iter().map(|m| m.receipt).collect(),
            ChatKind::Group => vec![me.receipt],
        };
        let last_message = match head.last_message_id {
            0 => None,
            id => self.load_message(chat_id, id).await?,
        };
        // Unread: others' messages after the seen watermark and the join.
        let lower = me.receipt.seen_up_to.max(me.history_from);
        let hidden = self.hidden(user_id, chat_id, i64::MAX, lower).await?;
        let mut unread = 0u32;
        self.scan::<3, MessageRow>(MESSAGES_BETWEEN, (chat_id, i64::MAX, lower), |row| {
            let (id, sender_id, deleted_at_ms, event) = (row.1, row.2, row.8, &row.9);
            if sender_id != user_id && deleted_at_ms.is_none() && event.is_none() && !hidden.contains(&id) {
                unread = unread.saturating_add(1);
            }
            Ok(true)
        })
        .await?;
        let chat = ChatRecord {
            id: chat_id,
            kind: head.kind,
            members: receipts.iter().map(|r| r.user_id).collect(),
            created_at_ms: head.created_at_ms,
            group: head.group,
        };
        Ok(Some(ChatOverview { chat, last_message, unread, receipts }))
    }

    /// Who hears of a reader's watermarks moving: in a 1:1 chat both
    /// members; in a group the reader and the current members who sent a
    /// message in the range the move covers.
    async fn receipt_audience(
        &self,
        head: &ChatHead,
        before: ReceiptRecord,
        after: ReceiptRecord,
    ) -> StorageResult<Vec<i64>> {
        let members: BTreeSet<i64> = self.load_members(head.id).await?.iter().map(|m| m.receipt.user_id).collect();
        let mut audience: BTreeSet<i64> = match head.kind {
            ChatKind::Direct => members,
            ChatKind::Group => {
                let (low, high) = covered(before, after);
                let mut senders = BTreeSet::new();
                self.scan::<3, MessageRow>(MESSAGES_BETWEEN, (head.id, high.saturating_add(1), low), |row| {
                    senders.insert(row.2);
                    Ok(true)
                })
                .await?;
                senders.intersection(&members).copied().collect()
            }
        };
        audience.insert(after.user_id);
        Ok(audience.into_iter().collect())
    }

    // ------------------------------------------------------------ writes

    /// Writes a message and moves the chat's newest-message pointer, in one
    /// logged batch. [`StorageError::NotFound`] for an unknown chat.
    async fn store_message(&self, message: NewMessage) -> StorageResult<MessageRecord> {
        let head = self.existing_head(message.chat_id).await?;
        let mut writes = Writes::default();
        writes.push(
            MESSAGE_INSERT,
            (
                message.chat_id,
                message.id,
                message.sender_id,
                message.client_msg_id.clone(),
                message.body.clone(),
                message.sent_at_ms,
                0i64,
                message.event.clone(),
            ),
        );
        if message.id > head.last_message_id {
            writes.push(CHAT_SET_LAST_MESSAGE, (message.id, message.chat_id));
        }
        self.write(writes).await?;
        Ok(message.into_record())
    }

    /// Stores one message of an append, or finds its earlier copy.
    async fn append_one(&self, message: NewMessage, recipients: &[i64]) -> StorageResult<AppendOutcome> {
        let (sender_id, client_msg_id) = (message.sender_id, message.client_msg_id.clone());
        let claim = self.lwt(CLIENT_CLAIM, (sender_id, client_msg_id.clone(), message.chat_id, message.id)).await?;
        let message = if claim.applied {
            self.store_message(message).await?
        } else {
            let claimed = claim.bigint("chat_id").zip(claim.bigint("message_id"));
            let (chat_id, message_id) =
                claimed.ok_or_else(|| backend(format!("claim of ({sender_id}, {client_msg_id:?}) has no message")))?;
            let stored = self.load_message(chat_id, message_id).await?;
            match stored {
                Some(stored) if claim.boolean("logged") == Some(true) => {
                    return Ok(AppendOutcome::Duplicate { message: stored });
                }
                Some(stored) => stored,
                // The claimer died before storing it: complete it under the claimed ID.
                None => self.store_message(NewMessage { id: message_id, chat_id, ..message }).await?,
            }
        };
        let entry = LogEntry::Message { kind: LogKind::Message, chat_id: message.chat_id, message_id: message.id };
        let seqs = self.log_all(recipients, entry).await?;
        self.lwt(CLIENT_LOGGED, (sender_id, client_msg_id)).await?;
        Ok(AppendOutcome::Appended { message, seqs })
    }

    /// The writes of one group change, or why it is refused.
    async fn group_change_writes(
        &self,
        chat: &ChatRecord,
        head: &ChatHead,
        change: GroupChange,
        now_ms: i64,
    ) -> StorageResult<Result<(Writes, Option<String>), GroupRefusal>> {
        let chat_id = chat.id;
        let member_count = i64::try_from(chat.members.len()).unwrap_or(i64::MAX);
        let require_member = |user_id: i64| {
            if chat.members.contains(&user_id) {
                Ok(())
            } else {
                Err(StorageError::NotFound(format!("member {user_id} of chat {chat_id}")))
            }
        };
        let mut writes = Writes::default();
        let mut previous_avatar = None;
        match change {
            GroupChange::Rename(name) => writes.push(CHAT_SET_NAME, (name, chat_id)),
            GroupChange::SetAvatar(avatar) => {
                previous_avatar = chat.group.as_ref().and_then(|group| group.avatar.clone());
                writes.push(CHAT_SET_AVATAR, (avatar, chat_id));
            }
            GroupChange::AddMembers { users, max_groups_per_user } => {
                self.require_users(&users).await?;
                if let Some(refusal) = self.over_group_limit(&users, max_groups_per_user).await? {
                    return Ok(Err(refusal));
                }
                let history_from = head.last_message_id;
                for &user_id in &users {
                    writes.push(
                        MEMBER_INSERT,
                        (chat_id, user_id, role_name(Role::Member), now_ms, history_from, 0i64, 0i64),
                    );
                    writes.push(CHAT_OF_USER_INSERT, (user_id, chat_id, kind_name(ChatKind::Group)));
                }
                let added = i64::try_from(users.len()).unwrap_or(i64::MAX);
                writes.push(CHAT_SET_MEMBER_COUNT, (member_count.saturating_add(added), chat_id));
            }
            GroupChange::RemoveMember(user_id) => {
                require_member(user_id)?;
                writes.push(MEMBER_DELETE, (chat_id, user_id));
                writes.push(CHAT_OF_USER_DELETE, (user_id, chat_id));
                writes.push(CHAT_REMOVE_ADMINS, (vec![user_id], chat_id));
                writes.push(CHAT_SET_MEMBER_COUNT, (member_count - 1, chat_id));
            }
            GroupChange::SetRole { user_id, role } => {
                require_member(user_id)?;
                writes.push(MEMBER_SET_ROLE, (role_name(role), chat_id, user_id));
                match role {
                    Role::Admin => writes.push(CHAT_ADD_ADMINS, (vec![user_id], chat_id)),
                    Role::Member => writes.push(CHAT_REMOVE_ADMINS, (vec![user_id], chat_id)),
                    Role::Owner => {
                        writes.push(CHAT_REMOVE_ADMINS, (vec![user_id], chat_id));
                        writes.push(CHAT_SET_OWNER, (user_id, chat_id));
                    }
                }
            }
            GroupChange::TransferOwnership(user_id) => {
                require_member(user_id)?;
                if let Some(owner) = chat.group.as_ref().map(|group| group.owner) {
                    require_member(owner)?;
                    writes.push(MEMBER_SET_ROLE, (role_name(Role::Admin), chat_id, owner));
                    writes.push(CHAT_ADD_ADMINS, (vec![owner], chat_id));
                }
                writes.push(MEMBER_SET_ROLE, (role_name(Role::Owner), chat_id, user_id));
                writes.push(CHAT_REMOVE_ADMINS, (vec![user_id], chat_id));
                writes.push(CHAT_SET_OWNER, (user_id, chat_id));
            }
        }
        Ok(Ok((writes, previous_avatar)))
    }

    /// Stores a group's event message and logs it to `before`'s and the
    /// chat's current members.
    async fn record_group_event(
        &self,
        chat_id: i64,
        before: &[i64],
        event: NewMessage,
        previous_avatar: Option<String>,
    ) -> StorageResult<GroupChanged> {
        let message = self.store_message(event).await?;
        let chat = self.load_chat(chat_id).await?.ok_or_else(|| StorageError::NotFound(format!("chat {chat_id}")))?;
        let audience: BTreeSet<i64> = before.iter().chain(&chat.members).copied().collect();
        let audience: Vec<i64> = audience.into_iter().collect();
        let entry = LogEntry::Message { kind: LogKind::Message, chat_id, message_id: message.id };
        let seqs = self.log_all(&audience, entry).await?;
        Ok(GroupChanged { chat, message, seqs, previous_avatar })
    }
}

#[async_trait]
impl ChatStore for ScyllaStore {
    async fn direct_chat(&self, a: i64, b: i64, new_id: i64, now_ms: i64) -> StorageResult<ChatRecord> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let found = self.row::<2, (i64,)>(DIRECT_SELECT, (lo, hi)).await?;
        if let Some((chat_id,)) = found {
            return self.load_chat(chat_id).await?.ok_or_else(|| backend(format!("direct chat {chat_id} has no row")));
        }
        // A user's chat with themselves has one member.
        let members = if lo == hi { vec![lo] } else { vec![lo, hi] };
        let direct = kind_name(ChatKind::Direct);
        let mut writes = Writes::default();
        writes.push(CHAT_INSERT, (new_id, direct, now_ms));
        for &user_id in &members {
            writes.push(MEMBER_INSERT, (new_id, user_id, role_name(Role::Member), now_ms, 0i64, 0i64, 0i64));
        }
        self.write(writes).await?;
        let claim = self.lwt(DIRECT_CLAIM, (lo, hi, new_id)).await?;
        let chat_id = match claim.applied {
            true => new_id,
            false => {
                claim.bigint("chat_id").ok_or_else(|| backend(format!("direct chat of {lo} and {hi} has no ID")))?
            }
        };
        let mut listed = Writes::default();
        for &user_id in &members {
            listed.push(CHAT_OF_USER_INSERT, (user_id, chat_id, direct));
        }
        self.write(listed).await?;
        self.load_chat(chat_id).await?.ok_or_else(|| backend(format!("direct chat {chat_id} has no row")))
    }

    async fn chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
        self.load_chat(chat_id).await
    }

    async fn chats_of_user(&self, user_id: i64) -> StorageResult<Vec<ChatOverview>> {
        let chats: Vec<(i64, String)> = self.all(CHATS_OF_USER, (user_id,)).await?;
        let overviews = self.for_each(chats, |(chat_id, _)| self.overview(user_id, chat_id)).await?;
        let mut overviews: Vec<ChatOverview> = overviews.into_iter().flatten().collect();
        overviews.sort_by_key(|overview| std::cmp::Reverse(activity(overview)));
        Ok(overviews)
    }

    async fn append_messages(&self, messages: Vec<NewMessage>, audience: &[i64]) -> StorageResult<Vec<AppendOutcome>> {
        // One update per user, even if the caller names someone twice.
        let recipients = distinct(audience);
        let chats: BTreeSet<i64> = messages.iter().map(|message| message.chat_id).collect();
        for chat_id in chats {
            self.existing_head(chat_id).await?;
        }
        self.require_users(&recipients).await?;
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            outcomes.push(self.append_one(message, &recipients).await?);
        }
        Ok(outcomes)
    }

    async fn messages_before(
        &self,
        chat_id: i64,
        viewer: i64,
        before: Option<i64>,
        page: u32,
    ) -> StorageResult<Vec<MessageRecord>> {
        let Some(me) = self.load_member(chat_id, viewer).await? else { return Ok(Vec::new()) };
        if page == 0 {
            return Ok(Vec::new());
        }
        let upper = before.unwrap_or(i64::MAX);
        let hidden = self.hidden(viewer, chat_id, upper, me.history_from).await?;
        let mut messages = Vec::new();
        self.scan::<3, MessageRow>(MESSAGES_BETWEEN, (chat_id, upper, me.history_from), |row| {
            if !hidden.contains(&row.1) {
                messages.push(rows::message_record(row)?);
            }
            Ok(messages.len() < page as usize)
        })
        .await?;
        Ok(messages)
    }

    async fn message(&self, chat_id: i64, message_id: i64) -> StorageResult<Option<MessageRecord>> {
        self.load_message(chat_id, message_id).await
    }

    async fn edit_message(
        &self,
        chat_id: i64,
        message_id: i64,
        body: String,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<(MessageRecord, Vec<(i64, u64)>)> {
        let message = self.existing_message(chat_id, message_id).await?;
        let edit_count = i64::from(message.edit_count).saturating_add(1);
        self.execute(MESSAGE_EDIT, (body, now_ms, edit_count, chat_id, message_id)).await?;
        let seqs = self.log_all(audience, LogEntry::Message { kind: LogKind::Edit, chat_id, message_id }).await?;
        Ok((self.existing_message(chat_id, message_id).await?, seqs))
    }

    async fn delete_message(
        &self,
        chat_id: i64,
        message_id: i64,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<Vec<(i64, u64)>> {
        self.existing_message(chat_id, message_id).await?;
        self.execute(MESSAGE_DELETE, (String::new(), now_ms, chat_id, message_id)).await?;
        self.log_all(audience, LogEntry::Message { kind: LogKind::Delete, chat_id, message_id }).await
    }

    async fn hide_message(&self, user_id: i64, chat_id: i64, message_id: i64) -> StorageResult<Option<u64>> {
        self.existing_message(chat_id, message_id).await?;
        if !self.lwt(HIDE_INSERT, (user_id, chat_id, message_id)).await?.applied {
            return Ok(None);
        }
        let seq = self.log(user_id, LogEntry::Message { kind: LogKind::Hide, chat_id, message_id }).await?;
        Ok(Some(seq))
    }

    async fn updates_after(&self, user_id: i64, after: u64, page: u32) -> StorageResult<Vec<UpdateRecord>> {
        // Seqs are stored as bigint; nothing lies beyond i64::MAX.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let Some(limit) = limit(page) else { return Ok(Vec::new()) };
        let entries: Vec<LogRow> = self.rows(LOG_AFTER, (user_id, after, limit)).await?;
        let entries = entries.into_iter().map(rows::log_entry).collect::<StorageResult<Vec<_>>>()?;
        self.for_each(entries, |(seq, entry)| async move {
            let kind = match entry {
                LogEntry::Message { kind, chat_id, message_id } => {
                    let message = self
                        .load_message(chat_id, message_id)
                        .await?
                        .ok_or_else(|| backend(format!("update {seq} of user {user_id} names a missing message")))?;
                    match kind {
                        LogKind::Edit => UpdateKind::Edited(message),
                        LogKind::Delete | LogKind::Hide => {
                            UpdateKind::Deleted { chat_id, message_id, for_everyone: kind == LogKind::Delete }
                        }
                        _ => UpdateKind::Message(message),
                    }
                }
                LogEntry::Receipt { chat_id, reader } => {
                    let member = self.load_member(chat_id, reader).await?;
                    let receipt =
                        member.map_or(ReceiptRecord { user_id: reader, ..ReceiptRecord::default() }, |m| m.receipt);
                    UpdateKind::Receipt { chat_id, receipt }
                }
                LogEntry::Relation { other, relation } => UpdateKind::Relation { other, relation },
            };
            Ok(UpdateRecord { seq, kind })
        })
        .await
    }

    async fn latest_seq(&self, user_id: i64) -> StorageResult<u64> {
        self.latest(user_id).await
    }

    async fn mark_read(
        &self,
        chat_id: i64,
        user_id: i64,
        up_to: i64,
        seen: bool,
    ) -> StorageResult<Option<ReceiptChange>> {
        for _ in 0..CAS_ATTEMPTS {
            let head = self.existing_head(chat_id).await?;
            let before = self
                .load_member(chat_id, user_id)
                .await?
                .ok_or_else(|| StorageError::NotFound(format!("user {user_id} in chat {chat_id}")))?
                .receipt;
            let after = moved(before, up_to, head.last_message_id, seen);
            if after == before {
                return Ok(None);
            }
            let values =
                (after.delivered_up_to, after.seen_up_to, chat_id, user_id, before.delivered_up_to, before.seen_up_to);
            if !self.lwt(MEMBER_MARK, values).await?.applied {
                continue;
            }
            let audience = self.receipt_audience(&head, before, after).await?;
            let seqs = self.log_all(&audience, LogEntry::Receipt { chat_id, reader: user_id }).await?;
            return Ok(Some(ReceiptChange { receipt: after, seqs }));
        }
        Err(backend(format!("watermarks of user {user_id} in chat {chat_id}: too much contention")))
    }

    async fn receipts(&self, chat_id: i64) -> StorageResult<Vec<ReceiptRecord>> {
        Ok(self.load_members(chat_id).await?.iter().map(|m| m.receipt).collect())
    }

    async fn members(&self, chat_id: i64) -> StorageResult<Vec<MemberRecord>> {
        Ok(self
            .load_members(chat_id)
            .await?
            .iter()
            .map(|m| MemberRecord { user_id: m.receipt.user_id, role: m.role, joined_at_ms: m.joined_at_ms })
            .collect())
    }

    async fn create_group(
        &self,
        group: NewGroup,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>> {
        self.require_users(&group.members).await?;
        if let Some(refusal) = self.over_group_limit(&group.members, group.max_groups_per_user).await? {
            return Ok(Err(refusal));
        }
        let kind = kind_name(ChatKind::Group);
        let mut writes = Writes::default();
        for &user_id in &group.members {
            let role = if user_id == group.owner { Role::Owner } else { Role::Member };
            writes.push(MEMBER_INSERT, (group.id, user_id, role_name(role), group.created_at_ms, 0i64, 0i64, 0i64));
            writes.push(CHAT_OF_USER_INSERT, (user_id, group.id, kind));
        }
        let member_count = i64::try_from(group.members.len()).or_backend()?;
        // The chat row last: until it exists, the group is not listed.
        writes.push(GROUP_INSERT, (group.id, kind, group.created_at_ms, group.name.clone(), group.owner, member_count));
        self.write(writes).await?;
        Ok(Ok(self.record_group_event(group.id, &[], event, None).await?))
    }

    async fn change_group(
        &self,
        chat_id: i64,
        change: GroupChange,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>> {
        let not_a_group = || StorageError::NotFound(format!("group {chat_id}"));
        let head =
            self.load_head(chat_id).await?.filter(|head| head.kind == ChatKind::Group).ok_or_else(not_a_group)?;
        let before = rows::chat_record(head.clone(), &self.load_members(chat_id).await?);
        let (writes, previous_avatar) = match self.group_change_writes(&before, &head, change, event.sent_at_ms).await?
        {
            Ok(planned) => planned,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.write(writes).await?;
        Ok(Ok(self.record_group_event(chat_id, &before.members, event, previous_avatar).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(delivered_up_to: i64, seen_up_to: i64) -> ReceiptRecord {
        ReceiptRecord { user_id: 1, delivered_up_to, seen_up_to }
    }

    #[test]
    fn watermarks_are_capped_and_never_lowered() {
        assert_eq!(moved(receipt(5, 3), 9, 7, false), receipt(7, 3));
        assert_eq!(moved(receipt(5, 3), 9, 7, true), receipt(7, 7));
        assert_eq!(moved(receipt(5, 3), 1, 7, true), receipt(5, 3));
    }

    #[test]
    fn a_move_covers_from_the_lowest_old_to_the_highest_new_mark() {
        assert_eq!(covered(receipt(5, 3), receipt(7, 6)), (3, 7));
        assert_eq!(covered(receipt(5, 3), receipt(7, 3)), (5, 7), "seen did not move");
    }

    #[test]
    fn audiences_are_deduplicated_in_order() {
        assert_eq!(distinct(&[3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }
}
