//! A fake payment provider for the relay tests: HTTPS on 127.0.0.1:0 with a CA of
//! its own (so the vault must be told to trust it), recording every request it
//! receives. What it received holds real test card numbers: its `Debug` shows
//! sizes only, so a failed assertion never prints one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use panvault_vault::tls::pki::{CertAuthority, LeafSpec};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How the provider answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// At once, with this status and body (JSON).
    Answer(u16, &'static str),
    /// 200 with the request's body as its body, and the request's
    /// `idempotency-key` echoed in `x-echo-key`.
    Echo,
    /// Never: the request hangs until the caller gives up.
    Slow,
    /// `302 Found` to another URL (which a relay must not follow).
    Redirect,
    /// Checks `x-signature` as the hex HMAC-SHA256 of the body under `secret`:
    /// 200 `{"verified":true}` if it matches, else 401 `{"verified":false}`.
    VerifyHmac(&'static [u8]),
}

/// One request as the provider received it.
#[derive(Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Received {
    /// The value of header `name` (lower-case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A running fake provider; stops (with every connection it holds) when dropped.
pub struct FakeProvider {
    pub addr: SocketAddr,
    ca: CertAuthority,
    ca_pem: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeProvider {
    /// Starts a provider answering as `mode`, with a certificate for 127.0.0.1
    /// issued by a CA made for it alone.
    pub async fn start(mode: Mode) -> FakeProvider {
        FakeProvider::start_with(mode, false).await
    }

    /// [`FakeProvider::start`]; with `client_certs`, the TLS handshake requires a
    /// client certificate from the provider's own CA ([`FakeProvider::issue_client`]).
    pub async fn start_with(mode: Mode, client_certs: bool) -> FakeProvider {
        let ca = CertAuthority::generate("fake provider CA", 1).unwrap();
        let leaf = ca.issue(&LeafSpec::localhost_server()).unwrap();
        let certs = panvault_vault::tls::load_certs_from_pem(leaf.cert_pem.as_bytes()).unwrap();
        let key = panvault_vault::tls::load_key_from_pem(leaf.key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(panvault_vault::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_certs {
            let mut roots = rustls::RootCertStore::empty();
            for c in panvault_vault::tls::load_certs_from_pem(ca.cert_pem().as_bytes()).unwrap() {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                panvault_vault::tls::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&received);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Dropped with this task: every connection ends with the provider.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (acceptor, mode, rec) = (acceptor.clone(), mode.clone(), Arc::clone(&rec));
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, mode.clone(), Arc::clone(&rec))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FakeProvider {
            addr,
            ca_pem: ca.cert_pem().to_owned(),
            ca,
            received,
            connections,
            task,
        }
    }

    /// How many TCP connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Its CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate from its CA, written to `cert` and `key` (PEM).
    pub fn issue_client(&self, name: &str, cert: &Path, key: &Path) {
        let leaf = self.ca.issue(&LeafSpec::client(name)).unwrap();
        std::fs::write(cert, leaf.cert_pem).unwrap();
        std::fs::write(key, leaf.key_pem.as_bytes()).unwrap();
    }

    /// Writes its CA certificate to `path`.
    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).unwrap();
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn handle(
    req: Request<Incoming>,
    mode: Mode,
    rec: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let got = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    };
    let key = got.header("idempotency-key").map(str::to_owned);
    let signature = got.header("x-signature").map(str::to_owned);
    rec.lock().unwrap().push(got);
    let answer = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    Ok(match mode {
        Mode::Answer(status, text) => answer(status, text.as_bytes().to_vec()),
        Mode::Echo => {
            let mut r = answer(200, body);
            if let Some(k) = key.and_then(|k| hyper::header::HeaderValue::from_str(&k).ok()) {
                r.headers_mut().insert("x-echo-key", k);
            }
            r
        }
        Mode::Slow => {
            std::future::pending::<()>().await;
            answer(500, Vec::new())
        }
        Mode::Redirect => {
            let mut r = answer(302, b"{\"moved\":true}".to_vec());
            r.headers_mut().insert(
                "location",
                hyper::header::HeaderValue::from_static("https://127.0.0.1:9/elsewhere"),
            );
            r
        }
        Mode::VerifyHmac(secret) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            let ok = signature
                .and_then(|s| hex_decode(&s))
                .is_some_and(|tag| ring::hmac::verify(&key, &body, &tag).is_ok());
            if ok {
                answer(200, b"{\"verified\":true}".to_vec())
            } else {
                answer(401, b"{\"verified\":false}".to_vec())
            }
        }
    })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
