//! Redis implementations of the cluster traits ([`crate::cluster`]):
//! generator-ID leases, the node directory, presence, WebSocket tickets,
//! ended login sessions and request counts.
//!
//! # Key layout
//!
//! Every key starts with [`RedisConfig::key_prefix`] (`parley` by default),
//! so several clusters may share one Redis:
//!
//! | key | value | time to live |
//! |---|---|---|
//! | `parley:gen:{id}` | holder of generator ID `id` (`{node}/{instance}`) | `lease_ttl_ms`, renewed every third |
//! | `parley:node:{name}` | the node's [`NodeInfo`](crate::cluster::NodeInfo) as JSON | `node_ttl_ms`, refreshed by each heartbeat |
//! | `parley:nodes` | set of announced node names (the index `live_nodes` reads) | none; names whose entry expired are pruned on read |
//! | `parley:presence:{user_id}` | the user's [`SharedPresence`](crate::cluster::SharedPresence) as JSON | `presence_ttl_ms`, refreshed by each heartbeat |
//! | `parley:ticket:{ticket}` | the ticket's payload | the ticket's own (30 s by default) |
//! | `parley:revoked:{session}` | `1`: the login session (token family) was ended | the access tokens' lifetime (`auth.access_token_ttl_secs`) |
//! | `parley:count:{key}` | requests counted in the key's current window (e.g. `auth:{ip}`) | the window's rest |
//!
//! # When Redis is down or restarts
//!
//! One [`RedisConnection`] per node, cloned into every adapter, multiplexes
//! all commands over one connection and reconnects by itself (the `redis`
//! crate's connection manager). A command that gets no answer within
//! [`RedisConfig::command_timeout_ms`] fails with
//! [`ClusterError::Timeout`]; the next command tries again. While Redis is
//! unreachable:
//! - the generator lease is not renewed, its local grant runs out and the
//!   node hands out no IDs ([`crate::ids::IdError::NoLease`]: a send
//!   fails and may be retried) until a renewal or a new claim succeeds;
//! - heartbeats fail and are retried on the next beat; other nodes see the
//!   entries expire;
//! - tickets can be neither issued nor redeemed.
//!
//! Redis is run without persistence: when it restarts it has lost every
//! key. The next lease renewal finds the key gone, so the node stops
//! handing out IDs and claims an ID anew (fenced by one time to live, see
//! [`crate::cluster::LeaseKeeper`]); the next heartbeats re-publish node
//! entries and presence; tickets issued before the restart are gone and
//! the client asks for a new one; ended sessions are forgotten, so their
//! access tokens work again until they expire (their refresh tokens stay
//! revoked in the store); request counts start again from zero.

mod counts;
mod directory;
mod leases;
mod presence;
mod revoked;
#[cfg(feature = "test-support")]
pub mod testing;
mod tickets;

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

pub use counts::RedisCounts;
pub use directory::RedisDirectory;
pub use leases::RedisLeases;
pub use presence::RedisPresence;
pub use revoked::RedisRevokedSessions;
pub use tickets::RedisTickets;

use crate::cluster::ClusterError;

/// The shortest time to live accepted (tests use a few hundred ms).
pub const MIN_TTL_MS: u64 = 100;
/// Attempts to reconnect after a dropped connection before the pending
/// commands fail; the next command starts a new round.
pub const RECONNECT_ATTEMPTS: usize = 2;
/// Delay before the first reconnect attempt; doubled for each further one.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);

/// Where Redis is and how long what the node publishes there lives: the
/// `[redis]` section of a cluster node's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://redis:6379/0` (`redis://:password@host:port/db`
    /// with a password).
    pub url: String,
    /// Prefix of every key: clusters sharing one Redis need different ones.
    pub key_prefix: String,
    /// Milliseconds a generator-ID lease lasts unless renewed (renewed
    /// every third of it). A node that loses its lease pauses IDs for this
    /// long before its new claim is granted.
    pub lease_ttl_ms: u64,
    /// Milliseconds a node's directory entry lasts without a heartbeat
    /// (one every third of it).
    pub node_ttl_ms: u64,
    /// Milliseconds a user's presence lasts without a heartbeat (one every
    /// third of it): how long a crashed node's users still show online.
    pub presence_ttl_ms: u64,
    /// Milliseconds one command may take, reconnecting included, before it
    /// fails.
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://redis:6379/0".into(),
            key_prefix: "parley".into(),
            lease_ttl_ms: 10_000,
            node_ttl_ms: 10_000,
            presence_ttl_ms: 30_000,
            command_timeout_ms: 1_000,
        }
    }
}

impl RedisConfig {
    /// How often a node announces itself in the directory.
    pub fn node_heartbeat(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms) / crate::cluster::HEARTBEATS_PER_TTL
    }

    /// How often a node re-publishes its online users' presence.
    pub fn presence_heartbeat(&self) -> Duration {
        Duration::from_millis(self.presence_ttl_ms) / crate::cluster::HEARTBEATS_PER_TTL
    }

    fn validate(&self) -> Result<(), ClusterError> {
        let ttls = [("lease_ttl_ms", self.lease_ttl_ms), ("node_ttl_ms", self.node_ttl_ms)];
        let ttls = ttls.into_iter().chain([("presence_ttl_ms", self.presence_ttl_ms)]);
        for (name, ms) in ttls {
            if ms < MIN_TTL_MS {
                return Err(ClusterError::Config(format!("{name} must be at least {MIN_TTL_MS}")));
            }
        }
        if self.command_timeout_ms == 0 || self.command_timeout_ms >= self.lease_ttl_ms {
            return Err(ClusterError::Config("command_timeout_ms must be above 0 and below lease_ttl_ms".into()));
        }
        if self.key_prefix.is_empty() {
            return Err(ClusterError::Config("key_prefix must not be empty".into()));
        }
        Ok(())
    }
}

/// A node's connection to Redis, shared by the adapters (clones share the
/// one connection). Reconnects by itself; see the module docs.
#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    config: RedisConfig,
}

impl RedisConnection {
    /// Connects and checks that Redis answers; the connection manager's
    /// tasks run on the current tokio runtime.
    pub async fn connect(config: &RedisConfig) -> Result<Self, ClusterError> {
        config.validate()?;
        let client = ::redis::Client::open(config.url.as_str())?;
        let timeout = Duration::from_millis(config.command_timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(timeout)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let connection = RedisConnection { manager, config: config.clone() };
        connection.bounded(::redis::cmd("PING").query_async::<()>(&mut connection.manager())).await?;
        Ok(connection)
    }

    /// The settings it was made with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `{prefix}:{kind}:{id}`.
    fn key(&self, kind: &str, id: impl Display) -> String {
        format!("{}:{kind}:{id}", self.config.key_prefix)
    }

    /// A handle to send commands on (cheap: shares the connection).
    fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs a command's future, failing after the command timeout.
    async fn bounded<T>(&self, command: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, ClusterError> {
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        match tokio::time::timeout(timeout, command).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ClusterError::Timeout(timeout)),
        }
    }
}

/// Milliseconds of a time to live, as Redis's `PX` takes them (at least 1).
fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Decodes a JSON value read from Redis; a value that does not decode
/// (written by an incompatible version) counts as absent.
fn decode<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> Option<T> {
    serde_json::from_str(json)
        .inspect_err(|error| tracing::warn!(key, %error, "ignoring an undecodable redis value"))
        .ok()
}
