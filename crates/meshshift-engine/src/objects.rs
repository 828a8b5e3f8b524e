//! Any object the engine touches, by `Kind/namespace/name`: read, create, replace, patch, delete.
//!
//! The engine handles a small fixed set of kinds, so they are a table rather than a discovery round trip
//! per object; `ApiResource` + `DynamicObject` keep one code path for all of them.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshshift_core::fields::{Field, ObjectRef};
use serde_json::Value;

use crate::error::EngineError;

/// Attempts of a guarded write whose resourceVersion moved under it for unrelated reasons (status updates).
const WRITE_ATTEMPTS: usize = 8;

fn resource(kind: &str) -> Option<(ApiResource, bool)> {
    let (group, version, plural, namespaced) = match kind {
        "Namespace" => ("", "v1", "namespaces", false),
        "Service" => ("", "v1", "services", true),
        "ConfigMap" => ("", "v1", "configmaps", true),
        "ServiceAccount" => ("", "v1", "serviceaccounts", true),
        "Secret" => ("", "v1", "secrets", true),
        "Endpoints" => ("", "v1", "endpoints", true),
        "Deployment" => ("apps", "v1", "deployments", true),
        "StatefulSet" => ("apps", "v1", "statefulsets", true),
        "DaemonSet" => ("apps", "v1", "daemonsets", true),
        "MutatingWebhookConfiguration" => {
            ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", false)
        }
        "ValidatingWebhookConfiguration" => {
            ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", false)
        }
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings", true),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles", false),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", false),
        "PodDisruptionBudget" => ("policy", "v1beta1", "poddisruptionbudgets", true),
        "HorizontalPodAutoscaler" => ("autoscaling", "v1", "horizontalpodautoscalers", true),
        "IstioOperator" => ("install.istio.io", "v1alpha1", "istiooperators", true),
        _ => return None,
    };
    Some((ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural), namespaced))
}

/// Reads and writes objects by reference.
#[derive(Clone)]
pub struct Objects {
    client: Client,
}

