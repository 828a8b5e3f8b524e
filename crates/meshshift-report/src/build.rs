//! From a run's data to the report (pure): totals, the steps with the traffic each saw, and time series.
//!
//! Times: the report's origin is the earliest of the run's start, its first timeline event and the
//! prober's start; every `*_ms` offset is milliseconds from it (`origin_unix_ms`).
//!
//! A step is *active* from one of its timeline events through its following events until an event of
//! another step: the timeline is cut into runs of consecutive events of one step, and each run is an
//! interval `[first event, last event)` (a step undone during a rollback has two). A request belongs to the
//! step active at its *scheduled* time, so an outage is charged to the step that caused it, not to the one
//! running when its timeouts ended. Requests scheduled between intervals (before the first step, between a
//! step's `done` and the next one's `starting`) count in the totals and in `outside_steps`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::rundir::{Phase, Request, Requests, RunData, TimelineEvent};

/// At most this many points per time series: the HTML stays small and the charts readable.
pub const MAX_POINTS: u64 = 2000;

/// Bucket widths tried in order, in milliseconds: 100 ms up to 200 s of traffic, 1 s up to 33 min, then
/// coarser.
const WIDTHS_MS: [u64; 10] = [100, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000];

/// The report's format version (`format` in `report.json`).
pub const FORMAT_VERSION: u32 = 1;

/// The whole report: what `report.json` holds and `report.html` draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// How the run ended: `finished`, `rolled-back`, `paused`, `failed`, or `incomplete` (no outcome
    /// recorded: still running or crashed).
    pub outcome: String,
    /// Why it did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The source revision and version.
    pub from: Side,
    /// The target revision and version.
    pub to: Side,
    /// The origin of every `*_ms` offset, unix milliseconds.
    pub origin_unix_ms: u64,
    /// The end of the run (or of the last thing recorded), unix milliseconds.
    pub end_unix_ms: u64,
    /// `end_unix_ms - origin_unix_ms`.
    pub duration_ms: u64,
    /// The prober's settings (`None`: no traffic was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeInfo>,
    /// Every request.
    pub totals: Totals,
    /// The plan's steps, in order, with what happened and the traffic each saw.
    pub steps: Vec<StepReport>,
    /// Traffic over time (`None`: no requests recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
    /// What could not be read.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A revision and its version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Side {
    /// Revision name.
    pub revision: String,
    /// Istio version.
    pub version: String,
}

/// The prober's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// URLs probed.
    pub urls: Vec<String>,
    /// Requests per second asked for.
    pub rate: f64,
    /// When it started, unix milliseconds.
    pub started_unix_ms: u64,
    /// When it started, from the origin.
    pub start_ms: u64,
}

/// Totals over every request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Whether traffic was measured at all.
    pub measured: bool,
    /// Requests.
    pub requests: u64,
    /// Requests with a 2xx/3xx response.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// `failed / requests` (0 without requests).
    pub failure_ratio: f64,
    /// Median latency from the scheduled time, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Failed requests without a response, per error kind.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Responses per status code.
    #[serde(default)]
    pub statuses: BTreeMap<String, u64>,
    /// Responses per answering revision, in chart order.
    #[serde(default)]
    pub revisions: Vec<RevisionTotal>,
    /// Requests scheduled while no step was active.
    pub outside_steps: Count,
}

/// Requests and failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Count {
    /// Requests.
    pub requests: u64,
    /// Failed.
    pub failed: u64,
}

