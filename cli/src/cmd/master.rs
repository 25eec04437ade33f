//! `panvault master`: the root key and its seal.
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use panvault_vault::service::shamir::ShareFile;
use panvault_vault::{Admin, VaultError};

use crate::cmd::keys::{Common, open_unlocked};
use crate::common::{CliError, admin_actor, read_passphrase, vault_err};

/// Root-key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// New root key: every data, fingerprint, audit-signing and CVC window key is
    /// re-wrapped. PostgreSQL: runs while nodes serve; each running node follows
    /// within seconds, and the command waits for them (exit 3 when a node did not
    /// follow: it refuses to tokenize until restarted). SQLite: refused while the
    /// server serves the vault: stop it first, start it after.
    Rotate(RotateArgs),
    /// Reseal the root key under a new passphrase (a running server is unaffected).
    ChangePassphrase(ChangeArgs),
    /// Issue a new custodian share set; every older share stops working (a running
    /// server is unaffected).
    Reshare(ReshareArgs),
}

/// `master rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub common: Common,
    /// PostgreSQL: seconds to wait for the serving nodes to follow the new root
    /// (1 to 20).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=20))]
    pub wait: u64,
}

/// Exit code of `master rotate` when the new root is in place but a serving node
/// did not follow it within the wait.
pub const NODES_BEHIND: u8 = 3;

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
    /// Where to write share-1 … share-N (mode 0600): a directory that does not
    /// exist yet, or an empty one.
    #[arg(long, value_name = "DIR")]
    pub shares_dir: PathBuf,
}

