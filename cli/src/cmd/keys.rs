//! `panvault keys`: list and rotate data-encryption keys.
use std::process::ExitCode;
use std::time::Duration;

use panvault_vault::{Admin, KeyInfo, Unlock, system_clock};

use crate::common::{CliError, DataDirArg, SecretArgs, admin_actor, vault_err};

/// Data-key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List data keys: version, state, created, age in days, records.
    List(ListArgs),
    /// Make a new active data key; the previous one becomes decrypt-only.
    Rotate(RotateArgs),
    /// Re-encrypt every record still under an older key with the active key (online).
    Rewrap(RewrapArgs),
    /// Retire a decrypt-only key that no record uses any more.
    Retire(VersionArgs),
    /// Destroy a retired key: its wrapped bytes are deleted from the vault for good.
    /// Backups made before keep their own copy (change the passphrase or reshare,
    /// then destroy the old secret, to make those unreadable).
    Destroy(VersionArgs),
}

/// A rate for the progress bar: whole records per second (indicatif's own
/// `{per_sec}` prints four decimals, `181,342.0599/s`).
fn rate(per_sec: f64) -> String {
    if per_sec.is_finite() && per_sec >= 0.0 {
        format!("{per_sec:.0} records/s")
    } else {
        "- records/s".to_owned()
    }
}

/// `keys rewrap`.
#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub common: Common,
    /// At most this many records per transaction (each also commits after a few
    /// milliseconds of work and leaves the write lock free for a moment, so a
    /// running server keeps writing).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Work per transaction in milliseconds (tuning; default 4).
    #[arg(long, value_name = "MS", hide = true)]
    pub tx_budget_ms: Option<u64>,
    /// Pause after each commit in milliseconds (tuning; default 4).
    #[arg(long, value_name = "MS", hide = true)]
    pub gap_ms: Option<u64>,
    /// At most this many records per second.
    #[arg(long, value_name = "R")]
    pub max_rate: Option<f64>,
    /// No progress bar (summary only).
    #[arg(long)]
    pub quiet: bool,
}

/// `keys retire|destroy --version N`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub common: Common,
    /// The key version.
    #[arg(long)]
    pub version: u32,
}

/// Options every key command shares.
#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub secret: SecretArgs,
}

/// `keys list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Rotate only if the active key is older than this (e.g. `365d`, `12h`); for cron.
    #[arg(long, value_name = "AGE", value_parser = parse_age_days)]
    pub if_older_than: Option<i64>,
}

/// Parses `365d` / `52w` / `24h` (hours round down to days) into days.
fn parse_age_days(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("expected a number with d, w or h, got {s:?}"))?;
    match unit {
        "d" | "" => Ok(n),
        "w" => Ok(n.saturating_mul(7)),
        "h" => Ok(n / 24),
        _ => Err(format!("unknown unit {unit:?}: use d, w or h")),
    }
}

