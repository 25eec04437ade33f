//! The key hierarchy at rest and in memory: sealing the root key under a KEK
//! (Argon2id from a passphrase, or a KEK rebuilt from custodian shares), wrapping
//! data, fingerprint and audit-signing keys under the root key, and loading them.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use ring::hmac;
use zeroize::Zeroizing;

use super::shamir::{self, ShareFile};
use crate::core::envelope::{DataKey, unwrap_key, unwrap_key32, wrap_key};
use crate::core::kdf::{FingerprintKey, KdfParams, derive_kek};
use crate::core::rng;
use crate::core::secret::{SecretKey32, SecretText};
use crate::error::VaultError;
use crate::key_state::KeyState;
use crate::store::{Reader, SealRow, StoreError, Tx, WrappedDataKey};

/// What unseals the root key.
#[derive(Debug)]
pub enum Unlock {
    /// The operator passphrase (Argon2id derives the KEK).
    Passphrase(SecretText),
    /// Custodian shares; at least the threshold of one share set.
    Shares(Vec<ShareFile>),
}

/// How a new vault seals its root key.
#[derive(Debug)]
pub struct SealSpec {
    /// The passphrase (ignored when `shares` is set).
    pub unlock: Unlock,
    /// Argon2id parameters (for a passphrase). Never below [`KdfParams::MINIMUM`]
    /// outside tests.
    pub kdf: KdfParams,
    /// Seal with custodian shares instead: (total shares, threshold).
    pub shares: Option<(u8, u8)>,
}

pub(crate) fn root_label(vault_id: &str, generation: i64) -> String {
    format!("panvault/root/v1:{vault_id}:{generation}")
}
pub(crate) fn dek_label(vault_id: &str, version: u32) -> String {
    format!("panvault/dek/v{version}:{vault_id}")
}
pub(crate) fn aux_label(vault_id: &str, name: &str) -> String {
    format!("panvault/{name}:{vault_id}")
}
/// The label a root's successor is wrapped under: bound to the vault and to both
/// roots' public ids, so it cannot be moved to another row or another vault.
pub(crate) fn successor_label(vault_id: &str, from: &str, to: &str) -> String {
    format!("panvault/root-successor/v1:{vault_id}:{from}:{to}")
}

/// The `meta` key holding the public id ([`root_id`]) of the root sealed now.
/// Absent in a vault whose root was never rotated by a build that writes it:
/// then every process holds the sealed root (an older `master rotate` ran only
/// with no server up).
pub(crate) const ROOT_ID_META: &str = "root_id";

/// The public id of `root` in vault `vault_id`: the first 16 bytes of
/// HMAC-SHA256 under the root of a fixed label, in hex. HMAC is a PRF, so the id
/// says nothing about the root; it names a root in the seal's `meta`, in its
/// successor row and in the nodes' acknowledgements, and lets a writer check
/// inside its transaction that the root it would wrap under is the one sealed.
pub(crate) fn root_id(vault_id: &str, root: &SecretKey32) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, root.expose_secret());
    let tag = hmac::sign(&key, format!("panvault/root-id/v1:{vault_id}").as_bytes());
    let bytes = tag.as_ref();
    super::hex(bytes.get(..16).unwrap_or(bytes))
}

/// Whether the root `keys` holds is the one sealed in the database now (see
/// [`ROOT_ID_META`]).
pub(crate) fn root_is_current(conn: &Reader<'_>, keys: &Keyring) -> Result<bool, VaultError> {
    Ok(match conn.meta_get(ROOT_ID_META)? {
        None => true,
        Some(id) => id == keys.root_id,
    })
}

/// [`VaultError::KeysOutOfDate`] unless the root `keys` holds is the one sealed
/// now: for code about to wrap a key under the root, or to open one wrapped
/// under it, inside its transaction. In a writer batch (PostgreSQL: the key lock
/// held shared; SQLite: the write lock) no `master rotate` commits between this
/// check and the batch's commit, so nothing is ever wrapped under a replaced root.
pub(crate) fn ensure_root_current(conn: &Reader<'_>, keys: &Keyring) -> Result<(), VaultError> {
    if root_is_current(conn, keys)? {
        Ok(())
    } else {
        Err(VaultError::KeysOutOfDate)
    }
}

/// The most successor rows a node walks through at once.
const MAX_SUCCESSION: usize = 16;

