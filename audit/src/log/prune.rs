//! Retention: deleting events older than the retention period, leaving a signed
//! record of where the kept log starts.
use rusqlite::{Connection, OptionalExtension};
use time::{Duration, OffsetDateTime};

use super::checkpoint::{Checkpoint, to_i64};
use super::encoding::ChainHash;
use super::error::AuditError;
use super::event::{from_time_ns, time_ns, utc};
use super::keys::{PublicKey, SigningKey};
use super::verify::{self, Bound};

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

    /// Decodes a row of `audit_prunes` (columns in schema order); `None` if a
    /// column does not hold what the schema says.
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> Option<PruneRecord> {
        let u = |i: usize| {
            row.get::<_, i64>(i)
                .ok()
                .and_then(|v| u64::try_from(v).ok())
        };
        let t = |i: usize| row.get::<_, i64>(i).ok().and_then(|v| from_time_ns(v).ok());
        Some(PruneRecord {
            id: u(0)?,
            first_seq: u(1)?,
            prev_hash: ChainHash::from_slice(&row.get::<_, Vec<u8>>(2).ok()?)?,
            checkpoint_id: u(3)?,
            cutoff: t(4)?,
            deleted: u(5)?,
            time: t(6)?,
            signature: <[u8; 64]>::try_from(row.get::<_, Vec<u8>>(7).ok()?.as_slice()).ok()?,
        })
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
pub fn prune(
    conn: &Connection,
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
    let cutoff_ns = time_ns(cutoff)?;

    // The first event that must be kept because of its age (events may be out of
    // time order: take the lowest seq of any young event).
    let first_young: Option<i64> = conn
        .query_row(
            "SELECT seq FROM audit_events WHERE time_ns >= ?1 ORDER BY seq LIMIT 1",
            [cutoff_ns],
            |r| r.get(0),
        )
        .optional()?;
    let limit = match first_young {
        Some(s) => s.saturating_sub(1),
        None => i64::MAX,
    };
    // The newest checkpoint at or before that, beyond what is already pruned.
    let start: i64 = conn.query_row(
        "SELECT COALESCE(MAX(first_seq), 1) FROM audit_prunes",
        [],
        |r| r.get(0),
    )?;
    let last_event: i64 =
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_events", [], |r| {
            r.get(0)
        })?;
    let cp: Option<Checkpoint> = conn
        .query_row(
            "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints \
             WHERE seq <= ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq DESC, id DESC LIMIT 1",
            [limit, start, last_event],
            |r| Ok(Checkpoint::from_row(r)),
        )
        .optional()?
        .flatten();
    let Some(cp) = cp else {
        return Ok(PruneReport {
            deleted: 0,
            record: None,
        });
    };

    // Keep the evidence if what would be deleted does not verify.
    let public = key.public_key();
    let report = verify::verify_bounded(conn, &public, &[], Bound::UpTo(cp.seq))?;
    if let Some(b) = report.problem {
        return Err(AuditError::Tampered {
            seq: b.seq,
            kind: b.kind,
        });
    }

    let deleted = conn.execute(
        "DELETE FROM audit_events WHERE seq <= ?1",
        [to_i64(cp.seq)?],
    )?;
    let deleted = u64::try_from(deleted).map_err(|_| AuditError::Overflow)?;
    let next_id: i64 = conn.query_row(
        "SELECT COALESCE(MAX(id), 0) + 1 FROM audit_prunes",
        [],
        |r| r.get(0),
    )?;
    let mut record = PruneRecord {
        id: u64::try_from(next_id).map_err(|_| AuditError::Overflow)?,
        first_seq: cp.seq.checked_add(1).ok_or(AuditError::Overflow)?,
        prev_hash: cp.head,
        checkpoint_id: cp.id,
        cutoff,
        deleted,
        time: now,
        signature: [0; 64],
    };
    record.signature = key.sign(&record.message()?);
    conn.execute(
        "INSERT INTO audit_prunes (id, first_seq, prev_hash, checkpoint_id, cutoff_ns, deleted, \
         time_ns, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            to_i64(record.id)?,
            to_i64(record.first_seq)?,
            &record.prev_hash.0[..],
            to_i64(record.checkpoint_id)?,
            cutoff_ns,
            to_i64(record.deleted)?,
            time_ns(record.time)?,
            &record.signature[..],
        ],
    )?;
    Ok(PruneReport {
        deleted,
        record: Some(record),
    })
}
