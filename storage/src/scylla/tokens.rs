//! Refresh-token families in Scylla: a token is consumed by an LWT, so
//! exactly one rotation wins and a second use is detected.

use async_trait::async_trait;

use super::statements::*;
use super::{ScyllaStore, Writes};
use crate::*;

impl ScyllaStore {
    /// The family's user, and whether it is revoked; `None` if unknown.
    async fn family(&self, family_id: i64) -> StorageResult<Option<(i64, bool)>> {
        let row: Option<(i64, Option<i64>)> = self.row(FAMILY_SELECT, (family_id,)).await?;
        Ok(row.map(|(user_id, revoked_at_ms)| (user_id, revoked_at_ms.is_some())))
    }

    /// Marks the family revoked, keeping the first revocation time, and
    /// lists it by that time's hour.
    async fn revoke_family(&self, family_id: i64, now_ms: i64) -> StorageResult<bool> {
        match self.family(family_id).await? {
            Some((_, false)) => {
                let mut writes = Writes::default();
                writes.push(FAMILY_REVOKE, (now_ms, family_id));
                writes.push(REVOKED_FAMILY_INSERT, (hour_of(now_ms), now_ms, family_id, REVOKED_FAMILIES_TTL_SECS));
                self.write(writes).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// [`REVOKED_FAMILIES_KEPT_MS`] as a CQL TTL.
const REVOKED_FAMILIES_TTL_SECS: i32 = (REVOKED_FAMILIES_KEPT_MS / 1_000) as i32;
const HOUR_MS: i64 = 3_600_000;

/// The partition of `revoked_families_by_hour` for a time.
fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

#[async_trait]
impl TokenStore for ScyllaStore {
    async fn create_family(&self, family: NewTokenFamily, first: NewRefreshToken) -> StorageResult<()> {
        let mut writes = Writes::default();
        writes.push(FAMILY_INSERT, (family.id, family.user_id, family.created_at_ms));
        writes.push(FAMILY_OF_USER_INSERT, (family.user_id, family.id));
        writes.push(TOKEN_INSERT, (first.hash.to_vec(), family.id, first.created_at_ms, first.expires_at_ms));
        self.write(writes).await
    }

    async fn rotate(&self, presented: &TokenHash, next: NewRefreshToken, now_ms: i64) -> StorageResult<RotateOutcome> {
        let token: Option<(i64, i64, Option<i64>)> = self.row(TOKEN_SELECT, (presented.to_vec(),)).await?;
        let Some((family_id, expires_at_ms, used_at_ms)) = token else { return Ok(RotateOutcome::Unknown) };
        let Some((user_id, revoked)) = self.family(family_id).await? else { return Ok(RotateOutcome::Unknown) };
        if revoked {
            return Ok(RotateOutcome::Revoked);
        }
        let reused = || async move {
            self.revoke_family(family_id, now_ms).await?;
            tracing::warn!(user_id, family_id, "refresh token reused; family revoked");
            Ok(RotateOutcome::Reused { user_id, family_id })
        };
        if used_at_ms.is_some() {
            return reused().await;
        }
        if now_ms >= expires_at_ms {
            return Ok(RotateOutcome::Expired);
        }
        // Exactly one rotation consumes the token; any other is a reuse.
        if !self.lwt(TOKEN_USE, (now_ms, presented.to_vec())).await?.applied {
            return reused().await;
        }
        self.execute(TOKEN_INSERT, (next.hash.to_vec(), family_id, next.created_at_ms, next.expires_at_ms)).await?;
        Ok(RotateOutcome::Rotated { user_id, family_id })
    }

    async fn revoke_family_of(&self, token: &TokenHash, now_ms: i64) -> StorageResult<Option<EndedFamily>> {
        let found: Option<(i64, i64, Option<i64>)> = self.row(TOKEN_SELECT, (token.to_vec(),)).await?;
        let Some((family_id, _, _)) = found else { return Ok(None) };
        let Some((user_id, _)) = self.family(family_id).await? else { return Ok(None) };
        self.revoke_family(family_id, now_ms).await?;
        Ok(Some(EndedFamily { user_id, family_id }))
    }

    async fn revoke_other_families(&self, user_id: i64, keep: i64, now_ms: i64) -> StorageResult<Vec<i64>> {
        let families: Vec<(i64,)> = self.all(FAMILIES_OF_USER, (user_id,)).await?;
        let others = families.into_iter().map(|(id,)| id).filter(|&id| id != keep);
        let revoked =
            self.for_each(others, |id| async move { Ok((id, self.revoke_family(id, now_ms).await?)) }).await?;
        Ok(revoked.into_iter().filter(|(_, revoked)| *revoked).map(|(id, _)| id).collect())
    }

    async fn families_revoked_since(&self, since_ms: i64, now_ms: i64) -> StorageResult<Vec<RevokedFamily>> {
        let since_ms = since_ms.max(now_ms.saturating_sub(REVOKED_FAMILIES_KEPT_MS));
        let hours = hour_of(since_ms)..=hour_of(now_ms);
        let found = self
            .for_each(hours, |hour| async move {
                self.all::<3, (i64, i64)>(REVOKED_FAMILIES_SINCE, (hour, since_ms, now_ms)).await
            })
            .await?;
        let rows = found.into_iter().flatten();
        Ok(rows.map(|(family_id, revoked_at_ms)| RevokedFamily { family_id, revoked_at_ms }).collect())
    }
}
