//! Verification: the whole chain and every signature, with only the public key.
//!
//! The rules that name a break are in `docs/audit-log.md`; in short, records
//! signed by the key (prune records, checkpoints, the anchor) are checked first,
//! then the events are walked in `seq` order from where the kept log starts. At
//! the first event that does not fit, a diagnosis looks at that row (or the gap)
//! and the rest of the table to say how the log was changed.
//!
//! `structure`: the signed records and how they fit together; `walk`: the two
//! threads over the events; `diagnose`: naming the break.
use std::fmt;

mod diagnose;
mod structure;
mod walk;

use diagnose::diagnose;
use structure::{Mark, check_structure, first_bad_signature, read_records};
use walk::walk;

use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;

use super::checkpoint::{Checkpoint, to_i64};
use super::encoding::ChainHash;
use super::error::AuditError;
use super::event::from_time_ns;
use super::keys::PublicKey;
use super::schema::{ReadTx, SCHEMA_VERSION};

/// How the log is broken.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum BreakKind {
    /// A stored value differs from what was hashed or signed (an event's column,
    /// its hash or prev_hash, its seq; or a stretch of events rewritten with
    /// recomputed hashes, caught by a checkpoint).
    Modified,
    /// Events, checkpoints or prune records are absent from the middle of the log.
    Missing,
    /// A row that was never appended by the vault (including a copy of an event).
    Inserted,
    /// Events are stored at the wrong place (e.g. two rows swapped).
    Reordered,
    /// The log ends before a signed checkpoint (in the log or the one given), or
    /// was rolled back to an earlier state.
    Truncated,
    /// A checkpoint, prune record or the given checkpoint does not verify with the
    /// public key (or cannot be decoded).
    BadSignature,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Modified => "modified",
            BreakKind::Missing => "missing",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::BadSignature => "bad signature",
        })
    }
}

/// Which record a break was found in.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum Location {
    /// An event row (or the place in the chain where one should be).
    Event,
    /// The checkpoint with this id.
    Checkpoint(u64),
    /// The prune record with this id.
    Prune(u64),
    /// The checkpoint given to [`verify`] (kept off the host).
    Anchor,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Event => f.write_str("event"),
            Location::Checkpoint(id) => write!(f, "checkpoint #{id}"),
            Location::Prune(id) => write!(f, "prune record #{id}"),
            Location::Anchor => f.write_str("the given checkpoint"),
        }
    }
}

/// The first place where the log is broken.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Break {
    /// The sequence number where the log breaks (for a checkpoint or prune
    /// record: the seq it states; rows stored with a negative seq are reported as 0).
    pub seq: u64,
    /// How.
    pub kind: BreakKind,
    /// In which record.
    pub location: Location,
    /// A sentence for people (no event contents).
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {} ({})", self.seq, self.kind, self.detail)
    }
}

/// What [`verify`] found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifyReport {
    /// Events that verified (up to the break, if any).
    pub events: u64,
    /// Checkpoints in the log (all verified, unless the problem is a bad signature).
    pub checkpoints: u64,
    /// Prune records in the log (likewise).
    pub prunes: u64,
    /// Where the kept log starts (1 unless pruned).
    pub first_seq: u64,
    /// The last event that verified (`first_seq - 1` if none).
    pub last_seq: u64,
    /// The hash of event `last_seq`.
    pub head: ChainHash,
    /// The latest checkpoint (highest id).
    pub last_checkpoint: Option<Checkpoint>,
    /// Events after the latest checkpoint: chained but not yet signed, so their
    /// removal from the end of the log could not be detected without a newer checkpoint.
    pub unsigned_tail: u64,
    /// When the oldest of those was appended (`None` when every event is signed):
    /// how long the tail has gone unsigned.
    pub unsigned_since: Option<OffsetDateTime>,
    /// The first break, or `None` when the log is intact.
    pub problem: Option<Break>,
    /// A log of several nodes: each node's chain as verified (up to the break,
    /// if any), by node name; `first_seq`, `last_seq` and `head` then stay 1,
    /// 0 and genesis, and `last_checkpoint` `None`. Empty for a single log (SQLite's).
    pub nodes: Vec<super::cluster::NodeHead>,
}

impl VerifyReport {
    /// `true` when no break was found.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// How far to walk the events (prune verifies only what it deletes).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    All,
    UpTo(u64),
}

/// Verifies the whole log with `key`: every prune record and checkpoint
/// signature, the chain of every kept event, every checkpoint's head, and —
/// with `anchor`, a checkpoint kept elsewhere — that the log still extends it.
/// A log that holds events but no checkpoint at all is broken (checkpoint #1,
/// which the vault signs when it is created, is missing).
///
/// Runs in one read transaction (or inside the caller's). A broken log is not an
/// error: it is reported in [`VerifyReport::problem`]. Errors are for a database
/// that cannot be read.
pub fn verify(
    conn: &Connection,
    key: &PublicKey,
    anchor: Option<&Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    match anchor {
        Some(a) => verify_against(conn, key, std::slice::from_ref(a)),
        None => verify_against(conn, key, &[]),
    }
}

