//! `meshshift lab ...`: the lab's lifecycle (up, down, status, env) and installs into it.

mod demo;
mod install;
mod lifecycle;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{LabCommand, LabDirArgs, SuperviseArgs};
use crate::exit::Code;

/// Runs a lab command other than `supervise`.
pub async fn run(cmd: LabCommand) -> Code {
    let result = match cmd {
        LabCommand::Up(args) => lifecycle::up(&args).await,
        LabCommand::Down(args) => lifecycle::down(&args),
        LabCommand::Status(args) => lifecycle::status(&args).await,
        LabCommand::Env(args) => lifecycle::env(&args),
        LabCommand::InstallIstio(args) => install::istio(&args).await,
        LabCommand::InstallBookinfo(args) => install::bookinfo(&args).await,
        LabCommand::Demo(args) => demo::demo(&args).await,
        LabCommand::Supervise(_) => return Code::Usage,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            Code::Failure
        }
    }
}

/// The lab directory from `--dir` or the default.
fn dir(args: &LabDirArgs) -> PathBuf {
    args.dir.clone().unwrap_or_else(meshshift_lab::daemon::default_dir)
}

/// A client for the running lab, or an error telling how to start one.
async fn client(args: &LabDirArgs) -> anyhow::Result<kube::Client> {
    let dir = dir(args);
    let Some(state) = meshshift_lab::daemon::running(&dir) else {
        anyhow::bail!("no lab is running in {}; start one with `meshshift lab up`", dir.display());
    };
    Ok(meshshift_lab::kubeconfig::client_from_file(&state.kubeconfig).await?)
}

/// Runs the lab supervisor in this process (never returns until the lab stops).
pub fn supervise(args: &SuperviseArgs) -> ExitCode {
    let mut opts = meshshift_lab::supervisor::SupervisorOptions::new(&args.dir);
    opts.bin_dir = args.bin_dir.clone();
    opts.exit_on_stdin_eof = args.exit_on_stdin_eof;
    let lab = meshshift_lab::LabOptions {
        nodes: args.nodes,
        services: args.services,
        propagation_delay: std::time::Duration::from_millis(args.propagation_delay_ms),
        prometheus: args.prometheus,
    };
    lab.configure(&mut opts);
    match meshshift_lab::supervisor::run(opts) {
        Ok(()) => Code::Ok.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Code::Failure.into()
        }
    }
}
