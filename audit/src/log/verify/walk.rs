//! The walk over the events in `seq` order: a reader thread that links rows and
//! meets signed heads, a hasher thread that recomputes every hash.
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::Break;
use super::structure::Mark;
use crate::log::checkpoint::to_i64;
use crate::log::encoding::{self, ChainHash};
use crate::log::error::AuditError;

/// An event row as the diagnosis needs it.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) seq: i64,
    pub(super) prev: Option<ChainHash>,
    pub(super) hash: Option<ChainHash>,
    /// The canonical encoding under its stored seq (0 if negative); `None` if a
    /// column holds a value of the wrong type.
    pub(super) enc: Option<Vec<u8>>,
}

impl Candidate {
    pub(super) fn read(row: &rusqlite::Row<'_>) -> Result<Candidate, AuditError> {
        let seq: i64 = row.get(0)?;
        let mut buf = Vec::new();
        let enc = encode_row(row, u64::try_from(seq).unwrap_or(0), &mut buf).then_some(buf);
        Ok(Candidate {
            seq,
            prev: blob_hash(row, 13),
            hash: blob_hash(row, 14),
            enc,
        })
    }

    /// Whether the row's stored hash is `SHA-256(prev ‖ encoding as seq)`.
    pub(super) fn hashes_as(&self, prev: &ChainHash, seq: u64) -> bool {
        match (&self.enc, &self.hash) {
            (Some(enc), Some(h)) => encoding::chain_hash_with_seq(prev, seq, enc) == *h,
            _ => false,
        }
    }

    /// Whether this row is exactly the event that belongs at `seq` after `prev`.
    pub(super) fn belongs_at(&self, seq: u64, prev: &ChainHash) -> bool {
        self.prev.as_ref() == Some(prev) && self.hashes_as(prev, seq)
    }

    /// Whether the row is well-formed under its own seq and prev_hash.
    pub(super) fn self_consistent(&self) -> bool {
        match (u64::try_from(self.seq), &self.prev) {
            (Ok(seq), Some(prev)) => self.hashes_as(prev, seq),
            _ => false,
        }
    }

    pub(super) fn reported_seq(&self) -> u64 {
        u64::try_from(self.seq).unwrap_or(0)
    }
}

fn blob_hash(row: &rusqlite::Row<'_>, i: usize) -> Option<ChainHash> {
    match row.get_ref(i) {
        Ok(ValueRef::Blob(b)) => ChainHash::from_slice(b),
        _ => None,
    }
}

/// Encodes columns 1..=12 of an event row (time and the eleven text fields) under
/// `seq`; `false` if a column holds a value of the wrong type.
fn encode_row(row: &rusqlite::Row<'_>, seq: u64, buf: &mut Vec<u8>) -> bool {
    let time = match row.get_ref(1) {
        Ok(ValueRef::Integer(t)) => t,
        _ => return false,
    };
    encoding::begin(buf, seq, time);
    for i in 2..=12 {
        match row.get_ref(i) {
            Ok(ValueRef::Text(t)) => encoding::push_text(buf, Some(t)),
            Ok(ValueRef::Null) => encoding::push_text(buf, None),
            _ => return false,
        }
    }
    true
}

pub(super) const EVENT_COLUMNS: &str = "seq, time_ns, actor, actor_fp, action, tenant, token, purpose, \
                             outcome, code, request_id, peer, details, prev_hash, hash";

/// Why the walk stopped.
pub(super) enum Stop {
    /// Every row fitted.
    End,
    /// The row at the expected seq does not fit.
    AtRow(Candidate),
    /// No row at the expected seq; this is the next one.
    Gap(Candidate),
    /// A signed head differs from the recomputed chain; `since` is the seq of the
    /// previous head that matched (or the start).
    HeadMismatch { mark: Mark, since: u64 },
}

pub(super) struct Walk {
    /// The next expected seq.
    pub(super) e: u64,
    /// Its expected prev_hash.
    pub(super) p: ChainHash,
    pub(super) events: u64,
    /// Rows stored before the start of the kept log (first few).
    pub(super) strays: Vec<Candidate>,
    pub(super) stop: Stop,
}

