//! Who is on the other end: read once per connection from the verified leaf
//! certificate.

use std::fmt;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;

/// The identity a verified client certificate carries: its subject common name,
/// URI and DNS subject alternative names, and the SHA-256 fingerprint of the
/// certificate (lowercase hex). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    inner: Arc<Inner>,
}

#[derive(PartialEq, Eq)]
struct Inner {
    common_name: Option<String>,
    uri_sans: Vec<String>,
    dns_sans: Vec<String>,
    fingerprint: String,
}

/// A name from a certificate, if it is printable text of sane length holding no
/// card number (it ends up in audit events and logs).
fn clean(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.len() <= 1024
        && !s.chars().any(char::is_control)
        && !crate::service::request::contains_card_number(s))
    .then(|| s.to_owned())
}

impl ClientIdentity {
    /// Reads the identity of a DER certificate (already verified by the TLS layer).
    /// `None` if it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .and_then(clean);
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uri_sans.extend(clean(u)),
                    GeneralName::DNSName(d) => dns_sans.extend(clean(d)),
                    _ => {}
                }
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Some(ClientIdentity::new(
            common_name,
            uri_sans,
            dns_sans,
            hex(digest.as_ref()),
        ))
    }

    /// An identity from its parts (tests, other transports).
    pub fn new(
        common_name: Option<String>,
        uri_sans: Vec<String>,
        dns_sans: Vec<String>,
        fingerprint: String,
    ) -> Self {
        ClientIdentity {
            inner: Arc::new(Inner {
                common_name,
                uri_sans,
                dns_sans,
                fingerprint,
            }),
        }
    }

    /// The subject common name.
    pub fn common_name(&self) -> Option<&str> {
        self.inner.common_name.as_deref()
    }

    /// URI subject alternative names (e.g. SPIFFE ids).
    pub fn uri_sans(&self) -> &[String] {
        &self.inner.uri_sans
    }

    /// DNS subject alternative names.
    pub fn dns_sans(&self) -> &[String] {
        &self.inner.dns_sans
    }

    /// SHA-256 of the certificate, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// Whether the certificate names nobody a client could be matched by (no
    /// common name and no URI SAN).
    pub fn is_anonymous(&self) -> bool {
        self.inner.common_name.is_none() && self.inner.uri_sans.is_empty()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("common_name", &self.inner.common_name)
            .field("uri_sans", &self.inner.uri_sans)
            .field("fingerprint", &self.inner.fingerprint)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{CertAuthority, LeafSpec};

    #[test]
    fn reads_names_and_fingerprint() {
        let ca = CertAuthority::generate("test CA", 1).unwrap();
        let mut spec = LeafSpec::client("storefront");
        spec.uri_sans.push("spiffe://demo/storefront".into());
        let leaf = ca.issue(&spec).unwrap();
        let der = crate::tls::load_certs_from_pem(leaf.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        let id = ClientIdentity::from_der(&der).unwrap();
        assert_eq!(id.common_name(), Some("storefront"));
        assert_eq!(id.uri_sans(), ["spiffe://demo/storefront".to_owned()]);
        assert_eq!(id.fingerprint().len(), 64);
        assert!(!id.is_anonymous());
        let anon = ca
            .issue(&LeafSpec {
                common_name: None,
                dns_sans: vec!["x.example".into()],
                ..LeafSpec::client("x")
            })
            .unwrap();
        let der = crate::tls::load_certs_from_pem(anon.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        let id = ClientIdentity::from_der(&der).unwrap();
        assert!(id.is_anonymous());
        assert_eq!(id.dns_sans(), ["x.example".to_owned()]);
        assert!(ClientIdentity::from_der(b"junk").is_none());
    }
}