/// Runs a master subcommand.
pub fn run(c: Command) -> Result<ExitCode, CliError> {
    match c {
        Command::Rotate(a) => {
            let common = &a.common;
            // Say so before asking for any secret; `master_rotate` checks again
            // while holding the lock.
            Admin::ensure_not_served(&common.data_dir).map_err(vault_err)?;
            let unlock = common.secret.unlock_for(&common.data_dir)?;
            let mut admin = open_unlocked(common, &unlock)?;
            let done = admin
                .master_rotate_with(
                    &admin_actor(),
                    &unlock,
                    Duration::from_secs(a.wait),
                    |nodes| {
                        if nodes.is_empty() {
                            return;
                        }
                        let behind: Vec<&str> = nodes
                            .iter()
                            .filter(|n| !n.follows)
                            .map(|n| n.node.as_str())
                            .collect();
                        eprintln!(
                            "{} of {} serving node(s) hold the new root key{}",
                            nodes.len() - behind.len(),
                            nodes.len(),
                            if behind.is_empty() {
                                String::new()
                            } else {
                                format!("; waiting for {}", behind.join(", "))
                            }
                        );
                    },
                )
                .map_err(vault_err)?;
            crate::outln!(
                "New root key in place; re-wrapped {} data key(s) and {} other key(s) ({}). The old root key is gone.",
                done.data_keys,
                done.other_keys.len(),
                done.other_keys.join(", ")
            );
            if !done.followed.is_empty() {
                crate::outln!(
                    "Nodes following the new root key: {}",
                    done.followed.join(", ")
                );
            }
            if !done.successor_deleted && admin.is_postgres() {
                crate::outln!(
                    "The successor row could not be deleted now; the nodes delete it within {} s.",
                    panvault_vault::store::pg::SUCCESSOR_TTL_SECS
                );
            }
            if !done.behind.is_empty() {
                crate::outln!(
                    "Nodes that did NOT follow within {} s: {}. They refuse to tokenize (503) and \
                     wrap nothing under the old root; restart them to unseal the new one.",
                    a.wait,
                    done.behind.join(", ")
                );
                return Ok(ExitCode::from(NODES_BEHIND));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ChangePassphrase(a) => {
            // Every input is read and checked before the vault is touched.
            let unlock = a.common.secret.unlock_for(&a.common.data_dir)?;
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
            let mut admin = open_unlocked(&a.common, &unlock)?;
            admin
                .change_passphrase(&admin_actor(), &new, panvault_vault::service::default_kdf())
                .map_err(vault_err)?;
            crate::outln!("Passphrase changed; the old one no longer unseals the vault.");
            crate::outln!(
                "Backups made before still open with the old passphrase: destroy every copy of it."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reshare(a) => {
            check_share_counts(a.custodians, a.threshold)?;
            check_shares_target(&a.shares_dir)?;
            let unlock = a.common.secret.unlock_for(&a.common.data_dir)?;
            let mut admin = open_unlocked(&a.common, &unlock)?;
            let written = Cell::new(Vec::new());
            let result = admin.reshare(&admin_actor(), a.custodians, a.threshold, |shares| {
                write_shares(&a.shares_dir, shares)?;
                written.set(shares.iter().map(|s| s.number).collect());
                Ok(())
            });
            if let Err(e) = result {
                return Err(undo_shares(&a.shares_dir, &written.take(), e));
            }
            crate::outln!(
                "Issued {} new shares ({} needed) in {}; the previous share set no longer works.",
                a.custodians,
                a.threshold,
                a.shares_dir.display()
            );
            crate::outln!(
                "Backups made before still open with the previous shares: destroy every copy of them."
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

/// Refuses a share directory that exists and is not an empty directory, before
/// anything is changed.
pub fn check_shares_target(dir: &Path) -> Result<(), CliError> {
    let refuse = |why: &str| {
        CliError::usage(format!(
            "{}: {why}; give a new or empty directory for the shares (nothing was changed)",
            dir.display()
        ))
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refuse(&e.to_string())),
        Ok(m) if !m.is_dir() => Err(refuse("exists and is not a directory")),
        Ok(_) => match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(refuse("is not empty")),
            Err(e) => Err(refuse(&e.to_string())),
        },
    }
}

/// Writes `DIR/share-1` … `DIR/share-N` (each mode 0600) durably, all or none:
/// into a fresh directory next to `DIR`, each file and the directory fsynced, then
/// renamed to `DIR` (which must not exist or be empty) and the parent fsynced.
/// On failure nothing is left behind.
pub fn write_shares(dir: &Path, shares: &[ShareFile]) -> Result<(), VaultError> {
    let io = |p: &Path, e: std::io::Error| VaultError::io(p, e);
    let name = dir
        .file_name()
        .ok_or_else(|| VaultError::invalid("shares_dir", "must name a directory"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    let tmp = fresh_dir(&parent, name)?;
    let filled = fill(&tmp, shares).and_then(|()| {
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
        sync_dir(&parent)
    });
    if filled.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    filled
}

/// A new directory (mode 0700) beside the target, named after it.
fn fresh_dir(parent: &Path, name: &std::ffi::OsStr) -> Result<PathBuf, VaultError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    let mut last = None;
    for attempt in 0..100u32 {
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(format!(".tmp-{}-{attempt}", std::process::id()));
        let tmp = parent.join(n);
        match builder.create(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(VaultError::io(&tmp, e)),
        }
    }
    Err(VaultError::io(
        parent,
        last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
    ))
}

fn fill(tmp: &Path, shares: &[ShareFile]) -> Result<(), VaultError> {
    use std::io::Write;
    for s in shares {
        let path = tmp.join(format!("share-{}", s.number));
        let text = zeroize::Zeroizing::new(s.to_text());
        panvault_vault::data_dir::owner_only()
            .create_new(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| VaultError::io(&path, e))?;
    }
    sync_dir(tmp)
}

fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VaultError::io(dir, e))
}

/// The vault did not take the new shares (`err`): remove the share files numbered
/// `written` that were stored for it, so that only shares that open the vault remain.
pub fn undo_shares(dir: &Path, written: &[u8], err: VaultError) -> CliError {
    let mut msg = err.to_string();
    if !written.is_empty() {
        let mut left = Vec::new();
        for n in written {
            let p = dir.join(format!("share-{n}"));
            if std::fs::remove_file(&p).is_err() && p.exists() {
                left.push(p.display().to_string());
            }
        }
        let _ = std::fs::remove_dir(dir);
        if left.is_empty() {
            msg.push_str("; the new shares were removed, the previous ones still unseal the vault");
        } else {
            msg.push_str(&format!(
                "; these new shares do NOT open the vault, delete them: {}",
                left.join(", ")
            ));
        }
    }
    let wrapped = vault_err(err);
    CliError::with_code(msg, wrapped.exit_code())
}
