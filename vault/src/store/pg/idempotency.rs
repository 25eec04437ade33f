//! First answers of requests sent with an `Idempotency-Key` on PostgreSQL: the
//! twins of `store::idempotency` (same names, arguments and results), inside the
//! caller's transaction or on a plain connection ([`GenericClient`]). One row per
//! client and keyed hash of the key, in an ordinary (logged) table, so a retry
//! sent to any node finds the first answer; the answer is sealed by the service.

use postgres::GenericClient;

use super::PgError;
pub use crate::store::idempotency::IdempotencyRow;

/// The row of `(client, key_hash)`, if any.
pub fn get(
    c: &mut impl GenericClient,
    client: &str,
    key_hash: &[u8],
) -> Result<Option<IdempotencyRow>, PgError> {
    c.query_opt(
        "SELECT request_hash, status, answer, created_at FROM idempotency
         WHERE client = $1 AND key_hash = $2",
        &[&client, &key_hash],
    )?
    .map(|r| {
        Ok(IdempotencyRow {
            request_hash: r.try_get(0)?,
            status: r.try_get(1)?,
            answer: r.try_get(2)?,
            created_at: r.try_get(3)?,
        })
    })
    .transpose()
}

/// Marks `(client, key_hash)` as in progress for `request_hash` from `now`,
/// replacing a row the caller found expired or abandoned.
pub fn reserve(
    c: &mut impl GenericClient,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    now: i64,
) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO idempotency (client, key_hash, request_hash, status, answer, created_at)
         VALUES ($1, $2, $3, NULL, NULL, $4)
         ON CONFLICT (client, key_hash) DO UPDATE SET request_hash = EXCLUDED.request_hash,
             status = NULL, answer = NULL, created_at = EXCLUDED.created_at",
        &[&client, &key_hash, &request_hash, &now],
    )?;
    Ok(())
}

/// Stores the answer of the request in progress under `(client, key_hash)`;
/// false when no such request is in progress (it was taken over or purged).
pub fn complete(
    c: &mut impl GenericClient,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
    status: i64,
    answer: &[u8],
) -> Result<bool, PgError> {
    let n = c.execute(
        "UPDATE idempotency SET status = $4, answer = $5
         WHERE client = $1 AND key_hash = $2 AND request_hash = $3 AND status IS NULL",
        &[&client, &key_hash, &request_hash, &status, &answer],
    )?;
    Ok(n == 1)
}

/// Forgets the request in progress under `(client, key_hash)` (it failed in a
/// way a retry may not: the retry runs afresh).
pub fn release(
    c: &mut impl GenericClient,
    client: &str,
    key_hash: &[u8],
    request_hash: &[u8],
) -> Result<(), PgError> {
    c.execute(
        "DELETE FROM idempotency
         WHERE client = $1 AND key_hash = $2 AND request_hash = $3 AND status IS NULL",
        &[&client, &key_hash, &request_hash],
    )?;
    Ok(())
}

/// Deletes every row that arrived before `cutoff`; how many.
pub fn purge(c: &mut impl GenericClient, cutoff: i64) -> Result<u64, PgError> {
    Ok(c.execute("DELETE FROM idempotency WHERE created_at < $1", &[&cutoff])?)
}
