//! A configuration read for assessment rather than for serving: whatever the
//! file says, even when the server would refuse it (see [`LenientConfig`]).

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, TlsVersion, toml_error};

/// A configuration as a compliance run reads it: whatever the file says, even
/// when the server would refuse it, and why it would (so the checks can say so
/// instead of failing). Relative paths are resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct LenientConfig {
    /// The file.
    pub path: PathBuf,
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// `tls.cert`, if given.
    pub cert: Option<PathBuf>,
    /// `tls.key`, if given.
    pub key: Option<PathBuf>,
    /// `tls.client_ca`, if given.
    pub client_ca: Option<PathBuf>,
    /// How many CRLs `tls.crls` lists.
    pub crls: usize,
    /// The lowest TLS version as written (`"1.2"` when absent).
    pub min_version: String,
    /// `tls.cipher_suites` as written: the server has no such setting (it refuses a
    /// file that names one), so this is only ever set alongside `problem`.
    pub cipher_suites: Option<Vec<String>>,
    /// The suites the server can negotiate with its configured key (IANA names), when
    /// it accepts the file.
    pub negotiable_suites: Option<Vec<String>>,
    /// The `[[clients]]` entries.
    pub clients: Vec<LenientClient>,
    /// `[audit] retention_days`, if the file sets it.
    pub audit_retention_days: Option<i64>,
    /// Why the server would refuse the file, if it would.
    pub problem: Option<ConfigError>,
}

/// One `[[clients]]` entry as written (see [`LenientConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientClient {
    /// `name`.
    pub name: String,
    /// `common_name` (defaults to `name` when neither it nor `uri_san` is given).
    pub common_name: Option<String>,
    /// `uri_san`.
    pub uri_san: Option<String>,
    /// `tenant`.
    pub tenant: String,
    /// `permissions`, as written.
    pub permissions: Vec<String>,
}

impl Config {
    /// Reads the file at `path` for assessment: through [`Config::load`] when the
    /// server would accept it, else field by field from the TOML, with the
    /// server's objection in [`LenientConfig::problem`]. Fails only when there is
    /// nothing to assess: an unreadable file, not TOML, or no `data_dir`.
    pub fn load_lenient(path: &Path) -> Result<LenientConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("$", format!("{}: {e}", path.display())))?;
        let raw: toml::Table = toml::from_str(&text).map_err(toml_error)?;
        let audit_retention_days = raw
            .get("audit")
            .and_then(|a| a.get("retention_days"))
            .and_then(toml::Value::as_integer);
        match Config::load(path) {
            Ok(c) => Ok(LenientConfig {
                negotiable_suites: Some(crate::tls::negotiable_suite_names(&c.tls)),
                path: path.to_path_buf(),
                data_dir: panvault_audit::compliance::collect::clean_path(&c.data_dir),
                cert: Some(c.tls.cert),
                key: Some(c.tls.key),
                client_ca: Some(c.tls.client_ca),
                crls: c.tls.crls.len(),
                min_version: match c.tls.min_version {
                    TlsVersion::Tls13 => "1.3",
                    TlsVersion::Tls12 => "1.2",
                }
                .to_owned(),
                cipher_suites: None,
                clients: c
                    .clients
                    .into_iter()
                    .map(|cl| LenientClient {
                        permissions: cl
                            .permissions
                            .iter()
                            .map(|p| p.as_str().to_owned())
                            .collect(),
                        name: cl.name,
                        common_name: cl.common_name,
                        uri_san: cl.uri_san,
                        tenant: cl.tenant,
                    })
                    .collect(),
                audit_retention_days,
                problem: None,
            }),
            Err(problem) => lenient_from_toml(path, &raw, audit_retention_days, problem),
        }
    }
}

