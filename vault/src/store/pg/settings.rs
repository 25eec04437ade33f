//! Where the PostgreSQL database is and how to reach it: parsed from a libpq-style URL
//! (or a file holding one, so the password stays out of `panvault.toml` and `ps`).
//!
//! `postgres://USER:PASSWORD@HOST:PORT/DBNAME?sslmode=verify-full&sslrootcert=CA.pem&pool_size=8`
//!
//! The password lives in a [`SecretText`] and never reaches `Debug`, `Display` or an
//! error message: a malformed URL is described, never echoed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::SecretText;

use super::PgError;

/// How a connection is protected. Anything else libpq knows (`allow`, `prefer`,
/// `verify-ca`) is refused rather than guessed at: `prefer` silently falls back to
/// plaintext, and `verify-ca` accepts any host the CA ever certified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS (a unix socket, or a trusted local network).
    Disable,
    /// TLS, encrypted but the server's certificate is not checked: it stops a passive
    /// eavesdropper, not an active one.
    Require,
    /// TLS, the server's certificate chains to the CA in `sslrootcert` and names the
    /// host connected to. The default over TCP.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, PgError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(PgError::Url(
                "sslmode must be disable, require or verify-full".into(),
            )),
        }
    }

    /// The name as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgHost {
    /// A host name or IP address, and a TCP port.
    Tcp(String, u16),
    /// The directory of a unix socket (`host=/run/postgresql`), and the port that
    /// names the socket file. TLS is never used over a socket (PostgreSQL does not
    /// offer it there); the settings say [`SslMode::Disable`].
    Socket(PathBuf, u16),
}

/// The connections of one node: bounded, so that N nodes never exceed the server's
/// `max_connections` by surprise.
pub const MAX_POOL_SIZE: u16 = 256;
/// The default pool size per node.
pub const DEFAULT_POOL_SIZE: u16 = 16;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of the PostgreSQL engine.
pub struct PgSettings {
    pub(crate) host: PgHost,
    pub(crate) user: String,
    pub(crate) password: Option<SecretText>,
    pub(crate) dbname: String,
    pub(crate) sslmode: SslMode,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) pool_size: u16,
    pub(crate) connect_timeout: Duration,
}

impl PgSettings {
    /// Parses a `postgres://` or `postgresql://` URL. Query parameters: `sslmode`,
    /// `sslrootcert` (the CA file, required by `verify-full`), `host` (a socket
    /// directory instead of the URL's host), `pool_size` (1 to [`MAX_POOL_SIZE`]),
    /// `connect_timeout` (seconds). Unknown parameters are refused, not ignored.
    pub fn from_url(url: &str) -> Result<PgSettings, PgError> {
        let url = url.trim();
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| PgError::Url("must start with postgres:// or postgresql://".into()))?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (
                    Some(decode(user, "user")?),
                    Some(SecretText::new(decode(pw, "password")?)),
                ),
                None => (Some(decode(u, "user")?), None),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        let dbname = if path.is_empty() {
            None
        } else {
            Some(decode(path, "database name")?)
        };

