//! `panvault`: the admin's tool. This file only parses arguments, dispatches to one
//! function per subcommand and maps errors to exit codes.
#![forbid(unsafe_code)]

mod cmd;
mod common;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: an audited request allocates on a tokio
/// worker and frees on the writer thread (and back), and glibc's per-thread arenas
/// make each such free take the other arena's lock; with glibc the server spent
/// ~7 µs of its ~78 µs per audited detokenize in malloc and free.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// panvault — card tokenization vault and PCI DSS compliance toolkit.
#[derive(Debug, Parser)]
#[command(name = "panvault", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new vault (root key, first data key, fingerprint and audit keys).
    Init(cmd::init::Args),
    /// Data-encryption key management.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Run the vault's HTTPS API (mutual TLS).
    Serve(cmd::serve::Args),
    /// Make a development vault (passphrase, PKI, config) and serve it.
    Quickstart(cmd::quickstart::Args),
    /// Load generator: N keep-alive mTLS connections against a running server.
    Bench(cmd::bench::Args),
    /// Root key: rotate, change passphrase, reshare custodian shares.
    #[command(subcommand)]
    Master(cmd::master::Command),
    /// Erase a data subject's card data (GDPR Art. 17) with a signed receipt.
    Erase(cmd::erase::EraseArgs),
    /// Move a SQLite vault into an empty PostgreSQL database (`--to-postgres URL`).
    Migrate(cmd::migrate::Args),
    /// Card-data retention.
    #[command(subcommand)]
    Retention(cmd::erase::RetentionCommand),
    /// Find card numbers left in files and archives.
    Scan(cmd::scan::Args),
    /// Audit log (verify, export, checkpoint, verify-receipt) and compliance checks (`audit run`).
    #[command(subcommand)]
    Audit(cmd::audit::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing();
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Master(c) => cmd::master::run(c),
        Command::Erase(a) => cmd::erase::erase(a),
        Command::Migrate(a) => cmd::migrate::run(a),
        Command::Retention(c) => cmd::erase::retention(c),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Quickstart(args) => cmd::quickstart::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Audit(c) => cmd::audit::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("panvault: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command that takes `--data-dir` takes the one definition: same
    /// environment variable, same default, same help.
    #[test]
    fn every_data_dir_flag_is_the_shared_one() {
        fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_long() == Some("data-dir") {
                    found.push(path.to_owned());
                    assert_eq!(
                        arg.get_env().and_then(|e| e.to_str()),
                        Some("PANVAULT_DATA_DIR"),
                        "{path}"
                    );
                    assert_eq!(
                        arg.get_default_values(),
                        [crate::common::DEFAULT_DATA_DIR],
                        "{path}"
                    );
                    assert!(
                        arg.get_help()
                            .is_some_and(|h| h.to_string().contains("vault.db")),
                        "{path}"
                    );
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), "panvault", &mut found);
        for want in [
            "panvault init",
            "panvault quickstart",
            "panvault keys list",
            "panvault audit verify",
        ] {
            assert!(found.iter().any(|f| f == want), "{want}: {found:?}");
        }
    }

    /// Every `--flag` the compliance checks' remediations tell a reader to use.
    fn remediation_flags() -> Vec<(String, String)> {
        let mut out = Vec::new();
        for spec in panvault_audit::compliance::CHECKS {
            for word in spec
                .remediation
                .split(|c: char| c.is_whitespace() || c == '`')
            {
                if let Some(flag) = word.strip_prefix("--") {
                    let flag: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    if !flag.is_empty() {
                        out.push((spec.name.to_owned(), flag));
                    }
                }
            }
        }
        out
    }

    fn all_flags(cmd: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned)),
        );
        for sub in cmd.get_subcommands() {
            all_flags(sub, out);
        }
    }

    #[test]
    fn audit_help_names_audit_run() {
        let cli = super::Cli::command();
        let audit = cli.find_subcommand("audit").unwrap();
        let about = audit
            .get_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(about.contains("`audit run`"), "{about}");
    }

    #[test]
    fn remediations_name_only_flags_that_exist() {
        let mut flags = Vec::new();
        all_flags(&super::Cli::command(), &mut flags);
        for (check, flag) in remediation_flags() {
            assert!(
                flags.contains(&flag),
                "{check}'s remediation names --{flag}, which no panvault command has"
            );
        }
    }
}
