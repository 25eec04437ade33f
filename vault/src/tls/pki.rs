//! A small certificate authority for development and tests (rcgen, ECDSA P-256):
//! what `panvault quickstart` writes to `DIR/pki/`, and what the end-to-end tests
//! use to make throwaway PKIs (another CA, expired and revoked certificates).
//!
//! Not for production: the CA key sits unencrypted beside the certificates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// A PKI operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(String);

impl PkiError {
    fn new(what: &str, e: impl std::fmt::Display) -> Self {
        PkiError(format!("{what}: {e}"))
    }
}

fn io_err(path: &Path, e: &std::io::Error) -> PkiError {
    PkiError(format!("{}: {e}", path.display()))
}

/// A certificate authority that can issue leaf certificates and CRLs.
#[derive(Debug)]
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject common name (none: an empty subject).
    pub common_name: Option<String>,
    /// Further common names in the subject (tests of ambiguous identities).
    pub extra_common_names: Vec<String>,
    /// DNS names.
    pub dns_sans: Vec<String>,
    /// IP addresses.
    pub ip_sans: Vec<IpAddr>,
    /// URIs (e.g. SPIFFE ids).
    pub uri_sans: Vec<String>,
    /// Extended key usage serverAuth.
    pub server_auth: bool,
    /// Extended key usage clientAuth.
    pub client_auth: bool,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A client certificate for `common_name`, valid from an hour ago for a year.
    pub fn client(common_name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: Some(common_name.to_owned()),
            extra_common_names: Vec::new(),
            dns_sans: Vec::new(),
            ip_sans: Vec::new(),
            uri_sans: Vec::new(),
            server_auth: false,
            client_auth: true,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
        }
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`, valid for a year.
    pub fn localhost_server() -> Self {
        LeafSpec {
            dns_sans: vec!["localhost".into()],
            ip_sans: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            server_auth: true,
            client_auth: false,
            ..LeafSpec::client("localhost")
        }
    }
}

/// An issued certificate and its key.
#[derive(Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: Zeroizing<String>,
    /// Its serial number (for a CRL).
    pub serial: Vec<u8>,
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    crate::core::rng::fill(&mut b).map_err(|e| PkiError::new("random serial", e))?;
    b[0] = (b[0] & 0x7f) | 0x01; // positive, 16 significant bytes
    Ok(SerialNumber::from_slice(&b))
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| PkiError::new("key generation", e))
}

impl CertAuthority {
    /// A new self-signed CA named `common_name`, valid for `years`.
    pub fn generate(common_name: &str, years: i64) -> Result<Self, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "panvault development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365 * years);
        params.serial_number = Some(random_serial()?);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let key = new_key()?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::new("CA certificate", e))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        Ok(CertAuthority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A CA from its certificate and key (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::new("CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| PkiError::new("CA certificate", e))?;
        Ok(CertAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: Zeroizing::new(key_pem.to_owned()),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key (PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a leaf certificate with a fresh P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &spec.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        for cn in &spec.extra_common_names {
            // rcgen keeps one value per attribute type: the common name's OID
            // (2.5.4.3) as a "custom" type is a second common name.
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), cn.as_str());
        }
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for d in &spec.dns_sans {
            sans.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e| PkiError::new("DNS name", e))?,
            ));
        }
        sans.extend(spec.ip_sans.iter().copied().map(SanType::IpAddress));
        for u in &spec.uri_sans {
            sans.push(SanType::URI(
                u.clone().try_into().map_err(|e| PkiError::new("URI", e))?,
            ));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::new("certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            serial: serial.to_bytes(),
        })
    }

    /// A CRL (PEM) revoking the given serial numbers, valid for 30 days.
    pub fn crl(&self, revoked_serials: &[&[u8]]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.crl_valid(
            revoked_serials,
            now - Duration::minutes(5),
            now + Duration::days(30),
        )
    }

    /// A CRL (PEM) revoking the given serial numbers, issued at `this_update`
    /// and due to be replaced at `next_update`.
    pub fn crl_valid(
        &self,
        revoked_serials: &[&[u8]],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: random_serial()?,
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: this_update.min(now - Duration::minutes(1)),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .and_then(|c| c.pem())
            .map_err(|e| PkiError::new("CRL", e))
    }
}

/// Writes `contents` to `path` readable by its owner only
/// ([`crate::data_dir::write_owner_only`]).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    crate::data_dir::write_owner_only(path, contents).map_err(|e| io_err(path, &e))
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|e| io_err(path, &e))
}

/// Whether the first certificate of a PEM file is unusable: unparseable, or expiring
/// within a day.
fn needs_renewal(pem: &str) -> bool {
    let Ok(certs) = super::load_certs_from_pem(pem.as_bytes()) else {
        return true;
    };
    let Some(der) = certs.first() else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return true;
    };
    let horizon = OffsetDateTime::now_utc() + Duration::days(1);
    cert.validity().not_after.timestamp() < horizon.unix_timestamp()
}

/// What [`ensure_dev_pki`] did.
#[derive(Debug, Default)]
pub struct DevPki {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// Files written this time (the rest were reused).
    pub created: Vec<PathBuf>,
}

impl DevPki {
    /// `DIR/<name>.pem` and `DIR/<name>.key` of a client or the server.
    pub fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        crate::DataDir::pki_pair(dir, name)
    }
}

/// Makes (or reuses) a development PKI in `dir`: `ca.pem`/`ca.key` (10 years),
/// `server.pem`/`server.key` for localhost, 127.0.0.1 and ::1, and one
/// `<name>.pem`/`<name>.key` client pair per entry of `clients` (common name =
/// name), leaves valid one year. Existing files are kept; a leaf that expires
/// within a day is re-issued. Keys are written with mode 0600.
pub fn ensure_dev_pki(dir: &Path, clients: &[&str]) -> Result<DevPki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, &e))?;
    let mut report = DevPki::default();
    let (ca_cert, ca_key) = DevPki::pair(dir, crate::DataDir::PKI_CA);
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let cert = std::fs::read_to_string(&ca_cert).map_err(|e| io_err(&ca_cert, &e))?;
            let key =
                Zeroizing::new(std::fs::read_to_string(&ca_key).map_err(|e| io_err(&ca_key, &e))?);
            CertAuthority::load(&cert, &key)?
        }
        (false, false) => {
            let ca = CertAuthority::generate("panvault development CA", 10)?;
            write_private(&ca_key, ca.key_pem().as_bytes())?;
            write_public(&ca_cert, ca.cert_pem().as_bytes())?;
            report.created.extend([ca_cert.clone(), ca_key.clone()]);
            ca
        }
        _ => {
            return Err(PkiError(format!(
                "{}: found only one of ca.pem and ca.key; remove the other or restore it",
                dir.display()
            )));
        }
    };
    let mut leaves: Vec<(String, LeafSpec)> = vec![(
        crate::DataDir::PKI_SERVER.into(),
        LeafSpec::localhost_server(),
    )];
    leaves.extend(
        clients
            .iter()
            .map(|c| ((*c).to_owned(), LeafSpec::client(c))),
    );
    for (name, spec) in leaves {
        let (cert, key) = DevPki::pair(dir, &name);
        if cert.exists() && key.exists() {
            let pem = std::fs::read_to_string(&cert).map_err(|e| io_err(&cert, &e))?;
            if !needs_renewal(&pem) {
                continue;
            }
        }
        let issued = ca.issue(&spec)?;
        write_private(&key, issued.key_pem.as_bytes())?;
        write_public(&cert, issued.cert_pem.as_bytes())?;
        report.created.extend([cert, key]);
    }
    report.ca_cert = ca_cert;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let first = ensure_dev_pki(&pki, &["storefront", "payments"]).unwrap();
        assert_eq!(first.created.len(), 8);
        let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(pki.join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(pki.join("payments.pem")).unwrap();
        let second = ensure_dev_pki(&pki, &["storefront", "payments"]).unwrap();
        assert_eq!(second.created.len(), 2, "{:?}", second.created);
        assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);
        // the re-issued leaf chains to the same CA
        let ca = CertAuthority::load(
            &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
        )
        .unwrap();
        assert!(ca.crl(&[&[1, 2, 3]]).unwrap().contains("BEGIN X509 CRL"));
    }

    #[test]
    fn expired_leaf_is_renewed() {
        let ca = CertAuthority::generate("t", 1).unwrap();
        let now = OffsetDateTime::now_utc();
        let old = ca
            .issue(&LeafSpec {
                not_before: now - Duration::days(10),
                not_after: now - Duration::days(1),
                ..LeafSpec::client("x")
            })
            .unwrap();
        assert!(needs_renewal(&old.cert_pem));
        assert!(!needs_renewal(
            &ca.issue(&LeafSpec::client("x")).unwrap().cert_pem
        ));
    }
}
