//! The lab's cloud load balancer, as pure state: ingress IP allocation and per-node health checking.
//!
//! Why health checking matters: with `externalTrafficPolicy: Local` a node only serves its own endpoints,
//! so a cloud load balancer must learn (by checking each node every few seconds, with thresholds) which
//! nodes have one. When endpoints move to other nodes, the balancer keeps sending to the old nodes until
//! enough checks fail, and those connections are dropped: the make-before-break failure mode an upgrade
//! tool must avoid. [`HealthTracker`] is that state machine, driven by the agent's clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use super::spec::{HealthConfig, ServiceKey};

/// The load balancer pool: `10.250.0.0/24`, local inside the lab's namespace.
pub const POOL_CIDR: &str = crate::netns::LOAD_BALANCER_CIDR;
const POOL_PREFIX: [u8; 3] = [10, 250, 0];

/// Whether `ip` is an allocatable address of [`POOL_CIDR`] (not the network or broadcast address).
pub fn in_pool(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[..3] == POOL_PREFIX && (1..=254).contains(&o[3])
}

/// Hands out ingress IPs from the pool, one per load balancer Service.
#[derive(Debug, Clone, Default)]
pub struct IpAllocator {
    assigned: BTreeMap<ServiceKey, Ipv4Addr>,
}

impl IpAllocator {
    /// The IP of `key`, if it has one.
    pub fn get(&self, key: &ServiceKey) -> Option<Ipv4Addr> {
        self.assigned.get(key).copied()
    }

    /// The IP of `key`: the one it already has; else the first of `preferred` (its `loadBalancerIP`, then
    /// the IP its status already shows, so a restarted lab keeps its addresses) that is in the pool and
    /// free; else the lowest free address not in `reserved` (IPs other Services' statuses still show).
    /// `None` when the pool is exhausted.
    pub fn assign(
        &mut self,
        key: &ServiceKey,
        preferred: &[Ipv4Addr],
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.get(key) {
            return Some(ip);
        }
        let used: BTreeSet<Ipv4Addr> = self.assigned.values().copied().collect();
        let ip = preferred.iter().copied().find(|ip| in_pool(*ip) && !used.contains(ip)).or_else(|| {
            (1..=254u8)
                .map(|last| Ipv4Addr::new(POOL_PREFIX[0], POOL_PREFIX[1], POOL_PREFIX[2], last))
                .find(|ip| !used.contains(ip) && !reserved.contains(ip))
        })?;
        self.assigned.insert(key.clone(), ip);
        Some(ip)
    }

    /// Frees the IP of `key`.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Ipv4Addr> {
        self.assigned.remove(key)
    }
}

/// A change of a node's health as the load balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The node.
    pub node: String,
    /// Its new state.
    pub healthy: bool,
}

#[derive(Debug, Clone, Default)]
struct Target {
    healthy: bool,
    /// Consecutive check results that disagree with `healthy`.
    streak: u32,
}

/// Health checking of the nodes behind one load balancer.
///
/// Every node starts unhealthy (a cloud load balancer sends nothing to a new target before it passed
/// `healthy_threshold` checks). All nodes are checked together every `interval`, the first time when the
/// tracker is created; a node flips after `healthy_threshold` consecutive successes or
/// `unhealthy_threshold` consecutive failures.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    config: HealthConfig,
    targets: BTreeMap<String, Target>,
    next_check: Instant,
}

impl HealthTracker {
    /// A tracker with no nodes, checking first at `now`.
    pub fn new(config: HealthConfig, now: Instant) -> Self {
        HealthTracker { config, targets: BTreeMap::new(), next_check: now }
    }

    /// Updates the settings (an annotation changed); node states are kept.
    pub fn set_config(&mut self, config: HealthConfig, now: Instant) {
        if config.interval != self.config.interval {
            self.next_check = self.next_check.min(now + config.interval);
        }
        self.config = config;
    }

    /// Starts checking `node` (unhealthy until proven otherwise); returns whether it is new.
    pub fn add_target(&mut self, node: &str) -> bool {
        if self.targets.contains_key(node) {
            return false;
        }
        self.targets.insert(node.to_owned(), Target::default());
        true
    }

    /// When the next round of checks is due.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// If a round is due at `now`, checks every node with `probe` (true: healthy answer) and returns the
    /// nodes that changed state. One round at most per call: a late agent does not replay missed rounds.
    pub fn check(&mut self, now: Instant, probe: impl Fn(&str) -> bool) -> Vec<Transition> {
        if now < self.next_check {
            return Vec::new();
        }
        self.next_check += self.config.interval;
        if self.next_check <= now {
            self.next_check = now + self.config.interval;
        }
        let mut transitions = Vec::new();
        for (node, target) in &mut self.targets {
            let ok = probe(node);
            if ok == target.healthy {
                target.streak = 0;
                continue;
            }
            target.streak += 1;
            let threshold =
                if target.healthy { self.config.unhealthy_threshold } else { self.config.healthy_threshold };
            if target.streak >= threshold {
                target.healthy = ok;
                target.streak = 0;
                transitions.push(Transition { node: node.clone(), healthy: ok });
            }
        }
        transitions
    }

