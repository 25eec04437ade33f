//! The accept loop: TCP accept, then per connection a task that runs the TLS
//! handshake under a timeout, reads the client's identity once, and serves the
//! router over HTTP/1.1 or HTTP/2 with the identity in every request's extensions.
//!
//! ## Who can hold what
//! A socket that has not finished its handshake holds only a *handshake* slot:
//! there are `max_handshakes` of them, at most `max_handshakes_per_source` per
//! source address, and each is given back after `handshake_timeout` at the latest.
//! A socket arriving when its source (or everyone) is over the cap is closed at
//! once instead of waiting, so idle sockets never queue in front of real clients.
//! A *connection* slot (`max_connections`) is taken only once the client has shown
//! a valid certificate, and each client identity may hold at most
//! `max_connections_per_client` of them: one client's connections never keep
//! another client out. A connection that sends no request within
//! `first_request_timeout`, or stays idle between requests longer than
//! `idle_timeout`, is closed, on HTTP/1 and HTTP/2 alike (protocol detection has
//! no timeout of its own, and HTTP/2 none for an idle connection).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
    /// Request headers must arrive within this (HTTP/1).
    pub header_read_timeout: Duration,
    /// A new connection must start a request within this, or it is closed.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections (handshake done) at once.
    pub max_connections: usize,
    /// Most connections one client identity may hold at once.
    pub max_connections_per_client: usize,
    /// Most TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes in progress from one source address.
    pub max_handshakes_per_source: usize,
    /// How long in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

impl From<&Limits> for ServeOptions {
    fn from(l: &Limits) -> Self {
        ServeOptions {
            handshake_timeout: l.handshake_timeout(),
            header_read_timeout: l.header_read_timeout(),
            first_request_timeout: l.first_request_timeout(),
            idle_timeout: l.header_read_timeout(),
            max_connections: l.max_connections,
            max_connections_per_client: l.max_connections_per_client,
            max_handshakes: l.max_handshakes,
            max_handshakes_per_source: l.max_handshakes_per_source,
            shutdown_grace: l.shutdown_grace(),
        }
    }
}

/// Connection counters, shown by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now (handshake done or in progress).
    pub open: AtomicU64,
    /// Connections accepted (TCP).
    pub accepted: AtomicU64,
    /// Handshakes that failed (bad or missing client certificate, protocol errors).
    pub handshake_failures: AtomicU64,
    /// Handshakes that did not finish in time.
    pub handshake_timeouts: AtomicU64,
    /// Sockets closed unread because too many handshakes were in progress (from
    /// their source address or in all).
    pub handshake_refusals: AtomicU64,
    /// Connections closed after the handshake because their client held
    /// `max_connections_per_client` already (or no slot freed in time).
    pub connection_refusals: AtomicU64,
    /// Connections closed for sending no request in time.
    pub idle_closed: AtomicU64,
}

/// Which bucket a client's connections count against: the configured client it
/// resolves to. `None` puts it with every other unmatched certificate.
pub type ClientKey = Arc<dyn Fn(&ClientIdentity) -> Option<String> + Send + Sync>;

