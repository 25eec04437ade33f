//! The HTTP API: routes, handlers, problem+json errors, the client identity and
//! authorization extractors, metrics, and [`start`], which serves it all over
//! mutual TLS.
//!
//! | route | permission | answer |
//! |---|---|---|
//! | `POST /v1/tokens` | tokenize | 201 token (200 if the card was already stored) |
//! | `POST /v1/tokens/batch` | tokenize | 200 `{"results":[…]}` |
//! | `GET /v1/tokens/{token}` | read | 200 token metadata |
//! | `POST /v1/tokens/{token}/detokenize` | detokenize | 200 the card |
//! | `DELETE /v1/tokens/{token}` | delete | 204 |
//! | `POST /v1/relay/{destination}` | relay (and listed by the destination) | 200 the provider's answer, masked |
//! | `GET /healthz` | (any certificate) | 200 `{"status":"ok"}` |
//! | `GET /metrics` | metrics | Prometheus text (every tenant's figures) |
//!
//! Logging: each request gets a span with its id, method and *matched route
//! template* (never the raw path: a token or a mistaken card number could be in it)
//! and one `info` event with status and latency.

mod auth;
mod handlers;
mod json;
pub mod metrics;
mod problem;
pub mod ratelimit;
mod relay;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use auth::{Caller, ClientRegistry};
pub use metrics::Metrics;
pub use problem::{CODES, Problem, ProblemBody, current_request_id};

use crate::config::{Config, ConfigError, Limits};
use crate::service::request::AccessContext;
use crate::service::{AuditAction, AuditOutcome, Vault};
use crate::store::Upkeep;
use crate::tls::{ConnStats, ServeOptions};

struct Shared {
    vault: Vault,
    clients: ClientRegistry,
    limits: Limits,
    metrics: Metrics,
    detokenize_limit: Option<ratelimit::RateLimiter>,
    relay: Option<crate::relay::Destinations>,
    relay_header_limits: (usize, usize),
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("vault", &self.inner.vault)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state for `vault` with `config`'s clients and limits; `conns` are the
    /// accept loop's counters (shown on `/metrics`).
    pub fn new(vault: Vault, config: &Config, conns: Arc<ConnStats>) -> Self {
        AppState::with_relay(vault, config, conns, None)
    }

