//! The node's configuration: defaults, then a TOML file, then `PARLEY_*`
//! environment variables (`__` separates sections: `PARLEY_AUTH__PEPPER`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use engine::EngineConfig;
use engine::kafka::KafkaConfig;
use engine::redis::RedisConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use storage::StorageConfig;
use storage::scylla::ScyllaConfig;

/// Everything a node is configured with. Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket server listens on.
    pub listen: SocketAddr,
    /// Directory holding the database and the node's keys.
    pub data_dir: PathBuf,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    /// How often the node gives heap memory it freed back to the OS
    /// (glibc's `malloc_trim`), in seconds; 0: never.
    pub heap_trim_secs: u64,
    pub storage: StorageConfig,
    pub engine: EngineConfig,
    pub auth: AuthConfig,
    pub websocket: WebSocketConfig,
    pub limits: LimitsConfig,
    /// Outgoing mail; unset: email goes to the local outbox in `data_dir`.
    pub smtp: Option<SmtpConfig>,
    /// Delivery of text messages (phone confirmation codes).
    pub sms: SmsConfig,
    /// Email and phone changes: code lifetime, attempts, rate limits.
    pub contacts: ContactsConfig,
    /// Shared state of a cluster in Redis: generator-ID leases and one-time
    /// WebSocket tickets. Unset: the node keeps them in memory and uses
    /// `engine.generator_id`.
    pub redis: Option<RedisConfig>,
    /// ScyllaDB / Cassandra holds the data instead of `[storage]` (cluster
    /// mode; media stays in `data_dir`). Unset: `[storage]` (embedded).
    pub scylla: Option<ScyllaConfig>,
    /// Cluster mode: the node joins the others through `[kafka]` (the bus;
    /// its consumer group decides which shards the node owns) and
    /// `[redis]` (the node directory, leases, tickets). Unset: one node.
    pub cluster: Option<ClusterConfig>,
    /// The Kafka bus of a cluster; required with `[cluster]`, refused without.
    pub kafka: Option<KafkaConfig>,
    /// Traces exported over OTLP; unset: none are.
    pub otlp: Option<OtlpConfig>,
}

/// Traces exported over OTLP/HTTP (`[otlp]`): each HTTP request's span,
/// with its route, status and time, to an OpenTelemetry collector or to
/// Jaeger (which ingests OTLP natively, on port 4318).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces endpoint, e.g. `http://jaeger:4318/v1/traces`;
    /// plain HTTP only (for TLS, export to a collector beside the node,
    /// which forwards).
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces exported, from 0.0 to 1.0.
    pub sample_ratio: f64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig { endpoint: String::new(), service_name: "parley".into(), sample_ratio: 1.0 }
    }
}

/// How a cluster node is known to the others and to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique among the live nodes; default: the listen address.
    #[serde(default)]
    pub node_name: Option<String>,
    /// The node's base URL as clients and the other nodes reach it,
    /// `http://host:port` or `https://host`. Clients whose shard lives here
    /// are sent to its WebSocket endpoint; other nodes forward chat
    /// commands to it.
    pub url: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("parley-data"),
            log_format: LogFormat::Human,
            heap_trim_secs: 60,
            storage: StorageConfig::default(),
            engine: EngineConfig::default(),
            auth: AuthConfig::default(),
            websocket: WebSocketConfig::default(),
            limits: LimitsConfig::default(),
            smtp: None,
            sms: SmsConfig::default(),
            contacts: ContactsConfig::default(),
            redis: None,
            scylla: None,
            cluster: None,
            kafka: None,
            otlp: None,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Tokens and passwords.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of an access token, seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, seconds (each rotation starts a new one).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of a WebSocket ticket, seconds.
    pub ws_ticket_ttl_secs: u64,
    /// The current password pepper. Unset: a random pepper is created in
    /// `<data_dir>/keys/pepper-v<version>` on first start. Never stored in the database.
    pub pepper: Option<Secret>,
    /// Version of `pepper`; stored with each password hash.
    pub pepper_version: u32,
    /// Earlier peppers by version, so older hashes still verify (and are
    /// upgraded to the current pepper on the next login).
    pub old_peppers: BTreeMap<String, Secret>,
    /// Argon2id memory cost in KiB (OWASP: 19,456).
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
    /// Directory of the token-signing key and the generated pepper;
    /// default `<data_dir>/keys`. The nodes of a cluster must share them.
    pub keys_dir: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            ws_ticket_ttl_secs: 30,
            pepper: None,
            pepper_version: 1,
            old_peppers: BTreeMap::new(),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            keys_dir: None,
        }
    }
}

