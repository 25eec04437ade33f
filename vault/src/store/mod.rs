//! The durable store: SQLite in WAL mode with `synchronous=FULL`, one writer thread
//! that commits concurrently submitted work together (group commit), and a pool of
//! read connections. This module sees only sealed records, never card numbers.

pub mod cards;
pub mod cvc;
pub mod erasure;
mod handle;
pub mod idempotency;
pub mod inventory;
mod key_state_sql;
pub mod keys;
mod location;
mod lock;
pub mod meta;
pub mod pg;
mod pool;
pub mod rewrap;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub(crate) use handle::SealedPersonal;
pub use handle::{OpenTx, Reader, Session, Tx};
// The rows the handles take and return: plain data, the same for every engine.
pub use cards::{CardRow, Inserted, NewCard};
pub use cvc::{CvcKeyRow, CvcShape, CvcSweep, HeldCvcRow, NewCvcKey, NewHeldCvc};
pub use erasure::{CompletedErasure, DeletedCard, RequestOverview};
pub use idempotency::IdempotencyRow;
pub use inventory::CardShape;
pub use keys::{DataKeyRow, SealRow, WrappedDataKey};
pub use location::Location;
pub use lock::{DirLock, lock_exclusive, lock_shared};
pub use pool::ReadPool;
pub use rewrap::SealedCard;
pub use writer::{Claim, Completion, Hints, Job, JobOutcome, Writer, WriterConfig, WriterState};

/// A periodic or long-running upkeep task that must run on one node at a time
/// when several nodes share a database (PostgreSQL): each has an advisory lock
/// of its own, and the periodic ones a `meta` row with the time of their last
/// round (`round.<name>`), so a round runs once across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upkeep {
    /// The retention purge of cards past expiry or TTL.
    Retention,
    /// The purge of stored idempotent answers past their window.
    Idempotency,
    /// The sweep of held security codes past their deadline.
    CvcSweep,
    /// `keys rewrap`: held for the whole run (a session lock).
    Rewrap,
}

impl Upkeep {
    /// Its name in `meta` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Upkeep::Retention => "retention",
            Upkeep::Idempotency => "idempotency",
            Upkeep::CvcSweep => "cvc_sweep",
            Upkeep::Rewrap => "rewrap",
        }
    }

    /// Its advisory lock: a single 64-bit key ("PNVU" then the task), apart from
    /// the key lock and from the cards' two-key locks.
    pub(crate) fn lock_key(self) -> i64 {
        let task = match self {
            Upkeep::Retention => 1,
            Upkeep::Idempotency => 2,
            Upkeep::CvcSweep => 3,
            Upkeep::Rewrap => 4,
        };
        0x504E_5655_0000_0000 | task
    }
}

