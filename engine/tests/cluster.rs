//! The cluster traits' contracts, each written once and run against the
//! in-memory implementations and against a real `redis-server` that the
//! test starts on a free loopback port (installed by `scripts/test`).
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cluster::local::{
    FixedGenerator, LocalCounts, LocalDirectory, LocalPresence, LocalRevokedSessions, LocalTickets,
};
use engine::cluster::{
    ClusterError, GeneratorLeases, LeaseKeeper, NodeDirectory, NodeInfo, PresenceDirectory, RequestCounts,
    RevokedSessions, SharedPresence, TicketStore,
};
use engine::ids::{IdError, decompose};
use engine::redis::testing::RedisServer;
use engine::redis::{
    RedisConfig, RedisConnection, RedisCounts, RedisDirectory, RedisLeases, RedisPresence, RedisRevokedSessions,
    RedisTickets,
};
use engine::{Clock, IdGenerator, ShardId, SystemClock};
use protocol::ws::PresenceStatus;

/// Every time to live in these tests: short, so expiry is quick to see, yet
/// long enough that renewals (every third of it) stay on time on a loaded
/// CI machine running many tests at once.
const TTL: Duration = Duration::from_millis(1000);
/// Longest wait for something that should happen within a TTL or two.
const PATIENCE: Duration = Duration::from_secs(10);

// ------------------------------------------------------------- harness

/// Settings of `redis` with the tests' short time to live.
fn settings(redis: &RedisServer) -> RedisConfig {
    redis.config(TTL)
}

/// A node's connection.
async fn connect(redis: &RedisServer) -> RedisConnection {
    RedisConnection::connect(&settings(redis)).await.unwrap()
}

/// Polls `check` until it holds; fails after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ID generator over its own store, following `keeper`'s lease.
struct Node {
    ids: IdGenerator,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn new(keeper: &LeaseKeeper) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let stores = storage::open(&storage::StorageConfig::default(), dir.path()).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let ids = IdGenerator::start(keeper.lease().clone(), clock, stores.meta).await.unwrap();
        Node { ids, _dir: dir }
    }

    async fn generator(&self) -> Result<u16, IdError> {
        Ok(decompose(self.ids.next_id().await?).generator)
    }

    /// The generator of the next ID, waiting out a lapse of the lease: on
    /// a loaded machine a renewal can come later than the tests' 1 s TTL
    /// allows, and the node rightly stops issuing until it is renewed.
    async fn generator_once_leased(&self) -> u16 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.generator().await {
                Ok(generator) => return generator,
                Err(IdError::NoLease) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("no ID: {error}"),
            }
        }
    }
}

async fn keeper(redis: &RedisServer, node: &str) -> LeaseKeeper {
    LeaseKeeper::start(Arc::new(RedisLeases::new(connect(redis).await, node))).await.unwrap()
}

fn node_info(name: &str, shards: &[u32]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        url: format!("ws://{name}.test"),
        shards: shards.iter().copied().map(ShardId).collect(),
    }
}

fn presence(status: PresenceStatus, text: &str) -> SharedPresence {
    SharedPresence { status, status_text: text.into() }
}

// ------------------------------------------------------------- generator leases

#[tokio::test]
async fn a_single_node_keeps_its_configured_generator_forever() {
    let keeper = LeaseKeeper::start(Arc::new(FixedGenerator::new(9).unwrap())).await.unwrap();
    let node = Node::new(&keeper).await;
    assert_eq!(node.generator().await.unwrap(), 9);
    assert_eq!(keeper.lease().get().unwrap().valid_until, None);
    assert!(FixedGenerator::new(engine::ids::MAX_GENERATOR + 1).is_err());
}

#[tokio::test]
async fn two_nodes_get_different_generator_ids() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(keeper(&redis, "a"), keeper(&redis, "b"));
    let (a, b) = (Node::new(&a).await, Node::new(&b).await);
    let (ga, gb) = (a.generator_once_leased().await, b.generator_once_leased().await);
    assert_ne!(ga, gb);
    assert_eq!([ga.min(gb), ga.max(gb)], [0, 1]);
}

