//! The `idle` mode: many sessions opened by worker processes (each under the per-process open-file
//! limit) and held, to measure session setup rate and the server's memory and CPU per session.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::session::{Session, Target, client, hang_up};
use super::{ServerProcess, Setup};
use crate::stats::{ErrorCounts, own_resources};

/// What a worker reports on one stdout line once its sessions are set up.
#[derive(Debug, Deserialize, Serialize)]
pub struct WorkerReport {
    pub opened: usize,
    pub failed: usize,
    /// Setup time of each opened session, in microseconds.
    pub setup_us: Vec<u64>,
    /// Failures by message (first 80 characters).
    pub errors: ErrorCounts,
}

/// The result of an `idle` run.
#[derive(Debug, Serialize)]
pub struct IdleSummary {
    pub url: String,
    pub requested: usize,
    pub workers: usize,
    pub failed: usize,
    pub setup: Setup,
    pub hold_secs: f64,
    /// Sessions lost during the hold, as the workers saw them.
    pub lost: usize,
    /// Server RSS at the end of the hold minus before setup, per opened session.
    pub server_kib_per_session_after_hold: Option<f64>,
    /// Server CPU during the hold, in cores (idle sessions' keep-alive cost).
    pub server_idle_cores: Option<f64>,
    pub errors: ErrorCounts,
    pub tool_cpu_seconds: f64,
}

/// What the coordinator runs.
#[derive(Clone, Debug)]
pub struct IdlePlan {
    pub connections: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub hold_secs: f64,
}

/// Starts `plan.workers` copies of this program as `xmpp idle-worker`, waits until all have set
/// up their share, samples the server, holds, samples again, then ends the workers.
pub fn coordinate(target: &Target, plan: &IdlePlan, server: Option<ServerProcess>) -> anyhow::Result<IdleSummary> {
    let exe = std::env::current_exe().context("locating parley-load")?;
    let workers = plan.workers.max(1);
    let before = server.map(|s| s.sample());
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(workers);
    for w in 0..workers {
        let share = plan.connections / workers + usize::from(w < plan.connections % workers);
        let child = Command::new(&exe)
            .args(["xmpp", "idle-worker", "--url", &target.url, "--domain", &target.domain])
            .args(["--connections", &share.to_string(), "--concurrency", &plan.concurrency.to_string()])
            .args(["--worker", &w.to_string(), "--max-hold-secs", &(plan.hold_secs + 600.0).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a worker")?;
        children.push(child);
    }
    eprintln!("idle: {workers} workers opening {} sessions", plan.connections);
    // Each worker's report is one line; a worker that dies gives an empty one. The reader is kept
    // for the worker's last line.
    let readers: Vec<_> = children
        .iter_mut()
        .map(|child| {
            let stdout = child.stdout.take().map(BufReader::new);
            std::thread::spawn(move || {
                let mut stdout = stdout?;
                let mut line = String::new();
                stdout.read_line(&mut line).ok()?;
                Some((serde_json::from_str::<WorkerReport>(&line).ok()?, stdout))
            })
        })
        .collect();
    let (reports, mut outputs): (Vec<WorkerReport>, Vec<_>) = readers
        .into_iter()
        .map(|reader| reader.join().ok().flatten().context("a worker exited without a report"))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let setup_wall = started.elapsed();
    let setup = Setup::measure(
        reports.iter().flat_map(|r| r.setup_us.iter().map(|us| Duration::from_micros(*us))),
        setup_wall,
        server,
        before,
    );
    eprintln!(
        "idle: {} sessions open after {:.1} s ({:.0}/s); holding {} s",
        setup.sessions,
        setup_wall.as_secs_f64(),
        setup.sessions_per_sec,
        plan.hold_secs
    );
    let held = server.map(|s| s.sample());
    std::thread::sleep(Duration::from_secs_f64(plan.hold_secs));
    let after = server.map(|s| s.sample());

    // Closing a worker's stdin tells it to hang up; it reports how many sessions it lost.
    let mut lost = 0;
    for child in &mut children {
        drop(child.stdin.take());
    }
    for (mut child, stdout) in children.into_iter().zip(outputs.iter_mut()) {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        lost += rest.trim().parse::<usize>().unwrap_or(0);
        let _ = child.wait();
    }

    let opened = setup.sessions;
    let kib = |a: Option<super::Sample>| a.and_then(|a| a.rss_kib);
    let mut errors = ErrorCounts::new();
    for report in &reports {
        for (message, count) in &report.errors {
            *errors.entry(message.clone()).or_default() += count;
        }
    }
    Ok(IdleSummary {
        url: target.url.clone(),
        requested: plan.connections,
        workers,
        failed: reports.iter().map(|r| r.failed).sum(),
        server_kib_per_session_after_hold: kib(after)
            .zip(kib(before))
            .filter(|_| opened > 0)
            .map(|(a, b)| (a as f64 - b as f64) / opened as f64),
        server_idle_cores: held
            .zip(after)
            .and_then(|(h, a)| Some((a.cpu_secs? - h.cpu_secs?) / plan.hold_secs.max(0.001))),
        setup,
        hold_secs: plan.hold_secs,
        lost,
        errors,
        tool_cpu_seconds: own_resources().cpu_secs,
    })
}

/// One worker: opens `connections` sessions (resources `w{worker}-{i}`), prints its report line,
/// holds until stdin closes (at most `max_hold`), hangs up and prints the number of sessions lost.
pub async fn worker(
    target: &Target,
    worker: usize,
    connections: usize,
    concurrency: usize,
    max_hold: Duration,
) -> anyhow::Result<()> {
    let http = client();
    let results = futures_util::stream::iter(0..connections)
        .map(|i| {
            let http = &http;
            async move { Session::login(http, target, &format!("w{worker}-{i}")).await }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let lost = Rc::new(Cell::new(0usize));
    let mut report = WorkerReport { opened: 0, failed: 0, setup_us: Vec::new(), errors: ErrorCounts::new() };
    let mut senders = Vec::new();
    for result in results {
        match result {
            Ok(session) => {
                report.opened += 1;
                report.setup_us.push(session.setup.as_micros() as u64);
                let lost = lost.clone();
                senders.push(session.spawn(|_| {}, move || lost.set(lost.get() + 1)));
            }
            Err(error) => {
                report.failed += 1;
                let message: String = format!("{error:#}").chars().take(80).collect();
                *report.errors.entry(message).or_default() += 1;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&report)?)?;
    out.flush()?;
    drop(out);

    // A plain thread, not spawn_blocking: the runtime would wait for it at exit.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let _ = tokio::time::timeout(max_hold, stdin_closed).await;
    let lost = lost.get();
    for tx in &senders {
        hang_up(tx);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{lost}")?;
    Ok(())
}
