//! Where the vault meets the audit log: the writer's state (the chain head), the
//! events each operation records, and the audit signing key.
//!
//! Every event is appended inside the same transaction as the change it
//! describes; if appending fails, the job fails and nothing is released.
//!
//! Longer than 600 lines on purpose: fail-closed auditing is reviewed as one unit
//! (the events, the chain head the writer keeps, checkpoints and the signing key).

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use panvault_audit::log::{
    ActionName, Actor, AuditChain, ChainHead, CheckpointPolicy, ErasureReceipt, MAX_CODE_LEN,
    MAX_FIELD_LEN, NewEvent, Outcome, Pruned, SignedCheckpoint, SigningKey, subject_hash,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::keyring::Keyring;
use super::request::AccessContext;
use crate::error::VaultError;
use crate::store::{Session, Tx};

/// What was done: the audit log's own vocabulary (one definition, in
/// `panvault_audit::log::Action`), under the name the vault's API has used.
pub use panvault_audit::log::Action as AuditAction;

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
            VaultError::Relay(r) => match r {
                crate::relay::RelayError::Template { .. }
                | crate::relay::RelayError::CvcUnavailable => AuditOutcome::Denied(r.code().into()),
                _ => AuditOutcome::Error(r.code().into()),
            },
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
    let time = OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| VaultError::AuditUnavailable(Some(Box::new(e))))?;
    let mut ev = NewEvent::new(
        time,
        actor_of(ctx),
        ActionName::from(rec.action),
        rec.outcome.to_log(),
    );
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
    witness: Option<Witness>,
    /// After a failed idle checkpoint, no new try before this.
    idle_retry: Option<Instant>,
}

/// The witness file and the checkpoints still to write into it.
#[derive(Debug)]
struct Witness {
    path: PathBuf,
    /// Signed in the open transaction: written once it commits, dropped if not.
    in_tx: Vec<SignedCheckpoint>,
    /// Committed but not yet written (the file could not be written).
    unwritten: Vec<SignedCheckpoint>,
    /// When a failure was last logged (one line a minute at most).
    warned: Option<Instant>,
}

/// Most checkpoints kept for a witness file that cannot be written; older ones
/// are dropped (the log keeps them all).
const MAX_UNWRITTEN: usize = 1024;

/// The longest the writer waits for work between two looks at the tail.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(500);

/// How long the writer waits before trying again an idle checkpoint that failed.
const IDLE_RETRY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for AuditState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditState")
            .field("chain", &self.chain)
            .field("witness", &self.witness)
            .finish_non_exhaustive()
    }
}

/// The audit log failed: the access is refused (fail closed), and the cause is kept
/// for the server's log.
fn audit_err(e: panvault_audit::log::AuditError) -> VaultError {
    VaultError::AuditUnavailable(Some(Box::new(e)))
}

impl AuditState {
    pub(crate) fn load(
        conn: &Tx<'_>,
        keys: &Keyring,
        policy: CheckpointPolicy,
    ) -> Result<Self, VaultError> {
        conn.migrate_audit().map_err(audit_err)?;
        let chain = conn.load_audit_chain().map_err(audit_err)?;
        let signer =
            SigningKey::from_pkcs8(&keys.audit_pkcs8).map_err(|_| VaultError::Decryption)?;
        Ok(AuditState {
            chain,
            signer,
            policy,
            witness: None,
            idle_retry: None,
        })
    }

    /// Appends every checkpoint this state signs, once committed, to the file at
    /// `path` (one JSON line each, synced): a copy outside the data directory.
    pub(crate) fn set_witness(&mut self, path: Option<PathBuf>) {
        self.witness = path.map(|path| Witness {
            path,
            in_tx: Vec::new(),
            unwritten: Vec::new(),
            warned: None,
        });
    }

