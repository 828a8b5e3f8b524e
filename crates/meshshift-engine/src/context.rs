//! What every step needs: the client, the plan, the options, and someone to tell about progress.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use meshshift_core::plan::{Plan, Step};

use crate::objects::Objects;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of the journal and the lock (meshshift's own).
    pub namespace: String,
    /// Who runs (`user@host pid`), shown to a second run that is refused.
    pub holder: String,
    /// Overrides the plan's soak window (blue keeps serving this long after the switch).
    pub soak: Option<Duration>,
    /// How long any one rollout may take.
    pub rollout_timeout: Duration,
    /// Workloads restarted at once within a namespace.
    pub parallelism: usize,
    /// `widen-narrow`: how long both colours are selected before narrowing (the load balancer's health
    /// checks must see green healthy within it).
    pub health_check_wait: Duration,
    /// The run lock's lease duration (renewed at a third of it).
    pub lock_duration: Duration,
    /// The kubeconfig meshshift uses, passed on to helm and istioctl.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context, passed on likewise.
    pub context: Option<String>,
}

impl Options {
    /// Defaults for `holder` in the `meshshift` namespace.
    pub fn new(holder: impl Into<String>) -> Self {
        Self {
            namespace: "meshshift".into(),
            holder: holder.into(),
            soak: None,
            rollout_timeout: Duration::from_secs(300),
            parallelism: 2,
            health_check_wait: Duration::from_secs(10),
            lock_duration: Duration::from_secs(30),
            kubeconfig: None,
            context: None,
        }
    }
}

/// Where a step is, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Recording prior values.
    Starting,
    /// Writing.
    Applying,
    /// Written; not yet journaled as such (a crash here is resumed by writing again, idempotently).
    Applied,
    /// Checking gates.
    Verifying,
    /// Gates passed.
    Done,
    /// Restoring prior values.
    Undoing,
    /// Restored.
    Undone,
}

/// Receives progress (the CLI draws it with indicatif; tests and logs ignore or record it).
pub trait Observer: Send + Sync {
    /// Step `index` of the plan entered `phase`.
    fn step(&self, index: usize, step: &Step, phase: Phase);
    /// A detail of the current step (a wave, a pod, a wait).
    fn detail(&self, message: &str);
    /// A traffic gate's verdict on step `index` (`ok`: within the objective).
    fn gate(&self, _index: usize, _step: &Step, _name: &str, _ok: bool, _detail: &str) {}
}

/// What a traffic gate says about the requests since a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficVerdict {
    /// Within the objective.
    Pass(String),
    /// Too few requests yet to judge.
    NotEnough(String),
    /// Outside it: stop.
    Breach(String),
}

/// Traffic seen by users during the run (an in-process prober, Prometheus): asked after every step and
/// every second of a soak window. Asynchronous, since a Prometheus gate queries over the network.
pub trait TrafficGate: Send + Sync {
    /// The gate's name in reports (`prober`, `prometheus`).
    fn name(&self) -> &str;
    /// The verdict on the requests since `since_unix_ms`.
    fn check(&self, since_unix_ms: u64) -> futures::future::BoxFuture<'_, TrafficVerdict>;
}

/// An observer that only logs.
#[derive(Debug, Default)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn step(&self, index: usize, step: &Step, phase: Phase) {
        tracing::info!(step = %step.id, index, ?phase, "step");
    }
    fn detail(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// The shared state of a run.
#[derive(Clone)]
pub struct Ctx {
    /// The API client.
    pub client: Client,
    /// Objects by reference.
    pub objects: Objects,
    /// The plan.
    pub plan: Plan,
    /// Options.
    pub options: Options,
    /// Progress.
    pub observer: Arc<dyn Observer>,
    /// Traffic gates (none: only the steps' own gates).
    pub traffic: Vec<Arc<dyn TrafficGate>>,
}

impl Ctx {
    /// A context.
    pub fn new(client: Client, plan: Plan, options: Options, observer: Arc<dyn Observer>) -> Self {
        Self { objects: Objects::new(client.clone()), client, plan, options, observer, traffic: Vec::new() }
    }

    /// Checks every traffic gate over the requests since `since_unix_ms`, waiting (up to `patience`) while
    /// a gate has too few requests to judge. `Err` is a breach, or a gate that never got enough traffic.
    pub async fn traffic_holds(&self, since_unix_ms: u64, patience: Duration) -> Result<Vec<(String, String)>, String> {
        let deadline = std::time::Instant::now() + patience;
        let mut passed = Vec::new();
        for gate in &self.traffic {
            loop {
                match gate.check(since_unix_ms).await {
                    TrafficVerdict::Pass(summary) => {
                        passed.push((gate.name().to_owned(), summary));
                        break;
                    }
                    TrafficVerdict::Breach(why) => return Err(format!("{}: {why}", gate.name())),
                    TrafficVerdict::NotEnough(why) if std::time::Instant::now() >= deadline => {
                        return Err(format!("{}: {why} (none came within {} s)", gate.name(), patience.as_secs()));
                    }
                    TrafficVerdict::NotEnough(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
        Ok(passed)
    }

    /// Waits `duration` (a soak window), checking the traffic gates every second over the requests since
    /// `since_unix_ms`; a breach ends the wait early.
    pub async fn soak(&self, duration: Duration, since_unix_ms: u64) -> Result<(), crate::EngineError> {
        let end = std::time::Instant::now() + duration;
        while std::time::Instant::now() < end {
            tokio::time::sleep(end.saturating_duration_since(std::time::Instant::now()).min(Duration::from_secs(1)))
                .await;
            for gate in &self.traffic {
                if let TrafficVerdict::Breach(why) = gate.check(since_unix_ms).await {
                    return Err(crate::EngineError::Breach {
                        step: String::new(),
                        detail: format!("{}: {why}", gate.name()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reports a detail.
    pub fn detail(&self, message: impl AsRef<str>) {
        self.observer.detail(message.as_ref());
    }
}
