//! Cluster mode on one machine: three `parley` node processes on loopback,
//! sharing a Kafka-protocol broker (librdkafka's mock cluster, served by
//! this test process, or tansu when `PARLEY_TEST_TANSU` names its binary),
//! a real `redis-server` and one store (a SQLite file
//! all three open; production uses ScyllaDB). Users on different nodes
//! chat; a client at the wrong node is sent to its owner; a node killed
//! with `kill -9` under load hands its shards to the survivors and nothing
//! acknowledged is lost or reordered; a node that rejoins takes shards back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{Api, Node, Refused, TestUser, WsClient, test_config};
use engine::ShardId;
use engine::cluster::{NodeDirectory, NodeInfo};
use engine::kafka::KafkaConfig;
use engine::kafka::testing::TestBroker;
use engine::redis::testing::RedisServer;
use engine::redis::{RedisConfig, RedisConnection, RedisDirectory};
use engine::testing::without_inherited_fds;
use gateway::config::{ClusterConfig, Config, LimitsConfig};
use protocol::rest::{ChatSummary, CreateGroup, RefreshRequest, WsTicketResponse};
use protocol::ws::PresenceStatus;
use protocol::ws::{ClientFrame, ErrorCode, ServerFrame, Update, close};
use protocol::{ChatId, UserId};

/// Shards of every node = partitions of the delivery topic.
const SHARDS: u32 = 8;
/// How long a node's directory entry (and its lease) lives without a heartbeat.
const NODE_TTL: Duration = Duration::from_millis(3000);
/// How long a failed broker stays down: twice a consumer session.
const BROKER_OUTAGE: Duration = Duration::from_secs(6);
/// How long a publish may wait for the brokers where a test wants
/// publishes to fail during a broker outage.
const PUBLISH_PATIENCE_MS: u32 = 2_000;
/// Longest wait for the cluster to settle after a change.
const PATIENCE: Duration = Duration::from_secs(60);

/// The broker, Redis, the shared store and keys, and the node processes.
struct Cluster {
    /// Shared with tasks that fail and restore brokers on a timer.
    broker: Rc<TestBroker>,
    redis: RedisServer,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    nodes: Vec<Option<Node>>,
    /// Adjusts every node's config after the harness wrote it.
    tweak: Box<dyn Fn(&mut Config)>,
}

impl Cluster {
    /// Starts the broker ([`TestBroker::start`]: tansu when
    /// `PARLEY_TEST_TANSU` names it, else librdkafka's mock cluster), Redis
    /// and `count` nodes, and waits until the cluster has settled.
    async fn start(count: usize) -> Cluster {
        Self::start_with(TestBroker::start(), count, |_| {}).await
    }

