//! Waiting for restarted workloads: Deployments by kubectl's rollout-status rule (meshshift-kube), and
//! the same rule for StatefulSets and DaemonSets; then every pod of the namespace on the right proxy.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use meshshift_core::fields::ObjectRef;
use meshshift_core::proxy::detect_proxy;
use meshshift_kube::rollout::{RolloutError, wait_rollout};

use crate::context::Ctx;
use crate::error::EngineError;

/// kubectl's rule for StatefulSets (RollingUpdate): observed, all updated, all ready, one revision.
fn stateful_set_done(s: &StatefulSet) -> Result<(), String> {
    let st = s.status.clone().unwrap_or_default();
    let want = s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
    if st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0) {
        return Err("waiting for the controller to observe the update".into());
    }
    if st.ready_replicas.unwrap_or(0) < want {
        return Err(format!("{} of {want} pods ready", st.ready_replicas.unwrap_or(0)));
    }
    if st.updated_replicas.unwrap_or(0) < want || st.update_revision != st.current_revision {
        return Err(format!("{} of {want} pods updated", st.updated_replicas.unwrap_or(0)));
    }
    Ok(())
}

/// kubectl's rule for DaemonSets: observed, every scheduled pod updated and available.
fn daemon_set_done(d: &DaemonSet) -> Result<(), String> {
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Err("waiting for the controller to observe the update".into());
    }
    let want = st.desired_number_scheduled;
    if st.updated_number_scheduled.unwrap_or(0) < want {
        return Err(format!("{} of {want} pods updated", st.updated_number_scheduled.unwrap_or(0)));
    }
    if st.number_available.unwrap_or(0) < want {
        return Err(format!("{} of {want} pods available", st.number_available.unwrap_or(0)));
    }
    Ok(())
}

/// Waits until the workload `r` (Deployment, StatefulSet or DaemonSet) has rolled out.
pub async fn wait_workload(ctx: &Ctx, r: &ObjectRef) -> Result<(), EngineError> {
    let ns = r.namespace.clone().unwrap_or_default();
    let timeout = ctx.options.rollout_timeout;
    let poll = |check: Result<(), String>| check;
    let outcome = match r.kind.as_str() {
        "Deployment" => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            // A watch the apiserver ends (timeouts, restarts) is resumed until the deadline.
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match wait_rollout(&api, &ns, &r.name, left.max(Duration::from_secs(1))).await {
                    Err(RolloutError::Watch { .. }) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => return Ok(other?),
                }
            }
        }
        "StatefulSet" => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
            super::until(timeout, Duration::from_millis(200), || {
                let api = api.clone();
                async move {
                    let s = api.get(&r.name).await.map_err(|e| EngineError::api(r, e))?;
                    Ok::<_, EngineError>(poll(stateful_set_done(&s)))
                }
            })
            .await?
        }
        "DaemonSet" => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
            super::until(timeout, Duration::from_millis(200), || {
                let api = api.clone();
                async move {
                    let d = api.get(&r.name).await.map_err(|e| EngineError::api(r, e))?;
                    Ok::<_, EngineError>(poll(daemon_set_done(&d)))
                }
            })
            .await?
        }
        _ => return Err(EngineError::UnsupportedKind(r.to_string())),
    };
    outcome.map_err(|last| EngineError::Timeout(format!("{r} did not roll out within {} s: {last}", timeout.as_secs())))
}

/// Checks that every running pod of `namespace` that has a proxy runs `version` from `revision`; names
/// the first that does not.
pub async fn pods_on(ctx: &Ctx, namespace: &str, revision: &str, version: &str) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = api.list(&ListParams::default()).await.map_err(|e| format!("listing pods of {namespace}: {e}"))?;
    let mut wrong = Vec::new();
    let mut checked = 0;
    for p in &pods.items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let model = meshshift_kube::convert::pod(p);
        if let Some(info) = detect_proxy(&model.spec) {
            checked += 1;
            let (r, v) = (info.revision.unwrap_or_default(), info.version.map(|v| v.to_string()).unwrap_or_default());
            if r != revision || v != version {
                wrong.push(format!("{} ({v} from {r})", model.name));
            }
        }
    }
    match wrong.as_slice() {
        [] => {
            tracing::debug!(namespace, checked, "every proxy on the expected revision");
            Ok(())
        }
        _ => Err(format!(
            "{} pod(s) of {namespace} do not run proxy {version} from revision {revision}: {}",
            wrong.len(),
            wrong.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stateful_set_rule() {
        let s = |status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({"metadata": {"generation": 2}, "spec": {"replicas": 2, "selector": {}, "serviceName": "s", "template": {}}, "status": status})).expect("sts")
        };
        assert!(stateful_set_done(&s(json!({"replicas": 2, "observedGeneration": 1}))).is_err());
        assert!(stateful_set_done(&s(json!({"replicas": 2, "observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}))).is_err());
        assert!(stateful_set_done(&s(json!({"replicas": 2, "observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "b", "updateRevision": "b"}))).is_ok());
    }

    #[test]
    fn daemon_set_rule() {
        let d = |status: serde_json::Value| -> DaemonSet {
            serde_json::from_value(
                json!({"metadata": {"generation": 3}, "spec": {"selector": {}, "template": {}}, "status": status}),
            )
            .expect("ds")
        };
        let base = json!({"currentNumberScheduled": 3, "numberMisscheduled": 0, "desiredNumberScheduled": 3, "numberReady": 3, "observedGeneration": 3});
        let mut partial = base.clone();
        partial["updatedNumberScheduled"] = json!(2);
        partial["numberAvailable"] = json!(3);
        assert!(daemon_set_done(&d(partial)).is_err());
        let mut done = base;
        done["updatedNumberScheduled"] = json!(3);
        done["numberAvailable"] = json!(3);
        assert!(daemon_set_done(&d(done)).is_ok());
    }
}
