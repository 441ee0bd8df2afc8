//! Friendships, requests and blocks in Scylla: one `relation_pairs` row
//! per pair is the truth, changed by compare-and-set; the per-user lists
//! follow it.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::rows::{self, LogEntry, Pair, PairRow, kind_name, relation_name};
use super::statements::*;
use super::{CAS_ATTEMPTS, ScyllaStore, Writes, backend};
use crate::relation::{mirror, transition};
use crate::*;

/// `(lo, hi)`: the pair's key.
fn ordered(a: i64, b: i64) -> (i64, i64) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A `LIMIT` bind from a page size; `None` for 0 (CQL refuses `LIMIT 0`:
/// the caller answers with nothing).
pub(super) fn limit(limit: u32) -> Option<i32> {
    (limit > 0).then(|| i32::try_from(limit).unwrap_or(i32::MAX))
}

/// `(since_ms, other)` strictly below which the next page starts.
fn cursor(after: Option<RelationEntry>) -> (i64, i64) {
    after.map_or((i64::MAX, i64::MAX), |entry| (entry.since_ms, entry.other))
}

/// The list rows that change when a pair goes from `old` to `new`.
fn list_writes(lo: i64, hi: i64, old: &Pair, new: &Pair) -> Writes {
    let mut writes = Writes::default();
    for (side, peer) in [(lo, hi), (hi, lo)] {
        let (before, after) = (old.view_of(side, lo).relation, new.view_of(side, lo).relation);
        if before == after {
            continue;
        }
        if before != Relation::None {
            writes.push(KIND_DELETE, (side, relation_name(before), old.since_ms, peer));
        }
        if after != Relation::None {
            writes.push(KIND_INSERT, (side, relation_name(after), new.since_ms, peer));
        }
    }
    let blocks =
        [(lo, hi, old.lo_blocks_since, new.lo_blocks_since), (hi, lo, old.hi_blocks_since, new.hi_blocks_since)];
    for (blocker, blocked, before, after) in blocks {
        if before == after {
            continue;
        }
        if let Some(since) = before {
            writes.push(BLOCK_DELETE, (blocker, since, blocked));
        }
        if let Some(since) = after {
            writes.push(BLOCK_INSERT, (blocker, since, blocked));
        }
    }
    writes
}

impl ScyllaStore {
    /// The pair's state (the default for strangers).
    async fn load_pair(&self, lo: i64, hi: i64) -> StorageResult<Pair> {
        Ok(self.row::<2, PairRow>(PAIR_SELECT, (lo, hi)).await?.map(rows::pair).transpose()?.unwrap_or_default())
    }

    /// How `user` stands with `other`.
    pub(super) async fn view(&self, user: i64, other: i64) -> StorageResult<RelationView> {
        if user == other {
            return Ok(RelationView::default());
        }
        let (lo, hi) = ordered(user, other);
        Ok(self.load_pair(lo, hi).await?.view_of(user, lo))
    }

    /// Writes `next` over `current` if nobody changed the pair meanwhile.
    async fn swap_pair(&self, lo: i64, hi: i64, current: &Pair, next: &Pair) -> StorageResult<bool> {
        let relation = relation_name(next.relation);
        let (since, lo_blocks, hi_blocks) = (next.since_ms, next.lo_blocks_since, next.hi_blocks_since);
        let outcome = if current.version == 0 {
            self.lwt(PAIR_INSERT, (lo, hi, relation, since, lo_blocks, hi_blocks, next.version)).await?
        } else {
            let values = (relation, since, lo_blocks, hi_blocks, next.version, lo, hi, current.version);
            self.lwt(PAIR_UPDATE, values).await?
        };
        Ok(outcome.applied)
    }
}

#[async_trait]
impl RelationStore for ScyllaStore {
    async fn relation(&self, user: i64, other: i64) -> StorageResult<RelationView> {
        self.view(user, other).await
    }

    async fn relations_with(&self, user: i64, others: &[i64]) -> StorageResult<Vec<(i64, Relation)>> {
        let views = self.for_each(others.iter().copied(), |other| self.view(user, other)).await?;
        Ok(others
            .iter()
            .zip(views)
            .filter(|(_, view)| view.relation != Relation::None)
            .map(|(&other, view)| (other, view.relation))
            .collect())
    }

    async fn apply(
        &self,
        user: i64,
        other: i64,
        action: RelationAction,
        now_ms: i64,
    ) -> StorageResult<Result<RelationChange, IllegalTransition>> {
        self.require_users(&[user, other]).await?;
        if user == other {
            return Ok(Err(IllegalTransition::Yourself));
        }
        let (lo, hi) = ordered(user, other);
        let mut attempts = 0;
        let (current, next, before, after) = loop {
            let current = self.load_pair(lo, hi).await?;
            let before = current.view_of(user, lo);
            let after = match transition(before, action) {
                Ok(after) => after,
                Err(illegal) => return Ok(Err(illegal)),
            };
            let next = current.after(user, lo, after, now_ms);
            if self.swap_pair(lo, hi, &current, &next).await? {
                break (current, next, before, after);
            }
            attempts += 1;
            if attempts >= CAS_ATTEMPTS {
                return Err(backend(format!("relation of {lo} and {hi}: too much contention")));
            }
        };
        self.write(list_writes(lo, hi, &current, &next)).await?;
        let mut updates = Vec::new();
        if after.relation != before.relation {
            for (side, peer, relation) in [(user, other, after.relation), (other, user, mirror(after.relation))] {
                let seq = self.log(side, LogEntry::Relation { other: peer, relation }).await?;
                updates.push((side, seq, relation));
            }
        }
        Ok(Ok(RelationChange { view: after, updates }))
    }

    async fn relations(
        &self,
        user: i64,
        relation: Relation,
        after: Option<RelationEntry>,
        page: u32,
    ) -> StorageResult<Vec<RelationEntry>> {
        let Some(limit) = limit(page).filter(|_| relation != Relation::None) else { return Ok(Vec::new()) };
        let (since, other) = cursor(after);
        let rows: Vec<(i64, i64)> = self.rows(KIND_PAGE, (user, relation_name(relation), since, other, limit)).await?;
        Ok(rows.into_iter().map(|(other, since_ms)| RelationEntry { other, since_ms }).collect())
    }

    async fn blocked(&self, user: i64, after: Option<RelationEntry>, page: u32) -> StorageResult<Vec<RelationEntry>> {
        let Some(limit) = limit(page) else { return Ok(Vec::new()) };
        let (since, other) = cursor(after);
        let rows: Vec<(i64, i64)> = self.rows(BLOCK_PAGE, (user, since, other, limit)).await?;
        Ok(rows.into_iter().map(|(other, since_ms)| RelationEntry { other, since_ms }).collect())
    }

    async fn user_and_presence_peers(&self, user: i64) -> StorageResult<Option<(UserRecord, Vec<PresencePeer>)>> {
        let (record, peers) = futures_util::try_join!(self.load_user(user), self.presence_peers(user, None))?;
        Ok(record.map(|(record, _)| (record, peers)))
    }

    async fn presence_peers(&self, user: i64, among: Option<Vec<i64>>) -> StorageResult<Vec<PresencePeer>> {
        let mut candidates: BTreeSet<i64> = self
            .all::<2, (i64,)>(KIND_ALL, (user, relation_name(Relation::Friends)))
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        let chats: Vec<(i64, String)> = self.all(CHATS_OF_USER, (user,)).await?;
        let groups = chats.into_iter().filter(|(_, kind)| kind == kind_name(ChatKind::Group)).map(|(id, _)| id);
        for members in self.for_each(groups, |chat_id| self.load_members(chat_id)).await? {
            candidates.extend(members.iter().map(|member| member.receipt.user_id));
        }
        candidates.remove(&user);
        if let Some(among) = among {
            let among: BTreeSet<i64> = among.into_iter().collect();
            candidates.retain(|id| among.contains(id));
        }
        let peers = self
            .for_each(candidates, |id| async move {
                let view = self.view(user, id).await?;
                if view.blocking || view.blocked_by {
                    return Ok(None);
                }
                Ok(self.load_user(id).await?.map(|(peer, _)| PresencePeer {
                    user_id: peer.id,
                    last_seen_ms: peer.last_seen_ms,
                    status_text: peer.status_text,
                }))
            })
            .await?;
        Ok(peers.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_writes_move_both_sides_and_blocks() {
        let requested = Pair { relation: Relation::RequestSent, since_ms: 5, version: 1, ..Pair::default() };
        let blocked = Pair { relation: Relation::None, since_ms: 9, hi_blocks_since: Some(9), version: 2, ..requested };
        let writes = list_writes(1, 2, &requested, &blocked);
        let ids: Vec<_> = writes.statements.iter().map(|(id, _)| *id).collect();
        // Both sides' request rows go, the block row comes.
        assert_eq!(ids, vec![KIND_DELETE.id, KIND_DELETE.id, BLOCK_INSERT.id]);
        assert!(list_writes(1, 2, &blocked, &blocked).statements.is_empty());
    }

    #[test]
    fn limits_saturate_and_zero_reads_nothing() {
        assert_eq!(limit(u32::MAX), Some(i32::MAX));
        assert_eq!(limit(50), Some(50));
        assert_eq!(limit(0), None);
    }
}