    /// [`AppState::new`] with the relay's destinations (built from
    /// `config.relay` by [`crate::relay::Destinations::build`]).
    pub fn with_relay(
        vault: Vault,
        config: &Config,
        conns: Arc<ConnStats>,
        relay: Option<crate::relay::Destinations>,
    ) -> Self {
        AppState {
            inner: Arc::new(Shared {
                vault,
                clients: ClientRegistry::new(&config.clients),
                limits: config.limits.clone(),
                metrics: Metrics::new(conns),
                detokenize_limit: (config.limits.detokenize_per_second > 0.0).then(|| {
                    ratelimit::RateLimiter::new(
                        config.limits.detokenize_per_second,
                        config.limits.detokenize_burst,
                    )
                }),
                relay,
                relay_header_limits: config
                    .relay
                    .as_ref()
                    .map_or((0, 0), |r| (r.max_headers, r.header_bytes)),
            }),
        }
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The clients.
    pub fn clients(&self) -> &ClientRegistry {
        &self.inner.clients
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The per-client detokenize limiter, if configured.
    pub(crate) fn detokenize_limit(&self) -> Option<&ratelimit::RateLimiter> {
        self.inner.detokenize_limit.as_ref()
    }

    /// The relay destination named `name`, if the relay is configured and has it.
    pub(crate) fn relay_destination(&self, name: &str) -> Option<Arc<crate::relay::RelayClient>> {
        self.inner.relay.as_ref().and_then(|d| d.get(name))
    }

    /// Most caller headers a relay forwards, and their bytes together.
    pub(crate) fn relay_header_limits(&self) -> (usize, usize) {
        self.inner.relay_header_limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The API's router. Requests must carry a [`crate::tls::ClientIdentity`] in their
/// extensions (the accept loop puts it there); without one they get 401.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/tokens", post(handlers::tokenize))
        .route("/v1/tokens/batch", post(handlers::batch))
        .route(
            "/v1/tokens/{token}",
            get(handlers::metadata).delete(handlers::delete),
        )
        .route("/v1/tokens/{token}/detokenize", post(handlers::detokenize))
        .route("/v1/relay/{destination}", post(relay::relay))
        .route(
            "/v1/subjects/{subject}/erase",
            post(handlers::erase_subject),
        )
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Per request: an id (task-local, `x-request-id` header), a span naming the
/// route template, metrics, `cache-control: no-store`.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = problem::new_request_id();
    let route = metrics::route_index(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let (method_label, route_label) = metrics::ROUTES
        .get(route)
        .copied()
        .unwrap_or(("other", "other"));
    let span = tracing::info_span!("request", request_id = %id, method = method_label, route = route_label);
    let header_id = HeaderValue::from_str(&id).ok();
    let mut resp = problem::with_request_id(id, next.run(req))
        .instrument(span.clone())
        .await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    state.metrics().observe(route, status, elapsed);
    let headers = resp.headers_mut();
    if let Some(v) = header_id {
        headers.insert("x-request-id", v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request"
        )
    });
    resp
}

/// A server started by [`start`].
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl RunningServer {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it has shut down.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits until it has shut down (after the shutdown signal, the drain, and the
    /// vault's writer stopping).
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration (TLS material, listen address) is unusable; names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The audit log could not record the server's start.
    #[error("the audit log could not record the server start: {0}")]
    Audit(crate::VaultError),
}

/// Serves `vault` per `config` over mutual TLS: builds the TLS configuration, binds
/// `config.listen`, records `serve.start` in the audit log, and spawns the accept
/// loop and a task that reloads keys every second (so `keys rotate` from another
/// process takes effect). When `shutdown` resolves, it stops accepting, drains
/// in-flight requests (up to `limits.shutdown_grace_ms`), records `serve.stop`
/// and shuts the vault down.
pub async fn start<F>(
    config: &Config,
    vault: Vault,
    shutdown: F,
) -> Result<RunningServer, StartError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let tls = crate::tls::server_config(&config.tls)?;
    let recount_every = token_recount_every()?;
    // Before anything is recorded: a destination whose files are unusable stops
    // the start.
    let relay = config
        .relay
        .as_ref()
        .map(crate::relay::Destinations::build)
        .transpose()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError::new("listen", format!("{}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError::new("listen", e.to_string()))?;
    let server_ctx = AccessContext {
        actor: "panvault-serve".into(),
        peer: Some(addr.to_string()),
        ..Default::default()
    };
    let details = format!("listen={addr} clients={}", config.clients.len());
    vault
        .record_event(
            &server_ctx,
            AuditAction::ServeStart,
            None,
            None,
            AuditOutcome::Success,
            Some(&details),
        )
        .await
        .map_err(StartError::Audit)?;
    let conns = Arc::new(ConnStats::default());
    let state = AppState::with_relay(vault.clone(), config, Arc::clone(&conns), relay);
    let app = router(state);
    let opts = ServeOptions::from(&config.limits);
    let registry = Arc::new(ClientRegistry::new(&config.clients));
    let client_key: crate::tls::ClientKey = Arc::new(move |id: &crate::tls::ClientIdentity| {
        registry.resolve(id).map(|(c, _)| c.name.clone())
    });
    let tls = crate::tls::TlsConfigCell::new(tls);
    let crl_watch = (!config.tls.crls.is_empty()).then(|| (config.tls.clone(), tls.clone()));
    let retention = config.retention.clone();
    let audit_retention = config.audit.retention_days;
    let purge_ctx = server_ctx.clone();
    let cvc_ctx = server_ctx.clone();
    let handle = tokio::spawn(async move {
        let refresher = tokio::spawn(refresh_keys(vault.clone(), recount_every));
        let purger = tokio::spawn(purge_loop(
            vault.clone(),
            retention,
            audit_retention,
            purge_ctx,
        ));
        let cvc_sweeper = tokio::spawn(cvc_sweep_loop(vault.clone(), cvc_ctx));
        let crl_watcher =
            crl_watch.map(|(settings, cell)| tokio::spawn(crate::tls::watch_crls(settings, cell)));
        crate::tls::serve_tls(listener, tls, app, opts, conns, client_key, shutdown).await;
        refresher.abort();
        purger.abort();
        cvc_sweeper.abort();
        if let Some(w) = crl_watcher {
            w.abort();
        }
        if let Err(e) = vault
            .record_event(
                &server_ctx,
                AuditAction::ServeStop,
                None,
                None,
                AuditOutcome::Success,
                Some(&format!("listen={addr}")),
            )
            .await
        {
            tracing::warn!(error = %e, "could not record the server stop in the audit log");
        }
        let _ = tokio::task::spawn_blocking(move || vault.shutdown()).await;
    });
    Ok(RunningServer { addr, handle })
}

/// Every `purge_interval_secs`: purges cards past expiry plus grace and tokens past
/// their TTL (PCI DSS 3.2.1), and audit events older than the audit retention
/// (10.5.1; a signed prune record stays). Each purge is one audit event.
async fn purge_loop(
    vault: Vault,
    retention: crate::config::Retention,
    audit_days: i64,
    ctx: AccessContext,
) {
    if retention.purge_interval_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(retention.purge_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: let the server settle first
    let every = Duration::from_secs(retention.purge_interval_secs);
    loop {
        tick.tick().await;
        // Nodes sharing a database run each round once between them.
        let purged = vault
            .purge_retention_round(retention.card_grace_days, every, &ctx)
            .await;
        let ours = match purged {
            Ok(Some(r)) => {
                tracing::info!(
                    past_expiry = r.past_expiry,
                    past_ttl = r.past_ttl,
                    "retention purge"
                );
                true
            }
            Ok(None) => {
                tracing::debug!("another node runs this retention round");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention purge failed; will retry");
                true
            }
        };
        // PostgreSQL: the round's node prunes every node's chain (a prune lock
        // keeps it to one at a time with `audit prune`).
        if ours {
            match vault.prune_audit(audit_days).await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "audit events past retention pruned");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit prune failed; will retry"),
            }
        }
        if claimed(&vault, Upkeep::Idempotency, every).await {
            match vault.purge_idempotency().await {
                Ok(n) if n > 0 => {
                    tracing::info!(deleted = n, "idempotent answers past 24 h purged");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "idempotency purge failed; will retry"),
            }
        }
    }
}

/// Deletes held security codes past their deadline and destroys the window keys
/// whose codes have all expired: every quarter of the codes' lifetime (1 s to
/// 60 s) when the vault holds codes, else every 10 minutes (codes held before a
/// relay was removed from the configuration still expire). Reads refuse an
/// expired code before the sweep has run.
async fn cvc_sweep_loop(vault: Vault, ctx: AccessContext) {
    let every = vault.cvc_ttl().map_or(Duration::from_secs(600), |ttl| {
        (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !claimed(&vault, Upkeep::CvcSweep, every).await {
            continue;
        }
        match vault.sweep_cvcs(&ctx).await {
            Ok(r) if r.codes + r.keys > 0 => tracing::info!(
                codes = r.codes,
                keys = r.keys,
                "expired security codes and their keys deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "security code sweep failed; will retry"),
        }
    }
}

/// Whether this node runs this round of `task` (always, on SQLite); a failure to
/// ask is logged and skips the round.
async fn claimed(vault: &Vault, task: Upkeep, every: Duration) -> bool {
    match vault.claim_upkeep_round(task, every).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(task = task.name(), "another node runs this round");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, task = task.name(), "could not claim the round; will retry");
            false
        }
    }
}

/// The environment variable that sets how often a PostgreSQL node recounts the
/// tokens for `panvault_tokens_stored` (whole seconds, at least 1; default 60).
pub const TOKEN_RECOUNT_ENV: &str = "PANVAULT_TOKEN_RECOUNT_SECS";

/// How often a PostgreSQL node recounts the tokens table ([`TOKEN_RECOUNT_ENV`],
/// read once at start): an operator knob (counting a large table costs a scan)
/// and the tests' way to see a recount without waiting a minute. A value that is
/// not a whole number of seconds ≥ 1 stops the start rather than being guessed at.
fn token_recount_every() -> Result<Duration, ConfigError> {
    let Some(raw) = std::env::var_os(TOKEN_RECOUNT_ENV) else {
        return Ok(Duration::from_secs(60));
    };
    raw.to_str()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&secs| secs >= 1)
        .map(Duration::from_secs)
        .ok_or_else(|| ConfigError::new(TOKEN_RECOUNT_ENV, "not a whole number of seconds ≥ 1"))
}

/// Reloads keys every second when another process changed them; on PostgreSQL
/// also keeps the node's presence lock and, every `recount_every`, recounts the
/// tokens.
async fn refresh_keys(vault: Vault, recount_every: Duration) {
    let mut counted = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let v = vault.clone();
        let recount = v.is_postgres() && counted.elapsed() >= recount_every;
        if recount {
            counted = tokio::time::Instant::now();
        }
        match tokio::task::spawn_blocking(move || {
            if let Err(e) = v.keep_presence() {
                tracing::debug!(error = %e, "could not hold the node's presence lock");
            }
            // Other nodes insert and delete too: the token gauge follows the table.
            if recount && let Err(e) = v.refresh_token_count() {
                tracing::debug!(error = %e, "could not count the tokens");
            }
            v.refresh_keys()
        })
        .await
        {
            Ok(Ok(true)) => match vault.active_key_version() {
                Ok(version) => tracing::info!(version, "data keys reloaded"),
                Err(e) => tracing::warn!(error = %e, "data keys reloaded, then unreadable"),
            },
            Ok(Ok(false)) => {}
            // `refresh_keys` logs a failure once, when tokenize starts refusing.
            Ok(Err(e)) => tracing::debug!(error = %e, "could not check for key changes"),
            Err(_) => return,
        }
    }
}
