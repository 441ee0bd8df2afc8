//! Log and trace setup: human-readable lines by default, JSON lines on
//! request; spans exported over OTLP/HTTP when `[otlp]` is configured.

use std::io::BufWriter;

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::{LogFormat, OtlpConfig};

/// The subscriber under the log lines: every event passed `RUST_LOG`.
type Filtered = Layered<EnvFilter, Registry>;

/// Keeps logs and traces flowing; dropped last, it writes out the queued
/// log lines and exports the spans not sent yet.
pub struct Telemetry {
    _log: WorkerGuard,
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(%error, "exporting the last spans failed");
        }
    }
}

/// Installs the global subscriber. The filter comes from `RUST_LOG`
/// (default `info`) and applies to log lines and exported spans alike.
/// Lines go to stderr from a thread of their own (tracing-appender): the
/// thread that logs only queues the line, so an actor thread never waits
/// for stderr (a slow pipe, a full journal) nor for the other threads'
/// lines, and a burst of lines leaves in few writes. Past
/// [`tracing_appender::non_blocking::DEFAULT_BUFFERED_LINES_LIMIT`] queued
/// lines, new ones are dropped rather than stall the server.
///
/// With `otlp`, spans (each HTTP request's, with the spans inside it) are
/// batched and exported from a thread of the exporter's own, sampled by
/// trace at `sample_ratio`.
///
/// Returns what keeps both going: keep it until the process ends. `None`
/// if a subscriber was installed already (a second call does nothing).
pub fn init(format: LogFormat, otlp: Option<&OtlpConfig>) -> Result<Option<Telemetry>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) =
        NonBlockingBuilder::default().thread_name("parley-log").finish(BufWriter::new(std::io::stderr()));
    let lines: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().with_writer(writer).json().flatten_event(true).boxed(),
    };
    let traces = otlp.map(tracer_provider).transpose()?;
    let spans = traces
        .as_ref()
        // No source locations: they name the build machine's paths.
        .map(|provider| {
            tracing_opentelemetry::layer().with_location(false).with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
        });
    let installed = tracing_subscriber::registry().with(filter).with(lines).with(spans).try_init();
    Ok(installed.is_ok().then_some(Telemetry { _log: guard, traces }))
}

/// The span exporter of `[otlp]`: OTLP over HTTP with protobuf bodies.
fn tracer_provider(otlp: &OtlpConfig) -> Result<SdkTracerProvider, String> {
    // The exporter's HTTP client is built without TLS: a node sends its
    // spans to a collector beside it, which may forward them over TLS.
    if !otlp.endpoint.starts_with("http://") {
        return Err(format!(
            "otlp.endpoint must be an http:// URL (for TLS, export to a collector beside the node), not {:?}",
            otlp.endpoint
        ));
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        return Err(format!("otlp.sample_ratio must be between 0.0 and 1.0, not {}", otlp.sample_ratio));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&otlp.endpoint)
        .build()
        .map_err(|error| format!("otlp: {error}"))?;
    let resource = Resource::builder().with_service_name(otlp.service_name.clone()).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(otlp.sample_ratio))))
        .with_resource(resource)
        .build())
}