#[tokio::test]
async fn a_fresh_claim_grants_ids_only_after_one_ttl() {
    let redis = RedisServer::start();
    let started = Instant::now();
    let keeper = keeper(&redis, "a").await;
    assert!(started.elapsed() >= TTL, "granted after {:?}", started.elapsed());
    assert!(keeper.lease().get().unwrap().valid_until.is_some());
}

#[tokio::test]
async fn a_dead_nodes_lease_is_taken_after_its_ttl() {
    let redis = RedisServer::start();
    // The dead node claimed generator 0 and never renewed it.
    let dead = RedisLeases::new(connect(&redis).await, "dead");
    assert_eq!(dead.claim().await.unwrap(), 0);
    let claimed = Instant::now();
    let other = RedisLeases::new(connect(&redis).await, "other");
    assert_eq!(other.claim().await.unwrap(), 1, "a held ID is not handed out again");
    // Once its TTL has passed, generator 0 is free again.
    let late = RedisLeases::new(connect(&redis).await, "late");
    eventually("generator 0 is claimed again", async || late.claim().await.unwrap() == 0).await;
    assert!(claimed.elapsed() >= TTL - Duration::from_millis(20));
    assert!(!dead.renew(0).await.unwrap(), "the dead node's renewal is refused");
}

#[tokio::test]
async fn renewal_keeps_the_lease_across_several_ttls() {
    let redis = RedisServer::start();
    let keeper = keeper(&redis, "a").await;
    let node = Node::new(&keeper).await;
    let generator = node.generator().await.unwrap();
    let until = Instant::now() + TTL * 4;
    while Instant::now() < until {
        assert_eq!(node.generator().await.unwrap(), generator);
        tokio::time::sleep(TTL / 10).await;
    }
    // Nobody else can have it meanwhile.
    let other = RedisLeases::new(connect(&redis).await, "b");
    assert_ne!(other.claim().await.unwrap(), generator);
}

#[tokio::test]
async fn a_node_whose_key_is_stolen_stops_issuing_then_claims_another_id() {
    let redis = RedisServer::start();
    let keeper = keeper(&redis, "a").await;
    let node = Node::new(&keeper).await;
    assert_eq!(node.generator().await.unwrap(), 0);
    redis.raw(&["SET", "test:gen:0", "thief"]);
    let stolen = Instant::now();
    eventually("the node stops issuing", async || matches!(node.generator().await, Err(IdError::NoLease))).await;
    // At the latest when the grant of the last renewal ends (9/10 of a TTL
    // after it), give or take the polling.
    assert!(stolen.elapsed() < TTL + Duration::from_millis(100), "it went on issuing for {:?}", stolen.elapsed());
    eventually("the node issues under a new claim", async || node.generator().await.is_ok()).await;
    assert_eq!(node.generator().await.unwrap(), 1);
    assert_eq!(redis.raw(&["GET", "test:gen:0"]), "thief");
}

#[tokio::test]
async fn a_node_whose_key_is_deleted_stops_issuing() {
    let redis = RedisServer::start();
    let keeper = keeper(&redis, "a").await;
    let node = Node::new(&keeper).await;
    node.generator().await.unwrap();
    redis.raw(&["DEL", "test:gen:0"]);
    eventually("the node stops issuing", async || matches!(node.generator().await, Err(IdError::NoLease))).await;
}

#[tokio::test]
async fn stopping_releases_the_id_at_once() {
    let redis = RedisServer::start();
    let keeper = keeper(&redis, "a").await;
    let node = Node::new(&keeper).await;
    let generator = node.generator().await.unwrap();
    keeper.stop().await.unwrap();
    assert!(matches!(node.generator().await, Err(IdError::NoLease)));
    let other = RedisLeases::new(connect(&redis).await, "b");
    assert_eq!(other.claim().await.unwrap(), generator);
}

// ------------------------------------------------------------- node directory

