//! Card security codes held until a card's first relay (or their deadline).
//!
//! A code is sealed (AES-256-GCM, associated data: tenant, token, purpose `cvc`,
//! key id) under the key of the current time window; a window is as long as the
//! codes' lifetime (`[relay] cvc_ttl_secs`). The window's key is drawn from the
//! RNG by the first writer that needs it, wrapped under the root key like every
//! other key and stored in the database, so every node can open what another
//! sealed. A code sealed in window `[w, w + ttl)` has its deadline before
//! `w + 2·ttl`, when the window's key row is deleted: from then on the sealed
//! code cannot be opened, even from a backup or a stale page. Each code is also
//! deleted at its first use (in the relay event's own transaction, `take_in_tx`)
//! or by the sweep after its deadline, and a read refuses an expired code before
//! the sweep has run.

use std::time::Duration;

use serde::Serialize;

use super::keyring::{self, Keyring};
use super::request::AccessContext;
use super::{AuditAction, AuditOutcome, AuditRecord, Vault, rfc3339};
use crate::core::cvc::{Cvc, CvcKey};
use crate::core::envelope::{unwrap_key32, wrap_key};
use crate::core::rng;
use crate::core::secret::SecretKey32;
use crate::core::token::Token;
use crate::error::VaultError;
use crate::store::{self, CvcKeyRow, NewCvcKey, NewHeldCvc, Reader, Tx};

pub use crate::config::MAX_CVC_TTL_SECS;

/// Whether a token holds a security code, and until when. Never the code.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CvcStatus {
    /// A code is held and can be used once.
    pub held: bool,
    /// RFC 3339 deadline of the held code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl CvcStatus {
    fn none() -> CvcStatus {
        CvcStatus {
            held: false,
            until: None,
        }
    }

    /// A code held until `deadline` (unix seconds).
    pub(crate) fn held_until(deadline: i64) -> Result<CvcStatus, VaultError> {
        Ok(CvcStatus {
            held: true,
            until: Some(rfc3339("held_cvcs.deadline", deadline)?),
        })
    }
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CvcSweepReport {
    /// Codes past their deadline.
    pub codes: u64,
    /// Window keys destroyed.
    pub keys: u64,
}

/// The label a window key is wrapped under: bound to the vault, the window and
/// its length, so a wrapped key cannot be moved to another row.
pub(crate) fn key_label(vault_id: &str, window_start: i64, ttl_secs: i64) -> String {
    keyring::aux_label(vault_id, &format!("cvc-key/{window_start}/{ttl_secs}"))
}

/// The cipher of a stored window key.
fn open_key(keys: &Keyring, row: &CvcKeyRow) -> Result<CvcKey, VaultError> {
    let label = key_label(&keys.vault_id, row.window_start, row.ttl_secs);
    let key = unwrap_key32(&keys.root, &label, &row.wrapped).map_err(|_| VaultError::Decryption)?;
    Ok(CvcKey::new(row.id, &key))
}

/// The key of the window holding `now` for lifetime `ttl`, made (drawn,
/// wrapped, stored) if this is its first code.
fn window_key(conn: &Tx<'_>, keys: &Keyring, now: i64, ttl: i64) -> Result<CvcKey, VaultError> {
    // A root replaced since this node loaded its keys (`master rotate`): nothing
    // is wrapped under the old one (503 until the node follows).
    keyring::ensure_root_current(conn, keys)?;
    let window_start = now - now.rem_euclid(ttl);
    if let Some(row) = conn.cvc_key_for_window(window_start, ttl)? {
        return open_key(keys, &row);
    }
    let key = SecretKey32::generate()?;
    let wrapped = wrap_key(
        &keys.root,
        &key_label(&keys.vault_id, window_start, ttl),
        key.expose_secret(),
    )?;
    conn.insert_cvc_key(&NewCvcKey {
        window_start,
        ttl_secs: ttl,
        wrapped: &wrapped,
        created_at: now,
        destroy_at: window_start.saturating_add(ttl.saturating_mul(2)),
    })?;
    // Ours, or the one another writer stored first.
    let row = conn
        .cvc_key_for_window(window_start, ttl)?
        .ok_or_else(|| VaultError::internal("a stored CVC window key is not there"))?;
    open_key(keys, &row)
}

/// Seals and holds `cvc` for `(tenant, token)` inside the writer's transaction,
/// replacing a code it held; returns the code's deadline.
pub(crate) fn hold_in_tx(
    conn: &Tx<'_>,
    keys: &Keyring,
    tenant: &str,
    token: &str,
    cvc: &Cvc,
    now: i64,
    ttl: i64,
) -> Result<i64, VaultError> {
    let key = window_key(conn, keys, now, ttl)?;
    let mut nonce = [0u8; 12];
    rng::fill(&mut nonce)?;
    let sealed = key.seal(tenant, token, cvc, nonce)?;
    let deadline = now.saturating_add(ttl);
    conn.put_held_cvc(&NewHeldCvc {
        tenant,
        token,
        key_id: key.id(),
        nonce: &nonce,
        sealed: &sealed,
        created_at: now,
        deadline,
    })?;
    Ok(deadline)
}

