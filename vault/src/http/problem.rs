//! Errors as RFC 9457 problem details (`application/problem+json`), and the request
//! id every response carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::pan::CardError;
use crate::error::VaultError;

/// Limits the "storage unavailable" warning to one a second (with a count of the rest).
static UNAVAILABLE_WARN: crate::store::WarnLimiter =
    crate::store::WarnLimiter::new(std::time::Duration::from_secs(1));

tokio::task_local! {
    /// The id of the request being served (set by the tracking middleware).
    static REQUEST_ID: String;
}

/// Runs `f` with `id` as the current request id.
pub(crate) async fn with_request_id<F: std::future::Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The current request's id, if inside a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(String::clone).ok()
}

/// A fresh request id: 16 random hex characters.
pub(crate) fn new_request_id() -> String {
    let mut b = [0u8; 8];
    if crate::core::rng::fill(&mut b).is_err() {
        // The RNG failing is not a reason to fail the request; ids need only be
        // unique enough to find a request in the logs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b = u64::try_from(nanos & u128::from(u64::MAX))
            .unwrap_or_default()
            .to_le_bytes();
    }
    // A leading letter: a random id may be all digits, and must never look like a
    // card number to a log scanner (a digit run glued to a letter does not).
    b.iter().fold(String::from("r"), |mut s, x| {
        use std::fmt::Write;
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// An API error. Its `detail` never holds a card number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

/// The JSON body of a problem.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemBody {
    /// `https://panvault.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed summary of the code.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// What exactly went wrong.
    pub detail: String,
    /// The request id (also in the `x-request-id` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Every code the API answers with, its status and title.
pub const CODES: &[(&str, u16, &str)] = &[
    ("invalid_json", 400, "Request body is not valid JSON"),
    ("invalid_request", 400, "Invalid request"),
    ("purpose_required", 400, "A purpose is required"),
    ("unauthenticated", 401, "Client certificate required"),
    ("forbidden", 403, "Forbidden"),
    ("not_found", 404, "Not found"),
    ("method_not_allowed", 405, "Method not allowed"),
    ("request_timeout", 408, "Request body too slow"),
    (
        "idempotency_key_reused",
        409,
        "Idempotency key used for another request",
    ),
    (
        "idempotency_key_in_use",
        409,
        "A request with this idempotency key is in progress",
    ),
    ("payload_too_large", 413, "Payload too large"),
    ("unsupported_media_type", 415, "Unsupported media type"),
    ("invalid_card_number", 422, "Invalid card number"),
    ("invalid_card", 422, "Invalid card data"),
    ("card_expired", 422, "Card expired"),
    (
        "cvv_not_accepted",
        422,
        "Card verification codes are not accepted",
    ),
    ("cvc_unavailable", 409, "No security code held"),
    ("bad_template", 422, "Unusable relay template"),
    ("unknown_placeholder", 422, "Unknown placeholder"),
    (
        "unsupported_content_type",
        422,
        "Unsupported content type for a relay body",
    ),
    ("invalid_header", 422, "Header not forwarded"),
    ("request_too_large", 422, "Relayed request too large"),
    ("rate_limited", 429, "Too many requests"),
    ("internal", 500, "Internal error"),
    ("unavailable", 503, "Service unavailable"),
    ("audit_unavailable", 503, "Audit log unavailable"),
    ("upstream_unreachable", 502, "Payment provider unreachable"),
    (
        "upstream_answer_too_large",
        502,
        "Payment provider's answer too large",
    ),
    ("upstream_timeout", 504, "Payment provider timed out"),
];

fn title(code: &str) -> &'static str {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("Error", |(_, _, t)| t)
}

impl Problem {
    /// A problem with `status`, `code` (one of [`CODES`]) and `detail`.
    /// A detail that would hold a card number (say, an unknown field named with
    /// one) is replaced: no response ever carries one.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if crate::service::request::contains_card_number(&detail) {
            zeroize::Zeroize::zeroize(&mut detail);
            detail = "(detail withheld: it would have contained a card number)".to_owned();
        }
        Problem {
            status,
            code,
            detail,
        }
    }

    /// 400 `invalid_json`.
    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_json", detail)
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// The problem for a vault error. Vault error texts never contain card
    /// numbers; internal errors get a generic detail (and are logged).
    pub fn from_vault(e: &VaultError) -> Self {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            VaultError::Card(
                CardError::InvalidCharacters | CardError::InvalidLength(_) | CardError::LuhnFailed,
            ) => Problem::new(unprocessable, "invalid_card_number", e.to_string()),
            VaultError::Card(CardError::Expired) => Problem::new(
                unprocessable,
                "card_expired",
                "the card expired before the current month",
            ),
            VaultError::Card(CardError::CvvNotAccepted) => {
                Problem::new(unprocessable, "cvv_not_accepted", e.to_string())
            }
            VaultError::Card(_) => Problem::new(unprocessable, "invalid_card", e.to_string()),
            VaultError::InvalidRequest { field, reason } if field == "purpose" => Problem::new(
                StatusCode::BAD_REQUEST,
                "purpose_required",
                format!("purpose: {reason}"),
            ),
            VaultError::InvalidRequest { field, reason } => {
                Problem::invalid_request(format!("{field}: {reason}"))
            }
            VaultError::NotFound => Problem::not_found("no such token"),
            VaultError::IdempotencyKeyReused => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request within 24 hours; use a new key",
            ),
            VaultError::IdempotencyKeyInUse => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "the first request with this Idempotency-Key is still in progress; retry later",
            ),
            VaultError::Relay(r) => Problem::from_relay(r),
            VaultError::AuditUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log could not record this access, so it was refused; try again later",
            ),
            e if e.is_unavailable() => {
                // At most one line a second: a full disk fails every request.
                if let Some(suppressed) = UNAVAILABLE_WARN.check() {
                    tracing::warn!(error = %e, request_id = current_request_id().as_deref().unwrap_or("-"), suppressed, "storage unavailable");
                }
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the vault cannot serve this request now; try again later",
                )
            }
            e => {
                tracing::error!(error = %e.with_causes(), request_id = current_request_id().as_deref().unwrap_or("-"), "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the request id identifies it in the server's log",
                )
            }
        }
    }

    /// The problem for a failed relay (its cause, which may name the provider's
    /// host, goes to the server's log, not to the caller).
    pub fn from_relay(e: &crate::relay::RelayError) -> Self {
        use crate::relay::RelayError as R;
        let status = match e {
            R::Template { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            R::CvcUnavailable => StatusCode::CONFLICT,
            R::Unreachable(_) | R::AnswerTooLarge(_) => StatusCode::BAD_GATEWAY,
            R::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        };
        if matches!(e, R::Unreachable(_)) {
            let mut cause = String::new();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                cause.push_str(": ");
                cause.push_str(&c.to_string());
                src = c.source();
            }
            tracing::warn!(error = %e, cause = %cause, request_id = current_request_id().as_deref().unwrap_or("-"), "relay failed");
        }
        Problem::new(status, e.code(), e.to_string())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The JSON body (with the current request id).
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: format!("https://panvault.dev/problems/{}", self.code),
            title: title(self.code),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.clone(),
            request_id: current_request_id(),
        }
    }
}

