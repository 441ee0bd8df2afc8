//! Kafka bus settings benchmark: for each candidate producer and consumer
//! setting, publishes realistic deliveries through [`KafkaBus`] into
//! librdkafka's in-process mock cluster and consumes them with
//! [`DeliveryConsumer`]; prints ack and end-to-end latency, CPU per record
//! and the saturated throughput. `cargo bench -p engine --bench kafka_bus`;
//! the results and what they mean are in `docs/kafka.md`.
#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::error::Error;
use std::fs;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use engine::kafka::{DeliveryConsumer, KafkaBus, KafkaConfig, envelope};
use engine::{Bus, Delivery, Metrics, Payload, ShardId};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Mock brokers, partitions (= shards) and replicas of the delivery topic.
const BROKERS: i32 = 3;
const PARTITIONS: u32 = 64;
const REPLICAS: i32 = 3;
/// Publishing tasks of the paced phase, each with one publish in flight
/// (a busy node's chat actors).
const PACED_PUBLISHERS: u64 = 64;
/// Offered deliveries per second in the paced phase: a node at its knee
/// (~2,000 1:1 messages/s, up to two shards each; docs/benchmarks.md).
const OFFERED_RATE: u64 = 4_000;
/// How long the paced phase publishes (latency and CPU per record).
const PACED: Duration = Duration::from_secs(3);
/// Publishing tasks of the saturated phase, each publishing as fast as its
/// acks come: enough in flight that batching, not round trips, limits.
const SATURATED_PUBLISHERS: u64 = 512;
/// How long the saturated phase publishes.
const SATURATED: Duration = Duration::from_secs(2);
/// Every candidate runs once per round; the tables show the median.
const ROUNDS: usize = 3;
/// Longest wait for the consumer group to own every partition.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);
/// Longest wait for the consumer to catch up after a phase.
const DRAIN_PATIENCE: Duration = Duration::from_secs(10);
/// Longest wait for the consumer to stop.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// Distinct deliveries, published round-robin (each with a fresh send time).
const POOL: usize = 1_024;
/// `fetch_wait_max_ms` of the producer sweeps: the mock broker holds an
/// empty fetch for the whole wait, which would hide every producer effect.
const MOCK_FETCH_WAIT_MS: u32 = 5;
/// Histogram range, microseconds: 1 µs to 60 s, 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// The columns of a result row.
const COLUMNS: [&str; 12] = [
    "sent/s",
    "ack p50",
    "ack p99",
    "ack p99.9",
    "e2e p50",
    "e2e p99",
    "e2e p99.9",
    "client CPU µs/rec",
    "broker CPU µs/rec",
    "saturated rec/s",
    "saturated MB/s",
    "saturated client CPU µs/rec",
];

fn main() -> BenchResult<()> {
    actix_rt::System::new().block_on(run())
}

async fn run() -> BenchResult<()> {
    let pool = deliveries()?;
    let mean_bytes = pool.iter().map(|(_, bytes)| *bytes).sum::<usize>() as f64 / POOL as f64;
    print_setup(mean_bytes);
    let sweeps = sweeps();
    let mut configs: Vec<KafkaConfig> = Vec::new();
    for (_, candidates) in &sweeps {
        for (_, config) in candidates {
            if !configs.contains(config) {
                configs.push(config.clone());
            }
        }
    }
    // Rounds interleave the candidates, so the machine's drift hits all alike.
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); configs.len()];
    for round in 1..=ROUNDS {
        for (config, measured) in configs.iter().zip(&mut rows) {
            let started = Instant::now();
            measured.push(measure(config, &pool).await?);
            let (linger, compression, batch, fetch) =
                (config.linger_ms, &config.compression, config.batch_size_bytes, config.fetch_wait_max_ms);
            let took = started.elapsed();
            eprintln!(
                "round {round}/{ROUNDS}: linger {linger}, {compression}, batch {batch}, fetch wait {fetch}: {took:.1?}"
            );
        }
    }
    for (dimension, candidates) in &sweeps {
        print_header(dimension);
        for (label, config) in candidates {
            let index = configs.iter().position(|c| c == config).unwrap_or_default();
            println!("| {label} | {} |", Row::median(&rows[index]));
        }
    }
    print_header("the defaults in each round (the machine's noise)");
    for (round, row) in rows[0].iter().enumerate() {
        println!("| round {} | {row} |", round + 1);
    }
    Ok(())
}