    /// The nodes currently receiving traffic, sorted by name.
    pub fn healthy_nodes(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter(|(_, t)| t.healthy).map(|(n, _)| n.as_str())
    }

    /// Whether `node` receives traffic.
    #[cfg(test)]
    pub fn is_healthy(&self, node: &str) -> bool {
        self.targets.get(node).is_some_and(|t| t.healthy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, 0, last)
    }

    #[test]
    fn pool_bounds() {
        assert!(in_pool(ip(1)) && in_pool(ip(254)));
        assert!(!in_pool(ip(0)) && !in_pool(ip(255)) && !in_pool(Ipv4Addr::new(10, 250, 1, 1)));
    }

    #[test]
    fn allocation_is_stable_lowest_free_and_honours_preferences() {
        let mut alloc = IpAllocator::default();
        let (a, b, c, d) = (
            ServiceKey::new("n", "a"),
            ServiceKey::new("n", "b"),
            ServiceKey::new("n", "c"),
            ServiceKey::new("n", "d"),
        );
        let none = BTreeSet::new();
        assert_eq!(alloc.assign(&a, &[], &none), Some(ip(1)));
        assert_eq!(alloc.assign(&a, &[ip(9)], &none), Some(ip(1)), "an existing IP is kept");
        // b prefers a's IP (taken) then an address outside the pool: neither works, it gets the lowest free
        // address that no other status still shows.
        let reserved = BTreeSet::from([ip(2)]);
        assert_eq!(alloc.assign(&b, &[ip(1), Ipv4Addr::new(192, 168, 0, 1)], &reserved), Some(ip(3)));
        assert_eq!(alloc.assign(&c, &[ip(2)], &reserved), Some(ip(2)), "its own status IP is honoured");
        assert_eq!(alloc.release(&a), Some(ip(1)));
        assert_eq!(alloc.assign(&d, &[], &none), Some(ip(1)), "released addresses are reused");
    }

    #[test]
    fn pool_exhaustion() {
        let mut alloc = IpAllocator::default();
        let none = BTreeSet::new();
        for i in 0..254 {
            assert!(alloc.assign(&ServiceKey::new("n", format!("s{i}")), &[], &none).is_some());
        }
        assert_eq!(alloc.assign(&ServiceKey::new("n", "one-too-many"), &[], &none), None);
    }

    #[test]
    fn thresholds_drive_transitions() {
        let t0 = Instant::now();
        let every = Duration::from_millis(100);
        let config = HealthConfig { interval: every, healthy_threshold: 2, unhealthy_threshold: 3 };
        let mut h = HealthTracker::new(config, t0);
        assert!(h.add_target("n1"));
        assert!(!h.add_target("n1"));
        let up = |_: &str| true;
        let down = |_: &str| false;

        assert_eq!(h.check(t0, up), vec![], "1 of 2 successes");
        assert!(!h.is_healthy("n1"));
        assert_eq!(h.check(t0 + every / 2, up), vec![], "not due yet: no round");
        assert_eq!(h.check(t0 + every, up), vec![Transition { node: "n1".into(), healthy: true }]);
        assert_eq!(h.healthy_nodes().collect::<Vec<_>>(), vec!["n1"]);

        // Two failures, a success (resets the streak), then three failures.
        assert!(h.check(t0 + every * 2, down).is_empty());
        assert!(h.check(t0 + every * 3, down).is_empty());
        assert!(h.check(t0 + every * 4, up).is_empty());
        assert!(h.check(t0 + every * 5, down).is_empty());
        assert!(h.check(t0 + every * 6, down).is_empty());
        assert!(h.is_healthy("n1"), "still believed healthy after 2 of 3 failures");
        assert_eq!(h.check(t0 + every * 7, down), vec![Transition { node: "n1".into(), healthy: false }]);
        assert_eq!(h.healthy_nodes().count(), 0);
    }

    #[test]
    fn nodes_are_checked_independently_and_late_rounds_are_not_replayed() {
        let t0 = Instant::now();
        let every = Duration::from_secs(1);
        let mut h =
            HealthTracker::new(HealthConfig { interval: every, healthy_threshold: 1, unhealthy_threshold: 1 }, t0);
        h.add_target("a");
        h.add_target("b");
        let only_a = |n: &str| n == "a";
        assert_eq!(h.check(t0, only_a), vec![Transition { node: "a".into(), healthy: true }]);
        // The agent wakes up 10 s late: one round, and the next is one interval after now.
        let late = t0 + Duration::from_secs(10);
        assert_eq!(h.check(late, |n| n == "b").len(), 2);
        assert_eq!(h.next_check(), late + every);
        assert!(h.is_healthy("b") && !h.is_healthy("a"));
    }

    #[test]
    fn shorter_interval_takes_effect_at_once() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(HealthConfig::default(), t0);
        h.check(t0, |_| true);
        assert_eq!(h.next_check(), t0 + Duration::from_secs(2));
        h.set_config(HealthConfig { interval: Duration::from_millis(100), ..HealthConfig::default() }, t0);
        assert_eq!(h.next_check(), t0 + Duration::from_millis(100));
    }
}
