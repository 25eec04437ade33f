//! Handler tests without sockets: the router driven by `oneshot`, the client
//! identity put into the request's extensions as the accept loop would.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, router};
use crate::config::Config;
use crate::core::kdf::KdfParams;
use crate::tls::{ClientIdentity, ConnStats};
use crate::{SealSpec, SecretText, Unlock, Vault, system_clock};

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
data_dir = "."
[tls]
cert = "s.pem"
key = "s.key"
client_ca = "ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read", "delete", "erase"]
[[clients]]
name = "payments"
tenant = "demo-shop"
permissions = ["read", "detokenize"]
[[clients]]
name = "spiffe-shop"
uri_san = "spiffe://other/shop"
tenant = "other-shop"
permissions = ["tokenize", "read", "detokenize"]
[[clients]]
name = "monitor"
tenant = "monitoring"
permissions = ["metrics"]
"#;

/// Test card numbers (public test PANs).
const VISA: &str = "4242 4242 4242 4242";

struct Harness {
    _dir: tempfile::TempDir,
    app: Router,
    vault: Vault,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.vault.shutdown();
    }
}

fn harness() -> Harness {
    harness_with(CONFIG)
}

/// A vault and router over the configuration `text`.
fn harness_with(text: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let unlock = || Unlock::Passphrase(SecretText::new("handler-tests".into()));
    // A cheap KDF: the key hierarchy is not under test here.
    let kdf = KdfParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    Vault::init(
        dir.path(),
        &SealSpec {
            unlock: unlock(),
            kdf,
            shares: None,
        },
        &system_clock(),
    )
    .unwrap();
    let vault = Vault::open(dir.path(), &unlock()).unwrap();
    let config = Config::parse(text).unwrap();
    let app = router(AppState::new(
        vault.clone(),
        &config,
        Arc::new(ConnStats::default()),
    ));
    Harness {
        _dir: dir,
        app,
        vault,
    }
}

fn identity(cn: &str) -> ClientIdentity {
    ClientIdentity::new(Some(cn.to_owned()), Vec::new(), Vec::new(), "ab".repeat(32))
}

fn request(
    method: &str,
    uri: &str,
    who: Option<ClientIdentity>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    if let Some(id) = who {
        req.extensions_mut().insert(id);
    }
    req
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, v)
}

async fn as_client(
    h: &Harness,
    who: &str,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(&h.app, request(method, uri, Some(identity(who)), body)).await
}

fn card(number: &str) -> Value {
    json!({"card": {"number": number, "exp_month": 12, "exp_year": 2040}})
}

fn assert_problem(
    status: StatusCode,
    headers: &HeaderMap,
    v: &Value,
    want_status: u16,
    code: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], want_status);
    assert_eq!(v["type"], format!("https://panvault.dev/problems/{code}"));
    assert!(v["title"].is_string() && v["detail"].is_string());
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        headers["x-request-id"].to_str().unwrap(),
        v["request_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn no_identity_is_401_and_unknown_client_403() {
    let h = harness();
    let (s, hd, v) = call(
        &h.app,
        request("POST", "/v1/tokens", None, card(VISA).to_string()),
    )
    .await;
    assert_problem(s, &hd, &v, 401, "unauthenticated");
    assert_eq!(hd["www-authenticate"], "MutualTLS realm=\"panvault\"");
    let anon = ClientIdentity::new(None, Vec::new(), vec!["x.example".into()], "cd".repeat(32));
    let (s, hd, v) = call(
        &h.app,
        request(
            "GET",
            "/v1/tokens/tok_0000000000000000000000",
            Some(anon),
            "",
        ),
    )
    .await;
    assert_problem(s, &hd, &v, 401, "unauthenticated");
    assert_eq!(hd["www-authenticate"], "MutualTLS realm=\"panvault\"");
    let (s, hd, v) = as_client(&h, "stranger", "POST", "/v1/tokens", card(VISA)).await;
    assert_problem(s, &hd, &v, 403, "forbidden");
    let (s, hd, v) = as_client(&h, "payments", "POST", "/v1/tokens", card(VISA)).await;
    assert_problem(s, &hd, &v, 403, "forbidden");
    assert!(v["detail"].as_str().unwrap().contains("tokenize"));
    // healthz needs only the TLS layer's certificate check
    let (s, _, v) = call(&h.app, request("GET", "/healthz", None, "")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));

    // every refusal is an audit event
    let conn = rusqlite::Connection::open(h.vault.db_path()).unwrap();
    let mut stmt = conn.prepare("SELECT actor, outcome, code, details FROM audit_events WHERE action = 'auth.failed' ORDER BY seq").unwrap();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let summary: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("unauthenticated", "denied", Some("unauthenticated")),
            ("unauthenticated", "denied", Some("unauthenticated")),
            ("stranger", "denied", Some("forbidden")),
            ("payments", "denied", Some("forbidden")),
        ]
    );
    assert_eq!(rows[3].3.as_deref(), Some("attempted=tokenize"));
}

