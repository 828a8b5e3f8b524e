//! Waiting for Deployments to finish rolling out, with `kubectl rollout status`'s rule.
//!
//! kube's `is_deployment_completed` ignores `observedGeneration` and reports the previous rollout as
//! complete right after a restart (rust-kube.md), so meshshift decides with the kubectl rule as a pure
//! function, and waits on a watch (not a polling loop) with a deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition};

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Still going, with kubectl's progress message.
    Progressing(String),
    /// The deployment controller gave up (`ProgressDeadlineExceeded`).
    Failed(String),
}

/// kubectl's rule: observedGeneration caught up, all replicas updated, no old replicas left, all
/// updated replicas available; `ProgressDeadlineExceeded` fails.
pub fn rollout_status(d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return Rollout::Progressing("waiting for the deployment controller".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Progressing("waiting for the deployment spec update to be observed".into());
    }
    let deadline = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if let Some(c) = deadline {
        return Rollout::Failed(format!("progress deadline exceeded: {}", c.message.clone().unwrap_or_default()));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        Rollout::Progressing(format!("{updated} of {want} updated replicas are available"))
    } else if replicas > updated {
        Rollout::Progressing(format!("{} old replicas are pending termination", replicas - updated))
    } else if available < updated {
        Rollout::Progressing(format!("{available} of {updated} updated replicas are available"))
    } else {
        Rollout::Complete
    }
}

/// Why waiting for a rollout ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The deadline passed; the last progress message says where it stood.
    #[error("deployment {namespace}/{name} did not finish rolling out within {seconds} s: {last}")]
    Timeout {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The deadline in seconds.
        seconds: u64,
        /// The last progress message.
        last: String,
    },
    /// The rollout failed.
    #[error("deployment {namespace}/{name} failed to roll out: {reason}")]
    Failed {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The watch failed.
    #[error("watching deployment {namespace}/{name}: {source}")]
    Watch {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The error.
        #[source]
        source: kube::runtime::wait::Error,
    },
}

fn settled() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| d.is_some_and(|d| !matches!(rollout_status(d), Rollout::Progressing(_)))
}

/// Waits until the Deployment's rollout completes (or fails), at most `timeout`.
pub async fn wait_rollout(
    api: &Api<Deployment>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), RolloutError> {
    let outcome = tokio::time::timeout(timeout, await_condition(api.clone(), name, settled())).await;
    let err_ns = || namespace.to_owned();
    match outcome {
        Ok(Ok(Some(d))) => match rollout_status(&d) {
            Rollout::Failed(reason) => Err(RolloutError::Failed { namespace: err_ns(), name: name.to_owned(), reason }),
            _ => Ok(()),
        },
        Ok(Ok(None)) => Ok(()),
        Ok(Err(source)) => Err(RolloutError::Watch { namespace: err_ns(), name: name.to_owned(), source }),
        Err(_) => {
            let last = match api.get_opt(name).await {
                Ok(Some(d)) => match rollout_status(&d) {
                    Rollout::Progressing(m) | Rollout::Failed(m) => m,
                    Rollout::Complete => "complete".to_owned(),
                },
                Ok(None) => "the deployment does not exist".to_owned(),
                Err(e) => e.to_string(),
            };
            Err(RolloutError::Timeout { namespace: err_ns(), name: name.to_owned(), seconds: timeout.as_secs(), last })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("deployment")
    }

    #[test]
    fn a_restart_not_yet_observed_is_not_complete() {
        let d = dep(2, json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}));
        assert!(matches!(rollout_status(&d), Rollout::Progressing(m) if m.contains("observed")));
    }

    #[test]
    fn old_replicas_left_is_not_complete() {
        let d = dep(2, json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}));
        assert_eq!(rollout_status(&d), Rollout::Progressing("1 old replicas are pending termination".into()));
    }

    #[test]
    fn unavailable_updated_replicas_are_not_complete() {
        let d = dep(2, json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}));
        assert_eq!(rollout_status(&d), Rollout::Progressing("1 of 2 updated replicas are available".into()));
        let d = dep(2, json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}));
        assert_eq!(rollout_status(&d), Rollout::Progressing("1 of 2 updated replicas are available".into()));
    }

    #[test]
    fn complete_and_failed() {
        let d = dep(2, json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}));
        assert_eq!(rollout_status(&d), Rollout::Complete);
        let d = dep(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet x has timed out"}]}),
        );
        assert!(matches!(rollout_status(&d), Rollout::Failed(m) if m.contains("timed out")));
    }
}
