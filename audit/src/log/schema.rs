//! The audit tables inside the vault's database.
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::AuditError;

/// Version of the audit tables this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The audit tables (idempotent: every statement is `IF NOT EXISTS`).
///
/// `audit_events` holds the chain; `audit_checkpoints` the signed heads (never
/// pruned); `audit_prunes` one signed record per retention purge. Column order of
/// `audit_events` is the order of the canonical encoding.
pub const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS audit_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_events (
    seq        INTEGER PRIMARY KEY,   -- 1, 2, 3 … never reused
    time_ns    INTEGER NOT NULL,      -- Unix time in nanoseconds, UTC
    actor      TEXT NOT NULL,         -- certificate CN, admin:<user>, unauthenticated
    actor_fp   TEXT,                  -- SHA-256 of the client certificate (hex)
    action     TEXT NOT NULL,
    tenant     TEXT,
    token      TEXT,
    purpose    TEXT,
    outcome    TEXT NOT NULL CHECK (outcome IN ('success', 'denied', 'error')),
    code       TEXT,
    request_id TEXT,
    peer       TEXT,
    details    TEXT,
    prev_hash  BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash       BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id        INTEGER PRIMARY KEY,    -- 1, 2, 3 … contiguous, signed
    seq       INTEGER NOT NULL,       -- last event covered (0: empty log)
    head      BLOB NOT NULL CHECK (length(head) = 32),
    time_ns   INTEGER NOT NULL,
    signature BLOB NOT NULL CHECK (length(signature) = 64)
) STRICT;
CREATE TABLE IF NOT EXISTS audit_prunes (
    id            INTEGER PRIMARY KEY, -- 1, 2, 3 … contiguous, signed
    first_seq     INTEGER NOT NULL,    -- first event kept
    prev_hash     BLOB NOT NULL CHECK (length(prev_hash) = 32), -- hash of event first_seq - 1
    checkpoint_id INTEGER NOT NULL,    -- the checkpoint at first_seq - 1
    cutoff_ns     INTEGER NOT NULL,    -- events older than this were eligible
    deleted       INTEGER NOT NULL,    -- events deleted by this purge
    time_ns       INTEGER NOT NULL,
    signature     BLOB NOT NULL CHECK (length(signature) = 64)
) STRICT;
";

/// Creates the audit tables if needed and checks their version. Idempotent; call
/// it inside the vault's own migration transaction.
pub fn migrate(conn: &Connection) -> Result<(), AuditError> {
    conn.execute_batch(SCHEMA_SQL)?;
    let found: Option<i64> = conn
        .query_row(
            "SELECT value FROM audit_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match found {
        None => {
            conn.execute(
                "INSERT INTO audit_meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )?;
            Ok(())
        }
        Some(v) if v > SCHEMA_VERSION => Err(AuditError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(_) => Ok(()),
    }
}

/// Opens `path` (the vault's `vault.db`) read-only for `verify`, `export` and
/// `checkpoint`, with a busy timeout so a running server never blocks it for long.
/// Fails if the file does not exist.
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    if !path.is_file() {
        return Err(AuditError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "database file not found",
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// A read transaction, so that several queries see one snapshot (none if the
/// caller already has a transaction open). Ends with a rollback: nothing is written.
pub(crate) struct ReadTx<'a> {
    conn: &'a Connection,
    active: bool,
}

impl<'a> ReadTx<'a> {
    pub(crate) fn begin(conn: &'a Connection) -> Result<ReadTx<'a>, AuditError> {
        let active = conn.is_autocommit();
        if active {
            conn.execute_batch("BEGIN")?;
        }
        Ok(ReadTx { conn, active })
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        if self.active {
            // Read only: ending the transaction cannot lose anything.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
