//! Chat commands between nodes: a node that does not own a chat's shard
//! forwards the command to the node that does, whose chat actor orders it.
//!
//! The engine decides *whether* and *to whom* to forward; the transport is
//! the gateway's (an authenticated HTTP request between nodes), behind
//! [`Peers`]. Commands and replies are plain serde values so that any
//! transport can carry them; failures travel as [`RemoteError`], which keeps
//! the kinds a client is told about and folds every internal failure into
//! "unavailable, retry".

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use storage::GroupChanged;

use crate::cluster::NodeInfo;
use crate::policy::GroupCommand;
use crate::{EngineError, GroupError, Posted};

/// A request for a chat's actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChatCommand {
    /// Post a message (already validated and rate-limited by the node the
    /// client is connected to).
    Post { sender_id: i64, client_msg_id: String, body: String },
    /// Edit a message, or delete it for everyone (`new_body` absent).
    ChangeMessage { user_id: i64, message_id: i64, new_body: Option<String> },
    /// Change a group.
    ChangeGroup { user_id: i64, command: GroupCommand },
}

/// What a chat's actor answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ChatReply {
    Posted(Posted),
    MessageChanged,
    GroupChanged(GroupChanged),
}

/// An [`EngineError`] as it crosses between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RemoteError {
    ChatNotFound,
    MessageNotFound,
    EditClosed {
        message: String,
    },
    UserNotFound,
    Forbidden {
        message: String,
    },
    InvalidField {
        message: String,
    },
    ClientMsgIdConflict,
    RateLimited {
        retry_after_ms: u64,
    },
    Group {
        refusal: GroupRefusalKind,
        user_id: i64,
        limit: usize,
    },
    /// The receiving node does not own the chat's shard (it moved): look
    /// the owner up again.
    Moved,
    /// Anything else; retryable.
    Unavailable,
}

/// Which [`GroupError`] a [`RemoteError::Group`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRefusalKind {
    AlreadyMember,
    NotAMember,
    GroupFull,
    TooManyGroups,
    OwnerMustTransfer,
    NotAFriend,
}

impl From<&EngineError> for RemoteError {
    fn from(error: &EngineError) -> Self {
        use GroupRefusalKind as K;
        let group = |refusal, user_id, limit| RemoteError::Group { refusal, user_id, limit };
        match error {
            EngineError::ChatNotFound => RemoteError::ChatNotFound,
            EngineError::MessageNotFound => RemoteError::MessageNotFound,
            EngineError::EditClosed(message) => RemoteError::EditClosed { message: message.clone() },
            EngineError::UserNotFound => RemoteError::UserNotFound,
            EngineError::Forbidden(message) => RemoteError::Forbidden { message: message.clone() },
            EngineError::InvalidField(message) => RemoteError::InvalidField { message: message.clone() },
            EngineError::ClientMsgIdConflict => RemoteError::ClientMsgIdConflict,
            EngineError::RateLimited { retry_after_ms } => RemoteError::RateLimited { retry_after_ms: *retry_after_ms },
            EngineError::Group(refusal) => match *refusal {
                GroupError::AlreadyMember(user) => group(K::AlreadyMember, user, 0),
                GroupError::NotAMember(user) => group(K::NotAMember, user, 0),
                GroupError::GroupFull(limit) => group(K::GroupFull, 0, limit),
                GroupError::TooManyGroups(user) => group(K::TooManyGroups, user, 0),
                GroupError::OwnerMustTransfer => group(K::OwnerMustTransfer, 0, 0),
                GroupError::NotAFriend(user) => group(K::NotAFriend, user, 0),
            },
            EngineError::Moved => RemoteError::Moved,
            _ => RemoteError::Unavailable,
        }
    }
}

impl From<RemoteError> for EngineError {
    fn from(error: RemoteError) -> Self {
        use GroupRefusalKind as K;
        match error {
            RemoteError::ChatNotFound => EngineError::ChatNotFound,
            RemoteError::MessageNotFound => EngineError::MessageNotFound,
            RemoteError::EditClosed { message } => EngineError::EditClosed(message),
            RemoteError::UserNotFound => EngineError::UserNotFound,
            RemoteError::Forbidden { message } => EngineError::Forbidden(message),
            RemoteError::InvalidField { message } => EngineError::InvalidField(message),
            RemoteError::ClientMsgIdConflict => EngineError::ClientMsgIdConflict,
            RemoteError::RateLimited { retry_after_ms } => EngineError::RateLimited { retry_after_ms },
            RemoteError::Group { refusal, user_id, limit } => EngineError::Group(match refusal {
                K::AlreadyMember => GroupError::AlreadyMember(user_id),
                K::NotAMember => GroupError::NotAMember(user_id),
                K::GroupFull => GroupError::GroupFull(limit),
                K::TooManyGroups => GroupError::TooManyGroups(user_id),
                K::OwnerMustTransfer => GroupError::OwnerMustTransfer,
                K::NotAFriend => GroupError::NotAFriend(user_id),
            }),
            RemoteError::Moved => EngineError::Moved,
            RemoteError::Unavailable => EngineError::Unavailable,
        }
    }
}

/// Carries a chat command to another node and brings its answer back.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Runs `command` on `node`'s actor of `chat_id`. Fails with
    /// [`EngineError::Moved`] if `node` no longer owns the chat's shard and
    /// [`EngineError::Unavailable`] if it could not be reached or did not
    /// answer in time (the command may or may not have run: a retried post
    /// with the same client message ID is stored once).
    async fn forward(&self, node: &NodeInfo, chat_id: i64, command: ChatCommand) -> Result<ChatReply, EngineError>;
}

/// A single node has no peers: it owns every shard and never forwards.
pub struct NoPeers;

#[async_trait]
impl Peers for NoPeers {
    async fn forward(&self, _node: &NodeInfo, _chat_id: i64, _command: ChatCommand) -> Result<ChatReply, EngineError> {
        Err(EngineError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_facing_errors_survive_the_trip_and_internal_ones_become_unavailable() {
        let errors = [
            EngineError::ChatNotFound,
            EngineError::EditClosed("too late".into()),
            EngineError::Forbidden("blocked".into()),
            EngineError::RateLimited { retry_after_ms: 42 },
            EngineError::Group(GroupError::NotAFriend(7)),
            EngineError::Group(GroupError::GroupFull(1024)),
            EngineError::Moved,
        ];
        for error in errors {
            let json = serde_json::to_string(&RemoteError::from(&error)).unwrap_or_default();
            let back: Result<RemoteError, _> = serde_json::from_str(&json);
            let back = back.map(EngineError::from).map(|e| e.to_string());
            assert_eq!(back.ok(), Some(error.to_string()), "{json}");
        }
        let internal = EngineError::Config("secret detail".into());
        assert_eq!(RemoteError::from(&internal), RemoteError::Unavailable);
    }

    #[test]
    fn commands_have_a_stable_tagged_form() {
        let command = ChatCommand::Post { sender_id: 1, client_msg_id: "c1".into(), body: "hi".into() };
        let json = serde_json::to_value(&command).unwrap_or_default();
        assert_eq!(json["op"], "post");
        assert_eq!(serde_json::from_value::<ChatCommand>(json).ok(), Some(command));
    }
}
