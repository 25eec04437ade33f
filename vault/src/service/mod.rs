//! The vault service: the operations the HTTP API and the CLI call.
//!
//! Writes (tokenize, delete, key changes) become jobs for the single writer and are
//! answered only after their transaction has committed. Reads go through the read
//! pool. Every operation records an audit event through the writer; detokenize
//! releases the card only after its event has committed.

mod admin;
mod audit_hook;
pub mod erase;
pub mod inventory;
pub mod keyring;
pub mod request;
pub mod shamir;
mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rusqlite::Connection;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

use crate::core::envelope::SealedRecord;
use crate::core::kdf::{FINGERPRINT_LEN, KdfParams};
use crate::core::pan::Expiry;
use crate::core::rng;
use crate::core::secret::SecretKey32;
use crate::core::token::{Token, TokenFormat};
use crate::error::VaultError;
use crate::key_state::KeyState;
use crate::store::cards::{CardRow, Inserted, NewCard};
use crate::store::{self, JobOutcome, ReadPool, StoreError, Writer, WriterConfig};
pub use admin::{Admin, MasterRotation, RewrapProgress, RewrapSummary};
pub use audit_hook::{AuditAction, AuditOutcome, AuditRecord, append_admin_event, card_code};
pub use erase::{EraseTarget, Erasure, PurgeReport};
use keyring::{Keyring, SealSpec, Unlock};
use request::{AccessContext, CardFacts, Detokenized, TokenInfo, TokenizeRequest};
pub use state::VaultState;

/// A source of "now" (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// How to open a vault.
#[derive(Clone)]
pub struct VaultOptions {
    /// Now.
    pub clock: Clock,
    /// Writer tuning.
    pub writer: WriterConfig,
    /// Read connections kept idle.
    pub read_pool: usize,
    /// How long a caller waits for the writer before answering 503.
    pub write_timeout: Duration,
    /// When the writer signs audit checkpoints.
    pub checkpoint: panvault_audit::log::CheckpointPolicy,
    /// A file outside the data directory that every signed checkpoint is
    /// appended to (`[audit] checkpoint_witness`).
    pub checkpoint_witness: Option<PathBuf>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            clock: system_clock(),
            writer: WriterConfig::default(),
            read_pool: 8,
            write_timeout: Duration::from_secs(10),
            checkpoint: panvault_audit::log::CheckpointPolicy::default(),
            checkpoint_witness: None,
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("writer", &self.writer)
            .field("read_pool", &self.read_pool)
            .finish_non_exhaustive()
    }
}

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

struct Inner {
    data_dir: PathBuf,
    db: PathBuf,
    keys: RwLock<Arc<Keyring>>,
    /// A reload of changed keys failed: the keys above may be stale, so nothing is
    /// sealed until a reload succeeds.
    keys_stale: AtomicBool,
    /// Set by the writer when it refused to seal under a key that is no longer
    /// active in the database: the next tokenize or refresh reloads the keys.
    reload_wanted: Arc<AtomicBool>,
    /// The shared lock on the data directory, held while this vault is open, so
    /// that `master rotate` cannot replace the root key under it.
    _serve_lock: store::DirLock,
    writer: Writer<VaultState>,
    readers: ReadPool,
    opts: VaultOptions,
    /// Card rows, kept by the writer (see `DedupIndex`).
    tokens_stored: Arc<std::sync::atomic::AtomicI64>,
}

/// An open, unsealed vault. Cheap to clone (shared).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

/// `t` (Unix seconds, as stored in `column`) in RFC 3339. A value that is no
/// representable time is a corrupted row, never an empty string.
pub(crate) fn rfc3339(column: &'static str, t: i64) -> Result<String, VaultError> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .ok_or_else(|| corrupt_column(column))
}

/// A stored value the vault never writes: the error names the column, never the
/// value (a corrupted row may hold anything, even a card number).
pub(crate) fn corrupt_column(column: &'static str) -> VaultError {
    VaultError::Store(StoreError::Corrupt(format!(
        "{column} holds a value the vault never writes"
    )))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn store_err(e: rusqlite::Error) -> VaultError {
    VaultError::Store(e.into())
}

/// Creates the data directory (mode 0700) if needed.
fn create_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::create_dir_all(dir).map_err(|e| VaultError::io(dir, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| VaultError::io(dir, &e))?;
    }
    Ok(())
}

/// Facts about a freshly made vault.
#[derive(Debug)]
pub struct InitReport {
    /// Random id of the vault, bound into every wrapped key.
    pub vault_id: String,
    /// Where the audit public key was written.
    pub audit_pubkey_path: PathBuf,
    /// Custodian shares to hand out (share seals only); write each to its own file.
    pub shares: Vec<shamir::ShareFile>,
}

impl Vault {
    /// Creates a new vault in `data_dir`: a root key sealed per `seal`, data key v1,
    /// a fingerprint key and an audit-signing key. Refuses an existing vault.
    pub fn init(data_dir: &Path, seal: &SealSpec, clock: &Clock) -> Result<InitReport, VaultError> {
        let ctx = AccessContext {
            actor: "admin:init".into(),
            ..Default::default()
        };
        Vault::init_as(data_dir, seal, clock, &ctx)
    }

