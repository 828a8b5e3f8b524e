//! Gateway routing, as pure functions: Istio `Gateway` and `VirtualService` objects (JSON, as istiod
//! pushes them) plus the gateway pod's identity -> a [`RouteTable`] (built in [`super::route_config`]) ->
//! the route for one request. The tests here cover both halves, with the bookinfo-gateway fixture.
//!
//! What is modelled (and why it matters for upgrades): a Gateway applies to the router pods its `selector`
//! matches; a server's `port.number` is a port of the gateway's *Service*, so the router listens on that
//! Service port's `targetPort` (legacy chart: 80 -> 8080). A VirtualService binds to Gateways by name
//! (`name` in its own namespace, or `ns/name`), applies when its `hosts` and the server's `hosts`
//! (`*`, exact, `*.suffix`, `ns/host`) admit the request's Host, and its `http` rules are tried in order
//! (uri/method/authority/header matches: exact, prefix, regex; `port`; `gateways`); the first match wins.
//! A rule forwards to weighted `route` destinations (optionally rewriting uri/authority, with `timeout` and
//! `retries`: [`super::retry`]), redirects, or answers directly.
//!
//! Not modelled: subsets (there is no DestinationRule model: a subset's traffic goes to the whole
//! Service), TLS (servers of protocol HTTPS are served as plain HTTP; TCP/TLS servers are skipped),
//! `httpsRedirect`, header manipulation, fault injection, mirroring, delegate VirtualServices, `exportTo`,
//! `sourceLabels`/`sourceNamespace`/`queryParams`/`withoutHeaders` matches (a match using one of them never
//! matches, so a rule meant for a subset of traffic does not swallow everything). Revision scoping
//! (`istio.io/rev` labels on config) is istiod's job: the snapshot holds only what this revision sees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::HeaderMap;

use super::retry::RetryPolicy;
use super::route_config::qualify_host;
pub use super::route_config::{GatewayPod, listener_ports};

/// Ports the proxy serves itself (status, merged stats, Envoy stats, Envoy admin/inbound/outbound): never
/// gateway listeners.
pub const RESERVED_PORTS: [u16; 8] = [15000, 15001, 15004, 15006, 15008, 15020, 15021, 15090];

/// The most heap one compiled `regex` match may use (the regex crate's `size_limit`): a VirtualService
/// cannot make a proxy build an outsize automaton. A pattern over it is refused like an invalid one.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A string condition of a match.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// The whole value.
    Exact(String),
    /// A prefix of the value.
    Prefix(String),
    /// The whole value matches this pattern (compiled by [`full_match_regex`]).
    Regex(regex::Regex),
}

/// Compiles a `regex` StringMatch. Istio's `regex` is RE2 syntax, which the regex crate follows, matched
/// against the whole value (Envoy's `safe_regex`), hence the anchors around the pattern. Matching takes
/// linear time, so no pattern can stall a request.
///
/// Known differences from RE2: `\d`, `\w`, `\s` and `\b` are Unicode-aware here (ASCII-only in RE2), and a
/// `{` that does not start a repetition (`a{x`) is a syntax error here (a literal in RE2).
pub fn full_match_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
        let detail = match e {
            // The last line of the multi-line report says what is wrong (the others quote the anchored pattern).
            regex::Error::Syntax(report) => {
                report.lines().last().unwrap_or_default().trim_start_matches("error: ").to_owned()
            }
            regex::Error::CompiledTooBig(limit) => format!("compiles to more than {limit} bytes"),
            other => other.to_string(),
        };
        format!("regex {pattern:?}: {detail}")
    })
}

impl StringMatch {
    /// Whether `value` satisfies the condition; `ignore_case` applies to exact and prefix matches.
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            StringMatch::Exact(e) if ignore_case => e.eq_ignore_ascii_case(value),
            StringMatch::Exact(e) => e == value,
            StringMatch::Prefix(p) if ignore_case => {
                value.len() >= p.len() && value.is_char_boundary(p.len()) && value[..p.len()].eq_ignore_ascii_case(p)
            }
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// One entry of a rule's `match` list (all its conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    /// `uri`, matched against the path without query string.
    pub uri: Option<StringMatch>,
    /// `method`.
    pub method: Option<StringMatch>,
    /// `authority` (the Host header).
    pub authority: Option<StringMatch>,
    /// `headers` (lower-case names).
    pub headers: Vec<(String, StringMatch)>,
    /// `port`: the Gateway server port the request arrived on.
    pub port: Option<u16>,
    /// `gateways`: qualified `ns/name` of Gateways the rule is limited to.
    pub gateways: Vec<String>,
    /// `ignoreUriCase`.
    pub ignore_uri_case: bool,
    /// A condition the lab does not model: the match never matches.
    pub unsupported: Option<String>,
}

