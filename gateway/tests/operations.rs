//! Operating a node: health, readiness, metrics, the OpenAPI document,
//! graceful shutdown and back-pressure on slow clients.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use actix_codec::Framed;
use awc::ws::{Codec, Frame};
use common::{TestServer, metric_value};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use protocol::ws::{ClientFrame, ServerFrame, Update, close};

#[actix_web::test]
async fn liveness_and_readiness_answer() {
    let server = TestServer::start().await;
    let (status, _, body) = server.get_raw("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ok");
    let (status, _, body) = server.get_raw("/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ready");
}

#[actix_web::test]
async fn metrics_follow_connections_and_messages() {
    let server = TestServer::start().await;
    let (status, content_type, body) = server.get_raw("/metrics", None).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(metric_value(&text, "parley_messages_sent_total"), Some(0.0), "{text}");
    assert_eq!(metric_value(&text, "parley_connections"), Some(0.0));
    let open_fds = metric_value(&text, "process_open_fds");
    assert!(open_fds.is_some_and(|fds| fds > 0.0), "a process metric is exported: {text}");

    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(a.send_message(chat, &format!("m{i}"), &format!("message {i}")).await.0);
    }
    for message in &sent {
        assert_eq!(&b.next_message().await.1, message);
        assert_eq!(&a.next_message().await.1, message);
    }
    // A retried send is not a new message.
    let (_, duplicate) = a.send_message(chat, "m0", "message 0").await;
    assert!(duplicate);

    let (_, _, body) = server.get_raw("/metrics", None).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let value = |name: &str| metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert_eq!(value("parley_messages_sent_total"), 3.0);
    assert_eq!(value("parley_messages_delivered_total"), 6.0, "each message reached both users' devices");
    assert_eq!(value("parley_connections"), 2.0);
    assert_eq!(value("parley_actors{kind=\"user\"}"), 2.0);
    assert_eq!(value("parley_actors{kind=\"connection\"}"), 2.0);
    assert_eq!(value("parley_send_ack_seconds_count"), 4.0, "every acked send is timed");
    assert_eq!(value("parley_send_ack_seconds_bucket{le=\"+Inf\"}"), 4.0);
    assert!(text.contains("parley_send_ack_seconds_bucket{le=\"0.001\"}"), "{text}");

    // A closed connection is no longer counted.
    b.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("parley_connections").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "parley_connections stays at {:?}",
            server.metric("parley_connections").await
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn the_openapi_document_describes_the_rest_api() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/ws-ticket", "post"),
        ("/api/v1/auth/jwks", "get"),
        ("/api/v1/me", "get"),
        ("/api/v1/users/{user_id}", "get"),
        ("/api/v1/chats", "get"),
        ("/api/v1/chats/direct", "post"),
        ("/api/v1/chats/{chat_id}/messages", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from {:?}",
            paths.keys()
        );
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("bearer"), "{bearer}");
    assert!(doc["components"]["schemas"].get("Problem").is_some(), "the error body is described");
    let me = &paths["/api/v1/me"]["get"];
    assert!(me["security"].to_string().contains("bearer"), "GET /me declares bearer auth: {me}");
}

#[actix_web::test]
async fn shutdown_closes_clients_with_1001_and_turns_unready() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    assert_eq!(server.try_status("/readyz").await, Some(200));

    let readiness_during = async {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        server.try_status("/readyz").await
    };
    let started = Instant::now();
    let ((), a_code, b_code, during) = tokio::join!(server.server.shutdown(), a.closed(), b.closed(), readiness_during);
    assert_eq!(a_code, Some(close::GOING_AWAY));
    assert_eq!(b_code, Some(close::GOING_AWAY));
    assert_ne!(during, Some(200), "a draining node is not ready");
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    assert_ne!(server.try_status("/readyz").await, Some(200), "a stopped node is not ready");
}

