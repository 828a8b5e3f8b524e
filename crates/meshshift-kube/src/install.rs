//! Apply a set of objects and wait until the Deployments among them have rolled out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::Value;

use crate::manifest::{Applier, ManifestError};
use crate::rollout::{RolloutError, wait_rollout};

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] ManifestError),
    /// A Deployment did not roll out.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
}

/// `namespace/name` of every Deployment in `docs` (namespaced ones without a namespace are in `default_ns`).
pub fn deployments(docs: &[Value], default_ns: &str) -> Vec<(String, String)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .filter_map(|d| {
            let name = d["metadata"]["name"].as_str()?.to_owned();
            let ns = d["metadata"]["namespace"].as_str().unwrap_or(default_ns).to_owned();
            Some((ns, name))
        })
        .collect()
}

/// Applies `docs`, then waits (each at most `timeout`) for their Deployments, calling `progress` before
/// each wait.
pub async fn apply_and_wait(
    client: &Client,
    default_ns: &str,
    docs: Vec<Value>,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<usize, InstallError> {
    let waits = deployments(&docs, default_ns);
    let applied = Applier::new(client.clone(), default_ns).apply_all(docs).await?;
    for (ns, name) in waits {
        progress(&format!("waiting for deployment {ns}/{name}"));
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_rollout(&api, &ns, &name, timeout).await?;
    }
    Ok(applied)
}
