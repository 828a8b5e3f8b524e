//! The service networking index: a pure, in-memory model fed by Service and Endpoints watch events and by
//! the clock, in the style of linkerd's policy-controller indexes. It decides everything (which view of
//! each Service is in effect, which ingress IP each load balancer has, which nodes it believes healthy,
//! which status to write) and the agent's I/O loop only carries the decisions out.
//!
//! Time is always passed in (`now`), so every behaviour, the propagation delay included, is unit-tested
//! without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::watcher::Event;

use super::endpoints::{Delayed, ServiceView};
use super::loadbalancer::{HealthTracker, IpAllocator};
use super::route::{Frontend, Listen, RouteKey, RouteSpec, RouteTable};
use super::spec::{EndpointsSpec, ServiceKey, ServiceSpec, TrafficPolicy, status_ingress_ip};

/// A Service as last observed: its data-plane view and the ingress IP its status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObservedService {
    spec: ServiceSpec,
    status_ip: Option<Ipv4Addr>,
}

/// The objects of one kind as the watch last reported them, with the relist buffer of the watcher's
/// `Init`..`InitDone` sequence (a relist replaces the set atomically, deleting what it no longer lists).
#[derive(Debug)]
struct Observed<T> {
    objects: BTreeMap<ServiceKey, T>,
    relist: Option<BTreeMap<ServiceKey, T>>,
}

impl<T> Default for Observed<T> {
    fn default() -> Self {
        Observed { objects: BTreeMap::new(), relist: None }
    }
}