/// A `route[].destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `host` as written.
    pub host: String,
    /// The namespace short names are relative to (the VirtualService's).
    pub namespace: String,
    /// `port.number`, or the Service's only port when omitted; `None` if unknown.
    pub port: Option<u16>,
    /// `weight` (a single destination without weight gets 100).
    pub weight: u32,
    /// `subset` (ignored when routing: no DestinationRule model).
    pub subset: Option<String>,
}

impl Destination {
    /// The destination's fully qualified name (`productpage.default.svc.cluster.local`), for telemetry.
    pub fn fqdn(&self) -> String {
        qualify_host(&self.host, &self.namespace)
    }
}

/// What a matched rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Forward to one of the weighted destinations.
    Forward {
        /// The destinations.
        destinations: Vec<Destination>,
        /// `rewrite.uri`: replaces the matched prefix (or the whole path for other matches).
        rewrite_uri: Option<String>,
        /// `rewrite.authority`: the Host sent upstream.
        rewrite_authority: Option<String>,
        /// `timeout`.
        timeout: Option<Duration>,
        /// `retries`, as istiod translates it (Istio's default policy when the rule has none).
        retry: RetryPolicy,
    },
    /// `redirect`.
    Redirect {
        /// New path (`uri`), if any.
        uri: Option<String>,
        /// New host (`authority`), if any.
        authority: Option<String>,
        /// `redirectCode` (default 301).
        code: u16,
    },
    /// `directResponse`.
    Direct {
        /// `status`.
        status: u16,
        /// `body.string`.
        body: String,
    },
}

/// One `http[]` rule.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// `name`.
    pub name: Option<String>,
    /// `match` (empty: matches everything).
    pub matches: Vec<RequestMatch>,
    /// What it does.
    pub action: RouteAction,
}

/// A Gateway server bound to a listener.
#[derive(Debug, Clone)]
pub(super) struct BoundServer {
    /// `ns/name` of the Gateway.
    pub(super) gateway: String,
    pub(super) gateway_namespace: String,
    /// `port.number` (the Service port).
    pub(super) number: u16,
    pub(super) hosts: Vec<ServerHost>,
}

/// A server `hosts` entry: `[ns/]host`.
#[derive(Debug, Clone)]
pub(super) struct ServerHost {
    /// `None`, `*`: any namespace; `.`: the Gateway's; else that namespace.
    pub(super) namespace: Option<String>,
    pub(super) host: String,
}

impl ServerHost {
    fn admits_namespace(&self, vs_namespace: &str, gateway_namespace: &str) -> bool {
        match self.namespace.as_deref() {
            None => true,
            Some(".") => vs_namespace == gateway_namespace,
            Some(ns) => vs_namespace == ns,
        }
    }
}

/// A VirtualService's gateway rules.
#[derive(Debug, Clone)]
pub(super) struct VirtualServiceRoutes {
    /// `ns/name`.
    pub(super) id: String,
    pub(super) namespace: String,
    pub(super) hosts: Vec<String>,
    /// Qualified `ns/name` of the Gateways it binds to.
    pub(super) gateways: Vec<String>,
    pub(super) routes: Vec<HttpRoute>,
}

/// The routing state of one router pod, built from a config snapshot.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Listener port -> the Gateway servers it serves.
    pub(super) listeners: BTreeMap<u16, Vec<BoundServer>>,
    pub(super) virtual_services: Vec<VirtualServiceRoutes>,
    /// Config this table could not use, for the logs.
    pub warnings: Vec<String>,
}

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The router port the request arrived on.
    pub listener_port: u16,
    /// The Host header (a port suffix is ignored).
    pub host: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path (no query string).
    pub path: &'a str,
    /// All headers.
    pub headers: &'a HeaderMap,
}

/// The outcome of routing one request.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    /// `ns/name` of the VirtualService.
    pub virtual_service: &'a str,
    /// `ns/name` of the Gateway.
    pub gateway: &'a str,
    /// The rule.
    pub route: &'a HttpRoute,
    /// The matched uri condition (a prefix rewrite replaces exactly it).
    pub uri_match: Option<&'a StringMatch>,
}

