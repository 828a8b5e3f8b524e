//! Least privilege, end to end in the lab: `meshshift rbac` prints the ClusterRole and Roles meshshift
//! needs (no Secrets, no wildcards); applied with a binding to a ServiceAccount, that ServiceAccount's own
//! token (not an admin's) runs status, plan and the whole upgrade 1.9.7 -> 1.10.6, the rollback and the
//! resume. With one permission taken away (`patch` on services, the LoadBalancer switch), the run stops
//! with a message naming the verb, the resource and the namespace to grant. Then the narrower
//! `--namespace-scoped` set (namespaced writes only in the mesh's namespaces) upgrades again. The
//! apiserver's audit log shows no other write of that ServiceAccount was ever refused.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use meshshift_kube::manifest::Applier;
use meshshift_lab::testing::eventually;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};
use support::{install_mesh, meshshift, meshshift_with_env};

const USER: &str = "system:serviceaccount:meshshift:meshshift";

/// Runs meshshift against `kubeconfig` with a one-second soak; exit code and all output.
fn ms(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")]);
    let run = meshshift_with_env(&all, &[("MESHSHIFT_SOAK_SECONDS", "1")]);
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

fn ms_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (code, out) = ms(kubeconfig, args);
    assert_eq!(code, 0, "meshshift {args:?} as the ServiceAccount failed:\n{out}");
    out
}

/// A kubeconfig for the lab's apiserver that authenticates with `token` only (no client certificate).
fn token_kubeconfig(cluster: &TestCluster, token: &str) -> std::path::PathBuf {
    let mut kc = cluster.kubeconfig();
    for a in &mut kc.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            info.client_certificate = None;
            info.client_certificate_data = None;
            info.client_key = None;
            info.client_key_data = None;
            info.token = Some(token.to_owned().into());
        }
    }
    let path = cluster.dir().join("meshshift-sa.kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).expect("kubeconfig json")).expect("write kubeconfig");
    path
}

/// Whether the ServiceAccount may `verb` `group`/`resource` (in `namespace`), by the apiserver's own RBAC.
async fn allowed(client: &kube::Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": USER,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:meshshift", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": namespace.unwrap_or_default()},
        }
    }))
    .expect("review");
    let done = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    done.status.is_some_and(|s| s.allowed)
}

/// The ClusterRole of `objs` without `verb` on `resource` (a rule naming it with others is split).
fn without(objs: &[Value], resource: &str, verb: &str) -> Value {
    let mut role = objs.iter().find(|o| o["kind"] == "ClusterRole").expect("a ClusterRole").clone();
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = |r: &Value| r["resources"].as_array().is_some_and(|a| a.iter().any(|x| x == resource));
        let grants = rule["verbs"].as_array().is_some_and(|a| a.iter().any(|x| x == verb));
        if !(names(rule) && grants) {
            rules.push(rule.clone());
            continue;
        }
        let others: Vec<&Value> =
            rule["resources"].as_array().into_iter().flatten().filter(|x| x.as_str() != Some(resource)).collect();
        if !others.is_empty() {
            rules.push(json!({"apiGroups": rule["apiGroups"], "resources": others, "verbs": rule["verbs"]}));
        }
        let verbs: Vec<&Value> =
            rule["verbs"].as_array().into_iter().flatten().filter(|x| x.as_str() != Some(verb)).collect();
        rules.push(json!({"apiGroups": rule["apiGroups"], "resources": [resource], "verbs": verbs}));
    }
    role["rules"] = json!(rules);
    role
}

async fn lb_selector(client: &kube::Client) -> Value {
    let api: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    json!(api.get("ingress").await.expect("the LoadBalancer").spec.and_then(|s| s.selector))
}

/// Every pod with a proxy in `namespace` runs `version` from `revision` (per `meshshift status` as admin).
fn assert_proxies(admin_kc: &Path, namespace: &str, revision: &str, version: &str) {
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", admin_kc.to_str().expect("path")]);
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("status json");
    support::assert_proxies(&report, namespace, revision, version);
}

