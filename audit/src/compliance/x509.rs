//! Certificate facts from PEM files or DER bytes (x509-parser), and the PEM label
//! of private key files (their contents are never kept).
use std::path::Path;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;
use zeroize::Zeroizing;

use super::facts::{CertFacts, CertRole, CertSource, KeyAlgorithm, KeyFileFacts};

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Name and hash of a signature algorithm OID.
fn signature_name(oid: &str) -> (&'static str, &'static str) {
    match oid {
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", "MD5"),
        "1.2.840.113549.1.1.5" => ("sha1WithRSAEncryption", "SHA-1"),
        "1.2.840.113549.1.1.14" => ("sha224WithRSAEncryption", "SHA-224"),
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", "SHA-256"),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", "SHA-384"),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", "SHA-512"),
        "1.2.840.113549.1.1.10" => ("RSASSA-PSS", "?"),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", "SHA-1"),
        "1.2.840.10045.4.3.1" => ("ecdsa-with-SHA224", "SHA-224"),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", "SHA-256"),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", "SHA-384"),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", "SHA-512"),
        "1.2.840.10040.4.3" => ("dsa-with-SHA1", "SHA-1"),
        "2.16.840.1.101.3.4.3.2" => ("dsa-with-SHA256", "SHA-256"),
        "1.3.101.112" => ("Ed25519", "Ed25519"),
        "1.3.101.113" => ("Ed448", "Ed448"),
        _ => ("unknown", "unknown"),
    }
}

fn hash_name(oid: &str) -> &'static str {
    match oid {
        "1.3.14.3.2.26" => "SHA-1",
        "2.16.840.1.101.3.4.2.4" => "SHA-224",
        "2.16.840.1.101.3.4.2.1" => "SHA-256",
        "2.16.840.1.101.3.4.2.2" => "SHA-384",
        "2.16.840.1.101.3.4.2.3" => "SHA-512",
        _ => "unknown",
    }
}

fn curve_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.3.1.7" => "P-256".to_owned(),
        "1.3.132.0.34" => "P-384".to_owned(),
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        "1.2.840.10045.3.1.1" => "P-192".to_owned(),
        other => other.to_owned(),
    }
}

fn time_of(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Facts about one DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.public_key();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let key = match alg_oid.as_str() {
        "1.3.101.112" => KeyAlgorithm::Ed25519,
        "1.3.101.113" => KeyAlgorithm::Ed448,
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| curve_name(&o.to_id_string()));
            KeyAlgorithm::Ec {
                curve: curve.unwrap_or_else(|| "unnamed curve".to_owned()),
            }
        }
        _ => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyAlgorithm::Rsa {
                bits: u32::try_from(rsa.key_size()).unwrap_or(0),
            },
            _ => KeyAlgorithm::Other { oid: alg_oid },
        },
    };
    let sig_oid = cert.signature_algorithm.algorithm.to_id_string();
    let (mut signature, mut signature_hash) = (
        signature_name(&sig_oid).0.to_owned(),
        signature_name(&sig_oid).1.to_owned(),
    );
    if signature == "unknown" {
        signature = sig_oid.clone();
    }
    if sig_oid == "1.2.840.113549.1.1.10" {
        let hash = match x509_parser::signature_algorithm::SignatureAlgorithm::try_from(
            &cert.signature_algorithm,
        ) {
            Ok(x509_parser::signature_algorithm::SignatureAlgorithm::RSASSA_PSS(params)) => {
                hash_name(&params.hash_algorithm_oid().to_id_string())
            }
            _ => "unknown",
        };
        signature_hash = hash.to_owned();
        signature = format!("RSASSA-PSS with {hash}");
    }
    let mut sans = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::IPAddress(ip) => sans.push(format!("IP:{}", ip_text(ip))),
                    _ => {}
                }
            }
        }
    }
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex(cert.raw_serial()),
        not_before: time_of(cert.validity().not_before),
        not_after: time_of(cert.validity().not_after),
        key,
        signature,
        signature_hash,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        is_ca: cert.is_ca(),
        sans,
        sha256: crate::log::sha256_hex(der),
    })
}

fn ip_text(b: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        std::net::Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        std::net::Ipv6Addr::from(v6).to_string()
    } else {
        hex(b)
    }
}

/// The DER certificates of a PEM text.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| format!("not PEM: {e}"))?;
        if item.label == "CERTIFICATE" || item.label == "TRUSTED CERTIFICATE" {
            out.push(item.contents);
        }
    }
    Ok(out)
}

/// Reads the certificates of `path` (PEM) as `role`.
pub fn read_cert_file(path: &Path, role: CertRole) -> CertSource {
    let source = path.display().to_string();
    let result = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| pem_certificates(&b))
        .and_then(|ders| {
            if ders.is_empty() {
                Err("no PEM certificate found".to_owned())
            } else {
                Ok(ders)
            }
        })
        .and_then(|ders| {
            ders.iter()
                .map(|d| cert_facts(d))
                .collect::<Result<Vec<_>, _>>()
        });
    match result {
        Ok(certs) => {
            // A server chain file: the first is the leaf, the rest intermediates.
            CertSource {
                role,
                source,
                certs,
                error: None,
            }
        }
        Err(e) => CertSource {
            role,
            source,
            certs: Vec::new(),
            error: Some(e),
        },
    }
}

/// The PEM label of the private key in `path` (`PRIVATE KEY`, `EC PRIVATE KEY`,
/// `RSA PRIVATE KEY` …). The file's bytes are wiped after reading.
pub fn read_key_file(path: &Path, role: &str) -> KeyFileFacts {
    let mut facts = KeyFileFacts {
        role: role.to_owned(),
        path: path.display().to_string(),
        label: None,
        error: None,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let text = String::from_utf8_lossy(&bytes);
            facts.label = text
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("-----BEGIN ")
                        .and_then(|r| r.strip_suffix("-----"))
                })
                .find(|label| label.ends_with("PRIVATE KEY"))
                .map(str::to_owned);
            // `text` may borrow `bytes`; a lossy copy (if any) holds key text: wipe it.
            if let std::borrow::Cow::Owned(s) = text {
                drop(Zeroizing::new(s));
            }
        }
        Err(e) => facts.error = Some(e.to_string()),
    }
    facts
}
