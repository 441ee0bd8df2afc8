//! The delivery consumer: a task in the nodes' consumer group that hands
//! each record of the partitions it owns to the local shard actor, and
//! reports which partitions (shards) it owns.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix::Recipient;
use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{KafkaConfig, QUEUE_FULL_WAIT, envelope};
use crate::bus::{BusError, Delivery};
use crate::shard::{ShardId, ShardOwnership};

/// Pause after a consumer error before polling again.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Pause between attempts to write a record to the dead-letter topic.
pub const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// A change of the partitions (shards) this consumer owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipChange {
    /// These shards are this node's from now on.
    Assigned(Vec<ShardId>),
    /// These shards are no longer this node's; reported before the
    /// partitions are given up.
    Revoked(Vec<ShardId>),
}

/// The shards this node owns: its consumer's current assignment.
#[derive(Clone, Debug, Default)]
pub struct KafkaOwnership {
    shards: Arc<RwLock<BTreeSet<ShardId>>>,
}

impl KafkaOwnership {
    /// The owned shards, in order.
    pub fn owned(&self) -> Vec<ShardId> {
        self.shards.read().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }

    fn apply(&self, change: &OwnershipChange) {
        let mut shards = self.shards.write().unwrap_or_else(PoisonError::into_inner);
        match change {
            OwnershipChange::Assigned(added) => shards.extend(added),
            OwnershipChange::Revoked(removed) => removed.iter().for_each(|shard| {
                shards.remove(shard);
            }),
        }
    }
}

impl ShardOwnership for KafkaOwnership {
    fn owns(&self, shard: ShardId) -> bool {
        self.shards.read().unwrap_or_else(PoisonError::into_inner).contains(&shard)
    }
}

/// Tracks the assignment from librdkafka's rebalance callbacks.
struct GroupContext {
    topic: String,
    ownership: KafkaOwnership,
    /// Unbounded, but it holds one entry per rebalance, and rebalances are
    /// rare; a callback must not block or drop a change.
    events: mpsc::UnboundedSender<OwnershipChange>,
}

impl GroupContext {
    fn shards_of(&self, partitions: &TopicPartitionList) -> Vec<ShardId> {
        let ours = partitions.elements().into_iter().filter(|p| p.topic() == self.topic);
        ours.filter_map(|p| u32::try_from(p.partition()).ok()).map(ShardId).collect()
    }

    fn report(&self, change: OwnershipChange) {
        tracing::info!(?change, topic = %self.topic, "delivery partitions rebalanced");
        self.ownership.apply(&change);
        // The receiver may have been dropped: ownership() still answers.
        let _ = self.events.send(change);
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => self.report(OwnershipChange::Revoked(self.shards_of(partitions))),
            Rebalance::Error(error) => tracing::warn!(%error, "delivery consumer rebalance failed"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.report(OwnershipChange::Assigned(self.shards_of(partitions)));
        }
    }
}

/// Counts of what the consumer did with the records it read (the node's
/// Prometheus counters: [`crate::metrics::Metrics::consumer_counters`]).
#[derive(Clone, Debug)]
pub struct ConsumerCounters {
    /// Records handed to a shard actor.
    pub handed_over: IntCounter,
    /// Records written to the dead-letter topic.
    pub dead_lettered: IntCounter,
}

