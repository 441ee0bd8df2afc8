//! The Kafka bus against [`TestBroker`]: librdkafka's mock cluster, or
//! tansu when `PARLEY_TEST_TANSU` names its binary
//! (`PARLEY_TEST_TANSU=/var/cache/parley-ci/tansu/bin/tansu cargo nextest run
//! -p engine --test kafka_broker`). Each test has its own broker, so tests
//! share no topics or groups. What only the mock can do (a broker going down)
//! is in `kafka.rs`, and here only where the broker allows it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use engine::kafka::testing::{MOCK_BROKERS, TestBroker};
use engine::kafka::{DeliveryConsumer, KafkaBus, KafkaConfig, OwnershipChange};
use engine::{Bus, BusError, Delivery, Payload, ShardId, ShardMap};
use tokio::sync::mpsc;

/// Partitions of the delivery topic = shards of the node.
const SHARDS: u32 = 8;
/// Longest wait for anything; a test that waits longer fails.
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------- harness

/// A broker with the delivery and dead-letter topics.
struct Cluster {
    broker: TestBroker,
    config: KafkaConfig,
}

impl Cluster {
    async fn start() -> Cluster {
        let broker = TestBroker::start();
        let config = broker.config();
        broker.create_topic(&config.delivery_topic, SHARDS as i32).await;
        broker.create_topic(&config.dead_letter_topic(), 1).await;
        Cluster { broker, config }
    }

    fn bus(&self) -> KafkaBus {
        KafkaBus::new(&self.config).unwrap()
    }

    /// A node's consumer whose shard actors report to `Node::received`.
    fn node(&self) -> Node {
        let (tx, received) = mpsc::unbounded_channel();
        let shards = (0..SHARDS as usize).map(|index| Sink { index, tx: tx.clone() }.start().recipient()).collect();
        let (consumer, changes) = DeliveryConsumer::start(&self.config, shards).unwrap();
        Node { consumer, changes, received }
    }

