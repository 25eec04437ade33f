//! Reading events back: for SIEM export and for tests.
use std::io::Write;

use rusqlite::Connection;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::checkpoint::to_i64;
use super::encoding::hex_encode;
use super::error::AuditError;
use super::event::Event;
use super::schema::ReadTx;

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

/// Writes every event from `from_seq` on as one JSON object per line (for a
/// SIEM) and returns how many. Times are RFC 3339 UTC; hashes are hex so the
/// receiver can re-check the chain. Stops with [`AuditError::CorruptEvent`] at a
/// row that cannot be decoded (run `verify`).
///
/// Keys: `seq time actor actor_fingerprint action tenant token purpose outcome
/// code request_id peer details prev_hash hash` (absent values are `null`).
pub fn export_jsonl(
    conn: &Connection,
    from_seq: u64,
    mut writer: impl Write,
) -> Result<u64, AuditError> {
    let _tx = ReadTx::begin(conn)?;
    let mut stmt = conn.prepare(SELECT_FROM)?;
    let mut rows = stmt.query([to_i64(from_seq)?])?;
    let mut n = 0u64;
    let mut line = Vec::with_capacity(512);
    while let Some(row) = rows.next()? {
        let ev = Event::from_row(row)?;
        let time = ev
            .event
            .time
            .format(&Rfc3339)
            .map_err(|_| AuditError::TimeOutOfRange)?;
        let json = Line {
            seq: ev.seq,
            time,
            actor: &ev.event.actor.name,
            actor_fingerprint: ev.event.actor.fingerprint.as_deref(),
            action: ev.event.action.as_str(),
            tenant: ev.event.tenant.as_deref(),
            token: ev.event.token.as_deref(),
            purpose: ev.event.purpose.as_deref(),
            outcome: ev.event.outcome.kind_str(),
            code: ev.event.outcome.code(),
            request_id: ev.event.request_id.as_deref(),
            peer: ev.event.peer.as_deref(),
            details: ev.event.details.as_deref(),
            prev_hash: hex_encode(&ev.prev_hash.0),
            hash: hex_encode(&ev.hash.0),
        };
        line.clear();
        serde_json::to_writer(&mut line, &json).map_err(|_| AuditError::CorruptEvent {
            seq: to_i64(ev.seq).unwrap_or(i64::MAX),
        })?;
        line.push(b'\n');
        writer.write_all(&line)?;
        n = n.saturating_add(1);
    }
    writer.flush()?;
    Ok(n)
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    actor: &'a str,
    actor_fingerprint: Option<&'a str>,
    action: &'a str,
    tenant: Option<&'a str>,
    token: Option<&'a str>,
    purpose: Option<&'a str>,
    outcome: &'a str,
    code: Option<&'a str>,
    request_id: Option<&'a str>,
    peer: Option<&'a str>,
    details: Option<&'a str>,
    prev_hash: String,
    hash: String,
}
