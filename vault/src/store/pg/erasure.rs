//! Deleting cards (API delete, GDPR erasure, retention purge) and the
//! `erasure_requests` table on PostgreSQL: the twins of `store::erasure` (same
//! names, arguments and results, except [`delete_subject`], which takes the
//! subject's keyed hash). Every delete returns the `(id, fingerprint)` of each row
//! it removed. The API's delete and the single-token erasure are in
//! [`super::cards`] and re-exported here under their `store::erasure` names.
//!
//! SQLite's WAL scrub after an erasure (`store::mark_scrub_pending`,
//! `store::erasure::mark_wal_scrubbed`) has no twin: PostgreSQL's residue is the
//! deleted row versions until vacuum (the session vacuums after deleting, in
//! place of the scrub); `erasure_requests.vacuumed_at` is the column meant to
//! record it, not written yet.

use postgres::GenericClient;

use super::PgError;
use super::cards::delete_returning;
pub use super::cards::{DeletedCard, delete_live_token, delete_token};
pub use crate::store::erasure::{CompletedErasure, RequestOverview};

/// Deletes every card of the data subject whose keyed hash is `subject_hash` in
/// `tenant`. Differs from SQLite's `delete_subject(conn, tenant, subject: &str)`
/// on purpose: PostgreSQL stores no subject in clear, only its keyed hash, so the
/// caller hashes the subject and passes the hash.
pub fn delete_subject(
    c: &mut impl GenericClient,
    tenant: &str,
    subject_hash: &[u8],
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE tenant = $1 AND subject_hash = $2 RETURNING id, fingerprint",
        &[&tenant, &subject_hash],
    )
}

/// Cards whose expiry month index (year * 12 + month - 1) is before `cutoff_month`.
/// (`now` is unused; the argument keeps SQLite's signature.)
pub fn count_past_expiry(
    c: &mut impl GenericClient,
    cutoff_month: i64,
    now: i64,
) -> Result<i64, PgError> {
    let _ = now;
    Ok(c.query_one(
        "SELECT count(*) FROM cards WHERE exp_year * 12 + exp_month - 1 < $1",
        &[&cutoff_month],
    )?
    .try_get(0)?)
}

/// Cards past their own time-to-live at `now` that are not also past expiry
/// (counted by [`count_past_expiry`]).
pub fn count_past_ttl_only(
    c: &mut impl GenericClient,
    cutoff_month: i64,
    now: i64,
) -> Result<i64, PgError> {
    Ok(c.query_one(
        "SELECT count(*) FROM cards WHERE expires_at IS NOT NULL AND expires_at <= $2 \
         AND NOT (exp_year * 12 + exp_month - 1 < $1)",
        &[&cutoff_month, &now],
    )?
    .try_get(0)?)
}

/// Deletes every card past expiry (before `cutoff_month`) or past its TTL at `now`.
pub fn delete_past_retention(
    c: &mut impl GenericClient,
    cutoff_month: i64,
    now: i64,
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE exp_year * 12 + exp_month - 1 < $1 \
         OR (expires_at IS NOT NULL AND expires_at <= $2) RETURNING id, fingerprint",
        &[&cutoff_month, &now],
    )
}

/// Ids of the cards past expiry (before `cutoff_month`) or past their TTL at `now`,
/// in id order.
pub fn retention_candidates(
    c: &mut impl GenericClient,
    cutoff_month: i64,
    now: i64,
) -> Result<Vec<i64>, PgError> {
    c.query(
        "SELECT id FROM cards WHERE exp_year * 12 + exp_month - 1 < $1 \
         OR (expires_at IS NOT NULL AND expires_at <= $2) ORDER BY id",
        &[&cutoff_month, &now],
    )?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}

/// Deletes card `id` if its expiry month is before `cutoff_month`.
pub fn delete_id_past_expiry(
    c: &mut impl GenericClient,
    id: i64,
    cutoff_month: i64,
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE id = $1 AND exp_year * 12 + exp_month - 1 < $2 \
         RETURNING id, fingerprint",
        &[&id, &cutoff_month],
    )
}

