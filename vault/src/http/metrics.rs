//! Prometheus metrics without a metrics library: atomic counters per route, method
//! and status, fixed-bucket latency histograms, rendered as text on `/metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

use crate::tls::ConnStats;

/// The routes measured: (method, template). A method a route does not serve
/// (`PUT /v1/tokens`, answered 405) is counted under the route with method
/// `other`; unknown paths under `other`/`other`.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/tokens"),
    ("POST", "/v1/tokens/batch"),
    ("GET", "/v1/tokens/{token}"),
    ("DELETE", "/v1/tokens/{token}"),
    ("POST", "/v1/tokens/{token}/detokenize"),
    ("POST", "/v1/subjects/{subject}/erase"),
    ("POST", "/v1/relay/{destination}"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("other", "/v1/tokens"),
    ("other", "/v1/tokens/batch"),
    ("other", "/v1/tokens/{token}"),
    ("other", "/v1/tokens/{token}/detokenize"),
    ("other", "/v1/subjects/{subject}/erase"),
    ("other", "/v1/relay/{destination}"),
    ("other", "/healthz"),
    ("other", "/metrics"),
    ("other", "other"),
];

const OTHER: usize = ROUTES.len() - 1;

/// Upper bounds of the latency buckets, in microseconds (the last, +Inf, is implied).
const BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// Statuses are 100–599; each gets a slot.
const STATUS_SLOTS: usize = 500;

struct RouteStats {
    statuses: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The server's counters.
pub struct Metrics {
    routes: Vec<RouteStats>,
    conns: Arc<ConnStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The index in [`ROUTES`] of a request's method and matched route template.
pub fn route_index(method: &Method, template: Option<&str>) -> usize {
    let Some(t) = template else { return OTHER };
    ROUTES
        .iter()
        .position(|(m, p)| *p == t && *m == method.as_str())
        .or_else(|| ROUTES.iter().position(|(m, p)| *p == t && *m == "other"))
        .unwrap_or(OTHER)
}

impl Metrics {
    /// Counters for a server whose connection statistics are `conns`.
    pub fn new(conns: Arc<ConnStats>) -> Self {
        Metrics {
            routes: ROUTES.iter().map(|_| RouteStats::new()).collect(),
            conns,
        }
    }

    /// Records one request.
    pub fn observe(&self, route: usize, status: u16, elapsed: Duration) {
        let Some(r) = self.routes.get(route) else {
            return;
        };
        if let Some(c) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| r.statuses.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        if let Some(b) = r.buckets.get(slot) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        r.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the vault's gauges.
    pub fn render(&self, tokens_stored: Option<i64>, key_version: Option<u32>) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str(
            "# HELP panvault_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE panvault_http_requests_total counter\n");
        for ((method, route), r) in ROUTES.iter().zip(&self.routes) {
            for (i, c) in r.statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "panvault_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{}\"}} {n}",
                        i + 100
                    );
                }
            }
        }
        out.push_str("# HELP panvault_http_request_duration_seconds Time from request received to response headers ready.\n");
        out.push_str("# TYPE panvault_http_request_duration_seconds histogram\n");
        for ((method, route), r) in ROUTES.iter().zip(&self.routes) {
            let counts: Vec<u64> = r
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0u64;
            for (bound, n) in BUCKETS_US.iter().zip(&counts) {
                cumulative += n;
                let le = *bound as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "panvault_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"+Inf\"}} {total}"
            );
            let sum = r.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_sum{{route=\"{route}\",method=\"{method}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "panvault_http_request_duration_seconds_count{{route=\"{route}\",method=\"{method}\"}} {total}"
            );
        }
        if let Some(n) = tokens_stored {
            out.push_str("# HELP panvault_tokens_stored Tokens (card records) in the vault.\n# TYPE panvault_tokens_stored gauge\n");
            let _ = writeln!(out, "panvault_tokens_stored {n}");
        }
        if let Some(v) = key_version {
            out.push_str("# HELP panvault_active_key_version Version of the data key new records are sealed with.\n");
            out.push_str("# TYPE panvault_active_key_version gauge\n");
            let _ = writeln!(out, "panvault_active_key_version {v}");
        }
        let c = &self.conns;
        let gauges = [
            (
                "panvault_connections_open",
                "gauge",
                "TLS connections open now.",
                c.open.load(Ordering::Relaxed),
            ),
            (
                "panvault_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                c.accepted.load(Ordering::Relaxed),
            ),
            (
                "panvault_tls_handshake_failures_total",
                "counter",
                "TLS handshakes refused or failed.",
                c.handshake_failures.load(Ordering::Relaxed),
            ),
            (
                "panvault_tls_handshake_timeouts_total",
                "counter",
                "TLS handshakes that timed out.",
                c.handshake_timeouts.load(Ordering::Relaxed),
            ),
            (
                "panvault_tls_handshake_refusals_total",
                "counter",
                "Sockets closed unread: too many handshakes in progress from their address or in all.",
                c.handshake_refusals.load(Ordering::Relaxed),
            ),
            (
                "panvault_connection_refusals_total",
                "counter",
                "Connections closed after the handshake: their client held its maximum of connections, or no slot freed in time.",
                c.connection_refusals.load(Ordering::Relaxed),
            ),
            (
                "panvault_connections_idle_closed_total",
                "counter",
                "Connections closed for starting no request in time.",
                c.idle_closed.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new(Arc::new(ConnStats::default()));
        let i = route_index(&Method::POST, Some("/v1/tokens"));
        assert_eq!(i, 0);
        // A method the route does not serve: the route, method `other`.
        let put = route_index(&Method::PUT, Some("/v1/tokens"));
        assert_eq!(ROUTES.get(put), Some(&("other", "/v1/tokens")));
        assert_eq!(route_index(&Method::PUT, Some("/v2/unknown")), OTHER);
        assert_eq!(
            route_index(&Method::POST, Some("/v1/subjects/{subject}/erase")),
            5
        );
        assert_eq!(route_index(&Method::GET, None), OTHER);
        m.observe(i, 201, Duration::from_micros(700));
        m.observe(i, 201, Duration::from_millis(30));
        m.observe(OTHER, 404, Duration::from_micros(10));
        let text = m.render(Some(42), Some(3));
        assert!(text.contains("panvault_http_requests_total{route=\"/v1/tokens\",method=\"POST\",status=\"201\"} 2"), "{text}");
        assert!(text.contains(
            "panvault_http_requests_total{route=\"other\",method=\"other\",status=\"404\"} 1"
        ));
        assert!(text.contains("panvault_http_request_duration_seconds_bucket{route=\"/v1/tokens\",method=\"POST\",le=\"0.001\"} 1"));
        assert!(text.contains("panvault_http_request_duration_seconds_bucket{route=\"/v1/tokens\",method=\"POST\",le=\"+Inf\"} 2"));
        assert!(text.contains("panvault_tokens_stored 42"));
        assert!(text.contains("panvault_active_key_version 3"));
    }
}