/// The challenge of every 401.
pub const WWW_AUTHENTICATE: &str = "MutualTLS realm=\"panvault\"";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        // RFC 9110 §11.6.1: a 401 names the scheme to authenticate with; here a
        // client certificate that names a configured client (there is no
        // registered scheme for TLS client authentication).
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_vault_errors() {
        let cases: Vec<(VaultError, u16, &str)> = vec![
            (CardError::LuhnFailed.into(), 422, "invalid_card_number"),
            (
                CardError::InvalidLength(3).into(),
                422,
                "invalid_card_number",
            ),
            (CardError::Expired.into(), 422, "card_expired"),
            (CardError::CvvNotAccepted.into(), 422, "cvv_not_accepted"),
            (CardError::InvalidExpiryMonth.into(), 422, "invalid_card"),
            (
                VaultError::invalid("purpose", "required"),
                400,
                "purpose_required",
            ),
            (
                VaultError::invalid("card.number", "required"),
                400,
                "invalid_request",
            ),
            (VaultError::NotFound, 404, "not_found"),
            (VaultError::AuditUnavailable(None), 503, "audit_unavailable"),
            (
                VaultError::Store(crate::store::StoreError::Unavailable("x")),
                503,
                "unavailable",
            ),
            (VaultError::Decryption, 500, "internal"),
            (VaultError::internal("an invariant broke"), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let p = Problem::from_vault(&e);
            assert_eq!((p.status().as_u16(), p.code()), (status, code), "{e}");
            assert!(CODES.iter().any(|(c, s, _)| *c == code && *s == status));
        }
    }

    #[test]
    fn internal_is_a_bare_500_that_echoes_nothing() {
        let cause = std::io::Error::other("a secret detail from the cause");
        let e = VaultError::internal_from("encoding a response failed", cause);
        let p = Problem::from_vault(&e);
        assert_eq!((p.status().as_u16(), p.code()), (500, "internal"));
        assert!(!p.detail().contains("secret detail"), "{}", p.detail());
        assert!(!p.detail().contains("encoding"), "{}", p.detail());
        // The cause stays in the chain, for the server's log only.
        assert!(e.with_causes().contains("a secret detail from the cause"));
    }

    #[test]
    fn body_shape() {
        let b = Problem::not_found("no such token").body();
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["type"], "https://panvault.dev/problems/not_found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not found");
        assert_eq!(new_request_id().len(), 17);
        assert!(new_request_id().starts_with('r'));
    }

    #[test]
    fn detail_never_holds_a_card_number() {
        let p = Problem::from_vault(&VaultError::invalid("4242 4242 4242 4242", "unknown field"));
        assert!(!p.detail().contains("4242"), "{}", p.detail());
        assert_eq!(p.code(), "invalid_request");
    }
}
