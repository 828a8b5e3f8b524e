//! `meshshift status`: the report of a mesh's control planes, injection, proxies and gateways, with
//! findings. [`analyze`] is a pure function of a [`ClusterSnapshot`].

pub mod controlplane;
mod findings;
pub mod gateways;
pub mod namespaces;
pub mod workloads;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use controlplane::{DefaultRevision, TagStatus, VersionSource};
pub use gateways::{GatewayServiceStatus, GatewayStatus, SelectedGateway};
pub use namespaces::{InjectionMode, NamespaceStatus};
pub use workloads::{PodStatus, ProxyCount, ProxyStatus, WorkloadStatus};

use crate::finding::Finding;
use crate::model::ClusterSnapshot;

/// One control-plane revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionStatus {
    /// Revision name (`default` for a non-revisioned install).
    pub revision: String,
    /// istiod namespace.
    pub namespace: String,
    /// istiod Deployment.
    pub deployment: String,
    /// Version, if known.
    pub version: Option<String>,
    /// Where the version was read.
    pub version_source: Option<VersionSource>,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Its own injector webhook configurations (tags excluded).
    pub injector_webhooks: Vec<String>,
    /// Revision tags pointing at it.
    pub tags: Vec<String>,
    /// Proxies (pods) of this revision.
    pub proxies: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Control-plane revisions.
    pub revisions: Vec<RevisionStatus>,
    /// Revision tags.
    pub tags: Vec<TagStatus>,
    /// The default revision, by each mechanism.
    pub default_revision: DefaultRevision,
    /// Namespaces and their injection.
    pub namespaces: Vec<NamespaceStatus>,
    /// Workloads and their pods' proxies.
    pub workloads: Vec<WorkloadStatus>,
    /// Proxy totals per revision and version.
    pub proxies: Vec<ProxyCount>,
    /// Gateway Deployments.
    pub gateways: Vec<GatewayStatus>,
    /// Services selecting gateways.
    pub gateway_services: Vec<GatewayServiceStatus>,
    /// What is wrong, sorted by severity (worst first), code and subject.
    pub findings: Vec<Finding>,
}

/// Builds the status report of a snapshot.
pub fn analyze(snapshot: &ClusterSnapshot) -> StatusReport {
    let istiods = controlplane::istiods(snapshot);
    let revision_names: BTreeSet<String> = istiods.iter().map(|i| i.revision.clone()).collect();
    let hooks = controlplane::injector_hooks(snapshot);
    let tags = controlplane::tags(&hooks, &revision_names);
    let default_revision = controlplane::default_revision(snapshot, &hooks, &tags);
    let namespaces = namespaces::namespaces(&snapshot.namespaces, &hooks, &revision_names, &tags);
    let workloads = workloads::workloads(snapshot);
    let proxies = workloads::proxy_counts(&workloads);
    let mut gateways = gateways::gateways(snapshot);
    // A gateway labelled with a tag (`istio.io/rev: prod`) belongs to the revision the tag points at.
    for g in &mut gateways {
        if let Some(t) = tags.iter().find(|t| t.tag == g.revision) {
            g.revision = t.revision.clone();
        }
    }
    let gateway_services = gateways::gateway_services(snapshot, &gateways);

    let revisions = istiods
        .iter()
        .map(|i| RevisionStatus {
            revision: i.revision.clone(),
            namespace: i.namespace.clone(),
            deployment: i.deployment.clone(),
            version: i.version.as_ref().map(ToString::to_string),
            version_source: i.version_source,
            replicas: i.replicas,
            ready_replicas: i.ready_replicas,
            injector_webhooks: hooks
                .iter()
                .filter(|h| h.revision == i.revision && h.tag.is_none())
                .map(|h| h.configuration.name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            tags: tags.iter().filter(|t| t.revision == i.revision).map(|t| t.tag.clone()).collect(),
            proxies: proxies.iter().filter(|p| p.revision == i.revision).map(|p| p.pods).sum(),
        })
        .collect();

    let findings = findings::findings(&findings::Inputs {
        snapshot,
        istiods: &istiods,
        tags: &tags,
        namespaces: &namespaces,
        gateways: &gateways,
        gateway_services: &gateway_services,
    });

    StatusReport {
        revisions,
        tags,
        default_revision,
        namespaces,
        workloads,
        proxies,
        gateways,
        gateway_services,
        findings,
    }
}