/// [`Config::load_lenient`] for a file the server refuses.
fn lenient_from_toml(
    path: &Path,
    raw: &toml::Table,
    audit_retention_days: Option<i64>,
    problem: ConfigError,
) -> Result<LenientConfig, ConfigError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |s: &str| {
        let p = Path::new(s);
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    let strs = |v: Option<&toml::Value>| -> Option<Vec<String>> {
        v.and_then(toml::Value::as_array).map(|a| {
            a.iter()
                .filter_map(toml::Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    };
    let tls = raw.get("tls").and_then(toml::Value::as_table);
    let tls_get = |k: &str| tls.and_then(|t| t.get(k));
    let tls_path = |k: &str| tls_get(k).and_then(toml::Value::as_str).map(resolve);
    let data_dir = raw
        .get("data_dir")
        .and_then(toml::Value::as_str)
        .map(resolve)
        .ok_or_else(|| {
            ConfigError::new(
                problem.field.clone(),
                format!("{} (and no data_dir to assess)", problem.reason),
            )
        })?;
    let clients = raw
        .get("clients")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .map(|t| {
            let s = |k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_owned);
            let name = s("name").unwrap_or_default();
            let (cn, uri) = (s("common_name"), s("uri_san"));
            LenientClient {
                common_name: if cn.is_none() && uri.is_none() {
                    Some(name.clone())
                } else {
                    cn
                },
                uri_san: uri,
                tenant: s("tenant").unwrap_or_default(),
                permissions: strs(t.get("permissions")).unwrap_or_default(),
                name,
            }
        })
        .collect();
    Ok(LenientConfig {
        path: path.to_path_buf(),
        data_dir: panvault_audit::compliance::collect::clean_path(&data_dir),
        cert: tls_path("cert"),
        key: tls_path("key"),
        client_ca: tls_path("client_ca"),
        crls: strs(tls_get("crls")).map_or(0, |c| c.len()),
        min_version: tls_get("min_version")
            .and_then(toml::Value::as_str)
            .unwrap_or("1.2")
            .to_owned(),
        cipher_suites: strs(tls_get("cipher_suites")),
        negotiable_suites: None,
        clients,
        audit_retention_days,
        problem: Some(problem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read", "read"]
[[clients]]
name = "payments"
uri_san = "spiffe://demo/payments"
tenant = "demo-shop"
permissions = ["detokenize"]
"#;

    #[test]
    fn a_refused_file_is_read_leniently_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panvault.toml");
        let text = GOOD.replace(
            "client_ca = \"pki/ca.pem\"",
            "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"\ncipher_suites = [\"TLS_RSA_WITH_AES_128_CBC_SHA\"]",
        );
        std::fs::write(&path, format!("{text}\n[audit]\nretention_days = 30\n")).unwrap();
        let c = Config::load_lenient(&path).unwrap();
        assert!(c.problem.is_some());
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.cert, Some(dir.path().join("pki/server.pem")));
        assert_eq!(c.min_version, "1.0");
        assert_eq!(
            c.cipher_suites.as_deref(),
            Some(&["TLS_RSA_WITH_AES_128_CBC_SHA".to_owned()][..])
        );
        assert_eq!(c.audit_retention_days, Some(30));
        assert_eq!(c.clients.len(), 2);
        assert_eq!(c.clients[0].common_name.as_deref(), Some("storefront"));
        assert_eq!(c.clients[0].permissions, ["tokenize", "read", "read"]);
        assert_eq!(
            c.clients[1].uri_san.as_deref(),
            Some("spiffe://demo/payments")
        );
        // Nothing to assess: no data_dir, not TOML, no file.
        std::fs::write(&path, "listen = 1\n").unwrap();
        let e = Config::load_lenient(&path).unwrap_err();
        assert!(e.reason.contains("no data_dir"), "{e}");
        std::fs::write(&path, "[[[").unwrap();
        assert!(Config::load_lenient(&path).is_err());
        assert!(Config::load_lenient(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn an_accepted_file_is_read_through_the_server_loader() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["pki/server.pem", "pki/server.key", "pki/ca.pem"] {
            std::fs::create_dir_all(dir.path().join("pki")).unwrap();
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let path = dir.path().join("panvault.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = Config::load_lenient(&path).unwrap();
        assert_eq!(c.problem, None);
        assert_eq!(c.min_version, "1.2");
        assert_eq!(c.cipher_suites, None);
        assert_eq!(c.audit_retention_days, None, "not set in the file");
        // The server's loader removed the duplicate permission.
        assert_eq!(c.clients[0].permissions, ["tokenize", "read"]);
        assert_eq!(c.clients[1].common_name, None);
    }
}
