//! The signed records (prune records, checkpoints, the given anchors): read,
//! signatures checked, and how they fit together; says where the walk starts
//! and which signed heads it must meet.
use rusqlite::Connection;

use super::{Break, BreakKind, Location};
use crate::log::checkpoint::Checkpoint;
use crate::log::encoding::ChainHash;
use crate::log::error::AuditError;
use crate::log::keys::PublicKey;
use crate::log::prune::PruneRecord;

/// A signed head the walk must meet: a checkpoint or the anchor.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark {
    pub(super) seq: u64,
    pub(super) head: ChainHash,
    pub(super) location: Location,
}

/// What the signed records say.
pub(super) struct Signed {
    /// First event of the kept log, and its prev_hash.
    pub(super) start: u64,
    pub(super) start_prev: ChainHash,
    /// Heads to meet on the walk.
    pub(super) marks: Vec<Mark>,
    /// The anchor is newer than every checkpoint in the log: (its seq, first missing id).
    pub(super) anchor_beyond: Option<(u64, u64)>,
}

/// The signed records of the log, decoded (not yet verified).
pub(super) struct Records {
    pub(super) prunes: Vec<PruneRecord>,
    pub(super) checkpoints: Vec<Checkpoint>,
}

/// Reads prune records and checkpoints in id order. Outer error: the database;
/// inner error: a record that cannot be decoded (reported as a bad signature).
pub(super) fn read_records(conn: &Connection) -> Result<Result<Records, Break>, AuditError> {
    let mut prunes: Vec<PruneRecord> = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, first_seq, prev_hash, checkpoint_id, cutoff_ns, deleted, time_ns, \
             signature FROM audit_prunes ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let raw_id: i64 = row.get(0)?;
            let Some(p) = PruneRecord::from_row(row) else {
                let loc = Location::Prune(u64::try_from(raw_id).unwrap_or(0));
                return Ok(Err(bad_sig(0, loc, "it cannot be decoded")));
            };
            prunes.push(p);
        }
    }
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let raw_id: i64 = row.get(0)?;
            let Some(cp) = Checkpoint::from_row(row) else {
                let loc = Location::Checkpoint(u64::try_from(raw_id).unwrap_or(0));
                let seq = row
                    .get::<_, i64>(1)
                    .ok()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0);
                return Ok(Err(bad_sig(seq, loc, "it cannot be decoded")));
            };
            checkpoints.push(cp);
        }
    }
    Ok(Ok(Records {
        prunes,
        checkpoints,
    }))
}

/// The first record whose signature fails: prune records, then checkpoints (in
/// id order), then the anchor.
pub(super) fn first_bad_signature(
    records: &Records,
    anchors: &[Checkpoint],
    key: &PublicKey,
) -> Option<Break> {
    let why = "it does not verify with this public key";
    if let Some(p) = records.prunes.iter().find(|p| p.verify(key).is_err()) {
        return Some(bad_sig(p.first_seq, Location::Prune(p.id), why));
    }
    if let Some(c) = records.checkpoints.iter().find(|c| c.verify(key).is_err()) {
        return Some(bad_sig(c.seq, Location::Checkpoint(c.id), why));
    }
    anchors.iter().find(|a| a.verify(key).is_err()).map(|a| {
        bad_sig(
            a.seq,
            Location::Anchor,
            &format!(
                "the given checkpoint #{} does not verify with this public key",
                a.id
            ),
        )
    })
}

