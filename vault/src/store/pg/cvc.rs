//! Held card security codes and their window keys on PostgreSQL: the twins of
//! `store::cvc` (same names, arguments and results), inside the caller's
//! transaction or on a plain connection ([`GenericClient`]).
//!
//! Both tables are `UNLOGGED` (schema version 3): PostgreSQL writes no WAL for
//! them, so their rows never reach a WAL archive, a streaming replica or a base
//! backup (`pg_basebackup` copies only their empty init fork). A held code and
//! the key it is sealed under exist in the primary's data files only, and are
//! gone from there at first use or expiry. The price: a crash of the database
//! (or a failover to a replica) empties both tables, and the codes held then are
//! lost: a relay needing one answers `409 cvc_unavailable` and the shop asks the
//! buyer again, as after the code's expiry.
//!
//! Across nodes: two nodes making the same window's key at once keep one (the
//! unique index on the window and `ON CONFLICT DO NOTHING`: the second waits for
//! the first's commit and then reads its key), and [`take_held`] reads and
//! deletes in one statement (`DELETE … RETURNING`), so a code is used once
//! whichever nodes ask.

use postgres::{GenericClient, Row};

use super::PgError;
pub use crate::store::cvc::{CvcKeyRow, CvcShape, CvcSweep, HeldCvcRow, NewCvcKey, NewHeldCvc};

const KEY_COLUMNS: &str = "id, window_start, ttl_secs, wrapped, created_at, destroy_at";

fn key_row(r: &Row) -> Result<CvcKeyRow, PgError> {
    Ok(CvcKeyRow {
        id: r.try_get(0)?,
        window_start: r.try_get(1)?,
        ttl_secs: r.try_get(2)?,
        wrapped: r.try_get(3)?,
        created_at: r.try_get(4)?,
        destroy_at: r.try_get(5)?,
    })
}

fn held_row(r: &Row) -> Result<HeldCvcRow, PgError> {
    Ok(HeldCvcRow {
        key_id: r.try_get(0)?,
        nonce: r.try_get(1)?,
        sealed: r.try_get(2)?,
        created_at: r.try_get(3)?,
        deadline: r.try_get(4)?,
    })
}

/// The key of window `window_start` for lifetime `ttl_secs`, if made.
pub fn key_for_window(
    c: &mut impl GenericClient,
    window_start: i64,
    ttl_secs: i64,
) -> Result<Option<CvcKeyRow>, PgError> {
    c.query_opt(
        &format!("SELECT {KEY_COLUMNS} FROM cvc_keys WHERE window_start = $1 AND ttl_secs = $2"),
        &[&window_start, &ttl_secs],
    )?
    .as_ref()
    .map(key_row)
    .transpose()
}

