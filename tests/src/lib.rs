//! End-to-end test utilities: temporary vaults, a throwaway PKI, an in-process
//! server on 127.0.0.1:0, an mTLS HTTP client, the real `panvault` binary, and a
//! log capture to check that no card number is ever logged.
//!
//! Test code: panics on setup failures are the point.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    missing_debug_implementations
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use panvault_vault::config::Config;
use panvault_vault::core::kdf::KdfParams;
use panvault_vault::http::RunningServer;
use panvault_vault::tls::pki::{self, CertAuthority, Issued, LeafSpec};
use panvault_vault::{SealSpec, SecretText, Unlock, Vault, system_clock};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// Public test card numbers (never real cards).
pub mod tools;

pub mod cards {
    pub const VISA: &str = "4242424242424242";
    pub const VISA_SPACED: &str = "4242 4242 4242 4242";
    pub const MASTERCARD: &str = "5555555555554444";
    pub const AMEX: &str = "378282246310005";
    pub const VISA_DEBIT: &str = "4000056655665556";
    pub const DISCOVER: &str = "6011111111111117";

    /// A random Luhn-valid 16-digit test number starting with 4, so that tests do
    /// not see each other's cards.
    pub fn fresh() -> String {
        let mut b = [0u8; 8];
        panvault_vault::core::rng::fill(&mut b).unwrap();
        panvault_audit::card::testing::card(u64::from_le_bytes(b))
    }

    /// `4242…4242` style: first 6 and last 4 only, for assertion messages.
    pub fn masked(n: &str) -> String {
        let d: String = n.chars().filter(char::is_ascii_digit).collect();
        format!("{}…{}", &d[..6], &d[d.len() - 4..])
    }
}

/// The clients every test server knows: name, tenant, permissions.
pub const CLIENTS: &[(&str, &str, &[&str])] = &[
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
    ("monitor", "monitoring", &["metrics"]),
];

/// A throwaway PKI: the development PKI of `quickstart` (CA, localhost server,
/// the [`CLIENTS`]) plus whatever a test issues.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: CertAuthority,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let names: Vec<&str> = CLIENTS.iter().map(|c| c.0).collect();
        pki::ensure_dev_pki(dir, &names).unwrap();
        let ca = CertAuthority::load(
            &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
        )
        .unwrap();
        TestPki {
            dir: dir.to_owned(),
            ca,
        }
    }

    /// The PEM certificate and key of a client the PKI made.
    pub fn client_pems(&self, name: &str) -> (String, String) {
        (
            std::fs::read_to_string(self.dir.join(format!("{name}.pem"))).unwrap(),
            std::fs::read_to_string(self.dir.join(format!("{name}.key"))).unwrap(),
        )
    }

    pub fn issue(&self, spec: &LeafSpec) -> Issued {
        self.ca.issue(spec).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_owned()
    }
}

/// How a test server differs from the default.
#[derive(Default)]
pub struct ServerOpts {
    /// Extra TOML appended to the `[limits]` table.
    pub limits: String,
    /// `tls.min_version`.
    pub min_version: Option<&'static str>,
    /// Client certificates to issue (common name = the name, written to
    /// `pki/<name>.pem`/`.key`) and revoke in a CRL given to the server.
    pub revoked_clients: Vec<&'static str>,
    /// Extra `[[clients]]` entries (TOML).
    pub extra_clients: String,
}

/// A vault served in-process over mTLS on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub vault: Vault,
    pub pki: TestPki,
    pub config: Config,
    pub passphrase: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<RunningServer>,
    // Last: dropped after everything that uses the files.
    pub dir: tempfile::TempDir,
}

