//! Namespace injection: what each namespace's labels say, and which revision would really inject a new
//! pod there, found by evaluating the injector webhooks exactly as the apiserver does.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::controlplane::{InjectorHook, TagStatus};
use crate::model::Namespace;
use crate::proxy::REV_LABEL;
use crate::selector::Labels;

/// The namespace label that turns injection on (or off) for the default revision.
pub const INJECTION_LABEL: &str = "istio-injection";

/// The injection label a namespace carries. `istio-injection` takes precedence over `istio.io/rev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "label", content = "value")]
pub enum InjectionMode {
    /// `istio-injection=<value>` (`enabled` or `disabled`).
    IstioInjection(String),
    /// `istio.io/rev=<revision or tag>`.
    Revision(String),
    /// Neither label.
    None,
}

impl InjectionMode {
    /// Reads the mode from namespace labels, with Istio's precedence.
    pub fn of(labels: &Labels) -> Self {
        if let Some(v) = labels.get(INJECTION_LABEL) {
            Self::IstioInjection(v.clone())
        } else if let Some(v) = labels.get(REV_LABEL) {
            Self::Revision(v.clone())
        } else {
            Self::None
        }
    }
}

/// A namespace's injection state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStatus {
    /// Namespace name.
    pub name: String,
    /// The label that decides.
    pub mode: InjectionMode,
    /// The revision that would inject a new pod here (none when nothing injects or several do).
    pub injected_by: Option<String>,
    /// The webhook configurations that select a new pod here.
    pub webhooks: Vec<String>,
    /// Both `istio-injection` and `istio.io/rev` are set.
    pub conflicting_labels: bool,
    /// The `istio.io/rev` value names neither a revision nor a tag.
    pub unknown_revision: Option<String>,
}

/// Resolves every namespace.
pub fn namespaces(
    namespaces: &[Namespace],
    hooks: &[InjectorHook<'_>],
    revisions: &BTreeSet<String>,
    tags: &[TagStatus],
) -> Vec<NamespaceStatus> {
    let mut out: Vec<NamespaceStatus> = namespaces
        .iter()
        .map(|ns| {
            let matching: Vec<&InjectorHook<'_>> =
                hooks.iter().filter(|h| h.selects(&ns.labels, &Labels::new())).collect();
            let webhooks: BTreeSet<String> = matching.iter().map(|h| h.configuration.name.clone()).collect();
            let injecting: BTreeSet<&str> = matching.iter().map(|h| h.revision.as_str()).collect();
            let injected_by = match (webhooks.len(), injecting.first()) {
                (1, Some(rev)) => Some((*rev).to_owned()),
                _ => None,
            };
            let unknown_revision = ns
                .labels
                .get(REV_LABEL)
                .filter(|r| !revisions.contains(r.as_str()) && !tags.iter().any(|t| &t.tag == *r));
            NamespaceStatus {
                name: ns.name.clone(),
                mode: InjectionMode::of(&ns.labels),
                injected_by,
                webhooks: webhooks.into_iter().collect(),
                conflicting_labels: ns.labels.contains_key(INJECTION_LABEL) && ns.labels.contains_key(REV_LABEL),
                unknown_revision: unknown_revision.cloned(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
