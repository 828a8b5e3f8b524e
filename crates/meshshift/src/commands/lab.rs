//! `meshshift lab ...`.

use std::process::ExitCode;

use crate::cli::SuperviseArgs;
use crate::exit::Code;

/// Runs the lab supervisor in this process (never returns until the lab stops).
pub fn supervise(args: &SuperviseArgs) -> ExitCode {
    let mut opts = meshshift_lab::supervisor::SupervisorOptions::new(&args.dir);
    opts.bin_dir = args.bin_dir.clone();
    opts.exit_on_stdin_eof = args.exit_on_stdin_eof;
    let lab = meshshift_lab::LabOptions {
        nodes: args.nodes,
        services: args.services,
        propagation_delay: std::time::Duration::from_millis(args.propagation_delay_ms),
    };
    opts.agents = lab.agents();
    match meshshift_lab::supervisor::run(opts) {
        Ok(()) => Code::Ok.into(),
        Err(e) => {
            eprintln!("error: {e}");
            Code::Failure.into()
        }
    }
}
