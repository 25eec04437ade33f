//! Relaying a card to a payment provider: the template is checked, the card is
//! opened, the `relay` audit event is made durable, and only then is the card
//! substituted and sent. The provider's answer is masked before it goes back, and
//! a `relay.result` event records how it went.
//!
//! The second event is recorded after the answer. If it cannot be, the caller
//! still gets the answer (the provider may have charged the card: refusing now
//! would invite a retry that charges twice) and the server logs the failure; the
//! first event already says who sent which token where and why.

use axum::http::{HeaderName, HeaderValue, Method};
use zeroize::Zeroizing;

use super::detokenize::check_purpose;
use super::request::AccessContext;
use super::{AuditAction, AuditOutcome, AuditRecord, Vault, audit_hook, audit_unavailable, cvc};
use crate::error::VaultError;
use crate::relay::{
    BodyKind, CardValues, MaskedAnswer, Placeholder, RelayClient, RelayError, mask_answer,
    placeholders, resolve,
};

/// What a caller asks to relay.
#[derive(Debug)]
pub struct RelayRequest<'a> {
    /// The token whose card goes into the template.
    pub token: &'a str,
    /// Why (recorded in the audit log).
    pub purpose: &'a str,
    /// `POST`, `PUT` or `PATCH`.
    pub method: Method,
    /// The caller's headers, already filtered ([`crate::relay::forwarded_headers`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body template.
    pub body: &'a str,
}

/// A relay's result: the provider's answer, masked.
#[derive(Debug)]
pub struct RelayOutcome {
    /// The answer.
    pub answer: MaskedAnswer,
    /// Bytes of body sent to the provider.
    pub sent_bytes: usize,
    /// Bytes of body received from it.
    pub received_bytes: usize,
}

/// Values that stand in for the card while a template is checked before any card
/// is opened.
const PROBE: CardValues<'static> = CardValues {
    number: "0000000000000000",
    exp_month: 1,
    exp_year: 2000,
    cvc: Some("000"),
    name: Some("probe"),
};

