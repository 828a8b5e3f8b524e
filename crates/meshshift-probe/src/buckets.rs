//! Aggregation (pure): records -> fixed-width time buckets and a summary.
//!
//! Records go into the bucket of their *scheduled* time, so a bucket says "of the requests users sent in
//! this 100 ms, how many failed and how slow were they", and an outage shows up where it happened, not
//! where its timeouts ended. Buckets are contiguous from 0: an empty bucket in the middle of a run is
//! visible. Latency percentiles cover every record, failed ones included (a timeout is the slowest answer
//! a user gets; leaving failures out would make an outage look fast); failures are also counted apart.
//! The summary's percentiles come from an HDR histogram (3 significant digits, up to an hour), per-bucket
//! ones are exact (buckets are small).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::record::{ErrorKind, Record};

/// The default bucket width.
pub const DEFAULT_BUCKET: Duration = Duration::from_millis(100);

/// The requests scheduled in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, in milliseconds from the probe's start.
    pub start_ms: u64,
    /// Requests that got a 2xx/3xx response.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Median latency (from the scheduled time), if the bucket has requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<u64>,
    /// 99th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
    /// Responses per answering revision (`(none)`: no revision header).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, u64>,
}

/// Groups `records` into buckets of `width` (whole milliseconds, at least 1) by scheduled time.
pub fn bucketize(records: &[Record], width: Duration) -> Vec<Bucket> {
    let width_ms = u64::try_from(width.as_millis()).unwrap_or(u64::MAX).max(1);
    let width_us = width_ms.saturating_mul(1000);
    let Some(last) = records.iter().map(|r| r.scheduled_us / width_us).max() else {
        return Vec::new();
    };
    let len = usize::try_from(last).unwrap_or(usize::MAX - 1).saturating_add(1);
    let mut buckets: Vec<Bucket> =
        (0..len).map(|i| Bucket { start_ms: (i as u64).saturating_mul(width_ms), ..Bucket::default() }).collect();
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); len];
    for r in records {
        let Ok(i) = usize::try_from(r.scheduled_us / width_us) else { continue };
        let (Some(b), Some(l)) = (buckets.get_mut(i), latencies.get_mut(i)) else { continue };
        if r.ok {
            b.ok += 1;
        } else {
            b.failed += 1;
        }
        l.push(r.latency_us);
        if let Some(rev) = r.revision_key() {
            *b.revisions.entry(rev.to_owned()).or_default() += 1;
        }
    }
    for (b, mut l) in buckets.iter_mut().zip(latencies) {
        l.sort_unstable();
        b.p50_us = nearest_rank(&l, 50.0);
        b.p99_us = nearest_rank(&l, 99.0);
    }
    buckets
}

/// The nearest-rank percentile of sorted `values`.
fn nearest_rank(sorted: &[u64], percentile: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Latency percentiles, in microseconds (0 when there are no requests).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// From an HDR histogram.
    fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// One revision's share of the responses.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RevisionShare {
    /// Responses it answered.
    pub count: u64,
    /// Its fraction of all responses (0..=1).
    pub share: f64,
}

/// A run of consecutive buckets with failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FailureWindow {
    /// Start of the first bucket with failures, in ms from the start.
    pub from_ms: u64,
    /// End of the last one.
    pub to_ms: u64,
    /// Failed requests scheduled in the window.
    pub failed: u64,
}

/// The whole run (or the run so far).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Requests recorded.
    pub total: u64,
    /// Requests with a 2xx/3xx response.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// The sending window: the configured duration, or the time until stop.
    pub window_s: f64,
    /// Requests per second asked for.
    pub rate_target: f64,
    /// Requests per second issued over the window (the target, unless the probe was cut short).
    pub rate_achieved: f64,
    /// Completed requests (answered or failed) per second, up to the last completion: below the rate
    /// when the server could not keep up.
    pub throughput: f64,
    /// Latency from the scheduled time (queueing included), every request.
    pub latency: Latency,
    /// Latency from the send time, requests that were sent.
    pub service: Latency,
    /// Responses per answering revision.
    pub revisions: BTreeMap<String, RevisionShare>,
    /// Requests without a complete response, per error kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// When failures happened.
    pub failure_windows: Vec<FailureWindow>,
}

/// An HDR histogram from 1 µs to one hour at 3 significant digits.
fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

