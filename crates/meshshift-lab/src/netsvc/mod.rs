//! Service networking: kube-proxy and load balancers. (being written)

use crate::options::LabOptions;
use crate::supervisor::Agent;

/// The service-networking agent.
pub fn agent(opts: &LabOptions) -> Agent {
    let _ = opts.propagation_delay;
    Agent::new("service-proxy", |_ctx| async { Ok(()) })
}
