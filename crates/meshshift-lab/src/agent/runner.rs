//! One container of one pod: start its emulation, probe it, restart it when it exits (per the pod's
//! restartPolicy, with a crash-loop backoff), and hard-stop it when its lifecycle says [`Lifecycle::Killed`].
//!
//! "Killing" a container drops its future: every socket it owns closes at once, as with SIGKILL. A
//! container therefore must not leave detached tasks behind (a server spawned with `tokio::spawn` would
//! outlive the container and keep its ports).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::probes::{self, ContainerProbes, ProbeEvent, Verdict};
use super::status::Termination;
use crate::containers::{ContainerContext, ContainerImage, Lifecycle, ServiceResolver};

/// What a runner tells its pod worker, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerEvent {
    /// A run began.
    Running { name: String, since: Timestamp, restart_count: i32 },
    /// The startup probe passed (or there is none).
    Started { name: String },
    /// The readiness verdict changed.
    Ready { name: String, ready: bool },
    /// A run ended; `restarting` when another run follows after a backoff.
    Exited { name: String, termination: Termination, restarting: bool },
}

/// When to restart an exited container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// From a pod spec's `restartPolicy` (default `Always`).
    pub(crate) fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The crash-loop backoff: 1 s, doubling up to 30 s; a run of a minute or more resets it. (The kubelet
/// uses 10 s to 5 min; a lab wants crash loops visible but short.)
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_INITIAL }
    }
}

impl Backoff {
    /// The delay before restarting a container whose last run lasted `ran_for`.
    pub(crate) fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Everything a runner needs.
pub(crate) struct RunnerConfig {
    pub container: Container,
    pub image: Arc<dyn ContainerImage>,
    pub restart_policy: RestartPolicy,
    pub probes: ContainerProbes,
    /// The pod as last seen (each run gets the current one).
    pub pod: watch::Receiver<Arc<Pod>>,
    pub pod_ip: Ipv4Addr,
    pub pod_loopback: Ipv4Addr,
    pub client: kube::Client,
    pub resolve: ServiceResolver,
    pub lifecycle: watch::Receiver<Lifecycle>,
    pub events: mpsc::UnboundedSender<ContainerEvent>,
}

/// How one run ended.
enum Ended {
    Exited(Result<(), String>),
    /// Killed by the agent, with the reason.
    Killed(String),
}

/// Runs the container until it ends for good (see the module docs).
pub(crate) async fn run(cfg: RunnerConfig) {
    let name = cfg.container.name.clone();
    let send = |event: ContainerEvent| {
        let _ = cfg.events.send(event);
    };
    let mut backoff = Backoff::default();
    let mut restart_count = 0;
    loop {
        if *cfg.lifecycle.borrow() != Lifecycle::Running {
            return; // the pod is going away: no (re)start
        }
        let ctx = ContainerContext {
            pod: cfg.pod.borrow().clone(),
            container: cfg.container.clone(),
            pod_ip: cfg.pod_ip,
            pod_loopback: cfg.pod_loopback,
            client: cfg.client.clone(),
            resolve: cfg.resolve.clone(),
            lifecycle: cfg.lifecycle.clone(),
        };
        let since = Timestamp::now();
        let began = Instant::now();
        send(ContainerEvent::Running { name: name.clone(), since, restart_count });
        tracing::debug!(container = name, image = cfg.image.name(), restart_count, "container started");
        let mut container = cfg.image.start(ctx);

        let mut watcher = cfg.lifecycle.clone();
        let probing = async {
            let verdict = probes::run(&cfg.probes, began, |event| {
                send(match event {
                    ProbeEvent::Started => ContainerEvent::Started { name: name.clone() },
                    ProbeEvent::Ready(ready) => ContainerEvent::Ready { name: name.clone(), ready },
                })
            })
            .await;
            // Once the pod terminates, probe failures no longer restart anything.
            if *cfg.lifecycle.borrow() != Lifecycle::Running {
                std::future::pending::<()>().await;
            }
            verdict
        };
        let ended = tokio::select! {
            result = &mut container => Ended::Exited(result.map_err(|e| e.to_string())),
            verdict = probing => Ended::Killed(match verdict {
                Verdict::StartupFailed(why) | Verdict::LivenessFailed(why) => why,
            }),
            _ = watcher.wait_for(|l| *l == Lifecycle::Killed) => {
                Ended::Killed("the termination grace period is over".into())
            }
        };
        drop(container); // closes its sockets before anyone hears it ended
        let finished_at = Timestamp::now();
        let termination = match ended {
            Ended::Exited(Ok(())) => Termination::completed(Some(since), finished_at),
            Ended::Exited(Err(err)) => {
                tracing::warn!(container = name, %err, "container failed");
                Termination::error(err, Some(since), finished_at)
            }
            Ended::Killed(why) => {
                tracing::info!(container = name, why, "container killed");
                Termination::killed(why, Some(since), finished_at)
            }
        };
        let restarting =
            *cfg.lifecycle.borrow() == Lifecycle::Running && cfg.restart_policy.restarts(termination.exit_code);
        send(ContainerEvent::Exited { name: name.clone(), termination, restarting });
        if !restarting {
            return;
        }
        let delay = backoff.delay(began.elapsed());
        tracing::info!(
            container = name,
            delay_ms = delay.as_millis() as u64,
            "container exited; restarting after backoff"
        );
        let mut watcher = cfg.lifecycle.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = watcher.wait_for(|l| *l != Lifecycle::Running) => return,
        }
        restart_count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7).map(|_| b.delay(short).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(Duration::from_secs(120)), Duration::from_secs(1));
        assert_eq!(b.delay(short), Duration::from_secs(2));
    }

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
        assert_eq!(RestartPolicy::parse(Some("Never")), RestartPolicy::Never);
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(1) && !RestartPolicy::OnFailure.restarts(0));
        assert!(!RestartPolicy::Never.restarts(137));
    }
}
