//! `[relay]`: the payment providers the vault may forward card data to, and the
//! limits of that path.
//!
//! ```toml
//! [relay]                         # all optional except the destinations; defaults shown
//! cvc_ttl_secs = 900              # how long a security code is held (at most 3600)
//! connect_timeout_secs = 5
//! timeout_secs = 30               # the whole exchange with the provider
//! request_bytes = 65536           # largest body sent to a provider (after substitution)
//! response_bytes = 1048576        # largest answer read from a provider
//! max_headers = 32                # caller headers forwarded, at most
//! header_bytes = 8192             # their names and values together, at most
//!
//! [[relay.destinations]]
//! name = "psp"                                  # [a-z0-9-]{1,32}
//! url = "https://api.psp.example/v1/charges"    # fixed scheme, host, port and path
//! ca_file = "psp-ca.pem"                        # optional; default: the system's roots
//! clients = ["storefront"]                      # which clients may relay here
//! client_cert = "psp-client.pem"                # optional, with client_key: mutual TLS
//! client_key = "psp-client.key"
//!
//! [relay.destinations.signing]                  # optional
//! algorithm = "hmac-sha256"                     # or "hmac-sha512", "sha384"
//! secret_file = "psp-secret"                    # the merchant secret (bytes of the file)
//! fields = ["amount", "card.number"]            # optional: sign these JSON fields, not the body
//! separator = ""                                # between the fields' values
//! header = "x-signature"                        # where the result goes: a header…
//! # field = "sign"                              # …or a top-level JSON string field
//! encoding = "hex"                              # or "base64"
//! ```
//!
//! Destinations are configuration, never request input: a caller names one and
//! cannot change where it points (no SSRF).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, range};

/// The longest a security code may be held, whatever the configuration says.
pub const MAX_CVC_TTL_SECS: u64 = 3600;

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// How long a security code given at tokenization is held (seconds, 1 to 3600).
    pub cvc_ttl_secs: u64,
    /// Connecting to a provider (TCP and TLS) must finish within this (seconds).
    pub connect_timeout_secs: u64,
    /// The whole exchange with a provider must finish within this (seconds).
    pub timeout_secs: u64,
    /// Largest body sent to a provider, after substitution (bytes).
    pub request_bytes: usize,
    /// Largest answer body read from a provider (bytes); a longer one is a 502.
    pub response_bytes: usize,
    /// Most caller headers forwarded to a provider.
    pub max_headers: usize,
    /// Caller headers' names and values together, at most (bytes).
    pub header_bytes: usize,
    /// Where the vault may relay to.
    pub destinations: Vec<Destination>,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            cvc_ttl_secs: 900,
            connect_timeout_secs: 5,
            timeout_secs: 30,
            request_bytes: 64 * 1024,
            response_bytes: 1024 * 1024,
            max_headers: 32,
            header_bytes: 8 * 1024,
            destinations: Vec::new(),
        }
    }
}

impl RelaySettings {
    /// How long a security code is held.
    pub fn cvc_ttl(&self) -> Duration {
        Duration::from_secs(self.cvc_ttl_secs)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// The total timeout of one exchange with a provider.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The destination named `name`.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// One `[[relay.destinations]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// What callers name in `POST /v1/relay/{name}`: `[a-z0-9-]{1,32}`.
    pub name: String,
    /// Where requests go: `https://host[:port]/path[?query]`, nothing else.
    pub url: String,
    /// CA certificates (PEM) the provider's certificate must chain to; default:
    /// the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The clients (by `[[clients]] name`) that may relay here.
    pub clients: Vec<String>,
    /// A client certificate chain (PEM) for providers that require mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// A signature the vault computes over the resolved request.
    #[serde(default)]
    pub signing: Option<SigningRule>,
    /// The parts of `url`, filled in by validation.
    #[serde(skip)]
    target: Option<Target>,
}

/// The checked parts of a destination's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (443 when the URL names none).
    pub port: u16,
    /// Path and query, as written (at least `/`).
    pub path_and_query: String,
    /// The URL with its port written out.
    pub uri: String,
}

