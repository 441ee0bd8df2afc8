//! Ended login sessions in Redis: one expiring key per session, set in a
//! pipeline of `SET … PX`, checked with `EXISTS`, and a mark that the set
//! is complete, which a Redis restarted empty no longer has.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConnection, px};
use crate::cluster::{ClusterError, RevokedSessions};

/// Key kind of an ended session: `{prefix}:revoked:{session_id}`.
pub const REVOKED_KEY: &str = "revoked";
/// The completeness mark, `{prefix}:revoked:complete` (no session is named
/// so: their IDs are numbers). It never expires.
pub const COMPLETE: &str = "complete";

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
        let mut pipe = ::redis::pipe();
        pipe.cmd("EXISTS").arg(self.redis.key(REVOKED_KEY, session));
        pipe.cmd("EXISTS").arg(self.redis.key(REVOKED_KEY, COMPLETE));
        let (found, complete): (u32, u32) = self.redis.bounded(pipe.query_async(&mut self.redis.manager())).await?;
        if complete == 0 {
            return Err(ClusterError::RevocationsIncomplete);
        }
        Ok(found > 0)
    }

    async fn is_complete(&self) -> Result<bool, ClusterError> {
        let mut exists = ::redis::cmd("EXISTS");
        exists.arg(self.redis.key(REVOKED_KEY, COMPLETE));
        let found: u32 = self.redis.bounded(exists.query_async(&mut self.redis.manager())).await?;
        Ok(found > 0)
    }

    async fn restore(&self, sessions: &[(i64, Duration)]) -> Result<(), ClusterError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (session, ttl) in sessions {
            pipe.cmd("SET").arg(self.redis.key(REVOKED_KEY, session)).arg(1).arg("PX").arg(px(*ttl)).ignore();
        }
        pipe.cmd("SET").arg(self.redis.key(REVOKED_KEY, COMPLETE)).arg(1).ignore();
        self.redis.bounded(pipe.query_async::<()>(&mut self.redis.manager())).await
    }
}
