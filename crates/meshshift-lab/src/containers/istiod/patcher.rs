//! Writes istiod's CA into the `caBundle` of the webhooks that call it, and learns its revision tags.
//!
//! Which webhooks are this istiod's (as real istiod's webhook controllers decide):
//! - every webhook of a MutatingWebhookConfiguration labelled `istio.io/rev=<rev>`: the revision's injector
//!   and its revision-tag webhooks (`istio-revision-tag-<tag>`, also labelled `istio.io/tag`);
//! - any webhook (mutating or validating) whose `clientConfig.service` is one of its Services in its
//!   namespace: `istio-validator-<rev>-<ns>`, and `istiod-default-validator` or the 1.9/1.10
//!   `istiod-<ns>` when they call `istiod` and this is the default revision (or the `default` tag's).
//!
//! Only `clientConfig.caBundle` is written, by a JSON patch per configuration guarded by a
//! `resourceVersion` test: selectors belong to the installer and to `istioctl tag` (which neutralises an
//! old default injector by rewriting them), and must never be reverted by a stale read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::watch;

use super::error::IstiodError;
use super::identity::{Istiod, REV_LABEL, TAG_LABEL};
use super::index::Index;
use super::ready::Stats;

/// The tags pointing at a revision; `None` until the webhook configurations have been listed (a proxy of
/// a tag must not be refused just because istiod has not looked yet).
pub type KnownTags = Option<BTreeSet<String>>;

/// How often failed patches are retried.
const RETRY: Duration = Duration::from_secs(2);

/// Which kind of webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// MutatingWebhookConfiguration.
    Mutating,
    /// ValidatingWebhookConfiguration.
    Validating,
}

/// One webhook as the patcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookView {
    /// `clientConfig.service` (name, namespace), when the webhook calls a Service.
    pub service: Option<(String, String)>,
    /// `clientConfig.caBundle` (empty when unset).
    pub ca_bundle: Vec<u8>,
}

/// One webhook configuration as the patcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// Name.
    pub name: String,
    /// For the patch's precondition.
    pub resource_version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its webhooks, in order (patch paths index into them).
    pub hooks: Vec<HookView>,
}

fn hook_view(config: &WebhookClientConfig) -> HookView {
    HookView {
        service: config.service.as_ref().map(|s| (s.name.clone(), s.namespace.clone())),
        ca_bundle: config.ca_bundle.as_ref().map(|b| b.0.clone()).unwrap_or_default(),
    }
}

impl Target {
    /// From a MutatingWebhookConfiguration.
    pub fn mutating(mwc: &MutatingWebhookConfiguration) -> Target {
        Target {
            kind: WebhookKind::Mutating,
            name: mwc.metadata.name.clone().unwrap_or_default(),
            resource_version: mwc.metadata.resource_version.clone().unwrap_or_default(),
            labels: mwc.metadata.labels.clone().unwrap_or_default(),
            hooks: mwc.webhooks.iter().flatten().map(|w| hook_view(&w.client_config)).collect(),
        }
    }

    /// From a ValidatingWebhookConfiguration.
    pub fn validating(vwc: &ValidatingWebhookConfiguration) -> Target {
        Target {
            kind: WebhookKind::Validating,
            name: vwc.metadata.name.clone().unwrap_or_default(),
            resource_version: vwc.metadata.resource_version.clone().unwrap_or_default(),
            labels: vwc.metadata.labels.clone().unwrap_or_default(),
            hooks: vwc.webhooks.iter().flatten().map(|w| hook_view(&w.client_config)).collect(),
        }
    }
}

