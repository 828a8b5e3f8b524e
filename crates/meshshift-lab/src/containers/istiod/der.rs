//! Just enough DER to sign with an existing CA certificate (from `cacerts` or `istio-ca-secret`).
//!
//! rcgen can only sign with a CA whose subject it knows (its `x509-parser` feature, which would parse it,
//! is not enabled here), and clients chain a leaf to its CA by comparing the leaf's issuer name with the
//! CA's subject byte for byte. So the CA's subject is read from its DER and rebuilt as an rcgen
//! `DistinguishedName` that encodes to the same bytes; [`check_issued_by`] verifies that on every leaf.
//! The subject key identifier is read too, so leaves carry the matching authority key identifier.
//! Private keys in PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) form, common in user-made
//! `cacerts`, are wrapped into the PKCS#8 form that rcgen (with ring) accepts.

use rcgen::{DistinguishedName, DnType, DnValue};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
/// `[0]` EXPLICIT: the certificate version.
const VERSION_TAG: u8 = 0xa0;
/// `[3]` EXPLICIT: the extensions.
const EXTENSIONS_TAG: u8 = 0xa3;
/// 2.5.29.14, subjectKeyIdentifier.
const SKI_OID: &[u8] = &[0x55, 0x1d, 0x0e];

/// Why a certificate or key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// Truncated or malformed DER.
    #[error("malformed DER: {0}")]
    Malformed(&'static str),
    /// Valid, but beyond what this reader rebuilds (multi-valued RDNs, T.61 strings, repeated types).
    #[error("unsupported certificate subject: {0}")]
    Unsupported(String),
}

/// One TLV: (tag, content, the whole encoding, what follows).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::Malformed("empty"))?;
    let (&first, mut rest) = rest.split_first().ok_or(DerError::Malformed("no length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(DerError::Malformed("bad length"));
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return Err(DerError::Malformed("truncated"));
    }
    let header = input.len() - rest.len();
    Ok((tag, &rest[..len], &input[..header + len], &rest[len..]))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8], &'a [u8]), DerError> {
    let (t, content, whole, rest) = tlv(input)?;
    if t != tag {
        return Err(DerError::Malformed(what));
    }
    Ok((content, whole, rest))
}

/// The names and key id of a certificate, as encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNames<'a> {
    /// The issuer Name, whole TLV.
    pub issuer: &'a [u8],
    /// The subject Name, whole TLV.
    pub subject: &'a [u8],
    /// The subject key identifier, if the certificate has one.
    pub subject_key_id: Option<Vec<u8>>,
}

/// Reads issuer, subject and subject key identifier of an X.509 certificate.
pub fn cert_names(der: &[u8]) -> Result<CertNames<'_>, DerError> {
    let (cert, _, _) = expect(der, SEQUENCE, "certificate is not a SEQUENCE")?;
    let (tbs, _, _) = expect(cert, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION_TAG) {
        rest = tlv(rest)?.3;
    }
    let rest = tlv(rest)?.3; // serialNumber
    let rest = expect(rest, SEQUENCE, "signature algorithm")?.2;
    let (_, issuer, rest) = expect(rest, SEQUENCE, "issuer")?;
    let rest = expect(rest, SEQUENCE, "validity")?.2;
    let (_, subject, mut rest) = expect(rest, SEQUENCE, "subject")?;
    let mut subject_key_id = None;
    while !rest.is_empty() {
        let (tag, content, _, next) = tlv(rest)?;
        rest = next;
        if tag == EXTENSIONS_TAG {
            subject_key_id = find_ski(content)?;
        }
    }
    Ok(CertNames { issuer, subject, subject_key_id })
}

fn find_ski(explicit: &[u8]) -> Result<Option<Vec<u8>>, DerError> {
    let (mut exts, _, _) = expect(explicit, SEQUENCE, "extensions")?;
    while !exts.is_empty() {
        let (ext, _, next) = expect(exts, SEQUENCE, "extension")?;
        exts = next;
        let (oid, _, mut rest) = expect(ext, OID, "extension id")?;
        if oid != SKI_OID {
            continue;
        }
        if rest.first() == Some(&0x01) {
            rest = tlv(rest)?.3; // critical
        }
        let (value, _, _) = expect(rest, OCTET_STRING, "extension value")?;
        let (id, _, _) = expect(value, OCTET_STRING, "key identifier")?;
        return Ok(Some(id.to_vec()));
    }
    Ok(None)
}

