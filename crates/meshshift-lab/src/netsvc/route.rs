//! Routes: where a listener sends each new connection. Pure: the forwarder asks a [`Picker`] once per
//! accepted connection, and the connection stays on the answer until it closes (connection pinning, as
//! with iptables' conntrack).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::spec::ServiceKey;

/// Which entry point of a Service a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frontend {
    /// `ClusterIP:port`, inside the namespace (kube-proxy).
    ClusterIp,
    /// The load balancer: `ingressIP:port` inside the namespace and a `127.0.0.1` port on the host.
    LoadBalancer,
}

/// One Service port seen through one frontend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// The Service.
    pub service: ServiceKey,
    /// The Service port.
    pub port: u16,
    /// The frontend.
    pub frontend: Frontend,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.frontend {
            Frontend::ClusterIp => "clusterip",
            Frontend::LoadBalancer => "loadbalancer",
        };
        write!(f, "{}:{} ({kind})", self.service, self.port)
    }
}

/// Where a route listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listen {
    /// An address inside the lab's namespace (ClusterIP or ingress IP).
    Namespace(SocketAddrV4),
    /// An ephemeral `127.0.0.1` port in the host's namespace.
    Host,
}

/// The backends a route chooses from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTable {
    /// Any ready endpoint of the Service (ClusterIP, or a load balancer with `externalTrafficPolicy:
    /// Cluster`: any node accepts and its kube-proxy forwards cluster-wide).
    Cluster {
        /// The ready endpoints.
        backends: Vec<SocketAddrV4>,
    },
    /// A load balancer with `externalTrafficPolicy: Local`: it spreads connections over the nodes it
    /// currently believes healthy, and each node serves only its own endpoints.
    Local {
        /// The nodes the load balancer believes healthy, each with its local ready endpoints as its
        /// kube-proxy sees them (possibly none: the health check has not noticed yet).
        nodes: Vec<(String, Vec<SocketAddrV4>)>,
    },
}

/// A route: a key, where to listen, what to choose from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route's identity (listeners and round-robin state are kept per key).
    pub key: RouteKey,
    /// The Service port's name.
    pub port_name: Option<String>,
    /// The load balancer's ingress IP (load balancer routes only).
    pub ingress_ip: Option<Ipv4Addr>,
    /// Where to listen.
    pub listen: Vec<Listen>,
    /// What to choose from.
    pub table: RouteTable,
}

/// The outcome for one new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Forward to this backend.
    Backend(SocketAddrV4),
    /// Refuse: the Service has no ready endpoint.
    NoEndpoints,
    /// Refuse: the load balancer believes no node healthy.
    NoHealthyNode,
    /// Refuse: the load balancer sent the connection to a node without a local ready endpoint.
    NoLocalEndpoint {
        /// The node.
        node: String,
    },
}

/// Round-robin choice over a [`RouteTable`]; the counters survive table updates so that a changed
/// endpoint list does not restart the rotation from the first backend.
#[derive(Debug, Clone)]
pub struct Picker {
    table: RouteTable,
    next: usize,
    next_on_node: BTreeMap<String, usize>,
}

impl Picker {
    /// A picker over `table`.
    pub fn new(table: RouteTable) -> Self {
        Picker { table, next: 0, next_on_node: BTreeMap::new() }
    }

    /// Replaces the table; returns whether it changed.
    pub fn set_table(&mut self, table: RouteTable) -> bool {
        if self.table == table {
            return false;
        }
        self.table = table;
        true
    }

    /// Chooses for one new connection.
    pub fn pick(&mut self) -> Pick {
        match &self.table {
            RouteTable::Cluster { backends } => match round_robin(&mut self.next, backends) {
                Some(addr) => Pick::Backend(*addr),
                None => Pick::NoEndpoints,
            },
            RouteTable::Local { nodes } => {
                let Some((node, local)) = round_robin(&mut self.next, nodes) else {
                    return Pick::NoHealthyNode;
                };
                let counter = self.next_on_node.entry(node.clone()).or_default();
                match round_robin(counter, local) {
                    Some(addr) => Pick::Backend(*addr),
                    None => Pick::NoLocalEndpoint { node: node.clone() },
                }
            }
        }
    }
}

fn round_robin<'a, T>(counter: &mut usize, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    let item = &items[*counter % items.len()];
    *counter = counter.wrapping_add(1);
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080)
    }

    #[test]
    fn cluster_round_robin_alternates_and_survives_updates() {
        let mut p = Picker::new(RouteTable::Cluster { backends: vec![a(1), a(2)] });
        let picks: Vec<_> = (0..4).map(|_| p.pick()).collect();
        assert_eq!(picks, vec![Pick::Backend(a(1)), Pick::Backend(a(2)), Pick::Backend(a(1)), Pick::Backend(a(2))]);
        assert!(p.set_table(RouteTable::Cluster { backends: vec![a(1), a(2), a(3)] }));
        assert!(!p.set_table(RouteTable::Cluster { backends: vec![a(1), a(2), a(3)] }));
        let picks: Vec<_> = (0..3).map(|_| p.pick()).collect();
        assert_eq!(picks, vec![Pick::Backend(a(2)), Pick::Backend(a(3)), Pick::Backend(a(1))]);
    }

    #[test]
    fn empty_tables_refuse() {
        assert_eq!(Picker::new(RouteTable::Cluster { backends: vec![] }).pick(), Pick::NoEndpoints);
        assert_eq!(Picker::new(RouteTable::Local { nodes: vec![] }).pick(), Pick::NoHealthyNode);
    }

    #[test]
    fn local_spreads_over_nodes_then_local_endpoints() {
        let mut p = Picker::new(RouteTable::Local {
            nodes: vec![("n1".into(), vec![a(1), a(2)]), ("n2".into(), vec![a(3)]), ("n3".into(), vec![])],
        });
        let picks: Vec<_> = (0..6).map(|_| p.pick()).collect();
        assert_eq!(
            picks,
            vec![
                Pick::Backend(a(1)),
                Pick::Backend(a(3)),
                Pick::NoLocalEndpoint { node: "n3".into() },
                Pick::Backend(a(2)),
                Pick::Backend(a(3)),
                Pick::NoLocalEndpoint { node: "n3".into() },
            ]
        );
    }
}
