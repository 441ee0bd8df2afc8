//! Bodies of the v1 REST API (`/api/v1`), including the problem+json error.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ids::{ChatId, MessageId, UserId};
use crate::ws::Message;

/// `POST /auth/register`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters of `a-z 0-9 _ . -`; unique, case-insensitively.
    pub username: String,
    /// At least 10 characters.
    pub password: String,
    /// 1–64 characters shown to other people.
    pub display_name: String,
}

/// `POST /auth/login`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A fresh access/refresh token pair.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Signed JWT (EdDSA); send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Opaque; single use: every refresh returns a new one.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    pub user_id: UserId,
}

/// `POST /auth/ws-ticket`: a one-time credential for browsers, which cannot
/// set headers on a WebSocket handshake.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WsTicketResponse {
    /// Pass as `?ticket=` on `GET /api/v1/ws`; valid once.
    pub ticket: String,
    /// Seconds until the ticket expires.
    pub expires_in: u64,
}

/// A user as other people see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// `POST /chats/direct`: open (or find) the 1:1 chat with a user.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenDirectChat {
    pub user_id: UserId,
}

/// Kind of chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// A 1:1 chat between two users.
    Direct,
}

/// A chat in the caller's chat list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatSummary {
    pub id: ChatId,
    pub kind: ChatKind,
    /// Every member, the caller included.
    pub members: Vec<UserView>,
    /// Newest message, if any.
    pub last_message: Option<Message>,
}

/// `GET /chats`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatList {
    /// Most recently active first.
    pub chats: Vec<ChatSummary>,
}

/// Query of `GET /chats/{chat_id}/messages`.
#[derive(Clone, Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only messages with a smaller ID (older); absent: from the newest.
    pub before: Option<MessageId>,
    /// 1–200, default 50.
    pub limit: Option<u32>,
}

/// A page of history, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<MessageId>,
}

/// RFC 9457 problem details, served as `application/problem+json`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem kind: `https://parley.chat/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code; see `docs/protocol.md`.
    pub code: String,
    pub detail: Option<String>,
    /// Seconds to wait before retrying (rate limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}
