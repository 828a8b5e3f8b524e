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
use pkcs8::der::Encode;
use pkcs8::der::asn1::{AnyRef, OctetStringRef};
use pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfoRef};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

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
    /// A certificate that cannot be parsed, or a leaf whose issuer name is not its CA's subject.
    #[error("CA certificate: {0}")]
    Certificate(String),
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
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(secret, format!("unreadable certificate PEM: {e}")))
}

/// The CA key, in any of the PEM forms `cacerts` holds in practice: PKCS#8 (`PRIVATE KEY`), PKCS#1
/// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`). rcgen with ring reads PKCS#8 only, so the other two
/// are wrapped into a PKCS#8 `PrivateKeyInfo` first.
fn key_from_pem(pem: &str, secret: &'static str) -> Result<KeyPair, CaError> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => bad(secret, format!("{CA_KEY} holds no private key")),
        e => bad(secret, format!("unreadable key PEM: {e}")),
    })?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(k) => wrap_pkcs8(pkcs1::ALGORITHM_ID, k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => sec1::EcPrivateKey::try_from(k.secret_sec1_der())
            .map_err(|e| e.to_string())
            .and_then(|ec| {
                ec.parameters.and_then(sec1::EcParameters::named_curve).ok_or_else(|| "no named curve".into())
            })
            .and_then(|curve| {
                let algorithm =
                    AlgorithmIdentifierRef { oid: sec1::ALGORITHM_OID, parameters: Some(AnyRef::from(&curve)) };
                wrap_pkcs8(algorithm, k.secret_sec1_der())
            }),
        _ => Err("unsupported private key format".to_owned()),
    }
    .map_err(|e| bad(secret, format!("unusable CA key: {e}")))?;
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8)).map_err(|e| bad(secret, format!("unusable CA key: {e}")))
}

/// A PKCS#8 `PrivateKeyInfo` (DER) holding `private_key` of type `algorithm`.
fn wrap_pkcs8(algorithm: AlgorithmIdentifierRef<'_>, private_key: &[u8]) -> Result<Vec<u8>, String> {
    let private_key = OctetStringRef::new(private_key).map_err(|e| e.to_string())?;
    PrivateKeyInfoRef::new(algorithm, private_key).to_der().map_err(|e| e.to_string())
}

/// Checks that `leaf` names `ca` as its issuer exactly: clients chain a leaf to its CA by comparing the
/// leaf's issuer Name with the CA's subject byte for byte, and rcgen re-encodes the subject it read.
fn check_issued_by(leaf: &[u8], ca: &[u8]) -> Result<(), CaError> {
    let parse = |der, what| {
        X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| CaError::Certificate(format!("{what}: {e}")))
    };
    let (leaf, ca) = (parse(leaf, "leaf")?, parse(ca, "CA")?);
    if leaf.issuer().as_raw() == ca.subject().as_raw() {
        Ok(())
    } else {
        Err(CaError::Certificate(format!(
            "the leaf's issuer ({}) is not encoded as the CA's subject ({})",
            leaf.issuer(),
            ca.subject()
        )))
    }
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
        // Subject, subject key identifier and key usages as the certificate states them.
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)?;
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
            issuer,
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
        check_issued_by(cert.der(), &self.ca_cert_der)?;
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
    /// A CA whose subject repeats an attribute type (`OU=Mesh, OU=Lab`), made with openssl.
    const DUP_OU_CERT: &str = include_str!("testdata/dup-ou-cert.pem");
    const DUP_OU_KEY: &str = include_str!("testdata/dup-ou-key.pem");

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
        let garbage = "-----BEGIN CERTIFICATE-----\nMAUB\n-----END CERTIFICATE-----\n";
        assert!(RootCa::from_pem(garbage, INTERMEDIATE_KEY, None, None, CaSource::PluggedIn).is_err());
    }

    fn ca_with(dn: DistinguishedName) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = ca_key_usages();
        validity(&mut params, 1);
        let key = KeyPair::generate().expect("key");
        (params.self_signed(&key).expect("ca"), key)
    }

    #[test]
    fn a_subject_of_mixed_string_types_is_named_exactly_in_issued_leaves() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cluster.local");
        dn.push(DnType::CommonName, rcgen::DnValue::PrintableString("Root CA".try_into().expect("printable")));
        dn.push(DnType::CountryName, "US");
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            rcgen::DnValue::Ia5String("ca@example.com".try_into().expect("ia5")),
        );
        let (ca_cert, key) = ca_with(dn);
        let ca = RootCa::from_pem(&ca_cert.pem(), &key.serialize_pem(), None, None, CaSource::PluggedIn).expect("ca");
        let cert = ca.issue_serving(&names()).expect("leaf");
        check_issued_by(&cert.chain[0], ca_cert.der()).expect("issuer matches");
        verify(&cert, &ca.root_cert_pem, "istiod.istio-system.svc");

        // The leaf's authority key identifier is the CA's subject key identifier.
        let (_, ca_x509) = X509Certificate::from_der(ca_cert.der()).expect("ca");
        let (_, leaf_x509) = X509Certificate::from_der(&cert.chain[0]).expect("leaf");
        let ski = ca_x509.iter_extensions().find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
        let aki = leaf_x509.iter_extensions().find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        });
        assert!(ski.is_some());
        assert_eq!(aki, ski);
    }

    #[test]
    fn a_wrong_issuer_is_detected() {
        let mut a = DistinguishedName::new();
        a.push(DnType::CommonName, "a");
        let (ca, _) = ca_with(a);
        let mut b = DistinguishedName::new();
        b.push(DnType::CommonName, "b");
        let (other, _) = ca_with(b);
        assert!(matches!(check_issued_by(other.der(), ca.der()), Err(CaError::Certificate(_))));
        assert!(check_issued_by(ca.der(), ca.der()).is_ok(), "self-signed");
        assert!(check_issued_by(&[], ca.der()).is_err());
        assert!(check_issued_by(&[0x30, 0x05, 0x01], ca.der()).is_err());
        assert!(check_issued_by(ca.der(), &[0x04, 0x00]).is_err());
    }

    #[test]
    fn a_ca_whose_subject_cannot_be_named_exactly_issues_nothing() {
        // rcgen keeps one value per attribute type, so a leaf would name `O=Example, OU=Lab, CN=Two OUs`:
        // a certificate no client chains to this CA. Refused here instead of served.
        let ca = RootCa::from_pem(DUP_OU_CERT, DUP_OU_KEY, None, None, CaSource::PluggedIn).expect("ca loads");
        let err = ca.issue_serving(&names()).err().expect("refused");
        assert!(matches!(err, CaError::Certificate(_)), "{err}");
        assert!(!err.is_transient());
    }
}
