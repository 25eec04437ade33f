//! An mTLS HTTP client for the test servers, and the request bodies tests send.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio_rustls::TlsConnector;

use crate::keep_output;

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
        self.request_with_headers(method, path, body, content_type, &[])
            .await
    }

    /// [`Client::request`] with extra request headers.
    pub async fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let reused = self.conn.lock().await.is_some();
        match self
            .request_once(method, path, body, content_type, extra)
            .await
        {
            // The server may have closed an idle keep-alive connection: once more, fresh.
            Err(_) if reused => {
                self.request_once(method, path, body, content_type, extra)
                    .await
            }
            r => r,
        }
    }

    async fn request_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        extra: &[(&str, &str)],
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
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
        let result = match guard.as_mut() {
            Some(Sender::H1(s)) => s.send_request(req.body(body).unwrap()).await,
            Some(Sender::H2(s)) => {
                let uri = format!("https://localhost{path}");
                let req = hyper::Request::builder().method(method).uri(uri);
                let mut req = match content_type {
                    Some(ct) => req.header("content-type", ct),
                    None => req,
                };
                for (name, value) in extra {
                    req = req.header(*name, *value);
                }
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
