//! The injection and validation webhooks: HTTPS on the pod IP, port 15017 (the istiod Service maps 443 to
//! it; with `--enable-aggregator-routing` the apiserver dials the endpoint pod IP and verifies the
//! certificate against the webhook's `caBundle` for `<service>.<namespace>.svc`).
//!
//! The serving certificate is swappable: when a revision tag appears, its `istiod-revision-tag-<tag>`
//! Service name joins the certificate's names, without restarting the listener.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::admission::{self, Decision};
use super::ca::{CaError, RootCa, ServingCert};
use super::http::{Handler, Reply};
use super::identity::Istiod;
use super::patcher::KnownTags;
use super::ready::Stats;

/// The webhook port on the pod.
pub const WEBHOOK_PORT: u16 = 15017;

/// Why the TLS side cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the key or the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A new certificate could not be issued.
    #[error("serving certificate: {0}")]
    Ca(#[from] CaError),
}

/// The current serving certificate, swapped when the names change.
#[derive(Debug)]
pub struct ServingCerts {
    current: RwLock<Arc<CertifiedKey>>,
}

fn certified(cert: ServingCert) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = rustls::crypto::ring::sign::any_supported_type(&cert.key)?;
    Ok(Arc::new(CertifiedKey::new(cert.chain, key)))
}

impl ServingCerts {
    /// Starts with `cert`.
    pub fn new(cert: ServingCert) -> Result<ServingCerts, TlsError> {
        Ok(ServingCerts { current: RwLock::new(certified(cert)?) })
    }

    /// Serves `cert` from the next handshake on.
    pub fn replace(&self, cert: ServingCert) -> Result<(), TlsError> {
        let next = certified(cert)?;
        match self.current.write() {
            Ok(mut slot) => *slot = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(cert) => Some(cert.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

/// A TLS acceptor serving `certs`, offering h2 and http/1.1.
pub fn acceptor(certs: Arc<ServingCerts>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Which webhook a path names: `/inject` (and `/inject/...`, e.g. `/inject/cluster/c1/net/n1`) or
/// `/validate` (and `/validate/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Sidecar injection.
    Inject,
    /// Config validation (always allowed here).
    Validate,
}

/// Routes a request path.
pub fn endpoint(path: &str) -> Option<Endpoint> {
    let under = |base: &str| path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
    if under("/inject") {
        Some(Endpoint::Inject)
    } else if under("/validate") {
        Some(Endpoint::Validate)
    } else {
        None
    }
}

/// The request handler for the webhook port.
pub fn handler(istiod: Arc<Istiod>, stats: Arc<Stats>) -> Handler {
    Arc::new(move |method: &Method, path: &str, body: Bytes| {
        let Some(which) = endpoint(path) else {
            return Reply::text(StatusCode::NOT_FOUND, "no such webhook\n");
        };
        if method != Method::POST {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
        }
        let result = match which {
            Endpoint::Inject => admission::respond(&body, |request| {
                let decision = admission::decide_inject(&istiod, request);
                stats.count_injection(&decision);
                tracing::info!(
                    namespace = request.namespace.as_deref().unwrap_or_default(),
                    dry_run = request.dry_run.unwrap_or(false),
                    outcome = match &decision {
                        Decision::Patch(_) => "injected",
                        Decision::Allow => "skipped",
                        Decision::Deny(_) => "denied",
                    },
                    revision = %istiod.revision,
                    "injection request"
                );
                decision
            }),
            Endpoint::Validate => admission::respond(&body, |request| {
                stats.count_validation();
                tracing::debug!(namespace = request.namespace.as_deref().unwrap_or_default(), "validation request");
                Decision::Allow
            }),
        };
        match result {
            Ok(review) => Reply::json(&review),
            Err(err) => {
                tracing::warn!(%err, path, "bad admission request");
                Reply::text(StatusCode::BAD_REQUEST, format!("{err}\n"))
            }
        }
    })
}

/// Reissues the serving certificate whenever the tags pointing at this revision change the names it
/// must cover; returns when the tag channel closes, or on a signing failure.
pub async fn follow_tags(
    ca: Arc<RootCa>,
    istiod: Arc<Istiod>,
    certs: Arc<ServingCerts>,
    mut tags: watch::Receiver<KnownTags>,
    mut issued_for: Vec<String>,
) -> Result<(), TlsError> {
    while tags.changed().await.is_ok() {
        let known = tags.borrow_and_update().clone().unwrap_or_default();
        let names = istiod.dns_names(&known);
        if names != issued_for {
            certs.replace(ca.issue_serving(&names)?)?;
            tracing::info!(revision = %istiod.revision, names = names.len(), "reissued the webhook serving certificate");
            issued_for = names;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_webhooks() {
        assert_eq!(endpoint("/inject"), Some(Endpoint::Inject));
        assert_eq!(endpoint("/inject/cluster/c1/net/n1"), Some(Endpoint::Inject));
        assert_eq!(endpoint("/validate"), Some(Endpoint::Validate));
        assert_eq!(endpoint("/validate/"), Some(Endpoint::Validate));
        assert_eq!(endpoint("/injector"), None);
        assert_eq!(endpoint("/"), None);
    }

    #[test]
    fn the_handler_answers_reviews_and_refuses_other_requests() {
        let istiod = Arc::new(Istiod {
            version: meshshift_core::version::IstioVersion::new(1, 9, 7),
            revision: "1-9-7".into(),
            namespace: "istio-system".into(),
        });
        let stats = Arc::new(Stats::default());
        let handle = handler(istiod, stats.clone());
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1beta1",
            "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "apps",
                        "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"}]}}}
        });
        let reply = handle(&Method::POST, "/inject", Bytes::from(review.to_string()));
        assert_eq!(reply.status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        assert_eq!(stats.injections(), 1);
        let reply = handle(&Method::POST, "/validate", Bytes::from(review.to_string()));
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(handle(&Method::GET, "/inject", Bytes::new()).status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(handle(&Method::POST, "/other", Bytes::new()).status, StatusCode::NOT_FOUND);
        assert_eq!(handle(&Method::POST, "/inject", Bytes::from_static(b"{")).status, StatusCode::BAD_REQUEST);
    }
}
