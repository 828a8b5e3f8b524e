//! Shared support for meshshift's integration tests: a real control plane, the real Istio manifests of
//! `../shared/fixtures`, and a stand-in for the kubelet that marks pods running and ready.
#![allow(dead_code)]

pub mod kubelet;
pub mod lab;
pub mod mesh;
pub mod view;

use std::path::{Path, PathBuf};
use std::process::Command;

use meshshift_lab::testing::TestCluster;
use serde_json::Value;

/// The shared fixtures directory (`../shared/fixtures` from the repository root; CI has it too).
pub fn fixtures_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let dir = std::env::var_os("MESHSHIFT_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root.join("shared/fixtures"));
    assert!(dir.join("README.md").exists(), "shared fixtures not found at {} (set MESHSHIFT_FIXTURES)", dir.display());
    dir
}

/// Reads a fixture file as JSON documents.
pub fn fixture_docs(rel: &str) -> Vec<Value> {
    let path = fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    meshshift_kube::manifest::parse_documents(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Starts an isolated control plane, run by this build's `meshshift lab supervise`.
pub fn start_cluster() -> TestCluster {
    TestCluster::start(Path::new(env!("CARGO_BIN_EXE_meshshift")))
        .unwrap_or_else(|e| panic!("control plane did not start: {e}"))
}

/// The result of running the meshshift binary.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the real `meshshift` binary with `args`.
pub fn meshshift(args: &[&str]) -> Run {
    meshshift_with_env(args, &[])
}

/// Runs the real `meshshift` binary with `args` and extra environment variables.
pub fn meshshift_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_meshshift"))
        .args(args)
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        // Run records (`meshshift-runs/`) land in cargo's scratch directory, not the source tree.
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run meshshift");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The events of a run directory's `timeline.jsonl`, in order; a line still being written is skipped, so
/// it can be read while the run goes on.
pub fn timeline(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("timeline.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Compares `actual` with the expected JSON file under `tests/expected/`. With `MESHSHIFT_BLESS=1` the
/// file is rewritten instead (review the diff before committing it).
pub fn assert_expected(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected").join(name);
    let pretty = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var_os("MESHSHIFT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &pretty).expect("write expected");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let expected: Value = serde_json::from_str(&expected).expect("expected json");
    if &expected != actual {
        let actual_path = path.with_extension("actual.json");
        let _ = std::fs::write(&actual_path, &pretty);
        panic!("{} differs from the actual output, written to {}", path.display(), actual_path.display());
    }
}

/// Replaces the random suffixes of controller-made pod names by their index, so reports compare exactly.
pub fn normalise_pod_names(report: &mut Value) {
    for w in report["workloads"].as_array_mut().into_iter().flatten() {
        if w["kind"] == "Pod" {
            continue;
        }
        let name = w["name"].as_str().unwrap_or_default().to_owned();
        for (i, p) in w["pods"].as_array_mut().into_iter().flatten().enumerate() {
            p["name"] = Value::String(format!("{name}-{i}"));
        }
    }
}

/// Runs the real `meshshift` binary and fails the test, with its output, unless it exits 0.
pub fn run_ok(args: &[&str]) {
    let run = meshshift(args);
    assert_eq!(run.code, 0, "meshshift {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
}

/// Installs Istio 1.9.7 with its gateway, the user's LoadBalancer, and bookinfo (2 replicas each).
pub fn install_mesh(dir: &str) {
    run_ok(&[
        "lab",
        "install-istio",
        "--dir",
        dir,
        "--version",
        "1.9.7",
        "--gateway",
        "istio-ingress/istio-ingressgateway-1-9-7",
        "--load-balancer",
        "istio-ingress/ingress",
    ]);
    run_ok(&[
        "lab",
        "install-bookinfo",
        "--dir",
        dir,
        "--namespace",
        "bookinfo",
        "--replicas",
        "2",
        "--revision",
        "1-9-7",
    ]);
}

/// Every pod with a proxy in `namespace` runs `version` from `revision`, per a `meshshift status -o json`
/// report.
pub fn assert_proxies(report: &Value, namespace: &str, revision: &str, version: &str) {
    let pods: Vec<&Value> = report["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["namespace"] == namespace)
        .flat_map(|w| w["pods"].as_array().into_iter().flatten())
        .filter(|p| !p["proxy"].is_null())
        .collect();
    assert!(!pods.is_empty(), "{namespace} has proxies");
    for p in pods {
        assert_eq!(
            (p["proxy"]["revision"].as_str(), p["proxy"]["version"].as_str()),
            (Some(revision), Some(version)),
            "pod {} of {namespace}",
            p["name"]
        );
    }
}
