//! The key tables: the `seal` row (the sealed root key), `data_keys` and
//! `wrapped_keys`. Keys arrive and leave here already wrapped: the store never
//! sees key material in the clear.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::core::kdf::KdfParams;
use crate::key_state::KeyState;

/// The `seal` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRow {
    /// `passphrase` or `shamir`.
    pub method: String,
    /// Argon2id parameters (passphrase seals; all three columns set).
    pub kdf: Option<KdfParams>,
    /// The Argon2id salt (passphrase seals).
    pub salt: Option<Vec<u8>>,
    /// (total, threshold) of a share seal.
    pub shares: Option<(u8, u8)>,
    /// The root key wrapped under the KEK.
    pub sealed_root: Vec<u8>,
    /// When the root key was made (unix seconds).
    pub root_created_at: i64,
    /// Root key generation.
    pub generation: i64,
}

/// Writes the seal row (replacing any).
pub fn write_seal(conn: &Connection, seal: &SealRow) -> Result<(), StoreError> {
    let (total, threshold) = seal
        .shares
        .map_or((None, None), |(n, m)| (Some(n), Some(m)));
    conn.execute(
        "INSERT OR REPLACE INTO seal (id, method, kdf_m_kib, kdf_t, kdf_p, salt, shares_total, shares_threshold,
             sealed_root, root_created_at, generation)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            seal.method,
            seal.kdf.map(|k| k.m_kib),
            seal.kdf.map(|k| k.t),
            seal.kdf.map(|k| k.p),
            seal.salt,
            total,
            threshold,
            seal.sealed_root,
            seal.root_created_at,
            seal.generation
        ],
    )?;
    Ok(())
}

/// The seal row, if there is one.
pub fn read_seal(conn: &Connection) -> Result<Option<SealRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT method, kdf_m_kib, kdf_t, kdf_p, salt, shares_total, shares_threshold, sealed_root,
                    root_created_at, generation FROM seal WHERE id = 1",
            [],
            |r| {
                let m: Option<u32> = r.get(1)?;
                let t: Option<u32> = r.get(2)?;
                let p: Option<u32> = r.get(3)?;
                let n: Option<u8> = r.get(5)?;
                let k: Option<u8> = r.get(6)?;
                Ok(SealRow {
                    method: r.get(0)?,
                    kdf: match (m, t, p) {
                        (Some(m_kib), Some(t), Some(p)) => Some(KdfParams { m_kib, t, p }),
                        _ => None,
                    },
                    salt: r.get(4)?,
                    shares: n.zip(k),
                    sealed_root: r.get(7)?,
                    root_created_at: r.get(8)?,
                    generation: r.get(9)?,
                })
            },
        )
        .optional()?)
}

/// The data-key version in state `active`, if one is.
pub fn active_version(conn: &Connection) -> Result<Option<u32>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT version FROM data_keys WHERE state = ?1")?;
    Ok(stmt
        .query_row([KeyState::Active], |r| r.get(0))
        .optional()?)
}

/// Stores a wrapped data key as `version`, `active`.
pub fn insert_data_key(
    conn: &Connection,
    version: u32,
    wrapped: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO data_keys (version, state, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![version, KeyState::Active, wrapped, now],
    )?;
    Ok(())
}

/// A data key whose wrapped bytes are still stored.
#[derive(Debug, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// Version.
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// The key wrapped under the root key.
    pub wrapped: Vec<u8>,
}

