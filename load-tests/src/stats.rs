//! Latency histograms, percentile summaries and threshold evaluation.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Thresholds;

/// Highest latency a histogram holds: 1 h in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits).
#[derive(Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::with_digits(3)
    }
}

/// A histogram as (value, count) pairs of its non-empty buckets: what
/// workers send to the parent and what per-second histograms are kept as.
pub type Sparse = Vec<(u64, u64)>;

impl Latencies {
    /// A smaller histogram (2 significant digits) for per-second percentiles.
    pub fn coarse() -> Self {
        Self::with_digits(2)
    }

    fn with_digits(digits: u8) -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, digits).expect("valid histogram bounds"))
    }

    pub fn sparse(&self) -> Sparse {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    /// Adds the values of `sparse` (a merge).
    pub fn add_sparse(&mut self, sparse: &Sparse) {
        for &(value, count) in sparse {
            self.0.saturating_record_n(value.clamp(1, MAX_MICROS), count);
        }
    }

    /// The histogram's contents, then empties it.
    pub fn take_sparse(&mut self) -> Sparse {
        let sparse = self.sparse();
        self.0.reset();
        sparse
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `quantile` (0–1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.value_at_quantile(quantile) as f64 / 1000.0 }
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.0.is_empty() { 0.0 } else { self.0.max() as f64 / 1000.0 },
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A missed threshold, in words.
pub type Violation = String;

/// Checks the measured values against the scenario's thresholds.
pub fn check_thresholds(
    thresholds: &Thresholds,
    ack: &LatencySummary,
    delivery: &LatencySummary,
    errors: u64,
    scheduled: u64,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    if let Some(limit) = thresholds.p99_ack_ms
        && ack.p99_ms > limit
    {
        violations.push(format!("ack p99 {:.1} ms > {limit} ms", ack.p99_ms));
    }
    if let Some(limit) = thresholds.p99_delivery_ms
        && delivery.p99_ms > limit
    {
        violations.push(format!("delivery p99 {:.1} ms > {limit} ms", delivery.p99_ms));
    }
    // Without `max_error_rate`, any error fails the run.
    let limit = thresholds.max_error_rate.unwrap_or(0.0);
    let rate = error_rate(errors, scheduled);
    if rate > limit {
        violations.push(format!("error rate {rate:.4} > {limit} ({errors} errors)"));
    }
    violations
}

/// Errors per scheduled message; any error with nothing scheduled counts as 1.
pub fn error_rate(errors: u64, scheduled: u64) -> f64 {
    match (errors, scheduled) {
        (0, _) => 0.0,
        (_, 0) => 1.0,
        (e, s) => e as f64 / s as f64,
    }
}

/// Errors by code.
pub type ErrorCounts = BTreeMap<String, u64>;

/// CPU time and memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
}

/// Samples `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` may be `self`); `None` once the process is gone.
pub fn sample_process(pid: &str) -> Option<ProcSample> {
    // Fields 14 and 15 of stat (after the parenthesised name) are utime and
    // stime in clock ticks; Linux exposes USER_HZ = 100 to user space.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample { cpu_secs: (utime + stime) / 100.0, rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") })
}

/// CPU seconds and peak RSS of this process.
pub fn own_resources() -> ProcSample {
    sample_process("self").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_ms: impl IntoIterator<Item = u64>) -> Latencies {
        let mut latencies = Latencies::default();
        for ms in values_ms {
            latencies.record_micros(ms * 1000);
        }
        latencies
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let summary = histogram(1..=1000).summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 500.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.p90_ms - 900.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.p99_ms - 990.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.max_ms - 1000.0).abs() <= 1.0, "{summary:?}");
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }

    #[test]
    fn thresholds_pass_and_fail() {
        let thresholds =
            Thresholds { p99_ack_ms: Some(100.0), p99_delivery_ms: Some(200.0), max_error_rate: Some(0.01) };
        let fast = histogram(1..=50).summary();
        assert!(check_thresholds(&thresholds, &fast, &fast, 0, 100).is_empty());
        assert!(check_thresholds(&thresholds, &fast, &fast, 1, 100).is_empty(), "1% is allowed");

        let slow = histogram(1..=1000).summary();
        let violations = check_thresholds(&thresholds, &slow, &fast, 2, 100);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].starts_with("ack p99"));
        assert!(violations[1].starts_with("error rate"));
        assert_eq!(check_thresholds(&thresholds, &fast, &slow, 0, 100).len(), 1);
        assert!(
            check_thresholds(&Thresholds::default(), &slow, &slow, 0, 100).is_empty(),
            "no latency limits by default"
        );
        assert_eq!(check_thresholds(&Thresholds::default(), &fast, &fast, 1, 100).len(), 1, "errors fail by default");
    }

    #[test]
    fn sparse_histograms_merge_to_the_same_percentiles() {
        let whole = histogram(1..=1000);
        let mut merged = Latencies::default();
        merged.add_sparse(&histogram(1..=500).sparse());
        merged.add_sparse(&histogram(501..=1000).sparse());
        assert_eq!(merged.summary(), whole.summary());

        let mut second = Latencies::coarse();
        second.add_sparse(&whole.sparse());
        let taken = second.take_sparse();
        assert_eq!(second.count(), 0, "taking empties the histogram");
        assert_eq!(taken.iter().map(|p| p.1).sum::<u64>(), 1000);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let me = own_resources();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib, "{me:?}");
        assert_eq!(sample_process("0"), None, "no such process");
    }

    #[test]
    fn error_rate_edges() {
        assert_eq!(error_rate(0, 0), 0.0);
        assert_eq!(error_rate(3, 0), 1.0);
        assert_eq!(error_rate(1, 4), 0.25);
    }
}
