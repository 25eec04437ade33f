//! Where the vault meets the audit log: the writer's state (the chain head), the
//! events each operation records, and the audit signing key.
//!
//! Every event is appended inside the same transaction as the change it
//! describes; if appending fails, the job fails and nothing is released.

use std::path::{Path, PathBuf};

use panvault_audit::log::{
    Action, Actor, AuditChain, ChainHead, CheckpointPolicy, ErasureReceipt, MAX_CODE_LEN,
    MAX_FIELD_LEN, NewEvent, Outcome, SigningKey, subject_hash,
};
use rusqlite::Connection;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::keyring::Keyring;
use super::request::AccessContext;
use crate::error::VaultError;

/// What was done; the names are the audit log's action names.
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
    /// Erasure of a data subject or token.
    Erase,
    /// Retention purge.
    RetentionPurge,
    /// A request refused before any operation (authentication, authorization,
    /// validation).
    Denied,
    /// init.
    Init,
    /// serve started.
    ServeStart,
    /// serve stopped.
    ServeStop,
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
    /// audit verify.
    AuditVerify,
    /// audit export.
    AuditExport,
    /// audit checkpoint printed.
    AuditCheckpoint,
    /// compliance run.
    ComplianceRun,
    /// serve started despite failing compliance checks.
    ServeNoncompliant,
}

impl AuditAction {
    /// The action's name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Tokenize => "tokenize",
            AuditAction::Read => "token.read",
            AuditAction::Detokenize => "detokenize",
            AuditAction::Delete => "token.delete",
            AuditAction::Erase => "erase",
            AuditAction::RetentionPurge => "retention.purge",
            AuditAction::Denied => "auth.failed",
            AuditAction::Init => "init",
            AuditAction::ServeStart => "serve.start",
            AuditAction::ServeStop => "serve.stop",
            AuditAction::KeyRotate => "key.rotate",
            AuditAction::KeyRewrap => "key.rewrap",
            AuditAction::KeyRetire => "key.retire",
            AuditAction::KeyDestroy => "key.destroy",
            AuditAction::MasterRotate => "master_key.rotate",
            AuditAction::MasterChangePassphrase => "master_key.change_passphrase",
            AuditAction::MasterReshare => "master_key.split",
            AuditAction::AuditVerify => "audit.verify",
            AuditAction::AuditExport => "audit.export",
            AuditAction::AuditCheckpoint => "audit.checkpoint",
            AuditAction::ComplianceRun => "compliance.run",
            AuditAction::ServeNoncompliant => "serve.noncompliant",
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
            VaultError::Card(c) => AuditOutcome::Denied(card_code(c).into()),
            VaultError::InvalidRequest { field, .. } if field == "purpose" => {
                AuditOutcome::Denied("purpose_required".into())
            }
            VaultError::InvalidRequest { .. } => AuditOutcome::Denied("invalid_request".into()),
            VaultError::Decryption => AuditOutcome::Error("decryption_failed".into()),
            e if e.is_unavailable() => AuditOutcome::Error("unavailable".into()),
            _ => AuditOutcome::Error("internal".into()),
        }
    }

    fn to_log(&self) -> Outcome {
        match self {
            AuditOutcome::Success => Outcome::Success,
            AuditOutcome::Denied(c) => Outcome::Denied(sanitize_code(c)),
            AuditOutcome::Error(c) => Outcome::Error(sanitize_code(c)),
        }
    }
}

/// The API error code of a refused card.
pub fn card_code(c: &crate::core::pan::CardError) -> &'static str {
    use crate::core::pan::CardError as C;
    match c {
        C::InvalidCharacters | C::InvalidLength(_) | C::LuhnFailed => "invalid_card_number",
        C::Expired => "card_expired",
        C::CvvNotAccepted => "cvv_not_accepted",
        _ => "invalid_card",
    }
}

fn sanitize_code(c: &str) -> String {
    let s: String = c
        .chars()
        .filter(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
        })
        .take(MAX_CODE_LEN)
        .collect();
    if s.is_empty() { "error".into() } else { s }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_FIELD_LEN / 4).collect()
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

