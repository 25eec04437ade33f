//! `panvault quickstart`: a working vault for a first try, in one command.
//!
//! Makes (or reuses) in DIR: a development passphrase (`dev-passphrase`, mode 0600),
//! the vault, a development PKI in `pki/` (CA, a localhost server certificate,
//! three clients of two shops and a `monitor` that may only read `/metrics`), and
//! `panvault.toml`; then serves in the foreground and prints curl commands to
//! paste. Development only: the passphrase and the CA key sit in
//! plain files beside the data.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::tls::pki;
use panvault_vault::{DataDir, SealSpec, Unlock, Vault, system_clock};

use crate::common::{CliError, DataDirArg, read_passphrase, vault_err};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Address to listen on [default: 127.0.0.1:8443, or what DIR/panvault.toml says].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Keep the vault in this PostgreSQL database instead of SQLite (recorded as
    /// `[storage]` in DIR/panvault.toml; the password is never printed).
    #[arg(
        long,
        value_name = "URL",
        env = "PANVAULT_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
}

/// The default listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The development clients: name, tenant, permissions.
const CLIENTS: &[(&str, &str, &[&str])] = &[
    (
        "storefront",
        "demo-shop",
        &["tokenize", "read", "delete", "erase"],
    ),
    ("payments", "demo-shop", &["read", "detokenize"]),
    (
        "other-shop",
        "other-shop",
        &["tokenize", "read", "detokenize"],
    ),
    // Scrapes /metrics and can do nothing else (the figures cover every tenant).
    ("monitor", "monitoring", &["metrics"]),
];

fn io(path: &Path, e: &std::io::Error) -> CliError {
    CliError::usage(format!("{}: {e}", path.display()))
}

/// Reads `DIR/dev-passphrase`, or makes it: 32 random bytes as hex, mode 0600.
fn dev_passphrase(dir: &Path) -> Result<PathBuf, CliError> {
    let path = DataDir::new(dir).dev_passphrase();
    if !path.exists() {
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        panvault_vault::core::rng::fill(raw.as_mut())
            .map_err(|e| CliError::usage(format!("random passphrase: {e}")))?;
        let mut hex = zeroize::Zeroizing::new(String::with_capacity(65));
        for b in raw.iter() {
            let _ = write!(hex, "{b:02x}");
        }
        hex.push('\n');
        pki::write_private(&path, hex.as_bytes()).map_err(|e| CliError::usage(e.to_string()))?;
    }
    Ok(path)
}

/// The first lines of a configuration quickstart writes.
const CONFIG_HEADER: &str = "# panvault development configuration, written by `panvault quickstart`.\n\
                             # Relative paths are relative to this file. See docs/config.md.\n";

/// The settings of a development configuration, by top-level key: the plain
/// keys first (TOML wants them before any table), then the tables.
fn config_parts(listen: SocketAddr) -> Vec<(&'static str, String)> {
    let (server_cert, server_key) = DataDir::pki_pair_relative(DataDir::PKI_SERVER);
    let (ca_cert, _) = DataDir::pki_pair_relative(DataDir::PKI_CA);
    let mut clients = String::new();
    for (name, tenant, perms) in CLIENTS {
        let perms = perms
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            clients,
            "\n[[clients]]\nname = \"{name}\"\ncommon_name = \"{name}\"\ntenant = \"{tenant}\"\npermissions = [{perms}]\n"
        );
    }
    vec![
        ("listen", format!("listen = \"{listen}\"\n")),
        ("data_dir", "data_dir = \".\"\n".to_owned()),
        (
            "tls",
            format!(
                "\n[tls]\n\
                 cert = \"{server_cert}\"\n\
                 key = \"{server_key}\"\n\
                 client_ca = \"{ca_cert}\"\n"
            ),
        ),
        (
            "limits",
            "\n[limits]\n\
             body_bytes = 65536\n\
             batch_bytes = 2097152\n\
             handshake_timeout_ms = 5000\n\
             first_request_timeout_ms = 5000\n\
             max_connections = 1024\n\
             max_connections_per_client = 256\n"
                .to_owned(),
        ),
        ("clients", clients),
    ]
}

/// The keys written before any table.
const PLAIN_KEYS: &[&str] = &["listen", "data_dir"];

