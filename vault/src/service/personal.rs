//! Personal data on PostgreSQL. Deleted row versions stay in PostgreSQL's heap
//! until vacuum, and in its WAL and backups, so a card row there holds no personal
//! data in clear: the subject is a keyed hash (to find a subject's cards: dedup,
//! erasure) and the subject and metadata are sealed together under the record's
//! data key, bound to the row by their own associated data. Once the key versions
//! are destroyed, what lingers is unreadable. SQLite keeps both in clear in its
//! row, which an erasure overwrites (`secure_delete`).

use ring::hmac;
use zeroize::Zeroizing;

use super::keyring::Keyring;
use crate::core::envelope::{DataKey, personal_version};
use crate::error::VaultError;
use crate::store::{CardRow, SealedPersonal, Tx};

/// The keyed hash of `subject` in `tenant` as the card rows hold it:
/// HMAC-SHA256 under the subject key (derived from the fingerprint key), over a
/// label and the length-prefixed tenant and subject.
pub(crate) fn subject_hash(keys: &Keyring, tenant: &str, subject: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, keys.subject_key.expose_secret());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"panvault/card-subject/v1\0");
    for part in [tenant.as_bytes(), subject.as_bytes()] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        ctx.update(&len.to_be_bytes());
        ctx.update(part);
    }
    ctx.sign().as_ref().to_vec()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Personal {
    #[serde(rename = "s")]
    subject: Option<String>,
    #[serde(rename = "m")]
    metadata: Option<String>,
}

/// What PostgreSQL stores for the row `(tenant, token)`: the subject's keyed
/// hash, and the subject and metadata sealed under `key` (nothing when both are
/// absent).
pub(crate) fn seal(
    keys: &Keyring,
    key: &DataKey,
    tenant: &str,
    token: &str,
    subject: Option<&str>,
    metadata: Option<&str>,
) -> Result<SealedPersonal, VaultError> {
    let subject_hash = subject.map(|s| subject_hash(keys, tenant, s));
    if subject.is_none() && metadata.is_none() {
        return Ok(SealedPersonal {
            subject_hash,
            sealed: None,
        });
    }
    let plain = Zeroizing::new(
        serde_json::to_vec(&Personal {
            subject: subject.map(str::to_owned),
            metadata: metadata.map(str::to_owned),
        })
        .map_err(|e| VaultError::internal_from("personal data could not be encoded", e))?,
    );
    let sealed = key
        .seal_personal(tenant, token, &plain)
        .map_err(|_| VaultError::Crypto)?;
    Ok(SealedPersonal {
        subject_hash,
        sealed: Some(sealed),
    })
}

/// Opens a PostgreSQL row's sealed subject and metadata into the row (a row that
/// holds none, or an SQLite row, is left as it is). A blob that does not open
/// under its own key is a decryption failure, never an empty value.
pub(crate) fn open(keys: &Keyring, row: &mut CardRow) -> Result<(), VaultError> {
    let Some(blob) = row.sealed_personal.take() else {
        return Ok(());
    };
    let version = personal_version(&blob).ok_or(VaultError::Decryption)?;
    let key = keys.data.get(&version).ok_or(VaultError::Decryption)?;
    let plain = key
        .open_personal(&row.tenant, &row.token, &blob)
        .map_err(|_| VaultError::Decryption)?;
    let p: Personal = serde_json::from_slice(&plain).map_err(|_| VaultError::Decryption)?;
    row.subject = p.subject;
    row.metadata = p.metadata;
    Ok(())
}

/// A rewrap of row `id` (PostgreSQL): its sealed subject and metadata move to
/// the active key with the card, so destroying the old key leaves them readable.
/// Nothing on SQLite, or when none is stored or it is under the active key.
pub(crate) fn rewrap(
    tx: &Tx<'_>,
    keys: &Keyring,
    id: i64,
    tenant: &str,
    token: &str,
) -> Result<(), VaultError> {
    let Some(blob) = tx.card_sealed_personal(id)? else {
        return Ok(());
    };
    let active = keys.active_key()?;
    let version = personal_version(&blob).ok_or(VaultError::Decryption)?;
    if version == active.version() {
        return Ok(());
    }
    let old = keys.data.get(&version).ok_or_else(|| {
        VaultError::KeyState(format!(
            "personal data under v{version}, whose key is not available (destroyed?)"
        ))
    })?;
    let plain = old
        .open_personal(tenant, token, &blob)
        .map_err(|_| VaultError::Decryption)?;
    let fresh = active
        .seal_personal(tenant, token, &plain)
        .map_err(|_| VaultError::Crypto)?;
    tx.rewrap_card_personal(id, &fresh)?;
    Ok(())
}

/// The key version `row`'s sealed personal data needs, if it has any.
pub(crate) fn needs_version(row: &CardRow) -> Option<u32> {
    row.sealed_personal.as_deref().and_then(personal_version)
}
