//! Reading events back, and the self-contained export: for a SIEM, and for
//! verification on a machine that has no vault.
//!
//! Format `panvault-audit-export-v2` (JSON lines; `docs/audit-log.md`,
//! "Export"): a header line, then every prune record, every checkpoint, and the
//! events from the requested seq on, each line an object with a `type`. All of
//! it is read in one read transaction, so it is one snapshot of the log.
//! [`verify_export`] loads such a file into an in-memory database with the
//! audit schema and runs [`verify_against`](super::verify_against) on it: the
//! same checks, and the same diagnosis of a break, as on the vault itself.
use std::io::{BufRead, Read, Write};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::checkpoint::{Checkpoint, to_i64};
use super::encoding::{ChainHash, hex_decode_array, hex_encode};
use super::error::AuditError;
use super::event::{Event, from_time_ns, time_ns, utc};
use super::keys::PublicKey;
use super::prune::PruneRecord;
use super::schema::{ReadTx, migrate};
use super::verify::{Bound, VerifyReport, verify_against, verify_bounded};

/// The `format` of an export's header line.
pub const EXPORT_FORMAT: &str = "panvault-audit-export-v2";

const SELECT_FROM: &str = "SELECT seq, time_ns, actor, actor_fp, action, tenant, token, \
     purpose, outcome, code, request_id, peer, details, prev_hash, hash FROM audit_events \
     WHERE seq >= ?1 ORDER BY seq";

/// Up to `limit` events from `from_seq` on, in order.
pub fn read_events(
    conn: &Connection,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<Event>, AuditError> {
    let mut stmt = conn.prepare(SELECT_FROM)?;
    let mut rows = stmt.query([to_i64(from_seq)?])?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        out.push(Event::from_row(row)?);
    }
    Ok(out)
}

/// Writes the log as a self-contained export (format
/// [`EXPORT_FORMAT`], one JSON object per line) and returns how many events it
/// holds: a header `{"type":"header","format":…,"from_seq":N}`, then every prune
/// record (`"type":"prune"`), every checkpoint (`"type":"checkpoint"`) and every
/// event from `from_seq` on (`"type":"event"`, with the keys `seq time actor
/// actor_fingerprint action tenant token purpose outcome code request_id peer
/// details prev_hash hash`; absent values are `null`). Times are RFC 3339 UTC
/// with the stored nanoseconds; hashes and signatures are hex.
///
/// Values are written exactly as stored, so a receiver can recompute every
/// hash and check every signature. Stops with [`AuditError::CorruptEvent`] (or
/// [`AuditError::Parse`] for a signed record) at a row that cannot be written
/// as JSON (run `verify`).
pub fn export_jsonl(
    conn: &Connection,
    from_seq: u64,
    writer: impl Write,
) -> Result<u64, AuditError> {
    let _tx = ReadTx::begin(conn)?;
    let mut out = ExportWriter::new(writer, from_seq)?;

    let mut stmt = conn.prepare(
        "SELECT id, first_seq, prev_hash, checkpoint_id, cutoff_ns, deleted, time_ns, \
         signature FROM audit_prunes ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let p = PruneRecord::from_row(row).ok_or(AuditError::Parse {
            what: "stored prune record",
        })?;
        out.prune(&p)?;
    }
    drop(rows);
    drop(stmt);

    let mut stmt = conn
        .prepare("SELECT id, seq, head, time_ns, signature FROM audit_checkpoints ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let c = Checkpoint::from_row(row).ok_or(AuditError::Parse {
            what: "stored checkpoint",
        })?;
        out.checkpoint(&c)?;
    }
    drop(rows);
    drop(stmt);

    let mut stmt = conn.prepare(SELECT_FROM)?;
    let mut rows = stmt.query([to_i64(from_seq)?])?;
    while let Some(row) = rows.next()? {
        out.event(&StoredEvent::from_row(row)?)?;
    }
    out.finish()
}

/// The export's line writer, for an engine whose rows are not in SQLite: the
/// caller reads, in one snapshot, every prune record (by id), every checkpoint
/// (by id) and the events from `from_seq` on (by seq), and hands them over in
/// that order. The lines are exactly those [`export_jsonl`] writes.
pub struct ExportWriter<W: Write> {
    writer: W,
    line: Vec<u8>,
    events: u64,
}

