//! Pod status, built from what the node agent knows about a pod's containers. Pure: no clock, no client.
//!
//! The endpoints controller publishes a pod's IP only when its `Ready` condition is True, and Deployments
//! count a pod available only then: these builders are what makes rollouts wait for real readiness.
//! Phase rules follow kubelet 1.20's `getPhase`: a pod whose containers all stopped stays `Running` under
//! `restartPolicy: Always` (they will be restarted), so a pod being deleted never turns `Succeeded`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What kind of container a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerKind {
    /// An ordinary init container: the lab completes it at once.
    Init,
    /// An init container with `restartPolicy: Always` (a native sidecar): runs like a container, reported
    /// among the init container statuses.
    Sidecar,
    /// A regular container.
    Regular,
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Termination {
    /// 0 for a clean exit, 1 for an error, 137 when killed.
    pub exit_code: i32,
    /// `Completed`, `Error`.
    pub reason: String,
    /// The error, if any.
    pub message: Option<String>,
    /// When this run started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
}

impl Termination {
    /// A clean exit (or an ordinary init container's completion).
    pub(crate) fn completed(started_at: Option<Timestamp>, finished_at: Timestamp) -> Self {
        Termination { exit_code: 0, reason: "Completed".into(), message: None, started_at, finished_at }
    }

    /// An exit with an error.
    pub(crate) fn error(message: String, started_at: Option<Timestamp>, finished_at: Timestamp) -> Self {
        Termination { exit_code: 1, reason: "Error".into(), message: Some(message), started_at, finished_at }
    }

    /// Killed by the agent (grace period over, failed liveness probe): what SIGKILL reports.
    pub(crate) fn killed(message: String, started_at: Option<Timestamp>, finished_at: Timestamp) -> Self {
        Termination { exit_code: 137, reason: "Error".into(), message: Some(message), started_at, finished_at }
    }
}

/// Where a container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Not running: not started yet (`ContainerCreating`) or waiting to be restarted (`CrashLoopBackOff`).
    Waiting {
        /// Why.
        reason: String,
    },
    /// Running since.
    Running(Timestamp),
    /// Ended and will not be restarted.
    Terminated(Termination),
}

/// One container as the agent tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub kind: ContainerKind,
    pub state: RunState,
    /// The previous run's end, shown as `lastState`.
    pub last_termination: Option<Termination>,
    /// Readiness probe verdict (true without a readiness probe once started).
    pub ready: bool,
    /// Startup probe passed (true without one once running).
    pub started: bool,
    pub restart_count: i32,
}

impl ContainerRecord {
    /// A container about to be created.
    pub(crate) fn new(name: String, image: String, kind: ContainerKind) -> Self {
        ContainerRecord {
            name,
            image,
            kind,
            state: RunState::Waiting { reason: "ContainerCreating".into() },
            last_termination: None,
            ready: false,
            started: false,
            restart_count: 0,
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running(_))
    }

    /// Whether this container has done what "initialized" needs: an init container completed, a sidecar
    /// started.
    fn initialized(&self) -> bool {
        match self.kind {
            ContainerKind::Init => matches!(&self.state, RunState::Terminated(t) if t.exit_code == 0),
            ContainerKind::Sidecar => self.is_running() && self.started,
            ContainerKind::Regular => true,
        }
    }
}

/// A pod as the agent tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRecord {
    pub uid: String,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub start_time: Timestamp,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// When the scheduler bound the pod (its PodScheduled transition), kept as it was.
    pub scheduled_at: Option<Timestamp>,
    /// Init containers and native sidecars, in spec order.
    pub init: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    /// The pod has a deletionTimestamp: never Ready again.
    pub terminating: bool,
}

impl PodRecord {
    /// The record of container `name` (init or regular).
    pub(crate) fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.init.iter_mut().chain(self.containers.iter_mut()).find(|c| c.name == name)
    }

    /// Containers whose readiness counts for the pod: regular containers and native sidecars.
    fn serving(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.init.iter().filter(|c| c.kind == ContainerKind::Sidecar).chain(self.containers.iter())
    }

    /// Whether every init container completed and every sidecar started.
    pub(crate) fn initialized(&self) -> bool {
        self.init.iter().all(ContainerRecord::initialized)
    }

    /// Whether the pod counts as ready (all serving containers ready, not terminating).
    pub(crate) fn ready(&self) -> bool {
        !self.terminating && self.initialized() && self.serving().all(|c| c.ready && c.is_running())
    }

    /// The pod phase (kubelet 1.20 rules).
    pub(crate) fn phase(&self) -> &'static str {
        if !self.initialized() && !self.terminating {
            return "Pending";
        }
        let never_started = self
            .containers
            .iter()
            .filter(|c| matches!(&c.state, RunState::Waiting { .. }) && c.last_termination.is_none())
            .count();
        let running = self.containers.iter().filter(|c| c.is_running()).count();
        let terminated: Vec<&Termination> = self
            .containers
            .iter()
            .filter_map(|c| match &c.state {
                RunState::Terminated(t) => Some(t),
                _ => None,
            })
            .collect();
        if never_started > 0 {
            return "Pending";
        }
        if running > 0 || terminated.len() < self.containers.len() {
            return "Running"; // some run, the others wait for a restart
        }
        let all_ok = terminated.iter().all(|t| t.exit_code == 0);
        match self.restart_policy.as_str() {
            "Never" if all_ok => "Succeeded",
            "Never" => "Failed",
            "OnFailure" if all_ok => "Succeeded",
            _ => "Running",
        }
    }
}

