//! Pending contact changes and confirmed addresses in SQLite
//! (`contact_challenges`, `users.email`, `users.phone`).

use subtle::ConstantTimeEq;

use super::users::load_user;
use super::*;

/// The `users` column holding the confirmed address of `channel`.
fn column(channel: ContactChannel) -> &'static str {
    match channel {
        ContactChannel::Email => "email",
        ContactChannel::Phone => "phone",
    }
}

fn parse_channel(name: &str) -> rusqlite::Result<ContactChannel> {
    match name {
        "email" => Ok(ContactChannel::Email),
        "phone" => Ok(ContactChannel::Phone),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown contact channel {other:?}").into(),
        )),
    }
}

/// A pending change with its code hash, as read inside a write.
struct Pending {
    value: String,
    code_hash: Vec<u8>,
    attempts: i64,
    expires_at_ms: i64,
}

#[async_trait]
impl ContactStore for SqliteStore {
    async fn put_challenge(&self, challenge: NewChallenge) -> StorageResult<()> {
        self.write(move |tx| {
            load_user(tx, challenge.user_id)?;
            tx.prepare_cached(
                "INSERT INTO contact_challenges (user_id, channel, value, code_hash, attempts, expires_at_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)
                 ON CONFLICT (user_id, channel) DO UPDATE SET
                     value = excluded.value, code_hash = excluded.code_hash, attempts = 0,
                     expires_at_ms = excluded.expires_at_ms, created_at_ms = excluded.created_at_ms",
            )?
            .execute(params![
                challenge.user_id,
                challenge.channel.as_str(),
                challenge.value,
                challenge.code_hash.as_slice(),
                challenge.expires_at_ms,
                challenge.created_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn challenge(&self, user_id: i64, channel: ContactChannel) -> StorageResult<Option<ChallengeRecord>> {
        self.read(move |tx| {
            let row = tx
                .prepare_cached(
                    "SELECT user_id, channel, value, attempts, expires_at_ms, created_at_ms
                     FROM contact_challenges WHERE user_id = ?1 AND channel = ?2",
                )?
                .query_row(params![user_id, channel.as_str()], |row| {
                    let attempts: i64 = row.get(3)?;
                    Ok(ChallengeRecord {
                        user_id: row.get(0)?,
                        channel: parse_channel(&row.get::<_, String>(1)?)?,
                        value: row.get(2)?,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        expires_at_ms: row.get(4)?,
                        created_at_ms: row.get(5)?,
                    })
                })
                .optional()?;
            Ok(row)
        })
        .await
    }

    async fn confirm(
        &self,
        user_id: i64,
        channel: ContactChannel,
        presented: &CodeHash,
        max_attempts: u32,
        now_ms: i64,
    ) -> StorageResult<ConfirmOutcome> {
        let presented = *presented;
        self.write(move |tx| {
            let pending = tx
                .prepare_cached(
                    "SELECT value, code_hash, attempts, expires_at_ms
                     FROM contact_challenges WHERE user_id = ?1 AND channel = ?2",
                )?
                .query_row(params![user_id, channel.as_str()], |row| {
                    Ok(Pending {
                        value: row.get(0)?,
                        code_hash: row.get(1)?,
                        attempts: row.get(2)?,
                        expires_at_ms: row.get(3)?,
                    })
                })
                .optional()?;
            let Some(pending) = pending else { return Ok(ConfirmOutcome::NoChallenge) };
            let delete = |tx: &Transaction<'_>| -> StorageResult<()> {
                tx.prepare_cached("DELETE FROM contact_challenges WHERE user_id = ?1 AND channel = ?2")?
                    .execute(params![user_id, channel.as_str()])?;
                Ok(())
            };

            if now_ms >= pending.expires_at_ms {
                delete(tx)?;
                return Ok(ConfirmOutcome::Expired);
            }
            if pending.attempts >= i64::from(max_attempts) {
                return Ok(ConfirmOutcome::TooManyAttempts);
            }
            // A stored hash of the wrong length compares unequal (ct_eq on
            // slices of different lengths is false).
            if !bool::from(pending.code_hash.as_slice().ct_eq(presented.as_slice())) {
                let attempts: i64 = tx
                    .prepare_cached(
                        "UPDATE contact_challenges SET attempts = attempts + 1
                         WHERE user_id = ?1 AND channel = ?2 RETURNING attempts",
                    )?
                    .query_row(params![user_id, channel.as_str()], |row| row.get(0))?;
                let left = i64::from(max_attempts).saturating_sub(attempts).max(0);
                return Ok(ConfirmOutcome::WrongCode { attempts_left: u32::try_from(left).unwrap_or(0) });
            }

            let column = column(channel);
            let taken = tx
                .prepare_cached(&format!("SELECT 1 FROM users WHERE lower({column}) = lower(?1) AND id <> ?2 LIMIT 1"))?
                .query_row(params![pending.value, user_id], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(StorageError::Conflict(format!("{} is confirmed by another user", channel.as_str())));
            }
            let changed = tx
                .prepare_cached(&format!("UPDATE users SET {column} = ?2 WHERE id = ?1"))?
                .execute(params![user_id, pending.value])?;
            if changed == 0 {
                return Err(StorageError::NotFound(format!("user {user_id}")));
            }
            delete(tx)?;
            Ok(ConfirmOutcome::Confirmed { value: pending.value })
        })
        .await
    }

    async fn clear_contact(&self, user_id: i64, channel: ContactChannel) -> StorageResult<bool> {
        self.write(move |tx| {
            let user = load_user(tx, user_id)?;
            let was_set = match channel {
                ContactChannel::Email => user.email.is_some(),
                ContactChannel::Phone => user.phone.is_some(),
            };
            tx.prepare_cached(&format!("UPDATE users SET {} = NULL WHERE id = ?1", column(channel)))?
                .execute([user_id])?;
            Ok(was_set)
        })
        .await
    }
}
