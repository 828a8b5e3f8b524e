//! Runs a lab supervisor, with the same arguments as the hidden CLI subcommand:
//! `supervise lab supervise --dir D [--bin-dir B] [--exit-on-stdin-eof] [--nodes N] [--services] [--propagation-delay-ms MS]
//! [--prometheus]`.
//! Used by this crate's integration tests, which cannot depend on the CLI crate.

use std::path::PathBuf;
use std::process::ExitCode;

use meshshift_lab::supervisor::{self, SupervisorOptions};

fn main() -> ExitCode {
    // Logging to stderr only: stdout carries the ready line. No threads are started by this.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(opts) => opts,
        Err(usage) => {
            eprintln!("{usage}\nusage: supervise lab supervise --dir D [--bin-dir B] [--exit-on-stdin-eof]");
            return ExitCode::from(2);
        }
    };
    match supervisor::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: Vec<String>) -> Result<SupervisorOptions, String> {
    let (lab, args) = meshshift_lab::LabOptions::parse_args(args)?;
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("lab") || args.next().as_deref() != Some("supervise") {
        return Err("expected `lab supervise`".into());
    }
    let (mut dir, mut bin_dir, mut stdin_eof) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--bin-dir" => bin_dir = args.next().map(PathBuf::from),
            "--exit-on-stdin-eof" => stdin_eof = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let mut opts = SupervisorOptions::new(dir.ok_or("--dir is required")?);
    opts.bin_dir = bin_dir;
    opts.exit_on_stdin_eof = stdin_eof;
    lab.configure(&mut opts);
    Ok(opts)
}