impl RouteMatch<'_> {
    /// The path (with query) to send upstream after `rewrite.uri`.
    pub fn upstream_path(&self, path: &str, query: Option<&str>) -> String {
        let rewritten = match &self.route.action {
            RouteAction::Forward { rewrite_uri: Some(new), .. } => match self.uri_match {
                Some(StringMatch::Prefix(prefix))
                    if path.len() >= prefix.len() && path.is_char_boundary(prefix.len()) =>
                {
                    format!("{new}{}", &path[prefix.len()..])
                }
                _ => new.clone(),
            },
            _ => path.to_owned(),
        };
        match query {
            Some(q) => format!("{rewritten}?{q}"),
            None => rewritten,
        }
    }
}

impl RouteTable {
    /// The ports the router must listen on for this config.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.listeners.keys().copied().collect()
    }

    /// The rule for a request, or `None` (404).
    pub fn route<'a>(&'a self, request: &RequestInfo<'_>) -> Option<RouteMatch<'a>> {
        let host = request_host(request.host);
        let servers = self.listeners.get(&request.listener_port)?;
        // (virtual service, host specificity, servers it is reachable through)
        let mut candidates: Vec<(&VirtualServiceRoutes, (u8, usize), Vec<&BoundServer>)> = Vec::new();
        for vs in &self.virtual_services {
            let Some(specificity) = vs.hosts.iter().filter(|h| host_matches(h, &host)).map(|h| specificity(h)).max()
            else {
                continue;
            };
            let through: Vec<&BoundServer> = servers
                .iter()
                .filter(|s| vs.gateways.contains(&s.gateway))
                .filter(|s| {
                    s.hosts.iter().any(|h| {
                        host_matches(&h.host, &host) && h.admits_namespace(&vs.namespace, &s.gateway_namespace)
                    })
                })
                .collect();
            if !through.is_empty() {
                candidates.push((vs, specificity, through));
            }
        }
        // Envoy picks the virtual host with the most specific domain; rules of VirtualServices sharing it
        // are merged in order.
        let best = candidates.iter().map(|(_, s, _)| *s).max()?;
        for (vs, _, through) in candidates.iter().filter(|(_, s, _)| *s == best) {
            for route in &vs.routes {
                if route.matches.is_empty() {
                    return Some(RouteMatch {
                        virtual_service: &vs.id,
                        gateway: &through[0].gateway,
                        route,
                        uri_match: None,
                    });
                }
                for m in &route.matches {
                    if let Some(server) = through.iter().find(|s| request_matches(m, request, s)) {
                        return Some(RouteMatch {
                            virtual_service: &vs.id,
                            gateway: &server.gateway,
                            route,
                            uri_match: m.uri.as_ref(),
                        });
                    }
                }
            }
        }
        None
    }
}

/// Whether one `match` entry holds for a request arriving through `server`.
fn request_matches(m: &RequestMatch, request: &RequestInfo<'_>, server: &BoundServer) -> bool {
    if m.unsupported.is_some() {
        return false;
    }
    if m.port.is_some_and(|p| p != server.number) {
        return false;
    }
    if !m.gateways.is_empty() && !m.gateways.contains(&server.gateway) {
        return false;
    }
    if m.uri.as_ref().is_some_and(|u| !u.matches(request.path, m.ignore_uri_case)) {
        return false;
    }
    if m.method.as_ref().is_some_and(|x| !x.matches(request.method, false)) {
        return false;
    }
    if m.authority.as_ref().is_some_and(|a| !a.matches(request.host, false)) {
        return false;
    }
    m.headers.iter().all(|(name, cond)| {
        request.headers.get(name.as_str()).and_then(|v| v.to_str().ok()).is_some_and(|v| cond.matches(v, false))
    })
}

/// Picks a destination by weight: `roll` is a uniform random number in `0..u32::MAX`. Destinations
/// whose weights are all zero share traffic equally.
pub fn pick_destination(destinations: &[Destination], roll: u32) -> Option<&Destination> {
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        let len = destinations.len();
        return (len > 0).then(|| &destinations[(roll as usize) % len]);
    }
    let mut point = u64::from(roll) % total;
    for d in destinations {
        let w = u64::from(d.weight);
        if point < w {
            return Some(d);
        }
        point -= w;
    }
    destinations.last()
}

/// The Host header lower-cased, without port.
fn request_host(host: &str) -> String {
    let host = host.trim();
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    bare.to_ascii_lowercase()
}

