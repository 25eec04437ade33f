//! The server's configuration file (TOML): where to listen, the TLS material, the
//! data directory, limits, and the clients allowed in.
//!
//! ```toml
//! listen = "127.0.0.1:8443"
//! data_dir = "."                  # relative paths are relative to this file
//!
//! [tls]
//! cert = "pki/server.pem"
//! key = "pki/server.key"
//! client_ca = "pki/ca.pem"
//! crls = []                       # PEM or DER CRLs of the client CA
//! min_version = "1.2"             # or "1.3"
//!
//! [limits]                        # all optional; these are the defaults
//! body_bytes = 65536
//! batch_bytes = 2097152
//! batch_items = 1000
//! handshake_timeout_ms = 5000
//! header_read_timeout_ms = 30000
//! first_request_timeout_ms = 5000
//! max_connections = 1024
//! max_connections_per_client = 256
//! max_handshakes = 1024
//! max_handshakes_per_source = 64
//! shutdown_grace_ms = 30000
//!
//! [storage]                       # optional; without it: SQLite, DATA/vault.db
//! engine = "postgres"             # or "sqlite"
//! url_file = "pg.url"             # relative to data_dir; or url = "postgres://…"
//!
//! [[clients]]
//! name = "storefront"
//! common_name = "storefront"      # or uri_san = "spiffe://shop/storefront"
//! tenant = "demo-shop"
//! permissions = ["tokenize", "read", "delete", "erase"]
//! ```
//!
//! Unknown fields are refused, and every error names the field it is about.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod lenient;
mod relay;
pub use lenient::{LenientClient, LenientConfig};
pub(crate) use relay::is_header_name;
pub use relay::{
    Destination, MAX_CVC_TTL_SECS, RelaySettings, SigningAlgorithm, SigningEncoding, SigningRule,
    Target, is_destination_name, parse_target,
};

/// A configuration problem: the field (as a TOML path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `clients[1].tenant`, or `$` for the file itself.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// `POST /v1/tokens`, `POST /v1/tokens/batch`.
    Tokenize,
    /// `GET /v1/tokens/{token}`.
    Read,
    /// `POST /v1/tokens/{token}/detokenize`.
    Detokenize,
    /// `DELETE /v1/tokens/{token}`.
    Delete,
    /// Erasure of a data subject's cards.
    Erase,
    /// `GET /metrics` (request counts and latencies of every tenant, the number
    /// of tokens stored): for monitoring, not for a shop's own clients.
    Metrics,
    /// `POST /v1/relay/{destination}` (and only to destinations that list the client).
    Relay,
}

impl Permission {
    /// The name used in the configuration and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Tokenize => "tokenize",
            Permission::Read => "read",
            Permission::Detokenize => "detokenize",
            Permission::Delete => "delete",
            Permission::Erase => "erase",
            Permission::Metrics => "metrics",
            Permission::Relay => "relay",
        }
    }

    /// Every permission over card data (what a catch-all client would hold);
    /// `metrics` touches no card data and is not among them. Nor is `relay`: it
    /// reaches only destinations that list the client, and a client holding the
    /// five below is a catch-all whether or not it may also relay.
    pub const ALL: [Permission; 5] = [
        Permission::Tokenize,
        Permission::Read,
        Permission::Detokenize,
        Permission::Delete,
        Permission::Erase,
    ];
}

/// Lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Server private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Certificate revocation lists of the client CA (PEM or DER).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Lowest TLS version: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, except batches (bytes).
    pub body_bytes: usize,
    /// Largest batch request body (bytes).
    pub batch_bytes: usize,
    /// Most items in one batch.
    pub batch_items: usize,
    /// A TLS handshake must finish within this (milliseconds).
    pub handshake_timeout_ms: u64,
    /// Request headers must arrive within this, and a connection with no request
    /// in flight for this long is closed (milliseconds).
    pub header_read_timeout_ms: u64,
    /// A new connection that starts no request within this is closed
    /// (milliseconds), on HTTP/1 and HTTP/2 alike.
    pub first_request_timeout_ms: u64,
    /// Most connections (TLS handshake done) open at once; a further one waits up
    /// to `handshake_timeout_ms` for a slot, then is closed.
    pub max_connections: usize,
    /// Most connections one client (the configured client its certificate matches;
    /// all unmatched certificates count as one) may hold at once; a further one is
    /// closed right after its handshake.
    pub max_connections_per_client: usize,
    /// Most TLS handshakes in progress at once; a socket arriving beyond it is
    /// closed at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes in progress from one source address; a socket arriving
    /// beyond it is closed at once.
    pub max_handshakes_per_source: usize,
    /// On shutdown, in-flight requests get this long to finish (milliseconds).
    pub shutdown_grace_ms: u64,
    /// Detokenize requests per second allowed to each client on average; 0 = no limit.
    pub detokenize_per_second: f64,
    /// Bursts of detokenize requests a client may make at once (default: one
    /// second's worth).
    pub detokenize_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            batch_bytes: 2 * 1024 * 1024,
            batch_items: 1000,
            handshake_timeout_ms: 5_000,
            header_read_timeout_ms: 30_000,
            first_request_timeout_ms: 5_000,
            max_connections: 1024,
            max_connections_per_client: 256,
            max_handshakes: 1024,
            max_handshakes_per_source: 64,
            shutdown_grace_ms: 30_000,
            detokenize_per_second: 0.0,
            detokenize_burst: 0,
        }
    }
}

