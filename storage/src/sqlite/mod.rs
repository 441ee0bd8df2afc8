//! Embedded SQLite backend (WAL): one writer connection, a pool of readers.
//!
//! Reads run on tokio's blocking pool: each takes a read-only connection
//! and runs in one deferred transaction, so each call sees a consistent
//! snapshot. A read that is usually small (the connection attach's) runs on
//! the calling thread instead, within a budget of VM steps past which it
//! goes to the pool after all ([`SqliteStore::quick_read`]). Writes go to
//! one writer thread that owns the writer connection: it takes every write
//! queued at the moment, runs them in one `BEGIN IMMEDIATE` transaction
//! (each in a savepoint of its own, so a failed write changes nothing and
//! leaves the others alone), commits once and only then answers them
//! (group commit). In WAL mode readers never block the writer.
//!
//! The schema is versioned with `PRAGMA user_version`: `MIGRATIONS` holds
//! one SQL batch per version, applied in order on open. Append new
//! migrations; never edit one that has shipped.

mod chats;
mod contacts;
mod meta;
mod relations;
mod seqs;
mod tokens;
mod users;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, ffi, params};

use crate::*;
use seqs::{next_seq, reserve_seqs};

/// Read-only connections opened next to the writer. Reads beyond this many
/// at once wait for a free connection (on the blocking pool, never on the
/// async runtime).
pub const READER_POOL_SIZE: usize = 4;

/// Most SQLite VM steps a [`SqliteStore::quick_read`] takes on the calling
/// (async) thread before it is interrupted and run on the blocking pool
/// instead: some 30 µs here, about what the hand-off to the pool and back
/// costs. A user with a few dozen presence peers is inside it; a member of
/// a large group, whose peers are the whole group, is not.
const INLINE_READ_STEPS: i32 = 2_000;

/// How long a statement waits for a lock held by another connection (a WAL
/// checkpoint, another process on the same file) before failing with
/// `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a background thread copies the WAL into the database file
/// (a passive checkpoint, with its fsync), so writers never pay for it.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// WAL size after which the writer checkpoints by itself: 64 MiB, a safety
/// net should the background checkpoints fall behind (set in pages of the
/// database's page size). SQLite's default of 1,000 pages made the writer
/// checkpoint (and fsync) after every message of a 1,024-member group,
/// which writes about that many log pages.
const WAL_AUTOCHECKPOINT_BYTES: u32 = 64 << 20;

/// Page size of a new database. A message changes a handful of B-tree
/// leaves at random places (the two update logs, the chat's and the
/// sender's indexes), and the WAL takes each changed page whole: 1 KiB
/// pages cut the bytes written per message by 60 % against SQLite's 4 KiB
/// (docs/benchmarks.md). An existing database keeps the size it was made
/// with.
const NEW_DATABASE_PAGE_SIZE: u32 = 1024;

/// Prepared statements each connection keeps compiled.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Most writes committed in one transaction. Under load the writes that
/// queued while one transaction ran share the next commit; the cap bounds
/// how long the first of them waits for its answer.
pub const MAX_WRITES_PER_COMMIT: usize = 256;

const _: () = assert!(READER_POOL_SIZE > 0, "the reader pool needs at least one connection");

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
];

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
    -- newest seq of the user's update log (user_updates); dropped by version 7
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

/// Version 2: profiles (bio, avatar, confirmed email and phone), user
/// search (folded display name, trigram index), friendships and blocks,
/// relation entries in update logs, contact-change challenges.
const MIGRATION_2: &str = r#"
ALTER TABLE users ADD COLUMN display_name_key TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN bio TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN avatar TEXT;
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN phone TEXT;
-- users of 0.1.0: lowercase now, accents fold on their next profile change
UPDATE users SET display_name_key = lower(display_name);
CREATE INDEX users_by_display_name_key ON users (display_name_key);

