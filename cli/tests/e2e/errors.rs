//! Every error code, produced by a real request over mTLS; and no card number in
//! any response body (but the detokenize answer) or in the server's logs.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use panvault_vault::tls::pki::LeafSpec;

use crate::util::{self, Resp, TestServer, cards};

struct Seen {
    codes: BTreeSet<String>,
    bodies: Vec<String>,
}

impl Seen {
    #[track_caller]
    fn check(&mut self, r: &Resp, status: u16, code: &str) -> Value {
        let v = r.assert_problem(status, code);
        self.codes.insert(code.to_owned());
        self.bodies.push(r.text());
        v
    }
}

/// All forms a test number may take in text.
fn forms(n: &str) -> Vec<String> {
    let spaced: Vec<String> = n
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    vec![n.to_owned(), spaced.join(" "), spaced.join("-")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_over_mtls_and_no_card_number_anywhere() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let pay = server.client("payments");
    let other = server.client("other-shop");
    let year = util::this_year() + 4;
    let mut used = vec![
        cards::VISA.to_owned(),
        cards::MASTERCARD.to_owned(),
        cards::AMEX.to_owned(),
        cards::VISA_DEBIT.to_owned(),
        cards::DISCOVER.to_owned(),
    ];
    let mut seen = Seen {
        codes: BTreeSet::new(),
        bodies: Vec::new(),
    };

    // a good token to work with
    let good = cards::fresh();
    used.push(good.clone());
    let r = sf.tokenize(&good).await;
    assert_eq!(r.status, 201);
    seen.bodies.push(r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();

    // 400 invalid_json (cut off right after a card number)
    let r = sf
        .post_raw(
            "/v1/tokens",
            format!("{{\"card\":{{\"number\":\"{}\"", cards::VISA).as_bytes(),
        )
        .await;
    seen.check(&r, 400, "invalid_json");
    // 422 invalid_card_number: Luhn, letters, length
    seen.check(
        &sf.tokenize("4242424242424241").await,
        422,
        "invalid_card_number",
    );
    seen.check(
        &sf.tokenize("4242-4242-abcd-4242").await,
        422,
        "invalid_card_number",
    );
    seen.check(&sf.tokenize("42424242").await, 422, "invalid_card_number");
    // 422 card_expired
    let r = sf
        .post(
            "/v1/tokens",
            &json!({"card": {"number": cards::MASTERCARD, "exp_month": 1, "exp_year": 2020}}),
        )
        .await;
    seen.check(&r, 422, "card_expired");
    // 422 invalid_card
    let r = sf
        .post(
            "/v1/tokens",
            &json!({"card": {"number": cards::AMEX, "exp_month": 13, "exp_year": year}}),
        )
        .await;
    seen.check(&r, 422, "invalid_card");
    // 422 cvv_not_accepted
    let r = sf.post("/v1/tokens", &json!({"card": {"number": cards::VISA_DEBIT, "exp_month": 12, "exp_year": year, "cvc": "123"}})).await;
    seen.check(&r, 422, "cvv_not_accepted");
    // 400 invalid_request, even when the offending field is named with a card number
    let mut req = util::card_request(cards::DISCOVER);
    req[cards::VISA] = json!(1);
    seen.check(&sf.post("/v1/tokens", &req).await, 400, "invalid_request");
    let r = sf.post("/v1/tokens", &json!({"card": {"number": cards::DISCOVER, "exp_month": 12, "exp_year": year}, "subject": cards::MASTERCARD})).await;
    seen.check(&r, 400, "invalid_request");
    // 400 purpose_required
    seen.check(
        &pay.post_raw(&format!("/v1/tokens/{token}/detokenize"), b"")
            .await,
        400,
        "purpose_required",
    );
    seen.check(
        &pay.post(&format!("/v1/tokens/{token}/detokenize"), &json!({}))
            .await,
        400,
        "purpose_required",
    );
    let v = seen.check(
        &pay.detokenize(&token, &format!("refund card {}", forms(cards::VISA)[1]))
            .await,
        400,
        "purpose_required",
    );
    assert!(v["detail"].as_str().unwrap().contains("card number"));
    // 401 unauthenticated: a valid certificate naming no one
    let nameless = server.pki.issue(&LeafSpec {
        common_name: None,
        dns_sans: vec!["n.example".into()],
        ..LeafSpec::client("x")
    });
    seen.check(
        &server
            .client_with(&nameless.cert_pem, &nameless.key_pem)
            .tokenize(cards::VISA)
            .await,
        401,
        "unauthenticated",
    );
    // 403 forbidden: permission, unknown client
    seen.check(&sf.detokenize(&token, "charge").await, 403, "forbidden");
    seen.check(&pay.tokenize(cards::VISA).await, 403, "forbidden");
    let stranger = server.pki.issue(&LeafSpec::client("stranger"));
    seen.check(
        &server
            .client_with(&stranger.cert_pem, &stranger.key_pem)
            .tokenize(cards::VISA)
            .await,
        403,
        "forbidden",
    );
    // 404 not_found: another tenant's token, a card number in the path, an unknown route
    seen.check(
        &other.get(&format!("/v1/tokens/{token}")).await,
        404,
        "not_found",
    );
    seen.check(
        &pay.get(&format!("/v1/tokens/{}", cards::VISA)).await,
        404,
        "not_found",
    );
    seen.check(
        &pay.detokenize(cards::MASTERCARD, "x").await,
        404,
        "not_found",
    );
    seen.check(
        &sf.get(&format!("/v2/{}", cards::VISA)).await,
        404,
        "not_found",
    );
    // 405
    seen.check(
        &sf.request("PUT", "/v1/tokens", Some(b"{}"), Some("application/json"))
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    );
    // 415
    let body = util::card_request(cards::VISA).to_string();
    seen.check(
        &sf.request(
            "POST",
            "/v1/tokens",
            Some(body.as_bytes()),
            Some("text/plain"),
        )
        .await
        .unwrap(),
        415,
        "unsupported_media_type",
    );
    // 413: 64 KiB for a token request, 2 MiB for a batch
    let mut big = util::card_request(cards::VISA);
    big["metadata"] = json!({"pad": "x".repeat(65 * 1024)});
    seen.check(&sf.post("/v1/tokens", &big).await, 413, "payload_too_large");
    let item = util::card_request(cards::VISA).to_string();
    let huge = format!(
        "{{\"items\":[{}]}}",
        vec![item; 2 * 1024 * 1024 / 60].join(",")
    );
    assert!(huge.len() > 2 * 1024 * 1024);
    seen.check(
        &sf.post_raw("/v1/tokens/batch", huge.as_bytes()).await,
        413,
        "payload_too_large",
    );
    // a batch item's error is a problem too
    let r = sf
        .post(
            "/v1/tokens/batch",
            &json!({"items": [util::card_request("4242424242424241")]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["results"][0]["error"]["code"],
        "invalid_card_number"
    );
    seen.bodies.push(r.text());

    // the card number leaves only here
    let d = pay.detokenize(&token, "charge order 1234").await;
    assert_eq!(d.status, 200);
    let metrics = server.client("monitor").get("/metrics").await;
    assert_eq!(metrics.status, 200);
    seen.bodies.push(metrics.text());

    // 503: the vault's writer stops under the running server
    let vault = server.vault.clone();
    tokio::task::spawn_blocking(move || vault.shutdown())
        .await
        .unwrap();
    seen.check(&sf.tokenize(&cards::fresh()).await, 503, "unavailable");
    seen.check(
        &pay.detokenize(&token, "charge order 1234").await,
        503,
        "audit_unavailable",
    );
    assert_eq!(sf.get("/healthz").await.status, 200);

    let required = [
        "invalid_json",
        "invalid_card_number",
        "card_expired",
        "cvv_not_accepted",
        "purpose_required",
        "unauthenticated",
        "forbidden",
        "not_found",
        "payload_too_large",
        "unavailable",
        "invalid_request",
        "invalid_card",
        "method_not_allowed",
        "unsupported_media_type",
        "audit_unavailable",
    ];
    for code in required {
        assert!(seen.codes.contains(code), "no request produced {code}");
    }
    // the audit log as a SIEM would receive it
    let export = {
        let conn =
            panvault_audit::log::open_read_only(&server.config.data_dir.join("vault.db")).unwrap();
        let mut out = Vec::new();
        panvault_audit::log::export_jsonl(&conn, 0, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(export.contains("\"detokenize\""));
    seen.bodies.push(export);
    server.stop().await;

    let logs = util::captured_logs();
    assert!(logs.contains("request"), "the log capture recorded nothing");
    for n in &used {
        for form in forms(n) {
            for body in &seen.bodies {
                assert!(
                    !body.contains(&form),
                    "a response body holds the card {}: {body:.200}",
                    cards::masked(n)
                );
            }
            assert!(
                !logs.contains(&form),
                "the server's log holds the card {}",
                cards::masked(n)
            );
        }
    }
    // and our own scanner finds no card number in any of it (logs, responses,
    // metrics, audit export): the detokenize response is the only place one leaves
    let mut all = logs.into_bytes();
    for b in &seen.bodies {
        all.extend_from_slice(b.as_bytes());
        all.push(b'\n');
    }
    let found = panvault_audit::scan::scan_bytes(&all, true);
    let masked: Vec<&str> = found.iter().map(|m| m.masked.as_str()).collect();
    assert!(
        found.is_empty(),
        "the scanner found card numbers: {masked:?}"
    );
}

/// A refused request is logged by its request id, never with the token of its path:
/// the log names no path segment (docs/config.md); the audit event holds the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_logs_its_id_but_not_the_token() {
    let server = TestServer::start().await;
    let t = server
        .client("storefront")
        .tokenize(&cards::fresh())
        .await
        .json();
    let token = t["token"].as_str().unwrap().to_owned();
    // storefront may tokenize but not detokenize
    let r = server
        .client("storefront")
        .detokenize(&token, "charge")
        .await;
    r.assert_problem(403, "forbidden");
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    server.stop().await;
    let logs = util::captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("request denied") && l.contains(&id))
        .unwrap_or_else(|| panic!("no log line for the denied request {id}"));
    assert!(!line.contains(&token), "{line}");
    assert!(!logs.contains(&token), "the token is in the log");
}
