//! The life of one pod on a lab node, from binding to deletion: the kubelet's pod worker.
//!
//! ```text
//!   start ── init containers complete, native sidecars start ── (sidecars started) ── containers start
//!     │                                                                                   │
//!     │   status written on every change (phase, IP, conditions, container statuses)      │
//!     ▼                                                                                   ▼
//!   deletionTimestamp seen ── status: not Ready (at once) ── per container: preStop, then Terminating
//!     ── all containers exited, or the grace period is over (Killed) ── final status
//!     ── DELETE gracePeriodSeconds=0 with a UID precondition ── done (the IP is freed by the caller)
//! ```
//! A pod that disappears from the API without that dance (force deletion) has its containers killed at once.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::NodeEnv;
use super::hooks;
use super::probes::ContainerProbes;
use super::runner::{self, ContainerEvent, RestartPolicy, RunnerConfig};
use super::status::{self, ConditionClock, ContainerKind, ContainerRecord, PodRecord, RunState, Termination};
use crate::containers::generic::GenericHttp;
use crate::containers::{Lifecycle, pod_loopback};

/// The kubelet's default grace period.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long killed containers get to wind down before their tasks are aborted.
const KILL_WAIT: Duration = Duration::from_secs(1);
/// Wait between failed API writes.
const RETRY: Duration = Duration::from_secs(1);

/// What the node's pod watch tells a worker.
#[derive(Debug, Clone)]
pub(crate) enum PodUpdate {
    /// The pod object changed (labels, deletionTimestamp, ...).
    Changed(Arc<Pod>),
    /// The pod object is gone from the API.
    Gone,
}

/// How the main loop ended.
enum End {
    /// The pod was deleted gracefully and its containers have stopped: finish the deletion.
    Terminated,
    /// The pod object is gone already.
    Gone,
}

