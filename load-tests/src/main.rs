//! `parley-load`: load and correctness tests against a running Parley server.

mod check;
mod decode;
mod limits;
#[cfg(test)]
mod live_tests;
mod report;
mod run;
mod scenario;
mod schedule;
mod setup;
mod source;
mod stats;
mod xmpp;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::report::ServerTrace;
use crate::run::{Driver, Options, Outcome};
use crate::scenario::Scenario;
use crate::setup::Plan;
use crate::stats::{ProcSample, sample_process};

/// How long after the last process is connected the phases start.
const START_DELAY: Duration = Duration::from_millis(200);
/// Most worker processes.
const MAX_WORKERS: usize = 64;

#[derive(Parser)]
#[command(name = "parley-load", about = "Load and correctness tests against a running Parley server")]
struct Cli {
    #[command(subcommand)]
    command: Command_,
}

#[derive(clap::Args, Clone)]
struct Sources {
    /// Bind outgoing sockets to these local addresses, round-robin (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Bind outgoing sockets to 127.0.0.1 ..= 127.0.0.N, round-robin (1–254).
    #[arg(long, conflicts_with = "source_addrs", value_parser = clap::value_parser!(u32).range(1..=254))]
    source_ips: Option<u32>,
}

impl Sources {
    fn addrs(&self) -> Vec<IpAddr> {
        self.source_ips.map_or_else(|| self.source_addrs.clone(), limits::loopback_sources)
    }
}

#[derive(Subcommand)]
enum Command_ {
    /// Run a scenario; exit code 1 when a threshold or the correctness check fails.
    Run {
        /// The scenario file (TOML; see load-tests/README.md).
        scenario: PathBuf,
        /// Base URL of a server, e.g. http://127.0.0.1:8080; give it several times to spread users round-robin.
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write a self-contained HTML report with plots to this file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write each plot as a standalone SVG file, <DIR>/<scenario>-<plot>.svg.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Sample this server process's CPU and memory (/proc/PID) and report its cost.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Split the connections over this many child processes (1–64).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_WORKERS as u64))]
        workers: u64,
        /// Use these accounts (written by `parley seed --out`) instead of registering new ones.
        #[arg(long)]
        accounts: Option<PathBuf>,
        #[command(flatten)]
        sources: Sources,
    },
    /// One worker of a multi-process run (started by `run --workers`; reads the plan from stdin).
    #[command(hide = true)]
    Worker {
        scenario: PathBuf,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        workers: usize,
        #[command(flatten)]
        sources: Sources,
    },
    /// Drive an XMPP server (ejabberd) over WebSocket with the same work, for comparison.
    #[command(subcommand)]
    Xmpp(xmpp::XmppCommand),
}

fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The users of worker `index` of `workers`.
fn slice(users: usize, index: usize, workers: usize) -> std::ops::Range<usize> {
    users * index / workers..users * (index + 1) / workers
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command_::Run { scenario, urls, json, html, plots, server_pid, workers, accounts, sources } => {
            let parsed = match load(&scenario) {
                Ok(parsed) => parsed,
                Err(error) => {
                    eprintln!("parley-load: {error}");
                    return ExitCode::from(2);
                }
            };
            if parsed.step.is_some() && workers > 1 {
                // Each worker would judge its own share of a step and stop on its own.
                eprintln!("parley-load: a [step] scenario runs in one process; leave out --workers");
                return ExitCode::from(2);
            }
            let addrs = sources.addrs();
            let users = parsed.population.users as u64;
            let devices = parsed.population.devices as u64;
            let problems = limits::check(users.div_ceil(workers) * devices, workers, addrs.len() as u64);
            if !problems.is_empty() {
                for problem in problems {
                    eprintln!("parley-load: {problem}");
                }
                return ExitCode::from(2);
            }
            if let Some(warning) = limits::accept_queue_warning(parsed.population.connect_concurrency as u64 * workers)
            {
                eprintln!("parley-load: warning: {warning}");
            }
            let name = scenario.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let run = Run {
                scenario: &parsed,
                path: &scenario,
                urls,
                addrs,
                server_pid,
                workers: workers as usize,
                accounts,
            };
            let summary = match run.execute() {
                Ok((plan, outcomes, trace)) => report::summarize(&name, &parsed, &plan, &outcomes, trace.as_ref()),
                Err(error) => {
                    eprintln!("parley-load: run failed: {error:#}");
                    return ExitCode::from(2);
                }
            };
            let _ = report::write_table(&mut std::io::stdout().lock(), &summary);
            let mut outputs = Vec::new();
            if let Some(path) = json {
                outputs.push((path, serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)));
            }
            if let Some(path) = html {
                outputs.push((path, Ok(report::html(&summary).into_bytes())));
            }
            if let Some(dir) = plots {
                let charts = report::charts(&summary).into_iter();
                outputs.extend(
                    charts.map(|(slug, _, svg)| (dir.join(format!("{name}-{slug}.svg")), Ok(svg.into_bytes()))),
                );
            }
            let written = outputs.into_iter().try_for_each(|(path, bytes)| {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                bytes.and_then(|b| std::fs::write(&path, b)).map_err(|e| format!("{}: {e}", path.display()))
            });
            if let Err(error) = written {
                eprintln!("parley-load: {error}");
                return ExitCode::from(2);
            }
            if summary.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command_::Worker { scenario, index, workers, sources } => {
            match worker(&scenario, index, workers, sources.addrs()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("parley-load worker {index}: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command_::Xmpp(command) => xmpp::main(command),
    }
}

/// A `run` command, set up.
struct Run<'a> {
    scenario: &'a Scenario,
    path: &'a Path,
    urls: Vec<String>,
    addrs: Vec<IpAddr>,
    server_pid: Option<u32>,
    workers: usize,
    /// Seeded accounts to use instead of registering.
    accounts: Option<PathBuf>,
}

/// Samples the server once a second from `start` until stopped.
fn spawn_sampler(pid: u32, start: Instant) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<ProcSample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut next = start;
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            match sample_process(&pid.to_string()) {
                Some(sample) => samples.push(sample),
                None => break,
            }
            next += Duration::from_secs(1);
        }
        samples
    });
    (stop, handle)
}

