//! `panvault migrate --to-postgres`: a SQLite vault moved into an empty
//! PostgreSQL database, then found there by every command of its data directory.
//!
//! The store copies the rows (`store::pg::migrate`); this supplies what needs the
//! unsealed keys (each card's subject hashed and its personal data sealed, as the
//! PostgreSQL engine stores them) and records the engine in the data directory's
//! configuration (`[storage]`, as `init --postgres` does: the file owner-only).
//!
//! The audit log must verify (with the vault's public key) before the move, and
//! its export from PostgreSQL must verify to the same report after it; only then
//! is `[storage]` recorded.
//!
//! While it runs it holds the data directory's exclusive lock (no server runs on
//! the vault) and SQLite's write lock (no admin command writes): the copy is one
//! snapshot, and nothing committed to SQLite after it is left behind. The SQLite
//! file stays as it was, as a copy to keep or remove.

use std::path::{Path, PathBuf};

use panvault_audit::log::{self as audit, Actor, AuditError, SigningKey};

use super::keyring::{self, Keyring, Unlock};
use super::personal;
use crate::config::StorageSettings;
use crate::error::VaultError;
use crate::store::pg::migrate::{MigrateError, Migrated, ProtectError, Protected};
use crate::store::pg::{self, PgSettings};
use crate::store::{self, CardRow, Location, Session, StoreError};

/// What a migration did.
#[derive(Debug)]
pub struct Migration {
    /// The rows moved, per table.
    pub moved: Migrated,
    /// Where they went (the URL with its password redacted).
    pub target: String,
    /// The configuration that now names PostgreSQL.
    pub config: PathBuf,
    /// The SQLite file, left as it was.
    pub sqlite: PathBuf,
}

fn config_err(msg: impl Into<String>) -> VaultError {
    VaultError::Store(StoreError::Config(msg.into()))
}

fn audit_err(e: AuditError) -> VaultError {
    VaultError::AuditUnavailable(Some(Box::new(e)))
}

fn migrate_err(e: MigrateError) -> VaultError {
    match e {
        MigrateError::Sqlite(e) => VaultError::Store(e),
        MigrateError::Pg(e) => VaultError::Store(e.into()),
        MigrateError::Protect { source, .. } => match source.downcast::<VaultError>() {
            Ok(v) => *v,
            Err(_) => VaultError::Crypto,
        },
        other => VaultError::Store(StoreError::Corrupt(other.to_string())),
    }
}

/// What PostgreSQL stores for `card` (as the PostgreSQL engine writes a new card):
/// the subject's keyed hash, and the subject and metadata sealed under the card's
/// own data key.
fn protect(keys: &Keyring, card: &CardRow) -> Result<Protected, ProtectError> {
    let key = keys.data.get(&card.key_version).ok_or_else(|| {
        VaultError::KeyState(format!(
            "card row {} is sealed under data key version {}, which is not loaded (destroyed?)",
            card.id, card.key_version
        ))
    })?;
    let p = personal::seal(
        keys,
        key,
        &card.tenant,
        &card.token,
        card.subject.as_deref(),
        card.metadata.as_deref(),
    )?;
    Ok((p.subject_hash, p.sealed))
}

