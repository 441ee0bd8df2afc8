//! A Kafka-protocol broker of a test's own (feature `test-support`):
//! librdkafka's mock cluster (3 brokers, inside the test process) by
//! default, or a `tansu` broker when `PARLEY_TEST_TANSU` names its binary
//! (installed by `scripts/install-tansu`). Tansu runs on a free loopback
//! port with in-memory storage, in a temporary directory that also holds
//! its log; it is killed when dropped. If the test is failing by then, its
//! log is printed and the directory kept.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::DefaultProducerContext;

use super::KafkaConfig;

/// Names the `tansu` binary to test against; unset or empty: the mock.
pub const TANSU_ENV: &str = "PARLEY_TEST_TANSU";
/// Brokers of the mock cluster.
pub const MOCK_BROKERS: i32 = 3;
/// The shortest consumer session that works on tansu
/// ([`TestBroker::session_timeout_ms`]): its 3 s join pause with a margin.
pub const TANSU_MIN_SESSION_TIMEOUT_MS: u32 = 10_000;
/// Longest wait for tansu to listen, and for a new topic to show.
pub const START_PATIENCE: Duration = Duration::from_secs(20);

/// A running broker: the mock cluster or a tansu process.
pub struct TestBroker {
    kind: Kind,
}

enum Kind {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(Tansu),
}

struct Tansu {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TestBroker {
    /// Tansu if [`TANSU_ENV`] names a binary, else the mock cluster.
    /// Panics (it is for tests) if the broker does not start.
    pub fn start() -> TestBroker {
        match std::env::var_os(TANSU_ENV).filter(|path| !path.is_empty()) {
            Some(binary) => TestBroker::tansu(Path::new(&binary)),
            None => TestBroker::mock(),
        }
    }

    /// librdkafka's mock cluster of [`MOCK_BROKERS`] brokers.
    #[allow(clippy::expect_used)]
    pub fn mock() -> TestBroker {
        let mock = MockCluster::new(MOCK_BROKERS).expect("librdkafka's mock cluster starts");
        TestBroker { kind: Kind::Mock(mock) }
    }

    /// A `tansu` broker run from `binary` on a free loopback port.
    #[allow(clippy::unwrap_used)]
    pub fn tansu(binary: &Path) -> TestBroker {
        let dir = tempfile::Builder::new().prefix("parley-tansu-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn_tansu(binary, port, dir.path());
        let mut tansu = Tansu { child, port, dir };
        tansu.wait_until_listening();
        TestBroker { kind: Kind::Tansu(tansu) }
    }

    /// Whether the broker refuses offset commits while its group is
    /// joining. librdkafka's mock cluster does (`REBALANCE_IN_PROGRESS`
    /// once a member's JoinGroup has started the join, in
    /// `rd_kafka_mock_cgrp_classic_check_state`); Kafka takes commits from
    /// the current generation until the join completes. Against the mock,
    /// whether the commits librdkafka makes at a rebalance land depends on
    /// timing alone.
    pub fn refuses_commits_while_joining(&self) -> bool {
        matches!(self.kind, Kind::Mock(_))
    }

    /// `"mock"` or `"tansu"`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Mock(_) => "mock",
            Kind::Tansu(_) => "tansu",
        }
    }

    /// The `bootstrap.servers` of this broker.
    pub fn bootstrap_servers(&self) -> String {
        match &self.kind {
            Kind::Mock(mock) => mock.bootstrap_servers(),
            Kind::Tansu(tansu) => format!("127.0.0.1:{}", tansu.port),
        }
    }

