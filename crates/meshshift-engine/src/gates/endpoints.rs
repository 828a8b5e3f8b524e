//! After a selector changes, wait until the Service's Endpoints list exactly the intended pods: until
//! then kube-proxy and the load balancer still send traffic by the old list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, ListParams};

use crate::context::Ctx;
use crate::error::EngineError;

fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Waits until the ready addresses of `namespace/service`'s Endpoints are non-empty and all belong to
/// pods matching `pods` (and, when `all` is set, include every ready one of them).
pub async fn wait_only(
    ctx: &Ctx,
    namespace: &str,
    service: &str,
    pods: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(), EngineError> {
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let lp = ListParams::default().labels(&selector_string(pods));
    let outcome = super::until(timeout, Duration::from_millis(100), || {
        let (endpoints, pod_api, lp) = (endpoints.clone(), pod_api.clone(), lp.clone());
        async move {
            let err = |e| EngineError::api_about(format!("Endpoints/{namespace}/{service}"), e);
            let wanted: BTreeSet<String> =
                pod_api.list(&lp).await.map_err(err)?.items.into_iter().filter_map(|p| p.metadata.name).collect();
            let listed: BTreeSet<String> = endpoints
                .get_opt(service)
                .await
                .map_err(err)?
                .and_then(|e| e.subsets)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|s| s.addresses.unwrap_or_default())
                .filter_map(|a| a.target_ref.and_then(|t| t.name))
                .collect();
            let strangers: Vec<&String> = listed.difference(&wanted).collect();
            Ok::<_, EngineError>(if listed.is_empty() {
                Err(format!("the Endpoints of {namespace}/{service} list no ready pod"))
            } else if !strangers.is_empty() {
                Err(format!("the Endpoints of {namespace}/{service} still list {strangers:?}"))
            } else {
                Ok(())
            })
        }
    })
    .await?;
    outcome.map_err(|detail| EngineError::Timeout(format!("{detail} after {} s", timeout.as_secs())))
}
