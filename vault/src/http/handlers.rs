//! The handlers: read and check the body, authorize, call the vault, answer.
//!
//! Card numbers arrive in request bodies and leave only in the detokenize response.
//! Request bodies are copied into a buffer wiped after use and the parsed JSON's
//! strings are wiped once the card has been taken out; the detokenize body is
//! written into a buffer that is wiped when the server has sent it. (Copies inside
//! hyper's and rustls' own buffers are outside this code's reach.)

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::AppState;
use super::auth::Caller;
use super::problem::{Problem, ProblemBody};
use crate::config::Permission;
use crate::service::idempotency::{IdempotencyKey, IdempotencyStart, StoredAnswer};
use crate::service::request::{Detokenized, TokenInfo, TokenizeRequest};

/// Reads a request body of at most `limit` bytes within `timeout`. A body with a
/// content type must be JSON (415 otherwise). An oversized body is read on (and
/// dropped) up to a bound so the 413 reaches a client still sending, then 413.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Zeroizing<Vec<u8>>, Problem> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json"
            && !(essence.starts_with("application/") && essence.ends_with("+json"))
        {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be application/json",
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Past this much, stop reading and let the connection close.
    let drain_cap = limit
        .saturating_mul(2)
        .max(limit.saturating_add(4 * 1024 * 1024));
    let read = async move {
        let mut body = body;
        let mut buf = Zeroizing::new(Vec::with_capacity(declared.unwrap_or(1024).min(limit)));
        let mut total = 0usize;
        if declared.is_some_and(|n| n > drain_cap) {
            return Err(Problem::too_large(limit));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|_| Problem::invalid_request("the request body could not be read"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total = total.saturating_add(data.len());
            if total > drain_cap {
                break;
            }
            if total <= limit {
                buf.extend_from_slice(&data);
            }
        }
        if total > limit {
            return Err(Problem::too_large(limit));
        }
        Ok(buf)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ))
        })
}

/// Parses JSON; the error says where, never what.
pub(super) fn parse_json(raw: &[u8]) -> Result<Value, Problem> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::invalid_json(
            "the request body is empty; expected a JSON object",
        ));
    }
    super::json::from_slice(raw).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "it ends too early".to_owned(),
            // Only a repeated key is a data error here.
            serde_json::error::Category::Data => {
                let msg = e.to_string();
                msg.split(" at line ")
                    .next()
                    .unwrap_or("a key appears twice")
                    .to_owned()
            }
            _ => "syntax error".to_owned(),
        };
        Problem::invalid_json(format!(
            "the request body is not valid JSON ({what} at line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Wipes every string of a parsed request (card number, name…) once it is no
/// longer needed.
pub(super) fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Object(m) => m.values_mut().for_each(scrub),
        _ => {}
    }
}

fn created_or_ok(info: TokenInfo) -> Response {
    let status = if info.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = HeaderValue::from_str(&format!("/v1/tokens/{}", info.token)).ok();
    let mut resp = (status, Json(info)).into_response();
    if let Some(l) = location.filter(|_| status == StatusCode::CREATED) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// The `Idempotency-Key` header, if the request has one (checked: bounded,
/// printable, no card number).
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::invalid_request("Idempotency-Key: give it once"));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| Problem::from_vault(&e))
}

