//! The vault's error type.

use crate::core::CryptoError;
use crate::core::pan::CardError;
use crate::store::StoreError;

/// Everything a vault operation can fail with. No variant carries a card number,
/// key material or SQL parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The card was refused (bad number, expired, CVV present…).
    #[error(transparent)]
    Card(#[from] CardError),
    /// A request field is missing or malformed.
    #[error("invalid request: {field}: {reason}")]
    InvalidRequest {
        /// The field, as a JSON path.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such token in this tenant (or it expired). Deliberately the same for a
    /// token of another tenant.
    #[error("token not found")]
    NotFound,
    /// A record could not be decrypted. Opaque on purpose.
    #[error("record could not be decrypted")]
    Decryption,
    /// The passphrase or shares did not unseal the root key.
    #[error("the passphrase or shares did not unseal the root key")]
    WrongSecret,
    /// `init` found an existing vault.
    #[error("a vault already exists at {0}; refusing to overwrite it")]
    AlreadyInitialized(String),
    /// No vault at the path.
    #[error("no vault at {0}; run `panvault init` first")]
    NotInitialized(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not record the access, so it was refused (fail closed).
    #[error("the audit log could not record this access; refused")]
    AuditUnavailable,
    /// A key-management operation is not allowed in the current state.
    #[error("key operation refused: {0}")]
    KeyState(String),
    /// The data keys in memory are not the vault's current ones (a key change that
    /// could not be loaded, or an active key that changed since the last load):
    /// nothing is sealed until they load again. A "try again later" (503).
    #[error(
        "the data keys in memory are not the vault's current ones; sealing refused until they reload"
    )]
    KeysOutOfDate,
    /// Randomness or another cryptographic primitive failed.
    #[error("cryptographic failure")]
    Crypto,
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

impl From<CryptoError> for VaultError {
    fn from(_: CryptoError) -> Self {
        VaultError::Crypto
    }
}

impl VaultError {
    /// An invalid-request error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VaultError::InvalidRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: &std::io::Error) -> Self {
        VaultError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Whether this means "try again later" (503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            VaultError::Store(e) => e.is_unavailable(),
            VaultError::AuditUnavailable | VaultError::KeysOutOfDate => true,
            _ => false,
        }
    }
}