/// WebSocket connection settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between a connection's heartbeats (the first at a random
    /// point of the interval). A beat closes a connection silent for
    /// `idle_timeout_secs` and pings one silent for `idle_timeout_secs`
    /// minus two beats or more (20 s with the defaults); a connection heard
    /// from more recently is not pinged.
    pub heartbeat_secs: u64,
    /// Seconds of silence after which a connection is closed (4009).
    pub idle_timeout_secs: u64,
    /// Invalid frames tolerated per connection before it is closed (4029).
    pub max_protocol_errors: u32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig { heartbeat_secs: 20, idle_timeout_secs: 60, max_protocol_errors: 20 }
    }
}

/// Abuse limits. Each node applies them, and a cluster also counts each
/// key's requests on all nodes together and allows the rate plus the burst
/// per window (a minute, or a second for searches) in all
/// (`gateway::limits::Limit`, docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Auth requests (register, login, refresh) per minute per client IP.
    pub auth_per_minute_per_ip: u32,
    /// Auth requests allowed in a burst per client IP.
    pub auth_burst_per_ip: u32,
    /// Largest JSON request body, bytes.
    pub max_json_body_bytes: usize,
    /// User searches per second per user, sustained.
    pub searches_per_second: u32,
    /// User searches allowed in a burst per user.
    pub search_burst: u32,
    /// Media uploads (avatars) per minute per user, sustained.
    pub uploads_per_minute: u32,
    /// Media uploads allowed in a burst per user.
    pub upload_burst: u32,
    /// Open TCP connections (HTTP and WebSocket) the node accepts at once;
    /// beyond it, new ones wait in the listen backlog. The process's
    /// open-files limit (`ulimit -n`) must be raised to match.
    pub max_connections: usize,
    /// Reverse proxies in front of the node (addresses or CIDR ranges, e.g.
    /// `["10.0.0.0/8"]`). A request from one of them counts against the
    /// client address in its `X-Forwarded-For` header (the nearest entry
    /// that is not a trusted proxy); from anyone else the header is ignored.
    /// Empty: every request counts against its TCP peer, so behind a proxy
    /// all clients would share the proxy's per-IP budget.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_per_minute_per_ip: 30,
            auth_burst_per_ip: 20,
            max_json_body_bytes: 16 * 1024,
            searches_per_second: 5,
            search_burst: 20,
            uploads_per_minute: 6,
            upload_burst: 10,
            max_connections: 1_000_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Outgoing mail through an SMTP server (`[smtp]`). Without this section,
/// email goes to the local outbox (`<data_dir>/outbox/`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name of the SMTP server.
    pub host: String,
    /// Port; unset: 25 for `none`, 587 for `starttls`, 465 for `tls`.
    pub port: Option<u16>,
    /// `none` (plain text, only for a server on the same host), `starttls`
    /// (upgrade required) or `tls` (implicit TLS).
    pub tls: SmtpTls,
    /// User name for SMTP AUTH; unset: no authentication.
    pub username: Option<String>,
    /// Password for SMTP AUTH.
    pub password: Option<Secret>,
    /// The sender, e.g. `Parley <noreply@example.com>`.
    pub from: String,
    /// Seconds to wait for the server before a send fails.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".into(),
            port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: "Parley <noreply@localhost>".into(),
            timeout_secs: 10,
        }
    }
}