/// The root sealed now, reached from the one `keys` holds through the successor
/// rows `master rotate` leaves for running nodes (each unwrapped under the root
/// before it, and checked to carry the id it claims); `None` when `keys` already
/// holds it. An error when a successor is missing (deleted after the rotation's
/// wait, or lost in a database crash): the caller keeps refusing to seal.
pub(crate) fn follow_root(
    conn: &Reader<'_>,
    keys: &Keyring,
) -> Result<Option<SecretKey32>, VaultError> {
    let Some(target) = conn.meta_get(ROOT_ID_META)? else {
        return Ok(None);
    };
    if target == keys.root_id {
        return Ok(None);
    }
    let mut root = SecretKey32::from_slice(keys.root.expose_secret())
        .ok_or(VaultError::internal("a root key is not 32 bytes"))?;
    let mut id = keys.root_id.clone();
    for _ in 0..MAX_SUCCESSION {
        let Some(next) = conn.root_successor(&id)? else {
            return Err(VaultError::KeyState(
                "the root key was replaced by `panvault master rotate` and its successor for \
                 the root this node holds is gone (the rotation stopped waiting for this node, \
                 or the database restarted): restart this node so it unseals the new root"
                    .into(),
            ));
        };
        let label = successor_label(&keys.vault_id, &id, &next.to);
        root = unwrap_key32(&root, &label, &next.wrapped).map_err(|_| VaultError::Decryption)?;
        if root_id(&keys.vault_id, &root) != next.to {
            return Err(VaultError::Store(StoreError::Corrupt(
                "a root successor does not carry the id it is stored under".into(),
            )));
        }
        id = next.to;
        if id == target {
            return Ok(Some(root));
        }
    }
    Err(VaultError::KeyState(format!(
        "more than {MAX_SUCCESSION} root rotations since this node unsealed: restart it"
    )))
}

/// A new seal: what the root key is sealed under.
pub(crate) enum NewSeal<'a> {
    /// Argon2id from this passphrase with these costs (a fresh salt is drawn).
    Passphrase(&'a SecretText, KdfParams),
    /// A fresh random KEK split into (total, threshold) shares; the shares are returned.
    Shares(u8, u8),
    /// An existing share-set KEK (master rotate of a share-sealed vault).
    Kek(&'a SecretKey32, (u8, u8)),
}

/// Writes a new seal row (replacing any) for `root` at `generation`. Returns the
/// custodian shares for a share seal (empty otherwise).
pub(crate) fn write_seal(
    conn: &Tx<'_>,
    vault_id: &str,
    root: &SecretKey32,
    seal: &NewSeal<'_>,
    generation: i64,
    root_created_at: i64,
) -> Result<Vec<ShareFile>, VaultError> {
    let (method, salt, kdf, kek, shares, counts) = match seal {
        NewSeal::Passphrase(p, kdf) => {
            if kdf.m_kib < 8 || kdf.t < 1 {
                return Err(VaultError::invalid("kdf", "Argon2id parameters too small"));
            }
            let mut salt = [0u8; 16];
            rng::fill(&mut salt)?;
            let kek = derive_kek(p, &salt, *kdf).map_err(|_| VaultError::Crypto)?;
            (
                "passphrase",
                Some(salt.to_vec()),
                Some(*kdf),
                kek,
                Vec::new(),
                None,
            )
        }
        NewSeal::Shares(total, threshold) => {
            let kek = SecretKey32::generate()?;
            let shares = shamir::split(&kek, vault_id, generation, *total, *threshold)?;
            (
                "shamir",
                None,
                None,
                kek,
                shares,
                Some((*total, *threshold)),
            )
        }
        NewSeal::Kek(k, counts) => {
            let kek = SecretKey32::from_slice(k.expose_secret())
                .ok_or(VaultError::internal("a key-encryption key is not 32 bytes"))?;
            ("shamir", None, None, kek, Vec::new(), Some(*counts))
        }
    };
    let sealed = wrap_key(
        &kek,
        &root_label(vault_id, generation),
        root.expose_secret(),
    )?;
    conn.write_seal(&SealRow {
        method: method.to_owned(),
        kdf,
        salt,
        shares: counts,
        sealed_root: sealed,
        root_created_at,
        generation,
    })?;
    Ok(shares)
}

/// The seal row's public facts.
#[derive(Debug, Clone)]
pub struct SealInfo {
    /// `passphrase` or `shamir`.
    pub method: String,
    /// Argon2id parameters (passphrase seals).
    pub kdf: Option<KdfParams>,
    /// (total, threshold) for Shamir seals.
    pub shares: Option<(u8, u8)>,
    /// When the current root key was made (unix seconds).
    pub root_created_at: i64,
    /// Root key generation (increments on `master rotate`).
    pub generation: i64,
}

type SealParts = (SealInfo, Option<Vec<u8>>, Vec<u8>);

pub(crate) fn read_seal(conn: &Reader<'_>) -> Result<SealParts, VaultError> {
    let row = conn.read_seal()?;
    let row = row.ok_or_else(|| VaultError::Store(StoreError::Corrupt("no seal row".into())))?;
    Ok((
        SealInfo {
            method: row.method,
            kdf: row.kdf,
            shares: row.shares,
            root_created_at: row.root_created_at,
            generation: row.generation,
        },
        row.salt,
        row.sealed_root,
    ))
}

/// Unseals the root key of the vault in `conn`. Returns the root, the seal's facts
/// and the share numbers that took part (empty for a passphrase).
pub(crate) fn unseal_root(
    conn: &Reader<'_>,
    vault_id: &str,
    unlock: &Unlock,
) -> Result<(SecretKey32, SealInfo, Vec<u8>), VaultError> {
    let (info, salt, sealed) = read_seal(conn)?;
    let (kek, numbers) = match (unlock, info.method.as_str()) {
        (Unlock::Passphrase(p), "passphrase") => {
            let (Some(salt), Some(kdf)) = (salt.as_deref(), info.kdf) else {
                return Err(VaultError::Store(crate::store::StoreError::Corrupt(
                    "passphrase seal without KDF parameters".into(),
                )));
            };
            (
                derive_kek(p, salt, kdf).map_err(|_| VaultError::Crypto)?,
                Vec::new(),
            )
        }
        (Unlock::Shares(shares), "shamir") => shamir::combine(shares, vault_id, info.generation)?,
        (Unlock::Passphrase(_), _) => {
            return Err(VaultError::KeyState(
                "this vault is sealed with custodian shares: pass --share FILE for each".into(),
            ));
        }
        (Unlock::Shares(_), _) => {
            return Err(VaultError::KeyState(
                "this vault is sealed with a passphrase, not custodian shares".into(),
            ));
        }
    };
    let root = unwrap_key32(&kek, &root_label(vault_id, info.generation), &sealed)
        .map_err(|_| VaultError::WrongSecret)?;
    Ok((root, info, numbers))
}

pub(crate) fn meta_get(conn: &Reader<'_>, key: &str) -> Result<Option<String>, VaultError> {
    Ok(conn.meta_get(key)?)
}

pub(crate) fn meta_set(conn: &Tx<'_>, key: &str, value: &str) -> Result<(), VaultError> {
    Ok(conn.meta_set(key, value)?)
}

/// Bumps the key epoch so running servers reload their keys.
pub(crate) fn bump_key_epoch(conn: &Tx<'_>) -> Result<(), VaultError> {
    Ok(conn.bump_key_epoch()?)
}

/// Reads the key epoch (0 for a vault made before there was one). A value that is
/// not a number is corruption, not "no change".
pub(crate) fn key_epoch(conn: &Reader<'_>) -> Result<i64, VaultError> {
    match conn.key_epoch()? {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            VaultError::Store(crate::store::StoreError::Corrupt(
                "meta.key_epoch is not a number".into(),
            ))
        }),
    }
}

