//! meshshift's upgrade report.
//!
//! `meshshift apply` records a run in a directory (the plan, a timeline of step events, the prober's
//! records and summary, the outcome; see [`rundir`]). This crate turns such a directory into
//! `report.json` and one self-contained `report.html` beside it: how the run ended, how many requests
//! users sent and how many failed, the steps with the traffic each saw and their gates, and charts of
//! requests per second, latency and each revision's share of the responses over time, with the steps
//! marked on the time axis.
//!
//! [`load`] reads (tolerating missing optional files), [`build`] and [`render_html`] are pure, and
//! [`write`] does all three and writes both files.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod build;
pub mod html;
pub mod rundir;

use std::path::{Path, PathBuf};

pub use build::{
    Count, GateReport, MAX_POINTS, ProbeInfo, Report, RevisionSeries, RevisionTotal, Series, Side, StepReport, Totals,
    bucket_width_ms, build,
};
pub use html::render_html;
pub use rundir::{
    GateResult, OUTCOME_FILE, OutcomeFile, OutcomeKind, PLAN_FILE, PROBE_FILE, Phase, ProbeFile, REPORT_HTML_FILE,
    REPORT_JSON_FILE, REQUESTS_FILE, ReportError, Request, Requests, RunData, TIMELINE_FILE, TimelineEvent, load,
};

/// Reads the run directory `dir`, builds the report and writes `report.json` and `report.html` into it
/// (each written to a temporary file and renamed, so a reader never sees half a report). Returns their
/// paths, JSON first.
pub fn write(dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    let data = load(dir)?;
    let report = build(&data);
    write_report(dir, &report)
}

/// Writes an already built report into `dir` as `report.json` and `report.html`; returns their paths.
pub fn write_report(dir: &Path, report: &Report) -> Result<(PathBuf, PathBuf), ReportError> {
    let json_path = dir.join(REPORT_JSON_FILE);
    let html_path = dir.join(REPORT_HTML_FILE);
    let mut json = serde_json::to_string_pretty(report).unwrap_or_default();
    json.push('\n');
    write_atomic(&json_path, json.as_bytes())?;
    write_atomic(&html_path, render_html(report).as_bytes())?;
    Ok((json_path, html_path))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ReportError::Write { path: path.to_owned(), source })
}
