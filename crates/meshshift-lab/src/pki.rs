//! The lab's certificates, made with rcgen.
//!
//! Why these shapes: rustls (kube's TLS) only accepts X.509 v3 certificates issued by a CA (not a
//! self-signed leaf) and needs an IP SAN for `127.0.0.1`; the apiserver maps client certificates to users
//! by CN (user) and O (groups), so `O=system:masters` is cluster-admin while the controller-manager and the
//! scheduler get their real, RBAC-limited identities. All keys are ECDSA P-256 (PKCS#8 PEM), which Go's
//! TLS stack and the apiserver's service-account key loader both accept.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::LabError;
use crate::netns::{ADVERTISE_ADDRESS, KUBERNETES_SERVICE_IP};

const CA_COMMON_NAME: &str = "meshshift-lab-ca";
/// The admin user (`O=system:masters`, i.e. cluster-admin) of the lab's kubeconfigs.
pub const ADMIN_USER: &str = "meshshift-admin";
const VALIDITY_DAYS: i64 = 3650;

/// Paths of every PEM file under `<dir>/pki/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    /// The CA certificate (trust anchor for clients and the apiserver's `--client-ca-file`).
    pub ca_cert: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// The apiserver's serving certificate.
    pub apiserver_cert: PathBuf,
    /// Its key.
    pub apiserver_key: PathBuf,
    /// The admin client certificate (`CN=meshshift-admin, O=system:masters`).
    pub admin_cert: PathBuf,
    /// Its key.
    pub admin_key: PathBuf,
    /// The controller-manager's client certificate (`CN=system:kube-controller-manager`).
    pub controller_manager_cert: PathBuf,
    /// Its key.
    pub controller_manager_key: PathBuf,
    /// The scheduler's client certificate (`CN=system:kube-scheduler`).
    pub scheduler_cert: PathBuf,
    /// Its key.
    pub scheduler_key: PathBuf,
    /// The service-account token signing key (private).
    pub service_account_key: PathBuf,
    /// The service-account token verification key (public, PKIX PEM).
    pub service_account_pub: PathBuf,
}

impl PkiFiles {
    /// The paths under `pki_dir` (nothing is read or written).
    pub fn in_dir(pki_dir: &Path) -> PkiFiles {
        let p = |name: &str| pki_dir.join(name);
        PkiFiles {
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            apiserver_cert: p("apiserver.crt"),
            apiserver_key: p("apiserver.key"),
            admin_cert: p("admin.crt"),
            admin_key: p("admin.key"),
            controller_manager_cert: p("controller-manager.crt"),
            controller_manager_key: p("controller-manager.key"),
            scheduler_cert: p("scheduler.crt"),
            scheduler_key: p("scheduler.key"),
            service_account_key: p("sa.key"),
            service_account_pub: p("sa.pub"),
        }
    }

    fn all(&self) -> [&Path; 12] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.apiserver_cert,
            &self.apiserver_key,
            &self.admin_cert,
            &self.admin_key,
            &self.controller_manager_cert,
            &self.controller_manager_key,
            &self.scheduler_cert,
            &self.scheduler_key,
            &self.service_account_key,
            &self.service_account_pub,
        ]
    }
}

/// Makes sure a complete PKI exists in `pki_dir`: an existing complete set is reused (a lab restarted on
/// the same directory keeps its etcd data, whose service-account tokens need the same keys); anything
/// partial is regenerated from scratch.
pub fn ensure(pki_dir: &Path) -> Result<PkiFiles, LabError> {
    let files = PkiFiles::in_dir(pki_dir);
    if files.all().iter().all(|p| p.is_file()) {
        return Ok(files);
    }
    std::fs::create_dir_all(pki_dir).map_err(|e| LabError::io("create directory", pki_dir, e))?;
    generate(&files)?;
    Ok(files)
}