/// Transport security of the SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// No encryption: for a relay on loopback or a trusted local network.
    None,
    /// Plain connection upgraded with STARTTLS; refused if the server cannot.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// How text messages (phone confirmation codes) are delivered (`[sms]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsConfig {
    /// Written to the local outbox (`<data_dir>/outbox/`) for an operator
    /// to read; no message leaves the node.
    #[default]
    Outbox,
    /// POSTed as JSON `{"to": "+15551234567", "text": "..."}` to `url`
    /// (an SMS provider's API or a relay in front of one); any 2xx is success.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Sent as `Authorization: Bearer <token>` if set.
        #[serde(default)]
        bearer_token: Option<Secret>,
        /// Seconds to wait for the webhook before a send fails.
        #[serde(default = "default_webhook_timeout_secs")]
        timeout_secs: u64,
    },
}

fn default_webhook_timeout_secs() -> u64 {
    10
}

/// Changing an email address or phone number (`[contacts]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactsConfig {
    /// Lifetime of a confirmation code, seconds.
    pub code_ttl_secs: u64,
    /// Wrong codes accepted per code before it locks (a new code is needed).
    pub max_attempts: u32,
    /// Codes a user may request per hour on one channel; the same limit
    /// applies to codes sent to one address, whoever asks.
    pub codes_per_hour: u32,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        ContactsConfig { code_ttl_secs: 10 * 60, max_attempts: 5, codes_per_hour: 5 }
    }
}

/// A secret string: shown as `***` in logs and debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Settings whose defaults leave them out: `[smtp]` (unset: email goes to
/// the outbox), the SMS webhook, `[redis]` and `[scylla]`, shown commented
/// out in the example.
const COMMENTED_EXAMPLES: &str = "
# Outgoing mail. Without this section, email goes to <data_dir>/outbox/.
# [smtp]
# host = \"smtp.example.com\"
# port = 587                  # default: 25 (none), 587 (starttls), 465 (tls)
# tls = \"starttls\"            # \"none\" | \"starttls\" | \"tls\"
# username = \"parley\"
# password = \"...\"
# from = \"Parley <noreply@example.com>\"
# timeout_secs = 10

# Text messages through an HTTP webhook instead of the outbox: POSTs JSON
# {\"to\": \"+15551234567\", \"text\": \"...\"}; any 2xx is success.
# [sms]
# backend = \"webhook\"
# url = \"https://sms-relay.example.com/send\"
# bearer_token = \"...\"
# timeout_secs = 10

# Cluster nodes share generator-ID leases and WebSocket tickets through
# Redis. Without this section they live in memory (one node).
# [redis]
# url = \"redis://redis:6379/0\"   # redis://:PASSWORD@host:port/db with a password
# key_prefix = \"parley\"          # clusters sharing one Redis need different ones
# lease_ttl_ms = 10000            # a generator lease lasts this long unless renewed
# node_ttl_ms = 10000
# presence_ttl_ms = 30000
# command_timeout_ms = 1000

# Traces of HTTP requests, exported over OTLP/HTTP to a collector or Jaeger.
# [otlp]
# endpoint = \"http://jaeger:4318/v1/traces\"
# service_name = \"parley\"
# sample_ratio = 1.0             # share of traces exported, 0.0 to 1.0

# Cluster mode: nodes share work through Kafka (the bus; its consumer group
# decides which node owns which shard) and Redis (node directory, leases,
# tickets). [cluster] needs [kafka] and [redis]; all nodes need the same
# token key and pepper (auth.keys_dir) and the same store ([scylla]).
# [cluster]
# node_name = \"node-1\"            # default: the listen address
# url = \"https://node-1.example\"  # how clients and the other nodes reach it
# [kafka]
# brokers = [\"kafka-1:9092\", \"kafka-2:9092\"]
# delivery_topic = \"parley.delivery\"   # one partition per shard (engine.shard_count)
# group_id = \"parley-delivery\"

# Cluster nodes keep their data in ScyllaDB / Cassandra instead of [storage].
# The keyspace and tables are created from storage/cql/schema.cql if missing.
# [scylla]
# nodes = [\"scylla-1:9042\", \"scylla-2:9042\"]
# keyspace = \"parley\"
# local_dc = \"datacenter1\"
# replication_factor = 3
# username = \"parley\"             # password from PARLEY_SCYLLA__PASSWORD
";

