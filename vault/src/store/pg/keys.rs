//! The key tables on PostgreSQL (`seal`, `data_keys`, `wrapped_keys`): the twins
//! of `store::keys` (same names, arguments and results), inside the caller's
//! transaction or on a plain connection ([`GenericClient`]). Keys arrive and leave
//! already wrapped. A key state is stored as its name and read back through
//! `KeyState`'s `FromSql` (`store::key_state_sql`): an unknown name is an error.
//! A version or KDF parameter outside its Rust type's range is
//! [`PgError::Corrupt`], never truncated.

use postgres::{GenericClient, Row};

use super::{CachingClient, PgError, stored_u8, stored_u32};
use crate::core::kdf::KdfParams;
use crate::key_state::KeyState;
pub use crate::store::keys::{DataKeyRow, SealRow, WrappedDataKey};

/// Writes the seal row (replacing any).
pub fn write_seal(c: &mut impl GenericClient, seal: &SealRow) -> Result<(), PgError> {
    let (total, threshold) = seal.shares.map_or((None, None), |(n, m)| {
        (Some(i64::from(n)), Some(i64::from(m)))
    });
    c.execute(
        "INSERT INTO seal (id, method, kdf_m_kib, kdf_t, kdf_p, salt, shares_total, shares_threshold,
             sealed_root, root_created_at, generation)
         VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET method = EXCLUDED.method, kdf_m_kib = EXCLUDED.kdf_m_kib,
             kdf_t = EXCLUDED.kdf_t, kdf_p = EXCLUDED.kdf_p, salt = EXCLUDED.salt,
             shares_total = EXCLUDED.shares_total, shares_threshold = EXCLUDED.shares_threshold,
             sealed_root = EXCLUDED.sealed_root, root_created_at = EXCLUDED.root_created_at,
             generation = EXCLUDED.generation",
        &[
            &seal.method,
            &seal.kdf.map(|k| i64::from(k.m_kib)),
            &seal.kdf.map(|k| i64::from(k.t)),
            &seal.kdf.map(|k| i64::from(k.p)),
            &seal.salt,
            &total,
            &threshold,
            &seal.sealed_root,
            &seal.root_created_at,
            &seal.generation,
        ],
    )?;
    Ok(())
}

fn opt_u32(r: &Row, i: usize, what: &str) -> Result<Option<u32>, PgError> {
    r.try_get::<_, Option<i64>>(i)?
        .map(|v| stored_u32(v, what))
        .transpose()
}

fn opt_u8(r: &Row, i: usize, what: &str) -> Result<Option<u8>, PgError> {
    r.try_get::<_, Option<i64>>(i)?
        .map(|v| stored_u8(v, what))
        .transpose()
}

/// The seal row, if there is one.
pub fn read_seal(c: &mut impl GenericClient) -> Result<Option<SealRow>, PgError> {
    let Some(r) = c.query_opt(
        "SELECT method, kdf_m_kib, kdf_t, kdf_p, salt, shares_total, shares_threshold, sealed_root,
                root_created_at, generation FROM seal WHERE id = 1",
        &[],
    )?
    else {
        return Ok(None);
    };
    let m = opt_u32(&r, 1, "seal.kdf_m_kib")?;
    let t = opt_u32(&r, 2, "seal.kdf_t")?;
    let p = opt_u32(&r, 3, "seal.kdf_p")?;
    let n = opt_u8(&r, 5, "seal.shares_total")?;
    let k = opt_u8(&r, 6, "seal.shares_threshold")?;
    Ok(Some(SealRow {
        method: r.try_get(0)?,
        kdf: match (m, t, p) {
            (Some(m_kib), Some(t), Some(p)) => Some(KdfParams { m_kib, t, p }),
            _ => None,
        },
        salt: r.try_get(4)?,
        shares: n.zip(k),
        sealed_root: r.try_get(7)?,
        root_created_at: r.try_get(8)?,
        generation: r.try_get(9)?,
    }))
}

fn version_of(r: &Row, i: usize) -> Result<u32, PgError> {
    stored_u32(r.try_get(i)?, "data_keys.version")
}

