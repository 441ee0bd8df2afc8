//! Who may talk to whom: the one place that decides it.

use protocol::UserId;
use protocol::limits::{EDIT_WINDOW_MS, MAX_EDITS_PER_MESSAGE};
use protocol::ws::ChatEvent;
use storage::{ChatRecord, GroupChange, MessageRecord, Relation, RelationView, Role, UserRecord};

use crate::{EngineError, GroupError};

/// A change a member asks to make to a group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupCommand {
    Rename(String),
    /// A new avatar's media key, or `None` to remove it.
    SetAvatar(Option<String>),
    AddMembers(Vec<i64>),
    /// Removes a member; naming yourself leaves the group.
    RemoveMember(i64),
    /// Makes a member an admin or a plain member.
    SetRole {
        user_id: i64,
        role: Role,
    },
    TransferOwnership(i64),
}

/// The sizes a group and a user's group list may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_members: usize,
    pub max_groups_per_user: u32,
}

/// Checks that `actor` may apply `command` to the group `chat` and turns it
/// into the stored change and the event that records it.
///
/// Permissions: members post and leave; admins also rename, set the
/// avatar, add friends of theirs (checked by the caller) and remove plain
/// members; the owner also removes admins, promotes and demotes, and
/// transfers ownership. The owner leaves only as the last member.
pub fn plan_group_change(
    chat: &ChatRecord,
    actor: i64,
    command: GroupCommand,
    limits: GroupLimits,
) -> Result<(GroupChange, ChatEvent), EngineError> {
    let role = chat.role_of(actor).filter(|_| chat.group.is_some()).ok_or(EngineError::ChatNotFound)?;
    let target_role = |user_id: i64| chat.role_of(user_id).ok_or(GroupError::NotAMember(user_id));
    let require = |needed: Role, what: &str| {
        if role >= needed {
            Ok(())
        } else {
            let who = if needed == Role::Owner { "the owner" } else { "admins" };
            Err(EngineError::Forbidden(format!("only {who} can {what}")))
        }
    };
    Ok(match command {
        GroupCommand::Rename(name) => {
            require(Role::Admin, "rename the group")?;
            (GroupChange::Rename(name.clone()), ChatEvent::Renamed { name })
        }
        GroupCommand::SetAvatar(avatar) => {
            require(Role::Admin, "change the group's avatar")?;
            let event = ChatEvent::AvatarChanged { avatar: avatar.is_some() };
            (GroupChange::SetAvatar(avatar), event)
        }
        GroupCommand::AddMembers(users) => {
            require(Role::Admin, "add members")?;
            validate_new_members(&users)?;
            if let Some(member) = users.iter().find(|user| chat.members.contains(user)) {
                return Err(GroupError::AlreadyMember(*member).into());
            }
            if chat.members.len() + users.len() > limits.max_members {
                return Err(GroupError::GroupFull(limits.max_members).into());
            }
            let event = ChatEvent::MembersAdded { members: users.iter().copied().map(UserId).collect() };
            (GroupChange::AddMembers { users, max_groups_per_user: limits.max_groups_per_user }, event)
        }
        GroupCommand::RemoveMember(user_id) if user_id == actor => {
            if role == Role::Owner && chat.members.len() > 1 {
                return Err(GroupError::OwnerMustTransfer.into());
            }
            (GroupChange::RemoveMember(user_id), ChatEvent::MemberLeft {})
        }
        GroupCommand::RemoveMember(user_id) => {
            let target = target_role(user_id)?;
            require(if target == Role::Member { Role::Admin } else { Role::Owner }, "remove this member")?;
            (GroupChange::RemoveMember(user_id), ChatEvent::MemberRemoved { user_id: UserId(user_id) })
        }
        GroupCommand::SetRole { user_id, role: new_role } => {
            require(Role::Owner, "change roles")?;
            if new_role == Role::Owner {
                return Err(EngineError::InvalidField("ownership moves by transfer, not by role".into()));
            }
            if target_role(user_id)? == Role::Owner {
                return Err(EngineError::InvalidField("the owner's role changes by transfer".into()));
            }
            let event = ChatEvent::RoleChanged { user_id: UserId(user_id), role: role_view(new_role) };
            (GroupChange::SetRole { user_id, role: new_role }, event)
        }
        GroupCommand::TransferOwnership(user_id) => {
            require(Role::Owner, "transfer ownership")?;
            target_role(user_id)?;
            if user_id == actor {
                return Err(EngineError::InvalidField("you own the group already".into()));
            }
            (GroupChange::TransferOwnership(user_id), ChatEvent::OwnerChanged { user_id: UserId(user_id) })
        }
    })
}

