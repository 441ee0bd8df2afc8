//! The engine's error type; the gateway maps each kind to a wire code.

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("chat not found")]
    ChatNotFound,
    #[error("message not found")]
    MessageNotFound,
    #[error("{0}")]
    EditClosed(String),
    #[error("user not found")]
    UserNotFound,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid field: {0}")]
    InvalidField(String),
    #[error("client_msg_id was already used for a different message")]
    ClientMsgIdConflict,
    #[error("rate limited; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error(transparent)]
    Relation(#[from] storage::IllegalTransition),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("engine unavailable")]
    Unavailable,
    /// Cluster mode: the shard of the user or chat is not this node's (it
    /// lives on, or just moved to, another node).
    #[error("the shard lives on another node")]
    Moved,
    #[error("bad configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Ids(#[from] crate::ids::IdError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl From<actix::MailboxError> for EngineError {
    fn from(_: actix::MailboxError) -> Self {
        EngineError::Unavailable
    }
}

/// Why a group change was refused; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("user {0} is already a member")]
    AlreadyMember(i64),
    #[error("user {0} is not a member")]
    NotAMember(i64),
    #[error("a group has at most {0} members")]
    GroupFull(usize),
    #[error("user {0} is in as many groups as one user may be")]
    TooManyGroups(i64),
    #[error("the owner must transfer ownership before leaving")]
    OwnerMustTransfer,
    #[error("user {0} is not your friend; only friends can be added")]
    NotAFriend(i64),
}

impl From<storage::GroupRefusal> for GroupError {
    fn from(refusal: storage::GroupRefusal) -> Self {
        match refusal {
            storage::GroupRefusal::TooManyGroups { user_id } => GroupError::TooManyGroups(user_id),
        }
    }
}
