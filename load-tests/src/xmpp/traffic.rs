//! The `direct` and `room` modes: sessions send messages on a global schedule, step by step through
//! a list of rates, and every delivery is timed from its scheduled send time.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use super::session::{Session, Target, client, hang_up};
use super::{ServerProcess, Setup, stanza};
use crate::stats::{ErrorCounts, Latencies, LatencySummary, own_resources};

/// Longest wait for outstanding deliveries after a step's schedule ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who talks to whom.
#[derive(Clone, Debug)]
pub enum Shape {
    /// `pairs` pairs of sessions; each sends `chat` messages to its partner.
    Direct { pairs: usize },
    /// `occupants` sessions in one MUC room; the first `senders` send `groupchat` messages.
    Room { occupants: usize, senders: usize, room: String },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub shape: Shape,
    /// Messages per second over all senders, one step per rate, in order.
    pub rates: Vec<f64>,
    /// Length of each step's schedule.
    pub secs: f64,
    /// Stop stepping after the first step whose delivery p99 exceeds this.
    pub knee_ms: f64,
    /// Logins in flight at once during setup.
    pub concurrency: usize,
}

impl Shape {
    fn sessions(&self) -> usize {
        match self {
            Shape::Direct { pairs } => 2 * pairs,
            Shape::Room { occupants, .. } => *occupants,
        }
    }
}

/// One step as run.
#[derive(Debug, Serialize)]
pub struct StepSummary {
    pub rate: f64,
    pub secs: f64,
    pub sent: u64,
    /// Deliveries expected: one per message (direct) or one per other occupant (room).
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub sent_per_sec: f64,
    /// Deliveries over the time from the step's start to its last delivery.
    pub delivered_per_sec: f64,
    /// Scheduled send time until arrival at the recipient.
    pub latency: LatencySummary,
    pub server_cpu_secs: Option<f64>,
    pub server_cores: Option<f64>,
    pub server_cpu_us_per_message: Option<f64>,
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub tool_cpu_secs: f64,
}

/// The result of a `direct` or `room` run.
#[derive(Debug, Serialize)]
pub struct TrafficSummary {
    pub mode: &'static str,
    pub url: String,
    pub sessions: usize,
    pub senders: usize,
    pub setup: Setup,
    pub steps: Vec<StepSummary>,
    /// The first rate whose delivery p99 exceeded `knee_ms`, if any did.
    pub knee_rate: Option<f64>,
    pub knee_ms: f64,
    pub errors: ErrorCounts,
    pub tool_cpu_seconds: f64,
    pub tool_max_rss_kib: u64,
}

/// The current step's clock: message `k` is due at `start + k / rate`.
#[derive(Clone, Copy)]
struct Clock {
    step: usize,
    start: Instant,
    rate: f64,
}

impl Clock {
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// The body that marks message `k` of step `step`.
fn mark(step: usize, k: u64) -> String {
    format!("parley-load {step} {k}")
}

fn parse_mark(body: &str) -> Option<(usize, u64)> {
    let mut words = body.strip_prefix("parley-load ")?.split(' ');
    let step = words.next()?.parse().ok()?;
    let k = words.next()?.parse().ok()?;
    words.next().is_none().then_some((step, k))
}

/// What the readers saw, shared by all of them (one thread).
#[derive(Default)]
struct Tally {
    clock: Option<Clock>,
    /// Deliveries expected per message.
    fan_out: u32,
    /// For a room: the number of senders, so a sender's own reflection is not counted.
    room_senders: Option<usize>,
    /// Deliveries per message of the current step.
    counts: Vec<u32>,
    latency: Latencies,
    delivered: u64,
    duplicates: u64,
    last_delivery: Option<Instant>,
    errors: ErrorCounts,
}

impl Tally {
    fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }

    fn begin(&mut self, clock: Clock, count: u64) {
        self.clock = Some(clock);
        self.counts = vec![0; count as usize];
        self.latency = Latencies::default();
        self.delivered = 0;
        self.duplicates = 0;
        self.last_delivery = None;
    }

