//! `panvault init`: create a new vault.
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_vault::{SealSpec, Vault, system_clock};

use crate::common::{CliError, DataDirArg, SecretArgs, vault_err};

/// Create a new vault: a root key sealed under the passphrase (Argon2id, 64 MiB,
/// t=3), data key v1, a fingerprint key and an audit-signing key.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Seal with M-of-N custodian shares instead of a passphrase: number of custodians.
    #[arg(long, requires_all = ["threshold", "shares_dir"])]
    pub custodians: Option<u8>,
    /// Shares needed to unseal (2 ≤ M ≤ N).
    #[arg(long, requires = "custodians")]
    pub threshold: Option<u8>,
    /// Where to write share-1 … share-N (mode 0600), one per custodian: a directory
    /// that does not exist yet, or an empty one.
    #[arg(long, value_name = "OUT", requires = "custodians")]
    pub shares_dir: Option<PathBuf>,
    /// Keep the vault in this PostgreSQL database (`postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=…`)
    /// instead of SQLite: recorded as `[storage]` in DIR/panvault.toml, where every
    /// command finds it. The password is never printed.
    #[arg(
        long,
        value_name = "URL",
        env = "PANVAULT_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
}

/// Runs `init`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    // The root key is made in this process: the server's hygiene from the start.
    crate::common::harden_admin();
    if !args.secret.shares.is_empty() {
        return Err(CliError::usage(
            "--share is for unsealing an existing vault; init takes a passphrase",
        ));
    }
    let shares = match (args.custodians, args.threshold) {
        (Some(n), Some(m)) => {
            crate::cmd::master::check_share_counts(n, m)?;
            Some((n, m))
        }
        _ => None,
    };
    let unlock = match shares {
        Some(_) => {
            panvault_vault::Unlock::Passphrase(panvault_vault::SecretText::new(String::new()))
        }
        None => args.secret.unlock(true)?,
    };
    if let Some(dir) = &args.shares_dir {
        crate::cmd::master::check_shares_target(dir)?;
    }
    let spec = SealSpec {
        unlock,
        kdf: panvault_vault::service::default_kdf(),
        shares,
    };
    if let Some(url) = &args.postgres {
        record_postgres(&args.data_dir, url)?;
    }
    // The shares are stored durably before the vault is committed; if anything
    // fails, neither a vault nobody can open nor shares of no vault are left.
    let written = std::cell::Cell::new(Vec::new());
    let made = Vault::init_with(
        &args.data_dir,
        &spec,
        &system_clock(),
        &crate::common::admin_actor(),
        |new_shares| {
            if let Some(dir) = &args.shares_dir {
                crate::cmd::master::write_shares(dir, new_shares)?;
                written.set(new_shares.iter().map(|s| s.number).collect());
            }
            Ok(())
        },
    );
    let report = match (made, &args.shares_dir) {
        (Ok(r), _) => r,
        (Err(e), Some(dir)) => {
            return Err(crate::cmd::master::undo_shares(dir, &written.take(), e));
        }
        (Err(e), None) => return Err(vault_err(e)),
    };
    if let Some(dir) = &args.shares_dir {
        crate::outln!(
            "Wrote {} custodian shares to {} (any {} unseal the vault). Hand one to each custodian and delete them here.",
            report.shares.len(),
            dir.display(),
            args.threshold.unwrap_or(2)
        );
    }
    crate::outln!(
        "Initialized vault {} in {}",
        report.vault_id,
        args.data_dir.display()
    );
    crate::outln!("Audit public key: {}", report.audit_pubkey_path.display());
    if args.shares_dir.is_none() {
        crate::outln!("Keep the passphrase safe: without it the vault cannot be unsealed.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks `url` (described, never quoted, when malformed) and records it as the
/// vault's storage in `DIR/panvault.toml`.
pub(crate) fn record_postgres(dir: &std::path::Path, url: &str) -> Result<(), CliError> {
    panvault_vault::store::pg::PgSettings::from_url(url)
        .map_err(|e| CliError::usage(format!("--postgres: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    panvault_vault::config::StorageSettings::record_postgres(dir, url)
        .map_err(|e| CliError::usage(e.to_string()))
}