impl Destination {
    /// The checked URL (set once the configuration is validated).
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Whether the client named `client` may relay here.
    pub fn allows(&self, client: &str) -> bool {
        self.clients.iter().any(|c| c == client)
    }
}

/// The signing algorithms a destination may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    /// HMAC-SHA256 keyed with the secret.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// HMAC-SHA512 keyed with the secret.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
    /// SHA-384 of the signed bytes followed by the secret.
    #[serde(rename = "sha384")]
    Sha384,
}

/// How a signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningEncoding {
    /// Lower-case hexadecimal.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// `[relay.destinations.signing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningRule {
    /// The algorithm.
    pub algorithm: SigningAlgorithm,
    /// The file holding the merchant secret (its bytes, a final newline dropped).
    pub secret_file: PathBuf,
    /// Sign these fields of the JSON body (dotted paths, in this order), their
    /// values joined by `separator`, instead of the whole resolved body.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Between the signed fields' values.
    #[serde(default)]
    pub separator: String,
    /// Put the signature in this request header…
    #[serde(default)]
    pub header: Option<String>,
    /// …or in this top-level string field of the JSON body.
    #[serde(default)]
    pub field: Option<String>,
    /// How the signature is written.
    #[serde(default)]
    pub encoding: SigningEncoding,
}

/// Whether `name` is a destination name: `[a-z0-9-]{1,32}`.
pub fn is_destination_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `name` is an HTTP header name (RFC 9110 token), at most 64 bytes.
pub(crate) fn is_header_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a destination URL: `https`, a host, an optional port, a path and an
/// optional query; no user information, no fragment.
pub fn parse_target(url: &str) -> Result<Target, String> {
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be an https URL of at most 2048 characters".to_owned());
    }
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| "must start with https:// (plain http is never used)".to_owned())?;
    if rest.contains('#') {
        return Err("must not have a fragment".to_owned());
    }
    let (authority, path_and_query) = rest
        .find(['/', '?'])
        .and_then(|i| rest.split_at_checked(i))
        .unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err("must not carry user information".to_owned());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_owned())?;
        (h, tail.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
    {
        return Err("must name a host".to_owned());
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err("must name a host".to_owned());
    }
    let port = match port {
        None => 443,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not 1 to 65535"))?,
    };
    let path_and_query = if path_and_query.is_empty() {
        "/".to_owned()
    } else if path_and_query.starts_with('?') {
        format!("/{path_and_query}")
    } else {
        path_and_query.to_owned()
    };
    let host_in_uri = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let uri = format!("https://{host_in_uri}:{port}{path_and_query}");
    // The HTTP client must accept it exactly as checked here.
    uri.parse::<axum::http::Uri>()
        .map_err(|e| format!("not a valid URI: {e}"))?;
    Ok(Target {
        host: host.to_owned(),
        port,
        path_and_query,
        uri,
    })
}