impl Vault {
    /// Relays `req` with the card of `req.token` (of `tenant`) to `dest`.
    ///
    /// Order: the purpose, method and template are checked (a bad one is refused
    /// before any card is opened); the card is opened; the security code is taken
    /// if the template uses it; the `relay` event is made durable (refused with
    /// [`VaultError::AuditUnavailable`] if it cannot be); then the body is
    /// resolved, signed if the destination says so, and sent.
    pub async fn relay(
        &self,
        tenant: &str,
        dest: &RelayClient,
        req: RelayRequest<'_>,
        ctx: &AccessContext,
    ) -> Result<RelayOutcome, VaultError> {
        check_purpose(req.purpose)?;
        let RelayRequest {
            token,
            purpose,
            method,
            mut headers,
            body,
        } = req;
        let checked = check_template(dest, &method, &headers, body);
        let (kind, needs_cvc) = match checked {
            Ok(k) => k,
            Err(e) => {
                let e = VaultError::Relay(e);
                self.audit_relay_refused(tenant, token, purpose, &e, ctx)
                    .await?;
                return Err(e);
            }
        };
        let (opened, row_id) = self.open_card(tenant, token).await;
        let (card, id) = match (opened, row_id) {
            (Ok(card), Some(id)) => (card, id),
            (Err(e), _) => {
                self.audit_relay_refused(tenant, token, purpose, &e, ctx)
                    .await?;
                return Err(e);
            }
            (Ok(_), None) => return Err(VaultError::internal("a card opened without its row")),
        };
        let details = format!("destination={}", dest.name());
        // One writer transaction takes the security code (if the template needs
        // it) and makes the `relay` event durable: both commit, or neither does,
        // before any byte of the card leaves. The writer checks again that the
        // card is still there (not erased or deleted since it was read).
        let cvc = self
            .release_for_relay(tenant, id, &card.token, purpose, &details, needs_cvc, ctx)
            .await?;
        let values = CardValues {
            number: card.card.pan.expose_digits(),
            exp_month: card.expiry.month(),
            exp_year: card.expiry.year(),
            cvc: cvc.as_ref().map(|c| c.as_str()),
            name: card.card.name.as_ref().map(|n| n.expose()),
        };
        let prepared = resolve(kind, body, &values).and_then(|resolved| match dest.signer() {
            Some(s) => s.apply(kind, resolved, &mut headers),
            None => Ok(resolved),
        });
        drop(card);
        let sent_bytes = prepared.as_ref().map_or(0, |b| b.len());
        let sent = match prepared {
            Ok(body) => dest.send(method, headers, body).await,
            Err(e) => Err(e),
        };
        let result = sent.map(|answer| {
            let received_bytes = answer.body.len();
            let masked = mask_answer(
                answer.status,
                &answer.headers,
                &answer.body,
                cvc.as_ref().map(|c| c.as_str()),
            );
            RelayOutcome {
                answer: masked,
                sent_bytes,
                received_bytes,
            }
        });
        drop(cvc);
        let (outcome, details) = match &result {
            Ok(o) => (
                AuditOutcome::Success,
                format!(
                    "destination={} status={} sent_bytes={} received_bytes={} masked={}",
                    dest.name(),
                    o.answer.status,
                    o.sent_bytes,
                    o.received_bytes,
                    o.answer.masked
                ),
            ),
            Err(e) => (
                AuditOutcome::Error(e.code().into()),
                format!("destination={} sent_bytes={sent_bytes}", dest.name()),
            ),
        };
        if let Err(e) = self
            .record_relay_result(ctx, tenant, token, purpose, outcome, &details)
            .await
        {
            tracing::warn!(
                error = %e,
                request_id = ctx.request_id.as_deref().unwrap_or("-"),
                "could not record a relay's result in the audit log (its start is recorded)"
            );
        }
        result.map_err(VaultError::Relay)
    }

