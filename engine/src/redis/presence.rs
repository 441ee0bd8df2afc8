//! Presence in Redis: one expiring JSON value per user, written and read
//! in batches (a pipeline of `SET … PX`, one `MGET`).

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConnection, decode, px};
use crate::cluster::{ClusterError, PresenceDirectory, SharedPresence};

/// Key kind of a user's presence: `{prefix}:presence:{user_id}`.
pub const PRESENCE_KEY: &str = "presence";

/// Users' presence in Redis.
pub struct RedisPresence {
    redis: RedisConnection,
    ttl: Duration,
}

impl RedisPresence {
    /// Presence whose entries last `presence_ttl_ms` of the connection's config.
    pub fn new(redis: RedisConnection) -> Self {
        RedisPresence { ttl: Duration::from_millis(redis.config().presence_ttl_ms), redis }
    }

    fn keys(&self, users: &[i64]) -> Vec<String> {
        users.iter().map(|user| self.redis.key(PRESENCE_KEY, user)).collect()
    }
}

#[async_trait]
impl PresenceDirectory for RedisPresence {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn publish(&self, entries: &[(i64, SharedPresence)]) -> Result<(), ClusterError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for (user, presence) in entries {
            let json = serde_json::to_string(presence)?;
            pipe.cmd("SET").arg(self.redis.key(PRESENCE_KEY, user)).arg(json).arg("PX").arg(px(self.ttl)).ignore();
        }
        self.redis.bounded(pipe.query_async::<()>(&mut self.redis.manager())).await
    }

    async fn remove(&self, users: &[i64]) -> Result<(), ClusterError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut del = ::redis::cmd("DEL");
        del.arg(self.keys(users));
        self.redis.bounded(del.query_async::<()>(&mut self.redis.manager())).await
    }

    async fn read(&self, users: &[i64]) -> Result<Vec<Option<SharedPresence>>, ClusterError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(users);
        let mut mget = ::redis::cmd("MGET");
        mget.arg(&keys);
        let values: Vec<Option<String>> = self.redis.bounded(mget.query_async(&mut self.redis.manager())).await?;
        Ok(keys.iter().zip(values).map(|(key, value)| value.and_then(|json| decode(key, &json))).collect())
    }
}
