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

/// One account written by `parley seed`: its username and a login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeededAccount {
    pub username: String,
    #[serde(flatten)]
    pub tokens: TokenResponse,
}

/// The file `parley seed --out` writes and `parley-load run --accounts` reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeededAccounts {
    pub users: Vec<SeededAccount>,
}

/// `POST /auth/logout-others`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoggedOutOthers {
    /// How many other login sessions were ended.
    pub sessions_ended: u32,
}

/// `POST /auth/ws-ticket`: a one-time credential for browsers, which cannot
/// set headers on a WebSocket handshake.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WsTicketResponse {
    /// Pass as `?ticket=` on `GET /api/v1/ws`; valid once.
    pub ticket: String,
    /// Seconds until the ticket expires.
    pub expires_in: u64,
    /// Cluster mode: the WebSocket URL of the node that serves this user
    /// (`ws://…/api/v1/ws` or `wss://…`); connect there, not to the node
    /// that issued the ticket. Absent on a single node: connect to the
    /// same origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A user as other people see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    /// Short self-description; empty if unset.
    #[serde(default)]
    pub bio: String,
    /// The avatar's image URLs; `null` if the user has none.
    #[serde(default)]
    pub avatar: Option<AvatarUrls>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The caller's own profile: the public view plus private contact details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OwnProfile {
    #[serde(flatten)]
    pub user: UserView,
    /// Confirmed email address, visible only to its owner.
    pub email: Option<String>,
    /// Confirmed phone number (E.164), visible only to its owner.
    pub phone: Option<String>,
    /// The presence the caller chose and their status text.
    pub presence: PresenceSetting,
}

/// `PUT /me/presence`, and the caller's setting in their profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceSetting {
    pub status: PresenceChoice,
    /// At most 100 characters; empty for none.
    #[serde(default)]
    pub status_text: String,
}

/// The presence a user chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChoice {
    /// Online while connected; away while every device reports idle.
    Auto,
    Away,
    Busy,
    /// Shown offline; last-seen does not move.
    Invisible,
}

/// `PATCH /me`: absent fields stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// 1–64 characters.
    pub display_name: Option<String>,
    /// Up to 280 characters; empty clears it.
    pub bio: Option<String>,
}

/// How the caller stands with another user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RelationState {
    /// Strangers (or a request was declined, cancelled, or a friend removed).
    None,
    Friends,
    /// The caller asked the other user to be friends.
    RequestSent,
    /// The other user asked the caller.
    RequestReceived,
}

/// `POST /friends/requests`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FriendRequest {
    pub user_id: UserId,
}

/// The caller's relation with a user after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RelationStatus {
    pub user_id: UserId,
    pub relation: RelationState,
    /// The caller blocks this user.
    pub blocking: bool,
}

/// An entry of a friends, requests or blocks list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RelatedUser {
    pub user: UserView,
    /// Since when (milliseconds since the Unix epoch).
    pub since: i64,
}

/// A page of a friends, requests or blocks list, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RelatedUserPage {
    pub users: Vec<RelatedUser>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

/// Query of the list endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Cursor from the previous page's `next_after`.
    pub after: Option<String>,
    /// 1–100, default 50.
    pub limit: Option<u32>,
}

/// Query of `GET /users/search`.
#[derive(Clone, Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What to look for in usernames and display names (case- and accent-insensitive).
    pub q: String,
    /// 1–50, default 20.
    pub limit: Option<u32>,
    /// Results to skip (paging), at most 1,000.
    pub offset: Option<u32>,
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    pub user: UserView,
    pub relation: RelationState,
}

/// `GET /users/search`: best matches first (exact, then prefix, then substring).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    pub users: Vec<SearchHit>,
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
    /// A group chat with a name, roles and up to 1,024 members.
    Group,
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Posts, reads, leaves.
    Member,
    /// Also renames, sets the avatar, adds members, removes members, and
    /// deletes any message for everyone.
    Admin,
    /// Also removes admins, promotes and demotes, and transfers ownership.
    Owner,
}

/// A chat in the caller's chat list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatSummary {
    pub id: ChatId,
    pub kind: ChatKind,
    /// 1:1 chats: both members. Groups: empty (see `group.member_count`;
    /// `GET /chats/{chat_id}/members` lists them).
    pub members: Vec<UserView>,
    /// Name, avatar, size and the caller's role; `null` for 1:1 chats.
    #[serde(default)]
    pub group: Option<GroupInfo>,
    /// Newest message, if any.
    pub last_message: Option<Message>,
    /// Messages from others after the caller's seen watermark.
    #[serde(default)]
    pub unread: u32,
    /// 1:1 chats: both members' delivered and seen watermarks. Groups: the
    /// caller's own (`GET /chats/{chat_id}/messages/{message_id}/receipts`
    /// tells who has a message).
    #[serde(default)]
    pub receipts: Vec<MemberReceipts>,
}

/// What a group has beyond its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    /// 1–100 characters.
    pub name: String,
    pub avatar: Option<AvatarUrls>,
    pub member_count: u32,
    pub owner_id: UserId,
    /// The caller's role.
    pub role: Role,
}

/// `POST /chats/groups`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// 1–100 characters.
    pub name: String,
    /// Friends of the caller to add (the caller is added as the owner);
    /// at most 256 per request.
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// `PATCH /chats/{chat_id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    pub name: String,
}

/// `POST /chats/{chat_id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Friends of the caller who are not members yet; 1–256 per request.
    pub members: Vec<UserId>,
}

/// `PUT /chats/{chat_id}/members/{user_id}/role`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `admin` or `member`; ownership moves with `POST /chats/{chat_id}/owner`.
    pub role: Role,
}

/// `POST /chats/{chat_id}/owner`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnership {
    pub user_id: UserId,
}

/// One member of a chat.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatMember {
    pub user: UserView,
    pub role: Role,
    /// When they joined, in milliseconds since the epoch.
    pub joined_at: i64,
}

/// `GET /chats/{chat_id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    /// By user ID.
    pub members: Vec<ChatMember>,
}

/// `GET /chats/{chat_id}/messages/{message_id}/receipts`: which other
/// members have a message and which have read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageReceipts {
    pub message_id: MessageId,
    /// Members (not the sender) whose delivered watermark reached the message.
    pub delivered: Vec<UserId>,
    /// Members (not the sender) whose seen watermark reached the message.
    pub seen: Vec<UserId>,
}

/// One member's receipt watermarks in a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberReceipts {
    pub user_id: UserId,
    /// Has received the chat's messages up to this ID ("0" for none).
    pub delivered_up_to: MessageId,
    /// Has read the chat up to this ID ("0" for none).
    pub seen_up_to: MessageId,
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

/// URLs of a user's avatar thumbnails (square PNGs), relative to the node:
/// `GET` them without authentication. Each upload gets new URLs, so they
/// may be cached forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AvatarUrls {
    /// 64×64 pixels.
    pub small: String,
    /// 256×256 pixels.
    pub large: String,
}