/// The key with id `id`, unless destroyed.
pub fn key_by_id(c: &mut impl GenericClient, id: i64) -> Result<Option<CvcKeyRow>, PgError> {
    c.query_opt(
        &format!("SELECT {KEY_COLUMNS} FROM cvc_keys WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(key_row)
    .transpose()
}

/// Stores a window's key; false when that window already has one (another node
/// made it first: read it instead). A concurrent insert of the same window waits
/// for the other transaction and then finds it taken.
pub fn insert_key(c: &mut impl GenericClient, k: &NewCvcKey<'_>) -> Result<bool, PgError> {
    let n = c.execute(
        "INSERT INTO cvc_keys (window_start, ttl_secs, wrapped, created_at, destroy_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (window_start, ttl_secs) DO NOTHING",
        &[
            &k.window_start,
            &k.ttl_secs,
            &k.wrapped,
            &k.created_at,
            &k.destroy_at,
        ],
    )?;
    Ok(n == 1)
}

/// Every key row (for a root rotation), in id order.
pub fn all_keys(c: &mut impl GenericClient) -> Result<Vec<CvcKeyRow>, PgError> {
    c.query(
        &format!("SELECT {KEY_COLUMNS} FROM cvc_keys ORDER BY id"),
        &[],
    )?
    .iter()
    .map(key_row)
    .collect()
}

/// Replaces the wrapped bytes of key `id` (a root rotation).
pub fn rewrap_key(c: &mut impl GenericClient, id: i64, wrapped: &[u8]) -> Result<(), PgError> {
    c.execute(
        "UPDATE cvc_keys SET wrapped = $2 WHERE id = $1",
        &[&id, &wrapped],
    )?;
    Ok(())
}

/// Holds a code for `(tenant, token)`, replacing the one it held.
pub fn put_held(c: &mut impl GenericClient, h: &NewHeldCvc<'_>) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO held_cvcs (tenant, token, key_id, nonce, sealed, created_at, deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant, token) DO UPDATE SET key_id = EXCLUDED.key_id,
             nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed,
             created_at = EXCLUDED.created_at, deadline = EXCLUDED.deadline",
        &[
            &h.tenant,
            &h.token,
            &h.key_id,
            &h.nonce,
            &h.sealed,
            &h.created_at,
            &h.deadline,
        ],
    )?;
    Ok(())
}

/// The code held for `(tenant, token)`, whatever its deadline (the caller
/// refuses an expired one).
pub fn held(
    c: &mut impl GenericClient,
    tenant: &str,
    token: &str,
) -> Result<Option<HeldCvcRow>, PgError> {
    c.query_opt(
        "SELECT key_id, nonce, sealed, created_at, deadline FROM held_cvcs
         WHERE tenant = $1 AND token = $2",
        &[&tenant, &token],
    )?
    .as_ref()
    .map(held_row)
    .transpose()
}

/// Deletes and returns the code held for `(tenant, token)` (its first use), in
/// one statement: of two transactions taking it at once, the second waits for
/// the first and, once that one commits, finds nothing.
pub fn take_held(
    c: &mut impl GenericClient,
    tenant: &str,
    token: &str,
) -> Result<Option<HeldCvcRow>, PgError> {
    c.query_opt(
        "DELETE FROM held_cvcs WHERE tenant = $1 AND token = $2
         RETURNING key_id, nonce, sealed, created_at, deadline",
        &[&tenant, &token],
    )?
    .as_ref()
    .map(held_row)
    .transpose()
}

/// Deletes every code past its deadline at `now`, and every key past its
/// destruction time (with any code still under it).
pub fn sweep(c: &mut impl GenericClient, now: i64) -> Result<CvcSweep, PgError> {
    let expired = c.execute("DELETE FROM held_cvcs WHERE deadline <= $1", &[&now])?;
    let orphaned = c.execute(
        "DELETE FROM held_cvcs WHERE key_id IN
         (SELECT id FROM cvc_keys WHERE destroy_at <= $1)",
        &[&now],
    )?;
    let keys = c.execute("DELETE FROM cvc_keys WHERE destroy_at <= $1", &[&now])?;
    Ok(CvcSweep {
        codes: expired.saturating_add(orphaned),
        keys,
    })
}

/// The tables' shape at `now`; `None` for a database whose schema predates them.
pub fn shape(c: &mut impl GenericClient, now: i64) -> Result<Option<CvcShape>, PgError> {
    let exists: i64 = c
        .query_one(
            "SELECT count(*) FROM (VALUES (to_regclass('held_cvcs')), (to_regclass('cvc_keys'))) t(r)
             WHERE r IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    if exists != 2 {
        return Ok(None);
    }
    let columns = c
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'held_cvcs'
             ORDER BY ordinal_position",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    let r = c.query_one(
        "SELECT count(*), count(*) FILTER (WHERE deadline <= $1),
                max(CASE WHEN deadline <= $1 THEN $1 - deadline END),
                max(deadline - created_at),
                min(octet_length(sealed))::bigint, max(octet_length(sealed))::bigint
         FROM held_cvcs",
        &[&now],
    )?;
    let (held, past_deadline, most_overdue, longest, min_len, max_len): (
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = (
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
    );
    let orphaned: i64 = c
        .query_one(
            "SELECT count(*) FROM held_cvcs WHERE key_id NOT IN (SELECT id FROM cvc_keys)",
            &[],
        )?
        .try_get(0)?;
    let k = c.query_one(
        "SELECT count(*), max($1 - created_at), max(destroy_at - created_at),
                max(CASE WHEN destroy_at <= $1 THEN $1 - destroy_at END)
         FROM cvc_keys",
        &[&now],
    )?;
    Ok(Some(CvcShape {
        columns,
        held,
        past_deadline,
        most_overdue_secs: most_overdue,
        longest_lifetime_secs: longest,
        sealed_len: min_len.zip(max_len),
        orphaned,
        keys: k.try_get(0)?,
        oldest_key_age_secs: k.try_get(1)?,
        longest_key_life_secs: k.try_get(2)?,
        key_overdue_secs: k.try_get(3)?,
    }))
}

/// Whether `held_cvcs` and `cvc_keys` are both `UNLOGGED` (kept out of WAL,
/// replicas and base backups); `None` when the schema predates them.
pub fn unlogged(c: &mut impl GenericClient) -> Result<Option<bool>, PgError> {
    let r = c.query_one(
        "SELECT count(*), count(*) FILTER (WHERE relpersistence = 'u')
         FROM pg_catalog.pg_class
         WHERE oid IN (to_regclass('held_cvcs'), to_regclass('cvc_keys'))",
        &[],
    )?;
    let (found, unlogged): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    Ok((found == 2).then_some(unlogged == 2))
}
