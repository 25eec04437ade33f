//! The relay through the real binary: `panvault serve` forwards a template with
//! the card put in to fake payment providers (HTTPS, each with its own CA) and
//! hands back their answers masked. Card numbers never reach this test's output:
//! comparisons are `assert!` with masked messages, and the provider's records
//! print sizes only.

use std::path::Path;

use panvault_audit::card::contains_card_number;
use panvault_vault::tls::pki::LeafSpec;
use serde_json::{Value, json};

use crate::util::cards;
use crate::util::provider::{FakeProvider, Mode, closed_port};
use crate::util::{BinVault, Client, ServeProcess, TestPki, this_year};

const SECRET: &[u8] = b"psp-merchant-secret";

/// The issue's example body (without the security code, which no token holds
/// unless given at tokenization).
const CHARGE: &str = r#"{"amount":1999,"card":{"number":"{{card.number}}","exp_month":"{{card.exp_month}}","exp_year":"{{card.exp_year}}"}}"#;

struct Providers {
    psp: FakeProvider,
    echo: FakeProvider,
    slow: FakeProvider,
    redirect: FakeProvider,
    signed: FakeProvider,
    mtls: FakeProvider,
}

/// Issues a client certificate `name` in the vault's PKI.
fn issue_client(root: &Path, name: &str) {
    let pki = TestPki::new(&root.join("pki"));
    let issued = pki.issue(&LeafSpec::client(name));
    std::fs::write(root.join(format!("pki/{name}.pem")), issued.cert_pem).unwrap();
    std::fs::write(
        root.join(format!("pki/{name}.key")),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
}

fn destination(name: &str, url: &str, ca: &str, clients: &[&str]) -> String {
    let clients: Vec<String> = clients.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "[[relay.destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nca_file = \"{ca}\"\nclients = [{}]\n",
        clients.join(", ")
    )
}

