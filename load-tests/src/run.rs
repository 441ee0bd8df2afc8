//! Drives one run: creates the population over REST, connects every user,
//! sends direct messages on schedule and collects latencies and errors.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use awc::ws;
use futures_util::{SinkExt, StreamExt, future::join_all};
use protocol::ids::{ChatId, UserId};
use protocol::rest::{ChatSummary, FriendRequest, LoginRequest, OpenDirectChat, RegisterRequest, TokenResponse};
use protocol::ws::{ClientFrame, ServerFrame, Update};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::check::{CheckReport, Checker};
use crate::scenario::{Pairs, Scenario};
use crate::stats::{ErrorCounts, Latencies, LatencySummary, check_thresholds, error_rate, own_resources};

const PASSWORD: &str = "parley-load-password";
/// Setup requests in flight at once.
const SETUP_CONCURRENCY: usize = 32;
/// Longest wait for one HTTP request or one WebSocket handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for outstanding acks and deliveries after the last phase.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The result of a run, printed as a table and written as JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub user_prefix: String,
    pub users: usize,
    pub phases: Vec<PhaseSummary>,
    pub duration_secs: f64,
    pub connect: LatencySummary,
    pub ack: LatencySummary,
    pub delivery: LatencySummary,
    pub scheduled: u64,
    pub acked: u64,
    pub delivered: u64,
    pub delivered_per_sec: f64,
    pub errors: ErrorCounts,
    pub error_count: u64,
    pub error_rate: f64,
    pub check: CheckReport,
    pub cpu_seconds: f64,
    pub max_rss_kib: u64,
    pub violations: Vec<String>,
    pub passed: bool,
}

/// One phase as run.
#[derive(Debug, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub scheduled: u64,
    pub secs: f64,
}

/// A registered, logged-in user.
struct User {
    id: UserId,
    token: String,
}

/// A message on its way: who sent it where, and when it was due.
struct Pending {
    due: Instant,
    chat: i64,
    recipient: i64,
}

#[derive(Default)]
struct Shared {
    /// Sends not yet acked or refused, by `client_msg_id`.
    pending: HashMap<String, Pending>,
    /// Due time of sends whose delivery has not been seen, by `client_msg_id`.
    undelivered: HashMap<String, Instant>,
    delivered_ids: HashSet<(i64, i64)>,
    ack: Latencies,
    delivery: Latencies,
    errors: ErrorCounts,
    checker: Checker,
    scheduled: u64,
    acked: u64,
    acked_delivered: u64,
}

impl Shared {
    fn error(&mut self, code: impl Into<String>) {
        *self.errors.entry(code.into()).or_default() += 1;
    }

    fn on_frame(&mut self, me: i64, frame: ServerFrame) {
        match frame {
            ServerFrame::Ack { client_msg_id, message, .. } => {
                let Some(pending) = self.pending.remove(&client_msg_id) else { return };
                self.ack.record_micros(pending.due.elapsed().as_micros() as u64);
                self.acked += 1;
                self.checker.acked(pending.chat, pending.recipient, message.id.0);
                if self.delivered_ids.contains(&(pending.recipient, message.id.0)) {
                    self.acked_delivered += 1;
                }
            }
            ServerFrame::Update { update: Update::Message { message }, .. } if message.sender_id.0 != me => {
                self.checker.delivered(message.chat_id.0, me, message.id.0);
                if !self.delivered_ids.insert((me, message.id.0)) {
                    return;
                }
                if let Some(due) = self.undelivered.remove(&message.client_msg_id) {
                    self.delivery.record_micros(due.elapsed().as_micros() as u64);
                }
                if !self.pending.contains_key(&message.client_msg_id) {
                    // Already acked (delivery after ack); otherwise counted at the ack.
                    self.acked_delivered += 1;
                }
            }
            ServerFrame::Error(error) => {
                let code = serde_json::to_value(error.code).ok().and_then(|v| v.as_str().map(str::to_owned));
                self.error(format!("ws_{}", code.unwrap_or_else(|| "unknown".into())));
                if let Some(id) = error.client_msg_id {
                    self.pending.remove(&id);
                    self.undelivered.remove(&id);
                }
            }
            _ => {}
        }
    }

    fn drained(&self) -> bool {
        self.pending.is_empty() && self.acked_delivered >= self.acked
    }
}

fn rest_base(url: &str) -> String {
    format!("{}/api/v1", url.trim_end_matches('/'))
}

