//! What runs in a lab besides the control plane: the node agent (emulated nodes and pods) and service
//! networking. A bare control plane (the `status` tests) runs neither.

use std::time::Duration;

/// The lab's optional parts, passed to `lab supervise` as flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOptions {
    /// Emulated nodes (0: no node agent, pods stay Pending).
    pub nodes: u32,
    /// Run service networking (ClusterIP forwarding, load balancers).
    pub services: bool,
    /// How long a Service or Endpoints change takes to reach the forwarders (kube-proxy's lag).
    pub propagation_delay: Duration,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self { nodes: 0, services: false, propagation_delay: Duration::from_secs(1) }
    }
}

impl LabOptions {
    /// A full lab: `nodes` nodes and service networking with the default 1 s propagation delay.
    pub fn full(nodes: u32) -> Self {
        Self { nodes, services: true, ..Self::default() }
    }

    /// The `lab supervise` flags that select these options.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--nodes".to_owned(), self.nodes.to_string()];
        if self.services {
            args.push("--services".to_owned());
        }
        args.push("--propagation-delay-ms".to_owned());
        args.push(self.propagation_delay.as_millis().to_string());
        args
    }
}
