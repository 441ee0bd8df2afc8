//! Merges the outcomes of one or more processes into a `Summary`, and
//! writes it as a text table, JSON or a self-contained HTML report.

use std::collections::HashSet;
use std::io::Write;

use serde::Serialize;

use crate::check::{CheckReport, Checker, Device};
use crate::run::{Counts, Outcome};
use crate::scenario::{Scenario, Thresholds};
use crate::setup::Plan;
use crate::stats::{ErrorCounts, Latencies, LatencySummary, ProcSample, check_thresholds, error_rate};

/// The server's CPU and memory at the moments that matter, and once a second during the phases.
#[derive(Clone, Debug, Default)]
pub struct ServerTrace {
    pub pid: u32,
    pub before_connect: ProcSample,
    pub connected: ProcSample,
    pub end: ProcSample,
    pub seconds: Vec<ProcSample>,
}

/// What the run cost the server.
#[derive(Clone, Debug, Serialize)]
pub struct ServerCost {
    pub pid: u32,
    /// CPU seconds from the first phase's start to the end of the drain.
    pub cpu_seconds: f64,
    /// `None` without messages (or deliveries).
    pub cpu_us_per_message: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub rss_before_connect_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_end_kib: u64,
    pub peak_rss_kib: u64,
    /// RSS growth from before connecting to all connected, per connection.
    pub rss_per_connection_kib: f64,
    /// RSS growth from before connecting to the end (connections still
    /// open), per connection: what they cost after the phases' traffic.
    pub rss_end_per_connection_kib: f64,
    /// CPU seconds spent accepting and authenticating the connections.
    pub connect_cpu_seconds: f64,
}

/// One phase as run.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub rate_from: f64,
    pub rate_to: f64,
    pub secs: f64,
    #[serde(flatten)]
    pub counts: Counts,
    pub ack: LatencySummary,
    pub delivery: LatencySummary,
    /// Its p99s met the thresholds.
    pub met: bool,
}

/// One second of the run, all processes together.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesPoint {
    pub second: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    pub open: u64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    /// Server CPU in this second, percent of one core.
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

/// The result of a run, printed as a table and written as JSON or HTML.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub urls: Vec<String>,
    pub user_prefix: String,
    pub users: usize,
    /// Devices (connections) per user.
    pub devices: usize,
    pub workers: usize,
    pub connections: u64,
    pub connect_secs: f64,
    pub connections_per_sec: f64,
    pub connect: LatencySummary,
    pub reconnect: LatencySummary,
    pub ack: LatencySummary,
    pub delivery: LatencySummary,
    pub phases: Vec<PhaseSummary>,
    /// `[step]` runs: the highest step rate whose p99s met the thresholds (`None` if the first missed).
    pub knee_per_sec: Option<f64>,
    /// `[step]` runs: whether a step missed the thresholds (else the knee is only a lower bound).
    pub knee_found: bool,
    pub duration_secs: f64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Deliveries (message × recipient device) per second of the phases.
    pub delivered_per_sec: f64,
    pub actions: ErrorCounts,
    pub errors: ErrorCounts,
    pub error_count: u64,
    pub error_rate: f64,
    pub check: CheckReport,
    /// The tool's own CPU seconds and peak RSS, all processes.
    pub tool_cpu_seconds: f64,
    pub tool_max_rss_kib: u64,
    pub server: Option<ServerCost>,
    pub series: Vec<SeriesPoint>,
    pub violations: Vec<String>,
    pub passed: bool,
}

fn merged<'a>(sparse: impl IntoIterator<Item = &'a crate::stats::Sparse>, coarse: bool) -> Latencies {
    let mut latencies = if coarse { Latencies::coarse() } else { Latencies::default() };
    for s in sparse {
        latencies.add_sparse(s);
    }
    latencies
}

/// The knee of a step run: the rate of the last step before the first that missed.
pub fn knee(steps: &[(f64, bool)]) -> (Option<f64>, bool) {
    match steps.iter().position(|&(_, met)| !met) {
        Some(0) => (None, true),
        Some(i) => (Some(steps[i - 1].0), true),
        None => (steps.last().map(|s| s.0), false),
    }
}

