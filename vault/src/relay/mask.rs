//! The provider's answer, made safe to hand back: every card number in its
//! headers and body masked with the scanner's detector (the one `panvault scan`
//! uses for leak scans), the security code that was sent masked wherever it
//! stands alone, and a count of what was masked for the audit event.

use axum::http::HeaderMap;
use panvault_audit::card::contains_card_number;
use panvault_audit::scan::redact_counted;
use zeroize::Zeroize;

/// Response headers that describe the provider's connection, not its answer.
const DROPPED: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "trailer",
    "upgrade",
];

/// An answer with nothing secret left in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedAnswer {
    /// The provider's status.
    pub status: u16,
    /// Its headers (lower-case names; repeated ones joined by `, `).
    pub headers: Vec<(String, String)>,
    /// Its body as text (invalid UTF-8 replaced by U+FFFD).
    pub body: String,
    /// How many card numbers (and security codes) were masked.
    pub masked: usize,
}

/// Masks `text`; adds what it masked to `count`.
fn clean(text: String, cvc: Option<&str>, count: &mut usize) -> String {
    let (mut out, n) = redact_counted(&text);
    let mut text = text;
    text.zeroize();
    *count = count.saturating_add(n);
    if let Some(cvc) = cvc.filter(|c| !c.is_empty()) {
        let (next, n) = mask_code(&out, cvc);
        if n > 0 {
            out.zeroize();
            out = next;
            *count = count.saturating_add(n);
        }
    }
    // The scanner keeps to the separators real cards are written with; the
    // request filter's looser detector (any separators, any script's digits) has
    // the last word: if it still sees a card number, every digit goes.
    if contains_card_number(&out) {
        let all: String = out
            .chars()
            .map(|c| {
                if panvault_audit::card::digit_value(c).is_some() {
                    '*'
                } else {
                    c
                }
            })
            .collect();
        out.zeroize();
        out = all;
        *count = count.saturating_add(1);
    }
    out
}

/// Replaces each run of ASCII digits equal to `code` (not part of a longer run)
/// by asterisks.
fn mask_code(text: &str, code: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut count = 0usize;
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let tail = rest.get(start..).unwrap_or_default();
        let run_len = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (before, tail) = rest.split_at(start);
        let (run, after) = tail.split_at(run_len);
        out.push_str(before);
        if run == code {
            out.push_str(&"*".repeat(run.len()));
            count = count.saturating_add(1);
        } else {
            out.push_str(run);
        }
        rest = after;
    }
    out.push_str(rest);
    (out, count)
}

/// The provider's answer with card numbers (and `cvc`, the code sent, if any)
/// masked out of its headers and body.
pub fn mask_answer(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    cvc: Option<&str>,
) -> MaskedAnswer {
    let mut masked = 0usize;
    let mut out_headers: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        if DROPPED.contains(&name) {
            continue;
        }
        // A name is a token a provider chose; one that reads as a card number is
        // dropped whole (and counted) rather than renamed.
        if contains_card_number(name) {
            masked = masked.saturating_add(1);
            continue;
        }
        let value = clean(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
            cvc,
            &mut masked,
        );
        match out_headers.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => out_headers.push((name.to_owned(), value)),
        }
    }
    let body = clean(String::from_utf8_lossy(body).into_owned(), cvc, &mut masked);
    MaskedAnswer {
        status,
        headers: out_headers,
        body,
        masked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const VISA: &str = "4111111111111111";

    #[test]
    fn card_numbers_are_masked_in_body_and_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("card 4111111111111111"));
        h.insert("content-length", HeaderValue::from_static("10"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("x-4111111111111111", HeaderValue::from_static("1"));
        let body = format!(
            "{{\"number\":\"{VISA}\",\"spaced\":\"4111 1111 1111 1111\",\"dots\":\"4111.1111.1111.1111\",\"amount\":1999}}"
        );
        let a = mask_answer(402, &h, body.as_bytes(), None);
        assert_eq!(a.status, 402);
        let all = format!("{:?}{}", a.headers, a.body);
        assert!(!contains_card_number(&all));
        assert!(!all.contains(VISA));
        assert!(a.masked >= 5, "{}", a.masked);
        assert!(a.headers.iter().all(|(n, _)| !n.contains("4111")));
        assert!(a.headers.iter().all(|(n, _)| n != "content-length"));
        assert!(
            a.headers
                .contains(&("x-multi".to_owned(), "a, b".to_owned()))
        );
    }

    #[test]
    fn an_answer_without_cards_is_untouched() {
        let body = br#"{"id":"ch_123","amount":1999,"created":1700000000,"last4":"1111"}"#;
        let a = mask_answer(200, &HeaderMap::new(), body, Some("737"));
        assert_eq!(a.body.as_bytes(), body);
        assert_eq!(a.masked, 0);
    }

    #[test]
    fn the_security_code_sent_is_masked_where_it_stands_alone() {
        let body = br#"{"cvc":"737","amount":17370,"ref":"x737"}"#;
        let a = mask_answer(200, &HeaderMap::new(), body, Some("737"));
        assert_eq!(a.body, r#"{"cvc":"***","amount":17370,"ref":"x***"}"#);
        assert_eq!(a.masked, 2);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let mut body = b"ok ".to_vec();
        body.push(0xff);
        body.extend_from_slice(VISA.as_bytes());
        let a = mask_answer(200, &HeaderMap::new(), &body, None);
        assert!(!a.body.contains(VISA));
        assert!(a.body.starts_with("ok "));
    }
}
