//! `meshshift report RUN_DIR` end to end: the real binary on a run directory written in the documented format
//! (docs/report.md) writes both files and prints their paths; a directory that is not a run directory
//! exits 2 with a message saying what is missing and what to pass instead.

use std::path::Path;
use std::process::Command;

use meshshift_core::plan::{Action, Plan, Step};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn meshshift(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_meshshift")).args(args).output().expect("run meshshift");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn step(id: &str, action: Action) -> Step {
    Step { id: id.into(), action, changes: vec![], preconditions: vec![], gates: vec![], undo: String::new() }
}

/// A two-step run: 10 s of requests at 30/s, 6 failing at the switch, answered by 1-9-7 then 1-10-6.
fn write_run(dir: &Path) {
    let plan = Plan {
        from_revision: "1-9-7".into(),
        from_version: "1.9.7".into(),
        to_revision: "1-10-6".into(),
        to_version: "1.10.6".into(),
        control_plane_namespace: "istio-system".into(),
        hops: vec![],
        steps: vec![
            step("01-move-tag-default", Action::MoveTag { tag: "default".into() }),
            step("02-restart-workloads-bookinfo", Action::RestartWorkloads { namespace: "bookinfo".into() }),
        ],
        assumptions: vec![],
    };
    std::fs::write(dir.join("plan.json"), serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    let timeline = [
        json!({"t_ms": T0 + 100, "step": "01-move-tag-default", "index": 0, "phase": "starting"}),
        json!({"t_ms": T0 + 200, "step": "01-move-tag-default", "index": 0, "phase": "applying"}),
        json!({"t_ms": T0 + 3000, "step": "01-move-tag-default", "index": 0, "phase": "verifying",
               "gate": {"name": "inject", "ok": true, "detail": "a dry-run pod is injected by 1-10-6"}}),
        json!({"t_ms": T0 + 3100, "step": "01-move-tag-default", "index": 0, "phase": "done"}),
        json!({"t_ms": T0 + 3200, "step": "02-restart-workloads-bookinfo", "index": 1, "phase": "starting"}),
        json!({"t_ms": T0 + 5000, "step": "02-restart-workloads-bookinfo", "index": 1, "phase": "applying",
               "detail": "restarting 4 workloads"}),
        json!({"t_ms": T0 + 9000, "step": "02-restart-workloads-bookinfo", "index": 1, "phase": "done"}),
    ];
    let lines: String = timeline.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.join("timeline.jsonl"), lines).unwrap();
    let mut requests = String::new();
    for i in 0..300u64 {
        let ms = i * 1000 / 30;
        let failed = (150..156).contains(&i);
        let revision = if ms < 5000 { "1-9-7" } else { "1-10-6" };
        let mut r = json!({"seq": i, "url": "http://127.0.0.1:8080/productpage", "scheduled_us": ms * 1000,
            "sent_us": ms * 1000 + 200, "latency_us": 3000 + i % 5 * 100, "service_us": 2800, "ok": !failed,
            "reused": true});
        if failed {
            r["error"] = json!("reset");
        } else {
            r["status"] = json!(200);
            r["revision"] = json!(revision);
        }
        requests.push_str(&format!("{r}\n"));
    }
    std::fs::write(dir.join("requests.jsonl"), requests).unwrap();
    let probe = json!({"started_unix_ms": T0, "urls": ["http://127.0.0.1:8080/productpage"], "rate": 30.0,
        "summary": {"total": 300, "ok": 294, "failed": 6, "window_s": 10.0, "rate_target": 30.0,
            "rate_achieved": 30.0, "throughput": 30.0,
            "latency": {"p50_us": 3200, "p90_us": 3400, "p99_us": 3400, "max_us": 3400, "mean_us": 3200.0},
            "service": {"p50_us": 2800, "p90_us": 2800, "p99_us": 2800, "max_us": 2800, "mean_us": 2800.0},
            "revisions": {}, "errors": {"reset": 6}, "statuses": {"200": 294}, "failure_windows": []}});
    std::fs::write(dir.join("probe.json"), probe.to_string()).unwrap();
    let outcome = json!({"outcome": "finished", "started_unix_ms": T0, "ended_unix_ms": T0 + 10_000});
    std::fs::write(dir.join("outcome.json"), outcome.to_string()).unwrap();
}

#[test]
fn writes_both_files_and_prints_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path());
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let run = meshshift(&["report", &dir_arg]);
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let json_path = dir.path().join("report.json");
    let html_path = dir.path().join("report.html");
    assert_eq!(run.stdout, format!("{}\n{}\n", json_path.display(), html_path.display()));
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["outcome"], "finished");
    assert_eq!(report["to"]["version"], "1.10.6");
    assert_eq!(report["totals"]["requests"], 300);
    assert_eq!(report["totals"]["failed"], 6);
    assert_eq!(report["steps"][0]["id"], "01-move-tag-default");
    assert_eq!(report["steps"][0]["gates"][0]["name"], "inject");
    // Requests 150..156 are scheduled at 5.0-5.2 s, during the restart.
    assert_eq!(report["steps"][1]["failed"], 6);
    assert_eq!(report["series"]["bucket_ms"], 100);
    assert_eq!(report["series"]["revisions"][0]["revision"], "1-9-7");

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<p id=\"headline\">300 requests, 6 failed</p>"));
    assert!(html.contains("<script type=\"application/json\" id=\"report-data\">"));

    // Run again: the report is rewritten, not appended to or refused.
    let again = meshshift(&["report", &dir_arg]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&html_path).unwrap(), html);
}

#[test]
fn missing_optional_files_are_warnings_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path());
    std::fs::remove_file(dir.path().join("outcome.json")).unwrap();
    let run = meshshift(&["report", &dir.path().to_string_lossy()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("warning: no outcome.json"), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 2);
}

#[test]
fn a_directory_that_is_not_a_run_directory_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = meshshift(&["report", &dir.path().to_string_lossy()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("not a meshshift run directory"), "{}", run.stderr);
    assert!(run.stderr.contains("no plan.json and no timeline.jsonl"), "{}", run.stderr);
    assert!(run.stderr.contains("meshshift apply"), "{}", run.stderr);
    assert!(!dir.path().join("report.html").exists());

    let missing = dir.path().join("no-such-run");
    let run = meshshift(&["report", &missing.to_string_lossy()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no such directory"), "{}", run.stderr);

    let run = meshshift(&["report"]);
    assert_eq!(run.code, 2, "a missing argument is a usage error");
}
