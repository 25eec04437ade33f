//! `panvault master`: the root key and its seal.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use panvault_vault::service::shamir::ShareFile;

use crate::cmd::keys::{Common, open};
use crate::common::{CliError, admin_actor, read_passphrase, vault_err};

/// Root-key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// New root key: every data, fingerprint and audit-signing key is re-wrapped.
    Rotate(Common),
    /// Reseal the root key under a new passphrase.
    ChangePassphrase(ChangeArgs),
    /// Issue a new custodian share set; every older share stops working.
    Reshare(ReshareArgs),
}

/// `master change-passphrase`.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Read the new passphrase from this file (else `PANVAULT_NEW_PASSPHRASE`, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

/// `master reshare`.
#[derive(Debug, clap::Args)]
pub struct ReshareArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of custodians.
    #[arg(long)]
    pub custodians: u8,
    /// Shares needed to unseal.
    #[arg(long)]
    pub threshold: u8,
    /// Where to write share-1 … share-N (mode 0600).
    #[arg(long, value_name = "DIR")]
    pub shares_dir: PathBuf,
}

/// Runs a master subcommand.
pub fn run(c: Command) -> Result<ExitCode, CliError> {
    match c {
        Command::Rotate(common) => {
            let unlock = common.secret.unlock_for(&common.data_dir)?;
            let mut admin = open(&common)?;
            admin
                .master_rotate(&admin_actor(), &unlock)
                .map_err(vault_err)?;
            crate::outln!("New root key in place; all keys re-wrapped. The old root key is gone.");
            Ok(ExitCode::SUCCESS)
        }
        Command::ChangePassphrase(a) => {
            let mut admin = open(&a.common)?;
            let new = match (
                &a.new_passphrase_file,
                std::env::var("PANVAULT_NEW_PASSPHRASE"),
            ) {
                (Some(f), _) => read_passphrase(Some(f), false)?,
                (None, Ok(p)) => panvault_vault::SecretText::new(p),
                (None, Err(_)) => {
                    eprintln!("New passphrase:");
                    read_passphrase(None, true)?
                }
            };
            if new.expose_secret().is_empty() {
                return Err(CliError::usage("the new passphrase is empty"));
            }
            admin
                .change_passphrase(&admin_actor(), &new, panvault_vault::service::default_kdf())
                .map_err(vault_err)?;
            crate::outln!("Passphrase changed; the old one no longer unseals the vault.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Reshare(a) => {
            check_share_counts(a.custodians, a.threshold)?;
            let mut admin = open(&a.common)?;
            let shares = admin
                .reshare(&admin_actor(), a.custodians, a.threshold)
                .map_err(vault_err)?;
            write_shares(&a.shares_dir, &shares)?;
            crate::outln!(
                "Issued {} new shares ({} needed) in {}; the previous share set no longer works.",
                a.custodians,
                a.threshold,
                a.shares_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// 2 ≤ threshold ≤ custodians.
pub fn check_share_counts(n: u8, m: u8) -> Result<(), CliError> {
    if m < 2 || m > n {
        return Err(CliError::usage("need 2 <= --threshold <= --custodians"));
    }
    Ok(())
}

/// Writes `OUT/share-1` … `OUT/share-N`, each mode 0600, refusing to overwrite.
pub fn write_shares(dir: &Path, shares: &[ShareFile]) -> Result<(), CliError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    for s in shares {
        let path = dir.join(format!("share-{}", s.number));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        f.write_all(s.to_text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
