//! The `parley` binary as a process: nothing acknowledged is lost to
//! `kill -9`, SIGTERM drains gracefully, keys and peppers survive restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, TestServer, spawn_node, spawn_node_logging_to, test_config};
use protocol::MessageId;
use protocol::rest::MessagePage;
use protocol::ws::ClientFrame;

fn signal(node: &Node, name: &str) {
    let status = Command::new("kill").args(["-s", name, &node.0.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[actix_web::test]
async fn acknowledged_messages_survive_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, api) = spawn_node(dir.path()).await;
    let (alice, bob, chat) = api.alice_and_bob().await;
    let mut a = api.connect(&alice).await;

    // Pipeline sends, then keep every ack that arrives before the kill.
    for i in 0..200 {
        a.send(&ClientFrame::Send { client_msg_id: format!("k{i}"), chat_id: chat, body: format!("durable {i}") })
            .await;
    }
    let mut acked = Vec::new();
    for i in 0..120 {
        acked.push(a.send_message(chat, &format!("k{i}"), &format!("durable {i}")).await.0.id);
    }
    node.kill_9(); // SIGKILL: no shutdown hooks, no flush.

    let (mut node, api) = spawn_node(dir.path()).await;
    // Signing keys survived: the old access token still works.
    let page: MessagePage =
        api.get_ok(&format!("/api/v1/chats/{chat}/messages?limit=200"), &bob.tokens.access_token).await;
    let stored: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged message {id} was lost");
    }
    // The update log is intact and gap-free for what was stored.
    let mut b = api.connect(&bob).await;
    let log = b.sync_all(0).await;
    assert_eq!(log.messages().len(), stored.len());
    assert_eq!(log.seqs(), (1..=log.seq).collect::<Vec<_>>());
    // IDs keep growing after the restart, and retries of acked sends are recognised.
    let mut a = api.connect(&alice).await;
    let (retry, duplicate) = a.send_message(chat, "k0", "durable 0").await;
    assert!(duplicate);
    assert_eq!(retry.id, acked[0]);
    let (fresh, _) = a.send_message(chat, "after-restart", "hello again").await;
    assert!(stored.iter().all(|id| fresh.id > *id), "a new ID is above every ID issued before the crash");
    node.kill_9();
}

#[actix_web::test]
async fn sigterm_closes_clients_with_going_away_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, api) = spawn_node(dir.path()).await;
    let alice = api.register("alice").await;
    let mut a = api.connect(&alice).await;
    signal(&node, "TERM");
    assert_eq!(a.closed().await, Some(protocol::ws::close::GOING_AWAY));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "parley did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    // Logs were JSON lines (PARLEY_LOG_FORMAT=json) and say what happened.
    let log = std::fs::read_to_string(dir.path().join("parley.log")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["message"] == "parley listening"));
    assert!(lines.iter().any(|l| l["message"] == "parley stopped"));
    assert!(!log.contains(&alice.password), "secrets never reach the logs");
    assert!(!log.contains(&alice.tokens.refresh_token));
}

#[actix_web::test]
async fn a_node_whose_log_nobody_reads_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // Its stderr is a pipe that is kept open and never read: it is full
    // after 64 KiB. A connection logs two lines (~360 bytes as JSON), so
    // the pipe fills within the first two hundred connections.
    let (mut node, api) = spawn_node_logging_to(dir.path(), Stdio::piped()).await;
    let _unread = node.0.stderr.take().unwrap();
    let alice = api.register("alice").await;
    for _ in 0..1_000 {
        api.connect(&alice).await.close().await;
    }
    let bob = api.register("bob").await;
    let mut b = api.connect(&bob).await;
    b.ping_pong().await;
}

#[actix_web::test]
async fn a_logged_out_access_token_stays_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&dir);
    let server = TestServer::start_in(dir, config.clone()).await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", &alice.password).await;
    let logout = protocol::rest::RefreshRequest { refresh_token: alice.tokens.refresh_token.clone() };
    assert_eq!(server.post("/api/v1/auth/logout", None, &logout).await.0, 204);
    server.server.shutdown().await;

    // The node kept the ended sessions in memory only; it loads them
    // again from the store as it starts.
    let server = TestServer::start_in(server.dir, config).await;
    let (status, body) = server.get("/api/v1/me", Some(&alice.tokens.access_token)).await;
    assert_eq!(status, 401, "the ended session's unexpired access token: {body}");
    assert_eq!(server.get("/api/v1/me", Some(&phone.access_token)).await.0, 200, "the other session lives");
}

#[actix_web::test]
async fn passwords_under_an_old_pepper_still_work_and_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.auth.pepper = Some(gateway::config::Secret("pepper-one".into()));
    let server = TestServer::start_in(dir, config.clone()).await;
    let alice = server.register("alice").await;
    server.server.shutdown().await;
    let dir = server.dir;

    // Rotate: version 2 is current, version 1 still known.
    config.auth.pepper = Some(gateway::config::Secret("pepper-two".into()));
    config.auth.pepper_version = 2;
    config.auth.old_peppers = [("1".to_string(), gateway::config::Secret("pepper-one".into()))].into();
    let server = TestServer::start_in(dir, config.clone()).await;
    server.login("alice", &alice.password).await;
    server.server.shutdown().await;
    let dir = server.dir;

    // Version 1 retired: the login above re-hashed Alice's password.
    config.auth.old_peppers.clear();
    let server = TestServer::start_in(dir, config.clone()).await;
    server.login("alice", &alice.password).await;
    let (status, body) = server
        .post(
            "/api/v1/auth/login",
            None,
            &protocol::rest::LoginRequest { username: "alice".into(), password: "not her password".into() },
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_credentials")));
    server.server.shutdown().await;
    let dir = server.dir;

    // Without the right pepper, hashes do not verify: the pepper matters.
    config.auth.pepper = Some(gateway::config::Secret("pepper-three".into()));
    config.auth.pepper_version = 3;
    let server = TestServer::start_in(dir, config).await;
    let (status, _) = server
        .post(
            "/api/v1/auth/login",
            None,
            &protocol::rest::LoginRequest { username: "alice".into(), password: alice.password },
        )
        .await;
    assert_eq!(status, 401);
}

#[test]
fn version_flag_prints_the_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_parley")).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("parley {}", env!("CARGO_PKG_VERSION")));
}
