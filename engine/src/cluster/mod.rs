//! What the nodes of a cluster share, behind traits: generator-ID leases,
//! the node directory, presence, one-time WebSocket tickets, ended login
//! sessions and request counts for rate limits.
//!
//! Each trait has an in-memory implementation for a single node
//! ([`local`]) and a Redis one ([`crate::redis`]); callers hold
//! `Arc<dyn Trait>` and never ask which. Every operation may fail with
//! [`ClusterError`] while the shared store is unreachable; nothing here
//! panics, and each method says what a retry does. Whatever must survive
//! the loss of a node is kept with a time to live and refreshed by its
//! owner (a heartbeat), so what a crashed node published disappears by
//! itself.

mod keeper;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protocol::ws::PresenceStatus;
use serde::{Deserialize, Serialize};

pub use keeper::LeaseKeeper;

use crate::redis::{
    RedisConfig, RedisConnection, RedisCounts, RedisDirectory, RedisLeases, RedisPresence, RedisRevokedSessions,
    RedisTickets,
};
use crate::shard::ShardId;

/// Heartbeats (and lease renewals) per time to live: an entry survives
/// two missed heartbeats in a row and expires on the third.
pub const HEARTBEATS_PER_TTL: u32 = 3;

/// Why a shared-state operation failed. A failed write may or may not
/// have landed; every write may be retried.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no free generator id: all {} are leased", u32::from(crate::ids::MAX_GENERATOR) + 1)]
    NoFreeGenerator,
    #[error("could not hold a generator lease within {0:?}")]
    LeaseNotHeld(Duration),
    #[error("bad redis configuration: {0}")]
    Config(String),
    #[error("encoding a value: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the ended sessions are not loaded yet (the shared state lost them, or the node is starting)")]
    RevocationsIncomplete,
}

/// Leases of snowflake generator IDs (`0..=ids::MAX_GENERATOR`), so that
/// no two live nodes hand out IDs under the same one. The holder's identity
/// is the implementation's; [`LeaseKeeper`] drives claim, renewal and
/// release.
#[async_trait]
pub trait GeneratorLeases: Send + Sync + 'static {
    /// How long a claim or renewal lasts; `None`: leases never expire and
    /// need no renewal.
    fn ttl(&self) -> Option<Duration>;

    /// Claims a generator ID that nobody holds, for [`Self::ttl`]. Atomic
    /// per ID: two claimers never both get one. Fails with
    /// [`ClusterError::NoFreeGenerator`] when every ID is held.
    async fn claim(&self) -> Result<u16, ClusterError>;

    /// Extends this holder's claim of `generator` by [`Self::ttl`] from
    /// now. `false` if the claim has expired or another holder has the ID:
    /// nothing was extended and the ID must no longer be used.
    async fn renew(&self, generator: u16) -> Result<bool, ClusterError>;

    /// Gives the ID up if this holder still has it. Idempotent.
    async fn release(&self, generator: u16) -> Result<(), ClusterError>;
}

/// A node as the others find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique among live nodes.
    pub name: String,
    /// Where clients and other nodes reach it, e.g. `wss://node-1.example`.
    pub url: String,
    /// The shards it owns.
    pub shards: Vec<ShardId>,
}

/// The live nodes and what they own. An entry lives for the directory's
/// time to live after its last [`NodeDirectory::announce`]: a node
/// announces itself on every heartbeat, and one that stops disappears.
#[async_trait]
pub trait NodeDirectory: Send + Sync + 'static {
    /// Publishes `node` (replacing its previous entry) for the time to live.
    async fn announce(&self, node: &NodeInfo) -> Result<(), ClusterError>;

    /// Removes a node at once (graceful shutdown). Idempotent.
    async fn withdraw(&self, name: &str) -> Result<(), ClusterError>;

    /// Every live node, sorted by name.
    async fn live_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError>;

    /// The live node that announced `shard`; the first by name if two
    /// claim it (during a handover).
    async fn owner_of(&self, shard: ShardId) -> Result<Option<NodeInfo>, ClusterError> {
        Ok(self.live_nodes().await?.into_iter().find(|node| node.shards.contains(&shard)))
    }
}

/// A user's presence as published for every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPresence {
    pub status: PresenceStatus,
    /// Short text the user set; empty if none.
    pub status_text: String,
}

/// Users' shown presence, readable by every node. An entry lives for the
/// time to live after it was last published: the node holding a user's
/// connections republishes its online users on every heartbeat, so the
/// users of a crashed node fall offline by themselves. Each call is one
/// round trip however many users it names.
///
/// The shard owners' presence books stay the truth; the directory is how a
/// shard's new owner learns who was online under the old one (see
/// `registry::ShardActor`'s handling of `Watch` after a shard was gained).
#[async_trait]
pub trait PresenceDirectory: Send + Sync + 'static {
    /// How long an entry lives after it was last published; owners
    /// republish every [`HEARTBEATS_PER_TTL`]th of it.
    fn ttl(&self) -> Duration;

    /// Sets (or refreshes) each user's presence for the time to live.
    async fn publish(&self, entries: &[(i64, SharedPresence)]) -> Result<(), ClusterError>;

    /// Removes users at once (they went offline). Idempotent.
    async fn remove(&self, users: &[i64]) -> Result<(), ClusterError>;

    /// Each user's presence, in the order asked; `None` for a user who
    /// is offline (never published, removed, or expired).
    async fn read(&self, users: &[i64]) -> Result<Vec<Option<SharedPresence>>, ClusterError>;
}

