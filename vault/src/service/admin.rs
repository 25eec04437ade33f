//! Administration without the server (the CLI): key rotation, online rewrap,
//! retirement and destruction, master-key rotation, passphrase change, reshare.
//!
//! The CLI opens the same database as a running server (WAL lets both work);
//! every change bumps the key epoch so the server reloads its keys within seconds,
//! and every operation records an audit event in the same transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Clock;
use super::audit_hook::{self, AuditAction};
use super::keyring::{self, Keyring, NewSeal, Unlock};
use super::request::AccessContext;
use super::shamir::ShareFile;
use crate::core::envelope::wrap_key;
use crate::core::kdf::KdfParams;
use crate::core::secret::{SecretKey32, SecretText};
use crate::error::VaultError;
use crate::store::{self, OpenTx, Session, StoreError, Tx};

mod keys;
pub use keys::{RewrapProgress, RewrapSummary};

/// Why `master rotate` refused on SQLite: the lock of the data directory is held.
const MASTER_ROTATE_REFUSED: &str = "a panvault server is serving this vault (or another \
     `master rotate` is running); stop it, run `panvault master rotate`, start it again";

/// Why an admin transaction refused: its root key was replaced since it opened.
const ROOT_REPLACED: &str = "the root key was replaced by a `panvault master rotate` since this \
     command opened the vault; nothing was changed: run it again";

/// How long `master rotate` waits by default for the serving nodes (PostgreSQL)
/// to follow the new root.
pub const MASTER_ROTATE_WAIT: Duration = Duration::from_secs(10);

/// The longest wait `master rotate` accepts: its successor row must be deleted
/// well before any node deletes it as past its time
/// ([`store::pg::SUCCESSOR_TTL_SECS`]).
pub const MASTER_ROTATE_MAX_WAIT: Duration = Duration::from_secs(20);

/// How often `master rotate` looks at which nodes followed.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Administrative access to an unsealed vault.
pub struct Admin {
    data_dir: std::path::PathBuf,
    conn: Session,
    keys: Keyring,
    clock: Clock,
    share_numbers: Vec<u8>,
    lock: Yielding,
    wal: store::WalBound,
    last_scrub: Option<bool>,
}

/// How an admin process shares the write lock with a running server (and with other
/// admin commands): every transaction stops taking rows after `budget` of work, and
/// after each commit the lock stays free for `gap`, long enough for a waiting
/// writer (which polls every 100–500 µs, see [`store::poll_for_locks`]) to take it.
/// A busy lock is waited for up to `wait`, with one notice.
#[derive(Debug)]
struct Yielding {
    budget: Duration,
    gap: Duration,
    wait: Duration,
    last_commit: Option<Instant>,
    warned: bool,
}

/// Work per admin transaction before it commits (a rewrap batch, a purge chunk).
const TX_BUDGET: Duration = Duration::from_millis(4);
/// Lock left free after each admin commit.
const YIELD_GAP: Duration = Duration::from_millis(4);
/// How long an admin command waits for a write lock another process holds.
pub const ADMIN_LOCK_WAIT: Duration = Duration::from_secs(60);
/// One attempt's wait inside SQLite's busy handler; the loop in [`begin`] retries.
const LOCK_ATTEMPT: Duration = Duration::from_secs(1);
/// How long an admin command retries truncating the WAL after deleting data.
const SCRUB_WAIT: Duration = Duration::from_secs(5);
/// Records a purge transaction deletes at most (each re-checked under the lock).
const PURGE_CHUNK: usize = 200;

