//! Counts over the stored log for compliance facts: which actions were recorded,
//! how complete each event is, how much retention each prune applied. Read only;
//! nothing here verifies the chain (that is [`super::verify`]).
use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;

use super::error::AuditError;
use super::event::{Action, Resource, from_time_ns};

/// What the stored events say, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events per stored action name.
    pub actions: BTreeMap<String, u64>,
    /// Events by an `admin:` actor.
    pub admin: u64,
    /// Events whose outcome is `denied`.
    pub denied: u64,
    /// Events examined (all of them).
    pub examined: u64,
    /// Events without an actor.
    pub missing_actor: u64,
    /// API events (not `admin:`) without a peer address.
    pub missing_origin: u64,
    /// Successful card-data events without the tenant or token their
    /// [`Action::resource`] asks for.
    pub missing_resource: u64,
    /// Denied or failed events without an outcome code.
    pub missing_code: u64,
    /// Detokenize events without a purpose.
    pub missing_purpose: u64,
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, AuditError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// A count read from column `col`: a negative one is a broken database, not zero.
fn non_negative(col: usize, n: i64) -> Result<u64, AuditError> {
    u64::try_from(n)
        .map_err(|_| AuditError::Database(rusqlite::Error::IntegralValueOutOfRange(col, n)))
}

fn count(conn: &Connection, sql: &str) -> Result<u64, AuditError> {
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    non_negative(0, n)
}

/// Whether the database holds an audit log at all (its events table).
pub fn has_audit_log(conn: &Connection) -> Result<bool, AuditError> {
    table_exists(conn, "audit_events")
}

/// The retention each signed prune record applied, in whole days, oldest first
/// (none for a log that was never pruned or predates prune records).
pub fn prune_retention_days(conn: &Connection) -> Result<Vec<i64>, AuditError> {
    if !table_exists(conn, "audit_prunes")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT time_ns - cutoff_ns FROM audit_prunes ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    let mut out = Vec::new();
    for ns in rows {
        out.push(ns? / 86_400_000_000_000);
    }
    Ok(out)
}

/// When the oldest kept event happened (none in an empty log).
pub fn oldest_event_time(conn: &Connection) -> Result<Option<OffsetDateTime>, AuditError> {
    let oldest: Option<i64> = conn
        .query_row("SELECT min(time_ns) FROM audit_events", [], |r| r.get(0))
        .optional()?
        .flatten();
    oldest.map(from_time_ns).transpose()
}

/// The quoted names of the actions whose events must name `resource`.
fn names_with(resource: Resource) -> String {
    Action::ALL
        .into_iter()
        .filter(|a| a.resource() == resource)
        .map(|a| format!("'{}'", a.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Counts of actions, actors and missing fields over every stored event.
pub fn event_stats(conn: &Connection) -> Result<EventStats, AuditError> {
    let mut stats = EventStats::default();
    let mut stmt = conn.prepare("SELECT action, count(*) FROM audit_events GROUP BY action")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (action, n) = row?;
        stats.actions.insert(action, non_negative(1, n)?);
    }
    stats.admin = count(
        conn,
        "SELECT count(*) FROM audit_events WHERE actor LIKE 'admin:%'",
    )?;
    stats.denied = count(
        conn,
        "SELECT count(*) FROM audit_events WHERE outcome = 'denied'",
    )?;
    stats.examined = count(conn, "SELECT count(*) FROM audit_events")?;
    stats.missing_actor = count(
        conn,
        "SELECT count(*) FROM audit_events WHERE actor IS NULL OR actor = ''",
    )?;
    stats.missing_origin = count(
        conn,
        "SELECT count(*) FROM audit_events WHERE actor NOT LIKE 'admin:%' AND (peer IS NULL OR peer = '')",
    )?;
    // The names come from `Action`, never from input.
    stats.missing_resource = count(
        conn,
        &format!(
            "SELECT count(*) FROM audit_events WHERE outcome = 'success' AND (\
             (action IN ({}) AND (tenant IS NULL OR tenant = '' OR token IS NULL OR token = '')) \
             OR (action IN ({}) AND (tenant IS NULL OR tenant = '')))",
            names_with(Resource::Token),
            names_with(Resource::Tenant)
        ),
    )?;
    stats.missing_code = count(
        conn,
        "SELECT count(*) FROM audit_events WHERE outcome <> 'success' AND (code IS NULL OR code = '')",
    )?;
    stats.missing_purpose = count(
        conn,
        &format!(
            "SELECT count(*) FROM audit_events WHERE action = '{}' AND (purpose IS NULL OR purpose = '')",
            Action::Detokenize.as_str()
        ),
    )?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Actor, AuditChain, NewEvent, Outcome, migrate};

    #[test]
    fn counts_missing_fields_by_the_actions_own_resource() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(!has_audit_log(&conn).unwrap());
        migrate(&conn).unwrap();
        assert!(has_audit_log(&conn).unwrap());
        assert_eq!(oldest_event_time(&conn).unwrap(), None);
        let mut chain = AuditChain::load(&conn).unwrap();
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let client = || Actor::client("storefront", "ab");
        let events = [
            // complete
            NewEvent::new(t, client(), Action::Detokenize, Outcome::Success)
                .with_tenant("shop")
                .with_token("tok_1")
                .with_purpose("refund")
                .with_peer("127.0.0.1:1"),
            // an erasure by subject names no token: complete
            NewEvent::new(t, client(), Action::Erase, Outcome::Success)
                .with_tenant("shop")
                .with_peer("127.0.0.1:1"),
            // a read without its token; no peer
            NewEvent::new(t, client(), Action::Read, Outcome::Success).with_tenant("shop"),
            // denied without a code cannot be stored; denied with one
            NewEvent::new(
                t,
                Actor::admin("ops"),
                Action::KeyRotate,
                Outcome::Denied("x".into()),
            ),
        ];
        for ev in &events {
            chain.append(&conn, ev).unwrap();
        }
        let s = event_stats(&conn).unwrap();
        assert_eq!(s.examined, 4);
        assert_eq!(s.admin, 1);
        assert_eq!(s.denied, 1);
        assert_eq!(s.missing_resource, 1);
        assert_eq!(s.missing_origin, 1);
        assert_eq!(s.missing_purpose, 0);
        assert_eq!(s.missing_code, 0);
        assert_eq!(s.actions.get("token.read"), Some(&1));
        assert_eq!(oldest_event_time(&conn).unwrap(), Some(t));
        assert!(prune_retention_days(&conn).unwrap().is_empty());
    }
}
