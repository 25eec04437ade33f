//! Making and opening a vault: `init` seals a fresh root key and writes the first
//! keys and audit event; `open` unseals it and starts the writer and the readers.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use super::keyring::{self, Keyring, SealSpec, Unlock};
use super::request::AccessContext;
use super::state::VaultState;
use super::{AuditAction, Clock, Inner, Vault, VaultOptions, audit_hook, hex, shamir};
use crate::core::rng;
use crate::core::secret::SecretKey32;
use crate::error::VaultError;
use crate::store::{self, Location, ReadPool, Session, StoreError, Writer};

/// The most jobs in one writer batch on PostgreSQL.
const PG_MAX_BATCH: usize = 256;

/// Creates the data directory (mode 0700) if needed.
fn create_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::create_dir_all(dir).map_err(|e| VaultError::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| VaultError::io(dir, e))?;
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
    /// a fingerprint key and an audit-signing key. Refuses an existing vault. Its
    /// first event names the OS user who ran it
    /// ([`hygiene::admin_actor_name`](crate::hygiene::admin_actor_name)).
    pub fn init(data_dir: &Path, seal: &SealSpec, clock: &Clock) -> Result<InitReport, VaultError> {
        let ctx = AccessContext {
            actor: crate::hygiene::admin_actor_name(),
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
        let location = Location::of(data_dir)?;
        if location.is_postgres() {
            // Nothing to remove on failure: the transaction that writes the vault
            // rolls back whole (the empty schema may stay; `init` runs again).
            create_dir(data_dir)?;
            return Vault::init_in(data_dir, &location, seal, clock, actor, persist);
        }
        let dir = crate::DataDir::new(data_dir);
        let db = dir.database();
        if db.exists() {
            return Err(VaultError::AlreadyInitialized(db.display().to_string()));
        }
        create_dir(data_dir)?;
        let made = Vault::init_in(
            data_dir,
            &Location::Sqlite(db.clone()),
            seal,
            clock,
            actor,
            persist,
        );
        if made.is_err() {
            // Only files this call created: `db` did not exist before.
            for p in dir.database_files() {
                let _ = std::fs::remove_file(p);
            }
        }
        made
    }

    fn init_in(
        data_dir: &Path,
        location: &Location,
        seal: &SealSpec,
        clock: &Clock,
        actor: &AccessContext,
        persist: impl FnOnce(&[shamir::ShareFile]) -> Result<(), VaultError>,
    ) -> Result<InitReport, VaultError> {
        let conn = Session::open_at(location, true, None)?;
        #[cfg(unix)]
        if let Location::Sqlite(db) = location {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600));
        }
        if location.is_postgres() && keyring::meta_get(&conn.reader(), "vault_id")?.is_some() {
            return Err(VaultError::AlreadyInitialized(location.to_string()));
        }
        let now = clock().unix_timestamp();
        let mut id = [0u8; 16];
        rng::fill(&mut id)?;
        let vault_id = hex(&id);
        let root = SecretKey32::generate()?;
        let fp = SecretKey32::generate()?;
        let audit_pkcs8 = audit_hook::generate_signing_key()?;
        let open = conn.begin()?;
        let tx = open.tx();
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
        keyring::meta_set(
            &tx,
            keyring::ROOT_ID_META,
            &keyring::root_id(&vault_id, &root),
        )?;
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
            SecretKey32::from_slice(root.expose_secret())
                .ok_or(VaultError::internal("a root key is not 32 bytes"))?,
        )?;
        let details = match seal.shares {
            Some((n, m)) => format!("vault_id={vault_id} seal=shamir total={n} threshold={m}"),
            None => format!("vault_id={vault_id} seal=passphrase"),
        };
        audit_hook::record_admin(&tx, &ring, actor, AuditAction::Init, Some(&details), now)?;
        persist(&shares)?;
        drop(tx);
        open.commit()?;
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

    /// Opens with options. SQLite: the open vault holds a shared lock on the data
    /// directory (`DATA/serve.lock`) until it is dropped: `master rotate` refuses
    /// to run meanwhile, and this refuses to open while one runs. PostgreSQL: the
    /// node holds its presence on the database and follows a `master rotate`
    /// made while it runs (see `store::pg::presence`).
    pub fn open_with(
        data_dir: &Path,
        unlock: &Unlock,
        opts: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let location = match &opts.storage {
            Some(s) => Location::from_settings(Some(s), data_dir)?,
            None => Location::of(data_dir)?,
        };
        let mut presence = None;
        let (conn, serve_lock, pg_pool, db) = match &location {
            Location::Sqlite(db) => {
                if !db.exists() {
                    return Err(VaultError::NotInitialized(data_dir.display().to_string()));
                }
                let serve_lock = store::lock_shared(data_dir)
                    .map_err(|e| VaultError::io(&store::serve_lock_path(data_dir), e))?
                    .ok_or_else(|| {
                        VaultError::KeyState(
                            "a `panvault master rotate` is replacing the root key of this vault; \
                             start again when it has finished"
                                .into(),
                        )
                    })?;
                (
                    Session::open(db, false)?,
                    Some(serve_lock),
                    None,
                    db.clone(),
                )
            }
            Location::Postgres(settings) => {
                // Present before the root is unsealed: a `master rotate` committed
                // from now on waits for this node to acknowledge the root it holds.
                presence = Some(std::sync::Mutex::new(store::pg::Presence::take(settings)?));
                let pool = Arc::new(store::pg::PgPool::open(settings).map_err(StoreError::from)?);
                let conn = match Session::open_at(&location, false, Some(Arc::clone(&pool))) {
                    Err(StoreError::NoVault) => {
                        return Err(VaultError::NotInitialized(location.to_string()));
                    }
                    other => other?,
                };
                (conn, None, Some(pool), PathBuf::new())
            }
        };
        conn.check_integrity()?;
        let vault_id = keyring::meta_get(&conn.reader(), "vault_id")?
            .ok_or_else(|| VaultError::Store(StoreError::Corrupt("no vault id".into())))?;
        let ring = unseal_and_load(&conn.reader(), &vault_id, unlock)?;
        if let Some(p) = &presence {
            // The root this node holds, for a `master rotate` waiting for nodes.
            p.lock()
                .map_err(|_| VaultError::internal("presence lock poisoned"))?
                .acknowledge(&ring.root_id)?;
        }
        let mut state = VaultState::load(
            &conn.autocommit(),
            &ring,
            opts.checkpoint,
            opts.checkpoint_witness.clone(),
        )?;
        if conn.is_postgres() {
            // This node's chain in the shared log: registered (its first event and
            // cluster checkpoint) before it appends anything.
            let ctx = AccessContext {
                actor: crate::hygiene::admin_actor_name(),
                ..Default::default()
            };
            let open = conn.begin()?;
            let tx = open.tx();
            let now = (opts.clock)().unix_timestamp();
            state.audit_mut().register_node(&tx, &ctx, now)?;
            drop(tx);
            open.commit()?;
        }
        let reload_wanted = state.reload_wanted();
        let tokens_stored = state.dedup.stored();
        let (checkpointed, readers) = match &pg_pool {
            None => (Some(db.clone()), ReadPool::new(db.clone(), opts.read_pool)),
            Some(pool) => {
                let Location::Postgres(settings) = &location else {
                    return Err(VaultError::internal(
                        "a PostgreSQL pool without its settings",
                    ));
                };
                (
                    None,
                    ReadPool::postgres(Arc::clone(pool), settings).map_err(StoreError::from)?,
                )
            }
        };
        let mut writer_cfg = opts.writer.clone();
        if pg_pool.is_some() {
            // Each tokenize holds an advisory lock on its card until its batch
            // commits, and PostgreSQL's lock table is shared by every connection
            // (`max_locks_per_transaction` × `max_connections`): smaller batches
            // keep several nodes' open batches well inside it.
            writer_cfg.max_batch = writer_cfg.max_batch.min(PG_MAX_BATCH);
        }
        let writer = Writer::start(conn, state, checkpointed, writer_cfg)?;
        Ok(Vault {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                db,
                keys: RwLock::new(Arc::new(ring)),
                keys_stale: AtomicBool::new(false),
                reload_wanted,
                _serve_lock: serve_lock,
                pg_pool,
                presence,
                writer,
                readers,
                opts,
                tokens_stored,
            }),
        })
    }
}

/// How many times a node starting during a `master rotate` unseals again.
const UNSEAL_ATTEMPTS: usize = 3;

/// Unseals the root and loads the keys under it. A `master rotate` may commit
/// between the two reads (nodes start while it runs): the keys then no longer
/// open under the root just unsealed, and the seal is read again.
fn unseal_and_load(
    conn: &store::Reader<'_>,
    vault_id: &str,
    unlock: &Unlock,
) -> Result<Keyring, VaultError> {
    let mut attempt = 1;
    loop {
        let (root, _info, _shares) = keyring::unseal_root(conn, vault_id, unlock)?;
        match Keyring::load(conn, vault_id, root) {
            Err(VaultError::Decryption) if attempt < UNSEAL_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}
