//! Startup, readiness and liveness probes, run for real against the pod's address.
//!
//! Semantics are the kubelet's: probing starts `initialDelaySeconds` after the container started, then
//! every `periodSeconds`, each attempt bounded by `timeoutSeconds`. A readiness result starts as failure
//! and flips to success after `successThreshold` consecutive successes; a passing result flips to failure
//! after `failureThreshold` consecutive failures (liveness starts as success). Readiness and liveness wait
//! for the startup probe. `exec` (and `grpc`) probes are treated as passing: the lab runs no processes in
//! which to exec a command, and a probe that always failed would make such pods unusable.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::time::{Instant, MissedTickBehavior};

use super::actions::{self, ActionError, HttpTarget};

/// What one probe attempt does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeAction {
    /// `httpGet`.
    Http(HttpTarget),
    /// `tcpSocket`.
    Tcp(SocketAddrV4),
    /// `exec` or `grpc`: not emulated, always passes.
    Pass(&'static str),
    /// A spec the lab cannot run (unknown named port, ...): always fails, like the kubelet's error result.
    Invalid(String),
}

/// One probe, resolved against its container and pod IP, with the kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A probe field in seconds, with a default and a minimum.
fn seconds(value: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default).max(min))
}

fn threshold(value: Option<i32>, default: u32) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default)
}

impl ProbeSpec {
    /// Reads a probe of `container` (pod IP `pod_ip`).
    pub(crate) fn from_probe(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> ProbeSpec {
        let action = if let Some(http) = &probe.http_get {
            actions::http_target(http, container, pod_ip)
                .map_or_else(|e| ProbeAction::Invalid(e.to_string()), ProbeAction::Http)
        } else if let Some(tcp) = &probe.tcp_socket {
            actions::tcp_target(tcp, container, pod_ip)
                .map_or_else(|e| ProbeAction::Invalid(e.to_string()), ProbeAction::Tcp)
        } else if probe.exec.is_some() {
            ProbeAction::Pass("exec")
        } else if probe.grpc.is_some() {
            ProbeAction::Pass("grpc")
        } else {
            ProbeAction::Invalid("probe has no handler".into())
        };
        ProbeSpec {
            action,
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold: threshold(probe.success_threshold, 1),
            failure_threshold: threshold(probe.failure_threshold, 3),
        }
    }

    /// One attempt.
    pub(crate) async fn attempt(&self) -> Result<(), ActionError> {
        match &self.action {
            ProbeAction::Http(target) => actions::http_get(target, self.timeout).await.map(|_| ()),
            ProbeAction::Tcp(addr) => actions::tcp_connect(*addr, self.timeout).await,
            ProbeAction::Pass(_) => Ok(()),
            ProbeAction::Invalid(why) => Err(ActionError::Invalid(why.clone())),
        }
    }
}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerProbes {
    pub startup: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
}

impl ContainerProbes {
    /// The probes of `container` in a pod with IP `pod_ip`.
    pub(crate) fn of(container: &Container, pod_ip: Ipv4Addr) -> Self {
        let spec = |p: &Option<Probe>| p.as_ref().map(|p| ProbeSpec::from_probe(p, container, pod_ip));
        ContainerProbes {
            startup: spec(&container.startup_probe),
            readiness: spec(&container.readiness_probe),
            liveness: spec(&container.liveness_probe),
        }
    }
}

/// A probe's result with its thresholds: the pure state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeState {
    passing: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl ProbeState {
    /// A result that starts as `passing`.
    pub(crate) fn new(passing: bool, spec: &ProbeSpec) -> Self {
        ProbeState {
            passing,
            successes: 0,
            failures: 0,
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
        }
    }

    /// The current result.
    #[cfg(test)]
    pub(crate) fn passing(&self) -> bool {
        self.passing
    }

    /// Records an attempt; returns the new result if it flipped.
    pub(crate) fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.passing && self.successes >= self.success_threshold {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.passing && self.failures >= self.failure_threshold {
                self.passing = false;
                return Some(false);
            }
        }
        None
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// What probing tells the container runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeEvent {
    /// The startup probe passed (sent at once when there is none).
    Started,
    /// The readiness result (sent once at start: true without a readiness probe).
    Ready(bool),
}

/// Probing ended because the container must be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The startup probe failed `failureThreshold` times.
    StartupFailed(String),
    /// The liveness probe failed `failureThreshold` times.
    LivenessFailed(String),
}

