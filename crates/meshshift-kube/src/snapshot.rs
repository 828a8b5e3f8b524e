//! Reads a cluster into a [`ClusterSnapshot`]: one paginated list per kind, no per-object GETs.
//! A kind the caller may not list degrades the snapshot (recorded in `unreadable`) instead of failing it.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use meshshift_core::model::{ClusterSnapshot, Unreadable};
use serde::de::DeserializeOwned;

use crate::convert;
use crate::list::{Listed, list_all};

/// Why a snapshot could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Listing a kind failed for a reason other than permissions.
    #[error("listing {resource} failed: {source}")]
    List {
        /// The resource being listed.
        resource: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

async fn list<K>(client: &Client, unreadable: &mut Vec<Unreadable>) -> Result<Vec<K>, ReadError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let resource = K::plural(&()).into_owned();
    let api: Api<K> = Api::all(client.clone());
    match list_all(&api, &ListParams::default()).await {
        Ok(Listed::All(items)) => Ok(items),
        Ok(Listed::Forbidden(reason)) => {
            unreadable.push(Unreadable { resource, reason });
            Ok(Vec::new())
        }
        Err(source) => Err(ReadError::List { resource, source }),
    }
}

/// Reads everything the status report and the planner need.
pub async fn read_snapshot(client: &Client) -> Result<ClusterSnapshot, ReadError> {
    let mut unreadable = Vec::new();
    let u = &mut unreadable;
    let namespaces: Vec<Namespace> = list(client, u).await?;
    let deployments: Vec<Deployment> = list(client, u).await?;
    let stateful_sets: Vec<StatefulSet> = list(client, u).await?;
    let daemon_sets: Vec<DaemonSet> = list(client, u).await?;
    let replica_sets: Vec<ReplicaSet> = list(client, u).await?;
    let pods: Vec<Pod> = list(client, u).await?;
    let services: Vec<Service> = list(client, u).await?;
    let mutating: Vec<MutatingWebhookConfiguration> = list(client, u).await?;
    let validating: Vec<ValidatingWebhookConfiguration> = list(client, u).await?;
    let config_maps: Vec<ConfigMap> = list(client, u).await?;

    let mut workloads: Vec<_> = deployments.iter().map(convert::deployment).collect();
    workloads.extend(stateful_sets.iter().map(convert::stateful_set));
    workloads.extend(daemon_sets.iter().map(convert::daemon_set));
    Ok(ClusterSnapshot {
        namespaces: namespaces.iter().map(convert::namespace_of).collect(),
        workloads,
        replica_sets: replica_sets.iter().filter_map(convert::replica_set).collect(),
        pods: pods.iter().map(convert::pod).collect(),
        services: services.iter().map(convert::service).collect(),
        mutating_webhooks: mutating.iter().map(convert::mutating).collect(),
        validating_webhooks: validating.iter().map(convert::validating).collect(),
        config_maps: config_maps
            .iter()
            .filter(|c| c.metadata.name.as_deref().is_some_and(convert::is_istio_config_map))
            .map(convert::config_map)
            .collect(),
        unreadable,
    })
}
