//! `panvault init`: create a new vault.
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_vault::{SealSpec, Vault, system_clock};

use crate::common::{CliError, DEFAULT_DATA_DIR, SecretArgs, vault_err};

/// Create a new vault: a root key sealed under the passphrase (Argon2id, 64 MiB,
/// t=3), data key v1, a fingerprint key and an audit-signing key.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (the database is DIR/vault.db).
    #[arg(long, env = "PANVAULT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub secret: SecretArgs,
}

/// Runs `init`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    if !args.secret.shares.is_empty() {
        return Err(CliError::usage("--share is for unsealing an existing vault; init takes a passphrase"));
    }
    let unlock = args.secret.unlock(true)?;
    let spec = SealSpec { unlock, kdf: panvault_vault::service::default_kdf(), shares: None };
    let report = Vault::init(&args.data_dir, &spec, &system_clock()).map_err(vault_err)?;
    println!("Initialized vault {} in {}", report.vault_id, args.data_dir.display());
    println!("Audit public key: {}", report.audit_pubkey_path.display());
    println!("Keep the passphrase safe: without it the vault cannot be unsealed.");
    Ok(ExitCode::SUCCESS)
}
