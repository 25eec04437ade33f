//! Verification: the whole chain and every signature, with only the public key.
//!
//! The rules that name a break are in `docs/audit-log.md`; in short, records
//! signed by the key (prune records, checkpoints, the anchor) are checked first,
//! then the events are walked in `seq` order from where the kept log starts. At
//! the first event that does not fit, a diagnosis looks at that row (or the gap)
//! and the rest of the table to say how the log was changed.
use std::fmt;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;

use super::checkpoint::{Checkpoint, to_i64};
use super::encoding::{self, ChainHash};
use super::error::AuditError;
use super::event::from_time_ns;
use super::keys::PublicKey;
use super::prune::PruneRecord;
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

/// A signed head the walk must meet: a checkpoint or the anchor.
#[derive(Clone, Copy, Debug)]
struct Mark {
    seq: u64,
    head: ChainHash,
    location: Location,
}

/// What the signed records say.
struct Signed {
    /// First event of the kept log, and its prev_hash.
    start: u64,
    start_prev: ChainHash,
    /// Heads to meet on the walk.
    marks: Vec<Mark>,
    /// The anchor is newer than every checkpoint in the log: (its seq, first missing id).
    anchor_beyond: Option<(u64, u64)>,
}

/// The signed records of the log, decoded (not yet verified).
struct Records {
    prunes: Vec<PruneRecord>,
    checkpoints: Vec<Checkpoint>,
}

/// Reads prune records and checkpoints in id order. Outer error: the database;
/// inner error: a record that cannot be decoded (reported as a bad signature).
fn read_records(conn: &Connection) -> Result<Result<Records, Break>, AuditError> {
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
fn first_bad_signature(
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
fn check_structure(records: &Records, anchors: &[Checkpoint]) -> Result<Signed, Break> {
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

/// An event row as the diagnosis needs it.
#[derive(Clone, Debug)]
struct Candidate {
    seq: i64,
    prev: Option<ChainHash>,
    hash: Option<ChainHash>,
    /// The canonical encoding under its stored seq (0 if negative); `None` if a
    /// column holds a value of the wrong type.
    enc: Option<Vec<u8>>,
}

impl Candidate {
    fn read(row: &rusqlite::Row<'_>) -> Result<Candidate, AuditError> {
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
    fn hashes_as(&self, prev: &ChainHash, seq: u64) -> bool {
        match (&self.enc, &self.hash) {
            (Some(enc), Some(h)) => encoding::chain_hash_with_seq(prev, seq, enc) == *h,
            _ => false,
        }
    }

    /// Whether this row is exactly the event that belongs at `seq` after `prev`.
    fn belongs_at(&self, seq: u64, prev: &ChainHash) -> bool {
        self.prev.as_ref() == Some(prev) && self.hashes_as(prev, seq)
    }

    /// Whether the row is well-formed under its own seq and prev_hash.
    fn self_consistent(&self) -> bool {
        match (u64::try_from(self.seq), &self.prev) {
            (Ok(seq), Some(prev)) => self.hashes_as(prev, seq),
            _ => false,
        }
    }

    fn reported_seq(&self) -> u64 {
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

const EVENT_COLUMNS: &str = "seq, time_ns, actor, actor_fp, action, tenant, token, purpose, \
                             outcome, code, request_id, peer, details, prev_hash, hash";

/// Why the walk stopped.
enum Stop {
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

struct Walk {
    /// The next expected seq.
    e: u64,
    /// Its expected prev_hash.
    p: ChainHash,
    events: u64,
    /// Rows stored before the start of the kept log (first few).
    strays: Vec<Candidate>,
    stop: Stop,
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
fn walk(
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

/// Names the first break from where the walk stopped.
fn diagnose(
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

/// The stored hash of the row at `seq`, if there is one.
fn stored_hash_at(conn: &Connection, seq: u64) -> Result<Option<ChainHash>, AuditError> {
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
