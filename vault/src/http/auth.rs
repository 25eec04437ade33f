//! Who is calling and what they may do: the [`ClientIdentity`] extractor (401 when
//! the connection carries no usable certificate identity), the client registry
//! (certificate name → configured client), and the [`Caller`] extractor (403 when
//! the identity matches no client).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::problem::{Problem, current_request_id};
use crate::config::{ClientConfig, Permission};
use crate::service::request::AccessContext;
use crate::service::{AuditAction, AuditOutcome};
use crate::tls::{ClientIdentity, PeerAddr};

impl<S: Send + Sync> FromRequestParts<S> for ClientIdentity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        match parts.extensions.get::<ClientIdentity>() {
            None => Err(Problem::unauthenticated(
                "this request carries no client certificate",
            )),
            Some(id) if id.is_anonymous() => Err(Problem::unauthenticated(
                "the client certificate names no one: it has neither a common name nor a URI SAN",
            )),
            Some(id) => Ok(id.clone()),
        }
    }
}

/// The configured clients, indexed by the certificate names they are matched by.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    by_uri: HashMap<String, Arc<ClientConfig>>,
    by_cn: HashMap<String, Arc<ClientConfig>>,
}

impl ClientRegistry {
    /// Indexes `clients` (already validated: names are unique).
    pub fn new(clients: &[ClientConfig]) -> Self {
        let mut r = ClientRegistry::default();
        for c in clients {
            let c = Arc::new(c.clone());
            if let Some(u) = &c.uri_san {
                r.by_uri.insert(u.clone(), Arc::clone(&c));
            }
            if let Some(cn) = &c.common_name {
                r.by_cn.insert(cn.clone(), Arc::clone(&c));
            }
        }
        r
    }

    /// The configured clients a certificate identity matches (each once), with
    /// the certificate name that matched: by URI SAN first, then by common name.
    fn matches<'a>(&self, id: &'a ClientIdentity) -> Vec<(Arc<ClientConfig>, &'a str)> {
        let by_uri = id
            .uri_sans()
            .iter()
            .filter_map(|u| self.by_uri.get(u).map(|c| (c, u.as_str())));
        let by_cn = id
            .common_name()
            .and_then(|cn| self.by_cn.get(cn).map(|c| (c, cn)));
        let mut found: Vec<(Arc<ClientConfig>, &'a str)> = Vec::new();
        for (c, name) in by_uri.chain(by_cn) {
            if !found.iter().any(|(f, _)| Arc::ptr_eq(f, c)) {
                found.push((Arc::clone(c), name));
            }
        }
        found
    }

    /// The client a certificate identity belongs to, and the certificate name that
    /// matched (a URI SAN rather than the common name when both match it). `None`
    /// when it matches no client, or more than one: a certificate that names two
    /// configured clients (two URI SANs, or a URI SAN and a common name of
    /// different clients) is ambiguous and identifies nobody.
    pub fn resolve<'a>(&self, id: &'a ClientIdentity) -> Option<(Arc<ClientConfig>, &'a str)> {
        let mut found = self.matches(id);
        if found.len() == 1 { found.pop() } else { None }
    }

    /// Whether the identity names more than one configured client.
    pub fn is_ambiguous(&self, id: &ClientIdentity) -> bool {
        self.matches(id).len() > 1
    }
}

/// An authenticated, known client: its configuration and the audit context of this
/// request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The matched client.
    pub client: Arc<ClientConfig>,
    /// Actor (the matched certificate name), certificate fingerprint, request id, peer.
    pub ctx: AccessContext,
}

impl Caller {
    /// The client's tenant.
    pub fn tenant(&self) -> &str {
        &self.client.tenant
    }

    /// 403 unless the client has `p` (the refusal is audited).
    pub async fn require(
        &self,
        state: &AppState,
        p: Permission,
        token: Option<&str>,
    ) -> Result<(), Problem> {
        if self.client.can(p) {
            return Ok(());
        }
        let problem = Problem::forbidden(format!(
            "client {:?} lacks the {:?} permission",
            self.client.name,
            p.as_str()
        ));
        Err(record_denied(
            state,
            &self.ctx,
            p.as_str(),
            Some(&self.client.tenant),
            token,
            problem,
        )
        .await)
    }

    /// Audits a request of this client refused before the vault saw it (bad
    /// body, missing purpose…) and returns the problem.
    pub async fn refused(
        &self,
        state: &AppState,
        action: Permission,
        token: Option<&str>,
        problem: Problem,
    ) -> Problem {
        record_denied(
            state,
            &self.ctx,
            action.as_str(),
            Some(&self.client.tenant),
            token,
            problem,
        )
        .await
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.to_string());
        let identity = match ClientIdentity::from_request_parts(parts, state).await {
            Ok(id) => id,
            Err(problem) => {
                let ctx = AccessContext {
                    actor: "unauthenticated".to_owned(),
                    actor_fingerprint: parts
                        .extensions
                        .get::<ClientIdentity>()
                        .map(|i| i.fingerprint().to_owned()),
                    request_id: current_request_id(),
                    peer,
                };
                return Err(record_denied(state, &ctx, "authenticate", None, None, problem).await);
            }
        };
        let Some((client, matched)) = state.clients().resolve(&identity) else {
            let ctx = AccessContext {
                actor: identity
                    .common_name()
                    .or_else(|| identity.uri_sans().first().map(String::as_str))
                    .unwrap_or("-")
                    .to_owned(),
                actor_fingerprint: Some(identity.fingerprint().to_owned()),
                request_id: current_request_id(),
                peer,
            };
            let problem = Problem::forbidden(if state.clients().is_ambiguous(&identity) {
                "the client certificate names more than one configured client; it identifies none"
            } else {
                "the client certificate is valid but matches no configured client"
            });
            return Err(record_denied(state, &ctx, "unknown_client", None, None, problem).await);
        };
        let ctx = AccessContext {
            actor: matched.to_owned(),
            actor_fingerprint: Some(identity.fingerprint().to_owned()),
            request_id: current_request_id(),
            peer,
        };
        Ok(Caller { client, ctx })
    }
}

/// Records a refused request as an audit event (`auth.failed`, outcome denied with
/// the problem's code, `details` naming what was attempted), logs it to the
/// `panvault::audit` target, and returns the problem. If the event cannot be
/// recorded the refusal stands and the failure is logged.
pub(crate) async fn record_denied(
    state: &AppState,
    ctx: &AccessContext,
    action: &str,
    tenant: Option<&str>,
    token: Option<&str>,
    problem: Problem,
) -> Problem {
    let token = token.and_then(crate::core::token::Token::parse);
    let token = token.as_ref().map(|t| t.as_str());
    let code = problem.code();
    // No token here: the log names no path segment (docs/config.md); the audit event
    // below, found by the request id, holds the token the request was about.
    tracing::warn!(
        target: "panvault::audit",
        actor = %ctx.actor,
        fingerprint = ctx.actor_fingerprint.as_deref().unwrap_or("-"),
        request_id = ctx.request_id.as_deref().unwrap_or("-"),
        peer = ctx.peer.as_deref().unwrap_or("-"),
        action,
        tenant = tenant.unwrap_or("-"),
        code,
        "request denied"
    );
    let details = format!("attempted={action}");
    if let Err(e) = state
        .vault()
        .record_event(
            ctx,
            AuditAction::Denied,
            tenant,
            token,
            AuditOutcome::Denied(code.to_owned()),
            Some(&details),
        )
        .await
    {
        tracing::warn!(error = %e, request_id = ctx.request_id.as_deref().unwrap_or("-"), "could not record a denied request in the audit log");
    }
    problem
}