/// The data-key version `active` in the database now (`None` if none is).
pub(crate) fn active_version(conn: &Reader<'_>) -> Result<Option<u32>, VaultError> {
    Ok(conn.active_key_version()?)
}

/// Stores a freshly generated data key as `version`, `active`.
pub(crate) fn insert_data_key(
    conn: &Tx<'_>,
    vault_id: &str,
    root: &SecretKey32,
    version: u32,
    now: i64,
) -> Result<(), VaultError> {
    let key = SecretKey32::generate()?;
    let wrapped = wrap_key(root, &dek_label(vault_id, version), key.expose_secret())?;
    Ok(conn.insert_data_key(version, &wrapped, now)?)
}

/// Stores an auxiliary key (`fingerprint`, `audit-signing`) wrapped under the root.
pub(crate) fn insert_aux_key(
    conn: &Tx<'_>,
    vault_id: &str,
    root: &SecretKey32,
    name: &str,
    key: &[u8],
    now: i64,
) -> Result<(), VaultError> {
    let wrapped = wrap_key(root, &aux_label(vault_id, name), key)?;
    Ok(conn.insert_aux_key(name, &wrapped, now)?)
}

fn read_aux(
    conn: &Reader<'_>,
    vault_id: &str,
    root: &SecretKey32,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let blob = conn.read_aux_key(name)?;
    unwrap_key(root, &aux_label(vault_id, name), &blob).map_err(|_| VaultError::Decryption)
}

