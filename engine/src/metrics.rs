//! Prometheus metrics of the engine and the process, in one registry the gateway serves.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric Parley exports. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// CPU, memory and file descriptors of this process.
    process: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Live actors by kind (`connection`, `user`, `chat`, `shard`).
    pub actors: IntGaugeVec,
    /// Messages made durable (duplicates not counted).
    pub messages_sent: IntCounter,
    /// Update frames queued to client connections.
    pub messages_delivered: IntCounter,
    /// Time from receiving a send to acknowledging it, in seconds.
    pub send_ack_seconds: Histogram,
    /// Messages written per transaction by a chat actor (group commit).
    pub append_batch: Histogram,
    /// Connections closed because their outbound queue was full.
    pub slow_consumer_closes: IntCounter,
    /// Invalid client frames by error code.
    pub protocol_errors: IntCounterVec,
    /// Records published on the bus.
    pub bus_records: IntCounter,
    /// Cluster mode: updates and presence bookkeeping whose publish failed,
    /// by what became of them (`queued` to be published again, then
    /// `published` or `dropped`).
    pub redeliveries: IntCounterVec,
    /// Requests refused by a rate limit, by limit name.
    pub rate_limited: IntCounterVec,
    /// Virtual shards this node owns (all of them on a single node).
    pub owned_shards: IntGauge,
    /// Cluster mode: bus records the delivery consumer handed to a shard actor.
    pub bus_handed_over: IntCounter,
    /// Cluster mode: bus records the delivery consumer could not hand over
    /// and wrote to the dead-letter topic.
    pub bus_dead_lettered: IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them, with the process collector
    /// (CPU, memory, open file descriptors) on Linux.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("parley".into()), None)?;
        let connections = IntGauge::new("connections", "Open WebSocket connections")?;
        let actors = IntGaugeVec::new(Opts::new("actors", "Live actors by kind"), &["kind"])?;
        let messages_sent = IntCounter::new("messages_sent_total", "Messages made durable")?;
        let messages_delivered =
            IntCounter::new("messages_delivered_total", "Update frames queued to client connections")?;
        let send_ack_seconds = Histogram::with_opts(
            HistogramOpts::new("send_ack_seconds", "Time from a send frame to its ack")
                .buckets(vec![0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let append_batch = Histogram::with_opts(
            HistogramOpts::new("append_batch_messages", "Messages written per transaction by a chat actor")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        let slow_consumer_closes =
            IntCounter::new("slow_consumer_closes_total", "Connections closed for a full outbound queue")?;
        let protocol_errors =
            IntCounterVec::new(Opts::new("protocol_errors_total", "Invalid client frames"), &["code"])?;
        let bus_records = IntCounter::new("bus_records_total", "Records published on the bus")?;
        let redeliveries = IntCounterVec::new(
            Opts::new(
                "bus_redeliveries_total",
                "Updates and presence bookkeeping whose publish failed: queued, then published or dropped",
            ),
            &["outcome"],
        )?;
        let rate_limited =
            IntCounterVec::new(Opts::new("rate_limited_total", "Requests refused by a rate limit"), &["limit"])?;
        let owned_shards = IntGauge::new("owned_shards", "Virtual shards this node owns")?;
        let bus_handed_over = IntCounter::new(
            "bus_records_handed_over_total",
            "Bus records the delivery consumer handed to shard actors",
        )?;
        let bus_dead_lettered =
            IntCounter::new("bus_records_dead_lettered_total", "Bus records written to the dead-letter topic")?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(actors.clone()))?;
        registry.register(Box::new(messages_sent.clone()))?;
        registry.register(Box::new(messages_delivered.clone()))?;
        registry.register(Box::new(send_ack_seconds.clone()))?;
        registry.register(Box::new(append_batch.clone()))?;
        registry.register(Box::new(slow_consumer_closes.clone()))?;
        registry.register(Box::new(protocol_errors.clone()))?;
        registry.register(Box::new(bus_records.clone()))?;
        registry.register(Box::new(redeliveries.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(owned_shards.clone()))?;
        registry.register(Box::new(bus_handed_over.clone()))?;
        registry.register(Box::new(bus_dead_lettered.clone()))?;
        // Process metrics keep their standard names (`process_*`), which
        // stock dashboards expect, so they live in an unprefixed registry.
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics {
            registry,
            process,
            connections,
            actors,
            messages_sent,
            messages_delivered,
            send_ack_seconds,
            append_batch,
            slow_consumer_closes,
            protocol_errors,
            bus_records,
            redeliveries,
            rate_limited,
            owned_shards,
            bus_handed_over,
            bus_dead_lettered,
        })
    }

    /// The counters a cluster node's delivery consumer updates.
    pub fn consumer_counters(&self) -> crate::kafka::ConsumerCounters {
        crate::kafka::ConsumerCounters {
            handed_over: self.bus_handed_over.clone(),
            dead_lettered: self.bus_dead_lettered.clone(),
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        encoder.encode_to_string(&families).unwrap_or_default()
    }
}
