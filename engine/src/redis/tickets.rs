//! One-time tickets in Redis: `SET … NX PX` to issue, `GETDEL` to redeem,
//! so a ticket issued on one node is redeemed on any node, exactly once.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConnection, px};
use crate::cluster::{ClusterError, TicketStore};

/// Key kind of a ticket: `{prefix}:ticket:{ticket}`.
pub const TICKET_KEY: &str = "ticket";

/// One-time tickets in Redis.
pub struct RedisTickets {
    redis: RedisConnection,
}

impl RedisTickets {
    pub fn new(redis: RedisConnection) -> Self {
        RedisTickets { redis }
    }
}

#[async_trait]
impl TicketStore for RedisTickets {
    async fn insert(&self, ticket: &str, payload: &str, ttl: Duration) -> Result<bool, ClusterError> {
        let mut set = ::redis::cmd("SET");
        set.arg(self.redis.key(TICKET_KEY, ticket)).arg(payload).arg("NX").arg("PX").arg(px(ttl));
        let stored: Option<()> = self.redis.bounded(set.query_async(&mut self.redis.manager())).await?;
        Ok(stored.is_some())
    }

    async fn take(&self, ticket: &str) -> Result<Option<String>, ClusterError> {
        let mut getdel = ::redis::cmd("GETDEL");
        getdel.arg(self.redis.key(TICKET_KEY, ticket));
        self.redis.bounded(getdel.query_async(&mut self.redis.manager())).await
    }
}
