//! AdmissionReview in and out (admission.k8s.io v1 and v1beta1), without any I/O.
//!
//! The apiserver sends the review version it prefers from the webhook's `admissionReviewVersions` (the
//! 1.9/1.10 charts list `v1beta1` first) and expects the answer in the same version: both versions have
//! the same shape, so one type serves both and the `apiVersion` is echoed.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::identity::Istiod;
use super::inject::{InjectParams, Injection, inject};

/// The review versions istiod answers.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The part of an AdmissionReview request istiod reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: Option<Kind>,
    /// The namespace of the request (a pod being created may not have one in its metadata yet).
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, ...
    #[serde(default)]
    pub operation: Option<String>,
    /// The object.
    #[serde(default)]
    pub object: Option<Value>,
    /// A server-side dry run: the pod is not stored, but must be answered the same.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `request.kind`.
#[derive(Debug, Clone, Deserialize)]
pub struct Kind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    #[serde(default)]
    request: Option<AdmissionRequest>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed, unchanged.
    Allow,
    /// Allowed with this JSON Patch (RFC 6902).
    Patch(json_patch::Patch),
    /// Refused, with a message.
    Deny(String),
}

/// Why a request body is not a usable AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Not JSON, or not an AdmissionReview.
    #[error("not an AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An AdmissionReview version istiod does not speak.
    #[error("unsupported AdmissionReview version {0:?}")]
    Version(String),
    /// No `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Parses a review, lets `decide` judge its request, and builds the response review.
pub fn respond(body: &[u8], decide: impl FnOnce(&AdmissionRequest) -> Decision) -> Result<Value, AdmissionError> {
    let review: Review = serde_json::from_slice(body)?;
    if !SUPPORTED_VERSIONS.contains(&review.api_version.as_str()) {
        return Err(AdmissionError::Version(review.api_version));
    }
    let request = review.request.ok_or(AdmissionError::NoRequest)?;
    let mut response = json!({"uid": request.uid, "allowed": true});
    match decide(&request) {
        Decision::Allow => {}
        Decision::Patch(ops) => {
            let patch = serde_json::to_vec(&ops)?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
        }
        Decision::Deny(message) => {
            response["allowed"] = json!(false);
            response["status"] = json!({"message": message});
        }
    }
    Ok(json!({"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}))
}

/// The `/inject` decision: pods are injected by [`inject`]; anything else passes untouched.
pub fn decide_inject(istiod: &Istiod, request: &AdmissionRequest) -> Decision {
    let is_pod = request.kind.as_ref().is_none_or(|k| k.group.is_empty() && k.kind == "Pod");
    let Some(pod) = request.object.as_ref().filter(|_| is_pod) else {
        return Decision::Allow;
    };
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    match inject(pod, &InjectParams { istiod, namespace }) {
        Ok(Injection::Patch(ops)) => Decision::Patch(ops),
        Ok(Injection::Skipped(_)) => Decision::Allow,
        Err(err) => Decision::Deny(format!("injection failed: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshshift_core::version::IstioVersion;

    fn istiod() -> Istiod {
        Istiod { version: IstioVersion::new(1, 9, 7), revision: "1-9-7".into(), namespace: "istio-system".into() }
    }

    fn review(version: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "abc-123",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "apps",
                "operation": "CREATE",
                "object": object,
                "dryRun": true
            }
        }))
        .expect("json")
    }

    fn pod() -> Value {
        json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn answers_in_the_version_asked_with_a_json_patch() {
        for version in SUPPORTED_VERSIONS {
            let out = respond(&review(version, pod()), |r| {
                assert_eq!(r.dry_run, Some(true));
                decide_inject(&istiod(), r)
            })
            .expect("response");
            assert_eq!(out["apiVersion"], version);
            assert_eq!(out["kind"], "AdmissionReview");
            assert_eq!(out["response"]["uid"], "abc-123");
            assert_eq!(out["response"]["allowed"], true);
            assert_eq!(out["response"]["patchType"], "JSONPatch");
            let patch = base64::engine::general_purpose::STANDARD
                .decode(out["response"]["patch"].as_str().expect("patch"))
                .expect("base64");
            let ops: json_patch::Patch = serde_json::from_slice(&patch).expect("ops");
            let mut patched = pod();
            json_patch::patch(&mut patched, &ops).expect("applies");
            let proxy = &patched["spec"]["containers"][1];
            assert_eq!(proxy["image"], "docker.io/istio/proxyv2:1.9.7");
            let owner = proxy["env"].as_array().expect("env").iter().find(|e| e["name"] == "ISTIO_META_OWNER");
            assert_eq!(owner.expect("owner")["value"], "kubernetes://apis/v1/namespaces/apps/pods/web");
        }
    }

    #[test]
    fn validation_and_skips_allow_without_a_patch() {
        let out = respond(&review("admission.k8s.io/v1", json!({"kind": "VirtualService"})), |_| Decision::Allow)
            .expect("response");
        assert_eq!(out["response"], json!({"uid": "abc-123", "allowed": true}));
        let mut opted = pod();
        opted["metadata"]["labels"] = json!({"sidecar.istio.io/inject": "false"});
        let out = respond(&review("admission.k8s.io/v1", opted), |r| decide_inject(&istiod(), r)).expect("response");
        assert!(out["response"].get("patch").is_none());
    }

    #[test]
    fn broken_pods_are_denied_and_bad_reviews_refused() {
        let out = respond(&review("admission.k8s.io/v1", json!({"metadata": {}})), |r| decide_inject(&istiod(), r))
            .expect("response");
        assert_eq!(out["response"]["allowed"], false);
        assert!(out["response"]["status"]["message"].as_str().expect("message").contains("injection failed"));
        assert!(matches!(respond(b"{", |_| Decision::Allow), Err(AdmissionError::Malformed(_))));
        assert!(matches!(
            respond(&review("admission.k8s.io/v2", pod()), |_| Decision::Allow),
            Err(AdmissionError::Version(_))
        ));
        let empty =
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})).expect("json");
        assert!(matches!(respond(&empty, |_| Decision::Allow), Err(AdmissionError::NoRequest)));
    }
}
