//! The Kafka bus against a real Kafka-protocol broker: librdkafka's mock
//! cluster, serving on a loopback port inside the test process, or tansu
//! when `PARLEY_TEST_TANSU` names its binary (`.ci/run` does both; a test
//! that takes brokers down always runs on the mock). Each test has its own
//! broker, so tests share no topics or groups.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use engine::kafka::testing::{MOCK_BROKERS, TestBroker};
use engine::kafka::{DeliveryConsumer, KafkaBus, KafkaConfig, OwnershipChange, envelope};
use engine::{Bus, BusError, Delivery, Metrics, Payload, ShardId, ShardMap, ShardOwnership};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

/// Partitions of the delivery topic = shards of the node.
const SHARDS: u32 = 8;
/// Longest wait for anything; a test that waits longer fails.
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------- harness

/// A broker with the delivery and dead-letter topics: tansu when
/// `PARLEY_TEST_TANSU` names it, else librdkafka's mock cluster.
struct Cluster {
    broker: TestBroker,
    config: KafkaConfig,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::on(TestBroker::start()).await
    }

    async fn on(broker: TestBroker) -> Cluster {
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
        let (consumer, changes) =
            DeliveryConsumer::start(&self.config, shards, Metrics::new().unwrap().consumer_counters()).unwrap();
        Node { consumer, changes, received }
    }

    /// The group's committed offset of each delivery partition (-1 for
    /// none), read by a client outside the group.
    fn committed(&self) -> Vec<i64> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.broker.bootstrap_servers()).set("group.id", &self.config.group_id);
        let reader: BaseConsumer = config.create().unwrap();
        let mut partitions = TopicPartitionList::new();
        for shard in 0..SHARDS as i32 {
            partitions.add_partition(&self.config.delivery_topic, shard);
        }
        let Ok(committed) = reader.committed_offsets(partitions, Duration::from_secs(5)) else { return Vec::new() };
        committed.elements().iter().map(|p| p.offset().to_raw().unwrap_or(-1)).collect()
    }

    /// A plain producer, for records the bus would never write.
    fn raw_producer(&self) -> FutureProducer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.broker.bootstrap_servers());
        config.set("message.timeout.ms", PATIENCE.as_millis().to_string()).create().unwrap()
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
            out.push(number(&delivery));
        }
        out
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

/// `(shard, n)` of a delivery made by [`delivery`].
fn number(delivery: &Delivery) -> (u32, u64) {
    (delivery.shard.0, delivery.recipients[0].1)
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

/// Stops a consumer; fails if that takes longer than [`PATIENCE`].
async fn stop(consumer: DeliveryConsumer) {
    tokio::time::timeout(PATIENCE, consumer.stop()).await.expect("the consumer stops");
}

/// Polls `check` until it holds; fails after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_shards() -> BTreeSet<ShardId> {
    (0..SHARDS).map(ShardId).collect()
}

// ------------------------------------------------------------- tests

#[actix_rt::test]
async fn every_record_arrives_in_publish_order_per_shard() {
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
    let received = node.receive(100).await;
    let mut per_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (shard, n) in received {
        per_shard.entry(shard).or_default().push(n);
    }
    let expected: Vec<u64> = (1..=25).collect();
    assert_eq!(per_shard.keys().copied().collect::<Vec<_>>(), shards);
    for (shard, numbers) in per_shard {
        assert_eq!(numbers, expected, "order of shard {shard}");
    }
    assert_eq!(node.consumer.handed_over(), 100);
    assert_eq!(node.consumer.dead_lettered(), 0);
    let ownership = node.consumer.ownership();
    assert!(all_shards().into_iter().all(|shard| ownership.owns(shard)));
    stop(node.consumer).await;
}

