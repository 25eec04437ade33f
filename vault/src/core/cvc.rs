//! The card security code (CVC/CVV/CID) held until a card's first relay, and the
//! short-lived keys it is sealed under.
//!
//! PCI DSS 3.3.1.2 forbids keeping the code after authorisation, and 3.3.2 wants
//! it encrypted while held. A [`Cvc`] is zeroized on drop, prints redacted and
//! has no `Serialize`; it is sealed with AES-256-GCM under a [`CvcKey`] drawn for
//! one time window, whose associated data binds the ciphertext to its tenant,
//! token, the purpose `cvc` and the key's id. The key itself is destroyed once
//! every code sealed under it has passed its deadline, so an expired code cannot
//! be opened even from a backup of the database.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use panvault_audit::card::Brand;
use zeroize::Zeroizing;

use super::CryptoError;
use super::envelope::NONCE_LEN;
use super::pan::CardError;
use super::secret::SecretKey32;

/// A card security code: 3 digits, 4 for American Express.
pub struct Cvc(Zeroizing<String>);

impl Cvc {
    /// Checks `input` against the card's `brand`: exactly 4 ASCII digits for
    /// American Express (its CID), exactly 3 for every other network. The error
    /// never holds the input.
    pub fn parse(input: &str, brand: Brand) -> Result<Cvc, CardError> {
        let want = if brand == Brand::Amex { 4 } else { 3 };
        if input.len() != want || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::InvalidCvc);
        }
        Ok(Cvc(Zeroizing::new(input.to_owned())))
    }

    /// The digits. Used only to seal the code and to put it into a relayed request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc([REDACTED])")
    }
}

/// Associated data of a sealed code: a domain label naming the purpose, the
/// length-prefixed tenant and token, and the id of the key, so a sealed code
/// opens only in its own row under its own key.
pub fn cvc_aad(tenant: &str, token: &str, key_id: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + tenant.len() + token.len());
    aad.extend_from_slice(b"panvault/cvc/v1\0");
    push_lp(&mut aad, tenant.as_bytes());
    push_lp(&mut aad, token.as_bytes());
    aad.extend_from_slice(&key_id.to_be_bytes());
    aad
}

fn push_lp(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// A short-lived key that seals the codes of one time window. Not `Clone`.
pub struct CvcKey {
    id: i64,
    cipher: Aes256Gcm,
}

impl CvcKey {
    /// The cipher for `key`, stored under `id`.
    pub fn new(id: i64, key: &SecretKey32) -> CvcKey {
        CvcKey {
            id,
            cipher: Aes256Gcm::new(key.expose_secret().into()),
        }
    }

    /// The key's id (its row).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Seals `cvc` for the row `(tenant, token)` with `nonce`, which the caller
    /// draws fresh for every code.
    pub fn seal(
        &self,
        tenant: &str,
        token: &str,
        cvc: &Cvc,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        let aad = cvc_aad(tenant, token, self.id);
        self.cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: cvc.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError)
    }

    /// Opens a code sealed for `(tenant, token)` under this key. Any change to the
    /// ciphertext, nonce, tenant, token or key gives the one opaque error.
    pub fn open(
        &self,
        tenant: &str,
        token: &str,
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<Cvc, CryptoError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError)?;
        let aad = cvc_aad(tenant, token, self.id);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| CryptoError)?;
        if !(3..=4).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError);
        }
        Ok(Cvc(Zeroizing::new(text.to_owned())))
    }
}

impl fmt::Debug for CvcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CvcKey({}, [REDACTED])", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, b: u8) -> CvcKey {
        CvcKey::new(id, &SecretKey32::from_slice(&[b; 32]).unwrap())
    }

    #[test]
    fn length_follows_the_brand() {
        assert!(Cvc::parse("123", Brand::Visa).is_ok());
        assert!(Cvc::parse("1234", Brand::Amex).is_ok());
        for (bad, brand) in [
            ("1234", Brand::Visa),
            ("123", Brand::Amex),
            ("12", Brand::Mastercard),
            ("12a", Brand::Visa),
            ("１２３", Brand::Visa),
            (" 123", Brand::Visa),
            ("", Brand::Unknown),
        ] {
            assert_eq!(
                Cvc::parse(bad, brand).unwrap_err(),
                CardError::InvalidCvc,
                "{brand:?}"
            );
        }
    }

    #[test]
    fn debug_and_errors_never_show_the_code() {
        let c = Cvc::parse("739", Brand::Visa).unwrap();
        assert!(!format!("{c:?}").contains("739"));
        let e = Cvc::parse("7391", Brand::Visa).unwrap_err();
        assert!(!e.to_string().contains("7391"));
        assert_eq!(format!("{:?}", key(1, 2)), "CvcKey(1, [REDACTED])");
    }

    #[test]
    fn sealed_codes_open_only_in_their_row_under_their_key() {
        let k = key(7, 1);
        let c = Cvc::parse("4821", Brand::Amex).unwrap();
        let sealed = k.seal("shop", "tok_a", &c, [3; 12]).unwrap();
        assert_eq!(sealed.len(), 4 + 16);
        assert_eq!(
            k.open("shop", "tok_a", &[3; 12], &sealed).unwrap().expose(),
            "4821"
        );
        assert!(k.open("shop", "tok_b", &[3; 12], &sealed).is_err());
        assert!(k.open("other", "tok_a", &[3; 12], &sealed).is_err());
        assert!(k.open("shop", "tok_a", &[4; 12], &sealed).is_err());
        assert!(k.open("shop", "tok_a", &[3; 11], &sealed).is_err());
        // The same key bytes under another id, and another key.
        assert!(key(8, 1).open("shop", "tok_a", &[3; 12], &sealed).is_err());
        assert!(key(7, 2).open("shop", "tok_a", &[3; 12], &sealed).is_err());
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x10;
            assert!(k.open("shop", "tok_a", &[3; 12], &flipped).is_err());
        }
    }
}