#[tokio::test]
async fn tokenize_validation() {
    let h = harness();
    let bad: Vec<(&str, Value, u16, &str)> = vec![
        (
            "not json",
            Value::String("{\"card\":".into()),
            400,
            "invalid_json",
        ),
        (
            "luhn",
            card("4242 4242 4242 4241"),
            422,
            "invalid_card_number",
        ),
        ("letters", card("4242-abcd"), 422, "invalid_card_number"),
        ("short", card("4242"), 422, "invalid_card_number"),
        (
            "expired",
            json!({"card": {"number": VISA, "exp_month": 1, "exp_year": 2020}}),
            422,
            "card_expired",
        ),
        (
            "month",
            json!({"card": {"number": VISA, "exp_month": 13, "exp_year": 2040}}),
            422,
            "invalid_card",
        ),
        (
            "cvv",
            json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040, "cvv": "123"}}),
            422,
            "cvv_not_accepted",
        ),
        (
            "unknown",
            json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040}, "colour": "red"}),
            400,
            "invalid_request",
        ),
        ("no card", json!({"subject": "x"}), 400, "invalid_request"),
        (
            "format",
            json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040}, "format": "fancy"}),
            400,
            "invalid_request",
        ),
        ("array", json!([1, 2]), 400, "invalid_request"),
    ];
    for (what, body, status, code) in bad {
        let body = match body {
            Value::String(s) => s,
            v => v.to_string(),
        };
        let (s, hd, v) = call(
            &h.app,
            request("POST", "/v1/tokens", Some(identity("storefront")), body),
        )
        .await;
        assert_problem(s, &hd, &v, status, code);
        assert!(
            !v.to_string().contains("4242424242424242") && !v.to_string().contains(VISA),
            "{what}: {v}"
        );
    }
    let (s, hd, v) = call(
        &h.app,
        request("POST", "/v1/tokens", Some(identity("storefront")), ""),
    )
    .await;
    assert_problem(s, &hd, &v, 400, "invalid_json");
    // A repeated key is refused, not resolved to its last value (a proxy in front
    // may have inspected the first).
    let twice = format!(
        "{{\"card\":{{\"number\":\"{}\",\"number\":\"{VISA}\",\"exp_month\":12,\"exp_year\":2031}}}}",
        "5555555555554444"
    );
    let (s, hd, v) = call(
        &h.app,
        request("POST", "/v1/tokens", Some(identity("storefront")), twice),
    )
    .await;
    assert_problem(s, &hd, &v, 400, "invalid_json");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("`number` appears twice"), "{detail}");
    assert!(
        !detail.contains("4444") && !detail.contains("4242"),
        "{detail}"
    );
    let mut req = request(
        "POST",
        "/v1/tokens",
        Some(identity("storefront")),
        card(VISA).to_string(),
    );
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let (s, hd, v) = call(&h.app, req).await;
    assert_problem(s, &hd, &v, 415, "unsupported_media_type");
}

/// Spellings of `card` (16 ASCII digits) the card-number filter once let through.
fn bypass_spellings(card: &str) -> Vec<(&'static str, Value)> {
    let groups: Vec<&str> = (0..4).map(|k| &card[4 * k..4 * k + 4]).collect();
    let wide: String = card
        .chars()
        .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
        .collect();
    vec![
        ("dots", json!(groups.join("."))),
        ("double spaces", json!(groups.join("  "))),
        ("underscores", json!(groups.join("_"))),
        ("tabs", json!(groups.join("\t"))),
        ("full-width digits", json!(wide)),
        (
            "array of numbers",
            json!(
                groups
                    .iter()
                    .map(|g| g.parse::<u64>().unwrap())
                    .collect::<Vec<_>>()
            ),
        ),
        ("array of strings", json!(groups)),
    ]
}