/// When each pod condition last changed: the one piece of status history the builder needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConditionClock {
    seen: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl ConditionClock {
    /// Records `status` for condition `kind` at `now`; returns when it last changed.
    fn observe(&mut self, kind: &'static str, status: bool, now: Timestamp) -> Timestamp {
        let entry = self.seen.entry(kind).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        entry.1
    }
}

/// The container ID shown in statuses: stable for one run of one container.
fn container_id(uid: &str, c: &ContainerRecord) -> String {
    format!("meshshift://{uid}/{}/{}", c.name, c.restart_count)
}

fn terminated(t: &Termination, id: Option<String>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: id,
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(Time),
            finished_at: Some(Time(t.finished_at)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One container's status.
pub(crate) fn container_status(uid: &str, c: &ContainerRecord, terminating: bool) -> ContainerStatus {
    let id = container_id(uid, c);
    let state = match &c.state {
        RunState::Waiting { reason } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: None }),
            ..Default::default()
        },
        RunState::Running(since) => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(*since)) }),
            ..Default::default()
        },
        RunState::Terminated(t) => terminated(t, Some(id.clone())),
    };
    let ready = match c.kind {
        // The kubelet reports a successfully completed init container as ready.
        ContainerKind::Init => matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0),
        _ => c.ready && c.is_running() && !terminating,
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("meshshift-lab://{}", c.image),
        container_id: (!matches!(c.state, RunState::Waiting { .. }) || c.last_termination.is_some()).then_some(id),
        ready,
        started: Some(c.is_running() && c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: c.last_termination.as_ref().map(|t| terminated(t, None)),
        ..Default::default()
    }
}

fn condition(
    kind: &'static str,
    status: bool,
    since: Timestamp,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(Time(since)),
        reason,
        message,
        ..Default::default()
    }
}