/// The data-key version in state `active`, if one is.
pub fn active_version(c: &mut impl GenericClient) -> Result<Option<u32>, PgError> {
    c.query_opt(ACTIVE_VERSION, &[&KeyState::Active.as_str()])?
        .map(|r| version_of(&r, 0))
        .transpose()
}

const ACTIVE_VERSION: &str = "SELECT version FROM data_keys WHERE state = $1";

/// [`active_version`], prepared once per connection (every writer batch that
/// seals reads it).
pub fn active_version_prepared(c: &mut CachingClient) -> Result<Option<u32>, PgError> {
    let stmt = c.prepared(ACTIVE_VERSION)?;
    c.query_opt(&stmt, &[&KeyState::Active.as_str()])?
        .map(|r| version_of(&r, 0))
        .transpose()
}

/// Stores a wrapped data key as `version`, `active`.
pub fn insert_data_key(
    c: &mut impl GenericClient,
    version: u32,
    wrapped: &[u8],
    now: i64,
) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO data_keys (version, state, wrapped, created_at) VALUES ($1, $2, $3, $4)",
        &[
            &i64::from(version),
            &KeyState::Active.as_str(),
            &wrapped,
            &now,
        ],
    )?;
    Ok(())
}

/// Every data key that is not destroyed.
pub fn wrapped_data_keys(c: &mut impl GenericClient) -> Result<Vec<WrappedDataKey>, PgError> {
    c.query(
        "SELECT version, state, wrapped FROM data_keys WHERE wrapped IS NOT NULL ORDER BY version",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(WrappedDataKey {
            version: version_of(r, 0)?,
            state: r.try_get(1)?,
            wrapped: r.try_get(2)?,
        })
    })
    .collect()
}

/// (version, wrapped bytes) of every data key that is not destroyed (master rotate).
pub fn wrapped_data_key_bytes(c: &mut impl GenericClient) -> Result<Vec<(u32, Vec<u8>)>, PgError> {
    c.query(
        "SELECT version, wrapped FROM data_keys WHERE wrapped IS NOT NULL ORDER BY version",
        &[],
    )?
    .iter()
    .map(|r| Ok((version_of(r, 0)?, r.try_get(1)?)))
    .collect()
}

/// Replaces the wrapped bytes of data key `version` (master rotate).
pub fn rewrap_data_key(
    c: &mut impl GenericClient,
    version: u32,
    wrapped: &[u8],
) -> Result<(), PgError> {
    c.execute(
        "UPDATE data_keys SET wrapped = $2 WHERE version = $1",
        &[&i64::from(version), &wrapped],
    )?;
    Ok(())
}

/// Every data key, by version, with its record count. Its encryptions are the
/// key's row plus what the nodes' writer batches counted per node
/// (`key_encryptions`, see `batch::FLUSH`).
pub fn list_data_keys(c: &mut impl GenericClient) -> Result<Vec<DataKeyRow>, PgError> {
    c.query(
        "SELECT k.version, k.state, k.created_at, k.retired_at, k.destroyed_at,
                k.encryptions + COALESCE((SELECT sum(e.n) FROM key_encryptions e
                                          WHERE e.version = k.version), 0)::bigint,
                (SELECT count(*) FROM cards c WHERE c.key_version = k.version)
         FROM data_keys k ORDER BY k.version",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(DataKeyRow {
            version: version_of(r, 0)?,
            state: r.try_get(1)?,
            created_at: r.try_get(2)?,
            retired_at: r.try_get(3)?,
            destroyed_at: r.try_get(4)?,
            encryptions: r.try_get(5)?,
            records: r.try_get(6)?,
        })
    })
    .collect()
}

/// The state of data key `version`, if it exists.
pub fn key_state(c: &mut impl GenericClient, version: u32) -> Result<Option<KeyState>, PgError> {
    Ok(c.query_opt(
        "SELECT state FROM data_keys WHERE version = $1",
        &[&i64::from(version)],
    )?
    .map(|r| r.try_get(0))
    .transpose()?)
}