fn met(thresholds: &Thresholds, ack: &LatencySummary, delivery: &LatencySummary) -> bool {
    !(thresholds.p99_ack_ms.is_some_and(|l| ack.p99_ms > l)
        || thresholds.p99_delivery_ms.is_some_and(|l| delivery.p99_ms > l))
}

/// Merges `outcomes` (one per process) and judges the run.
pub fn summarize(
    name: &str,
    scenario: &Scenario,
    plan: &Plan,
    outcomes: &[Outcome],
    server: Option<&ServerTrace>,
) -> Summary {
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let counts = Counts {
        scheduled: sum(|o| o.counts.scheduled),
        acked: sum(|o| o.counts.acked),
        deliveries: sum(|o| o.counts.deliveries),
        replayed: sum(|o| o.counts.replayed),
        out_of_order: sum(|o| o.counts.out_of_order),
    };
    let mut errors = ErrorCounts::new();
    let mut actions = ErrorCounts::new();
    for o in outcomes {
        for (code, n) in &o.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &o.actions {
            *actions.entry(code.clone()).or_default() += n;
        }
    }

    let mut checker = Checker::default();
    for chat in &plan.chats {
        let members = chat.members.iter().map(|&m| (plan.users[m].id, plan.users[m].tokens.len()));
        checker.chat(chat.id, members.collect());
    }
    for o in outcomes {
        for &(chat, sender, device, message) in &o.acks {
            checker.acked(chat, (sender, device), message);
        }
        for &(chat, recipient, device, seq, message) in &o.copies {
            checker.delivered(chat, (recipient, device), seq, message);
        }
    }
    let lost: HashSet<Device> = outcomes.iter().flat_map(|o| o.lost.iter().copied()).collect();
    let check = checker.report(&lost);
    for (code, count) in [("missing", check.missing), ("reordered", check.reordered), ("unexpected", check.unexpected)]
    {
        if count > 0 {
            *errors.entry(code.into()).or_default() += count;
        }
    }

    let phase_count = outcomes.iter().map(|o| o.phases.len()).max().unwrap_or(0);
    let phases: Vec<PhaseSummary> = (0..phase_count)
        .map(|i| {
            let parts: Vec<_> = outcomes.iter().filter_map(|o| o.phases.get(i)).collect();
            let ack = merged(parts.iter().map(|p| &p.ack), false).summary();
            let delivery = merged(parts.iter().map(|p| &p.delivery), false).summary();
            let (rate_from, rate_to) = scenario.phases[i].rates();
            PhaseSummary {
                name: scenario.phases[i].name.clone(),
                rate_from,
                rate_to,
                secs: parts.iter().map(|p| p.secs).fold(0.0, f64::max),
                counts: Counts {
                    scheduled: parts.iter().map(|p| p.counts.scheduled).sum(),
                    acked: parts.iter().map(|p| p.counts.acked).sum(),
                    deliveries: parts.iter().map(|p| p.counts.deliveries).sum(),
                    replayed: parts.iter().map(|p| p.counts.replayed).sum(),
                    out_of_order: parts.iter().map(|p| p.counts.out_of_order).sum(),
                },
                met: met(&scenario.thresholds, &ack, &delivery),
                ack,
                delivery,
            }
        })
        .collect();
    let (knee_per_sec, knee_found) = if scenario.step.is_some() {
        knee(&phases.iter().map(|p| (p.rate_from, p.met)).collect::<Vec<_>>())
    } else {
        (None, false)
    };

    let seconds = outcomes.iter().map(|o| o.seconds.len()).max().unwrap_or(0);
    let series: Vec<SeriesPoint> = (0..seconds)
        .map(|i| {
            let parts: Vec<_> = outcomes.iter().filter_map(|o| o.seconds.get(i)).collect();
            let ack = merged(parts.iter().map(|p| &p.ack), true);
            let delivery = merged(parts.iter().map(|p| &p.delivery), true);
            let server_at = |j: usize| server.and_then(|s| s.seconds.get(j).copied());
            SeriesPoint {
                second: i as u64 + 1,
                sent: parts.iter().map(|p| p.sent).sum(),
                acked: parts.iter().map(|p| p.acked).sum(),
                delivered: parts.iter().map(|p| p.deliveries).sum(),
                errors: parts.iter().map(|p| p.errors).sum(),
                open: parts.iter().map(|p| p.open).sum(),
                ack_p50_ms: ack.quantile_ms(0.5),
                ack_p99_ms: ack.quantile_ms(0.99),
                delivery_p50_ms: delivery.quantile_ms(0.5),
                delivery_p99_ms: delivery.quantile_ms(0.99),
                server_cpu_pct: server_at(i + 1).zip(server_at(i)).map(|(b, a)| (b.cpu_secs - a.cpu_secs) * 100.0),
                server_rss_kib: server_at(i + 1).map(|s| s.rss_kib),
            }
        })
        .collect();

    let connections = sum(|o| o.connected);
    let connect_secs = outcomes.iter().map(|o| o.connect_secs).fold(0.0, f64::max);
    let phase_secs: f64 = phases.iter().map(|p| p.secs).sum();
    let server = server.map(|s| {
        let start = s.seconds.first().copied().unwrap_or(s.connected);
        let cpu = s.end.cpu_secs - start.cpu_secs;
        // RSS growth since before connecting, per connection.
        let per_connection =
            |rss_kib: u64| (rss_kib as f64 - s.before_connect.rss_kib as f64) / connections.max(1) as f64;
        ServerCost {
            pid: s.pid,
            cpu_seconds: cpu,
            cpu_us_per_message: (counts.acked > 0).then(|| cpu * 1e6 / counts.acked as f64),
            cpu_us_per_delivery: (counts.deliveries > 0).then(|| cpu * 1e6 / counts.deliveries as f64),
            rss_before_connect_kib: s.before_connect.rss_kib,
            rss_connected_kib: s.connected.rss_kib,
            rss_end_kib: s.end.rss_kib,
            peak_rss_kib: s.end.peak_rss_kib,
            rss_per_connection_kib: per_connection(s.connected.rss_kib),
            rss_end_per_connection_kib: per_connection(s.end.rss_kib),
            connect_cpu_seconds: s.connected.cpu_secs - s.before_connect.cpu_secs,
        }
    });

    let ack = merged(outcomes.iter().map(|o| &o.ack), false).summary();
    let delivery = merged(outcomes.iter().map(|o| &o.delivery), false).summary();
    let error_count: u64 = errors.values().sum();
    // A step run is meant to break the latency thresholds: only errors and the check judge it.
    let judged = if scenario.step.is_some() {
        Thresholds { p99_ack_ms: None, p99_delivery_ms: None, ..scenario.thresholds.clone() }
    } else {
        scenario.thresholds.clone()
    };
    let mut violations = check_thresholds(&judged, &ack, &delivery, error_count, counts.scheduled);
    if check.failures() > 0 {
        violations
            .push(format!("correctness check failed: {} messages missing, reordered or unexpected", check.failures()));
    }
    Summary {
        scenario: name.to_owned(),
        urls: plan.urls.clone(),
        user_prefix: plan.prefix.clone(),
        users: plan.users.len(),
        devices: scenario.population.devices,
        workers: outcomes.len(),
        connections,
        connect_secs,
        connections_per_sec: connections as f64 / connect_secs.max(1e-6),
        connect: merged(outcomes.iter().map(|o| &o.connect), false).summary(),
        reconnect: merged(outcomes.iter().map(|o| &o.reconnect), false).summary(),
        ack,
        delivery,
        phases,
        knee_per_sec,
        knee_found,
        duration_secs: outcomes.iter().map(|o| o.duration_secs).fold(0.0, f64::max),
        counts,
        delivered_per_sec: counts.deliveries as f64 / phase_secs.max(1e-6),
        actions,
        error_rate: error_rate(error_count, counts.scheduled),
        errors,
        error_count,
        check,
        tool_cpu_seconds: outcomes.iter().map(|o| o.tool.cpu_secs).sum(),
        tool_max_rss_kib: outcomes.iter().map(|o| o.tool.peak_rss_kib).max().unwrap_or(0),
        server,
        series,
        passed: violations.is_empty(),
        violations,
    }
}

