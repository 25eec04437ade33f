//! The data keys as the service sees them: which one is active, reloading them when
//! another process changed them, and listing them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::keyring::{self, Keyring};
use super::{Vault, rfc3339};
use crate::core::kdf::KdfParams;
use crate::core::secret::SecretKey32;
use crate::error::VaultError;
use crate::key_state::KeyState;
use crate::store::{self, Reader};

/// A key's row, as `keys list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Version.
    pub version: u32,
    /// Serialized as its stored name (`active`, `decrypt_only`, `retired`, `destroyed`).
    pub state: KeyState,
    /// RFC 3339.
    pub created_at: String,
    /// Whole days since creation.
    pub age_days: i64,
    /// Records currently sealed under it.
    pub records: i64,
    /// Encryptions ever made with it (nonce budget).
    pub encryptions: i64,
    /// RFC 3339, if retired.
    pub retired_at: Option<String>,
    /// RFC 3339, if destroyed.
    pub destroyed_at: Option<String>,
}

impl Vault {
    /// The active data-key version.
    pub fn active_key_version(&self) -> Result<u32, VaultError> {
        Ok(self.keys()?.active)
    }

    /// Reloads keys if another process changed them (e.g. `keys rotate`).
    /// Returns whether anything changed. A failed reload leaves the vault refusing
    /// to tokenize (503) until a later call succeeds; the error is logged once.
    pub fn refresh_keys(&self) -> Result<bool, VaultError> {
        let force = self.inner.reload_wanted.swap(false, Ordering::SeqCst);
        self.reload_keys(force)
    }

    /// [`Vault::refresh_keys`]; `force` reloads even when the epoch is unchanged.
    pub(super) fn reload_keys(&self, force: bool) -> Result<bool, VaultError> {
        let result = self.try_reload_keys(force);
        match &result {
            Ok(_) => {
                if self.inner.keys_stale.swap(false, Ordering::SeqCst) {
                    tracing::warn!("data keys loaded again; tokenize resumes");
                }
            }
            Err(e) => {
                if !self.inner.keys_stale.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        error = %e,
                        "the data keys changed in the database and could not be loaded; \
                         tokenize answers 503 until they can be (was the root key replaced \
                         under a running server? restart it)"
                    );
                }
            }
        }
        result
    }

    fn try_reload_keys(&self, force: bool) -> Result<bool, VaultError> {
        let conn = self.inner.readers.get()?;
        let epoch = keyring::key_epoch(&conn)?;
        let current = self.keys()?;
        if epoch == current.epoch && !force {
            return Ok(false);
        }
        // A `master rotate` made while this node serves: its successor takes this
        // node to the new root, and loading the keys under it checks it.
        let (root, followed) = match keyring::follow_root(&conn, &current)? {
            Some(next) => (next, true),
            None => (
                SecretKey32::from_slice(current.root.expose_secret())
                    .ok_or(VaultError::internal("a root key is not 32 bytes"))?,
                false,
            ),
        };
        let fresh = Keyring::load(&conn, &current.vault_id, root)?;
        let root_id = fresh.root_id.clone();
        {
            let mut guard = self
                .inner
                .keys
                .write()
                .map_err(|_| VaultError::KeyState("key lock poisoned".into()))?;
            // The keyring replaced here drops (and zeroizes) the old root once the
            // batches still using it end.
            *guard = Arc::new(fresh);
        }
        if followed {
            tracing::warn!(root = %root_id, "followed the new root key of `master rotate`");
            self.acknowledge_root(&root_id);
        }
        Ok(true)
    }

    /// PostgreSQL: tells `master rotate` this node holds the root `root_id` (its
    /// presence connection takes the acknowledgement lock; a failure is logged
    /// and retried with the presence lock, every second).
    pub(super) fn acknowledge_root(&self, root_id: &str) {
        if let Some(p) = &self.inner.presence {
            let done = p
                .lock()
                .map_err(|_| VaultError::internal("presence lock poisoned"))
                .and_then(|mut p| p.acknowledge(root_id).map_err(VaultError::from));
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not acknowledge the root key on the database yet");
            }
        }
    }
}

impl Vault {
    /// Lists the data keys.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, VaultError> {
        let conn = self.inner.readers.get()?;
        list_keys(&conn, self.now())
    }
}

/// Lists the data keys of the database behind `conn`.
pub fn list_keys(conn: &Reader<'_>, now: OffsetDateTime) -> Result<Vec<KeyInfo>, VaultError> {
    let mut keys = Vec::new();
    for row in conn.list_data_keys()? {
        let store::DataKeyRow {
            version,
            state,
            created_at: created,
            retired_at: retired,
            destroyed_at: destroyed,
            encryptions,
            records,
        } = row;
        keys.push(KeyInfo {
            version,
            state,
            created_at: rfc3339("data_keys.created_at", created)?,
            age_days: (now.unix_timestamp() - created).max(0) / 86_400,
            retired_at: retired
                .map(|t| rfc3339("data_keys.retired_at", t))
                .transpose()?,
            destroyed_at: destroyed
                .map(|t| rfc3339("data_keys.destroyed_at", t))
                .transpose()?,
            encryptions,
            records,
        });
    }
    Ok(keys)
}

/// Default Argon2id parameters for new vaults.
pub fn default_kdf() -> KdfParams {
    KdfParams::MINIMUM
}