/// Every data key that is not destroyed.
pub fn wrapped_data_keys(conn: &Connection) -> Result<Vec<WrappedDataKey>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT version, state, wrapped FROM data_keys WHERE wrapped IS NOT NULL")?;
    let rows = stmt.query_map([], |r| {
        Ok(WrappedDataKey {
            version: r.get(0)?,
            state: r.get(1)?,
            wrapped: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// (version, wrapped bytes) of every data key that is not destroyed (master rotate).
pub fn wrapped_data_key_bytes(conn: &Connection) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT version, wrapped FROM data_keys WHERE wrapped IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the wrapped bytes of data key `version` (master rotate).
pub fn rewrap_data_key(conn: &Connection, version: u32, wrapped: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE data_keys SET wrapped = ?2 WHERE version = ?1",
        params![version, wrapped],
    )?;
    Ok(())
}

/// A `data_keys` row with the number of records under it.
#[derive(Debug, PartialEq, Eq)]
pub struct DataKeyRow {
    /// Version.
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if retired.
    pub retired_at: Option<i64>,
    /// Unix seconds, if destroyed.
    pub destroyed_at: Option<i64>,
    /// Encryptions ever made with it.
    pub encryptions: i64,
    /// Records sealed under it now.
    pub records: i64,
}

/// Every data key, by version, with its record count.
pub fn list_data_keys(conn: &Connection) -> Result<Vec<DataKeyRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT k.version, k.state, k.created_at, k.retired_at, k.destroyed_at, k.encryptions,
                    (SELECT count(*) FROM cards c WHERE c.key_version = k.version)
             FROM data_keys k ORDER BY k.version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(DataKeyRow {
            version: r.get(0)?,
            state: r.get(1)?,
            created_at: r.get(2)?,
            retired_at: r.get(3)?,
            destroyed_at: r.get(4)?,
            encryptions: r.get(5)?,
            records: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The state of data key `version`, if it exists.
pub fn key_state(conn: &Connection, version: u32) -> Result<Option<KeyState>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT state FROM data_keys WHERE version = ?1",
            [version],
            |r| r.get(0),
        )
        .optional()?)
}

/// The version after the highest stored one (1 for none).
pub fn next_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM data_keys",
        [],
        |r| r.get(0),
    )?)
}

/// Moves every key in state `from` to state `to`.
pub fn set_state_where(conn: &Connection, from: KeyState, to: KeyState) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE data_keys SET state = ?1 WHERE state = ?2",
        [to, from],
    )?;
    Ok(())
}

/// Marks data key `version` retired at `now`.
pub fn mark_retired(conn: &Connection, version: u32, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE data_keys SET state = ?2, retired_at = ?3 WHERE version = ?1",
        params![version, KeyState::Retired, now],
    )?;
    Ok(())
}

/// Marks data key `version` destroyed at `now` and deletes its wrapped bytes.
pub fn mark_destroyed(conn: &Connection, version: u32, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE data_keys SET state = ?2, wrapped = NULL, destroyed_at = ?3 WHERE version = ?1",
        params![version, KeyState::Destroyed, now],
    )?;
    Ok(())
}

/// How many records are sealed under data key `version`.
pub fn records_under(conn: &Connection, version: u32) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE key_version = ?1",
        [version],
        |r| r.get(0),
    )?)
}

/// Stores an auxiliary key (`fingerprint`, `audit-signing`), wrapped, replacing any.
pub fn insert_aux_key(
    conn: &Connection,
    name: &str,
    wrapped: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO wrapped_keys (name, wrapped, created_at) VALUES (?1, ?2, ?3)",
        params![name, wrapped, now],
    )?;
    Ok(())
}