async fn call<T: DeserializeOwned>(request: awc::ClientRequest, body: Option<serde_json::Value>) -> anyhow::Result<T> {
    let what = format!("{} {}", request.get_method(), request.get_uri());
    let sent = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let bytes = response.body().limit(8 << 20).await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if !response.status().is_success() {
        bail!("{what}: HTTP {}: {}", response.status(), String::from_utf8_lossy(&bytes));
    }
    serde_json::from_slice(if bytes.is_empty() { b"null" } else { &bytes })
        .with_context(|| format!("{what}: bad response body"))
}

async fn create_user(client: &awc::Client, base: &str, username: String) -> anyhow::Result<User> {
    let register =
        RegisterRequest { username: username.clone(), password: PASSWORD.into(), display_name: username.clone() };
    let _: serde_json::Value =
        call(client.post(format!("{base}/auth/register")), Some(serde_json::to_value(register)?)).await?;
    let login = LoginRequest { username, password: PASSWORD.into() };
    let tokens: TokenResponse =
        call(client.post(format!("{base}/auth/login")), Some(serde_json::to_value(login)?)).await?;
    Ok(User { id: tokens.user_id, token: tokens.access_token })
}

async fn befriend(client: &awc::Client, base: &str, from: &User, to: &User) -> anyhow::Result<ChatId> {
    let request = serde_json::to_value(FriendRequest { user_id: to.id })?;
    let _: serde_json::Value =
        call(client.post(format!("{base}/friends/requests")).bearer_auth(&from.token), Some(request)).await?;
    let _: serde_json::Value =
        call(client.post(format!("{base}/friends/requests/{}/accept", from.id)).bearer_auth(&to.token), None).await?;
    open_chat(client, base, from, to).await
}

async fn open_chat(client: &awc::Client, base: &str, from: &User, to: &User) -> anyhow::Result<ChatId> {
    let open = serde_json::to_value(OpenDirectChat { user_id: to.id })?;
    let chat: ChatSummary =
        call(client.post(format!("{base}/chats/direct")).bearer_auth(&from.token), Some(open)).await?;
    Ok(chat.id)
}

/// Runs `futures` at most `SETUP_CONCURRENCY` at a time, in order.
async fn bounded<T, F: Future<Output = anyhow::Result<T>>>(futures: Vec<F>) -> anyhow::Result<Vec<T>> {
    let mut results = Vec::with_capacity(futures.len());
    let mut futures = futures.into_iter().peekable();
    while futures.peek().is_some() {
        let chunk: Vec<F> = futures.by_ref().take(SETUP_CONCURRENCY).collect();
        for result in join_all(chunk).await {
            results.push(result?);
        }
    }
    Ok(results)
}

/// Connects `user`, waits for `hello`, then spawns its reader and writer.
async fn connect(
    client: &awc::Client,
    ws_url: &str,
    user: &User,
    shared: Rc<RefCell<Shared>>,
) -> anyhow::Result<(Duration, mpsc::UnboundedSender<ws::Message>)> {
    let started = Instant::now();
    let (_, mut framed) = client
        .ws(ws_url)
        .protocols(["parley.v1"])
        .bearer_auth(&user.token)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
    let hello = tokio::time::timeout(REQUEST_TIMEOUT, framed.next()).await.context("no hello within 30 s")?;
    match hello {
        Some(Ok(ws::Frame::Text(text))) => match serde_json::from_slice::<ServerFrame>(&text) {
            Ok(ServerFrame::Hello { .. }) => {}
            other => bail!("expected hello, got {other:?}"),
        },
        other => bail!("expected hello, got {other:?}"),
    }
    let connect_time = started.elapsed();
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ws::Message>();
    actix_rt::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, ws::Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    let me = user.id.0;
    let pong = tx.clone();
    actix_rt::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(ws::Frame::Text(text)) => match serde_json::from_slice::<ServerFrame>(&text) {
                    Ok(frame) => shared.borrow_mut().on_frame(me, frame),
                    Err(_) => shared.borrow_mut().error("bad_server_frame"),
                },
                Ok(ws::Frame::Ping(bytes)) => {
                    let _ = pong.send(ws::Message::Pong(bytes));
                }
                Ok(ws::Frame::Close(reason)) => {
                    if reason.is_some_and(|r| u16::from(r.code) != 1000) {
                        shared.borrow_mut().error("connection_closed");
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    shared.borrow_mut().error("connection_error");
                    break;
                }
            }
        }
    });
    Ok((connect_time, tx))
}

/// A short run-unique username prefix (lowercase hex of the clock and PID).
fn user_prefix() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("lt{:x}{:x}", millis & 0xffff_ffff, std::process::id() & 0xfff)
}

