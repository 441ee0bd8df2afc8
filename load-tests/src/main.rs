//! `parley-load`: load and correctness tests against a running Parley server.

mod check;
mod run;
mod scenario;
mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::run::Summary;
use crate::scenario::Scenario;

#[derive(Parser)]
#[command(name = "parley-load", about = "Load and correctness tests against a running Parley server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario; exit code 1 when a threshold or the correctness check fails.
    Run {
        /// The scenario file (TOML; see load-tests/README.md).
        scenario: PathBuf,
        /// Base URL of the server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Command::Run { scenario, url, json } = Cli::parse().command;
    let text = match std::fs::read_to_string(&scenario) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("parley-load: {}: {error}", scenario.display());
            return ExitCode::from(2);
        }
    };
    let parsed = match Scenario::parse(&text) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("parley-load: {}: {error}", scenario.display());
            return ExitCode::from(2);
        }
    };
    let summary = match actix_rt::System::new().block_on(run::run(&parsed, &url)) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("parley-load: run failed: {error:#}");
            return ExitCode::from(2);
        }
    };
    let _ = print_table(&summary);
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&path, bytes));
        if let Err(error) = written {
            eprintln!("parley-load: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    if summary.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn print_table(s: &Summary) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nparley-load: {} users ({}), {:.1} s", s.users, s.user_prefix, s.duration_secs)?;
    for phase in &s.phases {
        writeln!(out, "  phase {:<12} {:>8} messages in {:.1} s", phase.name, phase.scheduled, phase.secs)?;
    }
    writeln!(
        out,
        "\n{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    )?;
    for (name, l) in [("connect", &s.connect), ("ack", &s.ack), ("delivery", &s.delivery)] {
        writeln!(
            out,
            "{name:<10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        )?;
    }
    writeln!(
        out,
        "\nscheduled {}, acked {}, delivered {} ({:.1}/s)",
        s.scheduled, s.acked, s.delivered, s.delivered_per_sec
    )?;
    let c = &s.check;
    writeln!(
        out,
        "check: {} acked, {} delivered, {} missing, {} reordered, {} unexpected, {} duplicates removed",
        c.acked, c.delivered, c.missing, c.reordered, c.unexpected, c.duplicates
    )?;
    writeln!(out, "errors: {} (rate {:.4})", s.error_count, s.error_rate)?;
    for (code, count) in &s.errors {
        writeln!(out, "  {code:<28} {count}")?;
    }
    writeln!(out, "tool: {:.2} CPU s, max RSS {} KiB", s.cpu_seconds, s.max_rss_kib)?;
    if s.passed {
        writeln!(out, "PASS")?;
    } else {
        for violation in &s.violations {
            writeln!(out, "FAIL: {violation}")?;
        }
    }
    Ok(())
}
