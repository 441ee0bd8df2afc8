//! Storage traits per aggregate (users, tokens, chats and messages, node
//! metadata) and the backends behind them, chosen in one place: [`open`].
//!
//! Every backend passes the same conformance suite (`tests/conformance.rs`).
//! Contracts (what is atomic, what is ordered, what may be retried) are in
//! each trait's docs; a backend that cannot keep one is not a backend.

mod contacts;
mod error;
mod media;
mod records;
pub mod relation;
pub mod scylla;
mod search;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use contacts::*;
pub use error::{StorageError, StorageResult};
pub use media::*;
pub use records::*;
pub use relation::IllegalTransition;
pub use search::search_key;

/// Users and their credentials.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a user. Fails with [`StorageError::Conflict`] if another user
    /// has the same `username_key`; nothing is written then.
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord>;
    /// Looks a user up by the case-folded username.
    async fn user_by_username(&self, username_key: &str) -> StorageResult<Option<UserRecord>>;
    async fn user_by_id(&self, id: i64) -> StorageResult<Option<UserRecord>>;
    /// The users among `ids` that exist, in any order.
    async fn users_by_ids(&self, ids: &[i64]) -> StorageResult<Vec<UserRecord>>;
    /// Replaces a user's password hash (re-hash under a new pepper or
    /// parameters). Fails with [`StorageError::NotFound`] for an unknown user.
    async fn set_password_hash(&self, user_id: i64, password_hash: String, pepper_version: u32) -> StorageResult<()>;
    /// Applies a profile change and returns the user as now stored; the
    /// display name's search key follows it. [`StorageError::NotFound`] for
    /// an unknown user.
    async fn update_profile(&self, user_id: i64, update: ProfileUpdate) -> StorageResult<UserRecord>;
    /// Stores the user's presence choice and status text.
    /// [`StorageError::NotFound`] for an unknown user.
    async fn set_presence(&self, user_id: i64, choice: PresenceChoice, status_text: String) -> StorageResult<()>;
    /// Records when the user was last seen online.
    async fn set_last_seen(&self, user_id: i64, last_seen_ms: i64) -> StorageResult<()>;
    /// Sets (or clears) the avatar's media key; returns the previous key so
    /// the caller can delete its files. [`StorageError::NotFound`] for an unknown user.
    async fn set_avatar(&self, user_id: i64, avatar: Option<String>) -> StorageResult<Option<String>>;
    /// Users whose username or display name contains `search.key` (both
    /// folded with [`search_key`]), ranked: exact match first, then prefix
    /// (of the name or of a word in it), then substring; ties by username.
    /// Excludes the searcher and everyone who blocks the searcher.
    async fn search_users(&self, search: UserSearch) -> StorageResult<Vec<UserRecord>>;
}

/// Friendships, friend requests and blocks between pairs of users.
#[async_trait]
pub trait RelationStore: Send + Sync + 'static {
    /// How `user` stands with `other` (`RelationView::default()` for strangers).
    async fn relation(&self, user: i64, other: i64) -> StorageResult<RelationView>;
    /// `user`'s [`Relation`] with each of `others`, in one read; strangers
    /// are left out.
    async fn relations_with(&self, user: i64, others: &[i64]) -> StorageResult<Vec<(i64, Relation)>>;
    /// Atomically applies `action` by `user` toward `other` with
    /// [`relation::transition`], writes both sides, and appends a relation
    /// update to the log of each side whose [`Relation`] changed. An illegal
    /// transition changes nothing and comes back as the inner `Err`.
    /// [`StorageError::NotFound`] if either user is unknown.
    async fn apply(
        &self,
        user: i64,
        other: i64,
        action: RelationAction,
        now_ms: i64,
    ) -> StorageResult<Result<RelationChange, IllegalTransition>>;
    /// The users `user` has `relation` with (not `Relation::None`), newest
    /// first, paged by `(since_ms, other)`: pass the last entry of a page as
    /// `after` to get the next.
    async fn relations(
        &self,
        user: i64,
        relation: Relation,
        after: Option<RelationEntry>,
        limit: u32,
    ) -> StorageResult<Vec<RelationEntry>>;
    /// The users `user` blocks, paged like [`RelationStore::relations`].
    async fn blocked(&self, user: i64, after: Option<RelationEntry>, limit: u32) -> StorageResult<Vec<RelationEntry>>;
    /// Who sees `user`'s presence, and whose presence `user` sees (the
    /// relation is symmetric): friends and members of a group `user` is
    /// in, unless either blocks the other; only among `among` if given.
    async fn presence_peers(&self, user: i64, among: Option<Vec<i64>>) -> StorageResult<Vec<PresencePeer>>;
    /// `user` and all their presence peers ([`RelationStore::presence_peers`]
    /// without `among`), read together: what a connection needs to attach,
    /// in one trip to the store. `None` for an unknown user.
    async fn user_and_presence_peers(&self, user: i64) -> StorageResult<Option<(UserRecord, Vec<PresencePeer>)>>;
}