/// Two relaying clients (`checkout` of demo-shop, `other-relay` of other-shop),
/// and a destination per provider mode.
async fn configure(v: &BinVault) -> Providers {
    let p = Providers {
        psp: FakeProvider::start(Mode::Answer(201, r#"{"id":"ch_1","status":"succeeded"}"#)).await,
        echo: FakeProvider::start(Mode::Echo).await,
        slow: FakeProvider::start(Mode::Slow).await,
        redirect: FakeProvider::start(Mode::Redirect).await,
        signed: FakeProvider::start(Mode::VerifyHmac(SECRET)).await,
        mtls: FakeProvider::start_with(Mode::Answer(200, r#"{"mtls":true}"#), true).await,
    };
    for (name, prov) in [
        ("psp", &p.psp),
        ("echo", &p.echo),
        ("slow", &p.slow),
        ("redirect", &p.redirect),
        ("signed", &p.signed),
        ("mtls", &p.mtls),
    ] {
        prov.write_ca(&v.root.join(format!("{name}-ca.pem")));
    }
    std::fs::write(v.root.join("psp-secret"), [SECRET, b"\n"].concat()).unwrap();
    issue_client(&v.root, "checkout");
    issue_client(&v.root, "other-relay");
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    text.push_str(
        "[[clients]]\nname = \"checkout\"\ntenant = \"demo-shop\"\npermissions = [\"tokenize\", \"read\", \"relay\"]\n\
         [[clients]]\nname = \"other-relay\"\ntenant = \"other-shop\"\npermissions = [\"relay\"]\n\
         [relay]\nconnect_timeout_secs = 3\ntimeout_secs = 3\nrequest_bytes = 4096\nresponse_bytes = 2048\n",
    );
    let both = ["checkout", "other-relay"];
    text.push_str(&destination(
        "psp",
        &p.psp.url("/v1/charges"),
        "psp-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "echo",
        &p.echo.url("/echo"),
        "echo-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "slow",
        &p.slow.url("/slow"),
        "slow-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "redirect",
        &p.redirect.url("/moved"),
        "redirect-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "down",
        &format!("https://127.0.0.1:{}/v1/charges", closed_port()),
        "psp-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "narrow",
        &p.psp.url("/v1/charges"),
        "psp-ca.pem",
        &["other-relay"],
    ));
    // The echo provider's CA does not vouch for the psp's certificate.
    text.push_str(&destination(
        "wrong-ca",
        &p.psp.url("/v1/charges"),
        "echo-ca.pem",
        &both,
    ));
    text.push_str(&destination(
        "signed",
        &p.signed.url("/pay"),
        "signed-ca.pem",
        &both,
    ));
    text.push_str(
        "[relay.destinations.signing]\nalgorithm = \"hmac-sha256\"\nsecret_file = \"psp-secret\"\nheader = \"x-signature\"\n",
    );
    // A provider that requires a client certificate: with one, and without.
    p.mtls.issue_client(
        "vault",
        &v.root.join("mtls-client.pem"),
        &v.root.join("mtls-client.key"),
    );
    text.push_str(&destination(
        "mtls",
        &p.mtls.url("/pay"),
        "mtls-ca.pem",
        &both,
    ));
    text.push_str("client_cert = \"mtls-client.pem\"\nclient_key = \"mtls-client.key\"\n");
    text.push_str(&destination(
        "mtls-nocert",
        &p.mtls.url("/pay"),
        "mtls-ca.pem",
        &both,
    ));
    std::fs::write(&v.config, text).unwrap();
    p
}

async fn relay(c: &Client, destination: &str, token: &str, body: &str) -> crate::util::Resp {
    c.post(
        &format!("/v1/relay/{destination}"),
        &json!({
            "token": token,
            "purpose": "charge order 1234",
            "method": "POST",
            "headers": {"content-type": "application/json", "idempotency-key": "order-1234"},
            "body": body,
        }),
    )
    .await
}

/// The events of `action` in the vault's audit log: (outcome, code, details).
fn events(v: &BinVault, action: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(v.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = conn
        .prepare("SELECT outcome, code, details FROM audit_events WHERE action = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_puts_the_card_in_masks_the_answer_and_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let p = configure(&v).await;
    let server = ServeProcess::start(&v).await.unwrap();
    let checkout = v.client(server.addr, "checkout");
    let number = cards::fresh();
    let r = checkout.tokenize(&number).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();

    // The provider receives the real number and expiry; the caller its answer.
    let r = relay(&checkout, "psp", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["status"], 201);
    assert_eq!(a["body"], r#"{"id":"ch_1","status":"succeeded"}"#);
    assert_eq!(a["headers"]["content-type"], "application/json");
    let got = p.psp.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let sent = got[0].json();
    assert!(
        sent["card"]["number"] == number.as_str(),
        "the provider did not receive {}",
        cards::masked(&number)
    );
    assert_eq!(sent["card"]["exp_month"], "12");
    assert_eq!(sent["card"]["exp_year"], (this_year() + 4).to_string());
    assert_eq!(sent["amount"], 1999);
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", "/v1/charges")
    );
    assert_eq!(got[0].header("idempotency-key"), Some("order-1234"));
    assert_eq!(got[0].header("host"), Some(p.psp.addr.to_string().as_str()));

    // The outbound pool keeps its connection: a second relay to the same
    // destination opens none.
    let r = relay(&checkout, "psp", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.psp.received().len(), 2);
    assert_eq!(
        p.psp.connections(),
        1,
        "the relay did not reuse its pooled connection"
    );

    // A provider that echoes the number: the caller gets it masked, and the
    // event says how many were masked.
    let r = relay(&checkout, "echo", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains(&number) && !contains_card_number(&text),
        "the answer holds a card number"
    );
    let a = r.json();
    assert_eq!(a["status"], 200);
    assert_eq!(a["headers"]["x-echo-key"], "order-1234");
    let echoed: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["amount"], 1999);
    assert_eq!(echoed["card"]["exp_month"], "12");
    assert_eq!(p.echo.received().len(), 1);

    // A redirect is the provider's answer, never followed.
    let r = relay(&checkout, "redirect", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["status"], 302);
    assert_eq!(a["headers"]["location"], "https://127.0.0.1:9/elsewhere");
    assert_eq!(p.redirect.received().len(), 1);

    // A signed destination: the provider checks the HMAC over what it received.
    let r = relay(&checkout, "signed", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["status"], 200, "{a}");
    assert_eq!(a["body"], r#"{"verified":true}"#);
    assert!(
        !r.text().contains("psp-merchant-secret"),
        "the secret is never in an answer"
    );

    // Mutual TLS to the provider.
    let r = relay(&checkout, "mtls", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"mtls":true}"#);
    assert_eq!(p.mtls.received().len(), 1);
    let r = relay(&checkout, "mtls-nocert", &token, CHARGE).await;
    r.assert_problem(502, "upstream_unreachable");
    assert_eq!(p.mtls.received().len(), 1);

    // Failures of the provider.
    let padded = format!(
        r#"{{"pad":"{}","n":"{{{{card.number}}}}"}}"#,
        "x".repeat(3000)
    );
    let r = relay(&checkout, "echo", &token, &padded).await;
    r.assert_problem(502, "upstream_answer_too_large");
    let r = relay(&checkout, "down", &token, CHARGE).await;
    r.assert_problem(502, "upstream_unreachable");
    let r = relay(&checkout, "wrong-ca", &token, CHARGE).await;
    r.assert_problem(502, "upstream_unreachable");
    let r = relay(&checkout, "slow", &token, CHARGE).await;
    r.assert_problem(504, "upstream_timeout");
    assert_eq!(p.slow.received().len(), 1);

    // Refusals: nothing reaches a provider.
    let before = p.psp.received().len();
    let r = relay(&checkout, "nowhere", &token, CHARGE).await;
    r.assert_problem(404, "not_found");
    let other = v.client(server.addr, "other-relay");
    let r = relay(&other, "psp", &token, CHARGE).await;
    r.assert_problem(404, "not_found");
    let storefront = v.client(server.addr, "storefront");
    let r = relay(&storefront, "psp", &token, CHARGE).await;
    r.assert_problem(403, "forbidden");
    let r = relay(&checkout, "narrow", &token, CHARGE).await;
    r.assert_problem(403, "forbidden");
    let r = relay(&checkout, "psp", "tok_unknown", CHARGE).await;
    r.assert_problem(404, "not_found");
    let with_cvc = r#"{"card":{"number":"{{card.number}}","cvc":"{{card.cvc}}"}}"#;
    let r = relay(&checkout, "psp", &token, with_cvc).await;
    r.assert_problem(409, "cvc_unavailable");
    let r = relay(&checkout, "psp", &token, r#"{"amount":{{card.exp_month}}}"#).await;
    r.assert_problem(422, "bad_template");
    let r = relay(&checkout, "psp", &token, r#"{"pin":"{{card.pin}}"}"#).await;
    r.assert_problem(422, "unknown_placeholder");
    let big = format!(
        r#"{{"pad":"{}","n":"{{{{card.number}}}}"}}"#,
        "x".repeat(5000)
    );
    let r = relay(&checkout, "psp", &token, &big).await;
    r.assert_problem(422, "request_too_large");
    let r = checkout
        .post(
            "/v1/relay/psp",
            &json!({"token": token, "purpose": "x", "headers": {"content-type": "text/plain"}, "body": "{{card.number}}"}),
        )
        .await;
    r.assert_problem(422, "unsupported_content_type");
    let r = checkout
        .post(
            "/v1/relay/psp",
            &json!({"token": token, "purpose": "x", "headers": {"host": "evil.example", "content-type": "application/json"}, "body": "{}"}),
        )
        .await;
    r.assert_problem(422, "invalid_header");
    let r = checkout
        .post("/v1/relay/psp", &json!({"token": token, "body": "{}"}))
        .await;
    r.assert_problem(400, "purpose_required");
    assert_eq!(
        p.psp.received().len(),
        before,
        "a refused relay reached the provider"
    );

    // The audit log: one `relay` event per card sent, durable before it left, and
    // the results; never the number.
    let started = events(&v, "relay");
    let ok = started.iter().filter(|e| e.0 == "success").count();
    assert_eq!(ok, 11, "{started:?}");
    assert!(
        started
            .iter()
            .any(|e| e.1.as_deref() == Some("cvc_unavailable"))
    );
    let results = events(&v, "relay.result");
    assert_eq!(results.len(), 11, "{results:?}");
    let details: Vec<&str> = results.iter().filter_map(|e| e.2.as_deref()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("destination=psp status=201")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("destination=echo status=200") && d.contains("masked=1")),
        "{details:?}"
    );
    assert!(
        results
            .iter()
            .any(|e| e.1.as_deref() == Some("upstream_timeout"))
    );
    assert!(
        results
            .iter()
            .any(|e| e.1.as_deref() == Some("upstream_unreachable"))
    );
    drop(server);
    for f in ["vault.db", "vault.db-wal"] {
        if let Ok(bytes) = std::fs::read(v.data.join(f)) {
            assert!(
                !bytes.windows(number.len()).any(|w| w == number.as_bytes()),
                "{f} holds the card number in clear"
            );
        }
    }
}

/// The `relay` event is durable before any byte goes to the provider: with the
/// vault's writer stopped under the running server, a relay is `503
/// audit_unavailable` and the provider receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_be_recorded_sends_nothing() {
    let psp = FakeProvider::start(Mode::Answer(201, r#"{"id":"ch_1"}"#)).await;
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("psp-ca.pem");
    psp.write_ca(&ca);
    let extra = format!(
        "[[clients]]\nname = \"checkout\"\ntenant = \"demo-shop\"\npermissions = [\"tokenize\", \"relay\"]\n[relay]\n{}",
        destination(
            "psp",
            &psp.url("/v1/charges"),
            &ca.display().to_string(),
            &["checkout"]
        )
    );
    let server = crate::util::TestServer::start_with(crate::util::ServerOpts {
        extra_clients: extra,
        ..Default::default()
    })
    .await;
    let leaf = server.pki.issue(&LeafSpec::client("checkout"));
    let checkout = server.client_with(&leaf.cert_pem, &leaf.key_pem);
    let r = checkout.tokenize(&cards::fresh()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    // It works while the audit log does…
    let r = relay(&checkout, "psp", &token, CHARGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(psp.received().len(), 1);
    // …and sends nothing once it cannot record.
    let vault = server.vault.clone();
    tokio::task::spawn_blocking(move || vault.shutdown())
        .await
        .unwrap();
    let r = relay(&checkout, "psp", &token, CHARGE).await;
    r.assert_problem(503, "audit_unavailable");
    assert_eq!(
        psp.received().len(),
        1,
        "a relay that was not recorded reached the provider"
    );
}

/// A vault (the real binary's files) whose `storefront` may relay to an echoing
/// provider, holding security codes for 900 s.
async fn echo_vault(root: &Path) -> (BinVault, FakeProvider) {
    let v = BinVault::create(root);
    let echo = FakeProvider::start(Mode::Echo).await;
    echo.write_ca(&v.root.join("echo-ca.pem"));
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    text = text.replace(
        "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [",
        "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [\"relay\", ",
    );
    text.push_str("[relay]\ncvc_ttl_secs = 900\n");
    text.push_str(&destination(
        "echo",
        &echo.url("/echo"),
        "echo-ca.pem",
        &["storefront"],
    ));
    std::fs::write(&v.config, text).unwrap();
    (v, echo)
}

/// A card with a security code, tokenized by `c`: its token.
async fn tokenize_with_cvc(c: &Client, number: &str, cvc: &str) -> String {
    let mut req = crate::util::card_request(number);
    req["card"]["cvc"] = json!(cvc);
    let r = c.post("/v1/tokens", &req).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// A relay of the number and the held code, the provider's own idempotency key
/// among the forwarded headers, and the vault's in `key` (the HTTP header).
async fn relay_with_key(
    c: &Client,
    token: &str,
    amount: u32,
    key: Option<&str>,
) -> crate::util::Resp {
    let body = json!({
        "token": token,
        "purpose": "charge order 1234",
        "headers": {"content-type": "application/json", "idempotency-key": "provider-key-1"},
        "body": format!(r#"{{"amount":{amount},"card":{{"number":"{{{{card.number}}}}","cvc":"{{{{card.cvc}}}}"}}}}"#),
    });
    let extra: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    c.request_with_headers(
        "POST",
        "/v1/relay/echo",
        Some(body.to_string().as_bytes()),
        Some("application/json"),
        &extra,
    )
    .await
    .unwrap()
}

/// The database file and its WAL, as bytes.
fn raw_db(v: &BinVault) -> Vec<u8> {
    let mut all = std::fs::read(v.db()).unwrap();
    if let Ok(wal) = std::fs::read(v.db().with_extension("db-wal")) {
        all.extend(wal);
    }
    all
}

/// `Idempotency-Key` on the relay: a retry with the same key and request gets
/// the first (masked) answer again, marked `idempotent-replayed`, and the
/// provider is not called again (the code was used once: a second real relay
/// would be 409); the same key with another request is 409
/// `idempotency_key_reused`. The forwarded `idempotency-key` reaches the
/// provider untouched, the vault's own does not. Neither the stored answer nor
/// anything else in the database holds the card number or the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_relay_answers_the_first_answer_and_calls_the_provider_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (v, echo) = echo_vault(tmp.path()).await;
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");
    // An American Express card: its code has four digits.
    let number = cards::AMEX.to_owned();
    let token = tokenize_with_cvc(&sf, &number, "7391").await;

    let first = relay_with_key(&sf, &token, 1999, Some("charge-1234")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let text = first.text();
    assert!(
        !text.contains(&number) && !contains_card_number(&text) && !text.contains("7391"),
        "the answer holds the card number or the code"
    );
    assert!(first.headers.get("idempotent-replayed").is_none());
    let got = echo.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("idempotency-key"), Some("provider-key-1"));
    assert!(
        got[0].json()["card"]["cvc"] == "7391",
        "the provider did not get the held code"
    );

    let again = relay_with_key(&sf, &token, 1999, Some("charge-1234")).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, first.body, "the retry got another answer");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["content-type"], "application/json");
    assert_eq!(echo.received().len(), 1, "the retry called the provider");

    let other = relay_with_key(&sf, &token, 2500, Some("charge-1234")).await;
    other.assert_problem(409, "idempotency_key_reused");
    assert_eq!(echo.received().len(), 1);
    // Without the vault's key, a second relay really runs: the code is gone.
    relay_with_key(&sf, &token, 1999, None)
        .await
        .assert_problem(409, "cvc_unavailable");
    assert_eq!(echo.received().len(), 1);

    assert!(server.terminate().await.success());
    let conn = rusqlite::Connection::open(v.db()).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM idempotency WHERE status = 200",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    assert_eq!(stored, 1, "the first answer was not kept");
    let bytes = raw_db(&v);
    assert!(
        !bytes.windows(number.len()).any(|w| w == number.as_bytes()),
        "the database holds the card number in clear"
    );
    assert!(
        !bytes.windows(6).any(|w| w == b"\"7391\""),
        "the database holds the code in clear"
    );
}

/// The security code is taken in the same transaction as the `relay` event: when
/// the event cannot be recorded (a trigger from another connection refuses
/// `relay` events), the relay is 503 `audit_unavailable`, nothing is sent, and
/// the code is still held; once the fault is gone, the relay sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_be_recorded_leaves_the_code_held() {
    let tmp = tempfile::tempdir().unwrap();
    let (v, echo) = echo_vault(tmp.path()).await;
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");
    let token = tokenize_with_cvc(&sf, cards::AMEX, "7391").await;

    let admin = rusqlite::Connection::open(v.db()).unwrap();
    admin
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER e2e_relay_fault BEFORE INSERT ON audit_events \
             WHEN NEW.action = 'relay' \
             BEGIN SELECT RAISE(ABORT, 'e2e: relay events refused'); END;",
        )
        .unwrap();
    relay_with_key(&sf, &token, 1999, None)
        .await
        .assert_problem(503, "audit_unavailable");
    assert_eq!(echo.received().len(), 0, "an unrecorded relay was sent");
    admin.execute_batch("DROP TRIGGER e2e_relay_fault").unwrap();
    drop(admin);

    let meta = sf.get(&format!("/v1/tokens/{token}")).await;
    assert_eq!(
        meta.json()["cvc"]["held"],
        true,
        "the code was taken by a relay that was never recorded"
    );
    let r = relay_with_key(&sf, &token, 1999, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = echo.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].json()["card"]["cvc"] == "7391",
        "the provider did not get the held code"
    );
    assert!(server.terminate().await.success());
}