impl<W: Write> std::fmt::Debug for ExportWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportWriter")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export of the log from event `from_seq` on: writes the header.
    pub fn new(writer: W, from_seq: u64) -> Result<Self, AuditError> {
        let mut w = ExportWriter {
            writer,
            line: Vec::with_capacity(512),
            events: 0,
        };
        w.put(&Line::Header {
            format: EXPORT_FORMAT.to_owned(),
            from_seq,
        })?;
        Ok(w)
    }

    /// Writes a prune record.
    pub fn prune(&mut self, p: &PruneRecord) -> Result<(), AuditError> {
        self.put(&Line::Prune {
            id: p.id,
            first_seq: p.first_seq,
            prev_hash: p.prev_hash.to_string(),
            checkpoint_id: p.checkpoint_id,
            cutoff: rfc3339(p.cutoff)?,
            deleted: p.deleted,
            time: rfc3339(p.time)?,
            signature: hex_encode(&p.signature),
        })
    }

    /// Writes a checkpoint.
    pub fn checkpoint(&mut self, c: &Checkpoint) -> Result<(), AuditError> {
        self.put(&Line::Checkpoint {
            id: c.id,
            seq: c.seq,
            head: c.head.to_string(),
            time: rfc3339(c.time)?,
            signature: hex_encode(&c.signature),
        })
    }

    /// Writes an event row exactly as stored.
    pub fn event(&mut self, ev: &StoredEvent) -> Result<(), AuditError> {
        self.put(&ev.line()?)?;
        self.events = self.events.saturating_add(1);
        Ok(())
    }

    /// Flushes the writer; returns how many events were written.
    pub fn finish(mut self) -> Result<u64, AuditError> {
        self.writer.flush()?;
        Ok(self.events)
    }

    fn put(&mut self, value: &Line) -> Result<(), AuditError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|_| AuditError::Parse {
            what: "export line",
        })?;
        self.line.push(b'\n');
        self.writer.write_all(&self.line)?;
        Ok(())
    }
}

/// An event row exactly as stored (no interpretation of the values), for
/// [`ExportWriter::event`]: the columns of `audit_events` in schema order.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// `seq`.
    pub seq: i64,
    /// `time_ns`.
    pub time_ns: i64,
    /// `actor, actor_fp, action, tenant, token, purpose, outcome, code,
    /// request_id, peer, details`.
    pub text: [Option<String>; 11],
    /// `prev_hash`.
    pub prev_hash: Vec<u8>,
    /// `hash`.
    pub hash: Vec<u8>,
}

impl StoredEvent {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<StoredEvent, AuditError> {
        let seq: i64 = row.get(0)?;
        let bad = || AuditError::CorruptEvent { seq };
        let text = |i: usize| row.get::<_, Option<String>>(i).map_err(|_| bad());
        Ok(StoredEvent {
            seq,
            time_ns: row.get(1).map_err(|_| bad())?,
            text: [
                text(2)?,
                text(3)?,
                text(4)?,
                text(5)?,
                text(6)?,
                text(7)?,
                text(8)?,
                text(9)?,
                text(10)?,
                text(11)?,
                text(12)?,
            ],
            prev_hash: row.get(13).map_err(|_| bad())?,
            hash: row.get(14).map_err(|_| bad())?,
        })
    }

    pub(crate) fn line(&self) -> Result<Line, AuditError> {
        let bad = || AuditError::CorruptEvent { seq: self.seq };
        let hash = |b: &[u8]| ChainHash::from_slice(b).ok_or_else(bad);
        let [
            actor,
            actor_fingerprint,
            action,
            tenant,
            token,
            purpose,
            outcome,
            code,
            request_id,
            peer,
            details,
        ] = self.text.clone();
        Ok(Line::Event {
            seq: u64::try_from(self.seq).map_err(|_| bad())?,
            time: from_time_ns(self.time_ns)
                .and_then(rfc3339)
                .map_err(|_| bad())?,
            actor: actor.ok_or_else(bad)?,
            actor_fingerprint,
            action: action.ok_or_else(bad)?,
            tenant,
            token,
            purpose,
            outcome: outcome.ok_or_else(bad)?,
            code,
            request_id,
            peer,
            details,
            prev_hash: hash(&self.prev_hash)?.to_string(),
            hash: hash(&self.hash)?.to_string(),
        })
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> Result<String, AuditError> {
    t.format(&Rfc3339).map_err(|_| AuditError::TimeOutOfRange)
}

/// One line of an export. Every key is required (absent values are `null`), and
/// no other key is allowed: a line that does not say exactly what the log
/// stored is refused rather than read with a default.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "one line is alive at a time; boxing the event would only add an allocation"
)]
pub(crate) enum Line {
    Header {
        format: String,
        from_seq: u64,
    },
    Prune {
        id: u64,
        first_seq: u64,
        prev_hash: String,
        checkpoint_id: u64,
        cutoff: String,
        deleted: u64,
        time: String,
        signature: String,
    },
    Checkpoint {
        id: u64,
        seq: u64,
        head: String,
        time: String,
        signature: String,
    },
    Event {
        seq: u64,
        time: String,
        actor: String,
        #[serde(deserialize_with = "required")]
        actor_fingerprint: Option<String>,
        action: String,
        #[serde(deserialize_with = "required")]
        tenant: Option<String>,
        #[serde(deserialize_with = "required")]
        token: Option<String>,
        #[serde(deserialize_with = "required")]
        purpose: Option<String>,
        outcome: String,
        #[serde(deserialize_with = "required")]
        code: Option<String>,
        #[serde(deserialize_with = "required")]
        request_id: Option<String>,
        #[serde(deserialize_with = "required")]
        peer: Option<String>,
        #[serde(deserialize_with = "required")]
        details: Option<String>,
        prev_hash: String,
        hash: String,
    },
}