-- substring search over both keys; kept current by the triggers below
CREATE VIRTUAL TABLE user_search USING fts5 (
    username_key, display_name_key, content = 'users', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO user_search (user_search) VALUES ('rebuild');
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO user_search (rowid, username_key, display_name_key)
    VALUES (new.id, new.username_key, new.display_name_key);
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF username_key, display_name_key ON users BEGIN
    INSERT INTO user_search (user_search, rowid, username_key, display_name_key)
    VALUES ('delete', old.id, old.username_key, old.display_name_key);
    INSERT INTO user_search (rowid, username_key, display_name_key)
    VALUES (new.id, new.username_key, new.display_name_key);
END;

-- one row per side of a pair that is not strangers
CREATE TABLE relations (
    user_id  INTEGER NOT NULL REFERENCES users (id),
    other_id INTEGER NOT NULL REFERENCES users (id),
    relation TEXT    NOT NULL CHECK (relation IN ('friends', 'request_sent', 'request_received')),
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, other_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX relations_by_kind ON relations (user_id, relation, since_ms, other_id);

CREATE TABLE blocks (
    blocker_id INTEGER NOT NULL REFERENCES users (id),
    blocked_id INTEGER NOT NULL REFERENCES users (id),
    since_ms   INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);
CREATE INDEX blocks_by_time ON blocks (blocker_id, since_ms, blocked_id);

-- relation entries of the update log: kind 'relation', other_id, relation
ALTER TABLE user_updates ADD COLUMN other_id INTEGER;
ALTER TABLE user_updates ADD COLUMN relation TEXT;

-- a pending email or phone change, confirmed by a code sent to the new address
CREATE TABLE contact_challenges (
    user_id       INTEGER NOT NULL REFERENCES users (id),
    channel       TEXT    NOT NULL CHECK (channel IN ('email', 'phone')),
    value         TEXT    NOT NULL,
    code_hash     BLOB    NOT NULL CHECK (length(code_hash) = 32),
    attempts      INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel)
) STRICT, WITHOUT ROWID;
"#;

/// Version 3: edited and deleted-for-everyone messages, messages a user
/// deleted for themselves.
const MIGRATION_3: &str = r#"
ALTER TABLE messages ADD COLUMN edited_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN edit_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deleted_at_ms INTEGER;

CREATE TABLE hidden_messages (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    chat_id    INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, chat_id, message_id),
    FOREIGN KEY (chat_id, message_id) REFERENCES messages (chat_id, id)
) STRICT, WITHOUT ROWID;
"#;

/// Version 4: the seen watermark next to the delivered one.
const MIGRATION_4: &str = r#"
ALTER TABLE chat_members ADD COLUMN seen_up_to INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 5: groups (name, avatar, member count), members' roles, join
/// times and the message from which they see history, event messages.
const MIGRATION_5: &str = r#"
CREATE TABLE groups (
    chat_id      INTEGER PRIMARY KEY REFERENCES chats (id),
    name         TEXT    NOT NULL,
    avatar       TEXT,
    member_count INTEGER NOT NULL
) STRICT;

ALTER TABLE chat_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member'));
CREATE INDEX chat_members_staff ON chat_members (chat_id, user_id) WHERE role <> 'member';
ALTER TABLE chat_members ADD COLUMN joined_at_ms INTEGER NOT NULL DEFAULT 0;
-- the member sees the chat's messages with a greater ID
ALTER TABLE chat_members ADD COLUMN history_from INTEGER NOT NULL DEFAULT 0;

-- an event message (a group change) as JSON; its body is empty
ALTER TABLE messages ADD COLUMN event TEXT;
"#;

/// Version 6: presence choice, status text and last-seen time.
const MIGRATION_6: &str = r#"
ALTER TABLE users ADD COLUMN presence_choice TEXT NOT NULL DEFAULT 'auto'
    CHECK (presence_choice IN ('auto', 'away', 'busy', 'invisible'));
ALTER TABLE users ADD COLUMN status_text TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN last_seen_ms INTEGER;
"#;

