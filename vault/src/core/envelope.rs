//! Record encryption: AES-256-GCM under a versioned data key, with associated data
//! binding each ciphertext to its row (tenant, token, key version). Key wrapping
//! under the root key uses the same AEAD with a label as associated data.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::pan::CardSecret;
use super::secret::SecretKey32;
use super::{CryptoError, rng};

/// Nonce length of AES-GCM (96 bits).
pub const NONCE_LEN: usize = 12;

/// A versioned data-encryption key, ready to use. Not `Clone`.
pub struct DataKey {
    version: u32,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// Builds the cipher for `key` as version `version`.
    pub fn new(version: u32, key: &SecretKey32) -> DataKey {
        DataKey {
            version,
            cipher: Aes256Gcm::new(key.expose_secret().into()),
        }
    }

    /// The key's version number.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Seals a card for the row `(tenant, token)` under this key with `nonce`, which
    /// the caller draws fresh from the RNG for every record.
    pub fn seal(
        &self,
        tenant: &str,
        token: &str,
        secret: &CardSecret,
        nonce: [u8; NONCE_LEN],
    ) -> Result<SealedRecord, CryptoError> {
        let aad = record_aad(tenant, token, self.version);
        let plaintext = secret.encode();
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError)?;
        Ok(SealedRecord {
            key_version: self.version,
            nonce,
            ciphertext,
        })
    }

    /// Opens a record of the row `(tenant, token)`. Any change to the ciphertext, the
    /// nonce, the row's tenant, token or key version gives the one opaque error.
    pub fn open(
        &self,
        tenant: &str,
        token: &str,
        rec: &SealedRecord,
    ) -> Result<CardSecret, CryptoError> {
        if rec.key_version != self.version {
            return Err(CryptoError);
        }
        let aad = record_aad(tenant, token, rec.key_version);
        let plaintext = Zeroizing::new(
            self.cipher
                .decrypt(
                    &Nonce::from(rec.nonce),
                    Payload {
                        msg: &rec.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError)?,
        );
        CardSecret::decode(&plaintext).ok_or(CryptoError)
    }
}

impl DataKey {
    /// Seals `plaintext` (a row's personal data: subject and metadata) for the row
    /// `(tenant, token)` under this key with a fresh nonce: `version (4, big
    /// endian) ‖ nonce ‖ ciphertext ‖ tag`. Its associated data differs from the
    /// card's ([`personal_aad`]), so neither ciphertext opens as the other.
    pub fn seal_personal(
        &self,
        tenant: &str,
        token: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng::fill(&mut nonce)?;
        let aad = personal_aad(tenant, token, self.version);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError)?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`DataKey::seal_personal`] made for the row `(tenant, token)`.
    pub fn open_personal(
        &self,
        tenant: &str,
        token: &str,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if personal_version(blob) != Some(self.version) {
            return Err(CryptoError);
        }
        let rest = blob.get(4..).ok_or(CryptoError)?;
        let (nonce, ct) = rest.split_at_checked(NONCE_LEN).ok_or(CryptoError)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
        let aad = personal_aad(tenant, token, self.version);
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError)
    }
}

/// The key version a [`DataKey::seal_personal`] blob was sealed under.
pub fn personal_version(blob: &[u8]) -> Option<u32> {
    let v: [u8; 4] = blob.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(v))
}

/// Associated data of a row's sealed personal data: its own label, then the
/// row's tenant, token and key version as for the card.
pub fn personal_aad(tenant: &str, token: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(40 + tenant.len() + token.len());
    aad.extend_from_slice(b"panvault/card-personal/v1\0");
    push_lp(&mut aad, tenant.as_bytes());
    push_lp(&mut aad, token.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(v{}, [REDACTED])", self.version)
    }
}

/// A sealed card as stored: the key version, nonce and ciphertext (with tag).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// Version of the data key that sealed it.
    pub key_version: u32,
    /// The 96-bit nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedRecord(v{}, {} bytes)",
            self.key_version,
            self.ciphertext.len()
        )
    }
}

/// Associated data of a record: a domain label, then length-prefixed tenant and
/// token, then the key version, so no two rows share associated data.
pub fn record_aad(tenant: &str, token: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + tenant.len() + token.len());
    aad.extend_from_slice(b"panvault/card/v1\0");
    push_lp(&mut aad, tenant.as_bytes());
    push_lp(&mut aad, token.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn push_lp(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// Wraps `key` under `wrapping` with `label` as associated data:
/// `nonce ‖ ciphertext ‖ tag`.
pub fn wrap_key(wrapping: &SecretKey32, label: &str, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(wrapping.expose_secret().into());
    let mut nonce = [0u8; NONCE_LEN];
    rng::fill(&mut nonce)?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: key,
                aad: label.as_bytes(),
            },
        )
        .map_err(|_| CryptoError)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps what [`wrap_key`] made; the label must match.
pub fn unwrap_key(
    wrapping: &SecretKey32,
    label: &str,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (nonce, ct) = blob.split_at_checked(NONCE_LEN).ok_or(CryptoError)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
    let cipher = Aes256Gcm::new(wrapping.expose_secret().into());
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: label.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError)
}

/// Unwraps a 32-byte key.
pub fn unwrap_key32(
    wrapping: &SecretKey32,
    label: &str,
    blob: &[u8],
) -> Result<SecretKey32, CryptoError> {
    let bytes = unwrap_key(wrapping, label, blob)?;
    SecretKey32::from_slice(&bytes).ok_or(CryptoError)
}

