//! Cluster adapters chosen by config. Two nodes sharing a store and a real
//! `redis-server` (`[redis]`): each leases its own generator ID, a WebSocket
//! ticket issued by one node is redeemed once on any, and a stopped node's
//! generator ID is free at once. A node whose Redis or ScyllaDB cannot be
//! reached refuses to start.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{Api, HandshakeRefused, WsClient, test_config};
use engine::ids::decompose;
use engine::redis::testing::RedisServer;
use gateway::Server;
use protocol::rest::WsTicketResponse;
use protocol::ws::ServerFrame;

/// Generator leases in these tests: a fresh claim counts after one of them.
const LEASE_TTL: Duration = Duration::from_millis(1000);

/// A node on `dir`'s store and `redis`.
async fn node(dir: &tempfile::TempDir, redis: &RedisServer) -> (Server, Api) {
    let mut config = test_config(dir);
    config.redis = Some(redis.config(LEASE_TTL));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(config, listener).await.unwrap().spawn();
    let api = Api::new(format!("http://{}", server.addr()));
    (server, api)
}

#[actix_web::test]
async fn nodes_sharing_redis_get_their_own_generator_ids_and_each_others_tickets() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, api_a) = node(&dir, &redis).await;
    let (_b, api_b) = node(&dir, &redis).await;

    // IDs made by the two nodes come from different generators.
    let alice = api_a.register("alice").await;
    let bob = api_b.register("bob").await;
    assert_ne!(decompose(alice.id.0).generator, decompose(bob.id.0).generator);
    let leased = redis.raw(&["--scan", "--pattern", "test:gen:*"]);
    assert_eq!(leased.lines().count(), 2, "one lease per node: {leased}");

    // A ticket from node A opens a socket on node B, once.
    let (status, body) = api_a.post("/api/v1/auth/ws-ticket", Some(&alice.tokens.access_token), &()).await;
    assert_eq!(status, 200, "{body}");
    let ticket: WsTicketResponse = serde_json::from_value(body).unwrap();
    let ws = WsClient::connect(&api_b.ws_url(&format!("?ticket={}", ticket.ticket)), None).await.unwrap();
    assert!(matches!(&ws.hello, ServerFrame::Hello { user_id, .. } if *user_id == alice.id));
    match WsClient::connect(&api_a.ws_url(&format!("?ticket={}", ticket.ticket)), None).await {
        Err(HandshakeRefused { status }) => assert_eq!(status, 401, "a ticket works once, on any node"),
        Ok(_) => panic!("a redeemed ticket opened a second socket"),
    }

    // A node that stops gives its generator ID back at once.
    a.shutdown().await;
    let leased = redis.raw(&["--scan", "--pattern", "test:gen:*"]);
    assert_eq!(leased.lines().count(), 1, "node A released its lease: {leased}");
}

#[actix_web::test]
async fn a_node_without_redis_refuses_to_start_instead_of_guessing() {
    let mut redis = RedisServer::start();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.redis = Some(redis.config(LEASE_TTL));
    let started = Server::start(config, TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let error = format!("{:#}", started.err().expect("a node whose Redis is down must not start"));
    assert!(error.contains("shared state"), "{error}");
}

#[actix_web::test]
async fn a_node_whose_scylla_cannot_be_reached_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    // A loopback port nobody listens on: no CQL server runs on these machines.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.scylla =
        Some(storage::scylla::ScyllaConfig { nodes: vec![format!("127.0.0.1:{port}")], ..Default::default() });
    let started = Server::start(config, TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let error = format!("{:#}", started.err().expect("a node without its database must not start"));
    assert!(error.contains("opening ScyllaDB"), "{error}");
}
