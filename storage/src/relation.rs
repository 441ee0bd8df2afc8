//! The friendship state machine, one pure function every backend applies
//! inside its own atomic step.

use crate::{Relation, RelationAction, RelationView};

/// Why an action is not allowed in the current state. Nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IllegalTransition {
    #[error("you cannot befriend or block yourself")]
    Yourself,
    #[error("you are already friends")]
    AlreadyFriends,
    #[error("a friend request is already pending")]
    AlreadyRequested,
    #[error("there is no pending friend request to answer")]
    NoRequestToAnswer,
    #[error("you cannot accept or decline your own request")]
    OwnRequest,
    #[error("there is no pending request of yours to cancel")]
    NoRequestToCancel,
    #[error("you are not friends")]
    NotFriends,
    #[error("this user does not accept requests from you")]
    BlockedByOther,
    #[error("you block this user; unblock them first")]
    YouBlock,
    #[error("you already block this user")]
    AlreadyBlocked,
    #[error("you do not block this user")]
    NotBlocked,
}

/// The actor's view after `action`, or why it is refused. A request to
/// someone who already asked you is an acceptance. Blocking ends any
/// friendship or request between the two, both ways.
pub fn transition(view: RelationView, action: RelationAction) -> Result<RelationView, IllegalTransition> {
    use IllegalTransition::*;
    use Relation::*;
    use RelationAction::*;
    let next = |relation| Ok(RelationView { relation, ..view });
    match action {
        Request if view.blocking => Err(YouBlock),
        Request if view.blocked_by => Err(BlockedByOther),
        Request => match view.relation {
            None => next(RequestSent),
            RequestReceived => next(Friends),
            RequestSent => Err(AlreadyRequested),
            Friends => Err(AlreadyFriends),
        },
        Cancel => match view.relation {
            RequestSent => next(None),
            _ => Err(NoRequestToCancel),
        },
        Accept | Decline => match (view.relation, action) {
            (RequestReceived, Accept) => next(Friends),
            (RequestReceived, _) => next(None),
            (RequestSent, _) => Err(OwnRequest),
            _ => Err(NoRequestToAnswer),
        },
        Remove => match view.relation {
            Friends => next(None),
            _ => Err(NotFriends),
        },
        Block if view.blocking => Err(AlreadyBlocked),
        Block => Ok(RelationView { relation: None, blocking: true, ..view }),
        Unblock if !view.blocking => Err(NotBlocked),
        Unblock => Ok(RelationView { blocking: false, ..view }),
    }
}

/// How the other side sees `relation`.
pub fn mirror(relation: Relation) -> Relation {
    match relation {
        Relation::RequestSent => Relation::RequestReceived,
        Relation::RequestReceived => Relation::RequestSent,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IllegalTransition::*;
    use Relation::*;
    use RelationAction::*;

    fn view(relation: Relation) -> RelationView {
        RelationView { relation, ..RelationView::default() }
    }

    #[test]
    fn the_request_lifecycle() {
        assert_eq!(transition(view(None), Request).map(|v| v.relation), Ok(RequestSent));
        assert_eq!(transition(view(RequestSent), Cancel).map(|v| v.relation), Ok(None));
        assert_eq!(transition(view(RequestReceived), Accept).map(|v| v.relation), Ok(Friends));
        assert_eq!(transition(view(RequestReceived), Decline).map(|v| v.relation), Ok(None));
        assert_eq!(transition(view(RequestReceived), Request).map(|v| v.relation), Ok(Friends));
        assert_eq!(transition(view(Friends), Remove).map(|v| v.relation), Ok(None));
    }

    #[test]
    fn illegal_transitions_are_named() {
        assert_eq!(transition(view(RequestSent), Accept), Err(OwnRequest));
        assert_eq!(transition(view(RequestSent), Request), Err(AlreadyRequested));
        assert_eq!(transition(view(Friends), Request), Err(AlreadyFriends));
        assert_eq!(transition(view(None), Accept), Err(NoRequestToAnswer));
        assert_eq!(transition(view(None), Cancel), Err(NoRequestToCancel));
        assert_eq!(transition(view(None), Remove), Err(NotFriends));
        assert_eq!(transition(view(None), Unblock), Err(NotBlocked));
        let blocked = RelationView { blocked_by: true, ..view(None) };
        assert_eq!(transition(blocked, Request), Err(BlockedByOther));
        let blocking = RelationView { blocking: true, ..view(None) };
        assert_eq!(transition(blocking, Request), Err(YouBlock));
        assert_eq!(transition(blocking, Block), Err(AlreadyBlocked));
    }

    #[test]
    fn blocking_ends_the_friendship_and_unblocking_does_not_restore_it() {
        let blocked = transition(view(Friends), Block).expect("block");
        assert_eq!(blocked, RelationView { relation: None, blocking: true, blocked_by: false });
        assert_eq!(transition(blocked, Unblock), Ok(view(None)));
    }

    #[test]
    fn mirror_swaps_request_direction() {
        assert_eq!(mirror(RequestSent), RequestReceived);
        assert_eq!(mirror(Friends), Friends);
    }
}
