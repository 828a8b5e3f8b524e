//! The live view of a run: one bar over the plan's steps, its message the current step, phase and
//! detail (a wave, a pod, a wait). indicatif hides itself when stderr is not a terminal; every event is
//! also logged through tracing, so `--log-format json` gives a machine-readable record.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use meshshift_core::plan::Step;
use meshshift_engine::{Observer, Phase};

/// Draws a run's progress.
pub struct StepsProgress {
    bar: ProgressBar,
}

impl StepsProgress {
    /// A bar over `steps` steps.
    pub fn new(steps: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} [{pos}/{len}] {wide_msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "recording prior values",
        Phase::Applying => "applying",
        Phase::Applied => "applied",
        Phase::Verifying => "checking gates",
        Phase::Done => "done",
        Phase::Undoing => "undoing",
        Phase::Undone => "undone",
    }
}

impl Observer for StepsProgress {
    fn step(&self, index: usize, step: &Step, phase: Phase) {
        tracing::info!(step = %step.id, phase = phase_word(phase), "step");
        match phase {
            Phase::Done | Phase::Undone => {
                self.bar.set_position(index as u64 + 1);
                self.bar.println(format!("  {} {}", step.id, phase_word(phase)));
            }
            _ => self.bar.set_position(index as u64),
        }
        self.bar.set_message(format!("{} ({})", step.id, phase_word(phase)));
    }

    fn detail(&self, message: &str) {
        tracing::info!("{message}");
        let current = self.bar.message();
        let step = current.split(" — ").next().unwrap_or_default().to_owned();
        self.bar.set_message(format!("{step} — {message}"));
    }
}
