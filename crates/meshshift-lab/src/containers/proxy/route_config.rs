//! Building a gateway's [`RouteTable`] from config, as pure functions: which Gateways select the router
//! pod, which listener port each of their servers maps to (through the gateway's own Service), and the
//! VirtualServices bound to them, parsed into rules. Config the lab cannot use becomes a warning, not an
//! error: one bad VirtualService must not take the others' routes down (as in Istio, where istiod
//! rejects or ignores it).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::proxy_config::parse_duration;
use super::retry::RetryPolicy;
use super::routes::{
    BoundServer, Destination, HttpRoute, RESERVED_PORTS, RequestMatch, RouteAction, RouteTable, ServerHost,
    StringMatch, VirtualServiceRoutes, full_match_regex,
};
use crate::containers::protocol::{ConfigSnapshot, ServiceEntry};

/// What the route table needs to know about the router pod.
#[derive(Debug, Clone, Default)]
pub struct GatewayPod {
    /// The pod's namespace (where its Services live).
    pub namespace: String,
    /// The pod's labels (matched by Gateway selectors and Service selectors).
    pub labels: BTreeMap<String, String>,
    /// The `istio-proxy` container's declared ports: (number, name).
    pub container_ports: Vec<(u16, Option<String>)>,
}

impl RouteTable {
    /// Builds the table for `pod` from `snapshot`: the Gateways selecting the pod, their servers mapped to
    /// listener ports, and the VirtualServices bound to them.
    pub fn build(snapshot: &ConfigSnapshot, pod: &GatewayPod) -> RouteTable {
        let mut table = RouteTable::default();
        for gateway in &snapshot.gateways {
            table.add_gateway(gateway, pod, &snapshot.services);
        }
        let mut virtual_services: Vec<&Value> = snapshot.virtual_services.iter().collect();
        // Istio merges rules of several VirtualServices for one host oldest first.
        virtual_services
            .sort_by_key(|vs| vs.pointer("/metadata/creationTimestamp").and_then(Value::as_str).map(str::to_owned));
        for vs in virtual_services {
            match parse_virtual_service(vs, &snapshot.services) {
                Ok(Some(parsed)) => table.virtual_services.push(parsed),
                Ok(None) => {}
                Err(warning) => table.warnings.push(warning),
            }
        }
        table
    }

    fn add_gateway(&mut self, gateway: &Value, pod: &GatewayPod, services: &[ServiceEntry]) {
        let (namespace, name) = object_id(gateway);
        let id = format!("{namespace}/{name}");
        let selector = gateway.pointer("/spec/selector").and_then(Value::as_object);
        let selected = selector.is_none_or(|s| {
            s.iter().all(|(k, v)| v.as_str().is_some_and(|v| pod.labels.get(k).map(String::as_str) == Some(v)))
        });
        if !selected {
            return;
        }
        let servers = gateway.pointer("/spec/servers").and_then(Value::as_array).cloned().unwrap_or_default();
        for server in servers {
            let Some(number) =
                server.pointer("/port/number").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok())
            else {
                self.warnings.push(format!("Gateway {id}: a server without port.number"));
                continue;
            };
            let protocol =
                server.pointer("/port/protocol").and_then(Value::as_str).unwrap_or("HTTP").to_ascii_uppercase();
            if !matches!(protocol.as_str(), "HTTP" | "HTTP2" | "HTTPS" | "GRPC") {
                self.warnings.push(format!("Gateway {id}: port {number} has protocol {protocol}, not emulated"));
                continue;
            }
            let hosts: Vec<ServerHost> = server
                .get("hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(server_host)
                .collect();
            for port in listener_ports(number, pod, services) {
                if RESERVED_PORTS.contains(&port) {
                    self.warnings.push(format!("Gateway {id}: port {number} maps to reserved port {port}"));
                    continue;
                }
                self.listeners.entry(port).or_default().push(BoundServer {
                    gateway: id.clone(),
                    gateway_namespace: namespace.clone(),
                    number,
                    hosts: hosts.clone(),
                });
            }
        }
    }
}

