//! The node agent: the lab's kubelet. (being written)

use crate::containers::ImageRegistry;
use crate::options::LabOptions;
use crate::supervisor::Agent;

/// The node agent for `opts.nodes` nodes, running containers with `images`.
pub fn agent(opts: &LabOptions, images: ImageRegistry) -> Agent {
    let _ = (opts.nodes, images);
    Agent::new("node-agent", |_ctx| async { Ok(()) })
}
