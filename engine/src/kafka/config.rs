//! Where Kafka is and how the delivery topic is produced and consumed: the
//! `[kafka]` section of a cluster node's config.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::bus::BusError;

/// Compression codecs the bundled librdkafka has without extra features.
pub const COMPRESSIONS: [&str; 4] = ["none", "gzip", "snappy", "lz4"];
/// Longest `fetch_wait_max_ms`: librdkafka wants it at least 1 s below
/// `socket.timeout.ms` (60 s), or a held fetch delays the requests behind it.
pub const MAX_FETCH_WAIT_MS: u32 = 59_000;

/// Kafka settings. Every field but `brokers` has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each, e.g. `["kafka-1:9092"]`.
    pub brokers: Vec<String>,
    /// The delivery topic: one partition per virtual shard (partition `n`
    /// carries shard `n`), so it has exactly `engine.shard_count`
    /// partitions. Undecodable records go to `<delivery_topic>.dead`.
    pub delivery_topic: String,
    /// Consumer group of the nodes; its assignment of the delivery topic's
    /// partitions decides which node owns which shard.
    pub group_id: String,
    /// Producer `linger.ms`: how long a record may wait for others to the
    /// same partition to share a request. Small: it adds to every
    /// delivery's latency; 2 gave more throughput than 0 or 1 for ~2.5 ms
    /// (`docs/kafka.md`).
    pub linger_ms: u32,
    /// Producer `batch.size`: most bytes of one partition's batch.
    pub batch_size_bytes: u32,
    /// Producer `compression.type`, one of [`COMPRESSIONS`]. `lz4`: a full
    /// batch shrinks to about half, gzip costs up to twice the CPU; a batch
    /// of one record costs ~30 µs more than `none` and shrinks only 17 %
    /// (`docs/kafka.md`).
    pub compression: String,
    /// Producer `delivery.timeout.ms`: how long `publish` waits for the
    /// brokers to acknowledge a record (retries included) before it fails
    /// with `BusError::Unavailable`.
    pub delivery_timeout_ms: u32,
    /// Consumer `session.timeout.ms`: how long a node may be silent before
    /// the group gives its shards to the others.
    pub session_timeout_ms: u32,
    /// Consumer `heartbeat.interval.ms`; below a third of the session timeout.
    pub heartbeat_interval_ms: u32,
    /// Consumer `auto.commit.interval.ms`: how often the offsets of records
    /// already handed to shard actors are committed (in one request for
    /// all partitions). A crash redelivers at most this much.
    pub commit_interval_ms: u32,
    /// Consumer `fetch.wait.max.ms`: how long a broker may hold a fetch
    /// that found no new records. A real broker answers a held fetch as
    /// soon as a record arrives, so this bounds idle fetches, not latency;
    /// a broker that holds it the whole time (librdkafka's mock cluster)
    /// adds up to this much to every delivery. See `docs/kafka.md`.
    pub fetch_wait_max_ms: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            delivery_topic: "parley.delivery".into(),
            group_id: "parley-delivery".into(),
            linger_ms: 2,
            batch_size_bytes: 1_000_000,
            compression: "lz4".into(),
            delivery_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            commit_interval_ms: 500,
            fetch_wait_max_ms: 500,
        }
    }
}

impl KafkaConfig {
    /// The dead-letter topic: records the consumer could not hand over.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dead", self.delivery_topic)
    }

    /// Checks what librdkafka would only reject later, or not at all.
    pub fn validate(&self) -> Result<(), BusError> {
        let fail = |what: &str| Err(BusError::Config(what.into()));
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return fail("kafka.brokers must name at least one broker, none empty");
        }
        if self.delivery_topic.is_empty() || self.group_id.is_empty() {
            return fail("kafka.delivery_topic and kafka.group_id must not be empty");
        }
        if !COMPRESSIONS.contains(&self.compression.as_str()) {
            return fail("kafka.compression must be one of none, gzip, snappy, lz4");
        }
        if self.linger_ms >= self.delivery_timeout_ms {
            return fail("kafka.linger_ms must be below kafka.delivery_timeout_ms");
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms.saturating_mul(3) > self.session_timeout_ms {
            return fail("kafka.heartbeat_interval_ms must be above 0 and at most a third of session_timeout_ms");
        }
        if self.commit_interval_ms == 0 {
            return fail("kafka.commit_interval_ms must be above 0");
        }
        if self.fetch_wait_max_ms == 0 || self.fetch_wait_max_ms > MAX_FETCH_WAIT_MS {
            return fail("kafka.fetch_wait_max_ms must be above 0 and at most 59000");
        }
        Ok(())
    }

    /// librdkafka settings of the delivery producer: idempotent (no
    /// duplicates or reordering from its own retries), `acks=all`.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size_bytes.to_string())
            .set("compression.type", &self.compression)
            .set("delivery.timeout.ms", self.delivery_timeout_ms.to_string());
        config
    }

    /// librdkafka settings of the delivery consumer: offsets are stored by
    /// the code only after a record was handed over (or dead-lettered) and
    /// committed in the background in batches; cooperative rebalancing
    /// moves only the partitions that change owner.
    pub(crate) fn consumer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", self.commit_interval_ms.to_string())
            // A group without committed offsets starts at the beginning:
            // nothing published before the first node joined is skipped.
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", self.heartbeat_interval_ms.to_string())
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("enable.partition.eof", "false");
        config
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.join(","));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> KafkaConfig {
        KafkaConfig { brokers: vec!["kafka-1:9092".into()], ..KafkaConfig::default() }
    }

    #[test]
    fn defaults_are_valid_once_brokers_are_named() {
        assert!(KafkaConfig::default().validate().is_err());
        assert!(valid().validate().is_ok());
        assert_eq!(valid().dead_letter_topic(), "parley.delivery.dead");
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = [
            KafkaConfig { compression: "zstd".into(), ..valid() },
            KafkaConfig { heartbeat_interval_ms: 5_000, ..valid() },
            KafkaConfig { linger_ms: 10_000, ..valid() },
            KafkaConfig { commit_interval_ms: 0, ..valid() },
            KafkaConfig { fetch_wait_max_ms: 0, ..valid() },
            KafkaConfig { fetch_wait_max_ms: MAX_FETCH_WAIT_MS + 1, ..valid() },
            KafkaConfig { delivery_topic: String::new(), ..valid() },
            KafkaConfig { brokers: vec![" ".into()], ..valid() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} passed");
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_missing_ones_default() -> Result<(), toml::de::Error> {
        let parsed: KafkaConfig = toml::from_str(r#"brokers = ["a:9092"]"#)?;
        assert_eq!(parsed, KafkaConfig { brokers: vec!["a:9092".into()], ..KafkaConfig::default() });
        assert!(
            toml::from_str::<KafkaConfig>(
                r#"brokers = ["a:9092"]
lingerms = 3"#
            )
            .is_err()
        );
        Ok(())
    }
}