/// Users to add to a group at once: some, not too many, each once.
pub fn validate_new_members(users: &[i64]) -> Result<(), EngineError> {
    use protocol::limits::MAX_MEMBERS_PER_REQUEST;
    if users.is_empty() || users.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(EngineError::InvalidField(format!("name 1 to {MAX_MEMBERS_PER_REQUEST} members per request")));
    }
    let mut sorted = users.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(EngineError::InvalidField("a member is named twice".into()));
    }
    Ok(())
}

/// The wire form of a role.
pub fn role_view(role: Role) -> protocol::rest::Role {
    match role {
        Role::Owner => protocol::rest::Role::Owner,
        Role::Admin => protocol::rest::Role::Admin,
        Role::Member => protocol::rest::Role::Member,
    }
}

/// May `from` open a 1:1 chat with `to`, given how `from` stands with
/// `to`? Only friends may; blocking either way forbids it.
pub fn may_open_direct(from: &UserRecord, to: &UserRecord, view: RelationView) -> Result<(), EngineError> {
    if from.id == to.id {
        return Err(EngineError::InvalidField("cannot open a chat with yourself".into()));
    }
    may_message(view)?;
    if view.relation != Relation::Friends {
        return Err(EngineError::Forbidden("only friends can start a chat".into()));
    }
    Ok(())
}

/// May a user post in an existing 1:1 chat with someone? Not while either
/// blocks the other; a chat with a former friend stays open otherwise, and
/// its history stays readable in every case.
pub fn may_message(view: RelationView) -> Result<(), EngineError> {
    if view.blocked_by {
        return Err(EngineError::Forbidden("this user does not accept messages from you".into()));
    }
    if view.blocking {
        return Err(EngineError::Forbidden("you block this user; unblock them first".into()));
    }
    Ok(())
}

/// May `user` edit `message` at `now_ms`? Only its author, within
/// [`EDIT_WINDOW_MS`] of sending, at most [`MAX_EDITS_PER_MESSAGE`] times,
/// and not once it is deleted.
pub fn may_edit(message: &MessageRecord, user: i64, now_ms: i64) -> Result<(), EngineError> {
    may_change_for_everyone(message, user, false, now_ms)?;
    if message.edit_count >= MAX_EDITS_PER_MESSAGE {
        return Err(EngineError::EditClosed(format!("a message can be edited {MAX_EDITS_PER_MESSAGE} times")));
    }
    Ok(())
}

