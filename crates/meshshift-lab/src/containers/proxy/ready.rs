//! The readiness endpoint `:15021/healthz/ready` (pilot-agent's status port).
//!
//! Why it matters: the kubelet (the lab's node agent) probes it, so it decides whether the pod is an
//! endpoint of its Services. It answers 200 only while the proxy is connected to istiod AND has a config AND
//! is not draining: a proxy whose istiod is gone keeps serving with its last config but is not ready, so new
//! pods of a dead revision never become ready (the seed's failure mode 1), and a terminating proxy leaves the
//! endpoints before it stops serving.

use std::sync::Arc;

use futures::FutureExt;
use http::StatusCode;

use super::serve::{Handler, text};
use super::state::ProxyState;

/// The status port.
pub const READY_PORT: u16 = 15021;
/// The readiness path.
pub const READY_PATH: &str = "/healthz/ready";

/// The status port's handler.
pub fn handler(state: Arc<ProxyState>) -> Handler {
    Arc::new(move |request| {
        let state = state.clone();
        async move {
            if request.uri().path() != READY_PATH {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            let readiness = state.readiness();
            let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            text(status, format!("{}\n", readiness.describe()))
        }
        .boxed()
    })
}