/// The sweeps: one dimension at a time, from the defaults (the first
/// candidate of the first sweep).
fn sweeps() -> Vec<(&'static str, Vec<(String, KafkaConfig)>)> {
    let base = KafkaConfig { fetch_wait_max_ms: MOCK_FETCH_WAIT_MS, ..KafkaConfig::default() };
    let vary = |label: String, config: KafkaConfig| {
        let label = if config == base { format!("{label} (default)") } else { label };
        (label, config)
    };
    let lingers =
        [2, 0, 1, 5, 10].map(|ms| vary(format!("linger {ms} ms"), KafkaConfig { linger_ms: ms, ..base.clone() }));
    let compressions = ["lz4", "none", "snappy", "gzip"]
        .map(|c| vary(c.into(), KafkaConfig { compression: c.into(), ..base.clone() }));
    let batches = [1_000_000, 16_384]
        .map(|bytes| vary(format!("{bytes} B"), KafkaConfig { batch_size_bytes: bytes, ..base.clone() }));
    // Here "(default)" is the setting's own default, not the sweeps' base.
    let fetches = [MOCK_FETCH_WAIT_MS, 100, KafkaConfig::default().fetch_wait_max_ms].map(|ms| {
        let config = KafkaConfig { fetch_wait_max_ms: ms, ..base.clone() };
        let label = match ms {
            MOCK_FETCH_WAIT_MS => format!("fetch wait {ms} ms (the other sweeps)"),
            _ if config == KafkaConfig::default() => format!("fetch wait {ms} ms (default)"),
            _ => format!("fetch wait {ms} ms"),
        };
        (label, config)
    });
    vec![
        ("linger.ms", lingers.into()),
        ("compression.type", compressions.into()),
        ("batch.size", batches.into()),
        ("fetch.wait.max.ms", fetches.into()),
    ]
}

// ------------------------------------------------------------- one point

/// What one candidate measured, in the order of [`COLUMNS`]; latencies in
/// milliseconds.
#[derive(Clone)]
struct Row([f64; COLUMNS.len()]);

