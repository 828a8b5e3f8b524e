//! The run's record on disk (the report's input, docs/report.md): `plan.json`, `timeline.jsonl` (every step
//! phase, detail and gate verdict with its time), and at the end `probe.json`, `requests.jsonl` and
//! `outcome.json`. The recorder is also the engine's observer, so the live view and the record see the
//! same events.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use meshshift_core::plan::{Plan, Step};
use meshshift_engine::{Observer, Phase};
use serde_json::{Value, json};

use super::progress::StepsProgress;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Applying => "applying",
        Phase::Applied => "applied",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
        Phase::Undoing => "undoing",
        Phase::Undone => "undone",
    }
}

/// Writes the record and draws progress.
pub struct Recorder {
    dir: PathBuf,
    timeline: Mutex<File>,
    /// The current step's index, id and phase: details and gate verdicts are recorded under them.
    current: Mutex<(usize, String, &'static str)>,
    /// The live view.
    pub progress: StepsProgress,
}

impl Recorder {
    /// A record in `dir` (created) for `plan`.
    pub fn create(dir: &Path, plan: &Plan) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("plan.json"), serde_json::to_vec_pretty(plan).unwrap_or_default())?;
        let timeline = File::options().create(true).append(true).open(dir.join("timeline.jsonl"))?;
        Ok(Self {
            dir: dir.to_owned(),
            timeline: Mutex::new(timeline),
            current: Mutex::new((0, String::new(), "starting")),
            progress: StepsProgress::new(plan.steps.len()),
        })
    }

    /// The record's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn line(&self, v: Value) {
        if let Ok(mut f) = self.timeline.lock() {
            let _ = writeln!(f, "{v}");
        }
    }

    /// Records an event of the current step that is not a phase change (`failed`, `breach`).
    pub fn event(&self, phase: &str, detail: &str) {
        let (index, step, _) = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        self.line(json!({"t_ms": now_ms(), "step": step, "index": index, "phase": phase, "detail": detail}));
    }

    /// Writes `name` (JSON) into the record.
    pub fn write_json(&self, name: &str, value: &Value) -> std::io::Result<()> {
        std::fs::write(self.dir.join(name), serde_json::to_vec_pretty(value).unwrap_or_default())
    }
}

/// Fault injection for the crash tests (docs/reliability.md): `MESHSHIFT_FAULT_KILL_AT=<step id>:<phase>`
/// kills this process with SIGKILL when the step reaches the phase (`applying`: its prior values are
/// journaled, nothing written; `applied`: written, not journaled; `done`: journaled done). Nothing is
/// cleaned up, as in a real crash: the lock stays until its lease expires.
fn fault_point(step: &Step, phase: Phase) {
    let Ok(target) = std::env::var("MESHSHIFT_FAULT_KILL_AT") else { return };
    if target == format!("{}:{}", step.id, phase_name(phase)) {
        eprintln!("fault injection: SIGKILL at {target}");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

impl Observer for Recorder {
    fn step(&self, index: usize, step: &Step, phase: Phase) {
        fault_point(step, phase);
        if phase == Phase::Applied {
            return;
        }
        if let Ok(mut c) = self.current.lock() {
            *c = (index, step.id.clone(), phase_name(phase));
        }
        self.line(json!({"t_ms": now_ms(), "step": step.id, "index": index, "phase": phase_name(phase)}));
        self.progress.step(index, step, phase);
    }

    fn detail(&self, message: &str) {
        let (index, step, phase) = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        self.line(json!({"t_ms": now_ms(), "step": step, "index": index, "phase": phase, "detail": message}));
        self.progress.detail(message);
    }

    fn gate(&self, index: usize, step: &Step, name: &str, ok: bool, detail: &str) {
        self.line(json!({"t_ms": now_ms(), "step": step.id, "index": index, "phase": "verifying",
            "gate": {"name": name, "ok": ok, "detail": detail}}));
        self.progress.detail(&format!("gate {name}: {detail}"));
    }
}