fn ticker(start: Instant, period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// Runs the probes of a container that started at `started_at`, reporting through `report`; returns
/// only when the container must be restarted.
pub(crate) async fn run(probes: &ContainerProbes, started_at: Instant, report: impl Fn(ProbeEvent)) -> Verdict {
    if let Some(startup) = &probes.startup
        && let Err(why) = startup_phase(startup, started_at).await
    {
        return Verdict::StartupFailed(why);
    }
    report(ProbeEvent::Started);
    let readiness = async {
        match &probes.readiness {
            None => {
                report(ProbeEvent::Ready(true));
                std::future::pending::<()>().await;
            }
            Some(spec) => {
                report(ProbeEvent::Ready(false));
                let mut state = ProbeState::new(false, spec);
                let mut ticks = ticker(started_at + spec.initial_delay, spec.period);
                loop {
                    ticks.tick().await;
                    let result = spec.attempt().await;
                    if let Err(err) = &result {
                        tracing::debug!(%err, "readiness probe failed");
                    }
                    if let Some(ready) = state.record(result.is_ok()) {
                        report(ProbeEvent::Ready(ready));
                    }
                }
            }
        }
    };
    let liveness = async {
        let Some(spec) = &probes.liveness else {
            return std::future::pending::<String>().await;
        };
        let mut state = ProbeState::new(true, spec);
        let mut ticks = ticker(started_at + spec.initial_delay, spec.period);
        loop {
            ticks.tick().await;
            match spec.attempt().await {
                Ok(()) => {
                    state.record(true);
                }
                Err(err) => {
                    if state.record(false) == Some(false) {
                        return format!("Liveness probe failed: {err}");
                    }
                }
            }
        }
    };
    tokio::select! {
        () = readiness => unreachable_readiness(),
        why = liveness => Verdict::LivenessFailed(why),
    }
}

/// The readiness loop never ends; this keeps `select!` total without a panic path.
fn unreachable_readiness() -> Verdict {
    Verdict::LivenessFailed("readiness probing stopped unexpectedly".into())
}

/// Probes until the startup probe passes once, or fails `failureThreshold` times in a row.
async fn startup_phase(spec: &ProbeSpec, started_at: Instant) -> Result<(), String> {
    let mut state = ProbeState::new(false, spec);
    let mut ticks = ticker(started_at + spec.initial_delay, spec.period);
    loop {
        ticks.tick().await;
        match spec.attempt().await {
            Ok(()) => return Ok(()),
            Err(err) => {
                state.record(false);
                if state.failures() >= spec.failure_threshold {
                    return Err(format!("Startup probe failed: {err}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Milliseconds rather than seconds: tokio's paused test clock is not enabled in this crate.
    fn spec(action: ProbeAction, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action,
            initial_delay: Duration::from_millis(20),
            period: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn thresholds_flip_the_result() {
        let mut s = ProbeState::new(false, &spec(ProbeAction::Pass("exec"), 2, 3));
        assert_eq!(s.record(true), None, "one success of two");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None, "successes must be consecutive");
        assert_eq!(s.record(true), Some(true));
        assert!(s.passing());
        assert_eq!(s.record(true), None, "no change");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None, "a success resets the failure count");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.failures(), 3);
    }

    #[test]
    fn reads_probes_with_kubelet_defaults() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "ports": [{ "name": "http", "containerPort": 9080 }],
            "readinessProbe": { "httpGet": { "port": "http", "path": "/ready" } },
            "livenessProbe": { "tcpSocket": { "port": 9080 }, "periodSeconds": 0, "failureThreshold": 1, "initialDelaySeconds": 5 },
            "startupProbe": { "exec": { "command": ["true"] } }
        }))
        .expect("container");
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        let probes = ContainerProbes::of(&container, ip);
        let readiness = probes.readiness.expect("readiness");
        assert!(
            matches!(&readiness.action, ProbeAction::Http(t) if t.path == "/ready" && t.addr == SocketAddrV4::new(ip, 9080))
        );
        assert_eq!(
            (
                readiness.initial_delay,
                readiness.period,
                readiness.timeout,
                readiness.success_threshold,
                readiness.failure_threshold
            ),
            (Duration::ZERO, Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
        let liveness = probes.liveness.expect("liveness");
        assert_eq!(liveness.action, ProbeAction::Tcp(SocketAddrV4::new(ip, 9080)));
        assert_eq!(
            (liveness.period, liveness.failure_threshold, liveness.initial_delay),
            (Duration::from_secs(1), 1, Duration::from_secs(5))
        );
        assert_eq!(probes.startup.expect("startup").action, ProbeAction::Pass("exec"));

        let bad: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "readinessProbe": { "httpGet": { "port": "missing" } }
        }))
        .expect("container");
        assert!(matches!(ContainerProbes::of(&bad, ip).readiness.expect("readiness").action, ProbeAction::Invalid(_)));
    }

    #[tokio::test]
    async fn no_probes_means_started_and_ready_at_once() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let probes = ContainerProbes::default();
        let run = run(&probes, Instant::now(), move |e| seen.lock().expect("lock").push(e));
        let outcome = tokio::time::timeout(Duration::from_millis(300), run).await;
        assert!(outcome.is_err(), "probing without a liveness probe never asks for a restart");
        assert_eq!(*events.lock().expect("lock"), vec![ProbeEvent::Started, ProbeEvent::Ready(true)]);
    }

    #[tokio::test]
    async fn failing_liveness_restarts_after_the_threshold_and_readiness_stays_false() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let probes = ContainerProbes {
            startup: None,
            readiness: Some(spec(ProbeAction::Invalid("no port".into()), 1, 3)),
            liveness: Some(spec(ProbeAction::Invalid("no port".into()), 1, 3)),
        };
        let begin = Instant::now();
        let verdict = run(&probes, begin, move |e| seen.lock().expect("lock").push(e)).await;
        assert!(matches!(verdict, Verdict::LivenessFailed(ref m) if m.contains("no port")), "{verdict:?}");
        // Attempts at 20, 120 and 220 ms: the third failure restarts.
        let took = begin.elapsed();
        assert!(took >= Duration::from_millis(220) && took < Duration::from_millis(600), "{took:?}");
        assert_eq!(*events.lock().expect("lock"), vec![ProbeEvent::Started, ProbeEvent::Ready(false)]);
    }

    #[tokio::test]
    async fn a_failing_startup_probe_restarts_and_blocks_readiness() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let probes = ContainerProbes {
            startup: Some(spec(ProbeAction::Invalid("down".into()), 1, 2)),
            readiness: Some(spec(ProbeAction::Pass("exec"), 1, 3)),
            liveness: None,
        };
        let verdict = run(&probes, Instant::now(), move |e| seen.lock().expect("lock").push(e)).await;
        assert!(matches!(verdict, Verdict::StartupFailed(_)));
        assert!(events.lock().expect("lock").is_empty(), "no readiness before startup passes");
    }
}