/// Takes the code held for `(tenant, token)` inside the caller's writer
/// transaction: the row is deleted whatever follows, and the code is returned
/// only if its deadline and its key's have not passed. For a job that records
/// its own audit event in the same transaction (the relay).
pub(crate) fn take_in_tx(
    conn: &Tx<'_>,
    keys: &Keyring,
    tenant: &str,
    token: &str,
    now: i64,
) -> Result<Option<Cvc>, VaultError> {
    // Under a root replaced since this node loaded its keys (`master rotate`) the
    // window keys do not open: 503 until the node follows, and the code stays.
    keyring::ensure_root_current(conn, keys)?;
    let Some(row) = conn.take_held_cvc(tenant, token)? else {
        return Ok(None);
    };
    if row.deadline <= now {
        return Ok(None);
    }
    let Some(key_row) = conn.cvc_key(row.key_id)? else {
        return Ok(None);
    };
    if key_row.destroy_at <= now {
        return Ok(None);
    }
    let key = open_key(keys, &key_row)?;
    let cvc = key
        .open(tenant, token, &row.nonce, &row.sealed)
        .map_err(|_| VaultError::Decryption)?;
    Ok(Some(cvc))
}

/// Whether `(tenant, token)` holds a live code at `now`, and until when.
pub(crate) fn status(
    conn: &Reader<'_>,
    tenant: &str,
    token: &str,
    now: i64,
) -> Result<CvcStatus, VaultError> {
    match conn.held_cvc(tenant, token)? {
        Some(row) if row.deadline > now => CvcStatus::held_until(row.deadline),
        _ => Ok(CvcStatus::none()),
    }
}

impl Vault {
    /// How long a security code is held, when codes are accepted (a relay is
    /// configured); `None`: a request carrying one is refused.
    pub fn cvc_ttl(&self) -> Option<Duration> {
        self.inner.opts.cvc_ttl
    }

    /// The lifetime in whole seconds, 1 to [`MAX_CVC_TTL_SECS`].
    pub(crate) fn cvc_ttl_secs(&self) -> Option<i64> {
        self.cvc_ttl()
            .map(|d| d.as_secs().clamp(1, MAX_CVC_TTL_SECS))
            .and_then(|s| i64::try_from(s).ok())
    }

    /// Takes the security code held for `token` of `tenant`: returns it once and
    /// deletes it in the same transaction (through the writer, so two nodes or
    /// two requests never both get it); `None` when none is held, it passed its
    /// deadline, or its key was destroyed. Records no audit event itself: an
    /// operation that must audit the use takes the code inside its own event's
    /// transaction instead (`take_in_tx`, as the relay does).
    pub async fn take_cvc(&self, tenant: &str, token: &str) -> Result<Option<Cvc>, VaultError> {
        let Some(token) = Token::parse(token) else {
            return Ok(None);
        };
        let keys = self.keys()?;
        let tenant = tenant.to_owned();
        let now = self.now().unix_timestamp();
        self.write(move |conn, _| {
            match take_in_tx(conn, &keys, &tenant, token.as_str(), now) {
                Ok(c) => (true, Ok(c)),
                // The row was deleted before the failure: keep that.
                Err(e @ VaultError::Decryption) => (true, Err(e)),
                Err(e) => (false, Err(e)),
            }
        })
        .await
    }

    /// Whether `token` of `tenant` holds a security code, and until when.
    pub fn cvc_status(&self, tenant: &str, token: &str) -> Result<CvcStatus, VaultError> {
        let Some(token) = Token::parse(token) else {
            return Ok(CvcStatus::none());
        };
        let conn = self.inner.readers.get()?;
        status(&conn, tenant, token.as_str(), self.now().unix_timestamp())
    }

    /// Deletes every code past its deadline and destroys every window key whose
    /// codes have all expired, as one audited retention purge when anything
    /// went; then empties the WAL so the deleted rows' page copies go too (the
    /// database itself overwrites deleted content: `secure_delete`).
    pub async fn sweep_cvcs(&self, ctx: &AccessContext) -> Result<CvcSweepReport, VaultError> {
        let keys = self.keys()?;
        let ctx = ctx.clone();
        let now = self.now().unix_timestamp();
        let report = self
            .write(move |conn, state| {
                let swept = match conn.sweep_cvcs(now) {
                    Ok(s) => s,
                    Err(e) => return (false, Err(VaultError::Store(e))),
                };
                let report = CvcSweepReport {
                    codes: swept.codes,
                    keys: swept.keys,
                };
                if swept.codes + swept.keys == 0 {
                    return (true, Ok(report));
                }
                if let Err(e) = conn.mark_scrub_pending(now) {
                    return (false, Err(VaultError::Store(e)));
                }
                let details = format!("cvc_codes={} cvc_keys={}", swept.codes, swept.keys);
                let rec = AuditRecord {
                    action: AuditAction::RetentionPurge,
                    tenant: None,
                    token: None,
                    purpose: None,
                    subject: None,
                    outcome: AuditOutcome::Success,
                    details: Some(&details),
                };
                match state.record(conn, &keys, &ctx, &rec, now) {
                    Ok(_) => (true, Ok(report)),
                    Err(e) => (false, Err(e)),
                }
            })
            .await?;
        if report.codes + report.keys > 0 && self.is_postgres() {
            let v = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                v.inner.readers.get().and_then(|r| r.vacuum_cvcs())
            })
            .await;
        } else if report.codes + report.keys > 0 {
            let db = self.db_path().to_owned();
            let _ =
                tokio::task::spawn_blocking(move || store::scrub_wal(&db, Duration::from_secs(5)))
                    .await;
        }
        Ok(report)
    }
}