/// The Listener ports for Gateway server port `number`: the target ports of the pod's own Services
/// (selector matching its labels, in its namespace) with that port; else `number` itself when the pod
/// declares it; else the legacy chart's 80 -> 8080 / 443 -> 8443 when the pod declares that target; else
/// `number` (an injected gateway's Service maps ports 1:1).
pub fn listener_ports(number: u16, pod: &GatewayPod, services: &[ServiceEntry]) -> Vec<u16> {
    let declared = |p: u16| pod.container_ports.iter().any(|(n, _)| *n == p);
    let mut ports = BTreeSet::new();
    for svc in services {
        let own = svc.namespace == pod.namespace
            && !svc.selector.is_empty()
            && svc.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v));
        if !own {
            continue;
        }
        for (port, target) in &svc.target_ports {
            if *port != number {
                continue;
            }
            let resolved = match target {
                IntOrString::Int(n) => u16::try_from(*n).ok(),
                IntOrString::String(name) => {
                    pod.container_ports.iter().find(|(_, n)| n.as_deref() == Some(name.as_str())).map(|(p, _)| *p)
                }
            };
            ports.extend(resolved);
        }
    }
    if !ports.is_empty() {
        return ports.into_iter().collect();
    }
    if declared(number) {
        return vec![number];
    }
    let legacy = match number {
        80 => Some(8080),
        443 => Some(8443),
        _ => None,
    };
    match legacy {
        Some(target) if declared(target) => vec![target],
        _ => vec![number],
    }
}

fn parse_virtual_service(vs: &Value, services: &[ServiceEntry]) -> Result<Option<VirtualServiceRoutes>, String> {
    let (namespace, name) = object_id(vs);
    let id = format!("{namespace}/{name}");
    let spec = vs.get("spec").cloned().unwrap_or(Value::Null);
    let gateways: Vec<String> = spec
        .get("gateways")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|g| *g != "mesh")
        .map(|g| qualify_gateway(g, &namespace))
        .collect();
    if gateways.is_empty() {
        return Ok(None); // a mesh-only VirtualService: nothing for a gateway
    }
    if spec.get("delegate").is_some() || spec.pointer("/http/0/delegate").is_some() {
        return Err(format!("VirtualService {id}: delegation is not emulated"));
    }
    let hosts = spec
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|h| if h == "*" || h.contains('.') { h.to_ascii_lowercase() } else { qualify_host(h, &namespace) })
        .collect();
    let mut routes = Vec::new();
    for (i, rule) in spec.get("http").and_then(Value::as_array).into_iter().flatten().enumerate() {
        routes.push(parse_rule(rule, &namespace, services).map_err(|e| format!("VirtualService {id} http[{i}]: {e}"))?);
    }
    Ok(Some(VirtualServiceRoutes { id, namespace, hosts, gateways, routes }))
}

fn parse_rule(rule: &Value, namespace: &str, services: &[ServiceEntry]) -> Result<HttpRoute, String> {
    let mut matches = Vec::new();
    for m in rule.get("match").and_then(Value::as_array).into_iter().flatten() {
        matches.push(parse_match(m, namespace)?);
    }
    let action = if let Some(redirect) = rule.get("redirect") {
        RouteAction::Redirect {
            uri: redirect.get("uri").and_then(Value::as_str).map(str::to_owned),
            authority: redirect.get("authority").and_then(Value::as_str).map(str::to_owned),
            code: redirect
                .get("redirectCode")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        }
    } else if let Some(direct) = rule.get("directResponse") {
        RouteAction::Direct {
            status: direct.get("status").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(200),
            body: direct.pointer("/body/string").and_then(Value::as_str).unwrap_or_default().to_owned(),
        }
    } else {
        let entries = rule.get("route").and_then(Value::as_array).cloned().unwrap_or_default();
        if entries.is_empty() {
            return Err("no route, redirect or directResponse".into());
        }
        let single = entries.len() == 1;
        let mut destinations = Vec::new();
        for entry in &entries {
            let host =
                entry.pointer("/destination/host").and_then(Value::as_str).ok_or("a destination without host")?;
            let port = entry
                .pointer("/destination/port/number")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .or_else(|| only_port(host, namespace, services));
            let weight = entry.get("weight").and_then(Value::as_u64).map(|w| u32::try_from(w).unwrap_or(u32::MAX));
            destinations.push(Destination {
                host: host.to_owned(),
                namespace: namespace.to_owned(),
                port,
                weight: weight.unwrap_or(if single { 100 } else { 0 }),
                subset: entry.pointer("/destination/subset").and_then(Value::as_str).map(str::to_owned),
            });
        }
        RouteAction::Forward {
            destinations,
            rewrite_uri: rule.pointer("/rewrite/uri").and_then(Value::as_str).map(str::to_owned),
            rewrite_authority: rule.pointer("/rewrite/authority").and_then(Value::as_str).map(str::to_owned),
            timeout: rule.get("timeout").and_then(Value::as_str).and_then(parse_duration),
            retry: RetryPolicy::from_rule(rule.get("retries")),
        }
    };
    Ok(HttpRoute { name: rule.get("name").and_then(Value::as_str).map(str::to_owned), matches, action })
}

