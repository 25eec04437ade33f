//! The client certificate verifier: webpki's (chain to the client CA, validity,
//! CRLs with their expiry enforced), then panvault's own rules on the leaf, which
//! webpki does not apply: the clientAuth extended key usage must be *present*
//! (webpki only requires it when the certificate lists usages at all), and the
//! names a client is identified by must be unambiguous (one common name, readable
//! as text). A certificate failing them is refused in the handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::accept::Throttle;
use super::identity::{LeafRefusal, check_leaf};

/// Wraps webpki's verifier with the checks of [`check_leaf`].
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// One throttle per kind of refusal (an expired CRL, then each
    /// [`LeafRefusal`]), so that one kind flooding the log hides no other.
    log: [Throttle; 4],
}

impl ClientVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        ClientVerifier {
            inner,
            log: Default::default(),
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                if matches!(
                    e,
                    Error::InvalidCertificate(
                        CertificateError::ExpiredRevocationList
                            | CertificateError::ExpiredRevocationListContext { .. }
                    )
                ) && let Some(left_out) = self.log[0].allow()
                {
                    tracing::warn!(
                        left_out,
                        "client certificate refused: a CRL of tls.crls is past its next update; \
                         every client is refused until a current CRL is installed"
                    );
                }
            })?;
        if let Err(why) = check_leaf(end_entity) {
            let kind = match why {
                LeafRefusal::NoClientAuth => 1,
                LeafRefusal::Unreadable => 2,
                LeafRefusal::AmbiguousName(_) => 3,
            };
            if let Some(left_out) = self.log.get(kind).and_then(Throttle::allow) {
                let fingerprint = super::identity::fingerprint(end_entity);
                tracing::warn!(%fingerprint, reason = why.as_str(), left_out, "client certificate refused");
            }
            return Err(match why {
                LeafRefusal::NoClientAuth => {
                    Error::InvalidCertificate(CertificateError::InvalidPurpose)
                }
                LeafRefusal::Unreadable => Error::InvalidCertificate(CertificateError::BadEncoding),
                LeafRefusal::AmbiguousName(_) => {
                    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
                }
            });
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}