/// Refresh tokens, grouped in families (one family per login).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Starts a new family with its first token.
    async fn create_family(&self, family: NewTokenFamily, first: NewRefreshToken) -> StorageResult<()>;
    /// Atomically consumes `presented` and stores `next` in its family.
    ///
    /// - live, unused, unexpired token in a live family: it is marked used,
    ///   `next` is stored, [`RotateOutcome::Rotated`];
    /// - token already used: the whole family is revoked, `next` is not
    ///   stored, [`RotateOutcome::Reused`] (refresh-token theft detection);
    /// - family revoked, token expired or unknown: nothing changes.
    async fn rotate(&self, presented: &TokenHash, next: NewRefreshToken, now_ms: i64) -> StorageResult<RotateOutcome>;
    /// Revokes the family of `token` (logout) and names it; `None` if the
    /// token is unknown. Revoking a revoked family again names it again.
    async fn revoke_family_of(&self, token: &TokenHash, now_ms: i64) -> StorageResult<Option<EndedFamily>>;
    /// Revokes every live family of `user_id` except `keep` ("log out other
    /// devices"); returns the families it revoked.
    async fn revoke_other_families(&self, user_id: i64, keep: i64, now_ms: i64) -> StorageResult<Vec<i64>>;
    /// The families first revoked from `since_ms` to `now_ms` (both
    /// included), each with that time, in no particular order: the logins
    /// whose access tokens may still be live, to refuse them again after
    /// the shared state that listed them was lost. A backend may forget
    /// revocations older than [`REVOKED_FAMILIES_KEPT_MS`].
    async fn families_revoked_since(&self, since_ms: i64, now_ms: i64) -> StorageResult<Vec<RevokedFamily>>;
}