async fn directory_lists_and_finds_owners(directory: &dyn NodeDirectory) {
    directory.announce(&node_info("b", &[1, 3])).await.unwrap();
    directory.announce(&node_info("a", &[0, 2])).await.unwrap();
    let names: Vec<String> = directory.live_nodes().await.unwrap().into_iter().map(|node| node.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(directory.owner_of(ShardId(3)).await.unwrap(), Some(node_info("b", &[1, 3])));
    assert_eq!(directory.owner_of(ShardId(7)).await.unwrap(), None);
    // A new announcement replaces the old one.
    directory.announce(&node_info("b", &[7])).await.unwrap();
    assert_eq!(directory.owner_of(ShardId(3)).await.unwrap(), None);
    assert_eq!(directory.owner_of(ShardId(7)).await.unwrap().map(|node| node.name), Some("b".into()));
    directory.withdraw("a").await.unwrap();
    assert_eq!(directory.live_nodes().await.unwrap(), [node_info("b", &[7])]);
}

async fn a_node_that_stops_heartbeating_disappears(directory: &dyn NodeDirectory) {
    let (alive, silent) = (node_info("alive", &[0]), node_info("silent", &[1]));
    directory.announce(&alive).await.unwrap();
    directory.announce(&silent).await.unwrap();
    let announced = Instant::now();
    // Heartbeats of "alive" only, every third of the TTL.
    while announced.elapsed() < TTL * 2 {
        tokio::time::sleep(TTL / 3).await;
        directory.announce(&alive).await.unwrap();
    }
    assert_eq!(directory.live_nodes().await.unwrap(), [alive]);
    assert_eq!(directory.owner_of(ShardId(1)).await.unwrap(), None);
}

#[tokio::test]
async fn local_directory() {
    directory_lists_and_finds_owners(&LocalDirectory::new(TTL)).await;
    a_node_that_stops_heartbeating_disappears(&LocalDirectory::new(TTL)).await;
}

#[tokio::test]
async fn redis_directory() {
    let redis = RedisServer::start();
    directory_lists_and_finds_owners(&RedisDirectory::new(connect(&redis).await)).await;
    redis.raw(&["FLUSHALL"]);
    a_node_that_stops_heartbeating_disappears(&RedisDirectory::new(connect(&redis).await)).await;
    // The expired name was pruned from the index.
    assert_eq!(redis.raw(&["SMEMBERS", "test:nodes"]), "alive");
}

// ------------------------------------------------------------- presence

async fn presence_is_read_in_batches(shared: &dyn PresenceDirectory) {
    let busy = presence(PresenceStatus::Busy, "in a meeting");
    let online = presence(PresenceStatus::Online, "");
    shared.publish(&[(1, busy.clone()), (2, online.clone())]).await.unwrap();
    assert_eq!(shared.read(&[2, 3, 1]).await.unwrap(), [Some(online.clone()), None, Some(busy)]);
    assert_eq!(shared.read(&[]).await.unwrap(), []);
    shared.publish(&[(1, presence(PresenceStatus::Away, ""))]).await.unwrap();
    shared.remove(&[2, 99]).await.unwrap();
    assert_eq!(shared.read(&[1, 2]).await.unwrap(), [Some(presence(PresenceStatus::Away, "")), None]);
    shared.publish(&[]).await.unwrap();
    shared.remove(&[]).await.unwrap();
}

async fn presence_falls_offline_without_heartbeats(shared: &dyn PresenceDirectory) {
    let online = presence(PresenceStatus::Online, "");
    shared.publish(&[(10, online.clone()), (11, online.clone())]).await.unwrap();
    let published = Instant::now();
    // The node of user 10 keeps heart-beating; user 11's node crashed.
    while published.elapsed() < TTL * 2 {
        tokio::time::sleep(TTL / 3).await;
        shared.publish(&[(10, online.clone())]).await.unwrap();
    }
    assert_eq!(shared.read(&[10, 11]).await.unwrap(), [Some(online), None]);
}

#[tokio::test]
async fn local_presence() {
    presence_is_read_in_batches(&LocalPresence::new(TTL)).await;
    presence_falls_offline_without_heartbeats(&LocalPresence::new(TTL)).await;
}

#[tokio::test]
async fn redis_presence() {
    let redis = RedisServer::start();
    let shared = RedisPresence::new(connect(&redis).await);
    presence_is_read_in_batches(&shared).await;
    presence_falls_offline_without_heartbeats(&shared).await;
    // A value that does not decode reads as offline, not as an error.
    redis.raw(&["SET", "test:presence:5", "{not json"]);
    assert_eq!(shared.read(&[5]).await.unwrap(), [None]);
}

#[tokio::test]
async fn presence_is_shared_between_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (RedisPresence::new(connect(&redis).await), RedisPresence::new(connect(&redis).await));
    a.publish(&[(7, presence(PresenceStatus::Online, "hi"))]).await.unwrap();
    assert_eq!(b.read(&[7]).await.unwrap(), [Some(presence(PresenceStatus::Online, "hi"))]);
}

