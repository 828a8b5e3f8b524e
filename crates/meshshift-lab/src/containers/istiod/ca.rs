//! istiod's CA, as real istiod finds it, and the webhook serving certificate it signs.
//!
//! Order (istiod's): Secret `cacerts` in istiod's namespace (a plugged-in CA: `ca-cert.pem`, `ca-key.pem`,
//! `root-cert.pem`, `cert-chain.pem`), else the self-signed Secret `istio-ca-secret`, created by the first
//! istiod of the namespace. Every revision in a namespace thus shares one root, which is what lets
//! workloads of two revisions trust each other during an upgrade (the upgrade engine checks it). Two
//! revisions starting together race to create `istio-ca-secret`: the loser gets 409 and reads the winner's.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::der;

/// The plugged-in CA Secret.
pub const CACERTS_SECRET: &str = "cacerts";
/// The self-signed CA Secret istiod creates.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";
/// The Secret type real istiod gives `istio-ca-secret`.
const SELF_SIGNED_SECRET_TYPE: &str = "istio.io/ca-root";
/// Keys of both Secrets.
pub const CA_CERT: &str = "ca-cert.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The root (trust anchor) when the CA is an intermediate.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The CA's chain up to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Organisation of the self-signed root: the trust domain, as istiod writes it.
const TRUST_DOMAIN: &str = "cluster.local";
/// Self-signed root lifetime (istiod: 10 years).
const ROOT_DAYS: i64 = 3650;
/// Serving certificate lifetime: longer than any lab.
const LEAF_DAYS: i64 = 365;

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    /// Secret `cacerts`.
    PluggedIn,
    /// Secret `istio-ca-secret`.
    SelfSigned,
}

/// Why the CA cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A Secret lacks a key or holds unusable PEM.
    #[error("Secret {secret}: {detail}")]
    BadSecret {
        /// The Secret's name.
        secret: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The CA certificate's DER is beyond what istiod can sign with.
    #[error("CA certificate: {0}")]
    Der(#[from] der::DerError),
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The apiserver failed (transient: retry).
    #[error("{action} Secret {secret}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The Secret's name.
        secret: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl CaError {
    /// Whether retrying may help (the apiserver was unavailable), as opposed to bad CA material.
    pub fn is_transient(&self) -> bool {
        matches!(self, CaError::Api { .. })
    }
}

/// A CA that signs istiod's serving certificates.
pub struct RootCa {
    issuer: Issuer<'static, KeyPair>,
    ca_cert_der: Vec<u8>,
    /// The signing CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The trust anchor, PEM: `caBundle` of the webhooks and `istio-ca-root-cert`.
    pub root_cert_pem: String,
    /// Sent after each leaf: the signing CA and its intermediates.
    chain: Vec<CertificateDer<'static>>,
    /// Where it came from.
    pub source: CaSource,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa").field("source", &self.source).finish_non_exhaustive()
    }
}

/// A serving certificate with its chain and key.
pub struct ServingCert {
    /// Leaf first, then the CA chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

fn bad(secret: &'static str, detail: impl Into<String>) -> CaError {
    CaError::BadSecret { secret, detail: detail.into() }
}

fn certs_from_pem(pem: &str, secret: &'static str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(secret, format!("unreadable certificate PEM: {e}")))
}

fn key_from_pem(pem: &str, secret: &'static str) -> Result<KeyPair, CaError> {
    let key = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| bad(secret, format!("unreadable key PEM: {e}")))?
        .ok_or_else(|| bad(secret, format!("{CA_KEY} holds no private key")))?;
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => der::pkcs8_from_pkcs1(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => der::pkcs8_from_sec1(k.secret_sec1_der())?,
        _ => return Err(bad(secret, "unsupported private key format")),
    };
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8)).map_err(|e| bad(secret, format!("unusable CA key: {e}")))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature]
}

impl RootCa {
    /// A new self-signed root (`O=cluster.local`, 10 years), as istiod makes for `istio-ca-secret`.
    pub fn generate_self_signed() -> Result<RootCa, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, TRUST_DOMAIN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = ca_key_usages();
        validity(&mut params, ROOT_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        // Through the same path as a loaded CA, so both are exercised alike.
        RootCa::from_pem(&cert.pem(), &key.serialize_pem(), None, None, CaSource::SelfSigned)
    }

