//! The `cards` table on PostgreSQL: the twins of `store::cards` (insert, find by
//! token, the dedup lookup, the liveness re-check, count, the dedup index's scan,
//! the updates) and of the API's delete in `store::erasure`, inside the caller's
//! transaction or on a plain connection ([`GenericClient`]).
//!
//! Unlike SQLite's table this one holds no personal data in clear (see
//! [`super::schema`]): the caller passes the subject's keyed hash and the sealed
//! metadata, and rows come back with those bytes ([`PgCardRow`]).
//!
//! A taken token is answered with `ON CONFLICT DO NOTHING` and no row: a failed
//! statement would abort a PostgreSQL transaction, and the caller draws another
//! token in the same one.

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{GenericClient, Row};

use super::{CachingClient, PgError};
pub use crate::store::cards::{Inserted, NewCard};

/// `(id, fingerprint)` of a deleted card row, as the SQLite deletes return it.
pub type DeletedCard = (i64, Vec<u8>);

/// One stored card row, as the PostgreSQL table holds it (sealed; the caller
/// checks the columns, `key_version` included, before it uses them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCardRow {
    /// The row's id (unique across nodes: an identity column).
    pub id: i64,
    /// The token.
    pub token: String,
    /// The tenant the token belongs to.
    pub tenant: String,
    /// The data key version the card is sealed under (as stored; not range-checked).
    pub key_version: i64,
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
    /// The keyed hash of the data subject, if the card has one.
    pub subject_hash: Option<Vec<u8>>,
    /// The metadata sealed under the record's data key, if any.
    pub metadata_sealed: Option<Vec<u8>>,
    /// When the row was created (Unix seconds).
    pub created_at: i64,
    /// When the token's own time-to-live runs out (Unix seconds), if it has one.
    pub expires_at: Option<i64>,
}

/// The columns [`PgCardRow::from_row`] reads, in order.
const ROW_COLUMNS: &str = "id, token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, \
                           last4, exp_month, exp_year, subject_hash, metadata_sealed, created_at, expires_at";

impl PgCardRow {
    pub(super) fn from_row(r: &Row) -> Result<PgCardRow, PgError> {
        Ok(PgCardRow {
            id: r.try_get(0)?,
            token: r.try_get(1)?,
            tenant: r.try_get(2)?,
            key_version: r.try_get(3)?,
            nonce: r.try_get(4)?,
            ciphertext: r.try_get(5)?,
            fingerprint: r.try_get(6)?,
            brand: r.try_get(7)?,
            bin: r.try_get(8)?,
            last4: r.try_get(9)?,
            exp_month: r.try_get(10)?,
            exp_year: r.try_get(11)?,
            subject_hash: r.try_get(12)?,
            metadata_sealed: r.try_get(13)?,
            created_at: r.try_get(14)?,
            expires_at: r.try_get(15)?,
        })
    }
}

fn one_row(row: Option<Row>) -> Result<Option<PgCardRow>, PgError> {
    row.as_ref().map(PgCardRow::from_row).transpose()
}

/// Inserts `card` with `subject_hash` (the keyed hash of `card.subject`) and
/// `metadata_sealed` (`card.metadata` sealed under the record's data key) in
/// their place: `card.subject` and `card.metadata` themselves are never read,
/// so nothing in clear reaches the table.
pub fn insert(
    c: &mut impl GenericClient,
    card: &NewCard<'_>,
    subject_hash: Option<&[u8]>,
    metadata_sealed: Option<&[u8]>,
) -> Result<Inserted, PgError> {
    let row = c.query_opt(
        "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, last4,
                            exp_month, exp_year, subject_hash, metadata_sealed, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (token, tenant) DO NOTHING
         RETURNING id",
        &[
            &card.token,
            &card.tenant,
            &i64::from(card.key_version),
            &card.nonce,
            &card.ciphertext,
            &card.fingerprint,
            &card.brand,
            &card.bin,
            &card.last4,
            &i64::from(card.exp_month),
            &i64::from(card.exp_year),
            &subject_hash,
            &metadata_sealed,
            &card.created_at,
            &card.expires_at,
        ],
    )?;
    match row {
        Some(r) => Ok(Inserted::Row(r.try_get(0)?)),
        // Only the token's uniqueness (within the tenant) can conflict.
        None => Ok(Inserted::TokenTaken),
    }
}