/// The ServiceAccount's write requests in the audit log: `(verb, resource[/sub], namespace, code)`.
fn audited_writes(cluster: &TestCluster) -> Vec<(String, String, String, i64)> {
    let text = std::fs::read_to_string(cluster.audit_log_path()).expect("audit log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == USER && e["stage"] == "ResponseComplete")
        .map(|e| {
            let o = &e["objectRef"];
            let mut resource = o["resource"].as_str().unwrap_or_default().to_owned();
            if let Some(sub) = o["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            if let Some(g) = o["apiGroup"].as_str().filter(|g| !g.is_empty()) {
                resource = format!("{resource}.{g}");
            }
            (
                e["verb"].as_str().unwrap_or_default().to_owned(),
                resource,
                o["namespace"].as_str().unwrap_or_default().to_owned(),
                e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_with_only_the_printed_rules_upgrades_rolls_back_and_is_told_what_is_missing() {
    let started = Instant::now();
    let cluster = TestCluster::start_lab(Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(3))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let dir = cluster.dir().to_str().expect("dir").to_owned();
    let admin_kc = cluster.kubeconfig_path().to_owned();
    let client = cluster.client().await.expect("client");
    install_mesh(&dir);

    // Exactly what `meshshift rbac` prints, applied by an admin: the state namespace, the ServiceAccount,
    // the ClusterRole and the state Role, and their bindings.
    let printed = meshshift(&["rbac", "-o", "json", "--service-account", "meshshift/meshshift"]);
    assert_eq!(printed.code, 0, "rbac: {}", printed.stderr);
    assert!(!printed.stdout.contains('*') && !printed.stdout.contains("secrets"), "{}", printed.stdout);
    let list: Value = serde_json::from_str(&printed.stdout).expect("rbac json");
    let objs: Vec<Value> = list["items"].as_array().expect("items").clone();
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
    Applier::new(client.clone(), "default").apply_all(objs.clone()).await.expect("apply the rbac output");

    // The ServiceAccount's own token (the 1.20 token controller makes its Secret).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "meshshift");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "meshshift");
    let token = eventually("the ServiceAccount's token", Duration::from_secs(30), || {
        let (accounts, secrets) = (accounts.clone(), secrets.clone());
        async move {
            let sa = accounts.get_opt("meshshift").await.ok().flatten()?;
            let name = sa.secrets?.first()?.name.clone()?;
            let secret = secrets.get_opt(&name).await.ok().flatten()?;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        }
    })
    .await;
    let sa_kc = token_kubeconfig(&cluster, &token);

    // What the gates would otherwise skip silently when forbidden is granted; Secrets are not.
    for (verb, group, resource, ns) in [
        ("list", "policy", "poddisruptionbudgets", Some("bookinfo")),
        ("list", "networking.istio.io", "virtualservices", None),
        ("get", "", "services/proxy", Some("istio-ingress")),
        ("create", "", "pods", Some("bookinfo")),
    ] {
        assert!(allowed(&client, verb, group, resource, ns).await, "{verb} {resource} in {ns:?} is granted");
    }
    for ns in [Some("istio-system"), Some("meshshift"), None] {
        assert!(!allowed(&client, "get", "", "secrets", ns).await, "secrets in {ns:?} are not readable");
        assert!(!allowed(&client, "list", "", "secrets", ns).await, "secrets in {ns:?} are not listable");
    }
    assert!(!allowed(&client, "create", "rbac.authorization.k8s.io", "clusterrolebindings", None).await);

    // status and plan: everything readable (no READ_FORBIDDEN finding).
    let status = ms_ok(&sa_kc, &["status", "-o", "json"]);
    assert!(!status.contains("READ_FORBIDDEN"), "{status}");
    ms_ok(&sa_kc, &["plan", "--to", "1.10.6"]);

    // The whole upgrade as the ServiceAccount.
    let out = ms_ok(&sa_kc, &["apply", "--to", "1.10.6"]);
    assert!(out.contains("upgrade finished"), "{out}");
    assert_eq!(lb_selector(&client).await["version"], "1-10-6");
    assert_proxies(&admin_kc, "bookinfo", "1-10-6", "1.10.6");
    let upgraded = Instant::now();

    // One permission less: `patch` on services. The rollback undoes the later steps, then stops at the
    // LoadBalancer switch with a message that names what to grant.
    let restricted = without(&objs, "services", "patch");
    Applier::new(client.clone(), "default").apply_all(vec![restricted]).await.expect("restrict the ClusterRole");
    eventually("the narrower ClusterRole to take effect", Duration::from_secs(30), || {
        let client = client.clone();
        async move { (!allowed(&client, "patch", "", "services", Some("istio-ingress")).await).then_some(()) }
    })
    .await;
    let (code, out) = ms(&sa_kc, &["rollback"]);
    assert_eq!(code, 4, "a forbidden write exits 4:\n{out}");
    assert!(
        out.contains(
            "Service/istio-ingress/ingress: forbidden: patch services in istio-ingress: grant it (see `meshshift rbac`)"
        ),
        "the error names the verb, resource and namespace:\n{out}"
    );
    assert_eq!(lb_selector(&client).await["version"], "1-10-6", "nothing was switched");

    // Granted again: resume finishes the rollback; the cluster is back on 1.9.7.
    Applier::new(client.clone(), "default").apply_all(objs.clone()).await.expect("restore the ClusterRole");
    eventually("the ClusterRole to be whole again", Duration::from_secs(30), || {
        let client = client.clone();
        async move { allowed(&client, "patch", "", "services", Some("istio-ingress")).await.then_some(()) }
    })
    .await;
    let out = ms_ok(&sa_kc, &["resume"]);
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(lb_selector(&client).await["version"], "1-9-7");
    assert_proxies(&admin_kc, "bookinfo", "1-9-7", "1.9.7");

    let rolled_back = Instant::now();

    // Narrower still: `--namespace-scoped` keeps every namespaced write out of the ClusterRole, in a Role
    // per namespace of the mesh (plus meshshift-gate). The same ServiceAccount upgrades again.
    let scoped = meshshift(&[
        "rbac",
        "-o",
        "json",
        "--service-account",
        "meshshift/meshshift",
        "--namespace-scoped",
        "istio-system,istio-ingress,bookinfo",
    ]);
    assert_eq!(scoped.code, 0, "rbac --namespace-scoped: {}", scoped.stderr);
    let scoped: Value = serde_json::from_str(&scoped.stdout).expect("rbac json");
    let scoped = scoped["items"].as_array().expect("items").clone();
    Applier::new(client.clone(), "default").apply_all(scoped).await.expect("apply the namespace-scoped rbac");
    eventually("the namespace-scoped ClusterRole to take effect", Duration::from_secs(30), || {
        let client = client.clone();
        async move { (!allowed(&client, "patch", "apps", "deployments", Some("default")).await).then_some(()) }
    })
    .await;
    assert!(allowed(&client, "patch", "apps", "deployments", Some("bookinfo")).await);
    let out = ms_ok(&sa_kc, &["apply", "--to", "1.10.6"]);
    assert!(out.contains("upgrade finished"), "{out}");
    assert_eq!(lb_selector(&client).await["version"], "1-10-6");
    assert_proxies(&admin_kc, "bookinfo", "1-10-6", "1.10.6");

    // The audit log (every write): the only refusal the ServiceAccount ever met is the one taken away.
    let writes = audited_writes(&cluster);
    assert!(writes.len() > 20, "the audit log has the ServiceAccount's writes: {}", writes.len());
    let refused: BTreeSet<(String, String, String, i64)> = writes.iter().filter(|w| w.3 == 403).cloned().collect();
    assert_eq!(
        refused,
        BTreeSet::from([("patch".to_owned(), "services".to_owned(), "istio-ingress".to_owned(), 403)]),
        "no other write of the ServiceAccount was forbidden"
    );
    let used: BTreeSet<(String, String)> = writes.iter().map(|(v, r, _, _)| (v.clone(), r.clone())).collect();
    eprintln!("writes the ServiceAccount made ({}): {used:?}", writes.len());
    eprintln!(
        "least-privilege run: lab, mesh and upgrade {:.1} s; refused rollback, resume {:.1} s; namespace-scoped upgrade {:.1} s; {:.1} s in all",
        upgraded.duration_since(started).as_secs_f64(),
        rolled_back.duration_since(upgraded).as_secs_f64(),
        rolled_back.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