/// A card number in a free-text field is refused however it is spelled: the field
/// is named, the value is not echoed, and nothing of it reaches the database
/// (`cards.subject`, `cards.metadata`, `audit_events.purpose`), where the scanner
/// finds nothing either.
#[tokio::test]
async fn card_numbers_in_free_text_are_refused_however_spelled() {
    let h = harness();
    let other = "4111111111111111";
    let echoed = |v: &Value| {
        let text = v.to_string();
        panvault_audit::card::contains_card_number(&text) || text.contains("41111111")
    };
    for (how, value) in bypass_spellings(other) {
        let mut bodies = vec![(
            "metadata",
            json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040},
                "metadata": {"note": value.clone()}}),
        )];
        if let Some(text) = value.as_str() {
            bodies.push((
                "subject",
                json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040},
                    "subject": text}),
            ));
            bodies.push((
                "metadata",
                json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040},
                    "metadata": {text: 1}}),
            ));
            if !text.contains('\t') {
                bodies.push((
                    "card.name",
                    json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040,
                        "name": text}}),
                ));
            }
        }
        for (field, body) in bodies {
            let (s, hd, v) = as_client(&h, "storefront", "POST", "/v1/tokens", body).await;
            assert_eq!(s.as_u16(), 400, "{how} in {field}: status");
            assert_problem(s, &hd, &v, 400, "invalid_request");
            let detail = v["detail"].as_str().unwrap_or("");
            assert!(
                detail.starts_with(field),
                "{how} in {field}: field not named"
            );
            assert!(!echoed(&v), "{how} in {field}: value echoed");
        }
    }
    // Detokenize: the purpose.
    let (s, _, v) = as_client(&h, "storefront", "POST", "/v1/tokens", card(VISA)).await;
    assert_eq!(s, StatusCode::CREATED);
    let uri = format!("/v1/tokens/{}/detokenize", v["token"].as_str().unwrap());
    for (how, value) in bypass_spellings(other) {
        let Some(text) = value.as_str() else {
            continue;
        };
        let purpose = format!("refund {text}");
        let (s, hd, p) =
            as_client(&h, "payments", "POST", &uri, json!({ "purpose": purpose })).await;
        assert_problem(s, &hd, &p, 400, "purpose_required");
        assert!(
            p["detail"].as_str().unwrap_or("").starts_with("purpose"),
            "{how} in purpose: field not named"
        );
        assert!(!echoed(&p), "{how} in purpose: value echoed");
    }
    // Nothing of it was stored.
    let conn = rusqlite::Connection::open(h.vault.db_path()).unwrap();
    let mut stored: Vec<String> = Vec::new();
    for sql in [
        "SELECT coalesce(subject, '') || ' ' || coalesce(metadata, '') FROM cards",
        "SELECT coalesce(purpose, '') || ' ' || coalesce(details, '') FROM audit_events",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        stored.extend(
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    assert!(
        !stored
            .iter()
            .any(|t| panvault_audit::card::contains_card_number(t)),
        "a card number was stored in the clear"
    );
    drop(conn);
    for ext in ["", "-wal"] {
        let path = format!("{}{ext}", h.vault.db_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                panvault_audit::scan::scan_bytes(&bytes, false).is_empty(),
                "the scanner finds a card number in vault.db{ext}"
            );
        }
    }
}