/// Runs a key subcommand.
pub fn run(c: Command) -> Result<ExitCode, CliError> {
    match c {
        Command::List(a) => list(a),
        Command::Rotate(a) => rotate(a),
        Command::Rewrap(a) => rewrap(a),
        Command::Retire(a) => {
            let mut admin = open(&a.common)?;
            admin.retire(&admin_actor(), a.version).map_err(vault_err)?;
            crate::outln!("Retired data key v{}.", a.version);
            Ok(ExitCode::SUCCESS)
        }
        Command::Destroy(a) => {
            let mut admin = open(&a.common)?;
            admin
                .destroy(&admin_actor(), a.version)
                .map_err(vault_err)?;
            if admin.wal_scrubbed() == Some(false) {
                crate::outln!(
                    "Destroyed data key v{}: its wrapped bytes are deleted from vault.db, but NOT yet from the WAL.",
                    a.version
                );
                eprintln!("{}", crate::cmd::erase::WAL_NOT_SCRUBBED);
            } else {
                crate::outln!(
                    "Destroyed data key v{}: its wrapped bytes are gone.",
                    a.version
                );
            }
            crate::outln!("{BACKUPS_KEEP_DESTROYED_KEYS}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rewrap(a: RewrapArgs) -> Result<ExitCode, CliError> {
    let mut admin = open(&a.common)?;
    if a.tx_budget_ms.is_some() || a.gap_ms.is_some() {
        admin.set_yield(
            Duration::from_millis(a.tx_budget_ms.unwrap_or(4)),
            Duration::from_millis(a.gap_ms.unwrap_or(4)),
        );
    }
    let total = admin.records_not_under_active().map_err(vault_err)?;
    let bar = if a.quiet || total == 0 {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} records  {rate}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate(state.per_sec()));
                },
            ),
        );
        bar
    };
    let summary = admin
        .rewrap(&admin_actor(), a.batch, a.max_rate, |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .map_err(vault_err)?;
    bar.finish_and_clear();
    crate::outln!(
        "Rewrapped {} record(s) to v{} in {:.2} s ({:.0} records/s); {} left under older keys.",
        summary.rewrapped,
        summary.active_version,
        summary.seconds,
        summary.rate,
        summary.remaining
    );
    if summary.remaining > 0 {
        // A running server seals under the key it has loaded; it reloads within a
        // second of a rotation, so what it wrote meanwhile is left for another run.
        crate::outln!(
            "Records were written under an older key while the rewrap ran (a server that had not yet loaded v{}); run `panvault keys rewrap` again.",
            summary.active_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What destroying a data key does not do, said where it is done.
const BACKUPS_KEEP_DESTROYED_KEYS: &str = "Backups made before still hold this key, \
wrapped under the root key and sealed under the passphrase or shares of their time: \
they stay readable to whoever has such a backup and that secret. To make them \
unreadable, change the passphrase (`panvault master change-passphrase`) or reshare \
(`panvault master reshare`), then destroy every copy of the old passphrase or shares.";

/// Opens the vault of `c` for administration (reading its passphrase or shares;
/// the process is hardened first, see [`crate::common::harden_admin`]).
pub fn open(c: &Common) -> Result<Admin, CliError> {
    let unlock = c.secret.unlock_for(&c.data_dir)?;
    open_unlocked(c, &unlock)
}

/// [`open`] with the secret already read.
pub fn open_unlocked(c: &Common, unlock: &Unlock) -> Result<Admin, CliError> {
    crate::common::harden_admin();
    Admin::open(&c.data_dir, unlock, system_clock()).map_err(vault_err)
}

fn list(a: ListArgs) -> Result<ExitCode, CliError> {
    let admin = open(&a.common)?;
    let keys = admin.list_keys().map_err(vault_err)?;
    if a.json {
        let s = serde_json::to_string_pretty(&keys).map_err(|e| CliError::usage(e.to_string()))?;
        crate::outln!("{s}");
    } else {
        print_table(&keys);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(keys: &[KeyInfo]) {
    crate::outln!(
        "{:>7}  {:<12}  {:<20}  {:>8}  {:>10}  {:>12}",
        "VERSION",
        "STATE",
        "CREATED",
        "AGE (d)",
        "RECORDS",
        "ENCRYPTIONS"
    );
    for k in keys {
        crate::outln!(
            "{:>7}  {:<12}  {:<20}  {:>8}  {:>10}  {:>12}",
            k.version,
            k.state,
            k.created_at,
            k.age_days,
            k.records,
            k.encryptions
        );
    }
}

fn rotate(a: RotateArgs) -> Result<ExitCode, CliError> {
    let mut admin = open(&a.common)?;
    if let Some(days) = a.if_older_than {
        let age = admin.active_key_age_days().map_err(vault_err)?;
        if age < days {
            crate::outln!("Active key is {age} days old (< {days}); not rotated.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let v = admin.rotate(&admin_actor()).map_err(vault_err)?;
    crate::outln!("Rotated: data key v{v} is now active; the previous key is decrypt-only.");
    crate::outln!("A running server picks the new key up within a few seconds.");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_are_whole_records_per_second() {
        assert_eq!(rate(181_342.059_9), "181342 records/s");
        assert_eq!(rate(0.4), "0 records/s");
        assert_eq!(rate(f64::NAN), "- records/s");
    }
}