    /// [`Cluster::start`] on `broker`, with every node's config adjusted
    /// by `tweak`.
    async fn start_with(broker: TestBroker, count: usize, tweak: impl Fn(&mut Config) + 'static) -> Cluster {
        let kafka = KafkaConfig::default();
        broker.create_topic(&kafka.delivery_topic, SHARDS as i32).await;
        broker.create_topic(&kafka.dead_letter_topic(), 1).await;
        let ports =
            (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
        let mut cluster = Cluster {
            broker: Rc::new(broker),
            redis: RedisServer::start(),
            dir: tempfile::tempdir().unwrap(),
            ports,
            nodes: Vec::new(),
            tweak: Box::new(tweak),
        };
        for index in 0..count {
            cluster.nodes.push(None);
            cluster.start_node(index).await;
        }
        cluster.settled(count).await;
        cluster
    }

    fn name(index: usize) -> String {
        format!("node-{index}")
    }

    fn api(&self, index: usize) -> Api {
        Api::new(format!("http://127.0.0.1:{}", self.ports[index]))
    }

    /// Node `index`'s config file: its own data directory, the shared
    /// store and keys, Redis and the broker.
    fn config_file(&self, index: usize) -> PathBuf {
        let data_dir = self.dir.path().join(Self::name(index));
        std::fs::create_dir_all(&data_dir).unwrap();
        let fake_dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: data_dir.clone(), ..test_config(&fake_dir) };
        config.listen = format!("127.0.0.1:{}", self.ports[index]).parse().unwrap();
        config.storage = storage::StorageConfig::Sqlite {
            path: self.dir.path().join("shared.sqlite3"),
            synchronous: Default::default(),
        };
        config.engine.shard_count = SHARDS;
        config.engine.presence_offline_grace_ms = 200;
        config.auth.keys_dir = Some(self.dir.path().join("keys"));
        config.redis = Some(self.redis.config(NODE_TTL));
        config.cluster = Some(ClusterConfig {
            node_name: Some(Self::name(index)),
            url: format!("http://127.0.0.1:{}", self.ports[index]),
        });
        config.kafka = Some(KafkaConfig {
            brokers: vec![self.broker.bootstrap_servers()],
            session_timeout_ms: self.broker.session_timeout_ms(3_000),
            heartbeat_interval_ms: 500,
            commit_interval_ms: 100,
            ..KafkaConfig::default()
        });
        (self.tweak)(&mut config);
        let path = data_dir.join("parley.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        path
    }

    /// Starts node `index` and waits until it serves HTTP.
    async fn start_node(&mut self, index: usize) {
        let config = self.config_file(index);
        let log = self.dir.path().join(format!("{}.log", Self::name(index)));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = without_inherited_fds(&mut Command::new(env!("CARGO_BIN_EXE_parley")))
            .args(["serve", "--config"])
            .arg(config)
            .env("PARLEY_LOG_FORMAT", "json")
            // The harness's own setting is no key of the node's config.
            .env_remove(engine::kafka::testing::TANSU_ENV)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[index] = Some(Node(child));
        let api = self.api(index);
        let deadline = Instant::now() + PATIENCE;
        while !ready(&api).await {
            assert!(Instant::now() < deadline, "{} did not become ready; log:\n{}", Self::name(index), self.log(index));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", Self::name(index)))).unwrap_or_default()
    }

    async fn directory(&self) -> RedisDirectory {
        RedisDirectory::new(RedisConnection::connect(&self.redis.config(NODE_TTL)).await.unwrap())
    }

    /// Waits until `live` nodes are in the directory, every shard has
    /// exactly one owner among them and the shards are spread evenly (the
    /// cooperative-sticky assignor's final state: owners' counts differ by
    /// at most one; a cooperative rebalance passes through complete but
    /// uneven assignments on its way); returns them.
    async fn settled(&self, live: usize) -> Vec<NodeInfo> {
        let directory = self.directory().await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let nodes = directory.live_nodes().await.unwrap();
            let mut owners: BTreeMap<ShardId, usize> = BTreeMap::new();
            for shard in nodes.iter().flat_map(|node| &node.shards) {
                *owners.entry(*shard).or_default() += 1;
            }
            let every_shard_once = owners.len() == SHARDS as usize && owners.values().all(|n| *n == 1);
            let counts = nodes.iter().map(|node| node.shards.len());
            let even = counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0) <= 1;
            if nodes.len() == live && every_shard_once && even && nodes.iter().all(|node| !node.shards.is_empty()) {
                return nodes;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9` of node `index`.
    fn kill(&mut self, index: usize) {
        if let Some(mut node) = self.nodes[index].take() {
            node.kill_9();
        }
    }
}

/// The port of a node's URL (they all listen on 127.0.0.1).
fn port_of(url: &str) -> u16 {
    url::Url::parse(url).unwrap().port().unwrap()
}

/// A failing test keeps the nodes' logs and data for a look.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("--- the nodes' logs and data are kept in {}", dir.display());
        }
    }
}

/// Whether the node at `api` answers `/readyz` with 200.
async fn ready(api: &Api) -> bool {
    let client = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
    client.get(api.url("/readyz")).send().await.is_ok_and(|response| response.status().as_u16() == 200)
}

/// A ticket for `user` from `api`: where to connect, and the ticket.
async fn ticket(api: &Api, user: &TestUser) -> WsTicketResponse {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = api.post("/api/v1/auth/ws-ticket", Some(&user.tokens.access_token), &()).await;
        if status == 200 {
            return serde_json::from_value(body).unwrap();
        }
        // 503 while the user's shard is between owners.
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "no node took the user's shard");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects `user` to the node that serves them, as the web client does:
/// a ticket from any node names it. Returns the socket and its node URL.
async fn connect_home(api: &Api, user: &TestUser) -> (WsClient, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ticket = ticket(api, user).await;
        let url = ticket.url.clone().expect("a cluster names the node to connect to");
        match WsClient::open(&format!("{url}?ticket={}", ticket.ticket), None).await {
            Ok(ws) => return (ws, url),
            // The shard moved between the ticket and the connection.
            Err(Refused::Closed(Some(close::MOVED))) => {}
            Err(other) => panic!("connecting {} to {url} failed: {other:?}", user.username),
        }
        assert!(Instant::now() < deadline, "{} never found their node", user.username);
    }
}

/// Waits until `socket` is shown `user` with `status`, reading `user`'s
/// views in the order they came: the first with `status` after those an
/// earlier call read. Fails after [`PATIENCE`] (the server's pings keep
/// each read alive).
async fn shows(socket: &mut WsClient, user: UserId, status: PresenceStatus) {
    let wait = async {
        loop {
            let shown = socket
                .wait_for(|frame| match frame {
                    ServerFrame::Presence { users } => {
                        users.iter().find(|view| view.user_id == user).map(|view| view.status)
                    }
                    _ => None,
                })
                .await;
            if shown == status {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("{user} was never shown {status:?}"));
}

/// Registers users until at least one lives on each of `nodes` nodes;
/// returns one per node, each with their home URL.
async fn users_on_every_node(api: &Api, nodes: usize) -> Vec<(TestUser, String)> {
    let mut by_home: BTreeMap<String, TestUser> = BTreeMap::new();
    for index in 0..60 {
        let user = api.register(&format!("user{index}")).await;
        let url = ticket(api, &user).await.url.unwrap();
        by_home.entry(url).or_insert(user);
        if by_home.len() == nodes {
            return by_home.into_iter().map(|(url, user)| (user, url)).collect();
        }
    }
    panic!("60 users all lived on fewer than {nodes} nodes");
}

/// Node `index`'s Prometheus metrics.
async fn metrics(cluster: &Cluster, index: usize) -> String {
    let client = awc::Client::new();
    let body = client.get(cluster.api(index).url("/metrics")).send().await.unwrap().body().await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[actix_web::test]
async fn users_on_different_nodes_chat_one_to_one_and_in_groups_and_strays_are_sent_home() {
    let cluster = Cluster::start(3).await;
    let api = cluster.api(0);
    let people = users_on_every_node(&api, 3).await;
    let [(ann, ann_home), (ben, ben_home), (cat, cat_home)] = <[_; 3]>::try_from(people).unwrap();
    // Operators see the split on each node's metrics.
    let mut owned = 0.0;
    for index in 0..3 {
        owned += common::metric_value(&metrics(&cluster, index).await, "parley_owned_shards").unwrap();
    }
    assert_eq!(owned, f64::from(SHARDS));
    assert!(ann_home != ben_home && ben_home != cat_home && ann_home != cat_home);

    // A client at a node that does not serve it is told to go home.
    let stray = ticket(&api, &ann).await;
    let wrong = cluster.api((0..3).find(|i| cluster.ports[*i] != port_of(&ann_home)).unwrap());
    match WsClient::open(&wrong.ws_url(&format!("?ticket={}", stray.ticket)), None).await {
        Err(Refused::Closed(code)) => assert_eq!(code, Some(close::MOVED)),
        Ok(_) => panic!("a node served a user whose shard it does not own"),
        Err(other) => panic!("{other:?}"),
    }

    // 1:1 across nodes: the friendship, the chat and the message each
    // touch the other node (and the chat's shard may be on a third).
    let (mut ann_ws, _) = connect_home(&api, &ann).await;
    let (mut ben_ws, _) = connect_home(&cluster.api(1), &ben).await;
    let (mut cat_ws, _) = connect_home(&cluster.api(2), &cat).await;
    api.befriend(&ann, &ben).await;
    api.befriend(&ann, &cat).await;
    api.befriend(&ben, &cat).await;
    // Presence crosses nodes: friends see each other come and go.
    shows(&mut ann_ws, ben.id, PresenceStatus::Online).await;
    shows(&mut ben_ws, ann.id, PresenceStatus::Online).await;
    let direct = api.direct_chat(&ann, &ben).await;
    let (sent, duplicate) = ann_ws.send_message(direct, "d1", "hello across nodes").await;
    assert!(!duplicate);
    let (_, received) = ben_ws.next_message().await;
    assert_eq!((received.id, received.body.as_str()), (sent.id, "hello across nodes"));
    // A retry on another connection's node is the same message.
    let (again, duplicate) = ann_ws.send_message(direct, "d1", "hello across nodes").await;
    assert!(duplicate);
    assert_eq!(again.id, sent.id);

    // A group with a member on each node: every member sees every message,
    // in one order, whoever sent it from wherever.
    let members = vec![ben.id, cat.id];
    let (status, body) = api
        .post(
            "/api/v1/chats/groups",
            Some(&ann.tokens.access_token),
            &CreateGroup { name: "three nodes".into(), members },
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let group: ChatSummary = serde_json::from_value(body).unwrap();
    let group = group.id;
    let mut sockets = [&mut ann_ws, &mut ben_ws, &mut cat_ws];
    for round in 0..3 {
        for (index, socket) in sockets.iter_mut().enumerate() {
            socket.send_message(group, &format!("g{round}-{index}"), &format!("round {round} from {index}")).await;
        }
    }
    let mut seen = Vec::new();
    for socket in sockets.iter_mut() {
        let mut bodies = Vec::new();
        while bodies.len() < 9 {
            let (_, message) = socket.next_message().await;
            // Skip the 1:1 messages and the group's "created" event.
            if message.chat_id == group && message.event.is_none() {
                bodies.push(message.body);
            }
        }
        seen.push(bodies);
    }
    assert_eq!(seen[0].len(), 9);
    assert!(seen.iter().all(|order| *order == seen[0]), "members saw different orders: {seen:?}");
    let distinct: BTreeSet<_> = seen[0].iter().collect();
    assert_eq!(distinct.len(), 9);
    // Every node's consumer counted the records it handed over; none went
    // to the dead-letter topic.
    for index in 0..3 {
        let text = metrics(&cluster, index).await;
        let handed_over = common::metric_value(&text, "parley_bus_records_handed_over_total").unwrap();
        assert!(handed_over >= 1.0, "node {index} handed over {handed_over} records");
        assert_eq!(common::metric_value(&text, "parley_bus_records_dead_lettered_total"), Some(0.0));
    }

    // A friend on another node going away shows.
    cat_ws.close().await;
    shows(&mut ann_ws, cat.id, PresenceStatus::Offline).await;
}

/// A group member as a client app: a socket to their node, reconnecting
/// (a new ticket, then catching up) whenever the server closes it, and the
/// group's messages received so far, by `seq`.
struct Member {
    user: TestUser,
    /// The node this member asks for tickets.
    api: Api,
    ws: WsClient,
    home: String,
    /// The `seq` in the first `hello`: everything after it is this test's.
    start_seq: u64,
    /// Group messages received (live, or caught up after a reconnect), by seq.
    received: BTreeMap<u64, i64>,
    /// Sends answered `unavailable` and retried.
    retries: u32,
}

impl Member {
    async fn join(api: &Api, user: TestUser) -> Member {
        let (ws, home) = connect_home(api, &user).await;
        let start_seq = ws.hello_seq();
        let api = Api::new(api.base.clone());
        Member { user, api, ws, home, start_seq, received: BTreeMap::new(), retries: 0 }
    }

    /// Connects again (to whichever node serves the member now) and catches
    /// up on the group's messages since the start.
    async fn reconnect(&mut self, group: ChatId) {
        (self.ws, self.home) = connect_home(&self.api, &self.user).await;
        let caught_up = self.group_messages(group).await;
        self.received.extend(caught_up);
    }

    /// The next frame; `None` if the socket closed (it has reconnected).
    async fn next_frame(&mut self, group: ChatId) -> Option<ServerFrame> {
        let Some(frame) = self.ws.try_next().await else {
            self.reconnect(group).await;
            return None;
        };
        if let ServerFrame::Update { seq, update: Update::Message { message } } = &frame
            && message.chat_id == group
        {
            self.received.insert(*seq, message.id.0);
        }
        Some(frame)
    }

    /// Sends until acknowledged, retrying `unavailable` errors and lost
    /// connections as a client does (same `client_msg_id`).
    async fn send(&mut self, group: ChatId, client_msg_id: &str) -> i64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "{client_msg_id} was never acknowledged");
            let frame =
                ClientFrame::Send { client_msg_id: client_msg_id.into(), chat_id: group, body: client_msg_id.into() };
            self.ws.send(&frame).await;
            while let Some(frame) = self.next_frame(group).await {
                match frame {
                    ServerFrame::Ack { client_msg_id: acked, message, .. } if acked == client_msg_id => {
                        return message.id.0;
                    }
                    ServerFrame::Error(error) if error.client_msg_id.as_deref() == Some(client_msg_id) => {
                        assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");
                        self.retries += 1;
                        tokio::time::sleep(Duration::from_millis(error.retry_after_ms.unwrap_or(100))).await;
                        break;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads until every message of `wanted` has been received.
    async fn receive_all(&mut self, group: ChatId, wanted: &[i64]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let received: BTreeSet<i64> = self.received.values().copied().collect();
            if wanted.iter().all(|id| received.contains(id)) {
                return;
            }
            assert!(Instant::now() < deadline, "{} never got some messages", self.user.username);
            self.next_frame(group).await;
        }
    }

    /// The group's messages after `start_seq`, by seq, from a `sync`.
    async fn group_messages(&mut self, group: ChatId) -> BTreeMap<u64, i64> {
        // The user's shard can still move while this syncs (a rebalance
        // after an outage closes the socket with 4010): sync again at home.
        let deadline = Instant::now() + PATIENCE;
        let synced = loop {
            if let Some(synced) = self.ws.try_sync_all(self.start_seq).await {
                break synced;
            }
            assert!(Instant::now() < deadline, "{} could not sync", self.user.username);
            (self.ws, self.home) = connect_home(&self.api, &self.user).await;
        };
        let mut by_seq = BTreeMap::new();
        for (seq, update) in synced.updates {
            if let Update::Message { message } = update
                && message.chat_id == group
            {
                by_seq.insert(seq, message.id.0);
            }
        }
        by_seq
    }

    /// Every group message after `start_seq` in update-log order, from a
    /// `sync`, after checking that what was received agrees with it.
    async fn history(&mut self, group: ChatId) -> Vec<i64> {
        let by_seq = self.group_messages(group).await;
        // What arrived at or below the hello's seq was before this test's time.
        for (seq, id) in self.received.range(self.start_seq + 1..) {
            assert_eq!(by_seq.get(seq), Some(id), "{} got message {id} as seq {seq}", self.user.username);
        }
        let ids: Vec<i64> = by_seq.into_values().collect();
        let distinct: BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{} has a message twice", self.user.username);
        ids
    }
}

/// A group of three users, one living on each node; returns it and them
/// with their home URLs.
async fn group_on_every_node(api: &Api) -> (ChatId, Vec<(TestUser, String)>) {
    let people = users_on_every_node(api, 3).await;
    for (user, _) in &people[1..] {
        api.befriend(&people[0].0, user).await;
    }
    let members = people[1..].iter().map(|(user, _)| user.id).collect();
    let create = CreateGroup { name: "everywhere".into(), members };
    let (status, body) = api.post("/api/v1/chats/groups", Some(&people[0].0.tokens.access_token), &create).await;
    assert_eq!(status, 201, "{body}");
    (serde_json::from_value::<ChatSummary>(body).unwrap().id, people)
}

/// Checks what every member holds: every acknowledged message once, and
/// nothing else, in one order for all.
async fn everyone_has_exactly(members: &mut [Member], group: ChatId, acked: &[i64]) {
    let mut orders = Vec::new();
    for member in members.iter_mut() {
        orders.push(member.history(group).await);
    }
    let received: BTreeSet<i64> = orders[0].iter().copied().collect();
    assert!(acked.iter().all(|id| received.contains(id)), "acknowledged messages are missing");
    assert_eq!(orders[0].len(), acked.len(), "a message nobody acknowledged was stored");
    assert!(orders.iter().all(|order| *order == orders[0]), "members disagree on the order");
}

/// Registers users until one lives on each of the `SHARDS` shards.
async fn one_user_per_shard(api: &Api) -> Vec<TestUser> {
    let shards = engine::ShardMap::new(SHARDS).unwrap();
    let mut by_shard: BTreeMap<ShardId, TestUser> = BTreeMap::new();
    for index in 0..200 {
        let user = api.register(&format!("probe{index}")).await;
        by_shard.entry(shards.shard_of(user.id.0)).or_insert(user);
        if by_shard.len() == SHARDS as usize {
            return by_shard.into_values().collect();
        }
    }
    panic!("200 users did not cover {SHARDS} shards");
}

#[actix_web::test]
async fn a_node_killed_under_load_loses_nothing_acknowledged_and_takes_shards_back_when_it_returns() {
    let mut cluster = Cluster::start(3).await;
    let api = cluster.api(0);
    let (group, people) = group_on_every_node(&api).await;
    let probes = one_user_per_shard(&api).await;

    // The node to kill owns the group's shard; the member living there
    // only receives, the other two send.
    let group_shard = engine::ShardMap::new(SHARDS).unwrap().shard_of(group.0);
    let owner = cluster.directory().await.owner_of(group_shard).await.unwrap().unwrap();
    let victim = cluster.ports.iter().position(|port| *port == port_of(&owner.url)).unwrap();
    let survivor = cluster.api((victim + 1) % 3);
    let mut members = Vec::new();
    for (user, _) in people {
        members.push(Member::join(&survivor, user).await);
    }
    members.sort_by_key(|member| port_of(&member.home) == cluster.ports[victim]);
    let victim_url = members[2].home.clone();

    // Two members on the surviving nodes send; the third node dies a third
    // of the way through.
    let mut acked = Vec::new();
    for round in 0..60 {
        if round == 20 {
            cluster.kill(victim);
        }
        for (index, sender) in members[..2].iter_mut().enumerate() {
            acked.push(sender.send(group, &format!("m{round}-{index}")).await);
        }
    }
    cluster.settled(2).await;

    // The member whose node died reconnects to the node that has their
    // shard now and catches up; everyone has every acknowledged message,
    // in one order.
    members[2].reconnect(group).await;
    assert_ne!(members[2].home, victim_url, "the dead node still serves its users");
    everyone_has_exactly(&mut members, group, &acked).await;

    // The node comes back and takes shards again: clients of the shards it
    // takes are told to move (4010) and find it through their tickets.
    let mut probe_sockets = Vec::new();
    for probe in &probes {
        let (ws, home) = connect_home(&survivor, probe).await;
        probe_sockets.push((ws, home));
    }
    cluster.start_node(victim).await;
    cluster.settled(3).await;
    let mut moved = 0;
    for (probe, (ws, home)) in probes.iter().zip(&mut probe_sockets) {
        let new_home = ticket(&survivor, probe).await.url.unwrap();
        if new_home != *home {
            assert_eq!(ws.closed().await, Some(close::MOVED), "{} was not told to move", probe.username);
            let (mut ws, at) = connect_home(&survivor, probe).await;
            assert_eq!(at, new_home);
            ws.ping_pong().await;
            moved += 1;
        } else if let Err(code) = ws.ping_pong_or_close().await {
            // A broker that rebalances eagerly (tansu) revokes shards and
            // assigns some back to the same node: their clients are told to
            // move as well, and their tickets name the same node again.
            assert_eq!(code, Some(close::MOVED), "{} was closed with {code:?}", probe.username);
            let (mut ws, at) = connect_home(&survivor, probe).await;
            assert_eq!(at, new_home);
            ws.ping_pong().await;
        }
    }
    assert!(moved > 0, "the returning node took no shard with a user on it");
    let retries: u32 = members.iter().map(|member| member.retries).sum();
    assert!(retries > 0, "no send met the dead node: the kill did not happen under load");
}

/// Three members, one on each node, send 30 rounds to their group while
/// `disturb` acts on the cluster at the start of each round; returns the
/// group, the members and every acknowledged message.
async fn group_chat_under(
    cluster: &mut Cluster,
    mut disturb: impl FnMut(&mut Cluster, u32),
) -> (ChatId, Vec<Member>, Vec<i64>) {
    let api = cluster.api(0);
    let (group, people) = group_on_every_node(&api).await;
    let mut members = Vec::new();
    for (user, _) in people {
        members.push(Member::join(&api, user).await);
    }
    let mut acked = Vec::new();
    for round in 0..30 {
        disturb(cluster, round);
        for (index, sender) in members.iter_mut().enumerate() {
            acked.push(sender.send(group, &format!("r{round}-{index}")).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (group, members, acked)
}

#[actix_web::test]
async fn a_redis_restart_loses_no_message_and_the_cluster_recovers() {
    // Redis comes back empty: leases, the directory, tickets and the ended
    // sessions are gone. Sends meet `unavailable` while the nodes claim new
    // generator IDs.
    let mut cluster = Cluster::start(3).await;
    let ended = cluster.api(0).register("ended").await;
    let logout = RefreshRequest { refresh_token: ended.tokens.refresh_token.clone() };
    assert_eq!(cluster.api(1).post("/api/v1/auth/logout", None, &logout).await.0, 204);
    let (group, mut members, acked) = group_chat_under(&mut cluster, |cluster, round| {
        if round == 10 {
            cluster.redis.restart();
        }
    })
    .await;
    cluster.settled(3).await;
    for member in &mut members {
        member.receive_all(group, &acked).await;
    }
    everyone_has_exactly(&mut members, group, &acked).await;

    // The ended session's access token (still unexpired) is refused by
    // every node: the nodes restored the ended sessions from the store. It
    // never passed meanwhile; 503 is the answer while the set is restored.
    let token = Some(ended.tokens.access_token.as_str());
    for index in 0..3 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = cluster.api(index).get("/api/v1/me", token).await;
            assert!(status == 401 || status == 503, "node {index}: {status} {body}");
            if status == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "node {index} never restored the ended sessions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Tickets work again, and a member coming back shows online to the others.
    let api = cluster.api(0);
    let leaving = members.remove(1);
    let returning = leaving.user.clone();
    leaving.ws.close().await;
    shows(&mut members[0].ws, returning.id, PresenceStatus::Offline).await;
    let (mut ws, _) = connect_home(&api, &returning).await;
    ws.ping_pong().await;
    shows(&mut members[0].ws, returning.id, PresenceStatus::Online).await;
}

#[actix_web::test]
async fn a_failed_kafka_broker_delays_deliveries_and_loses_none() {
    // One of three brokers is down for longer than a consumer session
    // (the mock cluster moves no partition leaders: records for its
    // partitions wait in the producers, and if it coordinates the group,
    // shards lose their owners until it is back). On the mock cluster also
    // when the others run on tansu: a tansu is one broker.
    let mut cluster = Cluster::start_with(TestBroker::mock(), 3, |_| {}).await;
    let (group, mut members, acked) = group_chat_under(&mut cluster, |cluster, round| {
        if round == 10 {
            let broker = cluster.broker.clone();
            actix_web::rt::spawn(async move {
                broker.broker_down(1).unwrap();
                tokio::time::sleep(BROKER_OUTAGE).await;
                broker.broker_up(1).unwrap();
            });
        }
    })
    .await;
    // Every acknowledged message reaches every member: nothing was lost on
    // the way (a member whose shard moved meanwhile catches up as it
    // reconnects).
    for member in &mut members {
        member.receive_all(group, &acked).await;
    }
    everyone_has_exactly(&mut members, group, &acked).await;
}

/// One node on a mock cluster where broker 2 leads every delivery
/// partition and broker 1 coordinates the group, with publishes giving up
/// after [`PUBLISH_PATIENCE_MS`]: taking broker 2 down fails publishes but
/// moves no shard, so nobody is told to reconnect.
async fn one_node_whose_partitions_broker_2_leads() -> Cluster {
    let cluster = Cluster::start_with(TestBroker::mock(), 1, |config| {
        if let Some(kafka) = &mut config.kafka {
            kafka.delivery_timeout_ms = PUBLISH_PATIENCE_MS;
        }
    })
    .await;
    let kafka = KafkaConfig::default();
    cluster.broker.place(&kafka.delivery_topic, SHARDS as i32, 2, &kafka.group_id, 1).unwrap();
    cluster
}

/// Waits until the only node has counted a failed publish with `outcome`
/// (`queued` to be published again, or `published`).
async fn wait_for_redeliveries(cluster: &Cluster, outcome: &str) {
    let counted = format!(r#"parley_bus_redeliveries_total{{outcome="{outcome}"}}"#);
    let deadline = Instant::now() + PATIENCE;
    while !metrics(cluster, 0).await.contains(&counted) {
        assert!(Instant::now() < deadline, "no failed publish was {outcome}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn an_update_whose_publish_failed_reaches_its_connected_recipient_once_the_broker_is_back() {
    // The message is stored and acknowledged; the recipient, connected all
    // along and sent nothing after it, is shown it only because the node
    // publishes it again.
    let cluster = one_node_whose_partitions_broker_2_leads().await;
    let api = cluster.api(0);
    let (ann, bob, chat) = api.alice_and_bob().await;
    let (mut ann_ws, _) = connect_home(&api, &ann).await;
    let (mut bob_ws, _) = connect_home(&api, &bob).await;
    // Everyone knows the new leader: a message goes through.
    ann_ws.send_message(chat, "before", "before").await;
    assert_eq!(bob_ws.next_message().await.1.body, "before");

    cluster.broker.broker_down(2).unwrap();
    let (sent, _) = ann_ws.send_message(chat, "while-down", "while down").await;
    wait_for_redeliveries(&cluster, "queued").await;
    tokio::time::sleep(Duration::from_millis(u64::from(PUBLISH_PATIENCE_MS))).await;
    cluster.broker.broker_up(2).unwrap();
    let (_, shown) = bob_ws.next_message().await;
    assert_eq!((shown.id, shown.body.as_str()), (sent.id, "while down"));
    wait_for_redeliveries(&cluster, "published").await;
}

#[actix_web::test]
async fn presence_bookkeeping_that_failed_while_the_bus_was_down_is_published_again() {
    // The watcher's connection registers its interest in the friend
    // (bookkeeping on the bus) while broker 2 is down: that publish fails,
    // is queued, and is published once the broker is back. The friend's
    // later change reaches the watcher, who never reconnected.
    let cluster = one_node_whose_partitions_broker_2_leads().await;
    let api = cluster.api(0);
    let watcher = api.register("watcher").await;
    let friend = api.register("friend").await;
    api.befriend(&watcher, &friend).await;
    let (mut friend_ws, _) = connect_home(&api, &friend).await;
    friend_ws.ping_pong().await;

    cluster.broker.broker_down(2).unwrap();
    let (mut watcher_ws, _) = connect_home(&api, &watcher).await;
    wait_for_redeliveries(&cluster, "queued").await;
    cluster.broker.broker_up(2).unwrap();
    wait_for_redeliveries(&cluster, "published").await;
    let busy = serde_json::json!({"status": "busy"});
    let response = awc::Client::new()
        .put(api.url("/api/v1/me/presence"))
        .bearer_auth(&friend.tokens.access_token)
        .send_json(&busy)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    shows(&mut watcher_ws, friend.id, PresenceStatus::Busy).await;
}

/// The index of the node at `url`.
fn index_of(cluster: &Cluster, url: &str) -> usize {
    cluster.ports.iter().position(|port| *port == port_of(url)).unwrap()
}

#[actix_web::test]
async fn presence_recovers_by_itself_when_a_watched_users_node_dies() {
    // On the mock cluster also when the others run on tansu: tansu 0.6.0
    // rebalances eagerly, so a member's death may revoke the survivors'
    // shards too (once for ~6 s, in CI on 2026-11-28), which tells the
    // watcher to move; this test is about the watcher's view recovering
    // while the watcher stays connected.
    let mut cluster = Cluster::start_with(TestBroker::mock(), 3, |_| {}).await;
    let people = users_on_every_node(&cluster.api(0), 3).await;
    let [(watcher, watcher_home), (friend, friend_home), _] = <[_; 3]>::try_from(people).unwrap();
    let victim = index_of(&cluster, &friend_home);
    let survivor = cluster.api(index_of(&cluster, &watcher_home));
    survivor.befriend(&watcher, &friend).await;
    let (mut watcher_ws, _) = connect_home(&survivor, &watcher).await;
    let (mut friend_ws, _) = connect_home(&survivor, &friend).await;
    shows(&mut watcher_ws, friend.id, PresenceStatus::Online).await;
    shows(&mut friend_ws, watcher.id, PresenceStatus::Online).await;

    // The friend's node dies with the presence book of the friend's shard.
    // Once another node owns that shard, the watcher is shown the friend
    // offline (nobody holds the friend's connections any more)...
    cluster.kill(victim);
    drop(friend_ws);
    cluster.settled(2).await;
    shows(&mut watcher_ws, friend.id, PresenceStatus::Offline).await;

    // ...online when the friend reconnects to the shard's new owner, and
    // offline when they leave: the watcher never reconnected.
    let (mut friend_ws, at) = connect_home(&survivor, &friend).await;
    assert_ne!(at, friend_home, "the dead node still serves its users");
    shows(&mut friend_ws, watcher.id, PresenceStatus::Online).await;
    shows(&mut watcher_ws, friend.id, PresenceStatus::Online).await;
    friend_ws.close().await;
    shows(&mut watcher_ws, friend.id, PresenceStatus::Offline).await;
    watcher_ws.ping_pong().await;
}

#[actix_web::test]
async fn users_whose_shard_moves_to_a_joining_node_stay_online_for_their_watchers_while_they_reconnect() {
    // The production grace and presence time to live: long enough for a
    // client to reconnect, and for a shard to find its new owner. On the
    // mock cluster also when the others run on tansu: tansu 0.6.0 gave a
    // joining member partitions that another still owned, for some ten
    // seconds, so the handover this test watches is not clean there.
    let mut cluster = Cluster::start_with(TestBroker::mock(), 2, |config| {
        config.engine.presence_offline_grace_ms = engine::EngineConfig::default().presence_offline_grace_ms;
        if let Some(redis) = &mut config.redis {
            redis.presence_ttl_ms = RedisConfig::default().presence_ttl_ms;
        }
    })
    .await;
    let api = cluster.api(0);
    let friends = one_user_per_shard(&api).await;
    let watcher = api.register("watcher").await;
    let mut sockets = Vec::new();
    for friend in &friends {
        api.befriend(&watcher, friend).await;
        sockets.push(connect_home(&api, friend).await.0);
    }
    let (mut watcher_ws, _) = connect_home(&api, &watcher).await;
    // One frame may carry several of them.
    let mut shown: BTreeMap<UserId, PresenceStatus> = BTreeMap::new();
    let everyone_online = |shown: &BTreeMap<UserId, PresenceStatus>| {
        friends.iter().all(|friend| shown.get(&friend.id) == Some(&PresenceStatus::Online))
    };
    while !everyone_online(&shown) {
        let views = watcher_ws
            .wait_for(|frame| match frame {
                ServerFrame::Presence { users } => Some(users.clone()),
                _ => None,
            })
            .await;
        shown.extend(views.iter().map(|view| (view.user_id, view.status)));
    }
    watcher_ws.take_backlog();

    // A third node joins and takes some shards from the two live nodes;
    // their users are told to reconnect (4010). The watcher, if its own
    // shard moved, reconnects at once; the others take their time, well
    // within the grace.
    cluster.nodes.push(None);
    cluster.ports.push(TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    cluster.start_node(2).await;
    let owners = cluster.settled(3).await;
    let mut seen = Vec::new();
    if owned_by_node_2(&owners, &watcher) {
        let (frames, code) = watcher_ws.frames_until_close().await;
        assert_eq!(code, Some(close::MOVED));
        seen.extend(frames);
        watcher_ws = connect_home(&api, &watcher).await.0;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut moved = 0;
    for (friend, socket) in friends.iter().zip(&mut sockets) {
        if owned_by_node_2(&owners, friend) {
            let (_, code) = socket.frames_until_close().await;
            assert_eq!(code, Some(close::MOVED));
            *socket = connect_home(&api, friend).await.0;
            moved += 1;
        }
    }
    assert!(moved > 0, "the new node took no shard: {owners:?}");

    // Past the grace, the watcher was never shown any of them offline: the
    // new owners took the moved users over from the presence directory.
    tokio::time::sleep(Duration::from_millis(engine::EngineConfig::default().presence_offline_grace_ms + 500)).await;
    watcher_ws.ping_pong().await;
    seen.extend(watcher_ws.take_backlog());
    let offline: Vec<UserId> = seen
        .into_iter()
        .filter_map(|frame| match frame {
            ServerFrame::Presence { users } => Some(users),
            _ => None,
        })
        .flatten()
        .filter(|view| view.status == PresenceStatus::Offline)
        .map(|view| view.user_id)
        .collect();
    assert_eq!(offline, [], "shown offline during the handover");
}

/// Whether the third node announced the shard of `user`.
fn owned_by_node_2(owners: &[NodeInfo], user: &TestUser) -> bool {
    let shard = engine::ShardMap::new(SHARDS).unwrap().shard_of(user.id.0);
    owners.iter().any(|node| node.name == Cluster::name(2) && node.shards.contains(&shard))
}

#[actix_web::test]
async fn logging_out_other_sessions_through_another_node_ends_them_on_every_node() {
    let cluster = Cluster::start(3).await;
    let api = cluster.api(0);
    // Session A (the phone) has a socket on the user's node; session B
    // (the laptop) ends the others through a node that does not hold it.
    let phone = api.register("twodevices").await;
    let laptop = TestUser { tokens: api.login(&phone.username, &phone.password).await, ..phone.clone() };
    let (mut phone_ws, home) = connect_home(&api, &phone).await;
    phone_ws.ping_pong().await;
    let elsewhere = cluster.api((index_of(&cluster, &home) + 1) % 3);
    let (status, body) = elsewhere.post("/api/v1/auth/logout-others", Some(&laptop.tokens.access_token), &()).await;
    assert_eq!((status, body["sessions_ended"].as_u64()), (200, Some(1)), "{body}");

    assert_eq!(phone_ws.closed().await, Some(close::SESSION_REVOKED));
    for index in 0..3 {
        let node = cluster.api(index);
        let (status, body) = node.get("/api/v1/me", Some(&phone.tokens.access_token)).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "node {index}: {body}");
        let (status, body) = node.post("/api/v1/auth/ws-ticket", Some(&phone.tokens.access_token), &()).await;
        assert_eq!(status, 401, "node {index}: {body}");
        let (status, _) = node.get("/api/v1/me", Some(&laptop.tokens.access_token)).await;
        assert_eq!(status, 200, "node {index} refused the session that stayed");
    }
}

#[actix_web::test]
async fn an_ips_auth_budget_and_a_users_search_budget_are_counted_by_all_nodes_together() {
    // Each node alone lets an IP burst 4 auth requests and a user 2
    // searches; the cluster allows 1 + 4 auth requests a minute and 1 + 2
    // searches a second in all, however they are spread over the nodes.
    let limits = LimitsConfig {
        auth_per_minute_per_ip: 1,
        auth_burst_per_ip: 4,
        searches_per_second: 1,
        search_burst: 2,
        ..LimitsConfig::default()
    };
    let cluster = Cluster::start_with(TestBroker::start(), 2, move |config| config.limits = limits.clone()).await;
    let nodes = [cluster.api(0), cluster.api(1)];
    let user = nodes[0].register("guessed").await; // registers, then logs in: two requests
    let wrong = serde_json::json!({ "username": user.username, "password": "not the password" });
    for attempt in 1..=3 {
        let (status, body) = nodes[1].post("/api/v1/auth/login", None, &wrong).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    // Node 0's third auth request is within its own burst, but the IP's
    // sixth in the cluster.
    let (status, body) = nodes[0].post("/api/v1/auth/login", None, &wrong).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    let right = serde_json::json!({ "username": user.username, "password": user.password });
    let (status, body) = nodes[1].post("/api/v1/auth/login", None, &right).await;
    assert_eq!(status, 429, "node 1 counts into the same budget: {body}");

    // Searches: two on node 0 and one on node 1 spend the second's budget,
    // so node 1's second search is refused though its own burst allows it.
    // A window that ran out meanwhile (a stall of this machine) proves
    // nothing; the next second is tried.
    let token = Some(user.tokens.access_token.as_str());
    let search = "/api/v1/users/search?q=guessed";
    for _ in 0..5 {
        let started = Instant::now();
        let mut statuses = Vec::new();
        for node in [0, 0, 1, 1] {
            statuses.push(nodes[node].get(search, token).await.0);
        }
        if started.elapsed() < Duration::from_millis(800) {
            assert_eq!(statuses, [200, 200, 200, 429]);
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("four searches never fitted in one second");
}
