//! The endpoint view of a Service (which ready pod address serves which Service port) and the delayed
//! apply that emulates kube-proxy's lag.
//!
//! Why a delay: real kube-proxy rewrites iptables some time after the Endpoints change (about a second),
//! and that window is exactly where upgrades drop requests (a new connection still goes to a pod that was
//! removed). The lab reproduces it on purpose so meshshift's mitigations can be tested against it.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::spec::{EndpointsSpec, LoadBalancerSpec, ServicePortSpec, ServiceSpec};

/// A ready endpoint of one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Pod IP and pod port.
    pub addr: SocketAddrV4,
    /// The pod's node, if the Endpoints say.
    pub node: Option<String>,
}

/// One Service port and its ready backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// The Service port.
    pub port: ServicePortSpec,
    /// Its ready backends, in Endpoints order, without duplicates.
    pub backends: Vec<Backend>,
}

/// Everything the data plane needs about one Service: the unit that is delayed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The ClusterIP, if any.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The TCP ports with their backends.
    pub ports: Vec<PortView>,
    /// Set for `type: LoadBalancer`.
    pub load_balancer: Option<LoadBalancerSpec>,
}

impl ServiceView {
    /// Joins a Service with its Endpoints (none yet: every port has no backend).
    pub fn build(svc: &ServiceSpec, eps: Option<&EndpointsSpec>) -> Self {
        let single_unnamed = svc.ports.len() == 1 && svc.ports[0].name.is_none();
        let ports = svc
            .ports
            .iter()
            .map(|port| PortView {
                port: port.clone(),
                backends: eps.map(|e| backends_for(port, single_unnamed, e)).unwrap_or_default(),
            })
            .collect();
        ServiceView { cluster_ip: svc.cluster_ip, ports, load_balancer: svc.load_balancer.clone() }
    }

    /// Whether `node` runs a ready endpoint of any port of this Service: what kube-proxy's health-check
    /// server answers for `externalTrafficPolicy: Local`.
    pub fn has_local_endpoint(&self, node: &str) -> bool {
        self.ports.iter().flat_map(|p| &p.backends).any(|b| b.node.as_deref() == Some(node))
    }

    /// Every node named by a backend of this Service.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.ports.iter().flat_map(|p| &p.backends).filter_map(|b| b.node.as_deref())
    }
}

/// The ready backends of `port`: in every subset, the endpoint port with the same name; for a Service
/// whose only port is unnamed, a subset's only port whatever its name.
pub fn backends_for(port: &ServicePortSpec, single_unnamed: bool, eps: &EndpointsSpec) -> Vec<Backend> {
    let mut out: Vec<Backend> = Vec::new();
    for subset in &eps.subsets {
        let target = subset
            .ports
            .iter()
            .find(|p| p.name == port.name)
            .or_else(|| (single_unnamed && subset.ports.len() == 1).then(|| &subset.ports[0]));
        let Some(target) = target else { continue };
        for addr in &subset.ready {
            let backend = Backend { addr: SocketAddrV4::new(addr.ip, target.port), node: addr.node.clone() };
            if !out.iter().any(|b| b.addr == backend.addr) {
                out.push(backend);
            }
        }
    }
    out
}

/// A value whose changes take effect a fixed delay after they are observed, in order.
///
/// Every observed change is queued with its own due time (observation + delay), so two quick changes are
/// applied one after the other, each exactly `delay` late, like two successive iptables syncs. A change
/// equal to the latest queued (or applied) value is not queued: re-listing unchanged objects after a watch
/// restart must not move anything.
#[derive(Debug, Clone)]
pub struct Delayed<T> {
    applied: T,
    queue: VecDeque<(Instant, T)>,
}

impl<T: Clone + PartialEq> Delayed<T> {
    /// A value currently applied as `initial`, with nothing pending.
    pub fn new(initial: T) -> Self {
        Delayed { applied: initial, queue: VecDeque::new() }
    }

    /// Queues `value` to take effect at `now + delay`; returns whether anything was queued.
    pub fn schedule(&mut self, value: T, now: Instant, delay: Duration) -> bool {
        let latest = self.queue.back().map(|(_, v)| v).unwrap_or(&self.applied);
        if *latest == value {
            return false;
        }
        self.queue.push_back((now + delay, value));
        true
    }

    /// Applies every change due at `now`; returns whether the applied value differs from before (changes
    /// that cancel out within one call are not a change).
    pub fn advance(&mut self, now: Instant) -> bool {
        let mut latest = None;
        while self.queue.front().is_some_and(|(due, _)| *due <= now) {
            latest = self.queue.pop_front().map(|(_, value)| value);
        }
        match latest {
            Some(value) if value != self.applied => {
                self.applied = value;
                true
            }
            _ => false,
        }
    }

    /// The value in effect.
    pub fn applied(&self) -> &T {
        &self.applied
    }

