//! The least privileges meshshift needs, as Kubernetes RBAC objects (`meshshift rbac`).
//!
//! Every API call of `status`, `plan`, `apply`, `resume` and `rollback` (with the manifests and operator
//! installers) is listed in [`PERMISSIONS`]: which group, resource and verbs, in which scope, and why.
//! The table was read off the code that makes the calls: `meshshift-kube` (`snapshot.rs` lists, the
//! rollout watch, the Lease and the journal ConfigMap) and `meshshift-engine` (`objects.rs` reads and
//! guarded writes, `steps/`, `gates/`). No rule names a Secret and none uses a wildcard.
//!
//! The Helm and istioctl installers run external tools with the same credentials; they install whatever
//! their chart holds (ClusterRoles and their bindings, Secrets for Helm's release storage, ...), which this
//! set deliberately does not grant (docs/reliability.md, "Least privilege").

use serde_json::{Value, json};

/// The default name of every object meshshift's RBAC output defines.
pub const DEFAULT_NAME: &str = "meshshift";

/// meshshift's own namespace for injection probes (the engine's `gates::inject::GATE_NAMESPACE`).
pub const GATE_NAMESPACE: &str = "meshshift-gate";

/// The verbs meshshift uses, in the order rules list them. No other verb appears in the output.
const VERBS: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// Where a permission is needed, which decides whether it goes in the ClusterRole or a Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Cluster-wide: reads of every namespace (status and plan list each kind once, everywhere) and
    /// cluster-scoped kinds (namespaces, webhook configurations). Always in the ClusterRole.
    Cluster,
    /// Namespaced writes in the mesh's namespaces (the control plane's, the gateways', the migrated
    /// applications'). In the ClusterRole by default; in a Role per namespace with `--namespace-scoped`.
    Mesh,
    /// The state namespace (journal ConfigMap, run-lock Lease). Always a Role there.
    State,
    /// [`GATE_NAMESPACE`], where injection is probed with dry-run pods. In the ClusterRole by default; a
    /// Role there with `--namespace-scoped`.
    Gate,
}

/// One permission: verbs on one resource of one API group, with the reason meshshift needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""`: core).
    pub group: &'static str,
    /// Resource (plural), or `resource/subresource`.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Where it is needed.
    pub scope: Scope,
    /// Which commands and steps use it.
    pub why: &'static str,
}

const fn p(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
    why: &'static str,
) -> Permission {
    Permission { group, resource, verbs, scope, why }
}

const ADMISSION: &str = "admissionregistration.k8s.io";