    /// Bus settings for this broker, with timings for tests: a short
    /// session (a stopped node's partitions move within seconds) and
    /// frequent commits.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: vec![self.bootstrap_servers()],
            session_timeout_ms: self.session_timeout_ms(6_000),
            heartbeat_interval_ms: 500,
            commit_interval_ms: 100,
            ..KafkaConfig::default()
        }
    }

    /// The consumers' `session.timeout.ms` for a test that wants
    /// `wanted_ms`, raised to what this broker needs. Tansu holds a
    /// follower's JoinGroup for 3 s (`PAUSE_MS` in its group coordinator),
    /// during which librdkafka sends no heartbeats, and drops every member
    /// silent for longer than its session timeout: with a session of 3-6 s
    /// a rebalance among three consumers drops members that are still
    /// joining, which starts the next rebalance, and partitions are given
    /// to one member while another still owns them.
    pub fn session_timeout_ms(&self, wanted_ms: u32) -> u32 {
        match self.kind {
            Kind::Mock(_) => wanted_ms,
            Kind::Tansu(_) => wanted_ms.max(TANSU_MIN_SESSION_TIMEOUT_MS),
        }
    }

    /// Creates a topic; with tansu through the admin API, returning once
    /// the broker's metadata shows every partition. Panics if it fails
    /// (a panicking test prints tansu's log as it drops the broker).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        match &self.kind {
            Kind::Mock(mock) => {
                if let Err(error) = mock.create_topic(name, partitions, MOCK_BROKERS) {
                    panic!("the mock cluster did not create topic {name}: {error}");
                }
            }
            Kind::Tansu(tansu) => {
                if let Err(error) = tansu.create_topic(&self.bootstrap_servers(), name, partitions).await {
                    panic!("tansu did not create topic {name}: {error}");
                }
            }
        }
    }

    /// Takes mock broker `id` (1 to [`MOCK_BROKERS`]) down: it drops its
    /// connections and refuses new ones. Tansu is one process: an error.
    pub fn broker_down(&self, id: i32) -> Result<(), String> {
        match &self.kind {
            Kind::Mock(mock) => mock.broker_down(id).map_err(|e| e.to_string()),
            Kind::Tansu(_) => Err("tansu cannot take one broker down".into()),
        }
    }

    /// Brings mock broker `id` back up. Tansu: an error.
    pub fn broker_up(&self, id: i32) -> Result<(), String> {
        match &self.kind {
            Kind::Mock(mock) => mock.broker_up(id).map_err(|e| e.to_string()),
            Kind::Tansu(_) => Err("tansu cannot bring one broker up".into()),
        }
    }

    /// Makes mock broker `leader` lead partitions `0..partitions` of
    /// `topic`, and `coordinator` coordinate consumer group `group`: a test
    /// can then take the leader down without the group noticing. Tansu:
    /// an error.
    pub fn place(
        &self,
        topic: &str,
        partitions: i32,
        leader: i32,
        group: &str,
        coordinator: i32,
    ) -> Result<(), String> {
        let Kind::Mock(mock) = &self.kind else { return Err("tansu is one broker".into()) };
        for partition in 0..partitions {
            mock.partition_leader(topic, partition, Some(leader)).map_err(|e| e.to_string())?;
        }
        mock.coordinator(MockCoordinator::Group(group.into()), coordinator).map_err(|e| e.to_string())
    }

    /// What tansu logged so far (warnings and errors); empty for the mock.
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Mock(_) => String::new(),
            Kind::Tansu(tansu) => tansu.log(),
        }
    }
}

impl Tansu {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    fn log(&self) -> String {
        let path = self.log_path();
        match std::fs::read_to_string(&path) {
            Ok(log) => format!("--- tansu log ({}) ---\n{log}--- end of tansu log ---", path.display()),
            Err(error) => format!("(no tansu log at {}: {error})", path.display()),
        }
    }

    #[allow(clippy::panic)]
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tansu exited ({status}) before listening on port {}", self.port);
            }
            if Instant::now() >= deadline {
                panic!("tansu did not listen on port {} within {START_PATIENCE:?}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn create_topic(&self, servers: &str, name: &str, partitions: i32) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", servers).create().map_err(|e| e.to_string())?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().request_timeout(Some(START_PATIENCE));
        let results = admin.create_topics([&topic], &options).await.map_err(|e| e.to_string())?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(format!("{topic}: {code}")),
            }
        }
        let name = name.to_owned();
        let shown = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + START_PATIENCE;
            loop {
                let metadata = admin.inner().fetch_metadata(Some(&name), Duration::from_secs(5));
                let found = metadata.as_ref().ok().and_then(|m| {
                    m.topics().iter().find(|t| t.name() == name && t.error().is_none()).map(|t| t.partitions().len())
                });
                if found == usize::try_from(partitions).ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    let error = metadata.err().map(|e| e.to_string()).unwrap_or_default();
                    return Err(format!("metadata shows {found:?} partitions after {START_PATIENCE:?} {error}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        shown.await.map_err(|e| e.to_string())?
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // Kept for a look after the run, with the log.
            self.dir.disable_cleanup(true);
            eprintln!("{}", self.log());
        }
    }
}

/// The log's file name in tansu's directory.
const LOG_FILE: &str = "tansu.log";

/// Starts tansu listening (and advertising) only on loopback `port`, with
/// in-memory storage, its working directory and log in `dir`. The
/// environment variables tansu reads are set or removed, so that the
/// caller's cannot point it elsewhere.
#[allow(clippy::unwrap_used, clippy::expect_used)]
fn spawn_tansu(binary: &Path, port: u16, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join(LOG_FILE)).unwrap();
    let url = format!("tcp://127.0.0.1:{port}");
    crate::testing::without_inherited_fds(&mut Command::new(binary))
        .arg("broker")
        .args(["--cluster-id", "parley-test"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("SCHEMA_REGISTRY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("PARLEY_TEST_TANSU names a tansu binary (scripts/install-tansu installs one)")
}
