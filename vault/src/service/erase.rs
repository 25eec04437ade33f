//! GDPR erasure (Art. 17) and card-data retention (PCI DSS 3.2.1).
//!
//! An erasure deletes every record of a data subject (or one token) in a tenant in
//! one transaction, together with its audit event and an `erasure_requests` row,
//! then checkpoints and truncates the WAL so the deleted bytes are gone from both
//! files (`secure_delete` zeroes them in the pages). The caller gets a receipt
//! signed with the audit key naming the event's sequence number. The audit log
//! keeps only the keyed hash of the subject, so it never needs rewriting.

use time::OffsetDateTime;

use super::audit_hook::{AuditAction, AuditOutcome, AuditRecord, AuditState};
use super::keyring::Keyring;
use super::request::{AccessContext, validate_subject};
use super::state::DedupIndex;
use super::{Vault, validate_tenant};
use crate::core::token::Token;
use crate::error::VaultError;
use crate::store::erasure::{self, DeletedCard};
use crate::store::{self, Reader, StoreError, Tx};
use panvault_audit::log::{ErasureReceipt, subject_hash};

/// What to erase.
#[derive(Debug, Clone)]
pub enum EraseTarget {
    /// Every token of a data subject.
    Subject(String),
    /// One token.
    Token(String),
}

/// The result of an erasure.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// The signed receipt.
    pub receipt: ErasureReceipt,
    /// Whether the WAL was truncated (no older copies of the pages left).
    pub wal_scrubbed: bool,
}

/// What a retention run found or did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PurgeReport {
    /// Cards whose expiry month ended more than the grace period ago.
    pub past_expiry: u64,
    /// Tokens whose own time-to-live ran out.
    pub past_ttl: u64,
    /// Whether anything was deleted (false for a dry run).
    pub deleted: bool,
    /// Audit sequence number of the purge event (not for dry runs).
    pub audit_seq: Option<u64>,
}

/// The month index (year * 12 + month - 1) before which a card's expiry month
/// must have ended for it to be purged at `now` with `grace_days`.
fn cutoff_month(now: OffsetDateTime, grace_days: i64) -> i64 {
    let cutoff = now - time::Duration::days(grace_days.max(0));
    i64::from(cutoff.year()) * 12 + i64::from(u8::from(cutoff.month())) - 1
}

/// Notes each deleted card in the server's dedup index (if any), to be forgotten
/// once the batch commits; returns how many rows were deleted. Every delete of
/// cards the server makes goes through here (API delete, erasure, retention purge).
pub(crate) fn note_deleted(
    deleted: Result<Vec<DeletedCard>, StoreError>,
    dedup: Option<&mut DedupIndex>,
) -> Result<usize, VaultError> {
    let deleted = deleted.map_err(VaultError::Store)?;
    if let Some(d) = dedup {
        for (id, fp) in &deleted {
            d.deleted_in_batch(fp, *id);
        }
    }
    Ok(deleted.len())
}

/// Checks an erase request before anything is deleted.
pub(crate) fn check_erase(tenant: &str, target: &EraseTarget) -> Result<(), VaultError> {
    validate_tenant(tenant)?;
    if let EraseTarget::Subject(s) = target {
        validate_subject(s)?;
    }
    Ok(())
}

/// The audit record of a refused erasure. It names the tenant only if it is a
/// valid one and the token only if it parses; a refused subject is never
/// recorded, not even as a hash (it may be a card number), only the reason.
pub(crate) fn refused_erase_record<'a>(
    tenant: &'a str,
    error: &VaultError,
    token: Option<&'a Token>,
    details: &'a str,
) -> AuditRecord<'a> {
    AuditRecord {
        action: AuditAction::Erase,
        tenant: validate_tenant(tenant).is_ok().then_some(tenant),
        token: token.map(Token::as_str),
        purpose: None,
        subject: None,
        outcome: AuditOutcome::from_error(error),
        details: Some(details),
    }
}

