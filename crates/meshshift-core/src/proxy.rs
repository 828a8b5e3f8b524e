//! What a pod tells about its sidecar: proxy version and control-plane revision.
//!
//! Istio changed where it writes the revision three times, so meshshift reads every convention:
//! 1.18+ pod annotation `istio.io/rev`; 1.11-1.17 the `revision` field of the JSON annotation
//! `sidecar.istio.io/status`; 1.6-1.10 the pod label `istio.io/rev`. The discovery address in
//! `PROXY_CONFIG` (`istiod-<rev>.<ns>.svc:15012`) is the fallback every version has. The version is only
//! ever in the `istio-proxy` image tag, in `containers` or, for native sidecars (default from 1.28), in
//! `initContainers`.

use serde::{Deserialize, Serialize};

use crate::model::{Container, PodTemplate};
use crate::version::{IstioVersion, version_from_image};

/// The name of the sidecar container in every Istio version.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Label and (1.18+) annotation naming a revision.
pub const REV_LABEL: &str = "istio.io/rev";
/// Injection status annotation (JSON).
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Pod label or annotation opting a pod out of (or into) injection.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";

/// Where a proxy's revision was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionSource {
    /// Pod annotation `istio.io/rev` (1.18+).
    Annotation,
    /// `revision` in `sidecar.istio.io/status` (1.11-1.17, still written later).
    StatusAnnotation,
    /// Pod label `istio.io/rev` (1.6-1.10).
    Label,
    /// The istiod host in `PROXY_CONFIG`'s `discoveryAddress`.
    DiscoveryAddress,
}

/// A pod's sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Version from the `istio-proxy` image tag, when it has one.
    pub version: Option<IstioVersion>,
    /// The revision of the control plane that injected it.
    pub revision: Option<String>,
    /// Where `revision` came from.
    pub revision_source: Option<RevisionSource>,
    /// The proxy runs as a native sidecar (init container with `restartPolicy: Always`).
    pub native_sidecar: bool,
    /// The proxy image.
    pub image: String,
}

