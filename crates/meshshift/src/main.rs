//! The `meshshift` command line: parses arguments and hands them to a command. Everything else lives in
//! the library crates (`meshshift-core` decides, `meshshift-kube` talks to the API, `meshshift-lab` runs
//! the lab).
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod exit;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The lab supervisor must start before any thread exists (it unshares its network namespace).
    if let cli::Command::Lab(cli::LabCommand::Supervise(args)) = &cli.command {
        return commands::lab::supervise(args);
    }
    logging::init(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Code::Failure.into();
        }
    };
    runtime.block_on(commands::run(cli))
}