/// Runs `scenario` against the server at `url`.
pub async fn run(scenario: &Scenario, url: &str) -> anyhow::Result<Summary> {
    let base = rest_base(url);
    let ws_url = format!("{}/ws", base.replacen("http", "ws", 1));
    let client = awc::Client::builder().timeout(REQUEST_TIMEOUT).finish();
    let prefix = user_prefix();
    let n = scenario.population.users;

    eprintln!("setup: registering {n} users with prefix {prefix}");
    let users = bounded((0..n).map(|i| create_user(&client, &base, format!("{prefix}_{i}"))).collect()).await?;
    // Pair i is (i, i + 1); with two users the ring is one friendship.
    let pairs = match scenario.friends.pairs {
        Pairs::Ring => {
            eprintln!("setup: befriending users in a ring");
            if n == 2 { 1 } else { n }
        }
    };
    let mut chats =
        bounded((0..pairs).map(|i| befriend(&client, &base, &users[i], &users[(i + 1) % n])).collect()).await?;
    if n == 2 {
        chats.push(chats[0]);
    }

    eprintln!("setup: connecting {n} WebSockets");
    let shared = Rc::new(RefCell::new(Shared::default()));
    let mut connect = Latencies::default();
    let connected =
        bounded(users.iter().map(|user| self::connect(&client, &ws_url, user, shared.clone())).collect()).await?;
    let mut senders = Vec::with_capacity(n);
    for (time, tx) in connected {
        connect.record_micros(time.as_micros() as u64);
        senders.push(tx);
    }

    let started = Instant::now();
    let mut phases = Vec::new();
    let mut sequence: u64 = 0;
    // Progress runs beside the scheduler: a line per second even when a slow
    // phase sends less than once a second; it ends when the run ends.
    let stage = Rc::new(RefCell::new(String::new()));
    let running = Rc::new(Cell::new(true));
    {
        let (shared, stage, running) = (shared.clone(), stage.clone(), running.clone());
        actix_rt::spawn(async move {
            let mut last = (0u64, 0u64, 0u64);
            let mut tick = tokio::time::interval_at((started + Duration::from_secs(1)).into(), Duration::from_secs(1));
            loop {
                tick.tick().await;
                if !running.get() {
                    break;
                }
                progress(&shared, started, &mut last, &stage.borrow());
            }
        });
    }
    for phase in &scenario.phases {
        let count = (phase.duration_secs * phase.rate_per_sec).round() as u64;
        let phase_start = Instant::now();
        phase.name.clone_into(&mut stage.borrow_mut());
        eprintln!("phase {}: {count} messages over {} s", phase.name, phase.duration_secs);
        for k in 0..count {
            let due = phase_start + Duration::from_secs_f64(k as f64 / phase.rate_per_sec);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            } else if k % 32 == 0 {
                tokio::task::yield_now().await;
            }
            let sender = (sequence % n as u64) as usize;
            let recipient = (sender + 1) % n;
            let client_msg_id = format!("{prefix}-{sequence}");
            sequence += 1;
            let frame = ClientFrame::Send {
                client_msg_id: client_msg_id.clone(),
                chat_id: chats[sender],
                body: format!("load {client_msg_id}"),
            };
            {
                let mut shared = shared.borrow_mut();
                shared.scheduled += 1;
                shared.pending.insert(
                    client_msg_id.clone(),
                    Pending { due, chat: chats[sender].0, recipient: users[recipient].id.0 },
                );
                shared.undelivered.insert(client_msg_id, due);
            }
            let text = serde_json::to_string(&frame)?;
            if senders[sender].send(ws::Message::Text(text.into())).is_err() {
                shared.borrow_mut().error("send_on_closed_connection");
            }
        }
        // The phase ends at its scheduled end, not at its last send.
        let end = phase_start + Duration::from_secs_f64(phase.duration_secs);
        tokio::time::sleep_until(end.into()).await;
        phases.push(PhaseSummary {
            name: phase.name.clone(),
            scheduled: count,
            secs: phase_start.elapsed().as_secs_f64(),
        });
    }

    "drain".clone_into(&mut stage.borrow_mut());
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while !shared.borrow().drained() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let duration = started.elapsed();
    running.set(false);
    for tx in &senders {
        let _ = tx.send(ws::Message::Close(Some(ws::CloseCode::Normal.into())));
    }

    let mut shared = shared.borrow_mut();
    let unacked = shared.pending.len() as u64;
    if unacked > 0 {
        *shared.errors.entry("no_ack".into()).or_default() += unacked;
    }
    let check = shared.checker.report();
    for (code, count) in [("missing", check.missing), ("reordered", check.reordered), ("unexpected", check.unexpected)]
    {
        if count > 0 {
            *shared.errors.entry(code.into()).or_default() += count;
        }
    }
    let error_count: u64 = shared.errors.values().sum();
    let (ack, delivery) = (shared.ack.summary(), shared.delivery.summary());
    let mut violations = check_thresholds(&scenario.thresholds, &ack, &delivery, error_count, shared.scheduled);
    if check.failures() > 0 {
        violations
            .push(format!("correctness check failed: {} messages missing, reordered or unexpected", check.failures()));
    }
    let (cpu_seconds, max_rss_kib) = own_resources();
    Ok(Summary {
        url: url.to_owned(),
        user_prefix: prefix,
        users: n,
        phases,
        duration_secs: duration.as_secs_f64(),
        connect: connect.summary(),
        ack,
        delivery,
        scheduled: shared.scheduled,
        acked: shared.acked,
        delivered: check.delivered,
        delivered_per_sec: check.delivered as f64 / duration.as_secs_f64().max(0.001),
        error_rate: error_rate(error_count, shared.scheduled),
        errors: std::mem::take(&mut shared.errors),
        error_count,
        check,
        cpu_seconds,
        max_rss_kib,
        passed: violations.is_empty(),
        violations,
    })
}