/// `refused=<field>` for a validation error, `refused=not_found` otherwise.
pub(crate) fn refusal_details(error: &VaultError) -> String {
    match error {
        VaultError::InvalidRequest { field, .. } => format!("refused={field}"),
        VaultError::NotFound => "refused=not_found".to_owned(),
        _ => "refused".to_owned(),
    }
}

pub(crate) fn target_token(target: &EraseTarget) -> Option<Token> {
    match target {
        EraseTarget::Token(t) => Token::parse(t),
        EraseTarget::Subject(_) => None,
    }
}

/// The keyed subject hash and the token an erasure of `target` is recorded under.
fn request_identity(
    keys: &Keyring,
    tenant: &str,
    target: &EraseTarget,
) -> Result<(String, Option<Token>), VaultError> {
    Ok(match target {
        EraseTarget::Subject(s) => (
            subject_hash(keys.subject_key.expose_secret(), tenant, s),
            None,
        ),
        EraseTarget::Token(t) => {
            let parsed = Token::parse(t).ok_or(VaultError::NotFound)?;
            (
                subject_hash(
                    keys.subject_key.expose_secret(),
                    tenant,
                    &format!("token:{}", parsed.as_str()),
                ),
                Some(parsed),
            )
        }
    })
}

/// Records an erasure request as it arrives, in a transaction of its own before
/// the erasure's: if the erasure then fails, the request stays open and the
/// compliance check of the erasure deadline sees it. `None` for a token that
/// cannot exist (the erasure answers not found).
pub(crate) fn open_request_in_tx(
    conn: &Tx<'_>,
    keys: &Keyring,
    tenant: &str,
    target: &EraseTarget,
    now: i64,
) -> Result<Option<i64>, VaultError> {
    let Ok((hash, token)) = request_identity(keys, tenant, target) else {
        return Ok(None);
    };
    conn.insert_open_erasure_request(tenant, &hash, token.as_ref().map(Token::as_str), now)
        .map(Some)
        .map_err(VaultError::Store)
}

/// Completes request `id` when there was nothing to erase (an unknown token).
pub(crate) fn close_empty_request(conn: &Tx<'_>, id: i64, now: i64) -> Result<(), VaultError> {
    conn.complete_erasure_request(id, now, 0, None)
        .map(drop)
        .map_err(VaultError::Store)
}

/// Erases inside `conn`'s transaction; returns the receipt. `dedup`: the server's
/// index (none in the CLI's own process). `request`: the open request this
/// erasure completes (from [`open_request_in_tx`]); without one, the request is
/// recorded as arriving and completing now.
#[allow(clippy::too_many_arguments)]
pub(crate) fn erase_in_tx(
    conn: &Tx<'_>,
    audit: &mut AuditState,
    keys: &Keyring,
    ctx: &AccessContext,
    tenant: &str,
    target: &EraseTarget,
    now: i64,
    dedup: Option<&mut DedupIndex>,
    request: Option<i64>,
) -> Result<ErasureReceipt, VaultError> {
    let (n, subject_key_hash, token, subject) = match target {
        EraseTarget::Subject(s) => {
            let hash = super::personal::subject_hash(keys, tenant, s);
            let n = note_deleted(conn.delete_subject(tenant, s, &hash), dedup)?;
            (
                n,
                subject_hash(keys.subject_key.expose_secret(), tenant, s),
                None,
                Some(s.as_str()),
            )
        }
        EraseTarget::Token(t) => {
            let parsed = Token::parse(t).ok_or(VaultError::NotFound)?;
            let n = note_deleted(conn.delete_token(tenant, parsed.as_str()), dedup)?;
            (
                n,
                subject_hash(
                    keys.subject_key.expose_secret(),
                    tenant,
                    &format!("token:{}", parsed.as_str()),
                ),
                Some(parsed),
                None,
            )
        }
    };
    let tokens_erased = i64::try_from(n)
        .map_err(|e| VaultError::internal_from("an erased-record count overflowed", e))?;
    let n = store::count_u64(tokens_erased)?;
    let details = format!("tokens_erased={n}");
    let rec = AuditRecord {
        action: AuditAction::Erase,
        tenant: Some(tenant),
        token: token.as_ref().map(Token::as_str),
        purpose: None,
        subject,
        outcome: AuditOutcome::Success,
        details: Some(&details),
    };
    let seq = audit.record(conn, keys, ctx, &rec, now)?;
    let audit_seq = i64::try_from(seq)
        .map_err(|e| VaultError::internal_from("an audit sequence number overflowed", e))?;
    let completed = match request {
        Some(id) => conn
            .complete_erasure_request(id, now, tokens_erased, Some(audit_seq))
            .map_err(VaultError::Store)?,
        None => false,
    };
    if !completed {
        conn.insert_completed_erasure(&erasure::CompletedErasure {
            tenant,
            subject_hash: &subject_key_hash,
            token: token.as_ref().map(Token::as_str),
            at: now,
            tokens_erased,
            audit_seq,
        })
        .map_err(VaultError::Store)?;
    }
    // Page copies of the erased rows stay in the WAL until it is truncated: marked in
    // the same transaction, so whoever truncates next (this caller, or a server's
    // checkpointer if a reader prevents it now) knows to.
    conn.mark_scrub_pending(now).map_err(VaultError::Store)?;
    let time = OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| VaultError::internal_from("the clock is out of range", e))?;
    audit.sign_receipt(subject_key_hash, tenant, n, time, seq, conn.is_postgres())
}