#[actix_rt::test]
async fn the_bus_refuses_a_topic_that_does_not_match_the_shards_and_a_shard_without_partition() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus();
    let more_shards = bus.check_topic(ShardMap::new(SHARDS * 2).unwrap()).await;
    assert!(matches!(more_shards, Err(BusError::Config(_))), "{more_shards:?}");
    let missing = KafkaBus::new(&KafkaConfig { delivery_topic: "nope".into(), ..cluster.config.clone() }).unwrap();
    let checked = missing.check_topic(ShardMap::new(SHARDS).unwrap()).await;
    assert!(matches!(checked, Err(BusError::Config(_))), "{checked:?}");
    let published = bus.publish(delivery(SHARDS, 1)).await;
    assert!(matches!(published, Err(BusError::NoRoute(ShardId(SHARDS)))), "{published:?}");
}

#[actix_rt::test]
async fn publish_fails_retryably_while_the_brokers_are_down_and_works_once_they_are_back() {
    // Only the mock cluster has brokers to take down.
    let mut cluster = Cluster::on(TestBroker::mock()).await;
    cluster.config.delivery_timeout_ms = 1_000;
    let bus = cluster.bus();
    // Warm-up: the first record also waits for metadata and connections,
    // which on a busy machine can take longer than this short timeout.
    let deadline = Instant::now() + PATIENCE;
    while let Err(error) = bus.publish(delivery(1, 1)).await {
        assert!(Instant::now() < deadline, "the broker never acknowledged the first record: {error}");
    }
    let brokers = 1..=MOCK_BROKERS;
    brokers.clone().for_each(|id| cluster.broker.broker_down(id).unwrap());
    let started = Instant::now();
    let published = bus.publish(delivery(1, 2)).await;
    assert!(matches!(published, Err(BusError::Unavailable(_))), "{published:?}");
    assert!(started.elapsed() < PATIENCE, "publish took {:?}", started.elapsed());

    brokers.for_each(|id| cluster.broker.broker_up(id).unwrap());
    let deadline = Instant::now() + PATIENCE;
    while let Err(error) = bus.publish(delivery(1, 3)).await {
        assert!(Instant::now() < deadline, "no broker acknowledged a record after coming back: {error}");
    }
}

#[actix_rt::test]
async fn a_restarted_node_resumes_after_the_committed_offsets() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus();
    let all: Vec<ShardId> = all_shards().into_iter().collect();
    let mut first = cluster.node();
    publish_round(&bus, 1).await;
    assert_eq!(sorted(first.receive(all.len()).await), numbered(&all, 1));
    stop(first.consumer).await;

    publish_round(&bus, 2).await;
    let mut second = cluster.node();
    assert_eq!(sorted(second.receive(all.len()).await), numbered(&all, 2), "{}", cluster.broker.name());
    // Nothing of the first round comes again.
    let again = tokio::time::timeout(Duration::from_secs(1), second.received.recv()).await;
    assert!(again.is_err(), "a delivery came again: {:?}", again.ok().flatten().map(|(_, d)| number(&d)));
    stop(second.consumer).await;
}

