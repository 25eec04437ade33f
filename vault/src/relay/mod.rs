//! The relay to payment providers: a caller's request template with `{{card.*}}`
//! placeholders is resolved with the card's data, optionally signed, sent to a
//! configured destination, and the provider's answer is masked before it goes
//! back.
//!
//! - [`template`]: placeholders, escaping per content type (JSON strings,
//!   percent-encoding); a substituted value can never change the request's shape.
//! - [`headers`]: which caller headers are forwarded.
//! - [`sign`]: a signature the provider wants over the resolved body.
//! - [`mask`]: card numbers (and the security code used) masked out of the answer.
//! - [`outbound`]: the HTTPS client, one connection pool per destination.
//!
//! Nothing here touches the database: the service opens the card and records the
//! audit events, and hands this module the values it needs.

pub mod headers;
pub mod mask;
pub mod outbound;
pub mod sign;
pub mod template;

pub use headers::{forwarded_headers, is_reserved_header};
pub use mask::{MaskedAnswer, mask_answer};
pub use outbound::{Destinations, ProviderAnswer, RelayClient};
pub use sign::Signer;
pub use template::{BodyKind, CardValues, Placeholder, placeholders, resolve};

/// Why a relay failed. No variant holds a card number, a security code or a
/// signing secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The template or the request is unusable (422): the code says how.
    #[error("{detail}")]
    Template {
        /// `bad_template`, `unknown_placeholder`, `unsupported_content_type`,
        /// `invalid_header`, `request_too_large`.
        code: &'static str,
        /// What exactly (never a value from the card).
        detail: String,
    },
    /// The template needs `{{card.cvc}}` and no security code is held (409).
    #[error("no security code is held for this token (none was given, it expired, or it was used)")]
    CvcUnavailable,
    /// The provider could not be reached: DNS, TCP, TLS (certificate refused), or
    /// the connection broke (502).
    #[error("the provider could not be reached")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The provider did not answer in time (504).
    #[error("the provider did not answer within {0} s")]
    Timeout(u64),
    /// The provider's answer is larger than the configured limit (502).
    #[error("the provider's answer is larger than {0} bytes")]
    AnswerTooLarge(usize),
}

impl RelayError {
    /// A 422 with `code` and `detail`.
    pub fn template(code: &'static str, detail: impl Into<String>) -> Self {
        RelayError::Template {
            code,
            detail: detail.into(),
        }
    }

    /// The problem code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            RelayError::Template { code, .. } => code,
            RelayError::CvcUnavailable => "cvc_unavailable",
            RelayError::Unreachable(_) => "upstream_unreachable",
            RelayError::Timeout(_) => "upstream_timeout",
            RelayError::AnswerTooLarge(_) => "upstream_answer_too_large",
        }
    }
}