// ------------------------------------------------------------- tickets

async fn tickets_are_taken_once(tickets: &dyn TicketStore) {
    assert!(tickets.insert("t1", "claims", Duration::from_secs(30)).await.unwrap());
    assert!(!tickets.insert("t1", "other", Duration::from_secs(30)).await.unwrap(), "a live name is not reused");
    assert_eq!(tickets.take("t1").await.unwrap().as_deref(), Some("claims"));
    assert_eq!(tickets.take("t1").await.unwrap(), None);
    assert_eq!(tickets.take("never-issued").await.unwrap(), None);
    assert!(tickets.insert("t2", "claims", TTL).await.unwrap());
    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(tickets.take("t2").await.unwrap(), None, "expired");
}

#[tokio::test]
async fn local_tickets() {
    tickets_are_taken_once(&LocalTickets::default()).await;
}

#[tokio::test]
async fn redis_tickets() {
    let redis = RedisServer::start();
    tickets_are_taken_once(&RedisTickets::new(connect(&redis).await)).await;
}

#[tokio::test]
async fn a_ticket_issued_on_one_node_is_redeemed_once_on_any() {
    let redis = RedisServer::start();
    let issuer = RedisTickets::new(connect(&redis).await);
    assert!(issuer.insert("shared", "claims", Duration::from_secs(30)).await.unwrap());
    let mut takers = Vec::new();
    for _ in 0..8 {
        let node = RedisTickets::new(connect(&redis).await);
        takers.push(tokio::spawn(async move { node.take("shared").await.unwrap() }));
    }
    let mut redeemed = 0;
    for taker in takers {
        redeemed += usize::from(taker.await.unwrap().is_some());
    }
    assert_eq!(redeemed, 1);
}

// ------------------------------------------------------------- ended sessions

async fn ended_sessions_are_refused_until_their_ttl(revoked: &dyn RevokedSessions) {
    // Until restored from the store, the set cannot say a session is live.
    assert!(!revoked.is_complete().await.unwrap());
    assert!(matches!(revoked.is_revoked(1).await, Err(ClusterError::RevocationsIncomplete)));
    revoked.restore(&[(8, Duration::from_secs(30)), (9, TTL)]).await.unwrap();
    assert!(revoked.is_complete().await.unwrap());
    assert!(revoked.is_revoked(8).await.unwrap(), "restored");
    eventually("a restored entry expires with its own ttl", async || !revoked.is_revoked(9).await.unwrap()).await;
    assert!(revoked.is_revoked(8).await.unwrap());
    assert!(!revoked.is_revoked(1).await.unwrap());
    revoked.revoke(&[], TTL).await.unwrap();
    revoked.revoke(&[1, 2], Duration::from_secs(30)).await.unwrap();
    revoked.revoke(&[2], Duration::from_secs(30)).await.unwrap();
    assert!(revoked.is_revoked(1).await.unwrap());
    assert!(revoked.is_revoked(2).await.unwrap(), "revoking twice is harmless");
    assert!(!revoked.is_revoked(3).await.unwrap());
    revoked.revoke(&[4], TTL).await.unwrap();
    assert!(revoked.is_revoked(4).await.unwrap());
    eventually("the entry expires with its tokens", async || !revoked.is_revoked(4).await.unwrap()).await;
    assert!(revoked.is_revoked(1).await.unwrap(), "a longer ttl is still running");
}