impl Limits {
    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// How long a new connection may take to start its first request.
    pub fn first_request_timeout(&self) -> Duration {
        Duration::from_millis(self.first_request_timeout_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// One `[[clients]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A label for the client (unique), used in logs and by `panvault bench --client`.
    pub name: String,
    /// Match certificates with this subject common name. If neither this nor
    /// `uri_san` is given, the common name is `name`.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Match certificates carrying this URI subject alternative name (e.g. SPIFFE).
    #[serde(default)]
    pub uri_san: Option<String>,
    /// The tenant whose tokens this client works with.
    pub tenant: String,
    /// What it may do.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

impl ClientConfig {
    /// Whether the client has `p`.
    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:8443` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The vault's data directory.
    pub data_dir: PathBuf,
    /// TLS material.
    pub tls: TlsSettings,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Who may connect, and what they may do.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Card-data retention (PCI DSS 3.2.1).
    #[serde(default)]
    pub retention: Retention,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditSettings,
    /// The relay to payment providers; absent: no relay, and no security codes
    /// accepted at tokenization.
    #[serde(default)]
    pub relay: Option<RelaySettings>,
    /// Where the data lives (absent: SQLite in the data directory).
    #[serde(default)]
    pub storage: Option<StorageSettings>,
}

/// The storage engine of `[storage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// One SQLite file in the data directory (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by several nodes.
    Postgres,
}

/// `[storage]`: the engine, and for PostgreSQL its URL or a file holding it (the
/// file keeps the password out of this one). Never printed with the URL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `sqlite` or `postgres`.
    #[serde(default)]
    pub engine: Engine,
    /// `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=…` (see the PostgreSQL
    /// settings for the parameters).
    #[serde(default)]
    url: Option<RedactedUrl>,
    /// A file whose first line is the URL, relative to the data directory.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

/// A URL that may hold a password: zeroized when dropped, never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct RedactedUrl(#[serde(deserialize_with = "zeroizing")] zeroize::Zeroizing<String>);

fn zeroizing<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<zeroize::Zeroizing<String>, D::Error> {
    String::deserialize(d).map(zeroize::Zeroizing::new)
}

impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageSettings")
            .field("engine", &self.engine)
            .field("url", &self.url.as_ref().map(|_| "[REDACTED]"))
            .field("url_file", &self.url_file)
            .finish()
    }
}

impl StorageSettings {
    /// PostgreSQL at `url` (written into a configuration by `init --postgres`).
    pub fn postgres_url(url: &str) -> StorageSettings {
        StorageSettings {
            engine: Engine::Postgres,
            url: Some(RedactedUrl(zeroize::Zeroizing::new(url.to_owned()))),
            url_file: None,
        }
    }

    /// The `[storage]` table naming PostgreSQL at `url`, as TOML text.
    pub fn postgres_table(url: &str) -> String {
        format!(
            "\n[storage]\nengine = \"postgres\"\nurl = {}\n",
            toml::Value::String(url.to_owned())
        )
    }

    /// Records PostgreSQL at `url` in `DATA/panvault.toml` (`init --postgres`):
    /// the table is appended (the file made, owner only, if there is none), so
    /// every admin command finds the engine from `--data-dir`. A file that names
    /// another storage already is refused, never rewritten.
    pub fn record_postgres(data_dir: &Path, url: &str) -> Result<(), ConfigError> {
        let path = crate::DataDir::new(data_dir).config();
        let field = || path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ConfigError::new(field(), e.to_string())),
        };
        if let Some(existing) = StorageSettings::from_config_text(&text)? {
            if existing.engine == Engine::Postgres && existing.url() == Some(url) {
                return Ok(());
            }
            return Err(ConfigError::new(
                field(),
                "already has a [storage] table naming another database; edit it by hand",
            ));
        }
        let mut all = text;
        all.push_str(&StorageSettings::postgres_table(url));
        crate::data_dir::write_owner_only(&path, all.as_bytes())
            .map_err(|e| ConfigError::new(field(), e.to_string()))
    }

