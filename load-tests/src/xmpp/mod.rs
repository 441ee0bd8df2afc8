//! `parley-load xmpp`: drives an XMPP server (ejabberd) over WebSocket (RFC 7395) with the same
//! work as the Parley scenarios, so both sides are measured by one tool (see load-tests/README.md).

mod idle;
mod session;
mod stanza;
mod traffic;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use self::idle::{IdlePlan, IdleSummary};
use self::session::Target;
use self::traffic::{Plan, Shape, TrafficSummary};
use crate::stats::{Latencies, LatencySummary, sample_process};

/// Options every mode takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// WebSocket URL of the XMPP server, e.g. ws://127.0.0.1:5280/ws.
    #[arg(long)]
    url: String,
    /// The XMPP domain to log in to (anonymous authentication).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// PID of the server process (beam.smp for ejabberd): its RSS and CPU time are sampled.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Logins in flight at once during setup.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
}

/// Options of the stepped modes.
#[derive(Args, Clone, Debug)]
pub struct Steps {
    /// Messages per second over all senders; a comma-separated list runs one step per rate.
    #[arg(long, value_delimiter = ',', required = true)]
    rate: Vec<f64>,
    /// Seconds each step sends for.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Stop after the first step whose delivery p99 exceeds this many milliseconds (the knee).
    #[arg(long, default_value_t = 100.0)]
    knee_ms: f64,
}

#[derive(Subcommand, Debug)]
pub enum XmppCommand {
    /// Open N sessions, hold them; report setup rate and server memory and CPU per session.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Sessions to open.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200_000))]
        connections: u32,
        /// Worker processes to spread the sessions over (each holds one socket per session).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
        /// Seconds to hold the sessions after setup before the second sample.
        #[arg(long, default_value_t = 10.0)]
        hold_secs: f64,
    },
    /// P pairs of sessions exchanging chat messages at the given rates.
    Direct {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        steps: Steps,
        /// Pairs of sessions; each session sends to its partner.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
        pairs: u32,
    },
    /// N occupants in one MUC room; a few send groupchat messages, everyone counts deliveries.
    Room {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        steps: Steps,
        /// Occupants of the room.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(2..=50_000))]
        occupants: u32,
        /// How many of the occupants send.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50_000))]
        senders: u32,
        /// The room's bare JID.
        #[arg(long, default_value = "bench@conference.localhost")]
        room: String,
    },
    /// (internal) One worker process of `idle`.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        url: String,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        worker: usize,
        #[arg(long)]
        max_hold_secs: f64,
    },
}

/// The server process whose resources are sampled.
#[derive(Clone, Copy, Debug)]
pub struct ServerProcess(u32);

/// One sample of the server's resources; `None` where /proc could not be read.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub cpu_secs: Option<f64>,
    pub rss_kib: Option<u64>,
}

impl ServerProcess {
    pub fn sample(self) -> Sample {
        let sample = sample_process(&self.0.to_string());
        Sample { cpu_secs: sample.map(|s| s.cpu_secs), rss_kib: sample.map(|s| s.rss_kib) }
    }
}

/// How setting up the sessions went.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub sessions: usize,
    pub secs: f64,
    pub sessions_per_sec: f64,
    /// Handshake until the session is established, per session.
    pub latency: LatencySummary,
    pub server_cpu_us_per_login: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub server_kib_per_session: Option<f64>,
}

impl Setup {
    fn measure(
        setups: impl Iterator<Item = Duration>,
        wall: Duration,
        server: Option<ServerProcess>,
        before: Option<Sample>,
    ) -> Setup {
        let mut latency = Latencies::default();
        for setup in setups {
            latency.record_micros(setup.as_micros() as u64);
        }
        let sessions = latency.count() as usize;
        let after = server.map(ServerProcess::sample);
        let (before, after) = (before.unwrap_or(Sample { cpu_secs: None, rss_kib: None }), after);
        let rss_after = after.and_then(|a| a.rss_kib);
        let per_session = |total: f64| (sessions > 0).then(|| total / sessions as f64);
        Setup {
            sessions,
            secs: wall.as_secs_f64(),
            sessions_per_sec: sessions as f64 / wall.as_secs_f64().max(0.001),
            latency: latency.summary(),
            server_cpu_us_per_login: before
                .cpu_secs
                .zip(after.and_then(|a| a.cpu_secs))
                .and_then(|(b, a)| per_session((a - b) * 1e6)),
            server_rss_kib_before: before.rss_kib,
            server_rss_kib_after: rss_after,
            server_kib_per_session: before.rss_kib.zip(rss_after).and_then(|(b, a)| per_session(a as f64 - b as f64)),
        }
    }
}

/// Either summary, for printing and JSON.
#[derive(Serialize)]
#[serde(untagged)]
enum Summary {
    Idle(IdleSummary),
    Traffic(TrafficSummary),
}