    /// When the next queued change is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _)| *due)
    }

    /// Whether nothing is queued.
    pub fn is_settled(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::{EndpointAddr, EndpointPortSpec, Subset};
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 0, last)
    }

    fn addr(last: u8, node: &str) -> EndpointAddr {
        EndpointAddr { ip: ip(last), node: Some(node.into()) }
    }

    fn port(name: Option<&str>, port: u16) -> EndpointPortSpec {
        EndpointPortSpec { name: name.map(str::to_owned), port }
    }

    fn svc_port(name: Option<&str>, port: u16) -> ServicePortSpec {
        ServicePortSpec { name: name.map(str::to_owned), port }
    }

    #[test]
    fn ports_are_matched_by_name_across_subsets() {
        let eps = EndpointsSpec {
            subsets: vec![
                Subset {
                    ready: vec![addr(1, "a"), addr(2, "b")],
                    ports: vec![port(Some("http"), 8080), port(Some("admin"), 9000)],
                },
                Subset { ready: vec![addr(3, "c")], ports: vec![port(Some("http"), 8081)] },
            ],
        };
        let http = backends_for(&svc_port(Some("http"), 80), false, &eps);
        let addrs: Vec<_> = http.iter().map(|b| b.addr).collect();
        assert_eq!(
            addrs,
            vec![SocketAddrV4::new(ip(1), 8080), SocketAddrV4::new(ip(2), 8080), SocketAddrV4::new(ip(3), 8081)]
        );
        let admin = backends_for(&svc_port(Some("admin"), 9000), false, &eps);
        assert_eq!(admin.len(), 2);
        assert!(backends_for(&svc_port(Some("grpc"), 90), false, &eps).is_empty());
    }

    #[test]
    fn single_unnamed_port_takes_the_only_endpoint_port() {
        let eps =
            EndpointsSpec { subsets: vec![Subset { ready: vec![addr(1, "a")], ports: vec![port(Some("x"), 8080)] }] };
        assert_eq!(backends_for(&svc_port(None, 80), true, &eps).len(), 1);
        // Not for an unnamed port among several (Kubernetes forbids it anyway).
        assert!(backends_for(&svc_port(None, 80), false, &eps).is_empty());
    }

    #[test]
    fn duplicate_addresses_are_merged_and_service_view_reports_nodes() {
        let eps = EndpointsSpec {
            subsets: vec![
                Subset { ready: vec![addr(1, "a")], ports: vec![port(None, 8080)] },
                Subset { ready: vec![addr(1, "a"), addr(2, "b")], ports: vec![port(None, 8080)] },
            ],
        };
        let svc = ServiceSpec { cluster_ip: None, ports: vec![svc_port(None, 80)], load_balancer: None };
        let view = ServiceView::build(&svc, Some(&eps));
        assert_eq!(view.ports[0].backends.len(), 2);
        assert!(view.has_local_endpoint("a") && view.has_local_endpoint("b") && !view.has_local_endpoint("c"));
        assert!(ServiceView::build(&svc, None).ports[0].backends.is_empty());
    }

    #[test]
    fn changes_apply_after_the_delay_in_order() {
        let t0 = Instant::now();
        let d = Duration::from_millis(1000);
        let mut v = Delayed::new(0);
        assert!(v.schedule(1, t0, d));
        assert!(v.schedule(2, t0 + Duration::from_millis(500), d));
        assert_eq!(v.next_due(), Some(t0 + d));
        assert!(!v.advance(t0 + Duration::from_millis(999)));
        assert_eq!(*v.applied(), 0, "the old value is still used during the window");
        assert!(v.advance(t0 + d));
        assert_eq!(*v.applied(), 1);
        assert!(!v.advance(t0 + Duration::from_millis(1499)));
        assert!(v.advance(t0 + Duration::from_millis(1500)));
        assert_eq!(*v.applied(), 2);
        assert!(v.is_settled() && v.next_due().is_none());
    }

    #[test]
    fn unchanged_values_are_not_queued_and_late_advance_applies_all() {
        let t0 = Instant::now();
        let d = Duration::from_millis(100);
        let mut v = Delayed::new("a");
        assert!(!v.schedule("a", t0, d));
        assert!(v.schedule("b", t0, d));
        assert!(!v.schedule("b", t0, d), "equal to the latest queued value");
        assert!(v.schedule("a", t0, d), "a change back is a change");
        assert!(!v.advance(t0 + Duration::from_secs(5)), "b then a: back where it was");
        assert_eq!(*v.applied(), "a");
        assert!(v.is_settled());
    }

    #[test]
    fn zero_delay_applies_at_once() {
        let t0 = Instant::now();
        let mut v = Delayed::new(None);
        v.schedule(Some(1), t0, Duration::ZERO);
        assert!(v.advance(t0));
        assert_eq!(*v.applied(), Some(1));
    }
}
