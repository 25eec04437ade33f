//! `POST /v1/relay/{destination}`: the caller sends a template with tokens, the
//! vault puts the card in and forwards it to a configured payment provider, and
//! answers `200 {"status","headers","body"}` with the provider's answer masked.
//!
//! Refusals: 403 without the `relay` permission or when the destination does not
//! list the client; 404 for an unknown destination or token (another tenant's
//! token is unknown); 409 `cvc_unavailable`; 422 for a bad template; 502
//! `upstream_unreachable`; 504 `upstream_timeout`; 503 `audit_unavailable` when
//! the relay cannot be recorded before the card would leave.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use zeroize::Zeroize;

use super::AppState;
use super::auth::Caller;
use super::handlers::{idempotency_key, idempotent, parse_json, read_body};
use super::problem::Problem;
use crate::config::Permission;
use crate::relay::{RelayClient, forwarded_headers};
use crate::service::relay::RelayRequest;

/// The fields of a relay request.
struct RelayBody {
    token: String,
    purpose: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: String,
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // A template holds no card data, but a caller may have pasted one in.
        self.body.zeroize();
    }
}

fn field_str(obj: &mut Map<String, Value>, name: &str) -> Result<Option<String>, Problem> {
    match obj.get_mut(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(std::mem::take(s))),
        Some(_) => Err(Problem::invalid_request(format!(
            "{name}: must be a string"
        ))),
    }
}

fn relay_body(raw: &[u8]) -> Result<RelayBody, Problem> {
    let mut v = parse_json(raw)?;
    let result = (|| {
        let Value::Object(obj) = &mut v else {
            return Err(Problem::invalid_request("the body must be a JSON object"));
        };
        const KNOWN: [&str; 5] = ["token", "purpose", "method", "headers", "body"];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            let shown: String = k.chars().take(32).collect();
            return Err(Problem::invalid_request(format!(
                "unknown field {shown:?}; expected token, purpose, method, headers, body"
            )));
        }
        let token =
            field_str(obj, "token")?.ok_or_else(|| Problem::invalid_request("token: required"))?;
        let purpose = field_str(obj, "purpose")?.unwrap_or_default();
        let method = match field_str(obj, "method")? {
            None => Method::POST,
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| Problem::invalid_request("method: not an HTTP method"))?,
        };
        let mut headers = Vec::new();
        match obj.get_mut("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (name, value) in h.iter_mut() {
                    let Value::String(value) = value else {
                        return Err(Problem::invalid_request(
                            "headers: each value must be a string",
                        ));
                    };
                    headers.push((name.clone(), std::mem::take(value)));
                }
            }
            Some(_) => {
                return Err(Problem::invalid_request(
                    "headers: must be an object of strings",
                ));
            }
        }
        let body = field_str(obj, "body")?.unwrap_or_default();
        Ok(RelayBody {
            token,
            purpose,
            method,
            headers,
            body,
        })
    })();
    super::handlers::scrub(&mut v);
    result
}

/// `POST /v1/relay/{destination}`.
pub(crate) async fn relay(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(&state, Permission::Relay, None).await?;
    let name = path.map(|Path(n)| n).unwrap_or_default();
    let Some(dest) = state.relay_destination(&name) else {
        let problem = Problem::not_found("no such relay destination");
        return Err(caller
            .refused(&state, Permission::Relay, None, problem)
            .await);
    };
    if !dest.allows(&caller.client.name) {
        let problem = Problem::forbidden(format!(
            "client {:?} may not relay to {:?}",
            caller.client.name,
            dest.name()
        ));
        return Err(caller
            .refused(&state, Permission::Relay, None, problem)
            .await);
    }
    let limits = state.limits();
    let read = read_body(
        &headers,
        body,
        limits.body_bytes,
        limits.header_read_timeout(),
    )
    .await
    .and_then(|raw| Ok((raw, idempotency_key(&headers)?)));
    let (raw, key) = match read {
        Ok(r) => r,
        Err(p) => return Err(caller.refused(&state, Permission::Relay, None, p).await),
    };
    // The vault's own idempotency: a retry gets the first (masked) answer and
    // the provider is not called again. An `idempotency-key` among the
    // forwarded `headers` is the provider's business and goes to it untouched.
    let path = format!("/v1/relay/{}", dest.name());
    idempotent(&state, &caller, key, &path, &raw, || {
        relay_once(&state, &caller, &dest, &raw)
    })
    .await
}

/// One relay of the request `raw` to `dest`.
async fn relay_once(
    state: &AppState,
    caller: &Caller,
    dest: &RelayClient,
    raw: &[u8],
) -> Result<Response, Problem> {
    let req = match relay_body(raw) {
        Ok(r) => r,
        Err(p) => return Err(caller.refused(state, Permission::Relay, None, p).await),
    };
    let (max_count, max_bytes) = state.relay_header_limits();
    let forwarded = match forwarded_headers(
        req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        max_count,
        max_bytes,
    ) {
        Ok(h) => h,
        Err(e) => {
            let problem = Problem::from_relay(&e);
            return Err(caller
                .refused(state, Permission::Relay, Some(&req.token), problem)
                .await);
        }
    };
    let call = RelayRequest {
        token: &req.token,
        purpose: &req.purpose,
        method: req.method.clone(),
        headers: forwarded,
        body: &req.body,
    };
    match state
        .vault()
        .relay(caller.tenant(), dest, call, &caller.ctx)
        .await
    {
        Ok(outcome) => {
            let a = outcome.answer;
            let headers: Map<String, Value> = a
                .headers
                .into_iter()
                .map(|(n, v)| (n, Value::String(v)))
                .collect();
            let body = serde_json::json!({
                "status": a.status,
                "headers": headers,
                "body": a.body,
            });
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        // The vault checks the purpose before its own audited steps: audit that
        // refusal here, as detokenize does.
        Err(e @ crate::VaultError::InvalidRequest { .. }) => Err(caller
            .refused(
                state,
                Permission::Relay,
                Some(&req.token),
                Problem::from_vault(&e),
            )
            .await),
        Err(e) => Err(Problem::from_vault(&e)),
    }
}