/// A storage failure. Messages carry SQLite's error class, never SQL parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error (or refused a setting the vault needs).
    #[error("database error: {reason}")]
    Sqlite {
        /// SQLite's error class, or what was refused.
        reason: String,
        /// SQLite's error (shared: the writer hands one failure to every job of a batch).
        #[source]
        source: Option<std::sync::Arc<rusqlite::Error>>,
    },
    /// PostgreSQL reported an error, or could not be reached. The reason is the
    /// server's message and SQLSTATE (never its DETAIL, which can quote row
    /// values) or the connection failure; never the URL or the password.
    #[error("PostgreSQL: {reason}")]
    Postgres {
        /// What failed, described.
        reason: String,
        /// The SQLSTATE of a server error (e.g. `40P01`), if there was one.
        code: Option<String>,
        /// Whether the connection (or the pool's wait for one) failed rather than
        /// a statement: the database is down, restarting or overloaded.
        connection: bool,
        /// The engine's error (shared: the writer hands one failure to every job
        /// of a batch).
        #[source]
        source: Option<std::sync::Arc<pg::PgError>>,
    },
    /// The `[storage]` configuration is missing, malformed or unreadable
    /// (described; a URL is never quoted).
    #[error("storage configuration: {0}")]
    Config(String),
    /// The database holds no vault (PostgreSQL: no panvault schema yet).
    #[error("the database holds no panvault vault; run `panvault init` first")]
    NoVault,
    /// The operation has no meaning on this engine.
    #[error("not available on this storage engine: {0}")]
    Unsupported(&'static str),
    /// The database was written by a newer panvault.
    #[error("database schema version {0} is newer than this build understands")]
    SchemaTooNew(i64),
    /// The database file failed its integrity check or is not a panvault database.
    #[error("database is corrupt or not a panvault vault: {0}")]
    Corrupt(String),
    /// The writer is gone, overloaded, or did not answer in time.
    #[error("storage writer unavailable: {0}")]
    Unavailable(&'static str),
    /// Another process runs this task (PostgreSQL: it holds the task's lock).
    #[error("another process is running {0} on this vault; try again when it has finished")]
    TaskRunning(&'static str),
    /// Another process (an admin command, or a server's writer) held the write lock
    /// for longer than this one waits, in seconds.
    #[error(
        "the vault's write lock stayed held by another admin command or the server for {0} s; try again later"
    )]
    LockHeld(u64),
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
            rusqlite::Error::SqliteFailure(err, _) => StoreError::Sqlite {
                reason: format!("{:?} ({})", err.code, err.extended_code),
                source: Some(std::sync::Arc::new(e)),
            },
            other => StoreError::Sqlite {
                reason: short(&other),
                source: Some(std::sync::Arc::new(other)),
            },
        }
    }
}