/// Summarises `records` sent over `window` at `rate_target`; failure windows are made of buckets of `bucket`.
pub fn summarize(records: &[Record], rate_target: f64, window: Duration, bucket: Duration) -> Summary {
    let mut latency = histogram();
    let mut service = histogram();
    let mut s = Summary { rate_target, window_s: window.as_secs_f64(), ..Summary::default() };
    let mut answered = 0u64;
    let mut last_done_us = 0u64;
    for r in records {
        s.total += 1;
        if r.ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        if let Some(h) = latency.as_mut() {
            h.saturating_record(r.latency_us.max(1));
        }
        if let (Some(h), Some(us)) = (service.as_mut(), r.service_us) {
            h.saturating_record(us.max(1));
        }
        if let Some(status) = r.status {
            *s.statuses.entry(status).or_default() += 1;
        }
        if let Some(kind) = r.error {
            *s.errors.entry(kind).or_default() += 1;
        }
        if let Some(rev) = r.revision_key() {
            answered += 1;
            s.revisions.entry(rev.to_owned()).or_default().count += 1;
        }
        last_done_us = last_done_us.max(r.scheduled_us.saturating_add(r.latency_us));
    }
    for share in s.revisions.values_mut() {
        share.share = share.count as f64 / answered.max(1) as f64;
    }
    s.latency = latency.as_ref().map(Latency::from_histogram).unwrap_or_default();
    s.service = service.as_ref().map(Latency::from_histogram).unwrap_or_default();
    if s.window_s > 0.0 {
        s.rate_achieved = s.total as f64 / s.window_s;
    }
    if last_done_us > 0 {
        s.throughput = s.total as f64 / (last_done_us as f64 / 1e6);
    }
    s.failure_windows = failure_windows(records, bucket);
    s
}

/// Merges consecutive buckets (of `width`) that hold failed requests.
fn failure_windows(records: &[Record], width: Duration) -> Vec<FailureWindow> {
    let width_ms = u64::try_from(width.as_millis()).unwrap_or(u64::MAX).max(1);
    let width_us = width_ms.saturating_mul(1000);
    let mut failed: BTreeMap<u64, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.failed()) {
        *failed.entry(r.scheduled_us / width_us).or_default() += 1;
    }
    let mut out: Vec<FailureWindow> = Vec::new();
    for (index, n) in failed {
        let from_ms = index.saturating_mul(width_ms);
        let to_ms = from_ms.saturating_add(width_ms);
        match out.last_mut() {
            Some(w) if w.to_ms == from_ms => {
                w.to_ms = to_ms;
                w.failed += n;
            }
            _ => out.push(FailureWindow { from_ms, to_ms, failed: n }),
        }
    }
    out
}