impl<T: PartialEq> Observed<T> {
    /// Applies one watch event; returns the keys whose value changed.
    fn on_event<K>(&mut self, event: Event<K>, parse: impl Fn(&K) -> Option<(ServiceKey, T)>) -> BTreeSet<ServiceKey> {
        let mut changed = BTreeSet::new();
        match event {
            Event::Apply(obj) => {
                if let Some((key, value)) = parse(&obj)
                    && self.objects.get(&key) != Some(&value)
                {
                    self.objects.insert(key.clone(), value);
                    changed.insert(key);
                }
            }
            Event::Delete(obj) => {
                if let Some((key, _)) = parse(&obj)
                    && self.objects.remove(&key).is_some()
                {
                    changed.insert(key);
                }
            }
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(obj) => {
                if let Some((key, value)) = parse(&obj) {
                    self.relist.get_or_insert_with(BTreeMap::new).insert(key, value);
                }
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let keys: BTreeSet<_> = self.objects.keys().chain(fresh.keys()).cloned().collect();
                changed = keys.into_iter().filter(|k| self.objects.get(k) != fresh.get(k)).collect();
                self.objects = fresh;
            }
        }
        changed
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Index {
    delay: Duration,
    services: Observed<ObservedService>,
    endpoints: Observed<EndpointsSpec>,
    /// The view of every Service the data plane serves or will serve: applied, plus changes in flight.
    views: BTreeMap<ServiceKey, Delayed<Option<ServiceView>>>,
    allocator: IpAllocator,
    /// One per load balancer with `externalTrafficPolicy: Local`.
    health: BTreeMap<ServiceKey, HealthTracker>,
    /// Status writes asked for and not yet seen in a watch event.
    status_requested: BTreeMap<ServiceKey, Option<Ipv4Addr>>,
    dirty: bool,
}

impl Index {
    /// An empty index whose changes take effect `delay` after they are observed.
    pub fn new(delay: Duration) -> Self {
        Index {
            delay,
            services: Observed::default(),
            endpoints: Observed::default(),
            views: BTreeMap::new(),
            allocator: IpAllocator::default(),
            health: BTreeMap::new(),
            status_requested: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Feeds a Service watch event observed at `now`.
    pub fn service_event(&mut self, event: Event<Service>, now: Instant) {
        let changed = self.services.on_event(event, |svc| {
            let key = ServiceKey::of(&svc.metadata)?;
            Some((key, ObservedService { spec: ServiceSpec::from_service(svc), status_ip: status_ingress_ip(svc) }))
        });
        for key in changed {
            self.reschedule(&key, now);
        }
    }

    /// Feeds an Endpoints watch event observed at `now`.
    pub fn endpoints_event(&mut self, event: Event<Endpoints>, now: Instant) {
        let changed = self
            .endpoints
            .on_event(event, |eps| Some((ServiceKey::of(&eps.metadata)?, EndpointsSpec::from_endpoints(eps))));
        for key in changed {
            self.reschedule(&key, now);
        }
    }

    /// Queues the Service's current desired view (a no-op when it equals the latest queued one).
    fn reschedule(&mut self, key: &ServiceKey, now: Instant) {
        let desired =
            self.services.objects.get(key).map(|s| ServiceView::build(&s.spec, self.endpoints.objects.get(key)));
        let delayed = self.views.entry(key.clone()).or_insert_with(|| Delayed::new(None));
        if delayed.schedule(desired, now, self.delay) {
            tracing::debug!(service = %key, delay_ms = self.delay.as_millis() as u64, "service change queued");
        }
    }

    /// Applies the changes due at `now` and runs the health checks due at `now`.
    pub fn advance(&mut self, now: Instant) {
        let applied: Vec<ServiceKey> =
            self.views.iter_mut().filter_map(|(key, d)| d.advance(now).then(|| key.clone())).collect();
        for key in &applied {
            self.on_applied(key, now);
        }
        if !applied.is_empty() {
            self.allocate_missing();
        }
        self.views.retain(|_, d| d.applied().is_some() || !d.is_settled());

        for (key, tracker) in &mut self.health {
            let Some(view) = self.views.get(key).and_then(|d| d.applied().as_ref()) else { continue };
            for node in view.nodes() {
                tracker.add_target(node);
            }
            for t in tracker.check(now, |node| view.has_local_endpoint(node)) {
                tracing::info!(
                    service = %key, node = t.node, healthy = t.healthy,
                    "load balancer health check changed"
                );
                self.dirty = true;
            }
        }
    }

    /// A Service's view just changed in the data plane: keep its load balancer state in line.
    fn on_applied(&mut self, key: &ServiceKey, now: Instant) {
        self.dirty = true;
        let view = self.views.get(key).and_then(|d| d.applied().clone());
        tracing::info!(service = %key, present = view.is_some(), "service change applied");
        let Some((view, lb)) = view.and_then(|v| v.load_balancer.clone().map(|lb| (v, lb))) else {
            if let Some(ip) = self.allocator.release(key) {
                tracing::info!(service = %key, %ip, "load balancer released");
            }
            self.health.remove(key);
            return;
        };
        if self.allocator.get(key).is_none() {
            let preferred: Vec<Ipv4Addr> =
                lb.requested_ip.into_iter().chain(self.services.objects.get(key).and_then(|s| s.status_ip)).collect();
            match self.allocator.assign(key, &preferred, &self.reserved_ips(key)) {
                Some(ip) => tracing::info!(service = %key, %ip, "load balancer ingress IP allocated"),
                None => {
                    tracing::warn!(
                        service = %key, pool = super::loadbalancer::POOL_CIDR,
                        "load balancer pool exhausted"
                    )
                }
            }
        }
        if lb.policy == TrafficPolicy::Local {
            let tracker = self.health.entry(key.clone()).or_insert_with(|| HealthTracker::new(lb.health, now));
            tracker.set_config(lb.health, now);
            for node in view.nodes() {
                tracker.add_target(node);
            }
        } else {
            self.health.remove(key);
        }
    }

    /// Gives an address to load balancers that found the pool exhausted, once others released theirs.
    fn allocate_missing(&mut self) {
        let waiting: Vec<ServiceKey> = self
            .views
            .iter()
            .filter(|(k, d)| {
                d.applied().as_ref().is_some_and(|v| v.load_balancer.is_some()) && self.allocator.get(k).is_none()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            let reserved = self.reserved_ips(&key);
            if let Some(ip) = self.allocator.assign(&key, &[], &reserved) {
                tracing::info!(service = %key, %ip, "load balancer ingress IP allocated");
                self.dirty = true;
            }
        }
    }

    /// IPs other Services' statuses show: not handed out to someone else while they may come back.
    fn reserved_ips(&self, key: &ServiceKey) -> BTreeSet<Ipv4Addr> {
        self.services.objects.iter().filter(|(k, _)| *k != key).filter_map(|(_, s)| s.status_ip).collect()
    }

    /// When [`Index::advance`] next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let due = self.views.values().filter_map(|d| d.next_due());
        due.chain(self.health.values().map(|h| h.next_check())).min()
    }

    /// Whether the routes changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Every route the data plane should serve now.
    pub fn routes(&self) -> Vec<RouteSpec> {
        let mut routes = Vec::new();
        for (key, delayed) in &self.views {
            let Some(view) = delayed.applied() else { continue };
            for port in &view.ports {
                let all: Vec<SocketAddrV4> = port.backends.iter().map(|b| b.addr).collect();
                if let Some(ip) = view.cluster_ip {
                    routes.push(RouteSpec {
                        key: RouteKey { service: key.clone(), port: port.port.port, frontend: Frontend::ClusterIp },
                        port_name: port.port.name.clone(),
                        ingress_ip: None,
                        listen: vec![Listen::Namespace(SocketAddrV4::new(ip, port.port.port))],
                        table: RouteTable::Cluster { backends: all.clone() },
                    });
                }
                let (Some(lb), Some(ingress)) = (&view.load_balancer, self.allocator.get(key)) else { continue };
                let table = match lb.policy {
                    TrafficPolicy::Cluster => RouteTable::Cluster { backends: all },
                    TrafficPolicy::Local => RouteTable::Local {
                        nodes: self
                            .health
                            .get(key)
                            .into_iter()
                            .flat_map(|h| h.healthy_nodes())
                            .map(|node| {
                                let local = port.backends.iter().filter(|b| b.node.as_deref() == Some(node));
                                (node.to_owned(), local.map(|b| b.addr).collect())
                            })
                            .collect(),
                    },
                };
                routes.push(RouteSpec {
                    key: RouteKey { service: key.clone(), port: port.port.port, frontend: Frontend::LoadBalancer },
                    port_name: port.port.name.clone(),
                    ingress_ip: Some(ingress),
                    listen: vec![Listen::Namespace(SocketAddrV4::new(ingress, port.port.port)), Listen::Host],
                    table,
                });
            }
        }
        routes
    }

    /// The `status.loadBalancer` writes to make: `Some(ip)` once a load balancer serves, `None` to clear the
    /// status of a Service that is no longer one. Each write is asked for once, until a watch event shows
    /// the status (then a later divergence is corrected again).
    pub fn status_updates(&mut self) -> Vec<(ServiceKey, Option<Ipv4Addr>)> {
        let mut updates = Vec::new();
        for (key, observed) in &self.services.objects {
            let serving =
                self.views.get(key).and_then(|d| d.applied().as_ref()).is_some_and(|v| v.load_balancer.is_some());
            let desired = if serving { self.allocator.get(key) } else { None };
            if observed.status_ip == desired {
                self.status_requested.remove(key);
            } else if self.status_requested.get(key) != Some(&desired) {
                self.status_requested.insert(key.clone(), desired);
                updates.push((key.clone(), desired));
            }
        }
        let services = &self.services.objects;
        self.status_requested.retain(|k, _| services.contains_key(k));
        updates
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::route::Pick;
    use super::super::route::Picker;
    use super::*;

    const D: Duration = Duration::from_millis(1000);

    fn svc(name: &str, extra: serde_json::Value) -> Service {
        let mut value = json!({
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "clusterIP": "10.96.0.20", "ports": [{ "name": "http", "port": 80 }] }
        });
        merge(&mut value, extra);
        serde_json::from_value(value).expect("service")
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn eps(name: &str, addrs: &[(&str, &str)]) -> Endpoints {
        let addresses: Vec<_> = addrs.iter().map(|(ip, node)| json!({ "ip": ip, "nodeName": node })).collect();
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns" },
            "subsets": [{ "addresses": addresses, "ports": [{ "name": "http", "port": 8080 }] }]
        }))
        .expect("endpoints")
    }

    fn addr(ip: &str) -> SocketAddrV4 {
        SocketAddrV4::new(ip.parse().expect("ip"), 8080)
    }

    fn route(index: &Index, frontend: Frontend) -> Option<RouteSpec> {
        index.routes().into_iter().find(|r| r.key.frontend == frontend)
    }

    #[test]
    fn cluster_ip_route_follows_endpoints_after_the_delay() {
        let t0 = Instant::now();
        let mut index = Index::new(D);
        index.service_event(Event::Apply(svc("web", json!({}))), t0);
        index.endpoints_event(Event::Apply(eps("web", &[("10.244.0.1", "n1"), ("10.244.0.2", "n1")])), t0);
        index.advance(t0);
        assert!(index.routes().is_empty(), "nothing before the delay");
        assert_eq!(index.next_wakeup(), Some(t0 + D));
        index.advance(t0 + D);
        assert!(index.take_dirty());
        let r = route(&index, Frontend::ClusterIp).expect("a ClusterIP route");
        assert_eq!(r.listen, vec![Listen::Namespace("10.96.0.20:80".parse().expect("addr"))]);
        assert_eq!(r.table, RouteTable::Cluster { backends: vec![addr("10.244.0.1"), addr("10.244.0.2")] });
        assert!(route(&index, Frontend::LoadBalancer).is_none());

        // Endpoints move; the old ones stay in effect for the whole window.
        let t1 = t0 + D * 3;
        index.endpoints_event(Event::Apply(eps("web", &[("10.244.0.3", "n2")])), t1);
        index.advance(t1 + D - Duration::from_millis(1));
        assert!(!index.take_dirty());
        assert_eq!(route(&index, Frontend::ClusterIp).expect("route").table.clone(), r.table);
        index.advance(t1 + D);
        assert_eq!(
            route(&index, Frontend::ClusterIp).expect("route").table,
            RouteTable::Cluster { backends: vec![addr("10.244.0.3")] }
        );

        // Deleted: the route disappears after the delay, and the index forgets the Service.
        let t2 = t1 + D * 3;
        index.service_event(Event::Delete(svc("web", json!({}))), t2);
        index.advance(t2);
        assert!(route(&index, Frontend::ClusterIp).is_some());
        index.advance(t2 + D);
        assert!(index.routes().is_empty());
        assert!(index.views.is_empty());
    }

    #[test]
    fn relist_removes_what_it_no_longer_lists_and_ignores_unchanged_objects() {
        let t0 = Instant::now();
        let mut index = Index::new(D);
        index.service_event(Event::Apply(svc("a", json!({}))), t0);
        index.service_event(Event::Apply(svc("b", json!({ "spec": { "clusterIP": "10.96.0.21" } }))), t0);
        index.advance(t0 + D);
        assert_eq!(index.routes().len(), 2);
        index.take_dirty();
        // A watch restart re-lists only `a`, unchanged.
        let t1 = t0 + D * 2;
        index.service_event(Event::Init, t1);
        index.service_event(Event::InitApply(svc("a", json!({}))), t1);
        index.service_event(Event::InitDone, t1);
        index.advance(t1 + D);
        assert!(index.take_dirty());
        let routes = index.routes();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].key.service, ServiceKey::new("ns", "a"));
    }