fn per(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The rows of the summary table: (label, value), shared by the text and HTML reports.
fn rows(s: &Summary) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            "users".into(),
            format!("{} ({}), {} device(s) each, {} process(es)", s.users, s.user_prefix, s.devices, s.workers),
        ),
        (
            "connections".into(),
            format!("{} in {:.2} s = {:.0}/s", s.connections, s.connect_secs, s.connections_per_sec),
        ),
        ("duration".into(), format!("{:.1} s", s.duration_secs)),
        ("messages".into(), format!("scheduled {}, acked {}", s.counts.scheduled, s.counts.acked)),
        (
            "deliveries".into(),
            format!(
                "{} ({:.1}/s), {} replayed after reconnects",
                s.counts.deliveries, s.delivered_per_sec, s.counts.replayed
            ),
        ),
    ];
    if !s.actions.is_empty() {
        let actions: Vec<String> = s.actions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        rows.push(("actions".into(), actions.join(", ")));
    }
    if let Some(knee) = s.knee_per_sec.map(|k| format!("{k:.0}/s")).or(Some("none (the first step missed)".into()))
        && !s.phases.is_empty()
        && s.phases.iter().any(|p| p.name.starts_with("step "))
    {
        let bound = if s.knee_found { "" } else { " (no step missed: a lower bound)" };
        rows.push(("knee".into(), format!("{knee}{bound}")));
    }
    let c = &s.check;
    rows.push((
        "check".into(),
        format!(
            "{} acked, {} delivered, {} missing, {} reordered, {} unexpected, {} duplicates removed, {} devices excluded",
            c.acked, c.delivered, c.missing, c.reordered, c.unexpected, c.duplicates, c.excluded_recipients
        ),
    ));
    let errors: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    rows.push(("errors".into(), format!("{} (rate {:.4}) {}", s.error_count, s.error_rate, errors.join(", "))));
    rows.push(("tool".into(), format!("{:.2} CPU s, max RSS {} KiB", s.tool_cpu_seconds, s.tool_max_rss_kib)));
    if let Some(v) = &s.server {
        rows.push((
            "server CPU".into(),
            format!(
                "{:.2} s in the phases ({} µs/message, {} µs/delivery); {:.2} s to connect",
                v.cpu_seconds,
                per(v.cpu_us_per_message),
                per(v.cpu_us_per_delivery),
                v.connect_cpu_seconds
            ),
        ));
        rows.push((
            "server RSS".into(),
            format!(
                "{} KiB before connecting, {} connected ({:.1} KiB/connection), {} at the end ({:.1} KiB/connection), peak {}",
                v.rss_before_connect_kib,
                v.rss_connected_kib,
                v.rss_per_connection_kib,
                v.rss_end_kib,
                v.rss_end_per_connection_kib,
                v.peak_rss_kib
            ),
        ));
    }
    rows
}