/// The pod's grace period: `deletionGracePeriodSeconds` once deleted, else the spec's, else 30 s.
pub(crate) fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds));
    secs.map_or(DEFAULT_GRACE, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// When the scheduler bound the pod, from its PodScheduled condition.
fn scheduled_at(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn kind_of_init(c: &Container) -> ContainerKind {
    if c.restart_policy.as_deref() == Some("Always") { ContainerKind::Sidecar } else { ContainerKind::Init }
}

fn is_status(err: &kube::Error, codes: &[u16]) -> bool {
    matches!(err, kube::Error::Api(status) if codes.contains(&status.code))
}

/// The apiserver's answer to a status write whose `metadata.uid` is not the stored pod's.
fn uid_mismatch(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 422 && status.message.contains("metadata.uid"))
}

/// One pod's worker. Build with [`PodWorker::new`], then [`PodWorker::run`] it on its own task.
pub(crate) struct PodWorker {
    env: Arc<NodeEnv>,
    api: Api<Pod>,
    /// `namespace/name`, for logs.
    key: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    pod_tx: watch::Sender<Arc<Pod>>,
    record: PodRecord,
    clock: ConditionClock,
    /// Lifecycle senders of containers that got a runner.
    lifecycles: BTreeMap<String, Arc<watch::Sender<Lifecycle>>>,
    runners: JoinSet<()>,
    hooks: JoinSet<()>,
    events_tx: mpsc::UnboundedSender<ContainerEvent>,
    events_rx: mpsc::UnboundedReceiver<ContainerEvent>,
    /// Regular containers wait for native sidecars to start.
    main_started: bool,
    /// Set once the pod is being deleted.
    deadline: Option<Instant>,
    /// The last status written (as JSON, so unchanged statuses are not re-sent).
    last_written: Option<serde_json::Value>,
    /// After a failed write: not before this.
    retry_at: Option<tokio::time::Instant>,
    created: Instant,
}

impl PodWorker {
    /// A worker for `pod`, which gets address `ip`.
    pub(crate) fn new(env: Arc<NodeEnv>, pod: Arc<Pod>, ip: Ipv4Addr) -> Self {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let record_of =
            |c: &Container, kind| ContainerRecord::new(c.name.clone(), c.image.clone().unwrap_or_default(), kind);
        let record = PodRecord {
            uid: uid.clone(),
            pod_ip: ip,
            host_ip: env.node.internal_ip,
            start_time: Timestamp::now(),
            restart_policy: spec.restart_policy.clone().unwrap_or_else(|| "Always".into()),
            scheduled_at: scheduled_at(&pod),
            init: spec.init_containers.iter().flatten().map(|c| record_of(c, kind_of_init(c))).collect(),
            containers: spec.containers.iter().map(|c| record_of(c, ContainerKind::Regular)).collect(),
            terminating: false,
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        PodWorker {
            api: Api::namespaced(env.client.clone(), &ns),
            env,
            key: format!("{ns}/{name}"),
            name,
            uid,
            ip,
            pod_tx: watch::Sender::new(pod),
            record,
            clock: ConditionClock::default(),
            lifecycles: BTreeMap::new(),
            runners: JoinSet::new(),
            hooks: JoinSet::new(),
            events_tx,
            events_rx,
            main_started: false,
            deadline: None,
            last_written: None,
            retry_at: None,
            created: Instant::now(),
        }
    }

    fn pod(&self) -> Arc<Pod> {
        self.pod_tx.borrow().clone()
    }

    /// Runs the pod until it is deleted (and the deletion finished) or gone.
    pub(crate) async fn run(mut self, mut updates: mpsc::UnboundedReceiver<PodUpdate>) {
        if self.pod().metadata.deletion_timestamp.is_some() {
            // First seen while being deleted (the agent restarted): none of its containers run here.
            tracing::info!(pod = self.key, "pod is being deleted and runs nothing here: finishing its deletion");
            self.record.terminating = true;
            self.finish(&mut updates).await;
            return;
        }
        tracing::info!(pod = self.key, ip = %self.ip, node = self.env.node.name, "starting pod");
        self.start_init();
        match self.main_loop(&mut updates).await {
            End::Terminated => self.finish(&mut updates).await,
            End::Gone => {
                tracing::info!(pod = self.key, "pod removed from the API: killing its containers");
                self.kill_all().await;
            }
        }
    }

    /// Completes plain init containers and starts native sidecars (then the containers, if no sidecar).
    fn start_init(&mut self) {
        let pod = self.pod();
        let now = Timestamp::now();
        for c in pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten()) {
            if kind_of_init(c) == ContainerKind::Sidecar {
                self.start_container(c);
            } else if let Some(rec) = self.record.container_mut(&c.name) {
                rec.state = RunState::Terminated(Termination::completed(Some(now), now));
            }
        }
        self.start_main_if_initialized();
    }

    fn start_main_if_initialized(&mut self) {
        if self.main_started || !self.record.initialized() || self.deadline.is_some() {
            return;
        }
        self.main_started = true;
        let pod = self.pod();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            self.start_container(c);
        }
    }

    fn start_container(&mut self, container: &Container) {
        let pod = self.pod();
        let image = self.env.images.find(&pod, container).unwrap_or_else(|| Arc::new(GenericHttp));
        let (lifecycle_tx, lifecycle) = watch::channel(Lifecycle::Running);
        self.lifecycles.insert(container.name.clone(), Arc::new(lifecycle_tx));
        let restart_policy = match container.restart_policy.as_deref() {
            Some("Always") => RestartPolicy::Always, // a native sidecar
            _ => RestartPolicy::parse(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref())),
        };
        tracing::debug!(pod = self.key, container = container.name, image = image.name(), "starting container");
        let config = RunnerConfig {
            container: container.clone(),
            image,
            restart_policy,
            probes: ContainerProbes::of(container, self.ip),
            pod: self.pod_tx.subscribe(),
            pod_ip: self.ip,
            pod_loopback: pod_loopback(self.ip),
            client: self.env.client.clone(),
            resolve: self.env.resolve.clone(),
            lifecycle,
            events: self.events_tx.clone(),
        };
        self.runners.spawn(runner::run(config));
    }

    async fn main_loop(&mut self, updates: &mut mpsc::UnboundedReceiver<PodUpdate>) -> End {
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        loop {
            if self.flush_status().await.is_err() {
                return End::Gone;
            }
            if self.deadline.is_some() && self.runners.is_empty() {
                return End::Terminated;
            }
            let deadline = self.deadline.map(tokio::time::Instant::from_std);
            let retry_at = self.retry_at;
            tokio::select! {
                update = updates.recv() => match update {
                    Some(PodUpdate::Changed(pod)) => self.on_changed(pod),
                    Some(PodUpdate::Gone) | None => return End::Gone,
                },
                Some(event) = self.events_rx.recv() => {
                    self.apply(event);
                    while let Ok(event) = self.events_rx.try_recv() {
                        self.apply(event);
                    }
                }
                Some(_) = self.runners.join_next(), if !self.runners.is_empty() => {}
                Some(_) = self.hooks.join_next(), if !self.hooks.is_empty() => {}
                () = tokio::time::sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => {
                    tracing::info!(pod = self.key, "grace period over: killing the remaining containers");
                    self.kill_all().await;
                    return End::Terminated;
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(far)), if retry_at.is_some() => {
                    self.retry_at = None;
                }
            }
        }
    }

    fn on_changed(&mut self, pod: Arc<Pod>) {
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let grace = grace_period(&pod);
        self.pod_tx.send_replace(pod);
        if !deleting {
            return;
        }
        let deadline = Instant::now() + grace;
        match self.deadline {
            None => self.begin_termination(deadline, grace),
            // A second, shorter delete shortens the grace period (as the kubelet allows).
            Some(current) if deadline + Duration::from_millis(500) < current => {
                tracing::info!(pod = self.key, grace_s = grace.as_secs(), "grace period shortened");
                self.deadline = Some(deadline);
                for tx in self.lifecycles.values() {
                    if matches!(*tx.borrow(), Lifecycle::Terminating { .. }) {
                        tx.send_replace(Lifecycle::Terminating { deadline });
                    }
                }
            }
            Some(_) => {}
        }
    }

    /// Not Ready at once; then each container gets its preStop hook and, after it, `Terminating`.
    fn begin_termination(&mut self, deadline: Instant, grace: Duration) {
        tracing::info!(pod = self.key, grace_s = grace.as_secs(), "pod deleted: terminating");
        self.deadline = Some(deadline);
        self.record.terminating = true;
        let pod = self.pod();
        let containers = pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
        for c in containers {
            let Some(tx) = self.lifecycles.get(&c.name).cloned() else { continue };
            let hook = hooks::pre_stop(c, self.ip);
            let (key, container) = (self.key.clone(), c.name.clone());
            self.hooks.spawn(async move {
                if hook != hooks::PreStop::None {
                    tracing::debug!(pod = key, container, ?hook, "running preStop hook");
                    if let Err(err) = hooks::run(&hook, deadline).await {
                        tracing::warn!(pod = key, container, err, "preStop hook failed");
                    }
                }
                tx.send_if_modified(|l| {
                    let running = *l == Lifecycle::Running;
                    if running {
                        *l = Lifecycle::Terminating { deadline };
                    }
                    running
                });
            });
        }
    }

    fn apply(&mut self, event: ContainerEvent) {
        let was_ready = self.record.ready();
        match event {
            ContainerEvent::Running { name, since, restart_count } => {
                if let Some(c) = self.record.container_mut(&name) {
                    c.state = RunState::Running(since);
                    c.restart_count = restart_count;
                    c.ready = false;
                    c.started = false;
                }
            }
            ContainerEvent::Started { name } => {
                if let Some(c) = self.record.container_mut(&name) {
                    c.started = true;
                }
                self.start_main_if_initialized();
            }
            ContainerEvent::Ready { name, ready } => {
                if let Some(c) = self.record.container_mut(&name) {
                    c.ready = ready;
                }
            }
            ContainerEvent::Exited { name, termination, restarting } => {
                if let Some(c) = self.record.container_mut(&name) {
                    c.ready = false;
                    c.started = false;
                    if restarting {
                        c.last_termination = Some(termination);
                        c.state = RunState::Waiting { reason: "CrashLoopBackOff".into() };
                    } else {
                        c.state = RunState::Terminated(termination);
                    }
                }
            }
        }
        let ready = self.record.ready();
        if ready != was_ready {
            let after_ms = self.created.elapsed().as_millis() as u64;
            tracing::info!(pod = self.key, ready, after_ms, "pod readiness changed");
        }
    }

    /// Writes the status if it changed. `Err` when the pod is gone (or replaced by another with its name).
    async fn flush_status(&mut self) -> Result<(), ()> {
        if self.retry_at.is_some() {
            return Ok(());
        }
        let status = status::pod_status(&self.record, &mut self.clock, Timestamp::now());
        let value = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(err) => {
                tracing::error!(pod = self.key, %err, "cannot serialize pod status");
                return Ok(());
            }
        };
        if self.last_written.as_ref() == Some(&value) {
            return Ok(());
        }
        // metadata.uid makes the write a precondition: never write onto a new pod with the same name.
        let patch = serde_json::json!({ "metadata": { "uid": self.uid }, "status": value });
        match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.last_written = Some(value);
                Ok(())
            }
            // 422 "metadata.uid: field is immutable": the name now belongs to another pod.
            Err(err) if is_status(&err, &[404, 409]) || uid_mismatch(&err) => {
                tracing::info!(pod = self.key, %err, "pod gone while writing its status");
                Err(())
            }
            Err(err) => {
                tracing::warn!(pod = self.key, %err, "writing pod status failed; retrying");
                self.retry_at = Some(tokio::time::Instant::now() + RETRY);
                Ok(())
            }
        }
    }

    /// Tells every container to stop now, waits briefly, then aborts what still runs.
    async fn kill_all(&mut self) {
        for tx in self.lifecycles.values() {
            tx.send_replace(Lifecycle::Killed);
        }
        self.hooks.abort_all();
        let runners = &mut self.runners;
        let _ = tokio::time::timeout(KILL_WAIT, async { while runners.join_next().await.is_some() {} }).await;
        if !self.runners.is_empty() {
            tracing::warn!(
                pod = self.key,
                left = self.runners.len(),
                "containers did not stop when killed: aborting them"
            );
            self.runners.abort_all();
            while self.runners.join_next().await.is_some() {}
        }
        while self.hooks.join_next().await.is_some() {}
        while let Ok(event) = self.events_rx.try_recv() {
            self.apply(event);
        }
        let now = Timestamp::now();
        for c in self.record.init.iter_mut().chain(self.record.containers.iter_mut()) {
            match &c.state {
                RunState::Running(since) => {
                    c.state = RunState::Terminated(Termination::killed("killed".into(), Some(*since), now));
                }
                RunState::Waiting { .. } => {
                    c.state = RunState::Terminated(Termination::killed("never started".into(), None, now));
                }
                RunState::Terminated(_) => {}
            }
        }
    }

    /// Final status, then the kubelet's last word: DELETE with grace period 0 and a UID precondition.
    async fn finish(&mut self, updates: &mut mpsc::UnboundedReceiver<PodUpdate>) {
        self.kill_all().await; // no-op when every container already exited
        self.retry_at = None;
        if self.flush_status().await.is_err() {
            return;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        loop {
            match self.api.delete(&self.name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = self.key, after_ms = self.created.elapsed().as_millis() as u64, "pod deleted");
                    return;
                }
                Err(err) if is_status(&err, &[404, 409]) => return, // gone, or another pod has the name now
                Err(err) => tracing::warn!(pod = self.key, %err, "deleting the pod failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                update = updates.recv() => if matches!(update, Some(PodUpdate::Gone) | None) { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    #[test]
    fn grace_period_prefers_the_deletion_value() {
        let p = pod(serde_json::json!({ "metadata": { "name": "a" }, "spec": { "containers": [] } }));
        assert_eq!(grace_period(&p), Duration::from_secs(30));
        let p = pod(serde_json::json!({
            "metadata": { "name": "a" }, "spec": { "containers": [], "terminationGracePeriodSeconds": 5 }
        }));
        assert_eq!(grace_period(&p), Duration::from_secs(5));
        let p = pod(serde_json::json!({
            "metadata": { "name": "a", "deletionGracePeriodSeconds": 2 },
            "spec": { "containers": [], "terminationGracePeriodSeconds": 5 }
        }));
        assert_eq!(grace_period(&p), Duration::from_secs(2));
    }

    #[test]
    fn native_sidecars_are_init_containers_that_always_restart() {
        let c: Container =
            serde_json::from_value(serde_json::json!({ "name": "istio-proxy", "restartPolicy": "Always" })).expect("c");
        assert_eq!(kind_of_init(&c), ContainerKind::Sidecar);
        let c: Container = serde_json::from_value(serde_json::json!({ "name": "istio-init" })).expect("c");
        assert_eq!(kind_of_init(&c), ContainerKind::Init);
    }
}
