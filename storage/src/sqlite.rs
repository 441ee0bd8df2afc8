//! Embedded SQLite backend (WAL): one writer connection, a pool of readers.
//!
//! Every call runs on tokio's blocking pool. Writes take the single writer
//! connection and run in one `BEGIN IMMEDIATE` transaction; reads take a
//! read-only connection and run in one deferred transaction, so each call
//! sees a consistent snapshot. In WAL mode readers never block the writer.
//!
//! The schema is versioned with `PRAGMA user_version`: `MIGRATIONS` holds
//! one SQL batch per version, applied in order on open. Append new
//! migrations; never edit one that has shipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, ffi, params};

use crate::{
    AppendOutcome, ChatKind, ChatOverview, ChatRecord, ChatStore, MessageRecord, MetaStore, NewMessage,
    NewRefreshToken, NewTokenFamily, NewUser, RotateOutcome, StorageError, StorageResult, Synchronous, TokenHash,
    TokenStore, UpdateKind, UpdateRecord, UserRecord, UserStore,
};

/// Read-only connections opened next to the writer. Reads beyond this many
/// at once wait for a free connection (on the blocking pool, never on the
/// async runtime).
pub const READER_POOL_SIZE: usize = 4;

/// How long a statement waits for a lock held by another connection (a WAL
/// checkpoint, another process on the same file) before failing with
/// `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps compiled.
const STATEMENT_CACHE_CAPACITY: usize = 64;

const _: () = assert!(READER_POOL_SIZE > 0, "the reader pool needs at least one connection");

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[MIGRATION_1];

/// Version 1: users, token families, 1:1 chats, messages, update logs and
/// the ID clock's high-water marks.
const MIGRATION_1: &str = r#"
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT    NOT NULL,
    username_key   TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,
    pepper_version INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    -- newest seq of the user's update log (user_updates)
    update_seq     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE token_families (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) STRICT;
CREATE INDEX token_families_by_user ON token_families (user_id);

