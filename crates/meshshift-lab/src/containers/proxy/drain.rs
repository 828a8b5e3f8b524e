//! Draining on termination, as pilot-agent does it.
//!
//! When the pod is deleted the proxy fails readiness at once but keeps accepting and serving for
//! `terminationDrainDuration` (default 5 s), answering `Connection: close` so clients move off; then it
//! closes its listeners and exits. Why it matters: endpoints and load balancers learn about the deletion
//! late, so a drain shorter than that propagation drops requests (the seed's failure mode: blue's drain too
//! short). With `EXIT_ON_ZERO_ACTIVE_CONNECTIONS=true` the drain duration becomes a minimum, after which
//! the proxy waits for its downstream connections to reach zero. Everything stays within the pod's grace
//! period; `Killed` ends at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::proxy_config::{field, parse_duration};
use super::state::ProxyState;
use crate::containers::{ContainerContext, Lifecycle};

/// Istio's default `terminationDrainDuration`.
pub const DEFAULT_DRAIN_DURATION: Duration = Duration::from_secs(5);
/// The pod annotation overriding the mesh's proxy config.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
/// How often the zero-connections wait looks.
const ZERO_CONNECTIONS_POLL: Duration = Duration::from_millis(200);

/// How this proxy drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSettings {
    /// How long to keep serving after termination starts.
    pub duration: Duration,
    /// Keep serving after `duration` until no downstream connection is left.
    pub exit_on_zero_active_connections: bool,
}

impl DrainSettings {
    /// From the pod spec: annotation `proxy.istio.io/config`, else env `PROXY_CONFIG` (the injector merges
    /// the annotation into it), else env `TERMINATION_DRAIN_DURATION_SECONDS`, else 5 s; env
    /// `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`.
    pub fn from_spec(
        annotation: Option<&str>,
        proxy_config: Option<&str>,
        drain_seconds: Option<&str>,
        exit_on_zero: Option<&str>,
    ) -> DrainSettings {
        let configured = [annotation, proxy_config]
            .into_iter()
            .flatten()
            .find_map(|text| field(text, "terminationDrainDuration").and_then(|d| parse_duration(&d)));
        let from_env = drain_seconds.and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs);
        DrainSettings {
            duration: configured.or(from_env).unwrap_or(DEFAULT_DRAIN_DURATION),
            exit_on_zero_active_connections: exit_on_zero.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }

    /// The settings of the container in `ctx`.
    pub fn from_context(ctx: &ContainerContext) -> DrainSettings {
        let annotation = ctx.pod.metadata.annotations.as_ref().and_then(|a| a.get(PROXY_CONFIG_ANNOTATION));
        DrainSettings::from_spec(
            annotation.map(String::as_str),
            ctx.env("PROXY_CONFIG").as_deref(),
            ctx.env("TERMINATION_DRAIN_DURATION_SECONDS").as_deref(),
            ctx.env("EXIT_ON_ZERO_ACTIVE_CONNECTIONS").as_deref(),
        )
    }
}

/// What ended the serving phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Killed (or the node agent went away): stop now.
    Killed,
    /// The drain is over: close the listeners; connections may finish until `deadline` (the end of the
    /// grace period).
    StopListening {
        /// When the grace period ends.
        deadline: Instant,
    },
}

/// Waits until the pod terminates, drains (readiness fails, `Connection: close`), and says when to stop.
pub async fn drain(lifecycle: &mut watch::Receiver<Lifecycle>, state: &ProxyState, settings: DrainSettings) -> Ending {
    let deadline = match lifecycle.wait_for(|l| *l != Lifecycle::Running).await.map(|l| *l) {
        Ok(Lifecycle::Terminating { deadline }) => Instant::from_std(deadline),
        Ok(_) | Err(_) => return Ending::Killed,
    };
    state.start_draining();
    let drain_end = (Instant::now() + settings.duration).min(deadline);
    tracing::info!(
        pod = %state.identity.pod(),
        drain_ms = drain_end.saturating_duration_since(Instant::now()).as_millis() as u64,
        "terminating: draining"
    );
    tokio::select! {
        () = tokio::time::sleep_until(drain_end) => {}
        () = killed(lifecycle) => return Ending::Killed,
    }
    if settings.exit_on_zero_active_connections {
        let zero = async {
            while state.stats.active_connections() > 0 && Instant::now() < deadline {
                tokio::time::sleep(ZERO_CONNECTIONS_POLL).await;
            }
        };
        tokio::select! {
            () = zero => {}
            () = killed(lifecycle) => return Ending::Killed,
        }
    }
    tracing::info!(pod = %state.identity.pod(), active = state.stats.active_connections(), "drain over: closing listeners");
    Ending::StopListening { deadline }
}

/// Resolves when the container is killed or its lifecycle sender is gone.
pub async fn killed(lifecycle: &mut watch::Receiver<Lifecycle>) {
    let _ = lifecycle.wait_for(|l| *l == Lifecycle::Killed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_duration_sources_in_order() {
        let d = |a, p, e| DrainSettings::from_spec(a, p, e, None).duration;
        assert_eq!(d(None, None, None), Duration::from_secs(5));
        assert_eq!(d(None, None, Some("12")), Duration::from_secs(12));
        assert_eq!(d(None, Some(r#"{"terminationDrainDuration":"9s"}"#), Some("12")), Duration::from_secs(9));
        assert_eq!(
            d(Some("terminationDrainDuration: 30s\n"), Some(r#"{"terminationDrainDuration":"9s"}"#), None),
            Duration::from_secs(30)
        );
        assert_eq!(d(Some("{ terminationDrainDuration: 1m }"), None, None), Duration::from_secs(60));
        assert_eq!(d(Some("concurrency: 2"), Some("{}"), None), Duration::from_secs(5), "unrelated config: default");
        assert!(DrainSettings::from_spec(None, None, None, Some("true")).exit_on_zero_active_connections);
        assert!(!DrainSettings::from_spec(None, None, None, Some("false")).exit_on_zero_active_connections);
    }
}