/// May `user` delete `message` for everyone at `now_ms`? Its author,
/// within [`EDIT_WINDOW_MS`] of sending, once; a group's admins and owner
/// (`moderator`) at any time. Event messages are never changed.
pub fn may_change_for_everyone(
    message: &MessageRecord,
    user: i64,
    moderator: bool,
    now_ms: i64,
) -> Result<(), EngineError> {
    if message.deleted_at_ms.is_some() {
        return Err(EngineError::MessageNotFound);
    }
    if message.event.is_some() {
        return Err(EngineError::Forbidden("group events cannot be edited or deleted".into()));
    }
    if moderator && message.sender_id != user {
        return Ok(());
    }
    if message.sender_id != user {
        return Err(EngineError::Forbidden("only the author can edit or delete a message for everyone".into()));
    }
    if now_ms - message.sent_at_ms > EDIT_WINDOW_MS {
        return Err(EngineError::EditClosed("the message is older than the 48-hour edit window".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use storage::PresenceChoice;

    use super::*;

    fn user(id: i64) -> UserRecord {
        UserRecord {
            id,
            username: format!("u{id}"),
            display_name: format!("U{id}"),
            password_hash: String::new(),
            pepper_version: 1,
            created_at_ms: 0,
            bio: String::new(),
            avatar: None,
            email: None,
            phone: None,
            presence: PresenceChoice::default(),
            status_text: String::new(),
            last_seen_ms: None,
        }
    }

    fn view(relation: Relation, blocking: bool, blocked_by: bool) -> RelationView {
        RelationView { relation, blocking, blocked_by }
    }

    #[test]
    fn only_friends_open_chats() {
        assert!(may_open_direct(&user(1), &user(2), view(Relation::Friends, false, false)).is_ok());
        for relation in [Relation::None, Relation::RequestSent, Relation::RequestReceived] {
            let refused = may_open_direct(&user(1), &user(2), view(relation, false, false));
            assert!(matches!(refused, Err(EngineError::Forbidden(_))), "{relation:?}");
        }
        assert!(matches!(
            may_open_direct(&user(1), &user(1), view(Relation::Friends, false, false)),
            Err(EngineError::InvalidField(_))
        ));
    }

    fn message(sender_id: i64, sent_at_ms: i64, edit_count: u32, deleted: bool) -> MessageRecord {
        MessageRecord {
            id: 1,
            chat_id: 1,
            sender_id,
            client_msg_id: "c".into(),
            body: "b".into(),
            sent_at_ms,
            edited_at_ms: None,
            edit_count,
            deleted_at_ms: deleted.then_some(sent_at_ms),
            event: None,
        }
    }

    #[test]
    fn only_the_author_edits_within_the_window_and_the_edit_budget() {
        let now = EDIT_WINDOW_MS + 1_000;
        assert!(may_edit(&message(1, 1_000, 0, false), 1, now).is_ok());
        assert!(matches!(may_edit(&message(1, 1_000, 0, false), 2, now), Err(EngineError::Forbidden(_))));
        assert!(matches!(may_edit(&message(1, 999, 0, false), 1, now), Err(EngineError::EditClosed(_))));
        assert!(matches!(
            may_edit(&message(1, 1_000, MAX_EDITS_PER_MESSAGE, false), 1, now),
            Err(EngineError::EditClosed(_))
        ));
        assert!(matches!(may_edit(&message(1, 1_000, 0, true), 1, now), Err(EngineError::MessageNotFound)));
        assert!(may_change_for_everyone(&message(1, 1_000, MAX_EDITS_PER_MESSAGE, false), 1, false, now).is_ok());
    }

    #[test]
    fn moderators_delete_anything_but_events_and_never_edit_others() {
        let now = EDIT_WINDOW_MS * 10;
        let old = message(1, 1_000, 0, false);
        assert!(may_change_for_everyone(&old, 2, true, now).is_ok(), "an admin deletes an old message of another");
        assert!(matches!(may_change_for_everyone(&old, 2, false, now), Err(EngineError::Forbidden(_))));
        assert!(matches!(may_edit(&old, 2, now), Err(EngineError::Forbidden(_))));
        let event = MessageRecord { event: Some("{}".into()), ..message(1, now, 0, false) };
        assert!(matches!(may_change_for_everyone(&event, 1, true, now), Err(EngineError::Forbidden(_))));
    }

    fn group(owner: i64, admins: &[i64], members: &[i64]) -> ChatRecord {
        let group = storage::GroupRecord {
            name: "g".into(),
            avatar: None,
            owner,
            admins: admins.to_vec(),
            member_count: members.len() as u32,
        };
        ChatRecord {
            id: 9,
            kind: storage::ChatKind::Group,
            members: members.to_vec(),
            created_at_ms: 0,
            group: Some(group),
        }
    }

    fn refused(result: Result<(GroupChange, ChatEvent), EngineError>) -> String {
        match result {
            Ok(planned) => format!("allowed: {planned:?}"),
            Err(EngineError::Forbidden(_)) => "forbidden".into(),
            Err(EngineError::Group(error)) => format!("{error:?}"),
            Err(error) => format!("{error:?}"),
        }
    }

    #[test]
    fn roles_decide_who_changes_a_group() {
        // 1 owns, 2 is an admin, 3 and 4 are members; 5 is an outsider.
        let chat = group(1, &[2], &[1, 2, 3, 4]);
        let plan = |actor, command| refused(plan_group_change(&chat, actor, command, LIMITS));
        assert!(plan(2, GroupCommand::Rename("x".into())).starts_with("allowed"));
        assert_eq!(plan(3, GroupCommand::Rename("x".into())), "forbidden");
        assert!(plan(2, GroupCommand::RemoveMember(3)).starts_with("allowed"), "admins remove members");
        assert_eq!(plan(2, GroupCommand::RemoveMember(1)), "forbidden", "admins cannot remove the owner");
        assert!(plan(1, GroupCommand::RemoveMember(2)).starts_with("allowed"), "the owner removes admins");
        assert_eq!(plan(3, GroupCommand::RemoveMember(4)), "forbidden");
        assert!(plan(3, GroupCommand::RemoveMember(3)).starts_with("allowed"), "anyone leaves");
        assert_eq!(plan(1, GroupCommand::RemoveMember(1)), "OwnerMustTransfer");
        assert_eq!(plan(2, GroupCommand::SetRole { user_id: 3, role: Role::Admin }), "forbidden");
        assert!(plan(1, GroupCommand::SetRole { user_id: 3, role: Role::Admin }).starts_with("allowed"));
        assert_eq!(plan(1, GroupCommand::RemoveMember(5)), "NotAMember(5)");
        assert_eq!(plan(2, GroupCommand::AddMembers(vec![3])), "AlreadyMember(3)");
        assert_eq!(plan(3, GroupCommand::AddMembers(vec![6])), "forbidden");
        assert_eq!(plan(5, GroupCommand::Rename("x".into())), "ChatNotFound");
        assert_eq!(plan(2, GroupCommand::TransferOwnership(3)), "forbidden");
        assert!(plan(1, GroupCommand::TransferOwnership(3)).starts_with("allowed"));
        let alone = group(1, &[], &[1]);
        assert!(refused(plan_group_change(&alone, 1, GroupCommand::RemoveMember(1), LIMITS)).starts_with("allowed"));
    }

    const LIMITS: GroupLimits = GroupLimits { max_members: 1_024, max_groups_per_user: 500 };

    #[test]
    fn a_group_never_grows_past_its_limit() {
        let members: Vec<i64> = (1..=1_023).collect();
        let chat = group(1, &[], &members);
        let one_more = plan_group_change(&chat, 1, GroupCommand::AddMembers(vec![100_000]), LIMITS);
        assert!(one_more.is_ok());
        let two_more = plan_group_change(&chat, 1, GroupCommand::AddMembers(vec![100_000, 100_001]), LIMITS);
        assert_eq!(refused(two_more), "GroupFull(1024)");
        assert!(validate_new_members(&[7, 7]).is_err());
        assert!(validate_new_members(&[]).is_err());
    }

    #[test]
    fn blocks_stop_messages_both_ways() {
        assert!(may_message(view(Relation::None, false, false)).is_ok());
        assert!(may_message(view(Relation::None, true, false)).is_err());
        assert!(may_message(view(Relation::None, false, true)).is_err());
    }
}
