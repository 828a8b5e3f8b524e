//! One module per command; each turns parsed arguments into calls on the library crates.

pub mod apply;
pub mod lab;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod rbac;
pub mod recorder;
pub mod report;
pub mod status;
pub mod traffic;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command, LabCommand};
use crate::exit::Code;

/// Connects like kubectl and reads the cluster's snapshot, reporting failures on stderr as exit codes.
pub async fn read_cluster(args: &crate::cli::ClusterArgs) -> Result<meshshift_core::model::ClusterSnapshot, Code> {
    let client = status::client(args).await?;
    meshshift_kube::read_snapshot(&client).await.map_err(|e| {
        eprintln!("error: {e}");
        Code::Cluster
    })
}

/// Runs a command and maps its outcome to an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Status(args) => status::run(args).await.into(),
        Command::Plan(args) => plan::run(args).await.into(),
        Command::Apply(args) => apply::apply(*args).await.into(),
        Command::Resume(args) => apply::resume(args).await.into(),
        Command::Rollback(args) => apply::rollback(args).await.into(),
        Command::Probe(args) => probe::run(args).await.into(),
        Command::Report(args) => report::run(&args).into(),
        Command::Rbac(args) => rbac::run(&args).into(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "meshshift", &mut std::io::stdout());
            Code::Ok.into()
        }
        // Dispatched in main before the runtime starts.
        Command::Lab(LabCommand::Supervise(_)) => Code::Usage.into(),
        Command::Lab(cmd) => lab::run(cmd).await.into(),
    }
}
