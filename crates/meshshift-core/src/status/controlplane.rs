//! Control-plane revisions, injector webhooks, revision tags and the default revision.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{ClusterSnapshot, Webhook, WebhookConfiguration, Workload, WorkloadKind};
use crate::proxy::{REV_LABEL, revision_from_istiod_service};
use crate::selector::{LabelSelector, Labels};
use crate::version::{IstioVersion, image_component, version_from_image};

/// Label on revision-tag webhook configurations naming the tag.
pub const TAG_LABEL: &str = "istio.io/tag";
/// Prefix of revision-tag webhook configuration names.
pub const TAG_WEBHOOK_PREFIX: &str = "istio-revision-tag-";
/// The selector istioctl writes to neutralise (not delete) an injector.
pub const DEACTIVATED_LABEL: (&str, &str) = ("istio.io/deactivated", "never-match");

/// Where an istiod's version was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionSource {
    /// The tag of the `discovery` container image.
    Image,
    /// `values.global.tag` in the revision's `istio-sidecar-injector` ConfigMap.
    InjectorConfigMap,
}

/// One istiod Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Istiod {
    /// Revision (`default` for a non-revisioned install).
    pub revision: String,
    /// Namespace.
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Version, when it could be determined.
    pub version: Option<IstioVersion>,
    /// Where the version came from.
    pub version_source: Option<VersionSource>,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// One injecting webhook, resolved to the revision whose istiod serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorHook<'a> {
    /// The configuration it belongs to.
    pub configuration: &'a WebhookConfiguration,
    /// The webhook itself.
    pub webhook: &'a Webhook,
    /// Revision of the istiod that injects.
    pub revision: String,
    /// The tag, when the configuration is a revision tag.
    pub tag: Option<String>,
    /// Neutralised with `istio.io/deactivated: never-match`.
    pub deactivated: bool,
}

impl InjectorHook<'_> {
    /// Whether this hook would inject a pod with `pod_labels` created in a namespace with `ns_labels`.
    pub fn selects(&self, ns_labels: &Labels, pod_labels: &Labels) -> bool {
        !self.deactivated
            && self.webhook.namespace_selector.matches(ns_labels)
            && self.webhook.object_selector.matches(pod_labels)
    }
}

/// Whether a deployment is an istiod: the `discovery` container (pilot image) or `app=istiod`.
pub fn is_istiod(w: &Workload) -> bool {
    w.kind == WorkloadKind::Deployment
        && (w.template.containers.iter().any(|c| c.name == "discovery" && image_component(&c.image) == Some("pilot"))
            || w.labels.get("app").is_some_and(|a| a == "istiod"))
}

/// Every istiod in the snapshot, with its version resolved.
pub fn istiods(snapshot: &ClusterSnapshot) -> Vec<Istiod> {
    let mut out: Vec<Istiod> = snapshot
        .workloads
        .iter()
        .filter(|w| is_istiod(w))
        .map(|w| {
            let revision = w
                .labels
                .get(REV_LABEL)
                .or_else(|| w.template.labels.get(REV_LABEL))
                .cloned()
                .unwrap_or_else(|| "default".to_owned());
            let image_version =
                w.template.containers.iter().find(|c| c.name == "discovery").and_then(|c| version_from_image(&c.image));
            let (version, version_source) = match image_version {
                Some(v) => (Some(v), Some(VersionSource::Image)),
                None => match injector_configmap_version(snapshot, &w.namespace, &revision) {
                    Some(v) => (Some(v), Some(VersionSource::InjectorConfigMap)),
                    None => (None, None),
                },
            };
            Istiod {
                revision,
                namespace: w.namespace.clone(),
                deployment: w.name.clone(),
                version,
                version_source,
                replicas: w.replicas,
                ready_replicas: w.ready_replicas,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.revision, &a.namespace, &a.deployment).cmp(&(&b.revision, &b.namespace, &b.deployment)));
    out
}

/// `values.global.tag` of `istio-sidecar-injector[-rev]` in `namespace`.
fn injector_configmap_version(snapshot: &ClusterSnapshot, namespace: &str, revision: &str) -> Option<IstioVersion> {
    let name = if revision == "default" {
        "istio-sidecar-injector".to_owned()
    } else {
        format!("istio-sidecar-injector-{revision}")
    };
    let cm = snapshot.config_maps.iter().find(|c| c.namespace == namespace && c.name == name)?;
    let values: serde_json::Value = serde_json::from_str(cm.data.get("values")?).ok()?;
    let tag = values.get("global")?.get("tag")?;
    let tag = tag.as_str().map(str::to_owned).unwrap_or_else(|| tag.to_string());
    tag.parse().ok()
}

/// Whether a webhook is a sidecar injector: it calls an istiod service on `/inject`.
fn is_injector(w: &Webhook) -> bool {
    w.service.as_ref().is_some_and(|s| s.path.as_deref().is_some_and(|p| p.starts_with("/inject")))
}

/// The revision a webhook configuration serves: its `istio.io/rev` label, else the istiod service it calls.
fn configuration_revision(cfg: &WebhookConfiguration, hook: &Webhook) -> Option<String> {
    cfg.labels
        .get(REV_LABEL)
        .cloned()
        .or_else(|| hook.service.as_ref().and_then(|s| revision_from_istiod_service(&s.name)))
}

/// The tag a webhook configuration implements, if it is a revision tag.
pub fn configuration_tag(cfg: &WebhookConfiguration) -> Option<String> {
    cfg.labels.get(TAG_LABEL).cloned().or_else(|| cfg.name.strip_prefix(TAG_WEBHOOK_PREFIX).map(str::to_owned))
}

fn deactivated(selector: &LabelSelector) -> bool {
    selector.requires(DEACTIVATED_LABEL.0, DEACTIVATED_LABEL.1)
}

/// Every injecting webhook in the snapshot, resolved to its revision.
pub fn injector_hooks(snapshot: &ClusterSnapshot) -> Vec<InjectorHook<'_>> {
    snapshot
        .mutating_webhooks
        .iter()
        .flat_map(|cfg| {
            cfg.webhooks.iter().filter(|w| is_injector(w)).filter_map(move |w| {
                Some(InjectorHook {
                    configuration: cfg,
                    webhook: w,
                    revision: configuration_revision(cfg, w)?,
                    tag: configuration_tag(cfg),
                    deactivated: deactivated(&w.namespace_selector) || deactivated(&w.object_selector),
                })
            })
        })
        .collect()
}