/// A cheap Argon2id: the key hierarchy is not what these tests exercise (the
/// binary tests use the real minimum).
pub const TEST_KDF: KdfParams = KdfParams {
    m_kib: 1024,
    t: 1,
    p: 1,
};

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerOpts::default()).await
    }

    pub async fn start_with(opts: ServerOpts) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(&dir.path().join("pki"));
        let data = dir.path().join("data");
        let passphrase = "e2e-test-passphrase";
        let unlock = || Unlock::Passphrase(SecretText::new(passphrase.into()));
        Vault::init(
            &data,
            &SealSpec {
                unlock: unlock(),
                kdf: TEST_KDF,
                shares: None,
            },
            &system_clock(),
        )
        .unwrap();
        let mut crl_line = String::new();
        if !opts.revoked_clients.is_empty() {
            let mut serials = Vec::new();
            for name in &opts.revoked_clients {
                let leaf = pki.issue(&LeafSpec::client(name));
                std::fs::write(pki.dir.join(format!("{name}.pem")), &leaf.cert_pem).unwrap();
                std::fs::write(pki.dir.join(format!("{name}.key")), leaf.key_pem.as_bytes())
                    .unwrap();
                serials.push(leaf.serial);
            }
            let serials: Vec<&[u8]> = serials.iter().map(Vec::as_slice).collect();
            std::fs::write(pki.dir.join("ca.crl"), pki.ca.crl(&serials).unwrap()).unwrap();
            crl_line = "crls = [\"pki/ca.crl\"]\n".into();
        }
        let min_version = opts
            .min_version
            .map(|v| format!("min_version = \"{v}\"\n"))
            .unwrap_or_default();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n{crl_line}{min_version}[limits]\n{}\n",
            opts.limits
        );
        for (name, tenant, perms) in CLIENTS {
            let perms: Vec<String> = perms.iter().map(|p| format!("\"{p}\"")).collect();
            text.push_str(&format!(
                "[[clients]]\nname = \"{name}\"\ntenant = \"{tenant}\"\npermissions = [{}]\n",
                perms.join(", ")
            ));
        }
        text.push_str(&opts.extra_clients);
        let path = dir.path().join("panvault.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let vault = Vault::open(&config.data_dir, &unlock()).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let running = panvault_vault::http::start(&config, vault.clone(), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        TestServer {
            addr: running.addr(),
            vault,
            pki,
            config,
            passphrase,
            shutdown: Some(tx),
            running: Some(running),
            dir,
        }
    }

    /// A client presenting the PKI's certificate for `name`.
    pub fn client(&self, name: &str) -> Client {
        let (cert, key) = self.pki.client_pems(name);
        self.client_with(&cert, &key)
    }

    /// A client presenting `cert_pem`/`key_pem`, trusting the test CA.
    pub fn client_with(&self, cert_pem: &str, key_pem: &str) -> Client {
        Client::new(
            self.addr,
            &self.pki.ca_pem(),
            Some((cert_pem, key_pem)),
            &[b"http/1.1"],
        )
    }

    /// A client with no certificate at all.
    pub fn anonymous_client(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_pem(), None, &[b"http/1.1"])
    }

    /// Signals shutdown (as SIGTERM would) without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server task has finished.
    pub fn is_finished(&self) -> bool {
        self.running.as_ref().is_none_or(RunningServer::is_finished)
    }

    /// Signals shutdown and waits until drained and the vault is closed.
    pub async fn stop(mut self) {
        self.signal_shutdown();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), r.wait())
                .await
                .expect("server did not shut down");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a problem+json answer with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        let v = self.json();
        assert_eq!(
            (self.status, v["code"].as_str()),
            (status, Some(code)),
            "{v}"
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], format!("https://panvault.dev/problems/{code}"));
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        assert_eq!(
            self.headers["x-request-id"].to_str().unwrap(),
            v["request_id"].as_str().unwrap()
        );
        v
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// An mTLS HTTP client (ring, HTTP/1.1 or HTTP/2 by ALPN) that keeps its
/// connection alive between requests and reconnects when it has to.
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
    conn: tokio::sync::Mutex<Option<Sender>>,
}

impl Client {
    pub fn new(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
        alpn: &[&[u8]],
    ) -> Client {
        Client::with_versions(addr, ca_pem, identity, alpn, rustls::DEFAULT_VERSIONS)
    }