/// How long a backend must be able to list a revoked family
/// ([`TokenStore::families_revoked_since`]): 30 days, far beyond an access
/// token's life.
pub const REVOKED_FAMILIES_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// Chats, their members, messages and each user's update log.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Returns the 1:1 chat of `a` and `b`, creating it with `new_id` if
    /// there is none. Atomic: two concurrent calls return the same chat.
    async fn direct_chat(&self, a: i64, b: i64, new_id: i64, now_ms: i64) -> StorageResult<ChatRecord>;
    async fn chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>>;
    /// The user's chats, most recently active first, each with its newest message.
    async fn chats_of_user(&self, user_id: i64) -> StorageResult<Vec<ChatOverview>>;
    /// Stores a message and appends one update to the log of every user in
    /// `audience`, all in one atomic step. Fails with
    /// [`StorageError::NotFound`] if the chat or an audience user is unknown.
    ///
    /// Idempotent per `(sender_id, client_msg_id)`: if that pair is stored
    /// already, nothing is written and [`AppendOutcome::Duplicate`] returns
    /// the stored message (whatever chat or body this call names; the
    /// caller compares). Callers serialise appends per chat, so message IDs
    /// of a chat are stored in increasing order.
    async fn append_message(&self, message: NewMessage, audience: &[i64]) -> StorageResult<AppendOutcome> {
        let mut outcomes = self.append_messages(vec![message], audience).await?;
        outcomes.pop().ok_or_else(|| StorageError::Backend("append_messages returned nothing".into()))
    }
    /// [`ChatStore::append_message`] for several messages of one chat, in
    /// order, in one atomic step (group commit: a batch costs about what
    /// one message costs, since the same log pages are written). One
    /// outcome per message; a pair repeated within the batch is a
    /// duplicate of its first occurrence. If the step fails, nothing of
    /// the batch is written.
    async fn append_messages(&self, messages: Vec<NewMessage>, audience: &[i64]) -> StorageResult<Vec<AppendOutcome>>;
    /// Up to `limit` messages of the chat with an ID below `before` (all if
    /// `None`), newest first, as `viewer` sees them: messages the viewer
    /// deleted for themselves are left out; deleted-for-everyone ones are
    /// tombstones.
    async fn messages_before(
        &self,
        chat_id: i64,
        viewer: i64,
        before: Option<i64>,
        limit: u32,
    ) -> StorageResult<Vec<MessageRecord>>;
    /// One message of a chat, in its current state.
    async fn message(&self, chat_id: i64, message_id: i64) -> StorageResult<Option<MessageRecord>>;
    /// Atomically replaces the message's text (setting `edited_at_ms`,
    /// counting the edit) and appends an `Edited` entry to each audience
    /// member's update log. Checks of who may edit are the caller's; callers
    /// serialise changes per chat. [`StorageError::NotFound`] for an unknown message.
    async fn edit_message(
        &self,
        chat_id: i64,
        message_id: i64,
        body: String,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<(MessageRecord, Vec<(i64, u64)>)>;
    /// Atomically turns the message into a tombstone (its text is removed
    /// from storage) and appends a `Deleted` entry for everyone to each
    /// audience member's log. [`StorageError::NotFound`] for an unknown message.
    async fn delete_message(
        &self,
        chat_id: i64,
        message_id: i64,
        now_ms: i64,
        audience: &[i64],
    ) -> StorageResult<Vec<(i64, u64)>>;
    /// Hides the message from `user_id` only and appends a `Deleted` (not
    /// for everyone) entry to that user's log; returns its seq. Hiding twice
    /// logs nothing new and returns `None`. [`StorageError::NotFound`] for an
    /// unknown message.
    async fn hide_message(&self, user_id: i64, chat_id: i64, message_id: i64) -> StorageResult<Option<u64>>;
    /// Up to `limit` entries of the user's update log with `seq > after`,
    /// in `seq` order, each resolved to the current state of what it names.
    async fn updates_after(&self, user_id: i64, after: u64, limit: u32) -> StorageResult<Vec<UpdateRecord>>;
    /// The newest `seq` of the user's update log (0 if empty).
    async fn latest_seq(&self, user_id: i64) -> StorageResult<u64>;
    /// Raises the user's delivered watermark in the chat to `up_to`, and
    /// with `seen` also the seen watermark, each capped at the chat's newest
    /// message (a client cannot acknowledge the future) and never lowered.
    /// If either moved, appends a receipt entry in the same step to the
    /// update log of the reader and of whoever the move concerns: in a 1:1
    /// chat the other member; in a group the members who sent a message
    /// the move covers (so a read costs what it tells, not one entry per
    /// member). Returns the change; `None` if nothing moved.
    /// [`StorageError::NotFound`] if the user is not a member.
    async fn mark_read(
        &self,
        chat_id: i64,
        user_id: i64,
        up_to: i64,
        seen: bool,
    ) -> StorageResult<Option<ReceiptChange>>;
    /// Every member's watermarks in the chat, by user ID ascending.
    async fn receipts(&self, chat_id: i64) -> StorageResult<Vec<ReceiptRecord>>;
    /// Every member of the chat with their role, by user ID ascending.
    async fn members(&self, chat_id: i64) -> StorageResult<Vec<MemberRecord>>;
    /// Creates a group with `event` (its creation) as its first message,
    /// logged to every member, in one atomic step.
    /// [`StorageError::NotFound`] if a member is unknown.
    async fn create_group(
        &self,
        group: NewGroup,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>>;
    /// Applies `change` to the group and appends `event` (which records it)
    /// to the chat, logged to everyone who is a member before or after the
    /// change, in one atomic step. Callers serialise changes per chat and
    /// check permissions. [`StorageError::NotFound`] if the chat is not a
    /// group, or a named member (or user to add) is unknown.
    async fn change_group(
        &self,
        chat_id: i64,
        change: GroupChange,
        event: NewMessage,
    ) -> StorageResult<Result<GroupChanged, GroupRefusal>>;
}

/// Small per-node facts that must survive restarts.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// The ID clock's persisted high-water mark for `generator`, in
    /// milliseconds since the ID epoch.
    async fn clock_high_water(&self, generator: u16) -> StorageResult<Option<u64>>;
    /// Durably raises the high-water mark (never lowers it).
    async fn set_clock_high_water(&self, generator: u16, ms: u64) -> StorageResult<()>;
    /// Cheap round trip proving the store answers (readiness).
    async fn ping(&self) -> StorageResult<()>;
}

