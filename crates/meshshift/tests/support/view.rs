//! Everything an upgrade may touch, read from the API and normalised (no resourceVersions, uids, pod names
//! or timestamps), so a cluster after `apply` + `rollback` can be compared object by object with the
//! cluster before. meshshift's own namespaces (`meshshift`, `meshshift-gate`: journal, lock, injection
//! probes) are left out: they are the tool's, not the user's.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const OWN: [&str; 2] = ["meshshift", "meshshift-gate"];

async fn list(client: &Client, group: &str, version: &str, kind: &str, plural: &str) -> Vec<Value> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    api.list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("list {kind}: {e}"))
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("json"))
        .filter(|o| !o["metadata"]["namespace"].as_str().is_some_and(|n| OWN.contains(&n) || n.starts_with("kube-")))
        .filter(|o| !o["metadata"]["name"].as_str().is_some_and(|n| OWN.contains(&n) || n.starts_with("kube-")))
        .collect()
}

fn key(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap_or_default()),
        None => o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
    }
}

fn hooks(o: &Value) -> Value {
    let hooks: Vec<Value> = o["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            json!({
                "name": w["name"], "service": w["clientConfig"]["service"], "caBundle": w["clientConfig"]["caBundle"],
                "namespaceSelector": w["namespaceSelector"], "objectSelector": w["objectSelector"],
                "failurePolicy": w["failurePolicy"],
            })
        })
        .collect();
    json!({"labels": o["metadata"]["labels"], "webhooks": hooks})
}

/// The normalised view of namespaces, Services, Deployments, webhook configurations, Istio ConfigMaps
/// and the proxies running (counted per workload and proxy image and revision).
pub async fn view(client: &Client) -> Value {
    let mut v = BTreeMap::new();
    let namespaces: BTreeMap<String, Value> = list(client, "", "v1", "Namespace", "namespaces")
        .await
        .iter()
        .map(|n| (key(n), n["metadata"]["labels"].clone()))
        .collect();
    v.insert("namespaces", json!(namespaces));
    let services: BTreeMap<String, Value> = list(client, "", "v1", "Service", "services")
        .await
        .iter()
        .map(|s| (key(s), json!({"type": s["spec"]["type"], "selector": s["spec"]["selector"], "labels": s["metadata"]["labels"], "ports": s["spec"]["ports"]})))
        .collect();
    v.insert("services", json!(services));
    let deployments: BTreeMap<String, Value> = list(client, "apps", "v1", "Deployment", "deployments")
        .await
        .iter()
        .map(|d| {
            let t = &d["spec"]["template"];
            let containers: Vec<Value> = t["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "env": c["env"]}))
                .collect();
            (key(d), json!({"replicas": d["spec"]["replicas"], "selector": d["spec"]["selector"], "labels": d["metadata"]["labels"],
                "template_labels": t["metadata"]["labels"], "template_annotations": t["metadata"]["annotations"], "containers": containers}))
        })
        .collect();
    v.insert("deployments", json!(deployments));
    for (kind, plural) in [
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
    ] {
        let m: BTreeMap<String, Value> = list(client, "admissionregistration.k8s.io", "v1", kind, plural)
            .await
            .iter()
            .map(|o| (key(o), hooks(o)))
            .collect();
        v.insert(if kind.starts_with('M') { "mutating" } else { "validating" }, json!(m));
    }
    let config_maps: BTreeMap<String, Value> = list(client, "", "v1", "ConfigMap", "configmaps")
        .await
        .iter()
        .filter(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("istio") && n != "istio-ca-root-cert"))
        .map(|c| (key(c), c["data"].clone()))
        .collect();
    v.insert("config_maps", json!(config_maps));
    let mut proxies: BTreeMap<String, u32> = BTreeMap::new();
    for p in list(client, "", "v1", "Pod", "pods").await {
        if p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let owner = p["metadata"]["generateName"].as_str().unwrap_or_default().trim_end_matches('-').to_owned();
        // Pods of a ReplicaSet: drop the pod-template-hash, keep the Deployment's name.
        let owner = match (owner.rsplit_once('-'), p["metadata"]["labels"]["pod-template-hash"].as_str()) {
            (Some((base, hash)), Some(h)) if hash == h => base.to_owned(),
            _ => owner,
        };
        for c in p["spec"]["containers"].as_array().into_iter().flatten().filter(|c| c["name"] == "istio-proxy") {
            let rev = p["metadata"]["labels"]["istio.io/rev"].as_str().unwrap_or("-");
            let k = format!(
                "{}/{owner} {} rev={rev}",
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
                c["image"].as_str().unwrap_or_default()
            );
            *proxies.entry(k).or_default() += 1;
        }
    }
    v.insert("proxies", json!(proxies));
    json!(v)
}

/// Panics with the differing entries when two views differ.
pub fn assert_same(before: &Value, after: &Value, what: &str) {
    let mut diffs = Vec::new();
    for (section, b) in before.as_object().into_iter().flatten() {
        let a = &after[section];
        for (k, bv) in b.as_object().into_iter().flatten() {
            if a.get(k) != Some(bv) {
                diffs.push(format!("{section} {k}:\n    before {bv}\n    after  {}", a.get(k).unwrap_or(&Value::Null)));
            }
        }
        for (k, av) in a.as_object().into_iter().flatten() {
            if b.get(k).is_none() {
                diffs.push(format!("{section} {k}: new after: {av}"));
            }
        }
    }
    assert!(diffs.is_empty(), "{what}: the cluster differs from before:\n{}", diffs.join("\n"));
}