/// Whether a `hosts` pattern (`*`, `*.suffix`, exact) admits `host` (lower-case, no port).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&suffix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Exact beats wildcard, longer beats shorter, `*` is last.
fn specificity(pattern: &str) -> (u8, usize) {
    if pattern == "*" {
        (0, 0)
    } else if pattern.starts_with('*') {
        (1, pattern.len())
    } else {
        (2, pattern.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::protocol::{ConfigSnapshot, ServiceEntry};
    use crate::containers::proxy::route_config::qualify_gateway;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::{Value, json};

    fn m(pattern: &str, text: &str) -> bool {
        full_match_regex(pattern).unwrap_or_else(|e| panic!("{e}")).is_match(text)
    }

    #[test]
    fn regex_literals_and_dots_match_whole_strings_only() {
        assert!(m("/productpage", "/productpage"));
        assert!(!m("/product", "/productpage"), "whole-string match, like Envoy's safe_regex");
        assert!(!m("product", "/productpage"));
        assert!(!m("a|b", "ab"), "the anchors hold across a top-level alternation");
        assert!(m("/a.c", "/abc"));
        assert!(!m("/a\\.c", "/abc"));
        assert!(m("/a\\.c", "/a.c"));
    }

    #[test]
    fn regex_quantifiers() {
        assert!(m("/api/v1/products/\\d+", "/api/v1/products/42"));
        assert!(!m("/api/v1/products/\\d+", "/api/v1/products/"));
        assert!(m("/static/.*", "/static/"));
        assert!(m("/static/.*", "/static/css/x.css"));
        assert!(m("ab?c", "ac"));
        assert!(m("ab{2,3}c", "abbbc"));
        assert!(!m("ab{2,3}c", "abbbbc"));
        assert!(m("ab{2}c", "abbc"));
        assert!(m("ab{2,}c", "abbbbbc"));
        assert!(m("a.*?b", "axxb"));
        assert!(m("a\\{x", "a{x"), "an escaped brace is a literal");
    }

    #[test]
    fn regex_classes_groups_alternation_and_flags() {
        assert!(m("/reviews/[0-9]+", "/reviews/7"));
        assert!(m("/[^/]+/x", "/abc/x"));
        assert!(!m("/[^/]+/x", "/a/b/x"));
        assert!(m("/(login|logout)", "/logout"));
        assert!(!m("/(login|logout)", "/log"));
        assert!(m("/(?:a|b)+", "/abba"));
        assert!(m("^/v[12]/.*$", "/v2/x"));
        assert!(m("[\\w-]+", "a_b-c"));
        assert!(m("[-a]+", "-a-"));
        // RE2 has flags and Unicode classes: they work here too.
        assert!(m("(?i)/API/.*", "/api/x"));
        assert!(m("/\\pL+", "/abc"));
    }

    #[test]
    fn invalid_regexes_are_errors() {
        for pattern in ["(abc", "*a", "a{3,1}", "a{x", "[z-a]"] {
            let err = full_match_regex(pattern).expect_err(pattern);
            assert!(err.starts_with(&format!("regex {pattern:?}: ")), "{err}");
            assert!(!err.contains('\n'), "one line for the warning: {err}");
        }
    }

    #[test]
    fn pathological_regexes_neither_hang_nor_compile_unbounded() {
        let text = "a".repeat(40) + "b";
        assert!(!m("(a*)*c", &text));
        assert!(!m("(a|a)*c", &text));
        let err = full_match_regex("(\\w{50}){50}").expect_err("too big");
        assert!(err.contains("compiles to more than"), "{err}");
    }

    /// The shared fixtures (outside the repository: tests read them, the project does not copy them).
    const BOOKINFO_GATEWAY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/istio-tree/1.9.7/bookinfo/bookinfo-gateway.yaml"
    );
    const BOOKINFO_GATEWAY_V1: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/istio-tree/1.24.6/bookinfo/bookinfo-gateway.yaml"
    );

    /// The fixture's Gateway and VirtualService, placed in namespace `default` as `kubectl apply` would.
    fn fixture(path: &str) -> ConfigSnapshot {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("yaml");
        let mut snapshot = ConfigSnapshot::default();
        for mut doc in docs {
            doc["metadata"]["namespace"] = json!("default");
            match doc["kind"].as_str() {
                Some("Gateway") => snapshot.gateways.push(doc),
                Some("VirtualService") => snapshot.virtual_services.push(doc),
                other => panic!("unexpected kind {other:?}"),
            }
        }
        snapshot.services = vec![service("default", "productpage", &[(9080, 9080)], &[("app", "productpage")])];
        snapshot
    }

    fn service(ns: &str, name: &str, ports: &[(u16, i32)], selector: &[(&str, &str)]) -> ServiceEntry {
        ServiceEntry {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: "10.96.0.10".into(),
            ports: ports.iter().map(|(p, _)| (*p, None)).collect(),
            target_ports: ports.iter().map(|(p, t)| (*p, IntOrString::Int(*t))).collect(),
            selector: selector.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        }
    }

    /// The legacy chart's ingress gateway pod (istio-system, labels istio=ingressgateway, ports 8080/8443).
    fn legacy_pod() -> GatewayPod {
        GatewayPod {
            namespace: "istio-system".into(),
            labels: [("app", "istio-ingressgateway"), ("istio", "ingressgateway")]
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            container_ports: [15021, 8080, 8443, 15012, 15443, 15090].iter().map(|p| (*p, None)).collect(),
        }
    }

    fn route_path<'a>(table: &'a RouteTable, port: u16, host: &str, path: &str) -> Option<RouteMatch<'a>> {
        let headers = HeaderMap::new();
        table.route(&RequestInfo { listener_port: port, host, method: "GET", path, headers: &headers })
    }

    fn destination_of(m: &RouteMatch<'_>) -> (String, Option<u16>) {
        match &m.route.action {
            RouteAction::Forward { destinations, .. } => (destinations[0].fqdn(), destinations[0].port),
            other => panic!("not a forward: {other:?}"),
        }
    }

    #[test]
    fn bookinfo_gateway_routes_productpage_paths_on_8080() {
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY), &legacy_pod());
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        assert_eq!(table.ports(), BTreeSet::from([8080]), "server port 80 -> the legacy chart's 8080");
        for path in
            ["/productpage", "/static/x", "/static", "/login", "/logout", "/api/v1/products/1", "/api/v1/products"]
        {
            let m = route_path(&table, 8080, "gw.example.com", path).unwrap_or_else(|| panic!("{path} must route"));
            assert_eq!(m.virtual_service, "default/bookinfo");
            assert_eq!(m.gateway, "default/bookinfo-gateway");
            assert_eq!(destination_of(&m), ("productpage.default.svc.cluster.local".into(), Some(9080)), "{path}");
        }
    }

    #[test]
    fn bookinfo_gateway_does_not_route_other_paths() {
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY), &legacy_pod());
        for path in ["/nope", "/", "/productpage/x", "/productpagex", "/login/", "/api/v1/prod", "/Productpage"] {
            assert!(route_path(&table, 8080, "x", path).is_none(), "{path} must not route (404)");
        }
        assert!(route_path(&table, 8443, "x", "/productpage").is_none(), "no server on 443");
        assert!(route_path(&table, 9999, "x", "/productpage").is_none());
    }

    #[test]
    fn any_host_matches_a_star_gateway_and_port_suffixes_are_ignored() {
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY), &legacy_pod());
        for host in ["bookinfo.example.com", "10.96.0.20", "10.96.0.20:80", "localhost:8080", ""] {
            assert!(route_path(&table, 8080, host, "/productpage").is_some(), "host {host:?}");
        }
    }

    #[test]
    fn the_gateway_selector_must_match_the_router_pod() {
        let mut pod = legacy_pod();
        pod.labels.insert("istio".into(), "eastwestgateway".into());
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY), &pod);
        assert!(table.ports().is_empty());
        assert!(route_path(&table, 8080, "x", "/productpage").is_none());
    }

    #[test]
    fn the_v1_fixture_uses_server_port_8080_directly() {
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY_V1), &legacy_pod());
        assert_eq!(table.ports(), BTreeSet::from([8080]));
        assert!(route_path(&table, 8080, "x", "/productpage").is_some());
    }

    #[test]
    fn server_ports_map_through_the_gateways_own_service() {
        let pod = legacy_pod();
        let mut snapshot = fixture(BOOKINFO_GATEWAY);
        // The seed's pattern: a ClusterIP Service of this revision's gateway, 80 -> 8081 (unusual on
        // purpose, to see the Service win over the legacy default), and a Service of another gateway.
        snapshot.services.push(service(
            "istio-system",
            "gw-blue",
            &[(80, 8081), (15021, 15021)],
            &[("istio", "ingressgateway")],
        ));
        snapshot.services.push(service("istio-system", "other", &[(80, 9999)], &[("istio", "eastwest")]));
        let table = RouteTable::build(&snapshot, &pod);
        assert_eq!(table.ports(), BTreeSet::from([8081]));

        // A named targetPort is looked up in the container's ports.
        let mut named = legacy_pod();
        named.container_ports.push((8082, Some("http-alt".into())));
        let mut snapshot = fixture(BOOKINFO_GATEWAY);
        let mut svc = service("istio-system", "gw", &[], &[("istio", "ingressgateway")]);
        svc.ports = vec![(80, Some("http2".into()))];
        svc.target_ports = vec![(80, IntOrString::String("http-alt".into()))];
        snapshot.services.push(svc);
        assert_eq!(RouteTable::build(&snapshot, &named).ports(), BTreeSet::from([8082]));
    }

    #[test]
    fn injected_gateways_listen_on_the_server_port_without_a_service() {
        let pod = GatewayPod {
            namespace: "istio-ingress".into(),
            labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
            container_ports: vec![(15090, Some("http-envoy-prom".into()))],
        };
        let table = RouteTable::build(&fixture(BOOKINFO_GATEWAY), &pod);
        assert_eq!(table.ports(), BTreeSet::from([80]));
        assert_eq!(listener_ports(443, &pod, &[]), [443]);
        assert_eq!(listener_ports(443, &legacy_pod(), &[]), [8443]);
        assert_eq!(listener_ports(15443, &legacy_pod(), &[]), [15443]);
    }

    fn gateway(ns: &str, name: &str, servers: Value) -> Value {
        json!({ "metadata": { "namespace": ns, "name": name },
                "spec": { "selector": { "istio": "ingressgateway" }, "servers": servers } })
    }

    fn vs(ns: &str, name: &str, hosts: &[&str], gateways: &[&str], http: Value) -> Value {
        json!({ "metadata": { "namespace": ns, "name": name },
                "spec": { "hosts": hosts, "gateways": gateways, "http": http } })
    }

    fn to(host: &str) -> Value {
        json!([{ "route": [{ "destination": { "host": host, "port": { "number": 9080 } } }] }])
    }

    #[test]
    fn host_matching_exact_wildcard_and_namespace_forms() {
        let snapshot = ConfigSnapshot {
            gateways: vec![gateway(
                "istio-system",
                "gw",
                json!([{ "port": { "number": 80, "name": "http", "protocol": "HTTP" },
                         "hosts": ["bookinfo/*.bookinfo.com", "./admin.example.com", "*/shop.example.com"] }]),
            )],
            virtual_services: vec![
                vs("bookinfo", "wild", &["*.bookinfo.com"], &["istio-system/gw"], to("wild")),
                vs("bookinfo", "exact", &["www.bookinfo.com"], &["istio-system/gw"], to("exact")),
                // Not admitted: the server allows *.bookinfo.com only from namespace bookinfo.
                vs("other", "intruder", &["evil.bookinfo.com"], &["istio-system/gw"], to("intruder")),
                // `./host`: the Gateway's own namespace.
                vs("istio-system", "admin", &["admin.example.com"], &["gw"], to("admin")),
                vs("shop", "shop", &["shop.example.com"], &["istio-system/gw"], to("shop")),
                // Bound to a Gateway that does not exist.
                vs("shop", "lost", &["*"], &["missing"], to("lost")),
            ],
            ..ConfigSnapshot::default()
        };
        let table = RouteTable::build(&snapshot, &legacy_pod());
        let dest = |host: &str| route_path(&table, 8080, host, "/").map(|m| destination_of(&m).0);
        assert_eq!(
            dest("www.bookinfo.com").as_deref(),
            Some("exact.bookinfo.svc.cluster.local"),
            "exact beats wildcard"
        );
        assert_eq!(dest("WWW.Bookinfo.com:80").as_deref(), Some("exact.bookinfo.svc.cluster.local"));
        assert_eq!(dest("a.b.bookinfo.com").as_deref(), Some("wild.bookinfo.svc.cluster.local"));
        assert_eq!(
            dest("evil.bookinfo.com").as_deref(),
            Some("wild.bookinfo.svc.cluster.local"),
            "intruder not admitted"
        );
        assert_eq!(dest("bookinfo.com"), None, "*.bookinfo.com needs a label before the suffix");
        assert_eq!(dest("admin.example.com").as_deref(), Some("admin.istio-system.svc.cluster.local"));
        assert_eq!(dest("shop.example.com").as_deref(), Some("shop.shop.svc.cluster.local"));
        assert_eq!(dest("unknown.example.com"), None);
    }

    #[test]
    fn first_matching_rule_wins_and_match_kinds_work() {
        let http = json!([
            { "name": "regex", "match": [{ "uri": { "regex": "/reviews/[0-9]+" } }],
              "route": [{ "destination": { "host": "reviews", "port": { "number": 9080 } } }] },
            { "name": "header", "match": [{ "uri": { "prefix": "/" }, "headers": { "end-user": { "exact": "jason" } } }],
              "route": [{ "destination": { "host": "jason", "port": { "number": 9080 } } }] },
            { "name": "post", "match": [{ "method": { "exact": "POST" } }],
              "route": [{ "destination": { "host": "writer", "port": { "number": 9080 } } }] },
            { "name": "case", "match": [{ "uri": { "exact": "/CASE" }, "ignoreUriCase": true }],
              "route": [{ "destination": { "host": "case", "port": { "number": 9080 } } }] },
            { "name": "src", "match": [{ "sourceLabels": { "app": "x" } }],
              "route": [{ "destination": { "host": "never", "port": { "number": 9080 } } }] },
            { "name": "rest", "route": [{ "destination": { "host": "rest", "port": { "number": 9080 } } }] }
        ]);
        let snapshot = ConfigSnapshot {
            gateways: vec![gateway("default", "gw", json!([{ "port": { "number": 80 }, "hosts": ["*"] }]))],
            virtual_services: vec![vs("default", "v", &["*"], &["gw"], http)],
            ..ConfigSnapshot::default()
        };
        let table = RouteTable::build(&snapshot, &legacy_pod());
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
        let name = |method: &str, path: &str, user: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(u) = user {
                headers.insert("end-user", u.parse().expect("header"));
            }
            let request = RequestInfo { listener_port: 8080, host: "h", method, path, headers: &headers };
            table.route(&request).and_then(|m| m.route.name.clone())
        };
        assert_eq!(name("GET", "/reviews/12", Some("jason")).as_deref(), Some("regex"), "first match wins");
        assert_eq!(name("GET", "/reviews/x", Some("jason")).as_deref(), Some("header"));
        assert_eq!(name("POST", "/reviews/x", None).as_deref(), Some("post"));
        assert_eq!(name("GET", "/case", None).as_deref(), Some("case"));
        assert_eq!(name("GET", "/anything", None).as_deref(), Some("rest"), "unsupported conditions never match");
    }

    #[test]
    fn rewrites_redirects_and_direct_responses() {
        let http = json!([
            { "match": [{ "uri": { "prefix": "/v1/" } }], "rewrite": { "uri": "/api/" }, "timeout": "2s",
              "retries": { "attempts": 0 },
              "route": [{ "destination": { "host": "productpage.default.svc.cluster.local" } }] },
            { "match": [{ "uri": { "exact": "/old" } }], "redirect": { "uri": "/new" } },
            { "match": [{ "uri": { "exact": "/teapot" } }], "directResponse": { "status": 418, "body": { "string": "short" } } }
        ]);
        let mut snapshot = fixture(BOOKINFO_GATEWAY);
        snapshot.virtual_services = vec![vs("default", "v", &["*"], &["bookinfo-gateway"], http)];
        let table = RouteTable::build(&snapshot, &legacy_pod());
        let m = route_path(&table, 8080, "h", "/v1/products").expect("route");
        assert_eq!(m.upstream_path("/v1/products", Some("a=1")), "/api/products?a=1");
        let RouteAction::Forward { destinations, timeout, retry, .. } = &m.route.action else { panic!("forward") };
        assert_eq!(destinations[0].port, Some(9080), "the Service's only port when the destination has none");
        assert_eq!((*timeout, retry), (Some(Duration::from_secs(2)), &RetryPolicy::NONE));
        let m = route_path(&table, 8080, "h", "/old").expect("redirect");
        assert_eq!(m.route.action, RouteAction::Redirect { uri: Some("/new".into()), authority: None, code: 301 });
        let m = route_path(&table, 8080, "h", "/teapot").expect("direct");
        assert_eq!(m.route.action, RouteAction::Direct { status: 418, body: "short".into() });
    }

    #[test]
    fn weights_split_traffic_in_proportion() {
        let http = json!([{ "route": [
            { "destination": { "host": "reviews", "subset": "v1", "port": { "number": 9080 } }, "weight": 80 },
            { "destination": { "host": "reviews-v3.other", "port": { "number": 9080 } }, "weight": 20 }
        ] }]);
        let mut snapshot = fixture(BOOKINFO_GATEWAY);
        snapshot.virtual_services = vec![vs("default", "reviews", &["*"], &["bookinfo-gateway"], http)];
        let table = RouteTable::build(&snapshot, &legacy_pod());
        let m = route_path(&table, 8080, "h", "/").expect("route");
        let RouteAction::Forward { destinations, .. } = &m.route.action else { panic!("forward") };
        assert_eq!(destinations[0].subset.as_deref(), Some("v1"));
        assert_eq!(destinations[1].fqdn(), "reviews-v3.other.svc.cluster.local");
        // A deterministic spread of rolls (a multiplicative hash of 0..N) stands in for random draws.
        let draws = 100_000u32;
        let mut first = 0;
        for i in 0..draws {
            let roll = i.wrapping_mul(2_654_435_761);
            if pick_destination(destinations, roll).expect("pick").host == "reviews" {
                first += 1;
            }
        }
        let share = f64::from(first) / f64::from(draws);
        assert!((share - 0.8).abs() < 0.01, "80/20 split gave {share}");
        let zero: Vec<Destination> = destinations
            .iter()
            .cloned()
            .map(|mut d| {
                d.weight = 0;
                d
            })
            .collect();
        assert_eq!(pick_destination(&zero, 1).map(|d| d.host.as_str()), Some("reviews-v3.other"), "equal split");
        assert!(pick_destination(&[], 1).is_none());
    }

    #[test]
    fn mesh_only_and_broken_virtual_services() {
        let mut snapshot = fixture(BOOKINFO_GATEWAY);
        snapshot.virtual_services.push(json!({ "metadata": { "name": "mesh-only" }, "spec": { "hosts": ["reviews"],
            "http": [{ "route": [{ "destination": { "host": "reviews" } }] }] } }));
        snapshot.virtual_services.push(vs(
            "default",
            "broken",
            &["*"],
            &["bookinfo-gateway"],
            json!([{ "match": [] }]),
        ));
        snapshot.virtual_services.push(vs(
            "default",
            "bad-regex",
            &["*"],
            &["bookinfo-gateway"],
            json!([{ "match": [{ "uri": { "regex": "(x" } }], "route": [{ "destination": { "host": "x" } }] }]),
        ));
        let table = RouteTable::build(&snapshot, &legacy_pod());
        assert_eq!(table.warnings.len(), 2, "{:?}", table.warnings);
        assert!(route_path(&table, 8080, "h", "/productpage").is_some(), "the good VirtualService still routes");
    }

    #[test]
    fn tcp_servers_are_skipped_and_reserved_ports_refused() {
        let snapshot = ConfigSnapshot {
            gateways: vec![gateway(
                "default",
                "gw",
                json!([
                    { "port": { "number": 31400, "protocol": "TCP" }, "hosts": ["*"] },
                    { "port": { "number": 15021, "protocol": "HTTP" }, "hosts": ["*"] },
                    { "port": { "number": 443, "protocol": "HTTPS" }, "hosts": ["*"], "tls": { "mode": "SIMPLE" } }
                ]),
            )],
            ..ConfigSnapshot::default()
        };
        let table = RouteTable::build(&snapshot, &legacy_pod());
        assert_eq!(table.ports(), BTreeSet::from([8443]), "HTTPS is served as plain HTTP on 8443");
        assert_eq!(table.warnings.len(), 2, "{:?}", table.warnings);
    }

    #[test]
    fn gateway_references_and_hosts() {
        assert_eq!(qualify_gateway("gw", "bookinfo"), "bookinfo/gw");
        assert_eq!(qualify_gateway("istio-system/gw", "bookinfo"), "istio-system/gw");
        assert_eq!(qualify_gateway("gw.istio-system.svc.cluster.local", "bookinfo"), "istio-system/gw");
        assert_eq!(qualify_host("productpage", "default"), "productpage.default.svc.cluster.local");
        assert_eq!(qualify_host("details.bookinfo.svc", "default"), "details.bookinfo.svc.cluster.local");
        assert_eq!(qualify_host("httpbin.org.example", "default"), "httpbin.org.example");
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("Example.com", "example.com"));
        assert_eq!(request_host("Example.COM:8080"), "example.com");
    }
}
