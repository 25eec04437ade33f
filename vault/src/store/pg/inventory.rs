//! Read-only counts and names for a vault's inventory on PostgreSQL: the twins
//! of `store::inventory` (same names, arguments and results). Nothing secret.

use postgres::GenericClient;

use super::PgError;
pub use crate::store::inventory::{CardShape, MaskingShape};

/// Cards stored.
pub fn count_cards(c: &mut impl GenericClient) -> Result<i64, PgError> {
    Ok(c.query_one("SELECT count(*) FROM cards", &[])?.try_get(0)?)
}

/// Cards whose expiry month index (year * 12 + month - 1) is before `cutoff_month`.
pub fn count_expired_before(c: &mut impl GenericClient, cutoff_month: i64) -> Result<i64, PgError> {
    Ok(c.query_one(
        "SELECT count(*) FROM cards WHERE exp_year * 12 + exp_month - 1 < $1",
        &[&cutoff_month],
    )?
    .try_get(0)?)
}

/// Names of the auxiliary wrapped keys, in name order (byte order, as SQLite's
/// `BINARY` collation sorts them, whatever the database's collation).
pub fn wrapped_key_names(c: &mut impl GenericClient) -> Result<Vec<String>, PgError> {
    c.query(
        "SELECT name FROM wrapped_keys ORDER BY name COLLATE \"C\"",
        &[],
    )?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}

/// The shape of the `cards` table and its stored values. The columns are
/// PostgreSQL's, in table order: `subject_hash` and `metadata_sealed` where
/// SQLite has `subject` and `metadata` (what the data-minimisation checks are
/// meant to see). Lengths are in characters, bytes for the fingerprint.
pub fn card_shape(c: &mut impl GenericClient) -> Result<CardShape, PgError> {
    let columns = c
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'cards'
             ORDER BY ordinal_position",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    let r = c.query_one(
        "SELECT count(*), max(char_length(bin))::bigint, max(char_length(last4))::bigint,
                max(octet_length(fingerprint))::bigint FROM cards",
        &[],
    )?;
    Ok(CardShape {
        columns,
        cards: r.try_get(0)?,
        max_bin_len: r.try_get(1)?,
        max_last4_len: r.try_get(2)?,
        max_fingerprint_len: r.try_get(3)?,
    })
}

/// [`MaskingShape`] of every group, shortest tokens first (opaque tokens first,
/// as SQLite sorts NULL).
pub fn masking_shape(c: &mut impl GenericClient) -> Result<Vec<MaskingShape>, PgError> {
    // `~ '[^0-9]'` is true when any character is not a digit (SQLite: GLOB '*[^0-9]*').
    c.query(
        "SELECT CASE WHEN token ~ '[^0-9]' THEN NULL ELSE char_length(token)::bigint END AS len,
                count(*), max(char_length(bin))::bigint, max(char_length(last4))::bigint
         FROM cards GROUP BY len ORDER BY len NULLS FIRST",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(MaskingShape {
            digit_token_len: r.try_get(0)?,
            cards: r.try_get(1)?,
            max_bin_len: r.try_get(2)?,
            max_last4_len: r.try_get(3)?,
        })
    })
    .collect()
}