/// Deletes card `id` if its own TTL has run out at `now`.
pub fn delete_id_past_ttl(
    c: &mut impl GenericClient,
    id: i64,
    now: i64,
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE id = $1 AND expires_at IS NOT NULL AND expires_at <= $2 \
         RETURNING id, fingerprint",
        &[&id, &now],
    )
}

/// Records an erasure that arrived and completed at `e.at`.
pub fn insert_completed_request(
    c: &mut impl GenericClient,
    e: &CompletedErasure<'_>,
) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO erasure_requests (tenant, subject_hash, token, requested_at, completed_at,
                                       tokens_erased, audit_seq)
         VALUES ($1, $2, $3, $4, $4, $5, $6)",
        &[
            &e.tenant,
            &e.subject_hash,
            &e.token,
            &e.at,
            &e.tokens_erased,
            &e.audit_seq,
        ],
    )?;
    Ok(())
}

/// Records an erasure request as it arrives at `at` (open until
/// [`complete_request`]); returns its id.
pub fn insert_open_request(
    c: &mut impl GenericClient,
    tenant: &str,
    subject_hash: &str,
    token: Option<&str>,
    at: i64,
) -> Result<i64, PgError> {
    Ok(c.query_one(
        "INSERT INTO erasure_requests (tenant, subject_hash, token, requested_at)
         VALUES ($1, $2, $3, $4) RETURNING id",
        &[&tenant, &subject_hash, &token, &at],
    )?
    .try_get(0)?)
}

/// Completes the open request `id` at `at` (`audit_seq`: its erasure event; none
/// when there was nothing to erase). `false` if it was not open.
pub fn complete_request(
    c: &mut impl GenericClient,
    id: i64,
    at: i64,
    tokens_erased: i64,
    audit_seq: Option<i64>,
) -> Result<bool, PgError> {
    let n = c.execute(
        "UPDATE erasure_requests SET completed_at = $2, tokens_erased = $3, audit_seq = $4
         WHERE id = $1 AND completed_at IS NULL",
        &[&id, &at, &tokens_erased, &audit_seq],
    )?;
    Ok(n == 1)
}

/// Erasure requests not completed that arrived before `cutoff` (unix seconds).
pub fn count_open_requests_before(c: &mut impl GenericClient, cutoff: i64) -> Result<i64, PgError> {
    Ok(c.query_one(
        "SELECT count(*) FROM erasure_requests WHERE completed_at IS NULL AND requested_at < $1",
        &[&cutoff],
    )?
    .try_get(0)?)
}

/// The open and completed erasure requests; `None` when the database has no
/// `erasure_requests` table (every PostgreSQL schema has one: kept for the
/// SQLite twin's signature). Open requests oldest first, then by id.
pub fn request_overview(c: &mut impl GenericClient) -> Result<Option<RequestOverview>, PgError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('erasure_requests') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let open = c
        .query(
            "SELECT id, requested_at FROM erasure_requests WHERE completed_at IS NULL
             ORDER BY requested_at, id",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i64, i64)>, PgError>>()?;
    let completed = c
        .query_one(
            "SELECT count(*) FROM erasure_requests WHERE completed_at IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    Ok(Some(RequestOverview { open, completed }))
}

/// The completed erasures no `VACUUM` has followed yet (their ids), read before
/// one starts: [`mark_vacuumed`] then records it for exactly these.
pub fn not_vacuumed(c: &mut impl GenericClient) -> Result<Vec<i64>, PgError> {
    c.query(
        "SELECT id FROM erasure_requests WHERE completed_at IS NOT NULL AND vacuumed_at IS NULL",
        &[],
    )?
    .iter()
    .map(|r| r.try_get(0).map_err(PgError::from))
    .collect()
}

/// Records `now` as when a `VACUUM` of the erased rows' tables followed the
/// erasures `ids`.
pub fn mark_vacuumed(c: &mut impl GenericClient, ids: &[i64], now: i64) -> Result<u64, PgError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(c.execute(
        "UPDATE erasure_requests SET vacuumed_at = $1 WHERE id = ANY($2) AND vacuumed_at IS NULL",
        &[&now, &ids],
    )?)
}