    /// Appends an event inside the current transaction; returns its sequence number.
    pub(crate) fn record(
        &mut self,
        conn: &Tx<'_>,
        keys: &Keyring,
        ctx: &AccessContext,
        rec: &AuditRecord<'_>,
        now: i64,
    ) -> Result<u64, VaultError> {
        let ev = build_event(keys, ctx, rec, now)?;
        conn.append_audit(&mut self.chain, &ev).map_err(audit_err)
    }

    /// Appends an event built beforehand (off the writer thread, by
    /// [`build_event`]) inside the current transaction; returns its sequence number.
    pub(crate) fn append(&mut self, conn: &Tx<'_>, ev: &NewEvent) -> Result<u64, VaultError> {
        conn.append_audit(&mut self.chain, ev).map_err(audit_err)
    }

    pub(crate) fn snapshot(&self) -> ChainHead {
        self.chain.snapshot()
    }

    /// Puts the chain back after a rollback; checkpoints signed in the rolled-back
    /// transaction never reach the witness file.
    pub(crate) fn restore(&mut self, head: ChainHead) {
        self.chain.restore(head);
        if let Some(w) = &mut self.witness {
            w.in_tx.clear();
        }
    }

    /// The transaction committed: its checkpoints go to the witness file.
    pub(crate) fn committed(&mut self) {
        let Some(w) = &mut self.witness else {
            return;
        };
        w.unwritten.append(&mut w.in_tx);
        if w.unwritten.is_empty() {
            return;
        }
        match SignedCheckpoint::append_to_witness(&w.path, &w.unwritten) {
            Ok(()) => w.unwritten.clear(),
            Err(e) => {
                if w.unwritten.len() > MAX_UNWRITTEN {
                    let extra = w.unwritten.len().saturating_sub(MAX_UNWRITTEN);
                    w.unwritten.drain(..extra);
                }
                if w.warned
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    w.warned = Some(Instant::now());
                    tracing::warn!(
                        path = %w.path.display(),
                        error = %e,
                        pending = w.unwritten.len(),
                        "cannot append signed audit checkpoints to the witness file; will retry"
                    );
                }
            }
        }
    }

    /// Signs a checkpoint of the current head inside the caller's transaction
    /// (PostgreSQL: a cluster checkpoint; the witness file gets its JSON form).
    fn sign(&mut self, conn: &Tx<'_>, now: OffsetDateTime) -> Result<SignedCheckpoint, VaultError> {
        let cp = conn
            .sign_audit_checkpoint(&mut self.chain, &self.signer, now)
            .map_err(audit_err)?;
        if let Some(w) = &mut self.witness {
            w.in_tx.push(cp.clone());
        }
        Ok(cp)
    }

    /// Registers this node in the shared log if it is not yet (PostgreSQL; see
    /// [`Tx::register_audit_node`]), inside the caller's transaction; its
    /// `node.register` event is dated `now` (the vault's clock, as every event).
    pub(crate) fn register_node(
        &mut self,
        conn: &Tx<'_>,
        actor: &AccessContext,
        now: i64,
    ) -> Result<(), VaultError> {
        let now = OffsetDateTime::from_unix_timestamp(now)
            .map_err(|e| VaultError::AuditUnavailable(Some(Box::new(e))))?;
        conn.register_audit_node(&mut self.chain, &self.signer, actor_of(actor), now)
            .map_err(audit_err)
    }

    /// Writes a signed checkpoint if one is due (or `force`).
    pub(crate) fn checkpoint_if_due(
        &mut self,
        conn: &Tx<'_>,
        force: bool,
    ) -> Result<(), VaultError> {
        let now = OffsetDateTime::now_utc();
        if (force && self.chain.events_since_checkpoint() > 0)
            || conn
                .audit_checkpoint_due(&self.chain, &self.policy, now)
                .map_err(audit_err)?
        {
            self.sign(conn, now)?;
        }
        Ok(())
    }

    /// How long the writer may wait for work before the tail is due to be
    /// signed (at most half a second, so events appended by other processes
    /// are noticed too).
    pub(crate) fn idle_wait(&self) -> Duration {
        let max = MAX_IDLE_WAIT;
        if self.idle_retry.is_some_and(|t| t > Instant::now()) {
            return max;
        }
        match self.chain.checkpoint_due_at(&self.policy) {
            None => max,
            Some(due) => {
                let left = due - OffsetDateTime::now_utc();
                Duration::try_from(left)
                    .unwrap_or(Duration::ZERO)
                    .clamp(Duration::from_millis(1), max)
            }
        }
    }

    /// Between batches: signs the tail if it is due (`force`: if anything at all
    /// is unsigned), including events other processes (admin commands) appended,
    /// and retries a witness file that could not be written. The checkpoint is
    /// signed in its own IMMEDIATE transaction after reloading the head, so it
    /// covers every event committed before it.
    pub(crate) fn on_idle(&mut self, conn: &mut Session, force: bool) {
        if !force && self.idle_retry.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let before = self.snapshot();
        match self.sign_tail(conn, force) {
            Ok(()) => {
                self.idle_retry = None;
                self.committed();
            }
            Err(e) => {
                self.restore(before);
                if self.idle_retry.is_none() {
                    tracing::warn!(error = %e, "could not sign the audit log's tail; will retry");
                }
                self.idle_retry = Some(Instant::now() + IDLE_RETRY);
            }
        }
    }

    fn sign_tail(&mut self, conn: &mut Session, force: bool) -> Result<(), VaultError> {
        if !conn
            .reader()
            .audit_chain_is_current(&self.chain)
            .map_err(audit_err)?
        {
            conn.autocommit()
                .reload_audit_chain(&mut self.chain)
                .map_err(audit_err)?;
        }
        let due = |r: &crate::store::Reader<'_>, chain: &AuditChain, policy: &CheckpointPolicy| {
            if force {
                Ok(chain.events_since_checkpoint() > 0)
            } else {
                r.audit_checkpoint_due(chain, policy, OffsetDateTime::now_utc())
                    .map_err(audit_err)
            }
        };
        if !due(&conn.reader(), &self.chain, &self.policy)? {
            return Ok(());
        }
        let open = conn.begin_immediate()?;
        let tx = open.tx();
        // Under the write lock nobody else appends: this head is the last one.
        tx.reload_audit_chain(&mut self.chain).map_err(audit_err)?;
        if due(&tx, &self.chain, &self.policy)? {
            self.sign(&tx, OffsetDateTime::now_utc())?;
        }
        drop(tx);
        Ok(open.commit()?)
    }

    /// Prunes events older than `retention_days` (at least 365) with a signed
    /// record (PostgreSQL: every node's chain, once across the cluster).
    pub(crate) fn prune(
        &mut self,
        conn: &Tx<'_>,
        now: OffsetDateTime,
        retention_days: i64,
    ) -> Result<Pruned, VaultError> {
        let days = retention_days.max(365);
        conn.prune_audit(&self.signer, now, time::Duration::days(days))
            .map_err(audit_err)
    }

    /// Signs an erasure receipt naming the storage engine and what residue of
    /// the erased records it may keep ([`erasure_residue`]). On PostgreSQL each
    /// node appends to a chain of its own, so `audit_seq` names an event only
    /// with the node: the receipt (v3) signs this process's node id, the one
    /// its events are appended under.
    pub(crate) fn sign_receipt(
        &self,
        subject_hash: String,
        tenant: &str,
        tokens_erased: u64,
        time: OffsetDateTime,
        audit_seq: u64,
        postgres: bool,
    ) -> Result<ErasureReceipt, VaultError> {
        let storage = erasure_residue(postgres);
        if postgres {
            ErasureReceipt::sign_on_node(
                &self.signer,
                subject_hash,
                tenant,
                tokens_erased,
                time,
                audit_seq,
                storage,
                crate::store::pg::node_id(),
            )
        } else {
            ErasureReceipt::sign_with_storage(
                &self.signer,
                subject_hash,
                tenant,
                tokens_erased,
                time,
                audit_seq,
                storage,
            )
        }
        .map_err(audit_err)
    }
}

