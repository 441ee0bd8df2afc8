//! Drives one slice of the users: connects every device of each (one
//! WebSocket per device), runs the phases' events on schedule (messages,
//! receipts, idleness, presence, reconnects, churn) from one of the user's
//! devices, reads every frame and collects an `Outcome` that a parent can merge.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_codec::Framed;
use anyhow::{Context, bail};
use awc::{BoxedSocket, ws};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use protocol::ids::{ChatId, MessageId};
use protocol::rest::{PresenceChoice, PresenceSetting, WsTicketResponse};
use protocol::ws::{ClientFrame, ServerFrame, Update, close};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::check::Device;
use crate::scenario::{Action, Scenario};
use crate::schedule::Schedule;
use crate::setup::{Plan, REQUEST_TIMEOUT, bounded, call, rest_base, ws_url};
use crate::stats::{ErrorCounts, Latencies, ProcSample, Sparse, own_resources};

/// Longest wait for outstanding acks and deliveries after the last phase (plus the longest churn).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// In a multi-process run nobody knows every ack: a worker's drain ends after this long without a delivery.
const QUIET_DRAIN: Duration = Duration::from_secs(1);
/// After each `[step]` step, how long to wait for its acks before judging it.
const STEP_SETTLE: Duration = Duration::from_secs(2);
/// Largest server frame accepted (presence snapshots of big groups are large).
const MAX_SERVER_FRAME: usize = 16 << 20;
/// Presence choices the `presence` action cycles through.
const PRESENCE_CYCLE: [PresenceChoice; 3] = [PresenceChoice::Away, PresenceChoice::Busy, PresenceChoice::Auto];

type Tx = mpsc::UnboundedSender<ws::Message>;
type Socket = Framed<BoxedSocket, ws::Codec>;

/// What this process drives.
#[derive(Clone, Debug)]
pub struct Options {
    /// Local addresses to bind outgoing sockets to, round-robin; empty: the OS picks.
    pub source_addrs: Vec<IpAddr>,
    /// Users whose connections and events this process owns.
    pub slice: Range<usize>,
    /// This process's share of every rate (1 in a single-process run).
    pub share: f64,
    /// Worker number (0 in a single-process run); part of every client message ID.
    pub worker: usize,
    /// True when this process sees every ack (single process): the drain then
    /// waits for exactly the expected deliveries instead of for quiet.
    pub exact_drain: bool,
    /// Prefix of progress lines.
    pub label: String,
}

/// Counters of a run or a phase.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Messages scheduled to be sent.
    pub scheduled: u64,
    pub acked: u64,
    /// New (non-duplicate) message copies that reached a recipient device, live or replayed.
    pub deliveries: u64,
    /// Of `deliveries`, those replayed by `sync` after a reconnect (not in the latency histogram).
    pub replayed: u64,
    /// Of `deliveries`, live copies that arrived after an update with a higher `seq` on the same
    /// device: the server sent the user's log out of order (the check orders by `seq`).
    pub out_of_order: u64,
}

/// One phase as this process ran it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseOutcome {
    pub counts: Counts,
    pub secs: f64,
    pub ack: Sparse,
    pub delivery: Sparse,
}

/// One second of the run (from the start of the first phase).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Second {
    pub sent: u64,
    pub acked: u64,
    pub deliveries: u64,
    pub errors: u64,
    /// Open connections at the end of the second.
    pub open: u64,
    pub ack: Sparse,
    pub delivery: Sparse,
}

/// Everything one process measured; several merge into one summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub connect: Sparse,
    /// Wall time of the connect stage.
    pub connect_secs: f64,
    pub connected: u64,
    pub reconnect: Sparse,
    pub ack: Sparse,
    pub delivery: Sparse,
    pub counts: Counts,
    /// Phases run (a `[step]` run may stop early).
    pub phases: Vec<PhaseOutcome>,
    pub seconds: Vec<Second>,
    /// Events per action name; `skipped` counts events whose user had no connected device or lacked a chat.
    pub actions: BTreeMap<String, u64>,
    pub errors: ErrorCounts,
    /// (chat, sender, sending device, message) of every ack.
    pub acks: Vec<(i64, i64, usize, i64)>,
    /// (chat, recipient, receiving device, seq, message) of every copy received.
    pub copies: Vec<(i64, i64, usize, u64, i64)>,
    /// (user, device) of every device whose connection was lost for good.
    pub lost: Vec<Device>,
    pub duration_secs: f64,
    pub tool: ProcSample,
}

/// A send waiting for its ack.
struct Pending {
    /// The sender and the device it sent from; that device's reconnect
    /// sends it again, as a client's outbox would.
    user: usize,
    device: usize,
    due: Instant,
    chat: usize,
    phase: usize,
}

