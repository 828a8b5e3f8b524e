//! The run directory: what `meshshift apply` writes while it runs, and reading it back.
//!
//! | file | content | required |
//! |---|---|---|
//! | `plan.json` | the plan ([`Plan`], serde JSON) | yes |
//! | `timeline.jsonl` | one [`TimelineEvent`] per line | yes (may be empty) |
//! | `probe.json` | [`ProbeFile`]: when the prober started, its URLs and rate, its summary | no: no traffic measured |
//! | `requests.jsonl` | one [`Record`] per line, times relative to `probe.json`'s `started_unix_ms` | no |
//! | `outcome.json` | [`OutcomeFile`]: how the run ended | no: the run is unfinished or crashed |
//!
//! The types here are the writer's types too, so the engine and the report agree on the format by
//! construction. Reading is tolerant where a crash could leave a mark: a missing optional file or a line
//! that does not parse (a truncated last line) becomes a warning in the report, not an error.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use meshshift_core::plan::Plan;
use meshshift_probe::{ErrorKind, Record, Summary};
use serde::{Deserialize, Serialize};

/// `plan.json`.
pub const PLAN_FILE: &str = "plan.json";
/// `timeline.jsonl`.
pub const TIMELINE_FILE: &str = "timeline.jsonl";
/// `probe.json`.
pub const PROBE_FILE: &str = "probe.json";
/// `requests.jsonl`.
pub const REQUESTS_FILE: &str = "requests.jsonl";
/// `outcome.json`.
pub const OUTCOME_FILE: &str = "outcome.json";
/// `report.json`, written by [`crate::write`].
pub const REPORT_JSON_FILE: &str = "report.json";
/// `report.html`, written by [`crate::write`].
pub const REPORT_HTML_FILE: &str = "report.html";

/// At most this many unreadable lines are listed one by one in the warnings (then a count).
const MAX_LINE_WARNINGS: usize = 5;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The step began (its prior values are being journaled).
    Starting,
    /// Its writes are being made.
    Applying,
    /// Its gates are being checked.
    Verifying,
    /// Its gates passed.
    Done,
    /// It is being rolled back.
    Undoing,
    /// It was rolled back.
    Undone,
    /// A precondition, write or gate failed.
    Failed,
    /// A traffic gate saw users affected beyond the objective.
    Breach,
}

impl Phase {
    /// The name used in JSON and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Applying => "applying",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
            Phase::Undoing => "undoing",
            Phase::Undone => "undone",
            Phase::Failed => "failed",
            Phase::Breach => "breach",
        }
    }
}

/// A gate's result, as recorded in the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate (`istiod-ready`, `green-serves`, `prober`).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw.
    #[serde(default)]
    pub detail: String,
}

/// One line of `timeline.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When, unix milliseconds.
    pub t_ms: u64,
    /// The step's id (`03-switch-load-balancer`).
    pub step: String,
    /// The step's index in the plan.
    pub index: usize,
    /// What happened.
    pub phase: Phase,
    /// More about it (an error, what is being waited for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A gate's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateResult>,
}

/// `probe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFile {
    /// When the prober started, unix milliseconds: the origin of every record's times.
    pub started_unix_ms: u64,
    /// The URLs probed.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Requests per second asked for.
    #[serde(default)]
    pub rate: f64,
    /// The prober's summary.
    #[serde(default)]
    pub summary: Summary,
}

/// `probe.json` as read: only the start time is needed.
#[derive(Deserialize)]
struct ProbeFileLoose {
    started_unix_ms: u64,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    rate: f64,
    #[serde(default)]
    summary: Option<serde_json::Value>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// Every step done.
    Finished,
    /// A step failed or breached and the completed steps were undone.
    RolledBack,
    /// Stopped at `--until` (or interrupted); `meshshift resume` continues.
    Paused,
    /// A step failed and was left for `resume` or `rollback`.
    Failed,
}

impl OutcomeKind {
    /// The name used in JSON and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Finished => "finished",
            OutcomeKind::RolledBack => "rolled-back",
            OutcomeKind::Paused => "paused",
            OutcomeKind::Failed => "failed",
        }
    }
}

/// `outcome.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeFile {
    /// How the run ended.
    pub outcome: OutcomeKind,
    /// Why, when it did not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the run started, unix milliseconds.
    pub started_unix_ms: u64,
    /// When it ended.
    pub ended_unix_ms: u64,
}