/// What an erasure leaves behind, by engine, as the receipt states it.
pub(crate) fn erasure_residue(postgres: bool) -> panvault_audit::log::ReceiptStorage {
    let (engine, residue) = if postgres {
        (
            "postgresql",
            "The erased rows are deleted and their tables vacuumed afterwards \
             (erasure_requests.vacuumed_at records when). Until PostgreSQL reuses \
             those pages, and in its WAL, base backups and replicas until they are \
             recycled, the rows remain as ciphertext only (card, cardholder name and \
             metadata sealed with AES-256-GCM under the vault's data keys; the \
             subject only as a keyed hash): unreadable once the data key versions \
             they were sealed under are destroyed (keys rotate, rewrap, destroy).",
        )
    } else {
        (
            "sqlite",
            "The erased rows are deleted with secure_delete (their cells \
             overwritten) and the WAL is truncated afterwards (wal_scrubbed in the \
             answer; erasure_requests.wal_scrubbed_at records when). Backups of the \
             vault file taken before the erasure still hold the rows as ciphertext, \
             unreadable once the data key versions they were sealed under are \
             destroyed (keys rotate, rewrap, destroy).",
        )
    };
    panvault_audit::log::ReceiptStorage {
        engine: engine.into(),
        residue: residue.into(),
    }
}

