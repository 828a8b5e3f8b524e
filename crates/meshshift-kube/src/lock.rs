//! The run lock: a `coordination.k8s.io/v1` Lease that a second `apply` sees and respects, and that
//! expires when its holder dies (no renewals). Every write is guarded by the Lease's resourceVersion, so two
//! runs racing for an expired Lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};
use meshshift_core::lock::{LeaseView, LockDecision, decide};
use serde_json::json;

/// The Lease's name.
pub const LEASE_NAME: &str = "meshshift-apply";

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("another meshshift run holds the lock ({holder}); it expires in {} s unless renewed. Wait, or stop that run", expires_in.as_secs())]
    Held {
        /// The holder's identity.
        holder: String,
        /// Time left.
        expires_in: Duration,
    },
    /// Someone else wrote the Lease between our read and our write.
    #[error("the lock changed while it was being taken; try again")]
    Raced,
    /// The API failed.
    #[error("lock Lease {namespace}/{LEASE_NAME}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// A held lock; renew it more often than `duration`, release it at the end.
#[derive(Debug)]
pub struct RunLock {
    api: Api<Lease>,
    namespace: String,
    holder: String,
    duration: Duration,
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renewed_at_ms: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.as_millisecond()),
        duration_s: spec.and_then(|s| s.lease_duration_seconds).map(i64::from).unwrap_or(0),
    }
}

impl RunLock {
    /// Takes the lock in `namespace` (which must exist) for `holder`, or says who holds it.
    pub async fn acquire(
        client: &Client,
        namespace: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<RunLock, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let api_err = |source| LockError::Api { namespace: namespace.to_owned(), source };
        let current = api.get_opt(LEASE_NAME).await.map_err(api_err)?;
        let lock = RunLock { api: api.clone(), namespace: namespace.to_owned(), holder: holder.to_owned(), duration };
        match decide(current.as_ref().map(view).as_ref(), holder, now().as_millisecond()) {
            LockDecision::Held { holder, expires_in_ms } => Err(LockError::Held {
                holder,
                expires_in: Duration::from_millis(u64::try_from(expires_in_ms).unwrap_or(0)),
            }),
            LockDecision::Create => {
                let lease: Lease = serde_json::from_value(
                    json!({"metadata": {"name": LEASE_NAME, "namespace": namespace}}),
                )
                .map_err(|e| LockError::Api { namespace: namespace.to_owned(), source: kube::Error::SerdeError(e) })?;
                let lease = lock.stamped(lease);
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(lock),
                    Err(kube::Error::Api(s)) if s.code == 409 => Err(LockError::Raced),
                    Err(e) => Err(api_err(e)),
                }
            }
            LockDecision::Renew | LockDecision::TakeOver { .. } => {
                let lease = current.ok_or(LockError::Raced)?;
                lock.write(lease).await?;
                Ok(lock)
            }
        }
    }

    fn stamped(&self, mut lease: Lease) -> Lease {
        let spec = lease.spec.get_or_insert_with(Default::default);
        let t = now();
        spec.holder_identity = Some(self.holder.clone());
        spec.lease_duration_seconds = Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX));
        spec.renew_time = Some(MicroTime(t));
        if spec.acquire_time.is_none() {
            spec.acquire_time = Some(MicroTime(t));
        }
        lease
    }

    /// Replaces the Lease, guarded by the resourceVersion it carries.
    async fn write(&self, lease: Lease) -> Result<(), LockError> {
        let lease = self.stamped(lease);
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(LockError::Raced),
            Err(source) => Err(LockError::Api { namespace: self.namespace.clone(), source }),
        }
    }

    /// Renews the lock; fails if someone else took it meanwhile.
    pub async fn renew(&self) -> Result<(), LockError> {
        let current = self
            .api
            .get(LEASE_NAME)
            .await
            .map_err(|source| LockError::Api { namespace: self.namespace.clone(), source })?;
        match decide(Some(&view(&current)), &self.holder, now().as_millisecond()) {
            LockDecision::Renew => self.write(current).await,
            LockDecision::Held { holder, expires_in_ms } => Err(LockError::Held {
                holder,
                expires_in: Duration::from_millis(u64::try_from(expires_in_ms).unwrap_or(0)),
            }),
            LockDecision::Create | LockDecision::TakeOver { .. } => Err(LockError::Raced),
        }
    }

    /// Releases the lock (clears the holder, so the next run need not wait for expiry). It reads the
    /// Lease afresh, so it may be called again after a failure (a lock no longer held is released).
    pub async fn release(&self) -> Result<(), LockError> {
        let mut current = self
            .api
            .get(LEASE_NAME)
            .await
            .map_err(|source| LockError::Api { namespace: self.namespace.clone(), source })?;
        if view(&current).holder.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        if let Some(spec) = current.spec.as_mut() {
            spec.holder_identity = None;
        }
        match self.api.replace(LEASE_NAME, &PostParams::default(), &current).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(LockError::Raced),
            Err(source) => Err(LockError::Api { namespace: self.namespace.clone(), source }),
        }
    }
}