    /// The `relay` event of `token` (row `id`) made durable, and the security
    /// code taken if `needs_cvc`, in one writer transaction: the code is deleted
    /// only if the event commits with it, so a relay that cannot be recorded
    /// leaves the code held (and sends nothing). A card gone since it was read
    /// is [`VaultError::NotFound`]; no code held (none given, used, expired) is
    /// `cvc_unavailable`: each refusal is recorded as a `relay` event in the
    /// same transaction.
    #[expect(
        clippy::too_many_arguments,
        reason = "the event's fields, as audit_release takes them"
    )]
    async fn release_for_relay(
        &self,
        tenant: &str,
        id: i64,
        token: &str,
        purpose: &str,
        details: &str,
        needs_cvc: bool,
        ctx: &AccessContext,
    ) -> Result<Option<Zeroizing<String>>, VaultError> {
        let keys = self.keys()?;
        let now = self.now().unix_timestamp();
        let rec = AuditRecord {
            action: AuditAction::Relay,
            tenant: Some(tenant),
            token: Some(token),
            purpose: Some(purpose),
            subject: None,
            outcome: AuditOutcome::Success,
            details: Some(details),
        };
        // Built here, off the writer thread; a refusal is built there.
        let ev = audit_hook::build_event(&keys, ctx, &rec, now)?;
        let (tenant_s, token_s, purpose_s, ctx) = (
            tenant.to_owned(),
            token.to_owned(),
            purpose.to_owned(),
            ctx.clone(),
        );
        self.write(move |conn, state| {
            let refuse = |state: &mut super::VaultState, e: VaultError| {
                let refused = AuditRecord {
                    action: AuditAction::Relay,
                    tenant: Some(&tenant_s),
                    token: Some(&token_s),
                    purpose: Some(&purpose_s),
                    subject: None,
                    outcome: AuditOutcome::from_error(&e),
                    details: None,
                };
                match state.record(conn, &keys, &ctx, &refused, now) {
                    Ok(_) => (true, Err(e)),
                    Err(a) => (false, Err(a)),
                }
            };
            match conn.card_is_live(id, &token_s, &tenant_s, now) {
                Ok(true) => {}
                Ok(false) => return refuse(state, VaultError::NotFound),
                Err(e) => return (false, Err(VaultError::Store(e))),
            }
            let cvc = if needs_cvc {
                match cvc::take_in_tx(conn, &keys, &tenant_s, &token_s, now) {
                    Ok(Some(c)) => Some(Zeroizing::new(c.expose().to_owned())),
                    Ok(None) => {
                        return refuse(state, VaultError::Relay(RelayError::CvcUnavailable));
                    }
                    // A code that cannot be opened is deleted all the same.
                    Err(e @ VaultError::Decryption) => return (true, Err(e)),
                    Err(e) => return (false, Err(e)),
                }
            } else {
                None
            };
            match state.audit_mut().append(conn, &ev) {
                Ok(_) => (true, Ok(cvc)),
                // Rolls back with the code's deletion: it stays held.
                Err(e) => (false, Err(e)),
            }
        })
        .await
        .map_err(audit_unavailable)
    }

    /// Records a relay refused before the card left (bad template, no such
    /// token, no security code held), and waits until it is durable.
    async fn audit_relay_refused(
        &self,
        tenant: &str,
        token: &str,
        purpose: &str,
        e: &VaultError,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let token = crate::core::token::Token::parse(token);
        let rec = super::AuditRecord {
            action: AuditAction::Relay,
            tenant: Some(tenant),
            token: token.as_ref().map(crate::core::token::Token::as_str),
            purpose: Some(purpose),
            subject: None,
            outcome: AuditOutcome::from_error(e),
            details: None,
        };
        self.append_event(ctx, &rec).await.map(|_| ())
    }

    async fn record_relay_result(
        &self,
        ctx: &AccessContext,
        tenant: &str,
        token: &str,
        purpose: &str,
        outcome: AuditOutcome,
        details: &str,
    ) -> Result<u64, VaultError> {
        let token = crate::core::token::Token::parse(token);
        let rec = super::AuditRecord {
            action: AuditAction::RelayResult,
            tenant: Some(tenant),
            token: token.as_ref().map(crate::core::token::Token::as_str),
            purpose: Some(purpose),
            subject: None,
            outcome,
            details: Some(details),
        };
        self.append_event(ctx, &rec).await
    }
}

/// Checks a request before any card is opened: the method, the content type,
/// the placeholders, the template's shape (resolved with stand-in values) and the
/// destination's signing rule. Says the body's kind and whether it needs the
/// security code.
fn check_template(
    dest: &RelayClient,
    method: &Method,
    headers: &[(HeaderName, HeaderValue)],
    body: &str,
) -> Result<(BodyKind, bool), RelayError> {
    if ![Method::POST, Method::PUT, Method::PATCH].contains(method) {
        return Err(RelayError::template(
            "bad_template",
            "method must be POST, PUT or PATCH",
        ));
    }
    let content_type = headers
        .iter()
        .find(|(n, _)| n == axum::http::header::CONTENT_TYPE)
        .map(|(_, v)| v.to_str().unwrap_or("(not text)"));
    let kind = BodyKind::of(content_type, body)?;
    let needs_cvc = placeholders(body)?.contains(&Placeholder::Cvc);
    let probe = resolve(kind, body, &PROBE)?;
    let mut probe_headers = headers.to_vec();
    let probe = match dest.signer() {
        Some(s) => s.apply(kind, probe, &mut probe_headers)?,
        None => probe,
    };
    // A resolved card number is as long as the stand-in, give or take three digits
    // each; the name may be longer: the real check is at sending.
    if probe.len() > dest.request_limit() {
        return Err(RelayError::template(
            "request_too_large",
            format!(
                "the resolved body would be larger than {} bytes",
                dest.request_limit()
            ),
        ));
    }
    Ok((kind, needs_cvc))
}