/// What `DIR/panvault.toml` should hold, if it must be written: a new file
/// (`existing` `None`), or the settings serving needs added to a file that
/// `init --postgres` or its owner began (e.g. only `[storage]`): that text is
/// kept as it is, its `[storage]` and any other table included, with the missing
/// plain keys put before it and the missing tables after it. `None`: the file
/// has them all and is used as it is (as a second quickstart reuses its own).
/// `postgres` goes into a new file only (an existing one has it recorded).
fn config_to_write(
    existing: Option<&str>,
    listen: SocketAddr,
    postgres: Option<&str>,
) -> Result<Option<String>, CliError> {
    let parts = config_parts(listen);
    let Some(text) = existing else {
        let mut s = CONFIG_HEADER.to_owned();
        for (_, part) in &parts {
            s.push_str(part);
        }
        if let Some(url) = postgres {
            s.push_str(&panvault_vault::config::StorageSettings::postgres_table(
                url,
            ));
        }
        return Ok(Some(s));
    };
    // Which keys it has, by parsing it (never by searching the text: a URL may
    // spell any word). The error names no line: it may hold the URL.
    let table: toml::Table = toml::from_str(text).map_err(|_| {
        CliError::usage("the existing panvault.toml is not valid TOML: fix it or remove it")
    })?;
    let missing: Vec<&(&str, String)> = parts
        .iter()
        .filter(|(key, _)| !table.contains_key(*key))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let mut s = String::from(
        "# Completed by `panvault quickstart` (the settings it needed were missing).\n",
    );
    for (key, part) in &missing {
        if PLAIN_KEYS.contains(key) {
            s.push_str(part);
        }
    }
    s.push('\n');
    s.push_str(text);
    if !text.ends_with('\n') {
        s.push('\n');
    }
    for (key, part) in &missing {
        if !PLAIN_KEYS.contains(key) {
            s.push_str(part);
        }
    }
    Ok(Some(s))
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let dir = args.data_dir.data_dir;
    let layout = DataDir::new(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(&dir, &e))?;
    }
    if args.postgres.is_some() {
        // A SQLite vault here would be left behind for a new, empty one.
        let in_sqlite = !panvault_vault::store::Location::of(&dir)
            .map_err(|e| CliError::usage(e.to_string()))?
            .is_postgres();
        if in_sqlite && layout.database().exists() {
            return Err(CliError::usage(format!(
                "{} holds a SQLite vault: move it with `panvault migrate --to-postgres`, \
                 or give another --data-dir",
                dir.display()
            )));
        }
    }
    let pass_file = dev_passphrase(&dir)?;
    eprintln!(
        "WARNING: development only. The vault passphrase is stored in {} and the CA key in {}, \
         beside the data they protect. Never put real card data in this vault.",
        pass_file.display(),
        DataDir::pki_pair(&layout.pki(), DataDir::PKI_CA)
            .1
            .display()
    );
    let unlock = || -> Result<Unlock, CliError> {
        Ok(Unlock::Passphrase(read_passphrase(
            Some(&pass_file),
            false,
        )?))
    };
    let config_path = layout.config();
    let fresh = !config_path.exists();
    if let Some(url) = &args.postgres {
        // Checked, and recorded in an existing file (a new one gets it below).
        super::init::record_postgres(&dir, url)?;
    }
    // Before the vault is made: `init` finds its engine in this file.
    let existing = if fresh {
        None
    } else {
        Some(std::fs::read_to_string(&config_path).map_err(|e| io(&config_path, &e))?)
    };
    let listen = args.listen.map_or_else(
        || {
            DEFAULT_LISTEN
                .parse()
                .map_err(|_| CliError::usage("bad default address"))
        },
        Ok,
    )?;
    if let Some(text) = config_to_write(existing.as_deref(), listen, args.postgres.as_deref())? {
        // The config names key files and clients: owner only (PCI DSS 7.2.1).
        panvault_vault::data_dir::write_owner_only(&config_path, text.as_bytes())
            .map_err(|e| io(&config_path, &e))?;
        eprintln!("panvault: wrote {}", config_path.display());
    }
    if !panvault_vault::service::inventory::vault_exists(&dir).map_err(vault_err)? {
        let spec = SealSpec {
            unlock: unlock()?,
            kdf: KdfParams::MINIMUM,
            shares: None,
        };
        Vault::init(&dir, &spec, &system_clock()).map_err(vault_err)?;
        eprintln!("panvault: created a vault in {}", dir.display());
    }
    let names: Vec<&str> = CLIENTS.iter().map(|(n, _, _)| *n).collect();
    let pki_dir = layout.pki();
    let made = pki::ensure_dev_pki(&pki_dir, &names)
        .map_err(|e| CliError::usage(format!("{}: {e}", pki_dir.display())))?;
    // Keys of the CA (which can mint a `payments` certificate) and of every client
    // live here: owner only, like the data directory around it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pki_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(&pki_dir, &e))?;
    }
    if !made.created.is_empty() {
        eprintln!(
            "panvault: wrote {} PKI files to {}",
            made.created.len(),
            pki_dir.display()
        );
    }
    let mut config = super::serve::load_config(&config_path)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let year = time::OffsetDateTime::now_utc().year() + 4;
    // A development vault is sealed with one passphrase, which fails the dual-control
    // check (PCI DSS 3.6.1.2): quickstart starts anyway, says so, and audits it.
    let noncompliant = super::serve::preflight(&config_path, true)?;
    super::serve::serve(&config, unlock()?, noncompliant, |addr| {
        print_ready(&dir, addr, year)
    })
}