impl RelaySettings {
    /// Checks ranges, names, URLs and references to clients (`clients` are the
    /// configured client names).
    pub(super) fn validate(&mut self, clients: &HashSet<&str>) -> Result<(), ConfigError> {
        range("relay.cvc_ttl_secs", self.cvc_ttl_secs, 1, MAX_CVC_TTL_SECS).map_err(|e| {
            ConfigError::new(
                e.field,
                format!(
                    "{} (PCI DSS 3.3.1.2: a security code is not kept after authorisation)",
                    e.reason
                ),
            )
        })?;
        range(
            "relay.connect_timeout_secs",
            self.connect_timeout_secs,
            1,
            120,
        )?;
        range("relay.timeout_secs", self.timeout_secs, 1, 600)?;
        if self.timeout_secs < self.connect_timeout_secs {
            return Err(ConfigError::new(
                "relay.timeout_secs",
                "must be at least relay.connect_timeout_secs",
            ));
        }
        range(
            "relay.request_bytes",
            self.request_bytes,
            1024,
            16 * 1024 * 1024,
        )?;
        range(
            "relay.response_bytes",
            self.response_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        range("relay.max_headers", self.max_headers, 0, 256)?;
        range("relay.header_bytes", self.header_bytes, 0, 256 * 1024)?;
        let mut names = HashSet::new();
        for (i, d) in self.destinations.iter_mut().enumerate() {
            let at = |f: &str| format!("relay.destinations[{i}].{f}");
            if !is_destination_name(&d.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "1 to 32 characters of a-z 0-9 -",
                ));
            }
            if !names.insert(d.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("duplicate destination name {:?}", d.name),
                ));
            }
            d.target = Some(parse_target(&d.url).map_err(|r| ConfigError::new(at("url"), r))?);
            if d.clients.is_empty() {
                return Err(ConfigError::new(
                    at("clients"),
                    "name at least one client that may relay here",
                ));
            }
            for (j, c) in d.clients.iter().enumerate() {
                if !clients.contains(c.as_str()) {
                    return Err(ConfigError::new(
                        at(&format!("clients[{j}]")),
                        format!("no [[clients]] entry is named {c:?}"),
                    ));
                }
            }
            match (&d.client_cert, &d.client_key) {
                (Some(_), None) => {
                    return Err(ConfigError::new(
                        at("client_key"),
                        "client_cert needs client_key",
                    ));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(
                        at("client_cert"),
                        "client_key needs client_cert",
                    ));
                }
                _ => {}
            }
            if let Some(s) = &d.signing {
                s.validate(&at("signing"))?;
            }
        }
        Ok(())
    }

    /// Makes relative paths relative to `base`.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for d in &mut self.destinations {
            d.ca_file.iter_mut().for_each(fix);
            d.client_cert.iter_mut().for_each(fix);
            d.client_key.iter_mut().for_each(fix);
            if let Some(s) = &mut d.signing {
                fix(&mut s.secret_file);
            }
        }
    }

    /// The files the destinations name, with their fields.
    pub(super) fn files(&self) -> Vec<(String, &Path)> {
        let mut out = Vec::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let at = |f: &str| format!("relay.destinations[{i}].{f}");
            if let Some(p) = &d.ca_file {
                out.push((at("ca_file"), p.as_path()));
            }
            if let Some(p) = &d.client_cert {
                out.push((at("client_cert"), p.as_path()));
            }
            if let Some(p) = &d.client_key {
                out.push((at("client_key"), p.as_path()));
            }
            if let Some(s) = &d.signing {
                out.push((at("signing.secret_file"), s.secret_file.as_path()));
            }
        }
        out
    }
}

impl SigningRule {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let f = |x: &str| format!("{at}.{x}");
        match (&self.header, &self.field) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ConfigError::new(
                    f("header"),
                    "name exactly one of header and field",
                ));
            }
            (Some(h), None) => {
                if !is_header_name(h) {
                    return Err(ConfigError::new(
                        f("header"),
                        "must be an HTTP header name of at most 64 characters",
                    ));
                }
                if crate::relay::is_reserved_header(h) {
                    return Err(ConfigError::new(
                        f("header"),
                        format!("{h:?} is set by the HTTP client itself"),
                    ));
                }
            }
            (None, Some(name)) => {
                if !is_field_path(name) || name.contains('.') {
                    return Err(ConfigError::new(
                        f("field"),
                        "must be a top-level JSON field name (A-Z a-z 0-9 _ -)",
                    ));
                }
            }
        }
        if self.fields.len() > 64 {
            return Err(ConfigError::new(f("fields"), "at most 64 fields"));
        }
        for (j, p) in self.fields.iter().enumerate() {
            if !is_field_path(p) {
                return Err(ConfigError::new(
                    format!("{at}.fields[{j}]"),
                    "must be a dotted path of JSON field names (A-Z a-z 0-9 _ -)",
                ));
            }
        }
        if self.separator.len() > 16 {
            return Err(ConfigError::new(f("separator"), "at most 16 bytes"));
        }
        Ok(())
    }
}

/// A dotted path of JSON object keys, e.g. `card.number`.
fn is_field_path(p: &str) -> bool {
    (1..=256).contains(&p.len())
        && p.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests;
