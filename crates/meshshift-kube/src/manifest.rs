//! Applying multi-document YAML manifests (Istio's rendered charts, bookinfo) exactly as written.
//!
//! Objects are sent as `DynamicObject`s so that every field survives. CRDs go first and are waited for
//! (Established) before custom resources that need them; Namespaces go next. A kind whose API version the
//! server does not serve falls back to the older version with the same schema, which is what lets
//! 1.22+-era manifests (`policy/v1` PodDisruptionBudgets, `autoscaling/v2` HPAs) load on the Kubernetes
//! 1.20 test control plane.

use std::collections::HashMap;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use serde_json::Value;

/// Why a manifest could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not valid YAML.
    #[error("manifest is not valid YAML: {0}")]
    Yaml(String),
    /// A document lacks apiVersion, kind or metadata.name.
    #[error("document {index} is not a Kubernetes object: {reason}")]
    NotAnObject {
        /// 0-based document index.
        index: usize,
        /// What is missing.
        reason: String,
    },
    /// The server serves no version of the kind.
    #[error("the cluster does not serve {api_version} {kind}: {reason}")]
    UnknownKind {
        /// apiVersion as written.
        api_version: String,
        /// Kind.
        kind: String,
        /// The last discovery error.
        reason: String,
    },
    /// The API rejected an object.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {0} did not become established within 30 s")]
    CrdNotEstablished(String),
}

/// Parses multi-document YAML into JSON values, skipping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Older API versions with the same schema, tried when the written one is not served.
fn fallback_versions(group: &str, version: &str) -> &'static [&'static str] {
    match (group, version) {
        ("policy", "v1") => &["v1beta1"],
        ("autoscaling", "v2") => &["v2beta2"],
        ("discovery.k8s.io", "v1") => &["v1beta1"],
        _ => &[],
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Applies manifests: creates each object, or replaces it when it exists.
pub struct Applier {
    client: Client,
    default_namespace: String,
    resolved: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Applier {
    /// An applier putting namespaced objects without a namespace into `default_namespace`.
    pub fn new(client: Client, default_namespace: impl Into<String>) -> Self {
        Self { client, default_namespace: default_namespace.into(), resolved: HashMap::new() }
    }

    async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ManifestError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(r) = self.resolved.get(&key) {
            return Ok(r.clone());
        }
        let (group, version) = split_api_version(api_version);
        let candidates = std::iter::once(version).chain(fallback_versions(group, version).iter().copied());
        let mut last_err = String::new();
        for v in candidates {
            // A kind whose CRD was just created can take a moment to appear in discovery.
            for _ in 0..25 {
                match pinned_kind(&self.client, &GroupVersionKind::gvk(group, v, kind)).await {
                    Ok(found) => {
                        self.resolved.insert(key, found.clone());
                        return Ok(found);
                    }
                    Err(e) => {
                        last_err = e.to_string();
                        if group.is_empty() || !group.contains('.') || group.ends_with("k8s.io") {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Err(ManifestError::UnknownKind { api_version: api_version.to_owned(), kind: kind.to_owned(), reason: last_err })
    }

    /// Applies every document of `text`.
    pub async fn apply_yaml(&mut self, text: &str) -> Result<usize, ManifestError> {
        self.apply_all(parse_documents(text)?).await
    }

    /// Applies documents: CRDs first (waited for), Namespaces next, then the rest in order. Returns the
    /// number of objects applied.
    pub async fn apply_all(&mut self, docs: Vec<Value>) -> Result<usize, ManifestError> {
        let rank = |d: &Value| match d.get("kind").and_then(Value::as_str) {
            Some("CustomResourceDefinition") => 0,
            Some("Namespace") => 1,
            _ => 2,
        };
        let mut docs: Vec<(usize, Value)> = docs.into_iter().enumerate().collect();
        docs.sort_by_key(|(i, d)| (rank(d), *i));
        let mut crds: Vec<String> = Vec::new();
        let mut waited = false;
        for (index, doc) in &docs {
            if rank(doc) > 0 && !waited {
                for name in &crds {
                    self.wait_established(name).await?;
                }
                waited = true;
            }
            let name = self.apply_one(*index, doc).await?;
            if rank(doc) == 0 {
                crds.push(name);
            }
        }
        for name in crds.iter().filter(|_| !waited) {
            self.wait_established(name).await?;
        }
        Ok(docs.len())
    }

    async fn apply_one(&mut self, index: usize, doc: &Value) -> Result<String, ManifestError> {
        let field = |path: &[&str]| -> Option<String> {
            let mut v = doc;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_owned)
        };
        let missing = |reason: &str| ManifestError::NotAnObject { index, reason: reason.to_owned() };
        let api_version = field(&["apiVersion"]).ok_or_else(|| missing("no apiVersion"))?;
        let kind = field(&["kind"]).ok_or_else(|| missing("no kind"))?;
        let name = field(&["metadata", "name"]).ok_or_else(|| missing("no metadata.name"))?;
        let (ar, caps) = self.resolve(&api_version, &kind).await?;
        let mut obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| missing(&e.to_string()))?;
        // A fallback version must be what the body says too.
        obj.types = Some(kube::api::TypeMeta { api_version: ar.api_version.clone(), kind: kind.clone() });
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj.metadata.namespace.clone().unwrap_or_else(|| self.default_namespace.clone());
            obj.metadata.namespace = Some(ns.clone());
            Api::namespaced_with(self.client.clone(), &ns, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        let display = match &obj.metadata.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        let err = |source| ManifestError::Apply { kind: kind.clone(), name: display.clone(), source };
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(name),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let current = api.get(&name).await.map_err(err)?;
                obj.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &obj).await.map_err(err)?;
                Ok(name)
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn wait_established(&self, name: &str) -> Result<(), ManifestError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let established = kube::runtime::wait::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(api, name, established);
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ManifestError::CrdNotEstablished(name.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_skips_empty_documents() {
        let docs =
            parse_documents("---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n")
                .expect("yaml");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["metadata"]["name"], "a");
    }

    #[test]
    fn rejects_invalid_yaml() {
        assert!(matches!(parse_documents("a: [unclosed"), Err(ManifestError::Yaml(_))));
    }

    #[test]
    fn fallbacks_only_for_same_schema_versions() {
        assert_eq!(fallback_versions("policy", "v1"), &["v1beta1"]);
        assert!(fallback_versions("apps", "v1").is_empty());
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("networking.istio.io/v1alpha3"), ("networking.istio.io", "v1alpha3"));
    }
}