impl From<pg::PgError> for StoreError {
    fn from(e: pg::PgError) -> Self {
        match e {
            pg::PgError::SchemaTooNew { found, .. } => StoreError::SchemaTooNew(found),
            pg::PgError::Foreign(what) => StoreError::Corrupt(what),
            other => {
                let code = other.sqlstate().map(str::to_owned);
                let connection = pg_connection_lost(&other);
                StoreError::Postgres {
                    reason: other.to_string(),
                    code,
                    connection,
                    source: Some(std::sync::Arc::new(other)),
                }
            }
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::from(pg::PgError::Db(e))
    }
}

/// Whether a PostgreSQL failure means the database is out of reach now (and may
/// come back): the connection closed or failed, the pool found none in time, the
/// server is shutting down or starting (`57P01`–`57P03`), a connection exception
/// (`08xxx`), too many connections (`53300`), the lock table full (`53200`), or a deadlock or serialization
/// failure (`40P01`, `40001`: only that transaction failed; trying again works).
fn pg_connection_lost(e: &pg::PgError) -> bool {
    match e {
        pg::PgError::Pool { .. } => true,
        pg::PgError::Db(err) => match err.code() {
            Some(code) => {
                let c = code.code();
                c.starts_with("08")
                    || c.starts_with("57P")
                    || c == "53300"
                    || c == "53200"
                    || c == "40P01"
                    || c == "40001"
            }
            // No SQLSTATE: the driver's own failure (I/O, closed connection).
            None => err.is_closed() || err.as_db_error().is_none(),
        },
        _ => false,
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

/// A count the database returned, as `u64`. A negative one cannot come from
/// `count(*)` or a change count: the database is broken, and says so.
pub(crate) fn count_u64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("a count came back as {n}")))
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
            StoreError::Unavailable(_) | StoreError::LockHeld(_) | StoreError::TaskRunning(_) => {
                true
            }
            StoreError::Postgres { connection, .. } => *connection,
            StoreError::Sqlite { reason: s, .. } => {
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

/// Opens an existing database for a short write from a process that does not own
/// the vault (an admin event appended without unsealing): no migrations, never
/// creates a file, durable commits, and a 5 s wait for the write lock.
pub fn open_for_append(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
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
        return Err(StoreError::Sqlite {
            reason: format!("could not enable WAL (journal_mode={mode})"),
            source: None,
        });
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

/// The database file of a data directory ([`crate::DataDir::database`]).
pub fn db_path(data_dir: &Path) -> PathBuf {
    crate::DataDir::new(data_dir).database()
}

/// The advisory lock file of a data directory ([`crate::DataDir::SERVE_LOCK`]).
pub const SERVE_LOCK_FILE: &str = crate::DataDir::SERVE_LOCK;

/// The advisory lock file in `data_dir` ([`crate::DataDir::serve_lock`]).
pub fn serve_lock_path(data_dir: &Path) -> PathBuf {
    crate::DataDir::new(data_dir).serve_lock()
}

/// Up to `n` tokens of the store, for benchmarks and tests.
pub fn sample_tokens(path: &Path, n: i64) -> Result<Vec<String>, StoreError> {
    let conn = open_reader(path)?;
    let mut stmt = conn.prepare("SELECT token FROM cards ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([n], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// How long a writer keeps retrying for the write lock before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Replaces SQLite's default busy handler (sleeps of 1, 2, 5 … 100 ms) with one that
/// polls every 100–500 µs until `limit` has passed since the first try: a writer
/// waiting on another process's short transaction wakes as soon as the lock frees,
/// instead of sleeping through the gap that process leaves and losing the lock
/// again. The cost is a few thousand wake-ups a second while it waits.
pub fn poll_for_locks(conn: &mut Connection, limit: Duration) -> Result<(), StoreError> {
    let mut since: Option<Instant> = None;
    conn.busy_handler(Some(move |count: i32| {
        let now = Instant::now();
        let first = match since {
            Some(t) if count > 0 => t,
            _ => {
                since = Some(now);
                now
            }
        };
        if now.duration_since(first) >= limit {
            return false;
        }
        let pause = if count < 2_000 { 100 } else { 500 };
        std::thread::sleep(Duration::from_micros(pause));
        true
    }))?;
    Ok(())
}

/// `meta` key set (to `"<unix time> <nonce>"`) whenever deleted card data may still
/// have page copies in the WAL, and cleared once a `TRUNCATE` checkpoint emptied it.
pub const SCRUB_PENDING: &str = "wal_scrub_pending";
/// `meta` key: unix time of the last truncation that cleared [`SCRUB_PENDING`].
pub const SCRUBBED_AT: &str = "wal_scrubbed_at";

/// Marks the WAL as holding deleted data, inside the deleting transaction (so a crash
/// between the commit and the truncation still leaves the mark). Each mark is unique
/// (a random nonce), so a truncation clears only the marks it covered.
pub fn mark_scrub_pending(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2 || ' ' || hex(randomblob(8)))
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![SCRUB_PENDING, now.to_string()],
    )?;
    Ok(())
}

/// The pending-scrub mark, if any: `(unix time it was set, the raw value)`.
pub fn scrub_pending(conn: &Connection) -> Result<Option<(i64, String)>, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [SCRUB_PENDING],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match v {
        None => None,
        Some(raw) => {
            let t = raw
                .split(' ')
                .next()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("meta.{SCRUB_PENDING} is malformed")))?;
            Some((t, raw))
        }
    })
}