    pub fn with_versions(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in panvault_vault::tls::load_certs_from_pem(ca_pem.as_bytes()).unwrap() {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = panvault_vault::tls::load_certs_from_pem(cert.as_bytes()).unwrap();
                let key = rustls_pemfile_key(key);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Client {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The TLS handshake (and nothing else); the stream for raw tests.
    pub async fn connect_tls(
        &self,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        self.connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    async fn connect(&self) -> Result<Sender, String> {
        let tls = self
            .connect_tls()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            let (send, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("http1: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(send))
        }
    }

    /// Sends a request (reusing the connection); `Err` when the connection or TLS
    /// session failed, e.g. because the server refused the certificate.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Result<Resp, String> {
        let reused = self.conn.lock().await.is_some();
        match self.request_once(method, path, body, content_type).await {
            // The server may have closed an idle keep-alive connection: once more, fresh.
            Err(_) if reused => self.request_once(method, path, body, content_type).await,
            r => r,
        }
    }

    async fn request_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Result<Resp, String> {
        let mut guard = self.conn.lock().await;
        let reusable = match guard.as_mut() {
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *guard = Some(self.connect().await?);
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
        let result = match guard.as_mut() {
            Some(Sender::H1(s)) => s.send_request(req.body(body).unwrap()).await,
            Some(Sender::H2(s)) => {
                let uri = format!("https://localhost{path}");
                let req = hyper::Request::builder().method(method).uri(uri);
                let req = match content_type {
                    Some(ct) => req.header("content-type", ct),
                    None => req,
                };
                s.send_request(req.body(body).unwrap()).await
            }
            None => unreachable!(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                *guard = None;
                return Err(format!("request: {e}"));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                *guard = None;
                return Err(format!("body: {e}"));
            }
        };
        // A successful detokenize is meant to carry the card; everything else is
        // kept for the leak scan.
        if !(status == 200 && path.ends_with("/detokenize")) {
            keep_output("responses", &body);
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            Some(body.to_string().as_bytes()),
            Some("application/json"),
        )
        .await
        .unwrap()
    }

    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, Some(body), Some("application/json"))
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, None).await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, None).await.unwrap()
    }

    /// Tokenizes `number`; returns the answer.
    pub async fn tokenize(&self, number: &str) -> Resp {
        self.post("/v1/tokens", &card_request(number)).await
    }

    pub async fn detokenize(&self, token: &str, purpose: &str) -> Resp {
        self.post(
            &format!("/v1/tokens/{token}/detokenize"),
            &serde_json::json!({ "purpose": purpose }),
        )
        .await
    }
}

fn rustls_pemfile_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    panvault_vault::tls::load_key_from_pem(pem.as_bytes()).unwrap()
}

/// `{"card":{"number":…,"exp_month":12,"exp_year":<in 4 years>}}`.
pub fn card_request(number: &str) -> Value {
    serde_json::json!({"card": {"number": number, "exp_month": 12, "exp_year": this_year() + 4}})
}

pub fn this_year() -> i32 {
    time::OffsetDateTime::now_utc().year()
}

// ---- keeping every byte of output for the leak scan ----

/// Where the suite keeps what it saw, if `PANVAULT_TEST_OUTPUT_DIR` is set: `.ci/run`
/// sets it, runs the suite with `PANVAULT_TEST_LOG=trace`, and then runs
/// `panvault scan` over the directory (and the suite's own output). A finding fails
/// CI. Kept: this binary's logs, every child server's stderr, the stdout and stderr
/// of every command run, and every HTTP response body except a successful
/// detokenize (the one response that is meant to carry a card).
fn output_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(std::env::var_os("PANVAULT_TEST_OUTPUT_DIR")?);
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    })
    .as_deref()
}

/// Appends `bytes` to `DIR/<kind>-<pid>.log` (nothing without the variable).
pub fn keep_output(kind: &str, bytes: &[u8]) {
    use std::io::Write;
    static LOCK: Mutex<()> = Mutex::new(());
    let Some(dir) = output_dir() else { return };
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = dir.join(format!("{kind}-{}.log", std::process::id()));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(bytes);
        let _ = f.write_all(b"\n");
    }
}

/// Keeps a finished command's stdout and stderr (see [`keep_output`]); for
/// `Command::output().await.map(util::kept)`.
pub fn kept(out: std::process::Output) -> std::process::Output {
    keep_output("cmd", &out.stdout);
    keep_output("cmd", &out.stderr);
    out
}

