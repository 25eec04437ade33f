//! The part of the vault that sees card numbers and key bytes. No network, no
//! database: pure functions and types, small enough to review line by line.

pub mod cvc;
pub mod envelope;
pub mod kdf;
pub mod pan;
pub mod rng;
pub mod secret;
pub mod token;

/// A cryptographic operation failed. Deliberately opaque: decryption failures
/// say nothing about why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cryptographic operation failed")]
pub struct CryptoError;