#[tokio::test]
async fn revoked_sessions_in_memory_and_in_redis_shared_by_every_node() {
    ended_sessions_are_refused_until_their_ttl(&LocalRevokedSessions::default()).await;
    let redis = RedisServer::start();
    let ending = RedisRevokedSessions::new(connect(&redis).await);
    ended_sessions_are_refused_until_their_ttl(&ending).await;
    // A session ended through one node is refused by another.
    let other = RedisRevokedSessions::new(connect(&redis).await);
    ending.revoke(&[7], Duration::from_secs(30)).await.unwrap();
    assert!(other.is_revoked(7).await.unwrap());
    assert_eq!(redis.raw(&["EXISTS", "test:revoked:7"]), "1");
    // A Redis that lost its data has lost the mark too: nobody is let in
    // on its word until the set is restored.
    redis.raw(&["FLUSHALL"]);
    assert!(!other.is_complete().await.unwrap());
    assert!(matches!(other.is_revoked(7).await, Err(ClusterError::RevocationsIncomplete)));
    ending.restore(&[(7, Duration::from_secs(30))]).await.unwrap();
    assert!(other.is_revoked(7).await.unwrap());
}

// ------------------------------------------------------------- request counts

async fn requests_count_per_key_until_the_window_ends(counts: &dyn RequestCounts) {
    let long = Duration::from_secs(60);
    for expected in 1..=3 {
        let (count, left) = counts.count("auth:10.0.0.1", long).await.unwrap();
        assert_eq!(count, expected);
        assert!(left > Duration::from_secs(50) && left <= long, "{left:?}");
    }
    assert_eq!(counts.count("auth:10.0.0.2", long).await.unwrap().0, 1, "keys count apart");
    // A window is not extended by the requests in it.
    let (first, left) = counts.count("short", TTL).await.unwrap();
    assert_eq!(first, 1);
    assert!(left <= TTL);
    eventually("a new window starts when the old one ends", async || counts.count("short", TTL).await.unwrap().0 == 1)
        .await;
}

#[tokio::test]
async fn request_counts_in_memory_and_in_redis_add_up_across_nodes() {
    requests_count_per_key_until_the_window_ends(&LocalCounts::default()).await;
    let redis = RedisServer::start();
    let one = RedisCounts::new(connect(&redis).await);
    requests_count_per_key_until_the_window_ends(&one).await;
    // Two nodes count into the same window.
    let other = RedisCounts::new(connect(&redis).await);
    let window = Duration::from_secs(60);
    assert_eq!(one.count("auth:10.9.9.9", window).await.unwrap().0, 1);
    assert_eq!(other.count("auth:10.9.9.9", window).await.unwrap().0, 2);
    assert_eq!(one.count("auth:10.9.9.9", window).await.unwrap().0, 3);
    assert_eq!(redis.raw(&["GET", "test:count:auth:10.9.9.9"]), "3");
}

// ------------------------------------------------------------- Redis down, Redis restarted