/// Every store a node needs, as trait objects.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub chats: Arc<dyn ChatStore>,
    pub relations: Arc<dyn RelationStore>,
    pub meta: Arc<dyn MetaStore>,
    /// Confirmed email and phone addresses and their pending changes.
    pub contacts: Arc<dyn ContactStore>,
    /// Avatar images and other media, in `<data_dir>/media` for every backend.
    pub media: Arc<dyn MediaStore>,
}

/// Which backend holds the data, and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Embedded SQLite in the node's data directory.
    Sqlite {
        /// Database file; relative paths are inside the data directory.
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
        /// `normal` survives a killed process (WAL); `full` also survives
        /// power loss at the cost of an fsync per commit.
        #[serde(default)]
        synchronous: Synchronous,
    },
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Sqlite { path: default_sqlite_path(), synchronous: Synchronous::default() }
    }
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("parley.sqlite3")
}

/// SQLite's `synchronous` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

/// Directory of [`LocalMediaStore`], inside the data directory.
pub const MEDIA_DIR: &str = "media";

/// Opens the backend `config` names. Relative paths resolve in `data_dir`.
pub fn open(config: &StorageConfig, data_dir: &Path) -> StorageResult<Stores> {
    match config {
        StorageConfig::Sqlite { path, synchronous } => {
            let store = sqlite::SqliteStore::open(&data_dir.join(path), *synchronous)?;
            stores(Arc::new(store), data_dir)
        }
    }
}

/// Opens the ScyllaDB / Cassandra backend ([`scylla::ScyllaStore`]),
/// creating its keyspace and tables if they are missing. Media stays a
/// [`LocalMediaStore`] in `<data_dir>/media` for now.
pub async fn open_scylla(config: &scylla::ScyllaConfig, data_dir: &Path) -> StorageResult<Stores> {
    let store = scylla::ScyllaStore::open(config).await?;
    stores(Arc::new(store), data_dir)
}

/// Every store of one backend, with media in `<data_dir>/media`.
fn stores<S>(store: Arc<S>, data_dir: &Path) -> StorageResult<Stores>
where
    S: UserStore + TokenStore + ChatStore + RelationStore + MetaStore + ContactStore,
{
    let media = Arc::new(LocalMediaStore::open(&data_dir.join(MEDIA_DIR))?);
    Ok(Stores {
        users: store.clone(),
        tokens: store.clone(),
        chats: store.clone(),
        relations: store.clone(),
        contacts: store.clone(),
        meta: store,
        media,
    })
}
