//! The data-key operations of [`Admin`]: rotation, online re-encryption under the
//! active key, retirement and destruction.

use std::time::{Duration, Instant};

use super::{Admin, begin};
use crate::core::envelope::SealedRecord;
use crate::core::rng;
use crate::error::VaultError;
use crate::key_state::KeyState;
use crate::service::audit_hook::{self, AuditAction};
use crate::service::keyring::{self, Keyring};
use crate::service::request::AccessContext;
use crate::service::{KeyInfo, list_keys};
use crate::store::{self, Reader, SealedCard, StoreError, Tx, Upkeep};

/// Progress of a rewrap, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct RewrapProgress {
    /// Records re-encrypted so far in this run.
    pub done: u64,
    /// Records that were under an older key when the run started.
    pub total: u64,
}

/// What a rewrap did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewrapSummary {
    /// Records re-encrypted in this run.
    pub rewrapped: u64,
    /// The active version they are now under.
    pub active_version: u32,
    /// Seconds taken.
    pub seconds: f64,
    /// Records per second.
    pub rate: f64,
    /// Records still under older versions (0 unless interrupted).
    pub remaining: u64,
}

impl Admin {
    /// Lists the keys.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, VaultError> {
        list_keys(&self.conn.reader(), (self.clock)())
    }

    /// The active key's age in whole days.
    pub fn active_key_age_days(&self) -> Result<i64, VaultError> {
        let keys = self.list_keys()?;
        keys.iter()
            .find(|k| k.state == KeyState::Active)
            .map(|k| k.age_days)
            .ok_or_else(|| VaultError::KeyState("no active key".into()))
    }

    /// Makes a new active data key; the previous becomes decrypt-only. Returns the
    /// new version.
    pub fn rotate(&mut self, actor: &AccessContext) -> Result<u32, VaultError> {
        let next = self.admin_tx(actor, AuditAction::KeyRotate, |tx, keys, now| {
            let next = tx.next_key_version()?;
            tx.set_key_state_where(KeyState::Active, KeyState::DecryptOnly)?;
            keyring::insert_data_key(tx, &keys.vault_id, &keys.root, next, now)?;
            keyring::bump_key_epoch(tx)?;
            Ok((next, format!("new_version={next}")))
        })?;
        self.reload()?;
        Ok(next)
    }

    /// Records still under versions other than the active one.
    pub fn records_not_under_active(&self) -> Result<u64, VaultError> {
        let n = self.conn.reader().count_not_under(self.keys.active)?;
        Ok(store::count_u64(n)?)
    }

    /// Re-encrypts every record still under an older key with the active key, in
    /// transactions of at most `batch` records and a few milliseconds of work each
    /// (each with its audit event, and the write lock left free between them so a
    /// running server keeps writing), at most `max_rate` records/s if given.
    /// Follows the active key: a `keys rotate` committed meanwhile makes the next
    /// batch encrypt under the new key (and rewrap what the previous run wrote).
    /// Idempotent: a record already under the active version is skipped, so a
    /// killed run simply resumes. One run at a time: on PostgreSQL a second
    /// `keys rewrap` (from any host) is refused while one runs
    /// ([`StoreError::TaskRunning`]; the lock goes with the first one's connection,
    /// so a killed run leaves nothing held).
    pub fn rewrap(
        &mut self,
        actor: &AccessContext,
        batch: usize,
        max_rate: Option<f64>,
        progress: impl FnMut(RewrapProgress),
    ) -> Result<RewrapSummary, VaultError> {
        if !self.conn.try_task_lock(Upkeep::Rewrap)? {
            return Err(StoreError::TaskRunning("`keys rewrap`").into());
        }
        let r = self.rewrap_locked(actor, batch, max_rate, progress);
        // A failed unlock leaves the lock to the connection's close at exit.
        let _ = self.conn.task_unlock(Upkeep::Rewrap);
        r
    }

    fn rewrap_locked(
        &mut self,
        actor: &AccessContext,
        batch: usize,
        max_rate: Option<f64>,
        mut progress: impl FnMut(RewrapProgress),
    ) -> Result<RewrapSummary, VaultError> {
        let batch = batch.clamp(1, 100_000);
        let limit = i64::try_from(batch).unwrap_or(1000);
        let mut total = self.records_not_under_active()?;
        let start = Instant::now();
        let mut done: u64 = 0;
        loop {
            let now = self.now();
            let open = begin(&self.conn, &mut self.lock)?;
            let tx = open.tx();
            // Under the write lock no rotation can commit: if one did since the keys
            // were loaded, reload and encrypt under the new active key.
            if keyring::key_epoch(&tx)? != self.keys.epoch {
                drop(tx);
                drop(open);
                self.reload()?;
                total = done + self.records_not_under_active()?;
                continue;
            }
            let n = rewrap_batch(&tx, &self.keys, limit, self.lock.budget)?;
            if n == 0 {
                break;
            }
            let details = self.with_shares(format!(
                "batch rewrapped={n} to_version={}",
                self.keys.active
            ));
            audit_hook::record_admin(
                &tx,
                &self.keys,
                actor,
                AuditAction::KeyRewrap,
                Some(&details),
                now,
            )?;
            drop(tx);
            open.commit()?;
            self.committed();
            done += n;
            progress(RewrapProgress {
                done,
                total: total.max(done),
            });
            if let Some(rate) = max_rate.filter(|r| *r > 0.0) {
                #[allow(clippy::cast_precision_loss)]
                let ahead =
                    Duration::from_secs_f64(done as f64 / rate).saturating_sub(start.elapsed());
                std::thread::sleep(ahead);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        Ok(RewrapSummary {
            rewrapped: done,
            active_version: self.keys.active,
            seconds: secs,
            rate,
            remaining: self.records_not_under_active()?,
        })
    }

    /// Retires version `version`: refused while any record uses it, or while active.
    pub fn retire(&mut self, actor: &AccessContext, version: u32) -> Result<(), VaultError> {
        self.admin_tx(actor, AuditAction::KeyRetire, |tx, _keys, now| {
            let state = key_state(tx, version)?;
            match state {
                KeyState::Active => {
                    return Err(VaultError::KeyState(format!(
                        "v{version} is the active key; rotate first"
                    )));
                }
                KeyState::Retired | KeyState::Destroyed => {
                    return Err(VaultError::KeyState(format!(
                        "v{version} is already {state}"
                    )));
                }
                KeyState::DecryptOnly => {}
            }
            let used = tx.records_under(version)?;
            if used > 0 {
                return Err(VaultError::KeyState(format!(
                    "v{version} still encrypts {used} record(s); run `panvault keys rewrap` first"
                )));
            }
            tx.mark_key_retired(version, now)?;
            keyring::bump_key_epoch(tx)?;
            Ok(((), format!("version={version}")))
        })?;
        self.reload()
    }

    /// Destroys a retired key: its wrapped bytes are deleted (secure delete) and the
    /// row records when.
    pub fn destroy(&mut self, actor: &AccessContext, version: u32) -> Result<(), VaultError> {
        self.admin_tx(actor, AuditAction::KeyDestroy, |tx, _keys, now| {
            let state = key_state(tx, version)?;
            if state != KeyState::Retired {
                return Err(VaultError::KeyState(format!(
                    "v{version} is {state}; only retired keys can be destroyed"
                )));
            }
            let used = tx.records_under(version)?;
            if used > 0 {
                return Err(VaultError::KeyState(format!(
                    "v{version} still encrypts {used} record(s)"
                )));
            }
            tx.mark_key_destroyed(version, now)?;
            keyring::bump_key_epoch(tx)?;
            Ok(((), format!("version={version}")))
        })?;
        self.reload()?;
        self.scrub_wal()
    }
}

fn key_state(conn: &Reader<'_>, version: u32) -> Result<KeyState, VaultError> {
    conn.key_state(version)?
        .ok_or_else(|| VaultError::KeyState(format!("no key v{version}")))
}

/// Records a rewrap transaction reads and re-encrypts between two looks at the clock.
const REWRAP_CHUNK: i64 = 64;

/// Re-encrypts up to `limit` records not under the active key, stopping once
/// `budget` has been spent (after at least one chunk). Returns how many.
fn rewrap_batch(
    tx: &Tx<'_>,
    keys: &Keyring,
    limit: i64,
    budget: Duration,
) -> Result<u64, VaultError> {
    let started = Instant::now();
    let mut n: u64 = 0;
    loop {
        let done = i64::try_from(n)
            .map_err(|e| VaultError::internal_from("a re-encryption count overflowed", e))?;
        let left = limit.saturating_sub(done);
        if left <= 0 {
            break;
        }
        let k = rewrap_chunk(tx, keys, left.min(REWRAP_CHUNK))?;
        n += k;
        if k == 0 || started.elapsed() >= budget {
            break;
        }
    }
    let active = keys.active_key()?;
    if n > 0 {
        let n = i64::try_from(n)
            .map_err(|e| VaultError::internal_from("a re-encryption count overflowed", e))?;
        tx.add_encryptions(active.version(), n)?;
    }
    Ok(n)
}

/// Re-encrypts up to `limit` records not under the active key. Returns how many.
fn rewrap_chunk(tx: &Tx<'_>, keys: &Keyring, limit: i64) -> Result<u64, VaultError> {
    let active = keys.active_key()?;
    let rows = tx.sealed_not_under(active.version(), limit)?;
    let mut n: u64 = 0;
    for row in rows {
        let SealedCard {
            id,
            token,
            tenant,
            key_version: version,
            nonce,
            ciphertext,
        } = row;
        let old = keys.data.get(&version).ok_or_else(|| {
            VaultError::KeyState(format!(
                "record under v{version}, whose key is not available (destroyed?)"
            ))
        })?;
        let nonce: [u8; 12] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Decryption)?;
        let card = old
            .open(
                &tenant,
                &token,
                &SealedRecord {
                    key_version: version,
                    nonce,
                    ciphertext,
                },
            )
            .map_err(|_| VaultError::Decryption)?;
        let mut fresh = [0u8; 12];
        rng::fill(&mut fresh)?;
        let sealed = active.seal(&tenant, &token, &card, fresh)?;
        let changed = tx.rewrap_card(
            id,
            version,
            sealed.key_version,
            &sealed.nonce[..],
            &sealed.ciphertext,
        )?;
        if changed > 0 {
            crate::service::personal::rewrap(tx, keys, id, &tenant, &token)?;
        }
        n += u64::try_from(changed)
            .map_err(|e| VaultError::internal_from("a change count overflowed", e))?;
    }
    Ok(n)
}
