//! Does green serve what blue serves? A Ready gateway only means it received its first config; it can
//! still lack a listener or a route (istio#29680, #14861, #44372). So before the switch, real requests go
//! through green's own ClusterIP Service, for every HTTP port of the user's LoadBalancer and every route
//! path the mesh's VirtualServices define, and green must answer each exactly as blue does.
//!
//! Requests travel through the apiserver's service proxy, so they work from anywhere kubectl works,
//! without port-forwards or in-cluster pods.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};
use kube::client::Body;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::context::Ctx;
use crate::error::EngineError;

/// At most this many paths are probed (a mesh with hundreds of routes gets a sample of them).
const MAX_PATHS: usize = 20;

/// Route paths of every VirtualService: exact paths as they are, prefixes as their prefix.
pub async fn route_paths(ctx: &Ctx) -> Result<Vec<String>, EngineError> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "VirtualService"),
        "virtualservices",
    );
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // No Istio CRDs (or not readable): probe the root only.
        Err(_) => Vec::new(),
    };
    let mut paths = BTreeSet::new();
    for vs in list {
        for route in vs.data["spec"]["http"].as_array().into_iter().flatten() {
            for m in route["match"].as_array().into_iter().flatten() {
                if let Some(p) = m["uri"]["exact"].as_str().or_else(|| m["uri"]["prefix"].as_str()) {
                    paths.insert(p.to_owned());
                }
            }
        }
    }
    if paths.is_empty() {
        paths.insert("/".to_owned());
    }
    Ok(paths.into_iter().take(MAX_PATHS).collect())
}

/// The status of `GET path` through `namespace/service:port`, or the transport error.
async fn status(ctx: &Ctx, namespace: &str, service: &str, port: i64, path: &str) -> Result<u16, String> {
    let uri = format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}");
    let request = http::Request::get(&uri).body(Body::empty()).map_err(|e| e.to_string())?;
    let send = ctx.client.send(request);
    match tokio::time::timeout(Duration::from_secs(10), send).await {
        // The apiserver refusing the proxy request is not the gateway's answer: comparing two refusals
        // would prove nothing.
        Ok(Ok(response)) => {
            let code = response.status().as_u16();
            if matches!(code, 401 | 403) {
                let body = response.into_body().collect_bytes().await.unwrap_or_default();
                let status: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if status["kind"] == "Status" {
                    return Err(format!(
                        "the apiserver refused to proxy to {namespace}/{service} ({code} {}): grant `get services/proxy` (see `meshshift rbac`)",
                        status["reason"].as_str().unwrap_or_default()
                    ));
                }
            }
            Ok(code)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// The HTTP ports (`name` starting with `http`, Istio's convention) of a Service, as `(port, targetPort)`.
pub fn http_ports(service: &Value) -> Vec<(i64, Value)> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("http")))
        .filter_map(|p| Some((p["port"].as_i64()?, p.get("targetPort").cloned().unwrap_or_else(|| p["port"].clone()))))
        .collect()
}

/// Compares green with blue: for each of the load balancer's HTTP ports (mapped to green's and blue's
/// Service ports by target port) and each route path, both answer with the same status, and green's is
/// not a 5xx. Retries for `timeout` while green is still picking up its routes.
pub async fn same_as_blue(
    ctx: &Ctx,
    namespace: &str,
    green: &Value,
    blue: &Value,
    load_balancer: &Value,
    timeout: Duration,
) -> Result<(), EngineError> {
    let paths = route_paths(ctx).await?;
    let port_for = |svc: &Value, target: &Value| http_ports(svc).into_iter().find(|(_, t)| t == target).map(|(p, _)| p);
    let (green_name, blue_name) =
        (green["metadata"]["name"].as_str().unwrap_or_default(), blue["metadata"]["name"].as_str().unwrap_or_default());
    let mut probes = Vec::new();
    for (lb_port, target) in http_ports(load_balancer) {
        match (port_for(green, &target), port_for(blue, &target)) {
            (Some(g), Some(b)) => probes.extend(paths.iter().map(|p| (lb_port, g, b, p.clone()))),
            (None, _) => {
                return Err(EngineError::Precondition {
                    step: String::new(),
                    detail: format!("green Service {green_name} has no port for the load balancer's port {lb_port}"),
                });
            }
            (Some(_), None) => {}
        }
    }
    ctx.detail(format!("probing {} path/port pairs through {green_name} and {blue_name}", probes.len()));
    let outcome = super::until(timeout, Duration::from_millis(500), || {
        let probes = probes.clone();
        async move {
            for (lb_port, g, b, path) in &probes {
                let want = status(ctx, namespace, blue_name, *b, path).await;
                let got = status(ctx, namespace, green_name, *g, path).await;
                let ok = matches!((&want, &got), (Ok(w), Ok(g)) if w == g && *g < 500);
                if !ok {
                    return Ok::<_, EngineError>(Err(format!(
                        "GET {path} on load-balancer port {lb_port}: blue answers {}, green {}",
                        want.map(|s| s.to_string()).unwrap_or_else(|e| e),
                        got.map(|s| s.to_string()).unwrap_or_else(|e| e)
                    )));
                }
            }
            Ok(Ok(()))
        }
    })
    .await?;
    outcome.map_err(|detail| EngineError::Precondition { step: String::new(), detail })
}
