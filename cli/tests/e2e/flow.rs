//! The main story: storefront tokenizes, payments detokenizes, storefront may not,
//! another tenant sees nothing.

use serde_json::json;

use crate::util::{self, Client, ServerOpts, TestServer, cards};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_tokenizes_payments_detokenizes_other_tenant_gets_404() {
    let server = TestServer::start().await;
    let storefront = server.client("storefront");
    let payments = server.client("payments");
    let other = server.client("other-shop");
    let card = cards::fresh();
    let spaced = format!(
        "{} {} {} {}",
        &card[0..4],
        &card[4..8],
        &card[8..12],
        &card[12..16]
    );
    let year = util::this_year() + 4;
    let body = json!({"card": {"number": spaced, "exp_month": 12, "exp_year": year, "name": "Jane Doe"}, "subject": "cust_42", "metadata": {"order": "1234"}});

    let r = storefront.post("/v1/tokens", &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !r.text().contains(&card),
        "tokenize answer holds the card {}",
        cards::masked(&card)
    );
    let v = r.json();
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tok_"));
    assert_eq!(
        v["card"],
        json!({"brand": "visa", "bin": &card[..6], "last4": &card[12..], "exp_month": 12, "exp_year": year})
    );
    assert_eq!(v["deduplicated"], false);
    assert_eq!(v["key_version"], 1);
    assert_eq!(v["subject"], "cust_42");
    assert_eq!(v["metadata"], json!({"order": "1234"}));
    assert!(v["fingerprint"].as_str().unwrap().len() >= 16 && v["created_at"].is_string());

    // the same card again in the tenant: the same token
    let again = storefront.post("/v1/tokens", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        (&again.json()["token"], &again.json()["deduplicated"]),
        (&json!(token), &json!(true))
    );

    // metadata, never the number
    let meta = payments.get(&format!("/v1/tokens/{token}")).await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.json()["card"]["last4"], &card[12..]);
    assert!(!meta.text().contains(&card));

    // payments detokenizes
    let d = payments.detokenize(&token, "charge order 1234").await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.headers["content-type"], "application/json");
    assert_eq!(d.headers["cache-control"], "no-store");
    let dv = d.json();
    assert_eq!(dv["token"], token);
    assert!(
        dv["card"]["number"] == card.as_str(),
        "detokenized number differs from {}",
        cards::masked(&card)
    );
    assert_eq!(
        (
            &dv["card"]["exp_month"],
            &dv["card"]["exp_year"],
            &dv["card"]["name"]
        ),
        (&json!(12), &json!(year), &json!("Jane Doe"))
    );

    // storefront may not
    storefront
        .detokenize(&token, "charge order 1234")
        .await
        .assert_problem(403, "forbidden");

    // another tenant: 404 for read, detokenize; its own copy of the card is its own token
    other
        .get(&format!("/v1/tokens/{token}"))
        .await
        .assert_problem(404, "not_found");
    other
        .detokenize(&token, "curious")
        .await
        .assert_problem(404, "not_found");
    let theirs = other.post("/v1/tokens", &body).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.json()["token"], json!(token));
    assert_ne!(theirs.json()["fingerprint"], v["fingerprint"]);

    // delete: then it is gone for everyone
    assert_eq!(
        storefront
            .delete(&format!("/v1/tokens/{token}"))
            .await
            .status,
        204
    );
    payments
        .detokenize(&token, "charge order 1234")
        .await
        .assert_problem(404, "not_found");
    payments
        .get(&format!("/v1/tokens/{token}"))
        .await
        .assert_problem(404, "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_last4_tokens_keep_the_ends_and_fail_luhn() {
    let server = TestServer::start().await;
    let card = cards::fresh();
    let mut body = util::card_request(&card);
    body["format"] = json!("bin_last4");
    let r = server.client("storefront").post("/v1/tokens", &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), card.len());
    assert_eq!((&token[..6], &token[12..]), (&card[..6], &card[12..]));
    assert!(!panvault_audit::card::luhn_valid(token.as_bytes()));
    let d = server.client("payments").detokenize(&token, "refund").await;
    assert_eq!(d.status, 200);
    assert!(d.json()["card"]["number"] == card.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_tls12_clients_are_served_and_tls13_only_refuses_tls12() {
    let server = TestServer::start().await;
    let (cert, key) = server.pki.client_pems("storefront");
    let ca = server.pki.ca_pem();
    let h2 = Client::new(server.addr, &ca, Some((&cert, &key)), &[b"h2"]);
    let tls = h2.connect_tls().await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    assert_eq!(h2.tokenize(&cards::fresh()).await.status, 201);
    assert_eq!(h2.get("/healthz").await.json(), json!({"status": "ok"}));

    let tls12 = Client::with_versions(
        server.addr,
        &ca,
        Some((&cert, &key)),
        &[b"http/1.1"],
        &[&rustls::version::TLS12],
    );
    let stream = tls12.connect_tls().await.unwrap();
    let conn = stream.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
    assert!(
        suite.contains("ECDHE") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );
    drop(stream);
    assert_eq!(tls12.get("/healthz").await.status, 200);
    server.stop().await;

    let strict = TestServer::start_with(ServerOpts {
        min_version: Some("1.3"),
        ..Default::default()
    })
    .await;
    let (cert, key) = strict.pki.client_pems("storefront");
    let tls12 = Client::with_versions(
        strict.addr,
        &strict.pki.ca_pem(),
        Some((&cert, &key)),
        &[b"http/1.1"],
        &[&rustls::version::TLS12],
    );
    assert!(tls12.request("GET", "/healthz", None, None).await.is_err());
    assert_eq!(
        strict.client("storefront").get("/healthz").await.status,
        200
    );
    strict.stop().await;
}
