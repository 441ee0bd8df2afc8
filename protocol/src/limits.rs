//! Protocol limits every client can rely on; the server enforces them.

/// Largest message body, in bytes of UTF-8 (not characters).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest client WebSocket frame, in bytes. Leaves room for the envelope
/// around a maximal body (JSON escaping can grow text up to 6x, but a
/// frame above this size is refused before it is parsed).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Longest client message ID, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;

/// Most updates returned for one `sync` request; the client asks again
/// while `has_more` is true.
pub const MAX_SYNC_BATCH: u32 = 500;

/// Largest page of history returned by `GET /chats/{id}/messages`.
pub const MAX_HISTORY_PAGE: u32 = 200;

/// Default page of history when `limit` is absent.
pub const DEFAULT_HISTORY_PAGE: u32 = 50;

/// Username length bounds, in characters (`[a-z0-9_.-]`, case-insensitive).
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;

/// Display-name length bounds, in characters.
pub const DISPLAY_NAME_LEN: std::ops::RangeInclusive<usize> = 1..=64;

/// Password length bounds, in characters. The upper bound stops anyone
/// from making the server hash megabytes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 10..=1024;

/// Longest bio, in characters.
pub const MAX_BIO_CHARS: usize = 280;

/// Longest search query, in characters.
pub const MAX_SEARCH_CHARS: usize = 64;

/// Largest page of search results.
pub const MAX_SEARCH_PAGE: u32 = 50;

/// Default page of search results.
pub const DEFAULT_SEARCH_PAGE: u32 = 20;

/// Deepest a search may page (`offset`), so no query walks the whole table.
pub const MAX_SEARCH_OFFSET: u32 = 1_000;

/// Largest page of a friends, requests or blocks list.
pub const MAX_RELATION_PAGE: u32 = 100;

/// Default page of a friends, requests or blocks list.
pub const DEFAULT_RELATION_PAGE: u32 = 50;

/// How long after sending a message its author may edit it or delete it
/// for everyone: 48 hours (Telegram allows 48 h for some actions, WhatsApp
/// about 60 h for deletion, Signal 24 h for edits and deletions).
pub const EDIT_WINDOW_MS: i64 = 48 * 3600 * 1000;

/// Most edits of one message (Signal allows 10, WhatsApp edits within
/// 15 minutes); enough to fix typos, bounded so history stays small.
pub const MAX_EDITS_PER_MESSAGE: u32 = 20;

/// Longest `request_id`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// How long a typing indicator shows without a new `typing` frame.
pub const TYPING_TTL_MS: u64 = 5_000;

/// At most one typing indicator per user and chat is relayed per this
/// many milliseconds; clients send `typing` every ~3 s while typing.
pub const TYPING_INTERVAL_MS: u64 = 2_000;

/// Most members of a group. WhatsApp allows 1,024 and Signal 1,000; a
/// Telegram basic group 200 before it becomes a supergroup; Matrix sets no
/// limit and pays for it in state resolution. Every message costs one log
/// entry per member, so the size bounds the write cost of one send (about
/// a millisecond of SQLite at this size) and the fan-out of one message.
pub const MAX_GROUP_MEMBERS: usize = 1_024;

/// Most groups one user may be in. Telegram caps a user at 500 groups and
/// channels; the chat list and the presence audience grow with it.
pub const MAX_GROUPS_PER_USER: u32 = 500;

/// Group-name length bounds, in characters (WhatsApp allows 100).
pub const GROUP_NAME_LEN: std::ops::RangeInclusive<usize> = 1..=100;

/// Most users named in one create or add request, so the request fits the
/// 16 KiB body limit; larger groups are built with several requests.
pub const MAX_MEMBERS_PER_REQUEST: usize = 256;

/// Longest presence status text, in characters (Slack allows 100).
pub const MAX_STATUS_TEXT_CHARS: usize = 100;
