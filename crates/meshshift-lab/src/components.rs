//! The control-plane components' command lines and kubeconfigs: the flags recorded in
//! `docs/testbed.md` (shared docs) as working with Kubernetes 1.20.2 in a private network namespace.

use std::path::Path;

use crate::kubeconfig::KubeconfigSpec;
use crate::netns::{self, APISERVER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::pki::{ADMIN_USER, PkiFiles};
use crate::{LabError, LabLayout};

pub(crate) fn etcd_args(l: &LabLayout) -> Vec<String> {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    vec![
        "--name=meshshift-lab".into(),
        format!("--data-dir={}", l.etcd_data_dir().display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=meshshift-lab={peer}"),
        "--logger=zap".into(),
    ]
}

/// The apiserver's audit policy: writes (create, update, patch, delete, deletecollection) at `Metadata`
/// level (no bodies, one event per request at `ResponseComplete`), except the control plane's own
/// components and the nodes' heartbeat Leases; no reads. Cheap enough to be always on, and enough to prove
/// that a command wrote nothing (`tests/bad_input_e2e.rs` filters it by user agent).
pub(crate) const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"]
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: None
    resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
    namespaces: ["kube-node-lease"]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"#;

/// Writes the audit policy the apiserver's flags name.
pub(crate) fn write_audit_policy(l: &LabLayout) -> Result<(), LabError> {
    crate::pki::write_file(&l.audit_policy(), AUDIT_POLICY.as_bytes(), 0o644)
}

pub(crate) fn apiserver_args(l: &LabLayout, p: &PkiFiles) -> Vec<String> {
    let path = |flag: &str, file: &Path| format!("--{flag}={}", file.display());
    vec![
        format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        format!("--advertise-address={}", netns::ADVERTISE_ADDRESS),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={APISERVER_PORT}"),
        "--insecure-port=0".into(),
        format!("--service-cluster-ip-range={}", netns::SERVICE_CIDR),
        path("client-ca-file", &p.ca_cert),
        path("tls-cert-file", &p.apiserver_cert),
        path("tls-private-key-file", &p.apiserver_key),
        path("service-account-key-file", &p.service_account_pub),
        path("service-account-signing-key-file", &p.service_account_key),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-aggregator-routing=true".into(),
        "--allow-privileged=true".into(),
        // Only used if a certificate were missing; keeps the apiserver out of /var/run/kubernetes.
        format!("--cert-dir={}", p.ca_cert.parent().unwrap_or(Path::new(".")).display()),
        path("audit-policy-file", &l.audit_policy()),
        path("audit-log-path", &l.audit_log()),
        "--audit-log-maxsize=100".into(),
        "--audit-log-maxbackup=1".into(),
    ]
}

pub(crate) fn controller_manager_args(kubeconfig: &Path, p: &PkiFiles) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--service-account-private-key-file={}", p.service_account_key.display()),
        format!("--root-ca-file={}", p.ca_cert.display()),
        "--use-service-account-credentials=true".into(),
        // The default client-side limit (20 qps) throttles start-up: with per-controller service-account
        // credentials every controller first creates its account and waits for its token.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--secure-port=0".into(),
    ]
}

pub(crate) fn scheduler_args(kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--secure-port=0".into(),
    ]
}

/// Kubeconfigs for processes inside the namespace: the components' own identities and an admin one.
pub(crate) fn write_component_kubeconfigs(l: &LabLayout, p: &PkiFiles) -> Result<(), LabError> {
    let server = format!("https://127.0.0.1:{APISERVER_PORT}");
    let etc = l.etc_dir();
    let write = |user: &str, cert: &Path, key: &Path, path: &Path| {
        KubeconfigSpec::write_from_files(&server, user, &p.ca_cert, cert, key, path)
    };
    write(
        "system:kube-controller-manager",
        &p.controller_manager_cert,
        &p.controller_manager_key,
        &etc.join("controller-manager.kubeconfig"),
    )?;
    write("system:kube-scheduler", &p.scheduler_cert, &p.scheduler_key, &etc.join("scheduler.kubeconfig"))?;
    write(ADMIN_USER, &p.admin_cert, &p.admin_key, &l.inside_kubeconfig())
}