        let mut sslmode = None;
        let mut ca_file = None;
        let mut socket_dir = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| PgError::Url("a query parameter has no value".into()))?;
            let v = decode(v, "query parameter")?;
            match k {
                "sslmode" => sslmode = Some(SslMode::parse(&v)?),
                "sslrootcert" => ca_file = Some(PathBuf::from(v)),
                "host" => socket_dir = Some(PathBuf::from(v)),
                "pool_size" => {
                    pool_size = v
                        .parse::<u16>()
                        .ok()
                        .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                        .ok_or_else(|| {
                            PgError::Url(format!("pool_size must be 1 to {MAX_POOL_SIZE}"))
                        })?;
                }
                "connect_timeout" => {
                    connect_timeout = v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=600).contains(n))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            PgError::Url("connect_timeout must be 1 to 600 seconds".into())
                        })?;
                }
                // Named, never the value: it might be a misplaced secret.
                _ => {
                    return Err(PgError::Url(format!(
                        "unknown query parameter {:?}",
                        k.chars().take(32).collect::<String>()
                    )));
                }
            }
        }

        let host = match socket_dir {
            Some(dir) if dir.is_absolute() => PgHost::Socket(dir, port.unwrap_or(5432)),
            Some(_) => {
                return Err(PgError::Url(
                    "host= must be an absolute socket directory".into(),
                ));
            }
            None => PgHost::Tcp(
                host.unwrap_or_else(|| "localhost".into()),
                port.unwrap_or(5432),
            ),
        };
        let sslmode = match (&host, sslmode) {
            (PgHost::Socket(..), None | Some(SslMode::Disable)) => SslMode::Disable,
            (PgHost::Socket(..), Some(_)) => {
                return Err(PgError::Url(
                    "PostgreSQL offers no TLS over a unix socket: use sslmode=disable".into(),
                ));
            }
            // Over TCP the default verifies: plaintext has to be asked for.
            (PgHost::Tcp(..), mode) => mode.unwrap_or(SslMode::VerifyFull),
        };
        if sslmode == SslMode::VerifyFull && ca_file.is_none() {
            return Err(PgError::Url(
                "sslmode=verify-full needs sslrootcert=<CA file> (or sslmode=disable to connect without TLS)"
                    .into(),
            ));
        }
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or_else(|| PgError::Url("no user name".into()))?;
        Ok(PgSettings {
            dbname: dbname.unwrap_or_else(|| user.clone()),
            host,
            user,
            password,
            sslmode,
            ca_file,
            pool_size,
            connect_timeout,
        })
    }

    /// Reads the URL from a file (its first non-empty line), e.g. a secret mounted
    /// by the orchestrator. The file's content is never quoted in an error.
    pub fn from_file(path: &Path) -> Result<PgSettings, PgError> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            PgError::File {
                path: path.to_owned(),
                source,
            }
        })?);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| PgError::Url(format!("{} holds no URL", path.display())))?;
        PgSettings::from_url(line)
    }

    /// Where the server listens.
    pub fn host(&self) -> &PgHost {
        &self.host
    }

    /// The role to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// How connections are protected.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The CA file that `verify-full` checks the server against.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The most connections this node opens.
    pub fn pool_size(&self) -> u16 {
        self.pool_size
    }

    /// How long a connection attempt may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// The URL with the password replaced by `***` (so a log line can say which
/// database a node uses).
impl fmt::Display for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}", self.user)?;
        if self.password.is_some() {
            f.write_str(":***")?;
        }
        match &self.host {
            PgHost::Tcp(h, p) if h.contains(':') => write!(f, "@[{h}]:{p}")?,
            PgHost::Tcp(h, p) => write!(f, "@{h}:{p}")?,
            PgHost::Socket(_, p) => write!(f, "@:{p}")?,
        }
        write!(f, "/{}?sslmode={}", self.dbname, self.sslmode.as_str())?;
        if let PgHost::Socket(dir, _) = &self.host {
            write!(f, "&host={}", dir.display())?;
        }
        if let Some(ca) = &self.ca_file {
            write!(f, "&sslrootcert={}", ca.display())?;
        }
        write!(f, "&pool_size={}", self.pool_size)
    }
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

fn split_host_port(s: &str) -> Result<(Option<String>, Option<u16>), PgError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| PgError::Url("unclosed [ in the host".into()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| PgError::Url("junk after the host".into()))?,
            ),
        };
        (h.to_owned(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (decode(h, "host")?, Some(p)),
            None => (decode(s, "host")?, None),
        }
    };
    if host.contains(',') {
        return Err(PgError::Url(
            "one host only (failover belongs to the database's own tooling)".into(),
        ));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PgError::Url("the port must be 1 to 65535".into()))
        })
        .transpose()?;
    Ok(((!host.is_empty()).then_some(host), port))
}

