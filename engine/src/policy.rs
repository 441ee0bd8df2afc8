//! Who may talk to whom: the one place that decides it.

use storage::{Relation, RelationView, UserRecord};

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

    #[test]
    fn blocks_stop_messages_both_ways() {
        assert!(may_message(view(Relation::None, false, false)).is_ok());
        assert!(may_message(view(Relation::None, true, false)).is_err());
        assert!(may_message(view(Relation::None, false, true)).is_err());
    }
}