    /// [`Vault::init`], recording `actor` in the audit log's first event.
    pub fn init_as(
        data_dir: &Path,
        seal: &SealSpec,
        clock: &Clock,
        actor: &AccessContext,
    ) -> Result<InitReport, VaultError> {
        Vault::init_with(data_dir, seal, clock, actor, |_| Ok(()))
    }

    /// [`Vault::init_as`], handing the custodian shares (share seals) to `persist`
    /// before the vault is committed: `persist` must have stored them durably when
    /// it returns `Ok`. On any failure, `persist`'s included, no vault is left
    /// behind (the database file this call made is removed), so nothing is locked
    /// away under shares nobody holds and `init` can simply run again.
    pub fn init_with(
        data_dir: &Path,
        seal: &SealSpec,
        clock: &Clock,
        actor: &AccessContext,
        persist: impl FnOnce(&[shamir::ShareFile]) -> Result<(), VaultError>,
    ) -> Result<InitReport, VaultError> {
        let db = store::db_path(data_dir);
        if db.exists() {
            return Err(VaultError::AlreadyInitialized(db.display().to_string()));
        }
        create_dir(data_dir)?;
        let made = Vault::init_in(data_dir, &db, seal, clock, actor, persist);
        if made.is_err() {
            // Only files this call created: `db` did not exist before.
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = db.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        made
    }

    fn init_in(
        data_dir: &Path,
        db: &Path,
        seal: &SealSpec,
        clock: &Clock,
        actor: &AccessContext,
        persist: impl FnOnce(&[shamir::ShareFile]) -> Result<(), VaultError>,
    ) -> Result<InitReport, VaultError> {
        let mut conn = store::open_writer(db, true)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600));
        }
        let now = clock().unix_timestamp();
        let mut id = [0u8; 16];
        rng::fill(&mut id)?;
        let vault_id = hex(&id);
        let root = SecretKey32::generate()?;
        let fp = SecretKey32::generate()?;
        let audit_pkcs8 = audit_hook::generate_signing_key()?;
        let tx = conn.transaction().map_err(store_err)?;
        keyring::meta_set(&tx, "vault_id", &vault_id)?;
        keyring::meta_set(&tx, "key_epoch", "1")?;
        let new_seal = match (&seal.shares, &seal.unlock) {
            (Some((n, m)), _) => keyring::NewSeal::Shares(*n, *m),
            (None, Unlock::Passphrase(p)) => keyring::NewSeal::Passphrase(p, seal.kdf),
            (None, Unlock::Shares(_)) => {
                return Err(VaultError::invalid(
                    "seal",
                    "a new vault takes a passphrase or a share count",
                ));
            }
        };
        let shares = keyring::write_seal(&tx, &vault_id, &root, &new_seal, 1, now)?;
        keyring::insert_data_key(&tx, &vault_id, &root, 1, now)?;
        keyring::insert_aux_key(
            &tx,
            &vault_id,
            &root,
            "fingerprint",
            fp.expose_secret(),
            now,
        )?;
        keyring::insert_aux_key(&tx, &vault_id, &root, "audit-signing", &audit_pkcs8, now)?;
        audit_hook::init_tables(&tx)?;
        let ring = Keyring::load(
            &tx,
            &vault_id,
            SecretKey32::from_slice(root.expose_secret()).ok_or(VaultError::Crypto)?,
        )?;
        let details = match seal.shares {
            Some((n, m)) => format!("vault_id={vault_id} seal=shamir total={n} threshold={m}"),
            None => format!("vault_id={vault_id} seal=passphrase"),
        };
        audit_hook::record_admin(&tx, &ring, actor, AuditAction::Init, Some(&details), now)?;
        persist(&shares)?;
        tx.commit().map_err(store_err)?;
        let audit_pubkey_path = audit_hook::write_public_key(data_dir, &audit_pkcs8)?;
        Ok(InitReport {
            vault_id,
            audit_pubkey_path,
            shares,
        })
    }

    /// Opens and unseals the vault in `data_dir`.
    pub fn open(data_dir: &Path, unlock: &Unlock) -> Result<Vault, VaultError> {
        Vault::open_with(data_dir, unlock, VaultOptions::default())
    }

    /// Opens with options. The open vault holds a shared lock on the data
    /// directory (`DATA/serve.lock`) until it is dropped: `master rotate` refuses
    /// to run meanwhile, and this refuses to open while one runs.
    pub fn open_with(
        data_dir: &Path,
        unlock: &Unlock,
        opts: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let db = store::db_path(data_dir);
        if !db.exists() {
            return Err(VaultError::NotInitialized(data_dir.display().to_string()));
        }
        let serve_lock = store::lock_shared(data_dir)
            .map_err(|e| VaultError::io(&store::serve_lock_path(data_dir), &e))?
            .ok_or_else(|| {
                VaultError::KeyState(
                    "a `panvault master rotate` is replacing the root key of this vault; \
                     start again when it has finished"
                        .into(),
                )
            })?;
        let conn = store::open_writer(&db, false)?;
        store::check_integrity(&conn)?;
        let vault_id = keyring::meta_get(&conn, "vault_id")?
            .ok_or_else(|| VaultError::Store(StoreError::Corrupt("no vault id".into())))?;
        let (root, _info, _shares) = keyring::unseal_root(&conn, &vault_id, unlock)?;
        let ring = Keyring::load(&conn, &vault_id, root)?;
        let state = VaultState::load(
            &conn,
            &ring,
            opts.checkpoint,
            opts.checkpoint_witness.clone(),
        )?;
        let reload_wanted = state.reload_wanted();
        let tokens_stored = state.dedup.stored();
        let writer = Writer::start(conn, state, db.clone(), opts.writer.clone())?;
        let readers = ReadPool::new(db.clone(), opts.read_pool);
        Ok(Vault {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                db,
                keys: RwLock::new(Arc::new(ring)),
                keys_stale: AtomicBool::new(false),
                reload_wanted,
                _serve_lock: serve_lock,
                writer,
                readers,
                opts,
                tokens_stored,
            }),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    fn keys(&self) -> Result<Arc<Keyring>, VaultError> {
        self.inner
            .keys
            .read()
            .map(|k| Arc::clone(&k))
            .map_err(|_| VaultError::KeyState("key lock poisoned".into()))
    }

    fn now(&self) -> OffsetDateTime {
        (self.inner.opts.clock)()
    }

    /// Today's date (for expiry checks).
    pub fn today(&self) -> time::Date {
        self.now().date()
    }

    /// Runs `job` on the writer and waits (bounded) for its answer.
    async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection, &mut VaultState) -> (bool, Result<T, VaultError>) + Send + 'static,
    ) -> Result<T, VaultError> {
        let (tx, rx) = oneshot::channel::<Result<T, VaultError>>();
        self.inner.writer.submit(Box::new(move |conn, state| {
            let (keep, result) = job(conn, state);
            JobOutcome {
                keep,
                completion: Box::new(move |committed| {
                    let answer = match committed {
                        Ok(()) => result,
                        // The batch did not commit: storage trouble (disk full,
                        // read-only, locked) is `unavailable`; operations that exist
                        // only to be audited turn it into `audit_unavailable` themselves.
                        Err(e) => Err(VaultError::Store(e)),
                    };
                    let _ = tx.send(answer);
                }),
            }
        }))?;
        match tokio::time::timeout(self.inner.opts.write_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(VaultError::Store(StoreError::Unavailable(
                "writer dropped the job",
            ))),
            Err(_) => Err(VaultError::Store(StoreError::Unavailable(
                "writer did not answer in time",
            ))),
        }
    }

    /// Tokenizes a card in `tenant`: the existing token if this tenant already holds
    /// the card (unless `force_new`), else a new sealed record. Answered only once
    /// durable.
    pub async fn tokenize(
        &self,
        tenant: &str,
        req: TokenizeRequest,
        ctx: &AccessContext,
    ) -> Result<TokenInfo, VaultError> {
        let mut out = self.tokenize_batch(tenant, vec![Ok(req)], ctx).await?;
        out.pop().unwrap_or(Err(VaultError::Crypto))
    }

    /// Tokenizes many cards in one writer job; results in order. Items are
    /// independent: one bad card fails only its own slot. The outer error is for
    /// the whole batch (storage or audit unavailable).
    pub async fn tokenize_batch(
        &self,
        tenant: &str,
        items: Vec<Result<TokenizeRequest, VaultError>>,
        ctx: &AccessContext,
    ) -> Result<Vec<Result<TokenInfo, VaultError>>, VaultError> {
        validate_tenant(tenant)?;
        if self.inner.reload_wanted.swap(false, Ordering::SeqCst) {
            // The writer found our active key behind the database's: load the
            // keys now, whatever the epoch says.
            let _ = self.reload_keys(true);
        }
        let keys = self.keys()?;
        // Keys that could not be reloaded after a change: refuse every item (each is
        // still audited, as a failure) rather than seal under what may be stale.
        let stale = self.inner.keys_stale.load(Ordering::SeqCst);
        let now = self.now().unix_timestamp();
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            prepared.push(item.and_then(|req| {
                if stale {
                    return Err(VaultError::KeysOutOfDate);
                }
                let fp = keys.fingerprint(tenant, req.card.pan.expose_digits())?;
                let expires_at = match (
                    req.ttl_seconds.map(|t| now.saturating_add(t)),
                    req.expires_at,
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if expires_at.is_some_and(|e| e <= now) {
                    return Err(VaultError::invalid("expires_at", "must be in the future"));
                }
                let metadata = match &req.metadata {
                    Some(m) => Some(
                        serde_json::to_string(m)
                            .map_err(|_| VaultError::invalid("metadata", "not serializable"))?,
                    ),
                    None => None,
                };
                Ok((req, fp, metadata, expires_at))
            }));
        }
        let tenant = tenant.to_owned();
        let ctx = ctx.clone();
        let out = self
            .write(move |conn, state| {
                let mut results = Vec::with_capacity(prepared.len());
                for item in prepared {
                    let (result, subject) = match item {
                        Ok((req, fp, metadata, expires_at)) => (
                            tokenize_in_tx(
                                conn,
                                state,
                                &keys,
                                &tenant,
                                &req,
                                &fp,
                                metadata.as_deref(),
                                expires_at,
                                now,
                            ),
                            req.subject,
                        ),
                        Err(e) => (Err(e), None),
                    };
                    // A dedup hit that changed the stored record says what it changed.
                    let details = match &result {
                        Ok(i) if !i.updated.is_empty() => {
                            Some(format!("updated={}", i.updated.join(",")))
                        }
                        _ => None,
                    };
                    let rec = AuditRecord {
                        action: AuditAction::Tokenize,
                        tenant: Some(&tenant),
                        token: result.as_ref().ok().map(|i| i.token.as_str()),
                        purpose: None,
                        subject: subject.as_deref(),
                        outcome: match &result {
                            Ok(_) => AuditOutcome::Success,
                            Err(e) => AuditOutcome::from_error(e),
                        },
                        details: details.as_deref(),
                    };
                    if let Err(e) = state.record(conn, &keys, &ctx, &rec, now) {
                        return (false, Err(e));
                    }
                    results.push(result);
                }
                (true, Ok(results))
            })
            .await;
        if self.inner.reload_wanted.swap(false, Ordering::SeqCst) {
            // The writer sealed under keys newer than ours: take them before
            // answering, so what the caller sees next (metrics, reads) agrees.
            let _ = self.reload_keys(true);
        }
        out
    }

    /// Reads one row of `tenant` (any other tenant's token is not found).
    fn read_row(&self, tenant: &str, token: &str) -> Result<CardRow, VaultError> {
        let Some(token) = Token::parse(token) else {
            return Err(VaultError::NotFound);
        };
        let conn = self.inner.readers.get()?;
        // By token and tenant: a bin_last4 token is unique within its tenant only.
        let row = store::cards::by_token(&conn, token.as_str(), tenant)?;
        match row {
            Some(r)
                if r.tenant == tenant
                    && r.expires_at.is_none_or(|e| e > self.now().unix_timestamp()) =>
            {
                Ok(r)
            }
            _ => Err(VaultError::NotFound),
        }
    }

    /// The stored facts of a token (never the number).
    pub async fn metadata(
        &self,
        tenant: &str,
        token: &str,
        ctx: &AccessContext,
    ) -> Result<TokenInfo, VaultError> {
        let result = self.read_row(tenant, token).and_then(|r| r.info(false));
        self.audit_only(AuditAction::Read, tenant, token, None, &result, ctx)
            .await?;
        result
    }

    /// Decrypts a token's card for `tenant`. The card is released only after the
    /// audit event of this access has committed; if it cannot be, the card is
    /// dropped (zeroized) and the call fails with [`VaultError::AuditUnavailable`].
    pub async fn detokenize(
        &self,
        tenant: &str,
        token: &str,
        purpose: &str,
        ctx: &AccessContext,
    ) -> Result<Detokenized, VaultError> {
        if purpose.trim().is_empty()
            || purpose.chars().count() > 256
            || purpose.chars().any(char::is_control)
        {
            return Err(VaultError::invalid(
                "purpose",
                "required: 1 to 256 printable characters",
            ));
        }
        if request::contains_card_number(purpose) {
            return Err(VaultError::invalid(
                "purpose",
                "must not contain a card number",
            ));
        }
        let mut row_id = None;
        let result = self.read_row(tenant, token).and_then(|mut row| {
            row_id = Some(row.id);
            let mut keys = self.keys()?;
            if !keys.data.contains_key(&row.key_version) {
                // A key made by another process (rotate, then rewrap) since our last
                // refresh: reload once rather than fail.
                self.refresh_keys()?;
                keys = self.keys()?;
            }
            let key = keys
                .data
                .get(&row.key_version)
                .ok_or(VaultError::Decryption)?;
            let nonce: [u8; 12] = row
                .nonce
                .as_slice()
                .try_into()
                .map_err(|_| VaultError::Decryption)?;
            let sealed = SealedRecord {
                key_version: row.key_version,
                nonce,
                ciphertext: std::mem::take(&mut row.ciphertext),
            };
            let card = key
                .open(tenant, &row.token, &sealed)
                .map_err(|_| VaultError::Decryption)?;
            let expiry =
                Expiry::from_stored(row.exp_month, row.exp_year).ok_or(VaultError::Decryption)?;
            Ok(Detokenized {
                token: row.token.clone(),
                card,
                expiry,
            })
        });
        match (result, row_id) {
            (Ok(card), Some(id)) => {
                // The row was read before this event's transaction: an erasure or
                // delete committed in between must win, so the writer looks again.
                self.audit_release(tenant, id, &card.token, purpose, ctx)
                    .await?;
                Ok(card)
            }
            (result, _) => {
                self.audit_only(
                    AuditAction::Detokenize,
                    tenant,
                    token,
                    Some(purpose),
                    &result,
                    ctx,
                )
                .await?;
                result
            }
        }
    }

    /// Records the event of a successful detokenize of row `id`, inside a writer
    /// transaction that first checks the row is still there (same token and
    /// tenant, not expired). If it is gone (erased, deleted or expired since it
    /// was read) the event says `not_found` and so does the answer: the caller
    /// drops the card, which zeroizes it. One lookup by rowid in the writer.
    async fn audit_release(
        &self,
        tenant: &str,
        id: i64,
        token: &str,
        purpose: &str,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let now = self.now().unix_timestamp();
        let rec = AuditRecord {
            action: AuditAction::Detokenize,
            tenant: Some(tenant),
            token: Some(token),
            purpose: Some(purpose),
            subject: None,
            outcome: AuditOutcome::Success,
            details: None,
        };
        // Built here, off the writer thread; the rare refusal is built there.
        let ev = audit_hook::build_event(&keys, ctx, &rec, now)?;
        let (tenant_s, token_s, purpose_s, ctx) = (
            tenant.to_owned(),
            token.to_owned(),
            purpose.to_owned(),
            ctx.clone(),
        );
        let still_held = self
            .write(move |conn, state| {
                let alive = store::cards::is_live(conn, id, &token_s, &tenant_s, now)
                    .map_err(VaultError::Store);
                let appended = match alive {
                    Ok(true) => state.audit_mut().append(conn, &ev).map(|_| true),
                    Ok(false) => {
                        let gone = AuditRecord {
                            action: AuditAction::Detokenize,
                            tenant: Some(&tenant_s),
                            token: Some(&token_s),
                            purpose: Some(&purpose_s),
                            subject: None,
                            outcome: AuditOutcome::from_error(&VaultError::NotFound),
                            details: None,
                        };
                        state.record(conn, &keys, &ctx, &gone, now).map(|_| false)
                    }
                    Err(e) => Err(e),
                };
                match appended {
                    Ok(held) => (true, Ok(held)),
                    Err(e) => (false, Err(e)),
                }
            })
            .await
            .map_err(audit_unavailable)?;
        if still_held {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// Deletes a token of `tenant`.
    pub async fn delete(
        &self,
        tenant: &str,
        token: &str,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let tenant = tenant.to_owned();
        let token_s = token.to_owned();
        let ctx = ctx.clone();
        let now = self.now().unix_timestamp();
        self.write(move |conn, state| {
            let parsed = Token::parse(&token_s);
            let result = match &parsed {
                None => Err(VaultError::NotFound),
                Some(t) => erase::note_deleted(
                    store::erasure::delete_live_token(conn, &tenant, t.as_str(), now),
                    Some(&mut state.dedup),
                )
                .and_then(|n| {
                    if n == 0 {
                        Err(VaultError::NotFound)
                    } else {
                        Ok(())
                    }
                }),
            };
            let rec = AuditRecord {
                action: AuditAction::Delete,
                tenant: Some(&tenant),
                token: parsed.as_ref().map(Token::as_str),
                purpose: None,
                subject: None,
                outcome: match &result {
                    Ok(()) => AuditOutcome::Success,
                    Err(e) => AuditOutcome::from_error(e),
                },
                details: None,
            };
            // A refused delete changed nothing; its event is still recorded.
            match state.record(conn, &keys, &ctx, &rec, now) {
                Ok(_) => (true, result),
                Err(e) => (false, Err(e)),
            }
        })
        .await
    }

    /// Records an event for a read-only operation and waits until it is durable.
    async fn audit_only<T>(
        &self,
        action: AuditAction,
        tenant: &str,
        token: &str,
        purpose: Option<&str>,
        result: &Result<T, VaultError>,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let outcome = match result {
            Ok(_) => AuditOutcome::Success,
            Err(e) => AuditOutcome::from_error(e),
        };
        let token = Token::parse(token);
        let rec = AuditRecord {
            action,
            tenant: Some(tenant),
            token: token.as_ref().map(Token::as_str),
            purpose,
            subject: None,
            outcome,
            details: None,
        };
        self.append_event(ctx, &rec).await.map(|_| ())
    }

    /// Records an event that is not part of a data operation: a request refused
    /// before reaching one (authentication, authorization, validation), the
    /// server starting or stopping. Waits until it is durable.
    pub async fn record_event(
        &self,
        ctx: &AccessContext,
        action: AuditAction,
        tenant: Option<&str>,
        token: Option<&str>,
        outcome: AuditOutcome,
        details: Option<&str>,
    ) -> Result<u64, VaultError> {
        let token = token.and_then(Token::parse);
        let rec = AuditRecord {
            action,
            tenant,
            token: token.as_ref().map(Token::as_str),
            purpose: None,
            subject: None,
            outcome,
            details,
        };
        self.append_event(ctx, &rec).await
    }

    /// Appends the event of `rec` on its own and waits until it is durable; a
    /// failure is [`VaultError::AuditUnavailable`]. The event is built here, on the
    /// caller's thread: the writer only chains and inserts it.
    async fn append_event(
        &self,
        ctx: &AccessContext,
        rec: &AuditRecord<'_>,
    ) -> Result<u64, VaultError> {
        let keys = self.keys()?;
        let ev = audit_hook::build_event(&keys, ctx, rec, self.now().unix_timestamp())?;
        self.write(
            move |conn, state| match state.audit_mut().append(conn, &ev) {
                Ok(seq) => (true, Ok(seq)),
                Err(e) => (false, Err(e)),
            },
        )
        .await
        .map_err(audit_unavailable)
    }

    /// Cards the in-memory dedup index remembers (one per live card and tenant; a
    /// deleted, erased or purged card is forgotten once its batch commits). For
    /// tests and diagnostics: asks the writer thread.
    #[doc(hidden)]
    pub async fn dedup_entries(&self) -> Result<usize, VaultError> {
        self.write(|_, state| (true, Ok(state.dedup.len()))).await
    }

    /// Number of tokens stored.
    pub fn token_count(&self) -> Result<i64, VaultError> {
        let conn = self.inner.readers.get()?;
        Ok(store::cards::count(&conn)?)
    }

    /// Tokens stored, from the running count the writer keeps (counted once at
    /// open; no query). Deletions made by another process (the CLI's `erase`,
    /// `retention run`) show only after a restart.
    pub fn tokens_stored(&self) -> i64 {
        self.inner
            .tokens_stored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

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
    fn reload_keys(&self, force: bool) -> Result<bool, VaultError> {
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
        let root =
            SecretKey32::from_slice(current.root.expose_secret()).ok_or(VaultError::Crypto)?;
        let fresh = Keyring::load(&conn, &current.vault_id, root)?;
        let mut guard = self
            .inner
            .keys
            .write()
            .map_err(|_| VaultError::KeyState("key lock poisoned".into()))?;
        *guard = Arc::new(fresh);
        Ok(true)
    }

    /// Stops the writer after the jobs already queued.
    pub fn shutdown(&self) {
        self.inner.writer.shutdown();
    }

    /// The database path.
    pub fn db_path(&self) -> &Path {
        &self.inner.db
    }
}

/// For an operation that exists to leave an audit trace: storage that cannot take
/// the event is `audit_unavailable` (the access is refused, fail closed).
fn audit_unavailable(e: VaultError) -> VaultError {
    if e.is_unavailable() {
        VaultError::AuditUnavailable
    } else {
        e
    }
}

/// A tenant name: 1–64 of `[A-Za-z0-9._-]`.
pub fn validate_tenant(tenant: &str) -> Result<(), VaultError> {
    if tenant.is_empty()
        || tenant.len() > 64
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(VaultError::invalid(
            "tenant",
            "1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn tokenize_in_tx(
    conn: &Connection,
    state: &mut VaultState,
    keys: &Keyring,
    tenant: &str,
    req: &TokenizeRequest,
    fp: &[u8; FINGERPRINT_LEN],
    metadata: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<TokenInfo, VaultError> {
    // A hit is the same card for the same subject: another customer of the tenant
    // holding this card gets a token of their own, which only their erasure removes.
    let subject = state.dedup.tag(req.subject.as_deref());
    if !req.force_new
        && let Some(id) = state.dedup.get(fp, subject)
    {
        let found =
            store::cards::live_dedup_row(conn, id, &fp[..], tenant, req.subject.as_deref(), now)?;
        match found {
            Some(row) => {
                return update_on_hit(conn, state, keys, tenant, req, row, metadata, expires_at);
            }
            None => state.dedup.remove(fp, subject),
        }
    }
    // Formatted before anything is written: a time that cannot be shown is refused
    // rather than stored.
    let created_at = rfc3339("cards.created_at", now)?;
    let expires_at_text = expires_at
        .map(|e| rfc3339("cards.expires_at", e))
        .transpose()?;
    let fresh = state.sealing_keyring(conn, keys)?;
    let key = fresh.as_deref().unwrap_or(keys).active_key()?;
    let pan = &req.card.pan;
    // One draw from the RNG per attempt: token (16) + nonce (12). A bin_last4
    // token is unique within its tenant only (`cards_token` is on token and
    // tenant), so another tenant's tokens of this card leave this one's free.
    for _attempt in 0..32 {
        let mut random = [0u8; 28];
        rng::fill(&mut random)?;
        let (tok_bytes, nonce_bytes) = random.split_at(16);
        let token = match req.format {
            TokenFormat::Opaque => {
                Token::opaque_from_random(tok_bytes.try_into().map_err(|_| VaultError::Crypto)?)
            }
            TokenFormat::BinLast4 => Token::generate_bin_last4(pan.expose_digits())?,
        };
        let nonce: [u8; 12] = nonce_bytes.try_into().map_err(|_| VaultError::Crypto)?;
        let sealed = key.seal(tenant, token.as_str(), &req.card, nonce)?;
        let inserted = store::cards::insert(
            conn,
            &NewCard {
                token: token.as_str(),
                tenant,
                key_version: sealed.key_version,
                nonce: &sealed.nonce[..],
                ciphertext: &sealed.ciphertext,
                fingerprint: &fp[..],
                brand: pan.brand().as_str(),
                bin: pan.bin(),
                last4: pan.last4(),
                exp_month: req.expiry.month(),
                exp_year: req.expiry.year(),
                subject: req.subject.as_deref(),
                metadata,
                created_at: now,
                expires_at,
            },
        )?;
        match inserted {
            Inserted::Row(id) => {
                state.count_encryption(sealed.key_version);
                state.dedup.insert(*fp, subject, id);
                return Ok(TokenInfo {
                    token: token.as_str().to_owned(),
                    card: CardFacts {
                        brand: pan.brand().as_str().to_owned(),
                        bin: pan.bin().to_owned(),
                        last4: pan.last4().to_owned(),
                        exp_month: req.expiry.month(),
                        exp_year: req.expiry.year(),
                    },
                    fingerprint: hex(fp),
                    created_at,
                    key_version: sealed.key_version,
                    subject: req.subject.clone(),
                    metadata: req.metadata.clone(),
                    expires_at: expires_at_text,
                    deduplicated: false,
                    updated: Vec::new(),
                });
            }
            Inserted::TokenTaken => continue,
        }
    }
    Err(VaultError::invalid(
        "format",
        "no free bin_last4 token left for this card's BIN and last 4; use the opaque format",
    ))
}

/// A dedup hit: the stored row of this card and subject takes what the request
/// brings that it lacks, rather than dropping it. A later card expiry replaces the
/// stored one (an earlier one is ignored: a reissued card keeps its new date when
/// an old request comes back); a cardholder name, metadata or token expiry given
/// in the request replaces the stored one (fields left out keep theirs). A new
/// name is sealed afresh under the active key. The answer lists what changed,
/// and so does the request's audit event.
#[allow(clippy::too_many_arguments)]
fn update_on_hit(
    conn: &Connection,
    state: &mut VaultState,
    keys: &Keyring,
    tenant: &str,
    req: &TokenizeRequest,
    mut row: CardRow,
    metadata: Option<&str>,
    expires_at: Option<i64>,
) -> Result<TokenInfo, VaultError> {
    // A corrupted row is reported, not overwritten (nor partly updated and then
    // refused).
    row.check()?;
    let mut updated = Vec::new();
    let (month, year) = (i64::from(req.expiry.month()), i64::from(req.expiry.year()));
    if (year, month) > (row.exp_year, row.exp_month) {
        (row.exp_year, row.exp_month) = (year, month);
        updated.push("expiry");
    }
    if let Some(name) = &req.card.name
        && stored_name_differs(keys, tenant, &row, name.expose())?
    {
        updated.push("name");
    }
    if let Some(m) = metadata
        && row.metadata.as_deref() != Some(m)
    {
        row.metadata = Some(m.to_owned());
        updated.push("metadata");
    }
    if let Some(e) = expires_at
        && row.expires_at != Some(e)
    {
        row.expires_at = Some(e);
        updated.push("expires_at");
    }
    // A new name is re-sealed; take the key before changing anything, so a refusal
    // (the key is no longer active in the database) leaves the row as it was.
    let fresh = if updated.contains(&"name") {
        state.sealing_keyring(conn, keys)?
    } else {
        None
    };
    let reseal_key = if updated.contains(&"name") {
        Some(fresh.as_deref().unwrap_or(keys).active_key()?)
    } else {
        None
    };
    if !updated.is_empty() {
        store::cards::update_terms(
            conn,
            row.id,
            row.exp_month,
            row.exp_year,
            row.metadata.as_deref(),
            row.expires_at,
        )?;
    }
    if let Some(key) = reseal_key {
        let mut nonce = [0u8; 12];
        rng::fill(&mut nonce)?;
        let sealed = key.seal(tenant, &row.token, &req.card, nonce)?;
        store::cards::update_sealed(
            conn,
            row.id,
            sealed.key_version,
            &sealed.nonce[..],
            &sealed.ciphertext,
        )?;
        state.count_encryption(sealed.key_version);
        row.key_version = sealed.key_version;
    }
    let mut info = row.info(true)?;
    info.updated = updated;
    Ok(info)
}

/// Whether the cardholder name sealed in `row` is not `name`. A row sealed under
/// a key this process does not hold yet (rotated and rewrapped by another one)
/// counts as different: it is sealed again under the active key. A row that does
/// not open under its own key is an error, never overwritten.
fn stored_name_differs(
    keys: &Keyring,
    tenant: &str,
    row: &CardRow,
    name: &str,
) -> Result<bool, VaultError> {
    let Some(key) = keys.data.get(&row.key_version) else {
        return Ok(true);
    };
    let sealed = SealedRecord {
        key_version: row.key_version,
        nonce: row
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Decryption)?,
        ciphertext: row.ciphertext.clone(),
    };
    let stored = key
        .open(tenant, &row.token, &sealed)
        .map_err(|_| VaultError::Decryption)?;
    // Not a secret comparison: the answer says whether the name changed anyway,
    // and the caller holds the card number.
    Ok(stored.name.as_ref().map(|n| n.expose()) != Some(name))
}

/// The service's reading of a stored row: each column checked for what the vault
/// writes there before it is shown.
trait StoredCard {
    fn exp_month(&self) -> Result<u8, VaultError>;
    fn exp_year(&self) -> Result<u16, VaultError>;
    fn metadata(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, VaultError>;
    fn check(&self) -> Result<(), VaultError>;
    fn info(self, deduplicated: bool) -> Result<TokenInfo, VaultError>;
}

impl StoredCard for CardRow {
    /// The stored month, 1 to 12.
    fn exp_month(&self) -> Result<u8, VaultError> {
        u8::try_from(self.exp_month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| corrupt_column("cards.exp_month"))
    }

    /// The stored four-digit year.
    fn exp_year(&self) -> Result<u16, VaultError> {
        u16::try_from(self.exp_year).map_err(|_| corrupt_column("cards.exp_year"))
    }

    /// The stored metadata: absent, or the JSON object the vault wrote.
    fn metadata(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, VaultError> {
        self.metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt_column("cards.metadata"))
    }

    /// Whether every column [`StoredCard::info`] shows holds what the vault writes there.
    fn check(&self) -> Result<(), VaultError> {
        self.exp_month()?;
        self.exp_year()?;
        self.metadata()?;
        rfc3339("cards.created_at", self.created_at)?;
        self.expires_at
            .map(|e| rfc3339("cards.expires_at", e))
            .transpose()?;
        Ok(())
    }

    /// The stored facts, as answered. A column holding what the vault never writes
    /// fails the read (naming the column), never turns into a plausible value.
    fn info(self, deduplicated: bool) -> Result<TokenInfo, VaultError> {
        let (exp_month, exp_year, metadata) =
            (self.exp_month()?, self.exp_year()?, self.metadata()?);
        Ok(TokenInfo {
            card: CardFacts {
                exp_month,
                exp_year,
                brand: self.brand,
                bin: self.bin,
                last4: self.last4,
            },
            metadata,
            created_at: rfc3339("cards.created_at", self.created_at)?,
            expires_at: self
                .expires_at
                .map(|e| rfc3339("cards.expires_at", e))
                .transpose()?,
            token: self.token,
            fingerprint: hex(&self.fingerprint),
            key_version: self.key_version,
            subject: self.subject,
            deduplicated,
            updated: Vec::new(),
        })
    }
}

// ---- key administration (CLI) ----

impl Vault {
    /// Lists the data keys.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, VaultError> {
        let conn = self.inner.readers.get()?;
        list_keys(&conn, self.now())
    }
}

/// Lists the data keys of the database behind `conn`.
pub fn list_keys(conn: &Connection, now: OffsetDateTime) -> Result<Vec<KeyInfo>, VaultError> {
    let mut keys = Vec::new();
    for row in store::keys::list_data_keys(conn)? {
        let store::keys::DataKeyRow {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> CardRow {
        CardRow {
            id: 1,
            token: "tok".into(),
            tenant: "shop".into(),
            key_version: 1,
            nonce: vec![0; 12],
            ciphertext: vec![0; 32],
            fingerprint: vec![0; 4],
            brand: "visa".into(),
            bin: "424242".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
            subject: None,
            metadata: Some(r#"{"order":"A-1"}"#.into()),
            created_at: 1_700_000_000,
            expires_at: None,
        }
    }

    fn corrupt_column_of(r: CardRow) -> String {
        match r.info(false) {
            Err(VaultError::Store(StoreError::Corrupt(msg))) => msg,
            Err(e) => panic!("not a corrupt-row error: {e}"),
            Ok(_) => panic!("a corrupted row was served"),
        }
    }

    #[test]
    fn a_row_with_a_corrupted_column_is_reported_not_served() {
        let info = row().info(false).unwrap();
        assert_eq!((info.card.exp_month, info.card.exp_year), (12, 2031));
        assert!(info.metadata.is_some());
        for (column, bad) in [
            (
                "cards.exp_month",
                CardRow {
                    exp_month: 300,
                    ..row()
                },
            ),
            (
                "cards.exp_month",
                CardRow {
                    exp_month: 0,
                    ..row()
                },
            ),
            (
                "cards.exp_year",
                CardRow {
                    exp_year: -1,
                    ..row()
                },
            ),
            (
                "cards.metadata",
                CardRow {
                    metadata: Some("{oops".into()),
                    ..row()
                },
            ),
            (
                "cards.created_at",
                CardRow {
                    created_at: i64::MAX,
                    ..row()
                },
            ),
            (
                "cards.expires_at",
                CardRow {
                    expires_at: Some(i64::MIN),
                    ..row()
                },
            ),
        ] {
            assert!(bad.check().is_err(), "{column}");
            let msg = corrupt_column_of(bad);
            assert!(msg.starts_with(column), "{msg}");
            assert!(!msg.contains("300") && !msg.contains("oops"), "{msg}");
        }
    }
}