/// Purges (or counts, for a dry run) records past retention inside `conn`'s
/// transaction. `dedup`: the server's index (none in the CLI's own process).
#[allow(clippy::too_many_arguments)]
pub(crate) fn purge_in_tx(
    conn: &Tx<'_>,
    audit: &mut AuditState,
    keys: &Keyring,
    ctx: &AccessContext,
    grace_days: i64,
    dry_run: bool,
    now: OffsetDateTime,
    dedup: Option<&mut DedupIndex>,
) -> Result<PurgeReport, VaultError> {
    let cutoff = cutoff_month(now, grace_days);
    let ts = now.unix_timestamp();
    let count = |n: Result<i64, StoreError>| -> Result<u64, VaultError> {
        Ok(store::count_u64(n.map_err(VaultError::Store)?)?)
    };
    let past_expiry = count(conn.count_past_expiry(cutoff, ts))?;
    let past_ttl = count(conn.count_past_ttl_only(cutoff, ts))?;
    if dry_run {
        return Ok(PurgeReport {
            past_expiry,
            past_ttl,
            deleted: false,
            audit_seq: None,
        });
    }
    note_deleted(conn.delete_past_retention(cutoff, ts), dedup)?;
    purged(
        conn,
        audit,
        keys,
        ctx,
        past_expiry,
        past_ttl,
        grace_days,
        ts,
    )
}

/// Ids of the cards past retention at `now` (read without the write lock; each is
/// checked again when deleted by [`purge_ids_in_tx`]).
pub(crate) fn purge_candidates(
    conn: &Reader<'_>,
    grace_days: i64,
    now: OffsetDateTime,
) -> Result<Vec<i64>, VaultError> {
    conn.retention_candidates(cutoff_month(now, grace_days), now.unix_timestamp())
        .map_err(VaultError::Store)
}

/// Deletes those of `ids` still past retention inside `conn`'s transaction, with
/// one audit event for them (the CLI's `retention run`, a chunk at a time).
pub(crate) fn purge_ids_in_tx(
    conn: &Tx<'_>,
    audit: &mut AuditState,
    keys: &Keyring,
    ctx: &AccessContext,
    ids: &[i64],
    grace_days: i64,
    now: OffsetDateTime,
) -> Result<PurgeReport, VaultError> {
    let cutoff = cutoff_month(now, grace_days);
    let ts = now.unix_timestamp();
    let mut past_expiry = 0u64;
    let mut past_ttl = 0u64;
    for id in ids {
        if note_deleted(conn.delete_id_past_expiry(*id, cutoff), None)? > 0 {
            past_expiry += 1;
        } else if note_deleted(conn.delete_id_past_ttl(*id, ts), None)? > 0 {
            past_ttl += 1;
        }
    }
    purged(
        conn,
        audit,
        keys,
        ctx,
        past_expiry,
        past_ttl,
        grace_days,
        ts,
    )
}

