//! What every subcommand shares: the error type and its exit codes, tracing set-up.
use std::fmt;

/// An error a subcommand ends with; `main` prints it and exits with its code.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// A usage or input error (exit 1; clap itself uses 2 for argument errors).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 1,
        }
    }

    /// An error with an explicit exit code.
    pub fn with_code(message: impl Into<String>, code: u8) -> Self {
        CliError {
            message: message.into(),
            code,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Logs to stderr, filtered by `PANVAULT_LOG` (default `warn`), with
/// [`panvault_vault::tls::LOG_DIRECTIVES`] and
/// [`panvault_vault::store::pg::LOG_DIRECTIVES`], each unless `PANVAULT_LOG` names
/// its crate.
pub fn init_tracing() {
    let spec = std::env::var("PANVAULT_LOG").unwrap_or_else(|_| "warn".to_owned());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let directives = panvault_vault::tls::LOG_DIRECTIVES
        .iter()
        .chain(panvault_vault::store::pg::LOG_DIRECTIVES);
    for d in directives {
        let krate = d.split([':', '=']).next().unwrap_or(d);
        if spec.contains(krate) {
            continue;
        }
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

use std::path::{Path, PathBuf};

use panvault_vault::{SecretText, Unlock};

/// The default data directory (`--data-dir`).
pub const DEFAULT_DATA_DIR: &str = "./panvault-data";

/// `--data-dir`: the one definition every command that works on a vault's files
/// flattens in (`#[command(flatten)]`), so the flag, its environment variable and
/// its default cannot drift between commands.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// The vault's data directory (holds vault.db, serve.lock and audit-signing.pub).
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        env = "PANVAULT_DATA_DIR",
        default_value = DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,
}

impl DataDirArg {
    /// The directory and the names of the files in it.
    pub fn layout(&self) -> panvault_vault::DataDir {
        panvault_vault::DataDir::new(&self.data_dir)
    }
}

impl std::ops::Deref for DataDirArg {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.data_dir
    }
}

impl AsRef<Path> for DataDirArg {
    fn as_ref(&self) -> &Path {
        &self.data_dir
    }
}

/// Parses a duration: a number (decimals allowed) and a unit, `ms`, `s`, `m`,
/// `h` or `d` (`500ms`, `1.5s`, `5m`, `2h`, `1d`); a plain number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 500ms, 10s, 5m, 2h or 1d"))?;
    let per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    std::time::Duration::try_from_secs_f64(n * per_unit).map_err(|e| format!("{s:?}: {e}"))
}

/// Where the passphrase comes from, in order: `--passphrase-file`, the
/// `PANVAULT_PASSPHRASE` environment variable, a no-echo prompt on the terminal.
///
/// An environment variable cannot be taken back out of the process (removing it is
/// `unsafe` in Rust 2024 and this crate forbids `unsafe`): `PANVAULT_PASSPHRASE`
/// stays in the process environment until it exits. The process is made
/// non-dumpable before the secret is read, so other processes of the same user
/// cannot read `/proc/PID/environ`, and the CLI starts no other program that could
/// inherit it. A file (or the prompt) is still the better choice.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// Read the passphrase from this file (first line). Prefer this to the
    /// PANVAULT_PASSPHRASE environment variable, which stays in the process
    /// environment for as long as the process runs.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A custodian share file (repeat for each share) for vaults sealed with shares.
    #[arg(long = "share", value_name = "FILE")]
    pub shares: Vec<PathBuf>,
}

impl SecretArgs {
    /// Reads the passphrase (or shares) and returns what unseals the vault. Use
    /// [`SecretArgs::unlock_for`] when the vault exists, so a share-sealed vault
    /// prompts for shares.
    pub fn unlock(&self, confirm: bool) -> Result<Unlock, CliError> {
        harden_admin();
        if !self.shares.is_empty() {
            return read_shares(&self.shares);
        }
        Ok(Unlock::Passphrase(read_passphrase(
            self.passphrase_file.as_deref(),
            confirm,
        )?))
    }

