//! Bad input, end to end in one lab: every case is a row (arguments, expected exit code, a substring the
//! message must contain) run through the real `meshshift` binary, and the apiserver's audit log (see
//! `LabLayout::audit_log`) must show that none of them wrote anything: no create, update, patch, delete or
//! deletecollection with meshshift's User-Agent (`meshshift/<version>`) inside any case's time window.
//! SelfSubjectAccessReviews (`create`, but nothing is stored) are questions, not writes.
//!
//! The cluster goes through four states, each with its cases: (A) Istio 1.9.7 with a gateway behind a
//! LoadBalancer, a second LoadBalancer, a Service selecting nothing, a revision tag `prod`, a namespace
//! `apps`, and no run; (B) a run paused after its first step (`apply --until 01-...`, which writes, outside
//! any case's window); (C) that run's journal corrupted by an admin; (D) the journal restored and rolled
//! back, then the run lock held by someone else. The setup's own meshshift runs are the positive control:
//! their writes must show up in the audit log with meshshift's User-Agent, or the filter proves nothing.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshshift_lab::testing::{create_namespace, create_object};
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};
use support::{meshshift_with_env, run_ok};

/// One row: what is run, how it must end.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    needle: &'static str,
}

/// A case run: its window, for the audit log.
struct Ran {
    name: &'static str,
    start: Timestamp,
    end: Timestamp,
    code: i32,
    took: Duration,
}

/// The arguments as owned strings.
fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A case that names no cluster (or names its own).
fn case(name: &'static str, args: &[&str], code: i32, needle: &'static str) -> Case {
    Case { name, args: owned(args), env: Vec::new(), code, needle }
}

/// A case against the lab with `kubeconfig`.
fn on(kubeconfig: &Path, name: &'static str, args: &[&str], code: i32, needle: &'static str) -> Case {
    let mut all = owned(args);
    all.extend(["--kubeconfig".to_owned(), kubeconfig.display().to_string()]);
    Case { name, args: all, env: Vec::new(), code, needle }
}

/// Runs the cases in order, checking each exit code and message; returns the windows and every mismatch.
fn run_cases(cases: Vec<Case>, ran: &mut Vec<Ran>, failures: &mut Vec<String>) {
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (start, began) = (Timestamp::now(), Instant::now());
        let run = meshshift_with_env(&args, &env);
        let (end, took) = (Timestamp::now(), began.elapsed());
        let out = format!("{}{}", run.stdout, run.stderr);
        if run.code != c.code || !out.contains(c.needle) {
            failures.push(format!(
                "{}: meshshift {args:?}\n  expected exit {} and {:?}, got exit {}:\n{}",
                c.name,
                c.code,
                c.needle,
                run.code,
                run.stderr.trim_end()
            ));
        }
        // The message is for people: one `error:` line first, not a stack of them or a panic.
        if run.code != 0 && (out.contains("panicked") || !run.stderr.trim_start().starts_with("error")) {
            failures.push(format!("{}: stderr does not start with `error`: {}", c.name, run.stderr.trim_end()));
        }
        ran.push(Ran { name: c.name, start, end, code: run.code, took });
    }
}

/// Runs a setup command (it may write) and returns its window.
fn setup(kubeconfig: &Path, args: &[&str]) -> (Timestamp, Timestamp) {
    let start = Timestamp::now();
    let mut all = owned(args);
    all.extend(["--kubeconfig".to_owned(), kubeconfig.display().to_string()]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let run = meshshift_with_env(&refs, &[("MESHSHIFT_SOAK_SECONDS", "1")]);
    assert_eq!(run.code, 0, "setup meshshift {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
    (start, Timestamp::now())
}

/// A copy of the admin kubeconfig whose user is `edit`ed, written to `path`.
fn kubeconfig_as(cluster: &TestCluster, path: &Path, edit: impl Fn(&mut kube::config::AuthInfo)) -> PathBuf {
    let mut kc = cluster.kubeconfig();
    for a in &mut kc.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            edit(info);
        }
    }
    std::fs::write(path, serde_json::to_string(&kc).expect("kubeconfig json")).expect("write kubeconfig");
    path.to_path_buf()
}