const LATENCY_HEADER: [&str; 7] = ["latency", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"];

fn latencies(s: &Summary) -> [(&'static str, &LatencySummary); 4] {
    [("connect", &s.connect), ("reconnect", &s.reconnect), ("ack", &s.ack), ("delivery", &s.delivery)]
}

/// Writes the summary table.
pub fn write_table(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(out, "\nparley-load {}: {}", s.scenario, s.urls.join(" "))?;
    for p in &s.phases {
        writeln!(
            out,
            "  phase {:<14} {:>7.1}->{:<7.1}/s {:>8} msgs {:>9} deliveries in {:>5.1} s, p99 ack {:>8.2} ms, delivery {:>8.2} ms{}",
            p.name,
            p.rate_from,
            p.rate_to,
            p.counts.scheduled,
            p.counts.deliveries,
            p.secs,
            p.ack.p99_ms,
            p.delivery.p99_ms,
            if p.met { "" } else { "  MISSED" }
        )?;
    }
    let h = LATENCY_HEADER;
    writeln!(out, "\n{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}", h[0], h[1], h[2], h[3], h[4], h[5], h[6])?;
    for (name, l) in latencies(s) {
        writeln!(
            out,
            "{name:<10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        )?;
    }
    writeln!(out)?;
    for (label, value) in rows(s) {
        writeln!(out, "{label:<12} {value}")?;
    }
    if s.passed { writeln!(out, "PASS") } else { s.violations.iter().try_for_each(|v| writeln!(out, "FAIL: {v}")) }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One line chart as inline SVG: `lines` are (name, colour, values per second).
pub fn chart(title: &str, unit: &str, lines: &[(&str, &str, Vec<f64>)]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 60.0;
    const BOTTOM: f64 = 24.0;
    let n = lines.iter().map(|l| l.2.len()).max().unwrap_or(0).max(2);
    let top = lines.iter().flat_map(|l| l.2.iter().copied()).fold(0.0, f64::max).max(1e-9) * 1.05;
    let x = |i: usize| LEFT + (W - LEFT - 10.0) * i as f64 / (n - 1) as f64;
    let y = |v: f64| (H - BOTTOM) - (H - BOTTOM - 10.0) * (v / top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
<title>{}</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><rect x=\"{LEFT}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>",
        escape(title),
        W - LEFT - 10.0,
        H - BOTTOM - 10.0
    );
    for (value, label) in
        [(top, format!("{top:.1} {unit}")), (top / 2.0, format!("{:.1}", top / 2.0)), (0.0, "0".into())]
    {
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y(value) + 3.0,
            escape(&label)
        );
    }
    svg += &format!("<text x=\"{W}\" y=\"{H}\" font-size=\"10\" text-anchor=\"end\">{n} s</text>");
    for (k, (name, colour, values)) in lines.iter().enumerate() {
        let points: Vec<String> = values.iter().enumerate().map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v))).collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        svg += &format!(
            "<text x=\"{:.0}\" y=\"22\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            LEFT + 8.0 + 130.0 * k as f64,
            escape(name)
        );
    }
    svg + "</svg>"
}

