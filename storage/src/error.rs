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
    /// The backend failed (I/O, corruption, unreachable). May be retried.
    #[error("backend failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StorageResult<T> = Result<T, StorageError>;
