//! Friendships, friend requests and blocks in SQLite.

use super::users::load_user;
use super::*;
use crate::relation::{mirror, transition};

/// The stored name of a relation (`none` only appears in update logs).
fn relation_name(relation: Relation) -> &'static str {
    match relation {
        Relation::None => "none",
        Relation::Friends => "friends",
        Relation::RequestSent => "request_sent",
        Relation::RequestReceived => "request_received",
    }
}

pub(super) fn parse_relation(name: &str) -> StorageResult<Relation> {
    match name {
        "none" => Ok(Relation::None),
        "friends" => Ok(Relation::Friends),
        "request_sent" => Ok(Relation::RequestSent),
        "request_received" => Ok(Relation::RequestReceived),
        other => Err(backend(format!("unknown relation {other:?} in sqlite store"))),
    }
}

/// [`RelationStore::presence_peers`] in `conn`; `among` is a JSON array of
/// IDs (read with `json_each`), or `None` for everyone.
fn presence_peers_in(conn: &Connection, user: i64, among: Option<String>) -> StorageResult<Vec<PresencePeer>> {
    let mut stmt = conn.prepare_cached(
        "WITH candidates (id) AS (
             SELECT other_id FROM relations WHERE user_id = ?1 AND relation = 'friends'
             UNION
             SELECT other.user_id FROM chat_members mine
             JOIN chats c ON c.id = mine.chat_id AND c.kind = 'group'
             JOIN chat_members other ON other.chat_id = mine.chat_id
             WHERE mine.user_id = ?1
         )
         SELECT u.id, u.last_seen_ms, u.status_text FROM candidates JOIN users u ON u.id = candidates.id
         WHERE u.id <> ?1
           AND (?2 IS NULL OR u.id IN (SELECT value FROM json_each(?2)))
           AND NOT EXISTS (SELECT 1 FROM blocks b
                           WHERE (b.blocker_id = ?1 AND b.blocked_id = u.id)
                              OR (b.blocker_id = u.id AND b.blocked_id = ?1))
         ORDER BY u.id",
    )?;
    let peers = stmt
        .query_map(params![user, among], |row| {
            Ok(PresencePeer { user_id: row.get(0)?, last_seen_ms: row.get(1)?, status_text: row.get(2)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(peers)
}

fn load_view(conn: &Connection, user: i64, other: i64) -> StorageResult<RelationView> {
    let relation: Option<String> = conn
        .prepare_cached("SELECT relation FROM relations WHERE user_id = ?1 AND other_id = ?2")?
        .query_row([user, other], |row| row.get(0))
        .optional()?;
    let blocks = |blocker: i64, blocked: i64| -> StorageResult<bool> {
        Ok(conn
            .prepare_cached("SELECT 1 FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")?
            .query_row([blocker, blocked], |_| Ok(()))
            .optional()?
            .is_some())
    };
    Ok(RelationView {
        relation: relation.as_deref().map(parse_relation).transpose()?.unwrap_or_default(),
        blocking: blocks(user, other)?,
        blocked_by: blocks(other, user)?,
    })
}

/// Stores one side of a pair: deletes the row for `Relation::None`.
fn store_side(conn: &Connection, user: i64, other: i64, relation: Relation, now_ms: i64) -> StorageResult<()> {
    if relation == Relation::None {
        conn.prepare_cached("DELETE FROM relations WHERE user_id = ?1 AND other_id = ?2")?.execute([user, other])?;
    } else {
        conn.prepare_cached(
            "INSERT INTO relations (user_id, other_id, relation, since_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, other_id) DO UPDATE SET relation = excluded.relation, since_ms = excluded.since_ms",
        )?
        .execute(params![user, other, relation_name(relation), now_ms])?;
    }
    Ok(())
}

/// `(since_ms, other)` strictly below which the next page starts.
fn cursor(after: Option<RelationEntry>) -> (i64, i64) {
    after.map(|entry| (entry.since_ms, entry.other)).unwrap_or((i64::MAX, i64::MAX))
}

fn entry(row: &Row<'_>) -> rusqlite::Result<RelationEntry> {
    Ok(RelationEntry { other: row.get(0)?, since_ms: row.get(1)? })
}

#[async_trait]
impl RelationStore for SqliteStore {
    async fn relation(&self, user: i64, other: i64) -> StorageResult<RelationView> {
        self.read(move |tx| load_view(tx, user, other)).await
    }

    async fn relations_with(&self, user: i64, others: &[i64]) -> StorageResult<Vec<(i64, Relation)>> {
        let others = others.to_vec();
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached("SELECT relation FROM relations WHERE user_id = ?1 AND other_id = ?2")?;
            let mut found = Vec::new();
            for other in others {
                let relation: Option<String> = stmt.query_row([user, other], |row| row.get(0)).optional()?;
                if let Some(relation) = relation {
                    found.push((other, parse_relation(&relation)?));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn presence_peers(&self, user: i64, among: Option<Vec<i64>>) -> StorageResult<Vec<PresencePeer>> {
        // A JSON array of IDs, read with json_each.
        let among = among.map(|ids| format!("[{}]", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")));
        self.read(move |tx| presence_peers_in(tx, user, among)).await
    }

    async fn user_and_presence_peers(&self, user: i64) -> StorageResult<Option<(UserRecord, Vec<PresencePeer>)>> {
        self.quick_read(move |tx| match load_user(tx, user) {
            Ok(record) => Ok(Some((record, presence_peers_in(tx, user, None)?))),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        })
        .await
    }

    async fn apply(
        &self,
        user: i64,
        other: i64,
        action: RelationAction,
        now_ms: i64,
    ) -> StorageResult<Result<RelationChange, IllegalTransition>> {
        self.write(move |tx| {
            load_user(tx, user)?;
            load_user(tx, other)?;
            if user == other {
                return Ok(Err(IllegalTransition::Yourself));
            }
            let before = load_view(tx, user, other)?;
            let after = match transition(before, action) {
                Ok(after) => after,
                Err(illegal) => return Ok(Err(illegal)),
            };
            if after.blocking != before.blocking {
                if after.blocking {
                    tx.prepare_cached("INSERT INTO blocks (blocker_id, blocked_id, since_ms) VALUES (?1, ?2, ?3)")?
                        .execute([user, other, now_ms])?;
                } else {
                    tx.prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")?
                        .execute([user, other])?;
                }
            }
            let mut updates = Vec::new();
            if after.relation != before.relation {
                let mut log = tx.prepare_cached(
                    "INSERT INTO user_updates (user_id, seq, kind, other_id, relation) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (side, peer, relation) in [(user, other, after.relation), (other, user, mirror(after.relation))] {
                    store_side(tx, side, peer, relation, now_ms)?;
                    let seq = next_seq(tx, side)?;
                    log.execute(params![side, seq as i64, UPDATE_RELATION, peer, relation_name(relation)])?;
                    updates.push((side, seq, relation));
                }
            }
            Ok(Ok(RelationChange { view: after, updates }))
        })
        .await
    }

    async fn relations(
        &self,
        user: i64,
        relation: Relation,
        after: Option<RelationEntry>,
        limit: u32,
    ) -> StorageResult<Vec<RelationEntry>> {
        if relation == Relation::None {
            return Ok(Vec::new());
        }
        let (since, other) = cursor(after);
        self.read(move |tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT other_id, since_ms FROM relations
                     WHERE user_id = ?1 AND relation = ?2 AND (since_ms, other_id) < (?3, ?4)
                     ORDER BY since_ms DESC, other_id DESC LIMIT ?5",
                )?
                .query_map(params![user, relation_name(relation), since, other, limit], entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn blocked(&self, user: i64, after: Option<RelationEntry>, limit: u32) -> StorageResult<Vec<RelationEntry>> {
        let (since, other) = cursor(after);
        self.read(move |tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT blocked_id, since_ms FROM blocks
                     WHERE blocker_id = ?1 AND (since_ms, blocked_id) < (?2, ?3)
                     ORDER BY since_ms DESC, blocked_id DESC LIMIT ?4",
                )?
                .query_map(params![user, since, other, limit], entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
