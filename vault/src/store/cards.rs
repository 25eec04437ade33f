//! The `cards` table: sealed card rows, written by the writer thread and read by
//! the pool. Statements on the request path use `prepare_cached`, so a batch of
//! tokenizations parses each statement once per connection.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// One stored card row, as the table holds it (sealed; the service checks the
/// columns before it shows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRow {
    /// The row id.
    pub id: i64,
    /// The token.
    pub token: String,
    /// The tenant the token belongs to.
    pub tenant: String,
    /// The data key version the card is sealed under.
    pub key_version: u32,
    /// The card's nonce.
    pub nonce: Vec<u8>,
    /// The sealed card.
    pub ciphertext: Vec<u8>,
    /// The card's keyed fingerprint (deduplication).
    pub fingerprint: Vec<u8>,
    /// The card brand.
    pub brand: String,
    /// The issuer identification number shown without decrypting.
    pub bin: String,
    /// The last four digits.
    pub last4: String,
    /// The card's expiry month (as stored).
    pub exp_month: i64,
    /// The card's expiry year (as stored).
    pub exp_year: i64,
    /// The data subject, in clear (SQLite only).
    pub subject: Option<String>,
    /// The metadata, in clear (SQLite only).
    pub metadata: Option<String>,
    /// When the row was created (Unix seconds).
    pub created_at: i64,
    /// When the token's own time-to-live runs out (Unix seconds), if it has one.
    pub expires_at: Option<i64>,
    /// PostgreSQL only: the subject and metadata sealed under the record's data
    /// key (the engine holds no personal data in clear; `subject` and `metadata`
    /// stay `None` until the service opens this).
    pub sealed_personal: Option<Vec<u8>>,
}

/// The columns [`CardRow::from_sql`] reads, in order.
const ROW_COLUMNS: &str = "token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, last4, \
                           exp_month, exp_year, subject, metadata, created_at, expires_at, id";

impl CardRow {
    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardRow> {
        Ok(CardRow {
            token: r.get(0)?,
            tenant: r.get(1)?,
            key_version: r.get(2)?,
            nonce: r.get(3)?,
            ciphertext: r.get(4)?,
            fingerprint: r.get(5)?,
            brand: r.get(6)?,
            bin: r.get(7)?,
            last4: r.get(8)?,
            exp_month: r.get(9)?,
            exp_year: r.get(10)?,
            subject: r.get(11)?,
            metadata: r.get(12)?,
            created_at: r.get(13)?,
            expires_at: r.get(14)?,
            id: r.get(15)?,
            sealed_personal: None,
        })
    }
}

/// A card to insert: sealed under `key_version`, with the facts shown without
/// decrypting it. Public for the PostgreSQL twin (`store::pg::cards`).
#[derive(Debug)]
pub struct NewCard<'a> {
    /// The token.
    pub token: &'a str,
    /// The tenant the token belongs to.
    pub tenant: &'a str,
    /// The data key version the card is sealed under.
    pub key_version: u32,
    /// The card's nonce.
    pub nonce: &'a [u8],
    /// The sealed card.
    pub ciphertext: &'a [u8],
    /// The card's keyed fingerprint (deduplication).
    pub fingerprint: &'a [u8],
    /// The card brand.
    pub brand: &'a str,
    /// The issuer identification number shown without decrypting.
    pub bin: &'a str,
    /// The last four digits.
    pub last4: &'a str,
    /// The card's expiry month.
    pub exp_month: u8,
    /// The card's expiry year.
    pub exp_year: u16,
    /// The data subject, in clear (SQLite only; PostgreSQL stores a keyed hash).
    pub subject: Option<&'a str>,
    /// The metadata, in clear (SQLite only; PostgreSQL stores it sealed).
    pub metadata: Option<&'a str>,
    /// When the row is created (Unix seconds).
    pub created_at: i64,
    /// When the token's own time-to-live runs out (Unix seconds), if it has one.
    pub expires_at: Option<i64>,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The row was stored under this id.
    Row(i64),
    /// The token is already held (within the tenant): nothing was written; draw
    /// another token.
    TokenTaken,
    /// PostgreSQL, in a writer batch: the row waits for the batch's one insert
    /// (before the next statement that could read it, and before `COMMIT`).
    Queued,
}

/// Inserts `card`.
pub fn insert(conn: &Connection, card: &NewCard<'_>) -> Result<Inserted, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, last4,
                            exp_month, exp_year, subject, metadata, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let res = stmt.execute(params![
        card.token,
        card.tenant,
        card.key_version,
        card.nonce,
        card.ciphertext,
        card.fingerprint,
        card.brand,
        card.bin,
        card.last4,
        card.exp_month,
        card.exp_year,
        card.subject,
        card.metadata,
        card.created_at,
        card.expires_at
    ]);
    match res {
        Ok(_) => Ok(Inserted::Row(conn.last_insert_rowid())),
        // The only constraint a fresh row can break is the token's uniqueness.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(Inserted::TokenTaken)
        }
        Err(e) => Err(e.into()),
    }
}