/// What the report needs of one request: a [`Record`] without its strings (an hour at 100/s is 360,000
/// of these; 32 bytes each instead of ~400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// When it was due, microseconds from the probe's start.
    pub scheduled_us: u64,
    /// From the scheduled time to the response or the failure.
    pub latency_us: u64,
    /// A 2xx/3xx response.
    pub ok: bool,
    /// The response status.
    pub status: Option<u16>,
    /// Why there was no response.
    pub error: Option<ErrorKind>,
    /// Index into [`Requests::revisions`] of the revision that answered (`(none)` for a response without
    /// the header); `None` when nothing answered.
    pub revision: Option<u32>,
}

/// The requests of a run, with their answering revisions interned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requests {
    /// Revision names, in order of first appearance.
    pub revisions: Vec<String>,
    /// The requests, in file order.
    pub items: Vec<Request>,
}

impl Requests {
    /// Adds one record.
    pub fn push(&mut self, r: &Record) {
        let revision = r.revision_key().map(|rev| match self.revisions.iter().position(|known| known == rev) {
            Some(i) => i as u32,
            None => {
                self.revisions.push(rev.to_owned());
                (self.revisions.len() - 1) as u32
            }
        });
        self.items.push(Request {
            scheduled_us: r.scheduled_us,
            latency_us: r.latency_us,
            ok: r.ok,
            status: r.status,
            error: r.error,
            revision,
        });
    }

    /// The requests of `records`.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut out = Self::default();
        for r in records {
            out.push(r);
        }
        out
    }

    /// The name of a request's answering revision.
    pub fn revision_name(&self, r: &Request) -> Option<&str> {
        r.revision.and_then(|i| self.revisions.get(i as usize)).map(String::as_str)
    }
}

/// Everything read from a run directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunData {
    /// The plan.
    pub plan: Option<Plan>,
    /// The timeline, in file order.
    pub timeline: Vec<TimelineEvent>,
    /// The prober's start, URLs, rate and summary (`None`: no traffic was measured).
    pub probe: Option<ProbeFile>,
    /// Every request (empty when no traffic was measured).
    pub requests: Requests,
    /// How the run ended (`None`: unfinished or crashed).
    pub outcome: Option<OutcomeFile>,
    /// What could not be read, for the report.
    pub warnings: Vec<String>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The directory is not a run directory.
    #[error(
        "{dir}: not a meshshift run directory ({why}); pass the directory `meshshift apply` printed for its run \
         (it holds plan.json and timeline.jsonl)"
    )]
    NotRunDir {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        why: String,
    },
    /// A required file does not parse.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A report file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl ReportError {
    /// Whether the error is the caller's input (not a run directory, or one whose plan does not parse)
    /// rather than a failure of this machine: the CLI exits 2 for these.
    pub fn is_input(&self) -> bool {
        matches!(self, ReportError::NotRunDir { .. } | ReportError::Invalid { .. })
    }
}

/// Reads a run directory. Errors only when `dir` is not a run directory (no `plan.json` or
/// `timeline.jsonl`), when `plan.json` does not parse, or on an I/O error; everything else that is
/// missing or unreadable becomes a warning.
pub fn load(dir: &Path) -> Result<RunData, ReportError> {
    if !dir.is_dir() {
        let why = if dir.exists() { "not a directory" } else { "no such directory" };
        return Err(ReportError::NotRunDir { dir: dir.to_owned(), why: why.to_owned() });
    }
    let missing: Vec<&str> = [PLAN_FILE, TIMELINE_FILE].into_iter().filter(|f| !dir.join(f).is_file()).collect();
    if !missing.is_empty() {
        return Err(ReportError::NotRunDir { dir: dir.to_owned(), why: format!("no {}", missing.join(" and no ")) });
    }
    let mut data = RunData::default();

    let plan_path = dir.join(PLAN_FILE);
    let text =
        std::fs::read_to_string(&plan_path).map_err(|source| ReportError::Read { path: plan_path.clone(), source })?;
    data.plan = Some(
        serde_json::from_str(&text)
            .map_err(|e| ReportError::Invalid { path: plan_path, message: format!("not a meshshift plan: {e}") })?,
    );

    let mut warnings = Vec::new();
    read_lines(&dir.join(TIMELINE_FILE), &mut warnings, |e: TimelineEvent| data.timeline.push(e))?;

    data.probe = read_optional::<ProbeFileLoose>(&dir.join(PROBE_FILE), &mut warnings)?.map(|p| {
        // The start time places the records; a summary that does not parse only costs its totals.
        let summary = p.summary.map(serde_json::from_value::<Summary>).transpose().unwrap_or_else(|e| {
            warnings.push(format!("{PROBE_FILE}: its summary is ignored, it does not parse: {e}"));
            None
        });
        ProbeFile {
            started_unix_ms: p.started_unix_ms,
            urls: p.urls,
            rate: p.rate,
            summary: summary.unwrap_or_default(),
        }
    });
    let requests_path = dir.join(REQUESTS_FILE);
    if requests_path.is_file() {
        let requests = &mut data.requests;
        read_lines(&requests_path, &mut warnings, |r: Record| requests.push(&r))?;
        if data.probe.is_none() && !requests.items.is_empty() {
            warnings.push(format!(
                "{REQUESTS_FILE} without {PROBE_FILE}: the requests' start time is unknown; they are placed at the \
                 run's start"
            ));
        }
    }
    data.outcome = read_optional::<OutcomeFile>(&dir.join(OUTCOME_FILE), &mut warnings)?;
    if data.outcome.is_none() {
        warnings.push(format!("no {OUTCOME_FILE}: the run has not finished, or it stopped without recording how"));
    }
    data.warnings = warnings;
    Ok(data)
}