/// Most rows before the start that the diagnosis keeps.
const MAX_STRAYS: usize = 64;

/// Rows per batch handed from the reader to the hasher.
const BATCH_ROWS: usize = 2048;

/// Rows read and linked by the reader, for the hasher to check.
struct Batch {
    /// The seq of the first row.
    first_seq: u64,
    /// The canonical encodings, one after the other.
    enc: Vec<u8>,
    /// Per row: end offset in `enc`, stored prev_hash, stored hash.
    rows: Vec<(usize, ChainHash, ChainHash)>,
}

impl Batch {
    fn new(first_seq: u64) -> Batch {
        Batch {
            first_seq,
            enc: Vec::with_capacity(BATCH_ROWS * 320),
            rows: Vec::with_capacity(BATCH_ROWS),
        }
    }
}

/// The fast path, in two threads. The reader (this thread) walks the rows in seq
/// order and checks what needs no hashing: the seq is the expected one, the
/// stored `prev_hash` is the previous row's stored `hash`, signed heads match the
/// stored hashes. The hasher checks that every row's stored hash is
/// `SHA-256(prev_hash ‖ encoding)`. Together this is exactly the chain walk: up
/// to the first failure of either, stored and recomputed hashes agree.
///
/// The hasher first runs `signatures` (the signature checks of the signed
/// records) and returns its break, if any, next to the walk.
pub(super) fn walk(
    conn: &Connection,
    start: u64,
    start_prev: ChainHash,
    marks: &[Mark],
    until: Option<u64>,
    signatures: impl FnOnce() -> Option<Break> + Send,
) -> Result<(Walk, Option<Break>), AuditError> {
    let (read, hash_failure) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let hasher = std::thread::Builder::new()
            .name("audit-verify-hash".to_owned())
            .spawn_scoped(scope, move || match signatures() {
                Some(b) => (Some(b), None),
                None => (None, hash_batches(&rx)),
            });
        let hasher = match hasher {
            Ok(h) => h,
            Err(e) => return (Err(AuditError::Io(e)), Ok((None, None))),
        };
        let read = read_rows(conn, start, start_prev, marks, until, &tx);
        drop(tx);
        let hashed = hasher.join().map_err(|_| AuditError::Internal);
        (read, hashed)
    });
    let mut w = read?;
    let (bad_signature, hash_failure) = hash_failure?;
    if bad_signature.is_some() {
        return Ok((w, bad_signature));
    }
    let Some(h) = hash_failure else {
        return Ok((w, None));
    };
    // The hasher failed first (the reader only sends rows it accepted, so every
    // row before `h` is verified): restart the diagnosis from row `h`.
    let reader_stop_at = match &w.stop {
        Stop::End => u64::MAX,
        Stop::AtRow(_) | Stop::Gap(_) => w.e,
        Stop::HeadMismatch { mark, .. } => mark.seq,
    };
    if h > reader_stop_at {
        return Ok((w, None));
    }
    w.p = if h == start {
        start_prev
    } else {
        stored_hash_at(conn, h.saturating_sub(1))?.ok_or(AuditError::Internal)?
    };
    w.e = h;
    w.events = h.saturating_sub(start);
    let row = conn
        .query_row(
            &format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq = ?1"),
            [to_i64(h)?],
            |r| Ok(Candidate::read(r)),
        )
        .optional()?
        .ok_or(AuditError::Internal)??;
    w.stop = Stop::AtRow(row);
    Ok((w, None))
}

/// The hasher: the seq of the first row whose stored hash is not the hash of
/// its stored prev_hash and encoding. Stops (dropping the channel, which stops
/// the reader) at the first such row.
fn hash_batches(rx: &std::sync::mpsc::Receiver<Batch>) -> Option<u64> {
    for batch in rx {
        let mut from = 0usize;
        let mut seq = batch.first_seq;
        for (end, prev, stored) in &batch.rows {
            let enc = batch.enc.get(from..*end).unwrap_or_default();
            if encoding::chain_hash(prev, enc) != *stored {
                return Some(seq);
            }
            from = *end;
            seq = seq.saturating_add(1);
        }
    }
    None
}