/// [`verify`] against many checkpoints kept elsewhere (e.g. every line of a
/// witness file): the log must be consistent with each of them and extend the
/// newest. Two of them with the same id but different contents are a break
/// (the log was rolled back and signed again).
pub fn verify_against(
    conn: &Connection,
    key: &PublicKey,
    anchors: &[Checkpoint],
) -> Result<VerifyReport, AuditError> {
    verify_bounded(conn, key, anchors, Bound::All)
}

pub(crate) fn verify_bounded(
    conn: &Connection,
    key: &PublicKey,
    anchors: &[Checkpoint],
    bound: Bound,
) -> Result<VerifyReport, AuditError> {
    check_schema(conn)?;
    let _tx = ReadTx::begin(conn)?;
    let mut report = VerifyReport {
        events: 0,
        checkpoints: 0,
        prunes: 0,
        first_seq: 1,
        last_seq: 0,
        head: ChainHash::GENESIS,
        last_checkpoint: None,
        unsigned_tail: 0,
        unsigned_since: None,
        problem: None,
        nodes: Vec::new(),
    };
    let records = match read_records(conn)? {
        Ok(r) => r,
        Err(b) => {
            report.problem = Some(b);
            return Ok(report);
        }
    };
    report.prunes = u64::try_from(records.prunes.len()).map_err(|_| AuditError::Overflow)?;
    report.checkpoints =
        u64::try_from(records.checkpoints.len()).map_err(|_| AuditError::Overflow)?;
    report.last_checkpoint = records.checkpoints.last().cloned();
    // Signatures are checked before anything they vouch for is reported; during
    // the walk they are checked by the hasher thread.
    let signatures = || first_bad_signature(&records, anchors, key);
    let signed = match check_structure(&records, anchors) {
        Ok(s) => s,
        Err(b) => {
            report.problem = Some(signatures().unwrap_or(b));
            return Ok(report);
        }
    };
    report.first_seq = signed.start;
    report.last_seq = signed.start.saturating_sub(1);
    report.head = signed.start_prev;

    let until = match bound {
        Bound::All => None,
        Bound::UpTo(u) => Some(u),
    };
    let mut marks: Vec<Mark> = signed
        .marks
        .into_iter()
        .filter(|m| until.is_none_or(|u| m.seq <= u))
        .collect();
    marks.sort_by_key(|m| m.seq);
    let (walk, bad_signature) = walk(
        conn,
        signed.start,
        signed.start_prev,
        &marks,
        until,
        signatures,
    )?;
    report.events = walk.events;
    report.last_seq = walk.e.saturating_sub(1);
    report.head = walk.p;
    if let Some(b) = bad_signature {
        report.problem = Some(b);
        return Ok(report);
    }
    let problem = diagnose(conn, &walk, &marks, signed.start, until)?;
    let problem = match problem {
        Some(p) => Some(p),
        None => signed.anchor_beyond.map(|(anchor_seq, missing_id)| Break {
            seq: anchor_seq,
            kind: BreakKind::Missing,
            location: Location::Checkpoint(missing_id),
            detail: format!(
                "checkpoints from #{missing_id} on were removed (the given checkpoint is newer)"
            ),
        }),
    };
    // The vault signs checkpoint #1 in the transaction that creates it, and
    // checkpoints are never deleted: events without any checkpoint mean the
    // checkpoints were removed (and with them the proof of the log's length).
    let problem = match problem {
        None if records.checkpoints.is_empty() && walk.events > 0 => Some(Break {
            seq: report.first_seq,
            kind: BreakKind::Missing,
            location: Location::Checkpoint(1),
            detail: "the log holds events but no signed checkpoint: checkpoint #1 is missing"
                .to_owned(),
        }),
        p => p,
    };
    let signed_up_to = match &report.last_checkpoint {
        Some(cp) => cp.seq,
        None => report.first_seq.saturating_sub(1),
    };
    report.unsigned_tail = report.last_seq.saturating_sub(signed_up_to);
    if report.unsigned_tail > 0 {
        report.unsigned_since = event_time(conn, signed_up_to.saturating_add(1))?;
    }
    report.problem = problem;
    Ok(report)
}

/// The time of the event stored at `seq`, if it is there and readable.
fn event_time(conn: &Connection, seq: u64) -> Result<Option<OffsetDateTime>, AuditError> {
    let t: Option<i64> = conn
        .query_row(
            "SELECT time_ns FROM audit_events WHERE seq = ?1",
            [to_i64(seq)?],
            |r| r.get(0),
        )
        .optional()?;
    Ok(t.and_then(|t| from_time_ns(t).ok()))
}

fn check_schema(conn: &Connection) -> Result<(), AuditError> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN \
         ('audit_meta', 'audit_events', 'audit_checkpoints', 'audit_prunes')",
        [],
        |r| r.get(0),
    )?;
    if tables != 4 {
        return Err(AuditError::NotAnAuditLog);
    }
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM audit_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(AuditError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}
