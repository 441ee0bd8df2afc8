//! Ended login sessions in Redis: one expiring key per session, set in a
//! pipeline of `SET … PX`, checked with `EXISTS`.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConnection, px};
use crate::cluster::{ClusterError, RevokedSessions};

/// Key kind of an ended session: `{prefix}:revoked:{session_id}`.
pub const REVOKED_KEY: &str = "revoked";

/// Ended login sessions in Redis.
pub struct RedisRevokedSessions {
    redis: RedisConnection,
}

impl RedisRevokedSessions {
    pub fn new(redis: RedisConnection) -> Self {
        RedisRevokedSessions { redis }
    }
}

#[async_trait]
impl RevokedSessions for RedisRevokedSessions {
    async fn revoke(&self, sessions: &[i64], ttl: Duration) -> Result<(), ClusterError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for session in sessions {
            pipe.cmd("SET").arg(self.redis.key(REVOKED_KEY, session)).arg(1).arg("PX").arg(px(ttl)).ignore();
        }
        self.redis.bounded(pipe.query_async::<()>(&mut self.redis.manager())).await
    }

    async fn is_revoked(&self, session: i64) -> Result<bool, ClusterError> {
        let mut exists = ::redis::cmd("EXISTS");
        exists.arg(self.redis.key(REVOKED_KEY, session));
        let found: u32 = self.redis.bounded(exists.query_async(&mut self.redis.manager())).await?;
        Ok(found > 0)
    }
}