    #[test]
    fn load_balancer_gets_an_ip_a_status_write_and_two_routes() {
        let t0 = Instant::now();
        let mut index = Index::new(D);
        index.service_event(Event::Apply(svc("gw", json!({ "spec": { "type": "LoadBalancer" } }))), t0);
        index.advance(t0);
        assert!(index.status_updates().is_empty(), "no status before the load balancer serves");
        index.advance(t0 + D);
        let ip = Ipv4Addr::new(10, 250, 0, 1);
        assert_eq!(index.status_updates(), vec![(ServiceKey::new("ns", "gw"), Some(ip))]);
        assert!(index.status_updates().is_empty(), "asked once");
        let lb = route(&index, Frontend::LoadBalancer).expect("a load balancer route");
        assert_eq!(lb.ingress_ip, Some(ip));
        assert_eq!(lb.listen, vec![Listen::Namespace(SocketAddrV4::new(ip, 80)), Listen::Host]);
        assert_eq!(lb.table, RouteTable::Cluster { backends: vec![] });

        // The watch shows our write; later someone overwrites the status: it is corrected.
        let written = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.250.0.1" }] } } });
        index.service_event(
            Event::Apply(svc("gw", merge_into(json!({ "spec": { "type": "LoadBalancer" } }), written))),
            t0 + D,
        );
        assert!(index.status_updates().is_empty());
        let other = json!({
            "spec": { "type": "LoadBalancer" },
            "status": { "loadBalancer": { "ingress": [{ "ip": "1.2.3.4" }] } }
        });
        index.service_event(Event::Apply(svc("gw", other)), t0 + D);
        assert_eq!(index.status_updates(), vec![(ServiceKey::new("ns", "gw"), Some(ip))]);

        // No longer a load balancer: the IP is released and the status cleared.
        let t1 = t0 + D * 2;
        let plain = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.250.0.1" }] } } });
        index.service_event(Event::Apply(svc("gw", plain)), t1);
        index.advance(t1 + D);
        assert!(route(&index, Frontend::LoadBalancer).is_none());
        assert_eq!(index.status_updates(), vec![(ServiceKey::new("ns", "gw"), None)]);
        assert_eq!(index.allocator.get(&ServiceKey::new("ns", "gw")), None);
    }

