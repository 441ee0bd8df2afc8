//! WebSocket frames of protocol v1 (`parley.v1`): JSON text frames tagged by `type`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ChatId, MessageId, UserId};

/// A frame the client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Send a message. Answered by `ack` once the message is durable, or by
    /// `error` with the same `client_msg_id`.
    Send {
        /// Client-chosen, unique per sender (a UUID is fine); a retry with
        /// the same value returns the same message and stores nothing twice.
        client_msg_id: String,
        chat_id: ChatId,
        body: String,
    },
    /// This device has received the chat's messages up to `message_id`
    /// (the *delivered* watermark). One frame covers every earlier message.
    Received { chat_id: ChatId, message_id: MessageId },
    /// The user has read the chat up to `message_id` (the *seen* watermark;
    /// it implies delivered). One frame covers every earlier message.
    Seen { chat_id: ChatId, message_id: MessageId },
    /// Replay the updates after `after_seq`, then answer `synced`.
    Sync { after_seq: u64 },
    /// Application-level keep-alive for clients that cannot send WebSocket
    /// pings (browsers); answered by `pong`.
    Ping {},
    /// The user is typing in the chat. Send it every few seconds while they
    /// type; members see it for `expires_in_ms` unless it is sent again.
    /// Never stored, never answered (unless invalid); extra frames within
    /// the rate limit are dropped.
    Typing { chat_id: ChatId },
    /// Replace the text of your own message. Answered by `done` (the change
    /// itself arrives as an `edited` update on every device) or `error`.
    Edit {
        /// Client-chosen; echoed in `done` or `error`.
        request_id: String,
        chat_id: ChatId,
        message_id: MessageId,
        body: String,
    },
    /// Delete a message for everyone (your own, within the edit window) or
    /// only for yourself (any message of the chat). Answered like `edit`.
    Delete { request_id: String, chat_id: ChatId, message_id: MessageId, for_everyone: bool },
    /// This device's user is idle (no input for a while; the client
    /// decides how long) or active again. A user whose every device is idle
    /// shows as away. Never answered (unless invalid).
    Activity { idle: bool },
}

/// A frame the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every connection.
    Hello {
        /// Protocol version (1).
        protocol: u32,
        user_id: UserId,
        /// Identifies this connection in logs and metrics.
        session_id: String,
        /// The user's newest update sequence number; a client whose own
        /// last seen `seq` is smaller sends `sync`.
        seq: u64,
        limits: Limits,
    },
    /// A send was made durable.
    Ack {
        client_msg_id: String,
        message: Message,
        /// True when this was a retry of an already stored send.
        duplicate: bool,
    },
    /// One entry of the user's update log. `seq` counts up by one per user;
    /// a client that sees a jump has missed updates and sends `sync`.
    Update { seq: u64, update: Update },
    /// The replay asked for by `sync` is complete up to `seq`.
    Synced {
        seq: u64,
        /// More updates remain: send `sync` again with `after_seq = seq`.
        has_more: bool,
    },
    /// Answer to `ping`.
    Pong {},
    /// An `edit` or `delete` succeeded.
    Done { request_id: String },
    /// A member is typing in a chat: show it for `expires_in_ms`, or until
    /// a message from them arrives. Ephemeral: no `seq`, never replayed.
    Typing { chat_id: ChatId, user_id: UserId, expires_in_ms: u64 },
    /// Presence of people the user may see (friends, members of shared
    /// groups): a snapshot after connecting, then each change. Ephemeral:
    /// no `seq`, never replayed; the newest frame about a user wins.
    Presence { users: Vec<PresenceView> },
    /// A request failed; nothing was changed.
    Error(ErrorFrame),
}

/// One user's presence as others see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceView {
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// Short text the user set; empty if none.
    pub status_text: String,
    /// When the user was last online (milliseconds since the epoch), if known.
    pub last_seen: Option<i64>,
}

/// A shown presence status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Busy,
    /// No connection (or invisible); see `last_seen`.
    #[default]
    Offline,
}

/// What happened, as recorded in a user's update log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A new message in one of the user's chats (sent by anyone, the user included).
    Message { message: Message },
    /// A message was edited; `message` is its current state (`edited_at` set).
    Edited { message: Message },
    /// A message was deleted, for everyone (a tombstone) or only for this
    /// user's devices; either way, stop showing its text.
    Deleted { chat_id: ChatId, message_id: MessageId, for_everyone: bool },
    /// A member's receipts in a chat moved: `user_id` has received the
    /// chat's messages up to `delivered_up_to` and read up to `seen_up_to`
    /// (both current, never lower than before; "0" for none). Sent to every
    /// member, the reader's other devices included.
    Receipt { chat_id: ChatId, user_id: UserId, delivered_up_to: MessageId, seen_up_to: MessageId },
    /// The user's relation with `user_id` changed (a request sent or
    /// received, accepted, declined, cancelled; a friend removed).
    Relation { user_id: UserId, relation: crate::rest::RelationState },
    /// An update kind newer than this client; skip it (its `seq` still counts).
    #[serde(other)]
    Unknown,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Server-assigned snowflake; chats are ordered by it.
    pub id: MessageId,
    pub chat_id: ChatId,
    pub sender_id: UserId,
    /// The sender's own ID for this send.
    pub client_msg_id: String,
    /// The current text; empty once deleted for everyone.
    pub body: String,
    /// Milliseconds since the Unix epoch (taken from the message ID).
    pub sent_at: i64,
    /// When the text was last edited; `null` if never.
    #[serde(default)]
    pub edited_at: Option<i64>,
    /// Deleted for everyone: a tombstone without text.
    #[serde(default)]
    pub deleted: bool,
    /// Set on event messages, which record a change to a group (its
    /// `sender_id` made it; `body` is empty). Absent on ordinary messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<ChatEvent>,
}