/// One progress line: rates over the last second, p99s so far.
fn progress(shared: &Rc<RefCell<Shared>>, started: Instant, last: &mut (u64, u64, u64), phase: &str) {
    let shared = shared.borrow();
    let now = (shared.scheduled, shared.acked, shared.delivered_ids.len() as u64);
    let errors: u64 = shared.errors.values().sum();
    eprintln!(
        "[{:>4.0}s] {phase}: sent {}/s acked {}/s delivered {}/s | ack p99 {:.1} ms, delivery p99 {:.1} ms | errors {errors}",
        started.elapsed().as_secs_f64(),
        now.0 - last.0,
        now.1 - last.1,
        now.2 - last.2,
        shared.ack.quantile_ms(0.99),
        shared.delivery.quantile_ms(0.99),
    );
    *last = now;
}

#[cfg(test)]
mod tests {
    use protocol::ids::MessageId;
    use protocol::ws::Message;

    use super::*;

    fn message(id: i64, sender: i64, client_msg_id: &str) -> Message {
        Message {
            id: MessageId(id),
            chat_id: ChatId(5),
            sender_id: UserId(sender),
            client_msg_id: client_msg_id.into(),
            body: "x".into(),
            sent_at: 0,
            edited_at: None,
            deleted: false,
            event: None,
        }
    }

    fn sent(shared: &mut Shared, client_msg_id: &str) {
        shared.scheduled += 1;
        shared.pending.insert(client_msg_id.into(), Pending { due: Instant::now(), chat: 5, recipient: 2 });
        shared.undelivered.insert(client_msg_id.into(), Instant::now());
    }

    fn ack(id: i64, client_msg_id: &str) -> ServerFrame {
        ServerFrame::Ack {
            client_msg_id: client_msg_id.into(),
            message: message(id, 1, client_msg_id),
            duplicate: false,
        }
    }

    fn delivery(id: i64, client_msg_id: &str) -> ServerFrame {
        ServerFrame::Update { seq: 1, update: Update::Message { message: message(id, 1, client_msg_id) } }
    }

    #[test]
    fn drained_whether_delivery_comes_before_or_after_the_ack() {
        let mut shared = Shared::default();
        sent(&mut shared, "a");
        sent(&mut shared, "b");
        shared.on_frame(2, delivery(10, "a"));
        shared.on_frame(1, ack(10, "a"));
        assert!(!shared.drained(), "b is outstanding");
        shared.on_frame(1, ack(11, "b"));
        assert!(!shared.drained(), "b is not delivered yet");
        shared.on_frame(2, delivery(11, "b"));
        shared.on_frame(2, delivery(11, "b"));
        assert!(shared.drained());
        assert_eq!((shared.ack.count(), shared.delivery.count()), (2, 2), "a duplicate is measured once");
        let report = shared.checker.report();
        assert_eq!((report.delivered, report.duplicates, report.failures()), (2, 1, 0));
    }

    #[test]
    fn own_echo_is_not_a_delivery_and_errors_count_by_code() {
        let mut shared = Shared::default();
        sent(&mut shared, "a");
        shared.on_frame(1, delivery(10, "a"));
        assert_eq!(shared.delivery.count(), 0, "the sender's own copy is not a delivery");
        let error = protocol::ws::ErrorFrame {
            code: protocol::ws::ErrorCode::RateLimited,
            message: "slow down".into(),
            client_msg_id: Some("a".into()),
            request_id: None,
            retry_after_ms: Some(10),
        };
        shared.on_frame(1, ServerFrame::Error(error));
        assert!(shared.drained(), "a refused send is no longer outstanding");
        assert_eq!(shared.errors.get("ws_rate_limited"), Some(&1));
    }
}
