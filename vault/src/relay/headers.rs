//! Which headers a caller may have forwarded to a provider: names that are HTTP
//! tokens, values without line breaks, never the ones the client sets itself or
//! that describe one connection, and a bounded number and size.

use axum::http::{HeaderName, HeaderValue};

use super::RelayError;

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

/// The caller's headers, checked: at most `max_count` of them, names and values
/// together at most `max_bytes`; a reserved name, a name that is not an HTTP
/// token, a repeated name or a value with control characters is refused (422
/// `invalid_header`) rather than silently dropped, so the caller knows what the
/// provider gets. Names come back lower-case.
pub fn forwarded_headers<'a>(
    given: impl IntoIterator<Item = (&'a str, &'a str)>,
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<(HeaderName, HeaderValue)>, RelayError> {
    let bad = |detail: String| RelayError::template("invalid_header", detail);
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut bytes = 0usize;
    for (name, value) in given {
        if out.len() >= max_count {
            return Err(bad(format!("at most {max_count} headers are forwarded")));
        }
        bytes = bytes.saturating_add(name.len()).saturating_add(value.len());
        if bytes > max_bytes {
            return Err(bad(format!(
                "the headers are larger than {max_bytes} bytes together"
            )));
        }
        if !crate::config::is_header_name(name) {
            return Err(bad(
                "a header name is not an HTTP token of at most 64 characters".to_owned(),
            ));
        }
        if is_reserved_header(name) {
            return Err(bad(format!(
                "{:?} is set by the vault's HTTP client, never by a caller",
                name.to_ascii_lowercase()
            )));
        }
        let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| bad("a header name is not an HTTP token".to_owned()))?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("{name:?} is given twice")));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad(format!(
                "the value of {name:?} holds control characters"
            )));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| bad(format!("the value of {name:?} is not a header value")))?;
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(h: &[(&str, &str)]) -> Result<Vec<(HeaderName, HeaderValue)>, RelayError> {
        forwarded_headers(h.iter().copied(), 4, 200)
    }

    #[test]
    fn ordinary_headers_pass_lower_cased() {
        let h = fwd(&[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "order-1234"),
        ])
        .unwrap();
        assert_eq!(h[0].0.as_str(), "content-type");
        assert_eq!(h[1].1.to_str().unwrap(), "order-1234");
    }

    #[test]
    fn reserved_malformed_repeated_and_oversized_are_refused() {
        for h in [
            vec![("Host", "evil.example")],
            vec![("connection", "close")],
            vec![("Content-Length", "5")],
            vec![("transfer-encoding", "chunked")],
            vec![("upgrade", "h2c")],
            vec![("bad name", "x")],
            vec![("", "x")],
            vec![("x-a", "1\r\nhost: evil")],
            vec![("x-a", "1\n")],
            vec![("x-a", "1"), ("X-A", "2")],
            vec![("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")],
            vec![("a", &"x".repeat(300))],
        ] {
            let e = fwd(&h).unwrap_err();
            assert_eq!(e.code(), "invalid_header", "{h:?}");
        }
    }
}
