//! The driver: a ticker that dispatches each request at its scheduled time to a queue served by a fixed set
//! of workers (one connection per host each), and the handle the caller keeps.
//!
//! The ticker never waits for a response, so the arrival rate stays constant whatever the server does
//! (open loop). When every worker is busy, requests wait in the queue, in order; their latency still
//! counts from their scheduled time, so the wait is measured rather than hidden (no coordinated omission).
//! Every dispatched request ends as exactly one record: answered, failed, or, if it had not finished when
//! the drain time after the last arrival ran out, `aborted`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::buckets::{Bucket, Summary, bucketize, summarize};
use crate::client::{Connections, Exchange, RequestTemplate};
use crate::config::{MAX_CONNECTIONS, ProbeConfig, ProbeError};
use crate::record::{ErrorKind, Record, is_success_status};
use crate::schedule::{Schedule, Slot};
use crate::target::Target;

/// Starts probes.
#[derive(Debug, Clone, Copy)]
pub struct Prober;

/// A running probe. Dropping it without [`ProbeHandle::stop`] or [`ProbeHandle::wait`] cancels the probe.
#[derive(Debug)]
pub struct ProbeHandle {
    shared: Arc<Shared>,
    stop: Stopper,
    task: Option<JoinHandle<()>>,
    /// Becomes true when the driver has recorded every request: lets a shared handle wait for the end.
    done: watch::Receiver<bool>,
}

/// Stops a probe from elsewhere (a signal handler, another task); cheap to clone.
#[derive(Debug, Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Ends the sending window now: no further requests are dispatched; those already due still finish
    /// (within the drain time).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The probe so far.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSnapshot {
    /// Wall-clock start, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Time since the start.
    pub elapsed: Duration,
    /// Requests dispatched and not finished yet.
    pub in_flight: u64,
    /// Finished requests, by sequence number.
    pub records: Vec<Record>,
    /// Their buckets.
    pub buckets: Vec<Bucket>,
    /// Their summary (over the time elapsed).
    pub summary: Summary,
}

/// A finished probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Wall-clock start, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Every request, by sequence number.
    pub records: Vec<Record>,
    /// Per-bucket aggregates.
    pub buckets: Vec<Bucket>,
    /// The summary.
    pub summary: Summary,
}

impl ProbeResult {
    /// Writes one JSON line per record.
    pub fn write_jsonl<W: std::io::Write>(&self, mut out: W) -> std::io::Result<()> {
        for r in &self.records {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// A request dispatched and not finished yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    target: usize,
    scheduled: Duration,
    sent: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    records: Vec<Record>,
    pending: BTreeMap<u64, Pending>,
    /// Set when sending stops: the window the rate is measured over.
    window: Option<Duration>,
}

/// The requests of a time window (see [`ProbeHandle::window`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Succeeded.
    pub ok: u64,
    /// Failed (transport error, timeout, or a status other than 2xx/3xx).
    pub failed: u64,
    /// 99th percentile latency from the scheduled time, microseconds.
    pub p99_us: Option<u64>,
    /// What the first failure was.
    pub first_failure: Option<String>,
}

/// What the driver, the workers and the handle share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    started_unix_ms: u64,
    targets: Vec<Target>,
    rate: f64,
    bucket: Duration,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave records half-written (each push is atomic).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }
}

/// One queued request.
#[derive(Debug, Clone, Copy)]
struct Job {
    slot: Slot,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Prober {
    /// Validates `config` and starts probing on the current Tokio runtime. Bad input (URLs that are not
    /// allowed, a rate of 0, ...) is refused before any request is sent.
    pub fn start(config: ProbeConfig) -> Result<ProbeHandle, ProbeError> {
        let targets = config.urls.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let schedule = Schedule::new(config.rate, config.duration, targets.len())?;
        if config.connections == 0 || config.connections > MAX_CONNECTIONS {
            return Err(ProbeError::InvalidConfig(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                config.connections
            )));
        }
        if config.timeout.is_zero() {
            return Err(ProbeError::InvalidConfig("the request timeout must be above 0".to_owned()));
        }
        if config.bucket < Duration::from_millis(1) {
            return Err(ProbeError::InvalidConfig("buckets must be at least 1 ms wide".to_owned()));
        }
        let templates =
            targets.iter().map(|t| RequestTemplate::new(t, &config.headers)).collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ProbeError::NoRuntime)?;

        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            started_unix_ms,
            targets,
            rate: config.rate,
            bucket: config.bucket,
            state: Mutex::new(State::default()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(
            urls = ?config.urls, rate = config.rate, duration = ?config.duration, connections = config.connections,
            "probe started"
        );
        let (done_tx, done) = watch::channel(false);
        let driver = Driver { shared: shared.clone(), schedule, templates: Arc::new(templates), config, done: done_tx };
        let task = runtime.spawn(driver.run(stop_rx));
        Ok(ProbeHandle { shared, stop: Stopper(Arc::new(stop_tx)), task: Some(task), done })
    }
}