/// Checkpoints the WAL into the database file and truncates it, so deleted rows
/// leave no copy in the WAL, retrying for up to `wait` while readers hold older
/// snapshots (each try waits at most a few milliseconds for them, holding the write
/// lock meanwhile). On success clears the pending-scrub mark it covered and
/// records the time in `meta` and in the erasure requests it covered; on failure
/// leaves (or sets) the mark so the server's checkpointer truncates later.
/// Returns whether the WAL was emptied.
pub fn scrub_wal_on(conn: &mut Connection, wait: Duration, now: i64) -> Result<bool, StoreError> {
    // What this truncation covers: every commit before it.
    let mark = scrub_pending(conn)?;
    let last_request = erasure::last_request_id(conn)?;
    poll_for_locks(conn, Duration::from_millis(5))?;
    let deadline = Instant::now() + wait;
    let emptied = loop {
        let busy: Result<i64, _> =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
        if matches!(busy, Ok(0)) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    poll_for_locks(conn, LOCK_WAIT)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if emptied {
        if let Some((_, raw)) = &mark {
            tx.execute(
                "DELETE FROM meta WHERE key = ?1 AND value = ?2",
                params![SCRUB_PENDING, raw],
            )?;
        }
        if let Some(id) = last_request {
            erasure::mark_wal_scrubbed(&tx, id, now)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![SCRUBBED_AT, now.to_string()],
        )?;
    } else if mark.is_none() {
        mark_scrub_pending(&tx, now)?;
    }
    tx.commit()?;
    Ok(emptied)
}

/// [`scrub_wal_on`] on a connection of its own to the database at `path` (false if
/// it cannot be opened or written).
pub fn scrub_wal(path: &Path, wait: Duration) -> bool {
    let Ok(mut conn) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    let Some(now) = now else {
        return false;
    };
    scrub_wal_on(&mut conn, wait, now).unwrap_or(false)
}

/// WAL frames after which the log is restarted (~64 MiB of 4 KiB pages): the
/// server's checkpointer asks its writer to, and admin batch loops do it themselves.
pub const WAL_RESTART_FRAMES: i64 = 16_384;

/// Keeps the WAL of a connection that commits many transactions in a row (an admin
/// batch loop) bounded: after each commit it looks at the WAL's size (one `stat`),
/// and past `limit` frames it checkpoints and truncates the log, waiting at most a
/// few milliseconds for the lock and for readers (a running server's writer must
/// not wait on it for long). A truncation that readers prevent is tried again
/// 250 ms later.
#[derive(Debug)]
pub struct WalBound {
    limit_bytes: u64,
    wal: Option<PathBuf>,
    not_before: Option<Instant>,
}

impl WalBound {
    /// A bound of `limit` frames for the WAL of the database at `db`.
    pub fn new(db: Option<&Path>, limit: i64) -> WalBound {
        let frames = u64::try_from(limit.max(1)).unwrap_or(1);
        WalBound {
            // a frame is a page and its 24-byte header
            limit_bytes: frames.saturating_mul(u64::from(PAGE_SIZE) + 24),
            wal: db.map(|p| {
                let mut s = p.as_os_str().to_owned();
                s.push(crate::DataDir::DATABASE_SIDE_SUFFIXES[0]);
                PathBuf::from(s)
            }),
            not_before: None,
        }
    }

    /// Call after each commit. Never fails the caller's work: a checkpoint that
    /// cannot run now is tried again later.
    pub fn after_commit(&mut self, session: &mut Session) {
        let Some(conn) = session.conn_mut() else {
            return;
        };
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(size) = self
            .wal
            .as_ref()
            .and_then(|w| std::fs::metadata(w).ok())
            .map(|m| m.len())
        else {
            return;
        };
        if size <= self.limit_bytes {
            return;
        }
        let _ = poll_for_locks(conn, Duration::from_millis(5));
        let done = matches!(
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r
                .get::<_, i64>(0)),
            Ok(0)
        );
        let _ = poll_for_locks(conn, LOCK_WAIT);
        self.not_before = (!done).then(|| Instant::now() + Duration::from_millis(250));
    }
}

/// Rate-limits a warning that can repeat for every request (a full disk answers every
/// write with an error): at most one line per `every`, the next one saying how many
/// were suppressed meanwhile.
#[derive(Debug)]
pub struct WarnLimiter {
    every: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    /// At most one warning per `every`.
    pub const fn new(every: Duration) -> WarnLimiter {
        WarnLimiter {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this occurrence should be logged (`n` suppressed since the last
    /// logged one), `None` when it is suppressed.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let Ok(mut g) = self.state.lock() else {
            return Some(0);
        };
        let (last, suppressed) = &mut *g;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.every => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
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

    #[test]
    fn repeated_warnings_are_limited_to_one_per_period_with_a_count() {
        let lim = WarnLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(lim.check_at(t0), Some(0));
        for i in 1..=3499 {
            assert_eq!(lim.check_at(t0 + Duration::from_micros(i * 280)), None);
        }
        assert_eq!(lim.check_at(t0 + Duration::from_secs(1)), Some(3499));
        assert_eq!(lim.check_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(lim.check_at(t0 + Duration::from_secs(3)), Some(1));
    }
}
