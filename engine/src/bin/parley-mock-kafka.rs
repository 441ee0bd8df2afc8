//! `parley-mock-kafka`: a Kafka-protocol broker for tests outside a Rust
//! test process (feature `test-support`). librdkafka's mock cluster must be
//! hosted by some process; the Rust cluster tests host it themselves, the
//! browser tests (web/tests/e2e) start this binary.
//!
//! It starts a mock cluster of three brokers on loopback, creates the topics
//! named by `--topic NAME:PARTITIONS` (repeatable; replication factor 3),
//! prints the bootstrap servers (`host:port,…`) as one line on stdout, and
//! serves until its stdin reaches end of file, it gets SIGTERM or SIGINT, or
//! [`LIFETIME`] has passed (a forgotten broker does not outlive its test run
//! for long). Everything lives in memory: nothing is left behind.
//!
//! ```text
//! parley-mock-kafka --topic parley.delivery:8 --topic parley.delivery.dead:1
//! ```

use std::io::{Read, Write};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use tokio::signal::unix::{SignalKind, signal};

/// Brokers in the mock cluster: enough for replication factor 3.
const BROKERS: i32 = 3;
/// Replication factor of every topic.
const REPLICATION: i32 = 3;
/// The longest it serves, whatever happens to its parent.
const LIFETIME: Duration = Duration::from_secs(30 * 60);

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let topics = parse_args(std::env::args().skip(1))?;
    let mock = MockCluster::new(BROKERS)?;
    for (name, partitions) in &topics {
        mock.create_topic(name, *partitions, REPLICATION)?;
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", mock.bootstrap_servers())?;
        stdout.flush()?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reason = runtime.block_on(wait_for_the_end())?;
    let mut stderr = std::io::stderr().lock();
    // Best effort: the parent may have closed its end already.
    let _ = writeln!(stderr, "parley-mock-kafka: stopping ({reason})");
    drop(mock);
    Ok(())
}

/// `--topic NAME:PARTITIONS`, any number of times (also `--topic=NAME:PARTITIONS`).
fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<(String, i32)>, Error> {
    let mut topics = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        let spec = match arg.strip_prefix("--topic=") {
            Some(spec) => spec.to_owned(),
            None if arg == "--topic" => args.next().ok_or("--topic needs NAME:PARTITIONS")?,
            None if arg == "--help" || arg == "-h" => {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "usage: parley-mock-kafka [--topic NAME:PARTITIONS]...")?;
                std::process::exit(0);
            }
            None => return Err(format!("unknown argument {arg:?} (usage: --topic NAME:PARTITIONS ...)").into()),
        };
        let (name, partitions) = spec.rsplit_once(':').ok_or_else(|| format!("{spec:?} is not NAME:PARTITIONS"))?;
        let partitions: i32 = partitions.parse().map_err(|_| format!("{spec:?}: partitions must be a number"))?;
        if name.is_empty() || partitions < 1 {
            return Err(format!("{spec:?}: a topic needs a name and at least one partition").into());
        }
        topics.push((name.to_owned(), partitions));
    }
    Ok(topics)
}

/// Waits for the first of: stdin at end of file, SIGTERM, SIGINT, [`LIFETIME`].
async fn wait_for_the_end() -> Result<&'static str, Error> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
    // A plain thread: reading stdin blocks, and it is abandoned at exit.
    std::thread::spawn(move || {
        let mut sink = [0u8; 1024];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = eof_tx.send(());
    });
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        _ = eof_rx => "end of stdin",
        () = tokio::time::sleep(LIFETIME) => "lifetime over",
    })
}