    /// Polls `check` until it holds; fails after [`PATIENCE`] (tansu's log
    /// is printed as the failing test drops the broker).
    async fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check() {
            assert!(Instant::now() < deadline, "{}: not within {PATIENCE:?}: {what}", self.broker.name());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A stand-in shard actor: forwards what it is handed, with its index.
struct Sink {
    index: usize,
    tx: mpsc::UnboundedSender<(usize, Delivery)>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Sink {
    type Result = ();
    fn handle(&mut self, delivery: Delivery, _ctx: &mut Context<Self>) {
        let _ = self.tx.send((self.index, delivery));
    }
}

struct Node {
    consumer: DeliveryConsumer,
    changes: mpsc::UnboundedReceiver<OwnershipChange>,
    received: mpsc::UnboundedReceiver<(usize, Delivery)>,
}

impl Node {
    /// The next `count` deliveries as `(shard, n)`, checking that each
    /// reached the actor of its own shard.
    async fn receive(&mut self, count: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while out.len() < count {
            let next = tokio::time::timeout(PATIENCE, self.received.recv()).await;
            let Ok(Some((index, delivery))) = next else {
                panic!("received {} of {count} deliveries within {PATIENCE:?}: {out:?}", out.len());
            };
            assert_eq!(index, delivery.shard.0 as usize, "handed to the wrong shard actor");
            out.push((delivery.shard.0, delivery.recipients[0].1));
        }
        out
    }

    /// Fails if a delivery arrives within `quiet`.
    async fn receive_nothing(&mut self, quiet: Duration) {
        if let Ok(Some((_, delivery))) = tokio::time::timeout(quiet, self.received.recv()).await {
            panic!("unexpected delivery {:?}", (delivery.shard, &delivery.recipients));
        }
    }

    /// Stops the consumer; fails if that takes longer than [`PATIENCE`].
    async fn stop(self) -> mpsc::UnboundedReceiver<OwnershipChange> {
        tokio::time::timeout(PATIENCE, self.consumer.stop()).await.expect("the consumer stops");
        self.changes
    }
}

/// Delivery number `n` for shard `shard` (its recipient's `seq` is `n`).
fn delivery(shard: u32, n: u64) -> Delivery {
    Delivery {
        shard: ShardId(shard),
        recipients: vec![(i64::from(shard) * 1_000, n)],
        payload: Payload::Update(Arc::from(format!(r#"{{"shard":{shard},"n":{n}}}"#))),
    }
}

/// Publishes delivery `n` to every shard.
async fn publish_round(bus: &KafkaBus, n: u64) {
    for shard in 0..SHARDS {
        bus.publish(delivery(shard, n)).await.unwrap();
    }
}

/// Applies the ownership changes reported so far to `owned`.
fn apply_changes(changes: &mut mpsc::UnboundedReceiver<OwnershipChange>, owned: &mut BTreeSet<ShardId>) {
    while let Ok(change) = changes.try_recv() {
        match change {
            OwnershipChange::Assigned(shards) => owned.extend(shards),
            OwnershipChange::Revoked(shards) => shards.iter().for_each(|s| assert!(owned.remove(s), "{s:?}")),
        }
    }
}

fn all_shards() -> Vec<ShardId> {
    (0..SHARDS).map(ShardId).collect()
}

fn sorted(mut received: Vec<(u32, u64)>) -> Vec<(u32, u64)> {
    received.sort_unstable();
    received
}

/// `(shard, n)` for each shard.
fn numbered(shards: &[ShardId], n: u64) -> Vec<(u32, u64)> {
    shards.iter().map(|shard| (shard.0, n)).collect()
}

// ------------------------------------------------------------- tests

#[actix_rt::test]
async fn published_deliveries_are_consumed_in_order_per_shard() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus();
    bus.check_topic(ShardMap::new(SHARDS).unwrap()).await.unwrap();
    let mut node = cluster.node();
    let shards = [0, 3, 5, 7];
    for n in 1..=25 {
        for shard in shards {
            bus.publish(delivery(shard, n)).await.unwrap();
        }
    }
    let mut per_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (shard, n) in node.receive(100).await {
        per_shard.entry(shard).or_default().push(n);
    }
    assert_eq!(per_shard.keys().copied().collect::<Vec<_>>(), shards);
    let expected: Vec<u64> = (1..=25).collect();
    for (shard, numbers) in per_shard {
        assert_eq!(numbers, expected, "{}: order of shard {shard}", cluster.broker.name());
    }
    assert_eq!(node.consumer.handed_over(), 100);
    assert_eq!(node.consumer.dead_lettered(), 0);
    assert_eq!(node.consumer.ownership().owned(), all_shards());
    node.stop().await;
}

#[actix_rt::test]
async fn two_nodes_split_the_shards_and_one_takes_over_when_the_other_stops() {
    let mut cluster = Cluster::start().await;
    // No periodic commit within the test: only the commits of a rebalance
    // and of a stop can keep records from being delivered twice.
    cluster.config.commit_interval_ms = 60_000;
    let bus = cluster.bus();
    let all = all_shards();
    let mut a = cluster.node();
    let owner_a = a.consumer.ownership();
    cluster.eventually("a alone owns every shard", || owner_a.owned() == all).await;
    publish_round(&bus, 1).await;
    assert_eq!(sorted(a.receive(all.len()).await), numbered(&all, 1));

    let mut b = cluster.node();
    let owner_b = b.consumer.ownership();
    let split = || {
        let (mine, theirs) = (owner_a.owned(), owner_b.owned());
        let union: Vec<ShardId> = mine.iter().chain(&theirs).copied().collect::<BTreeSet<_>>().into_iter().collect();
        !mine.is_empty() && !theirs.is_empty() && union == all && mine.len() + theirs.len() == all.len()
    };
    cluster.eventually("the two nodes split the shards, disjoint and covering all", split).await;
    let (shards_a, shards_b) = (owner_a.owned(), owner_b.owned());
    let (mut changed_a, mut changed_b) = (BTreeSet::new(), BTreeSet::new());
    apply_changes(&mut a.changes, &mut changed_a);
    apply_changes(&mut b.changes, &mut changed_b);
    assert_eq!(changed_a.into_iter().collect::<Vec<_>>(), shards_a, "a's reported changes");
    assert_eq!(changed_b.into_iter().collect::<Vec<_>>(), shards_b, "b's reported changes");

    // b starts where a left off on the shards it took: nothing twice.
    publish_round(&bus, 2).await;
    assert_eq!(sorted(a.receive(shards_a.len()).await), numbered(&shards_a, 2));
    assert_eq!(sorted(b.receive(shards_b.len()).await), numbered(&shards_b, 2));

    let mut changes_a = a.stop().await;
    let mut left = shards_a.iter().copied().collect();
    apply_changes(&mut changes_a, &mut left);
    assert!(left.is_empty(), "a still owns {left:?} after stopping");
    cluster.eventually("b owns every shard", || owner_b.owned() == all).await;
    publish_round(&bus, 3).await;
    assert_eq!(sorted(b.receive(all.len()).await), numbered(&all, 3));
    b.stop().await;
}

#[actix_rt::test]
async fn a_restarted_node_resumes_after_the_committed_offsets() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus();
    let all = all_shards();
    let mut first = cluster.node();
    publish_round(&bus, 1).await;
    assert_eq!(sorted(first.receive(all.len()).await), numbered(&all, 1));
    first.stop().await;

    publish_round(&bus, 2).await;
    let mut second = cluster.node();
    assert_eq!(sorted(second.receive(all.len()).await), numbered(&all, 2), "{}", cluster.broker.name());
    second.receive_nothing(Duration::from_secs(1)).await;
    second.stop().await;
}

#[actix_rt::test]
async fn publish_fails_retryably_while_the_brokers_are_down_and_works_once_they_are_back() {
    let mut cluster = Cluster::start().await;
    cluster.config.delivery_timeout_ms = 1_000;
    let bus = cluster.bus();
    // Warm-up: the first record also waits for metadata and connections,
    // which on a busy machine can take longer than this short timeout.
    let deadline = Instant::now() + PATIENCE;
    while let Err(error) = bus.publish(delivery(1, 1)).await {
        assert!(Instant::now() < deadline, "the broker never acknowledged the first record: {error}");
    }
    let brokers = 1..=MOCK_BROKERS;
    if let Err(error) = cluster.broker.broker_down(1) {
        assert_eq!(cluster.broker.name(), "tansu", "only tansu cannot take a broker down: {error}");
        return;
    }
    brokers.clone().skip(1).for_each(|id| cluster.broker.broker_down(id).unwrap());
    let published = bus.publish(delivery(1, 2)).await;
    assert!(matches!(published, Err(BusError::Unavailable(_))), "{published:?}");

    brokers.for_each(|id| cluster.broker.broker_up(id).unwrap());
    let deadline = Instant::now() + PATIENCE;
    while let Err(error) = bus.publish(delivery(1, 3)).await {
        assert!(Instant::now() < deadline, "no broker acknowledged a record after coming back: {error}");
    }
}