/// Everything meshshift does against the API, by scope.
pub const PERMISSIONS: &[Permission] = &[
    // status and plan: one paginated list per kind (meshshift-kube snapshot.rs); the engine re-reads the
    // objects it changes (objects.rs get) and watches rollouts.
    p("", "namespaces", &["get", "list"], Scope::Cluster, "status/plan list namespaces; the relabel step reads one"),
    p(
        "",
        "namespaces",
        &["create", "patch"],
        Scope::Cluster,
        "apply creates the state namespace and meshshift-gate when absent, relabels migrated namespaces (istio.io/rev) and labels meshshift-gate for injection probes",
    ),
    p(
        "",
        "pods",
        &["list"],
        Scope::Cluster,
        "status/plan read proxies; gates: pods on the target proxy, Endpoints list only green, blue drained",
    ),
    p(
        "",
        "services",
        &["get", "list"],
        Scope::Cluster,
        "status/plan find gateways and LoadBalancers; the switch reads the LoadBalancer",
    ),
    p(
        "",
        "configmaps",
        &["get", "list"],
        Scope::Cluster,
        "status/plan read Istio's mesh and injector ConfigMaps (one list, filtered by name); green copies its revision's mesh config",
    ),
    p(
        "apps",
        "deployments",
        &["get", "list", "watch"],
        Scope::Cluster,
        "status/plan; rollouts are watched by kubectl's rollout-status rule",
    ),
    p(
        "apps",
        "statefulsets",
        &["get", "list"],
        Scope::Cluster,
        "status/plan; restarted StatefulSets are polled until rolled out",
    ),
    p(
        "apps",
        "daemonsets",
        &["get", "list"],
        Scope::Cluster,
        "status/plan; restarted DaemonSets are polled until rolled out",
    ),
    p("apps", "replicasets", &["list"], Scope::Cluster, "status/plan tie pods to their Deployments"),
    p(
        ADMISSION,
        "mutatingwebhookconfigurations",
        &["get", "list", "create", "update", "delete"],
        Scope::Cluster,
        "status/plan evaluate injectors; install creates the revision's injector, a tag move rewrites its webhook, retire deletes the old injector, rollback recreates it",
    ),
    p(
        ADMISSION,
        "validatingwebhookconfigurations",
        &["get", "list", "create", "update"],
        Scope::Cluster,
        "status/plan; the default validator is re-pointed by a default-tag move and before retiring istiod (create-or-replace asks create first)",
    ),
    p("policy", "poddisruptionbudgets", &["list"], Scope::Cluster, "restarts wait while a budget allows no disruption"),
    p(
        "networking.istio.io",
        "virtualservices",
        &["list"],
        Scope::Cluster,
        "the serve gate probes every route path of the mesh",
    ),
    // apply, resume, rollback: writes in the mesh's namespaces.
    p(
        "",
        "pods",
        &["create"],
        Scope::Mesh,
        "server-side dry-run pods: is a new pod injected by the target revision (nothing is stored)",
    ),
    p(
        "",
        "services",
        &["create", "update", "patch", "delete"],
        Scope::Mesh,
        "green's Service and istiod's (install), the LoadBalancer selector switch (patch), retire and rollback",
    ),
    p(
        "",
        "services/proxy",
        &["get"],
        Scope::Mesh,
        "the serve gate sends requests to green and blue through the apiserver's service proxy",
    ),
    p("", "endpoints", &["get"], Scope::Mesh, "the switch gate: the LoadBalancer's Endpoints list only green"),
    p(
        "",
        "configmaps",
        &["create", "update", "delete"],
        Scope::Mesh,
        "istiod's mesh and injector config, green's mesh-config copy; retire and rollback",
    ),
    p(
        "",
        "serviceaccounts",
        &["get", "create", "update", "delete"],
        Scope::Mesh,
        "istiod's and the operator's ServiceAccounts (install, rollback)",
    ),
    p(
        "apps",
        "deployments",
        &["create", "update", "patch", "delete"],
        Scope::Mesh,
        "istiod, green, the operator (create); restarts and blue's scale-down (patch); retire and rollback",
    ),
    p(
        "apps",
        "statefulsets",
        &["patch"],
        Scope::Mesh,
        "restarts (kubectl.kubernetes.io/restartedAt) and their rollback",
    ),
    p("apps", "daemonsets", &["patch"], Scope::Mesh, "restarts (kubectl.kubernetes.io/restartedAt) and their rollback"),
    p(
        "install.istio.io",
        "istiooperators",
        &["get", "create", "update", "delete"],
        Scope::Mesh,
        "the operator installer's IstioOperator (install, rollback)",
    ),
    // The run's own state.
    p("coordination.k8s.io", "leases", &["get", "create", "update"], Scope::State, "the run lock (one run at a time)"),
    p(
        "",
        "configmaps",
        &["get", "create", "update", "delete"],
        Scope::State,
        "the journal (meshshift-journal) and the archives of finished runs",
    ),
    p(
        "",
        "pods",
        &["create"],
        Scope::Gate,
        "dry-run pods in meshshift-gate labelled with the revision or tag under test",
    ),
];

/// What `meshshift rbac` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacSpec {
    /// Name of the ClusterRole, Roles and bindings.
    pub name: String,
    /// The state namespace (`--state-namespace` of apply/resume/rollback).
    pub state_namespace: String,
    /// Empty: the mesh's namespaced writes are granted cluster-wide. Otherwise only in these namespaces
    /// (the control plane's, the gateways' and every namespace to migrate), by a Role in each.
    pub namespace_scoped: Vec<String>,
    /// Also define this ServiceAccount (`namespace`, `name`) and bind it to every role.
    pub service_account: Option<(String, String)>,
}

impl Default for RbacSpec {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            state_namespace: DEFAULT_NAME.to_owned(),
            namespace_scoped: Vec::new(),
            service_account: None,
        }
    }
}