#[cfg(test)]
mod tests {
    use super::super::pan::{CardholderName, Pan};
    use super::*;

    #[test]
    fn personal_data_opens_only_for_its_row_and_never_as_a_card() {
        let k = DataKey::new(3, &SecretKey32::from_bytes(&mut [7u8; 32]));
        let blob = k
            .seal_personal("shop", "tok_a", b"{\"s\":\"alice\"}")
            .unwrap();
        assert_eq!(personal_version(&blob), Some(3));
        assert_eq!(
            &k.open_personal("shop", "tok_a", &blob).unwrap()[..],
            b"{\"s\":\"alice\"}"
        );
        assert!(k.open_personal("shop", "tok_b", &blob).is_err());
        assert!(k.open_personal("other", "tok_a", &blob).is_err());
        let other = DataKey::new(4, &SecretKey32::from_bytes(&mut [7u8; 32]));
        assert!(other.open_personal("shop", "tok_a", &blob).is_err());
        // the card's associated data is another domain
        let rest = &blob[4..];
        let rec = SealedRecord {
            key_version: 3,
            nonce: rest[..12].try_into().unwrap(),
            ciphertext: rest[12..].to_vec(),
        };
        assert!(k.open("shop", "tok_a", &rec).is_err());
        let mut flipped = blob.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(k.open_personal("shop", "tok_a", &flipped).is_err());
        assert!(k.open_personal("shop", "tok_a", &blob[..10]).is_err());
    }
    use proptest::prelude::*;

    fn secret(n: &str) -> CardSecret {
        CardSecret {
            pan: Pan::parse(n).unwrap(),
            name: Some(CardholderName::parse("J Doe").unwrap()),
        }
    }

    fn key(v: u32, b: u8) -> DataKey {
        DataKey::new(v, &SecretKey32::from_slice(&[b; 32]).unwrap())
    }

    fn valid_pan() -> impl Strategy<Value = String> {
        (12usize..=19, proptest::collection::vec(0u8..10, 19))
            .prop_map(|(len, ds)| panvault_audit::card::testing::complete(&ds[..len - 1]).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(pan in valid_pan(), tenant in "[a-z0-9-]{1,24}", nonce in any::<[u8; 12]>()) {
            let k = key(3, 7);
            let tok = Token::generate_opaque().unwrap();
            let rec = k.seal(&tenant, tok.as_str(), &secret(&pan), nonce).unwrap();
            let back = k.open(&tenant, tok.as_str(), &rec).unwrap();
            prop_assert_eq!(back.pan.expose_digits(), pan.as_str());
        }

        #[test]
        fn any_flipped_byte_fails(pan in valid_pan(), idx in any::<prop::sample::Index>(), bit in 0u8..8, in_nonce in any::<bool>()) {
            let k = key(1, 9);
            let mut rec = k.seal("t", "tok_a", &secret(&pan), [5; 12]).unwrap();
            if in_nonce {
                let i = idx.index(NONCE_LEN);
                rec.nonce[i] ^= 1 << bit;
            } else {
                let i = idx.index(rec.ciphertext.len());
                rec.ciphertext[i] ^= 1 << bit;
            }
            prop_assert_eq!(k.open("t", "tok_a", &rec).unwrap_err(), CryptoError);
        }

        #[test]
        fn relabelled_rows_fail(pan in valid_pan(), other in valid_pan()) {
            let k1 = key(1, 1);
            let k2 = key(2, 2);
            let a = k1.seal("shop-a", "tok_a", &secret(&pan), [1; 12]).unwrap();
            let b = k1.seal("shop-a", "tok_b", &secret(&other), [2; 12]).unwrap();
            // swapped ciphertexts between rows
            prop_assert!(k1.open("shop-a", "tok_b", &a).is_err());
            prop_assert!(k1.open("shop-a", "tok_a", &b).is_err());
            // other tenant
            prop_assert!(k1.open("shop-b", "tok_a", &a).is_err());
            // relabelled key version (same key bytes under another version, or another key)
            let mut relabelled = a.clone();
            relabelled.key_version = 2;
            prop_assert!(k2.open("shop-a", "tok_a", &relabelled).is_err());
            let same_bytes_v2 = key(2, 1);
            prop_assert!(same_bytes_v2.open("shop-a", "tok_a", &relabelled).is_err());
        }
    }

    use super::super::token::Token;

    #[test]
    fn wrap_round_trip_and_label_binding() {
        let root = SecretKey32::from_slice(&[3; 32]).unwrap();
        let blob = wrap_key(&root, "dek:v1", &[9; 32]).unwrap();
        assert_eq!(
            unwrap_key32(&root, "dek:v1", &blob)
                .unwrap()
                .expose_secret(),
            &[9; 32]
        );
        assert!(unwrap_key(&root, "dek:v2", &blob).is_err());
        assert!(unwrap_key(&root, "dek:v1", &blob[..10]).is_err());
        let other = SecretKey32::from_slice(&[4; 32]).unwrap();
        assert!(unwrap_key(&other, "dek:v1", &blob).is_err());
    }

    #[test]
    fn debug_redacts() {
        let k = key(4, 0x55);
        assert_eq!(format!("{k:?}"), "DataKey(v4, [REDACTED])");
    }
}
