//! `panvault erase` and `panvault retention run`.
use std::path::PathBuf;
use std::process::ExitCode;

use panvault_vault::service::EraseTarget;

use crate::cmd::keys::{Common, open};
use crate::common::{CliError, admin_actor, vault_err};

/// Erase a data subject's (or one token's) card data and print a signed receipt.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The data subject (the shop's customer id).
    #[arg(long, conflicts_with = "token", required_unless_present = "token")]
    pub subject: Option<String>,
    /// One token instead of a subject.
    #[arg(long)]
    pub token: Option<String>,
    /// Write the receipt (JSON) here as well as to stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What `erase`, `retention run` and `keys destroy` say when the WAL still holds page
/// copies of what they deleted.
pub const WAL_NOT_SCRUBBED: &str = "Warning: the WAL was NOT truncated: a reader held an older snapshot, so page copies of the deleted data are still in vault.db-wal. The vault is marked (meta wal_scrub_pending); a running `panvault serve` truncates the WAL as soon as readers allow and records when (meta wal_scrubbed_at, erasure_requests.wal_scrubbed_at). Without a server, run this command again later.";

/// Runs `erase`.
pub fn erase(a: EraseArgs) -> Result<ExitCode, CliError> {
    let target = match (a.subject, a.token) {
        (Some(s), _) => EraseTarget::Subject(s),
        (None, Some(t)) => EraseTarget::Token(t),
        (None, None) => return Err(CliError::usage("give --subject or --token")),
    };
    let mut admin = open(&a.common)?;
    let erasure = admin
        .erase(&admin_actor(), &a.tenant, &target)
        .map_err(vault_err)?;
    let json = erasure
        .receipt
        .to_json()
        .map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(path) = &a.output {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    }
    crate::outln!("{json}");
    let node = erasure
        .receipt
        .audit_node
        .as_ref()
        .map_or_else(String::new, |n| format!(" of node {n}"));
    eprintln!(
        "Erased {} token(s) in tenant {}; audit event #{}{node}.",
        erasure.receipt.tokens_erased, a.tenant, erasure.receipt.audit_seq,
    );
    if !erasure.wal_scrubbed {
        eprintln!("{WAL_NOT_SCRUBBED}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Retention subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Purge cards past their expiry month plus the grace period, and expired tokens.
    Run(RetentionArgs),
}

/// `retention run`.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub common: Common,
    /// Days after the expiry month before a card is purged.
    #[arg(long, default_value_t = 90)]
    pub grace_days: i64,
    /// Count only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a retention subcommand.
pub fn retention(c: RetentionCommand) -> Result<ExitCode, CliError> {
    let RetentionCommand::Run(a) = c;
    if a.grace_days < 0 {
        return Err(CliError::usage("--grace-days must not be negative"));
    }
    let mut admin = open(&a.common)?;
    let r = admin
        .purge_retention(&admin_actor(), a.grace_days, a.dry_run)
        .map_err(vault_err)?;
    if a.dry_run {
        crate::outln!(
            "Dry run: {} card(s) past expiry + {} days and {} token(s) past their TTL would be purged.",
            r.past_expiry,
            a.grace_days,
            r.past_ttl
        );
    } else {
        let event = r.audit_seq.map_or_else(
            || "no audit event".to_owned(),
            |s| format!("audit event #{s}"),
        );
        crate::outln!(
            "Purged {} card(s) past expiry + {} days and {} token(s) past their TTL; {event}.",
            r.past_expiry,
            a.grace_days,
            r.past_ttl,
        );
        if admin.wal_scrubbed() == Some(false) {
            eprintln!("{WAL_NOT_SCRUBBED}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
