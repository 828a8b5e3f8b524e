//! Building meshes from the real manifests: apply them, and shape workloads as Istio's injector would.

use kube::Client;
use meshshift_kube::manifest::Applier;
use serde_json::{Value, json};

/// Applies documents (namespaced ones without a namespace go to `default_ns`).
pub async fn apply(client: &Client, default_ns: &str, docs: Vec<Value>) {
    Applier::new(client.clone(), default_ns).apply_all(docs).await.unwrap_or_else(|e| panic!("apply: {e}"));
}

/// Splits out admission webhook configurations. They are applied last: with `failurePolicy: Fail` and no
/// istiod serving them (no kubelet runs istiod here), they would reject the very pods the test creates.
pub fn without_webhooks(docs: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    docs.into_iter().partition(|d| !d["kind"].as_str().is_some_and(|k| k.ends_with("WebhookConfiguration")))
}

/// A Namespace with labels.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// Puts documents into `ns`.
pub fn in_namespace(mut docs: Vec<Value>, ns: &str) -> Vec<Value> {
    for d in &mut docs {
        d["metadata"]["namespace"] = json!(ns);
    }
    docs
}

/// Rewrites the injector golden's test values (image `gcr.io/istio-testing/...:latest`, revision
/// `default`, workload `hello`) to a real release and revision.
fn retarget(text: &str, version: &str, revision: &str, workload: &str) -> String {
    let mut t = text.replace("gcr.io/istio-testing/", "docker.io/istio/").replace(":latest", &format!(":{version}"));
    if revision != "default" {
        t = t.replace("istiod.istio-system.svc", &format!("istiod-{revision}.istio-system.svc"));
        t = t.replace("\\\"revision\\\":\\\"default\\\"", &format!("\\\"revision\\\":\\\"{revision}\\\""));
    }
    t.replace("\"hello\"", &format!("\"{workload}\""))
}

/// Shapes a Deployment as the injector of Istio `golden_version` (1.9.7, 1.10.6 or 1.24.6; the golden
/// `hello.yaml.injected` of that release) would have injected it for `version`/`revision`: adds the
/// golden's `istio-proxy` container, `istio-init`, volumes, labels and annotations.
pub fn inject_like_golden(deployment: &mut Value, golden_version: &str, version: &str, revision: &str) {
    let golden = &super::fixture_docs(&format!("istio-tree/{golden_version}/injection/hello.yaml.injected"))[0];
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let app = deployment["spec"]["template"]["metadata"]["labels"]["app"].as_str().unwrap_or(&name).to_owned();
    let gt = &golden["spec"]["template"];
    let text = retarget(&gt.to_string(), version, revision, &app);
    let gt: Value = serde_json::from_str(&text).expect("retargeted golden");
    let tpl = &mut deployment["spec"]["template"];
    for (k, v) in gt["metadata"]["annotations"].as_object().into_iter().flatten() {
        let v = match k.as_str() {
            "istio.io/rev" => json!(revision),
            "kubectl.kubernetes.io/default-logs-container" => tpl["spec"]["containers"][0]["name"].clone(),
            _ => v.clone(),
        };
        tpl["metadata"]["annotations"][k] = v;
    }
    for (k, v) in gt["metadata"]["labels"].as_object().into_iter().flatten() {
        if k.contains("istio.io") {
            let v = if k == "istio.io/rev" { json!(revision) } else { v.clone() };
            tpl["metadata"]["labels"][k] = v;
        }
    }
    let proxy = gt["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "istio-proxy")
        .cloned()
        .expect("golden proxy");
    tpl["spec"]["containers"].as_array_mut().expect("containers").push(proxy);
    let inits = gt["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
    tpl["spec"]["initContainers"] = json!(inits);
    let mut volumes = tpl["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    volumes.extend(gt["spec"]["volumes"].as_array().cloned().unwrap_or_default());
    tpl["spec"]["volumes"] = json!(volumes);
}

/// Injects every Deployment of `docs` like [`inject_like_golden`].
pub fn inject_all(mut docs: Vec<Value>, golden_version: &str, version: &str, revision: &str) -> Vec<Value> {
    for d in docs.iter_mut().filter(|d| d["kind"] == "Deployment") {
        inject_like_golden(d, golden_version, version, revision);
    }
    docs
}

/// Shapes an injected gateway's pods (`image: auto`) as its revision's injector writes them.
pub fn inject_gateway(docs: &mut [Value], version: &str, revision: &str) {
    for d in docs.iter_mut().filter(|d| d["kind"] == "Deployment") {
        let tpl = &mut d["spec"]["template"];
        tpl["metadata"]["annotations"]["istio.io/rev"] = json!(revision);
        tpl["metadata"]["annotations"]["sidecar.istio.io/status"] =
            json!(format!("{{\"initContainers\":null,\"containers\":[\"istio-proxy\"],\"revision\":\"{revision}\"}}"));
        for c in tpl["spec"]["containers"].as_array_mut().into_iter().flatten() {
            if c["name"] == "istio-proxy" {
                c["image"] = json!(format!("docker.io/istio/proxyv2:{version}"));
            }
        }
    }
}