    /// What unseals the existing vault in `data_dir`: its shares if it is sealed
    /// with custodian shares (from `--share`, or prompted for), else the passphrase.
    pub fn unlock_for(&self, data_dir: &Path) -> Result<Unlock, CliError> {
        harden_admin();
        if !self.shares.is_empty() {
            return read_shares(&self.shares);
        }
        let (method, threshold) =
            panvault_vault::service::inventory::seal_method(data_dir).map_err(vault_err)?;
        if method != "shamir" {
            return self.unlock(false);
        }
        // A share seal records its threshold; one without has a damaged seal row.
        let need = usize::from(threshold.ok_or_else(|| {
            CliError::usage(format!(
                "{}: the vault's seal names no share threshold; the database is damaged",
                data_dir.display()
            ))
        })?);
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(CliError::usage(format!(
                "this vault is sealed with custodian shares: pass --share FILE at least {need} times"
            )));
        }
        let mut paths = Vec::new();
        while paths.len() < need {
            eprint!("Custodian share file {} of {need}: ", paths.len() + 1);
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CliError::usage(e.to_string()))?;
            let line = line.trim();
            if line.is_empty() {
                return Err(CliError::usage("not enough shares given"));
            }
            paths.push(PathBuf::from(line));
        }
        read_shares(&paths)
    }
}

fn read_shares(paths: &[PathBuf]) -> Result<Unlock, CliError> {
    let mut shares = Vec::with_capacity(paths.len());
    for p in paths {
        shares.push(panvault_vault::service::shamir::ShareFile::read(p).map_err(vault_err)?);
    }
    Ok(Unlock::Shares(shares))
}

/// Reads a passphrase from `file`, `PANVAULT_PASSPHRASE`, or the terminal.
pub fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<SecretText, CliError> {
    let text = if let Some(f) = file {
        let raw = zeroize::Zeroizing::new(
            std::fs::read_to_string(f)
                .map_err(|e| CliError::usage(format!("{}: {e}", f.display())))?,
        );
        raw.lines().next().unwrap_or_default().to_owned()
    } else if let Ok(p) = std::env::var("PANVAULT_PASSPHRASE") {
        p
    } else {
        let p = rpassword::prompt_password("Vault passphrase: ")
            .map_err(|e| CliError::usage(format!("cannot read the passphrase from the terminal ({e}); use PANVAULT_PASSPHRASE or --passphrase-file")))?;
        if confirm {
            let again = zeroize::Zeroizing::new(
                rpassword::prompt_password("Repeat the passphrase: ")
                    .map_err(|e| CliError::usage(e.to_string()))?,
            );
            if *again != p {
                return Err(CliError::usage("the passphrases do not match"));
            }
        }
        p
    };
    let text = SecretText::new(text);
    if text.expose_secret().is_empty() {
        return Err(CliError::usage("the passphrase is empty"));
    }
    Ok(text)
}

/// Maps a vault error to a CLI error: wrong secret, missing vault and usage
/// problems exit 1 with the message; unavailable storage exits 75 (EX_TEMPFAIL).
pub fn vault_err(e: panvault_vault::VaultError) -> CliError {
    // The operator sees the causes too (the OS error, SQLite's, the audit log's).
    if e.is_unavailable() {
        CliError::with_code(e.with_causes(), 75)
    } else {
        CliError::usage(e.with_causes())
    }
}

/// The audit actor of this admin command: `admin:<login name>` of the real
/// uid, `admin:uid:<n>` when `/etc/passwd` has no name for it
/// ([`panvault_vault::hygiene::admin_actor_name`]). Never `$USER`.
pub fn admin_actor() -> panvault_vault::AccessContext {
    panvault_vault::AccessContext {
        actor: panvault_vault::hygiene::admin_actor_name(),
        ..Default::default()
    }
}

/// The server's process hygiene for an admin command about to read a secret or
/// unseal the root key: no core dumps, non-dumpable. Idempotent.
pub fn harden_admin() {
    let h = panvault_vault::hygiene::harden_admin_process();
    for w in &h.warnings {
        tracing::warn!("{w}");
    }
}

/// `println!` that never panics: a closed stdout (e.g. `| head`) is ignored.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn one_duration_syntax_for_every_command() {
        for (text, want) in [
            ("90", Duration::from_secs(90)),
            ("90s", Duration::from_secs(90)),
            (" 10s ", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "s", "5w", "-1s", "1e400s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