#[tokio::test]
async fn body_limits() {
    let h = harness();
    let mut big = card(VISA);
    big["metadata"] = json!({"pad": "x".repeat(70 * 1024)});
    let (s, hd, v) = as_client(&h, "storefront", "POST", "/v1/tokens", big.clone()).await;
    assert_problem(s, &hd, &v, 413, "payload_too_large");
    // the same size is fine for a batch (its own limit, 2 MiB), where the item
    // fails on its own (metadata over 4 KiB)
    let (s, _, v) = as_client(
        &h,
        "storefront",
        "POST",
        "/v1/tokens/batch",
        json!({"items": [big]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["error"]["code"], "invalid_request");
    let huge = json!({"items": [{"card": {"number": "x".repeat(2 * 1024 * 1024)}}]});
    let (s, hd, v) = as_client(&h, "storefront", "POST", "/v1/tokens/batch", huge).await;
    assert_problem(s, &hd, &v, 413, "payload_too_large");
}

#[tokio::test]
async fn tokenize_read_detokenize_delete() {
    let h = harness();
    let (s, hd, v) = as_client(&h, "storefront", "POST", "/v1/tokens", json!({"card": {"number": VISA, "exp_month": 12, "exp_year": 2040, "name": "Jane Doe"}, "subject": "cust_42"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        hd["location"].to_str().unwrap(),
        format!("/v1/tokens/{token}")
    );
    assert_eq!(hd["cache-control"], "no-store");
    assert_eq!(
        v["card"],
        json!({"brand": "visa", "bin": "424242", "last4": "4242", "exp_month": 12, "exp_year": 2040})
    );
    assert_eq!(v["deduplicated"], false);
    assert!(
        v["fingerprint"].is_string() && v["created_at"].is_string() && v["key_version"].is_u64()
    );
    // The same card for the same subject (dedup is per card and subject).
    let mut same = card(VISA);
    same["subject"] = json!("cust_42");
    let (s, _, again) = as_client(&h, "storefront", "POST", "/v1/tokens", same).await;
    assert_eq!(
        (s, &again["token"], &again["deduplicated"]),
        (StatusCode::OK, &v["token"], &json!(true))
    );

    let (s, _, meta) = as_client(
        &h,
        "payments",
        "GET",
        &format!("/v1/tokens/{token}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(meta["card"]["last4"], "4242");
    assert!(!meta.to_string().contains("4242424242424242"));

    let uri = format!("/v1/tokens/{token}/detokenize");
    let (s, hd, p) = as_client(&h, "payments", "POST", &uri, Value::Null).await;
    assert_problem(s, &hd, &p, 400, "purpose_required");
    let (s, hd, p) = as_client(&h, "payments", "POST", &uri, json!({})).await;
    assert_problem(s, &hd, &p, 400, "purpose_required");
    let (s, hd, p) = as_client(&h, "payments", "POST", &uri, json!({"purpose": "  "})).await;
    assert_problem(s, &hd, &p, 400, "purpose_required");
    let (s, hd, p) = as_client(
        &h,
        "payments",
        "POST",
        &uri,
        json!({"purpose": "refund 5555 5555 5555 4444"}),
    )
    .await;
    assert_problem(s, &hd, &p, 400, "purpose_required");
    assert!(!p.to_string().contains("5555 5555"));
    let (s, hd, p) = as_client(
        &h,
        "payments",
        "POST",
        &uri,
        json!({"purpose": "x", "why": 1}),
    )
    .await;
    assert_problem(s, &hd, &p, 400, "invalid_request");
    let (s, hd, p) = as_client(&h, "storefront", "POST", &uri, json!({"purpose": "charge"})).await;
    assert_problem(s, &hd, &p, 403, "forbidden");
    let (s, _, d) = as_client(
        &h,
        "payments",
        "POST",
        &uri,
        json!({"purpose": "charge order 1234"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        d,
        json!({"token": token, "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "name": "Jane Doe"}})
    );

    // another tenant: 404, never 403
    let spiffe = ClientIdentity::new(
        Some("whatever".into()),
        vec!["spiffe://other/shop".into()],
        Vec::new(),
        "ef".repeat(32),
    );
    let (s, hd, p) = call(
        &h.app,
        request(
            "POST",
            &uri,
            Some(spiffe.clone()),
            json!({"purpose": "x"}).to_string(),
        ),
    )
    .await;
    assert_problem(s, &hd, &p, 404, "not_found");
    let (s, hd, p) = call(
        &h.app,
        request("GET", &format!("/v1/tokens/{token}"), Some(spiffe), ""),
    )
    .await;
    assert_problem(s, &hd, &p, 404, "not_found");

    let (s, hd, p) = as_client(
        &h,
        "payments",
        "DELETE",
        &format!("/v1/tokens/{token}"),
        Value::Null,
    )
    .await;
    assert_problem(s, &hd, &p, 403, "forbidden");
    let (s, _, _) = as_client(
        &h,
        "storefront",
        "DELETE",
        &format!("/v1/tokens/{token}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, hd, p) = as_client(&h, "payments", "POST", &uri, json!({"purpose": "charge"})).await;
    assert_problem(s, &hd, &p, 404, "not_found");
    let (s, hd, p) = as_client(
        &h,
        "storefront",
        "DELETE",
        &format!("/v1/tokens/{token}"),
        Value::Null,
    )
    .await;
    assert_problem(s, &hd, &p, 404, "not_found");
    // a card number in the path is just an unknown token, and is not echoed
    let (s, hd, p) = as_client(
        &h,
        "payments",
        "GET",
        "/v1/tokens/4242424242424242",
        Value::Null,
    )
    .await;
    assert_problem(s, &hd, &p, 404, "not_found");
    assert!(!p.to_string().contains("4242424242424242"));
}

#[tokio::test]
async fn batch_validation_and_mix() {
    let h = harness();
    for (body, code) in [
        (json!([]), "invalid_request"),
        (json!({}), "invalid_request"),
        (json!({"items": []}), "invalid_request"),
        (json!({"items": {}}), "invalid_request"),
        (json!({"items": [card(VISA)], "more": 1}), "invalid_request"),
        (json!({"items": vec![card(VISA); 1001]}), "invalid_request"),
    ] {
        let (s, hd, v) = as_client(&h, "storefront", "POST", "/v1/tokens/batch", body).await;
        assert_problem(s, &hd, &v, 400, code);
    }
    let items = json!({"items": [
        card("5555 5555 5555 4444"),
        card("4242 4242 4242 4241"),
        {"card": {"number": "4000 0566 5566 5556", "exp_month": 12, "exp_year": 2040, "cvc": "1"}},
        card("5555 5555 5555 4444"),
        "nonsense",
    ]});
    let (s, _, v) = as_client(&h, "storefront", "POST", "/v1/tokens/batch", items).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert!(r[0]["token"].is_string());
    assert_eq!(r[1]["error"]["code"], "invalid_card_number");
    assert_eq!(r[1]["error"]["status"], 422);
    assert_eq!(r[2]["error"]["code"], "cvv_not_accepted");
    assert_eq!(r[3]["token"], r[0]["token"]);
    assert_eq!(r[4]["error"]["code"], "invalid_request");
    let (s, hd, v) = as_client(
        &h,
        "payments",
        "POST",
        "/v1/tokens/batch",
        json!({"items": [card(VISA)]}),
    )
    .await;
    assert_problem(s, &hd, &v, 403, "forbidden");
}

#[tokio::test]
async fn routing_errors_and_metrics() {
    let h = harness();
    let (s, hd, v) = as_client(&h, "storefront", "GET", "/v2/nothing", Value::Null).await;
    assert_problem(s, &hd, &v, 404, "not_found");
    let (s, hd, v) = as_client(&h, "storefront", "PUT", "/v1/tokens", Value::Null).await;
    assert_problem(s, &hd, &v, 405, "method_not_allowed");
    let (s, hd, v) = as_client(&h, "storefront", "GET", "/v1/tokens/batch", Value::Null).await;
    assert_problem(s, &hd, &v, 405, "method_not_allowed");
    let (s, _, _) = as_client(&h, "storefront", "POST", "/v1/tokens", card(VISA)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, hd, v) = call(
        &h.app,
        request("GET", "/metrics", Some(identity("stranger")), ""),
    )
    .await;
    assert_problem(s, &hd, &v, 403, "forbidden");
    let (s, hd, text) = as_client(&h, "monitor", "GET", "/metrics", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        hd["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = text.as_str().unwrap();
    for want in [
        "panvault_http_requests_total{route=\"/v1/tokens\",method=\"POST\",status=\"201\"} 1",
        "panvault_http_requests_total{route=\"other\",method=\"other\",status=\"404\"} 1",
        // a method the route does not serve is counted under the route
        "panvault_http_requests_total{route=\"/v1/tokens\",method=\"other\",status=\"405\"} 1",
        "panvault_http_requests_total{route=\"/v1/tokens/batch\",method=\"other\",status=\"405\"} 1",
        "panvault_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"403\"} 1",
        "panvault_http_request_duration_seconds_count{route=\"/v1/tokens\",method=\"POST\"} 1",
        "panvault_tokens_stored 1",
        "panvault_active_key_version 1",
        "panvault_connections_open 0",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_need_the_metrics_permission() {
    let h = harness();
    // Clients of a shop, whatever else they may do, see no tenant's figures.
    for name in ["storefront", "payments"] {
        let (s, hd, v) = as_client(&h, name, "GET", "/metrics", Value::Null).await;
        assert_problem(s, &hd, &v, 403, "forbidden");
        assert!(v["detail"].as_str().unwrap().contains("metrics"), "{v}");
    }
    let (s, _, _) = as_client(&h, "monitor", "GET", "/metrics", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    // …and the monitor can do nothing else.
    let (s, hd, v) = as_client(&h, "monitor", "POST", "/v1/tokens", card(VISA)).await;
    assert_problem(s, &hd, &v, 403, "forbidden");
}

#[tokio::test]
async fn a_certificate_naming_two_clients_identifies_none() {
    let h = harness();
    // URI SAN of spiffe-shop, common name of storefront
    let two = ClientIdentity::new(
        Some("storefront".into()),
        vec!["spiffe://other/shop".into()],
        vec![],
        "ab".repeat(32),
    );
    let (s, hd, v) = call(&h.app, request("GET", "/v1/tokens/x", Some(two), "")).await;
    assert_problem(s, &hd, &v, 403, "forbidden");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("more than one configured client"),
        "{v}"
    );
    // the same client by both names is no ambiguity
    let both = ClientIdentity::new(
        Some("nobody".into()),
        vec!["spiffe://other/shop".into(), "spiffe://unknown".into()],
        vec![],
        "cd".repeat(32),
    );
    let (s, _, _) = call(&h.app, request("GET", "/v1/tokens/x", Some(both), "")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_stored_follows_inserts_and_deletes_without_counting() {
    let h = harness();
    let stored = |text: &Value| -> i64 {
        text.as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("panvault_tokens_stored "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (_, _, m) = as_client(&h, "monitor", "GET", "/metrics", Value::Null).await;
    assert_eq!(stored(&m), 0);
    let mut tokens = Vec::new();
    for n in [
        "4242 4242 4242 4242",
        "5555 5555 5555 4444",
        "3782 822463 10005",
    ] {
        let (s, _, v) = as_client(&h, "storefront", "POST", "/v1/tokens", card(n)).await;
        assert_eq!(s, StatusCode::CREATED);
        tokens.push(v["token"].as_str().unwrap().to_owned());
    }
    // the same card again is no new row
    let (s, _, _) = as_client(&h, "storefront", "POST", "/v1/tokens", card(VISA)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = as_client(
        &h,
        "storefront",
        "DELETE",
        &format!("/v1/tokens/{}", tokens[0]),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // an erasure takes its subject's rows off the count too
    for n in ["4000 0566 5566 5556", "6011 1111 1111 1117"] {
        let mut body = card(n);
        body["subject"] = json!("cust_1");
        let (s, _, _) = as_client(&h, "storefront", "POST", "/v1/tokens", body).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, _, m) = as_client(&h, "monitor", "GET", "/metrics", Value::Null).await;
    assert_eq!(stored(&m), 4);
    let (s, _, v) = as_client(
        &h,
        "storefront",
        "POST",
        "/v1/subjects/cust_1/erase",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The figure comes from the running count, not from the table: a row that
    // appears behind the vault's back is not seen.
    let db = crate::store::db_path(h.vault.data_dir());
    let conn = rusqlite::Connection::open(db).unwrap();
    let real: i64 = conn
        .query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(real, 2);
    conn.execute_batch(
        "CREATE TEMP TABLE t AS SELECT * FROM main.cards LIMIT 1; \
         UPDATE t SET id = (SELECT max(id) + 1 FROM main.cards), token = 'x' || token; \
         INSERT INTO main.cards SELECT * FROM t;",
    )
    .unwrap();
    let (_, _, m) = as_client(&h, "monitor", "GET", "/metrics", Value::Null).await;
    assert_eq!(stored(&m), 2);
}

#[tokio::test]
async fn detokenize_is_rate_limited_per_client_with_429() {
    let text = CONFIG.replacen(
        "[[clients]]",
        "[limits]\ndetokenize_per_second = 0.5\ndetokenize_burst = 2\n\n[[clients]]",
        1,
    );
    let h = harness_with(&text);
    let (s, _, v) = as_client(&h, "storefront", "POST", "/v1/tokens", card(VISA)).await;
    assert_eq!(s, StatusCode::CREATED);
    let token = v["token"].as_str().unwrap().to_owned();
    let uri = format!("/v1/tokens/{token}/detokenize");
    for _ in 0..2 {
        let (s, _, _) = as_client(&h, "payments", "POST", &uri, json!({"purpose": "charge"})).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, headers, v) =
        as_client(&h, "payments", "POST", &uri, json!({"purpose": "charge"})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["code"], "rate_limited");
    assert!(headers.get("retry-after").is_some());
    assert!(v.get("card").is_none());
    // another client has its own bucket
    let (s, _, _) = as_client(&h, "spiffe-shop", "POST", &uri, json!({"purpose": "x"})).await;
    assert_ne!(s, StatusCode::TOO_MANY_REQUESTS);
}