fn parse_match(m: &Value, namespace: &str) -> Result<RequestMatch, String> {
    let mut out = RequestMatch {
        ignore_uri_case: m.get("ignoreUriCase").and_then(Value::as_bool).unwrap_or(false),
        ..RequestMatch::default()
    };
    let Some(fields) = m.as_object() else { return Err(format!("match {m} is not an object")) };
    for (key, value) in fields {
        match key.as_str() {
            "uri" => out.uri = Some(string_match(value)?),
            "method" => out.method = Some(string_match(value)?),
            "authority" => out.authority = Some(string_match(value)?),
            "headers" => {
                for (name, cond) in value.as_object().into_iter().flatten() {
                    out.headers.push((name.to_ascii_lowercase(), string_match(cond)?));
                }
            }
            "port" => out.port = value.as_u64().and_then(|p| u16::try_from(p).ok()),
            "gateways" => {
                out.gateways = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|g| qualify_gateway(g, namespace))
                    .collect();
            }
            "name" | "ignoreUriCase" => {}
            other => out.unsupported = Some(other.to_owned()),
        }
    }
    Ok(out)
}

/// The Service's only port, when a destination omits `port`.
fn only_port(host: &str, namespace: &str, services: &[ServiceEntry]) -> Option<u16> {
    let (name, ns) = split_service_host(host, namespace)?;
    let svc = services.iter().find(|s| s.name == name && s.namespace == ns)?;
    match svc.ports.as_slice() {
        [(port, _)] => Some(*port),
        _ => None,
    }
}

/// `name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local` -> (name, ns); other hosts -> `None`.
fn split_service_host<'a>(host: &'a str, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => Some((name, namespace)),
        [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => Some((name, ns)),
        _ => None,
    }
}

/// A Kubernetes service host in FQDN form; other hosts lower-cased as they are.
pub(super) fn qualify_host(host: &str, namespace: &str) -> String {
    match split_service_host(host, namespace) {
        Some((name, ns)) => format!("{name}.{ns}.svc.cluster.local"),
        None => host.to_ascii_lowercase(),
    }
}

/// A Gateway reference as `ns/name`: `name` is in `namespace`; the old `name.ns.svc.cluster.local` form
/// names its namespace.
pub(super) fn qualify_gateway(reference: &str, namespace: &str) -> String {
    if reference.contains('/') {
        return reference.to_owned();
    }
    match reference.split_once('.') {
        Some((name, rest)) => format!("{}/{name}", rest.split('.').next().unwrap_or(namespace)),
        None => format!("{namespace}/{reference}"),
    }
}

/// (namespace, name) of an object; a missing namespace is `default`.
fn object_id(object: &Value) -> (String, String) {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_owned);
    (text("/metadata/namespace").unwrap_or_else(|| "default".into()), text("/metadata/name").unwrap_or_default())
}

/// A `StringMatch` object (`exact`, `prefix` or `regex`).
fn string_match(value: &Value) -> Result<StringMatch, String> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    if let Some(v) = text("exact") {
        Ok(StringMatch::Exact(v))
    } else if let Some(v) = text("prefix") {
        Ok(StringMatch::Prefix(v))
    } else if let Some(v) = text("regex") {
        full_match_regex(&v).map(StringMatch::Regex)
    } else {
        Err(format!("unsupported string match {value}"))
    }
}

/// A server `hosts` entry: `[ns/]host` (`*/` and no namespace: any).
fn server_host(text: &str) -> ServerHost {
    match text.split_once('/') {
        Some((ns, host)) => {
            ServerHost { namespace: (ns != "*").then(|| ns.to_owned()), host: host.to_ascii_lowercase() }
        }
        None => ServerHost { namespace: None, host: text.to_ascii_lowercase() },
    }
}
