//! Dedup over the API: one card held by two customers of a shop is two tokens,
//! each erased by its own customer; the same customer's new expiry and metadata
//! update the stored record; bin_last4 tokens of one card are counted per tenant.

use serde_json::{Value, json};

use crate::util::{TestServer, cards, this_year};

fn body(card: &str, month: i64, year: i32, subject: &str, metadata: Value) -> Value {
    json!({
        "card": {"number": card, "exp_month": month, "exp_year": year},
        "subject": subject,
        "metadata": metadata,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_card_two_customers_over_the_api() {
    let server = TestServer::start().await;
    let storefront = server.client("storefront");
    let payments = server.client("payments");
    let card = cards::fresh();
    let year = this_year() + 3;

    let a = storefront
        .post(
            "/v1/tokens",
            &body(&card, 6, year, "cust_a", json!({"o": "1"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let b = storefront
        .post(
            "/v1/tokens",
            &body(&card, 6, year, "cust_b", json!({"o": "2"})),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.text());
    let (a, b) = (a.json(), b.json());
    let (token_a, token_b) = (
        a["token"].as_str().unwrap().to_owned(),
        b["token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(token_a, token_b, "two customers share one token");
    assert_eq!(
        (&b["subject"], &b["deduplicated"]),
        (&json!("cust_b"), &json!(false))
    );

    // cust_b's erasure takes cust_b's token, and only it.
    let r = storefront
        .post("/v1/subjects/cust_b/erase", &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["receipt"]["tokens_erased"], 1);
    assert_eq!(payments.detokenize(&token_b, "check").await.status, 404);
    let d = payments.detokenize(&token_a, "check").await;
    assert_eq!(d.status, 200);
    assert!(d.json()["card"]["number"] == card.as_str());

    // cust_a again with a later expiry and new metadata: the same token, updated.
    let r = storefront
        .post(
            "/v1/tokens",
            &body(&card, 3, year + 1, "cust_a", json!({"o": "9"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(&card));
    let v = r.json();
    assert_eq!(
        (&v["token"], &v["deduplicated"], &v["updated"]),
        (
            &json!(token_a),
            &json!(true),
            &json!(["expiry", "metadata"])
        )
    );
    let meta = payments.get(&format!("/v1/tokens/{token_a}")).await;
    assert_eq!(meta.status, 200);
    let meta = meta.json();
    assert_eq!(
        (&meta["card"]["exp_month"], &meta["card"]["exp_year"]),
        (&json!(3), &json!(year + 1))
    );
    assert_eq!(meta["metadata"], json!({"o": "9"}));
    assert_eq!(meta["subject"], "cust_a");
    let d = payments.detokenize(&token_a, "check").await.json();
    assert_eq!(
        (&d["card"]["exp_month"], &d["card"]["exp_year"]),
        (&json!(3), &json!(year + 1))
    );
    server.stop().await;
}

/// 90 bin_last4 tokens of a 12-digit card in other-shop used to leave none for
/// demo-shop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_last4_space_is_per_tenant_over_the_api() {
    let server = TestServer::start().await;
    let other = server.client("other-shop");
    let storefront = server.client("storefront");
    let card = "424242424242";
    let item = json!({
        "card": {"number": card, "exp_month": 12, "exp_year": this_year() + 2},
        "format": "bin_last4",
        "force_new": true,
    });
    let mut taken = std::collections::HashSet::new();
    for _round in 0..200 {
        let r = other
            .post(
                "/v1/tokens/batch",
                &json!({"items": vec![item.clone(); 30]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        for res in r.json()["results"].as_array().unwrap() {
            if let Some(t) = res["token"].as_str() {
                taken.insert(t.to_owned());
            }
        }
        if taken.len() == 90 {
            break;
        }
    }
    assert_eq!(taken.len(), 90, "other-shop holds every bin_last4 value");
    let full = other.post("/v1/tokens", &item).await;
    assert_eq!(full.status, 400, "{}", full.text());

    let r = storefront.post("/v1/tokens", &item).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let d = server.client("payments").detokenize(&token, "check").await;
    assert_eq!(d.status, 200);
    assert!(d.json()["card"]["number"] == card);
    // other-shop's token of the same spelling is still its own.
    let d = other.detokenize(&token, "check").await;
    assert_eq!(d.status, 200);
    server.stop().await;
}
