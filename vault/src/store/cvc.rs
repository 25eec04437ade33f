//! Held card security codes (`held_cvcs`) and the short-lived keys they are
//! sealed under (`cvc_keys`). Rows are sealed bytes only; a key row is deleted
//! once every code sealed under it has passed its deadline, and the table of
//! codes is deleted from at the first use, the deadline, or with the card.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A wrapped key of one time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CvcKeyRow {
    /// Row id (bound into every code sealed under it).
    pub id: i64,
    /// Start of the window (unix seconds, a multiple of `ttl_secs`).
    pub window_start: i64,
    /// The code lifetime the window was made for.
    pub ttl_secs: i64,
    /// The key, wrapped under the root key.
    pub wrapped: Vec<u8>,
    /// When the key was made.
    pub created_at: i64,
    /// When it is deleted: the end of its window plus one lifetime.
    pub destroy_at: i64,
}

/// A key to store.
#[derive(Debug)]
pub struct NewCvcKey<'a> {
    /// Start of the window (unix seconds, a multiple of `ttl_secs`).
    pub window_start: i64,
    /// The code lifetime the window is made for.
    pub ttl_secs: i64,
    /// The key, wrapped under the root key.
    pub wrapped: &'a [u8],
    /// When the key is made.
    pub created_at: i64,
    /// When it is to be deleted.
    pub destroy_at: i64,
}

/// A held code, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCvcRow {
    /// The window key it is sealed under.
    pub key_id: i64,
    /// The AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// The sealed code.
    pub sealed: Vec<u8>,
    /// When it was stored (unix seconds).
    pub created_at: i64,
    /// When it expires (unix seconds).
    pub deadline: i64,
}

/// A code to hold for `(tenant, token)`, replacing any it holds.
#[derive(Debug)]
pub struct NewHeldCvc<'a> {
    /// The token's tenant.
    pub tenant: &'a str,
    /// The token the code belongs to.
    pub token: &'a str,
    /// The window key it is sealed under.
    pub key_id: i64,
    /// The AES-GCM nonce.
    pub nonce: &'a [u8],
    /// The sealed code.
    pub sealed: &'a [u8],
    /// When it is stored (unix seconds).
    pub created_at: i64,
    /// When it expires (unix seconds).
    pub deadline: i64,
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CvcSweep {
    /// Codes past their deadline (or under a key past its own).
    pub codes: u64,
    /// Keys past their destruction time.
    pub keys: u64,
}

/// The tables as the compliance check sees them, at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CvcShape {
    /// Columns of `held_cvcs`.
    pub columns: Vec<String>,
    /// Codes held.
    pub held: i64,
    /// Codes still stored past their deadline.
    pub past_deadline: i64,
    /// Seconds the most overdue code is past its deadline (none when none is).
    pub most_overdue_secs: Option<i64>,
    /// Longest lifetime any held code was given (deadline − created).
    pub longest_lifetime_secs: Option<i64>,
    /// Shortest and longest sealed value, in bytes.
    pub sealed_len: Option<(i64, i64)>,
    /// Codes whose key row is gone (unreadable).
    pub orphaned: i64,
    /// Keys stored.
    pub keys: i64,
    /// Age of the oldest key.
    pub oldest_key_age_secs: Option<i64>,
    /// Longest planned key life (destroy_at − created_at).
    pub longest_key_life_secs: Option<i64>,
    /// How far past its destruction time the most overdue key is.
    pub key_overdue_secs: Option<i64>,
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CvcKeyRow> {
    Ok(CvcKeyRow {
        id: r.get(0)?,
        window_start: r.get(1)?,
        ttl_secs: r.get(2)?,
        wrapped: r.get(3)?,
        created_at: r.get(4)?,
        destroy_at: r.get(5)?,
    })
}

const KEY_COLUMNS: &str = "id, window_start, ttl_secs, wrapped, created_at, destroy_at";

/// The key of window `window_start` for lifetime `ttl_secs`, if made.
pub fn key_for_window(
    conn: &Connection,
    window_start: i64,
    ttl_secs: i64,
) -> Result<Option<CvcKeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM cvc_keys WHERE window_start = ?1 AND ttl_secs = ?2"
        ))?
        .query_row(params![window_start, ttl_secs], key_row)
        .optional()?)
}

/// The key with id `id`, unless destroyed.
pub fn key_by_id(conn: &Connection, id: i64) -> Result<Option<CvcKeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM cvc_keys WHERE id = ?1"))?
        .query_row([id], key_row)
        .optional()?)
}

/// Stores a window's key; false when that window already has one (another node
/// made it first: read it instead).
pub fn insert_key(conn: &Connection, k: &NewCvcKey<'_>) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO cvc_keys (window_start, ttl_secs, wrapped, created_at, destroy_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(window_start, ttl_secs) DO NOTHING",
        )?
        .execute(params![
            k.window_start,
            k.ttl_secs,
            k.wrapped,
            k.created_at,
            k.destroy_at
        ])?;
    Ok(n == 1)
}