    fn merge_into(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        merge(&mut base, extra);
        base
    }

    #[test]
    fn restarted_lab_keeps_the_ip_a_status_shows() {
        let t0 = Instant::now();
        let mut index = Index::new(Duration::ZERO);
        let status = |ip: &str| json!({ "spec": { "type": "LoadBalancer" }, "status": { "loadBalancer": { "ingress": [{ "ip": ip }] } } });
        index.service_event(Event::Apply(svc("new", json!({ "spec": { "type": "LoadBalancer" } }))), t0);
        index.service_event(Event::Apply(svc("old", status("10.250.0.1"))), t0);
        index.advance(t0);
        let ips: BTreeMap<_, _> =
            index.routes().into_iter().filter_map(|r| Some((r.key.service.name, r.ingress_ip?))).collect();
        assert_eq!(ips.get("old"), Some(&Ipv4Addr::new(10, 250, 0, 1)));
        assert_eq!(ips.get("new"), Some(&Ipv4Addr::new(10, 250, 0, 2)), "the old IP was reserved");
    }

    fn local_lb(interval_ms: u64) -> Service {
        svc(
            "gw",
            json!({
                "metadata": { "annotations": {
                    "lab.meshshift.io/health-check-interval-ms": interval_ms.to_string(),
                    "lab.meshshift.io/healthy-threshold": "2",
                    "lab.meshshift.io/unhealthy-threshold": "2",
                }},
                "spec": { "type": "LoadBalancer", "externalTrafficPolicy": "Local" }
            }),
        )
    }