    /// Handles one frame received by session `me`.
    fn on_text(&mut self, me: usize, text: &str, now: Instant) {
        let Some(tag) = stanza::root(text) else {
            self.error("bad_frame");
            return;
        };
        match tag.name {
            "message" if tag.attr("type").as_deref() == Some("error") => self.error("message_error"),
            "message" => {
                let Some((step, k)) = stanza::child_text(text, "body").as_deref().and_then(parse_mark) else {
                    return; // a room subject, or not ours
                };
                let Some(clock) = self.clock.filter(|c| c.step == step) else {
                    self.error("late_from_earlier_step");
                    return;
                };
                if self.room_senders.is_some_and(|senders| (k % senders as u64) as usize == me) {
                    return; // the room's reflection of our own message
                }
                let Some(count) = self.counts.get_mut(k as usize) else {
                    self.error("unexpected_message");
                    return;
                };
                *count += 1;
                if *count > self.fan_out {
                    self.duplicates += 1;
                    return;
                }
                self.latency.record_micros(now.saturating_duration_since(clock.due(k)).as_micros() as u64);
                self.delivered += 1;
                self.last_delivery = Some(now);
            }
            "error" => self.error("stream_error"),
            "close" => self.error("stream_closed"),
            _ => {}
        }
    }
}