fn actor_of(ctx: &AccessContext) -> Actor {
    let name = if ctx.actor.is_empty() {
        "unknown".to_owned()
    } else {
        clip(&ctx.actor)
    };
    Actor {
        name,
        fingerprint: ctx.actor_fingerprint.as_deref().map(clip),
    }
}

/// Builds the log's event for `rec`.
pub(crate) fn build_event(
    keys: &Keyring,
    ctx: &AccessContext,
    rec: &AuditRecord<'_>,
    now: i64,
) -> Result<NewEvent, VaultError> {
    let time =
        OffsetDateTime::from_unix_timestamp(now).map_err(|_| VaultError::AuditUnavailable)?;
    let action = Action::new(rec.action.as_str()).map_err(|_| VaultError::AuditUnavailable)?;
    let mut ev = NewEvent::new(time, actor_of(ctx), action, rec.outcome.to_log());
    if let Some(t) = rec.tenant {
        ev = ev.with_tenant(clip(t));
    }
    if let Some(t) = rec.token {
        ev = ev.with_token(clip(t));
    }
    if let Some(p) = rec.purpose {
        ev = ev.with_purpose(clip(p));
    }
    if let Some(r) = &ctx.request_id {
        ev = ev.with_request_id(clip(r));
    }
    if let Some(p) = &ctx.peer {
        ev = ev.with_peer(clip(p));
    }
    let mut details = String::new();
    if let (Some(subject), Some(tenant)) = (rec.subject, rec.tenant) {
        details.push_str("subject_hash=");
        details.push_str(&subject_hash(
            keys.subject_key.expose_secret(),
            tenant,
            subject,
        ));
    }
    if let Some(d) = rec.details {
        if !details.is_empty() {
            details.push(' ');
        }
        details.push_str(d);
    }
    if !details.is_empty() {
        ev = ev.with_details(details.chars().take(MAX_FIELD_LEN * 8).collect::<String>());
    }
    Ok(ev)
}

/// The audit side of the writer's state: the chain head and the signing key.
pub(crate) struct AuditState {
    chain: AuditChain,
    signer: SigningKey,
    policy: CheckpointPolicy,
}

impl std::fmt::Debug for AuditState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditState")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

fn audit_err(_e: panvault_audit::log::AuditError) -> VaultError {
    VaultError::AuditUnavailable
}

impl AuditState {
    pub(crate) fn load(
        conn: &Connection,
        keys: &Keyring,
        policy: CheckpointPolicy,
    ) -> Result<Self, VaultError> {
        panvault_audit::log::migrate(conn).map_err(audit_err)?;
        let chain = AuditChain::load(conn).map_err(audit_err)?;
        let signer =
            SigningKey::from_pkcs8(&keys.audit_pkcs8).map_err(|_| VaultError::Decryption)?;
        Ok(AuditState {
            chain,
            signer,
            policy,
        })
    }

    /// Appends an event inside the current transaction; returns its sequence number.
    pub(crate) fn record(
        &mut self,
        conn: &Connection,
        keys: &Keyring,
        ctx: &AccessContext,
        rec: &AuditRecord<'_>,
        now: i64,
    ) -> Result<u64, VaultError> {
        let ev = build_event(keys, ctx, rec, now)?;
        self.chain.append(conn, &ev).map_err(audit_err)
    }

    /// Appends an event built beforehand (off the writer thread, by
    /// [`build_event`]) inside the current transaction; returns its sequence number.
    pub(crate) fn append(&mut self, conn: &Connection, ev: &NewEvent) -> Result<u64, VaultError> {
        self.chain.append(conn, ev).map_err(audit_err)
    }

    pub(crate) fn snapshot(&self) -> ChainHead {
        self.chain.snapshot()
    }

    pub(crate) fn restore(&mut self, head: ChainHead) {
        self.chain.restore(head);
    }

    /// Writes a signed checkpoint if one is due (or `force`).
    pub(crate) fn checkpoint_if_due(
        &mut self,
        conn: &Connection,
        force: bool,
    ) -> Result<(), VaultError> {
        let now = OffsetDateTime::now_utc();
        if (force && self.chain.events_since_checkpoint() > 0)
            || self.chain.checkpoint_due(&self.policy, now)
        {
            self.chain
                .checkpoint(conn, &self.signer, now)
                .map_err(audit_err)?;
        }
        Ok(())
    }

