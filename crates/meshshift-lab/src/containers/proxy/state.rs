//! The proxy's shared state: who it is, the config it serves, whether its istiod connection is alive,
//! whether it drains, and its counters.
//!
//! Why watch channels: the xDS client writes, and several readers (readiness, router table builder,
//! request handlers) need the latest value and sometimes to wait for a change; `watch` gives both without
//! locks held across awaits.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use tokio::sync::watch;

use super::stats::Stats;
use crate::containers::protocol::{ConfigSnapshot, ProxyKind};
use crate::containers::{HEADER_PROXY, HEADER_REVISION, HEADER_VERSION};

/// Who the proxy is (fixed for its life).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Sidecar or router.
    pub kind: ProxyKind,
    /// Istio version (the image tag).
    pub version: String,
    /// Control-plane revision (from the discovery address).
    pub revision: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Workload name for telemetry (`source_workload`).
    pub workload: String,
}

impl ProxyIdentity {
    /// `namespace/name` of the pod.
    pub fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.pod_name)
    }

    /// Stamps a response with this proxy's revision, version and kind (replacing what an inner proxy set).
    pub fn stamp(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            (HEADER_REVISION, self.revision.as_str()),
            (HEADER_VERSION, self.version.as_str()),
            (HEADER_PROXY, self.kind_name()),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
    }

    /// `gateway` or `sidecar` (the `x-meshshift-proxy` header value).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ProxyKind::Router => "gateway",
            ProxyKind::Sidecar => "sidecar",
        }
    }
}

/// Why a proxy is not ready (or that it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Connected and configured.
    Ready,
    /// istiod refused this proxy.
    Rejected(String),
    /// No live istiod connection.
    NotConnected,
    /// Connected, no config yet.
    NoConfig,
    /// Terminating.
    Draining,
}

impl Readiness {
    /// Whether the proxy is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// A one-line explanation for the readiness endpoint.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Ready => "ready".into(),
            Readiness::Rejected(reason) => format!("rejected by istiod: {reason}"),
            Readiness::NotConnected => "not connected to istiod".into(),
            Readiness::NoConfig => "no config received from istiod yet".into(),
            Readiness::Draining => "draining (terminating)".into(),
        }
    }
}

/// State shared by the proxy's tasks.
#[derive(Debug)]
pub struct ProxyState {
    /// Who the proxy is.
    pub identity: ProxyIdentity,
    config: watch::Sender<Option<Arc<ConfigSnapshot>>>,
    connected: watch::Sender<bool>,
    rejected: watch::Sender<Option<String>>,
    draining: watch::Sender<bool>,
    /// Counters for `/stats/prometheus`.
    pub stats: Stats,
}

impl ProxyState {
    /// A proxy that has no config, no connection and is not draining.
    pub fn new(identity: ProxyIdentity) -> Arc<ProxyState> {
        Arc::new(ProxyState {
            identity,
            config: watch::Sender::new(None),
            connected: watch::Sender::new(false),
            rejected: watch::Sender::new(None),
            draining: watch::Sender::new(false),
            stats: Stats::default(),
        })
    }

    /// The last config received (kept when the connection is lost, as Envoy keeps its config).
    pub fn config(&self) -> Option<Arc<ConfigSnapshot>> {
        self.config.borrow().clone()
    }

    /// Follows config changes.
    pub fn subscribe_config(&self) -> watch::Receiver<Option<Arc<ConfigSnapshot>>> {
        self.config.subscribe()
    }

    /// Stores a new config.
    pub fn set_config(&self, snapshot: ConfigSnapshot) {
        self.config.send_replace(Some(Arc::new(snapshot)));
    }

    /// Records the istiod connection as alive (accepted, pinging) or lost.
    pub fn set_connected(&self, connected: bool) {
        self.connected.send_if_modified(|c| std::mem::replace(c, connected) != connected);
        if connected {
            self.rejected.send_replace(None);
        }
    }

    /// Whether the istiod connection is alive.
    pub fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Records a rejection by istiod.
    pub fn set_rejected(&self, reason: String) {
        self.set_connected(false);
        self.rejected.send_replace(Some(reason));
    }

    /// Starts draining: readiness fails and responses ask clients to close their connections.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Whether the proxy drains.
    pub fn draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// The readiness verdict, as Istio's pilot-agent gives it: a proxy becomes ready once it has received
    /// its first config from an istiod that accepted it, and stays ready (serving its last config) when
    /// the connection is lost later, until it drains. So running proxies survive the loss of their istiod,
    /// while new proxies of a revision without istiod never become ready: the seed's failure mode.
    pub fn readiness(&self) -> Readiness {
        if self.draining() {
            Readiness::Draining
        } else if self.config.borrow().is_some() {
            Readiness::Ready
        } else if let Some(reason) = self.rejected.borrow().clone() {
            Readiness::Rejected(reason)
        } else if !self.connected() {
            Readiness::NotConnected
        } else {
            Readiness::NoConfig
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ProxyIdentity {
        ProxyIdentity {
            kind: ProxyKind::Router,
            version: "1.9.7".into(),
            revision: "1-9-7".into(),
            namespace: "istio-system".into(),
            pod_name: "gw-0".into(),
            workload: "istio-ingressgateway".into(),
        }
    }

    #[test]
    fn ready_once_configured_until_draining() {
        let state = ProxyState::new(identity());
        assert_eq!(state.readiness(), Readiness::NotConnected);
        state.set_rejected("skew".into());
        assert_eq!(state.readiness(), Readiness::Rejected("skew".into()), "a rejected proxy never becomes ready");
        state.set_connected(true);
        assert_eq!(state.readiness(), Readiness::NoConfig);
        state.set_config(ConfigSnapshot::default());
        assert!(state.readiness().is_ready());
        state.set_connected(false);
        assert!(state.readiness().is_ready(), "losing istiod later keeps the proxy ready on its last config");
        assert!(state.config().is_some(), "the last config is kept");
        state.start_draining();
        assert_eq!(state.readiness(), Readiness::Draining);
    }
}