/// One revision's responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionTotal {
    /// The revision (`(none)`: responses without the header).
    pub revision: String,
    /// Responses.
    pub count: u64,
    /// Share of all responses (0..=1).
    pub share: f64,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Index in the plan.
    pub index: usize,
    /// Stable id.
    pub id: String,
    /// The action (`switch-load-balancer`), `unknown` for a step the plan does not have.
    pub action: String,
    /// The action's parameters (`service=istio-ingress/lb strategy=switch`).
    pub target: String,
    /// First event, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<u64>,
    /// Last event (or the run's end, for a step still active at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ms: Option<u64>,
    /// First event, from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// End, from the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Time the step was active (the sum of its intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it was active: `[start_ms, end_ms]` pairs.
    pub intervals: Vec<[u64; 2]>,
    /// Its last phase (`pending` when it never started).
    pub phase: String,
    /// Its last detail (the error, for a failed step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Gate results, in order.
    pub gates: Vec<GateReport>,
    /// Requests scheduled while it was active.
    pub requests: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Their 99th percentile latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// A gate result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReport {
    /// The gate.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw.
    pub detail: String,
    /// When, from the origin.
    pub t_ms: u64,
}

/// Traffic over time, one value per bucket (columns, so the HTML stays small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Bucket width, milliseconds (100 ms, 1 s, or coarser for long runs).
    pub bucket_ms: u64,
    /// Each bucket's start, from the origin.
    pub t_ms: Vec<u64>,
    /// Succeeded requests per second (by scheduled time).
    pub ok_per_s: Vec<f64>,
    /// Failed requests per second.
    pub failed_per_s: Vec<f64>,
    /// Median latency, milliseconds (`null`: no requests).
    pub p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency.
    pub p99_ms: Vec<Option<f64>>,
    /// Each revision's share of the bucket's responses, in stacking order (source first, then target).
    pub revisions: Vec<RevisionSeries>,
}

/// One revision's share over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionSeries {
    /// The revision.
    pub revision: String,
    /// Its share of each bucket's responses (0..=1; 0 when the bucket has none).
    pub share: Vec<f64>,
}

/// The bucket width for `span_ms` of traffic: the finest of 100 ms, 1 s, 5 s, ... giving at most
/// [`MAX_POINTS`] buckets.
pub fn bucket_width_ms(span_ms: u64) -> u64 {
    WIDTHS_MS
        .into_iter()
        .find(|w| span_ms.div_ceil(*w) <= MAX_POINTS)
        .unwrap_or_else(|| span_ms.div_ceil(MAX_POINTS).div_ceil(3_600_000) * 3_600_000)
}

/// The nearest-rank percentile of sorted `values` (as the prober computes its buckets').
pub fn nearest_rank(sorted: &[u64], percentile: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn round(value: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value * f).round() / f
}

fn us_to_ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 3)
}

/// A time interval in microseconds from the origin, and the step row it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start_us: u64,
    end_us: u64,
    row: usize,
}

/// Cuts the time-ordered timeline into runs of one step; a trailing run not ended by a terminal phase
/// lasts until `end_unix_ms` (the step was still active when the run stopped).
fn step_runs(events: &[&TimelineEvent], end_unix_ms: u64) -> Vec<(String, u64, u64)> {
    let mut runs: Vec<(String, u64, u64)> = Vec::new();
    for e in events {
        match runs.last_mut() {
            Some((step, _, end)) if *step == e.step => *end = e.t_ms,
            _ => runs.push((e.step.clone(), e.t_ms, e.t_ms)),
        }
    }
    if let (Some(last_run), Some(last)) = (runs.last_mut(), events.last())
        && !matches!(last.phase, Phase::Done | Phase::Undone | Phase::Failed)
    {
        last_run.2 = last_run.2.max(end_unix_ms);
    }
    runs
}

/// The revisions in stacking order: the plan's source, its target, then the rest by name, `(none)` last.
fn revision_order(requests: &Requests, from: &str, to: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..requests.revisions.len()).collect();
    let rank = |name: &str| -> (u8, String) {
        let class = if name == from {
            0
        } else if name == to {
            1
        } else if name == meshshift_probe::record::NO_REVISION {
            3
        } else {
            2
        };
        (class, name.to_owned())
    };
    order.sort_by_key(|&i| rank(&requests.revisions[i]));
    order
}