impl ProbeHandle {
    /// The records, buckets and summary so far (finished requests only). Costs a copy of the records.
    pub fn snapshot(&self) -> ProbeSnapshot {
        let elapsed = self.shared.since_start();
        let (mut records, in_flight, window) = {
            let state = self.shared.state();
            (state.records.clone(), state.pending.len() as u64, state.window)
        };
        records.sort_by_key(|r| r.seq);
        let buckets = bucketize(&records, self.shared.bucket);
        let summary = summarize(&records, self.shared.rate, window.unwrap_or(elapsed), self.shared.bucket);
        ProbeSnapshot { started_unix_ms: self.shared.started_unix_ms, elapsed, in_flight, records, buckets, summary }
    }

    /// When the probe started (unix milliseconds): the origin of every record's times.
    pub fn started_unix_ms(&self) -> u64 {
        self.shared.started_unix_ms
    }

    /// Counts of the requests scheduled at or after `since_unix_ms` that have finished, and their p99
    /// latency, without copying the records: cheap enough for a gate to call every second.
    pub fn window(&self, since_unix_ms: u64) -> Window {
        let from_us = since_unix_ms.saturating_sub(self.shared.started_unix_ms).saturating_mul(1000);
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).ok();
        let mut w = Window::default();
        let state = self.shared.state();
        for r in state.records.iter().filter(|r| r.scheduled_us >= from_us) {
            if r.failed() {
                w.failed += 1;
                if w.first_failure.is_none() {
                    w.first_failure = Some(
                        r.error.map(|e| format!("{e:?}")).or(r.status.map(|s| format!("HTTP {s}"))).unwrap_or_default(),
                    );
                }
            } else {
                w.ok += 1;
            }
            if let Some(h) = histogram.as_mut() {
                let _ = h.record(r.latency_us.max(1));
            }
        }
        w.p99_us = histogram.filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(0.99));
        w
    }

    /// A way to stop the probe without owning the handle.
    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
    }

    /// Whether the probe has finished (every request recorded).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops sending now and waits until every request is recorded (finished, or `aborted` after the drain
    /// time), without taking the handle: [`Self::window`] then judges the whole probe.
    pub async fn drained(&self) {
        self.stop.stop();
        // An error means the driver is gone (finished or aborted): nothing is left to wait for.
        let _ = self.done.clone().wait_for(|d| *d).await;
    }

    /// Stops sending now, lets due requests finish (within the drain time) and returns the result.
    pub async fn stop(self) -> Result<ProbeResult, ProbeError> {
        self.stop.stop();
        self.wait().await
    }

    /// Waits until the configured duration has passed and every request finished (or was aborted after
    /// the drain time). Without a duration, this waits for a [`Stopper::stop`].
    pub async fn wait(mut self) -> Result<ProbeResult, ProbeError> {
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| ProbeError::Task(e.to_string()))?;
        }
        let (mut records, window) = {
            let mut state = self.shared.state();
            (std::mem::take(&mut state.records), state.window)
        };
        records.sort_by_key(|r| r.seq);
        let window = window.unwrap_or_else(|| self.shared.since_start());
        let buckets = bucketize(&records, self.shared.bucket);
        let summary = summarize(&records, self.shared.rate, window, self.shared.bucket);
        tracing::info!(total = summary.total, failed = summary.failed, "probe finished");
        Ok(ProbeResult { started_unix_ms: self.shared.started_unix_ms, records, buckets, summary })
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The probe's main task.
struct Driver {
    shared: Arc<Shared>,
    schedule: Schedule,
    templates: Arc<Vec<RequestTemplate>>,
    config: ProbeConfig,
    done: watch::Sender<bool>,
}

