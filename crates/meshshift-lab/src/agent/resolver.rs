//! Service name resolution for containers: the lab has no DNS, so a container asks the node agent, which
//! answers from a reflector (an in-memory copy of every Service, kept current by a watch).
//!
//! The rules are those of cluster DNS for ClusterIP Services: `name` and `name.ns` (search domains of a
//! pod in `pod_ns`), `name.ns.svc` and `name.ns.svc.cluster.local` (with or without the final dot), case
//! insensitive. An IPv4 literal resolves to itself, so a container can be configured with either form.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::containers::ServiceResolver;

/// The cluster's DNS domain.
const CLUSTER_DOMAIN: &str = "cluster.local";

/// The Service a host name designates: `(namespace, name)`, or `None` if the name is not a Service name.
pub(crate) fn service_of_host(pod_ns: &str, host: &str) -> Option<(String, String)> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let (name, ns) = match labels.as_slice() {
        [name] => (*name, pod_ns),
        [name, ns] | [name, ns, "svc"] => (*name, *ns),
        [name, ns, "svc", rest @ ..] if rest.join(".") == CLUSTER_DOMAIN => (*name, *ns),
        _ => return None,
    };
    Some((ns.to_owned(), name.to_owned()))
}

/// The address of `svc` for `port`: its ClusterIP and the port, if the Service has an IPv4 ClusterIP (not
/// headless) and exposes that port.
pub(crate) fn service_address(svc: &Service, port: u16) -> Option<SocketAddrV4> {
    let spec = svc.spec.as_ref()?;
    let ip: Ipv4Addr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let exposes = spec.ports.iter().flatten().any(|p| p.port == i32::from(port));
    exposes.then_some(SocketAddrV4::new(ip, port))
}

/// Resolution against any lookup by `(namespace, name)`: the pure core of [`from_store`].
pub(crate) fn resolve_with(
    lookup: impl Fn(&str, &str) -> Option<Arc<Service>>,
    pod_ns: &str,
    host: &str,
    port: u16,
) -> Option<SocketAddrV4> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(SocketAddrV4::new(ip, port));
    }
    let (ns, name) = service_of_host(pod_ns, host)?;
    let svc = lookup(&ns, &name)?;
    service_address(&svc, port)
}

/// A [`ServiceResolver`] reading `store`.
pub(crate) fn from_store(store: Store<Service>) -> ServiceResolver {
    Arc::new(move |pod_ns: &str, host: &str, port: u16| {
        resolve_with(|ns, name| store.get(&ObjectRef::new(name).within(ns)), pod_ns, host, port)
    })
}

/// Starts the Services reflector: returns the store (empty until the first list completes; see
/// [`Store::wait_until_ready`]) and the future that keeps it current (run it until shutdown).
pub(crate) fn services_reflector(client: Client) -> (Store<Service>, impl std::future::Future<Output = ()> + Send) {
    let (store, writer) = reflector::store();
    let api: Api<Service> = Api::all(client);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let run = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(%err, "watching Services for name resolution failed; retrying");
            }
        }
    };
    (store, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[i32]) -> Arc<Service> {
        let ports: Vec<_> = ports.iter().map(|p| serde_json::json!({ "port": p })).collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": ns },
                "spec": { "clusterIP": ip, "ports": ports }
            }))
            .expect("service"),
        )
    }

    #[test]
    fn host_names_follow_cluster_dns_rules() {
        let of = |host| service_of_host("bookinfo", host);
        let details = Some(("bookinfo".to_owned(), "details".to_owned()));
        assert_eq!(of("details"), details);
        assert_eq!(of("details.bookinfo"), details);
        assert_eq!(of("details.bookinfo.svc"), details);
        assert_eq!(of("details.bookinfo.svc.cluster.local"), details);
        assert_eq!(of("details.bookinfo.svc.cluster.local."), details);
        assert_eq!(of("Details.BookInfo.SVC"), details);
        assert_eq!(of("istiod-1-9-7.istio-system.svc"), Some(("istio-system".into(), "istiod-1-9-7".into())));
        assert_eq!(of("details.bookinfo.svc.cluster"), None);
        assert_eq!(of("details.bookinfo.pod"), None);
        assert_eq!(of("details.bookinfo.svc.example.com"), None);
        assert_eq!(of("a.b.c.d.e.f"), None);
        assert_eq!(of(""), None);
        assert_eq!(of("details..svc"), None);
    }

    #[test]
    fn resolves_cluster_ip_and_port() {
        let services = [svc("bookinfo", "details", "10.96.0.20", &[9080]), svc("other", "details", "None", &[9080])];
        let lookup = |ns: &str, name: &str| {
            services
                .iter()
                .find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name))
                .cloned()
        };
        let want = Some(SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 20), 9080));
        assert_eq!(resolve_with(lookup, "bookinfo", "details", 9080), want);
        assert_eq!(resolve_with(lookup, "default", "details.bookinfo.svc.cluster.local", 9080), want);
        assert_eq!(resolve_with(lookup, "default", "details", 9080), None, "no such Service in the pod's namespace");
        assert_eq!(resolve_with(lookup, "bookinfo", "details", 80), None, "port not exposed");
        assert_eq!(resolve_with(lookup, "other", "details", 9080), None, "headless Service");
        assert_eq!(
            resolve_with(lookup, "bookinfo", "10.96.3.4", 81),
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 96, 3, 4), 81)),
            "IP literals resolve to themselves"
        );
    }
}