/// Version 7: a user's seq is the last entry of their update log, not a
/// column of their row: an append then writes only the log's page, not
/// also the user's (a group message wrote a thousand of each).
const MIGRATION_7: &str = r#"
ALTER TABLE users DROP COLUMN update_seq;
"#;

/// Version 8: revoked token families by revocation time, to list those
/// whose access tokens may still be live.
const MIGRATION_8: &str = r#"
CREATE INDEX token_families_by_revocation ON token_families (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
"#;

/// Version 9: one update-log entry for a run of messages appended together.
const MIGRATION_9: &str = r#"
-- a 'message' entry may stand for the last `run` messages of its chat up to
-- `message_id` (appended in one batch, so consecutive in the chat), at seqs
-- `seq - run + 1` to `seq`; NULL means one message
ALTER TABLE user_updates ADD COLUMN run INTEGER CHECK (run > 1);
"#;

/// `chats.kind` of a 1:1 chat.
const KIND_DIRECT: &str = "direct";
/// `chats.kind` of a group.
const KIND_GROUP: &str = "group";
/// `user_updates.kind` of an entry naming a message.
const UPDATE_MESSAGE: &str = "message";
/// `user_updates.kind` of an entry naming an edited message.
const UPDATE_EDIT: &str = "edit";
/// `user_updates.kind` of an entry naming a message deleted for everyone.
const UPDATE_DELETE: &str = "delete";
/// `user_updates.kind` of an entry naming a message the user hid.
const UPDATE_HIDE: &str = "hide";
/// `user_updates.kind` of an entry naming a member's receipts in a chat
/// (`chat_id`, and the reader in `other_id`).
const UPDATE_RECEIPT: &str = "receipt";
/// `user_updates.kind` of an entry recording a relation change.
const UPDATE_RELATION: &str = "relation";

/// The SQLite store; implements every storage trait. Cheap to share behind
/// an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Arc<Connections>,
}