impl Driver {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = JoinSet::new();
        for _ in 0..self.config.connections {
            workers.spawn(worker(self.shared.clone(), rx.clone(), self.templates.clone(), self.config.timeout));
        }

        let mut stopped = false;
        for slot in self.schedule.iter() {
            let due = self.shared.start + slot.offset;
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    stopped = true;
                    break;
                }
                () = tokio::time::sleep_until(due) => {}
            }
            self.shared
                .state()
                .pending
                .insert(slot.seq, Pending { target: slot.target, scheduled: slot.offset, sent: None });
            if tx.send(Job { slot }).is_err() {
                tracing::error!("every probe worker has stopped; ending the probe");
                break;
            }
        }
        let window = match (stopped, self.config.duration) {
            (false, Some(d)) => d,
            _ => self.shared.since_start(),
        };
        self.shared.state().window = Some(window);
        // Closing the queue lets the workers finish once it is empty.
        drop(tx);

        let drained =
            tokio::time::timeout(self.config.drain, async { while workers.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(drain = ?self.config.drain, "probe requests still pending after the drain time; aborting them");
            workers.abort_all();
            while workers.join_next().await.is_some() {}
        }
        self.abort_pending();
        self.done.send_replace(true);
    }

    /// Records every request that did not finish as failed (`aborted`): nothing dispatched goes missing.
    fn abort_pending(&self) {
        let now = self.shared.since_start();
        let mut state = self.shared.state();
        let pending = std::mem::take(&mut state.pending);
        for (seq, p) in pending {
            let url = self.shared.targets.get(p.target).map(|t| t.url().to_owned()).unwrap_or_default();
            state.records.push(Record {
                seq,
                url,
                scheduled_us: micros(p.scheduled),
                sent_us: p.sent.map(micros),
                latency_us: micros(now.saturating_sub(p.scheduled)),
                service_us: p.sent.map(|s| micros(now.saturating_sub(s))),
                ok: false,
                error: Some(ErrorKind::Aborted),
                error_detail: Some("not finished when the probe's drain time ran out".to_owned()),
                ..Record::default()
            });
        }
    }
}

/// Takes requests from the queue in order and sends them, one at a time, on its own connections.
async fn worker(
    shared: Arc<Shared>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    templates: Arc<Vec<RequestTemplate>>,
    timeout: Duration,
) {
    let mut conns = Connections::new();
    loop {
        let job = queue.lock().await.recv().await;
        let Some(Job { slot }) = job else { break };
        let (Some(target), Some(template)) = (shared.targets.get(slot.target), templates.get(slot.target)) else {
            continue;
        };
        let sent = shared.since_start();
        if let Some(p) = shared.state().pending.get_mut(&slot.seq) {
            p.sent = Some(sent);
        }
        let ex = conns.send(target, template, timeout).await;
        let done = shared.since_start();
        let record = record(slot, target, sent, done, ex);
        let mut state = shared.state();
        state.pending.remove(&slot.seq);
        state.records.push(record);
    }
}

/// The record of a finished request.
fn record(slot: Slot, target: &Target, sent: Duration, done: Duration, ex: Exchange) -> Record {
    let (error, error_detail) = match ex.error {
        Some((kind, detail)) => (Some(kind), Some(detail)),
        None => (None, ex.reason),
    };
    let a = ex.answer;
    Record {
        seq: slot.seq,
        url: target.url().to_owned(),
        scheduled_us: micros(slot.offset),
        sent_us: Some(micros(sent)),
        latency_us: micros(done.saturating_sub(slot.offset)),
        service_us: Some(micros(done.saturating_sub(sent))),
        ok: error.is_none() && ex.status.is_some_and(is_success_status),
        status: ex.status,
        error,
        error_detail,
        reused: ex.reused,
        revision: a.revision,
        version: a.version,
        proxy: a.proxy,
        pod: a.pod,
        upstream_revision: a.upstream_revision,
        upstream_version: a.upstream_version,
        upstream_pod: a.upstream_pod,
        server: a.server,
    }
}
