//! Naming the first break, from where the walk stopped (the rules are in
//! `docs/audit-log.md`, "How a break is named").
use rusqlite::Connection;

use super::structure::Mark;
use super::walk::{Candidate, EVENT_COLUMNS, Stop, Walk, stored_hash_at};
use super::{Break, BreakKind, Location};
use crate::log::checkpoint::to_i64;
use crate::log::encoding::ChainHash;
use crate::log::error::AuditError;

/// Names the first break from where the walk stopped.
pub(super) fn diagnose(
    conn: &Connection,
    w: &Walk,
    marks: &[Mark],
    start: u64,
    until: Option<u64>,
) -> Result<Option<Break>, AuditError> {
    let e = w.e;
    let p = &w.p;
    let at = |kind, detail: String| {
        Some(Break {
            seq: e,
            kind,
            location: Location::Event,
            detail,
        })
    };
    let moved = |s: &Candidate| {
        at(
            BreakKind::Modified,
            format!(
                "its seq was altered: the event of seq {e} is stored as seq {}",
                s.seq
            ),
        )
    };
    // Whether the break found is explained by a row stored before the start.
    let mut uses_stray = false;
    let found = match &w.stop {
        Stop::End => match find_belonging(conn, e, p, start, until)? {
            Some(s) => {
                uses_stray = s.seq < to_i64(start)?;
                moved(&s)
            }
            None => marks.iter().find(|m| m.seq >= e).and_then(|m| {
                at(
                    BreakKind::Truncated,
                    format!(
                        "the log ends at seq {} but {} covers seq {}",
                        e.saturating_sub(1),
                        m.location,
                        m.seq
                    ),
                )
            }),
        },
        Stop::HeadMismatch { mark, since } => {
            let (kind, what) = match mark.location {
                Location::Anchor => (BreakKind::Truncated, "rolled back or rewritten"),
                _ => (BreakKind::Modified, "rewritten with recomputed hashes"),
            };
            Some(Break {
                seq: mark.seq,
                kind,
                location: mark.location,
                detail: format!(
                    "the chain at seq {} does not match {}: events {}..={} were {what}",
                    mark.seq,
                    mark.location,
                    since.saturating_add(1),
                    mark.seq
                ),
            })
        }
        Stop::AtRow(a) => {
            if a.prev.as_ref() == Some(p) {
                let why = if a.enc.is_none() {
                    "a column holds a value of the wrong type"
                } else {
                    "its contents or its hash were altered"
                };
                at(BreakKind::Modified, why.to_owned())
            } else if a.hashes_as(p, e) {
                at(BreakKind::Modified, "its prev_hash was altered".to_owned())
            } else if a.self_consistent() {
                at(
                    BreakKind::Inserted,
                    format!(
                        "a well-formed event that does not follow seq {}",
                        e.saturating_sub(1)
                    ),
                )
            } else if let Some(j) = origin_of(conn, a, until)? {
                if stored_hash_at(conn, j)? == a.hash {
                    at(
                        BreakKind::Inserted,
                        format!("a copy of the event of seq {j}"),
                    )
                } else {
                    at(
                        BreakKind::Reordered,
                        format!("it holds the event of seq {j}"),
                    )
                }
            } else {
                at(
                    BreakKind::Inserted,
                    "an event that does not belong to the chain".to_owned(),
                )
            }
        }
        Stop::Gap(b) => match find_belonging(conn, e, p, start, until)? {
            Some(s) => {
                uses_stray = s.seq < to_i64(start)?;
                moved(&s)
            }
            None if b.self_consistent() => {
                let last = b.reported_seq().saturating_sub(1);
                let detail = if last == e {
                    format!("event {e} is missing")
                } else {
                    format!("events {e}..={last} are missing")
                };
                at(BreakKind::Missing, detail)
            }
            None => Some(Break {
                seq: b.reported_seq(),
                kind: BreakKind::Inserted,
                location: Location::Event,
                detail: format!(
                    "an event after a gap (from seq {e}) that does not belong to the chain"
                ),
            }),
        },
    };
    // A row before the start that explains nothing comes first in seq order.
    if !uses_stray && let Some(s) = w.strays.first() {
        return Ok(Some(Break {
            seq: s.reported_seq(),
            kind: BreakKind::Inserted,
            location: Location::Event,
            detail: format!(
                "a row stored as seq {} before the start of the log (seq {start})",
                s.seq
            ),
        }));
    }
    Ok(found)
}

/// A row anywhere (before the start, or after `e`) that is the event of seq `e`
/// stored under another seq.
fn find_belonging(
    conn: &Connection,
    e: u64,
    p: &ChainHash,
    start: u64,
    until: Option<u64>,
) -> Result<Option<Candidate>, AuditError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events \
         WHERE (seq > ?1 OR seq < ?2) AND prev_hash = ?3 ORDER BY seq"
    ))?;
    let mut rows = stmt.query(rusqlite::params![to_i64(e)?, to_i64(start)?, &p.0[..]])?;
    while let Some(row) = rows.next()? {
        let c = Candidate::read(row)?;
        let within = c.seq < 1 || until.is_none_or(|u| c.reported_seq() <= u);
        if within && c.belongs_at(e, p) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The seq a displaced row was hashed under: the `j` for which its stored hash is
/// `SHA-256(prev_hash ‖ encoding as j)`, searched over every seq the log could hold.
fn origin_of(
    conn: &Connection,
    a: &Candidate,
    until: Option<u64>,
) -> Result<Option<u64>, AuditError> {
    let Some(prev) = a.prev else {
        return Ok(None);
    };
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_events", [], |r| {
        r.get(0)
    })?;
    let mut max = u64::try_from(max).unwrap_or(0).saturating_add(1);
    if let Some(u) = until {
        max = max.max(u.saturating_add(1));
    }
    Ok((1..=max).find(|&j| a.hashes_as(&prev, j)))
}