/// A request that cannot be turned into valid objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// Not a valid namespace or object name.
    #[error("{what} {value:?} is not a valid name (lower-case letters, digits and '-')")]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name.
        value: String,
    },
}

/// A DNS-1123 label: what namespaces, and the names used here, must be.
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check(what: &'static str, value: &str) -> Result<(), RbacError> {
    if valid_label(value) { Ok(()) } else { Err(RbacError::InvalidName { what, value: value.to_owned() }) }
}

/// A DNS-1123 subdomain (ServiceAccount names): labels joined by dots.
fn check_subdomain(what: &'static str, value: &str) -> Result<(), RbacError> {
    if value.len() <= 253 && value.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(RbacError::InvalidName { what, value: value.to_owned() })
    }
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": "meshshift", "app.kubernetes.io/managed-by": "meshshift"})
}

/// Rules for `permissions`: one per API group and verb set, resources sorted, verbs in [`VERBS`] order.
pub fn rules<'a>(permissions: impl IntoIterator<Item = &'a Permission>) -> Vec<Value> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_resource: BTreeMap<(&str, &str), BTreeSet<usize>> = BTreeMap::new();
    for perm in permissions {
        let verbs = by_resource.entry((perm.group, perm.resource)).or_default();
        for v in perm.verbs {
            // Every verb of the table is one of VERBS (a unit test holds it to that).
            if let Some(i) = VERBS.iter().position(|k| k == v) {
                verbs.insert(i);
            }
        }
    }
    let mut by_verbs: BTreeMap<(&str, Vec<usize>), Vec<&str>> = BTreeMap::new();
    for ((group, resource), verbs) in by_resource {
        by_verbs.entry((group, verbs.into_iter().collect())).or_default().push(resource);
    }
    by_verbs
        .into_iter()
        .map(|((group, verbs), resources)| {
            json!({
                "apiGroups": [group],
                "resources": resources,
                "verbs": verbs.iter().map(|&i| VERBS[i]).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn subject(spec: &RbacSpec) -> Option<Value> {
    spec.service_account.as_ref().map(|(ns, name)| json!({"kind": "ServiceAccount", "name": name, "namespace": ns}))
}

fn role(kind: &str, name: &str, namespace: Option<&str>, rules: Vec<Value>) -> Value {
    let mut metadata = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata, "rules": rules})
}

fn binding(kind: &str, role_kind: &str, name: &str, namespace: Option<&str>, subject: &Value) -> Value {
    let mut metadata = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [subject],
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels()}})
}