/// Microseconds as a short human duration.
fn human_us(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

impl Summary {
    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let pct = |n: u64| if self.total == 0 { 0.0 } else { n as f64 * 100.0 / self.total as f64 };
        let _ = writeln!(
            out,
            "requests    {} total, {} ok, {} failed ({:.2}%)",
            self.total,
            self.ok,
            self.failed,
            pct(self.failed)
        );
        let _ = writeln!(
            out,
            "rate        {:.1}/s target, {:.1}/s achieved over {:.2} s; throughput {:.1}/s",
            self.rate_target, self.rate_achieved, self.window_s, self.throughput
        );
        for (name, l) in [("latency", &self.latency), ("service", &self.service)] {
            let _ = writeln!(
                out,
                "{name:<11} p50 {}  p90 {}  p99 {}  max {}{}",
                human_us(l.p50_us),
                human_us(l.p90_us),
                human_us(l.p99_us),
                human_us(l.max_us),
                if name == "latency" { "  (from the scheduled time)" } else { "  (from the send time)" }
            );
        }
        let list = |items: Vec<String>| if items.is_empty() { "none".to_owned() } else { items.join(", ") };
        let revisions =
            self.revisions.iter().map(|(r, s)| format!("{r} {:.1}% ({})", s.share * 100.0, s.count)).collect();
        let _ = writeln!(out, "revisions   {}", list(revisions));
        let statuses = self.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(out, "statuses    {}", list(statuses));
        let errors = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "errors      {}", list(errors));
        let windows = self
            .failure_windows
            .iter()
            .map(|w| format!("{:.1}-{:.1} s ({})", w.from_ms as f64 / 1e3, w.to_ms as f64 / 1e3, w.failed))
            .collect();
        let _ = writeln!(out, "failures at {}", list(windows));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, scheduled_ms: u64, latency_ms: u64, status: Option<u16>, revision: Option<&str>) -> Record {
        Record {
            seq,
            scheduled_us: scheduled_ms * 1000,
            sent_us: Some(scheduled_ms * 1000),
            latency_us: latency_ms * 1000,
            service_us: Some(latency_ms * 1000),
            ok: status.is_some_and(crate::record::is_success_status),
            status,
            error: if status.is_none() { Some(ErrorKind::ConnectRefused) } else { None },
            revision: revision.map(str::to_owned),
            ..Record::default()
        }
    }

    #[test]
    fn buckets_are_contiguous_and_count_by_scheduled_time() {
        let records = vec![
            rec(0, 0, 5, Some(200), Some("1-9-7")),
            rec(1, 50, 500, Some(200), Some("1-9-7")), // slow: still in bucket 0, where it was sent
            rec(2, 99, 1, Some(503), Some("1-10-6")),
            rec(3, 350, 2, None, None),
        ];
        let b = bucketize(&records, DEFAULT_BUCKET);
        assert_eq!(b.len(), 4);
        assert_eq!(b.iter().map(|b| b.start_ms).collect::<Vec<_>>(), vec![0, 100, 200, 300]);
        assert_eq!((b[0].ok, b[0].failed), (2, 1));
        assert_eq!(b[0].p50_us, Some(5_000));
        assert_eq!(b[0].p99_us, Some(500_000));
        assert_eq!(b[0].revisions, BTreeMap::from([("1-10-6".to_owned(), 1), ("1-9-7".to_owned(), 2)]));
        assert_eq!(b[1], Bucket { start_ms: 100, ..Bucket::default() });
        assert_eq!((b[3].ok, b[3].failed, b[3].p50_us), (0, 1, Some(2_000)));
        assert!(b[3].revisions.is_empty(), "a transport failure answered for no revision");
        assert!(bucketize(&[], DEFAULT_BUCKET).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50.0), Some(50));
        assert_eq!(nearest_rank(&v, 99.0), Some(99));
        assert_eq!(nearest_rank(&[7], 99.0), Some(7));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_everything_and_shares_revisions() {
        let mut records: Vec<Record> =
            (0..90).map(|i| rec(i, i * 10, 1 + i % 10, Some(200), Some(if i < 60 { "old" } else { "new" }))).collect();
        records.extend((90..95).map(|i| rec(i, i * 10, 2, Some(503), None)));
        records.extend((95..100).map(|i| rec(i, i * 10, 3, None, None)));
        let s = summarize(&records, 100.0, Duration::from_secs(1), DEFAULT_BUCKET);
        assert_eq!((s.total, s.ok, s.failed), (100, 90, 10));
        assert!((s.rate_achieved - 100.0).abs() < 1e-9);
        assert_eq!(s.statuses, BTreeMap::from([(200, 90), (503, 5)]));
        assert_eq!(s.errors, BTreeMap::from([(ErrorKind::ConnectRefused, 5)]));
        assert_eq!(s.revisions["old"].count, 60);
        assert_eq!(s.revisions["new"].count, 30);
        assert_eq!(s.revisions["(none)"].count, 5);
        assert!((s.revisions["old"].share - 60.0 / 95.0).abs() < 1e-9);
        assert_eq!(s.failure_windows, vec![FailureWindow { from_ms: 900, to_ms: 1000, failed: 10 }]);
        // HDR at 3 digits: within 0.1%.
        assert!((s.latency.p50_us as f64 - 5_000.0).abs() <= 5.0, "{:?}", s.latency);
        assert!((s.latency.max_us as f64 - 10_000.0).abs() <= 10.0, "{:?}", s.latency);
        let text = s.to_text();
        assert!(text.contains("100 total, 90 ok, 10 failed (10.00%)"), "{text}");
        assert!(text.contains("connect_refused 5"), "{text}");
        assert!(text.contains("old 63.2% (60)"), "{text}");
        assert!(text.contains("0.9-1.0 s (10)"), "{text}");
    }

    #[test]
    fn failure_windows_merge_consecutive_buckets_only() {
        let records = vec![
            rec(0, 0, 1, None, None),
            rec(1, 150, 1, None, None),
            rec(2, 250, 1, Some(200), None),
            rec(3, 450, 1, Some(500), None),
        ];
        assert_eq!(
            failure_windows(&records, DEFAULT_BUCKET),
            vec![
                FailureWindow { from_ms: 0, to_ms: 200, failed: 2 },
                FailureWindow { from_ms: 400, to_ms: 500, failed: 1 }
            ]
        );
    }

    #[test]
    fn empty_summary() {
        let s = summarize(&[], 10.0, Duration::ZERO, DEFAULT_BUCKET);
        assert_eq!((s.total, s.failed, s.latency), (0, 0, Latency::default()));
        assert!(s.to_text().contains("0 total"));
    }
}
