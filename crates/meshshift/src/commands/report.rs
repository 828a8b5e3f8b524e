//! `meshshift report RUN_DIR`: writes `report.json` and a self-contained `report.html` into a run directory
//! (docs/report.md) and prints their paths, JSON first, one per line.
//!
//! Exit codes: 0 written, 2 not a run directory (or its plan does not parse), 1 a file could not be read or
//! written.

use crate::cli::ReportArgs;
use crate::exit::Code;

/// Runs the command.
pub fn run(args: &ReportArgs) -> Code {
    let data = match meshshift_report::load(&args.dir) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    let report = meshshift_report::build(&data);
    match meshshift_report::write_report(&args.dir, &report) {
        Ok((json, html)) => {
            println!("{}", json.display());
            println!("{}", html.display());
            Code::Ok
        }
        Err(e) => failed(&e),
    }
}

fn failed(e: &meshshift_report::ReportError) -> Code {
    eprintln!("error: {e}");
    if e.is_input() { Code::Usage } else { Code::Failure }
}
