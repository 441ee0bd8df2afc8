//! The storage error type shared by every backend.

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A uniqueness rule was violated; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record the call depends on does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument breaks the store's rules (a malformed media key); nothing
    /// was read or written. Retrying the same call fails the same way.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend failed (I/O, corruption, unreachable). May be retried.
    #[error("backend failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StorageResult<T> = Result<T, StorageError>;