/// Percent-decoding (RFC 3986) into UTF-8. Errors name the part, never its text.
fn decode(s: &str, what: &str) -> Result<String, PgError> {
    let bad = || PgError::Url(format!("bad percent-encoding in the {what}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let out = zeroize::Zeroizing::new(out);
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .map_err(|_| PgError::Url(format!("the {what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "s3cr%40t-pw";

    fn url(q: &str) -> String {
        format!("postgres://vault:{PW}@db.example:6543/panvault?{q}")
    }

    #[test]
    fn parses_a_full_url() {
        let s = PgSettings::from_url(&url(
            "sslmode=verify-full&sslrootcert=/etc/ca.pem&pool_size=8&connect_timeout=3",
        ))
        .unwrap();
        assert_eq!(s.host(), &PgHost::Tcp("db.example".into(), 6543));
        assert_eq!(s.user(), "vault");
        assert_eq!(s.password.as_ref().unwrap().expose_secret(), "s3cr@t-pw");
        assert_eq!(s.dbname(), "panvault");
        assert_eq!(s.sslmode(), SslMode::VerifyFull);
        assert_eq!(s.ca_file(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(s.pool_size(), 8);
        assert_eq!(s.connect_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn password_never_printed() {
        let s = PgSettings::from_url(&url("sslmode=disable")).unwrap();
        for text in [format!("{s}"), format!("{s:?}"), format!("{s:#?}")] {
            assert!(!text.contains("s3cr"), "{text}");
        }
        assert_eq!(
            s.to_string(),
            "postgres://vault:***@db.example:6543/panvault?sslmode=disable&pool_size=16"
        );
        // Nor in an error about another part of the URL.
        for bad in [
            url("sslmode=prefer"),
            url("pool_size=0"),
            url("password=s3cr"),
            url("sslmode=verify-full"),
            format!("mysql://vault:{PW}@h/db"),
            format!("postgres://vault:{PW}@h:99999/db"),
            format!("postgres://vault:{PW}%zz@h/db"),
            format!("postgres://vault:{PW}@h1,h2/db"),
        ] {
            let e = PgSettings::from_url(&bad).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains("s3cr"), "{text}");
            }
        }
    }

    #[test]
    fn tcp_defaults_to_verify_full_and_needs_a_ca() {
        let e = PgSettings::from_url("postgres://u:p@h/db").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let s = PgSettings::from_url("postgres://u@h?sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.sslmode(), SslMode::VerifyFull);
        assert_eq!(s.dbname(), "u");
        assert_eq!(s.host(), &PgHost::Tcp("h".into(), 5432));
    }

    #[test]
    fn unix_socket_and_ipv6() {
        let s = PgSettings::from_url("postgresql://u@:5433/db?host=%2Frun%2Fpostgresql").unwrap();
        assert_eq!(
            s.host(),
            &PgHost::Socket(PathBuf::from("/run/postgresql"), 5433)
        );
        assert_eq!(s.sslmode(), SslMode::Disable);
        assert!(PgSettings::from_url("postgres://u@/db?host=/run&sslmode=require").is_err());
        let s = PgSettings::from_url("postgres://u@[::1]:5999/db?sslmode=require").unwrap();
        assert_eq!(s.host(), &PgHost::Tcp("::1".into(), 5999));
        assert!(s.to_string().contains("@[::1]:5999/"));
    }

    #[test]
    fn from_file_reads_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pg.url");
        std::fs::write(&f, format!("\n  {}\n", url("sslmode=disable"))).unwrap();
        let s = PgSettings::from_file(&f).unwrap();
        assert_eq!(s.dbname(), "panvault");
        std::fs::write(&f, "\n\n").unwrap();
        assert!(PgSettings::from_file(&f).is_err());
        assert!(PgSettings::from_file(&dir.path().join("missing")).is_err());
    }
}
