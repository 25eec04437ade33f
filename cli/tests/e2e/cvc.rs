//! Card security codes held for the relay, and `Idempotency-Key` on the tokenize
//! routes: the real binary (and the in-process server where the test takes the
//! code the way the relay does).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{self, BinVault, Client, ServeProcess, ServerOpts, TestServer, cards};

/// A relay configured with codes held for `ttl` seconds (the destination is
/// never called here).
fn relay_toml(ttl: u64) -> String {
    format!(
        "[relay]\ncvc_ttl_secs = {ttl}\n[[relay.destinations]]\nname = \"psp\"\nurl = \"https://127.0.0.1:9/v1/charges\"\nclients = [\"storefront\"]\n"
    )
}

fn with_cvc(number: &str, cvc: &str) -> Value {
    let mut r = util::card_request(number);
    r["card"]["cvc"] = json!(cvc);
    r
}

/// The bytes of the database and its WAL.
fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = std::fs::read(db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        all.extend(wal);
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// With a relay configured the binary holds a code (3 digits, 4 for Amex), says
/// so on the token's metadata, and after its lifetime reads it as not held; the
/// sweep then destroys the code's key, and neither the sealed code nor its key
/// is left in the database file or its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_holds_a_code_until_its_deadline_then_destroys_it() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    text.push_str(&relay_toml(2));
    std::fs::write(&v.config, text).unwrap();
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");

    // The wrong length for the brand: 4 digits on a Visa, 3 on an Amex.
    for (number, cvc) in [
        (cards::VISA, "1234"),
        (cards::AMEX, "123"),
        (cards::VISA, "12a"),
    ] {
        sf.post("/v1/tokens", &with_cvc(number, cvc))
            .await
            .assert_problem(422, "invalid_card");
    }
    // Any other spelling of a verification code is still refused.
    let mut cvv = util::card_request(cards::VISA);
    cvv["card"]["cvv"] = json!("123");
    sf.post("/v1/tokens", &cvv)
        .await
        .assert_problem(422, "cvv_not_accepted");
    assert_eq!(count(&v.db(), "SELECT count(*) FROM cards"), 0);

    let r = sf.post("/v1/tokens", &with_cvc(cards::AMEX, "7391")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert!(!r.text().contains("\"7391\""), "the code came back");
    assert_eq!(body["cvc"]["held"], true, "{body}");
    let until = body["cvc"]["until"].as_str().unwrap().to_owned();
    time::OffsetDateTime::parse(&until, &time::format_description::well_known::Rfc3339).unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let meta = sf.get(&format!("/v1/tokens/{token}")).await;
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json()["cvc"], json!({"held": true, "until": until}));

    // What is stored: the sealed code and its window key.
    let (sealed, wrapped) = {
        let conn = rusqlite::Connection::open(v.db()).unwrap();
        let sealed: Vec<u8> = conn
            .query_row("SELECT sealed FROM held_cvcs", [], |r| r.get(0))
            .unwrap();
        let wrapped: Vec<u8> = conn
            .query_row("SELECT wrapped FROM cvc_keys", [], |r| r.get(0))
            .unwrap();
        (sealed, wrapped)
    };
    assert_eq!(sealed.len(), 4 + 16, "not sealed");

    // The lifetime is 2 s and the key's is at most twice that; the sweep runs every
    // second. Bounded: the test fails if that has not happened after 30 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = sf.get(&format!("/v1/tokens/{token}")).await.json()["cvc"].clone();
        let keys = count(&v.db(), "SELECT count(*) FROM cvc_keys");
        if held == json!({"held": false}) && keys == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still held {held} with {keys} keys after 30 s: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(&v.db(), "SELECT count(*) FROM held_cvcs"), 0);
    assert!(server.terminate().await.success());
    let bytes = db_bytes(&v.db());
    assert!(
        !contains(&bytes, &sealed),
        "the sealed code is still on disk"
    );
    assert!(
        !contains(&bytes, &wrapped),
        "the code's key is still on disk"
    );
    assert!(!contains(&bytes, b"\"7391\""), "the code in the clear");
}

/// Without `[relay]`, a code is refused as before, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_code_without_a_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");
    sf.post("/v1/tokens", &with_cvc(cards::AMEX, "7391"))
        .await
        .assert_problem(422, "cvv_not_accepted");
    let r = sf
        .post(
            "/v1/tokens/batch",
            &json!({"items": [with_cvc(cards::VISA, "123")]}),
        )
        .await;
    assert_eq!(r.json()["results"][0]["error"]["code"], "cvv_not_accepted");
    let r = sf
        .post("/v1/tokens", &util::card_request(cards::VISA))
        .await;
    assert_eq!(r.status, 201);
    // No relay: the metadata says no code is held.
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        sf.get(&format!("/v1/tokens/{token}")).await.json()["cvc"],
        json!({"held": false})
    );
    assert!(server.terminate().await.success());
    assert_eq!(count(&v.db(), "SELECT count(*) FROM cards"), 1);
}