/// Row `id`, if it is still a live (unexpired at `now`) row of card
/// `fingerprint` for `subject` of `tenant`: the re-check of a dedup index hit.
pub fn live_dedup_row(
    conn: &Connection,
    id: i64,
    fingerprint: &[u8],
    tenant: &str,
    subject: Option<&str>,
    now: i64,
) -> Result<Option<CardRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM cards WHERE id = ?1 AND fingerprint = ?2 AND tenant = ?3 \
         AND subject IS ?4 AND (expires_at IS NULL OR expires_at > ?5)"
    ))?;
    Ok(stmt
        .query_row(
            params![id, fingerprint, tenant, subject, now],
            CardRow::from_sql,
        )
        .optional()?)
}

/// The row of `token` in `tenant` (expired or not). A bin_last4 token is unique
/// within its tenant only.
pub fn by_token(
    conn: &Connection,
    token: &str,
    tenant: &str,
) -> Result<Option<CardRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM cards WHERE token = ?1 AND tenant = ?2"
    ))?;
    Ok(stmt
        .query_row(params![token, tenant], CardRow::from_sql)
        .optional()?)
}

/// Whether row `id` still holds `token` of `tenant`, unexpired at `now`.
pub fn is_live(
    conn: &Connection,
    id: i64,
    token: &str,
    tenant: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM cards WHERE id = ?1 AND token = ?2 AND tenant = ?3 \
         AND (expires_at IS NULL OR expires_at > ?4)",
    )?;
    Ok(stmt.exists(params![id, token, tenant, now])?)
}

/// Sets the card expiry, metadata and token expiry of row `id`.
pub fn update_terms(
    conn: &Connection,
    id: i64,
    exp_month: i64,
    exp_year: i64,
    metadata: Option<&str>,
    expires_at: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE cards SET exp_month = ?2, exp_year = ?3, metadata = ?4, expires_at = ?5 WHERE id = ?1",
    )?
    .execute(params![id, exp_month, exp_year, metadata, expires_at])?;
    Ok(())
}

/// Replaces the sealed card of row `id` (sealed again under `key_version`).
pub fn update_sealed(
    conn: &Connection,
    id: i64,
    key_version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE cards SET key_version = ?2, nonce = ?3, ciphertext = ?4 WHERE id = ?1",
    )?
    .execute(params![id, key_version, nonce, ciphertext])?;
    Ok(())
}

/// Number of card rows.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?)
}

/// Calls `f` with the id, fingerprint and subject of every card row (what the
/// dedup index is built from).
pub fn for_each_fingerprint(
    conn: &Connection,
    mut f: impl FnMut(i64, Vec<u8>, Option<String>),
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT id, fingerprint, subject FROM cards")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        f(r.get(0)?, r.get(1)?, r.get(2)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card<'a>(token: &'a str, tenant: &'a str) -> NewCard<'a> {
        NewCard {
            token,
            tenant,
            key_version: 1,
            nonce: &[7; 12],
            ciphertext: &[9; 32],
            fingerprint: &[1; 32],
            brand: "visa",
            bin: "424242",
            last4: "4242",
            exp_month: 12,
            exp_year: 2031,
            subject: Some("cust-1"),
            metadata: None,
            created_at: 1_700_000_000,
            expires_at: Some(1_800_000_000),
        }
    }

    #[test]
    fn a_taken_token_is_reported_and_rows_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_writer(&dir.path().join("v.db"), true).unwrap();
        let Inserted::Row(id) = insert(&conn, &card("t1", "shop")).unwrap() else {
            panic!("first insert refused");
        };
        // unique within the tenant only
        assert_eq!(
            insert(&conn, &card("t1", "shop")).unwrap(),
            Inserted::TokenTaken
        );
        assert!(matches!(
            insert(&conn, &card("t1", "other")).unwrap(),
            Inserted::Row(_)
        ));
        assert_eq!(count(&conn).unwrap(), 2);

        let row = by_token(&conn, "t1", "shop").unwrap().unwrap();
        assert_eq!((row.id, row.exp_month, row.exp_year), (id, 12, 2031));
        assert!(by_token(&conn, "t1", "nobody").unwrap().is_none());

        let fp = [1u8; 32];
        let now = 1_750_000_000;
        assert!(
            live_dedup_row(&conn, id, &fp, "shop", Some("cust-1"), now)
                .unwrap()
                .is_some()
        );
        assert!(
            live_dedup_row(&conn, id, &fp, "shop", None, now)
                .unwrap()
                .is_none()
        );
        assert!(is_live(&conn, id, "t1", "shop", now).unwrap());
        assert!(!is_live(&conn, id, "t1", "shop", 1_900_000_000).unwrap());

        update_terms(&conn, id, 1, 2033, Some("{}"), None).unwrap();
        update_sealed(&conn, id, 2, &[3; 12], &[4; 40]).unwrap();
        let row = by_token(&conn, "t1", "shop").unwrap().unwrap();
        assert_eq!((row.exp_month, row.exp_year), (1, 2033));
        assert_eq!(
            (row.metadata.as_deref(), row.expires_at),
            (Some("{}"), None)
        );
        assert_eq!(
            (row.key_version, row.nonce.len(), row.ciphertext.len()),
            (2, 12, 40)
        );

        let mut seen = Vec::new();
        for_each_fingerprint(&conn, |id, fp, subject| seen.push((id, fp.len(), subject))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], (id, 32, Some("cust-1".to_owned())));
    }
}