    /// A CA from PEM: its certificate and key, and optionally the root and the chain to it (`cacerts`).
    pub fn from_pem(
        ca_cert: &str,
        ca_key: &str,
        root_cert: Option<&str>,
        cert_chain: Option<&str>,
        source: CaSource,
    ) -> Result<RootCa, CaError> {
        let secret = match source {
            CaSource::PluggedIn => CACERTS_SECRET,
            CaSource::SelfSigned => SELF_SIGNED_SECRET,
        };
        let ca_der = certs_from_pem(ca_cert, secret)?
            .into_iter()
            .next()
            .ok_or_else(|| bad(secret, format!("{CA_CERT} holds no certificate")))?;
        let key = key_from_pem(ca_key, secret)?;
        let names = der::cert_names(&ca_der)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = der::distinguished_name(names.subject)?;
        params.key_identifier_method = match names.subject_key_id {
            Some(id) => KeyIdMethod::PreSpecified(id),
            None => KeyIdMethod::Sha256,
        };
        params.key_usages = ca_key_usages();
        let root_cert_pem = match root_cert.map(str::trim).filter(|r| !r.is_empty()) {
            Some(root) => {
                certs_from_pem(root, secret)?
                    .first()
                    .ok_or_else(|| bad(secret, format!("{ROOT_CERT} holds no certificate")))?;
                format!("{root}\n")
            }
            None => format!("{}\n", ca_cert.trim()),
        };
        let mut chain = vec![ca_der.clone()];
        for cert in certs_from_pem(cert_chain.unwrap_or_default(), secret)? {
            if !chain.contains(&cert) {
                chain.push(cert);
            }
        }
        Ok(RootCa {
            issuer: Issuer::new(params, key),
            ca_cert_der: ca_der.to_vec(),
            ca_cert_pem: format!("{}\n", ca_cert.trim()),
            root_cert_pem,
            chain,
            source,
        })
    }

    /// Reads a CA Secret's data (`cacerts` or `istio-ca-secret`).
    pub fn from_secret(secret: &Secret, source: CaSource) -> Result<RootCa, CaError> {
        let name = match source {
            CaSource::PluggedIn => CACERTS_SECRET,
            CaSource::SelfSigned => SELF_SIGNED_SECRET,
        };
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| -> Result<Option<String>, CaError> {
            data.get(key)
                .map(|b| String::from_utf8(b.0.clone()).map_err(|_| bad(name, format!("{key} is not text"))))
                .transpose()
        };
        let ca_cert = text(CA_CERT)?.ok_or_else(|| bad(name, format!("no {CA_CERT}")))?;
        let ca_key = text(CA_KEY)?.ok_or_else(|| bad(name, format!("no {CA_KEY}")))?;
        RootCa::from_pem(&ca_cert, &ca_key, text(ROOT_CERT)?.as_deref(), text(CERT_CHAIN)?.as_deref(), source)
    }

