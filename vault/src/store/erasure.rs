//! Deleting cards (API delete, GDPR erasure, retention purge) and the
//! `erasure_requests` table. Every delete returns the `(id, fingerprint)` of each
//! row it removed, so the service can keep its dedup index in step.

use rusqlite::{Connection, Params, params};

use super::StoreError;

/// `(id, fingerprint)` of a deleted card row.
pub type DeletedCard = (i64, Vec<u8>);

/// Runs a `DELETE … RETURNING id, fingerprint` and collects the deleted rows.
fn delete_returning(
    conn: &Connection,
    sql: &str,
    args: impl Params,
) -> Result<Vec<DeletedCard>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(out)
}

/// Deletes `token` of `tenant` unless its own time-to-live has run out at `now`
/// (the API's delete: an expired token is already gone for callers).
pub fn delete_live_token(
    conn: &Connection,
    tenant: &str,
    token: &str,
    now: i64,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE token = ?1 AND tenant = ?2 \
         AND (expires_at IS NULL OR expires_at > ?3) RETURNING id, fingerprint",
        params![token, tenant, now],
    )
}

/// Deletes `token` of `tenant`, expired or not (an erasure).
pub fn delete_token(
    conn: &Connection,
    tenant: &str,
    token: &str,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE tenant = ?1 AND token = ?2 RETURNING id, fingerprint",
        params![tenant, token],
    )
}

/// Deletes every card of data subject `subject` in `tenant`.
pub fn delete_subject(
    conn: &Connection,
    tenant: &str,
    subject: &str,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE tenant = ?1 AND subject = ?2 RETURNING id, fingerprint",
        params![tenant, subject],
    )
}

/// Cards whose expiry month index (year * 12 + month - 1) is before `cutoff_month`.
/// (`now` is bound but unused, so the statement matches [`count_past_ttl_only`]'s.)
pub fn count_past_expiry(
    conn: &Connection,
    cutoff_month: i64,
    now: i64,
) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE exp_year * 12 + exp_month - 1 < ?1 AND ?2 = ?2",
        params![cutoff_month, now],
        |r| r.get(0),
    )?)
}

/// Cards past their own time-to-live at `now` that are not also past expiry
/// (counted by [`count_past_expiry`]).
pub fn count_past_ttl_only(
    conn: &Connection,
    cutoff_month: i64,
    now: i64,
) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE expires_at IS NOT NULL AND expires_at <= ?2 AND NOT (exp_year * 12 + exp_month - 1 < ?1)",
        params![cutoff_month, now],
        |r| r.get(0),
    )?)
}

/// Deletes every card past expiry (before `cutoff_month`) or past its TTL at `now`.
pub fn delete_past_retention(
    conn: &Connection,
    cutoff_month: i64,
    now: i64,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE exp_year * 12 + exp_month - 1 < ?1 OR (expires_at IS NOT NULL AND expires_at <= ?2) \
         RETURNING id, fingerprint",
        params![cutoff_month, now],
    )
}

/// Ids of the cards past expiry (before `cutoff_month`) or past their TTL at `now`,
/// in id order.
pub fn retention_candidates(
    conn: &Connection,
    cutoff_month: i64,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id FROM cards WHERE exp_year * 12 + exp_month - 1 < ?1 \
         OR (expires_at IS NOT NULL AND expires_at <= ?2) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![cutoff_month, now], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes card `id` if its expiry month is before `cutoff_month`.
pub fn delete_id_past_expiry(
    conn: &Connection,
    id: i64,
    cutoff_month: i64,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE id = ?1 AND exp_year * 12 + exp_month - 1 < ?2 \
         RETURNING id, fingerprint",
        params![id, cutoff_month],
    )
}

/// Deletes card `id` if its own TTL has run out at `now`.
pub fn delete_id_past_ttl(
    conn: &Connection,
    id: i64,
    now: i64,
) -> Result<Vec<DeletedCard>, StoreError> {
    delete_returning(
        conn,
        "DELETE FROM cards WHERE id = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2 \
         RETURNING id, fingerprint",
        params![id, now],
    )
}

/// An erasure carried out: the row `erasure_requests` keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedErasure<'a> {
    /// Tenant erased in.
    pub tenant: &'a str,
    /// Keyed hash of the subject (or of `token:<token>`).
    pub subject_hash: &'a str,
    /// The token, for a single-token erasure.
    pub token: Option<&'a str>,
    /// When it was requested and completed (unix seconds).
    pub at: i64,
    /// Tokens deleted.
    pub tokens_erased: i64,
    /// Sequence number of its audit event.
    pub audit_seq: i64,
}

/// Records an erasure that arrived and completed at `e.at`.
pub fn insert_completed_request(
    conn: &Connection,
    e: &CompletedErasure<'_>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO erasure_requests (tenant, subject_hash, token, requested_at, completed_at, tokens_erased, audit_seq)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        params![e.tenant, e.subject_hash, e.token, e.at, e.tokens_erased, e.audit_seq],
    )?;
    Ok(())
}

