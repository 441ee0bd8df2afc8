//! Pending contact changes and confirmed addresses in Scylla: challenges
//! change only by LWT, and an address is claimed by an LWT before it is set.

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use super::statements::*;
use super::{CAS_ATTEMPTS, ScyllaStore, backend};
use crate::*;

/// `contact_challenges` as `CHALLENGE_SELECT` reads it.
type ChallengeRow = (String, Vec<u8>, i64, i64, i64);

/// An address as claimed in `contacts_by_value` (compared ASCII case-insensitively).
fn value_key(value: &str) -> String {
    value.to_ascii_lowercase()
}

/// The user's confirmed address on `channel`.
fn address(user: &UserRecord, channel: ContactChannel) -> Option<&String> {
    match channel {
        ContactChannel::Email => user.email.as_ref(),
        ContactChannel::Phone => user.phone.as_ref(),
    }
}

impl ScyllaStore {
    async fn load_challenge(&self, user_id: i64, channel: ContactChannel) -> StorageResult<Option<ChallengeRow>> {
        self.row(CHALLENGE_SELECT, (user_id, channel.as_str())).await
    }

    /// Sets the user's address on `channel`.
    async fn set_address(&self, user_id: i64, channel: ContactChannel, value: Option<String>) -> StorageResult<()> {
        match channel {
            ContactChannel::Email => self.execute(USER_SET_EMAIL, (value, user_id)).await,
            ContactChannel::Phone => self.execute(USER_SET_PHONE, (value, user_id)).await,
        }
        .map(drop)
    }

    async fn release(&self, user_id: i64, channel: ContactChannel, value: &str) -> StorageResult<()> {
        self.lwt(CONTACT_RELEASE, (channel.as_str(), value_key(value), user_id)).await.map(drop)
    }

    /// One attempt at [`ContactStore::confirm`]; `None` if the challenge
    /// changed under it.
    async fn try_confirm(
        &self,
        user_id: i64,
        channel: ContactChannel,
        presented: &CodeHash,
        max_attempts: u32,
        now_ms: i64,
    ) -> StorageResult<Option<ConfirmOutcome>> {
        let Some((value, code_hash, attempts, expires_at_ms, _)) = self.load_challenge(user_id, channel).await? else {
            return Ok(Some(ConfirmOutcome::NoChallenge));
        };
        let name = channel.as_str();
        if now_ms >= expires_at_ms {
            self.lwt(CHALLENGE_DELETE, (user_id, name, code_hash)).await?;
            return Ok(Some(ConfirmOutcome::Expired));
        }
        if attempts >= i64::from(max_attempts) {
            return Ok(Some(ConfirmOutcome::TooManyAttempts));
        }
        // A stored hash of the wrong length compares unequal.
        if !bool::from(code_hash.as_slice().ct_eq(presented.as_slice())) {
            let counted = attempts + 1;
            if !self.lwt(CHALLENGE_COUNT_WRONG, (counted, user_id, name, attempts, code_hash)).await?.applied {
                return Ok(None);
            }
            let left = i64::from(max_attempts).saturating_sub(counted).max(0);
            return Ok(Some(ConfirmOutcome::WrongCode { attempts_left: u32::try_from(left).unwrap_or(0) }));
        }
        let claim = self.lwt(CONTACT_CLAIM, (name, value_key(&value), user_id)).await?;
        if !claim.applied && claim.bigint("user_id") != Some(user_id) {
            return Err(StorageError::Conflict(format!("this {name} address belongs to another user")));
        }
        // A code works once: only the caller who deletes the challenge confirms.
        if !self.lwt(CHALLENGE_DELETE, (user_id, name, code_hash)).await?.applied {
            if claim.applied {
                self.release(user_id, channel, &value).await?;
            }
            return Ok(None);
        }
        let user = self.existing_user(user_id).await?;
        self.set_address(user_id, channel, Some(value.clone())).await?;
        if let Some(old) = address(&user, channel).filter(|old| value_key(old) != value_key(&value)) {
            self.release(user_id, channel, old).await?;
        }
        Ok(Some(ConfirmOutcome::Confirmed { value }))
    }
}

#[async_trait]
impl ContactStore for ScyllaStore {
    async fn put_challenge(&self, challenge: NewChallenge) -> StorageResult<()> {
        self.existing_user(challenge.user_id).await?;
        let NewChallenge { user_id, channel, value, code_hash, expires_at_ms, created_at_ms } = challenge;
        let (name, hash) = (channel.as_str(), code_hash.to_vec());
        for _ in 0..CAS_ATTEMPTS {
            let fresh = (user_id, name, value.clone(), hash.clone(), 0i64, expires_at_ms, created_at_ms);
            if self.lwt(CHALLENGE_INSERT, fresh).await?.applied {
                return Ok(());
            }
            let replacement = (value.clone(), hash.clone(), 0i64, expires_at_ms, created_at_ms, user_id, name);
            if self.lwt(CHALLENGE_REPLACE, replacement).await?.applied {
                return Ok(());
            }
        }
        Err(backend(format!("challenge of user {user_id}: too much contention")))
    }

    async fn challenge(&self, user_id: i64, channel: ContactChannel) -> StorageResult<Option<ChallengeRecord>> {
        let Some((value, _, attempts, expires_at_ms, created_at_ms)) = self.load_challenge(user_id, channel).await?
        else {
            return Ok(None);
        };
        let attempts = u32::try_from(attempts).map_err(|_| backend(format!("challenge attempts {attempts}")))?;
        Ok(Some(ChallengeRecord { user_id, channel, value, attempts, expires_at_ms, created_at_ms }))
    }

    async fn confirm(
        &self,
        user_id: i64,
        channel: ContactChannel,
        presented: &CodeHash,
        max_attempts: u32,
        now_ms: i64,
    ) -> StorageResult<ConfirmOutcome> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some(outcome) = self.try_confirm(user_id, channel, presented, max_attempts, now_ms).await? {
                return Ok(outcome);
            }
        }
        Err(backend(format!("challenge of user {user_id}: too much contention")))
    }

    async fn clear_contact(&self, user_id: i64, channel: ContactChannel) -> StorageResult<bool> {
        let user = self.existing_user(user_id).await?;
        let Some(current) = address(&user, channel) else { return Ok(false) };
        self.set_address(user_id, channel, None).await?;
        self.release(user_id, channel, current).await?;
        Ok(true)
    }
}