/// The full pod status for `pod` at `now`, updating `clock` with condition transitions.
pub(crate) fn pod_status(pod: &PodRecord, clock: &mut ConditionClock, now: Timestamp) -> PodStatus {
    let initialized = pod.initialized();
    let ready = pod.ready();
    let unready: Vec<&str> = pod.serving().filter(|c| !(c.ready && c.is_running())).map(|c| c.name.as_str()).collect();
    let uninitialized: Vec<&str> = pod.init.iter().filter(|c| !c.initialized()).map(|c| c.name.as_str()).collect();
    let not_ready_why = || {
        if pod.terminating {
            (Some("PodTerminating".to_owned()), Some("the pod is being deleted".to_owned()))
        } else {
            (
                Some("ContainersNotReady".to_owned()),
                Some(format!("containers with unready status: [{}]", unready.join(" "))),
            )
        }
    };
    let scheduled_at = pod.scheduled_at.unwrap_or(pod.start_time);
    let mut conditions = vec![condition("PodScheduled", true, scheduled_at, None, None)];
    let since = clock.observe("Initialized", initialized, now);
    conditions.push(if initialized {
        condition("Initialized", true, since, None, None)
    } else {
        let message = format!("containers with incomplete status: [{}]", uninitialized.join(" "));
        condition("Initialized", false, since, Some("ContainersNotInitialized".into()), Some(message))
    });
    for kind in ["ContainersReady", "Ready"] {
        let since = clock.observe(kind, ready, now);
        conditions.push(if ready {
            condition(kind, true, since, None, None)
        } else {
            let (reason, message) = not_ready_why();
            condition(kind, false, since, reason, message)
        });
    }
    let statuses = |list: &[ContainerRecord]| -> Vec<ContainerStatus> {
        list.iter().map(|c| container_status(&pod.uid, c, pod.terminating)).collect()
    };
    PodStatus {
        phase: Some(pod.phase().to_owned()),
        conditions: Some(conditions),
        host_ip: Some(pod.host_ip.to_string()),
        pod_ip: Some(pod.pod_ip.to_string()),
        pod_ips: Some(vec![PodIP { ip: pod.pod_ip.to_string() }]),
        start_time: Some(Time(pod.start_time)),
        container_statuses: Some(statuses(&pod.containers)),
        init_container_statuses: (!pod.init.is_empty()).then(|| statuses(&pod.init)),
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
    }

    fn running(name: &str, kind: ContainerKind, ready: bool) -> ContainerRecord {
        ContainerRecord {
            state: RunState::Running(at(1)),
            ready,
            started: true,
            ..ContainerRecord::new(name.into(), format!("example/{name}:1"), kind)
        }
    }

    fn pod(containers: Vec<ContainerRecord>) -> PodRecord {
        PodRecord {
            uid: "u1".into(),
            pod_ip: Ipv4Addr::new(10, 244, 1, 2),
            host_ip: Ipv4Addr::new(10, 244, 1, 1),
            start_time: at(0),
            restart_policy: "Always".into(),
            scheduled_at: Some(at(-1)),
            init: Vec::new(),
            containers,
            terminating: false,
        }
    }

    fn cond<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
        status.conditions.iter().flatten().find(|c| c.type_ == kind).expect(kind)
    }

    #[test]
    fn a_pod_is_ready_when_all_containers_are() {
        let mut clock = ConditionClock::default();
        let mut p =
            pod(vec![running("app", ContainerKind::Regular, true), running("proxy", ContainerKind::Regular, false)]);
        let s = pod_status(&p, &mut clock, at(2));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(s.host_ip.as_deref(), Some("10.244.1.1"));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "ContainersReady").message.as_deref(), Some("containers with unready status: [proxy]"));
        assert_eq!(cond(&s, "PodScheduled").last_transition_time, Some(Time(at(-1))));
        assert_eq!(cond(&s, "Initialized").status, "True");

        p.containers[1].ready = true;
        let s = pod_status(&p, &mut clock, at(5));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(at(5))));
        assert!(s.container_statuses.iter().flatten().all(|c| c.ready));
        // No change: the transition time stays.
        let s = pod_status(&p, &mut clock, at(9));
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(at(5))));
        assert_eq!(cond(&s, "Initialized").last_transition_time, Some(Time(at(2))));
    }

    #[test]
    fn a_terminating_pod_is_never_ready() {
        let mut clock = ConditionClock::default();
        let mut p = pod(vec![running("app", ContainerKind::Regular, true)]);
        assert_eq!(cond(&pod_status(&p, &mut clock, at(1)), "Ready").status, "True");
        p.terminating = true;
        let s = pod_status(&p, &mut clock, at(3));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodTerminating"));
        assert!(!s.container_statuses.expect("statuses")[0].ready);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        // All containers ended: still Running under restartPolicy Always (kubelet 1.20).
        p.containers[0].state = RunState::Terminated(Termination::completed(Some(at(1)), at(4)));
        let s = pod_status(&p, &mut clock, at(4));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let state = s.container_statuses.expect("statuses")[0].state.clone().expect("state");
        assert_eq!(state.terminated.expect("terminated").exit_code, 0);
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let mut p = pod(vec![ContainerRecord::new("app".into(), "x".into(), ContainerKind::Regular)]);
        assert_eq!(p.phase(), "Pending");
        p.containers[0].state = RunState::Running(at(1));
        assert_eq!(p.phase(), "Running");
        p.containers[0].state = RunState::Waiting { reason: "CrashLoopBackOff".into() };
        p.containers[0].last_termination = Some(Termination::error("boom".into(), Some(at(1)), at(2)));
        assert_eq!(p.phase(), "Running", "waiting for a restart");
        p.containers[0].state = RunState::Terminated(Termination::completed(Some(at(1)), at(2)));
        p.restart_policy = "Never".into();
        assert_eq!(p.phase(), "Succeeded");
        p.containers[0].state = RunState::Terminated(Termination::error("boom".into(), Some(at(1)), at(2)));
        assert_eq!(p.phase(), "Failed");
        p.restart_policy = "OnFailure".into();
        assert_eq!(p.phase(), "Running");
    }

    #[test]
    fn init_containers_and_native_sidecars() {
        let mut clock = ConditionClock::default();
        let mut p = pod(vec![running("app", ContainerKind::Regular, true)]);
        let mut init = ContainerRecord::new("setup".into(), "x".into(), ContainerKind::Init);
        init.state = RunState::Terminated(Termination::completed(Some(at(0)), at(0)));
        let mut sidecar = ContainerRecord::new("istio-proxy".into(), "proxyv2:1.9.7".into(), ContainerKind::Sidecar);
        p.init = vec![init, sidecar.clone()];
        let s = pod_status(&p, &mut clock, at(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized").status, "False");
        assert_eq!(
            cond(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [istio-proxy]")
        );

        sidecar.state = RunState::Running(at(2));
        sidecar.started = true;
        p.init[1] = sidecar;
        let s = pod_status(&p, &mut clock, at(2));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False", "the sidecar is not ready yet");
        let inits = s.init_container_statuses.expect("init statuses");
        assert!(inits[0].ready, "a completed init container reports ready");
        assert!(inits[1].started == Some(true) && !inits[1].ready);
        p.init[1].ready = true;
        assert!(p.ready());
    }

    #[test]
    fn restarts_show_last_state_and_count() {
        let mut c = running("app", ContainerKind::Regular, false);
        c.restart_count = 2;
        c.last_termination = Some(Termination::killed("liveness probe failed".into(), Some(at(0)), at(1)));
        let s = container_status("u1", &c, false);
        assert_eq!(s.restart_count, 2);
        let last = s.last_state.expect("last state").terminated.expect("terminated");
        assert_eq!((last.exit_code, last.message.as_deref()), (137, Some("liveness probe failed")));
        assert_eq!(s.container_id.as_deref(), Some("meshshift://u1/app/2"));
        assert_eq!(s.started, Some(true));
    }
}
