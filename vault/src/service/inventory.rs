//! Read-only facts about a vault for compliance checks and reports, readable
//! without unsealing: key inventory, seal, record counts. Never key bytes.

use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::keyring::{self, SealInfo};
use super::{KeyInfo, list_keys};
use crate::error::VaultError;
use crate::store;

/// What a compliance run learns about a vault's keys and data without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The database file.
    pub db_path: PathBuf,
    /// The vault's random id.
    pub vault_id: String,
    /// Every data key (no key bytes).
    pub keys: Vec<KeyInfo>,
    /// `passphrase` or `shamir`.
    pub seal_method: String,
    /// Argon2id memory (KiB), passes, lanes, for passphrase seals.
    pub kdf: Option<(u32, u32, u32)>,
    /// (total, threshold) for custodian-share seals.
    pub shares: Option<(u8, u8)>,
    /// When the root key was made (RFC 3339).
    pub root_created_at: String,
    /// Root key age in whole days.
    pub root_age_days: i64,
    /// Seal generation.
    pub seal_generation: i64,
    /// Cards stored.
    pub records: i64,
    /// Cards whose expiry month ended more than `grace_days` ago (see [`Inventory::read`]).
    pub records_past_retention: i64,
    /// Names of the auxiliary wrapped keys (fingerprint, audit-signing).
    pub wrapped_keys: Vec<String>,
}

impl Inventory {
    /// Reads the inventory of `data_dir`; `grace_days` is the card retention after
    /// the expiry month.
    pub fn read(
        data_dir: &Path,
        grace_days: i64,
        now: OffsetDateTime,
    ) -> Result<Inventory, VaultError> {
        let (conn, db) = open_reader(data_dir)?;
        // Every vault is made with an id; one without has lost a row of its `meta`.
        let vault_id = keyring::meta_get(&conn, "vault_id")?.ok_or_else(|| {
            VaultError::Store(store::StoreError::Corrupt(
                "the vault has no vault_id in its meta table".into(),
            ))
        })?;
        let keys = list_keys(&conn, now)?;
        let (seal, _, _): (SealInfo, _, _) = keyring::read_seal(&conn)?;
        let records = conn.count_cards()?;
        // A card is past retention once `grace_days` have passed after the last day of
        // its expiry month: compare (year*12 + month) against now minus grace.
        let cutoff = now - time::Duration::days(grace_days);
        let cutoff_month = i64::from(cutoff.year()) * 12 + i64::from(u8::from(cutoff.month())) - 1;
        let past = conn.count_expired_before(cutoff_month)?;
        let wrapped_keys = conn.wrapped_key_names()?;
        Ok(Inventory {
            data_dir: data_dir.to_owned(),
            db_path: db,
            vault_id,
            keys,
            seal_method: seal.method,
            kdf: seal.kdf.map(|k| (k.m_kib, k.t, k.p)),
            shares: seal.shares,
            root_created_at: super::rfc3339("seal.root_created_at", seal.root_created_at)?,
            root_age_days: (now.unix_timestamp() - seal.root_created_at).max(0) / 86_400,
            seal_generation: seal.generation,
            records,
            records_past_retention: past,
            wrapped_keys,
        })
    }
}

/// How the vault in `data_dir` is sealed (`passphrase` or `shamir`) and, for
/// shares, the threshold. Readable without any secret.
pub fn seal_method(data_dir: &Path) -> Result<(String, Option<u8>), VaultError> {
    let (conn, _) = open_reader(data_dir)?;
    let (seal, _, _) = keyring::read_seal(&conn)?;
    Ok((seal.method, seal.shares.map(|(_, m)| m)))
}

/// A reader of the vault in `data_dir`, wherever its data is, and where that is
/// as shown (SQLite: the file; PostgreSQL: the URL, password redacted).
pub(crate) fn open_reader(
    data_dir: &Path,
) -> Result<(store::Reader<'static>, std::path::PathBuf), VaultError> {
    let location = store::Location::of(data_dir)?;
    if let store::Location::Sqlite(db) = &location
        && !db.exists()
    {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    match store::Reader::open_at(&location) {
        Ok(r) => Ok((r, std::path::PathBuf::from(location.to_string()))),
        Err(store::StoreError::NoVault) => Err(VaultError::NotInitialized(location.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether `data_dir` names a vault (SQLite: its file exists; PostgreSQL: the
/// database holds a vault's id).
pub fn vault_exists(data_dir: &Path) -> Result<bool, VaultError> {
    match open_reader(data_dir) {
        Ok((conn, _)) => Ok(keyring::meta_get(&conn, "vault_id")?.is_some()),
        Err(VaultError::NotInitialized(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
