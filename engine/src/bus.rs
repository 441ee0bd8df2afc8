//! The bus between shards: one record per destination shard, carrying one
//! serialized update and the `(user, seq)` pairs it is for.
//!
//! Single node: [`InProcessBus`] hands records straight to the local shard
//! actors. Cluster: a Kafka adapter produces each record to the partition
//! numbered like its shard and the owner of that partition consumes it.

use std::sync::{Arc, OnceLock};

use actix::{Message, Recipient};
use async_trait::async_trait;

use crate::shard::ShardId;

/// One update (or ephemeral frame) for some users of one shard.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Delivery {
    pub shard: ShardId,
    /// Each recipient with the `seq` of this update in their update log
    /// (0 for an ephemeral frame).
    pub recipients: Vec<(i64, u64)>,
    /// Serialized once for all recipients.
    pub payload: Payload,
}

/// What a delivery carries.
#[derive(Clone, Debug)]
pub enum Payload {
    /// The `update` object of an `update` frame; each recipient's frame adds their `seq`.
    Update(Arc<str>),
    /// A complete frame that is not in any update log (typing indicators).
    Ephemeral(Arc<str>),
    /// Presence of some users; each recipient's user actor merges these
    /// into one `presence` frame per coalescing window.
    Presence(Arc<[protocol::ws::PresenceView]>),
    /// Presence bookkeeping for the shard itself (no recipients): who
    /// watches whom.
    Control(Arc<crate::presence::PresenceControl>),
    /// These login sessions (token families) were ended: each recipient's
    /// connections of one of them are closed with
    /// [`protocol::ws::close::SESSION_REVOKED`].
    EndSessions(Arc<[i64]>),
}

/// Errors of a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("no consumer for shard {0:?}")]
    NoRoute(ShardId),
    #[error("bus not connected")]
    NotConnected,
    /// The brokers did not acknowledge in time or could not be reached; the
    /// record may or may not have been written. Retryable.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The brokers refused the record (too large, not authorized, …); a
    /// retry fails the same way.
    #[error("bus refused the record: {0}")]
    Rejected(String),
    /// The bus's settings are unusable.
    #[error("bad bus configuration: {0}")]
    Config(String),
}

/// Moves deliveries to the node that owns their shard.
///
/// Contract: records to one shard arrive in publish order; a record whose
/// `publish` returned `Ok` reaches the owner of its shard. In process, a
/// node that dies takes its unhandled records with it and the recipients
/// catch up from storage (every update is persisted before it is
/// published); on Kafka the record stays in the topic and the shard's next
/// owner receives it (at least once).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError>;
}

/// The single-node bus: in-process channels to the local shard actors.
#[derive(Default)]
pub struct InProcessBus {
    shards: OnceLock<Vec<Recipient<Delivery>>>,
}

impl InProcessBus {
    /// Connects the bus to the shard actors, indexed by shard number.
    pub fn connect(&self, shards: Vec<Recipient<Delivery>>) -> Result<(), BusError> {
        self.shards.set(shards).map_err(|_| BusError::NotConnected)
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        let shards = self.shards.get().ok_or(BusError::NotConnected)?;
        let shard = delivery.shard;
        let target = shards.get(shard.0 as usize).ok_or(BusError::NoRoute(shard))?;
        // The shard actor's mailbox is the queue; `do_send` keeps publish order.
        target.do_send(delivery);
        Ok(())
    }
}