/// One event of a phase: who does what, and when it was due.
struct Event {
    user: usize,
    /// A number in `0..1` that picks which of the user's connected devices acts.
    device_point: f64,
    action: Action,
    due: Instant,
    phase: usize,
}

/// One device's connection state.
#[derive(Default)]
struct Slot {
    tx: Option<Tx>,
    /// Bumped whenever the tool opens or closes the connection on purpose,
    /// so a reader that ends after that knows it was not lost.
    generation: u64,
    /// Closed on purpose; coming back.
    away: bool,
    lost: bool,
    idle: bool,
    presence: usize,
    /// Highest update `seq` seen.
    last_seq: u64,
    /// While a `sync` replays: the seqs in `(from, to]` are replayed, not duplicates.
    replay: Option<(u64, u64)>,
    /// Newest message received (chat, message), for `seen`.
    newest: Option<(i64, i64)>,
    /// Messages received, to tell new copies from duplicates. Per device,
    /// so that no set grows large enough for its resizing to stall the
    /// tool (one set of three million copies took ~100 ms to grow).
    received: HashSet<i64, foldhash::fast::FixedState>,
    /// (chat, seq, message) of every copy received, duplicates included.
    copies: Vec<(i64, u64, i64)>,
}

struct State {
    plan: Rc<Plan>,
    /// Per user, per device.
    slots: Vec<Vec<Slot>>,
    /// The clock all due times map to microseconds since the Unix epoch from.
    epoch: (Instant, u64),
    pending: HashMap<String, Pending>,
    phases: Vec<(Counts, Latencies, Latencies)>,
    ack: Latencies,
    delivery: Latencies,
    reconnect: Latencies,
    second_ack: Latencies,
    second_delivery: Latencies,
    counts: Counts,
    errors: ErrorCounts,
    /// Deliveries expected from the acks seen (exact drain only).
    expected: u64,
    last_delivery: Instant,
    acks: Vec<(i64, i64, usize, i64)>,
    open: u64,
}