impl Objects {
    /// Over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, r: &ObjectRef) -> Result<Api<DynamicObject>, EngineError> {
        let (ar, namespaced) = resource(&r.kind).ok_or_else(|| EngineError::UnsupportedKind(r.to_string()))?;
        Ok(match (&r.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (None, false) => Api::all_with(self.client.clone(), &ar),
            _ => return Err(EngineError::UnsupportedKind(r.to_string())),
        })
    }

    /// The object as JSON, `None` when absent.
    pub async fn get(&self, r: &ObjectRef) -> Result<Option<Value>, EngineError> {
        let found = self.api(r)?.get_opt(&r.name).await.map_err(|e| EngineError::api(r, e))?;
        Ok(found.map(|o| with_types(r, serde_json::to_value(o).unwrap_or(Value::Null))))
    }

    /// Creates `obj`, or replaces the existing object with it.
    pub async fn put(&self, r: &ObjectRef, obj: &Value) -> Result<(), EngineError> {
        let api = self.api(r)?;
        let mut dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| EngineError::Invalid(format!("{r}: {e}")))?;
        dynamic.metadata.resource_version = None;
        match api.create(&PostParams::default(), &dynamic).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                for _ in 0..WRITE_ATTEMPTS {
                    let current = api.get(&r.name).await.map_err(|e| EngineError::api(r, e))?;
                    dynamic.metadata.resource_version = current.metadata.resource_version.clone();
                    keep_allocated(&r.kind, &mut dynamic.data, &current.data);
                    match api.replace(&r.name, &PostParams::default(), &dynamic).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(EngineError::api(r, e)),
                    }
                }
                Err(EngineError::Contended(r.to_string()))
            }
            Err(e) => Err(EngineError::api(r, e)),
        }
    }

    /// Deletes the object (absent is fine), waiting until it is gone.
    pub async fn delete(&self, r: &ObjectRef) -> Result<(), EngineError> {
        let api = self.api(r)?;
        match api.delete(&r.name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(EngineError::api(r, e)),
        }
        for _ in 0..600 {
            if api.get_opt(&r.name).await.map_err(|e| EngineError::api(r, e))?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EngineError::Timeout(format!("{r} was not deleted within 60 s")))
    }

    /// Sets fields of one object from their `expected` values to their `target` values in one write (a
    /// namespace's `istio.io/rev` is added and `istio-injection` removed together, so no pod is admitted
    /// between the two). Fields already at their target are skipped; a field at neither value was changed
    /// by someone else and nothing is written ([`EngineError::ConcurrentEdit`]). The write is guarded by
    /// the resourceVersion the values were checked at.
    pub async fn set_fields(&self, r: &ObjectRef, fields: &[FieldChange]) -> Result<(), EngineError> {
        let api = self.api(r)?;
        for _ in 0..WRITE_ATTEMPTS {
            let obj = self.get(r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
            let mut ops: Vec<Value> = Vec::new();
            for f in fields {
                let current = f.field.read(&obj);
                if current == f.target {
                    continue;
                }
                if current != f.expected {
                    return Err(EngineError::ConcurrentEdit {
                        object: r.to_string(),
                        field: f.field.to_string(),
                        expected: f.expected.clone(),
                        found: current,
                    });
                }
                let mut field_ops =
                    f.field.set(&obj, f.target.as_deref()).map_err(|e| EngineError::Invalid(e.to_string()))?;
                // One resourceVersion test leads the whole patch.
                if !ops.is_empty() {
                    field_ops.remove(0);
                }
                // Two fields under one missing map must not both create it.
                field_ops.retain(|op| !(op["value"] == serde_json::json!({}) && ops.contains(op)));
                ops.extend(field_ops);
            }
            if ops.is_empty() {
                return Ok(());
            }
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(|e| EngineError::Invalid(e.to_string()))?;
            match api.patch(&r.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
                Ok(_) => return Ok(()),
                // The resourceVersion test failed (422) or the write raced (409): read again and re-check.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => continue,
                Err(e) => return Err(EngineError::api(r, e)),
            }
        }
        Err(EngineError::Contended(r.to_string()))
    }

    /// Lists objects of `kind` (in `namespace`, or everywhere) as JSON.
    pub async fn list(&self, kind: &str, namespace: Option<&str>, labels: &str) -> Result<Vec<Value>, EngineError> {
        let (ar, namespaced) = resource(kind).ok_or_else(|| EngineError::UnsupportedKind(kind.to_owned()))?;
        let api: Api<DynamicObject> = match (namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        let lp = kube::api::ListParams::default().labels(labels);
        let list = api.list(&lp).await.map_err(|e| EngineError::api_about(format!("list {kind}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| {
                let r = ObjectRef {
                    kind: kind.to_owned(),
                    namespace: o.metadata.namespace.clone(),
                    name: o.metadata.name.clone()?,
                };
                Some(with_types(&r, serde_json::to_value(o).ok()?))
            })
            .collect())
    }
}

/// One field to move from `expected` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field.
    pub field: Field,
    /// Its value now, as recorded.
    pub expected: Option<String>,
    /// The value to write.
    pub target: Option<String>,
}

/// Fields the apiserver allocated and will not let a replace unset: a Service's cluster IPs and node
/// ports. A resumed run re-applying an object it created keeps them.
fn keep_allocated(kind: &str, desired: &mut Value, current: &Value) {
    if kind != "Service" {
        return;
    }
    for key in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
        if desired["spec"].get(key).is_none()
            && let Some(v) = current["spec"].get(key)
        {
            desired["spec"][key] = v.clone();
        }
    }
    let current_ports = current["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for p in desired["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if p.get("nodePort").is_none()
            && let Some(np) = current_ports.iter().find(|c| c["port"] == p["port"]).and_then(|c| c.get("nodePort"))
        {
            p["nodePort"] = np.clone();
        }
    }
}

/// `DynamicObject` serialises without `apiVersion`/`kind` when the server omitted them; put them back.
fn with_types(r: &ObjectRef, mut v: Value) -> Value {
    if let Some((ar, _)) = resource(&r.kind) {
        v["apiVersion"] = Value::String(ar.api_version);
        v["kind"] = Value::String(ar.kind);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_replaced_service_keeps_what_the_apiserver_allocated() {
        let mut desired = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let current = json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 80, "nodePort": 31000}]}});
        keep_allocated("Service", &mut desired, &current);
        assert_eq!(desired["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(desired["spec"]["ports"][0]["nodePort"], 31000);
        let mut deployment = json!({"spec": {}});
        keep_allocated("Deployment", &mut deployment, &current);
        assert_eq!(deployment, json!({"spec": {}}));
    }
}