/// The row of `token` in `tenant` (expired or not). A bin_last4 token is unique
/// within its tenant only.
pub fn by_token(
    c: &mut impl GenericClient,
    token: &str,
    tenant: &str,
) -> Result<Option<PgCardRow>, PgError> {
    one_row(c.query_opt(BY_TOKEN.as_str(), &[&token, &tenant])?)
}

/// [`by_token`]'s statement.
pub(super) static BY_TOKEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {ROW_COLUMNS} FROM cards WHERE token = $1 AND tenant = $2")
});

/// [`by_token`], with the statement prepared once per connection (every read of
/// a card takes it).
pub fn by_token_prepared(
    c: &mut CachingClient,
    token: &str,
    tenant: &str,
) -> Result<Option<PgCardRow>, PgError> {
    let stmt = c.prepared(BY_TOKEN.as_str())?;
    one_row(c.query_opt(&stmt, &[&token, &tenant])?)
}

/// The oldest live (unexpired at `now`) row of card `fingerprint` for the subject
/// hashed to `subject_hash` (none: cards without a subject) in `tenant`. SQLite
/// re-checks a hit of the node's in-memory dedup index; nodes sharing a database
/// have no common index, so this looks the card up itself.
pub fn live_dedup_row(
    c: &mut impl GenericClient,
    tenant: &str,
    fingerprint: &[u8],
    subject_hash: Option<&[u8]>,
    now: i64,
) -> Result<Option<PgCardRow>, PgError> {
    one_row(c.query_opt(
        &format!(
            "SELECT {ROW_COLUMNS} FROM cards WHERE tenant = $1 AND fingerprint = $2 \
             AND subject_hash IS NOT DISTINCT FROM $3 \
             AND (expires_at IS NULL OR expires_at > $4) ORDER BY id LIMIT 1"
        ),
        &[&tenant, &fingerprint, &subject_hash, &now],
    )?)
}