/// The header a replayed answer carries.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The request header naming an idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Runs `work` at most once per idempotency key of the caller (when the request
/// has one): a retry of the same request (`path` and `raw` body) gets the first
/// answer again, marked `idempotent-replayed: true`; the same key with another
/// request is 409 `idempotency_key_reused`. Without a key, just `work`. For
/// every POST route that takes the header (the relay's too: its answer is
/// masked before `work` returns it).
pub(crate) async fn idempotent<F, Fut>(
    state: &AppState,
    caller: &Caller,
    key: Option<IdempotencyKey>,
    path: &str,
    raw: &[u8],
    work: F,
) -> Result<Response, Problem>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Response, Problem>>,
{
    let Some(key) = key else {
        return work().await;
    };
    let start = state
        .vault()
        .idempotency_begin(&caller.client.name, &key, "POST", path, raw)
        .await
        .map_err(|e| Problem::from_vault(&e))?;
    let ticket = match start {
        IdempotencyStart::Replay(answer) => return Ok(replayed(answer)),
        IdempotencyStart::Proceed(ticket) => ticket,
    };
    let resp = work().await.unwrap_or_else(IntoResponse::into_response);
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let _ = state.vault().idempotency_release(ticket).await;
            return Err(Problem::from_vault(&crate::VaultError::internal_from(
                "reading an answer to keep it failed",
                e,
            )));
        }
    };
    let kept = [header::CONTENT_TYPE, header::LOCATION];
    let answer = StoredAnswer {
        status: parts.status.as_u16(),
        headers: kept
            .iter()
            .filter_map(|h| {
                let v = parts.headers.get(h)?.to_str().ok()?;
                Some((h.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: bytes.to_vec(),
    };
    if let Err(e) = state.vault().idempotency_finish(ticket, &answer).await {
        // The answer still goes out; a retry within two minutes is told the
        // first request is in progress, after that it runs afresh.
        tracing::warn!(error = %e, "could not keep the answer of an idempotent request");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// A kept answer, sent again.
fn replayed(answer: StoredAnswer) -> Response {
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp.headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// `POST /v1/tokens`.
pub(crate) async fn tokenize(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(&state, Permission::Tokenize, None).await?;
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
        Err(p) => return Err(caller.refused(&state, Permission::Tokenize, None, p).await),
    };
    idempotent(&state, &caller, key, "/v1/tokens", &raw, || async {
        let mut v = match parse_json(&raw) {
            Ok(v) => v,
            Err(p) => return Err(caller.refused(&state, Permission::Tokenize, None, p).await),
        };
        let vault = state.vault();
        let item = TokenizeRequest::from_json_with(&v, vault.today(), vault.cvc_ttl().is_some());
        scrub(&mut v);
        // Through the batch call so that a refused card is audited like any other.
        let mut out = vault
            .tokenize_batch(caller.tenant(), vec![item], &caller.ctx)
            .await
            .map_err(|e| Problem::from_vault(&e))?;
        let info = out
            .pop()
            .ok_or_else(|| {
                Problem::from_vault(&crate::VaultError::internal(
                    "a batch of one card answered nothing",
                ))
            })?
            .map_err(|e| Problem::from_vault(&e))?;
        Ok(created_or_ok(info))
    })
    .await
}

/// One result of a batch.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem {
    Token(TokenInfo),
    Error { error: ProblemBody },
}

/// `POST /v1/tokens/batch`: `{"items":[…]}` → `{"results":[…]}` in order.
pub(crate) async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(&state, Permission::Tokenize, None).await?;
    let limits = state.limits();
    let read = read_body(
        &headers,
        body,
        limits.batch_bytes,
        limits.header_read_timeout(),
    )
    .await
    .and_then(|raw| Ok((raw, idempotency_key(&headers)?)));
    let (raw, key) = match read {
        Ok(r) => r,
        Err(p) => return Err(caller.refused(&state, Permission::Tokenize, None, p).await),
    };
    idempotent(&state, &caller, key, "/v1/tokens/batch", &raw, || async {
        let mut v = match parse_json(&raw) {
            Ok(v) => v,
            Err(p) => return Err(caller.refused(&state, Permission::Tokenize, None, p).await),
        };
        let result = (|| {
            let Value::Object(obj) = &v else {
                return Err(Problem::invalid_request(
                    "$: expected a JSON object {\"items\":[…]}",
                ));
            };
            if obj.keys().any(|k| k != "items") {
                return Err(Problem::invalid_request(
                    "only the field \"items\" is allowed in a batch",
                ));
            }
            let Some(Value::Array(items)) = obj.get("items") else {
                return Err(Problem::invalid_request(
                    "items: required array of token requests",
                ));
            };
            if items.is_empty() || items.len() > limits.batch_items {
                return Err(Problem::invalid_request(format!(
                    "items: 1 to {} token requests per batch, got {}",
                    limits.batch_items,
                    items.len()
                )));
            }
            let vault = state.vault();
            let (today, accept_cvc) = (vault.today(), vault.cvc_ttl().is_some());
            Ok(items
                .iter()
                .map(|i| TokenizeRequest::from_json_with(i, today, accept_cvc))
                .collect::<Vec<_>>())
        })();
        scrub(&mut v);
        let items = match result {
            Ok(items) => items,
            Err(p) => return Err(caller.refused(&state, Permission::Tokenize, None, p).await),
        };
        let results = state
            .vault()
            .tokenize_batch(caller.tenant(), items, &caller.ctx)
            .await
            .map_err(|e| Problem::from_vault(&e))?;
        let results: Vec<BatchItem> = results
            .into_iter()
            .map(|r| match r {
                Ok(info) => BatchItem::Token(info),
                Err(e) => BatchItem::Error {
                    error: Problem::from_vault(&e).body(),
                },
            })
            .collect();
        Ok(Json(serde_json::json!({ "results": results })).into_response())
    })
    .await
}

fn token_of(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(t)| t)
        .map_err(|_| Problem::not_found("no such token"))
}

/// `GET /v1/tokens/{token}`.
pub(crate) async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let token = token_of(path)?;
    caller
        .require(&state, Permission::Read, Some(&token))
        .await?;
    let info = state
        .vault()
        .metadata(caller.tenant(), &token, &caller.ctx)
        .await
        .map_err(|e| Problem::from_vault(&e))?;
    Ok(Json(info).into_response())
}

/// `DELETE /v1/tokens/{token}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let token = token_of(path)?;
    caller
        .require(&state, Permission::Delete, Some(&token))
        .await?;
    state
        .vault()
        .delete(caller.tenant(), &token, &caller.ctx)
        .await
        .map_err(|e| Problem::from_vault(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/subjects/{subject}/erase`: erases every card of the subject in the
/// caller's tenant and answers with the signed erasure receipt (200, also when
/// nothing was held: `tokens_erased` is then 0).
pub(crate) async fn erase_subject(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(&state, Permission::Erase, None).await?;
    let subject = match path {
        Ok(Path(s)) => s,
        // Refused before the vault saw it (not UTF-8): audited all the same.
        Err(_) => {
            let problem = Problem::not_found("no such subject");
            return Err(caller
                .refused(&state, Permission::Erase, None, problem)
                .await);
        }
    };
    let erasure = state
        .vault()
        .erase(
            caller.tenant(),
            crate::service::EraseTarget::Subject(subject),
            &caller.ctx,
        )
        .await
        .map_err(|e| Problem::from_vault(&e))?;
    let receipt = erasure.receipt.to_json().map_err(|e| {
        Problem::from_vault(&crate::VaultError::internal_from(
            "encoding an erasure receipt failed",
            e,
        ))
    })?;
    let receipt: Value = serde_json::from_str(&receipt).map_err(|e| {
        Problem::from_vault(&crate::VaultError::internal_from(
            "re-reading an erasure receipt failed",
            e,
        ))
    })?;
    let body = serde_json::json!({ "receipt": receipt, "wal_scrubbed": erasure.wal_scrubbed });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// The purpose of a detokenize body: `{"purpose":"…"}`; an empty body or a missing
/// purpose is `purpose_required`.
fn purpose_of(raw: &[u8]) -> Result<String, Problem> {
    let required = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "purpose_required",
            "purpose: required: say why the card number is needed, e.g. {\"purpose\":\"charge order 1234\"}",
        )
    };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(required());
    }
    let mut v = parse_json(raw)?;
    let result = match &mut v {
        Value::Object(obj) => {
            if obj.keys().any(|k| k != "purpose") {
                Err(Problem::invalid_request(
                    "only the field \"purpose\" is allowed",
                ))
            } else {
                match obj.get_mut("purpose") {
                    None | Some(Value::Null) => Err(required()),
                    Some(Value::String(s)) => Ok(std::mem::take(s)),
                    Some(_) => Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "purpose_required",
                        "purpose: must be a string",
                    )),
                }
            }
        }
        _ => Err(Problem::invalid_request(
            "$: expected a JSON object {\"purpose\":\"…\"}",
        )),
    };
    scrub(&mut v);
    result
}

#[derive(Serialize)]
struct DetokenizedBody<'a> {
    token: &'a str,
    card: DetokenizedCard<'a>,
}

#[derive(Serialize)]
struct DetokenizedCard<'a> {
    number: &'a str,
    exp_month: u8,
    exp_year: u16,
    name: Option<&'a str>,
}

/// The one response that carries a card number, written into a buffer that is
/// wiped when the server is done sending it.
fn detokenized_response(d: &Detokenized) -> Result<Response, Problem> {
    let body = DetokenizedBody {
        token: &d.token,
        card: DetokenizedCard {
            number: d.card.pan.expose_digits(),
            exp_month: d.expiry.month(),
            exp_year: d.expiry.year(),
            name: d.card.name.as_ref().map(|n| n.expose()),
        },
    };
    // Large enough that it never reallocates (which would leave an unwiped copy).
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *buf, &body).map_err(|e| {
        Problem::from_vault(&crate::VaultError::internal_from(
            "encoding a response failed",
            e,
        ))
    })?;
    let mut resp = Response::new(Body::from(Bytes::from_owner(buf)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `POST /v1/tokens/{token}/detokenize`.
pub(crate) async fn detokenize(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let token = token_of(path)?;
    caller
        .require(&state, Permission::Detokenize, Some(&token))
        .await?;
    if let Some(limiter) = state.detokenize_limit()
        && let Err(wait) = limiter.check(&caller.client.name)
    {
        let secs = wait.as_secs().max(1);
        let problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("detokenize rate limit of this client reached; retry after {secs} s"),
        );
        let problem = caller
            .refused(&state, Permission::Detokenize, Some(&token), problem)
            .await;
        let mut resp = problem.into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let limits = state.limits();
    let purpose = match read_body(
        &headers,
        body,
        limits.body_bytes,
        limits.header_read_timeout(),
    )
    .await
    .and_then(|raw| purpose_of(&raw))
    {
        Ok(p) => Zeroizing::new(p),
        Err(p) => {
            return Err(caller
                .refused(&state, Permission::Detokenize, Some(&token), p)
                .await);
        }
    };
    match state
        .vault()
        .detokenize(caller.tenant(), &token, &purpose, &caller.ctx)
        .await
    {
        Ok(d) => detokenized_response(&d),
        // The vault checks the purpose before its own audited read: audit that refusal here.
        Err(e @ crate::VaultError::InvalidRequest { .. }) => Err(caller
            .refused(
                &state,
                Permission::Detokenize,
                Some(&token),
                Problem::from_vault(&e),
            )
            .await),
        Err(e) => Err(Problem::from_vault(&e)),
    }
}

/// `GET /healthz`: the process is up and serving. On PostgreSQL it also asks the
/// database (one round trip on a pooled connection, at most the pool's connect
/// timeout): a node whose database is down answers 503 `{"status":
/// "unavailable", "database": "down"}`, so a load balancer sends its traffic
/// elsewhere; it recovers by itself once the database is back.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let vault = state.vault().clone();
    if vault.is_postgres() {
        let up = tokio::task::spawn_blocking(move || vault.database_reachable())
            .await
            .unwrap_or(false);
        if !up {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "unavailable", "database": "down" })),
            )
                .into_response();
        }
        return Json(serde_json::json!({ "status": "ok", "database": "up" })).into_response();
    }
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /metrics`: Prometheus text, for clients with the `metrics` permission
/// (the figures cover every tenant). The token count is the service's running
/// counter: a scrape reads no table.
pub(crate) async fn metrics(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(p) = caller.require(&state, Permission::Metrics, None).await {
        return p.into_response();
    }
    let vault = state.vault();
    let text = state
        .metrics()
        .render(Some(vault.tokens_stored()), vault.active_key_version().ok());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Unknown route.
pub(crate) async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

/// Known route, wrong method.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not support this method",
    )
}