#[derive(Debug)]
struct Connections {
    path: PathBuf,
    /// The writer thread's queue; the thread ends when this is dropped.
    writes: mpsc::Sender<WriteJob>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// A write waiting for the writer thread. It runs where its [`Slot`]
/// says and returns whether it succeeded, with what answers its caller once
/// the batch's commit is known.
type WriteJob = Box<dyn FnOnce(Slot<'_, '_>) -> (bool, Answer) + Send>;

/// Where a write runs in its batch's transaction.
enum Slot<'t, 'c> {
    /// First in the transaction, without a savepoint: if it fails, the
    /// writer rolls the transaction back, as nothing else ran in it. (A
    /// savepoint copies every page the write changes into a statement
    /// journal; a group message changes a thousand.)
    First(&'t Transaction<'c>),
    /// After other writes, in a savepoint of its own, so that its failure
    /// undoes only itself.
    Savepoint(&'t Transaction<'c>),
    /// Nowhere: the transaction could not begin, or SQLite rolled it back;
    /// the write does not run.
    Gone,
}

/// Answers a write's caller with its result, or with the failure of the
/// commit its batch ended in.
type Answer = Box<dyn FnOnce(Result<(), &StorageError>) + Send>;

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
        // Only takes effect on a database that has no tables yet.
        writer.pragma_update(None, "page_size", NEW_DATABASE_PAGE_SIZE)?;
        let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend(format!("sqlite refused WAL mode for {} (journal_mode={mode})", path.display())));
        }
        let synchronous = match synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", synchronous)?;
        let page_size: u32 = writer.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        writer.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_BYTES / page_size.max(512))?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut writer)?;
        let writes = start_writer(path, writer)?;

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
        let inner = Arc::new(Connections { path: path.to_owned(), writes, readers, next_reader: AtomicUsize::new(0) });
        start_checkpointer(path, Arc::downgrade(&inner))?;
        Ok(SqliteStore { inner })
    }

    /// Runs `f` in a deferred (snapshot) transaction on a reader, off the
    /// async runtime.
    async fn read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || in_read_transaction(&mut *inner.reader()?, f)).await
    }

    /// Like [`Self::read`], for a read that is usually small (a few pages
    /// found by key): it runs on the calling thread if a reader is free,
    /// which spares waking a pool thread and then the caller again. If it
    /// takes more than [`INLINE_READ_STEPS`] SQLite VM steps, SQLite
    /// interrupts it and it runs again on the pool, so the calling thread
    /// is not held for long. (In WAL mode a read waits neither for the
    /// writer nor for the passive checkpoints; it can wait for a page the OS
    /// must read from disk.)
    async fn quick_read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        if let Some(mut conn) = self.inner.free_reader()? {
            let over_budget = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&over_budget);
            conn.progress_handler(
                INLINE_READ_STEPS,
                Some(move || {
                    flag.store(true, Ordering::Relaxed);
                    true
                }),
            );
            let out = in_read_transaction(&mut conn, &f);
            conn.progress_handler(0, None::<fn() -> bool>);
            if !over_budget.load(Ordering::Relaxed) {
                return out;
            }
        }
        self.read(f).await
    }

    /// Runs `f` on the writer thread, in a savepoint of the transaction it
    /// shares with the other writes queued at the time. Answers after the
    /// commit: `f`'s result if the commit succeeded (an `Err` of `f` changed
    /// nothing), the commit's failure otherwise.
    async fn write<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
    {
        let (job, answer) = write_job(f);
        let stopped = || backend(format!("the sqlite writer of {} has stopped", self.inner.path.display()));
        self.inner.writes.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A write for the writer thread, and where its answer will arrive.
fn write_job<T, F>(f: F) -> (WriteJob, tokio::sync::oneshot::Receiver<StorageResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> StorageResult<T> + Send + 'static,
{
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: WriteJob = Box::new(move |slot| {
        let out = match slot {
            Slot::First(tx) => guarded(|| f(tx)),
            Slot::Savepoint(tx) => in_savepoint(tx, f),
            Slot::Gone => Err(backend("the write did not run: its transaction was gone")),
        };
        let ok = out.is_ok();
        let answer: Answer = Box::new(move |batch: Result<(), &StorageError>| {
            let _ = reply.send(batch.map_err(|error| backend(error.to_string())).and(out));
        });
        (ok, answer)
    });
    (job, answer)
}

impl Connections {
    /// A free reader, trying each once round-robin before waiting for one.
    fn reader(&self) -> StorageResult<MutexGuard<'_, Connection>> {
        match self.free_reader()? {
            Some(guard) => Ok(guard),
            None => {
                let start = self.next_reader.load(Ordering::Relaxed);
                self.readers[start % self.readers.len()].lock().map_err(|_| poisoned(&self.path))
            }
        }
    }

    /// A reader no one holds, trying each once round-robin; `None` if all
    /// are busy.
    fn free_reader(&self) -> StorageResult<Option<MutexGuard<'_, Connection>>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return Ok(Some(guard)),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(_)) => return Err(poisoned(&self.path)),
            }
        }
        Ok(None)
    }
}

/// Runs `f` in a deferred (snapshot) transaction on `conn`.
fn in_read_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> StorageResult<T>,
) -> StorageResult<T> {
    let tx = conn.transaction()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
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

/// Starts the writer thread, which owns `conn` and commits the queued
/// writes in batches until the queue's sender is dropped.
fn start_writer(path: &Path, mut conn: Connection) -> StorageResult<mpsc::Sender<WriteJob>> {
    let (writes, queue) = mpsc::channel::<WriteJob>();
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                batch.extend(queue.try_iter().take(MAX_WRITES_PER_COMMIT - 1));
                commit_batch(&mut conn, &path, batch);
            }
        })
        .map_err(|error| StorageError::Backend(Box::new(error)))?;
    Ok(writes)
}