/// An `Option` field that must be present (as `null` or a value): serde would
/// otherwise read a missing key as `None`, i.e. invent a NULL.
fn required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Verifies an export (as [`export_jsonl`] writes it) with `key` alone, against
/// `anchors` (checkpoints kept elsewhere, as for
/// [`verify_against`](super::verify_against)). No vault is needed.
///
/// A file that is not a well-formed export (a line that does not parse, lines
/// out of order, a duplicate, an export that starts after the kept log does) is
/// an [`AuditError::BadExport`] naming the line; a well-formed export whose log
/// is broken is reported in [`VerifyReport::problem`], like a broken vault.
///
/// A multi-node export (`panvault-audit-export-v3`, a log shared by several
/// nodes) is recognised by its header and verified node by node against the
/// cluster checkpoints (`docs/audit-log.md`, "Several nodes"); its anchors are
/// cluster checkpoints, given to
/// [`verify_cluster_export`](super::verify_cluster_export) (single-log ones are
/// [`AuditError::Unsupported`] here).
pub fn verify_export(
    mut reader: impl BufRead,
    key: &PublicKey,
    anchors: &[Checkpoint],
) -> Result<VerifyReport, AuditError> {
    // The header says which format follows. What was read to find it (blank
    // lines, then the header) is read again, so line numbers stay right.
    let mut consumed = String::new();
    let mut first = String::new();
    while first.trim().is_empty() {
        first.clear();
        if reader.read_line(&mut first)? == 0 {
            break;
        }
        consumed.push_str(&first);
    }
    let reader = std::io::Cursor::new(consumed.into_bytes()).chain(reader);
    if super::cluster_export::is_cluster_header(first.trim()) {
        if !anchors.is_empty() {
            return Err(AuditError::Unsupported {
                what: "checking a multi-node export against single-log checkpoints \
                       (give cluster checkpoints: verify_cluster_export)",
            });
        }
        return super::cluster_export::verify_cluster_export(reader, key, &[]);
    }
    let conn = Connection::open_in_memory()?;
    migrate(&conn)?;
    load_export(&conn, reader)?;
    verify_against(&conn, key, anchors)
}

/// Verifies an export with `key` up to event `seq` only (what a prune checks
/// before it deletes events through `seq`, on an engine whose log is read back
/// as an export). Events after `seq` are not examined.
pub fn verify_export_through(
    reader: impl BufRead,
    key: &PublicKey,
    seq: u64,
) -> Result<VerifyReport, AuditError> {
    let conn = Connection::open_in_memory()?;
    migrate(&conn)?;
    load_export(&conn, reader)?;
    verify_bounded(&conn, key, &[], Bound::UpTo(seq))
}

/// What part of the file a line belongs to; lines come in this order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Header,
    Prunes,
    Checkpoints,
    Events,
}

