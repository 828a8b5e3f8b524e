//! `lab up`, `lab down`, `lab status`, `lab env`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use meshshift_lab::LabOptions;
use meshshift_lab::daemon::{self, Down, Up};
use meshshift_lab::netsvc::LoadBalancers;

use super::dir;
use crate::cli::{LabDirArgs, LabUpArgs};
use crate::exit::Code;

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}") {
        bar.set_style(style);
    }
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub async fn up(args: &LabUpArgs) -> anyhow::Result<Code> {
    let dir = dir(&args.dir);
    let exe = std::env::current_exe()?;
    let opts = LabOptions {
        nodes: args.nodes,
        services: true,
        propagation_delay: Duration::from_millis(args.propagation_delay_ms),
        prometheus: args.prometheus,
    };
    let bar = spinner("starting the lab");
    let progress_bar = bar.clone();
    let dir_for_up = dir.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        daemon::up(&exe, &dir_for_up, &opts, |m| progress_bar.set_message(m.to_owned()))
    })
    .await??;
    bar.finish_and_clear();
    let state = match outcome {
        Up::Started(state) => {
            eprintln!("lab ready in {:.1} s ({} nodes)", state.startup_ms as f64 / 1000.0, args.nodes);
            state
        }
        Up::AlreadyRunning(state) => {
            eprintln!("a lab is already running in {} (pid {})", dir.display(), state.pid);
            state
        }
    };
    print_env(&dir, &state)
}

pub fn down(args: &LabDirArgs) -> anyhow::Result<Code> {
    let dir = dir(args);
    match daemon::down(&dir)? {
        Down::Stopped => eprintln!("lab stopped; {} removed", dir.display()),
        Down::Killed => eprintln!(
            "lab did not stop within {} s and was killed; {} removed",
            daemon::DOWN_GRACE.as_secs(),
            dir.display()
        ),
        Down::NotRunning => eprintln!("no lab was running in {}", dir.display()),
    }
    Ok(Code::Ok)
}

pub async fn status(args: &LabDirArgs) -> anyhow::Result<Code> {
    let dir = dir(args);
    let Some(state) = daemon::running(&dir) else {
        println!("no lab running in {}", dir.display());
        return Ok(Code::Failure);
    };
    println!("lab running in {} (supervisor pid {}, namespace mode {})", dir.display(), state.pid, state.namespace);
    println!("apiserver: {}", state.apiserver);
    if let Some(prometheus) = &state.prometheus {
        println!("prometheus: {prometheus}");
    }
    let client = super::client(args).await?;
    let nodes: Api<Node> = Api::all(client);
    for n in nodes.list(&ListParams::default()).await?.items {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "Unknown".to_owned());
        println!("node {} Ready={ready}", n.metadata.name.unwrap_or_default());
    }
    for lb in LoadBalancers::read(&dir)? {
        let host = lb.host.map(|h| h.to_string()).unwrap_or_else(|| "-".to_owned());
        println!("load balancer {}/{}:{} ingress {} host {host}", lb.namespace, lb.name, lb.port, lb.ingress_ip);
    }
    Ok(Code::Ok)
}

pub fn env(args: &LabDirArgs) -> anyhow::Result<Code> {
    let dir = dir(args);
    let Some(state) = daemon::running(&dir) else {
        anyhow::bail!("no lab is running in {}; start one with `meshshift lab up`", dir.display());
    };
    print_env(&dir, &state)
}

/// Shell exports for a running lab: its kubeconfig, once a LoadBalancer serves HTTP the host address of the
/// first one (the lab's ingress), and its Prometheus when it runs one.
fn print_env(dir: &std::path::Path, state: &meshshift_lab::LabState) -> anyhow::Result<Code> {
    for line in daemon::env_exports(dir, state)? {
        println!("{line}");
    }
    Ok(Code::Ok)
}
