//! Who may talk to whom: the one place that decides it.

use protocol::limits::{EDIT_WINDOW_MS, MAX_EDITS_PER_MESSAGE};
use storage::{MessageRecord, Relation, RelationView, UserRecord};

use crate::EngineError;

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
    may_change_for_everyone(message, user, now_ms)?;
    if message.edit_count >= MAX_EDITS_PER_MESSAGE {
        return Err(EngineError::EditClosed(format!("a message can be edited {MAX_EDITS_PER_MESSAGE} times")));
    }
    Ok(())
}

/// May `user` delete `message` for everyone at `now_ms`? Only its author,
/// within [`EDIT_WINDOW_MS`] of sending, once.
pub fn may_change_for_everyone(message: &MessageRecord, user: i64, now_ms: i64) -> Result<(), EngineError> {
    if message.deleted_at_ms.is_some() {
        return Err(EngineError::MessageNotFound);
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
        assert!(may_change_for_everyone(&message(1, 1_000, MAX_EDITS_PER_MESSAGE, false), 1, now).is_ok());
    }

    #[test]
    fn blocks_stop_messages_both_ways() {
        assert!(may_message(view(Relation::None, false, false)).is_ok());
        assert!(may_message(view(Relation::None, true, false)).is_err());
        assert!(may_message(view(Relation::None, false, true)).is_err());
    }
}