/// Checks how the signed records fit together (numbering, prune records against
/// checkpoints, the anchor against the log) and says where the walk starts and
/// which heads it must meet.
pub(super) fn check_structure(records: &Records, anchors: &[Checkpoint]) -> Result<Signed, Break> {
    let prunes = &records.prunes;
    let checkpoints = &records.checkpoints;
    // Numbering without gaps (ids are signed, so a gap is a deleted record).
    let mut expected = 1u64;
    for p in prunes {
        if p.id != expected {
            return Err(Break {
                seq: p.first_seq,
                kind: BreakKind::Missing,
                location: Location::Prune(expected),
                detail: format!("prune record #{expected} is missing"),
            });
        }
        expected = expected.saturating_add(1);
    }
    let mut expected = 1u64;
    for cp in checkpoints {
        if cp.id != expected {
            return Err(Break {
                seq: cp.seq,
                kind: BreakKind::Missing,
                location: Location::Checkpoint(expected),
                detail: format!("checkpoint #{expected} is missing"),
            });
        }
        expected = expected.saturating_add(1);
    }

    // Each prune record starts right after the checkpoint it names.
    for p in prunes {
        let fits = checkpoints.iter().any(|c| {
            c.id == p.checkpoint_id
                && c.seq.checked_add(1) == Some(p.first_seq)
                && c.head == p.prev_hash
        });
        if !fits {
            return Err(Break {
                seq: p.first_seq,
                kind: BreakKind::Modified,
                location: Location::Prune(p.id),
                detail: format!(
                    "prune record #{} does not match checkpoint #{}",
                    p.id, p.checkpoint_id
                ),
            });
        }
    }

    let (start, start_prev) = match prunes.last() {
        Some(p) => (p.first_seq, p.prev_hash),
        None => (1, ChainHash::GENESIS),
    };
    let mut marks: Vec<Mark> = checkpoints
        .iter()
        .map(|c| Mark {
            seq: c.seq,
            head: c.head,
            location: Location::Checkpoint(c.id),
        })
        .collect();

    // The anchors: each must still be in the log, unchanged; if the log's
    // checkpoints end before one, the events must still meet its head. Two
    // anchors with one id must agree (else the log was rolled back and re-signed).
    let mut sorted: Vec<&Checkpoint> = anchors.iter().collect();
    sorted.sort_by_key(|a| (a.id, a.seq));
    for pair in sorted.windows(2) {
        if let [x, y] = pair
            && x.id == y.id
            && x != y
        {
            return Err(Break {
                seq: x.seq.min(y.seq),
                kind: BreakKind::Truncated,
                location: Location::Anchor,
                detail: format!(
                    "rolled back: two different checkpoints #{} were given (the log was signed again after a rollback)",
                    x.id
                ),
            });
        }
    }
    let mut anchor_beyond: Option<(u64, u64)> = None;
    for a in sorted {
        match checkpoints.iter().find(|c| c.id == a.id) {
            Some(c) if c == a => {}
            Some(_) => {
                return Err(Break {
                    seq: a.seq,
                    kind: BreakKind::Truncated,
                    location: Location::Anchor,
                    detail: format!(
                        "rolled back: checkpoint #{} in the log differs from the given one",
                        a.id
                    ),
                });
            }
            None => {
                if a.seq.checked_add(1).is_some_and(|s| s < start) {
                    // Pruned past it and its copy deleted.
                    return Err(Break {
                        seq: a.seq,
                        kind: BreakKind::Missing,
                        location: Location::Checkpoint(a.id),
                        detail: format!("checkpoint #{} (a given one) is missing", a.id),
                    });
                }
                let next_id = checkpoints.last().map_or(1, |c| c.id.saturating_add(1));
                if anchor_beyond.is_none_or(|(seq, _)| a.seq > seq) {
                    anchor_beyond = Some((a.seq, next_id));
                }
                marks.push(Mark {
                    seq: a.seq,
                    head: a.head,
                    location: Location::Anchor,
                });
            }
        }
    }
    // Heads before the kept log cannot be recomputed (their events are pruned).
    marks.retain(|m| m.seq.checked_add(1).is_some_and(|s| s >= start));
    Ok(Signed {
        start,
        start_prev,
        marks,
        anchor_beyond,
    })
}

fn bad_sig(seq: u64, location: Location, why: &str) -> Break {
    Break {
        seq,
        kind: BreakKind::BadSignature,
        location,
        detail: format!("{location}: {why}"),
    }
}