/// The reader's half of [`walk`].
fn read_rows(
    conn: &Connection,
    start: u64,
    start_prev: ChainHash,
    marks: &[Mark],
    until: Option<u64>,
    tx: &std::sync::mpsc::SyncSender<Batch>,
) -> Result<Walk, AuditError> {
    let mut w = Walk {
        e: start,
        p: start_prev,
        events: 0,
        strays: Vec::new(),
        stop: Stop::End,
    };
    let start_i = to_i64(start)?;
    let until_i = match until {
        Some(u) => to_i64(u)?,
        None => i64::MAX,
    };
    let mut mark_idx = 0usize;
    let mut since = start.saturating_sub(1);
    // Heads at start - 1 (the checkpoint a prune record names, or an empty-log checkpoint).
    if let Some(stop) = meet_marks(
        marks,
        &mut mark_idx,
        start.saturating_sub(1),
        &w.p,
        &mut since,
    ) {
        w.stop = stop;
        return Ok(w);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq <= ?1 ORDER BY seq"
    ))?;
    let mut rows = stmt.query([until_i])?;
    let mut batch = Batch::new(start);
    let mut e_i = start_i;
    while let Some(row) = rows.next()? {
        let seq = match row.get_ref(0)? {
            ValueRef::Integer(s) => s,
            _ => return Err(AuditError::CorruptEvent { seq: 0 }),
        };
        if seq < start_i {
            if w.strays.len() < MAX_STRAYS {
                w.strays.push(Candidate::read(row)?);
            }
            continue;
        }
        if seq != e_i {
            w.stop = Stop::Gap(Candidate::read(row)?);
            break;
        }
        let prev = blob_hash(row, 13);
        let hash = blob_hash(row, 14);
        let mark = batch.enc.len();
        let (Some(prev), Some(hash)) = (prev.filter(|p| *p == w.p), hash) else {
            w.stop = Stop::AtRow(Candidate::read(row)?);
            break;
        };
        if !encode_row(row, w.e, &mut batch.enc) {
            batch.enc.truncate(mark);
            w.stop = Stop::AtRow(Candidate::read(row)?);
            break;
        }
        batch.rows.push((batch.enc.len(), prev, hash));
        w.p = hash;
        w.events = w.events.saturating_add(1);
        let done = w.e;
        w.e = w.e.checked_add(1).ok_or(AuditError::Overflow)?;
        e_i = e_i.checked_add(1).ok_or(AuditError::Overflow)?;
        if batch.rows.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Batch::new(w.e));
            if tx.send(full).is_err() {
                // The hasher found a bad row and stopped; it is reported from there.
                return Ok(w);
            }
        }
        if let Some(stop) = meet_marks(marks, &mut mark_idx, done, &w.p, &mut since) {
            w.stop = stop;
            break;
        }
    }
    if !batch.rows.is_empty() {
        // A send error means the hasher already stopped at an earlier row.
        let _ = tx.send(batch);
    }
    Ok(w)
}

/// Compares every mark at `seq` with the recomputed head.
fn meet_marks(
    marks: &[Mark],
    idx: &mut usize,
    seq: u64,
    head: &ChainHash,
    since: &mut u64,
) -> Option<Stop> {
    while let Some(m) = marks.get(*idx) {
        if m.seq > seq {
            break;
        }
        *idx = idx.saturating_add(1);
        if m.seq < seq {
            continue;
        }
        if m.head != *head {
            return Some(Stop::HeadMismatch {
                mark: *m,
                since: *since,
            });
        }
        *since = seq;
    }
    None
}

/// The stored hash of the row at `seq`, if there is one.
pub(super) fn stored_hash_at(conn: &Connection, seq: u64) -> Result<Option<ChainHash>, AuditError> {
    let h: Option<Option<ChainHash>> = conn
        .query_row(
            "SELECT hash FROM audit_events WHERE seq = ?1",
            [to_i64(seq)?],
            |r| {
                Ok(match r.get_ref(0)? {
                    ValueRef::Blob(b) => ChainHash::from_slice(b),
                    _ => None,
                })
            },
        )
        .optional()?;
    Ok(h.flatten())
}
