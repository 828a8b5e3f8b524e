//! Workloads and their pods' proxies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterSnapshot, Pod};
use crate::proxy::{ProxyInfo, RevisionSource, detect_proxy};

/// A pod's proxy, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Proxy version (image tag), if known.
    pub version: Option<String>,
    /// Revision, if known.
    pub revision: Option<String>,
    /// Where the revision was read.
    pub revision_source: Option<RevisionSource>,
    /// Runs as a native sidecar.
    pub native_sidecar: bool,
}

impl From<&ProxyInfo> for ProxyStatus {
    fn from(p: &ProxyInfo) -> Self {
        Self {
            version: p.version.as_ref().map(ToString::to_string),
            revision: p.revision.clone(),
            revision_source: p.revision_source,
            native_sidecar: p.native_sidecar,
        }
    }
}

/// One pod of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// Pod name.
    pub name: String,
    /// Condition Ready.
    pub ready: bool,
    /// Its sidecar, if it has one.
    pub proxy: Option<ProxyStatus>,
}

/// A workload and its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// Namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, another owner kind, or `Pod` for a bare pod.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Its pods.
    pub pods: Vec<PodStatus>,
}

/// Proxies counted per revision and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCount {
    /// Revision (`unknown` when the pod does not tell).
    pub revision: String,
    /// Version (`unknown` when the image has no version tag).
    pub version: String,
    /// Number of pods.
    pub pods: usize,
}

/// The workload a pod belongs to: Deployment through its ReplicaSet, else its direct owner, else itself.
pub fn pod_workload(snapshot: &ClusterSnapshot, pod: &Pod) -> (String, String) {
    match &pod.owner {
        Some(o) if o.kind == "ReplicaSet" => snapshot
            .replica_sets
            .iter()
            .find(|rs| rs.namespace == pod.namespace && rs.name == o.name)
            .map(|rs| ("Deployment".to_owned(), rs.deployment.clone()))
            .unwrap_or_else(|| (o.kind.clone(), o.name.clone())),
        Some(o) => (o.kind.clone(), o.name.clone()),
        None => ("Pod".to_owned(), pod.name.clone()),
    }
}

/// Groups pods into workloads; workloads with no pods are listed too.
pub fn workloads(snapshot: &ClusterSnapshot) -> Vec<WorkloadStatus> {
    let mut map: BTreeMap<(String, String, String), Vec<PodStatus>> = BTreeMap::new();
    for w in &snapshot.workloads {
        map.entry((w.namespace.clone(), w.kind.as_str().to_owned(), w.name.clone())).or_default();
    }
    for pod in &snapshot.pods {
        let (kind, name) = pod_workload(snapshot, pod);
        map.entry((pod.namespace.clone(), kind, name)).or_default().push(PodStatus {
            name: pod.name.clone(),
            ready: pod.ready,
            proxy: detect_proxy(&pod.spec).as_ref().map(ProxyStatus::from),
        });
    }
    map.into_iter()
        .map(|((namespace, kind, name), mut pods)| {
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            WorkloadStatus { namespace, kind, name, pods }
        })
        .collect()
}

/// Totals of proxies per revision and version.
pub fn proxy_counts(workloads: &[WorkloadStatus]) -> Vec<ProxyCount> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in workloads.iter().flat_map(|w| &w.pods).filter_map(|p| p.proxy.as_ref()) {
        let key = (
            p.revision.clone().unwrap_or_else(|| "unknown".to_owned()),
            p.version.clone().unwrap_or_else(|| "unknown".to_owned()),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts.into_iter().map(|((revision, version), pods)| ProxyCount { revision, version, pods }).collect()
}