#[actix_rt::test]
async fn an_undeliverable_record_goes_to_the_dead_letter_topic_and_the_next_one_arrives() {
    let cluster = Cluster::start().await;
    let bus = cluster.bus();
    let raw = cluster.raw_producer();
    let topic = cluster.config.delivery_topic.as_str();
    let garbage = b"\x07not an envelope".as_slice();
    let misrouted = envelope::encode(&delivery(3, 1)).unwrap();
    for value in [garbage, &misrouted] {
        let record = FutureRecord::to(topic).partition(2).key(&[0, 0, 0, 2][..]).payload(value);
        raw.send(record, PATIENCE).await.unwrap();
    }
    bus.publish(delivery(2, 1)).await.unwrap();

    let mut node = cluster.node();
    assert_eq!(node.receive(1).await, [(2, 1)]);
    eventually("both bad records dead-lettered", || node.consumer.dead_lettered() == 2).await;
    stop(node.consumer).await;

    let mut reader = ClientConfig::new();
    reader.set("bootstrap.servers", cluster.broker.bootstrap_servers()).set("group.id", "dead-letter-reader");
    let dead: BaseConsumer = reader.create().unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(&cluster.config.dead_letter_topic(), 0, Offset::Beginning).unwrap();
    dead.assign(&partitions).unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while letters.len() < 2 {
        assert!(Instant::now() < deadline, "dead letters within {PATIENCE:?}: {letters:?}");
        let Some(message) = dead.poll(Duration::from_millis(100)) else { continue };
        let message = message.unwrap();
        let header = |name: &str| {
            let headers = message.headers().unwrap();
            let value = headers.iter().find(|h| h.key == name).and_then(|h| h.value).unwrap();
            String::from_utf8(value.to_vec()).unwrap()
        };
        letters.push((message.payload().unwrap().to_vec(), header("parley-error"), header("parley-origin")));
    }
    assert_eq!(letters[0].0, garbage);
    assert!(letters[0].1.contains("unknown envelope version 7"), "{}", letters[0].1);
    assert_eq!(letters[0].2, format!("{topic}/2@0"));
    assert_eq!(letters[1].0, misrouted);
    assert!(letters[1].1.contains("shard 3 on partition 2"), "{}", letters[1].1);
    assert_eq!(letters[1].2, format!("{topic}/2@1"));
}

#[actix_rt::test]
async fn two_nodes_split_the_shards_and_one_takes_over_when_the_other_stops() {
    let mut cluster = Cluster::start().await;
    // No periodic commit within the test: only the commits of a rebalance
    // and of a stop can keep records from being delivered twice. Except on
    // the mock cluster, which may refuse the rebalance's commit (see
    // `refuses_commits_while_joining`): there round 1 is committed in the
    // background before b joins, and the stop's commit is the handover's.
    let commits_at_rebalance = !cluster.broker.refuses_commits_while_joining();
    cluster.config.commit_interval_ms = if commits_at_rebalance { 60_000 } else { 100 };
    let bus = cluster.bus();
    let all: Vec<ShardId> = all_shards().into_iter().collect();
    let mut a = cluster.node();
    let owner_a = a.consumer.ownership();
    eventually("a alone owns every shard", || owner_a.owned() == all).await;
    publish_round(&bus, 1).await;
    assert_eq!(sorted(a.receive(all.len()).await), numbered(&all, 1));
    if !commits_at_rebalance {
        eventually("round 1 is committed", || cluster.committed() == vec![1; all.len()]).await;
    }

    let mut b = cluster.node();
    let owner_b = b.consumer.ownership();
    let split = || {
        let (mine, theirs) = (owner_a.owned(), owner_b.owned());
        let union: BTreeSet<ShardId> = mine.iter().chain(&theirs).copied().collect();
        !mine.is_empty() && !theirs.is_empty() && union == all_shards() && mine.len() + theirs.len() == all.len()
    };
    eventually("the two nodes split the shards, disjoint and covering all", split).await;
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

    stop(a.consumer).await;
    let mut left = shards_a.iter().copied().collect();
    apply_changes(&mut a.changes, &mut left);
    assert!(left.is_empty(), "a still owns {left:?} after stopping");
    eventually("b owns every shard", || owner_b.owned() == all).await;
    publish_round(&bus, 3).await;
    assert_eq!(sorted(b.receive(all.len()).await), numbered(&all, 3));
    stop(b.consumer).await;
}

/// Publishes delivery `n` to every shard.
async fn publish_round(bus: &KafkaBus, n: u64) {
    for shard in 0..SHARDS {
        bus.publish(delivery(shard, n)).await.unwrap();
    }
}

fn sorted(mut received: Vec<(u32, u64)>) -> Vec<(u32, u64)> {
    received.sort_unstable();
    received
}

/// `(shard, n)` for each shard.
fn numbered(shards: &[ShardId], n: u64) -> Vec<(u32, u64)> {
    shards.iter().map(|shard| (shard.0, n)).collect()
}
