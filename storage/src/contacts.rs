//! Confirmed contact addresses (email, phone) and the pending changes that
//! confirm them: a one-time code sent to the new address, stored only as a
//! hash, checked in constant time, with a bounded number of attempts.

use async_trait::async_trait;

use crate::{ContactChannel, StorageResult};

/// SHA-256 (or another 32-byte digest) of a confirmation code. The code
/// itself is never stored.
pub type CodeHash = [u8; 32];

impl ContactChannel {
    /// The channel's name in storage and on the wire: `email` or `phone`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactChannel::Email => "email",
            ContactChannel::Phone => "phone",
        }
    }
}

/// A pending change to store: `value` becomes the user's address on
/// `channel` once the code whose hash is `code_hash` is presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChallenge {
    pub user_id: i64,
    pub channel: ContactChannel,
    /// The new address, already validated and normalised by the caller.
    pub value: String,
    pub code_hash: CodeHash,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

/// A stored pending change (without its code hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub user_id: i64,
    pub channel: ContactChannel,
    pub value: String,
    /// Wrong codes presented so far.
    pub attempts: u32,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

/// Result of [`ContactStore::confirm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The code matched: `value` is now the user's address on the channel
    /// and the challenge is gone (a code works once).
    Confirmed { value: String },
    /// The code did not match; the attempt was counted.
    WrongCode { attempts_left: u32 },
    /// The attempts are used up; nothing was compared or counted. The
    /// challenge stays locked until it expires or a new one replaces it.
    TooManyAttempts,
    /// The challenge had expired; it is deleted.
    Expired,
    /// No change is pending on this channel.
    NoChallenge,
}

/// Pending and confirmed contact addresses.
///
/// Each call is one atomic step. The address a user has confirmed on a
/// channel stays theirs, unchanged, until a new challenge on that channel
/// is confirmed or the user clears it. Confirmed values are unique per
/// channel among users (compared ASCII case-insensitively).
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Stores a pending change, replacing any pending one of the same user
    /// and channel (its code stops working, attempts start at zero). The
    /// confirmed address is untouched. [`crate::StorageError::NotFound`]
    /// for an unknown user. Uniqueness is not checked here but at
    /// [`ContactStore::confirm`], so asking for a code tells nobody whether
    /// an address is in use.
    async fn put_challenge(&self, challenge: NewChallenge) -> StorageResult<()>;
    /// The user's pending change on `channel`, expired or not.
    async fn challenge(&self, user_id: i64, channel: ContactChannel) -> StorageResult<Option<ChallengeRecord>>;
    /// Atomically checks `presented` against the pending change of the user
    /// on `channel`, in this order:
    ///
    /// - none pending: [`ConfirmOutcome::NoChallenge`];
    /// - expired (`now_ms >= expires_at_ms`): it is deleted,
    ///   [`ConfirmOutcome::Expired`];
    /// - `attempts >= max_attempts`: [`ConfirmOutcome::TooManyAttempts`];
    /// - hash differs (compared in constant time): attempts + 1,
    ///   [`ConfirmOutcome::WrongCode`];
    /// - hash matches: the value becomes the user's address on the channel,
    ///   the challenge is deleted, [`ConfirmOutcome::Confirmed`]. If another
    ///   user has confirmed the same value meanwhile, it fails with
    ///   [`crate::StorageError::Conflict`] and nothing changes.
    async fn confirm(
        &self,
        user_id: i64,
        channel: ContactChannel,
        presented: &CodeHash,
        max_attempts: u32,
        now_ms: i64,
    ) -> StorageResult<ConfirmOutcome>;
    /// Removes the user's confirmed address on `channel` (a pending change
    /// stays pending). Returns whether one was set.
    /// [`crate::StorageError::NotFound`] for an unknown user.
    async fn clear_contact(&self, user_id: i64, channel: ContactChannel) -> StorageResult<bool>;
}