/// Moves the SQLite vault of `data_dir` (unsealed with `unlock`) into the empty
/// PostgreSQL database at `url`, then records `[storage]` in the data directory's
/// configuration. Refused when the vault is already on PostgreSQL, when the
/// configuration already has a `[storage]` table, while a server holds the vault,
/// and when the target holds anything.
pub fn migrate_to_postgres(
    data_dir: &Path,
    unlock: &Unlock,
    url: &str,
    actor: &crate::AccessContext,
) -> Result<Migration, VaultError> {
    let settings = PgSettings::from_url(url).map_err(StoreError::from)?;
    let dir = crate::DataDir::new(data_dir);
    let config = dir.config();
    let existing = match std::fs::read_to_string(&config) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(VaultError::io(&config, e)),
    };
    if let Some(text) = &existing {
        let storage = StorageSettings::from_config_text(text)
            .map_err(|e| config_err(format!("{}: {e}", config.display())))?;
        if storage.is_some() {
            return Err(config_err(format!(
                "{} already has a [storage] table: the vault is not moved (remove the table \
                 if the vault is on SQLite, then run this again)",
                config.display()
            )));
        }
    }
    let db = match Location::of(data_dir)? {
        Location::Sqlite(db) => db,
        Location::Postgres(_) => {
            return Err(config_err("this vault's data is already in PostgreSQL"));
        }
    };
    if !db.exists() {
        return Err(VaultError::NotInitialized(data_dir.display().to_string()));
    }
    let _serve_lock = store::lock_exclusive(data_dir)
        .map_err(|e| VaultError::io(&store::serve_lock_path(data_dir), e))?
        .ok_or_else(|| {
            VaultError::KeyState(
                "a server (or `master rotate`) holds this vault: stop it, then migrate".into(),
            )
        })?;
    let session = Session::open(&db, false)?;
    // SQLite's write lock for the whole copy: an admin command waits, and
    // nothing it would commit is left behind in SQLite.
    let hold = session.begin_immediate()?;
    let keys = {
        let tx = hold.tx();
        let vault_id = keyring::meta_get(&tx, "vault_id")?
            .ok_or_else(|| VaultError::Store(StoreError::Corrupt("no vault id".into())))?;
        let (root, _, _) = keyring::unseal_root(&tx, &vault_id, unlock)?;
        Keyring::load(&tx, &vault_id, root)?
    };
    let reader = store::open_reader(&db)?;
    // The log must verify before it moves (a broken chain would arrive broken),
    // and verify alike after: the same events, checkpoints and head.
    let public = SigningKey::from_pkcs8(&keys.audit_pkcs8)
        .map_err(|_| VaultError::Crypto)?
        .public_key();
    let before = audit::verify(&reader, &public, None).map_err(audit_err)?;
    if let Some(problem) = &before.problem {
        return Err(VaultError::AuditUnavailable(Some(
            format!("the SQLite audit log does not verify ({problem}): the vault is not moved")
                .into(),
        )));
    }
    let mut client = pg::connect(&settings).map_err(StoreError::from)?;
    let signing = SigningKey::from_pkcs8(&keys.audit_pkcs8).map_err(|_| VaultError::Crypto)?;
    let moved = pg::migrate::from_sqlite(
        &reader,
        &mut client,
        &mut |card: &CardRow| protect(&keys, card),
        &signing,
        Actor {
            name: actor.actor.clone(),
            fingerprint: actor.actor_fingerprint.clone(),
        },
        crate::system_clock()(),
    )
    .map_err(migrate_err)?;
    // Streamed to the verifier through a pipe: the log is never held whole.
    let (pipe_out, pipe_in) = std::io::pipe().map_err(|e| VaultError::io(&config, e))?;
    let (exported, after) = std::thread::scope(|s| {
        let client = &mut client;
        let exporter =
            s.spawn(move || pg::audit::export_jsonl(client, std::io::BufWriter::new(pipe_in)));
        let after = audit::verify_export(std::io::BufReader::new(pipe_out), &public, &[]);
        (exporter.join(), after)
    });
    match exported {
        Ok(Ok(_)) => {}
        // The verifier stopped reading: its own answer says why.
        Ok(Err(AuditError::Io(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Ok(Err(e)) => return Err(audit_err(e)),
        Err(_) => {
            return Err(VaultError::internal("the export thread panicked"));
        }
    }
    let after = after.map_err(audit_err)?;
    drop(client);
    // The moved chain, then the node's registration event, under one signed
    // cluster checkpoint that names its head.
    let node_head = after
        .nodes
        .iter()
        .find(|n| n.node.as_str() == moved.audit_node)
        .map(|n| n.seq);
    if !after.is_intact()
        || after.events != before.events + 1
        || node_head != Some(before.last_seq + 1)
        || after.unsigned_tail != 0
    {
        return Err(VaultError::AuditUnavailable(Some(
            "the audit log copied into PostgreSQL does not verify as the SQLite log did plus its \
             registration; \
             [storage] was not recorded (the vault stays on SQLite; empty the database \
             before trying again)"
                .into(),
        )));
    }

    // The engine, recorded where every command of this data directory looks.
    StorageSettings::record_postgres(data_dir, url).map_err(|e| {
        config_err(format!(
            "the vault was copied, but recording [storage] failed: {e}"
        ))
    })?;
    if !Location::of(data_dir)?.is_postgres() {
        return Err(config_err(format!(
            "{} does not name PostgreSQL after the migration",
            config.display()
        )));
    }
    drop(hold);
    Ok(Migration {
        moved,
        target: settings.to_string(),
        config,
        sqlite: db,
    })
}