/// Builds the report (pure).
pub fn build(data: &RunData) -> Report {
    let plan = data.plan.as_ref();
    // Events outside any step (an empty id: something failed before the first step) have no row; the
    // outcome's error says what happened.
    let mut events: Vec<&TimelineEvent> = data.timeline.iter().filter(|e| !e.step.is_empty()).collect();
    events.sort_by_key(|e| e.t_ms);
    let requests = &data.requests.items;
    let probe_start = data.probe.as_ref().map(|p| p.started_unix_ms);

    // The origin and the end.
    let origin = [data.outcome.as_ref().map(|o| o.started_unix_ms), events.first().map(|e| e.t_ms), probe_start]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(0);
    let probe_start = probe_start.unwrap_or(origin);
    let last_request_ms =
        requests.iter().map(|r| r.scheduled_us.saturating_add(r.latency_us)).max().map(|us| us / 1000);
    let end = [
        Some(origin),
        data.outcome.as_ref().map(|o| o.ended_unix_ms),
        events.last().map(|e| e.t_ms),
        last_request_ms.map(|ms| probe_start + ms),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(origin);
    let offset = |unix_ms: u64| unix_ms.saturating_sub(origin);

    // Step rows: the plan's steps, then any step only the timeline names.
    let mut rows: Vec<StepReport> = plan
        .map(|p| p.steps.iter().enumerate().map(|(i, s)| step_row(i, &s.id, Some(&s.action))).collect())
        .unwrap_or_default();
    let mut row_of: HashMap<String, usize> = rows.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
    // A step's detail: the last failure or breach it had (what went wrong outlives the undo), else its
    // last event's (a stale "waiting for gates" is dropped once the step moves on).
    let mut problems: HashMap<usize, String> = HashMap::new();
    for e in &events {
        if !row_of.contains_key(&e.step) {
            row_of.insert(e.step.clone(), rows.len());
            rows.push(step_row(e.index, &e.step, None));
        }
        let i = row_of[&e.step];
        let detail = e.detail.clone().filter(|d| !d.is_empty());
        if let (Phase::Failed | Phase::Breach, Some(d)) = (e.phase, &detail) {
            problems.insert(i, d.clone());
        }
        let row = &mut rows[i];
        row.phase = e.phase.as_str().to_owned();
        row.detail = problems.get(&i).cloned().or(detail);
        if let Some(g) = &e.gate {
            row.gates.push(GateReport {
                name: g.name.clone(),
                ok: g.ok,
                detail: g.detail.clone(),
                t_ms: offset(e.t_ms),
            });
        }
    }

    // Intervals.
    let mut intervals: Vec<Interval> = Vec::new();
    for (step, start, stop) in step_runs(&events, end) {
        let row = row_of[&step];
        let r = &mut rows[row];
        r.intervals.push([offset(start), offset(stop)]);
        r.started_unix_ms = Some(r.started_unix_ms.map_or(start, |s| s.min(start)));
        r.ended_unix_ms = Some(r.ended_unix_ms.map_or(stop, |s| s.max(stop)));
        r.duration_ms = Some(r.duration_ms.unwrap_or(0) + (stop - start));
        intervals.push(Interval { start_us: offset(start) * 1000, end_us: offset(stop) * 1000, row });
    }
    for r in &mut rows {
        r.start_ms = r.started_unix_ms.map(offset);
        r.end_ms = r.ended_unix_ms.map(offset);
    }

    // Requests: per step, outside steps, totals.
    let probe_offset_us = offset(probe_start) * 1000;
    let mut step_latencies: Vec<Vec<u64>> = vec![Vec::new(); rows.len()];
    let mut totals = Totals { measured: !requests.is_empty(), ..Totals::default() };
    let mut all_latencies: Vec<u64> = Vec::with_capacity(requests.len());
    let mut revision_counts = vec![0u64; data.requests.revisions.len()];
    for r in requests {
        let t = probe_offset_us + r.scheduled_us;
        let failed = !r.ok;
        match attribute(&intervals, t) {
            Some(row) => {
                rows[row].requests += 1;
                rows[row].failed += u64::from(failed);
                step_latencies[row].push(r.latency_us);
            }
            None => {
                totals.outside_steps.requests += 1;
                totals.outside_steps.failed += u64::from(failed);
            }
        }
        totals.requests += 1;
        totals.failed += u64::from(failed);
        all_latencies.push(r.latency_us);
        if let Some(kind) = r.error {
            *totals.errors.entry(kind.as_str().to_owned()).or_default() += 1;
        }
        if let Some(status) = r.status {
            *totals.statuses.entry(status.to_string()).or_default() += 1;
        }
        if let Some(i) = r.revision {
            revision_counts[i as usize] += 1;
        }
    }
    for (row, mut l) in rows.iter_mut().zip(step_latencies) {
        l.sort_unstable();
        row.p99_ms = nearest_rank(&l, 99.0).map(us_to_ms);
    }
    all_latencies.sort_unstable();
    totals.ok = totals.requests - totals.failed;
    totals.p50_ms = nearest_rank(&all_latencies, 50.0).map(us_to_ms);
    totals.p99_ms = nearest_rank(&all_latencies, 99.0).map(us_to_ms);
    totals.max_ms = all_latencies.last().copied().map(us_to_ms);
    let (from, to) = plan.map(|p| (p.from_revision.as_str(), p.to_revision.as_str())).unwrap_or(("", ""));
    let order = revision_order(&data.requests, from, to);
    let answered: u64 = revision_counts.iter().sum();
    totals.revisions = order
        .iter()
        .map(|&i| RevisionTotal {
            revision: data.requests.revisions[i].clone(),
            count: revision_counts[i],
            share: round(revision_counts[i] as f64 / answered.max(1) as f64, 6),
        })
        .collect();
    if totals.requests == 0
        && let Some(p) = &data.probe
        && p.summary.total > 0
    {
        totals = totals_from_summary(&p.summary);
    }
    totals.failure_ratio = if totals.requests == 0 { 0.0 } else { totals.failed as f64 / totals.requests as f64 };

    let window_ms = data.probe.as_ref().map(|p| (p.summary.window_s * 1000.0).round() as u64).unwrap_or(0);
    let series = series(&data.requests, &order, offset(probe_start), window_ms);

    Report {
        format: FORMAT_VERSION,
        outcome: data.outcome.as_ref().map_or("incomplete", |o| o.outcome.as_str()).to_owned(),
        error: data.outcome.as_ref().and_then(|o| o.error.clone()),
        from: plan
            .map(|p| Side { revision: p.from_revision.clone(), version: p.from_version.clone() })
            .unwrap_or_default(),
        to: plan.map(|p| Side { revision: p.to_revision.clone(), version: p.to_version.clone() }).unwrap_or_default(),
        origin_unix_ms: origin,
        end_unix_ms: end,
        duration_ms: end - origin,
        probe: data.probe.as_ref().map(|p| ProbeInfo {
            urls: p.urls.clone(),
            rate: p.rate,
            started_unix_ms: p.started_unix_ms,
            start_ms: offset(p.started_unix_ms),
        }),
        totals,
        steps: rows,
        series,
        warnings: data.warnings.clone(),
    }
}

/// The step row active at `t_us` (intervals are time-ordered and do not overlap).
fn attribute(intervals: &[Interval], t_us: u64) -> Option<usize> {
    let i = intervals.partition_point(|iv| iv.start_us <= t_us).checked_sub(1)?;
    let iv = intervals[i];
    (t_us < iv.end_us).then_some(iv.row)
}

fn step_row(index: usize, id: &str, action: Option<&meshshift_core::plan::Action>) -> StepReport {
    let (action, target) = match action.and_then(|a| serde_json::to_value(a).ok()) {
        Some(serde_json::Value::Object(fields)) => {
            let name = fields.get("action").and_then(|v| v.as_str()).unwrap_or("unknown").to_owned();
            let target = fields
                .iter()
                .filter(|(k, _)| k.as_str() != "action")
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            (name, target)
        }
        _ => ("unknown".to_owned(), String::new()),
    };
    StepReport {
        index,
        id: id.to_owned(),
        action,
        target,
        started_unix_ms: None,
        ended_unix_ms: None,
        start_ms: None,
        end_ms: None,
        duration_ms: None,
        intervals: Vec::new(),
        phase: "pending".to_owned(),
        detail: None,
        gates: Vec::new(),
        requests: 0,
        failed: 0,
        p99_ms: None,
    }
}

/// Totals from the prober's summary alone (records missing).
fn totals_from_summary(s: &meshshift_probe::Summary) -> Totals {
    let mut revisions: Vec<RevisionTotal> = s
        .revisions
        .iter()
        .map(|(r, share)| RevisionTotal { revision: r.clone(), count: share.count, share: round(share.share, 6) })
        .collect();
    revisions.sort_by_key(|r| std::cmp::Reverse(r.count));
    Totals {
        measured: true,
        requests: s.total,
        ok: s.ok,
        failed: s.failed,
        failure_ratio: 0.0,
        p50_ms: Some(us_to_ms(s.latency.p50_us)),
        p99_ms: Some(us_to_ms(s.latency.p99_us)),
        max_ms: Some(us_to_ms(s.latency.max_us)),
        errors: s.errors.iter().map(|(k, n)| (k.as_str().to_owned(), *n)).collect(),
        statuses: s.statuses.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        revisions,
        outside_steps: Count::default(),
    }
}

/// The time series: buckets by scheduled time from the probe's start (`probe_offset_ms` from the origin),
/// their width chosen by [`bucket_width_ms`] over the span of the traffic. `window_ms` (the prober's
/// sending window, 0 if unknown) shortens the last bucket's width for its rates, so a run ending
/// mid-bucket does not show a drop.
fn series(requests: &Requests, order: &[usize], probe_offset_ms: u64, window_ms: u64) -> Option<Series> {
    let last_us = requests.items.iter().map(|r| r.scheduled_us).max()?;
    let span_ms = (last_us / 1000 + 1).max(window_ms);
    let width = bucket_width_ms(span_ms);
    let width_us = width * 1000;
    let len = usize::try_from((last_us / width_us + 1).max(window_ms.div_ceil(width))).ok()?;
    let mut ok = vec![0u64; len];
    let mut failed = vec![0u64; len];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); len];
    let mut revs: Vec<Vec<u64>> = vec![vec![0; len]; requests.revisions.len()];
    let mut answered = vec![0u64; len];
    for r in &requests.items {
        let i = (r.scheduled_us / width_us) as usize;
        bump(r, i, &mut ok, &mut failed, &mut latencies);
        if let Some(rev) = r.revision {
            revs[rev as usize][i] += 1;
            answered[i] += 1;
        }
    }
    let seconds: Vec<f64> = (0..len as u64)
        .map(|i| {
            let start = i * width;
            let w = if window_ms > start && window_ms - start < width { window_ms - start } else { width };
            w as f64 / 1000.0
        })
        .collect();
    let mut p50 = Vec::with_capacity(len);
    let mut p99 = Vec::with_capacity(len);
    for mut l in latencies {
        l.sort_unstable();
        p50.push(nearest_rank(&l, 50.0).map(us_to_ms));
        p99.push(nearest_rank(&l, 99.0).map(us_to_ms));
    }
    Some(Series {
        bucket_ms: width,
        t_ms: (0..len as u64).map(|i| probe_offset_ms + i * width).collect(),
        ok_per_s: ok.iter().zip(&seconds).map(|(n, s)| round(*n as f64 / s, 2)).collect(),
        failed_per_s: failed.iter().zip(&seconds).map(|(n, s)| round(*n as f64 / s, 2)).collect(),
        p50_ms: p50,
        p99_ms: p99,
        revisions: order
            .iter()
            .map(|&i| RevisionSeries {
                revision: requests.revisions[i].clone(),
                share: revs[i]
                    .iter()
                    .zip(&answered)
                    .map(|(n, total)| if *total == 0 { 0.0 } else { round(*n as f64 / *total as f64, 4) })
                    .collect(),
            })
            .collect(),
    })
}