/// The run's plots as standalone SVG: (file-name slug, heading, SVG) for
/// latency, throughput, open connections and, with `--server-pid`, server
/// CPU and memory.
pub fn charts(s: &Summary) -> Vec<(&'static str, &'static str, String)> {
    let series = |f: fn(&SeriesPoint) -> f64| s.series.iter().map(f).collect::<Vec<f64>>();
    let mut charts = vec![
        (
            "latency",
            "Latency over time",
            chart(
                "latency per second",
                "ms",
                &[
                    ("ack p50", "#1f77b4", series(|p| p.ack_p50_ms)),
                    ("ack p99", "#aec7e8", series(|p| p.ack_p99_ms)),
                    ("delivery p50", "#d62728", series(|p| p.delivery_p50_ms)),
                    ("delivery p99", "#ff9896", series(|p| p.delivery_p99_ms)),
                ],
            ),
        ),
        (
            "throughput",
            "Throughput over time",
            chart(
                "throughput per second",
                "/s",
                &[
                    ("sent/s", "#1f77b4", series(|p| p.sent as f64)),
                    ("delivered/s", "#2ca02c", series(|p| p.delivered as f64)),
                ],
            ),
        ),
        (
            "connections",
            "Open connections",
            chart("open connections", "", &[("open", "#9467bd", series(|p| p.open as f64))]),
        ),
    ];
    if s.server.is_some() {
        let cpu = series(|p| p.server_cpu_pct.unwrap_or(0.0));
        charts.push((
            "server-cpu",
            "Server CPU",
            chart("server CPU", "%", &[("server CPU % of a core", "#8c564b", cpu)]),
        ));
        let rss = series(|p| p.server_rss_kib.unwrap_or(0) as f64 / 1024.0);
        charts.push(("server-rss", "Server memory", chart("server RSS", "MiB", &[("server RSS", "#e377c2", rss)])));
    }
    charts
}