/// The running consumer; [`DeliveryConsumer::stop`] ends it (dropping it
/// ends it too, in the background).
pub struct DeliveryConsumer {
    ownership: KafkaOwnership,
    counters: ConsumerCounters,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl DeliveryConsumer {
    /// Joins the consumer group, subscribes to the delivery topic and hands
    /// each record of partition `n` to `shards[n]` (indexed by shard number,
    /// like [`crate::InProcessBus::connect`]). Runs on the current tokio
    /// runtime. Counts what it does in `counters`. Returns the ownership
    /// changes as they happen.
    pub fn start(
        config: &KafkaConfig,
        shards: Vec<Recipient<Delivery>>,
        counters: ConsumerCounters,
    ) -> Result<(Self, mpsc::UnboundedReceiver<OwnershipChange>), BusError> {
        config.validate()?;
        let (events, changes) = mpsc::unbounded_channel();
        let ownership = KafkaOwnership::default();
        let context = GroupContext { topic: config.delivery_topic.clone(), ownership: ownership.clone(), events };
        let consumer: StreamConsumer<GroupContext> =
            config.consumer().create_with_context(context).map_err(|e| BusError::Config(e.to_string()))?;
        consumer.subscribe(&[&config.delivery_topic]).map_err(|e| BusError::Config(e.to_string()))?;
        let dead_letters: FutureProducer = config.producer().create().map_err(|e| BusError::Config(e.to_string()))?;
        let (stop, stopped) = oneshot::channel();
        let worker =
            Worker { shards, dead_letters, dead_letter_topic: config.dead_letter_topic(), counters: counters.clone() };
        let task = tokio::spawn(worker.run(consumer, stopped));
        Ok((DeliveryConsumer { ownership, counters, stop, task }, changes))
    }

    /// The shards this consumer currently owns.
    pub fn ownership(&self) -> KafkaOwnership {
        self.ownership.clone()
    }

    /// Records handed to a shard actor so far.
    pub fn handed_over(&self) -> u64 {
        self.counters.handed_over.get()
    }

    /// Records written to the dead-letter topic so far.
    pub fn dead_lettered(&self) -> u64 {
        self.counters.dead_lettered.get()
    }

    /// Stops reading, commits what was handed over and leaves the group
    /// (its partitions go to the other members at once).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "delivery consumer task failed");
        }
    }
}

/// The consumer task's state.
struct Worker {
    shards: Vec<Recipient<Delivery>>,
    dead_letters: FutureProducer,
    dead_letter_topic: String,
    counters: ConsumerCounters,
}

impl Worker {
    async fn run(self, consumer: StreamConsumer<GroupContext>, mut stopped: oneshot::Receiver<()>) {
        loop {
            let message = tokio::select! {
                _ = &mut stopped => break,
                message = consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    if !self.hand_over(&message, &mut stopped).await {
                        break;
                    }
                    // Committed later, in the background, with the others.
                    if let Err(error) = consumer.store_offset_from_message(&message) {
                        tracing::warn!(%error, partition = message.partition(), "storing a delivery offset failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "delivery consumer error");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        // Committing and closing block (the group is told we leave).
        let closed = tokio::task::spawn_blocking(move || {
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(%error, "no final delivery offset commit");
            }
            drop(consumer);
        });
        if let Err(error) = closed.await {
            tracing::error!(%error, "closing the delivery consumer failed");
        }
    }

    /// Hands a record to its shard actor, or writes it to the dead-letter
    /// topic. `false` if stopped before the record was dealt with.
    async fn hand_over(&self, message: &BorrowedMessage<'_>, stopped: &mut oneshot::Receiver<()>) -> bool {
        let partition = message.partition();
        let decoded = envelope::decode(message.payload().unwrap_or_default()).map_err(|e| e.to_string());
        let routed = decoded.and_then(|delivery| {
            if i64::from(delivery.shard.0) != i64::from(partition) {
                return Err(format!("record for shard {} on partition {partition}", delivery.shard.0));
            }
            let shard = usize::try_from(partition).ok().and_then(|p| self.shards.get(p));
            shard.map(|actor| (actor, delivery)).ok_or_else(|| format!("no shard actor for partition {partition}"))
        });
        match routed {
            Ok((actor, delivery)) => {
                // The mailbox keeps the partition's order.
                actor.do_send(delivery);
                self.counters.handed_over.inc();
                true
            }
            Err(reason) => {
                let offset = message.offset();
                tracing::warn!(partition, offset, %reason, "undeliverable record: writing it to the dead-letter topic");
                self.dead_letter(message, &reason, stopped).await
            }
        }
    }

    /// Writes a record to the dead-letter topic, retrying until the brokers
    /// acknowledge it. `false` if stopped first.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        stopped: &mut oneshot::Receiver<()>,
    ) -> bool {
        let origin = format!("{}/{}@{}", message.topic(), message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let key = message.key().unwrap_or_default();
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "parley-error", value: Some(reason) })
                .insert(Header { key: "parley-origin", value: Some(origin.as_str()) });
            let record = FutureRecord::to(&self.dead_letter_topic).key(key).payload(payload).headers(headers);
            match self.dead_letters.send(record, QUEUE_FULL_WAIT).await {
                Ok(_) => {
                    self.counters.dead_lettered.inc();
                    return true;
                }
                Err((error, _)) => tracing::error!(%error, %origin, "dead-letter write failed; retrying"),
            }
            tokio::select! {
                _ = &mut *stopped => return false,
                () = tokio::time::sleep(DEAD_LETTER_RETRY) => {}
            }
        }
    }
}