/// After a purge deleted `past_expiry + past_ttl` cards in `conn`'s transaction: marks
/// the WAL for scrubbing if anything went, records the purge's audit event, and
/// reports it.
#[expect(
    clippy::too_many_arguments,
    reason = "the purge's transaction, audit state and keys, who, and its figures"
)]
fn purged(
    conn: &Tx<'_>,
    audit: &mut AuditState,
    keys: &Keyring,
    ctx: &AccessContext,
    past_expiry: u64,
    past_ttl: u64,
    grace_days: i64,
    ts: i64,
) -> Result<PurgeReport, VaultError> {
    if past_expiry + past_ttl > 0 {
        conn.mark_scrub_pending(ts).map_err(VaultError::Store)?;
    }
    let details = format!("past_expiry={past_expiry} past_ttl={past_ttl} grace_days={grace_days}");
    let rec = AuditRecord {
        action: AuditAction::RetentionPurge,
        tenant: None,
        token: None,
        purpose: None,
        subject: None,
        outcome: AuditOutcome::Success,
        details: Some(&details),
    };
    let seq = audit.record(conn, keys, ctx, &rec, ts)?;
    Ok(PurgeReport {
        past_expiry,
        past_ttl,
        deleted: true,
        audit_seq: Some(seq),
    })
}

impl Vault {
    /// Erases every record of `target` in `tenant` and returns a signed receipt.
    /// Erasing a subject with no tokens is not an error (the receipt says 0).
    pub async fn erase(
        &self,
        tenant: &str,
        target: EraseTarget,
        ctx: &AccessContext,
    ) -> Result<Erasure, VaultError> {
        if let Err(e) = check_erase(tenant, &target) {
            // A refused erasure is audited like any other refusal; if it cannot
            // be, the caller learns that instead.
            let token = target_token(&target);
            let details = refusal_details(&e);
            let rec = refused_erase_record(tenant, &e, token.as_ref(), &details);
            self.append_event(ctx, &rec).await?;
            return Err(e);
        }
        let keys = self.keys()?;
        let tenant_s = tenant.to_owned();
        let ctx = ctx.clone();
        let arrived = self.now().unix_timestamp();
        let request = {
            let (keys, tenant, target) = (keys.clone(), tenant_s.clone(), target.clone());
            self.write(move |conn, _| {
                match open_request_in_tx(conn, &keys, &tenant, &target, arrived) {
                    Ok(id) => (true, Ok(id)),
                    Err(e) => (false, Err(e)),
                }
            })
            .await?
        };
        let now = self.now().unix_timestamp();
        let receipt = self
            .write(move |conn, state| {
                let (audit, dedup) = state.audit_and_dedup();
                let result = erase_in_tx(
                    conn,
                    audit,
                    &keys,
                    &ctx,
                    &tenant_s,
                    &target,
                    now,
                    Some(dedup),
                    request,
                );
                match result {
                    Ok(r) => (true, Ok(r)),
                    Err(VaultError::NotFound) => {
                        // Audited in the same transaction; no event, no answer.
                        // Nothing was held: the request is done.
                        let e = VaultError::NotFound;
                        if let Some(id) = request
                            && let Err(c) = close_empty_request(conn, id, now)
                        {
                            return (false, Err(c));
                        }
                        let token = target_token(&target);
                        let details = refusal_details(&e);
                        let rec = refused_erase_record(&tenant_s, &e, token.as_ref(), &details);
                        match audit.record(conn, &keys, &ctx, &rec, now) {
                            Ok(_) => (true, Err(e)),
                            Err(a) => (false, Err(a)),
                        }
                    }
                    Err(e) => (false, Err(e)),
                }
            })
            .await?;
        let wal_scrubbed = self.scrub_deleted().await;
        Ok(Erasure {
            receipt,
            wal_scrubbed,
        })
    }