fn generate(files: &PkiFiles) -> Result<(), LabError> {
    let ca = LabCa::generate()?;
    write_file(&files.ca_cert, ca.cert_pem.as_bytes(), 0o644)?;
    write_file(&files.ca_key, ca.key_pem().as_bytes(), 0o600)?;

    let mut serving_names: Vec<String> =
        vec!["127.0.0.1".into(), "localhost".into(), ADVERTISE_ADDRESS.into(), KUBERNETES_SERVICE_IP.into()];
    serving_names.extend(
        ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
            .map(String::from),
    );
    let serving = ca.issue(&LeafSpec::server("kube-apiserver", &serving_names))?;
    serving.write(&files.apiserver_cert, &files.apiserver_key)?;

    ca.issue(&LeafSpec::client(ADMIN_USER, &["system:masters"]))?.write(&files.admin_cert, &files.admin_key)?;
    ca.issue(&LeafSpec::client("system:kube-controller-manager", &[]))?
        .write(&files.controller_manager_cert, &files.controller_manager_key)?;
    ca.issue(&LeafSpec::client("system:kube-scheduler", &[]))?.write(&files.scheduler_cert, &files.scheduler_key)?;

    let sa = KeyPair::generate()?;
    write_file(&files.service_account_key, sa.serialize_pem().as_bytes(), 0o600)?;
    write_file(&files.service_account_pub, sa.public_key_pem().as_bytes(), 0o644)?;
    Ok(())
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject CN (for client certificates: the Kubernetes user name).
    pub common_name: String,
    /// Subject O entries (for client certificates: the Kubernetes groups).
    pub organizations: Vec<String>,
    /// SANs: entries that parse as IP addresses become IP SANs, the others DNS SANs.
    pub subject_alt_names: Vec<String>,
    /// Server (serving) or client authentication.
    pub usage: ExtendedKeyUsagePurpose,
}

impl LeafSpec {
    /// A serving certificate for `names` (IPs and DNS names).
    pub fn server(common_name: &str, names: &[String]) -> LeafSpec {
        LeafSpec {
            common_name: common_name.into(),
            organizations: Vec::new(),
            subject_alt_names: names.to_vec(),
            usage: ExtendedKeyUsagePurpose::ServerAuth,
        }
    }

    /// A client certificate for Kubernetes user `user` in `groups`.
    pub fn client(user: &str, groups: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            subject_alt_names: Vec::new(),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// An issued certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes the certificate (0644) and key (0600).
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), LabError> {
        write_file(cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(key, self.key_pem.as_bytes(), 0o600)
    }
}

/// The lab's CA. Kept loadable (not only generated) so that later lab parts (an emulated istiod, webhook
/// servers) can issue serving certificates that the apiserver and clients trust.
pub struct LabCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl LabCa {
    fn params() -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params);
        params
    }

    /// A fresh CA.
    pub fn generate() -> Result<LabCa, LabError> {
        let params = Self::params();
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(LabCa { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA of an existing lab (`pki/ca.crt` and `pki/ca.key`).
    pub fn load(files: &PkiFiles) -> Result<LabCa, LabError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| LabError::io("read", p, e));
        let cert_pem = read(&files.ca_cert)?;
        let key = KeyPair::from_pem(&read(&files.ca_key)?)?;
        Ok(LabCa { cert_pem, issuer: Issuer::new(Self::params(), key) })
    }

    /// The CA key, PEM.
    fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf certificate with a new ECDSA P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, LabError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = spec
            .subject_alt_names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![spec.usage.clone()];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clock differences; ten years so a long-lived lab never expires.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

/// Writes `bytes` to `path` with `mode`, replacing it atomically (write to a temporary name, then rename)
/// so that a reader never sees half a key.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| LabError::io("create", &tmp, e))?;
    file.write_all(bytes).map_err(|e| LabError::io("write", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| LabError::io("rename into", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_creates_a_complete_pki_once_and_then_reuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = ensure(dir.path()).expect("generate");
        let ca = std::fs::read_to_string(&files.ca_cert).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(std::fs::read_to_string(&files.service_account_pub).expect("pub").contains("PUBLIC KEY"));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&files.admin_key).expect("key").permissions());
        assert_eq!(mode & 0o777, 0o600);
        ensure(dir.path()).expect("reuse");
        assert_eq!(std::fs::read_to_string(&files.ca_cert).expect("ca"), ca, "a complete PKI must be kept");
        std::fs::remove_file(&files.scheduler_key).expect("remove");
        ensure(dir.path()).expect("regenerate");
        assert_ne!(std::fs::read_to_string(&files.ca_cert).expect("ca"), ca, "a partial PKI must be replaced");
    }

    #[test]
    fn a_loaded_ca_issues_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = ensure(dir.path()).expect("generate");
        let ca = LabCa::load(&files).expect("load");
        let names = vec!["10.244.9.9".to_string(), "istiod.istio-system.svc".to_string()];
        let leaf = ca.issue(&LeafSpec::server("istiod", &names)).expect("issue");
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
    }
}