/// A new Ed25519 signing key as PKCS#8.
pub(crate) fn generate_signing_key() -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let (_key, pkcs8) = SigningKey::generate().map_err(|_| VaultError::Crypto)?;
    Ok(pkcs8)
}

/// Creates the audit tables.
pub(crate) fn init_tables(conn: &Tx<'_>) -> Result<(), VaultError> {
    conn.migrate_audit().map_err(audit_err)
}

/// Writes `DIR/audit-signing.pub`.
pub(crate) fn write_public_key(dir: &Path, pkcs8: &[u8]) -> Result<PathBuf, VaultError> {
    let key = SigningKey::from_pkcs8(pkcs8).map_err(|_| VaultError::Crypto)?;
    let path = crate::DataDir::new(dir).audit_public_key();
    key.public_key()
        .write_to(&path)
        .map_err(|e| VaultError::io(&path, e))?;
    Ok(path)
}

/// Records an admin action (CLI) inside the caller's transaction, and signs a
/// checkpoint if one is due. Returns the event's sequence number.
pub(crate) fn record_admin(
    conn: &Tx<'_>,
    keys: &Keyring,
    actor: &AccessContext,
    action: AuditAction,
    details: Option<&str>,
    now: i64,
) -> Result<u64, VaultError> {
    let mut state = AuditState::load(conn, keys, CheckpointPolicy::default())?;
    state.register_node(conn, actor, now)?;
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

/// `audit checkpoint`: records `actor`'s event and signs a checkpoint covering
/// it, and so every event committed before, in one IMMEDIATE transaction (a
/// running server's writer waits for it, and nobody can append in between).
/// With `witness`, the checkpoint is also appended to that file.
pub(crate) fn sign_checkpoint_now(
    conn: &mut Session,
    keys: &Keyring,
    actor: &AccessContext,
    now: i64,
    witness: Option<&Path>,
) -> Result<SignedCheckpoint, VaultError> {
    let open = conn.begin_immediate()?;
    let tx = open.tx();
    let mut state = AuditState::load(&tx, keys, CheckpointPolicy::default())?;
    state.register_node(&tx, actor, now)?;
    let rec = AuditRecord {
        action: AuditAction::AuditCheckpoint,
        tenant: None,
        token: None,
        purpose: None,
        subject: None,
        outcome: AuditOutcome::Success,
        details: Some("signed a checkpoint covering this event"),
    };
    state.record(&tx, keys, actor, &rec, now)?;
    // Dated by the vault's clock, like the event it covers.
    let signed_at = OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| VaultError::AuditUnavailable(Some(Box::new(e))))?;
    let cp = state.sign(&tx, signed_at)?;
    drop(tx);
    open.commit()?;
    if let Some(path) = witness {
        SignedCheckpoint::append_to_witness(path, std::slice::from_ref(&cp))
            .map_err(|e| VaultError::io(path, e))?;
    }
    Ok(cp)
}

