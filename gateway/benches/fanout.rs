//! Fan-out of one 1,000-member group with every member connected: a real
//! node on loopback, 1,000 WebSocket clients in this process, ten members
//! posting in turn at a fixed total rate in steps. For each step it reports deliveries
//! per second and the send-to-delivery latency (p50/p90/p99/max, measured
//! from each message's *scheduled* send time, so a server that falls
//! behind is charged for the wait: no coordinated omission), the send-to-ack
//! latency, and the CPU the process used (server and clients together).
//!
//! `cargo bench -p gateway --bench fanout` (about a minute). Numbers go to
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::ws::{self, Frame};
use futures_util::{SinkExt, StreamExt};
use gateway::Server;
use gateway::config::Config;
use protocol::rest::TokenResponse;
use serde_json::json;

/// Members of the group, all connected.
const MEMBERS: usize = 1_000;
/// Members who post (each on a second connection of theirs), in turn.
const SENDERS: usize = 10;
/// (messages per second, seconds) of each step; stops early once p99 passes 1 s.
const STEPS: &[(u32, u64)] = &[(10, 4), (25, 4), (50, 4), (100, 4), (200, 4), (400, 4)];
/// How long a step waits for its last deliveries.
const DRAIN: Duration = Duration::from_secs(15);

/// What the clients record, shared on this single-threaded runtime.
#[derive(Default)]
struct Recorder {
    /// Scheduled send time of each message, by client message ID.
    scheduled: HashMap<String, Instant>,
    /// Send-to-delivery latencies of the current step, in microseconds.
    deliveries: Vec<u64>,
    /// Send-to-ack latencies of the current step, in microseconds.
    acks: Vec<u64>,
    last_delivery: Option<Instant>,
}

type Shared = Rc<RefCell<Recorder>>;