/// The log level of child servers: `PANVAULT_TEST_LOG` (CI: `trace`), else `warn`.
pub fn child_log_level() -> String {
    std::env::var("PANVAULT_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

// ---- log capture ----

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        keep_output("logs", buf);
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogBuf> = OnceLock::new();

/// Installs (once per test binary) a global subscriber that records every event
/// of panvault at TRACE and of everything else at INFO, so tests can check the
/// logs for card numbers.
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let filter = tracing_subscriber::EnvFilter::new(
            "info,panvault=trace,panvault_vault=trace,panvault_audit=trace",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything logged so far in this test binary.
pub fn captured_logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.0.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

// ---- the real binary ----

/// The `panvault` binary of this build profile, built if needed (the tests crate
/// cannot depend on a binary crate, so it is found next to the test executable:
/// `target/<profile>/panvault`, and `cargo build -p panvault-cli` is run once per
/// test binary to make sure it is there and current). `PANVAULT_BIN` overrides.
pub fn panvault_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("PANVAULT_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/e2e-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "panvault-cli",
            "--bin",
            "panvault",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd
            .status()
            .expect("cannot run cargo to build the panvault binary");
        assert!(status.success(), "cargo build -p panvault-cli failed");
        let bin = profile_dir.join(format!("panvault{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} not found", bin.display());
        bin
    })
    .clone()
}

// ---- a vault served by the real binary (crash and fault tests) ----

/// Seeded randomness for tests whose schedule must be replayable: SplitMix64.
/// [`TestRng::from_env`] prints the seed so that a failing run can be repeated.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    /// Seeded from the environment variable `var` if set, else from the clock;
    /// prints `<what>: seed N (repeat with VAR=N)`.
    pub fn from_env(var: &str, what: &str) -> TestRng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                u64::try_from(nanos % u128::from(u64::MAX)).unwrap()
            });
        println!("{what}: seed {seed} (repeat with {var}={seed})");
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// A duration of `lo_ms..hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }
}

/// Reads an unsigned number from the environment, or `default`.
pub fn env_number(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The passphrase of every [`BinVault`].
pub const BIN_PASSPHRASE: &str = "e2e-test-passphrase";

/// A vault on disk for the real binary: the PKI in `ROOT/pki`, the passphrase in
/// `ROOT/pass`, the configuration (listen 127.0.0.1:0, the [`CLIENTS`]) in
/// `ROOT/panvault.toml`, the data directory wherever the test wants it (a small
/// file system, say). Made with the cheap [`TEST_KDF`].
pub struct BinVault {
    pub root: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
    pub pass: PathBuf,
    pub ca_pem: String,
}

impl BinVault {
    /// A new vault with its data directory at `ROOT/data`.
    pub fn create(root: &Path) -> BinVault {
        BinVault::create_in(root, &root.join("data"))
    }

    /// A new vault with its data directory at `data`.
    pub fn create_in(root: &Path, data: &Path) -> BinVault {
        init_logs();
        let pki = TestPki::new(&root.join("pki"));
        Vault::init(
            data,
            &SealSpec {
                unlock: Unlock::Passphrase(SecretText::new(BIN_PASSPHRASE.into())),
                kdf: TEST_KDF,
                shares: None,
            },
            &system_clock(),
        )
        .unwrap();
        let pass = root.join("pass");
        std::fs::write(&pass, format!("{BIN_PASSPHRASE}\n")).unwrap();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {}\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n",
            toml_string(data)
        );
        for (name, tenant, perms) in CLIENTS {
            let perms: Vec<String> = perms.iter().map(|p| format!("\"{p}\"")).collect();
            text.push_str(&format!(
                "[[clients]]\nname = \"{name}\"\ntenant = \"{tenant}\"\npermissions = [{}]\n",
                perms.join(", ")
            ));
        }
        let config = root.join("panvault.toml");
        std::fs::write(&config, text).unwrap();
        BinVault {
            root: root.to_owned(),
            data: data.to_owned(),
            config,
            pass,
            ca_pem: pki.ca_pem(),
        }
    }

    /// How to unseal it in-process.
    pub fn unlock(&self) -> Unlock {
        Unlock::Passphrase(SecretText::new(BIN_PASSPHRASE.into()))
    }

    /// `vault.db`.
    pub fn db(&self) -> PathBuf {
        self.data.join("vault.db")
    }

    /// A client of the PKI (one of [`CLIENTS`]) for a server at `addr`.
    pub fn client(&self, addr: SocketAddr, name: &str) -> Client {
        let p = self.root.join("pki");
        let read = |f: String| std::fs::read_to_string(p.join(f)).unwrap();
        Client::new(
            addr,
            &self.ca_pem,
            Some((&read(format!("{name}.pem")), &read(format!("{name}.key")))),
            &[b"http/1.1"],
        )
    }

    /// The arguments of `panvault serve` for this vault (after the program name):
    /// `--allow-noncompliant`, since the cheap test KDF and the development PKI
    /// fail the compliance preflight on purpose.
    pub fn serve_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--allow-noncompliant".into(),
            "--config".into(),
            self.config.clone().into(),
            "--passphrase-file".into(),
            self.pass.clone().into(),
        ]
    }

    /// Runs `panvault ARGS --data-dir DATA [--passphrase-file PASS]` to the end
    /// (at most `limit`, else the test fails).
    pub async fn run(&self, args: &[&str], with_pass: bool, limit: Duration) -> CmdOutput {
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.args(args).arg("--data-dir").arg(&self.data);
        if with_pass {
            cmd.arg("--passphrase-file").arg(&self.pass);
        }
        run_command(cmd, limit).await
    }
}