/// The version after the highest stored one (1 for none); past `u32::MAX` is
/// [`PgError::Corrupt`].
pub fn next_version(c: &mut impl GenericClient) -> Result<u32, PgError> {
    let next: i64 = c
        .query_one("SELECT COALESCE(MAX(version), 0) + 1 FROM data_keys", &[])?
        .try_get(0)?;
    stored_u32(next, "the next data_keys.version")
}

/// Moves every key in state `from` to state `to`.
pub fn set_state_where(
    c: &mut impl GenericClient,
    from: KeyState,
    to: KeyState,
) -> Result<(), PgError> {
    c.execute(
        "UPDATE data_keys SET state = $1 WHERE state = $2",
        &[&to.as_str(), &from.as_str()],
    )?;
    Ok(())
}

/// Marks data key `version` retired at `now`.
pub fn mark_retired(c: &mut impl GenericClient, version: u32, now: i64) -> Result<(), PgError> {
    c.execute(
        "UPDATE data_keys SET state = $2, retired_at = $3 WHERE version = $1",
        &[&i64::from(version), &KeyState::Retired.as_str(), &now],
    )?;
    Ok(())
}

/// Marks data key `version` destroyed at `now` and deletes its wrapped bytes.
pub fn mark_destroyed(c: &mut impl GenericClient, version: u32, now: i64) -> Result<(), PgError> {
    c.execute(
        "UPDATE data_keys SET state = $2, wrapped = NULL, destroyed_at = $3 WHERE version = $1",
        &[&i64::from(version), &KeyState::Destroyed.as_str(), &now],
    )?;
    Ok(())
}

/// How many records are sealed under data key `version`.
pub fn records_under(c: &mut impl GenericClient, version: u32) -> Result<i64, PgError> {
    Ok(c.query_one(
        "SELECT count(*) FROM cards WHERE key_version = $1",
        &[&i64::from(version)],
    )?
    .try_get(0)?)
}

/// Stores an auxiliary key (`fingerprint`, `audit-signing`), wrapped, replacing any.
pub fn insert_aux_key(
    c: &mut impl GenericClient,
    name: &str,
    wrapped: &[u8],
    now: i64,
) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO wrapped_keys (name, wrapped, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET wrapped = EXCLUDED.wrapped, created_at = EXCLUDED.created_at",
        &[&name, &wrapped, &now],
    )?;
    Ok(())
}

/// The wrapped bytes of auxiliary key `name` (an error if there is none).
pub fn read_aux_key(c: &mut impl GenericClient, name: &str) -> Result<Vec<u8>, PgError> {
    Ok(
        c.query_one("SELECT wrapped FROM wrapped_keys WHERE name = $1", &[&name])?
            .try_get(0)?,
    )
}

/// Every auxiliary key: (name, wrapped bytes), in name order.
pub fn aux_keys(c: &mut impl GenericClient) -> Result<Vec<(String, Vec<u8>)>, PgError> {
    c.query("SELECT name, wrapped FROM wrapped_keys ORDER BY name", &[])?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Replaces the wrapped bytes of auxiliary key `name` (master rotate).
pub fn rewrap_aux_key(
    c: &mut impl GenericClient,
    name: &str,
    wrapped: &[u8],
) -> Result<(), PgError> {
    c.execute(
        "UPDATE wrapped_keys SET wrapped = $2 WHERE name = $1",
        &[&name, &wrapped],
    )?;
    Ok(())
}

/// Adds `n` encryptions to version `version`'s counter (its nonce budget).
pub fn add_encryptions(c: &mut impl GenericClient, version: u32, n: i64) -> Result<(), PgError> {
    c.execute(ADD_ENCRYPTIONS, &[&i64::from(version), &n])?;
    Ok(())
}

const ADD_ENCRYPTIONS: &str =
    "UPDATE data_keys SET encryptions = encryptions + $2 WHERE version = $1";

/// [`add_encryptions`], prepared once per connection (every writer batch that
/// seals counts).
pub fn add_encryptions_prepared(
    c: &mut CachingClient,
    version: u32,
    n: i64,
) -> Result<(), PgError> {
    let stmt = c.prepared(ADD_ENCRYPTIONS)?;
    c.execute(&stmt, &[&i64::from(version), &n])?;
    Ok(())
}