/// Begins an IMMEDIATE transaction on `conn`, first leaving the lock free for the
/// rest of `y.gap` since the last commit, then waiting up to `y.wait` for it.
fn begin<'c>(conn: &'c Session, y: &mut Yielding) -> Result<OpenTx<'c>, VaultError> {
    if let Some(t) = y.last_commit {
        let since = t.elapsed();
        if since < y.gap {
            std::thread::sleep(y.gap - since);
        }
    }
    let (wait, warned) = (y.wait, &mut y.warned);
    Ok(conn.begin_immediate_waiting(wait, || {
        if !*warned {
            *warned = true;
            tracing::warn!(
                "waiting for the vault's write lock: another admin command or the server holds it (giving up after {} s)",
                wait.as_secs()
            );
        }
    })?)
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What `master rotate` re-wrapped under the new root key, and which serving
/// nodes followed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterRotation {
    /// Data keys (every version that still has key bytes).
    pub data_keys: u32,
    /// The other wrapped keys, by name (fingerprint, subject, audit signing…).
    pub other_keys: Vec<String>,
    /// The new root's public id (an HMAC of it; says nothing about the key).
    pub root_id: String,
    /// PostgreSQL: the serving nodes that hold the new root (empty on SQLite,
    /// where no server runs during the rotation).
    pub followed: Vec<String>,
    /// PostgreSQL: the serving nodes that did not acknowledge the new root within
    /// the wait. They refuse to tokenize (503) and wrap nothing under the old
    /// root; a restart unseals the new one.
    pub behind: Vec<String>,
    /// PostgreSQL: whether the successor row (the new root wrapped under the old
    /// one) was deleted when the wait ended; when not, the nodes delete it
    /// within [`store::pg::SUCCESSOR_TTL_SECS`].
    pub successor_deleted: bool,
}

impl Admin {
    /// Opens and unseals `data_dir` for administration.
    pub fn open(data_dir: &Path, unlock: &Unlock, clock: Clock) -> Result<Admin, VaultError> {
        let location = store::Location::of(data_dir)?;
        let db = match &location {
            store::Location::Sqlite(db) => {
                if !db.exists() {
                    return Err(VaultError::NotInitialized(data_dir.display().to_string()));
                }
                Some(db.clone())
            }
            store::Location::Postgres(_) => None,
        };
        // No full integrity scan here (it reads the whole file; `serve` does it at
        // start): admin commands must stay quick on a large vault.
        let mut conn = match Session::open_at(&location, false, None) {
            Err(StoreError::NoVault) => {
                return Err(VaultError::NotInitialized(location.to_string()));
            }
            other => other?,
        };
        conn.poll_for_locks(LOCK_ATTEMPT)?;
        if conn.is_postgres() {
            // A successor row left by a `master rotate` killed before it deleted
            // it goes now if past its time. Best effort: the nodes delete it too,
            // and a command reading from a read-only standby cannot.
            let swept = conn.begin().map_err(VaultError::from).and_then(|open| {
                open.tx().sweep_root_successors()?;
                Ok(open.commit()?)
            });
            if let Err(e) = swept {
                tracing::debug!(error = %e, "could not delete stale root successors");
            }
        }
        let vault_id = keyring::meta_get(&conn.reader(), "vault_id")?
            .ok_or_else(|| VaultError::Store(StoreError::Corrupt("no vault id".into())))?;
        let (root, _, share_numbers) = keyring::unseal_root(&conn.reader(), &vault_id, unlock)?;
        let keys = Keyring::load(&conn.reader(), &vault_id, root)?;
        Ok(Admin {
            data_dir: data_dir.to_owned(),
            conn,
            keys,
            clock,
            share_numbers,
            lock: Yielding {
                budget: TX_BUDGET,
                gap: YIELD_GAP,
                wait: ADMIN_LOCK_WAIT,
                last_commit: None,
                warned: false,
            },
            wal: store::WalBound::new(db.as_deref(), store::WAL_RESTART_FRAMES),
            last_scrub: None,
        })
    }

    /// How long to wait for a write lock another process holds (default 60 s).
    pub fn set_lock_wait(&mut self, wait: Duration) {
        self.lock.wait = wait;
    }

    /// Tuning of how batch jobs yield the write lock: work per transaction (default
    /// 4 ms) and the pause after each commit (default 4 ms).
    pub fn set_yield(&mut self, budget: Duration, gap: Duration) {
        self.lock.budget = budget;
        self.lock.gap = gap;
    }

    /// WAL frames past which batch jobs checkpoint and truncate the log (default
    /// ~64 MiB).
    pub fn set_wal_restart_frames(&mut self, frames: i64) {
        self.wal = store::WalBound::new(self.conn.path(), frames);
    }

