//! What runs in a lab besides the control plane: the node agent (emulated nodes and pods), service
//! networking and a Prometheus scraping the proxies. A bare control plane (the `status` tests) runs none.

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
    /// Run a real Prometheus inside the lab, scraping every proxy each second (see [`crate::prometheus`]).
    pub prometheus: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self { nodes: 0, services: false, propagation_delay: Duration::from_secs(1), prometheus: false }
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
        if self.prometheus {
            args.push("--prometheus".to_owned());
        }
        args
    }

    /// These options with a Prometheus.
    pub fn with_prometheus(self) -> Self {
        Self { prometheus: true, ..self }
    }
}

impl LabOptions {
    /// Parses the flags [`LabOptions::args`] writes; returns the options and the arguments it did not use.
    pub fn parse_args(args: Vec<String>) -> Result<(LabOptions, Vec<String>), String> {
        let mut opts = LabOptions::default();
        let mut rest = Vec::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--nodes" => {
                    opts.nodes = it.next().and_then(|v| v.parse().ok()).ok_or("--nodes takes a number")?;
                }
                "--services" => opts.services = true,
                "--prometheus" => opts.prometheus = true,
                "--propagation-delay-ms" => {
                    let ms: u64 =
                        it.next().and_then(|v| v.parse().ok()).ok_or("--propagation-delay-ms takes a number")?;
                    opts.propagation_delay = Duration::from_millis(ms);
                }
                _ => rest.push(a),
            }
        }
        Ok((opts, rest))
    }

    /// Sets what these options call for on a supervisor's options: the agents and the Prometheus.
    pub fn configure(&self, supervisor: &mut crate::supervisor::SupervisorOptions) {
        supervisor.agents = self.agents();
        supervisor.prometheus = self.prometheus;
    }

    /// The agents these options call for, with the lab's standard image emulations.
    pub fn agents(&self) -> Vec<crate::supervisor::Agent> {
        let mut agents = Vec::new();
        if self.services {
            agents.push(crate::netsvc::agent(self));
        }
        if self.nodes > 0 {
            agents.push(crate::agent::agent(self, crate::containers::default_registry()));
        }
        agents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let opts =
            LabOptions { nodes: 3, services: true, propagation_delay: Duration::from_millis(250), prometheus: false };
        let mut args = opts.args();
        args.push("--dir".into());
        let (parsed, rest) = LabOptions::parse_args(args).expect("parse");
        assert_eq!(parsed, opts);
        assert_eq!(rest, vec!["--dir".to_owned()]);
        assert!(!opts.args().contains(&"--prometheus".to_owned()), "no flag unless asked: older CLIs reject it");
        let with = opts.clone().with_prometheus();
        let (parsed, rest) = LabOptions::parse_args(with.args()).expect("parse");
        assert_eq!(parsed, with);
        assert!(rest.is_empty());
        let mut supervisor = crate::supervisor::SupervisorOptions::new("/tmp/lab");
        with.configure(&mut supervisor);
        assert!(supervisor.prometheus);
        assert_eq!(supervisor.agents.len(), 2);
        assert!(LabOptions::parse_args(vec!["--nodes".into(), "x".into()]).is_err());
    }
}