/// The wrapped bytes of auxiliary key `name` (an error if there is none).
pub fn read_aux_key(conn: &Connection, name: &str) -> Result<Vec<u8>, StoreError> {
    Ok(conn.query_row(
        "SELECT wrapped FROM wrapped_keys WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

/// Every auxiliary key: (name, wrapped bytes).
pub fn aux_keys(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, wrapped FROM wrapped_keys")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the wrapped bytes of auxiliary key `name` (master rotate).
pub fn rewrap_aux_key(conn: &Connection, name: &str, wrapped: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE wrapped_keys SET wrapped = ?2 WHERE name = ?1",
        params![name, wrapped],
    )?;
    Ok(())
}

/// Adds `n` encryptions to version `version`'s counter (its nonce budget). Run in
/// every write batch that sealed anything: the statement is cached.
pub fn add_encryptions(conn: &Connection, version: u32, n: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE data_keys SET encryptions = encryptions + ?2 WHERE version = ?1")?
        .execute(params![version, n])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{meta, rewrap};

    #[test]
    fn key_rows_round_trip_and_follow_the_life_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("v.db"), true).unwrap();
        assert!(read_seal(&conn).unwrap().is_none());
        let seal = SealRow {
            method: "passphrase".into(),
            kdf: Some(KdfParams::MINIMUM),
            salt: Some(vec![7; 16]),
            shares: None,
            sealed_root: vec![1, 2, 3],
            root_created_at: 10,
            generation: 2,
        };
        write_seal(&conn, &seal).unwrap();
        let back = read_seal(&conn).unwrap().unwrap();
        assert_eq!(back.kdf, seal.kdf);
        assert_eq!((back.salt, back.sealed_root), (seal.salt, seal.sealed_root));
        assert_eq!((back.root_created_at, back.generation), (10, 2));

        assert_eq!(next_version(&conn).unwrap(), 1);
        assert_eq!(active_version(&conn).unwrap(), None);
        insert_data_key(&conn, 1, b"w1", 100).unwrap();
        set_state_where(&conn, KeyState::Active, KeyState::DecryptOnly).unwrap();
        insert_data_key(&conn, 2, b"w2", 200).unwrap();
        assert_eq!(active_version(&conn).unwrap(), Some(2));
        assert_eq!(key_state(&conn, 1).unwrap(), Some(KeyState::DecryptOnly));
        assert_eq!(key_state(&conn, 9).unwrap(), None);

        conn.execute(
            "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand,
                bin, last4, exp_month, exp_year, created_at)
             VALUES ('t', 'shop', 1, x'00', x'01', x'02', 'visa', '411111', '1111', 1, 2030, 0)",
            [],
        )
        .unwrap();
        assert_eq!(records_under(&conn, 1).unwrap(), 1);
        assert_eq!(rewrap::count_not_under(&conn, 2).unwrap(), 1);
        let batch = rewrap::batch_not_under(&conn, 2, 10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].key_version, 1);
        // A row no longer under the version it was read under is left alone.
        assert_eq!(
            rewrap::update_sealed(&conn, batch[0].id, 3, 2, b"n", b"c").unwrap(),
            0
        );
        assert_eq!(
            rewrap::update_sealed(&conn, batch[0].id, 1, 2, b"n", b"c").unwrap(),
            1
        );
        add_encryptions(&conn, 2, 1).unwrap();
        assert_eq!(rewrap::count_not_under(&conn, 2).unwrap(), 0);

        mark_retired(&conn, 1, 300).unwrap();
        mark_destroyed(&conn, 1, 400).unwrap();
        let rows = list_data_keys(&conn).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].state, rows[0].retired_at, rows[0].destroyed_at),
            (KeyState::Destroyed, Some(300), Some(400))
        );
        assert_eq!(
            (rows[1].state, rows[1].records, rows[1].encryptions),
            (KeyState::Active, 1, 1)
        );
        assert_eq!(
            wrapped_data_key_bytes(&conn).unwrap(),
            vec![(2, b"w2".to_vec())]
        );
        rewrap_data_key(&conn, 2, b"w2'").unwrap();
        assert_eq!(wrapped_data_keys(&conn).unwrap()[0].wrapped, b"w2'");

        insert_aux_key(&conn, "fingerprint", b"a", 1).unwrap();
        rewrap_aux_key(&conn, "fingerprint", b"b").unwrap();
        assert_eq!(read_aux_key(&conn, "fingerprint").unwrap(), b"b");
        assert_eq!(
            aux_keys(&conn).unwrap(),
            vec![("fingerprint".to_owned(), b"b".to_vec())]
        );
        assert!(read_aux_key(&conn, "missing").is_err());

        let before = meta::key_epoch(&conn).unwrap();
        meta::set(&conn, "key_epoch", "4").unwrap();
        meta::bump_key_epoch(&conn).unwrap();
        assert_eq!(meta::key_epoch(&conn).unwrap().as_deref(), Some("5"));
        assert_ne!(before.as_deref(), Some("5"));
        assert_eq!(meta::get(&conn, "nothing").unwrap(), None);
    }
}