/// The close code a raw socket receives; `None` if it ends or goes quiet without one.
async fn close_code(mut framed: Framed<awc::BoxedSocket, Codec>) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), framed.next()).await {
            Ok(Some(Ok(Frame::Close(reason)))) => return reason.map(|r| u16::from(r.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

#[actix_web::test]
async fn sockets_opened_as_shutdown_begins_are_closed_with_1001_too() {
    // Handshakes race the start of draining; every socket the node opened
    // must still get 1001, and none may hold the shutdown up.
    for round in 0..5 {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let client = awc::Client::builder().timeout(common::WAIT).finish();
        let mut handshakes: FuturesUnordered<_> = (0..12)
            .map(|_| {
                let req = client.ws(server.ws_url("")).protocols(["parley.v1"]).bearer_auth(&alice.tokens.access_token);
                async move { req.connect().await.ok().map(|(_, framed)| framed) }
            })
            .collect();
        let mut open = Vec::new();
        while open.is_empty() {
            match handshakes.next().await {
                Some(framed) => open.extend(framed),
                None => panic!("round {round}: no handshake succeeded"),
            }
        }
        // Drain as soon as one socket is open, with the others in flight.
        let closes = async {
            while let Some(framed) = handshakes.next().await {
                open.extend(framed);
            }
            futures_util::future::join_all(open.into_iter().map(close_code)).await
        };
        let started = Instant::now();
        let (codes, drained) =
            tokio::join!(closes, tokio::time::timeout(Duration::from_secs(5), server.server.shutdown()));
        let missed = codes.iter().filter(|code| **code != Some(close::GOING_AWAY)).count();
        assert_eq!(missed, 0, "round {round}: {missed} of {} open sockets got no 1001: {codes:?}", codes.len());
        assert!(drained.is_ok(), "round {round}: shutdown still waiting after {:?}", started.elapsed());
    }
}

#[actix_web::test]
async fn a_slow_consumer_is_closed_with_4008_and_the_sender_is_unaffected() {
    // Alice's batch of 10 sends queues up to 20 frames for her (acks and her
    // own updates) before her writer may run on a busy machine; Bob, who reads
    // nothing, overflows 32 queued frames once his socket buffers are full.
    let server = TestServer::start_with(|c| c.engine.outbound_queue = 32).await;
    let (alice, bob, chat) = server.alice_and_bob().await;
    let mut a = server.connect(&alice).await;
    // Bob connects and then reads nothing while Alice sends.
    let mut b = server.connect(&bob).await;
    let base = b.hello_seq();

    let body = "x".repeat(15 * 1024);
    let mut sent = 0u64;
    while server.metric("parley_slow_consumer_closes_total").await != Some(1.0) {
        assert!(sent < 2_000, "bob was not closed after {sent} messages of 15 KiB");
        let batch: Vec<String> = (sent..sent + 10).map(|i| format!("s{i}")).collect();
        for id in &batch {
            a.send(&ClientFrame::Send { client_msg_id: id.clone(), chat_id: chat, body: body.clone() }).await;
        }
        for id in &batch {
            a.wait_for(|frame| match frame {
                ServerFrame::Ack { client_msg_id, .. } if client_msg_id == id => Some(()),
                ServerFrame::Error(error) => panic!("alice's send failed: {error:?}"),
                _ => None,
            })
            .await;
        }
        // Alice reads her own updates too: she keeps up.
        for _ in &batch {
            a.next_message().await;
        }
        sent += 10;
    }

    let (frames, code) = b.frames_until_close().await;
    assert_eq!(code, Some(close::SLOW_CONSUMER), "after {} frames", frames.len());
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Update { seq, update: Update::Message { .. } } => Some(*seq),
            ServerFrame::Presence { .. } => None,
            other => panic!("unexpected frame {other:?}"),
        })
        .collect();
    assert!((seqs.len() as u64) < sent, "bob did miss updates");
    assert_eq!(seqs, (base + 1..=base + seqs.len() as u64).collect::<Vec<_>>(), "what bob got has no gap");

    // Alice is still connected and working.
    let (last, _) = a.send_message(chat, "after", "still here").await;
    a.ping_pong().await;

    // Bob reconnects and syncs back to a consistent state.
    let mut b = server.connect(&bob).await;
    assert_eq!(b.hello_seq(), base + sent + 1);
    let processed = base + seqs.len() as u64;
    let synced = b.sync_all(processed).await;
    assert_eq!(synced.seq, base + sent + 1);
    assert_eq!(synced.seqs(), ((processed + 1)..=base + sent + 1).collect::<Vec<_>>());
    assert_eq!(synced.messages().last().map(|(_, m)| m.id), Some(last.id));
}

/// A connection storm waits in the node's accept queue while its workers
/// are busy: none of the connections is dropped (with `std`'s backlog of
/// 128 the 130th waited for a SYN retransmit, a second or more).
#[test]
fn a_burst_of_connections_queues_for_accept_instead_of_being_dropped() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096);
    let burst = somaxconn.min(1000);
    assert!(burst > 200, "net.core.somaxconn is {somaxconn}: raise it to run this test");
    let listener = gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();

    // Nobody accepts: every connection must fit in the queue.
    let started = Instant::now();
    let connected: Vec<_> = (0..burst)
        .map(|i| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .unwrap_or_else(|error| panic!("connection {i} of {burst} was not queued: {error}"))
        })
        .collect();
    assert_eq!(connected.len(), burst);
    assert!(started.elapsed() < Duration::from_secs(5), "queued in {:?}", started.elapsed());
}
