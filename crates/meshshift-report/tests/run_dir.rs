//! Reading run directories and writing both report files: the synthetic run end to end, missing optional
//! files, truncated lines, and directories that are not run directories.

mod common;

use meshshift_report::{Report, ReportError};
use serde_json::Value;

fn run_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path());
    dir
}

#[test]
fn writes_both_files_with_totals_steps_and_series() {
    let dir = run_dir();
    let (json_path, html_path) = meshshift_report::write(dir.path()).unwrap();
    assert_eq!(json_path, dir.path().join("report.json"));
    assert_eq!(html_path, dir.path().join("report.html"));
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    assert_eq!(report.outcome, "finished");
    assert_eq!((report.from.revision.as_str(), report.to.version.as_str()), ("1-9-7", "1.10.6"));
    assert_eq!(report.origin_unix_ms, common::T0 - 500);
    assert_eq!(report.duration_ms, 21_000);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let t = &report.totals;
    assert_eq!((t.requests, t.failed, t.ok), (common::TOTAL, common::FAILED, common::TOTAL - common::FAILED));
    assert!((t.failure_ratio - 0.025).abs() < 1e-12);
    assert_eq!(t.max_ms, Some(904.4));
    assert_eq!(t.errors.get("connect_refused"), Some(&25));
    assert_eq!(t.statuses.get("503"), Some(&25));
    let revs: Vec<(&str, u64)> = t.revisions.iter().map(|r| (r.revision.as_str(), r.count)).collect();
    assert_eq!(revs, vec![("1-9-7", 725), ("1-10-6", 1_250)]);

    // Every step, with its own traffic: the burst belongs to the switch.
    assert_eq!(report.steps.len(), 7);
    for (s, (id, _, start, end)) in report.steps.iter().zip(common::steps()) {
        assert_eq!(s.id, id);
        assert_eq!(s.phase, "done");
        assert_eq!(s.start_ms, Some(start + 500));
        assert_eq!(s.duration_ms, Some(end - start));
        assert_eq!(s.gates.len(), 1);
        assert_eq!(s.requests, (end - start) / 10, "{id}");
        assert_eq!(s.failed, if id == "03-switch-load-balancer" { common::FAILED } else { 0 }, "{id}");
    }
    assert_eq!(report.steps[2].action, "switch-load-balancer");
    assert_eq!(report.steps[2].target, "service=istio-ingress/ingress-lb strategy=switch");
    assert_eq!(report.steps[2].p99_ms, Some(904.4));
    let in_steps: u64 = report.steps.iter().map(|s| s.requests).sum();
    assert_eq!(in_steps + t.outside_steps.requests, t.requests);

    // 20 s of traffic: 100 ms buckets, the burst and the revision switch where they happened.
    let s = report.series.as_ref().unwrap();
    assert_eq!(s.bucket_ms, 100);
    assert_eq!(s.t_ms.len(), 200);
    assert_eq!(s.t_ms[0], 500);
    assert_eq!(s.ok_per_s[0], 100.0);
    assert_eq!(s.failed_per_s[70], 100.0);
    assert_eq!(s.failed_per_s[69], 0.0);
    assert_eq!(s.p99_ms[72], Some(904.4));
    assert_eq!(s.revisions[0].revision, "1-9-7");
    assert_eq!((s.revisions[0].share[74], s.revisions[0].share[75]), (1.0, 0.0));
    assert_eq!((s.revisions[1].share[74], s.revisions[1].share[75]), (0.0, 1.0));

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<p id=\"headline\">2000 requests, 50 failed</p>"));
    assert!(html.len() < 200_000, "the page is {} bytes", html.len());
}

#[test]
fn report_json_is_plain_json_for_other_tools() {
    let dir = run_dir();
    let (json_path, _) = meshshift_report::write(dir.path()).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    for key in ["outcome", "from", "to", "totals", "steps", "series"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["totals"]["requests"], 2000);
    assert_eq!(v["steps"][0]["gates"][0]["ok"], true);
    assert!(v["series"]["p50_ms"].as_array().unwrap().len() == 200);
}

#[test]
fn optional_files_may_be_missing_and_bad_lines_are_warnings() {
    let dir = run_dir();
    for f in ["probe.json", "requests.jsonl", "outcome.json"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    // A crash can leave half a line.
    let mut timeline = std::fs::read_to_string(dir.path().join("timeline.jsonl")).unwrap();
    timeline.push_str("{\"t_ms\":17000000");
    std::fs::write(dir.path().join("timeline.jsonl"), timeline).unwrap();

    let (json_path, html_path) = meshshift_report::write(dir.path()).unwrap();
    let report: Report = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    assert_eq!(report.outcome, "incomplete");
    assert!(!report.totals.measured);
    assert!(report.series.is_none());
    assert_eq!(report.steps.len(), 7);
    assert!(report.steps.iter().all(|s| s.phase == "done" && s.requests == 0));
    assert!(
        report.warnings.iter().any(|w| w.starts_with("timeline.jsonl: 1 line(s) ignored")),
        "{:?}",
        report.warnings
    );
    assert!(report.warnings.iter().any(|w| w.contains("no outcome.json")), "{:?}", report.warnings);
    let html = std::fs::read_to_string(html_path).unwrap();
    assert!(html.contains("No traffic measured"));
}

#[test]
fn a_probe_file_with_an_unreadable_summary_still_places_the_requests() {
    let dir = run_dir();
    let probe =
        serde_json::json!({"started_unix_ms": common::T0, "urls": [], "rate": 100.0, "summary": {"total": "x"}});
    std::fs::write(dir.path().join("probe.json"), probe.to_string()).unwrap();
    let data = meshshift_report::load(dir.path()).unwrap();
    assert!(data.warnings.iter().any(|w| w.starts_with("probe.json: its summary is ignored")), "{:?}", data.warnings);
    let report = meshshift_report::build(&data);
    assert_eq!(report.series.unwrap().t_ms[0], 500);
    assert_eq!(report.steps[2].failed, common::FAILED);
}

#[test]
fn summary_alone_still_gives_totals() {
    let dir = run_dir();
    std::fs::remove_file(dir.path().join("requests.jsonl")).unwrap();
    let data = meshshift_report::load(dir.path()).unwrap();
    let report = meshshift_report::build(&data);
    assert!(report.totals.measured);
    assert_eq!((report.totals.requests, report.totals.failed), (2000, 50));
    assert!(report.series.is_none());
}

#[test]
fn not_a_run_directory_is_an_input_error_naming_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let e = meshshift_report::write(empty.path()).unwrap_err();
    assert!(e.is_input());
    let msg = e.to_string();
    assert!(msg.contains("not a meshshift run directory"), "{msg}");
    assert!(msg.contains("no plan.json and no timeline.jsonl"), "{msg}");
    assert!(msg.contains("meshshift apply"), "{msg}");

    std::fs::write(empty.path().join("plan.json"), "{}").unwrap();
    let e = meshshift_report::write(empty.path()).unwrap_err();
    assert!(e.to_string().contains("no timeline.jsonl"), "{e}");

    std::fs::write(empty.path().join("timeline.jsonl"), "").unwrap();
    let e = meshshift_report::write(empty.path()).unwrap_err();
    assert!(matches!(e, ReportError::Invalid { .. }) && e.is_input(), "{e}");
    assert!(e.to_string().contains("plan.json: not a meshshift plan"), "{e}");

    let missing = empty.path().join("nope");
    let e = meshshift_report::write(&missing).unwrap_err();
    assert!(e.to_string().contains("no such directory"), "{e}");
    assert!(!empty.path().join("report.json").exists());
}
