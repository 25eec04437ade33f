//! Which headers a caller may have forwarded to a provider.

/// Headers the HTTP client sets itself or that describe one connection
/// (hop-by-hop, RFC 9110 7.6.1): never taken from a caller or a signing rule.
const RESERVED: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "http2-settings",
];

/// Whether `name` (any case) is a header the relay never takes from a caller.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}