/// Runs an `xmpp` subcommand; exit code 0 on success, 1 when sessions failed or messages went
/// missing, 2 when the run could not be set up.
pub fn main(command: XmppCommand) -> ExitCode {
    let (common, result) = match command {
        XmppCommand::IdleWorker { url, domain, connections, concurrency, worker, max_hold_secs } => {
            let target = Target { url, domain };
            let max_hold = Duration::from_secs_f64(max_hold_secs.max(0.0));
            let ran = actix_rt::System::new().block_on(idle::worker(
                &target,
                worker,
                connections,
                concurrency.max(1),
                max_hold,
            ));
            return match ran {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("parley-load xmpp idle-worker: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        XmppCommand::Idle { common, connections, workers, hold_secs } => {
            let plan = IdlePlan {
                connections: connections as usize,
                workers: usize::from(workers),
                concurrency: usize::from(common.concurrency),
                hold_secs: hold_secs.clamp(0.0, 3600.0),
            };
            let result = idle::coordinate(&target(&common), &plan, server(&common)).map(Summary::Idle);
            (common, result)
        }
        XmppCommand::Direct { common, steps, pairs } => {
            let shape = Shape::Direct { pairs: pairs as usize };
            let result = traffic_run(&common, &steps, shape);
            (common, result)
        }
        XmppCommand::Room { common, steps, occupants, senders, room } => {
            let shape = Shape::Room { occupants: occupants as usize, senders: senders.min(occupants) as usize, room };
            let result = traffic_run(&common, &steps, shape);
            (common, result)
        }
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("parley-load xmpp: run failed: {error:#}");
            return ExitCode::from(2);
        }
    };
    let _ = print_table(&summary);
    if let Some(path) = &common.json {
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(path, bytes));
        if let Err(error) = written {
            eprintln!("parley-load xmpp: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    let failed = match &summary {
        Summary::Idle(s) => s.failed > 0 || s.lost > 0,
        Summary::Traffic(s) => s.steps.iter().any(|step| step.missing > 0) || s.errors.contains_key("connection_lost"),
    };
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn target(common: &Common) -> Target {
    Target { url: common.url.clone(), domain: common.domain.clone() }
}

fn server(common: &Common) -> Option<ServerProcess> {
    common.server_pid.map(ServerProcess)
}

fn traffic_run(common: &Common, steps: &Steps, shape: Shape) -> anyhow::Result<Summary> {
    if steps.rate.iter().any(|r| !(0.1..=1_000_000.0).contains(r)) || !(0.1..=3600.0).contains(&steps.secs) {
        anyhow::bail!("--rate must be in 0.1..=1000000 and --secs in 0.1..=3600");
    }
    let plan = Plan {
        shape,
        rates: steps.rate.clone(),
        secs: steps.secs,
        knee_ms: steps.knee_ms,
        concurrency: usize::from(common.concurrency),
    };
    let target = target(common);
    actix_rt::System::new().block_on(traffic::run(&target, &plan, server(common))).map(Summary::Traffic)
}

/// `-` for a missing value.
fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn print_table(summary: &Summary) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let setup = match summary {
        Summary::Idle(s) => &s.setup,
        Summary::Traffic(s) => &s.setup,
    };
    writeln!(
        out,
        "\nsetup: {} sessions in {:.1} s ({:.0}/s); per session p50 {:.1} ms, p99 {:.1} ms; server {} µs CPU and {} KiB per session",
        setup.sessions,
        setup.secs,
        setup.sessions_per_sec,
        setup.latency.p50_ms,
        setup.latency.p99_ms,
        opt(setup.server_cpu_us_per_login, 0),
        opt(setup.server_kib_per_session, 1),
    )?;
    match summary {
        Summary::Idle(s) => {
            writeln!(
                out,
                "idle: {} requested over {} workers, {} failed, {} lost; after {} s hold: {} KiB per session, server {} cores",
                s.requested,
                s.workers,
                s.failed,
                s.lost,
                s.hold_secs,
                opt(s.server_kib_per_session_after_hold, 1),
                opt(s.server_idle_cores, 3),
            )?;
            for (message, count) in &s.errors {
                writeln!(out, "  {count:>6} × {message}")?;
            }
        }
        Summary::Traffic(s) => {
            writeln!(out, "{}: {} sessions, {} sending", s.mode, s.sessions, s.senders)?;
            writeln!(
                out,
                "{:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>9}",
                "rate/s",
                "sent/s",
                "deliv/s",
                "missing",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "cores",
                "µs/msg",
                "µs/deliv"
            )?;
            for step in &s.steps {
                let l = &step.latency;
                writeln!(
                    out,
                    "{:>8} {:>9.0} {:>11.0} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.1} {:>7} {:>9} {:>9}",
                    step.rate,
                    step.sent_per_sec,
                    step.delivered_per_sec,
                    step.missing,
                    l.p50_ms,
                    l.p90_ms,
                    l.p99_ms,
                    l.p999_ms,
                    l.max_ms,
                    opt(step.server_cores, 2),
                    opt(step.server_cpu_us_per_message, 1),
                    opt(step.server_cpu_us_per_delivery, 1),
                )?;
            }
            match s.knee_rate {
                Some(rate) => writeln!(out, "knee: p99 above {} ms (or losses) at {rate}/s", s.knee_ms)?,
                None => writeln!(out, "knee: not reached (p99 ≤ {} ms at every rate)", s.knee_ms)?,
            }
            for (code, count) in &s.errors {
                writeln!(out, "  {code:<28} {count}")?;
            }
            writeln!(out, "tool: {:.2} CPU s, max RSS {} KiB", s.tool_cpu_seconds, s.tool_max_rss_kib)?;
        }
    }
    Ok(())
}