/// A change to a group, recorded in its history as an event message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The sender created the group with these members (the sender included).
    Created { name: String, members: Vec<UserId> },
    /// The sender renamed the group.
    Renamed { name: String },
    /// The sender set (`true`) or removed the group's avatar.
    AvatarChanged { avatar: bool },
    /// The sender added these users.
    MembersAdded { members: Vec<UserId> },
    /// The sender removed `user_id` from the group.
    MemberRemoved { user_id: UserId },
    /// The sender left the group.
    MemberLeft {},
    /// The sender gave `user_id` the role `role`.
    RoleChanged { user_id: UserId, role: crate::rest::Role },
    /// The sender (the owner) made `user_id` the owner; the sender is now an admin.
    OwnerChanged { user_id: UserId },
    /// An event newer than this client; refetch the chat.
    #[serde(other)]
    Unknown,
}

/// Limits a client must respect, sent in `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub max_client_msg_id_bytes: usize,
    /// The server closes a connection that sends nothing (no frame, pong or
    /// ping) for this many seconds.
    pub idle_timeout_secs: u64,
}

/// Body of an `error` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    /// Human-readable detail; not stable.
    pub message: String,
    /// The `client_msg_id` of the `send` that failed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// The `request_id` of the `edit` or `delete` that failed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// With `rate_limited`: milliseconds to wait before retrying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Stable error codes of `error` frames. Adding a code is compatible;
/// changing one is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a frame of a known shape (missing or extra fields).
    BadFrame,
    /// A `type` this protocol version does not know.
    UnknownType,
    /// Binary frames are not part of v1.
    BinaryNotSupported,
    /// A frame above `max_frame_bytes`.
    FrameTooLarge,
    /// A text frame that is not valid UTF-8.
    InvalidUtf8,
    /// A field's value is out of range (empty body, body too long, bad ID…).
    InvalidField,
    /// The chat does not exist or the user is not a member of it.
    ChatNotFound,
    /// The user may not do this.
    Forbidden,
    /// The same `client_msg_id` was already used for a different message.
    ClientMsgIdConflict,
    /// The message does not exist in the chat (or is deleted for everyone).
    MessageNotFound,
    /// The message can no longer be edited or deleted for everyone: its
    /// window has passed or its edits are used up.
    EditClosed,
    /// Too many requests; slow down.
    RateLimited,
    /// The server failed; the request may be retried with the same `client_msg_id`.
    Internal,
    /// The server cannot do this right now (cluster mode: the chat's shard
    /// is moving between nodes, or its node cannot be reached). Retry the
    /// same frame (the same `client_msg_id`) after `retry_after_ms`.
    Unavailable,
    /// A code newer than this client; treat as a failure of the request.
    #[serde(other)]
    Unknown,
}

/// WebSocket close codes Parley uses, and whether the client may reconnect.
pub mod close {
    /// Normal closure (client asked, or logout). Reconnect only if the user wants to.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down or restarting. Reconnect with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol violation at the WebSocket layer. Do not reconnect blindly.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8 (RFC 6455 §8.1). Fix the encoder.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame above `max_frame_bytes`. Reconnect, and send smaller frames.
    pub const TOO_BIG: u16 = 1009;
    /// The access token expired during the connection. Refresh, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// This login was ended from another device ("log out other devices").
    /// Do not reconnect: the user must log in again.
    pub const SESSION_REVOKED: u16 = 4003;
    /// The client could not keep up with its outbound queue. Reconnect and `sync`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing heard from the client for `idle_timeout_secs`. Reconnect.
    pub const IDLE_TIMEOUT: u16 = 4009;
    /// Cluster mode: this node does not (or no longer) serve the user,
    /// because their shard lives on (or moved to) another node. Get a new
    /// ticket from `POST /api/v1/auth/ws-ticket` (any node), connect to
    /// the `url` it names, and `sync`.
    pub const MOVED: u16 = 4010;
    /// Too many invalid frames. Fix the client; reconnect after a delay.
    pub const TOO_MANY_ERRORS: u16 = 4029;
}

impl ServerFrame {
    /// Shorthand for an `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, client_msg_id: Option<String>) -> Self {
        ServerFrame::Error(ErrorFrame {
            code,
            message: message.into(),
            client_msg_id,
            request_id: None,
            retry_after_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_frame_round_trips_with_documented_shape() {
        let text = r#"{"type":"send","client_msg_id":"c1","chat_id":"12","body":"hi"}"#;
        let frame: ClientFrame = serde_json::from_str(text).expect("valid frame");
        assert_eq!(frame, ClientFrame::Send { client_msg_id: "c1".into(), chat_id: ChatId(12), body: "hi".into() });
    }

    #[test]
    fn extra_fields_are_refused() {
        let text = r#"{"type":"sync","after_seq":1,"sneaky":true}"#;
        assert!(serde_json::from_str::<ClientFrame>(text).is_err());
    }

    #[test]
    fn error_frame_is_flat() {
        let frame = ServerFrame::error(ErrorCode::BadFrame, "nope", None);
        let json = serde_json::to_value(&frame).expect("serializes");
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "bad_frame");
        assert!(json.get("client_msg_id").is_none());
    }
}
