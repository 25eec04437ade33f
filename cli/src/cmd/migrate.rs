//! `panvault migrate --to-postgres URL`: move a SQLite vault into an empty
//! PostgreSQL database; afterwards every command of the data directory finds it
//! there.
use std::path::PathBuf;
use std::process::ExitCode;

use zeroize::Zeroizing;

use crate::cmd::keys::Common;
use crate::common::{CliError, admin_actor, vault_err};

/// Move the vault (keys, cards, erasure records, held security codes, idempotent
/// answers, the audit log) into PostgreSQL.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The empty PostgreSQL database: `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=…`
    /// (a password here is visible to other local users while this runs: prefer
    /// --to-postgres-file).
    #[arg(
        long = "to-postgres",
        value_name = "URL",
        env = "PANVAULT_POSTGRES_URL",
        hide_env_values = true,
        conflicts_with = "to_postgres_file",
        required_unless_present = "to_postgres_file"
    )]
    pub to_postgres: Option<String>,
    /// A file whose first line is that URL.
    #[arg(long = "to-postgres-file", value_name = "FILE")]
    pub to_postgres_file: Option<PathBuf>,
}

/// Runs `migrate`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let url = match (&a.to_postgres, &a.to_postgres_file) {
        (Some(u), _) => Zeroizing::new(u.clone()),
        (None, Some(f)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|e| CliError::usage(format!("{}: {e}", f.display())))?,
            );
            Zeroizing::new(text.lines().next().unwrap_or_default().trim().to_owned())
        }
        (None, None) => return Err(CliError::usage("give --to-postgres or --to-postgres-file")),
    };
    let unlock = a.common.secret.unlock_for(&a.common.data_dir)?;
    let m = panvault_vault::service::migrate::migrate_to_postgres(
        &a.common.data_dir,
        &unlock,
        &url,
        &admin_actor(),
    )
    .map_err(vault_err)?;
    crate::outln!(
        "Moved the vault into {} (schema version {}):",
        m.target,
        m.moved.schema_version
    );
    for (table, rows) in &m.moved.tables {
        crate::outln!("  {table:<18} {rows:>10}");
    }
    crate::outln!(
        "The audit log is node {}'s chain: its events as they were, then its registration, under a new cluster checkpoint naming its head (the {} SQLite checkpoints verified before the move; they are signed over the single-chain form PostgreSQL does not keep).",
        m.moved.audit_node,
        m.moved.sqlite_checkpoints
    );
    crate::outln!(
        "{} now names PostgreSQL ([storage]); admin commands with this --data-dir use it.",
        m.config.display()
    );
    crate::outln!(
        "A server started with its own --config needs the same [storage] table. {} was left as it was: keep it as a copy or remove it.",
        m.sqlite.display()
    );
    Ok(ExitCode::SUCCESS)
}