/// Runs a `DELETE … RETURNING id, fingerprint` and collects the deleted rows.
pub(super) fn delete_returning(
    c: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<DeletedCard>, PgError> {
    c.query(sql, params)?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Deletes `token` of `tenant` unless its own time-to-live has run out at `now`
/// (the API's delete: an expired token is already gone for callers).
pub fn delete_live_token(
    c: &mut impl GenericClient,
    tenant: &str,
    token: &str,
    now: i64,
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE token = $1 AND tenant = $2 \
         AND (expires_at IS NULL OR expires_at > $3) RETURNING id, fingerprint",
        &[&token, &tenant, &now],
    )
}

/// Deletes `token` of `tenant`, expired or not (an erasure).
pub fn delete_token(
    c: &mut impl GenericClient,
    tenant: &str,
    token: &str,
) -> Result<Vec<DeletedCard>, PgError> {
    delete_returning(
        c,
        "DELETE FROM cards WHERE tenant = $1 AND token = $2 RETURNING id, fingerprint",
        &[&tenant, &token],
    )
}

/// Whether row `id` still holds `token` of `tenant`, unexpired at `now`.
pub fn is_live(
    c: &mut impl GenericClient,
    id: i64,
    token: &str,
    tenant: &str,
    now: i64,
) -> Result<bool, PgError> {
    Ok(c.query_opt(
        "SELECT 1 FROM cards WHERE id = $1 AND token = $2 AND tenant = $3 \
         AND (expires_at IS NULL OR expires_at > $4)",
        &[&id, &token, &tenant, &now],
    )?
    .is_some())
}

/// Sets the card expiry, metadata and token expiry of row `id`. Differs from
/// SQLite's `update_terms(…, metadata: Option<&str>, …)` on purpose: PostgreSQL
/// stores no metadata in clear, so the caller passes it sealed under the record's
/// data key (`metadata_sealed`), as for [`insert`].
pub fn update_terms(
    c: &mut impl GenericClient,
    id: i64,
    exp_month: i64,
    exp_year: i64,
    metadata_sealed: Option<&[u8]>,
    expires_at: Option<i64>,
) -> Result<(), PgError> {
    c.execute(
        "UPDATE cards SET exp_month = $2, exp_year = $3, metadata_sealed = $4, expires_at = $5 \
         WHERE id = $1",
        &[&id, &exp_month, &exp_year, &metadata_sealed, &expires_at],
    )?;
    Ok(())
}

/// Replaces the sealed card of row `id` (sealed again under `key_version`).
pub fn update_sealed(
    c: &mut impl GenericClient,
    id: i64,
    key_version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<(), PgError> {
    c.execute(
        "UPDATE cards SET key_version = $2, nonce = $3, ciphertext = $4 WHERE id = $1",
        &[&id, &i64::from(key_version), &nonce, &ciphertext],
    )?;
    Ok(())
}

/// Number of card rows.
pub fn count(c: &mut impl GenericClient) -> Result<i64, PgError> {
    Ok(c.query_one("SELECT count(*) FROM cards", &[])?.try_get(0)?)
}

/// Calls `f` with the id, fingerprint and subject hash of every card row, in id
/// order, streamed (not collected). Differs from SQLite's, whose `f` gets the
/// subject in clear (`Option<String>`): PostgreSQL holds only the subject's keyed
/// hash, so `f` gets that (`Option<Vec<u8>>`), and an index built from it keys
/// subjects by hash.
pub fn for_each_fingerprint(
    c: &mut impl GenericClient,
    mut f: impl FnMut(i64, Vec<u8>, Option<Vec<u8>>),
) -> Result<(), PgError> {
    let none: [&(dyn postgres::types::ToSql + Sync); 0] = [];
    let mut rows = c.query_raw(
        "SELECT id, fingerprint, subject_hash FROM cards ORDER BY id",
        none,
    )?;
    while let Some(r) = rows.next()? {
        f(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
    }
    Ok(())
}

/// A new card row kept for the batch's one insert (owned: the job that made it has
/// returned by then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCard {
    token: String,
    tenant: String,
    key_version: i64,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    fingerprint: Vec<u8>,
    brand: String,
    bin: String,
    last4: String,
    exp_month: i64,
    exp_year: i64,
    subject_hash: Option<Vec<u8>>,
    metadata_sealed: Option<Vec<u8>>,
    created_at: i64,
    expires_at: Option<i64>,
}

impl PendingCard {
    /// `card` as [`insert`] would store it (`card.subject` and `card.metadata`
    /// are never read: `subject_hash` and `metadata_sealed` take their place).
    pub fn new(
        card: &NewCard<'_>,
        subject_hash: Option<&[u8]>,
        metadata_sealed: Option<&[u8]>,
    ) -> PendingCard {
        PendingCard {
            token: card.token.to_owned(),
            tenant: card.tenant.to_owned(),
            key_version: i64::from(card.key_version),
            nonce: card.nonce.to_vec(),
            ciphertext: card.ciphertext.to_vec(),
            fingerprint: card.fingerprint.to_vec(),
            brand: card.brand.to_owned(),
            bin: card.bin.to_owned(),
            last4: card.last4.to_owned(),
            exp_month: i64::from(card.exp_month),
            exp_year: i64::from(card.exp_year),
            subject_hash: subject_hash.map(<[u8]>::to_vec),
            metadata_sealed: metadata_sealed.map(<[u8]>::to_vec),
            created_at: card.created_at,
            expires_at: card.expires_at,
        }
    }

    /// The tenant and fingerprint of the row (what the dedup lookup keys on).
    pub fn dedup_key(&self) -> (&str, &[u8]) {
        (&self.tenant, &self.fingerprint)
    }
}

/// Calls `f` with the card columns of `cards` as the parameters `$1`–`$15` of
/// `batch::FLUSH` (one array per column, in `INSERT` order).
pub(crate) fn with_card_params<T>(
    cards: &[PendingCard],
    f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T,
) -> T {
    macro_rules! column {
        ($f:ident) => {
            cards.iter().map(|r| &r.$f).collect::<Vec<_>>()
        };
    }
    f(&[
        &column!(token),
        &column!(tenant),
        &column!(key_version),
        &column!(nonce),
        &column!(ciphertext),
        &column!(fingerprint),
        &column!(brand),
        &column!(bin),
        &column!(last4),
        &column!(exp_month),
        &column!(exp_year),
        &column!(subject_hash),
        &column!(metadata_sealed),
        &column!(created_at),
        &column!(expires_at),
    ])
}