fn oid_arcs(content: &[u8]) -> Result<Vec<u64>, DerError> {
    let (&first, rest) = content.split_first().ok_or(DerError::Malformed("empty OID"))?;
    let (a, b) = if first < 80 { (u64::from(first / 40), u64::from(first % 40)) } else { (2, u64::from(first) - 80) };
    let mut arcs = vec![a, b];
    let mut acc: u64 = 0;
    for &byte in rest {
        acc = (acc << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    Ok(arcs)
}

/// Rebuilds a Name (whole TLV) as an rcgen `DistinguishedName` that encodes to the same bytes.
pub fn distinguished_name(name: &[u8]) -> Result<DistinguishedName, DerError> {
    let (mut rdns, _, _) = expect(name, SEQUENCE, "Name")?;
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    while !rdns.is_empty() {
        let (set, _, next) = expect(rdns, SET, "RelativeDistinguishedName")?;
        rdns = next;
        let (atv, _, rest) = expect(set, SEQUENCE, "AttributeTypeAndValue")?;
        if !rest.is_empty() {
            return Err(DerError::Unsupported("multi-valued RDN".into()));
        }
        let (oid, _, value) = expect(atv, OID, "attribute type")?;
        let (tag, content, _, _) = tlv(value)?;
        let text = std::str::from_utf8(content).map_err(|_| DerError::Malformed("attribute value is not text"))?;
        let value = match tag {
            UTF8_STRING => DnValue::Utf8String(text.to_owned()),
            PRINTABLE_STRING => {
                DnValue::PrintableString(text.try_into().map_err(|_| DerError::Malformed("invalid PrintableString"))?)
            }
            IA5_STRING => DnValue::Ia5String(text.try_into().map_err(|_| DerError::Malformed("invalid IA5String"))?),
            other => return Err(DerError::Unsupported(format!("attribute string type 0x{other:02x}"))),
        };
        let ty = DnType::from_oid(&oid_arcs(oid)?);
        if seen.contains(&ty) {
            return Err(DerError::Unsupported(format!("repeated attribute {ty:?}")));
        }
        seen.push(ty.clone());
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Checks that `leaf` names `ca` as its issuer exactly (clients compare the bytes).
pub fn check_issued_by(leaf: &[u8], ca: &[u8]) -> Result<(), DerError> {
    let (leaf, ca) = (cert_names(leaf)?, cert_names(ca)?);
    if leaf.issuer == ca.subject {
        Ok(())
    } else {
        Err(DerError::Unsupported("the rebuilt issuer name does not match the CA's subject".into()))
    }
}

fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// rsaEncryption, 1.2.840.113549.1.1.1, with its NULL parameters.
const RSA_ALGORITHM: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Vec<u8> {
    let mut body = encode(0x02, &[0]); // version 0
    body.extend(encode(SEQUENCE, algorithm));
    body.extend(encode(OCTET_STRING, private_key));
    encode(SEQUENCE, &body)
}

/// PKCS#1 `RSAPrivateKey` -> PKCS#8.
pub fn pkcs8_from_pkcs1(rsa: &[u8]) -> Vec<u8> {
    pkcs8(RSA_ALGORITHM, rsa)
}

/// SEC1 `ECPrivateKey` (whose `[0]` parameters name the curve) -> PKCS#8.
pub fn pkcs8_from_sec1(ec: &[u8]) -> Result<Vec<u8>, DerError> {
    let (mut fields, _, _) = expect(ec, SEQUENCE, "ECPrivateKey")?;
    let mut curve = None;
    while !fields.is_empty() {
        let (tag, content, _, next) = tlv(fields)?;
        fields = next;
        if tag == VERSION_TAG {
            let (_, oid, _) = expect(content, OID, "curve")?;
            curve = Some(oid.to_vec());
        }
    }
    let curve = curve.ok_or(DerError::Unsupported("EC key without named curve".into()))?;
    let mut algorithm = EC_PUBLIC_KEY.to_vec();
    algorithm.extend(curve);
    Ok(pkcs8(&algorithm, ec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn ca_with(dn: DistinguishedName) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        (params.self_signed(&key).expect("ca"), key)
    }

    #[test]
    fn rebuilt_subjects_encode_to_the_same_bytes() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cluster.local");
        dn.push(DnType::CommonName, DnValue::PrintableString("Root CA".try_into().expect("printable")));
        dn.push(DnType::CountryName, "US");
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("ca@example.com".try_into().expect("ia5")),
        );
        let (ca, key) = ca_with(dn);
        let names = cert_names(ca.der()).expect("names");
        assert_eq!(names.subject, names.issuer, "self-signed");
        assert!(names.subject_key_id.is_some());
        let rebuilt = distinguished_name(names.subject).expect("dn");

        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = rebuilt;
        let issuer = Issuer::new(issuer_params, key);
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["istiod.istio-system.svc".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        check_issued_by(leaf.der(), ca.der()).expect("issuer matches");
    }

    #[test]
    fn a_wrong_issuer_is_detected() {
        let mut a = DistinguishedName::new();
        a.push(DnType::CommonName, "a");
        let (ca, _) = ca_with(a);
        let mut b = DistinguishedName::new();
        b.push(DnType::CommonName, "b");
        let (other, _) = ca_with(b);
        assert!(check_issued_by(other.der(), ca.der()).is_err());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(cert_names(&[]).is_err());
        assert!(cert_names(&[0x30, 0x05, 0x01]).is_err());
        assert!(cert_names(&[0x04, 0x00]).is_err());
    }

    #[test]
    fn long_lengths_round_trip() {
        let content = vec![7u8; 300];
        let encoded = encode(OCTET_STRING, &content);
        assert_eq!(&encoded[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (tag, parsed, whole, rest) = tlv(&encoded).expect("tlv");
        assert_eq!((tag, parsed, whole.len(), rest.len()), (OCTET_STRING, content.as_slice(), encoded.len(), 0));
    }

    #[test]
    fn oids_decode() {
        // 1.2.840.113549.1.9.1
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).expect("oid"),
            vec![1, 2, 840, 113549, 1, 9, 1]
        );
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]).expect("oid"), vec![2, 5, 4, 3]);
    }
}