impl State {
    fn new(plan: Rc<Plan>, phases: usize) -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Self {
            slots: plan.users.iter().map(|u| u.tokens.iter().map(|_| Slot::default()).collect()).collect(),
            plan,
            epoch: (Instant::now(), unix),
            pending: HashMap::new(),
            phases: (0..phases).map(|_| Default::default()).collect(),
            ack: Latencies::default(),
            delivery: Latencies::default(),
            reconnect: Latencies::default(),
            second_ack: Latencies::coarse(),
            second_delivery: Latencies::coarse(),
            counts: Counts::default(),
            errors: ErrorCounts::new(),
            expected: 0,
            last_delivery: Instant::now(),
            acks: Vec::new(),
            open: 0,
        }
    }

    fn unix_micros(&self, at: Instant) -> u64 {
        self.epoch.1 + at.saturating_duration_since(self.epoch.0).as_micros() as u64
    }

    /// The `send` frame of a pending message; the body carries its due
    /// time and phase, so every copy tells its recipient the latency, and
    /// the sending device, so the sender's devices tell their own echo
    /// from a copy for another device.
    fn send_frame(&self, client_msg_id: String, pending: &Pending) -> ClientFrame {
        ClientFrame::Send {
            client_msg_id,
            chat_id: ChatId(self.plan.chats[pending.chat].id),
            body: format!("{} {} {}", self.unix_micros(pending.due), pending.phase, pending.device),
        }
    }

    fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }

    /// Handles one frame of the connection of `user`'s `device`; returns a frame to answer with.
    /// (chat, recipient, receiving device, seq, message) of every copy received.
    fn copies(&self) -> Vec<(i64, i64, usize, u64, i64)> {
        let devices = self
            .slots
            .iter()
            .enumerate()
            .flat_map(|(user, slots)| slots.iter().enumerate().map(move |(device, slot)| (user, device, slot)));
        devices
            .flat_map(|(user, device, slot)| {
                let me = self.plan.users[user].id;
                slot.copies.iter().map(move |&(chat, seq, message)| (chat, me, device, seq, message))
            })
            .collect()
    }

    fn on_frame(&mut self, user: usize, device: usize, frame: ServerFrame) -> Option<ClientFrame> {
        let me = self.plan.users[user].id;
        match frame {
            ServerFrame::Ack { client_msg_id, message, .. } => {
                let pending = self.pending.remove(&client_msg_id)?;
                let micros = pending.due.elapsed().as_micros() as u64;
                self.ack.record_micros(micros);
                self.second_ack.record_micros(micros);
                if let Some(phase) = self.phases.get_mut(pending.phase) {
                    phase.0.acked += 1;
                    phase.1.record_micros(micros);
                }
                self.counts.acked += 1;
                self.acks.push((message.chat_id.0, me, pending.device, message.id.0));
                // Every device of every member but the sending one, the sender's other devices included.
                let members = &self.plan.chats[pending.chat].members;
                let entitled = |m: usize| {
                    let devices = self.slots[m].iter().enumerate();
                    devices.filter(|&(d, slot)| !slot.lost && (m, d) != (user, pending.device)).count()
                };
                self.expected += members.iter().map(|&m| entitled(m) as u64).sum::<u64>();
            }
            ServerFrame::Update { seq, update } => {
                let slot = &mut self.slots[user][device];
                let replayed = slot.replay.is_some_and(|(from, to)| seq > from && seq <= to);
                let behind = seq <= slot.last_seq && !replayed;
                slot.last_seq = slot.last_seq.max(seq);
                let Update::Message { message } = update else { return None };
                let body = parse_body(&message.body);
                let own = message.sender_id.0 == me;
                // The server sends a message to every device of its sender too; the sending device has the ack.
                if message.event.is_some() || (own && body.is_none_or(|(_, _, from)| from == device)) {
                    return None;
                }
                let chat = message.chat_id.0;
                let slot = &mut self.slots[user][device];
                slot.copies.push((chat, seq, message.id.0));
                if !slot.received.insert(message.id.0) {
                    return None;
                }
                if behind {
                    self.counts.out_of_order += 1;
                }
                if !own {
                    self.slots[user][device].newest = Some((chat, message.id.0));
                }
                self.counts.deliveries += 1;
                self.last_delivery = Instant::now();
                let (due, phase, _) = body?;
                if let Some(phase) = self.phases.get_mut(phase) {
                    phase.0.deliveries += 1;
                }
                if replayed {
                    self.counts.replayed += 1;
                    return None;
                }
                let micros = self.unix_micros(Instant::now()).saturating_sub(due);
                self.delivery.record_micros(micros);
                self.second_delivery.record_micros(micros);
                if let Some(phase) = self.phases.get_mut(phase) {
                    phase.2.record_micros(micros);
                }
            }
            ServerFrame::Synced { seq, has_more } => {
                if has_more {
                    return Some(ClientFrame::Sync { after_seq: seq });
                }
                self.slots[user][device].replay = None;
            }
            ServerFrame::Error(error) => {
                let code = serde_json::to_value(error.code).ok().and_then(|v| v.as_str().map(str::to_owned));
                self.error(&format!("ws_{}", code.as_deref().unwrap_or("unknown")));
                if let Some(id) = error.client_msg_id {
                    self.pending.remove(&id);
                }
            }
            _ => {}
        }
        None
    }

    /// A reader of the connection `generation` of `user`'s `device` ended.
    fn closed(&mut self, user: usize, device: usize, generation: u64) {
        self.open -= 1;
        let slot = &mut self.slots[user][device];
        if slot.generation == generation {
            slot.tx = None;
            slot.lost = true;
            self.error("connection_lost");
        }
    }

    /// Closes the connection of `user`'s `device` on purpose.
    fn hang_up(&mut self, user: usize, device: usize) {
        let slot = &mut self.slots[user][device];
        slot.generation += 1;
        if let Some(tx) = slot.tx.take() {
            let _ = tx.send(ws::Message::Close(Some(ws::CloseCode::Normal.into())));
        }
    }

    fn send(&mut self, user: usize, device: usize, frame: &ClientFrame) {
        let sent = match (&self.slots[user][device].tx, serde_json::to_string(frame)) {
            (Some(tx), Ok(text)) => tx.send(ws::Message::Text(text.into())).is_ok(),
            _ => false,
        };
        if !sent {
            self.error("send_on_closed_connection");
        }
    }

    fn settled(&self, slice: &Range<usize>) -> bool {
        self.slots[slice.clone()].iter().flatten().all(|s| !s.away && s.replay.is_none())
    }
}

/// The body of a load message: its due time (µs since the Unix epoch), phase and sending device.
fn parse_body(body: &str) -> Option<(u64, usize, usize)> {
    let mut fields = body.split(' ').map(str::parse);
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(Ok(due)), Some(Ok(phase)), Some(Ok(device)), None) => Some((due, phase as usize, device as usize)),
        _ => None,
    }
}

/// An HTTP and WebSocket client whose connections leave from `source`, if given.
pub fn client(source: Option<IpAddr>) -> awc::Client {
    let connector = awc::Connector::new().limit(0).connector(crate::source::connector(source));
    awc::Client::builder().timeout(REQUEST_TIMEOUT).connector(connector).finish()
}