/// The TLS configuration new connections use; replaced when CRLs change.
#[derive(Debug, Clone)]
pub struct TlsConfigCell(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsConfigCell {
    /// A cell holding `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsConfigCell(Arc::new(RwLock::new(config)))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces it (connections already open keep theirs).
    pub fn replace(&self, config: Arc<ServerConfig>) {
        match self.0.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// At most one log line a second for events an attacker can trigger at will;
/// says how many were left out.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last_sec: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(n)` when a line may be logged now (`n` left out since the last one).
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_sec.load(Ordering::Relaxed);
        if now != last
            && self
                .last_sec
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Counts per key (source address, client) against a cap; a slot is given back
/// when its guard drops.
struct Counted<K: Eq + Hash + Clone> {
    counts: Mutex<HashMap<K, usize>>,
    cap: usize,
}

struct Slot<K: Eq + Hash + Clone> {
    table: Arc<Counted<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Counted<K> {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Counted {
            counts: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        })
    }

    /// A slot for `key`, unless it holds `cap` already.
    fn try_take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Arc::clone(self),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

struct OpenGuard(Arc<ConnStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` that the last request ended; `u64::MAX` before
    /// the first request.
    last_end_ms: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_end_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// When the connection is due to be closed for idleness, if nothing happens
    /// before; `None` while a request is in flight.
    fn idle_deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.last_end_ms.load(Ordering::Relaxed) {
            u64::MAX => Some(self.start + first),
            ms => Some(self.start + Duration::from_millis(ms) + idle),
        }
    }
}

/// Everything a connection task needs.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    opts: ServeOptions,
    stats: Arc<ConnStats>,
    limit: Arc<Semaphore>,
    per_client: Arc<Counted<Option<String>>>,
    client_key: ClientKey,
    refusals_log: Throttle,
    idle_log: Throttle,
}

/// Serves `app` over mutual TLS on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (at most `opts.shutdown_grace`) and
/// returns. Each handshake uses the configuration `tls` holds at that moment.
///
/// Each request carries the connection's [`ClientIdentity`] (absent if the
/// certificate could not be read, which the API answers with 401) and its
/// [`PeerAddr`] in its extensions. `client_key` says which client a connection
/// counts against for `max_connections_per_client`.
pub async fn serve_tls<F>(
    listener: TcpListener,
    tls: TlsConfigCell,
    app: Router,
    opts: ServeOptions,
    stats: Arc<ConnStats>,
    client_key: ClientKey,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let handshakes = Arc::new(Semaphore::new(opts.max_handshakes.max(1)));
    let per_source = Counted::<IpAddr>::new(opts.max_handshakes_per_source);
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
        // detects dead HTTP/2 peers; idle live ones are closed by the idle timer
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let shared = Arc::new(Shared {
        builder,
        app,
        limit: Arc::new(Semaphore::new(opts.max_connections.max(1))),
        per_client: Counted::new(opts.max_connections_per_client),
        opts,
        stats,
        client_key,
        refusals_log: Throttle::default(),
        idle_log: Throttle::default(),
    });
    let handshake_log = Throttle::default();
    // Every connection task holds a receiver: `closed()` tells when all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
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
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let source_slot = per_source.try_take(peer.ip());
        let handshake_permit = Arc::clone(&handshakes).try_acquire_owned().ok();
        let (Some(source_slot), Some(handshake_permit)) = (source_slot, handshake_permit) else {
            // Dropping the socket closes it: a silent socket must not wait in line
            // in front of real clients.
            shared
                .stats
                .handshake_refusals
                .fetch_add(1, Ordering::Relaxed);
            if let Some(left_out) = handshake_log.allow() {
                tracing::debug!(%peer, left_out, "too many TLS handshakes in progress (from this address or in all); connection closed");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        shared.stats.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(Arc::clone(&shared.stats));
        let acceptor = TlsAcceptor::from(tls.current());
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _open = open;
            let handshake =
                tokio::time::timeout(shared.opts.handshake_timeout, acceptor.accept(tcp)).await;
            drop(handshake_permit);
            drop(source_slot);
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    shared
                        .stats
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    shared
                        .stats
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(shared, stream, peer, stop).await;
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(shared.opts.shutdown_grace, stop_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

/// A connection past its handshake: admitted (per-client cap, connection limit)
/// or closed, then served until it ends, goes idle, or the server shuts down.
async fn serve_connection(
    shared: Arc<Shared>,
    mut stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| ClientIdentity::from_der(c));
    if identity.is_none() {
        tracing::warn!(%peer, "verified client certificate could not be read; requests will get 401");
    }
    let key = identity.as_ref().and_then(|id| (shared.client_key)(id));
    let admitted = match shared.per_client.try_take(key.clone()) {
        None => None,
        Some(slot) => {
            // Wait for a slot in the listen-backlog spirit, but not forever.
            tokio::time::timeout(
                shared.opts.handshake_timeout,
                Arc::clone(&shared.limit).acquire_owned(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|permit| (slot, permit))
        }
    };
    let Some(_admitted) = admitted else {
        shared
            .stats
            .connection_refusals
            .fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = shared.refusals_log.allow() {
            tracing::debug!(
                %peer,
                client = key.as_deref().unwrap_or("(unmatched certificate)"),
                left_out,
                "connection refused: the client holds its maximum of connections, or no connection slot freed in time"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        return;
    };
    let activity = Arc::new(Activity {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_end_ms: AtomicU64::new(u64::MAX),
    });
    let app = shared.app.clone();
    let act = Arc::clone(&activity);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = act.begin();
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
        }
        req.extensions_mut().insert(PeerAddr(peer));
        let fut = app.clone().oneshot(req);
        async move {
            let resp = fut.await;
            drop(busy);
            resp
        }
    });
    let conn = shared.builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let first = shared.opts.first_request_timeout;
    let idle = shared.opts.idle_timeout;
    // After an idle close starts, the connection gets this long to say goodbye
    // (a response still streaming finishes; hyper closes at once otherwise).
    let mut closing: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let wake = match closing {
            Some(t) => t,
            None => activity
                .idle_deadline(first, idle)
                .unwrap_or_else(|| Instant::now() + idle.min(first)),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if closing.is_some() {
                    return; // dropped: the socket closes
                }
                if activity.idle_deadline(first, idle).is_some_and(|d| d <= Instant::now()) {
                    shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    if let Some(left_out) = shared.idle_log.allow() {
                        tracing::debug!(%peer, left_out, "closing a connection with no request in time");
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + idle.max(first));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_slots_are_capped_per_key_and_given_back() {
        let t = Counted::<u8>::new(2);
        let a = t.try_take(1).unwrap();
        let _b = t.try_take(1).unwrap();
        assert!(t.try_take(1).is_none());
        let _c = t.try_take(2).unwrap();
        drop(a);
        assert!(t.try_take(1).is_some());
    }

    #[test]
    fn idle_deadline_follows_requests() {
        let a = Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(u64::MAX),
        });
        let first = Duration::from_secs(5);
        let idle = Duration::from_secs(30);
        assert_eq!(a.idle_deadline(first, idle), Some(a.start + first));
        let busy = a.begin();
        assert_eq!(a.idle_deadline(first, idle), None);
        drop(busy);
        let d = a.idle_deadline(first, idle).unwrap();
        assert!(d >= a.start + idle);
    }
}