impl Config {
    /// The cluster node this config describes, `None` for a single node.
    /// Refuses an incomplete cluster: `[cluster]` needs `[kafka]` and
    /// `[redis]`, and `[kafka]` means nothing without `[cluster]`.
    pub fn cluster_node(&self) -> anyhow::Result<Option<engine::ClusterNode>> {
        let (cluster, kafka, redis) = match (&self.cluster, &self.kafka, &self.redis) {
            (None, None, _) => return Ok(None),
            (Some(cluster), Some(kafka), Some(redis)) => (cluster, kafka, redis),
            (None, Some(_), _) => anyhow::bail!("[kafka] is set without [cluster]; a cluster node needs both"),
            (Some(_), None, _) => anyhow::bail!("[cluster] needs a [kafka] section (the bus between nodes)"),
            (Some(_), Some(_), None) => anyhow::bail!("[cluster] needs a [redis] section (the node directory)"),
        };
        let url = cluster.url.trim_end_matches('/');
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("cluster.url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            anyhow::bail!("cluster.url must be an http:// or https:// URL with a host, not {url:?}");
        }
        Ok(Some(engine::ClusterNode {
            name: cluster.node_name.clone().unwrap_or_else(|| self.listen.to_string()),
            url: url.to_owned(),
            kafka: kafka.clone(),
            heartbeat: redis.node_heartbeat(),
        }))
    }

    /// Where the token-signing key and the peppers are: `auth.keys_dir`,
    /// else `<data_dir>/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.auth.keys_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// Opens the stores this config names: ScyllaDB when `[scylla]` is set,
    /// else the `[storage]` backend. The one place a node picks its store.
    pub async fn open_stores(&self) -> anyhow::Result<storage::Stores> {
        use anyhow::Context as _;
        match &self.scylla {
            Some(scylla) => storage::open_scylla(scylla, &self.data_dir).await.context("opening ScyllaDB"),
            None => storage::open(&self.storage, &self.data_dir).context("opening storage"),
        }
    }

    /// Loads defaults, then `file` (if any), then `PARLEY_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("PARLEY_").split("__")).extract().map_err(Box::new)
    }

    /// The example configuration file: every key with its default.
    pub fn example_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).unwrap_or_default();
        format!(
            "# Parley node configuration: every key with its default value.\n\
             # Generated from gateway/src/config.rs (`parley example-config`).\n\
             # Any key can be set as PARLEY_<SECTION>__<KEY>, e.g. PARLEY_AUTH__PEPPER.\n\n{body}{COMMENTED_EXAMPLES}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../parley.example.toml");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            Config::example_toml(),
            "run `cargo run -p gateway -- example-config > parley.example.toml`"
        );
    }

    #[test]
    fn example_config_parses_back_to_the_defaults() {
        let parsed: Config = toml::from_str(&Config::example_toml()).expect("example parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("listne = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = AuthConfig { pepper: Some(Secret("hunter2".into())), ..AuthConfig::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_cluster_node_needs_kafka_redis_and_an_http_url() {
        let kafka = KafkaConfig { brokers: vec!["kafka-1:9092".into()], ..KafkaConfig::default() };
        let cluster = ClusterConfig { node_name: None, url: "http://node-1:8080/".into() };
        let full = Config {
            cluster: Some(cluster.clone()),
            kafka: Some(kafka.clone()),
            redis: Some(RedisConfig::default()),
            ..Config::default()
        };
        let node = full.cluster_node().ok().flatten();
        assert_eq!(node.as_ref().map(|n| n.url.as_str()), Some("http://node-1:8080"));
        assert_eq!(node.map(|n| n.name), Some(full.listen.to_string()), "the name defaults to the listen address");
        assert!(matches!(Config::default().cluster_node(), Ok(None)), "no sections: a single node");
        let refused = [
            Config { kafka: None, ..full.clone() },
            Config { redis: None, ..full.clone() },
            Config { cluster: None, ..full.clone() },
            Config { cluster: Some(ClusterConfig { url: "node-1:8080".into(), ..cluster.clone() }), ..full.clone() },
            Config { cluster: Some(ClusterConfig { url: "ftp://node-1".into(), ..cluster }), ..full },
        ];
        for config in refused {
            assert!(config.cluster_node().is_err(), "accepted {:?} / {:?}", config.cluster, config.kafka.is_some());
        }
    }
}