#[actix_web::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
    config.limits.auth_per_minute_per_ip = 1_000_000;
    config.limits.auth_burst_per_ip = 1_000_000;
    config.engine.sends_per_second = 1_000_000;
    config.engine.send_burst = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(config, listener).await.unwrap().spawn();
    let base = format!("http://{}", server.addr());
    let http = awc::Client::builder().timeout(Duration::from_secs(60)).finish();

    let setup = Instant::now();
    let users = register_all(&http, &base).await;
    let owner = &users[0];
    befriend_all(&http, &base, owner, &users[1..]).await;
    let chat = create_group(&http, &base, owner, &users[1..]).await;
    println!("setup: {} users, friends, group {chat} in {:.1} s", users.len(), setup.elapsed().as_secs_f64());

    let recorder: Shared = Rc::default();
    let connect = Instant::now();
    for user in &users[1..] {
        spawn_member(&base, &user.access_token, recorder.clone()).await;
    }
    let mut senders = Vec::with_capacity(SENDERS);
    for user in &users[..SENDERS] {
        senders.push(connect_ws(&base, &user.access_token).await);
    }
    println!("connected {} members in {:.1} s", MEMBERS - 1, connect.elapsed().as_secs_f64());
    actix_rt::time::sleep(Duration::from_secs(1)).await;

    println!();
    println!(
        "| msgs/s | sent | deliveries | deliveries/s | p50 ms | p90 ms | p99 ms | max ms | ack p99 ms | CPU cores | batch |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut counter = 0u64;
    for &(rate, secs) in STEPS {
        {
            let mut r = recorder.borrow_mut();
            r.deliveries.clear();
            r.acks.clear();
            r.last_delivery = None;
        }
        let count = u64::from(rate) * secs;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let cpu_before = cpu_seconds();
        let batches_before = batch_stats(&http, &base).await;
        let start = Instant::now();
        for i in 0..count {
            let scheduled = start + interval * i as u32;
            actix_rt::time::sleep_until(scheduled.into()).await;
            counter += 1;
            let id = format!("b-{counter}");
            recorder.borrow_mut().scheduled.insert(id.clone(), scheduled);
            let frame =
                json!({"type": "send", "client_msg_id": id, "chat_id": chat, "body": "fan-out benchmark message"});
            let sender = &mut senders[i as usize % SENDERS];
            sender.send(ws::Message::Text(frame.to_string().into())).await.unwrap();
            for sender in &mut senders {
                drain_acks(sender, &recorder).await;
            }
        }
        let expected = count as usize * (MEMBERS - 1);
        let deadline = Instant::now() + DRAIN;
        while recorder.borrow().deliveries.len() < expected && Instant::now() < deadline {
            for sender in &mut senders {
                drain_acks(sender, &recorder).await;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = (cpu_seconds() - cpu_before) / start.elapsed().as_secs_f64();
        let batches_after = batch_stats(&http, &base).await;
        let batch = (batches_after.0 - batches_before.0) / (batches_after.1 - batches_before.1).max(1.0);
        let mut r = recorder.borrow_mut();
        let delivered = r.deliveries.len();
        let span = r.last_delivery.map(|last| last - start).unwrap_or_default().as_secs_f64().max(1e-3);
        r.deliveries.sort_unstable();
        r.acks.sort_unstable();
        let p = |samples: &[u64], q: f64| percentile(samples, q);
        println!(
            "| {rate} | {count} | {delivered}/{expected} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {cpu:.2} | {batch:.1} |",
            delivered as f64 / span,
            p(&r.deliveries, 0.50),
            p(&r.deliveries, 0.90),
            p(&r.deliveries, 0.99),
            p(&r.deliveries, 1.0),
            p(&r.acks, 0.99),
        );
        if p(&r.deliveries, 0.99) > 1_000.0 || delivered < expected {
            println!("stopping: past the knee");
            break;
        }
    }
    drop(server);
}

struct User {
    id: String,
    access_token: String,
}

async fn register_all(http: &awc::Client, base: &str) -> Vec<User> {
    let mut users = Vec::with_capacity(MEMBERS);
    for chunk in (0..MEMBERS).collect::<Vec<_>>().chunks(50) {
        let batch = chunk.iter().map(|i| async move {
            let name = format!("member{i}");
            let body = json!({"username": name, "password": "benchmark-password", "display_name": name});
            let resp = http.post(format!("{base}/api/v1/auth/register")).send_json(&body).await.unwrap();
            assert_eq!(resp.status(), 201);
            let body = json!({"username": name, "password": "benchmark-password"});
            let mut resp = http.post(format!("{base}/api/v1/auth/login")).send_json(&body).await.unwrap();
            let tokens: TokenResponse = resp.json().await.unwrap();
            User { id: tokens.user_id.to_string(), access_token: tokens.access_token }
        });
        users.extend(futures_util::future::join_all(batch).await);
    }
    users
}

async fn befriend_all(http: &awc::Client, base: &str, owner: &User, others: &[User]) {
    for chunk in others.chunks(50) {
        let batch = chunk.iter().map(|user| async move {
            let request = json!({"user_id": user.id});
            let resp = http
                .post(format!("{base}/api/v1/friends/requests"))
                .bearer_auth(&owner.access_token)
                .send_json(&request)
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let accept = format!("{base}/api/v1/friends/requests/{}/accept", owner.id);
            let resp = http.post(accept).bearer_auth(&user.access_token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        });
        futures_util::future::join_all(batch).await;
    }
}

async fn create_group(http: &awc::Client, base: &str, owner: &User, others: &[User]) -> String {
    let mut chunks = others.chunks(protocol::limits::MAX_MEMBERS_PER_REQUEST);
    let first: Vec<&str> = chunks.next().unwrap_or_default().iter().map(|u| u.id.as_str()).collect();
    let body = json!({"name": "fan-out", "members": first});
    let mut resp = http
        .post(format!("{base}/api/v1/chats/groups"))
        .bearer_auth(&owner.access_token)
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let chat: serde_json::Value = resp.json().await.unwrap();
    let chat = chat["id"].as_str().unwrap().to_string();
    for chunk in chunks {
        let members: Vec<&str> = chunk.iter().map(|u| u.id.as_str()).collect();
        let resp = http
            .post(format!("{base}/api/v1/chats/{chat}/members"))
            .bearer_auth(&owner.access_token)
            .send_json(&json!({"members": members}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    chat
}

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

async fn connect_ws(base: &str, token: &str) -> Socket {
    let url = format!("{}/api/v1/ws", base.replacen("http", "ws", 1));
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let request = client.ws(url).protocols(["parley.v1"]).bearer_auth(token).max_frame_size(4 << 20);
    let (_, socket) = request.connect().await.unwrap();
    socket
}

/// Connects a member whose task records every benchmark message it gets.
async fn spawn_member(base: &str, token: &str, recorder: Shared) {
    let mut socket = connect_ws(base, token).await;
    actix_rt::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            match frame {
                Frame::Text(text) => {
                    let Some(id) = benchmark_id(&text, r#""type":"update""#) else { continue };
                    let mut r = recorder.borrow_mut();
                    if let Some(scheduled) = r.scheduled.get(id).copied() {
                        let now = Instant::now();
                        r.deliveries.push((now - scheduled).as_micros() as u64);
                        r.last_delivery = Some(now);
                    }
                }
                Frame::Ping(bytes) => {
                    let _ = socket.send(ws::Message::Pong(bytes)).await;
                }
                Frame::Close(_) => break,
                _ => {}
            }
        }
    });
}

/// Reads whatever the sender has been sent so far, recording ack latencies.
async fn drain_acks(sender: &mut Socket, recorder: &Shared) {
    while let Ok(Some(Ok(frame))) = actix_rt::time::timeout(Duration::ZERO, sender.next()).await {
        if let Frame::Text(text) = frame
            && let Some(id) = benchmark_id(&text, r#""type":"ack""#)
        {
            let mut r = recorder.borrow_mut();
            if let Some(scheduled) = r.scheduled.get(id).copied() {
                r.acks.push(scheduled.elapsed().as_micros() as u64);
            }
        }
    }
}

/// The benchmark client message ID in a frame of the given type, found
/// without parsing the whole frame (the clients share the CPU with the server).
fn benchmark_id<'a>(text: &'a [u8], frame_type: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(text).ok()?;
    if !text.starts_with(&format!("{{{frame_type}")) {
        return None;
    }
    let start = text.find(r#""client_msg_id":"b-"#)? + r#""client_msg_id":""#.len();
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

/// The `q` quantile of sorted microsecond samples, in milliseconds.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1_000.0
}

/// Messages and transactions the chat actors have written so far, from
/// the node's metrics: (sum, count) of `parley_append_batch_messages`.
async fn batch_stats(http: &awc::Client, base: &str) -> (f64, f64) {
    let mut resp = http.get(format!("{base}/metrics")).send().await.unwrap();
    let text = String::from_utf8(resp.body().limit(1 << 20).await.unwrap().to_vec()).unwrap();
    let value =
        |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    (value("parley_append_batch_messages_sum"), value("parley_append_batch_messages_count"))
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command name: utime is the 12th, stime the 13th.
    (ticks(11) + ticks(12)) / 100.0
}
