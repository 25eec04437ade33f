//! The `cards` statements of a rewrap on PostgreSQL: the twins of
//! `store::rewrap` (same names, arguments and results). Only sealed bytes pass
//! through.

use postgres::GenericClient;

use super::{PgError, stored_u32};
pub use crate::store::rewrap::SealedCard;

/// Up to `limit` records not under `version`, oldest version first.
pub fn batch_not_under(
    c: &mut impl GenericClient,
    version: u32,
    limit: i64,
) -> Result<Vec<SealedCard>, PgError> {
    c.query(
        "SELECT id, token, tenant, key_version, nonce, ciphertext FROM cards
         WHERE key_version <> $1 ORDER BY key_version, id LIMIT $2",
        &[&i64::from(version), &limit],
    )?
    .iter()
    .map(|r| {
        Ok(SealedCard {
            id: r.try_get(0)?,
            token: r.try_get(1)?,
            tenant: r.try_get(2)?,
            key_version: stored_u32(r.try_get(3)?, "cards.key_version")?,
            nonce: r.try_get(4)?,
            ciphertext: r.try_get(5)?,
        })
    })
    .collect()
}

/// Replaces the sealed bytes of record `id` if it is still under `old_version`.
/// Returns the number of rows changed (0 or 1).
pub fn update_sealed(
    c: &mut impl GenericClient,
    id: i64,
    old_version: u32,
    key_version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<usize, PgError> {
    let n = c.execute(
        "UPDATE cards SET key_version = $2, nonce = $3, ciphertext = $4 WHERE id = $1 AND key_version = $5",
        &[
            &id,
            &i64::from(key_version),
            &nonce,
            &ciphertext,
            &i64::from(old_version),
        ],
    )?;
    usize::try_from(n).map_err(|_| PgError::Corrupt("an update's row count is out of range".into()))
}

/// How many records are not under `version`.
pub fn count_not_under(c: &mut impl GenericClient, version: u32) -> Result<i64, PgError> {
    Ok(c.query_one(
        "SELECT count(*) FROM cards WHERE key_version <> $1",
        &[&i64::from(version)],
    )?
    .try_get(0)?)
}