/// The `istio-proxy` container of a pod (or template) and whether it is a native sidecar.
pub fn proxy_container(spec: &PodTemplate) -> Option<(&Container, bool)> {
    if let Some(c) = spec.containers.iter().find(|c| c.name == PROXY_CONTAINER) {
        return Some((c, false));
    }
    spec.init_containers
        .iter()
        .find(|c| c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always"))
        .map(|c| (c, true))
}

/// Reads the sidecar of a pod, or `None` when it has none.
pub fn detect_proxy(spec: &PodTemplate) -> Option<ProxyInfo> {
    let (container, native_sidecar) = proxy_container(spec)?;
    let (revision, revision_source) = match revision_of(spec, container) {
        Some((r, s)) => (Some(r), Some(s)),
        None => (None, None),
    };
    Some(ProxyInfo {
        version: version_from_image(&container.image),
        revision,
        revision_source,
        native_sidecar,
        image: container.image.clone(),
    })
}

fn revision_of(spec: &PodTemplate, proxy: &Container) -> Option<(String, RevisionSource)> {
    if let Some(r) = spec.annotations.get(REV_LABEL) {
        return Some((r.clone(), RevisionSource::Annotation));
    }
    if let Some(r) = spec.annotations.get(STATUS_ANNOTATION).and_then(|s| status_revision(s)) {
        return Some((r, RevisionSource::StatusAnnotation));
    }
    if let Some(r) = spec.labels.get(REV_LABEL) {
        return Some((r.clone(), RevisionSource::Label));
    }
    let discovery = proxy.env.get("PROXY_CONFIG").and_then(|c| discovery_address(c))?;
    revision_from_istiod_host(&discovery).map(|r| (r, RevisionSource::DiscoveryAddress))
}

/// The `revision` field of the `sidecar.istio.io/status` annotation, when present and non-empty.
fn status_revision(status: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(status).ok()?;
    let rev = value.get("revision")?.as_str()?;
    (!rev.is_empty()).then(|| rev.to_owned())
}

/// `discoveryAddress` from a `PROXY_CONFIG` value (JSON in current injectors, YAML-ish `key: value`
/// lines in some); only the one key is needed, so a line scan covers both without a YAML parser.
fn discovery_address(proxy_config: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(proxy_config) {
        return v.get("discoveryAddress")?.as_str().map(str::to_owned);
    }
    proxy_config.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("discoveryAddress:")?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

/// Maps an istiod host (`istiod-1-9-7.istio-system.svc:15012`, `istiod.istio-system.svc:15012`) to
/// the revision it serves (`1-9-7`, `default`).
pub fn revision_from_istiod_host(host: &str) -> Option<String> {
    let service = host.split(['.', ':']).next()?;
    revision_from_istiod_service(service)
}

/// Maps an istiod Service name to its revision: `istiod` is the default revision, `istiod-R` is R.
/// Tag services (`istiod-revision-tag-T`, 1.27+) are not revisions and give `None`.
pub fn revision_from_istiod_service(service: &str) -> Option<String> {
    if service == "istiod" {
        return Some("default".to_owned());
    }
    let rev = service.strip_prefix("istiod-")?;
    (!rev.is_empty() && !rev.starts_with("revision-tag-")).then(|| rev.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Labels;

    fn proxy(image: &str) -> Container {
        Container { name: PROXY_CONTAINER.into(), image: image.into(), ..Container::default() }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_1_9_label_convention() {
        let spec = PodTemplate {
            labels: labels(&[(REV_LABEL, "1-9-7")]),
            annotations: labels(&[(STATUS_ANNOTATION, r#"{"version":"abc","initContainers":["istio-init"]}"#)]),
            containers: vec![proxy("docker.io/istio/proxyv2:1.9.7")],
            ..PodTemplate::default()
        };
        let p = detect_proxy(&spec).expect("proxy");
        assert_eq!(p.revision.as_deref(), Some("1-9-7"));
        assert_eq!(p.revision_source, Some(RevisionSource::Label));
        assert_eq!(p.version.map(|v| v.to_string()).as_deref(), Some("1.9.7"));
        assert!(!p.native_sidecar);
    }

    #[test]
    fn reads_1_11_status_annotation_convention() {
        let spec = PodTemplate {
            annotations: labels(&[(STATUS_ANNOTATION, r#"{"initContainers":["istio-init"],"revision":"canary"}"#)]),
            containers: vec![proxy("docker.io/istio/proxyv2:1.12.0")],
            ..PodTemplate::default()
        };
        let p = detect_proxy(&spec).expect("proxy");
        assert_eq!(p.revision.as_deref(), Some("canary"));
        assert_eq!(p.revision_source, Some(RevisionSource::StatusAnnotation));
    }

    #[test]
    fn reads_1_18_annotation_before_others() {
        let spec = PodTemplate {
            labels: labels(&[(REV_LABEL, "stale")]),
            annotations: labels(&[(REV_LABEL, "1-24-6"), (STATUS_ANNOTATION, r#"{"revision":"x"}"#)]),
            containers: vec![proxy("docker.io/istio/proxyv2:1.24.6")],
            ..PodTemplate::default()
        };
        let p = detect_proxy(&spec).expect("proxy");
        assert_eq!((p.revision.as_deref(), p.revision_source), (Some("1-24-6"), Some(RevisionSource::Annotation)));
    }

    #[test]
    fn native_sidecar_in_init_containers() {
        let mut c = proxy("docker.io/istio/proxyv2:1.28.0");
        c.restart_policy = Some("Always".into());
        let spec = PodTemplate { init_containers: vec![c], ..PodTemplate::default() };
        let p = detect_proxy(&spec).expect("proxy");
        assert!(p.native_sidecar);
        let plain_init = PodTemplate { init_containers: vec![proxy("x/proxyv2:1.28.0")], ..PodTemplate::default() };
        assert!(detect_proxy(&plain_init).is_none(), "an init container without restartPolicy Always is not a sidecar");
    }

    #[test]
    fn falls_back_to_discovery_address() {
        let mut c = proxy("docker.io/istio/proxyv2:1.10.6");
        c.env.insert("PROXY_CONFIG".into(), r#"{"discoveryAddress":"istiod-1-10-6.istio-system.svc:15012"}"#.into());
        let spec = PodTemplate { containers: vec![c], ..PodTemplate::default() };
        let p = detect_proxy(&spec).expect("proxy");
        assert_eq!(
            (p.revision.as_deref(), p.revision_source),
            (Some("1-10-6"), Some(RevisionSource::DiscoveryAddress))
        );
        assert_eq!(revision_from_istiod_host("istiod.istio-system.svc:15012").as_deref(), Some("default"));
        assert_eq!(revision_from_istiod_service("istiod-revision-tag-prod"), None);
        assert_eq!(
            discovery_address("discoveryAddress: istiod-a.x.svc:15012\n").as_deref(),
            Some("istiod-a.x.svc:15012")
        );
    }

    #[test]
    fn no_proxy_container_means_none() {
        let spec = PodTemplate {
            containers: vec![Container { name: "app".into(), ..Container::default() }],
            ..PodTemplate::default()
        };
        assert!(detect_proxy(&spec).is_none());
    }
}