    /// Whether the last command that deleted key or card data (`erase`, `retention
    /// run`, `keys destroy`, the `master` commands) truncated the WAL; `None` if none
    /// ran. When it could not (a reader held an old snapshot), the vault is marked
    /// and a running server truncates as soon as readers allow.
    pub fn wal_scrubbed(&self) -> Option<bool> {
        self.last_scrub
    }

    /// After a commit: the WAL is kept bounded, and the gap starts.
    fn committed(&mut self) {
        self.wal.after_commit(&mut self.conn);
        // After the checkpoint (which may wait for the lock): the gap is the time the
        // lock is left free for a waiting server.
        self.lock.last_commit = Some(Instant::now());
    }

    fn now(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    /// Whether the vault's data is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.conn.is_postgres()
    }

    /// Share numbers that unsealed this session (empty for a passphrase).
    pub fn share_numbers(&self) -> &[u8] {
        &self.share_numbers
    }

    fn reload(&mut self) -> Result<(), VaultError> {
        let root = SecretKey32::from_slice(self.keys.root.expose_secret())
            .ok_or(VaultError::internal("a root key is not 32 bytes"))?;
        self.keys = Keyring::load(&self.conn.reader(), &self.keys.vault_id, root)?;
        Ok(())
    }

    /// Runs `f` in an IMMEDIATE transaction that also records `action`.
    fn admin_tx<T>(
        &mut self,
        actor: &AccessContext,
        action: AuditAction,
        f: impl FnOnce(&Tx<'_>, &Keyring, i64) -> Result<(T, String), VaultError>,
    ) -> Result<T, VaultError> {
        let now = self.now();
        let open = begin(&self.conn, &mut self.lock)?;
        let tx = open.tx();
        // Every admin transaction may wrap or seal under the root this command
        // unsealed (a new data key, a new seal): never under one replaced since.
        if !keyring::root_is_current(&tx, &self.keys)? {
            return Err(VaultError::KeyState(ROOT_REPLACED.into()));
        }
        let (out, details) = f(&tx, &self.keys, now)?;
        let details = self.with_shares(details);
        audit_hook::record_admin(&tx, &self.keys, actor, action, Some(&details), now)?;
        drop(tx);
        open.commit()?;
        self.committed();
        Ok(out)
    }

    /// `details`, plus the share numbers that unsealed this session.
    fn with_shares(&self, details: String) -> String {
        if self.share_numbers.is_empty() {
            details
        } else {
            let nums: Vec<String> = self.share_numbers.iter().map(u8::to_string).collect();
            format!("{details} shares={}", nums.join(","))
        }
    }

    /// Refuses (with the reason) when `master rotate` could not run on `data_dir`
    /// now because a server holds it (SQLite): for a caller that wants to say so
    /// before asking for any secret. [`Admin::master_rotate`] checks again,
    /// holding the lock. Nodes on PostgreSQL hold no lock here: they follow.
    pub fn ensure_not_served(data_dir: &Path) -> Result<(), VaultError> {
        if store::Location::of(data_dir).is_ok_and(|l| l.is_postgres()) {
            return Ok(());
        }
        match store::lock_exclusive(data_dir) {
            Ok(Some(_probe)) => Ok(()),
            Ok(None) => Err(VaultError::KeyState(MASTER_ROTATE_REFUSED.into())),
            // No data directory or lock file yet: opening the vault says why.
            Err(_) => Ok(()),
        }
    }

    /// [`Admin::master_rotate_with`], waiting [`MASTER_ROTATE_WAIT`] for the nodes.
    pub fn master_rotate(
        &mut self,
        actor: &AccessContext,
        unlock: &Unlock,
    ) -> Result<MasterRotation, VaultError> {
        self.master_rotate_with(actor, unlock, MASTER_ROTATE_WAIT, |_| {})
    }

    /// Makes a new root key: every data, fingerprint, audit-signing and CVC window
    /// key is re-wrapped under it and the root is resealed under the same
    /// passphrase or share set (a new salt); the data keys themselves do not
    /// change. One transaction, with its audit event.
    ///
    /// SQLite: refused while a server (any open [`super::Vault`]) holds the data
    /// directory; holds its exclusive lock until it returns, so none starts
    /// meanwhile.
    ///
    /// PostgreSQL: runs while nodes serve. The same transaction stores the new
    /// root wrapped under the old one (the successor row, see
    /// `store::pg::presence`); after the commit this waits up to `wait` (at most
    /// [`MASTER_ROTATE_MAX_WAIT`]) until every serving node holds the new root,
    /// calling `progress` with the nodes present each time that changes, then
    /// deletes the successor: from then on nothing but the seal opens the new
    /// root. Nodes that did not follow are named in the result; they refuse to
    /// wrap anything until restarted.
    pub fn master_rotate_with(
        &mut self,
        actor: &AccessContext,
        unlock: &Unlock,
        wait: Duration,
        mut progress: impl FnMut(&[store::pg::NodeFollowing]),
    ) -> Result<MasterRotation, VaultError> {
        let pg = self.conn.is_postgres();
        let _exclusive = if pg {
            None
        } else {
            Some(
                store::lock_exclusive(&self.data_dir)
                    .map_err(|e| VaultError::io(&store::serve_lock_path(&self.data_dir), e))?
                    .ok_or_else(|| VaultError::KeyState(MASTER_ROTATE_REFUSED.into()))?,
            )
        };
        let new_root = SecretKey32::generate()?;
        let new_id = keyring::root_id(&self.keys.vault_id, &new_root);
        let old_id = self.keys.root_id.clone();
        let mut done = self.admin_tx(actor, AuditAction::MasterRotate, |tx, keys, now| {
            let vid = keys.vault_id.clone();
            let mut done = MasterRotation {
                root_id: new_id.clone(),
                ..MasterRotation::default()
            };
            // data keys
            let rows = tx.wrapped_data_key_bytes()?;
            for (version, wrapped) in rows {
                let label = keyring::dek_label(&vid, version);
                let key = crate::core::envelope::unwrap_key(&keys.root, &label, &wrapped)
                    .map_err(|_| VaultError::Decryption)?;
                let rewrapped = wrap_key(&new_root, &label, &key)?;
                tx.rewrap_data_key(version, &rewrapped)?;
                done.data_keys += 1;
            }
            let aux = tx.aux_keys()?;
            for (name, wrapped) in aux {
                let label = keyring::aux_label(&vid, &name);
                let key = crate::core::envelope::unwrap_key(&keys.root, &label, &wrapped)
                    .map_err(|_| VaultError::Decryption)?;
                let rewrapped = wrap_key(&new_root, &label, &key)?;
                tx.rewrap_aux_key(&name, &rewrapped)?;
                done.other_keys.push(name);
            }
            // The short-lived keys of held security codes. Writer batches wrap new
            // ones only after checking the root inside their transaction, which
            // cannot interleave with this one (the key lock), so none is left
            // under the old root.
            for k in tx.cvc_keys()? {
                let label = super::cvc::key_label(&vid, k.window_start, k.ttl_secs);
                let key = crate::core::envelope::unwrap_key(&keys.root, &label, &k.wrapped)
                    .map_err(|_| VaultError::Decryption)?;
                let rewrapped = wrap_key(&new_root, &label, &key)?;
                tx.rewrap_cvc_key(k.id, &rewrapped)?;
            }
            // Reseal the new root under the same secret: a fresh salt for a passphrase,
            // the same KEK for custodian shares (so the share set stays valid).
            let (info, _, _) = keyring::read_seal(tx)?;
            let generation = info.generation;
            let kek;
            let seal = match unlock {
                Unlock::Passphrase(p) => NewSeal::Passphrase(
                    p,
                    info.kdf.ok_or_else(|| {
                        store::StoreError::Corrupt(
                            "a passphrase seal without its KDF parameters".into(),
                        )
                    })?,
                ),
                Unlock::Shares(shares) => {
                    let (k, _) = super::shamir::combine(shares, &vid, generation)?;
                    kek = k;
                    let counts = info.shares.ok_or_else(|| {
                        store::StoreError::Corrupt(
                            "a custodian-share seal without its share counts".into(),
                        )
                    })?;
                    NewSeal::Kek(&kek, counts)
                }
            };
            keyring::write_seal(tx, &vid, &new_root, &seal, generation, now)?;
            keyring::meta_set(tx, keyring::ROOT_ID_META, &new_id)?;
            if pg {
                // The running nodes hold the old root: they reach the new one
                // through this row, for the few seconds it lives.
                tx.sweep_root_successors()?;
                let label = keyring::successor_label(&vid, &old_id, &new_id);
                let wrapped = wrap_key(&keys.root, &label, new_root.expose_secret())?;
                tx.put_root_successor(&old_id, &new_id, &wrapped)?;
            }
            keyring::bump_key_epoch(tx)?;
            let details = format!(
                "generation={generation} data_keys={} other_keys={} root_id={new_id}",
                done.data_keys,
                done.other_keys.join(",")
            );
            Ok((done, details))
        })?;
        self.keys = Keyring::load(&self.conn.reader(), &self.keys.vault_id.clone(), new_root)?;
        if pg {
            let (followed, behind) = self.await_followers(&new_id, wait, &mut progress);
            done.followed = followed;
            done.behind = behind;
            done.successor_deleted = self.end_succession(&old_id);
        }
        self.scrub_wal()?;
        Ok(done)
    }

    /// Waits up to `wait` (bounded) until every serving node holds the root
    /// `root_id`; returns (followed, behind). While the database cannot be
    /// asked, the last answer stands (none at all: one unnamed entry behind).
    fn await_followers(
        &self,
        root_id: &str,
        wait: Duration,
        progress: &mut impl FnMut(&[store::pg::NodeFollowing]),
    ) -> (Vec<String>, Vec<String>) {
        let wait = wait.min(MASTER_ROTATE_MAX_WAIT);
        let start = Instant::now();
        let mut last: Option<Vec<store::pg::NodeFollowing>> = None;
        loop {
            match self.conn.reader().root_followers(root_id) {
                Ok(nodes) => {
                    if last.as_ref() != Some(&nodes) {
                        progress(&nodes);
                    }
                    last = Some(nodes);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not ask the database which nodes followed the new root key");
                }
            }
            let all = last.as_ref().is_some_and(|n| n.iter().all(|n| n.follows));
            if all || start.elapsed() >= wait {
                break;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
        let Some(last) = last else {
            return (Vec::new(), vec!["(the database did not say)".to_owned()]);
        };
        let (followed, behind): (Vec<_>, Vec<_>) = last.into_iter().partition(|n| n.follows);
        (
            followed.into_iter().map(|n| n.node).collect(),
            behind.into_iter().map(|n| n.node).collect(),
        )
    }

    /// Deletes the successor of the root `old_id`: whether that worked (if not,
    /// the nodes delete it when it is past its time).
    fn end_succession(&mut self, old_id: &str) -> bool {
        let deleted = (|| -> Result<(), VaultError> {
            let open = begin(&self.conn, &mut self.lock)?;
            open.tx().delete_root_successor(old_id)?;
            open.commit()?;
            Ok(())
        })();
        match deleted {
            Ok(()) => {
                self.committed();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the root successor; the nodes delete it within {} s", store::pg::SUCCESSOR_TTL_SECS);
                false
            }
        }
    }

    /// Reseals the root key under a new passphrase (passphrase seals only).
    pub fn change_passphrase(
        &mut self,
        actor: &AccessContext,
        new: &SecretText,
        kdf: KdfParams,
    ) -> Result<(), VaultError> {
        self.admin_tx(
            actor,
            AuditAction::MasterChangePassphrase,
            |tx, keys, now| {
                let (info, _, _) = keyring::read_seal(tx)?;
                if info.method != "passphrase" {
                    return Err(VaultError::KeyState(
                        "this vault is sealed with custodian shares; use `master reshare`".into(),
                    ));
                }
                let generation = info.generation + 1;
                let root = SecretKey32::from_slice(keys.root.expose_secret())
                    .ok_or(VaultError::internal("a root key is not 32 bytes"))?;
                keyring::write_seal(
                    tx,
                    &keys.vault_id,
                    &root,
                    &NewSeal::Passphrase(new, kdf),
                    generation,
                    info.root_created_at,
                )?;
                let _ = now;
                Ok(((), format!("generation={generation}")))
            },
        )?;
        self.scrub_wal()
    }

    /// Issues a new share set (threshold `m` of `n`); every older share stops working.
    ///
    /// `persist` gets the new shares inside the transaction, before it commits: it
    /// must have stored them durably when it returns `Ok`. If it fails, nothing
    /// changes and the old shares still open the vault. If the commit fails after
    /// `persist` succeeded, the shares it stored do not open the vault: the caller
    /// removes them (the error is returned).
    pub fn reshare(
        &mut self,
        actor: &AccessContext,
        n: u8,
        m: u8,
        persist: impl FnOnce(&[ShareFile]) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        self.admin_tx(actor, AuditAction::MasterReshare, |tx, keys, _now| {
            let (info, _, _) = keyring::read_seal(tx)?;
            let generation = info.generation + 1;
            let root = SecretKey32::from_slice(keys.root.expose_secret())
                .ok_or(VaultError::internal("a root key is not 32 bytes"))?;
            let shares = keyring::write_seal(
                tx,
                &keys.vault_id,
                &root,
                &NewSeal::Shares(n, m),
                generation,
                info.root_created_at,
            )?;
            persist(&shares)?;
            Ok((
                (),
                format!("generation={generation} total={n} threshold={m}"),
            ))
        })?;
        // Committed: from here on the new shares are the only ones that open the
        // vault, so no later error may make the caller discard them.
        if let Err(e) = self.scrub_wal() {
            tracing::warn!(error = %e, "the WAL could not be truncated after the reshare; the replaced seal stays in it until the next checkpoint");
        }
        Ok(())
    }

    /// Checkpoints and truncates the WAL so deleted rows, replaced seals and wrapped
    /// keys leave no copy in it (secure_delete already zeroes freed pages in the
    /// database file), retrying for a few seconds while readers hold older
    /// snapshots. When it cannot, the vault stays marked (`meta.wal_scrub_pending`)
    /// and a running server's checkpointer truncates as soon as it can; the outcome
    /// is in [`Admin::wal_scrubbed`].
    fn scrub_wal(&mut self) -> Result<(), VaultError> {
        let now = self.now();
        let done = self.conn.scrub_wal(SCRUB_WAIT, now);
        self.conn.poll_for_locks(LOCK_ATTEMPT)?;
        self.last_scrub = Some(done?);
        Ok(())
    }

    /// Erases a data subject or a token in `tenant` (the CLI's `erase`).
    pub fn erase(
        &mut self,
        actor: &AccessContext,
        tenant: &str,
        target: &super::erase::EraseTarget,
    ) -> Result<super::erase::Erasure, VaultError> {
        if let Err(e) = super::erase::check_erase(tenant, target) {
            // A refused erasure is audited too.
            let token = super::erase::target_token(target);
            let details = super::erase::refusal_details(&e);
            let rec = super::erase::refused_erase_record(tenant, &e, token.as_ref(), &details);
            self.with_audit(|tx, audit, keys, now| {
                audit.record(tx, keys, actor, &rec, now.unix_timestamp())
            })?;
            return Err(e);
        }
        // The request is recorded as it arrives, in its own transaction: if the
        // erasure fails, it stays open (and overdue ones fail the compliance check).
        let request = self.with_audit(|tx, _, keys, now| {
            super::erase::open_request_in_tx(tx, keys, tenant, target, now.unix_timestamp())
        })?;
        let erased = self.with_audit(|tx, audit, keys, now| {
            super::erase::erase_in_tx(
                tx,
                audit,
                keys,
                actor,
                tenant,
                target,
                now.unix_timestamp(),
                // No dedup index in this process; a running server re-checks
                // its entries on their next hit.
                None,
                request,
            )
        });
        if let (Err(VaultError::NotFound), Some(id)) = (&erased, request) {
            // Nothing was held: the request is done.
            self.with_audit(|tx, _, _, now| {
                super::erase::close_empty_request(tx, id, now.unix_timestamp())
            })?;
        }
        let receipt = erased?;
        self.scrub_wal()?;
        let wal_scrubbed = self.last_scrub == Some(true);
        Ok(super::erase::Erasure {
            receipt,
            wal_scrubbed,
        })
    }

    /// Purges records past retention (the CLI's `retention run`). The candidates are
    /// found without the write lock; they are then deleted in short transactions
    /// (each re-checks its rows and records its own audit event with its counts), so
    /// a running server keeps writing meanwhile.
    pub fn purge_retention(
        &mut self,
        actor: &AccessContext,
        grace_days: i64,
        dry_run: bool,
    ) -> Result<super::erase::PurgeReport, VaultError> {
        if dry_run {
            return self.with_audit(|tx, audit, keys, now| {
                super::erase::purge_in_tx(tx, audit, keys, actor, grace_days, true, now, None)
            });
        }
        let ids = super::erase::purge_candidates(&self.conn.reader(), grace_days, (self.clock)())?;
        let mut report = super::erase::PurgeReport {
            deleted: true,
            ..Default::default()
        };
        let mut chunks: Vec<&[i64]> = ids.chunks(PURGE_CHUNK).collect();
        if chunks.is_empty() {
            // Nothing to delete: one event still records that the purge ran.
            chunks.push(&[]);
        }
        for chunk in chunks {
            let part = self.with_audit(|tx, audit, keys, now| {
                super::erase::purge_ids_in_tx(tx, audit, keys, actor, chunk, grace_days, now)
            })?;
            report.past_expiry += part.past_expiry;
            report.past_ttl += part.past_ttl;
            report.audit_seq = part.audit_seq;
        }
        if report.past_expiry + report.past_ttl > 0 {
            self.scrub_wal()?;
        }
        Ok(report)
    }

    /// Runs `f` in an IMMEDIATE transaction with the audit chain loaded; signs a
    /// checkpoint if due before committing.
    fn with_audit<T>(
        &mut self,
        f: impl FnOnce(
            &Tx<'_>,
            &mut super::audit_hook::AuditState,
            &Keyring,
            time::OffsetDateTime,
        ) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let now = (self.clock)();
        let open = begin(&self.conn, &mut self.lock)?;
        let tx = open.tx();
        let mut audit = super::audit_hook::AuditState::load(
            &tx,
            &self.keys,
            panvault_audit::log::CheckpointPolicy::default(),
        )?;
        let out = f(&tx, &mut audit, &self.keys, now)?;
        audit.checkpoint_if_due(&tx, false)?;
        drop(tx);
        open.commit()?;
        self.committed();
        Ok(out)
    }

    /// Signs an audit checkpoint covering every event committed so far and this
    /// command's own event (`audit checkpoint`); with `witness`, also appends it
    /// to that file. PostgreSQL signs a cluster checkpoint (every node's head).
    pub fn audit_checkpoint(
        &mut self,
        actor: &AccessContext,
        witness: Option<&Path>,
    ) -> Result<panvault_audit::log::SignedCheckpoint, VaultError> {
        let now = self.now();
        audit_hook::sign_checkpoint_now(&mut self.conn, &self.keys, actor, now, witness)
    }

    /// Deletes the audit events past `retention_days` (at least 365) through a
    /// signed checkpoint, with a signed prune record (`audit prune`; what the
    /// server's retention round does). PostgreSQL: every node's chain, once
    /// across the cluster, while the nodes serve.
    pub fn audit_prune(
        &mut self,
        actor: &AccessContext,
        retention_days: i64,
    ) -> Result<panvault_audit::log::Pruned, VaultError> {
        let now = (self.clock)();
        audit_hook::prune_now(&mut self.conn, &self.keys, actor, now, retention_days)
    }

    /// Records an admin action that has no data change of its own (e.g. `audit
    /// verify`, `audit export`, a compliance run) in the audit log.
    pub fn record(
        &mut self,
        actor: &AccessContext,
        action: AuditAction,
        details: &str,
    ) -> Result<(), VaultError> {
        let d = details.to_owned();
        self.admin_tx(actor, action, move |_tx, _keys, _now| Ok(((), d)))
    }
}