/// Every key row (for a root rotation).
pub fn all_keys(conn: &Connection) -> Result<Vec<CvcKeyRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {KEY_COLUMNS} FROM cvc_keys"))?;
    let rows = stmt.query_map([], key_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the wrapped bytes of key `id` (a root rotation).
pub fn rewrap_key(conn: &Connection, id: i64, wrapped: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE cvc_keys SET wrapped = ?2 WHERE id = ?1",
        params![id, wrapped],
    )?;
    Ok(())
}

/// Holds a code for `(tenant, token)`, replacing the one it held.
pub fn put_held(conn: &Connection, c: &NewHeldCvc<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO held_cvcs (tenant, token, key_id, nonce, sealed, created_at, deadline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(tenant, token) DO UPDATE SET key_id = excluded.key_id,
             nonce = excluded.nonce, sealed = excluded.sealed,
             created_at = excluded.created_at, deadline = excluded.deadline",
    )?
    .execute(params![
        c.tenant,
        c.token,
        c.key_id,
        c.nonce,
        c.sealed,
        c.created_at,
        c.deadline
    ])?;
    Ok(())
}

fn held_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeldCvcRow> {
    Ok(HeldCvcRow {
        key_id: r.get(0)?,
        nonce: r.get(1)?,
        sealed: r.get(2)?,
        created_at: r.get(3)?,
        deadline: r.get(4)?,
    })
}

/// The code held for `(tenant, token)`, whatever its deadline (the caller
/// refuses an expired one).
pub fn held(
    conn: &Connection,
    tenant: &str,
    token: &str,
) -> Result<Option<HeldCvcRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT key_id, nonce, sealed, created_at, deadline FROM held_cvcs
             WHERE tenant = ?1 AND token = ?2",
        )?
        .query_row(params![tenant, token], held_row)
        .optional()?)
}

/// Deletes and returns the code held for `(tenant, token)` (its first use).
pub fn take_held(
    conn: &Connection,
    tenant: &str,
    token: &str,
) -> Result<Option<HeldCvcRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM held_cvcs WHERE tenant = ?1 AND token = ?2
             RETURNING key_id, nonce, sealed, created_at, deadline",
        )?
        .query_row(params![tenant, token], held_row)
        .optional()?)
}

/// Deletes every code past its deadline at `now`, and every key past its
/// destruction time (with any code still under it).
pub fn sweep(conn: &Connection, now: i64) -> Result<CvcSweep, StoreError> {
    let expired = conn
        .prepare_cached("DELETE FROM held_cvcs WHERE deadline <= ?1")?
        .execute([now])?;
    let orphaned = conn
        .prepare_cached(
            "DELETE FROM held_cvcs WHERE key_id IN
             (SELECT id FROM cvc_keys WHERE destroy_at <= ?1)",
        )?
        .execute([now])?;
    let keys = conn
        .prepare_cached("DELETE FROM cvc_keys WHERE destroy_at <= ?1")?
        .execute([now])?;
    let n = |v: usize| {
        u64::try_from(v)
            .map_err(|_| StoreError::Corrupt(format!("a change count came back as {v}")))
    };
    Ok(CvcSweep {
        codes: n(expired)?.saturating_add(n(orphaned)?),
        keys: n(keys)?,
    })
}

/// The tables' shape at `now`; `None` for a vault whose schema predates them.
pub fn shape(conn: &Connection, now: i64) -> Result<Option<CvcShape>, StoreError> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('held_cvcs', 'cvc_keys')",
        [],
        |r| r.get(0),
    )?;
    if exists != 2 {
        return Ok(None);
    }
    let columns = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('held_cvcs')")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let (held, past_deadline, most_overdue, longest, min_len, max_len) = conn.query_row(
        "SELECT count(*), coalesce(sum(deadline <= ?1), 0), max(CASE WHEN deadline <= ?1 THEN ?1 - deadline END),
                max(deadline - created_at), min(length(sealed)), max(length(sealed))
         FROM held_cvcs",
        [now],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        },
    )?;
    let orphaned: i64 = conn.query_row(
        "SELECT count(*) FROM held_cvcs WHERE key_id NOT IN (SELECT id FROM cvc_keys)",
        [],
        |r| r.get(0),
    )?;
    let (keys, oldest, longest_life, key_overdue) = conn.query_row(
        "SELECT count(*), max(?1 - created_at), max(destroy_at - created_at),
                max(CASE WHEN destroy_at <= ?1 THEN ?1 - destroy_at END)
         FROM cvc_keys",
        [now],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        },
    )?;
    Ok(Some(CvcShape {
        columns,
        held,
        past_deadline,
        most_overdue_secs: most_overdue,
        longest_lifetime_secs: longest,
        sealed_len: min_len.zip(max_len),
        orphaned,
        keys,
        oldest_key_age_secs: oldest,
        longest_key_life_secs: longest_life,
        key_overdue_secs: key_overdue,
    }))
}