fn bump(r: &Request, i: usize, ok: &mut [u64], failed: &mut [u64], latencies: &mut [Vec<u64>]) {
    if r.ok {
        ok[i] += 1;
    } else {
        failed[i] += 1;
    }
    latencies[i].push(r.latency_us);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::{GateResult, OutcomeFile, OutcomeKind, ProbeFile};
    use meshshift_probe::{ErrorKind, Record};

    fn ev(t_ms: u64, step: &str, index: usize, phase: Phase) -> TimelineEvent {
        TimelineEvent { t_ms, step: step.into(), index, phase, detail: None, gate: None }
    }

    fn rec(scheduled_ms: u64, latency_ms: u64, ok: bool, revision: Option<&str>) -> Record {
        Record {
            scheduled_us: scheduled_ms * 1000,
            latency_us: latency_ms * 1000,
            ok,
            status: if ok {
                Some(200)
            } else if revision.is_some() {
                Some(503)
            } else {
                None
            },
            error: if !ok && revision.is_none() { Some(ErrorKind::ConnectRefused) } else { None },
            revision: revision.map(str::to_owned),
            ..Record::default()
        }
    }

    fn data(timeline: Vec<TimelineEvent>, records: &[Record], probe_start: u64) -> RunData {
        RunData {
            plan: None,
            timeline,
            probe: Some(ProbeFile {
                started_unix_ms: probe_start,
                urls: vec![],
                rate: 10.0,
                summary: Default::default(),
            }),
            requests: Requests::from_records(records),
            outcome: None,
            warnings: vec![],
        }
    }

    #[test]
    fn resolution_is_adaptive() {
        assert_eq!(bucket_width_ms(0), 100);
        assert_eq!(bucket_width_ms(20_000), 100);
        assert_eq!(bucket_width_ms(200_000), 100);
        assert_eq!(bucket_width_ms(200_001), 1_000);
        assert_eq!(bucket_width_ms(2_000_000), 1_000);
        assert_eq!(bucket_width_ms(2_000_001), 5_000);
        assert_eq!(bucket_width_ms(3_600_000 * 24), 60_000);
        for span in [1u64, 99_999, 1_234_567, 86_400_000, 86_400_000 * 400] {
            assert!(span.div_ceil(bucket_width_ms(span)) <= MAX_POINTS, "{span}");
        }
    }

    #[test]
    fn long_runs_stay_under_the_point_limit() {
        // 50 minutes at 2/s: 1 s buckets would be 3000 points; 5 s buckets are 600.
        let records: Vec<Record> = (0..6000).map(|i| rec(i * 500, 3, true, Some("a"))).collect();
        let r = build(&data(vec![], &records, 1_000));
        let s = r.series.unwrap();
        assert_eq!(s.bucket_ms, 5_000);
        assert_eq!(s.t_ms.len(), 600);
        assert!(s.ok_per_s.iter().all(|v| (*v - 2.0).abs() < 1e-9));
    }

    #[test]
    fn buckets_count_rates_and_percentiles_by_scheduled_time() {
        // 10/s for 2 s, the 4th request slow, two failures in the second 100 ms.
        let records: Vec<Record> = (0..20)
            .map(|i| {
                let ok = !(i == 1 || i == 2);
                rec(i * 100, if i == 3 { 900 } else { 2 }, ok, if ok { Some("a") } else { None })
            })
            .collect();
        let mut d = data(vec![], &records, 5_000);
        d.probe.as_mut().unwrap().summary.window_s = 2.0;
        let r = build(&d);
        let s = r.series.unwrap();
        assert_eq!(s.bucket_ms, 100);
        assert_eq!(s.t_ms.len(), 20);
        assert_eq!(s.t_ms[..3], [0, 100, 200]);
        assert_eq!(s.ok_per_s[0], 10.0);
        assert_eq!(s.failed_per_s[1], 10.0);
        assert_eq!(s.ok_per_s[1], 0.0);
        assert_eq!(s.p99_ms[3], Some(900.0));
        assert_eq!(s.p50_ms[4], Some(2.0));
        assert_eq!(r.totals.requests, 20);
        assert_eq!(r.totals.failed, 2);
        assert!((r.totals.failure_ratio - 0.1).abs() < 1e-12);
        assert_eq!(r.totals.max_ms, Some(900.0));
        assert_eq!(r.totals.p50_ms, Some(2.0));
        assert_eq!(r.totals.errors, BTreeMap::from([("connect_refused".to_owned(), 2)]));
        // Shares ignore buckets without responses: 0 there, not NaN.
        assert_eq!(s.revisions.len(), 1);
        assert_eq!(s.revisions[0].share[1], 0.0);
        assert_eq!(s.revisions[0].share[0], 1.0);
    }

    #[test]
    fn requests_are_attributed_to_the_step_active_when_they_were_scheduled() {
        let t0 = 1_000_000;
        let timeline = vec![
            ev(t0, "01-a", 0, Phase::Starting),
            ev(t0 + 500, "01-a", 0, Phase::Verifying),
            ev(t0 + 1_000, "01-a", 0, Phase::Done),
            ev(t0 + 1_200, "02-b", 1, Phase::Starting),
            ev(t0 + 2_000, "02-b", 1, Phase::Failed),
            ev(t0 + 2_100, "01-a", 0, Phase::Undoing),
            ev(t0 + 2_300, "01-a", 0, Phase::Undone),
        ];
        // Probe started 100 ms before the first step: one request every 100 ms for 2.5 s.
        let records: Vec<Record> =
            (0..25).map(|i| rec(i * 100, if i == 10 { 5_000 } else { 1 }, i != 15, Some("a"))).collect();
        let r = build(&data(timeline, &records, t0 - 100));
        assert_eq!(r.origin_unix_ms, t0 - 100);
        let a = &r.steps[0];
        let b = &r.steps[1];
        assert_eq!((a.id.as_str(), b.id.as_str()), ("01-a", "02-b"));
        assert_eq!(a.intervals, vec![[100, 1_100], [2_200, 2_400]]);
        assert_eq!(a.duration_ms, Some(1_200));
        assert_eq!((a.start_ms, a.end_ms), (Some(100), Some(2_400)));
        assert_eq!(a.phase, "undone");
        // 01-a: scheduled at 100..1000 (10 requests) and 2200, 2300 (2); the slow one at 1000 is a's.
        assert_eq!(a.requests, 12);
        assert_eq!(a.p99_ms, Some(5_000.0));
        // 02-b: 1300..2000 (8 requests), the failure at 1500 is b's.
        assert_eq!((b.requests, b.failed), (8, 1));
        assert_eq!(b.phase, "failed");
        // Outside: 0 (before), 1100, 1200 (between a and b), 2100 (between b and a's undo), 2400 (after).
        assert_eq!(r.totals.outside_steps, Count { requests: 5, failed: 0 });
        assert_eq!(a.requests + b.requests + r.totals.outside_steps.requests, r.totals.requests);
    }

    #[test]
    fn a_failure_detail_outlives_the_undo_and_stale_details_are_dropped() {
        let with = |mut e: TimelineEvent, d: &str| {
            e.detail = Some(d.into());
            e
        };
        let timeline = vec![
            with(ev(0, "01-a", 0, Phase::Verifying), "waiting for gates"),
            ev(10, "01-a", 0, Phase::Done),
            with(ev(20, "02-b", 1, Phase::Breach), "prober: 3 requests failed"),
            with(ev(30, "02-b", 1, Phase::Undoing), "restoring"),
            ev(40, "02-b", 1, Phase::Undone),
        ];
        let mut timeline = timeline;
        timeline.push(with(ev(50, "", 0, Phase::Failed), "before any step"));
        let r = build(&RunData { timeline, ..RunData::default() });
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.steps[0].detail, None);
        assert_eq!(r.steps[1].detail.as_deref(), Some("prober: 3 requests failed"));
        assert_eq!(r.steps[1].phase, "undone");
    }

    #[test]
    fn a_step_active_at_the_end_lasts_until_the_end_and_unknown_steps_get_rows() {
        let mut d = data(vec![ev(1_000, "05-x", 4, Phase::Starting)], &[rec(500, 1, true, None)], 1_000);
        d.outcome =
            Some(OutcomeFile { outcome: OutcomeKind::Paused, error: None, started_unix_ms: 900, ended_unix_ms: 4_000 });
        d.timeline[0].gate = Some(GateResult { name: "g".into(), ok: false, detail: "why".into() });
        let r = build(&d);
        assert_eq!(r.outcome, "paused");
        assert_eq!(r.origin_unix_ms, 900);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].action, "unknown");
        assert_eq!(r.steps[0].intervals, vec![[100, 3_100]]);
        assert_eq!(r.steps[0].requests, 1);
        assert_eq!(r.steps[0].gates, vec![GateReport { name: "g".into(), ok: false, detail: "why".into(), t_ms: 100 }]);
        assert_eq!(r.totals.revisions[0].revision, "(none)");
    }

    #[test]
    fn revision_shares_stack_source_first() {
        let records: Vec<Record> = (0..10)
            .map(|i| {
                rec(
                    i * 100,
                    1,
                    true,
                    Some(if i < 3 {
                        "zz-new"
                    } else if i < 8 {
                        "aa-old"
                    } else {
                        "other"
                    }),
                )
            })
            .collect();
        let mut d = data(vec![], &records, 0);
        d.plan = Some(meshshift_core::plan::Plan {
            from_revision: "aa-old".into(),
            from_version: "1.9.7".into(),
            to_revision: "zz-new".into(),
            to_version: "1.10.6".into(),
            control_plane_namespace: "istio-system".into(),
            hops: vec![],
            steps: vec![],
            assumptions: vec![],
        });
        let r = build(&d);
        let names: Vec<&str> = r.totals.revisions.iter().map(|t| t.revision.as_str()).collect();
        assert_eq!(names, vec!["aa-old", "zz-new", "other"]);
        assert_eq!(r.totals.revisions.iter().map(|t| t.count).collect::<Vec<_>>(), vec![5, 3, 2]);
        assert!((r.totals.revisions[0].share - 0.5).abs() < 1e-12);
        let s = r.series.unwrap();
        assert_eq!(s.revisions[1].share[0], 1.0);
        assert_eq!(s.revisions[0].share[5], 1.0);
        assert_eq!(r.from, Side { revision: "aa-old".into(), version: "1.9.7".into() });
    }

    #[test]
    fn mixed_bucket_shares_sum_to_one() {
        let records = vec![rec(0, 1, true, Some("a")), rec(10, 1, true, Some("b")), rec(20, 1, true, Some("b"))];
        let s = build(&data(vec![], &records, 0)).series.unwrap();
        let total: f64 = s.revisions.iter().map(|r| r.share[0]).sum();
        assert!((total - 1.0).abs() < 1e-3);
        assert_eq!(s.revisions.iter().find(|r| r.revision == "b").unwrap().share[0], 0.6667);
    }

    #[test]
    fn no_traffic_means_steps_only() {
        let d = RunData { timeline: vec![ev(10, "01-a", 0, Phase::Done)], ..RunData::default() };
        let r = build(&d);
        assert!(r.series.is_none());
        assert!(!r.totals.measured);
        assert_eq!(r.outcome, "incomplete");
        assert_eq!(r.steps[0].phase, "done");
        assert_eq!(r.steps[0].requests, 0);
    }
}
