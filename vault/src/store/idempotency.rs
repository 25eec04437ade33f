//! First answers of requests sent with an `Idempotency-Key` (`idempotency`),
//! per client and keyed hash of the key: a retry of the same request finds the
//! stored answer instead of doing the work again. A row without a status is a
//! request in progress. Answers are sealed by the service; this module stores
//! bytes.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A stored request and, once answered, its sealed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRow {
    /// Keyed hash of the method, path and body of the first request.
    pub request_hash: Vec<u8>,
    /// The answer's HTTP status; `None` while the first request is in progress.
    pub status: Option<i64>,
    /// The sealed answer (with the status).
    pub answer: Option<Vec<u8>>,
    /// When the first request arrived (unix seconds).
    pub created_at: i64,
}

/// The row of `(client, key_hash)`, if any.
pub fn get(
    conn: &Connection,
    client: &str,
    key_hash: &[u8],
) -> Result<Option<IdempotencyRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT request_hash, status, answer, created_at FROM idempotency
             WHERE client = ?1 AND key_hash = ?2",
        )?
        .query_row(params![client, key_hash], |r| {
            Ok(IdempotencyRow {
                request_hash: r.get(0)?,
                status: r.get(1)?,
                answer: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()?)
}

/// Marks `(client, key_hash)` as in progress for `request_hash` from `now`,
/// replacing a row the caller found expired or abandoned.
pub fn reserve(
    conn: &Connection,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency (client, key_hash, request_hash, status, answer, created_at)
         VALUES (?1, ?2, ?3, NULL, NULL, ?4)
         ON CONFLICT(client, key_hash) DO UPDATE SET request_hash = excluded.request_hash,
             status = NULL, answer = NULL, created_at = excluded.created_at",
    )?
    .execute(params![client, key_hash, request_hash, now])?;
    Ok(())
}

/// Stores the answer of the request in progress under `(client, key_hash)`;
/// false when no such request is in progress (it was taken over or purged).
pub fn complete(
    conn: &Connection,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    status: i64,
    answer: &[u8],
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE idempotency SET status = ?4, answer = ?5
             WHERE client = ?1 AND key_hash = ?2 AND request_hash = ?3 AND status IS NULL",
        )?
        .execute(params![client, key_hash, request_hash, status, answer])?;
    Ok(n == 1)
}

/// Forgets the request in progress under `(client, key_hash)` (it failed in a
/// way a retry may not: the retry runs afresh).
pub fn release(
    conn: &Connection,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM idempotency
         WHERE client = ?1 AND key_hash = ?2 AND request_hash = ?3 AND status IS NULL",
    )?
    .execute(params![client, key_hash, request_hash])?;
    Ok(())
}

/// Deletes every row that arrived before `cutoff`; how many.
pub fn purge(conn: &Connection, cutoff: i64) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute([cutoff])?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("a change count came back as {n}")))
}