/// Opens a WebSocket for `token` at the node with base URL `node` and
/// waits for `hello`; returns the time it took and hello's `seq`. A
/// cluster node that does not serve the user closes with 4010 (`MOVED`):
/// then a ticket from it names the node that does, as the web client does
/// it, and the time includes the detour.
async fn open(client: &awc::Client, node: &str, token: &str) -> anyhow::Result<(Duration, Socket, u64)> {
    let started = Instant::now();
    if let Some((socket, seq)) = handshake(client, &ws_url(node), Some(token)).await? {
        return Ok((started.elapsed(), socket, seq));
    }
    let request = client.post(format!("{}/auth/ws-ticket", rest_base(node))).bearer_auth(token);
    let ticket: WsTicketResponse = call(request, None).await?;
    let home = ticket.url.unwrap_or_else(|| ws_url(node));
    match handshake(client, &format!("{home}?ticket={}", ticket.ticket), None).await? {
        Some((socket, seq)) => Ok((started.elapsed(), socket, seq)),
        None => bail!("moved away from {home}, the node its ticket named"),
    }
}

/// One WebSocket handshake and its `hello`; `None` if the server closed
/// with 4010 (`MOVED`) instead.
async fn handshake(client: &awc::Client, url: &str, token: Option<&str>) -> anyhow::Result<Option<(Socket, u64)>> {
    let mut request = client.ws(url).protocols(["parley.v1"]).max_frame_size(MAX_SERVER_FRAME);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (_, mut socket) = tokio::time::timeout(REQUEST_TIMEOUT, request.connect())
        .await
        .context("no handshake within 30 s")?
        .map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
    let hello = tokio::time::timeout(REQUEST_TIMEOUT, socket.next()).await.context("no hello within 30 s")?;
    match hello {
        Some(Ok(ws::Frame::Text(text))) => match serde_json::from_slice::<ServerFrame>(&text) {
            Ok(ServerFrame::Hello { seq, .. }) => Ok(Some((socket, seq))),
            other => bail!("expected hello, got {other:?}"),
        },
        Some(Ok(ws::Frame::Close(Some(reason)))) if u16::from(reason.code) == close::MOVED => Ok(None),
        other => bail!("expected hello, got {other:?}"),
    }
}

/// Starts a task that writes the returned channel's messages to `sink` in order, until the
/// channel closes, a write fails or a close frame has been written. Shared with `xmpp`.
pub(crate) fn spawn_writer(mut sink: SplitSink<Socket, ws::Message>) -> Tx {
    let (tx, mut rx) = mpsc::unbounded_channel::<ws::Message>();
    actix_rt::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, ws::Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    tx
}

/// Starts the writer and reader of the new connection of `user`'s `device`;
/// with `resume`, `sync`s the updates missed since the last one the device saw.
fn attach(state: &Rc<RefCell<State>>, (user, device): (usize, usize), socket: Socket, hello_seq: u64, resume: bool) {
    let (sink, mut stream) = socket.split();
    let tx = spawn_writer(sink);
    let generation = {
        let mut s = state.borrow_mut();
        s.open += 1;
        let slot = &mut s.slots[user][device];
        slot.generation += 1;
        slot.away = false;
        if resume && hello_seq > slot.last_seq {
            slot.replay = Some((slot.last_seq, hello_seq));
            let sync = ClientFrame::Sync { after_seq: slot.last_seq };
            if let Ok(text) = serde_json::to_string(&sync) {
                let _ = tx.send(ws::Message::Text(text.into()));
            }
        } else if !resume {
            slot.last_seq = hello_seq;
        }
        slot.tx = Some(tx.clone());
        let generation = slot.generation;
        // Sends that were not acknowledged before the hang-up go again with
        // the same client message ID: the server answers with the stored
        // message, and stores nothing twice.
        let again: Vec<ClientFrame> = s
            .pending
            .iter()
            .filter(|(_, pending)| (pending.user, pending.device) == (user, device))
            .map(|(id, pending)| s.send_frame(id.clone(), pending))
            .collect();
        for frame in again {
            if let Ok(text) = serde_json::to_string(&frame) {
                let _ = tx.send(ws::Message::Text(text.into()));
            }
        }
        generation
    };
    let state = state.clone();
    actix_rt::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(ws::Frame::Text(text)) => {
                    let reply = match crate::decode::server_frame(&text) {
                        Ok(Some(frame)) => state.borrow_mut().on_frame(user, device, frame),
                        Ok(None) => None,
                        Err(_) => {
                            state.borrow_mut().error("bad_server_frame");
                            None
                        }
                    };
                    if let Some(Ok(text)) = reply.map(|r| serde_json::to_string(&r)) {
                        let _ = tx.send(ws::Message::Text(text.into()));
                    }
                }
                Ok(ws::Frame::Ping(bytes)) => {
                    let _ = tx.send(ws::Message::Pong(bytes));
                }
                Ok(ws::Frame::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        state.borrow_mut().closed(user, device, generation);
    });
}

/// The connected slice, ready to run its phases.
pub struct Driver {
    scenario: Scenario,
    options: Options,
    state: Rc<RefCell<State>>,
    clients: Vec<awc::Client>,
    outcome: Outcome,
}

impl Driver {
    fn client_for(&self, user: usize) -> &awc::Client {
        &self.clients[user % self.clients.len()]
    }

