//! `meshshift probe` end to end: the real binary against a real local server, its JSON-lines records, its
//! summaries and its exit codes.

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use support::{Run, meshshift};

/// An HTTP server on 127.0.0.1 answering like a lab gateway of revision 1-9-7.
async fn serve() -> SocketAddr {
    let app = Router::new().route(
        "/productpage",
        get(|| async { ([("x-meshshift-revision", "1-9-7"), ("x-meshshift-proxy", "gateway")], "ok") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs the binary without blocking the server's runtime.
async fn probe(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        meshshift(&args)
    })
    .await
    .expect("join")
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read records");
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_a_local_server_and_writes_every_request() {
    let addr = serve().await;
    let url = format!("http://{addr}/productpage");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("records.jsonl");
    let out_arg = out.to_string_lossy().into_owned();

    let run = probe(args(&[
        "probe",
        &url,
        "--rate",
        "50",
        "--duration",
        "1s",
        "--connections",
        "2",
        "--header",
        "x-test: 1",
        "--out",
        &out_arg,
        "-o",
        "json",
    ]))
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("json summary");
    let summary = &report["summary"];
    assert_eq!(summary["total"], 50);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["revisions"]["1-9-7"]["count"], 50);
    assert_eq!(summary["statuses"]["200"], 50);
    assert_eq!(report["buckets"].as_array().map(Vec::len), Some(10));
    assert!(report["started_unix_ms"].as_u64().is_some_and(|ms| ms > 0));
    let records = jsonl(&out);
    assert_eq!(records.len(), 50);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
        assert_eq!(r["status"], 200);
        assert_eq!(r["revision"], "1-9-7");
        assert_eq!(r["url"], url.as_str());
        assert!(r["latency_us"].as_u64().is_some() && r["scheduled_us"].as_u64().is_some());
    }

    let run = probe(args(&["probe", &url, "--rate", "20", "--duration", "500ms"])).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("10 total, 10 ok, 0 failed"), "{}", run.stdout);
    assert!(run.stdout.contains("1-9-7 100.0% (10)"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_are_recorded_and_exit_1() {
    // A port nobody listens on: every request is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let url = format!("http://{closed}/");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("records.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let run = probe(args(&["probe", &url, "--rate", "20", "--duration", "500ms", "--out", &out_arg])).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("10 failed"), "{}", run.stdout);
    assert!(run.stdout.contains("connect_refused 10"), "{}", run.stdout);
    assert!(run.stderr.contains("10 of 10 requests failed"), "{}", run.stderr);
    let records = jsonl(&out);
    assert_eq!(records.len(), 10, "failed requests are written too");
    assert!(records.iter().all(|r| r["ok"] == false && r["error"] == "connect_refused"), "{records:?}");
}

#[test]
fn bad_input_and_foreign_urls_exit_2() {
    for (args, needle) in [
        (vec!["probe", "http://192.0.2.1/", "--rate", "1", "--duration", "1s"], "only loopback"),
        (vec!["probe", "http://example.com/", "--rate", "1", "--duration", "1s"], "only loopback"),
        (vec!["probe", "https://127.0.0.1/", "--rate", "1", "--duration", "1s"], "https is not supported"),
        (vec!["probe", "http://127.0.0.1:1/", "--rate", "0", "--duration", "1s"], "rate"),
        (vec!["probe", "http://127.0.0.1:1/", "--rate", "1", "--duration", "soon"], "invalid duration"),
        (vec!["probe", "http://127.0.0.1:1/", "--rate", "1", "--duration", "1s", "--header", "nocolon"], "NAME:VALUE"),
        (vec!["probe", "http://127.0.0.1:1/", "--rate", "1", "--duration", "1s", "--connections", "0"], "connections"),
        (vec!["probe", "--rate", "1", "--duration", "1s"], "URL"),
    ] {
        let run = meshshift(&args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: nothing probed: {}", run.stdout);
    }
}