fn load_export(conn: &Connection, reader: impl BufRead) -> Result<(), AuditError> {
    let tx = conn.unchecked_transaction()?;
    let mut section = Section::Header;
    // The last id (prunes, checkpoints) or seq (events) of the current section.
    let mut last: Option<u64> = None;
    let mut from_seq = 1u64;
    let mut line_no = 0u64;
    for text in reader.lines() {
        let text = text?;
        line_no = line_no.saturating_add(1);
        let bad = |reason: &'static str| AuditError::BadExport {
            line: line_no,
            reason,
        };
        if text.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&text)
            .map_err(|_| bad("not a line of a panvault audit export (v2)"))?;
        let (this, number) = match &parsed {
            Line::Header { .. } => (Section::Header, None),
            Line::Prune { id, .. } => (Section::Prunes, Some(*id)),
            Line::Checkpoint { id, .. } => (Section::Checkpoints, Some(*id)),
            Line::Event { seq, .. } => (Section::Events, Some(*seq)),
        };
        if section == Section::Header {
            let Line::Header {
                format,
                from_seq: f,
            } = &parsed
            else {
                return Err(bad("the first line must be the export's header"));
            };
            if format != EXPORT_FORMAT {
                return Err(bad("unknown export format (this build reads v2)"));
            }
            from_seq = *f;
            section = Section::Prunes;
            continue;
        }
        if this < section || this == Section::Header {
            return Err(bad(
                "lines out of order (header, prune records, checkpoints, events)",
            ));
        }
        if this > section {
            section = this;
            last = None;
        }
        if let (Some(prev), Some(n)) = (last, number)
            && n <= prev
        {
            return Err(bad("records out of order or repeated"));
        }
        last = number;
        insert_line(&tx, parsed).map_err(|e| match e {
            AuditError::BadExport { reason, .. } => bad(reason),
            _ => bad("a value the audit log cannot hold"),
        })?;
    }
    if section == Section::Header {
        return Err(AuditError::BadExport {
            line: line_no,
            reason: "no header: not a panvault audit export",
        });
    }
    let kept_start: i64 = tx.query_row(
        "SELECT COALESCE(MAX(first_seq), 1) FROM audit_prunes",
        [],
        |r| r.get(0),
    )?;
    if to_i64(from_seq)? > kept_start {
        return Err(AuditError::BadExport {
            line: 1,
            reason: "a partial export (--from after the start of the kept log) cannot be \
                     verified: export the whole log",
        });
    }
    tx.commit()?;
    Ok(())
}

pub(crate) fn insert_line(conn: &Connection, line: Line) -> Result<(), AuditError> {
    let hash = |s: &str| {
        ChainHash::from_hex(s).ok_or(AuditError::BadExport {
            line: 0,
            reason: "a hash is not 64 hex digits",
        })
    };
    let signature = |s: &str| {
        hex_decode_array::<64>(s).ok_or(AuditError::BadExport {
            line: 0,
            reason: "a signature is not 128 hex digits",
        })
    };
    let time = |s: &str| {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .and_then(|t| utc(t).ok())
            .and_then(|t| time_ns(t).ok())
            .ok_or(AuditError::BadExport {
                line: 0,
                reason: "a time is not RFC 3339 within the log's range",
            })
    };
    match line {
        Line::Header { .. } => {}
        Line::Prune {
            id,
            first_seq,
            prev_hash,
            checkpoint_id,
            cutoff,
            deleted,
            time: t,
            signature: sig,
        } => {
            conn.execute(
                "INSERT INTO audit_prunes (id, first_seq, prev_hash, checkpoint_id, cutoff_ns, \
                 deleted, time_ns, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    to_i64(id)?,
                    to_i64(first_seq)?,
                    &hash(&prev_hash)?.0[..],
                    to_i64(checkpoint_id)?,
                    time(&cutoff)?,
                    to_i64(deleted)?,
                    time(&t)?,
                    &signature(&sig)?[..],
                ],
            )?;
        }
        Line::Checkpoint {
            id,
            seq,
            head,
            time: t,
            signature: sig,
        } => {
            conn.execute(
                "INSERT INTO audit_checkpoints (id, seq, head, time_ns, signature) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    to_i64(id)?,
                    to_i64(seq)?,
                    &hash(&head)?.0[..],
                    time(&t)?,
                    &signature(&sig)?[..],
                ],
            )?;
        }
        Line::Event {
            seq,
            time: t,
            actor,
            actor_fingerprint,
            action,
            tenant,
            token,
            purpose,
            outcome,
            code,
            request_id,
            peer,
            details,
            prev_hash,
            hash: h,
        } => {
            conn.execute(
                "INSERT INTO audit_events (seq, time_ns, actor, actor_fp, action, tenant, token, \
                 purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                rusqlite::params![
                    to_i64(seq)?,
                    time(&t)?,
                    actor,
                    actor_fingerprint,
                    action,
                    tenant,
                    token,
                    purpose,
                    outcome,
                    code,
                    request_id,
                    peer,
                    details,
                    &hash(&prev_hash)?.0[..],
                    &hash(&h)?.0[..],
                ],
            )?;
        }
    }
    Ok(())
}