    /// Connects every device of every user of the slice. Failed connections
    /// are counted as errors (and their devices left out of the check); none
    /// at all is an error.
    pub async fn connect(scenario: &Scenario, plan: Rc<Plan>, options: Options) -> anyhow::Result<Self> {
        let clients: Vec<awc::Client> = if options.source_addrs.is_empty() {
            vec![client(None)]
        } else {
            options.source_addrs.iter().map(|&a| client(Some(a))).collect()
        };
        let state = Rc::new(RefCell::new(State::new(plan.clone(), scenario.phases.len())));
        let mut driver = Self { scenario: scenario.clone(), options, state, clients, outcome: Outcome::default() };
        let devices: Vec<(usize, usize)> = driver
            .options
            .slice
            .clone()
            .flat_map(|user| (0..plan.users[user].tokens.len()).map(move |device| (user, device)))
            .collect();
        eprintln!("{}connecting {} WebSockets", driver.options.label, devices.len());
        let started = Instant::now();
        let attempts = devices
            .iter()
            .map(|&(user, device)| {
                let (client, url, token) =
                    (driver.client_for(user), plan.url_of(user).to_owned(), &plan.users[user].tokens[device]);
                async move { Ok(open(client, &url, token).await) }
            })
            .collect();
        let results = bounded(scenario.population.connect_concurrency, attempts).await?;
        driver.outcome.connect_secs = started.elapsed().as_secs_f64();
        let mut connect = Latencies::default();
        let mut first_error = None;
        for ((user, device), result) in devices.into_iter().zip(results) {
            match result {
                Ok((time, socket, seq)) => {
                    connect.record_micros(time.as_micros() as u64);
                    attach(&driver.state, (user, device), socket, seq, false);
                }
                Err(error) => {
                    let mut s = driver.state.borrow_mut();
                    s.slots[user][device].lost = true;
                    s.error("connect_failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        driver.outcome.connected = connect.count();
        driver.outcome.connect = connect.sparse();
        if let Some(error) = first_error {
            if connect.count() == 0 {
                return Err(error.context("no connection could be opened"));
            }
            eprintln!("{}warning: some connections failed, the first: {error:#}", driver.options.label);
        }
        Ok(driver)
    }

    /// Runs the phases from `start`, drains, closes every connection.
    pub async fn run(mut self, start: Instant) -> anyhow::Result<Outcome> {
        tokio::time::sleep_until(start.into()).await;
        let running = Rc::new(Cell::new(true));
        let stage = Rc::new(RefCell::new(String::new()));
        let seconds = self.spawn_ticker(start, running.clone(), stage.clone());
        let slice = self.options.slice.clone();
        let seed = self.scenario.seed ^ (self.options.worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut dice = StdRng::seed_from_u64(seed);
        let mut gaps = StdRng::seed_from_u64(seed.wrapping_add(1));
        let mut actions = [0u64; 8];
        let mut sequence = 0u64;
        let phases = self.scenario.phases.clone();
        for (index, phase) in phases.iter().enumerate() {
            let (from, to) = phase.rates();
            let (from, to) = (from * self.options.share, to * self.options.share);
            let mix = phase.mix();
            let phase_start = Instant::now();
            phase.name.clone_into(&mut stage.borrow_mut());
            eprintln!(
                "{}phase {}: {from:.1} to {to:.1} events/s over {} s",
                self.options.label, phase.name, phase.duration_secs
            );
            let schedule = Schedule::new(from, to, phase.duration_secs, phase.arrival, || gaps.r#gen::<f64>());
            for (k, offset) in schedule.enumerate() {
                let due = phase_start + Duration::from_secs_f64(offset);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                } else if k % 32 == 0 {
                    tokio::task::yield_now().await;
                }
                let user = slice.start + dice.gen_range(0..slice.len());
                let action = mix.pick(dice.r#gen::<f64>());
                let event = Event { user, device_point: dice.r#gen::<f64>(), action, due, phase: index };
                let done = self.act(event, phase.churn_secs, &mut sequence);
                actions[if done { action as usize } else { 7 }] += 1;
            }
            let end = phase_start + Duration::from_secs_f64(phase.duration_secs);
            tokio::time::sleep_until(end.into()).await;
            self.outcome.phases.push(PhaseOutcome { secs: phase_start.elapsed().as_secs_f64(), ..Default::default() });
            if self.scenario.step.is_some() && !self.step_met(index).await {
                eprintln!("{}phase {}: p99 threshold missed, stopping the steps", self.options.label, phase.name);
                break;
            }
        }

        "drain".clone_into(&mut stage.borrow_mut());
        let deadline = Instant::now() + DRAIN_TIMEOUT + Duration::from_secs_f64(self.scenario.longest_churn_secs());
        while !self.drained() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let duration = start.elapsed();
        running.set(false);
        let mut s = self.state.borrow_mut();
        for user in slice.clone() {
            for device in 0..s.slots[user].len() {
                s.hang_up(user, device);
            }
        }
        let unacked = s.pending.len() as u64;
        if unacked > 0 {
            *s.errors.entry("no_ack".into()).or_default() += unacked;
        }
        let names = ["direct", "group", "seen", "idle", "presence", "reconnect", "churn", "skipped"];
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.actions =
            names.iter().zip(actions).filter(|(_, n)| *n > 0).map(|(k, n)| ((*k).to_owned(), n)).collect();
        for (phase, (counts, ack, delivery)) in outcome.phases.iter_mut().zip(&s.phases) {
            phase.counts = *counts;
            phase.ack = ack.sparse();
            phase.delivery = delivery.sparse();
        }
        outcome.reconnect = s.reconnect.sparse();
        outcome.ack = s.ack.sparse();
        outcome.delivery = s.delivery.sparse();
        outcome.counts = s.counts;
        outcome.seconds = std::mem::take(&mut seconds.borrow_mut());
        outcome.errors = std::mem::take(&mut s.errors);
        outcome.acks = std::mem::take(&mut s.acks);
        outcome.copies = s.copies();
        let lost = slice.flat_map(|u| s.slots[u].iter().enumerate().map(move |(d, slot)| (u, d, slot.lost)));
        outcome.lost = lost.filter(|l| l.2).map(|(u, d, _)| (s.plan.users[u].id, d)).collect();
        outcome.duration_secs = duration.as_secs_f64();
        outcome.tool = own_resources();
        Ok(outcome)
    }

    fn drained(&self) -> bool {
        let s = self.state.borrow();
        let settled = s.pending.is_empty() && s.settled(&self.options.slice);
        if self.options.exact_drain {
            settled && s.counts.deliveries >= s.expected
        } else {
            settled && s.last_delivery.elapsed() >= QUIET_DRAIN
        }
    }

    /// Waits for the step's acks (at most `STEP_SETTLE`), then tells whether its p99s met the thresholds.
    async fn step_met(&self, index: usize) -> bool {
        let until = Instant::now() + STEP_SETTLE;
        while !self.state.borrow().pending.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = self.state.borrow();
        let (_, ack, delivery) = &s.phases[index];
        let t = &self.scenario.thresholds;
        !(t.p99_ack_ms.is_some_and(|l| ack.quantile_ms(0.99) > l)
            || t.p99_delivery_ms.is_some_and(|l| delivery.quantile_ms(0.99) > l))
    }

    /// Does the event's action from one of its user's connected devices;
    /// false when it could not (every device away, no such chat, nothing to mark seen).
    fn act(&self, event: Event, churn_secs: f64, sequence: &mut u64) -> bool {
        let Event { user, device_point, action, due, phase } = event;
        let mut s = self.state.borrow_mut();
        let connected: Vec<usize> = (0..s.slots[user].len()).filter(|&d| s.slots[user][d].tx.is_some()).collect();
        let Some(&device) = connected.get((device_point * connected.len() as f64) as usize) else { return false };
        let plan = s.plan.clone();
        let planned = &plan.users[user];
        match action {
            Action::Direct | Action::Group => {
                let chats = if action == Action::Direct { &planned.directs } else { &planned.groups };
                let chat = (!chats.is_empty()).then(|| chats[*sequence as usize % chats.len()]);
                let Some(chat) = chat else { return false };
                let client_msg_id = format!("{}-{}-{}", plan.prefix, self.options.worker, sequence);
                *sequence += 1;
                let pending = Pending { user, device, due, chat, phase };
                let frame = s.send_frame(client_msg_id.clone(), &pending);
                s.counts.scheduled += 1;
                s.phases[phase].0.scheduled += 1;
                s.pending.insert(client_msg_id, pending);
                s.send(user, device, &frame);
            }
            Action::Seen => {
                let Some((chat, message)) = s.slots[user][device].newest else { return false };
                s.send(user, device, &ClientFrame::Seen { chat_id: ChatId(chat), message_id: MessageId(message) });
            }
            Action::Idle => {
                let idle = !s.slots[user][device].idle;
                s.slots[user][device].idle = idle;
                s.send(user, device, &ClientFrame::Activity { idle });
            }
            Action::Presence => {
                let slot = &mut s.slots[user][device];
                slot.presence = (slot.presence + 1) % PRESENCE_CYCLE.len();
                let setting = PresenceSetting { status: PRESENCE_CYCLE[slot.presence], status_text: String::new() };
                let request = self
                    .client_for(user)
                    .put(format!("{}/me/presence", rest_base(plan.url_of(user))))
                    .bearer_auth(&planned.tokens[device]);
                let state = self.state.clone();
                actix_rt::spawn(async move {
                    let body = serde_json::to_value(setting).ok();
                    if call::<serde_json::Value>(request, body).await.is_err() {
                        state.borrow_mut().error("rest_presence");
                    }
                });
            }
            Action::Reconnect | Action::Churn => {
                let away = if action == Action::Churn { Duration::from_secs_f64(churn_secs) } else { Duration::ZERO };
                s.hang_up(user, device);
                s.slots[user][device].away = true;
                let (state, client) = (self.state.clone(), self.client_for(user).clone());
                let (url, token) = (plan.url_of(user).to_owned(), planned.tokens[device].clone());
                actix_rt::spawn(async move {
                    tokio::time::sleep(away).await;
                    match open(&client, &url, &token).await {
                        Ok((time, socket, seq)) => {
                            state.borrow_mut().reconnect.record_micros(time.as_micros() as u64);
                            attach(&state, (user, device), socket, seq, true);
                        }
                        Err(_) => {
                            let mut s = state.borrow_mut();
                            s.slots[user][device].away = false;
                            s.slots[user][device].lost = true;
                            s.error("reconnect_failed");
                        }
                    }
                });
            }
        }
        true
    }

    /// Once a second: closes the second's counters and histograms and prints a progress line.
    fn spawn_ticker(
        &self,
        start: Instant,
        running: Rc<Cell<bool>>,
        stage: Rc<RefCell<String>>,
    ) -> Rc<RefCell<Vec<Second>>> {
        let seconds = Rc::new(RefCell::new(Vec::new()));
        let (state, out, label) = (self.state.clone(), seconds.clone(), self.options.label.clone());
        actix_rt::spawn(async move {
            let mut last = (0u64, 0u64, 0u64, 0u64);
            let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
            loop {
                tick.tick().await;
                if !running.get() {
                    break;
                }
                let mut s = state.borrow_mut();
                let errors: u64 = s.errors.values().sum();
                let now = (s.counts.scheduled, s.counts.acked, s.counts.deliveries, errors);
                let (ack_p99, delivery_p99) = (s.second_ack.quantile_ms(0.99), s.second_delivery.quantile_ms(0.99));
                let second = Second {
                    sent: now.0 - last.0,
                    acked: now.1 - last.1,
                    deliveries: now.2 - last.2,
                    errors: now.3 - last.3,
                    open: s.open,
                    ack: s.second_ack.take_sparse(),
                    delivery: s.second_delivery.take_sparse(),
                };
                eprintln!(
                    "{label}[{:>4.0}s] {}: sent {}/s acked {}/s delivered {}/s | open {} | p99 ack {ack_p99:.1} ms, delivery {delivery_p99:.1} ms | errors {errors}",
                    start.elapsed().as_secs_f64(),
                    stage.borrow(),
                    second.sent,
                    second.acked,
                    second.deliveries,
                    second.open,
                );
                out.borrow_mut().push(second);
                last = now;
            }
        });
        seconds
    }
}

#[cfg(test)]
mod tests {
    use protocol::ids::{MessageId, UserId};
    use protocol::ws::Message;

    use super::*;
    use crate::setup::{PlannedChat, PlannedUser};

    /// Users 0 (ID 1) and 1 (ID 2) in direct chat 5, with one device each.
    fn state() -> State {
        devices_state(1)
    }

    /// Users 0 (ID 1) and 1 (ID 2) in direct chat 5, with `devices` devices each.
    fn devices_state(devices: usize) -> State {
        let user = |id| PlannedUser { id, tokens: vec![String::new(); devices], directs: vec![0], groups: Vec::new() };
        let plan = Plan {
            prefix: "t".into(),
            urls: vec!["http://x".into()],
            users: vec![user(1), user(2)],
            chats: vec![PlannedChat { id: 5, members: vec![0, 1] }],
        };
        State::new(Rc::new(plan), 1)
    }

    fn message(id: i64, sender: i64, client_msg_id: &str, body: String) -> Message {
        Message {
            id: MessageId(id),
            chat_id: ChatId(5),
            sender_id: UserId(sender),
            client_msg_id: client_msg_id.into(),
            body,
            sent_at: 0,
            edited_at: None,
            deleted: false,
            event: None,
        }
    }

    /// User 0 sends `client_msg_id` from device 0.
    fn sent(state: &mut State, client_msg_id: &str) {
        state.counts.scheduled += 1;
        let pending = Pending { user: 0, device: 0, due: Instant::now(), chat: 0, phase: 0 };
        state.pending.insert(client_msg_id.into(), pending);
    }

    fn ack(id: i64, client_msg_id: &str) -> ServerFrame {
        let message = message(id, 1, client_msg_id, String::new());
        ServerFrame::Ack { client_msg_id: client_msg_id.into(), message, duplicate: false }
    }

    /// A copy of user 0's message `id`, sent from device 0 in phase 0.
    fn delivery(state: &State, seq: u64, id: i64, client_msg_id: &str) -> ServerFrame {
        let body = format!("{} 0 0", state.unix_micros(Instant::now()));
        ServerFrame::Update { seq, update: Update::Message { message: message(id, 1, client_msg_id, body) } }
    }

    #[test]
    fn deliveries_count_whether_they_come_before_or_after_the_ack() {
        let mut s = state();
        sent(&mut s, "a");
        sent(&mut s, "b");
        let frame = delivery(&s, 1, 10, "a");
        s.on_frame(1, 0, frame);
        s.on_frame(0, 0, ack(10, "a"));
        s.on_frame(0, 0, ack(11, "b"));
        assert!(s.counts.deliveries < s.expected, "b is not delivered yet");
        let frame = delivery(&s, 2, 11, "b");
        s.on_frame(1, 0, frame.clone());
        s.on_frame(1, 0, frame);
        assert_eq!((s.counts.deliveries, s.expected), (2, 2), "a repeated message is a duplicate");
        assert_eq!(s.counts.out_of_order, 0);
        let late = delivery(&s, 1, 12, "c");
        s.on_frame(1, 0, late);
        assert_eq!((s.counts.deliveries, s.counts.out_of_order), (3, 1), "a new copy behind the log still counts");
        assert_eq!(
            (s.ack.count(), s.delivery.count(), s.copies().len()),
            (2, 3, 4),
            "duplicates are kept for the check"
        );
        assert!(s.pending.is_empty());
    }

    #[test]
    fn own_echo_is_not_a_delivery_and_errors_count_by_code() {
        let mut s = state();
        sent(&mut s, "a");
        let frame = delivery(&s, 1, 10, "a");
        s.on_frame(0, 0, frame);
        assert_eq!(s.delivery.count(), 0, "the sender's own copy is not a delivery");
        let error = protocol::ws::ErrorFrame {
            code: protocol::ws::ErrorCode::RateLimited,
            message: "slow down".into(),
            client_msg_id: Some("a".into()),
            request_id: None,
            retry_after_ms: Some(10),
        };
        s.on_frame(0, 0, ServerFrame::Error(error));
        assert!(s.pending.is_empty(), "a refused send is no longer outstanding");
        assert_eq!(s.errors.get("ws_rate_limited"), Some(&1));
    }

    #[test]
    fn a_replay_after_reconnect_counts_but_is_not_timed_and_asks_for_more() {
        let mut s = state();
        s.slots[1][0].last_seq = 7;
        s.slots[1][0].replay = Some((3, 5));
        let frame = delivery(&s, 4, 10, "a");
        s.on_frame(1, 0, frame);
        assert_eq!((s.counts.deliveries, s.counts.replayed, s.delivery.count()), (1, 1, 0));
        let more = s.on_frame(1, 0, ServerFrame::Synced { seq: 5, has_more: true });
        assert_eq!(more, Some(ClientFrame::Sync { after_seq: 5 }));
        assert!(s.on_frame(1, 0, ServerFrame::Synced { seq: 7, has_more: false }).is_none());
        assert!(s.slots[1][0].replay.is_none());
    }

    #[test]
    fn bodies_carry_due_time_and_phase() {
        assert_eq!(parse_body("1700000000000000 3 1"), Some((1_700_000_000_000_000, 3, 1)));
        assert_eq!(parse_body("1700000000000000 3"), None);
        assert_eq!(parse_body("1700000000000000 3 1 9"), None);
        assert_eq!(parse_body("hello"), None);
    }

    #[test]
    fn every_other_device_gets_a_delivery_and_the_sending_device_only_its_ack() {
        let mut s = devices_state(2);
        sent(&mut s, "a");
        s.on_frame(0, 0, ack(10, "a"));
        assert_eq!(s.expected, 3, "both devices of user 1 and user 0's second device");
        assert_eq!(s.acks, vec![(5, 1, 0, 10)], "the ack names the sending device");
        let frame = delivery(&s, 1, 10, "a");
        s.on_frame(0, 0, frame.clone());
        assert_eq!(s.counts.deliveries, 0, "the sending device's own echo is not a delivery");
        for (user, device) in [(0, 1), (1, 0), (1, 1)] {
            s.on_frame(user, device, frame.clone());
        }
        s.on_frame(1, 1, frame);
        assert_eq!((s.counts.deliveries, s.delivery.count()), (3, 3), "one per other device; a repeat is a duplicate");
        assert_eq!(s.copies().len(), 4, "duplicates are kept for the check");
        assert_eq!(s.slots[0][1].newest, None, "the user's own message is nothing to mark seen");
        assert_eq!(s.slots[1][1].newest, Some((5, 10)));
        s.slots[1][1].lost = true;
        sent(&mut s, "b");
        s.on_frame(0, 0, ack(11, "b"));
        assert_eq!(s.expected, 5, "a lost device is owed nothing");
    }
}
