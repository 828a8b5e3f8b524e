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
}

impl Ctx {
    /// A context.
    pub fn new(client: Client, plan: Plan, options: Options, observer: Arc<dyn Observer>) -> Self {
        Self { objects: Objects::new(client.clone()), client, plan, options, observer }
    }

    /// Reports a detail.
    pub fn detail(&self, message: impl AsRef<str>) {
        self.observer.detail(message.as_ref());
    }
}
