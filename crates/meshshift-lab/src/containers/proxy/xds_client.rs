//! The proxy's connection to istiod (the lab's stand-in for xDS, see [`crate::containers::protocol`]).
//!
//! Behaviour that upgrades depend on, as in Envoy/pilot-agent:
//! - the discovery address comes from the pod spec the injector (or chart) wrote (`PROXY_CONFIG`'s
//!   `discoveryAddress`, else `CA_ADDR`, else the revision's default Service), and is resolved as a
//!   ClusterIP, so the connection crosses the lab's kube-proxy emulation like a real one;
//! - the connection is alive while pings (or any message) arrive: [`PING_TIMEOUT`] without one is a loss;
//! - on loss the proxy keeps its last config and keeps serving, reports not ready, and reconnects with
//!   back-off;
//! - a rejection (version skew beyond Istio's support, wrong revision) keeps the proxy unready, is logged
//!   with its reason, and is retried slowly.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::proxy_config;
use super::state::ProxyState;
use crate::containers::protocol::{ClientMessage, ServerMessage, XDS_PORT};
use crate::containers::{ContainerContext, ServiceResolver};

/// A connection without any message for this long is lost (istiod pings every second).
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnection delay; doubles up to [`MAX_BACKOFF`], and starts over after an accepted session.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnection delay after a loss.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Delay before trying again after a rejection.
const REJECTED_RETRY: Duration = Duration::from_secs(5);
/// The namespace istiod lives in when the pod spec does not say.
const ISTIO_NAMESPACE: &str = "istio-system";

/// Where istiod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryAddress {
    /// `istiod-1-9-7.istio-system.svc`.
    pub host: String,
    /// 15012.
    pub port: u16,
}

impl std::fmt::Display for DiscoveryAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl DiscoveryAddress {
    /// Splits `host:port` (port defaults to 15012).
    pub fn parse(text: &str) -> DiscoveryAddress {
        let text = text.trim();
        match text.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => {
                DiscoveryAddress { host: host.to_owned(), port: port.parse().unwrap_or(XDS_PORT) }
            }
            _ => DiscoveryAddress { host: text.to_owned(), port: XDS_PORT },
        }
    }

    /// The address the pod spec gives: `PROXY_CONFIG`'s `discoveryAddress`, else `CA_ADDR`, else
    /// `istiod[-<istio.io/rev label>].istio-system.svc:15012`.
    pub fn from_spec(proxy_config: Option<&str>, ca_addr: Option<&str>, rev_label: Option<&str>) -> DiscoveryAddress {
        if let Some(address) = proxy_config.and_then(|c| proxy_config::field(c, "discoveryAddress")) {
            return DiscoveryAddress::parse(&address);
        }
        if let Some(address) = ca_addr.filter(|a| !a.trim().is_empty()) {
            return DiscoveryAddress::parse(address);
        }
        let service = match rev_label {
            Some(rev) if !rev.is_empty() && rev != "default" => format!("istiod-{rev}"),
            _ => "istiod".to_owned(),
        };
        DiscoveryAddress { host: format!("{service}.{ISTIO_NAMESPACE}.svc"), port: XDS_PORT }
    }

    /// The address of the container in `ctx`.
    pub fn from_context(ctx: &ContainerContext) -> DiscoveryAddress {
        let rev_label = ctx.pod.metadata.labels.as_ref().and_then(|l| l.get("istio.io/rev")).map(String::as_str);
        Self::from_spec(ctx.env("PROXY_CONFIG").as_deref(), ctx.env("CA_ADDR").as_deref(), rev_label)
    }

    /// The revision this istiod serves (`istiod-1-9-7` -> `1-9-7`, `istiod` -> `default`), if the host is
    /// a revision's Service.
    pub fn revision(&self) -> Option<String> {
        meshshift_core::proxy::revision_from_istiod_host(&self.host)
    }
}

/// How a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The Service does not resolve (no such istiod Service).
    #[error("{0} does not resolve to a Service")]
    Unresolved(DiscoveryAddress),
    /// Connecting failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection broke, closed or went silent.
    #[error("connection lost after it was {}: {reason}", if *.accepted { "accepted" } else { "opened" })]
    Lost { accepted: bool, reason: String },
    /// istiod refused the proxy.
    #[error("rejected by istiod: {0}")]
    Rejected(String),
}