    /// Deletes records past retention: cards whose expiry month ended more than
    /// `grace_days` ago and tokens past their own TTL. One audit event with the
    /// counts. A dry run only counts.
    pub async fn purge_retention(
        &self,
        grace_days: i64,
        dry_run: bool,
        ctx: &AccessContext,
    ) -> Result<PurgeReport, VaultError> {
        let keys = self.keys()?;
        let ctx = ctx.clone();
        let now = self.now();
        let report = self
            .write(move |conn, state| {
                let (audit, dedup) = state.audit_and_dedup();
                let result = purge_in_tx(
                    conn,
                    audit,
                    &keys,
                    &ctx,
                    grace_days,
                    dry_run,
                    now,
                    Some(dedup),
                );
                match result {
                    Ok(r) => (true, Ok(r)),
                    Err(e) => (false, Err(e)),
                }
            })
            .await?;
        if report.deleted && report.past_expiry + report.past_ttl > 0 {
            let _ = self.scrub_deleted().await;
        }
        Ok(report)
    }

    /// The server's periodic purge: [`Vault::purge_retention`] in the same
    /// transaction as the claim of this round ([`Tx::claim_round`]), so nodes
    /// sharing a database run each round once between them, and a purge that
    /// fails or whose node is killed rolls its claim back with it: the next
    /// round, on whichever node, does the whole of it. `None`: not this node's
    /// round.
    pub async fn purge_retention_round(
        &self,
        grace_days: i64,
        every: std::time::Duration,
        ctx: &AccessContext,
    ) -> Result<Option<PurgeReport>, VaultError> {
        let keys = self.keys()?;
        let ctx = ctx.clone();
        let now = self.now();
        let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
        let report = self
            .write(move |conn, state| {
                let claimed =
                    conn.claim_round(store::Upkeep::Retention, now.unix_timestamp(), every);
                match claimed {
                    Ok(true) => {}
                    Ok(false) => return (true, Ok(None)),
                    Err(e) => return (false, Err(VaultError::Store(e))),
                }
                let (audit, dedup) = state.audit_and_dedup();
                let result = purge_in_tx(
                    conn,
                    audit,
                    &keys,
                    &ctx,
                    grace_days,
                    false,
                    now,
                    Some(dedup),
                );
                match result {
                    Ok(r) => (true, Ok(Some(r))),
                    Err(e) => (false, Err(e)),
                }
            })
            .await?;
        if report
            .as_ref()
            .is_some_and(|r| r.past_expiry + r.past_ttl > 0)
        {
            let _ = self.scrub_deleted().await;
        }
        Ok(report)
    }
}

impl Vault {
    /// Claims this round of the periodic `task` for this node (see
    /// [`Tx::claim_round`]): false when another node runs it or ran it within
    /// the last nine tenths of `every`. On SQLite always true.
    pub async fn claim_upkeep_round(
        &self,
        task: store::Upkeep,
        every: std::time::Duration,
    ) -> Result<bool, VaultError> {
        if !self.is_postgres() {
            // One server per database: nothing to claim, no batch to spend on it.
            return Ok(true);
        }
        let now = self.now().unix_timestamp();
        let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
        self.write(move |conn, _| {
            let r = conn
                .claim_round(task, now, every)
                .map_err(VaultError::Store);
            (r.is_ok(), r)
        })
        .await
    }

    /// Deletes audit events older than `retention_days` (never younger than 365
    /// days), leaving a signed prune record. Returns how many were deleted.
    /// PostgreSQL: every node's chain at once, once across the cluster (0 when
    /// another node or an admin command prunes now).
    pub async fn prune_audit(&self, retention_days: i64) -> Result<u64, VaultError> {
        let now = self.now();
        self.write(
            move |conn, state| match state.audit_mut().prune(conn, now, retention_days) {
                Ok(p) => (true, Ok(p.deleted())),
                Err(e) => (false, Err(e)),
            },
        )
        .await
    }
}

/// Open erasure requests (not completed) older than `days`, for compliance checks.
pub fn open_erasure_requests(
    conn: &Reader<'_>,
    older_than_days: i64,
    now: OffsetDateTime,
) -> Result<i64, VaultError> {
    let cutoff = now.unix_timestamp() - older_than_days * 86_400;
    conn.count_open_requests_before(cutoff)
        .map_err(VaultError::Store)
}