/// Logs in `n` sessions, `concurrency` at a time; session `i` binds resource `r{i}`.
async fn login_all(
    http: &awc::Client,
    target: &Target,
    n: usize,
    concurrency: usize,
    first: usize,
) -> anyhow::Result<Vec<Session>> {
    futures_util::stream::iter(first..first + n)
        .map(|i| async move { Session::login(http, target, &format!("r{i}")).await })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Joins `room` as nick `o{i}`, waiting for the room's self-presence (status 110).
async fn join(session: &mut Session, room: &str, i: usize) -> anyhow::Result<()> {
    session.send(stanza::join_room(&format!("{room}/o{i}"))).await?;
    let text = session
        .wait_for("the room's self-presence", |text| {
            stanza::root(text).is_some_and(|t| t.name == "presence")
                && stanza::has_child_with(text, "status", "code", "110")
        })
        .await?;
    if stanza::root(&text).and_then(|t| t.attr("type")).as_deref() == Some("error") {
        anyhow::bail!("joining {room} failed: {text}");
    }
    Ok(())
}

/// Runs `plan` against `target`.
pub async fn run(target: &Target, plan: &Plan, server: Option<ServerProcess>) -> anyhow::Result<TrafficSummary> {
    let http = client();
    let n = plan.shape.sessions();
    let setup_started = Instant::now();
    let server_before = server.map(|s| s.sample());
    eprintln!("setup: logging in {n} sessions at {}", target.url);
    let mut sessions = match &plan.shape {
        Shape::Direct { .. } => login_all(&http, target, n, plan.concurrency, 0).await?,
        Shape::Room { room, .. } => {
            // The first occupant creates the room and accepts the default configuration.
            let mut owner = login_all(&http, target, 1, 1, 0).await?;
            if let Some(first) = owner.first_mut() {
                join(first, room, 0).await?;
                first.send(stanza::instant_room(room, "configure")).await?;
                first.expect_result("configure").await?;
            }
            eprintln!("setup: room {room} created; {} more occupants joining", n - 1);
            let others = futures_util::stream::iter(1..n)
                .map(|i| {
                    let (http, target) = (&http, target);
                    async move {
                        let resource = format!("r{i}");
                        let mut session = Session::login(http, target, &resource).await?;
                        join(&mut session, room, i).await?;
                        anyhow::Ok(session)
                    }
                })
                .buffered(plan.concurrency)
                .collect::<Vec<_>>()
                .await;
            for session in others {
                owner.push(session?);
            }
            owner
        }
    };
    let setup = Setup::measure(sessions.iter().map(|s| s.setup), setup_started.elapsed(), server, server_before);

    let jids: Vec<String> = sessions.iter().map(|s| s.jid.clone()).collect();
    let tally = Rc::new(RefCell::new(Tally {
        fan_out: match plan.shape {
            Shape::Direct { .. } => 1,
            Shape::Room { .. } => (n - 1) as u32,
        },
        room_senders: match plan.shape {
            Shape::Direct { .. } => None,
            Shape::Room { senders, .. } => Some(senders),
        },
        ..Tally::default()
    }));
    let senders: Vec<mpsc::UnboundedSender<ws::Message>> = sessions
        .drain(..)
        .enumerate()
        .map(|(i, session)| {
            let (reader, lost) = (tally.clone(), tally.clone());
            session.spawn(
                move |text| reader.borrow_mut().on_text(i, text, Instant::now()),
                move || lost.borrow_mut().error("connection_lost"),
            )
        })
        .collect();

    let mut steps = Vec::new();
    let mut knee_rate = None;
    for (step, &rate) in plan.rates.iter().enumerate() {
        let summary = run_step(plan, step, rate, &jids, &senders, &tally, server).await;
        eprintln!(
            "step {rate}/s: delivered {:.0}/s, p99 {:.1} ms, missing {}",
            summary.delivered_per_sec, summary.latency.p99_ms, summary.missing
        );
        let over = summary.latency.p99_ms > plan.knee_ms || summary.missing > 0;
        steps.push(summary);
        if over {
            knee_rate = Some(rate);
            break;
        }
    }
    for tx in &senders {
        hang_up(tx);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let tool = own_resources();
    let (tool_cpu_seconds, tool_max_rss_kib) = (tool.cpu_secs, tool.peak_rss_kib);
    let errors = std::mem::take(&mut tally.borrow_mut().errors);
    Ok(TrafficSummary {
        mode: match plan.shape {
            Shape::Direct { .. } => "direct",
            Shape::Room { .. } => "room",
        },
        url: target.url.clone(),
        sessions: n,
        senders: match plan.shape {
            Shape::Direct { .. } => n,
            Shape::Room { senders, .. } => senders,
        },
        setup,
        steps,
        knee_rate,
        knee_ms: plan.knee_ms,
        errors,
        tool_cpu_seconds,
        tool_max_rss_kib,
    })
}

/// Sends one step's messages on schedule, drains, and measures.
async fn run_step(
    plan: &Plan,
    step: usize,
    rate: f64,
    jids: &[String],
    senders: &[mpsc::UnboundedSender<ws::Message>],
    tally: &Rc<RefCell<Tally>>,
    server: Option<ServerProcess>,
) -> StepSummary {
    let count = (rate * plan.secs).round() as u64;
    let n = senders.len();
    let before = server.map(|s| s.sample());
    let tool_before = own_resources().cpu_secs;
    let clock = Clock { step, start: Instant::now(), rate };
    tally.borrow_mut().begin(clock, count);
    eprintln!("step {rate}/s: {count} messages over {} s", plan.secs);
    let progress = spawn_progress(tally.clone(), clock.start, rate);
    for k in 0..count {
        let due = clock.due(k);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        } else if k % 32 == 0 {
            tokio::task::yield_now().await;
        }
        let body = mark(step, k);
        let id = format!("{step}-{k}");
        let (sender, text) = match &plan.shape {
            Shape::Direct { .. } => {
                let sender = (k % n as u64) as usize;
                (sender, stanza::message(&jids[sender ^ 1], "chat", &id, &body))
            }
            Shape::Room { senders, room, .. } => {
                let sender = (k % *senders as u64) as usize;
                (sender, stanza::message(room, "groupchat", &id, &body))
            }
        };
        if senders[sender].send(ws::Message::Text(text.into())).is_err() {
            tally.borrow_mut().error("send_on_closed_connection");
        }
    }
    tokio::time::sleep_until((clock.start + Duration::from_secs_f64(plan.secs)).into()).await;
    let expected = count * u64::from(tally.borrow().fan_out);
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while tally.borrow().delivered < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.abort();
    let after = server.map(|s| s.sample());
    let t = tally.borrow();
    let span = t.last_delivery.map_or(plan.secs, |last| (last - clock.start).as_secs_f64()).max(0.001);
    let server_cpu_secs = before.zip(after).and_then(|(b, a)| Some(a.cpu_secs? - b.cpu_secs?));
    let elapsed = clock.start.elapsed().as_secs_f64();
    let per = |what: u64| server_cpu_secs.filter(|_| what > 0).map(|cpu| cpu * 1e6 / what as f64);
    StepSummary {
        rate,
        secs: plan.secs,
        sent: count,
        expected,
        delivered: t.delivered,
        missing: expected.saturating_sub(t.delivered),
        duplicates: t.duplicates,
        sent_per_sec: count as f64 / plan.secs,
        delivered_per_sec: t.delivered as f64 / span,
        latency: t.latency.summary(),
        server_cpu_secs,
        server_cores: server_cpu_secs.map(|cpu| cpu / elapsed),
        server_cpu_us_per_message: per(count),
        server_cpu_us_per_delivery: per(t.delivered),
        server_rss_kib: after.and_then(|a| a.rss_kib),
        tool_cpu_secs: own_resources().cpu_secs - tool_before,
    }
}

/// A progress line per second: deliveries over the last second and the p99 so far.
fn spawn_progress(tally: Rc<RefCell<Tally>>, start: Instant, rate: f64) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
        loop {
            tick.tick().await;
            let t = tally.borrow();
            let errors: u64 = t.errors.values().sum();
            eprintln!(
                "[{:>4.0}s] {rate}/s: delivered {}/s | p99 {:.1} ms | errors {errors}",
                start.elapsed().as_secs_f64(),
                t.delivered - last,
                t.latency.quantile_ms(0.99),
            );
            last = t.delivered;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(fan_out: u32, room_senders: Option<usize>, count: u64) -> (Tally, Clock) {
        let mut tally = Tally { fan_out, room_senders, ..Tally::default() };
        let clock = Clock { step: 1, start: Instant::now(), rate: 1000.0 };
        tally.begin(clock, count);
        (tally, clock)
    }

    fn chat(step: usize, k: u64) -> String {
        format!("<message from='a@localhost/r0' type='chat' id='x'><body>{}</body></message>", mark(step, k))
    }

    #[test]
    fn marks_round_trip_and_foreign_bodies_are_ignored() {
        assert_eq!(parse_mark(&mark(3, 42)), Some((3, 42)));
        assert_eq!(parse_mark("hello"), None);
        assert_eq!(parse_mark("parley-load 1"), None);
        assert_eq!(parse_mark("parley-load 1 2 3"), None);
    }

    #[test]
    fn latency_is_measured_from_the_due_time() {
        let (mut tally, clock) = tally(1, None, 10);
        tally.on_text(1, &chat(1, 5), clock.due(5) + Duration::from_millis(7));
        assert_eq!(tally.delivered, 1);
        let p50 = tally.latency.quantile_ms(0.5);
        assert!((p50 - 7.0).abs() < 0.05, "{p50}");
    }

    #[test]
    fn duplicates_stale_steps_and_errors_are_counted_apart() {
        let (mut tally, clock) = tally(1, None, 10);
        let now = clock.start;
        tally.on_text(1, &chat(1, 0), now);
        tally.on_text(1, &chat(1, 0), now);
        tally.on_text(1, &chat(0, 0), now);
        tally.on_text(1, &chat(1, 99), now);
        tally.on_text(1, "<message type='error'><error/></message>", now);
        tally.on_text(1, "<message><subject>hi</subject></message>", now);
        tally.on_text(1, "<presence/>", now);
        assert_eq!((tally.delivered, tally.duplicates), (1, 1));
        let errors: Vec<(&str, u64)> = tally.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(errors, [("late_from_earlier_step", 1), ("message_error", 1), ("unexpected_message", 1)]);
    }

    #[test]
    fn a_room_counts_every_other_occupant_but_not_the_senders_reflection() {
        // Three occupants, two senders: message 1 is sent by occupant 1.
        let (mut tally, clock) = tally(2, Some(2), 4);
        let groupchat = |k| format!("<message type='groupchat'><body>{}</body></message>", mark(1, k));
        for me in 0..3 {
            tally.on_text(me, &groupchat(1), clock.start);
        }
        assert_eq!((tally.delivered, tally.duplicates), (2, 0));
        tally.on_text(2, &groupchat(1), clock.start);
        assert_eq!((tally.delivered, tally.duplicates), (2, 1), "more copies than other occupants");
    }
}