/// The relay takes a held code once (`Vault::take_cvc`), then there is none;
/// the batch route holds codes per item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_taken_once_and_the_batch_holds_codes_per_item() {
    let server = TestServer::start_with(ServerOpts {
        extra_config: relay_toml(900),
        ..Default::default()
    })
    .await;
    let sf = server.client("storefront");
    let visa = cards::fresh();
    let r = sf
        .post(
            "/v1/tokens/batch",
            &json!({"items": [
                with_cvc(&visa, "123"),
                with_cvc(cards::AMEX, "123"),
                util::card_request(cards::MASTERCARD),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json()["results"].clone();
    assert_eq!(res[0]["cvc"]["held"], true, "{res}");
    assert_eq!(res[1]["error"]["code"], "invalid_card", "{res}");
    assert!(res[2].get("cvc").is_none(), "{res}");
    let token = res[0]["token"].as_str().unwrap();
    let taken = server.vault.take_cvc("demo-shop", token).await.unwrap();
    assert_eq!(taken.unwrap().expose(), "123");
    assert!(
        server
            .vault
            .take_cvc("demo-shop", token)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        sf.get(&format!("/v1/tokens/{token}")).await.json()["cvc"],
        json!({"held": false})
    );
    // Another tenant never sees it.
    let r = sf.post("/v1/tokens", &with_cvc(cards::AMEX, "7391")).await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(
        server
            .vault
            .take_cvc("other-shop", &token)
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

async fn post_with_key(c: &Client, path: &str, body: &Value, key: &str) -> util::Resp {
    c.request_with_headers(
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        Some("application/json"),
        &[("idempotency-key", key)],
    )
    .await
    .unwrap()
}

/// A retried tokenize with the same `Idempotency-Key` answers the first answer
/// (status, body, location) and creates nothing; the same key with another body
/// is 409; once the first answer is older than 24 h, the key is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_a_retry_with_the_first_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");
    // force_new: without the key, a second request would create a second token.
    let mut body = util::card_request(&cards::fresh());
    body["force_new"] = json!(true);
    let first = post_with_key(&sf, "/v1/tokens", &body, "order-1234").await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post_with_key(&sf, "/v1/tokens", &body, "order-1234").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "a different answer");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["content-type"], "application/json");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(count(&v.db(), "SELECT count(*) FROM cards"), 1);

    // The same key with another body, or on another route: refused.
    let mut other = body.clone();
    other["subject"] = json!("cust_9");
    post_with_key(&sf, "/v1/tokens", &other, "order-1234")
        .await
        .assert_problem(409, "idempotency_key_reused");
    post_with_key(
        &sf,
        "/v1/tokens/batch",
        &json!({ "items": [body.clone()] }),
        "order-1234",
    )
    .await
    .assert_problem(409, "idempotency_key_reused");
    // Another client's key of the same text is its own.
    let other_shop = v.client(server.addr, "other-shop");
    let r = post_with_key(&other_shop, "/v1/tokens", &body, "order-1234").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json()["token"], first.json()["token"]);

    // The batch route: the same.
    let batch = json!({ "items": [body.clone(), util::card_request("4242424242424241")] });
    let b1 = post_with_key(&sf, "/v1/tokens/batch", &batch, "batch-1").await;
    let b2 = post_with_key(&sf, "/v1/tokens/batch", &batch, "batch-1").await;
    assert_eq!((b1.status, b2.status), (200, 200));
    assert_eq!(b1.body, b2.body);
    assert_eq!(count(&v.db(), "SELECT count(*) FROM cards"), 3);

    // A key that is too long or not printable is refused, and nothing is created.
    let long = "k".repeat(256);
    post_with_key(&sf, "/v1/tokens", &body, &long)
        .await
        .assert_problem(400, "invalid_request");

    // A day later (the stored answer aged in the database), the key is fresh.
    {
        let conn = rusqlite::Connection::open(v.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute("UPDATE idempotency SET created_at = created_at - 86401", [])
            .unwrap();
    }
    let fresh = post_with_key(&sf, "/v1/tokens", &body, "order-1234").await;
    assert_eq!(fresh.status, 201, "{}", fresh.text());
    assert!(fresh.headers.get("idempotent-replayed").is_none());
    assert_ne!(fresh.json()["token"], first.json()["token"]);
    assert_eq!(count(&v.db(), "SELECT count(*) FROM cards"), 4);
    // The stored key and answer are keyed hashes and sealed bytes.
    assert!(server.terminate().await.success());
    let bytes = db_bytes(&v.db());
    assert!(!contains(&bytes, b"order-1234"));
    assert_eq!(
        count(
            &v.db(),
            "SELECT count(*) FROM idempotency WHERE instr(answer, 'tok_') > 0"
        ),
        0,
        "an answer stored in the clear"
    );
}

/// The purge the server runs on its periodic hook removes answers past 24 h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_idempotent_answers_make_a_fresh_request() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let mut body = util::card_request(&cards::fresh());
    body["force_new"] = json!(true);
    let first = post_with_key(&sf, "/v1/tokens", &body, "k-1").await;
    assert_eq!(first.status, 201);
    assert_eq!(server.vault.purge_idempotency().await.unwrap(), 0);
    {
        let conn = rusqlite::Connection::open(server.dir.path().join("data/vault.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute("UPDATE idempotency SET created_at = created_at - 86401", [])
            .unwrap();
    }
    assert_eq!(server.vault.purge_idempotency().await.unwrap(), 1);
    let again = post_with_key(&sf, "/v1/tokens", &body, "k-1").await;
    assert_eq!(again.status, 201);
    assert_ne!(again.json()["token"], first.json()["token"]);
    assert_eq!(server.vault.token_count().unwrap(), 2);
    server.stop().await;
}

/// The relay through the binary puts the held code into the provider's request
/// once (the echoing provider's answer comes back with it masked), then there is
/// none (`409 cvc_unavailable`, nothing sent); a code past its deadline is not
/// sent either; and after the relay neither the code in the clear nor its sealed
/// bytes are in the database file or its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sends_a_held_code_once_and_never_an_expired_one() {
    use crate::util::provider::{FakeProvider, Mode};
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let echo = FakeProvider::start(Mode::Echo).await;
    echo.write_ca(&v.root.join("echo-ca.pem"));
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    text = text.replace(
        "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [",
        "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [\"relay\", ",
    );
    text.push_str(&format!(
        "[relay]\ncvc_ttl_secs = 5\n[[relay.destinations]]\nname = \"echo\"\nurl = \"{}\"\nca_file = \"echo-ca.pem\"\nclients = [\"storefront\"]\n",
        echo.url("/echo")
    ));
    std::fs::write(&v.config, text).unwrap();
    let server = ServeProcess::start(&v).await.unwrap();
    let sf = v.client(server.addr, "storefront");
    let relay = |token: String| {
        let sf = &sf;
        async move {
            sf.post(
                "/v1/relay/echo",
                &json!({
                    "token": token,
                    "purpose": "charge order 1234",
                    "method": "POST",
                    "headers": {"content-type": "application/json"},
                    "body": r#"{"amount":1999,"card":{"number":"{{card.number}}","cvc":"{{card.cvc}}"}}"#,
                }),
            )
            .await
        }
    };

    let r = sf.post("/v1/tokens", &with_cvc(cards::AMEX, "7391")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let sealed: Vec<u8> = rusqlite::Connection::open(v.db())
        .unwrap()
        .query_row("SELECT sealed FROM held_cvcs", [], |r| r.get(0))
        .unwrap();
    let r = relay(token.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !r.text().contains("7391"),
        "the code came back to the caller"
    );
    let got = echo.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].json()["card"]["cvc"] == "7391",
        "the provider did not get the held code"
    );
    // Used once: gone.
    assert_eq!(
        sf.get(&format!("/v1/tokens/{token}")).await.json()["cvc"],
        json!({"held": false})
    );
    relay(token.clone())
        .await
        .assert_problem(409, "cvc_unavailable");
    assert_eq!(
        echo.received().len(),
        1,
        "a relay without its code was sent"
    );

    // A code past its deadline is not sent (bounded wait for the 5 s lifetime).
    let r = sf.post("/v1/tokens", &with_cvc(cards::VISA, "123")).await;
    let late = r.json()["token"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sf.get(&format!("/v1/tokens/{late}")).await.json()["cvc"]["held"] == true {
        assert!(
            std::time::Instant::now() < deadline,
            "still held after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relay(late).await.assert_problem(409, "cvc_unavailable");
    assert_eq!(echo.received().len(), 1);

    assert!(server.terminate().await.success());
    let bytes = db_bytes(&v.db());
    assert!(!contains(&bytes, b"\"7391\""), "the code in the clear");
    assert!(!contains(&bytes, &sealed), "the used code's sealed bytes");
}
