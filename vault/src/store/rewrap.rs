//! The `cards` statements of a rewrap: records not under a given key version are
//! read in batches and written back re-encrypted. Only sealed bytes pass through.

use rusqlite::{Connection, params};

use super::StoreError;

/// A sealed record as a rewrap reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct SealedCard {
    /// Row id.
    pub id: i64,
    /// The token (part of the record's associated data).
    pub token: String,
    /// The tenant (part of the record's associated data).
    pub tenant: String,
    /// The data-key version it is sealed under.
    pub key_version: u32,
    /// The AEAD nonce.
    pub nonce: Vec<u8>,
    /// The AEAD ciphertext.
    pub ciphertext: Vec<u8>,
}

/// Up to `limit` records not under `version`, oldest version first.
pub fn batch_not_under(
    conn: &Connection,
    version: u32,
    limit: i64,
) -> Result<Vec<SealedCard>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, token, tenant, key_version, nonce, ciphertext FROM cards
                 WHERE key_version <> ?1 ORDER BY key_version, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![version, limit], |r| {
        Ok(SealedCard {
            id: r.get(0)?,
            token: r.get(1)?,
            tenant: r.get(2)?,
            key_version: r.get(3)?,
            nonce: r.get(4)?,
            ciphertext: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the sealed bytes of record `id` if it is still under `old_version`.
/// Returns the number of rows changed (0 or 1).
pub fn update_sealed(
    conn: &Connection,
    id: i64,
    old_version: u32,
    key_version: u32,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<usize, StoreError> {
    let mut update = conn.prepare_cached(
        "UPDATE cards SET key_version = ?2, nonce = ?3, ciphertext = ?4 WHERE id = ?1 AND key_version = ?5",
    )?;
    Ok(update.execute(params![id, key_version, nonce, ciphertext, old_version])?)
}

/// How many records are not under `version`.
pub fn count_not_under(conn: &Connection, version: u32) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE key_version <> ?1",
        [version],
        |r| r.get(0),
    )?)
}