/// A path as a TOML basic string.
fn toml_string(p: &Path) -> String {
    serde_json::Value::String(p.display().to_string()).to_string()
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin closed, killed if it outlives `limit`, which fails the test).
pub async fn run_command(mut cmd: tokio::process::Command, limit: Duration) -> CmdOutput {
    cmd.stdin(std::process::Stdio::null())
        .env_remove("PANVAULT_PASSPHRASE")
        .env_remove("PANVAULT_DATA_DIR")
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {limit:?}"))
        .unwrap();
    let out = kept(out);
    CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Collects a child's output stream, line by line, in the background.
pub fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Arc<Mutex<String>> {
    use tokio::io::AsyncBufReadExt;
    let out = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&out);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            keep_output("child", line.as_bytes());
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

/// A running `panvault serve` process.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl ServeProcess {
    /// Starts `panvault serve` for `v` and waits (at most 60 s) until it prints
    /// `panvault: serving https://ADDR`. `Err` with its stderr if it exits first.
    pub async fn start(v: &BinVault) -> Result<ServeProcess, String> {
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.args(v.serve_args());
        ServeProcess::spawn(cmd).await
    }

    /// Spawns `cmd` (a `panvault serve`, possibly through a wrapper that `exec`s
    /// it) and waits for its address.
    pub async fn spawn(mut cmd: tokio::process::Command) -> Result<ServeProcess, String> {
        let mut child = cmd
            .env("PANVAULT_LOG", child_log_level())
            .env_remove("PANVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = collect_lines(child.stderr.take().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = stderr.lock().unwrap().clone();
            if let Some(rest) = text.split("panvault: serving https://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                return Ok(ServeProcess {
                    child,
                    addr,
                    stderr,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // let the reader drain what is left
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!(
                    "serve exited with {status}: {}",
                    stderr.lock().unwrap()
                ));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(format!(
                    "serve not ready after 60 s: {}",
                    stderr.lock().unwrap()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// SIGKILL, and waits (at most 10 s) until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("no exit 10 s after SIGKILL")
            .unwrap();
    }

    /// SIGTERM; the exit status (at most 30 s).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let st = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("no exit 30 s after SIGTERM")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        status
    }

    /// Polls `GET /healthz` until it answers 200 (at most `limit`).
    pub async fn wait_healthy(&self, v: &BinVault, limit: Duration) {
        let client = v.client(self.addr, "payments");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(r) = client.request("GET", "/healthz", None, None).await
                && r.status == 200
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/healthz did not answer within {limit:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `PRAGMA integrity_check` of the database at `db` (opened read-write, so a
/// WAL left by a killed process is recovered first).
pub fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("\n")
}

/// Runs a test body for at most `limit`: a hung server or client fails the test
/// (and drops, so kills, its child processes) instead of hanging CI.
pub async fn within<F: std::future::Future>(limit: Duration, body: F) -> F::Output {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
}