/// A ClusterRole with `rules` bound to user `user`.
async fn grant(client: &kube::Client, user: &str, rules: Value) {
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": format!("bad-input-{user}")}, "rules": rules}))
            .expect("role");
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await.expect("create role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("bad-input-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("bad-input-{user}")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.expect("binding");
}

/// The saved plan with `edit` applied, written to `dir/name`.
fn edited(plan: &Value, dir: &Path, name: &str, edit: impl Fn(&mut Value)) -> String {
    let mut p = plan.clone();
    edit(&mut p);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&p).expect("json")).expect("write plan");
    path.display().to_string()
}

/// One audited request.
struct Audited {
    at: Timestamp,
    verb: String,
    resource: String,
    object: String,
    code: i64,
    user_agent: String,
}

/// Every event of the audit log (and of its rotated copy, if any).
fn audit_events(cluster: &TestCluster) -> Vec<Audited> {
    let log = cluster.audit_log_path();
    let mut files = vec![log.clone()];
    let dir = log.parent().expect("logs dir");
    for entry in std::fs::read_dir(dir).expect("logs").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit-") && name.ends_with(".log") {
            files.push(entry.path());
        }
    }
    let mut events = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let e: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("audit line {line}: {err}"));
            let Some(at) = e["requestReceivedTimestamp"].as_str().and_then(|t| t.parse().ok()) else { continue };
            let r = &e["objectRef"];
            events.push(Audited {
                at,
                verb: e["verb"].as_str().unwrap_or_default().to_owned(),
                resource: r["resource"].as_str().unwrap_or_default().to_owned(),
                object: format!(
                    "{}/{}/{}",
                    r["resource"].as_str().unwrap_or("-"),
                    r["namespace"].as_str().unwrap_or("-"),
                    r["name"].as_str().unwrap_or("-")
                ),
                code: e["responseStatus"]["code"].as_i64().unwrap_or(0),
                user_agent: e["userAgent"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    events
}

/// A write by meshshift: its User-Agent, a writing verb, and not a review (asked, never stored).
fn meshshift_write(e: &Audited) -> bool {
    e.user_agent.starts_with("meshshift/")
        && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
        && !e.resource.ends_with("reviews")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_with_its_exit_code_and_writes_nothing() {
    let began = Instant::now();
    let cluster = TestCluster::start_lab(Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(1))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let client = cluster.client().await.expect("client");
    let lab = cluster.dir().to_str().expect("dir").to_owned();
    let kc = cluster.kubeconfig_path().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();

    // (A) Istio 1.9.7, its gateway behind the LoadBalancer istio-ingress/ingress, and what the cases need.
    run_ok(&[
        "lab",
        "install-istio",
        "--dir",
        &lab,
        "--version",
        "1.9.7",
        "--gateway",
        "istio-ingress/istio-ingressgateway-1-9-7",
        "--load-balancer",
        "istio-ingress/ingress",
    ]);
    create_namespace(&client, "apps", json!({"istio.io/rev": "1-9-7", "team": "a"})).await;
    let version = "1.9.7".parse().expect("version");
    let revision = meshshift_core::version::Revision::parse("1-9-7").expect("revision");
    let tag = meshshift_core::render::tag_webhook(&version, "prod", &revision, "istio-system");
    create_object(&client, &tag, "istio-system").await;
    for doc in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ingress2", "namespace": "istio-ingress"},
               "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway", "version": "1-9-7"},
                        "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nothing", "namespace": "istio-ingress"},
               "spec": {"selector": {"app": "nothing"}, "ports": [{"name": "http", "port": 80}]}}),
    ] {
        create_object(&client, &doc, "istio-ingress").await;
    }
    let read_all = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]);
    grant(&client, "viewer", read_all).await;
    let without_pods = json!([
        {"apiGroups": [""], "resources": ["namespaces", "services", "configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": ["list"]}
    ]);
    grant(&client, "restricted", without_pods).await;
    let impersonate = |user: &'static str| move |i: &mut kube::config::AuthInfo| i.impersonate = Some(user.to_owned());
    let nobody = kubeconfig_as(&cluster, &t.join("nobody"), impersonate("nobody"));
    let viewer = kubeconfig_as(&cluster, &t.join("viewer"), impersonate("viewer"));
    let restricted = kubeconfig_as(&cluster, &t.join("restricted"), impersonate("restricted"));
    let bad_token = kubeconfig_as(&cluster, &t.join("bad-token"), |i| {
        i.client_certificate_data = None;
        i.client_key_data = None;
        i.token = Some("not-a-token".to_owned().into());
    });
    let server = |url: &str| {
        json!({"apiVersion": "v1", "kind": "Config", "current-context": "lab",
               "clusters": [{"name": "lab", "cluster": {"server": url, "insecure-skip-tls-verify": true}}],
               "users": [{"name": "u", "user": {"token": "t"}}],
               "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}]})
    };
    let write = |name: &str, text: &str| {
        let path = t.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let unreachable = write("unreachable", &server("https://127.0.0.1:1").to_string());
    let mut dangling = server("https://127.0.0.1:1");
    dangling["contexts"][0]["context"]["cluster"] = json!("gone");
    let dangling = write("dangling", &dangling.to_string());
    let garbage_kc = write("garbage-kubeconfig", "clusters: [this is: not: a kubeconfig");
    let not_json = write("not-json", "this is not a plan\n");
    let not_plan = write("not-a-plan.json", "{\"hello\": 1}\n");
    let empty_run_dir = t.join("empty-run-dir");
    std::fs::create_dir_all(&empty_run_dir).expect("mkdir");
    let empty_run_dir = empty_run_dir.display().to_string();
    let demo_dir = t.join("demo-lab");
    let demo = demo_dir.display().to_string();

    // A plan saved from this cluster, and edited copies of it.
    let g = "--gateway-service=istio-ingress/ingress";
    let saved = support::meshshift(&["plan", "--to", "1.10.6", g, "-o", "json", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(saved.code, 0, "plan: {}", saved.stderr);
    let plan: Value = serde_json::from_str(&saved.stdout).expect("plan json");
    let plan_file = t.join("plan.json");
    std::fs::write(&plan_file, &saved.stdout).expect("save plan");
    let plan_file = plan_file.display().to_string();
    let other_cluster = edited(&plan, t, "other-cluster.json", |p| {
        for a in p["assumptions"].as_array_mut().expect("assumptions") {
            if a["object"] == "Service/istio-ingress/ingress" {
                a["value"] = json!("1-8-4");
            }
        }
        p["assumptions"].as_array_mut().expect("assumptions").push(json!(
            {"object": "Namespace/payments", "field": "metadata.labels.istio.io/rev", "value": "1-8-4"}
        ));
    });
    let step_removed = edited(&plan, t, "step-removed.json", |p| {
        p["steps"].as_array_mut().expect("steps").remove(1);
    });
    let retargeted = edited(&plan, t, "retargeted.json", |p| {
        let steps = p["steps"].as_array_mut().expect("steps");
        let migrate = steps.iter_mut().find(|s| s["action"]["action"] == "migrate-namespace").expect("a migration");
        migrate["action"]["namespace"] = json!("kube-system");
    });
    let other_target = edited(&plan, t, "other-target.json", |p| p["to_version"] = json!("1.10.5"));

    let k = |name, args: &[&str], code, needle| on(&kc, name, args, code, needle);
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    #[rustfmt::skip]
    let no_run = vec![
        // Versions.
        k("--to 1.x", &["plan", "--to", "1.x"], 2, "`x` is not a number"),
        k("--to ''", &["plan", "--to", ""], 2, "an empty string is not an Istio version"),
        k("--to 1.10.6.7", &["plan", "--to", "1.10.6.7"], 2, "at most 3 are allowed"),
        k("--to leading zero", &["plan", "--to", "1.010.6"], 2, "has a leading zero"),
        k("apply --to 1.x", &["apply", "--to", "1.x", g], 2, "`x` is not a number"),
        k("downgrade", &["apply", "--to", "1.8.6", g], 7, "downgrades are done by rolling back"),
        k("same version", &["apply", "--to", "1.9.7", g], 7, "already runs 1.9.7: nothing to upgrade"),
        k("skip without --allow-skip", &["apply", "--to", "1.13.9", g], 7, "upgrade hop by hop or pass --allow-skip"),
        k("major change", &["plan", "--to", "2.0.0", g], 7, "no upgrade path between majors"),
        // Revisions.
        k("unknown --from", &["apply", "--to", "1.10.6", g, "--from", "nope"], 7, "--from nope: no such control-plane revision"),
        k("--revision is a tag", &["apply", "--to", "1.10.6", g, "--revision", "prod"], 7, "is the name of a revision tag"),
        k("--revision taken", &["apply", "--to", "1.10.6", g, "--revision", "1-9-7"], 7, "choose another --revision"),
        k("--revision a version", &["plan", "--to", "1.10.6", "--revision", "1.10.6"], 2, "did you mean `1-10-6`"),
        // The LoadBalancer.
        k("--gateway-service missing", &["apply", "--to", "1.10.6"], 7, "choose one with --gateway-service"),
        k("--gateway-service without /", &["apply", "--to", "1.10.6", "--gateway-service", "ingress"], 2, "expected NAMESPACE/NAME"),
        k("--gateway-service selects nothing", &["apply", "--to", "1.10.6", "--gateway-service", "istio-ingress/nothing"], 7, "selects no gateway pods"),
        k("--gateway-service absent", &["apply", "--to", "1.10.6", "--gateway-service", "istio-ingress/ghost"], 7, "does not exist; pass the LoadBalancer"),
        // Namespaces.
        k("--namespaces missing one", &["apply", "--to", "1.10.6", g, "--namespaces", "apps,ghost"], 7, "namespace ghost does not exist"),
        k("--namespaces twice", &["apply", "--to", "1.10.6", g, "--namespaces", "apps,apps"], 2, "apps is listed twice"),
        k("--namespaces empty", &["apply", "--to", "1.10.6", g, "--namespaces", "apps,"], 2, "--namespaces: an empty name"),
        k("bad --namespace-selector", &["apply", "--to", "1.10.6", g, "--namespace-selector", "team in a"], 2, "--namespace-selector: \"team in a\" is not a label requirement"),
        k("--namespaces with a selector", &["apply", "--to", "1.10.6", g, "--namespaces", "apps", "--namespace-selector", "team=a"], 2, "cannot be used with"),
        k("--tag the source lacks", &["apply", "--to", "1.10.6", g, "--tag", "ghost"], 7, "--tag ghost: 1-9-7 has no such revision tag (its tags: "),
        k("--tag twice", &["apply", "--to", "1.10.6", g, "--tag", "prod,prod"], 2, "prod is given twice"),
        k("--tag not a name", &["plan", "--to", "1.10.6", "--tag", "Prod"], 2, "--tag \"Prod\": `Prod` is not a valid revision name"),
        // Command-line shape.
        k("--to and --plan", &["apply", "--to", "1.10.6", "--plan", &plan_file], 2, "cannot be used with"),
        k("neither --to nor --plan", &["apply"], 2, "--to <VERSION>"),
        k("--strategy bogus", &["apply", "--to", "1.10.6", g, "--strategy", "bogus"], 2, "invalid value 'bogus'"),
        k("--soak-seconds -1", &["plan", "--to", "1.10.6", g, "--soak-seconds=-1"], 2, "invalid value '-1'"),
        // Saved plans.
        k("--plan missing", &["apply", "--plan", "/nonexistent/plan.json"], 2, "No such file or directory"),
        k("--plan not JSON", &["apply", "--plan", &not_json], 2, "not a meshshift plan"),
        k("--plan JSON, not a plan", &["apply", "--plan", &not_plan], 2, "not a meshshift plan"),
        k("--plan from another cluster", &["apply", "--plan", &other_cluster], 7, "the cluster changed since the plan was made; re-plan"),
        k("--plan with a step removed", &["apply", "--plan", &step_removed], 7, "steps were removed, reordered or edited"),
        k("--plan with a step re-targeted", &["apply", "--plan", &retargeted], 7, "migrate-namespace-kube-system"),
        k("--plan with its target edited", &["apply", "--plan", &other_target], 7, "but the plan's target is 1-10-6 (1.10.5)"),
        k("a valid saved plan (control)", &["apply", "--plan", &plan_file, "--dry-run"], 0, "dry run: the plan is valid against the cluster"),
        // Run options.
        Case { env: vec![("MESHSHIFT_ISTIOCTL", "/nonexistent/istioctl".to_owned())], ..k("--installer istioctl, none installed", &["apply", "--to", "1.10.6", g, "--installer", "istioctl"], 2, "--installer istioctl: /nonexistent/istioctl was not found") },
        k("--until unknown step", &["apply", "--to", "1.10.6", g, "--until", "99-nope"], 2, "--until 99-nope: no such step in the plan; steps: 01-install-control-plane"),
        k("--until empty", &["apply", "--to", "1.10.6", g, "--until", ""], 2, "give a step id from the plan"),
        k("--probe not loopback", &["apply", "--to", "1.10.6", g, "--probe", "http://8.8.8.8/"], 2, "refusing to probe 8.8.8.8"),
        k("--probe not a URL", &["apply", "--to", "1.10.6", g, "--probe", "not a url"], 2, "--probe:"),
        k("--probe https", &["apply", "--to", "1.10.6", g, "--probe", "https://127.0.0.1/"], 2, "https is not supported"),
        k("--probe-rate 0", &["apply", "--to", "1.10.6", g, "--probe", "http://127.0.0.1:9/", "--probe-rate", "0"], 2, "--probe-rate 0: requests per second must be above 0"),
        k("--error-budget -1", &["apply", "--to", "1.10.6", g, "--error-budget=-1"], 2, "--error-budget -1: a share of requests, between 0 and 1"),
        k("--error-budget 1.5", &["apply", "--to", "1.10.6", g, "--error-budget", "1.5"], 2, "between 0 and 1"),
        k("--prometheus not loopback", &["apply", "--to", "1.10.6", g, "--prometheus", "http://8.8.8.8"], 2, "8.8.8.8 is not a loopback address"),
        k("--prometheus-error-ratio 2", &["apply", "--to", "1.10.6", g, "--prometheus-error-ratio", "2"], 2, "--prometheus-error-ratio 2"),
        k("--parallelism 0", &["apply", "--to", "1.10.6", g, "--parallelism", "0"], 2, "--parallelism 0"),
        k("--state-namespace invalid", &["apply", "--to", "1.10.6", g, "--state-namespace", "Bad_NS"], 2, "not a namespace name"),
        k("rollback --until", &["rollback", "--until", "01-install-control-plane"], 2, "--until is for apply and resume"),
        // No run.
        k("resume without a run", &["resume"], 9, "no upgrade run was found in namespace meshshift"),
        k("rollback without a run", &["rollback"], 9, "nothing to resume or roll back"),
        // Kubeconfig and cluster.
        case("kubeconfig missing", &["apply", "--to", "1.10.6", g, "--kubeconfig", "/nonexistent/kubeconfig"], 3, "cannot load kubeconfig /nonexistent/kubeconfig"),
        case("kubeconfig not YAML", &["status", "--kubeconfig", &garbage_kc], 3, "cannot load kubeconfig"),
        Case { env: vec![("KUBECONFIG", "/nonexistent/kubeconfig".to_owned())], ..case("KUBECONFIG missing", &["resume"], 3, "pass --kubeconfig FILE or set KUBECONFIG") },
        k("unknown --context", &["apply", "--to", "1.10.6", g, "--context", "prod"], 3, "\"prod\" is not in the kubeconfig; known contexts: "),
        case("context without its cluster", &["plan", "--to", "1.10.6", "--kubeconfig", &dangling], 3, "kubeconfig context is not usable"),
        case("unreachable cluster", &["apply", "--to", "1.10.6", g, "--kubeconfig", &unreachable], 4, "cannot reach the Kubernetes API at https://127.0.0.1:1"),
        on(&bad_token, "credentials rejected", &["rollback"], 4, "rejected the credentials (401)"),
        // Permissions.
        on(&nobody, "apply, may read nothing", &["apply", "--to", "1.10.6", g], 4, "forbidden: get configmaps in meshshift: grant it"),
        on(&nobody, "resume, may read nothing", &["resume"], 4, "forbidden: get configmaps in meshshift"),
        on(&nobody, "status, may read nothing", &["status"], 4, "may not list Deployments, so no istiod can be seen"),
        on(&restricted, "plan, may not read pods", &["plan", "--to", "1.10.6", g], 4, "may not list pods"),
        on(&restricted, "apply, may not read pods", &["apply", "--to", "1.10.6", g], 4, "may not list pods"),
        on(&viewer, "apply, may only read", &["apply", "--to", "1.10.6", g], 4, "may not create namespaces cluster-wide"),
        // Other commands.
        k("status --fail-on warning", &["status", "--fail-on", "warning"], 6, "findings at or above --fail-on warning: GATEWAY_LOCAL_MESH_CONFIG"),
        case("report, not a run dir", &["report", &empty_run_dir], 2, "not a meshshift run directory"),
        case("report, no dir", &["report", "/nonexistent/run"], 2, "not a meshshift run directory (no such directory)"),
        case("probe, not loopback", &["probe", "http://8.8.8.8/", "--rate", "10", "--duration", "1s"], 2, "refusing to probe 8.8.8.8"),
        case("probe, bad URL", &["probe", "ftp://127.0.0.1/", "--rate", "10", "--duration", "1s"], 2, "unsupported scheme"),
        case("probe --rate 0", &["probe", "http://127.0.0.1:9/", "--rate", "0", "--duration", "1s"], 2, "the rate must be a positive number"),
        case("probe --duration forever", &["probe", "http://127.0.0.1:9/", "--rate", "1", "--duration", "forever"], 2, "invalid duration"),
        case("lab demo --from garbage", &["lab", "demo", "--from", "garbage", "--dir", &demo], 2, "--from: `garbage` is not an Istio version"),
        case("lab demo downgrade", &["lab", "demo", "--from", "1.10.6", "--to", "1.9.7", "--dir", &demo], 2, "older 1.9.7"),
        case("completions bogus", &["completions", "bogus"], 2, "invalid value 'bogus'"),
    ];
    run_cases(no_run, &mut ran, &mut failures);
    assert!(!demo_dir.exists(), "a refused demo must not start a lab");

    // (B) A run paused after its first step: the setup writes, outside every case's window.
    let run_dir = |name: &str| t.join("runs").join(name).display().to_string();
    let paused = setup(
        &kc,
        &["apply", "--to", "1.10.6", g, "--until", "01-install-control-plane", "--run-dir", &run_dir("paused")],
    );
    #[rustfmt::skip]
    let while_paused = vec![
        k("second apply", &["apply", "--to", "1.10.6", g], 9, "a run is in progress (1-9-7 -> 1-10-6"),
        k("second apply --plan", &["apply", "--plan", &plan_file], 9, "continue it with `meshshift resume`"),
        k("second apply --dry-run", &["apply", "--to", "1.10.6", g, "--dry-run"], 9, "or undo it with `meshshift rollback`"),
        k("resume --until unknown step", &["resume", "--until", "99-nope"], 2, "--until 99-nope: no such step in the plan"),
        on(&viewer, "resume, may only read", &["resume"], 4, "may not create leases.coordination.k8s.io in meshshift"),
    ];
    run_cases(while_paused, &mut ran, &mut failures);

    // (C) Its journal corrupted by hand: garbage, then a plan.json whose steps the journal does not match.
    let journals: Api<ConfigMap> = Api::namespaced(client.clone(), "meshshift");
    let original = journals.get("meshshift-journal").await.expect("journal").data.expect("journal data");
    let set_data = |data: Value| {
        let journals = journals.clone();
        async move {
            let patch = json!({"data": data});
            journals.patch("meshshift-journal", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
        }
    };
    set_data(json!({"plan.json": "garbage", "journal.json": "{"})).await;
    #[rustfmt::skip]
    let corrupted = vec![
        k("resume, corrupted journal", &["resume"], 9, "is corrupted (plan.json: "),
        k("rollback, corrupted journal", &["rollback"], 9, "kubectl -n meshshift get configmap meshshift-journal -o yaml"),
        k("apply, corrupted journal", &["apply", "--to", "1.10.6", g], 9, "so it neither resumes nor rolls it back"),
    ];
    run_cases(corrupted, &mut ran, &mut failures);
    let mut short: Value = serde_json::from_str(&original["plan.json"]).expect("stored plan");
    short["steps"].as_array_mut().expect("steps").pop();
    set_data(json!({"plan.json": short.to_string(), "journal.json": original["journal.json"]})).await;
    run_cases(
        vec![k("rollback, journal and plan differ", &["rollback"], 9, "journal.json does not match plan.json's steps")],
        &mut ran,
        &mut failures,
    );

    // (D) The journal restored and the run rolled back (writes, outside every window); then a lock held.
    set_data(json!(original)).await;
    let rolled_back = setup(&kc, &["rollback", "--run-dir", &run_dir("rollback")]);
    #[rustfmt::skip]
    let after = vec![
        k("resume a rolled-back run", &["resume"], 9, "nothing to resume: the last run is over"),
        k("rollback a rolled-back run", &["rollback"], 9, "nothing to roll back: the last run was rolled back already"),
    ];
    run_cases(after, &mut ran, &mut failures);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "meshshift");
    let mut lease = leases.get("meshshift-apply").await.expect("lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("someone@elsewhere pid 1".into());
    spec.lease_duration_seconds = Some(600);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases.replace("meshshift-apply", &PostParams::default(), &lease).await.expect("hold the lock");
    run_cases(
        vec![k(
            "apply while another holds the lock",
            &["apply", "--to", "1.10.6", g],
            9,
            "another meshshift run holds the lock (someone@elsewhere pid 1)",
        )],
        &mut ran,
        &mut failures,
    );

    // The audit log: no meshshift write in any case's window; the setup's writes are there (the filter works).
    let _ = client.apiserver_version().await; // one more round trip: earlier requests' events are written
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = audit_events(&cluster);
    let within = |e: &Audited, (start, end): (Timestamp, Timestamp)| e.at >= start && e.at <= end;
    let setup_writes = events.iter().filter(|e| meshshift_write(e) && within(e, paused)).count();
    assert!(
        setup_writes > 5,
        "the paused run's writes are in the audit log with meshshift's User-Agent: {setup_writes}"
    );
    assert!(events.iter().any(|e| meshshift_write(e) && within(e, rolled_back)), "the rollback's writes are audited");
    let questions =
        events.iter().filter(|e| e.user_agent.starts_with("meshshift/") && e.resource == "selfsubjectaccessreviews");
    assert!(questions.count() > 0, "the permission check's reviews are audited (and are not writes)");
    for r in &ran {
        for e in events.iter().filter(|e| meshshift_write(e) && within(e, (r.start, r.end))) {
            failures.push(format!("{}: wrote {} {} (HTTP {})", r.name, e.verb, e.object, e.code));
        }
    }
    let stray: Vec<String> = events
        .iter()
        .filter(|e| meshshift_write(e) && !within(e, paused) && !within(e, rolled_back))
        .filter(|e| !ran.iter().any(|r| within(e, (r.start, r.end))))
        .map(|e| format!("{} {} at {}", e.verb, e.object, e.at))
        .collect();
    assert!(stray.is_empty(), "meshshift writes outside every window: {stray:?}");

    eprintln!("{:<40} {:>4} {:>7}", "CASE", "EXIT", "MS");
    for r in &ran {
        eprintln!("{:<40} {:>4} {:>7}", r.name, r.code, r.took.as_millis());
    }
    eprintln!("{} cases, {} audit events, {:.1} s in all", ran.len(), events.len(), began.elapsed().as_secs_f64());
    assert!(ran.len() >= 40, "at least 40 cases: {}", ran.len());
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), ran.len(), failures.join("\n"));
}
