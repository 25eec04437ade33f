//! Key derivation: Argon2id from a passphrase to the key-encryption key (KEK), and
//! the per-tenant fingerprint keys.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::{hkdf, hmac};

use super::CryptoError;
use super::secret::{SecretKey32, SecretText};

/// Argon2id cost parameters, stored beside the seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The floor the issue sets: 64 MiB, 3 passes.
    pub const MINIMUM: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
}

/// Derives the KEK from `passphrase` and `salt` with Argon2id.
pub fn derive_kek(
    passphrase: &SecretText,
    salt: &[u8],
    params: KdfParams,
) -> Result<SecretKey32, CryptoError> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|_| CryptoError)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut out = [0u8; 32];
    let res = argon.hash_password_into(passphrase.expose_secret().as_bytes(), salt, &mut out);
    let key = SecretKey32::from_bytes(&mut out);
    res.map_err(|_| CryptoError)?;
    Ok(key)
}

/// The fingerprint key: derives one HMAC-SHA256 key per tenant with HKDF, so the
/// same card in two tenants has unrelated fingerprints.
pub struct FingerprintKey {
    prk: hkdf::Prk,
}

impl FingerprintKey {
    /// From the unwrapped 32-byte fingerprint key.
    pub fn new(key: &SecretKey32) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"panvault/fingerprint/v1");
        FingerprintKey {
            prk: salt.extract(key.expose_secret()),
        }
    }

    /// The HMAC key of `tenant`.
    pub fn tenant_key(&self, tenant: &str) -> Result<hmac::Key, CryptoError> {
        let info = [tenant.as_bytes()];
        let okm = self
            .prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| CryptoError)?;
        Ok(hmac::Key::from(okm))
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey([REDACTED])")
    }
}

/// Length of a stored fingerprint (truncated HMAC-SHA256; 128 bits).
pub const FINGERPRINT_LEN: usize = 16;

/// The keyed fingerprint of a card's digits under a tenant's key.
pub fn fingerprint(tenant_key: &hmac::Key, digits: &str) -> [u8; FINGERPRINT_LEN] {
    let tag = hmac::sign(tenant_key, digits.as_bytes());
    let mut out = [0u8; FINGERPRINT_LEN];
    for (o, t) in out.iter_mut().zip(tag.as_ref()) {
        *o = *t;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_unrelated_fingerprints() {
        let k = FingerprintKey::new(&SecretKey32::from_slice(&[1; 32]).unwrap());
        let a = fingerprint(&k.tenant_key("a").unwrap(), "4242424242424242");
        let a2 = fingerprint(&k.tenant_key("a").unwrap(), "4242424242424242");
        let b = fingerprint(&k.tenant_key("b").unwrap(), "4242424242424242");
        assert_eq!(a, a2);
        assert_ne!(a, b);
    }

    #[test]
    fn kek_depends_on_passphrase_and_salt() {
        let small = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let a = derive_kek(&SecretText::new("one".into()), b"saltsaltsalt", small).unwrap();
        let b = derive_kek(&SecretText::new("two".into()), b"saltsaltsalt", small).unwrap();
        let c = derive_kek(&SecretText::new("one".into()), b"saltsaltsal2", small).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
    }
}