/// Reads an optional JSON file: absent is `None`, unparseable is `None` with a warning.
fn read_optional<T: serde::de::DeserializeOwned>(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<T>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Read { path: path.to_owned(), source }),
    };
    match serde_json::from_str(&text) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            warnings.push(format!("{}: ignored, it does not parse: {e}", file_name(path)));
            Ok(None)
        }
    }
}

/// Reads a JSON-lines file line by line (streaming: `requests.jsonl` can be large); blank lines are
/// skipped, lines that do not parse are counted in a warning.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    warnings: &mut Vec<String>,
    mut each: impl FnMut(T),
) -> Result<(), ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Read { path: path.to_owned(), source })?;
    let mut bad: Vec<String> = Vec::new();
    let mut bad_count = 0usize;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ReportError::Read { path: path.to_owned(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(v) => each(v),
            Err(e) => {
                bad_count += 1;
                if bad.len() < MAX_LINE_WARNINGS {
                    bad.push(format!("line {}: {e}", i + 1));
                }
            }
        }
    }
    if bad_count > 0 {
        let more = if bad_count > bad.len() { format!("; and {} more", bad_count - bad.len()) } else { String::new() };
        warnings.push(format!(
            "{}: {bad_count} line(s) ignored, they do not parse ({}{more})",
            file_name(path),
            bad.join("; ")
        ));
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_lines_parse_as_specified() {
        let line = r#"{"t_ms":1700000000123,"step":"03-switch-load-balancer","index":2,"phase":"verifying","gate":{"name":"endpoints","ok":true,"detail":"only green"}}"#;
        let e: TimelineEvent = serde_json::from_str(line).unwrap();
        assert_eq!(e.phase, Phase::Verifying);
        assert_eq!(e.gate.as_ref().map(|g| g.ok), Some(true));
        assert_eq!(e.detail, None);
        assert_eq!(serde_json::to_string(&e).unwrap(), line);
        for p in ["starting", "applying", "verifying", "done", "undoing", "undone", "failed", "breach"] {
            let e: TimelineEvent =
                serde_json::from_str(&format!(r#"{{"t_ms":1,"step":"s","index":0,"phase":"{p}"}}"#)).unwrap();
            assert_eq!(e.phase.as_str(), p);
        }
    }

    #[test]
    fn outcome_parses_as_specified() {
        let o: OutcomeFile =
            serde_json::from_str(r#"{"outcome":"rolled-back","error":"x","started_unix_ms":1,"ended_unix_ms":2}"#)
                .unwrap();
        assert_eq!(o.outcome, OutcomeKind::RolledBack);
        assert_eq!(o.outcome.as_str(), "rolled-back");
    }

    #[test]
    fn requests_intern_revisions() {
        let records = [
            Record { status: Some(200), ok: true, revision: Some("a".into()), ..Record::default() },
            Record { status: Some(200), ok: true, revision: Some("b".into()), ..Record::default() },
            Record { status: Some(200), ok: true, revision: Some("a".into()), ..Record::default() },
            Record { status: Some(200), ok: true, ..Record::default() },
            Record { error: Some(ErrorKind::Reset), ..Record::default() },
        ];
        let r = Requests::from_records(&records);
        assert_eq!(r.revisions, vec!["a", "b", "(none)"]);
        let names: Vec<Option<&str>> = r.items.iter().map(|i| r.revision_name(i)).collect();
        assert_eq!(names, vec![Some("a"), Some("b"), Some("a"), Some("(none)"), None]);
    }
}