/// `audit prune`: deletes the events past `retention_days` (at least 365)
/// through a signed checkpoint, leaves a signed prune record, and records
/// `actor`'s event saying what it did, in one transaction (a kill leaves all
/// of it or none). PostgreSQL: no key lock (the nodes keep serving), every
/// node's chain at once, once across the cluster (the prune lock: busy if
/// another node or command prunes now, and nothing is recorded).
pub(crate) fn prune_now(
    conn: &mut Session,
    keys: &Keyring,
    actor: &AccessContext,
    now: OffsetDateTime,
    retention_days: i64,
) -> Result<Pruned, VaultError> {
    let open = if conn.is_postgres() {
        conn.begin()?
    } else {
        conn.begin_immediate()?
    };
    let tx = open.tx();
    let mut state = AuditState::load(&tx, keys, CheckpointPolicy::default())?;
    state.register_node(&tx, actor, now.unix_timestamp())?;
    let pruned = state.prune(&tx, now, retention_days)?;
    if pruned.busy() {
        drop(tx);
        drop(open); // rolls back: nothing was written
        return Ok(pruned);
    }
    let details = match pruned.describe() {
        Some(d) => format!("audit log pruned: {} events; {d}", pruned.deleted()),
        None => "audit log pruned: nothing past retention behind a checkpoint".to_owned(),
    };
    let rec = AuditRecord {
        action: AuditAction::RetentionPurge,
        tenant: None,
        token: None,
        purpose: None,
        subject: None,
        outcome: AuditOutcome::Success,
        details: Some(&details),
    };
    state.record(&tx, keys, actor, &rec, now.unix_timestamp())?;
    state.checkpoint_if_due(&tx, false)?;
    drop(tx);
    open.commit()?;
    Ok(pruned)
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
    let location = crate::store::Location::of(data_dir)?;
    if let crate::store::Location::Sqlite(db) = &location
        && !db.exists()
    {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    // Not `open_writer`: no migrations here, and a file that is not a vault is left alone.
    let conn = match Session::open_for_append_at(&location) {
        Err(crate::store::StoreError::NoVault) => {
            return Err(VaultError::NotInitialized(location.to_string()));
        }
        other => other.map_err(VaultError::Store)?,
    };
    if super::keyring::meta_get(&conn.reader(), "vault_id")
        .ok()
        .flatten()
        .is_none()
    {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    let open = conn.begin_immediate()?;
    let tx = open.tx();
    let mut chain = tx.load_audit_chain().map_err(audit_err)?;
    let time = OffsetDateTime::now_utc();
    let ev = NewEvent::new(time, actor_of(actor), action, Outcome::Success)
        .with_details(details.chars().take(4096).collect::<String>());
    let seq = tx.append_audit(&mut chain, &ev).map_err(audit_err)?;
    drop(tx);
    open.commit()?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn audit_failures_keep_the_audit_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        // No audit tables: loading the chain fails, and the refusal says why.
        let err = AuditChain::load(&conn).unwrap_err();
        let e = audit_err(err);
        assert!(matches!(e, VaultError::AuditUnavailable(Some(_))));
        let src = e.source().expect("the audit error is kept");
        assert!(
            src.downcast_ref::<panvault_audit::log::AuditError>()
                .is_some()
        );
    }
}
