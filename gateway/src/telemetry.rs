//! Log setup: human-readable lines by default, JSON lines on request.

use std::io::BufWriter;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. The filter comes from `RUST_LOG`
/// (default `info`). Lines go to stderr from a thread of their own
/// (tracing-appender): the thread that logs only queues the line, so an
/// actor thread never waits for stderr (a slow pipe, a full journal) nor
/// for the other threads' lines, and a burst of lines leaves in few
/// writes. Past [`tracing_appender::non_blocking::DEFAULT_BUFFERED_LINES_LIMIT`]
/// queued lines, new ones are dropped rather than stall the server.
///
/// Returns the guard that writes out the queued lines when dropped: keep
/// it until the process ends. `None` if a subscriber was installed
/// already (a second call does nothing).
pub fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) =
        NonBlockingBuilder::default().thread_name("parley-log").finish(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.is_ok().then_some(guard)
}