/// The self-contained HTML report: summary table, latency and throughput over time.
pub fn html(s: &Summary) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>parley-load {}</title>\
<style>body{{font-family:sans-serif;margin:2em;max-width:62em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}td.n{{text-align:right}}</style></head><body>\
<h1>parley-load: {}</h1><p>{}</p><p><strong>{}</strong></p>",
        escape(&s.scenario),
        escape(&s.scenario),
        escape(&s.urls.join(" ")),
        if s.passed { "PASS".to_owned() } else { escape(&format!("FAIL: {}", s.violations.join("; "))) }
    );
    page += "<table>";
    for (label, value) in rows(s) {
        page += &format!("<tr><th>{}</th><td>{}</td></tr>", escape(&label), escape(&value));
    }
    page += "</table><h2>Latency</h2><table><tr>";
    for h in LATENCY_HEADER {
        page += &format!("<th>{h}</th>");
    }
    page += "</tr>";
    for (name, l) in latencies(s) {
        page += &format!(
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td></tr>",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    page += "</table><h2>Phases</h2><table><tr><th>phase</th><th>rate/s</th><th>messages</th><th>deliveries</th><th>p99 ack ms</th><th>p99 delivery ms</th><th>met</th></tr>";
    for p in &s.phases {
        page += &format!(
            "<tr><td>{}</td><td class=\"n\">{:.1}–{:.1}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td>{}</td></tr>",
            escape(&p.name),
            p.rate_from,
            p.rate_to,
            p.counts.scheduled,
            p.counts.deliveries,
            p.ack.p99_ms,
            p.delivery.p99_ms,
            if p.met { "yes" } else { "no" }
        );
    }
    page += "</table>";
    for (_, heading, svg) in charts(s) {
        page += &format!("<h2>{heading}</h2>{svg}");
    }
    page + "</body></html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knee_is_the_last_step_before_the_first_miss() {
        assert_eq!(knee(&[(100.0, true), (200.0, true), (400.0, false), (800.0, true)]), (Some(200.0), true));
        assert_eq!(knee(&[(100.0, false)]), (None, true));
        assert_eq!(knee(&[(100.0, true), (200.0, true)]), (Some(200.0), false), "no miss: a lower bound");
        assert_eq!(knee(&[]), (None, false));
    }

    fn summary() -> Summary {
        let scenario = Scenario::parse(
            "[population]\nusers = 2\n[[phases]]\nname = \"a<b\"\nduration_secs = 1\nrate_per_sec = 1\n",
        )
        .expect("valid");
        let plan =
            Plan { prefix: "lt".into(), urls: vec!["http://127.0.0.1:1".into()], users: Vec::new(), chats: Vec::new() };
        let mut outcome = Outcome::default();
        for i in 0..5 {
            let mut ack = Latencies::coarse();
            ack.record_micros(1000 * (i + 1));
            outcome.seconds.push(crate::run::Second {
                sent: 10 * i,
                deliveries: 9 * i,
                ack: ack.sparse(),
                ..Default::default()
            });
        }
        summarize("test", &scenario, &plan, &[outcome], None)
    }

    #[test]
    fn series_merge_per_second() {
        let s = summary();
        assert_eq!(s.series.len(), 5);
        assert_eq!((s.series[4].sent, s.series[4].delivered), (40, 36));
        assert!((s.series[4].ack_p99_ms - 5.0).abs() < 0.1, "{:?}", s.series[4]);
    }

    #[test]
    fn html_is_self_contained_and_draws_the_plots() {
        let page = html(&summary());
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert_eq!(page.matches("<svg").count(), 3, "latency, throughput, connections");
        assert!(page.contains("latency per second") && page.contains("throughput per second"));
        assert!(page.contains("<polyline"));
        for external in ["<script", "<link", " src=", " href=", "url("] {
            assert!(!page.contains(external), "no external resources: {external}");
        }
        assert_eq!(page.matches("<table>").count(), page.matches("</table>").count());
        assert!(!page.contains("a<b"), "text is escaped");
    }

    #[test]
    fn plots_stand_alone_as_svg_files() {
        let charts = charts(&summary());
        let slugs: Vec<&str> = charts.iter().map(|c| c.0).collect();
        assert_eq!(slugs, ["latency", "throughput", "connections"]);
        for (slug, _, svg) in charts {
            assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{slug} is a standalone SVG");
            assert!(svg.contains("fill=\"#fff\""), "{slug} has its own background");
        }
    }
}