impl Run<'_> {
    fn sample(&self) -> ProcSample {
        self.server_pid.and_then(|pid| sample_process(&pid.to_string())).unwrap_or_default()
    }

    /// Sets up, connects (in this process or in workers), runs, and returns the outcomes.
    fn execute(&self) -> anyhow::Result<(Plan, Vec<Outcome>, Option<ServerTrace>)> {
        if let Some(pid) = self.server_pid
            && sample_process(&pid.to_string()).is_none()
        {
            bail!("--server-pid {pid}: no such process (or /proc/{pid} is not readable)");
        }
        let system = actix_rt::System::new();
        let client = run::client(self.addrs.first().copied());
        let seeded = match &self.accounts {
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("--accounts {}", path.display()))?;
                Some(serde_json::from_slice(&bytes).with_context(|| format!("--accounts {}", path.display()))?)
            }
            None => None,
        };
        let plan = system.block_on(setup::setup(self.scenario, &self.urls, &client, seeded))?;
        let mut trace =
            self.server_pid.map(|pid| ServerTrace { pid, before_connect: self.sample(), ..Default::default() });
        let (outcomes, sampler) = if self.workers == 1 {
            let plan = Rc::new(plan.clone());
            let options = Options {
                source_addrs: self.addrs.clone(),
                slice: 0..plan.users.len(),
                share: 1.0,
                worker: 0,
                exact_drain: true,
                label: String::new(),
            };
            system.block_on(async {
                let driver = Driver::connect(self.scenario, plan, options).await?;
                let start = Instant::now() + START_DELAY;
                if let Some(trace) = &mut trace {
                    trace.connected = self.sample();
                }
                let sampler = self.server_pid.map(|pid| spawn_sampler(pid, start));
                anyhow::Ok((vec![driver.run(start).await?], sampler))
            })?
        } else {
            self.in_workers(&plan, &mut trace)?
        };
        if let Some(trace) = &mut trace {
            trace.end = self.sample();
            if let Some((stop, handle)) = sampler {
                stop.store(true, Ordering::Relaxed);
                trace.seconds = handle.join().unwrap_or_default();
            }
        }
        Ok((plan, outcomes, trace))
    }

    /// Runs the plan in `workers` child processes; each connects its slice of the users.
    #[allow(clippy::type_complexity)]
    fn in_workers(
        &self,
        plan: &Plan,
        trace: &mut Option<ServerTrace>,
    ) -> anyhow::Result<(Vec<Outcome>, Option<(Arc<AtomicBool>, std::thread::JoinHandle<Vec<ProcSample>>)>)> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let plan_line = serde_json::to_string(plan)?;
        let mut children: Vec<(Child, ChildStdin, BufReader<ChildStdout>)> = Vec::new();
        for index in 0..self.workers {
            let mut command = Command::new(&exe);
            command.arg("worker").arg(self.path).args([
                "--index",
                &index.to_string(),
                "--workers",
                &self.workers.to_string(),
            ]);
            if !self.addrs.is_empty() {
                let addrs: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
                command.arg("--source-addrs").arg(addrs.join(","));
            }
            let mut child =
                command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("starting a worker")?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {index}: no pipes");
            };
            writeln!(stdin, "{plan_line}").with_context(|| format!("worker {index}: sending the plan"))?;
            children.push((child, stdin, BufReader::new(stdout)));
        }
        let mut line = String::new();
        for (index, (_, _, stdout)) in children.iter_mut().enumerate() {
            line.clear();
            stdout.read_line(&mut line)?;
            if line.trim() != "ready" {
                bail!("worker {index} failed to connect (see its messages above)");
            }
        }
        if let Some(trace) = trace {
            trace.connected = self.sample();
        }
        let start = Instant::now() + START_DELAY;
        let go = unix_micros() + START_DELAY.as_micros() as u64;
        for (index, (_, stdin, _)) in children.iter_mut().enumerate() {
            writeln!(stdin, "{go}").with_context(|| format!("worker {index}: sending go"))?;
        }
        let sampler = self.server_pid.map(|pid| spawn_sampler(pid, start));
        let mut outcomes = Vec::new();
        for (index, (mut child, _, mut stdout)) in children.into_iter().enumerate() {
            line.clear();
            stdout.read_line(&mut line)?;
            let outcome = serde_json::from_str(&line).with_context(|| format!("worker {index}: no result"));
            let _ = child.wait();
            outcomes.push(outcome?);
        }
        Ok((outcomes, sampler))
    }
}

/// A worker: reads the plan, connects its slice, says `ready`, waits for the
/// start time, runs, and writes its outcome as one JSON line.
fn worker(path: &Path, index: usize, workers: usize, addrs: Vec<IpAddr>) -> anyhow::Result<()> {
    let scenario = load(path).map_err(anyhow::Error::msg)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let plan: Plan = serde_json::from_str(&line).context("reading the plan")?;
    let users = plan.users.len();
    let range = slice(users, index, workers);
    let options = Options {
        source_addrs: addrs,
        share: range.len() as f64 / users as f64,
        slice: range,
        worker: index,
        exact_drain: false,
        label: format!("w{index} "),
    };
    let outcome = actix_rt::System::new().block_on(async {
        let driver = Driver::connect(&scenario, Rc::new(plan), options).await?;
        writeln!(std::io::stdout().lock(), "ready")?;
        // Read the start time on a thread so the connections keep being served meanwhile.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            let _ = tx.send(line);
        });
        let go: u64 = rx.await?.trim().parse().context("reading the start time")?;
        let start = Instant::now() + Duration::from_micros(go.saturating_sub(unix_micros()));
        driver.run(start).await
    })?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_user_once() {
        let slices: Vec<_> = (0..3).map(|i| slice(10, i, 3)).collect();
        assert_eq!(slices, vec![0..3, 3..6, 6..10]);
    }
}