/// Runs a batch of writes in one immediate transaction and answers each
/// once the commit is known. The first write runs without a savepoint; if
/// it fails, the transaction is rolled back and the rest of the batch
/// starts a new one. If SQLite rolled the whole transaction back (a full
/// disk, an I/O error), the writes after it do not run (outside a
/// transaction each would commit on its own) and every write of that
/// transaction fails.
fn commit_batch(conn: &mut Connection, path: &Path, batch: Vec<WriteJob>) {
    let mut jobs = batch.into_iter();
    while let Some(first) = jobs.next() {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let error = StorageError::from(error);
                tracing::error!(path = %path.display(), %error, writes = jobs.len() + 1, "sqlite write transaction refused");
                return std::iter::once(first).chain(jobs).for_each(|job| job(Slot::Gone).1(Err(&error)));
            }
        };
        if let Err(error) = seqs::check_other_writers(&tx) {
            tracing::error!(path = %path.display(), %error, "sqlite data_version unreadable");
            seqs::forget();
        }
        let (ok, first_answer) = first(Slot::First(&tx));
        if !ok {
            // Dropping the transaction rolls back the failed write alone.
            seqs::forget();
            drop(tx);
            first_answer(Ok(()));
            continue;
        }
        let mut answers = vec![first_answer];
        for job in jobs.by_ref() {
            let slot = if tx.is_autocommit() { Slot::Gone } else { Slot::Savepoint(&tx) };
            let (ok, answer) = job(slot);
            if !ok {
                seqs::forget();
            }
            answers.push(answer);
        }
        let outcome = if tx.is_autocommit() {
            Err(backend(format!("sqlite rolled back a write transaction on {}", path.display())))
        } else {
            tx.commit().map_err(StorageError::from)
        };
        if let Err(error) = &outcome {
            seqs::forget();
            tracing::error!(path = %path.display(), %error, writes = answers.len(), "sqlite commit failed");
        }
        for answer in answers {
            answer(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Runs `f` in a savepoint: kept if it returns `Ok`, undone if it returns
/// `Err` or panics.
fn in_savepoint<T>(tx: &Transaction<'_>, f: impl FnOnce(&Transaction<'_>) -> StorageResult<T>) -> StorageResult<T> {
    tx.execute_batch("SAVEPOINT write")?;
    let out = guarded(|| f(tx));
    let end = if out.is_ok() { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" };
    tx.execute_batch(end)?;
    out
}

/// Runs `f`, turning a panic into a backend error.
fn guarded<T>(f: impl FnOnce() -> StorageResult<T>) -> StorageResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(backend("a sqlite write panicked; it was rolled back")))
}

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] on its own connection
/// and thread (passive: it never blocks readers or the writer), until the
/// store is dropped.
fn start_checkpointer(path: &Path, store: std::sync::Weak<Connections>) -> StorageResult<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                if store.strong_count() == 0 {
                    return;
                }
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(%error, "sqlite checkpoint failed");
                }
            }
        })
        .map_err(|error| StorageError::Backend(Box::new(error)))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn user_version(store: &SqliteStore) -> Result<i64, Box<dyn std::error::Error>> {
        let conn = store.inner.reader()?;
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

    #[tokio::test]
    async fn seqs_go_on_from_the_log_after_the_users_seq_column_is_dropped() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        // A database of version 6, whose users kept their seq in a column.
        let mut old = Connection::open(&path)?;
        let tx = old.transaction()?;
        for migration in &MIGRATIONS[..6] {
            tx.execute_batch(migration)?;
        }
        tx.execute_batch(
            "PRAGMA user_version = 6;
             INSERT INTO users (id, username, username_key, display_name, password_hash, pepper_version,
                                created_at_ms, update_seq)
                 VALUES (1, 'ann', 'ann', 'Ann', 'x', 1, 0, 2), (2, 'bo', 'bo', 'Bo', 'x', 1, 0, 0);
             INSERT INTO user_updates (user_id, seq, kind) VALUES (1, 1, 'relation'), (1, 2, 'relation');",
        )?;
        tx.commit()?;
        drop(old);
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        let columns: Vec<String> = {
            let conn = store.inner.reader()?;
            let mut info = conn.prepare("SELECT name FROM pragma_table_info('users')")?;
            info.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        assert!(!columns.iter().any(|c| c == "update_seq"), "{columns:?}");
        assert_eq!(store.latest_seq(1).await?, 2);
        assert_eq!(store.latest_seq(2).await?, 0, "an empty log");
        assert_eq!(store.write(|tx| next_seq(tx, 1)).await?, 3);
        assert_eq!(store.write(|tx| next_seq(tx, 2)).await?, 1);
        assert!(matches!(store.write(|tx| next_seq(tx, 9)).await, Err(StorageError::NotFound(_))));
        Ok(())
    }

    #[tokio::test]
    async fn a_batch_of_messages_is_one_log_row_per_member() -> TestResult {
        use crate::{ChatStore, NewMessage, UserStore};
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        for id in [1, 2] {
            let name = format!("user{id}");
            let password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned();
            let (username_key, display_name) = (name.clone(), name.clone());
            store
                .create_user(crate::NewUser {
                    id,
                    username: name,
                    username_key,
                    display_name,
                    password_hash,
                    pepper_version: 1,
                    created_at_ms: 0,
                })
                .await?;
        }
        let chat = store.direct_chat(1, 2, 100, 0).await?.id;
        let message = |id: i64| NewMessage {
            id,
            chat_id: chat,
            sender_id: 1,
            client_msg_id: id.to_string(),
            body: String::new(),
            sent_at_ms: id,
            event: None,
        };
        store.append_messages((1_000..1_010).map(message).collect(), &[1, 2]).await?;
        let rows: i64 = store.inner.reader()?.query_row("SELECT COUNT(*) FROM user_updates", [], |row| row.get(0))?;
        assert_eq!(rows, 2, "ten messages, one row for each of the two members");
        assert_eq!(store.latest_seq(2).await?, 10);
        assert_eq!(store.updates_after(2, 0, 100).await?.len(), 10);
        Ok(())
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        let before = std::fs::metadata(&path)?.len();
        store
            .write(|tx| {
                tx.execute_batch("CREATE TABLE filler (x BLOB)")?;
                for _ in 0..200 {
                    tx.execute("INSERT INTO filler VALUES (zeroblob(4096))", [])?;
                }
                Ok(())
            })
            .await?;
        assert_eq!(std::fs::metadata(&path)?.len(), before, "the commit went to the WAL only");
        tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
        assert!(std::fs::metadata(&path)?.len() > before + 200 * 4096, "the checkpointer copied it into the database");
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

    /// `(journal_mode, foreign_keys, synchronous, wal_autocheckpoint, page_size)` of the writer.
    async fn writer_settings(store: &SqliteStore) -> StorageResult<(String, i64, i64, u32, u32)> {
        store
            .write(|writer| {
                let pragma = |name: &str| format!("PRAGMA {name}");
                Ok((
                    writer.query_row(&pragma("journal_mode"), [], |row| row.get(0))?,
                    writer.query_row(&pragma("foreign_keys"), [], |row| row.get(0))?,
                    writer.query_row(&pragma("synchronous"), [], |row| row.get(0))?,
                    writer.query_row(&pragma("wal_autocheckpoint"), [], |row| row.get(0))?,
                    writer.query_row(&pragma("page_size"), [], |row| row.get(0))?,
                ))
            })
            .await
    }

    #[tokio::test]
    async fn connections_are_configured() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Full)?;
        let (mode, foreign_keys, synchronous, checkpoint, page_size) = writer_settings(&store).await?;
        assert_eq!(mode, "wal");
        assert_eq!(foreign_keys, 1);
        assert_eq!(synchronous, 2, "FULL");
        assert_eq!(page_size, NEW_DATABASE_PAGE_SIZE);
        assert_eq!(checkpoint, WAL_AUTOCHECKPOINT_BYTES / NEW_DATABASE_PAGE_SIZE);
        assert_eq!(store.inner.readers.len(), READER_POOL_SIZE);
        let reader = store.inner.reader()?;
        assert!(reader.execute_batch("CREATE TABLE nope (x INTEGER)").is_err(), "readers are read-only");
        Ok(())
    }

    #[tokio::test]
    async fn an_existing_database_keeps_its_page_size_and_checkpoints_at_the_same_wal_size() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        let old = Connection::open(&path)?;
        old.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE made_before (x INTEGER);")?;
        drop(old);
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        let (_, _, _, checkpoint, page_size) = writer_settings(&store).await?;
        assert_eq!(page_size, 4096);
        assert_eq!(checkpoint, WAL_AUTOCHECKPOINT_BYTES / 4096);
        assert_eq!(user_version(&store)?, i64::try_from(MIGRATIONS.len())?, "and was migrated");
        Ok(())
    }

    /// Keys in table `t`, in order.
    fn keys(store: &SqliteStore) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
        let conn = store.inner.reader()?;
        let mut select = conn.prepare("SELECT k FROM t ORDER BY k")?;
        Ok(select.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?)
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_and_spares_the_writes_committed_with_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        store
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (0)")?))
            .await?;
        // Queued all at once, so they share commits: every odd write inserts
        // a key, then collides with key 0 and must leave no trace.
        let writes = (1..=200i64).map(|i| {
            store.write(move |tx| {
                tx.execute("INSERT INTO t VALUES (?1)", [i])?;
                if i % 2 == 1 {
                    tx.execute("INSERT INTO t VALUES (0)", [])?;
                }
                Ok(i)
            })
        });
        let results = futures_util::future::join_all(writes).await;
        for (i, result) in (1..=200i64).zip(&results) {
            match (i % 2, result) {
                (0, Ok(k)) => assert_eq!(*k, i),
                (1, Err(StorageError::Conflict(_))) => {}
                (_, other) => panic!("write {i}: {other:?}"),
            }
        }
        let expected: Vec<i64> = (0..=200).step_by(2).collect();
        assert_eq!(keys(&store)?, expected);
        Ok(())
    }

    #[tokio::test]
    async fn a_panicking_write_is_undone_and_the_writer_goes_on() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        store.write(|tx| Ok(tx.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")?)).await?;
        let panicked = store
            .write(|tx| -> StorageResult<()> {
                tx.execute("INSERT INTO t VALUES (1)", [])?;
                panic!("a bug in a write")
            })
            .await;
        assert!(matches!(panicked, Err(StorageError::Backend(_))), "{panicked:?}");
        store.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (2)", []).map(drop)?)).await?;
        assert_eq!(keys(&store)?, [2]);
        Ok(())
    }

    /// Runs one batch on a fresh connection to `path` (table `t` exists)
    /// and returns each write's answer.
    fn run_batch(path: &Path, writes: Vec<Option<i64>>) -> Result<Vec<StorageResult<i64>>, Box<dyn std::error::Error>> {
        let mut conn = Connection::open(path)?;
        let (jobs, answers): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .map(|key| {
                write_job(move |tx| match key {
                    Some(k) => Ok(tx.execute("INSERT INTO t VALUES (?1)", [k]).map(|_| k)?),
                    // Inserts, then collides with key 0: must leave no trace.
                    None => {
                        tx.execute("INSERT INTO t VALUES (-1)", [])?;
                        Ok(tx.execute("INSERT INTO t VALUES (0)", []).map(|_| 0)?)
                    }
                })
            })
            .unzip();
        commit_batch(&mut conn, path, jobs);
        Ok(answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap_or_else(|e| Err(backend(e.to_string()))))
            .collect())
    }

    #[tokio::test]
    async fn a_batch_whose_first_write_fails_commits_the_rest() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        store
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (0)")?))
            .await?;
        // The first write runs without a savepoint, the later ones in one each.
        let answers = run_batch(&path, vec![None, Some(1), None, Some(2)])?;
        assert!(matches!(answers[0], Err(StorageError::Conflict(_))), "{:?}", answers[0]);
        assert_eq!(answers[1].as_ref().ok(), Some(&1));
        assert!(matches!(answers[2], Err(StorageError::Conflict(_))), "{:?}", answers[2]);
        assert_eq!(answers[3].as_ref().ok(), Some(&2));
        let answers = run_batch(&path, vec![Some(3), None])?;
        assert_eq!(answers[0].as_ref().ok(), Some(&3));
        assert!(answers[1].is_err());
        assert_eq!(keys(&store)?, [0, 1, 2, 3]);
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

    fn new_user(id: i64) -> NewUser {
        let name = format!("user{id}");
        NewUser {
            id,
            username: name.clone(),
            username_key: name,
            display_name: String::new(),
            password_hash: String::new(),
            pepper_version: 1,
            created_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn an_append_after_another_connection_appended_takes_the_next_seq() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db.sqlite3");
        let store = SqliteStore::open(&path, Synchronous::Normal)?;
        store.create_user(new_user(1)).await?;
        let append = |tx: &Transaction<'_>| -> StorageResult<u64> {
            let seq = next_seq(tx, 1)?;
            tx.execute("INSERT INTO user_updates (user_id, seq, kind) VALUES (1, ?1, 'relation')", [seq as i64])?;
            Ok(seq)
        };
        assert_eq!(store.write(append).await?, 1);
        assert_eq!(store.write(append).await?, 2);
        // Another process appends to the same log (an admin command, say).
        let other = Connection::open(&path)?;
        other.execute("INSERT INTO user_updates (user_id, seq, kind) VALUES (1, 3, 'relation')", [])?;
        assert_eq!(store.write(append).await?, 4, "the writer forgot the seq it remembered");
        assert_eq!(store.latest_seq(1).await?, 4);
        Ok(())
    }

    #[tokio::test]
    async fn a_quick_read_over_its_budget_still_answers_from_the_pool() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        let count_to = |n: i64| {
            move |tx: &Transaction<'_>| -> StorageResult<(i64, std::thread::ThreadId)> {
                let sql = "WITH RECURSIVE c (x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
                           SELECT count(*) FROM c";
                Ok((tx.query_row(sql, [n], |row| row.get(0))?, std::thread::current().id()))
            }
        };
        let here = std::thread::current().id();
        // A small read runs here, on each reader in turn.
        for _ in 0..READER_POOL_SIZE {
            assert_eq!(store.quick_read(count_to(10)).await?, (10, here));
        }
        // A large one is stopped here and answered by a pool thread.
        let (count, thread) = store.quick_read(count_to(100_000)).await?;
        assert_eq!(count, 100_000);
        assert_ne!(thread, here);
        // No reader keeps the budget: a plain read of any size completes on each.
        for _ in 0..READER_POOL_SIZE {
            assert_eq!(store.read(count_to(100_000)).await?.0, 100_000);
        }
        Ok(())
    }

    #[tokio::test]
    async fn failed_append_writes_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("db.sqlite3"), Synchronous::Normal)?;
        for id in [1, 2] {
            store.create_user(new_user(id)).await?;
        }
        let chat = store.direct_chat(1, 2, 100, 0).await?;
        let message = NewMessage {
            id: 1_000,
            chat_id: chat.id,
            sender_id: 1,
            client_msg_id: "c1".to_owned(),
            body: "hi".to_owned(),
            sent_at_ms: 1,
            event: None,
        };

        // The second audience member does not exist: the whole append rolls back.
        let result = store.append_message(message.clone(), &[1, 999]).await;
        assert!(matches!(result, Err(StorageError::NotFound(_))), "{result:?}");
        assert_eq!(store.latest_seq(1).await?, 0);
        assert!(store.messages_before(chat.id, 1, None, 10).await?.is_empty());
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
