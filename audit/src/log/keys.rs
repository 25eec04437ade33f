//! The Ed25519 key that signs checkpoints, prune records and erasure receipts.
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use super::encoding::{hex_decode_array, hex_encode};
use super::error::AuditError;

/// The audit signing key. Not `Clone`, prints redacted.
///
/// Its bytes live in the vault sealed under the root key; build it with
/// [`SigningKey::from_pkcs8`] after unsealing. (ring keeps the expanded private
/// key inside `Ed25519KeyPair` and does not wipe it on drop; the PKCS#8 bytes that
/// this crate hands out are in [`Zeroizing`] buffers.)
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new random key and its PKCS#8 v2 document (to be sealed and stored).
    pub fn generate() -> Result<(SigningKey, Zeroizing<Vec<u8>>), AuditError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AuditError::Key)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let key = SigningKey::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// From a PKCS#8 document as produced by [`SigningKey::generate`].
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, AuditError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| AuditError::Key)?;
        Ok(SigningKey { pair })
    }

    /// From a raw 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<SigningKey, AuditError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| AuditError::Key)?;
        Ok(SigningKey { pair })
    }

    /// The public key verifiers need.
    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        let public = self.pair.public_key().as_ref();
        if public.len() == bytes.len() {
            bytes.copy_from_slice(public);
        }
        PublicKey(bytes)
    }

    /// Signs `message` (always a domain-separated message built by this crate).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(message);
        let mut out = [0u8; 64];
        let bytes = sig.as_ref();
        if bytes.len() == out.len() {
            out.copy_from_slice(bytes);
        }
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey {{ public: {}, private: [redacted] }}",
            self.public_key()
        )
    }
}

/// The text form's first word.
const PUBLIC_KEY_LABEL: &str = "panvault-audit-ed25519";

/// An Ed25519 public key: all a verifier needs.
///
/// Text form (the `audit-signing.pub` file): `panvault-audit-ed25519 <64 hex digits>`
/// and a newline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Checks `signature` over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), AuditError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| AuditError::BadSignature)
    }

    /// Writes the text form to `path` (replacing it).
    pub fn write_to(&self, path: &Path) -> Result<(), AuditError> {
        std::fs::write(path, format!("{self}\n"))?;
        Ok(())
    }

    /// Reads the text form from `path`.
    pub fn read_from(path: &Path) -> Result<PublicKey, AuditError> {
        let text = std::fs::read_to_string(path)?;
        text.parse()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_LABEL} {}", hex_encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex_encode(&self.0))
    }
}

impl FromStr for PublicKey {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<PublicKey, AuditError> {
        let err = AuditError::Parse {
            what: "audit public key",
        };
        let mut words = s.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(PUBLIC_KEY_LABEL), Some(hex), None) => {
                hex_decode_array(hex).map(PublicKey).ok_or(err)
            }
            _ => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let sig = key.sign(b"message");
        key.public_key().verify(b"message", &sig).unwrap();
        assert!(key.public_key().verify(b"messagf", &sig).is_err());
        let (other, _) = SigningKey::generate().unwrap();
        assert!(other.public_key().verify(b"message", &sig).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::from_seed(&[7; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex_encode(&[7; 32])));
    }

    #[test]
    fn public_key_text_round_trip() {
        let key = SigningKey::from_seed(&[1; 32]).unwrap().public_key();
        let text = format!("{key}\n");
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        assert!("panvault-audit-ed25519 00".parse::<PublicKey>().is_err());
        assert!(
            format!("other {}", hex_encode(&key.0))
                .parse::<PublicKey>()
                .is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-signing.pub");
        key.write_to(&path).unwrap();
        assert_eq!(PublicKey::read_from(&path).unwrap(), key);
    }

    #[test]
    fn bad_pkcs8_is_refused() {
        assert!(matches!(
            SigningKey::from_pkcs8(b"not a key"),
            Err(AuditError::Key)
        ));
    }
}