/// A revision tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagStatus {
    /// Tag name.
    pub tag: String,
    /// The revision it points to.
    pub revision: String,
    /// Its webhook configuration.
    pub webhook: String,
    /// Whether an istiod of that revision exists.
    pub revision_exists: bool,
}

/// Revision tags, from their webhook configurations.
pub fn tags(hooks: &[InjectorHook<'_>], revisions: &BTreeSet<String>) -> Vec<TagStatus> {
    let mut by_tag: BTreeMap<(String, String), TagStatus> = BTreeMap::new();
    for h in hooks {
        if let Some(tag) = &h.tag {
            by_tag.entry((tag.clone(), h.configuration.name.clone())).or_insert_with(|| TagStatus {
                tag: tag.clone(),
                revision: h.revision.clone(),
                webhook: h.configuration.name.clone(),
                revision_exists: revisions.contains(&h.revision),
            });
        }
    }
    by_tag.into_values().collect()
}

/// Which revision is "the default", by each of the three mechanisms that can say so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRevision {
    /// The revision the `default` tag points to.
    pub tag: Option<String>,
    /// The revision that injects namespaces labelled `istio-injection=enabled`.
    pub injection: Option<String>,
    /// The revision the default validating webhook calls.
    pub validator: Option<String>,
}

/// The default validating webhook configuration and the revision it calls: `istiod-default-validator`
/// (1.10+), else the base chart's `istiod-<namespace>` (1.9/1.10).
pub fn default_validator(snapshot: &ClusterSnapshot) -> Option<(&WebhookConfiguration, String)> {
    let cfg = snapshot.validating_webhooks.iter().find(|c| c.name == "istiod-default-validator").or_else(|| {
        snapshot.validating_webhooks.iter().find(|c| {
            c.name.starts_with("istiod-")
                && c.webhooks
                    .iter()
                    .any(|w| w.service.as_ref().is_some_and(|s| c.name == format!("istiod-{}", s.namespace)))
        })
    })?;
    let rev = cfg
        .webhooks
        .iter()
        .find_map(|w| w.service.as_ref().and_then(|s| revision_from_istiod_service(&s.name)))
        .or_else(|| cfg.labels.get(REV_LABEL).cloned())?;
    Some((cfg, rev))
}

/// The three views of the default revision.
pub fn default_revision(snapshot: &ClusterSnapshot, hooks: &[InjectorHook<'_>], tags: &[TagStatus]) -> DefaultRevision {
    let enabled: Labels = [("istio-injection".to_owned(), "enabled".to_owned())].into();
    let injection: BTreeSet<&str> =
        hooks.iter().filter(|h| h.selects(&enabled, &Labels::new())).map(|h| h.revision.as_str()).collect();
    DefaultRevision {
        tag: tags.iter().find(|t| t.tag == "default").map(|t| t.revision.clone()),
        injection: (injection.len() == 1).then(|| injection.iter().map(|s| (*s).to_owned()).collect()),
        validator: default_validator(snapshot).map(|(_, r)| r),
    }
}
