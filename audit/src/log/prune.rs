//! Retention: deleting events older than the retention period, leaving a signed
//! record of where the kept log starts.
use time::{Duration, OffsetDateTime};

use super::encoding::ChainHash;
use super::error::AuditError;
use super::event::{time_ns, utc};
use super::keys::{PublicKey, SigningKey};
use super::store::LogTx;

/// Domain separation for prune-record signatures.
const PRUNE_DOMAIN: &[u8] = b"panvault-audit prune v1\0";

/// Default retention of audit events (PCI DSS 10.5.1: at least twelve months).
pub const DEFAULT_RETENTION: Duration = Duration::days(365);
/// The shortest retention [`prune`] accepts.
pub const MIN_RETENTION: Duration = Duration::days(365);

/// A signed statement that the events before `first_seq` were deleted under the
/// retention policy; verification starts at `first_seq` with `prev_hash`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PruneRecord {
    /// Record number: 1, 2, 3 … without gaps.
    pub id: u64,
    /// The first event kept.
    pub first_seq: u64,
    /// The hash of event `first_seq - 1` (the head of checkpoint `checkpoint_id`).
    pub prev_hash: ChainHash,
    /// The checkpoint at `first_seq - 1`, where verification of the kept log starts.
    pub checkpoint_id: u64,
    /// Events older than this were eligible.
    pub cutoff: OffsetDateTime,
    /// How many events this purge deleted.
    pub deleted: u64,
    /// When the purge ran.
    pub time: OffsetDateTime,
    /// Ed25519 signature over all the fields above.
    pub signature: [u8; 64],
}

impl PruneRecord {
    fn message(&self) -> Result<Vec<u8>, AuditError> {
        let mut m = Vec::with_capacity(PRUNE_DOMAIN.len() + 8 * 6 + 32);
        m.extend_from_slice(PRUNE_DOMAIN);
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&self.first_seq.to_be_bytes());
        m.extend_from_slice(&self.prev_hash.0);
        m.extend_from_slice(&self.checkpoint_id.to_be_bytes());
        m.extend_from_slice(&time_ns(self.cutoff)?.to_be_bytes());
        m.extend_from_slice(&self.deleted.to_be_bytes());
        m.extend_from_slice(&time_ns(self.time)?.to_be_bytes());
        Ok(m)
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        key.verify(&self.message()?, &self.signature)
    }
}

/// What a purge did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PruneReport {
    /// Events deleted (0: nothing was old enough and covered by a checkpoint).
    pub deleted: u64,
    /// The signed record written, if anything was deleted.
    pub record: Option<PruneRecord>,
}

/// Deletes, inside the caller's transaction, the events that are older than
/// `retention` at `now` **and** covered by a signed checkpoint, after checking
/// that they verify (a broken log is kept as evidence: [`AuditError::Tampered`]).
///
/// Deletion stops at the newest checkpoint `c` such that every event up to
/// `c.seq` is older than `now - retention`; a signed [`PruneRecord`] then says
/// the kept log starts at `c.seq + 1` with `prev_hash = c.head`. Checkpoints are
/// never deleted. Events younger than the retention are never deleted, whatever
/// their order in the log. `retention` below [`MIN_RETENTION`] is refused.
pub fn prune<S: LogTx + ?Sized>(
    store: &S,
    key: &SigningKey,
    now: OffsetDateTime,
    retention: Duration,
) -> Result<PruneReport, AuditError> {
    if retention < MIN_RETENTION {
        return Err(AuditError::RetentionTooShort {
            days: retention.whole_days(),
            min_days: MIN_RETENTION.whole_days(),
        });
    }
    let now = utc(now)?;
    let cutoff = now
        .checked_sub(retention)
        .ok_or(AuditError::TimeOutOfRange)?;

    // The first event that must be kept because of its age (events may be out of
    // time order: take the lowest seq of any young event).
    let limit = match store.first_event_since(time_ns(cutoff)?)? {
        Some(s) => s.saturating_sub(1),
        None => u64::MAX,
    };
    // The newest checkpoint at or before that, beyond what is already pruned.
    let none = PruneReport {
        deleted: 0,
        record: None,
    };
    let start = store.kept_from()?;
    let Some(last_event) = store.log_end()?.0 else {
        return Ok(none); // no event to delete
    };
    let hi = limit.min(last_event);
    if start > hi {
        return Ok(none);
    }
    let Some(cp) = store.newest_checkpoint_between(start, hi)? else {
        return Ok(none);
    };

    // Keep the evidence if what would be deleted does not verify.
    let report = store.verify_through(&key.public_key(), cp.seq)?;
    if let Some(b) = report.problem {
        return Err(AuditError::Tampered {
            seq: b.seq,
            kind: b.kind,
        });
    }

    let deleted = store.delete_events_through(cp.seq)?;
    let mut record = PruneRecord {
        id: store.next_prune_id()?,
        first_seq: cp.seq.checked_add(1).ok_or(AuditError::Overflow)?,
        prev_hash: cp.head,
        checkpoint_id: cp.id,
        cutoff,
        deleted,
        time: now,
        signature: [0; 64],
    };
    record.signature = key.sign(&record.message()?);
    store.insert_prune(&record)?;
    Ok(PruneReport {
        deleted,
        record: Some(record),
    })
}

impl PruneRecord {
    /// A stored prune record from its columns (for any engine): the numbers
    /// `[id, first_seq, checkpoint_id, cutoff_ns, deleted, time_ns]`, then
    /// `prev_hash` and `signature`; `None` if one does not hold what the schema says.
    pub fn from_columns(
        numbers: [i64; 6],
        prev_hash: &[u8],
        signature: &[u8],
    ) -> Option<PruneRecord> {
        let [id, first_seq, checkpoint_id, cutoff_ns, deleted, time_ns] = numbers;
        let u = |v: i64| u64::try_from(v).ok();
        let t = |v: i64| super::event::from_time_ns(v).ok();
        Some(PruneRecord {
            id: u(id)?,
            first_seq: u(first_seq)?,
            prev_hash: ChainHash::from_slice(prev_hash)?,
            checkpoint_id: u(checkpoint_id)?,
            cutoff: t(cutoff_ns)?,
            deleted: u(deleted)?,
            time: t(time_ns)?,
            signature: <[u8; 64]>::try_from(signature).ok()?,
        })
    }
}