    fn lb_picks(index: &Index, n: usize) -> Vec<Pick> {
        let mut picker = Picker::new(route(index, Frontend::LoadBalancer).expect("lb route").table);
        (0..n).map(|_| picker.pick()).collect()
    }

    #[test]
    fn local_policy_fails_on_stale_nodes_until_health_checks_catch_up() {
        let t0 = Instant::now();
        let every = Duration::from_millis(500);
        let mut index = Index::new(D);
        index.service_event(Event::Apply(local_lb(500)), t0);
        index.endpoints_event(Event::Apply(eps("gw", &[("10.244.1.1", "node-a")])), t0);

        // Applied at t0+D: node-a is checked at once (1/2), then healthy one interval later.
        index.advance(t0 + D);
        assert_eq!(lb_picks(&index, 1), vec![Pick::NoHealthyNode]);
        assert_eq!(index.next_wakeup(), Some(t0 + D + every));
        index.advance(t0 + D + every);
        assert_eq!(lb_picks(&index, 2), vec![Pick::Backend(addr("10.244.1.1")); 2]);
        // The ClusterIP route is not affected by the policy.
        assert_eq!(
            route(&index, Frontend::ClusterIp).expect("route").table,
            RouteTable::Cluster { backends: vec![addr("10.244.1.1")] }
        );

        // The endpoint moves to node-b, applied at t1+D.
        let t1 = t0 + D + every * 2;
        index.advance(t1);
        index.endpoints_event(Event::Apply(eps("gw", &[("10.244.2.1", "node-b")])), t1);
        index.advance(t1 + D);
        // node-a is still believed healthy but has no local endpoint: connections fail.
        assert_eq!(lb_picks(&index, 1), vec![Pick::NoLocalEndpoint { node: "node-a".into() }]);
        // Over the next checks node-a fails twice and node-b passes twice: then only node-b.
        let mut t = t1 + D;
        for _ in 0..4 {
            t += every;
            index.advance(t);
        }
        assert_eq!(lb_picks(&index, 3), vec![Pick::Backend(addr("10.244.2.1")); 3]);
    }

    #[test]
    fn cluster_policy_has_no_health_tracker() {
        let t0 = Instant::now();
        let mut index = Index::new(Duration::ZERO);
        index.service_event(Event::Apply(svc("gw", json!({ "spec": { "type": "LoadBalancer" } }))), t0);
        index.endpoints_event(Event::Apply(eps("gw", &[("10.244.1.1", "node-a")])), t0);
        index.advance(t0);
        assert!(index.health.is_empty());
        assert_eq!(lb_picks(&index, 1), vec![Pick::Backend(addr("10.244.1.1"))]);
        // Switching the policy to Local starts health checking (the node starts unhealthy).
        index.service_event(Event::Apply(local_lb(100)), t0);
        index.advance(t0);
        assert_eq!(index.health.len(), 1);
        assert_eq!(lb_picks(&index, 1), vec![Pick::NoHealthyNode]);
    }
}
