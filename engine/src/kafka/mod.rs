//! The Kafka bus of cluster mode: [`KafkaBus`] produces each
//! [`Delivery`] to the delivery topic, and [`DeliveryConsumer`] hands the
//! records of the partitions this node owns to its shard actors.
//!
//! # Topics
//!
//! - `delivery_topic` (`parley.delivery`): exactly one partition per
//!   virtual shard; partition `n` carries shard `n` (set explicitly, the key
//!   is the shard number as 4 big-endian bytes). The value is an
//!   [`envelope`] (binary, versioned).
//! - `<delivery_topic>.dead`: records a consumer could not hand over
//!   (undecodable, or for a shard this node has no actor for), with their
//!   key and value unchanged and headers `parley-error` (why) and
//!   `parley-origin` (`topic/partition@offset`).
//!
//! # What is guaranteed
//!
//! - **Durable before `publish` returns.** The producer is idempotent with
//!   `acks=all`; `publish` returns `Ok` only after the brokers acknowledged
//!   the record, and fails with [`BusError::Unavailable`] (retryable) after
//!   `delivery_timeout_ms`.
//! - **Order per shard.** One partition per shard, and the idempotent
//!   producer neither duplicates nor reorders records through its own
//!   retries, so records published one after the other to a shard are
//!   consumed in that order.
//! - **At least once.** The consumer stores a record's offset only after
//!   the record was handed to the shard actor's mailbox (or written to the
//!   dead-letter topic and acknowledged there). Stored offsets are committed
//!   in the background every `commit_interval_ms` (one request for all
//!   partitions), for the partitions given up in a rebalance (librdkafka
//!   commits on revoke; rebalance callbacks run in the consumer's task, so
//!   every record handed over is stored by then), and once more on stop.
//!   A clean handover therefore delivers nothing twice; after a crash the
//!   new owner resumes from the last commit and may see records again
//!   (clients drop duplicates by `seq` and message ID), never fewer. A
//!   record is never skipped: if the dead-letter topic cannot be written,
//!   the consumer retries and does not move past it. What sits in a shard
//!   actor's mailbox when a revoke stops that actor is for users who catch
//!   up from storage, as after a crash.
//! - **Ownership = assignment.** [`KafkaOwnership`] answers
//!   [`crate::ShardOwnership::owns`] from the consumer group's current
//!   assignment (cooperative-sticky: a rebalance moves only the partitions
//!   that change owner), and every change is also reported as an
//!   [`OwnershipChange`].
//!
//! # In the node
//!
//! `Engine::start` builds both for a cluster node: the bus publishes every
//! delivery and every piece of presence bookkeeping, and the consumer's
//! [`OwnershipChange`]s evict the clients of revoked shards and update the
//! node directory. The consumer's counters (records handed over,
//! dead-lettered) are not in [`crate::Metrics`] yet.

mod config;
mod consumer;
pub mod envelope;
#[cfg(feature = "test-support")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

pub use config::{COMPRESSIONS, KafkaConfig};
pub use consumer::{ConsumerCounters, DeliveryConsumer, KafkaOwnership, OwnershipChange};

use crate::bus::{Bus, BusError, Delivery};
use crate::shard::{ShardId, ShardMap};

/// How long `publish` waits for room when the producer's local queue is
/// full, before it fails with [`BusError::Unavailable`].
pub const QUEUE_FULL_WAIT: Duration = Duration::from_secs(1);
/// How long a metadata request may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster bus: produces deliveries to the delivery topic.
pub struct KafkaBus {
    producer: Arc<FutureProducer>,
    topic: String,
}

impl KafkaBus {
    /// Creates the producer (it connects in the background).
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        config.validate()?;
        let producer = config.producer().create().map_err(|e| BusError::Config(e.to_string()))?;
        Ok(KafkaBus { producer: Arc::new(producer), topic: config.delivery_topic.clone() })
    }

    /// Checks that the delivery topic has one partition per shard of
    /// `shards`: fewer would leave shards without a partition, more would
    /// leave partitions that no shard publishes to.
    pub async fn check_topic(&self, shards: ShardMap) -> Result<(), BusError> {
        let producer = Arc::clone(&self.producer);
        let topic = self.topic.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            let metadata = producer.client().fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let found = metadata.topics().iter().find(|t| t.name() == topic).filter(|t| t.error().is_none());
            Ok::<_, KafkaError>(found.map(|t| t.partitions().len()))
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?
        .map_err(|e| bus_error(e, None))?;
        match partitions {
            Some(n) if n == shards.count() as usize => Ok(()),
            Some(n) => Err(BusError::Config(format!(
                "topic {} has {n} partitions, the node has {} shards",
                self.topic,
                shards.count()
            ))),
            None => Err(BusError::Config(format!("topic {} does not exist", self.topic))),
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        let shard = delivery.shard;
        let partition = i32::try_from(shard.0).map_err(|_| BusError::NoRoute(shard))?;
        let value = envelope::encode(&delivery).map_err(|e| BusError::Rejected(e.to_string()))?;
        let key = shard.0.to_be_bytes();
        let record = FutureRecord::to(&self.topic).partition(partition).key(&key[..]).payload(&value);
        match self.producer.send(record, QUEUE_FULL_WAIT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(bus_error(error, Some(shard))),
        }
    }
}

/// Sorts a Kafka error into retryable ([`BusError::Unavailable`]) and not.
fn bus_error(error: KafkaError, shard: Option<ShardId>) -> BusError {
    use RDKafkaErrorCode::*;
    match (error.rdkafka_error_code(), shard) {
        (Some(UnknownPartition), Some(shard)) => BusError::NoRoute(shard),
        (
            Some(
                MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | UnknownTopic
                | UnknownTopicOrPartition
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed,
            ),
            _,
        ) => BusError::Rejected(error.to_string()),
        _ => BusError::Unavailable(error.to_string()),
    }
}