    /// The URL, if given inline.
    pub fn url(&self) -> Option<&str> {
        self.url.as_ref().map(|u| u.0.as_str())
    }

    /// The `[storage]` table of a configuration text (`None` when it has none),
    /// whatever else the text holds. Errors describe the table, never quote it.
    pub fn from_config_text(text: &str) -> Result<Option<StorageSettings>, ConfigError> {
        #[derive(Deserialize)]
        struct OnlyStorage {
            #[serde(default)]
            storage: Option<StorageSettings>,
        }
        let only: OnlyStorage = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold the URL.
            let what = e.message().lines().next().unwrap_or("malformed").to_owned();
            let safe = if what.contains("://") {
                "malformed".to_owned()
            } else {
                what
            };
            ConfigError::new("storage", safe)
        })?;
        Ok(only.storage)
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Cards are purged this many days after their expiry month ends.
    pub card_grace_days: i64,
    /// How often the server purges (seconds); 0 turns the automatic purge off.
    pub purge_interval_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            card_grace_days: 90,
            purge_interval_secs: 3600,
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Events younger than this are never deleted (PCI DSS 10.5.1: at least 365).
    pub retention_days: i64,
    /// Sign a checkpoint after this many events…
    pub checkpoint_every_events: u64,
    /// …or this many seconds, whichever comes first (an idle server signs its
    /// tail within this time too).
    pub checkpoint_every_secs: u64,
    /// A file outside the data directory to which every checkpoint the server
    /// signs is appended (one JSON line each, synced): a witness copy for a log
    /// shipper, given back with `panvault audit verify --checkpoint FILE`.
    pub checkpoint_witness: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention_days: 365,
            checkpoint_every_events: 1000,
            checkpoint_every_secs: 60,
            checkpoint_witness: None,
        }
    }
}