/// All keys in memory, as one immutable snapshot; the vault swaps in a new one
/// when the key epoch changes.
pub struct Keyring {
    pub(crate) vault_id: String,
    pub(crate) root: SecretKey32,
    /// The root's public id ([`root_id`]).
    pub(crate) root_id: String,
    pub(crate) data: BTreeMap<u32, DataKey>,
    pub(crate) active: u32,
    pub(crate) epoch: i64,
    fingerprint: FingerprintKey,
    tenant_keys: RwLock<HashMap<String, hmac::Key>>,
    pub(crate) audit_pkcs8: Zeroizing<Vec<u8>>,
    pub(crate) subject_key: SecretKey32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("vault_id", &self.vault_id)
            .field("active", &self.active)
            .field("versions", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads every usable key, unwrapping under `root`.
    pub(crate) fn load(
        conn: &Reader<'_>,
        vault_id: &str,
        root: SecretKey32,
    ) -> Result<Keyring, VaultError> {
        let epoch = key_epoch(conn)?;
        let mut data = BTreeMap::new();
        let mut active = None;
        {
            for row in conn.wrapped_data_keys()? {
                let WrappedDataKey {
                    version,
                    state,
                    wrapped,
                } = row;
                let key = unwrap_key32(&root, &dek_label(vault_id, version), &wrapped)
                    .map_err(|_| VaultError::Decryption)?;
                data.insert(version, DataKey::new(version, &key));
                if state == KeyState::Active {
                    active = Some(version);
                }
            }
        }
        let active = active.ok_or_else(|| VaultError::KeyState("no active data key".into()))?;
        let fp = read_aux(conn, vault_id, &root, "fingerprint")?;
        let fp = SecretKey32::from_slice(&fp).ok_or(VaultError::Decryption)?;
        let subject_key = derive_subject_key(&fp)?;
        let audit_pkcs8 = read_aux(conn, vault_id, &root, "audit-signing")?;
        Ok(Keyring {
            vault_id: vault_id.to_owned(),
            root_id: root_id(vault_id, &root),
            root,
            data,
            active,
            epoch,
            fingerprint: FingerprintKey::new(&fp),
            tenant_keys: RwLock::new(HashMap::new()),
            audit_pkcs8,
            subject_key,
        })
    }

    /// The active data key.
    pub(crate) fn active_key(&self) -> Result<&DataKey, VaultError> {
        self.data
            .get(&self.active)
            .ok_or_else(|| VaultError::KeyState("active key missing".into()))
    }

    /// The fingerprint of `digits` in `tenant`.
    pub(crate) fn fingerprint(
        &self,
        tenant: &str,
        digits: &str,
    ) -> Result<[u8; crate::core::kdf::FINGERPRINT_LEN], VaultError> {
        if let Ok(map) = self.tenant_keys.read()
            && let Some(k) = map.get(tenant)
        {
            return Ok(crate::core::kdf::fingerprint(k, digits));
        }
        let k = self.fingerprint.tenant_key(tenant)?;
        let fp = crate::core::kdf::fingerprint(&k, digits);
        if let Ok(mut map) = self.tenant_keys.write()
            && map.len() < 100_000
        {
            map.insert(tenant.to_owned(), k);
        }
        Ok(fp)
    }
}

/// The key for hashing subject ids in audit events and receipts: HKDF from the
/// fingerprint key under its own label.
fn derive_subject_key(fp: &SecretKey32) -> Result<SecretKey32, VaultError> {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"panvault/subject-hash/v1");
    let prk = salt.extract(fp.expose_secret());
    let info = [b"subject".as_slice()];
    let okm = prk
        .expand(&info, ring::hkdf::HKDF_SHA256)
        .map_err(|_| VaultError::Crypto)?;
    let mut out = [0u8; 32];
    okm.fill(&mut out).map_err(|_| VaultError::Crypto)?;
    Ok(SecretKey32::from_bytes(&mut out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_id_names_one_root_of_one_vault_and_is_public_hex() {
        let a = SecretKey32::from_bytes(&mut [1u8; 32]);
        let b = SecretKey32::from_bytes(&mut [2u8; 32]);
        let id = root_id("v1", &a);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, root_id("v1", &a));
        assert_ne!(id, root_id("v1", &b));
        assert_ne!(id, root_id("v2", &a));
        // Not the key itself, nor a prefix of it.
        assert!(!id.starts_with("0101"));
    }

    #[test]
    fn a_successor_opens_only_under_its_own_label() {
        let old = SecretKey32::from_bytes(&mut [3u8; 32]);
        let new = SecretKey32::from_bytes(&mut [4u8; 32]);
        let (from, to) = (root_id("v", &old), root_id("v", &new));
        let wrapped =
            wrap_key(&old, &successor_label("v", &from, &to), new.expose_secret()).unwrap();
        let opened = unwrap_key32(&old, &successor_label("v", &from, &to), &wrapped).unwrap();
        assert_eq!(root_id("v", &opened), to);
        for label in [
            successor_label("w", &from, &to),
            successor_label("v", &to, &from),
            root_label("v", 1),
        ] {
            assert!(unwrap_key32(&old, &label, &wrapped).is_err());
        }
        assert!(unwrap_key32(&new, &successor_label("v", &from, &to), &wrapped).is_err());
    }
}
