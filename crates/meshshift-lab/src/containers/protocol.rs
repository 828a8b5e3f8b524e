//! The lab's stand-in for xDS: how emulated proxies get config from an emulated istiod.
//!
//! A proxy opens a TCP connection to its discovery address (`istiod-<rev>.<ns>.svc:15012`, resolved to the
//! Service's ClusterIP, so the connection crosses the lab's service network like a real one) and sends
//! one [`ClientMessage::Hello`] line. istiod answers [`ServerMessage::Accepted`] or
//! [`ServerMessage::Rejected`] (version skew Istio does not support), then pushes a full
//! [`ServerMessage::Config`] at once and after every change, and [`ServerMessage::Ping`] every second. One
//! JSON object per line. A proxy is "connected" while pings arrive; when the connection drops it keeps its
//! last config (as Envoy does) but reports not ready.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// The config-stream port on istiod.
pub const XDS_PORT: u16 = 15012;

/// What kind of proxy connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// A sidecar next to an app.
    Sidecar,
    /// A gateway (`proxy router`).
    Router,
}

/// Proxy -> istiod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first line of a connection.
    Hello {
        /// The revision the proxy belongs to (from its discovery address).
        revision: String,
        /// The proxy's Istio version (its image tag).
        version: String,
        /// `namespace/name` of the proxy's pod.
        pod: String,
        /// Sidecar or router.
        kind: ProxyKind,
    },
}

/// A Service as proxies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP.
    pub cluster_ip: String,
    /// Ports (port, name).
    pub ports: Vec<(u16, Option<String>)>,
    /// Ports with their `targetPort` (a number, or the name of a container port), as in the Service spec.
    /// A gateway needs them: a Gateway server's `port.number` is a port of the gateway's Service, and the
    /// router listens on its target port (legacy chart: 80 -> 8080). Empty when istiod does not send them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_ports: Vec<(u16, IntOrString)>,
    /// The Service's pod selector (`spec.selector`): tells a gateway which Services are its own, and a
    /// sidecar which Service it serves (for telemetry). Empty when istiod does not send it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// The config an istiod pushes: the Istio objects its revision sees, and the Services.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// Increases with every change.
    pub generation: u64,
    /// `networking.istio.io` Gateways, as stored (JSON).
    pub gateways: Vec<serde_json::Value>,
    /// `networking.istio.io` VirtualServices, as stored (JSON).
    pub virtual_services: Vec<serde_json::Value>,
    /// Services.
    pub services: Vec<ServiceEntry>,
}

/// istiod -> proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    /// The proxy may use this istiod.
    Accepted {
        /// istiod's revision.
        revision: String,
        /// istiod's version.
        version: String,
    },
    /// The proxy may not (unsupported skew, wrong revision).
    Rejected {
        /// Why.
        reason: String,
    },
    /// A full config.
    Config(ConfigSnapshot),
    /// Liveness, every second.
    Ping,
}
