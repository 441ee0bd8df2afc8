//! Update-log seqs: the next seq of a user's log, remembered by the writer
//! thread so that an append does not look it up first.
//!
//! Looking the last seq up is a B-tree descent per entry, and a group
//! message appends one entry per member: remembering it cut the append of
//! a 1,024-member group message by about 13 % (docs/benchmarks.md). What the
//! writer remembers is forgotten whenever it may have become wrong: a
//! write or a commit failed (what it appended may have been rolled back),
//! or another connection committed to the database (`PRAGMA data_version`
//! changed; another process may have appended).

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use super::backend;
use crate::{StorageError, StorageResult};

/// How many users' last seqs the writer remembers; when a new one would
/// go past this, it forgets them all and starts over.
const MAX_REMEMBERED: usize = 1 << 17;

/// Each user's last seq, as of the writer's own commits.
#[derive(Default)]
struct LastSeqs {
    seqs: HashMap<i64, u64>,
    /// `PRAGMA data_version` when the writer last checked: it changes when
    /// another connection commits.
    data_version: Option<i64>,
}

thread_local! {
    /// Per thread, so per database: only a store's writer thread appends
    /// to its logs.
    static LAST_SEQS: RefCell<LastSeqs> = RefCell::default();
}

/// The seq of `user_id`'s next update-log entry. The caller appends the
/// entry with it in the same write (a failed write makes the writer forget,
/// see [`forget`]). Logs are append-only, so the last entry's seq is the
/// user's seq: reading it touches the page the append then writes, and
/// nothing else is written. (Anything that ever trims a log must keep its
/// last entry, or seqs would be reused.) [`StorageError::NotFound`] for an
/// unknown user.
pub(super) fn next_seq(conn: &Connection, user_id: i64) -> StorageResult<u64> {
    reserve_seqs(conn, user_id, 1)
}

/// Like [`next_seq`] for `count` (at least 1) consecutive entries that the
/// caller appends as one: returns the last of their seqs.
pub(super) fn reserve_seqs(conn: &Connection, user_id: i64, count: u64) -> StorageResult<u64> {
    LAST_SEQS.with_borrow_mut(|last| {
        let first = match last.seqs.get(&user_id) {
            Some(&remembered) => remembered + 1,
            None => {
                if last.seqs.len() >= MAX_REMEMBERED {
                    last.seqs.clear();
                }
                stored_next_seq(conn, user_id)?
            }
        };
        let seq = first + count.max(1) - 1;
        last.seqs.insert(user_id, seq);
        Ok(seq)
    })
}

/// The next seq as the database has it.
fn stored_next_seq(conn: &Connection, user_id: i64) -> StorageResult<u64> {
    let seq: Option<i64> = conn
        .prepare_cached(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM user_updates WHERE user_id = ?1) + 1 FROM users WHERE id = ?1",
        )?
        .query_row([user_id], |row| row.get(0))
        .optional()?;
    let seq = seq.ok_or_else(|| StorageError::NotFound(format!("user {user_id}")))?;
    u64::try_from(seq).map_err(|_| backend(format!("negative update seq of user {user_id}")))
}

/// Called at the start of each write transaction (which holds the write
/// lock): forgets the remembered seqs if another connection committed
/// since the last check.
pub(super) fn check_other_writers(conn: &Connection) -> StorageResult<()> {
    let version: i64 = conn.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))?;
    LAST_SEQS.with_borrow_mut(|last| {
        if last.data_version != Some(version) {
            last.seqs.clear();
            last.data_version = Some(version);
        }
    });
    Ok(())
}

/// Forgets every remembered seq: a write or a commit failed, so entries it
/// appended may have been rolled back.
pub(super) fn forget() {
    LAST_SEQS.with_borrow_mut(|last| last.seqs.clear());
}
