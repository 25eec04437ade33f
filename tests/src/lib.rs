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
        let mut r = u64::from_le_bytes(b);
        let mut d = vec![b'4'];
        for _ in 0..14 {
            d.push(b'0' + (r % 10) as u8);
            r /= 10;
        }
        d.push(panvault_audit::card::luhn_check_digit(&d).unwrap());
        String::from_utf8(d).unwrap()
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

// ---- log capture ----

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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