    /// `istio-ca-secret` for this CA, with real istiod's keys (empty chain and root: the CA is the root).
    pub fn self_signed_secret(&self, namespace: &str) -> Secret {
        let key_pem = self.issuer.key().serialize_pem();
        let data: BTreeMap<String, ByteString> = [
            (CA_CERT, self.ca_cert_pem.as_str()),
            (CA_KEY, key_pem.as_str()),
            (CERT_CHAIN, ""),
            ("key.pem", ""),
            (ROOT_CERT, ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SELF_SIGNED_SECRET.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            data: Some(data),
            type_: Some(SELF_SIGNED_SECRET_TYPE.to_owned()),
            ..Default::default()
        }
    }

    /// A serving certificate for `dns_names` (the first is also the common name), signed by this CA.
    pub fn issue_serving(&self, dns_names: &[String]) -> Result<ServingCert, CaError> {
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = dns_names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        der::check_issued_by(cert.der(), &self.ca_cert_der)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(ServingCert { chain, key: PrivateKeyDer::Pkcs8(key.serialize_der().into()) })
    }
}

/// The CA for istiod in `namespace`: `cacerts` if present, else `istio-ca-secret`, created when absent.
pub async fn load_or_create(client: &kube::Client, namespace: &str) -> Result<RootCa, CaError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api = |action, secret| move |source| CaError::Api { action, secret, source };
    if let Some(secret) = secrets.get_opt(CACERTS_SECRET).await.map_err(api("read", CACERTS_SECRET))? {
        tracing::info!(namespace, "using the plugged-in CA from Secret cacerts");
        return RootCa::from_secret(&secret, CaSource::PluggedIn);
    }
    for _ in 0..3 {
        if let Some(secret) = secrets.get_opt(SELF_SIGNED_SECRET).await.map_err(api("read", SELF_SIGNED_SECRET))? {
            return RootCa::from_secret(&secret, CaSource::SelfSigned);
        }
        let ca = RootCa::generate_self_signed()?;
        match secrets.create(&PostParams::default(), &ca.self_signed_secret(namespace)).await {
            Ok(_) => {
                tracing::info!(namespace, "created the self-signed root CA in Secret istio-ca-secret");
                return Ok(ca);
            }
            // Another istiod of this namespace won the race: use its root (next iteration reads it).
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(namespace, "istio-ca-secret was created concurrently: reading it");
            }
            Err(source) => return Err(CaError::Api { action: "create", secret: SELF_SIGNED_SECRET, source }),
        }
    }
    Err(bad(SELF_SIGNED_SECRET, "exists and vanished repeatedly"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = include_str!("testdata/root-cert.pem");
    const INTERMEDIATE: &str = include_str!("testdata/ca-cert.pem");
    const INTERMEDIATE_KEY: &str = include_str!("testdata/ca-key.pem");
    const CHAIN: &str = include_str!("testdata/cert-chain.pem");
    const EC_CERT: &str = include_str!("testdata/ec-cert.pem");
    const EC_KEY: &str = include_str!("testdata/ec-key.pem");

    /// Verifies `cert` with webpki (what rustls clients run), trusting `root`.
    fn verify(cert: &ServingCert, root: &str, name: &str) {
        let roots: Vec<_> = certs_from_pem(root, "test").expect("root");
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r).expect("add root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(store), provider)
                .build()
                .expect("verifier");
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &cert.chain[0],
            &cert.chain[1..],
            &server_name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    fn names() -> Vec<String> {
        vec!["istiod-1-9-7.istio-system.svc".to_owned(), "istiod.istio-system.svc".to_owned()]
    }

    #[test]
    fn a_self_signed_root_signs_verifiable_serving_certs_and_round_trips_its_secret() {
        let ca = RootCa::generate_self_signed().expect("ca");
        assert_eq!(ca.root_cert_pem, ca.ca_cert_pem);
        let cert = ca.issue_serving(&names()).expect("leaf");
        verify(&cert, &ca.root_cert_pem, "istiod-1-9-7.istio-system.svc");
        verify(&cert, &ca.root_cert_pem, "istiod.istio-system.svc");

        let secret = ca.self_signed_secret("istio-system");
        assert_eq!(secret.type_.as_deref(), Some("istio.io/ca-root"));
        let again = RootCa::from_secret(&secret, CaSource::SelfSigned).expect("reload");
        assert_eq!(again.root_cert_pem, ca.root_cert_pem);
        let cert = again.issue_serving(&names()).expect("leaf from the reloaded CA");
        verify(&cert, &ca.root_cert_pem, "istiod.istio-system.svc");
    }

    #[test]
    fn a_plugged_in_intermediate_with_a_pkcs1_key_signs_certs_chained_to_the_root() {
        let ca = RootCa::from_pem(INTERMEDIATE, INTERMEDIATE_KEY, Some(ROOT), Some(CHAIN), CaSource::PluggedIn)
            .expect("cacerts");
        assert_eq!(ca.root_cert_pem.trim(), ROOT.trim());
        let cert = ca.issue_serving(&names()).expect("leaf");
        assert_eq!(cert.chain.len(), 3, "leaf, intermediate, root");
        verify(&cert, ROOT, "istiod-1-9-7.istio-system.svc");
    }

    #[test]
    fn a_sec1_ec_key_is_accepted() {
        let ca = RootCa::from_pem(EC_CERT, EC_KEY, None, None, CaSource::PluggedIn).expect("ec ca");
        let cert = ca.issue_serving(&names()).expect("leaf");
        verify(&cert, EC_CERT, "istiod.istio-system.svc");
    }

    #[test]
    fn broken_secrets_are_reported() {
        let secret = Secret { data: Some(BTreeMap::new()), ..Default::default() };
        let err = RootCa::from_secret(&secret, CaSource::PluggedIn).expect_err("empty");
        assert!(err.to_string().contains("cacerts"), "{err}");
        assert!(!err.is_transient());
        let err = RootCa::from_pem(INTERMEDIATE, "not a key", None, None, CaSource::PluggedIn).expect_err("no key");
        assert!(err.to_string().contains("no private key"), "{err}");
        // A key that does not belong to the certificate signs leaves that do not verify: detected by
        // clients, not here; but a mismatched name never reaches them.
        assert!(RootCa::from_pem("", INTERMEDIATE_KEY, None, None, CaSource::PluggedIn).is_err());
    }
}