/// Runs the client forever: connect, hello, apply configs, reconnect.
pub async fn run(
    address: DiscoveryAddress,
    hello: ClientMessage,
    namespace: String,
    resolve: ServiceResolver,
    state: Arc<ProxyState>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut last_error = String::new();
    loop {
        let end = session(&address, &hello, &namespace, &resolve, &state).await;
        state.set_connected(false);
        let delay = match &end {
            SessionEnd::Rejected(reason) => {
                tracing::warn!(pod = %state.identity.pod(), %address, %reason, "istiod rejected the proxy; it stays unready");
                state.set_rejected(reason.clone());
                REJECTED_RETRY
            }
            SessionEnd::Lost { accepted: true, .. } => {
                tracing::warn!(pod = %state.identity.pod(), %address, error = %end, "istiod connection lost; serving the last config");
                backoff = MIN_BACKOFF;
                backoff
            }
            _ => {
                // Repeated identical failures (istiod not there yet) are logged once, then at debug.
                let text = end.to_string();
                if text != last_error {
                    tracing::info!(pod = %state.identity.pod(), error = %text, "cannot reach istiod; retrying");
                } else {
                    tracing::debug!(pod = %state.identity.pod(), error = %text, "cannot reach istiod; retrying");
                }
                last_error = text;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::time::sleep(delay).await;
    }
}

async fn session(
    address: &DiscoveryAddress,
    hello: &ClientMessage,
    namespace: &str,
    resolve: &ServiceResolver,
    state: &ProxyState,
) -> SessionEnd {
    let Some(addr) = resolve(namespace, &address.host, address.port) else {
        return SessionEnd::Unresolved(address.clone());
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return SessionEnd::Connect { addr: addr.to_string(), reason: err.to_string() },
        Err(_) => return SessionEnd::Connect { addr: addr.to_string(), reason: "timed out".into() },
    };
    let (read, mut write) = stream.into_split();
    let lost = |accepted: bool, reason: String| SessionEnd::Lost { accepted, reason };
    let mut line = match serde_json::to_string(hello) {
        Ok(line) => line,
        Err(err) => return lost(false, format!("cannot encode hello: {err}")),
    };
    line.push('\n');
    if let Err(err) = write.write_all(line.as_bytes()).await {
        return lost(false, format!("sending hello: {err}"));
    }
    let mut reader = BufReader::new(read);
    let mut accepted = false;
    loop {
        let mut line = String::new();
        match tokio::time::timeout(PING_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => return lost(accepted, format!("no message for {} s", PING_TIMEOUT.as_secs())),
            Ok(Err(err)) => return lost(accepted, err.to_string()),
            Ok(Ok(0)) => return lost(accepted, "closed by istiod".into()),
            Ok(Ok(_)) => {}
        }
        let message: ServerMessage = match serde_json::from_str(line.trim()) {
            Ok(message) => message,
            Err(err) => {
                // A newer istiod may send messages this proxy does not know: skip them.
                tracing::debug!(%err, "ignoring an unknown message from istiod");
                continue;
            }
        };
        match message {
            ServerMessage::Accepted { revision, version } => {
                tracing::info!(pod = %state.identity.pod(), %addr, %revision, %version, "connected to istiod");
                accepted = true;
                state.set_connected(true);
            }
            ServerMessage::Rejected { reason } => return SessionEnd::Rejected(reason),
            ServerMessage::Config(snapshot) if accepted => {
                tracing::debug!(pod = %state.identity.pod(), generation = snapshot.generation, "config received");
                state.set_config(snapshot);
            }
            ServerMessage::Config(_) => tracing::debug!("ignoring a config sent before Accepted"),
            ServerMessage::Ping => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_address_precedence() {
        let json = r#"{"discoveryAddress":"istiod-1-10-6.istio-system.svc:15012"}"#;
        let a = DiscoveryAddress::from_spec(Some(json), Some("istiod.istio-system.svc:15012"), Some("x"));
        assert_eq!(a.to_string(), "istiod-1-10-6.istio-system.svc:15012");
        assert_eq!(a.revision().as_deref(), Some("1-10-6"));
        let yaml = "discoveryAddress: istiod-canary.istio-system.svc:15012\n";
        assert_eq!(DiscoveryAddress::from_spec(Some(yaml), None, None).revision().as_deref(), Some("canary"));
        // The injector's `{}` (hello.yaml.injected): CA_ADDR decides.
        let a = DiscoveryAddress::from_spec(Some("{}\n"), Some("istiod.istio-system.svc:15012"), None);
        assert_eq!(
            (a.host.as_str(), a.port, a.revision().as_deref()),
            ("istiod.istio-system.svc", 15012, Some("default"))
        );
        let a = DiscoveryAddress::from_spec(None, None, Some("1-9-7"));
        assert_eq!(a.to_string(), "istiod-1-9-7.istio-system.svc:15012");
        assert_eq!(
            DiscoveryAddress::from_spec(None, None, Some("default")).to_string(),
            "istiod.istio-system.svc:15012"
        );
        assert_eq!(DiscoveryAddress::parse("istiod.istio-system.svc").port, 15012);
    }
}
