//! Pod IP allocation for one node: `10.244.<node>.2` .. `10.244.<node>.254`.
//!
//! `.1` is the node's own address (its InternalIP), `.0` and `.255` are left alone so the ranges read like
//! ordinary /24s. Allocation is round-robin (the next free address after the last one handed out), as
//! CNI's host-local IPAM does: an IP that was just released is reused as late as possible, so a stale
//! Endpoints entry or a pooled connection to a deleted pod never reaches a brand-new pod by accident.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The first host number handed to pods.
const FIRST: u8 = 2;
/// The last host number handed to pods.
const LAST: u8 = 254;

/// The addresses of one node's pod range in use.
#[derive(Debug, Clone)]
pub(crate) struct NodeIpam {
    node: u8,
    used: BTreeSet<u8>,
    /// Where the next search starts.
    next: u8,
}

impl NodeIpam {
    /// An empty range for node number `node` (10.244.`node`.0/24).
    pub(crate) fn new(node: u8) -> Self {
        NodeIpam { node, used: BTreeSet::new(), next: FIRST }
    }

    /// Hands out the next free address, or `None` when all 253 are in use.
    pub(crate) fn allocate(&mut self) -> Option<Ipv4Addr> {
        let candidates = (self.next..=LAST).chain(FIRST..self.next);
        let host = candidates.into_iter().find(|h| !self.used.contains(h))?;
        self.used.insert(host);
        self.next = if host == LAST { FIRST } else { host + 1 };
        Some(self.address(host))
    }

    /// Marks `ip` as used (a pod that already had it, e.g. after the agent restarted). False if `ip` is not
    /// in this node's pod range or already taken.
    pub(crate) fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        match self.host_of(ip) {
            Some(host) => self.used.insert(host),
            None => false,
        }
    }

    /// Gives `ip` back (no effect if it is not ours or not in use).
    pub(crate) fn release(&mut self, ip: Ipv4Addr) {
        if let Some(host) = self.host_of(ip) {
            self.used.remove(&host);
        }
    }

    /// How many addresses are in use.
    pub(crate) fn in_use(&self) -> usize {
        self.used.len()
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.node, host)
    }

    /// The host number of `ip` if it is a pod address of this node.
    fn host_of(&self, ip: Ipv4Addr) -> Option<u8> {
        let [a, b, c, d] = ip.octets();
        ((a, b, c) == (10, 244, self.node) && (FIRST..=LAST).contains(&d)).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_in_the_node_range() {
        let mut ipam = NodeIpam::new(3);
        let a = ipam.allocate().expect("a");
        let b = ipam.allocate().expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 3, 3));
        assert_eq!(ipam.in_use(), 2);
    }

    #[test]
    fn released_addresses_are_reused_last() {
        let mut ipam = NodeIpam::new(1);
        let first = ipam.allocate().expect("first");
        ipam.release(first);
        let second = ipam.allocate().expect("second");
        assert_ne!(first, second, "a just-released address must not come back at once");
        // After wrapping around, the released address is handed out again.
        let mut seen = vec![second];
        while let Some(ip) = ipam.allocate() {
            seen.push(ip);
        }
        assert!(seen.contains(&first));
        assert_eq!(seen.len(), 253);
        assert_eq!(ipam.allocate(), None, "exhausted");
        ipam.release(Ipv4Addr::new(10, 244, 1, 100));
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 1, 100)));
    }

    #[test]
    fn reserve_accepts_only_free_addresses_of_this_node() {
        let mut ipam = NodeIpam::new(2);
        assert!(ipam.reserve(Ipv4Addr::new(10, 244, 2, 2)));
        assert!(!ipam.reserve(Ipv4Addr::new(10, 244, 2, 2)), "already taken");
        assert!(!ipam.reserve(Ipv4Addr::new(10, 244, 1, 9)), "another node's range");
        assert!(!ipam.reserve(Ipv4Addr::new(10, 244, 2, 1)), "the node's own address");
        assert!(!ipam.reserve(Ipv4Addr::new(10, 244, 2, 255)));
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 244, 2, 3)), "reserved addresses are skipped");
        ipam.release(Ipv4Addr::new(192, 168, 0, 1)); // not ours: ignored
        assert_eq!(ipam.in_use(), 2);
    }
}
