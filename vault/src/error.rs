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
    /// The cause (the audit log's or the storage's error) is kept for the server's log.
    #[error("the audit log could not record this access; refused")]
    AuditUnavailable(#[source] Option<Box<dyn std::error::Error + Send + Sync + 'static>>),
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
    /// An `Idempotency-Key` this client already used within 24 hours for a
    /// different request (method, path or body).
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running.
    #[error("the first request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInUse,
    /// Randomness or another cryptographic primitive failed. Opaque on purpose.
    #[error("cryptographic failure")]
    Crypto,
    /// A file could not be read, written or parsed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why: the OS error, or what was wrong with the file's contents.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A relay to a payment provider failed (template, security code, the
    /// provider unreachable or too slow).
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    /// Something that cannot happen did (a broken invariant, a failed encoding of
    /// the vault's own data, a clock out of range): a bug, never the caller's fault.
    /// Answered as a bare 500; the reason is for the server's log.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed, in fixed words (never input).
        reason: &'static str,
        /// The underlying error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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

    /// An I/O error on `path`; the error is kept as the source.
    pub fn io(
        path: &std::path::Path,
        e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        VaultError::Io {
            path: path.display().to_string(),
            source: e.into(),
        }
    }

    /// An [`VaultError::Internal`] without an underlying error.
    pub fn internal(reason: &'static str) -> Self {
        VaultError::Internal {
            reason,
            source: None,
        }
    }

    /// An [`VaultError::Internal`] caused by `e`.
    pub fn internal_from(
        reason: &'static str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        VaultError::Internal {
            reason,
            source: Some(e.into()),
        }
    }

    /// This error and its causes, each once (`outer: cause: cause`), for the
    /// server's log or an operator's terminal; never for an API response. Causes
    /// hold no card number, key or SQL parameter (see the variants).
    pub fn with_causes(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            // Some messages already end with their cause's text (`path: os error`).
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = c.source();
        }
        out
    }

    /// Whether this means "try again later" (503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            VaultError::Store(e) => e.is_unavailable(),
            VaultError::AuditUnavailable(_) | VaultError::KeysOutOfDate => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::VaultError;
    use crate::store::StoreError;

    #[test]
    fn io_keeps_the_os_error() {
        let e = VaultError::io(
            std::path::Path::new("/x"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        // Said once, though it is both in the message and the source.
        assert_eq!(e.with_causes(), e.to_string());
        let src = e.source().expect("the OS error is the source");
        let io = src.downcast_ref::<std::io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn internal_keeps_its_cause_and_crypto_stays_opaque() {
        let bad: Result<[u8; 12], _> = <[u8; 12]>::try_from(&[0u8; 3][..]);
        let e = VaultError::internal_from("a nonce draw is not 12 bytes", bad.unwrap_err());
        assert!(e.source().is_some());
        assert!(VaultError::internal("x").source().is_none());
        let crypto: VaultError = crate::core::CryptoError.into();
        assert!(crypto.source().is_none());
        assert_eq!(crypto.to_string(), "cryptographic failure");
    }

    #[test]
    fn sqlite_errors_keep_rusqlite_error_as_source() {
        let e = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        let sqlite = e.source().expect("rusqlite's error is kept");
        assert!(
            sqlite
                .downcast_ref::<std::sync::Arc<rusqlite::Error>>()
                .is_some()
        );
        // The vault's error is transparent over the store's: same chain.
        assert!(VaultError::Store(e).source().is_some());
    }
}
