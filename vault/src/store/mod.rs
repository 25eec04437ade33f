//! The durable store: SQLite in WAL mode with `synchronous=FULL`, one writer thread
//! that commits concurrently submitted work together (group commit), and a pool of
//! read connections. This module sees only sealed records, never card numbers.

mod lock;
mod pool;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub use lock::{DirLock, lock_exclusive, lock_shared};
pub use pool::{PooledConn, ReadPool};
pub use writer::{Completion, Job, JobOutcome, Writer, WriterConfig, WriterState};

/// A storage failure. Messages carry SQLite's error class, never SQL parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(String),
    /// The database was written by a newer panvault.
    #[error("database schema version {0} is newer than this build understands")]
    SchemaTooNew(i64),
    /// The database file failed its integrity check or is not a panvault database.
    #[error("database is corrupt or not a panvault vault: {0}")]
    Corrupt(String),
    /// The writer is gone, overloaded, or did not answer in time.
    #[error("storage writer unavailable: {0}")]
    Unavailable(&'static str),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // Only the error class: rusqlite's messages can include statement text but
        // never bound parameters; still, keep it to the code and a short reason.
        match e {
            // A damaged or foreign file says so by name, wherever it is first read.
            rusqlite::Error::SqliteFailure(err, _)
                if matches!(
                    err.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                StoreError::Corrupt(format!("{:?} ({})", err.code, err.extended_code))
            }
            rusqlite::Error::SqliteFailure(err, _) => {
                StoreError::Sqlite(format!("{:?} ({})", err.code, err.extended_code))
            }
            other => StoreError::Sqlite(short(&other)),
        }
    }
}

/// Any failure to read what should be a vault's database, as [`StoreError::Corrupt`].
fn corrupt(e: rusqlite::Error) -> StoreError {
    match StoreError::from(e) {
        c @ StoreError::Corrupt(_) => c,
        other => StoreError::Corrupt(other.to_string()),
    }
}

/// Refuses a file without the panvault schema before anything is written to it,
/// so that opening an existing vault never creates or migrates one in its place:
/// `user_version` 0 (an empty file, or some other SQLite database), or another
/// application's file (its `application_id` is not [`schema::APPLICATION_ID`]; a
/// vault made before the id was stamped is known by the `vault_id` in its `meta`).
fn require_schema(conn: &Connection) -> Result<(), StoreError> {
    // A WAL left by a killed process may be being recovered by another opener.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        return Err(StoreError::Corrupt(
            "the file has no panvault schema (empty, or another SQLite database)".into(),
        ));
    }
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app == schema::APPLICATION_ID {
        return Ok(());
    }
    let legacy_vault = app == 0
        && conn
            .query_row(
                "SELECT count(*) FROM meta WHERE key = 'vault_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n == 1);
    if !legacy_vault {
        return Err(StoreError::Corrupt(format!(
            "the file is another application's SQLite database (application_id {app:#x}), not a panvault vault"
        )));
    }
    Ok(())
}

fn short(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::QueryReturnedNoRows => "no rows".into(),
        rusqlite::Error::InvalidColumnType(i, _, t) => format!("column {i} has type {t}"),
        rusqlite::Error::FromSqlConversionFailure(i, t, _) => {
            format!("column {i} ({t}) conversion failed")
        }
        _ => "sqlite error".into(),
    }
}

impl StoreError {
    /// Whether the error means the disk or database cannot take writes now
    /// (full, read-only, I/O error, locked): a reason to answer 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Sqlite(s) => {
                s.contains("DiskFull")
                    || s.contains("ReadOnly")
                    || s.contains("SystemIoFailure")
                    || s.contains("DatabaseBusy")
                    || s.contains("DatabaseLocked")
                    || s.contains("CannotOpen")
            }
            _ => false,
        }
    }
}

/// Page size of new databases. Random-key index inserts dirty one leaf page each,
/// so smaller pages mean fewer bytes written to the WAL per durable insert.
pub const PAGE_SIZE: u32 = 4096;

fn page_size() -> u32 {
    std::env::var("PANVAULT_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PAGE_SIZE)
}

/// The connection settings every connection gets.
fn configure(conn: &Connection, writer: bool) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The writer keeps a modest page cache: SQLite scans the whole cache at the end
    // of every write transaction that grew the file, so a huge cache slows every
    // commit. Readers keep a large one. No memory mapping: SQLite re-maps the file
    // whenever it grows, and the page faults and unmaps cost readers more than
    // they saved (measured: detokenize 12.8k/s with mmap, 15.7–25.8k/s without).
    let cache_kib: i64 = if writer { 8 * 1024 } else { 64 * 1024 };
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "mmap_size", 0i64)?;
    if writer {
        // The checkpointer thread runs PASSIVE checkpoints; the writer never blocks on one.
        conn.pragma_update(None, "wal_autocheckpoint", 0i64)?;
    } else {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(())
}

/// Opens (creating if `create`) the database at `path` for writing, in WAL mode,
/// migrated to the latest schema.
pub fn open_writer(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags)?;
    if create {
        conn.pragma_update(None, "page_size", page_size())?;
    } else {
        require_schema(&conn)?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(corrupt)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite(format!(
            "could not enable WAL (journal_mode={mode})"
        )));
    }
    configure(&conn, true)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a read-only connection to an existing vault's database.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    require_schema(&conn)?;
    configure(&conn, false)?;
    Ok(conn)
}

/// Runs `PRAGMA quick_check` and refuses a damaged or foreign file.
pub fn check_integrity(conn: &Connection) -> Result<(), StoreError> {
    let res: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(corrupt)?;
    if res != "ok" {
        return Err(StoreError::Corrupt(res.chars().take(200).collect()));
    }
    Ok(())
}

/// The database file of a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("vault.db")
}

/// The advisory lock file of a data directory: a serving vault holds a shared
/// `flock` on it for its lifetime, `master rotate` an exclusive one.
pub const SERVE_LOCK_FILE: &str = "serve.lock";

/// [`SERVE_LOCK_FILE`] in `data_dir`.
pub fn serve_lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SERVE_LOCK_FILE)
}

/// Up to `n` tokens of the store, for benchmarks and tests.
pub fn sample_tokens(path: &Path, n: i64) -> Result<Vec<String>, StoreError> {
    let conn = open_reader(path)?;
    let mut stmt = conn.prepare("SELECT token FROM cards ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([n], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Checkpoints the WAL into the database file and truncates it, so deleted rows
/// leave no copy in the WAL. Retries for up to `wait` while readers or the writer
/// are busy; returns whether the WAL was emptied.
pub fn scrub_wal(path: &Path, wait: std::time::Duration) -> bool {
    let Ok(conn) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return false;
    };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(200));
    let deadline = std::time::Instant::now() + wait;
    loop {
        let busy: Result<i64, _> =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
        if matches!(busy, Ok(0)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let text = dir.path().join("text.db");
        std::fs::write(&text, b"not a database, just text\n".repeat(200)).unwrap();
        for path in [&empty, &foreign, &text] {
            let before = std::fs::read(path).unwrap();
            assert!(matches!(
                open_writer(path, false),
                Err(StoreError::Corrupt(_))
            ));
            assert!(matches!(open_reader(path), Err(StoreError::Corrupt(_))));
            assert_eq!(std::fs::read(path).unwrap(), before, "{}", path.display());
        }
        // a new vault's database is still made and then opens
        let fresh = dir.path().join("fresh.db");
        drop(open_writer(&fresh, true).unwrap());
        drop(open_writer(&fresh, false).unwrap());
        drop(open_reader(&fresh).unwrap());
    }
}
