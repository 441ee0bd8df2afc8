//! Request counts in Redis: one counter per key that expires with its
//! window, created by `SET … PX … NX` and counted by `INCR` in one
//! transaction, so that the first request of a window starts its clock.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConnection, px};
use crate::cluster::{ClusterError, RequestCounts};

/// Key kind of a counted key: `{prefix}:count:{key}`.
pub const COUNT_KEY: &str = "count";

/// Request counts in Redis.
pub struct RedisCounts {
    redis: RedisConnection,
}

impl RedisCounts {
    pub fn new(redis: RedisConnection) -> Self {
        RedisCounts { redis }
    }
}

#[async_trait]
impl RequestCounts for RedisCounts {
    async fn count(&self, key: &str, window: Duration) -> Result<(u64, Duration), ClusterError> {
        let key = self.redis.key(COUNT_KEY, key);
        let mut transaction = ::redis::pipe();
        transaction.atomic();
        transaction.cmd("SET").arg(&key).arg(0).arg("PX").arg(px(window)).arg("NX").ignore();
        transaction.cmd("INCR").arg(&key);
        transaction.cmd("PTTL").arg(&key);
        let (count, left_ms): (u64, i64) =
            self.redis.bounded(transaction.query_async(&mut self.redis.manager())).await?;
        // -1 (no expiry) cannot happen: the key was created with one.
        Ok((count, Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))))
    }
}
