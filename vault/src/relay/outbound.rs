//! The outbound HTTPS client: one pooled client per destination, over rustls
//! with the ring provider (TLS 1.2 and 1.3, certificate verification always on,
//! against the system's roots or the destination's `ca_file`, an optional client
//! certificate), HTTP/1.1, connect and total timeouts, size limits, and no
//! redirect ever followed (hyper-util's client does not follow them: a 3xx is
//! the provider's answer like any other).
//!
//! The connector ignores the URI it is handed and always dials the destination's
//! configured host and port: a request can never be steered elsewhere.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use super::{RelayError, Signer};
use crate::config::{ConfigError, Destination, RelaySettings, Target};

/// A TLS connection to a provider, as hyper-util's client wants it.
#[derive(Debug)]
pub struct TlsConn(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Dials one destination: TCP then TLS, both within the connect timeout.
#[derive(Clone)]
struct Connector {
    host: Arc<str>,
    port: u16,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let dial = async {
                let tcp = TcpStream::connect((&*this.host, this.port)).await?;
                tcp.set_nodelay(true)?;
                let tls = this.tls.connect(this.server_name.clone(), tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(TlsConn(tls)))
            };
            match tokio::time::timeout(this.connect_timeout, dial).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Box::new(e) as BoxError),
                Err(_) => Err(Box::new(ConnectTimeout) as BoxError),
            }
        })
    }
}

/// The connect timeout passed.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the provider timed out")]
struct ConnectTimeout;

/// The provider's answer, as read (it may hold card data the provider echoed:
/// wiped on drop, masked before anything of it goes back to the caller).
pub struct ProviderAnswer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ProviderAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderAnswer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// One destination's client: its pool, its signing rule, its limits.
pub struct RelayClient {
    name: String,
    clients: Vec<String>,
    target: Target,
    uri: Uri,
    client: Client<Connector, Full<Bytes>>,
    signer: Option<Signer>,
    timeout: Duration,
    request_bytes: usize,
    response_bytes: usize,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("name", &self.name)
            .field("uri", &self.target.uri)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the client named `client` may relay here.
    pub fn allows(&self, client: &str) -> bool {
        self.clients.iter().any(|c| c == client)
    }

    /// The signing rule, if the destination has one.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// The largest body sent.
    pub fn request_limit(&self) -> usize {
        self.request_bytes
    }

    /// Sends one request to the destination and reads its answer, all within the
    /// total timeout. A redirect is returned as it is, never followed.
    pub async fn send(
        &self,
        method: Method,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Zeroizing<String>,
    ) -> Result<ProviderAnswer, RelayError> {
        if body.len() > self.request_bytes {
            return Err(RelayError::template(
                "request_too_large",
                format!(
                    "the resolved body is larger than {} bytes",
                    self.request_bytes
                ),
            ));
        }
        let mut body = body;
        let bytes = Zeroizing::new(std::mem::take(&mut *body).into_bytes());
        let mut req = Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .body(Full::new(Bytes::from_owner(bytes)))
            .map_err(|e| RelayError::Unreachable(Box::new(e)))?;
        let h = req.headers_mut();
        for (n, v) in headers {
            h.append(n, v);
        }
        if let Ok(host) = HeaderValue::from_str(&host_header(&self.target)) {
            h.insert(header::HOST, host);
        }
        let limit = self.response_bytes;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RelayError::Unreachable(Box::new(e)))?;
            let (parts, body) = resp.into_parts();
            if parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n > limit)
            {
                return Err(RelayError::AnswerTooLarge(limit));
            }
            let collected = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    RelayError::AnswerTooLarge(limit)
                } else {
                    RelayError::Unreachable(e)
                }
            })?;
            Ok(ProviderAnswer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: Zeroizing::new(collected.to_bytes().to_vec()),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(RelayError::Timeout(self.timeout.as_secs())),
        }
    }
}

/// `host[:port]` as the Host header says it (the port only when not 443).
fn host_header(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == 443 {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

/// Every configured destination's client, by name.
#[derive(Debug, Default)]
pub struct Destinations {
    by_name: HashMap<String, Arc<RelayClient>>,
}

impl Destinations {
    /// Builds a client per destination of `settings`: loads CA files, client
    /// certificates and signing secrets (errors name the field). Must run inside
    /// a tokio runtime (the pools spawn their connection tasks there).
    pub fn build(settings: &RelaySettings) -> Result<Destinations, ConfigError> {
        let mut by_name = HashMap::new();
        for (i, d) in settings.destinations.iter().enumerate() {
            let client = build_one(i, d, settings)?;
            by_name.insert(d.name.clone(), Arc::new(client));
        }
        Ok(Destinations { by_name })
    }

    /// The destination named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<RelayClient>> {
        self.by_name.get(name).cloned()
    }
}

fn build_one(
    i: usize,
    d: &Destination,
    settings: &RelaySettings,
) -> Result<RelayClient, ConfigError> {
    let at = |f: &str| format!("relay.destinations[{i}].{f}");
    let target = d
        .target()
        .cloned()
        .ok_or_else(|| ConfigError::new(at("url"), "not validated"))?;
    let uri: Uri = target
        .uri
        .parse()
        .map_err(|e| ConfigError::new(at("url"), format!("{e}")))?;
    let mut roots = RootCertStore::empty();
    match &d.ca_file {
        Some(path) => {
            for c in crate::tls::load_certs(&at("ca_file"), path)? {
                roots
                    .add(c)
                    .map_err(|e| ConfigError::new(at("ca_file"), format!("{e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConfigError::new(
                    at("ca_file"),
                    "no ca_file given and no system CA certificate found",
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::new(at("url"), format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let mut tls = match (&d.client_cert, &d.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::load_certs(&at("client_cert"), cert)?;
            let key = crate::tls::load_key(&at("client_key"), key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::new(at("client_key"), format!("{e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(target.host.clone())
        .map_err(|e| ConfigError::new(at("url"), format!("{e}")))?;
    let connector = Connector {
        host: Arc::from(target.host.as_str()),
        port: target.port,
        server_name,
        tls: TlsConnector::from(Arc::new(tls)),
        connect_timeout: settings.connect_timeout(),
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .http1_max_buf_size(64 * 1024)
        .build(connector);
    let signer = d
        .signing
        .as_ref()
        .map(Signer::load)
        .transpose()
        .map_err(|e| ConfigError::new(at("signing.secret_file"), e.to_string()))?;
    Ok(RelayClient {
        name: d.name.clone(),
        clients: d.clients.clone(),
        target,
        uri,
        client,
        signer,
        timeout: settings.timeout(),
        request_bytes: settings.request_bytes,
        response_bytes: settings.response_bytes,
    })
}
