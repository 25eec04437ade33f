//! The accept loop: TCP accept, then per connection a task that runs the TLS
//! handshake under a timeout, reads the client's identity once, and serves the
//! router over HTTP/1.1 or HTTP/2 with the identity in every request's extensions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::ClientIdentity;
use crate::config::Limits;

/// The peer's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// How the accept loop behaves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A TLS handshake must complete within this.
    pub handshake_timeout: Duration,
    /// Request headers must arrive within this (also between keep-alive requests).
    pub header_read_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// How long in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

impl From<&Limits> for ServeOptions {
    fn from(l: &Limits) -> Self {
        ServeOptions {
            handshake_timeout: l.handshake_timeout(),
            header_read_timeout: l.header_read_timeout(),
            max_connections: l.max_connections,
            shutdown_grace: l.shutdown_grace(),
        }
    }
}

/// Connection counters, shown by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted (TCP).
    pub accepted: AtomicU64,
    /// Handshakes that failed (bad or missing client certificate, protocol errors).
    pub handshake_failures: AtomicU64,
    /// Handshakes that did not finish in time.
    pub handshake_timeouts: AtomicU64,
}

struct OpenGuard(Arc<ConnStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` over mutual TLS on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (at most `opts.shutdown_grace`) and
/// returns.
///
/// Each request carries the connection's [`ClientIdentity`] (absent if the
/// certificate could not be read, which the API answers with 401) and its
/// [`PeerAddr`] in its extensions.
pub async fn serve_tls<F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    opts: ServeOptions,
    stats: Arc<ConnStats>,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        // detects dead HTTP/2 peers (HTTP/1 idle connections end by header_read_timeout)
        .keep_alive_interval(Duration::from_secs(60));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => p,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(Arc::clone(&stats));
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let app = app.clone();
        let stats = Arc::clone(&stats);
        let handshake_timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| ClientIdentity::from_der(c));
            if identity.is_none() {
                tracing::warn!(%peer, "verified client certificate could not be read; requests will get 401");
            }
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                if let Some(id) = &identity {
                    req.extensions_mut().insert(id.clone());
                }
                req.extensions_mut().insert(PeerAddr(peer));
                app.clone().oneshot(req)
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}
