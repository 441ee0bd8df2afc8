//! Traces exported over OTLP/HTTP: a node with `[otlp]` sends each HTTP
//! request's span to the collector, here a receiver in the test that
//! speaks the protocol (protobuf `ExportTraceServiceRequest` bodies POSTed
//! to `/v1/traces`, as Jaeger and the OpenTelemetry Collector take them).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use common::spawn_node_with;
use engine::testing::without_inherited_fds;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::mpsc;

/// How long a test waits for spans to arrive.
const PATIENCE: Duration = Duration::from_secs(20);

/// One exported span: its service, name and attributes (as text).
#[derive(Debug)]
struct Exported {
    service: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// A collector's traces endpoint on a free loopback port, and every span
/// it is sent.
fn collector() -> (String, mpsc::UnboundedReceiver<Exported>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let tx = tx.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let tx = tx.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return HttpResponse::BadRequest().finish();
                    };
                    for exported in spans(request) {
                        let _ = tx.send(exported);
                    }
                    HttpResponse::Ok().content_type("application/x-protobuf").finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}/v1/traces"), rx)
}

fn spans(request: ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|resource| text_map(&resource.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
            out.push(Exported { service: service.clone(), name: span.name, attributes: text_map(&span.attributes) });
        }
    }
    out
}

fn text_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        other => format!("{other:?}"),
    }
}

/// The first span named `name` the collector gets within [`PATIENCE`].
async fn span_named(exported: &mut mpsc::UnboundedReceiver<Exported>, name: &str) -> Exported {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, exported.recv()).await {
            Ok(Some(span)) if span.name == name => return span,
            Ok(Some(_)) => {}
            _ => panic!("no span named {name:?} was exported within {PATIENCE:?}"),
        }
    }
}

#[actix_web::test]
async fn a_node_exports_each_http_requests_span_with_its_route_and_status() {
    let (endpoint, mut exported) = collector();
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("parley.log")).unwrap();
    let env = [
        ("PARLEY_OTLP__ENDPOINT", endpoint.as_str()),
        ("PARLEY_OTLP__SERVICE_NAME", "parley-under-test"),
        // The batch exporter's pause between exports (default 5 s).
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (_node, api) = spawn_node_with(dir.path(), Stdio::from(log), &env).await;
    api.register("traced").await;

    let span = span_named(&mut exported, "POST /api/v1/auth/register").await;
    assert_eq!(span.service, "parley-under-test");
    assert_eq!(span.attributes.get("http.route").map(String::as_str), Some("/api/v1/auth/register"));
    assert_eq!(span.attributes.get("http.status_code").map(String::as_str), Some("201"), "{span:?}");
    let span = span_named(&mut exported, "POST /api/v1/auth/login").await;
    assert_eq!(span.attributes.get("http.status_code").map(String::as_str), Some("200"), "{span:?}");
}

#[test]
fn a_node_with_bad_otlp_settings_refuses_to_start_and_says_why() {
    let bad = [
        ("jaeger:4318", "1.0", "otlp.endpoint must be an http:// URL"),
        ("https://collector.example/v1/traces", "1.0", "otlp.endpoint must be an http:// URL"),
        ("http://127.0.0.1:4318/v1/traces", "1.5", "otlp.sample_ratio must be between 0.0 and 1.0"),
    ];
    for (endpoint, ratio, why) in bad {
        let dir = tempfile::tempdir().unwrap();
        let output = without_inherited_fds(&mut Command::new(env!("CARGO_BIN_EXE_parley")))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("PARLEY_OTLP__ENDPOINT", endpoint)
            .env("PARLEY_OTLP__SAMPLE_RATIO", ratio)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{endpoint} {ratio} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{stderr}");
    }
}
