//! `meshshift probe`: send requests at a constant rate, record every one, print the summary.
//!
//! Exit codes: 0 every request succeeded, 1 at least one failed (or the probe itself did), 2 bad input
//! (including a URL outside loopback and the lab's addresses).

use std::fs::File;
use std::io::{BufWriter, Write};

use meshshift_probe::{Bucket, ProbeConfig, ProbeResult, Prober, Summary};
use serde::Serialize;

use crate::cli::{OutputFormat, ProbeArgs};
use crate::exit::Code;
use crate::output;

/// The structured summary: what `-o json|yaml` prints.
#[derive(Serialize)]
struct Report<'a> {
    started_unix_ms: u64,
    summary: &'a Summary,
    buckets: &'a [Bucket],
}

fn config(args: &ProbeArgs) -> Result<ProbeConfig, meshshift_probe::ProbeError> {
    let mut config = ProbeConfig::new(args.urls.clone(), args.rate);
    config.duration = Some(args.duration);
    if let Some(connections) = args.connections {
        config.connections = connections;
    }
    config.timeout = args.timeout;
    config.drain = args.drain;
    config.headers = args.headers.iter().map(|h| meshshift_probe::parse_header(h)).collect::<Result<_, _>>()?;
    Ok(config)
}

/// Runs the command.
pub async fn run(args: ProbeArgs) -> Code {
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Code::Usage;
        }
    };
    // The output file is opened first: a bad path is reported before any traffic is sent.
    let out = match args.out.as_ref().map(File::create).transpose() {
        Ok(f) => f.map(BufWriter::new),
        Err(e) => {
            eprintln!(
                "error: cannot create {}: {e}",
                args.out.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
            return Code::Usage;
        }
    };
    let handle = match Prober::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return if e.is_input() { Code::Usage } else { Code::Failure };
        }
    };
    // Ctrl-C ends the sending window early; due requests still finish and everything is reported.
    let stopper = handle.stopper();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("probe: interrupted, finishing requests already due");
            stopper.stop();
        }
    });
    let result = handle.wait().await;
    interrupt.abort();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Code::Failure;
        }
    };
    report(&args, out, &result)
}

/// Writes the records and prints the summary; the exit code says whether any request failed.
fn report(args: &ProbeArgs, out: Option<BufWriter<File>>, result: &ProbeResult) -> Code {
    let mut code = Code::Ok;
    if let Some(out) = out
        && let Err(e) = result.write_jsonl(out)
    {
        let path = args.out.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("error: writing {path}: {e}");
        code = Code::Failure;
    }
    let report = Report { started_unix_ms: result.started_unix_ms, summary: &result.summary, buckets: &result.buckets };
    match output::structured(args.output, &report) {
        Ok(Some(text)) => print!("{text}"),
        Ok(None) => print!("{}", result.summary.to_text()),
        Err(e) => {
            eprintln!("error: cannot render the summary: {e}");
            return Code::Failure;
        }
    }
    let _ = std::io::stdout().flush();
    if result.summary.failed > 0 {
        if args.output == OutputFormat::Table {
            eprintln!("probe: {} of {} requests failed", result.summary.failed, result.summary.total);
        }
        code = Code::Failure;
    }
    code
}
