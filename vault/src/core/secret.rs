//! Secret containers: zeroized on drop, redacted in `Debug`, read through one accessor.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// 32 secret bytes (a root key, data key, KEK, fingerprint key or seed).
///
/// Not `Clone`: a key exists once; move it or derive another.
pub struct SecretKey32(Zeroizing<[u8; 32]>);

impl SecretKey32 {
    /// Takes ownership of `bytes`, wiping the caller's copy.
    pub fn from_bytes(bytes: &mut [u8; 32]) -> Self {
        let key = SecretKey32(Zeroizing::new(*bytes));
        bytes.zeroize();
        key
    }

    /// Copies from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut buf = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        buf.copy_from_slice(bytes);
        Some(SecretKey32(buf))
    }

    /// Fresh random key.
    pub fn generate() -> Result<Self, super::CryptoError> {
        let mut buf = Zeroizing::new([0u8; 32]);
        super::rng::fill(buf.as_mut())?;
        Ok(SecretKey32(buf))
    }

    /// The key bytes. The only way to read them.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32([REDACTED])")
    }
}

/// A passphrase or other secret text: zeroized on drop, redacted in `Debug`.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Wraps `text`.
    pub fn new(text: String) -> Self {
        SecretText(Zeroizing::new(text))
    }

    /// The text. The only way to read it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey32::from_slice(&[0x41; 32]).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("65") && !s.contains("41") && s.contains("REDACTED"));
        let p = SecretText::new("hunter2-passphrase".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
