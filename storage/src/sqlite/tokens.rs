//! Refresh-token families in SQLite.

use super::*;

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

    async fn revoke_family_of(&self, token: &TokenHash, now_ms: i64) -> StorageResult<Option<EndedFamily>> {
        let token = *token;
        self.write(move |tx| {
            let family: Option<EndedFamily> = tx
                .prepare_cached(
                    "SELECT f.user_id, f.id FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
                     WHERE t.hash = ?1",
                )?
                .query_row([token], |row| Ok(EndedFamily { user_id: row.get(0)?, family_id: row.get(1)? }))
                .optional()?;
            if let Some(family) = family {
                revoke_family(tx, family.family_id, now_ms)?;
            }
            Ok(family)
        })
        .await
    }

    async fn revoke_other_families(&self, user_id: i64, keep: i64, now_ms: i64) -> StorageResult<Vec<i64>> {
        self.write(move |tx| {
            let families = other_live_families(tx, user_id, keep)?;
            for family_id in &families {
                revoke_family(tx, *family_id, now_ms)?;
            }
            Ok(families)
        })
        .await
    }

    async fn families_revoked_since(&self, since_ms: i64, now_ms: i64) -> StorageResult<Vec<RevokedFamily>> {
        self.read(move |tx| {
            let mut select = tx
                .prepare_cached("SELECT id, revoked_at_ms FROM token_families WHERE revoked_at_ms BETWEEN ?1 AND ?2")?;
            let rows = select.query_map([since_ms, now_ms], |row| {
                Ok(RevokedFamily { family_id: row.get(0)?, revoked_at_ms: row.get(1)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// Live token families of `user_id` other than `keep`.
fn other_live_families(tx: &Transaction<'_>, user_id: i64, keep: i64) -> StorageResult<Vec<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT id FROM token_families WHERE user_id = ?1 AND id <> ?2 AND revoked_at_ms IS NULL ORDER BY id",
        )?
        .query_map([user_id, keep], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?)
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