/// One-time tickets: an opaque value stored under a random name for a
/// short time, taken at most once, whichever node takes it.
#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Stores `payload` under `ticket` for `ttl`. `false` if a live ticket
    /// of that name exists (it is left unchanged).
    async fn insert(&self, ticket: &str, payload: &str, ttl: Duration) -> Result<bool, ClusterError>;

    /// Removes a live ticket and returns its payload; `None` if it never
    /// existed, expired or was taken. Of concurrent takers exactly one
    /// gets the payload.
    async fn take(&self, ticket: &str) -> Result<Option<String>, ClusterError>;
}

/// Login sessions (token families) ended before their access tokens
/// expire, so that every node refuses those tokens. An entry lives for the
/// time to live it was revoked with: the longest an access token of the
/// session can still be valid, after which the token refuses itself.
///
/// The set is a copy of what the store knows (revoked families), and a
/// copy can be lost: memory with its process, Redis (which runs without
/// persistence) when it restarts. So the set starts out *incomplete*, and
/// [`RevokedSessions::is_revoked`] refuses to answer until
/// [`RevokedSessions::restore`] has loaded it from the store; a lost Redis
/// is incomplete again, since its mark went with it.
#[async_trait]
pub trait RevokedSessions: Send + Sync + 'static {
    /// Refuses `sessions` from now on, for `ttl`. Idempotent; one round
    /// trip however many sessions it names.
    async fn revoke(&self, sessions: &[i64], ttl: Duration) -> Result<(), ClusterError>;

    /// Whether `session` was revoked less than its time to live ago; fails
    /// with [`ClusterError::RevocationsIncomplete`] while the set is
    /// incomplete. One round trip.
    async fn is_revoked(&self, session: i64) -> Result<bool, ClusterError>;

    /// Whether the set is complete (restored since it was last lost).
    async fn is_complete(&self) -> Result<bool, ClusterError>;

    /// Adds `sessions`, each for its own time to live, and marks the set
    /// complete, at once (in Redis in one transaction, so the mark never
    /// lands in a Redis that lacks the entries).
    async fn restore(&self, sessions: &[(i64, Duration)]) -> Result<(), ClusterError>;
}

/// Requests counted per key in fixed windows by every node together, so
/// that a rate limit holds however many nodes a client spreads its
/// requests over.
#[async_trait]
pub trait RequestCounts: Send + Sync + 'static {
    /// Counts one request for `key`. Returns how many requests the key's
    /// current window holds, this one included, and how long the window
    /// has left. A window starts with its key's first request and lasts
    /// `window`. A failed call may or may not have counted.
    async fn count(&self, key: &str, window: Duration) -> Result<(u64, Duration), ClusterError>;
}

/// A node's shared-state adapters, chosen in one place.
#[derive(Clone)]
pub struct SharedState {
    pub leases: Arc<dyn GeneratorLeases>,
    pub directory: Arc<dyn NodeDirectory>,
    pub presence: Arc<dyn PresenceDirectory>,
    pub tickets: Arc<dyn TicketStore>,
    pub revoked: Arc<dyn RevokedSessions>,
    pub counts: Arc<dyn RequestCounts>,
}

impl SharedState {
    /// Redis when `redis` is configured (a cluster node named `node`), else
    /// memory with the fixed `generator_id` (a single node; the time-to-live
    /// settings are `RedisConfig`'s defaults).
    pub async fn open(redis: Option<&RedisConfig>, node: &str, generator_id: u16) -> Result<Self, ClusterError> {
        let Some(config) = redis else {
            let ttls = RedisConfig::default();
            return Ok(SharedState {
                leases: Arc::new(
                    local::FixedGenerator::new(generator_id).map_err(|e| ClusterError::Config(e.to_string()))?,
                ),
                directory: Arc::new(local::LocalDirectory::new(Duration::from_millis(ttls.node_ttl_ms))),
                presence: Arc::new(local::LocalPresence::new(Duration::from_millis(ttls.presence_ttl_ms))),
                tickets: Arc::new(local::LocalTickets::default()),
                revoked: Arc::new(local::LocalRevokedSessions::default()),
                counts: Arc::new(local::LocalCounts::default()),
            });
        };
        let connection = RedisConnection::connect(config).await?;
        Ok(SharedState {
            leases: Arc::new(RedisLeases::new(connection.clone(), node)),
            directory: Arc::new(RedisDirectory::new(connection.clone())),
            presence: Arc::new(RedisPresence::new(connection.clone())),
            tickets: Arc::new(RedisTickets::new(connection.clone())),
            revoked: Arc::new(RedisRevokedSessions::new(connection.clone())),
            counts: Arc::new(RedisCounts::new(connection)),
        })
    }
}
