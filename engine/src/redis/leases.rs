//! Generator-ID leases in Redis: `SET {prefix}:gen:{id} {holder} NX PX ttl`
//! to claim, compare-and-set scripts to renew and release.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;

use super::{RedisConnection, px};
use crate::cluster::{ClusterError, GeneratorLeases};
use crate::ids::MAX_GENERATOR;

/// Key kind of a generator lease: `{prefix}:gen:{id}`.
pub const GENERATOR_KEY: &str = "gen";

/// Extends the key's time to live if it still names this holder.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the key if it still names this holder.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Generator-ID leases held in Redis by one node process.
pub struct RedisLeases {
    redis: RedisConnection,
    /// `{node}/{instance}`: the instance part tells apart two processes
    /// started under the same node name (a restart, a misconfiguration).
    holder: String,
    ttl: Duration,
    renew: Script,
    release: Script,
}

impl RedisLeases {
    /// Leases for node `node`, lasting `lease_ttl_ms` of the connection's config.
    pub fn new(redis: RedisConnection, node: &str) -> Self {
        let instance = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
        RedisLeases {
            ttl: Duration::from_millis(redis.config().lease_ttl_ms),
            holder: format!("{node}/{instance:016x}"),
            redis,
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        }
    }
}

#[async_trait]
impl GeneratorLeases for RedisLeases {
    fn ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }

    /// Tries the IDs from 0 up, one `SET NX` each, and keeps the first it
    /// gets: as many round trips as there are live nodes, once per claim.
    async fn claim(&self) -> Result<u16, ClusterError> {
        for generator in 0..=MAX_GENERATOR {
            let mut set = ::redis::cmd("SET");
            set.arg(self.redis.key(GENERATOR_KEY, generator)).arg(&self.holder).arg("NX").arg("PX").arg(px(self.ttl));
            let claimed: Option<()> = self.redis.bounded(set.query_async(&mut self.redis.manager())).await?;
            if claimed.is_some() {
                return Ok(generator);
            }
        }
        Err(ClusterError::NoFreeGenerator)
    }

    async fn renew(&self, generator: u16) -> Result<bool, ClusterError> {
        let mut renew = self.renew.key(self.redis.key(GENERATOR_KEY, generator));
        renew.arg(&self.holder).arg(px(self.ttl));
        let renewed: i64 = self.redis.bounded(renew.invoke_async(&mut self.redis.manager())).await?;
        Ok(renewed == 1)
    }

    async fn release(&self, generator: u16) -> Result<(), ClusterError> {
        let mut release = self.release.key(self.redis.key(GENERATOR_KEY, generator));
        release.arg(&self.holder);
        let _: i64 = self.redis.bounded(release.invoke_async(&mut self.redis.manager())).await?;
        Ok(())
    }
}