    /// Prunes events older than `retention_days` (at least 365) with a signed record.
    pub(crate) fn prune(
        &mut self,
        conn: &Connection,
        now: OffsetDateTime,
        retention_days: i64,
    ) -> Result<u64, VaultError> {
        let days = retention_days.max(365);
        let report =
            panvault_audit::log::prune(conn, &self.signer, now, time::Duration::days(days))
                .map_err(audit_err)?;
        Ok(report.deleted)
    }

    /// Signs an erasure receipt.
    pub(crate) fn sign_receipt(
        &self,
        subject_hash: String,
        tenant: &str,
        tokens_erased: u64,
        time: OffsetDateTime,
        audit_seq: u64,
    ) -> Result<ErasureReceipt, VaultError> {
        ErasureReceipt::sign(
            &self.signer,
            subject_hash,
            tenant,
            tokens_erased,
            time,
            audit_seq,
        )
        .map_err(audit_err)
    }
}

/// A new Ed25519 signing key as PKCS#8.
pub(crate) fn generate_signing_key() -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let (_key, pkcs8) = SigningKey::generate().map_err(|_| VaultError::Crypto)?;
    Ok(pkcs8)
}

/// Creates the audit tables.
pub(crate) fn init_tables(conn: &Connection) -> Result<(), VaultError> {
    panvault_audit::log::migrate(conn).map_err(audit_err)
}

/// Writes `DIR/audit-signing.pub`.
pub(crate) fn write_public_key(dir: &Path, pkcs8: &[u8]) -> Result<PathBuf, VaultError> {
    let key = SigningKey::from_pkcs8(pkcs8).map_err(|_| VaultError::Crypto)?;
    let path = dir.join("audit-signing.pub");
    key.public_key()
        .write_to(&path)
        .map_err(|e| VaultError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(path)
}

/// Records an admin action (CLI) inside the caller's transaction, and signs a
/// checkpoint if one is due. Returns the event's sequence number.
pub(crate) fn record_admin(
    conn: &Connection,
    keys: &Keyring,
    actor: &AccessContext,
    action: AuditAction,
    details: Option<&str>,
    now: i64,
) -> Result<u64, VaultError> {
    let mut state = AuditState::load(conn, keys, CheckpointPolicy::default())?;
    let rec = AuditRecord {
        action,
        tenant: None,
        token: None,
        purpose: None,
        subject: None,
        outcome: AuditOutcome::Success,
        details,
    };
    let seq = state.record(conn, keys, actor, &rec, now)?;
    state.checkpoint_if_due(conn, false)?;
    Ok(seq)
}

/// Appends an admin event to the log of the vault in `data_dir` without unsealing
/// it (the hash chain needs no key; checkpoints are signed later by whoever holds
/// the signing key). For commands that read but do not change the vault:
/// `audit verify`, `audit export`, `audit checkpoint`, compliance runs.
pub fn append_admin_event(
    data_dir: &Path,
    actor: &AccessContext,
    action: AuditAction,
    details: &str,
) -> Result<u64, VaultError> {
    let db = crate::store::db_path(data_dir);
    if !db.exists() {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    // Not `open_writer`: no migrations here, and a file that is not a vault is left alone.
    let mut conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| VaultError::Store(e.into()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| VaultError::Store(e.into()))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| VaultError::Store(e.into()))?;
    if super::keyring::meta_get(&conn, "vault_id")
        .ok()
        .flatten()
        .is_none()
    {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| VaultError::Store(e.into()))?;
    let mut chain = AuditChain::load(&tx).map_err(audit_err)?;
    let time = OffsetDateTime::now_utc();
    let action = Action::new(action.as_str()).map_err(audit_err)?;
    let ev = NewEvent::new(time, actor_of(actor), action, Outcome::Success)
        .with_details(details.chars().take(4096).collect::<String>());
    let seq = chain.append(&tx, &ev).map_err(audit_err)?;
    tx.commit().map_err(|e| VaultError::Store(e.into()))?;
    Ok(seq)
}