impl Row {
    /// Each column's median over `rows`.
    fn median(rows: &[Row]) -> Row {
        Row(std::array::from_fn(|column| {
            let mut values: Vec<f64> = rows.iter().map(|row| row.0[column]).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
        }))
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cells: Vec<String> = self
            .0
            .iter()
            .map(|value| if *value >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") })
            .collect();
        write!(f, "{}", cells.join(" | "))
    }
}

/// A fresh mock cluster and consumer group for `config`, a paced phase and
/// a saturated phase.
async fn measure(config: &KafkaConfig, pool: &Rc<Vec<(Delivery, usize)>>) -> BenchResult<Row> {
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(BROKERS)?;
    let config = KafkaConfig { brokers: vec![mock.bootstrap_servers()], ..config.clone() };
    mock.create_topic(&config.delivery_topic, PARTITIONS as i32, REPLICAS)?;
    mock.create_topic(&config.dead_letter_topic(), 1, REPLICAS)?;
    let bus = Rc::new(KafkaBus::new(&config)?);
    let arrivals = Rc::new(RefCell::new(Arrivals::new()?));
    let sink = Sink { arrivals: Rc::clone(&arrivals) }.start().recipient();
    let (consumer, _changes) =
        DeliveryConsumer::start(&config, vec![sink; PARTITIONS as usize], Metrics::new()?.consumer_counters())?;
    let ownership = consumer.ownership();
    wait_for("the consumer to own every partition", JOIN_PATIENCE, || ownership.owned().len() == PARTITIONS as usize)
        .await?;
    // Warm-up: metadata, connections and fetch sessions of every partition.
    for shard in 0..PARTITIONS {
        let (delivery, _) = &pool[shard as usize];
        bus.publish(Delivery { shard: ShardId(shard), ..delivery.clone() }).await?;
    }
    wait_for("the warm-up records", DRAIN_PATIENCE, || arrivals.borrow().count >= u64::from(PARTITIONS)).await?;
    *arrivals.borrow_mut() = Arrivals::new()?;

    let epoch = arrivals.borrow().epoch;
    let cpu_before = Cpu::now()?;
    let paced = publish(&bus, pool, epoch, PACED_PUBLISHERS, Some(OFFERED_RATE), PACED).await?;
    let sent_per_s = paced.records as f64 / epoch.elapsed().as_secs_f64();
    wait_for("the paced records", DRAIN_PATIENCE, || arrivals.borrow().count >= paced.records).await?;
    let cpu = Cpu::now()?.since(&cpu_before);
    let e2e = arrivals.borrow().e2e.clone();

    let started = Instant::now();
    let cpu_before = Cpu::now()?;
    let saturated = publish(&bus, pool, epoch, SATURATED_PUBLISHERS, None, SATURATED).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let expected = paced.records + saturated.records;
    wait_for("the saturated records", DRAIN_PATIENCE, || arrivals.borrow().count >= expected).await?;
    let saturated_cpu = Cpu::now()?.since(&cpu_before);

    tokio::time::timeout(STOP_PATIENCE, consumer.stop()).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let per_record = |ns: u64, records: u64| ns as f64 / 1_000.0 / records.max(1) as f64;
    Ok(Row([
        sent_per_s,
        ms(&paced.ack, 0.5),
        ms(&paced.ack, 0.99),
        ms(&paced.ack, 0.999),
        ms(&e2e, 0.5),
        ms(&e2e, 0.99),
        ms(&e2e, 0.999),
        per_record(cpu.client_ns, paced.records),
        per_record(cpu.broker_ns, paced.records),
        saturated.records as f64 / elapsed,
        saturated.bytes as f64 / elapsed / 1e6,
        per_record(saturated_cpu.client_ns, saturated.records),
    ]))
}

/// What the publishing tasks of one phase did.
struct Published {
    records: u64,
    bytes: u64,
    ack: Histogram<u64>,
}

/// `publishers` tasks publish for `duration`: at `rate` records/s in all
/// (task `i` takes slots `i`, `i + publishers`, …), or each as fast as its
/// acks come. Each delivery's first recipient `seq` carries its publish
/// time (µs since `epoch`), for the end-to-end latency.
async fn publish(
    bus: &Rc<KafkaBus>,
    pool: &Rc<Vec<(Delivery, usize)>>,
    epoch: Instant,
    publishers: u64,
    rate: Option<u64>,
    duration: Duration,
) -> BenchResult<Published> {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..publishers)
        .map(|task| {
            let (bus, pool) = (Rc::clone(bus), Rc::clone(pool));
            actix_rt::spawn(async move {
                let mut out = Published { records: 0, bytes: 0, ack: histogram()? };
                for slot in (task..).step_by(publishers as usize) {
                    if let Some(rate) = rate {
                        let due = start + Duration::from_secs_f64(slot as f64 / rate as f64);
                        if due >= end {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                    } else if Instant::now() >= end {
                        break;
                    }
                    let (delivery, bytes) = &pool[slot as usize % POOL];
                    let mut delivery = delivery.clone();
                    let sent = Instant::now();
                    delivery.recipients[0].1 = micros(sent - epoch);
                    bus.publish(delivery).await?;
                    out.ack.saturating_record(micros(sent.elapsed()));
                    out.records += 1;
                    out.bytes += *bytes as u64;
                }
                Ok::<_, Box<dyn Error>>(out)
            })
        })
        .collect();
    let mut all = Published { records: 0, bytes: 0, ack: histogram()? };
    for task in tasks {
        let done = task.await??;
        all.records += done.records;
        all.bytes += done.bytes;
        all.ack.add(&done.ack)?;
    }
    Ok(all)
}

/// The end-to-end latencies seen by the stand-in shard actor.
struct Arrivals {
    epoch: Instant,
    count: u64,
    e2e: Histogram<u64>,
}

impl Arrivals {
    fn new() -> BenchResult<Self> {
        Ok(Arrivals { epoch: Instant::now(), count: 0, e2e: histogram()? })
    }
}

/// A stand-in for every shard actor: records when each delivery arrived.
struct Sink {
    arrivals: Rc<RefCell<Arrivals>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Delivery> for Sink {
    type Result = ();
    fn handle(&mut self, delivery: Delivery, _ctx: &mut Context<Self>) {
        let mut arrivals = self.arrivals.borrow_mut();
        let now = micros(arrivals.epoch.elapsed());
        let sent = delivery.recipients.first().map_or(now, |recipient| recipient.1);
        arrivals.e2e.saturating_record(now.saturating_sub(sent));
        arrivals.count += 1;
    }
}

// ------------------------------------------------------------- inputs

/// [`POOL`] deliveries like a busy node's, each with its encoded size: an
/// update of a message (~300 bytes of JSON) for 1–50 recipients (mostly
/// 1:1 chats), to a random shard.
fn deliveries() -> BenchResult<Rc<Vec<(Delivery, usize)>>> {
    const WORDS: [&str; 16] = [
        "the", "meeting", "moved", "to", "tomorrow", "morning", "see", "you", "there", "thanks", "for", "sending",
        "notes", "ok", "great", "lunch",
    ];
    // Seeded: the same deliveries in every run.
    let mut random = StdRng::seed_from_u64(7);
    let mut pool = Vec::with_capacity(POOL);
    for n in 0..POOL as u64 {
        let words = 4 + random.gen_range(0..20);
        let body: Vec<&str> = (0..words).map(|_| WORDS[random.gen_range(0..WORDS.len())]).collect();
        let id = 7_263_549_012_345_675_777 + n * 4_096;
        let chat: u64 = 7_263_548_651_380_510_721 + random.gen_range(0..10_000) * 4_096;
        let sender: u64 = 7_263_548_392_017_920_001 + random.gen_range(0..100_000) * 4_096;
        let update = format!(
            r#"{{"kind":"message","message":{{"id":"{id}","chat_id":"{chat}","sender_id":"{sender}","client_msg_id":"{:016x}-{:016x}","body":"{}","sent_at":{}}}}}"#,
            random.r#gen::<u64>(),
            random.r#gen::<u64>(),
            body.join(" "),
            1_767_261_600_123 + n * 7,
        );
        let recipients = match random.gen_range(0..10) {
            0..=5 => 2,
            6..=8 => 3 + random.gen_range(0..18),
            _ => 21 + random.gen_range(0..30),
        };
        let recipients =
            (0..recipients).map(|r| (sender as i64 + r as i64 * 4_096, 1 + random.gen_range(0..50_000))).collect();
        let shard = ShardId(random.gen_range(0..PARTITIONS));
        let delivery = Delivery { shard, recipients, payload: Payload::Update(Arc::from(update)) };
        let bytes = envelope::encode(&delivery)?.len();
        pool.push((delivery, bytes));
    }
    Ok(Rc::new(pool))
}

// ------------------------------------------------------------- measuring

/// On-CPU time of this process's threads, from `/proc/self/task/*/schedstat`
/// (nanoseconds): the mock brokers' thread (`rdk:mock`) apart from all the
/// others (the bus's producer and consumer, librdkafka's client threads,
/// the publishing tasks and the shard actor).
struct Cpu {
    client_ns: u64,
    broker_ns: u64,
}

impl Cpu {
    fn now() -> BenchResult<Cpu> {
        let mut cpu = Cpu { client_ns: 0, broker_ns: 0 };
        for task in fs::read_dir("/proc/self/task")? {
            let path = task?.path();
            // A thread that ended since the listing has nothing to add.
            let (Ok(name), Ok(stat)) =
                (fs::read_to_string(path.join("comm")), fs::read_to_string(path.join("schedstat")))
            else {
                continue;
            };
            let ns: u64 = stat.split_whitespace().next().unwrap_or("0").parse()?;
            if name.trim() == "rdk:mock" { cpu.broker_ns += ns } else { cpu.client_ns += ns }
        }
        Ok(cpu)
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            client_ns: self.client_ns.saturating_sub(before.client_ns),
            broker_ns: self.broker_ns.saturating_sub(before.broker_ns),
        }
    }
}

fn histogram() -> BenchResult<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)?)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Polls `done` every millisecond; an error after `patience`.
async fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) -> BenchResult<()> {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("gave up waiting {patience:?} for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn print_setup(mean_bytes: f64) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Kafka bus benchmark (librdkafka mock cluster, loopback)\n");
    println!(
        "{BROKERS} mock brokers, {PARTITIONS} partitions × {REPLICAS} replicas; {cpus} CPUs; mean record value \
         {mean_bytes:.0} bytes. Paced: {PACED_PUBLISHERS} publishers offer {OFFERED_RATE}/s for {PACED:?}. \
         Saturated: {SATURATED_PUBLISHERS} publishers, each as fast as its acks come, for {SATURATED:?}. \
         Median of {ROUNDS} rounds; latencies in ms. The producer sweeps consume with fetch.wait.max.ms \
         {MOCK_FETCH_WAIT_MS}."
    );
}

fn print_header(title: &str) {
    println!("\n### {title}\n");
    println!("| setting | {} |", COLUMNS.join(" | "));
    println!("|---|{}", "---|".repeat(COLUMNS.len()));
}