/// Prints where the server is and curl commands to try it.
fn print_ready(dir: &Path, addr: SocketAddr, exp_year: i32) {
    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    let base = format!("https://{host}:{}", addr.port());
    let pki = DataDir::new(dir).pki();
    let curl = |client: &str| {
        format!(
            "curl -sS --cacert {ca} --cert {p}/{client}.pem --key {p}/{client}.key",
            ca = DataDir::pki_pair(&pki, DataDir::PKI_CA).0.display(),
            p = pki.display()
        )
    };
    println!("panvault quickstart: ready at {base} (Ctrl-C to stop)");
    println!();
    let tokenize = format!(
        "{} {base}/v1/tokens -H 'content-type: application/json' -d {}",
        curl("storefront"),
        example_body(exp_year)
    );
    println!("# 1. tokenize the test card 4242… as `storefront` (tenant demo-shop):");
    println!("{tokenize}");
    println!();
    println!(
        "# 2. the same card again gives the same token: keep it in TOKEN, read its metadata (never the number):"
    );
    println!("TOKEN=$({tokenize} | sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p'); echo $TOKEN");
    println!("{} {base}/v1/tokens/$TOKEN", curl("storefront"));
    println!();
    println!("# 3. detokenize as `payments` (storefront would get 403):");
    println!(
        "{} {base}/v1/tokens/$TOKEN/detokenize -H 'content-type: application/json' -d '{{\"purpose\":\"charge order 1234\"}}'",
        curl("payments")
    );
    println!();
    println!("# 4. another tenant cannot see it (404):");
    println!("{} {base}/v1/tokens/$TOKEN", curl("other-shop"));
    println!();
    println!(
        "# metrics, as `monitor` (it may read /metrics and nothing else; the shops' clients get 403):"
    );
    println!("{} {base}/metrics", curl("monitor"));
}

/// The body of the example tokenize request, as a shell word. The test card
/// number is spelled `$(printf 4242%.0s 1 2 3 4)` (the shell expands it), so
/// that neither the terminal nor a file in the data directory holds a card
/// number: any PAN scanner, ours included, flags even a public test card, and a
/// fresh vault must pass its own `data.no_clear_pan` and `access.file_modes`.
fn example_body(exp_year: i32) -> String {
    format!(
        "'{{\"card\":{{\"number\":\"'$(printf 4242%.0s 1 2 3 4)'\",\"exp_month\":12,\"exp_year\":{exp_year},\"name\":\"Jane Doe\"}},\"subject\":\"cust_42\"}}'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> panvault_vault::config::Config {
        toml::from_str(text).unwrap()
    }

    /// A new file holds every setting, the listen address given and the
    /// storage; a file that has them all is reused as it is; a file begun by
    /// `init --postgres` or its owner keeps its own text (its `[storage]`, a
    /// `url_file` included, and a comment) and gains the missing settings, the
    /// listen address given among them, whatever words its URL spells.
    #[test]
    fn config_is_written_new_completed_or_reused() {
        let listen: SocketAddr = "127.0.0.1:9443".parse().unwrap();
        let url = "postgres://listen:secret@127.0.0.1:5432/listen";
        let new = config_to_write(None, listen, Some(url)).unwrap().unwrap();
        let c = parse(&new);
        assert_eq!(c.listen, listen);
        assert_eq!(c.clients.len(), CLIENTS.len());
        assert_eq!(c.storage.unwrap().url(), Some(url));
        assert_eq!(config_to_write(Some(&new), listen, None).unwrap(), None);

        for begun in [
            "# mine\n[storage]\nengine = \"postgres\"\nurl_file = \"pg-url\"\n".to_owned(),
            panvault_vault::config::StorageSettings::postgres_table(url),
        ] {
            let done = config_to_write(Some(&begun), listen, Some("postgres://ignored@h/d"))
                .unwrap()
                .unwrap();
            assert!(done.contains(&begun), "{done}");
            assert!(!done.contains("ignored"), "{done}");
            let c = parse(&done);
            assert_eq!(c.listen, listen);
            assert_eq!(c.clients.len(), CLIENTS.len());
            let storage = c.storage.unwrap();
            assert_eq!(
                (storage.url(), storage.url_file.is_some()),
                if begun.contains("url_file") {
                    (None, true)
                } else {
                    (Some(url), false)
                }
            );
            assert_eq!(config_to_write(Some(&done), listen, None).unwrap(), None);
        }
        // Its own settings win over quickstart's.
        let own = "listen = \"0.0.0.0:1\"\n[limits]\nbody_bytes = 7\n";
        let done = config_to_write(Some(own), listen, None).unwrap().unwrap();
        let c = parse(&done);
        assert_eq!((c.listen.port(), c.limits.body_bytes), (1, 7));
        assert!(config_to_write(Some("listen = "), listen, None).is_err());
    }

    #[test]
    fn example_body_holds_no_card_number_but_expands_to_one() {
        let body = example_body(2030);
        assert!(
            !body.chars().any(|c| c.is_ascii_digit())
                || body
                    .split(|c: char| !c.is_ascii_digit())
                    .all(|run| run.len() < 12),
            "a digit run long enough to be a card number"
        );
        // What a POSIX shell makes of it.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {body}"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let number = v["card"]["number"].as_str().unwrap();
        assert!(number.len() == 16 && number.starts_with("4242") && number.ends_with("4242"));
        assert_eq!(v["card"]["exp_year"], 2030);
    }
}