impl Config {
    /// Reads, parses and checks the file at `path`. Relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("$", format!("{}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::parse(&text)?;
        config.resolve_paths(&base);
        config.check_files()?;
        Ok(config)
    }

    /// Parses and checks a configuration text (paths are left as written).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(toml_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        self.tls.crls.iter_mut().for_each(fix);
        if let Some(w) = &mut self.audit.checkpoint_witness {
            fix(w);
        }
        if let Some(r) = &mut self.relay {
            r.resolve_paths(base);
        }
    }

    /// Checks that the TLS files exist and are readable.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut files = vec![
            ("tls.cert".to_owned(), &self.tls.cert),
            ("tls.key".to_owned(), &self.tls.key),
            ("tls.client_ca".to_owned(), &self.tls.client_ca),
        ];
        files.extend(
            self.tls
                .crls
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("tls.crls[{i}]"), p)),
        );
        let mut files: Vec<(String, &Path)> =
            files.into_iter().map(|(f, p)| (f, p.as_path())).collect();
        if let Some(r) = &self.relay {
            files.extend(r.files());
        }
        for (field, p) in files {
            std::fs::File::open(p)
                .map_err(|e| ConfigError::new(field, format!("{}: {e}", p.display())))?;
        }
        if let Some(w) = &self.audit.checkpoint_witness
            && !w.parent().is_some_and(Path::is_dir)
        {
            return Err(ConfigError::new(
                "audit.checkpoint_witness",
                format!("{}: its directory does not exist", w.display()),
            ));
        }
        Ok(())
    }

    /// Checks values serde cannot: names, tenants, duplicates, limit ranges. Fills
    /// in each client's default common name.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let l = &self.limits;
        range("limits.body_bytes", l.body_bytes, 1024, 16 * 1024 * 1024)?;
        range(
            "limits.batch_bytes",
            l.batch_bytes,
            l.body_bytes,
            64 * 1024 * 1024,
        )
        .map_err(|e| {
            ConfigError::new(
                e.field,
                format!("{} (and at least limits.body_bytes)", e.reason),
            )
        })?;
        range("limits.batch_items", l.batch_items, 1, 10_000)?;
        range(
            "limits.handshake_timeout_ms",
            l.handshake_timeout_ms,
            100,
            120_000,
        )?;
        range(
            "limits.header_read_timeout_ms",
            l.header_read_timeout_ms,
            100,
            600_000,
        )?;
        range(
            "limits.first_request_timeout_ms",
            l.first_request_timeout_ms,
            100,
            600_000,
        )?;
        range("limits.max_connections", l.max_connections, 1, 1_000_000)?;
        range(
            "limits.max_connections_per_client",
            l.max_connections_per_client,
            1,
            1_000_000,
        )?;
        range("limits.max_handshakes", l.max_handshakes, 1, 1_000_000)?;
        range(
            "limits.max_handshakes_per_source",
            l.max_handshakes_per_source,
            1,
            1_000_000,
        )?;
        range("limits.shutdown_grace_ms", l.shutdown_grace_ms, 0, 600_000)?;
        if !(0.0..=1_000_000.0).contains(&l.detokenize_per_second) {
            return Err(ConfigError::new(
                "limits.detokenize_per_second",
                "must be 0 (no limit) to 1000000",
            ));
        }
        range("limits.detokenize_burst", l.detokenize_burst, 0, 1_000_000)?;
        range(
            "retention.card_grace_days",
            self.retention.card_grace_days,
            0,
            3650,
        )?;
        range(
            "retention.purge_interval_secs",
            self.retention.purge_interval_secs,
            0,
            30 * 86_400,
        )?;
        range(
            "audit.retention_days",
            self.audit.retention_days,
            365,
            36_500,
        )
        .map_err(|e| {
            ConfigError::new(
                e.field,
                format!("{} (PCI DSS 10.5.1 asks for at least a year)", e.reason),
            )
        })?;
        range(
            "audit.checkpoint_every_events",
            self.audit.checkpoint_every_events,
            1,
            1_000_000,
        )?;
        range(
            "audit.checkpoint_every_secs",
            self.audit.checkpoint_every_secs,
            1,
            86_400,
        )?;
        if let Some(w) = &self.audit.checkpoint_witness
            && (w.as_os_str().is_empty() || w.starts_with(&self.data_dir))
        {
            // A copy inside the data directory goes wherever the database goes
            // (deleted, rolled back or restored with it): it witnesses nothing.
            return Err(ConfigError::new(
                "audit.checkpoint_witness",
                "must be a file outside data_dir",
            ));
        }
        if self.clients.is_empty() {
            return Err(ConfigError::new(
                "clients",
                "at least one [[clients]] entry is required",
            ));
        }
        let mut names = HashSet::new();
        let mut cns = HashSet::new();
        let mut uris = HashSet::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let at = |f: &str| format!("clients[{i}].{f}");
            if !is_label(&c.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "1 to 64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("duplicate client name {:?}", c.name),
                ));
            }
            crate::service::validate_tenant(&c.tenant).map_err(|_| {
                ConfigError::new(at("tenant"), "1 to 64 characters of A-Z a-z 0-9 . _ -")
            })?;
            if c.common_name.is_none() && c.uri_san.is_none() {
                c.common_name = Some(c.name.clone());
            }
            if let Some(cn) = &c.common_name {
                if cn.is_empty() || cn.len() > 256 || cn.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        at("common_name"),
                        "1 to 256 printable characters",
                    ));
                }
                if !cns.insert(cn.clone()) {
                    return Err(ConfigError::new(
                        at("common_name"),
                        format!("{cn:?} is already used by another client"),
                    ));
                }
            }
            if let Some(uri) = &c.uri_san {
                if !uri.contains(':')
                    || uri.len() > 2048
                    || uri.chars().any(|ch| ch.is_control() || ch.is_whitespace())
                {
                    return Err(ConfigError::new(
                        at("uri_san"),
                        "must be an absolute URI, e.g. spiffe://example.org/storefront",
                    ));
                }
                if !uris.insert(uri.clone()) {
                    return Err(ConfigError::new(
                        at("uri_san"),
                        format!("{uri:?} is already used by another client"),
                    ));
                }
            }
            let mut seen = HashSet::new();
            c.permissions.retain(|p| seen.insert(*p));
        }
        if let Some(r) = &mut self.relay {
            let clients: HashSet<&str> = self.clients.iter().map(|c| c.name.as_str()).collect();
            r.validate(&clients)?;
        }
        Ok(())
    }

    /// How long a security code given at tokenization is held: `None` when no
    /// relay is configured (codes are then refused).
    pub fn cvc_ttl(&self) -> Option<Duration> {
        self.relay.as_ref().map(RelaySettings::cvc_ttl)
    }

    /// The client named `name`.
    pub fn client(&self, name: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.name == name)
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::new(
            field,
            format!("{v} is out of range ({lo} to {hi})"),
        ));
    }
    Ok(())
}

/// Turns toml's error (which shows the offending line and names the key) into a
/// [`ConfigError`] whose field is the key when toml tells it.
fn toml_error(e: toml::de::Error) -> ConfigError {
    let msg = e.message().to_owned();
    // "missing field `x`" / "unknown field `x`, expected …" / "unknown variant `x`, …"
    let field = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.starts_with("missing field") || msg.starts_with("unknown field"))
        .map(str::to_owned)
        .unwrap_or_else(|| "$".to_owned());
    let detail = e.to_string().trim_end().to_owned();
    // The full text quotes the offending line: never one that may hold a
    // database URL (and its password).
    let detail = if detail.contains("://") { msg } else { detail };
    ConfigError::new(field, detail)
}

#[cfg(test)]
mod tests;