/// The JSON patch that gives this istiod's webhooks in `target` the CA `bundle` (PEM), or `None` when
/// none of its webhooks is this istiod's or all already have it.
pub fn plan(target: &Target, istiod: &Istiod, tags: &BTreeSet<String>, bundle: &[u8]) -> Option<json_patch::Patch> {
    let whole = target.kind == WebhookKind::Mutating && target.labels.get(REV_LABEL) == Some(&istiod.revision);
    let services = istiod.services(tags);
    let calls_us = |hook: &HookView| {
        hook.service.as_ref().is_some_and(|(name, ns)| *ns == istiod.namespace && services.contains(name))
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let ops: Vec<PatchOperation> = target
        .hooks
        .iter()
        .enumerate()
        .filter(|(_, hook)| (whole || calls_us(hook)) && hook.ca_bundle != bundle)
        .map(|(i, _)| {
            let path = PointerBuf::from_tokens([
                Token::from("webhooks"),
                Token::from(i),
                Token::from("clientConfig"),
                Token::from("caBundle"),
            ]);
            PatchOperation::Add(AddOperation { path, value: json!(encoded) })
        })
        .collect();
    if ops.is_empty() {
        return None;
    }
    let mut guarded = vec![PatchOperation::Test(TestOperation {
        path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
        value: json!(target.resource_version),
    })];
    guarded.extend(ops);
    Some(json_patch::Patch(guarded))
}

/// The tags pointing at `revision`: MutatingWebhookConfigurations labelled `istio.io/tag=<tag>` and
/// `istio.io/rev=<revision>` (`istioctl tag set` and the chart's `revisionTags` both write these).
pub fn tags_of<'a>(
    mwcs: impl IntoIterator<Item = &'a MutatingWebhookConfiguration>,
    revision: &str,
) -> BTreeSet<String> {
    mwcs.into_iter()
        .filter_map(|m| m.metadata.labels.as_ref())
        .filter(|l| l.get(REV_LABEL).map(String::as_str) == Some(revision))
        .filter_map(|l| l.get(TAG_LABEL).cloned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A watch event of either kind.
enum HookEvent {
    Mutating(Result<Event<MutatingWebhookConfiguration>, watcher::Error>),
    Validating(Result<Event<ValidatingWebhookConfiguration>, watcher::Error>),
}

/// Keeps the webhooks patched; publishes the tags and (once, latched) that every webhook of this istiod
/// carries its CA. Runs until dropped.
pub async fn run(
    client: kube::Client,
    istiod: Arc<Istiod>,
    bundle: String,
    tags_tx: watch::Sender<KnownTags>,
    patched_tx: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> Result<(), IstiodError> {
    let mutating_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating_api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mutating_events =
        watcher::watcher(mutating_api.clone(), watcher::Config::default()).default_backoff().map(HookEvent::Mutating);
    let validating_events = watcher::watcher(validating_api.clone(), watcher::Config::default())
        .default_backoff()
        .map(HookEvent::Validating);
    let mut events = futures::stream::select(mutating_events.boxed(), validating_events.boxed());
    let mut mutating: Index<MutatingWebhookConfiguration> = Index::default();
    let mut validating: Index<ValidatingWebhookConfiguration> = Index::default();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bundle = bundle.into_bytes();
    let params = PatchParams::default();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(HookEvent::Mutating(Ok(e))) => { mutating.apply(e); }
                Some(HookEvent::Validating(Ok(e))) => { validating.apply(e); }
                Some(HookEvent::Mutating(Err(err)) | HookEvent::Validating(Err(err))) => {
                    tracing::warn!(%err, "watching webhook configurations");
                    continue;
                }
                None => return Err(IstiodError::Stopped("the webhook configuration watch")),
            },
            _ = retry.tick() => {}
        }
        if !mutating.synced() || !validating.synced() {
            continue;
        }
        let tags = tags_of(mutating.items(), &istiod.revision);
        tags_tx.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&tags);
            if changed {
                tracing::info!(revision = %istiod.revision, ?tags, "revision tags");
                *current = Some(tags.clone());
            }
            changed
        });

        let mut clean = true;
        let plans: Vec<(Target, json_patch::Patch)> = mutating
            .items()
            .map(Target::mutating)
            .chain(validating.items().map(Target::validating))
            .filter_map(|t| plan(&t, &istiod, &tags, &bundle).map(|ops| (t, ops)))
            .collect();
        for (target, ops) in plans {
            let webhooks = ops.len() - 1;
            let patch = Patch::<()>::Json(ops);
            let result = match target.kind {
                WebhookKind::Mutating => {
                    mutating_api.patch(&target.name, &params, &patch).await.map(|o| mutating.apply(Event::Apply(o)))
                }
                WebhookKind::Validating => {
                    validating_api.patch(&target.name, &params, &patch).await.map(|o| validating.apply(Event::Apply(o)))
                }
            };
            match result {
                Ok(_) => {
                    stats.count_webhook_patch();
                    tracing::info!(kind = ?target.kind, name = %target.name, webhooks, "patched caBundle");
                }
                Err(err) => {
                    // A stale resourceVersion fails the test op: the watch brings the new one, then retry.
                    tracing::info!(kind = ?target.kind, name = %target.name, %err, "caBundle patch failed; will retry");
                    clean = false;
                }
            }
        }
        if clean {
            patched_tx.send_if_modified(|patched| !std::mem::replace(patched, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshshift_core::version::IstioVersion;

    const FIXTURES: &str = "/work/shared/fixtures/helm-rendered";

    fn istiod(revision: &str) -> Istiod {
        Istiod { version: IstioVersion::new(1, 10, 6), revision: revision.into(), namespace: "istio-system".into() }
    }

    fn docs(file: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).expect("fixture");
        serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .expect("yaml")
            .into_iter()
            .filter(|d| !d.is_null())
            .collect()
    }

    fn targets(file: &str) -> Vec<Target> {
        docs(file)
            .into_iter()
            .filter_map(|mut d| {
                d["metadata"]["resourceVersion"] = json!("42");
                // The apiserver serves 1.9's v1beta1 configurations as v1 too; the typed client reads v1.
                d["apiVersion"] = json!("admissionregistration.k8s.io/v1");
                match d["kind"].as_str() {
                    Some("MutatingWebhookConfiguration") => {
                        Some(Target::mutating(&serde_json::from_value(d).expect("mwc")))
                    }
                    Some("ValidatingWebhookConfiguration") => {
                        Some(Target::validating(&serde_json::from_value(d).expect("vwc")))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn planned(file: &str, id: &Istiod, tags: &BTreeSet<String>) -> Vec<(String, usize)> {
        targets(file)
            .iter()
            .filter_map(|t| plan(t, id, tags, b"PEM").map(|ops| (t.name.clone(), ops.len() - 1)))
            .collect()
    }

    #[test]
    fn a_revision_patches_its_injector_and_validator_only() {
        let none = BTreeSet::new();
        assert_eq!(
            planned("1.9.7/istiod-rev-1-9-7.yaml", &istiod("1-9-7"), &none),
            [("istio-sidecar-injector-1-9-7".to_owned(), 1)]
        );
        assert!(planned("1.9.7/istiod-rev-1-9-7.yaml", &istiod("1-10-6"), &none).is_empty());
        // The 1.9 base validator calls `istiod`: the default revision's.
        assert!(planned("1.9.7/base-no-crds.yaml", &istiod("1-9-7"), &none).is_empty());
        assert_eq!(
            planned("1.9.7/base-no-crds.yaml", &istiod("default"), &none),
            [("istiod-istio-system".to_owned(), 1)]
        );
        assert_eq!(
            planned("1.24.6/istiod-rev-1-24-6.yaml", &istiod("1-24-6"), &none),
            [("istio-sidecar-injector-1-24-6".to_owned(), 2), ("istio-validator-1-24-6-istio-system".to_owned(), 1)]
        );
    }

    #[test]
    fn tags_are_found_and_bring_the_default_validator() {
        let mwcs: Vec<MutatingWebhookConfiguration> = docs("1.24.6/revision-tags-default-prod-to-1-24-6.yaml")
            .into_iter()
            .filter(|d| d["kind"] == "MutatingWebhookConfiguration")
            .map(|mut d| {
                d["apiVersion"] = json!("admissionregistration.k8s.io/v1");
                serde_json::from_value(d).expect("mwc")
            })
            .collect();
        let tags = tags_of(&mwcs, "1-24-6");
        assert_eq!(tags, BTreeSet::from(["default".to_owned(), "prod".to_owned()]));
        assert!(tags_of(&mwcs, "1-9-7").is_empty());
        let id = istiod("1-24-6");
        let tag_plans = planned("1.24.6/revision-tags-default-prod-to-1-24-6.yaml", &id, &tags);
        assert_eq!(
            tag_plans.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["istio-revision-tag-default", "istio-revision-tag-prod"]
        );
        // With the default tag, the base chart's `istiod-default-validator` (calling `istiod`) is ours.
        assert_eq!(planned("1.24.6/base-no-crds.yaml", &id, &tags), [("istiod-default-validator".to_owned(), 1)]);
        assert!(planned("1.24.6/base-no-crds.yaml", &id, &BTreeSet::from(["prod".to_owned()])).is_empty());
    }

    #[test]
    fn the_patch_is_guarded_touches_only_ca_bundles_and_stops_when_done() {
        let mut target = targets("1.10.6/revision-tag-prod-to-1-10-6.yaml").remove(0);
        let id = istiod("1-10-6");
        let ops = plan(&target, &id, &BTreeSet::new(), b"PEM").expect("a plan");
        let encoded = base64::engine::general_purpose::STANDARD.encode(b"PEM");
        assert_eq!(
            serde_json::to_value(&ops).expect("json"),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": encoded}
            ])
        );
        target.hooks[0].ca_bundle = b"PEM".to_vec();
        assert_eq!(plan(&target, &id, &BTreeSet::new(), b"PEM").expect("one left").len(), 2);
        target.hooks[1].ca_bundle = b"PEM".to_vec();
        assert_eq!(plan(&target, &id, &BTreeSet::new(), b"PEM"), None);
    }

    #[test]
    fn a_webhook_calling_another_namespace_is_not_ours() {
        let target = Target {
            kind: WebhookKind::Validating,
            name: "v".into(),
            resource_version: "1".into(),
            labels: BTreeMap::new(),
            hooks: vec![HookView { service: Some(("istiod-1-10-6".into(), "other".into())), ca_bundle: vec![] }],
        };
        assert_eq!(plan(&target, &istiod("1-10-6"), &BTreeSet::new(), b"PEM"), None);
    }
}