#[tokio::test]
async fn everything_works_again_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let keeper = keeper(&redis, "a").await;
    let node = Node::new(&keeper).await;
    let conn = connect(&redis).await;
    let (shared, tickets, directory) =
        (RedisPresence::new(conn.clone()), RedisTickets::new(conn.clone()), RedisDirectory::new(conn));
    let online = presence(PresenceStatus::Online, "");
    shared.publish(&[(1, online.clone())]).await.unwrap();
    assert!(tickets.insert("before", "claims", Duration::from_secs(30)).await.unwrap());

    // Down: commands fail within the command timeout instead of hanging,
    // and the lease runs out.
    redis.kill();
    let asked = Instant::now();
    assert!(shared.read(&[1]).await.is_err());
    assert!(asked.elapsed() < Duration::from_secs(1), "took {:?}", asked.elapsed());
    eventually("IDs stop while Redis is down", async || matches!(node.generator().await, Err(IdError::NoLease))).await;

    // Back, empty: the connection comes back by itself.
    redis.restart();
    eventually("the connection is back", async || shared.read(&[1]).await.is_ok()).await;
    assert_eq!(shared.read(&[1]).await.unwrap(), [None], "a restart loses presence");
    // The next heartbeat publishes it again.
    shared.publish(&[(1, online.clone())]).await.unwrap();
    assert_eq!(shared.read(&[1]).await.unwrap(), [Some(online)]);
    // Tickets issued before are gone; new ones work.
    assert_eq!(tickets.take("before").await.unwrap(), None);
    assert!(tickets.insert("after", "claims", Duration::from_secs(30)).await.unwrap());
    assert_eq!(tickets.take("after").await.unwrap().as_deref(), Some("claims"));
    directory.announce(&node_info("a", &[0])).await.unwrap();
    assert_eq!(directory.live_nodes().await.unwrap(), [node_info("a", &[0])]);
    // The keeper claims anew and IDs flow again.
    eventually("IDs flow again", async || node.generator().await.is_ok()).await;
    assert_eq!(redis.raw(&["EXISTS", "test:gen:0"]), "1");
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_bad_settings_are_refused() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RedisConfig { url: format!("redis://127.0.0.1:{port}/0"), ..RedisConfig::default() };
    let asked = Instant::now();
    assert!(RedisConnection::connect(&config).await.is_err());
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());
    let too_short = RedisConfig { presence_ttl_ms: 10, ..config.clone() };
    assert!(matches!(RedisConnection::connect(&too_short).await, Err(ClusterError::Config(_))));
    let slow = RedisConfig { command_timeout_ms: config.lease_ttl_ms, ..config };
    assert!(matches!(RedisConnection::connect(&slow).await, Err(ClusterError::Config(_))));
}

#[test]
fn redis_settings_refuse_unknown_fields_and_default_the_rest() {
    let config: RedisConfig = serde_json::from_str(r#"{"url": "redis://r:6379/1"}"#).unwrap();
    assert_eq!(config, RedisConfig { url: "redis://r:6379/1".into(), ..RedisConfig::default() });
    assert_eq!(config.key_prefix, "parley");
    assert_eq!(config.presence_heartbeat(), Duration::from_secs(10));
    assert!(serde_json::from_str::<RedisConfig>(r#"{"urll": "redis://r"}"#).is_err());
}

#[tokio::test]
async fn shared_state_is_memory_without_redis_settings_and_redis_with_them() {
    let local = engine::cluster::SharedState::open(None, "solo", 4).await.unwrap();
    assert_eq!(local.leases.ttl(), None);
    assert_eq!(local.leases.claim().await.unwrap(), 4);
    assert!(local.tickets.insert("t", "claims", TTL).await.unwrap());
    local.revoked.restore(&[(5, TTL)]).await.unwrap();
    assert!(local.revoked.is_revoked(5).await.unwrap());
    assert!(engine::cluster::SharedState::open(None, "solo", engine::ids::MAX_GENERATOR + 1).await.is_err());

    let redis = RedisServer::start();
    let shared = engine::cluster::SharedState::open(Some(&settings(&redis)), "a", 4).await.unwrap();
    assert_eq!(shared.leases.ttl(), Some(TTL));
    shared.presence.publish(&[(1, presence(PresenceStatus::Online, ""))]).await.unwrap();
    assert_eq!(redis.raw(&["EXISTS", "test:presence:1"]), "1");
    shared.revoked.revoke(&[5], TTL).await.unwrap();
    assert_eq!(redis.raw(&["EXISTS", "test:revoked:5"]), "1");
}
