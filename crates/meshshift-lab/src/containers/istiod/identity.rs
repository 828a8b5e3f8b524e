//! Who an emulated istiod is: version, revision and namespace, and the names that follow from them.
//!
//! Everything else (injection, webhook ownership, certificate names, the config stream) derives its
//! names from here, so the conventions of the real charts (`istiod` for the default revision,
//! `istiod-<rev>` otherwise) live in one place.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use meshshift_core::version::{IstioVersion, Revision, version_from_image};

/// The default revision's name.
pub const DEFAULT_REVISION: &str = "default";
/// Label naming a revision (on pods, webhooks, config objects).
pub const REV_LABEL: &str = "istio.io/rev";
/// Label naming a revision tag (on tag webhooks).
pub const TAG_LABEL: &str = "istio.io/tag";

/// An istiod's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Istiod {
    /// From the image tag (`docker.io/istio/pilot:1.9.7`).
    pub version: IstioVersion,
    /// From env `REVISION`, else the pod label `istio.io/rev`, else `default`.
    pub revision: String,
    /// The namespace istiod runs in (`istio-system` normally).
    pub namespace: String,
}

/// Why a container cannot be an istiod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The image has no version tag.
    #[error("image {0:?} has no Istio version tag")]
    NoVersion(String),
    /// The revision is not a valid revision name.
    #[error("revision {revision:?} is invalid: {reason}")]
    BadRevision {
        /// The value found.
        revision: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl Istiod {
    /// Reads the identity of the istiod container `container` of `pod`.
    pub fn from_pod(pod: &Pod, container: &Container) -> Result<Istiod, IdentityError> {
        let image = container.image.clone().unwrap_or_default();
        let version = version_from_image(&image).ok_or(IdentityError::NoVersion(image))?;
        let env = container.env.iter().flatten().find(|e| e.name == "REVISION").and_then(|e| e.value.clone());
        let label = pod.metadata.labels.as_ref().and_then(|l| l.get(REV_LABEL)).cloned();
        let revision = env.or(label).filter(|r| !r.is_empty()).unwrap_or_else(|| DEFAULT_REVISION.to_owned());
        Revision::parse(&revision)
            .map_err(|e| IdentityError::BadRevision { revision: revision.clone(), reason: e.to_string() })?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "istio-system".to_owned());
        Ok(Istiod { version, revision, namespace })
    }

    /// Whether this is the default (non-revisioned) install.
    pub fn is_default(&self) -> bool {
        self.revision == DEFAULT_REVISION
    }

    /// The revision's Service: `istiod` or `istiod-<rev>`.
    pub fn service_name(&self) -> String {
        if self.is_default() { "istiod".to_owned() } else { format!("istiod-{}", self.revision) }
    }

    /// `istiod[-<rev>].<ns>.svc:15012`: what injected proxies get as discovery and CA address.
    pub fn discovery_address(&self) -> String {
        format!("{}.{}.svc:{}", self.service_name(), self.namespace, crate::containers::protocol::XDS_PORT)
    }

    /// The Services whose webhooks this istiod answers: its own, the `istiod-revision-tag-<tag>` Service of
    /// each of its tags (1.27+), and `istiod` when it is the default revision or the `default` tag points at
    /// it (the base chart's `istiod-default-validator` calls `istiod`).
    pub fn services(&self, tags: &BTreeSet<String>) -> BTreeSet<String> {
        let mut names = BTreeSet::from([self.service_name()]);
        for tag in tags {
            names.insert(format!("istiod-revision-tag-{tag}"));
            if tag == DEFAULT_REVISION {
                names.insert("istiod".to_owned());
            }
        }
        names
    }

    /// DNS names for the webhook serving certificate: every form in which the apiserver may name one of
    /// [`Istiod::services`] (it verifies `<svc>.<ns>.svc`), plus the legacy `istiod`/`istio-pilot` names
    /// real istiod always includes.
    pub fn dns_names(&self, tags: &BTreeSet<String>) -> Vec<String> {
        let mut services = self.services(tags);
        services.insert("istiod".to_owned());
        services.insert("istio-pilot".to_owned());
        let ns = &self.namespace;
        let mut names = Vec::new();
        // The revision's own Service first: it becomes the certificate's common name.
        let own = self.service_name();
        for svc in std::iter::once(&own).chain(services.iter().filter(|s| **s != own)) {
            names.push(format!("{svc}.{ns}.svc"));
            names.push(format!("{svc}.{ns}.svc.cluster.local"));
            names.push(format!("{svc}.{ns}"));
            names.push(svc.clone());
        }
        names
    }

    /// Whether a proxy of revision `revision` belongs to this istiod (its revision or one of its tags).
    pub fn serves_revision(&self, revision: &str, tags: &BTreeSet<String>) -> bool {
        revision == self.revision || tags.contains(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: serde_json::Value, env: serde_json::Value, image: &str) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "istiod-x", "namespace": "istio-system", "labels": labels},
            "spec": {"containers": [{"name": "discovery", "image": image, "env": env}]}
        }))
        .expect("pod");
        let container = pod.spec.as_ref().expect("spec").containers[0].clone();
        (pod, container)
    }

    #[test]
    fn revision_comes_from_env_then_label_then_default() {
        let (p, c) = pod(
            json!({"istio.io/rev": "from-label"}),
            json!([{"name": "REVISION", "value": "1-9-7"}]),
            "docker.io/istio/pilot:1.9.7",
        );
        let id = Istiod::from_pod(&p, &c).expect("identity");
        assert_eq!(id.revision, "1-9-7");
        assert_eq!(id.version, IstioVersion::new(1, 9, 7));
        assert_eq!(id.service_name(), "istiod-1-9-7");
        assert_eq!(id.discovery_address(), "istiod-1-9-7.istio-system.svc:15012");

        let (p, c) = pod(json!({"istio.io/rev": "canary"}), json!([]), "docker.io/istio/pilot:1.10.6");
        assert_eq!(Istiod::from_pod(&p, &c).expect("identity").revision, "canary");

        let (p, c) = pod(json!({}), json!([{"name": "REVISION", "value": ""}]), "pilot:1.24.6-distroless");
        let id = Istiod::from_pod(&p, &c).expect("identity");
        assert_eq!(id.revision, "default");
        assert_eq!(id.service_name(), "istiod");
        assert_eq!(id.version, IstioVersion::new(1, 24, 6));
    }

    #[test]
    fn bad_images_and_revisions_are_refused() {
        let (p, c) = pod(json!({}), json!([]), "docker.io/istio/pilot:latest");
        assert!(matches!(Istiod::from_pod(&p, &c), Err(IdentityError::NoVersion(_))));
        let (p, c) = pod(json!({}), json!([{"name": "REVISION", "value": "1.9.7"}]), "pilot:1.9.7");
        assert!(matches!(Istiod::from_pod(&p, &c), Err(IdentityError::BadRevision { .. })));
    }

    #[test]
    fn services_and_names_cover_tags() {
        let id = Istiod {
            version: IstioVersion::new(1, 10, 6),
            revision: "1-10-6".into(),
            namespace: "istio-system".into(),
        };
        let none = BTreeSet::new();
        assert_eq!(id.services(&none), BTreeSet::from(["istiod-1-10-6".to_owned()]));
        let tags = BTreeSet::from(["default".to_owned(), "prod".to_owned()]);
        assert_eq!(
            id.services(&tags),
            BTreeSet::from([
                "istiod".to_owned(),
                "istiod-1-10-6".to_owned(),
                "istiod-revision-tag-default".to_owned(),
                "istiod-revision-tag-prod".to_owned()
            ])
        );
        let names = id.dns_names(&tags);
        assert_eq!(names[0], "istiod-1-10-6.istio-system.svc");
        for expected in
            ["istiod.istio-system.svc", "istiod-revision-tag-prod.istio-system.svc.cluster.local", "istiod-1-10-6"]
        {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert!(id.serves_revision("1-10-6", &tags));
        assert!(id.serves_revision("prod", &tags));
        assert!(!id.serves_revision("1-9-7", &tags));
    }
}