CREATE TABLE refresh_tokens (
    hash          BLOB    PRIMARY KEY CHECK (length(hash) = 32),
    family_id     INTEGER NOT NULL REFERENCES token_families (id),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

CREATE TABLE chats (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    -- highest message ID stored in the chat
    last_message_id INTEGER
) STRICT;

-- the 1:1 chat of a pair of users, keyed by the ordered pair
CREATE TABLE direct_chats (
    user_lo INTEGER NOT NULL,
    user_hi INTEGER NOT NULL,
    chat_id INTEGER NOT NULL UNIQUE REFERENCES chats (id),
    PRIMARY KEY (user_lo, user_hi),
    CHECK (user_lo <= user_hi)
) STRICT, WITHOUT ROWID;

CREATE TABLE chat_members (
    chat_id         INTEGER NOT NULL REFERENCES chats (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    delivered_up_to INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX chat_members_by_user ON chat_members (user_id, chat_id);

CREATE TABLE messages (
    chat_id       INTEGER NOT NULL REFERENCES chats (id),
    id            INTEGER NOT NULL,
    sender_id     INTEGER NOT NULL REFERENCES users (id),
    client_msg_id TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (chat_id, id),
    UNIQUE (sender_id, client_msg_id)
) STRICT, WITHOUT ROWID;

-- each user's update log; kind says which of the other columns it uses
CREATE TABLE user_updates (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    chat_id    INTEGER,
    message_id INTEGER,
    PRIMARY KEY (user_id, seq),
    FOREIGN KEY (chat_id, message_id) REFERENCES messages (chat_id, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta_clock (
    generator     INTEGER PRIMARY KEY,
    high_water_ms INTEGER NOT NULL
) STRICT;
"#;

/// `chats.kind` of a 1:1 chat.
const KIND_DIRECT: &str = "direct";
/// `user_updates.kind` of an entry naming a message.
const UPDATE_MESSAGE: &str = "message";

/// The SQLite store; implements every storage trait. Cheap to share behind
/// an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Arc<Connections>,
}

#[derive(Debug)]
struct Connections {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// Classifies SQLite failures: a violated uniqueness rule is a
/// [`StorageError::Conflict`], a missing row a foreign key points at is a
/// [`StorageError::NotFound`], anything else a [`StorageError::Backend`].
impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error().map(|e| e.extended_code) {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                StorageError::Conflict(error.to_string())
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => StorageError::NotFound(error.to_string()),
            _ => StorageError::Backend(Box::new(error)),
        }
    }
}

fn backend(message: impl Into<String>) -> StorageError {
    StorageError::Backend(message.into().into())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, brings its schema
    /// up to date and opens the reader pool.
    pub fn open(path: &Path, synchronous: Synchronous) -> StorageResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::Backend(Box::new(e)))?;
        }

        let mut writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&writer)?;
        let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend(format!("sqlite refused WAL mode for {} (journal_mode={mode})", path.display())));
        }
        let synchronous = match synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut writer)?;

        let readers = (0..READER_POOL_SIZE)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&reader)?;
                Ok(Mutex::new(reader))
            })
            .collect::<StorageResult<Vec<_>>>()?;

        tracing::info!(path = %path.display(), synchronous, readers = READER_POOL_SIZE, "sqlite store opened");
        Ok(SqliteStore {
            inner: Arc::new(Connections {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    /// Runs `f` in a deferred (snapshot) transaction on a reader, off the
    /// async runtime.
    async fn read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut conn = inner.reader()?;
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` in an immediate transaction on the writer, off the async
    /// runtime. Commits if `f` returns `Ok`, rolls back otherwise.
    async fn write<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut conn = inner.writer.lock().map_err(|_| poisoned(&inner.path))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

impl Connections {
    /// A free reader, trying each once round-robin before waiting for one.
    fn reader(&self) -> StorageResult<MutexGuard<'_, Connection>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(_)) => return Err(poisoned(&self.path)),
            }
        }
        self.readers[start % n].lock().map_err(|_| poisoned(&self.path))
    }
}

fn poisoned(path: &Path) -> StorageError {
    backend(format!("sqlite connection to {} poisoned by a panic", path.display()))
}

async fn blocking<T, F>(f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StorageResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Backend(Box::new(e)))?
}

/// Settings every connection needs.
fn configure(conn: &Connection) -> StorageResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

/// Applies the migrations the database has not seen yet, all in one
/// transaction.
fn migrate(conn: &mut Connection) -> StorageResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let applied = usize::try_from(version).map_err(|_| backend(format!("bad sqlite schema version {version}")))?;
    if applied > MIGRATIONS.len() {
        return Err(backend(format!(
            "sqlite schema version {applied} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = index + 1;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tracing::info!(version, "sqlite schema migrated");
    }
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------- users

const USER_COLUMNS: &str = "id, username, display_name, password_hash, pepper_version, created_at_ms";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        password_hash: row.get(3)?,
        pepper_version: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StorageResult<UserRecord> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO users (id, username, username_key, display_name, password_hash, pepper_version, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                user.id,
                user.username,
                user.username_key,
                user.display_name,
                user.password_hash,
                user.pepper_version,
                user.created_at_ms
            ])?;
            Ok(UserRecord {
                id: user.id,
                username: user.username,
                display_name: user.display_name,
                password_hash: user.password_hash,
                pepper_version: user.pepper_version,
                created_at_ms: user.created_at_ms,
            })
        })
        .await
    }

    async fn user_by_username(&self, username_key: &str) -> StorageResult<Option<UserRecord>> {
        let key = username_key.to_owned();
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1");
            Ok(tx.prepare_cached(&sql)?.query_row([key], user_from_row).optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: i64) -> StorageResult<Option<UserRecord>> {
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            Ok(tx.prepare_cached(&sql)?.query_row([id], user_from_row).optional()?)
        })
        .await
    }

    async fn users_by_ids(&self, ids: &[i64]) -> StorageResult<Vec<UserRecord>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Point lookups on one prepared statement in one snapshot: cheap in
        // an embedded database, and no limit on the number of IDs.
        self.read(move |tx| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut users = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(user) = stmt.query_row([id], user_from_row).optional()? {
                    users.push(user);
                }
            }
            Ok(users)
        })
        .await
    }

    async fn set_password_hash(&self, user_id: i64, password_hash: String, pepper_version: u32) -> StorageResult<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached("UPDATE users SET password_hash = ?2, pepper_version = ?3 WHERE id = ?1")?
                .execute(params![user_id, password_hash, pepper_version])?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {user_id}")));
            }
            Ok(())
        })
        .await
    }
}

// --------------------------------------------------------------- tokens

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_family(&self, family: NewTokenFamily, first: NewRefreshToken) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached("INSERT INTO token_families (id, user_id, created_at_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![family.id, family.user_id, family.created_at_ms])?;
            insert_token(tx, family.id, &first)?;
            Ok(())
        })
        .await
    }

    async fn rotate(&self, presented: &TokenHash, next: NewRefreshToken, now_ms: i64) -> StorageResult<RotateOutcome> {
        let presented = *presented;
        self.write(move |tx| {
            let found = tx
                .prepare_cached(
                    "SELECT t.family_id, f.user_id, t.expires_at_ms,
                            t.used_at_ms IS NOT NULL, f.revoked_at_ms IS NOT NULL
                     FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
                     WHERE t.hash = ?1",
                )?
                .query_row([presented], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, bool>(4)?,
                    ))
                })
                .optional()?;
            let Some((family_id, user_id, expires_at_ms, used, revoked)) = found else {
                return Ok(RotateOutcome::Unknown);
            };
            if revoked {
                return Ok(RotateOutcome::Revoked);
            }
            if used {
                revoke_family(tx, family_id, now_ms)?;
                tracing::warn!(user_id, family_id, "refresh token reused; family revoked");
                return Ok(RotateOutcome::Reused { user_id, family_id });
            }
            if now_ms >= expires_at_ms {
                return Ok(RotateOutcome::Expired);
            }
            tx.prepare_cached("UPDATE refresh_tokens SET used_at_ms = ?2 WHERE hash = ?1")?
                .execute(params![presented, now_ms])?;
            insert_token(tx, family_id, &next)?;
            Ok(RotateOutcome::Rotated { user_id, family_id })
        })
        .await
    }

    async fn revoke_family_of(&self, token: &TokenHash, now_ms: i64) -> StorageResult<bool> {
        let token = *token;
        self.write(move |tx| {
            let family: Option<i64> = tx
                .prepare_cached("SELECT family_id FROM refresh_tokens WHERE hash = ?1")?
                .query_row([token], |row| row.get(0))
                .optional()?;
            match family {
                Some(family_id) => {
                    revoke_family(tx, family_id, now_ms)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
    }
}

fn insert_token(tx: &Transaction<'_>, family_id: i64, token: &NewRefreshToken) -> StorageResult<()> {
    tx.prepare_cached(
        "INSERT INTO refresh_tokens (hash, family_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![token.hash, family_id, token.created_at_ms, token.expires_at_ms])?;
    Ok(())
}

/// Marks the family revoked, keeping the first revocation time.
fn revoke_family(tx: &Transaction<'_>, family_id: i64, now_ms: i64) -> StorageResult<()> {
    tx.prepare_cached("UPDATE token_families SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1")?
        .execute(params![family_id, now_ms])?;
    Ok(())
}

// ---------------------------------------------------------------- chats

const MESSAGE_COLUMNS: &str = "chat_id, id, sender_id, client_msg_id, body, sent_at_ms";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    message_at(row, 0)
}

/// Reads the six [`MESSAGE_COLUMNS`] starting at column `first`.
fn message_at(row: &Row<'_>, first: usize) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        chat_id: row.get(first)?,
        id: row.get(first + 1)?,
        sender_id: row.get(first + 2)?,
        client_msg_id: row.get(first + 3)?,
        body: row.get(first + 4)?,
        sent_at_ms: row.get(first + 5)?,
    })
}

/// Like [`message_at`], for a LEFT JOIN that may have found no message.
fn optional_message_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<MessageRecord>> {
    match row.get::<_, Option<i64>>(first + 1)? {
        Some(_) => message_at(row, first).map(Some),
        None => Ok(None),
    }
}

fn chat_kind(kind: &str) -> StorageResult<ChatKind> {
    match kind {
        KIND_DIRECT => Ok(ChatKind::Direct),
        other => Err(backend(format!("unknown chat kind {other:?} in sqlite store"))),
    }
}

/// The chat with its members, if it exists.
fn load_chat(conn: &Connection, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
    let chat = conn
        .prepare_cached("SELECT kind, created_at_ms FROM chats WHERE id = ?1")?
        .query_row([chat_id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
        .optional()?;
    let Some((kind, created_at_ms)) = chat else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached("SELECT user_id FROM chat_members WHERE chat_id = ?1 ORDER BY user_id")?
        .query_map([chat_id], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(Some(ChatRecord { id: chat_id, kind: chat_kind(&kind)?, members, created_at_ms }))
}

/// The 1:1 chat of the ordered pair `lo <= hi`, if it exists.
fn load_direct_chat(conn: &Connection, lo: i64, hi: i64) -> StorageResult<Option<ChatRecord>> {
    let chat_id: Option<i64> = conn
        .prepare_cached("SELECT chat_id FROM direct_chats WHERE user_lo = ?1 AND user_hi = ?2")?
        .query_row([lo, hi], |row| row.get(0))
        .optional()?;
    match chat_id {
        Some(chat_id) => load_chat(conn, chat_id),
        None => Ok(None),
    }
}

#[async_trait]
impl ChatStore for SqliteStore {
    async fn direct_chat(&self, a: i64, b: i64, new_id: i64, now_ms: i64) -> StorageResult<ChatRecord> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        // Most calls find the chat: answer those from a reader.
        if let Some(chat) = self.read(move |tx| load_direct_chat(tx, lo, hi)).await? {
            return Ok(chat);
        }
        self.write(move |tx| {
            if let Some(chat) = load_direct_chat(tx, lo, hi)? {
                return Ok(chat);
            }
            tx.prepare_cached("INSERT INTO chats (id, kind, created_at_ms) VALUES (?1, ?2, ?3)")?.execute(params![
                new_id,
                KIND_DIRECT,
                now_ms
            ])?;
            tx.prepare_cached("INSERT INTO direct_chats (user_lo, user_hi, chat_id) VALUES (?1, ?2, ?3)")?
                .execute(params![lo, hi, new_id])?;
            // A user's chat with themselves has one member.
            let members = if lo == hi { vec![lo] } else { vec![lo, hi] };
            let mut add_member = tx.prepare_cached("INSERT INTO chat_members (chat_id, user_id) VALUES (?1, ?2)")?;
            for &user_id in &members {
                add_member.execute([new_id, user_id])?;
            }
            Ok(ChatRecord { id: new_id, kind: ChatKind::Direct, members, created_at_ms: now_ms })
        })
        .await
    }

    async fn chat(&self, chat_id: i64) -> StorageResult<Option<ChatRecord>> {
        self.read(move |tx| load_chat(tx, chat_id)).await
    }

    async fn chats_of_user(&self, user_id: i64) -> StorageResult<Vec<ChatOverview>> {
        self.read(move |tx| {
            // Two queries for any number of chats: every member of the
            // user's chats, then the chats with their newest message.
            let mut members: HashMap<i64, Vec<i64>> = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT other.chat_id, other.user_id
                     FROM chat_members mine JOIN chat_members other ON other.chat_id = mine.chat_id
                     WHERE mine.user_id = ?1
                     ORDER BY other.chat_id, other.user_id",
                )?;
                let mut rows = stmt.query([user_id])?;
                while let Some(row) = rows.next()? {
                    members.entry(row.get(0)?).or_default().push(row.get(1)?);
                }
            }

            // Last activity: the newest message's time, or the chat's
            // creation for a chat without messages; IDs break ties.
            let sql = format!(
                "SELECT c.id, c.kind, c.created_at_ms, {}
                 FROM chat_members mine
                 JOIN chats c ON c.id = mine.chat_id
                 LEFT JOIN messages m ON m.chat_id = c.id AND m.id = c.last_message_id
                 WHERE mine.user_id = ?1
                 ORDER BY COALESCE(m.sent_at_ms, c.created_at_ms) DESC, COALESCE(m.id, c.id) DESC",
                prefixed("m", MESSAGE_COLUMNS)
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query([user_id])?;
            let mut chats = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let kind: String = row.get(1)?;
                chats.push(ChatOverview {
                    chat: ChatRecord {
                        id,
                        kind: chat_kind(&kind)?,
                        members: members.remove(&id).unwrap_or_default(),
                        created_at_ms: row.get(2)?,
                    },
                    last_message: optional_message_at(row, 3)?,
                });
            }
            Ok(chats)
        })
        .await
    }

    async fn append_message(&self, message: NewMessage, audience: &[i64]) -> StorageResult<AppendOutcome> {
        // One update per user, even if the caller names someone twice.
        let mut recipients: Vec<i64> = Vec::with_capacity(audience.len());
        for &user_id in audience {
            if !recipients.contains(&user_id) {
                recipients.push(user_id);
            }
        }
        self.write(move |tx| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ?1 AND client_msg_id = ?2");
            let stored = tx
                .prepare_cached(&sql)?
                .query_row(params![message.sender_id, message.client_msg_id], message_from_row)
                .optional()?;
            if let Some(stored) = stored {
                return Ok(AppendOutcome::Duplicate { message: stored });
            }

            let chats = tx
                .prepare_cached(
                    "UPDATE chats SET last_message_id = MAX(COALESCE(last_message_id, ?2), ?2) WHERE id = ?1",
                )?
                .execute([message.chat_id, message.id])?;
            if chats == 0 {
                return Err(StorageError::NotFound(format!("chat {}", message.chat_id)));
            }
            let sql = format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
            tx.prepare_cached(&sql)?.execute(params![
                message.chat_id,
                message.id,
                message.sender_id,
                message.client_msg_id,
                message.body,
                message.sent_at_ms
            ])?;

            let mut next_seq =
                tx.prepare_cached("UPDATE users SET update_seq = update_seq + 1 WHERE id = ?1 RETURNING update_seq")?;
            let mut log = tx.prepare_cached(
                "INSERT INTO user_updates (user_id, seq, kind, chat_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut seqs = Vec::with_capacity(recipients.len());
            for user_id in recipients {
                let seq: Option<i64> = next_seq.query_row([user_id], |row| row.get(0)).optional()?;
                let seq = seq.ok_or_else(|| StorageError::NotFound(format!("user {user_id}")))?;
                log.execute(params![user_id, seq, UPDATE_MESSAGE, message.chat_id, message.id])?;
                let seq = u64::try_from(seq).map_err(|_| backend(format!("negative update seq of user {user_id}")))?;
                seqs.push((user_id, seq));
            }

            let message = MessageRecord {
                id: message.id,
                chat_id: message.chat_id,
                sender_id: message.sender_id,
                client_msg_id: message.client_msg_id,
                body: message.body,
                sent_at_ms: message.sent_at_ms,
            };
            Ok(AppendOutcome::Appended { message, seqs })
        })
        .await
    }

    async fn messages_before(
        &self,
        chat_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> StorageResult<Vec<MessageRecord>> {
        self.read(move |tx| {
            let messages = match before {
                Some(before) => {
                    let sql = format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                    );
                    tx.prepare_cached(&sql)?
                        .query_map(params![chat_id, before, limit], message_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
                None => {
                    let sql =
                        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2");
                    tx.prepare_cached(&sql)?
                        .query_map(params![chat_id, limit], message_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            Ok(messages)
        })
        .await
    }

    async fn updates_after(&self, user_id: i64, after: u64, limit: u32) -> StorageResult<Vec<UpdateRecord>> {
        // Seqs are stored as i64; nothing lies beyond i64::MAX.
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |tx| {
            let sql = format!(
                "SELECT u.seq, u.kind, {}
                 FROM user_updates u
                 LEFT JOIN messages m ON m.chat_id = u.chat_id AND m.id = u.message_id
                 WHERE u.user_id = ?1 AND u.seq > ?2
                 ORDER BY u.seq
                 LIMIT ?3",
                prefixed("m", MESSAGE_COLUMNS)
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![user_id, after, limit])?;
            let mut updates = Vec::new();
            while let Some(row) = rows.next()? {
                let seq: u64 = row.get(0)?;
                let kind: String = row.get(1)?;
                let kind = match (kind.as_str(), optional_message_at(row, 2)?) {
                    (UPDATE_MESSAGE, Some(message)) => UpdateKind::Message(message),
                    (UPDATE_MESSAGE, None) => {
                        return Err(backend(format!("update {seq} of user {user_id} names a missing message")));
                    }
                    (other, _) => {
                        return Err(backend(format!("unknown update kind {other:?} in sqlite store")));
                    }
                };
                updates.push(UpdateRecord { seq, kind });
            }
            Ok(updates)
        })
        .await
    }

    async fn latest_seq(&self, user_id: i64) -> StorageResult<u64> {
        self.read(move |tx| {
            let seq: Option<u64> = tx
                .prepare_cached("SELECT update_seq FROM users WHERE id = ?1")?
                .query_row([user_id], |row| row.get(0))
                .optional()?;
            Ok(seq.unwrap_or(0))
        })
        .await
    }

    async fn mark_delivered(&self, chat_id: i64, user_id: i64, message_id: i64) -> StorageResult<i64> {
        self.write(move |tx| {
            let watermark: Option<i64> = tx
                .prepare_cached(
                    "UPDATE chat_members
                     SET delivered_up_to = MAX(delivered_up_to,
                         MIN(?3, COALESCE((SELECT last_message_id FROM chats WHERE id = ?1), 0)))
                     WHERE chat_id = ?1 AND user_id = ?2
                     RETURNING delivered_up_to",
                )?
                .query_row([chat_id, user_id, message_id], |row| row.get(0))
                .optional()?;
            watermark.ok_or_else(|| StorageError::NotFound(format!("user {user_id} in chat {chat_id}")))
        })
        .await
    }
}

/// `"a, b"` with `prefix` `t` becomes `"t.a, t.b"`.
fn prefixed(prefix: &str, columns: &str) -> String {
    columns.split(", ").map(|column| format!("{prefix}.{column}")).collect::<Vec<_>>().join(", ")
}

// ----------------------------------------------------------------- meta

#[async_trait]
impl MetaStore for SqliteStore {
    async fn clock_high_water(&self, generator: u16) -> StorageResult<Option<u64>> {
        self.read(move |tx| {
            Ok(tx
                .prepare_cached("SELECT high_water_ms FROM meta_clock WHERE generator = ?1")?
                .query_row([generator], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_clock_high_water(&self, generator: u16, ms: u64) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO meta_clock (generator, high_water_ms) VALUES (?1, ?2)
                 ON CONFLICT (generator) DO UPDATE SET high_water_ms = MAX(high_water_ms, excluded.high_water_ms)",
            )?
            .execute(params![generator, ms])?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StorageResult<()> {
        self.read(|tx| {
            tx.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn user_version(store: &SqliteStore) -> Result<i64, Box<dyn std::error::Error>> {
        let conn = store.inner.writer.lock().map_err(|_| "poisoned")?;
        Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    #[test]
    fn migrations_are_idempotent_on_reopen() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nested/dir/db.sqlite3");
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        assert_eq!(user_version(&store)?, i64::try_from(MIGRATIONS.len())?);
        drop(store);
        let store = SqliteStore::open(&path, Synchronous::Full)?;
        assert_eq!(user_version(&store)?, i64::try_from(MIGRATIONS.len())?);
        Ok(())
    }

    #[test]
    fn refuses_a_schema_newer_than_it_knows() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        drop(SqliteStore::open(&path, Synchronous::Normal)?);
        Connection::open(&path)?.pragma_update(None, "user_version", MIGRATIONS.len() + 1)?;
        match SqliteStore::open(&path, Synchronous::Normal) {
            Err(StorageError::Backend(error)) => {
                assert!(error.to_string().contains("newer"), "{error}")
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn connections_are_configured() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Full)?;
        let writer = store.inner.writer.lock().map_err(|_| "poisoned")?;
        let mode: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        assert_eq!(mode, "wal");
        let foreign_keys: i64 = writer.query_row("PRAGMA foreign_keys", [], |row| row.get(0))?;
        assert_eq!(foreign_keys, 1);
        let synchronous: i64 = writer.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        assert_eq!(synchronous, 2, "FULL");
        assert_eq!(store.inner.readers.len(), READER_POOL_SIZE);
        let reader = store.inner.reader()?;
        assert!(reader.execute_batch("CREATE TABLE nope (x INTEGER)").is_err(), "readers are read-only");
        Ok(())
    }

    #[test]
    fn constraint_violations_are_classified() -> TestResult {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY, key TEXT UNIQUE);
             CREATE TABLE child (parent_id INTEGER REFERENCES parent (id));
             INSERT INTO parent VALUES (1, 'a');",
        )?;
        let unique = conn.execute("INSERT INTO parent VALUES (2, 'a')", []).map_err(StorageError::from);
        assert!(matches!(unique, Err(StorageError::Conflict(_))), "{unique:?}");
        let primary = conn.execute("INSERT INTO parent VALUES (1, 'b')", []).map_err(StorageError::from);
        assert!(matches!(primary, Err(StorageError::Conflict(_))), "{primary:?}");
        let foreign = conn.execute("INSERT INTO child VALUES (9)", []).map_err(StorageError::from);
        assert!(matches!(foreign, Err(StorageError::NotFound(_))), "{foreign:?}");
        let syntax = conn.execute("NOT SQL", []).map_err(StorageError::from);
        assert!(matches!(syntax, Err(StorageError::Backend(_))), "{syntax:?}");
        Ok(())
    }

    #[test]
    fn prefixes_columns() {
        assert_eq!(prefixed("m", "a, b, c"), "m.a, m.b, m.c");
    }

    #[tokio::test]
    async fn failed_append_writes_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        for id in [1, 2] {
            let name = format!("user{id}");
            store
                .create_user(NewUser {
                    id,
                    username: name.clone(),
                    username_key: name,
                    display_name: String::new(),
                    password_hash: String::new(),
                    pepper_version: 1,
                    created_at_ms: 0,
                })
                .await?;
        }
        let chat = store.direct_chat(1, 2, 100, 0).await?;
        let message = NewMessage {
            id: 1_000,
            chat_id: chat.id,
            sender_id: 1,
            client_msg_id: "c1".to_owned(),
            body: "hi".to_owned(),
            sent_at_ms: 1,
        };

        // The second audience member does not exist: the whole append rolls back.
        let result = store.append_message(message.clone(), &[1, 999]).await;
        assert!(matches!(result, Err(StorageError::NotFound(_))), "{result:?}");
        assert_eq!(store.latest_seq(1).await?, 0);
        assert!(store.messages_before(chat.id, None, 10).await?.is_empty());
        assert_eq!(store.chats_of_user(1).await?[0].last_message, None);

        // The same message goes through once the audience is right.
        let outcome = store.append_message(message, &[1, 2, 1]).await?;
        assert!(
            matches!(&outcome, AppendOutcome::Appended { seqs, .. } if seqs == &[(1, 1), (2, 1)]),
            "one update per user: {outcome:?}"
        );
        Ok(())
    }
}