/// Records an erasure request as it arrives at `at` (open until
/// [`complete_request`]); returns its id.
pub fn insert_open_request(
    conn: &Connection,
    tenant: &str,
    subject_hash: &str,
    token: Option<&str>,
    at: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO erasure_requests (tenant, subject_hash, token, requested_at) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, subject_hash, token, at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Completes the open request `id` at `at` (`audit_seq`: its erasure event; none
/// when there was nothing to erase). `false` if it was not open.
pub fn complete_request(
    conn: &Connection,
    id: i64,
    at: i64,
    tokens_erased: i64,
    audit_seq: Option<i64>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE erasure_requests SET completed_at = ?2, tokens_erased = ?3, audit_seq = ?4
         WHERE id = ?1 AND completed_at IS NULL",
        params![id, at, tokens_erased, audit_seq],
    )?;
    Ok(n == 1)
}

/// Erasure requests not completed that arrived before `cutoff` (unix seconds).
pub fn count_open_requests_before(conn: &Connection, cutoff: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM erasure_requests WHERE completed_at IS NULL AND requested_at < ?1",
        [cutoff],
        |r| r.get(0),
    )?)
}

/// The id of the newest erasure request, if any.
pub fn last_request_id(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row("SELECT max(id) FROM erasure_requests", [], |r| r.get(0))?)
}

/// Records `now` as the WAL truncation time of every request up to `id` that has none.
pub fn mark_wal_scrubbed(conn: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE erasure_requests SET wal_scrubbed_at = ?2
         WHERE wal_scrubbed_at IS NULL AND id <= ?1",
        params![id, now],
    )?;
    Ok(())
}

/// The erasure requests as a compliance run sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOverview {
    /// Requests not completed: (id, requested_at in unix seconds), oldest first.
    pub open: Vec<(i64, i64)>,
    /// Requests completed.
    pub completed: i64,
}

/// The open and completed erasure requests; `None` for a vault whose schema
/// predates erasure tracking (no `erasure_requests` table).
pub fn request_overview(conn: &Connection) -> Result<Option<RequestOverview>, StoreError> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'erasure_requests'",
        [],
        |r| r.get(0),
    )?;
    if tables == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare(
        "SELECT id, requested_at FROM erasure_requests WHERE completed_at IS NULL ORDER BY requested_at",
    )?;
    let open = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let completed = conn.query_row(
        "SELECT count(*) FROM erasure_requests WHERE completed_at IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(Some(RequestOverview { open, completed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(conn: &Connection, token: &str, subject: &str, exp_year: i64, expires_at: Option<i64>) {
        conn.execute(
            "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, last4, exp_month, exp_year, subject, created_at, expires_at)
             VALUES (?1, 't', 1, x'00', x'00', CAST(?1 AS BLOB), 'visa', '411111', '1111', 1, ?2, ?3, 0, ?4)",
            params![token, exp_year, subject, expires_at],
        )
        .unwrap();
    }

    #[test]
    fn deletes_return_the_id_and_fingerprint_of_each_removed_row() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_writer(&dir.path().join("v.db"), true).unwrap();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        card(&conn, "a", "s1", 2099, None);
        card(&conn, "b", "s1", 2099, None);
        card(&conn, "c", "s2", 2000, None);
        card(&conn, "d", "s3", 2099, Some(10));
        let cutoff = 2020 * 12;
        assert_eq!(count_past_expiry(&conn, cutoff, 100).unwrap(), 1);
        assert_eq!(count_past_ttl_only(&conn, cutoff, 100).unwrap(), 1);
        assert_eq!(
            retention_candidates(&conn, cutoff, 100).unwrap(),
            vec![3, 4]
        );
        // an expired token is not deleted by the API's delete, but is by an erasure
        assert!(delete_live_token(&conn, "t", "d", 100).unwrap().is_empty());
        assert_eq!(
            delete_token(&conn, "t", "d").unwrap(),
            vec![(4, b"d".to_vec())]
        );
        assert!(delete_id_past_expiry(&conn, 1, cutoff).unwrap().is_empty());
        assert_eq!(
            delete_id_past_expiry(&conn, 3, cutoff).unwrap(),
            vec![(3, b"c".to_vec())]
        );
        let mut gone = delete_subject(&conn, "t", "s1").unwrap();
        gone.sort();
        assert_eq!(gone, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
        assert_eq!(last_request_id(&conn).unwrap(), None);
        insert_completed_request(
            &conn,
            &CompletedErasure {
                tenant: "t",
                subject_hash: "h",
                token: None,
                at: 5,
                tokens_erased: 2,
                audit_seq: 1,
            },
        )
        .unwrap();
        assert_eq!(last_request_id(&conn).unwrap(), Some(1));
        assert_eq!(count_open_requests_before(&conn, 100).unwrap(), 0);
        mark_wal_scrubbed(&conn, 1, 7).unwrap();
    }
}
