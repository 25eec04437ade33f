//! The audit tables inside the vault's database.
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::AuditError;

/// Version of the audit tables this build writes and reads.
///
/// - 1: first version.
/// - 2: `audit_events.outcome` is checked with `=`/`OR` instead of `IN (…)`. SQLite
///   evaluates a CHECK's `IN` list of three or more constants by building an
///   ephemeral b-tree on every INSERT (`OpenEphemeral`), which cost about 40 % of an
///   append. Same columns, same values; [`migrate`] rebuilds a version 1 table.
pub const SCHEMA_VERSION: i64 = 2;

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
    outcome    TEXT NOT NULL CHECK (outcome = 'success' OR outcome = 'denied' OR outcome = 'error'),
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

/// Creates the audit tables if needed and checks their version, upgrading an older
/// version in place. Idempotent; call it inside the vault's own migration
/// transaction (it also works outside one: the upgrade runs in a savepoint, so it
/// happens whole or not at all).
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
        Some(1) => in_savepoint(conn, upgrade_v1_to_v2),
        Some(_) => Ok(()),
    }
}

/// Runs `f` inside `SAVEPOINT audit_migrate`: released on success, rolled back on error.
fn in_savepoint(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    conn.execute_batch("SAVEPOINT audit_migrate")?;
    match f(conn) {
        Ok(()) => {
            conn.execute_batch("RELEASE audit_migrate")?;
            Ok(())
        }
        Err(e) => {
            // The original error matters more than a failure to roll back.
            let _ = conn.execute_batch("ROLLBACK TO audit_migrate; RELEASE audit_migrate");
            Err(e)
        }
    }
}

/// Version 1 → 2: the same table under the cheaper CHECK, rows copied unchanged
/// (SQLite cannot alter a CHECK constraint in place).
fn upgrade_v1_to_v2(conn: &Connection) -> Result<(), AuditError> {
    let events_ddl = table_ddl("audit_events")?;
    let rebuilt = events_ddl.replacen(
        "CREATE TABLE IF NOT EXISTS audit_events",
        "CREATE TABLE audit_events_v2",
        1,
    );
    conn.execute_batch(&rebuilt)?;
    conn.execute_batch(
        "INSERT INTO audit_events_v2 SELECT * FROM audit_events;
         DROP TABLE audit_events;
         ALTER TABLE audit_events_v2 RENAME TO audit_events;",
    )?;
    conn.execute(
        "UPDATE audit_meta SET value = ?1 WHERE key = 'schema_version'",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

/// The `CREATE TABLE` statement of `table` in [`SCHEMA_SQL`].
fn table_ddl(table: &str) -> Result<&'static str, AuditError> {
    let head = format!("CREATE TABLE IF NOT EXISTS {table} (");
    let start = SCHEMA_SQL.find(&head).ok_or(AuditError::Internal)?;
    let rest = SCHEMA_SQL.get(start..).ok_or(AuditError::Internal)?;
    let end = rest.find(") STRICT;").ok_or(AuditError::Internal)?;
    rest.get(..end + ") STRICT;".len())
        .ok_or(AuditError::Internal)
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
