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

/// Why a verified client certificate is refused all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafRefusal {
    /// No extended key usage extension, or one without clientAuth.
    NoClientAuth,
    /// Not parseable (or a duplicated extension).
    Unreadable,
    /// The names it would be identified by are not one plain-text name each.
    AmbiguousName(&'static str),
}

impl LeafRefusal {
    /// For the log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LeafRefusal::NoClientAuth => "it lacks the clientAuth extended key usage",
            LeafRefusal::Unreadable => "it cannot be parsed",
            LeafRefusal::AmbiguousName(why) => why,
        }
    }
}

/// panvault's rules for a client certificate beyond webpki's: the clientAuth
/// extended key usage must be present (webpki accepts a certificate listing no
/// usages), the subject holds at most one common name, and every common name and
/// URI SAN is plain text (one that is not would be silently skipped, and the
/// client identified by another name).
pub(crate) fn check_leaf(der: &[u8]) -> Result<(), LeafRefusal> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| LeafRefusal::Unreadable)?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(_) => return Err(LeafRefusal::NoClientAuth),
        Err(_) => return Err(LeafRefusal::Unreadable),
    }
    let mut cns = cert.subject().iter_common_name();
    if let Some(cn) = cns.next()
        && cn.as_str().ok().and_then(clean).is_none()
    {
        return Err(LeafRefusal::AmbiguousName(
            "its common name is not plain text",
        ));
    }
    if cns.next().is_some() {
        return Err(LeafRefusal::AmbiguousName(
            "its subject holds more than one common name",
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| LeafRefusal::Unreadable)?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name
                && clean(u).is_none()
            {
                return Err(LeafRefusal::AmbiguousName(
                    "a URI subject alternative name is not plain text",
                ));
            }
        }
    }
    Ok(())
}

/// SHA-256 of a certificate, lowercase hex.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

impl ClientIdentity {
    /// Reads the identity of a DER certificate (already verified by the TLS layer).
    /// `None` if it cannot be parsed. A subject with several common names has
    /// none that counts (the TLS layer refuses such certificates anyway).
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut cns = cert.subject().iter_common_name();
        let first = cns.next();
        let common_name = if cns.next().is_some() {
            None
        } else {
            first.and_then(|a| a.as_str().ok()).and_then(clean)
        };
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
        Some(ClientIdentity::new(
            common_name,
            uri_sans,
            dns_sans,
            fingerprint(der),
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

    fn der(issued: &crate::tls::pki::Issued) -> Vec<u8> {
        crate::tls::load_certs_from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .remove(0)
            .to_vec()
    }

    #[test]
    fn client_certificates_need_client_auth_and_one_plain_name() {
        let ca = CertAuthority::generate("test CA", 1).unwrap();
        let good = ca.issue(&LeafSpec::client("storefront")).unwrap();
        assert_eq!(check_leaf(&der(&good)), Ok(()));
        // no extended key usage at all: webpki accepts it, panvault does not
        let no_eku = ca
            .issue(&LeafSpec {
                client_auth: false,
                ..LeafSpec::client("storefront")
            })
            .unwrap();
        assert_eq!(check_leaf(&der(&no_eku)), Err(LeafRefusal::NoClientAuth));
        let server_only = ca
            .issue(&LeafSpec {
                client_auth: false,
                server_auth: true,
                ..LeafSpec::client("storefront")
            })
            .unwrap();
        assert_eq!(
            check_leaf(&der(&server_only)),
            Err(LeafRefusal::NoClientAuth)
        );
        // two common names: which one is the client?
        let two = ca
            .issue(&LeafSpec {
                extra_common_names: vec!["payments".into()],
                ..LeafSpec::client("storefront")
            })
            .unwrap();
        let two = der(&two);
        assert!(matches!(
            check_leaf(&two),
            Err(LeafRefusal::AmbiguousName(_))
        ));
        let (_, parsed) = x509_parser::parse_x509_certificate(&two).unwrap();
        assert_eq!(parsed.subject().iter_common_name().count(), 2);
        assert_eq!(ClientIdentity::from_der(&two).unwrap().common_name(), None);
        // a common name with a control character would have been skipped
        let odd = ca.issue(&LeafSpec::client("store\u{7}front")).unwrap();
        assert!(matches!(
            check_leaf(&der(&odd)),
            Err(LeafRefusal::AmbiguousName(_))
        ));
        assert_eq!(check_leaf(b"junk"), Err(LeafRefusal::Unreadable));
    }
}
