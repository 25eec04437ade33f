//! GDPR erasure over the API: a subject's cards are gone (404, and no bytes left in
//! the database or WAL), others stay, the receipt verifies, the log verifies.

use panvault_audit::log::{ErasureReceipt, PublicKey, verify, verify_receipt};
use serde_json::json;

use crate::util::{TestServer, cards, this_year};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_a_subject_over_the_api() {
    let server = TestServer::start().await;
    let storefront = server.client("storefront");
    let payments = server.client("payments");
    let year = this_year() + 3;
    let alice: Vec<String> = (0..3).map(|_| cards::fresh()).collect();
    let bob: Vec<String> = (0..2).map(|_| cards::fresh()).collect();
    let mut alice_tokens = Vec::new();
    for c in &alice {
        let r = storefront
            .post("/v1/tokens", &json!({"card": {"number": c, "exp_month": 6, "exp_year": year}, "subject": "cust_alice"}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        alice_tokens.push(r.json()["token"].as_str().unwrap().to_owned());
    }
    let mut bob_tokens = Vec::new();
    for c in &bob {
        let r = storefront
            .post("/v1/tokens", &json!({"card": {"number": c, "exp_month": 6, "exp_year": year}, "subject": "cust_bob"}))
            .await;
        bob_tokens.push(r.json()["token"].as_str().unwrap().to_owned());
    }
    let db = server.config.data_dir.join("vault.db");
    let ciphertexts: Vec<Vec<u8>> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        alice_tokens
            .iter()
            .map(|t| {
                c.query_row("SELECT ciphertext FROM cards WHERE token = ?1", [t], |r| {
                    r.get(0)
                })
                .unwrap()
            })
            .collect()
    };

    // payments may not erase; storefront may
    let refused = payments
        .post("/v1/subjects/cust_alice/erase", &json!({}))
        .await;
    refused.assert_problem(403, "forbidden");
    let r = storefront
        .post("/v1/subjects/cust_alice/erase", &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["receipt"]["tokens_erased"], 3);
    assert_eq!(v["receipt"]["tenant"], "demo-shop");
    assert_eq!(v["wal_scrubbed"], true);
    assert!(
        !r.text().contains("cust_alice"),
        "the receipt holds the raw subject id"
    );

    // (a) gone for alice, there for bob
    for t in &alice_tokens {
        assert_eq!(payments.detokenize(t, "check").await.status, 404);
    }
    for (t, c) in bob_tokens.iter().zip(&bob) {
        let d = payments.detokenize(t, "check").await;
        assert_eq!(d.status, 200);
        assert!(d.json()["card"]["number"] == c.as_str());
    }
    // (b) no card number and no ciphertext of alice's left in the files
    for f in [db.clone(), db.with_extension("db-wal")] {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for c in &alice {
            assert!(
                !contains(&bytes, c.as_bytes()),
                "{} in {}",
                cards::masked(c),
                f.display()
            );
        }
        for ct in &ciphertexts {
            assert!(
                !contains(&bytes, &ct[..24]),
                "an erased ciphertext is still in {}",
                f.display()
            );
        }
    }
    // (c) the receipt verifies with the public key; a modified one does not
    let key = PublicKey::read_from(&server.config.data_dir.join("audit-signing.pub")).unwrap();
    let receipt = ErasureReceipt::from_json(&v["receipt"].to_string()).unwrap();
    verify_receipt(&receipt, &key).unwrap();
    let mut forged = receipt.clone();
    forged.tenant = "other-shop".into();
    assert!(verify_receipt(&forged, &key).is_err());
    // erasing someone with no tokens is not an error
    let none = storefront
        .post("/v1/subjects/cust_nobody/erase", &json!({}))
        .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.json()["receipt"]["tokens_erased"], 0);
    // (d) the audit log verifies
    let conn = panvault_audit::log::open_read_only(&db).unwrap();
    let report = verify(&conn, &key, None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    drop(conn);
    server.stop().await;
}