/// The objects that grant meshshift what it needs, in the order to apply them: the namespaces the Roles
/// live in (the state namespace; with `namespace_scoped`, also [`GATE_NAMESPACE`]), the ServiceAccount
/// when asked, the ClusterRole (and binding), then one Role (and binding) per namespace.
pub fn objects(spec: &RbacSpec) -> Result<Vec<Value>, RbacError> {
    check("--name", &spec.name)?;
    check("the state namespace", &spec.state_namespace)?;
    for ns in &spec.namespace_scoped {
        check("namespace", ns)?;
    }
    if let Some((ns, name)) = &spec.service_account {
        check("the ServiceAccount's namespace", ns)?;
        check_subdomain("the ServiceAccount's name", name)?;
    }
    let scoped = !spec.namespace_scoped.is_empty();
    let in_scope = |s: Scope| PERMISSIONS.iter().filter(move |p| p.scope == s);
    let subject = subject(spec);

    // Role namespaces in order, each with its permissions (a namespace named twice gets one Role).
    let mut roles: Vec<(String, Vec<&Permission>)> = Vec::new();
    let mut add = |ns: &str, perms: Vec<&'static Permission>| match roles.iter_mut().find(|(n, _)| n == ns) {
        Some((_, existing)) => existing.extend(perms),
        None => roles.push((ns.to_owned(), perms)),
    };
    add(&spec.state_namespace, in_scope(Scope::State).collect());
    let mut cluster: Vec<&Permission> = in_scope(Scope::Cluster).collect();
    if scoped {
        for ns in &spec.namespace_scoped {
            add(ns, in_scope(Scope::Mesh).collect());
        }
        add(GATE_NAMESPACE, in_scope(Scope::Gate).collect());
    } else {
        cluster.extend(in_scope(Scope::Mesh));
        cluster.extend(in_scope(Scope::Gate));
    }

    let mut out = vec![namespace(&spec.state_namespace)];
    if scoped && spec.state_namespace != GATE_NAMESPACE {
        out.push(namespace(GATE_NAMESPACE));
    }
    if let Some((ns, name)) = &spec.service_account {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns, "labels": labels()}}));
    }
    let mut cluster_role = role("ClusterRole", &spec.name, None, rules(cluster));
    cluster_role["metadata"]["annotations"] = json!({
        "meshshift.io/covers": "status, plan, apply, resume, rollback; installers: manifests, operator (helm and istioctl need what their chart installs)",
        "meshshift.io/namespaced-writes": if scoped { spec.namespace_scoped.join(",") } else { "all namespaces".to_owned() },
    });
    out.push(cluster_role);
    if let Some(s) = &subject {
        out.push(binding("ClusterRoleBinding", "ClusterRole", &spec.name, None, s));
    }
    for (ns, perms) in roles {
        out.push(role("Role", &spec.name, Some(&ns), rules(perms)));
        if let Some(s) = &subject {
            out.push(binding("RoleBinding", "Role", &spec.name, Some(&ns), s));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| {
                out.push(k.clone());
                strings(x, out);
            }),
            _ => {}
        }
    }

    fn all_specs() -> Vec<RbacSpec> {
        vec![
            RbacSpec::default(),
            RbacSpec { service_account: Some(("meshshift".into(), "meshshift".into())), ..RbacSpec::default() },
            RbacSpec {
                namespace_scoped: vec!["istio-system".into(), "istio-ingress".into(), "bookinfo".into()],
                service_account: Some(("ops".into(), "upgrader".into())),
                ..RbacSpec::default()
            },
        ]
    }

    fn find<'a>(objs: &'a [Value], kind: &str, ns: Option<&str>) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["namespace"].as_str() == ns)
            .unwrap_or_else(|| panic!("no {kind} in {ns:?}"))
    }

    /// Whether `rules` grant `verb` on `group`/`resource`.
    fn grants(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
        rules.as_array().into_iter().flatten().any(|r| {
            r["apiGroups"] == json!([group])
                && r["resources"].as_array().is_some_and(|a| a.iter().any(|x| x == resource))
                && r["verbs"].as_array().is_some_and(|a| a.iter().any(|x| x == verb))
        })
    }

    #[test]
    fn no_wildcard_and_no_secrets_anywhere() {
        for spec in all_specs() {
            let objs = objects(&spec).expect("objects");
            let mut all = Vec::new();
            objs.iter().for_each(|o| strings(o, &mut all));
            assert!(!all.iter().any(|s| s.contains('*')), "a wildcard in {spec:?}");
            for o in &objs {
                for r in o["rules"].as_array().into_iter().flatten() {
                    for res in r["resources"].as_array().expect("resources") {
                        let res = res.as_str().expect("resource");
                        assert!(!res.starts_with("secrets"), "{res} in {spec:?}");
                    }
                    assert_eq!(r["apiGroups"].as_array().map(Vec::len), Some(1));
                }
            }
        }
        assert!(PERMISSIONS.iter().all(|p| p.resource != "secrets" && p.group != "*"));
    }

    #[test]
    fn every_verb_is_a_known_one_and_no_escalation() {
        for p in PERMISSIONS {
            for v in p.verbs {
                assert!(VERBS.contains(v), "{v} on {}", p.resource);
            }
            assert!(p.group != "rbac.authorization.k8s.io", "meshshift grants nothing itself");
            assert!(!p.why.is_empty());
        }
    }

    #[test]
    fn cluster_wide_by_default_with_the_state_in_a_role() {
        let objs = objects(&RbacSpec::default()).expect("objects");
        let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds, ["Namespace", "ClusterRole", "Role"], "no bindings unless asked");
        let cr = &find(&objs, "ClusterRole", None)["rules"];
        assert!(grants(cr, "", "services", "patch"), "the switch");
        assert!(grants(cr, "", "services/proxy", "get"), "the serve gate");
        assert!(grants(cr, "", "pods", "create"), "dry-run pods");
        assert!(grants(cr, "apps", "deployments", "watch"));
        assert!(grants(cr, "policy", "poddisruptionbudgets", "list"));
        assert!(grants(cr, "networking.istio.io", "virtualservices", "list"));
        assert!(!grants(cr, "coordination.k8s.io", "leases", "update"), "the lock only in the state namespace");
        let state = &find(&objs, "Role", Some("meshshift"))["rules"];
        assert!(grants(state, "coordination.k8s.io", "leases", "create"));
        assert!(grants(state, "", "configmaps", "delete"), "journal archives");
        // Resources sharing group and verbs share a rule; the output is stable.
        assert_eq!(objects(&RbacSpec::default()).expect("again"), objs);
        assert!(cr.as_array().expect("rules").iter().any(|r| r["resources"] == json!(["statefulsets", "daemonsets"])
            || r["resources"] == json!(["daemonsets", "statefulsets"])));
    }

    #[test]
    fn namespace_scoped_keeps_writes_out_of_the_cluster_role() {
        let spec = &all_specs()[2];
        let objs = objects(spec).expect("objects");
        let cr = &find(&objs, "ClusterRole", None)["rules"];
        for r in cr.as_array().expect("rules") {
            let cluster_scoped = r["resources"].as_array().expect("resources").iter().all(|x| {
                ["namespaces", "mutatingwebhookconfigurations", "validatingwebhookconfigurations"]
                    .contains(&x.as_str().unwrap_or_default())
            });
            if !cluster_scoped {
                for v in r["verbs"].as_array().expect("verbs") {
                    assert!(["get", "list", "watch"].contains(&v.as_str().unwrap_or_default()), "{r}");
                }
            }
        }
        for ns in ["istio-system", "istio-ingress", "bookinfo"] {
            let rules = &find(&objs, "Role", Some(ns))["rules"];
            assert!(grants(rules, "", "services", "patch") && grants(rules, "apps", "deployments", "patch"), "{ns}");
            assert!(!grants(rules, "coordination.k8s.io", "leases", "get"));
            let b = find(&objs, "RoleBinding", Some(ns));
            assert_eq!(b["subjects"], json!([{"kind": "ServiceAccount", "name": "upgrader", "namespace": "ops"}]));
            assert_eq!(b["roleRef"]["kind"], "Role");
        }
        let gate = &find(&objs, "Role", Some(GATE_NAMESPACE))["rules"];
        assert_eq!(gate, &json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]));
        let namespaces: Vec<&str> =
            objs.iter().filter(|o| o["kind"] == "Namespace").filter_map(|o| o["metadata"]["name"].as_str()).collect();
        assert_eq!(namespaces, ["meshshift", GATE_NAMESPACE], "Roles need their namespaces");
        assert!(objs.iter().any(|o| o["kind"] == "ServiceAccount" && o["metadata"]["namespace"] == "ops"));
    }

    #[test]
    fn the_state_namespace_among_the_scoped_ones_gets_one_role() {
        let spec = RbacSpec { namespace_scoped: vec!["meshshift".into()], ..RbacSpec::default() };
        let objs = objects(&spec).expect("objects");
        let roles: Vec<&Value> =
            objs.iter().filter(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "meshshift").collect();
        assert_eq!(roles.len(), 1);
        assert!(grants(&roles[0]["rules"], "coordination.k8s.io", "leases", "update"));
        assert!(grants(&roles[0]["rules"], "apps", "deployments", "create"));
    }

    #[test]
    fn invalid_names_are_refused() {
        let bad = RbacSpec { namespace_scoped: vec!["Istio_System".into()], ..RbacSpec::default() };
        assert!(matches!(objects(&bad), Err(RbacError::InvalidName { .. })));
        let bad = RbacSpec { service_account: Some(("ns".into(), "".into())), ..RbacSpec::default() };
        assert!(objects(&bad).is_err());
        let bad = RbacSpec { state_namespace: "-x".into(), ..RbacSpec::default() };
        assert!(objects(&bad).is_err());
    }
}
