//! A node's writer batch on PostgreSQL looks every job's cards up together (the
//! card locks in one sorted statement, the dedup rows in one), queues its new
//! rows and audit events for one insert each, and re-checks every detokenized
//! row in one statement. These tests hold it to what one job at a time gave:
//! the same card twice in one batch is one token (per subject), also when the
//! first was inserted at once (bin_last4) rather than queued; two nodes
//! tokenizing the same cards in opposite orders at the same moment make one
//! token of each card and refuse no batch; a deleted token is not released; and
//! the audit log verifies.
//! No card number is printed (messages show masked numbers).

use std::time::Duration;

use serde_json::json;

use crate::pg_harness::{node, stop_and_verify};
use crate::util::postgres::PgServer;
use crate::util::{self, BinVault, cards};

fn request(card: &str) -> serde_json::Value {
    util::card_request(card)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_batch_dedups_inside_one_batch_and_across_nodes_in_any_order() {
    let Some(pg) =
        PgServer::start("pg_batch_dedups_inside_one_batch_and_across_nodes_in_any_order")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let pay_b = v.client(b.addr, "payments");

        // One batch: a card twice (one token), again for a subject (a token of
        // its own, twice), as bin_last4 (inserted at once, not queued), and
        // forced new (a second row).
        let (c, d) = (cards::fresh(), cards::fresh());
        let year = util::this_year() + 4;
        let with_subject = json!({"card": {"number": c, "exp_month": 12, "exp_year": year},
            "subject": "cust_1"});
        let items = json!({"items": [
            request(&c),
            request(&c),
            with_subject,
            with_subject,
            {"card": {"number": d, "exp_month": 12, "exp_year": year}, "format": "bin_last4"},
            {"card": {"number": c, "exp_month": 12, "exp_year": year}, "force_new": true},
            request(&d),
        ]});
        let r = sf_a.post("/v1/tokens/batch", &items).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v1 = r.json();
        let res = v1["results"].as_array().unwrap();
        let tok = |i: usize| res[i]["token"].as_str().unwrap().to_owned();
        // Tokens compared, never printed: a bin_last4 token reads as digits.
        assert!(tok(0) == tok(1), "the same card twice in one batch");
        assert_eq!(
            (
                res[0]["deduplicated"].as_bool(),
                res[1]["deduplicated"].as_bool()
            ),
            (Some(false), Some(true))
        );
        assert!(tok(2) == tok(3), "the same card and subject twice");
        assert!(tok(0) != tok(2), "another subject's token is its own");
        assert_eq!(tok(4).len(), 16, "bin_last4");
        assert!(tok(5) != tok(0), "forced new");
        assert!(
            tok(6) == tok(4),
            "the bin_last4 row is found by the next item"
        );
        for i in [0, 2, 4, 5] {
            let card = if i == 4 { &d } else { &c };
            let r = pay_b.detokenize(&tok(i), "check").await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(
                r.json()["card"]["number"] == card.as_str(),
                "item {i} detokenized to another number than {}",
                cards::masked(card)
            );
        }
        // The batch's rows, found again by the other node.
        let r = sf_b.post("/v1/tokens/batch", &items).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v2 = r.json();
        let again = v2["results"].as_array().unwrap();
        for i in [0, 1, 2, 3, 4, 6] {
            assert!(again[i]["token"] == res[i]["token"], "item {i} on node B");
        }

        // Two nodes, the same 40 cards in opposite orders, at the same moment:
        // each card one token, and no batch refused (the locks are taken in key
        // order, so the two nodes never wait on each other in a cycle).
        for round in 0..5 {
            let many: Vec<String> = (0..40).map(|_| cards::fresh()).collect();
            let fwd = json!({"items": many.iter().map(|c| request(c)).collect::<Vec<_>>()});
            let rev = json!({"items": many.iter().rev().map(|c| request(c)).collect::<Vec<_>>()});
            let (ra, rb) = tokio::join!(
                sf_a.post("/v1/tokens/batch", &fwd),
                sf_b.post("/v1/tokens/batch", &rev)
            );
            assert_eq!(
                (ra.status, rb.status),
                (200, 200),
                "round {round}: {} {}",
                ra.text(),
                rb.text()
            );
            let (ja, jb) = (ra.json(), rb.json());
            let (ta, tb) = (
                ja["results"].as_array().unwrap(),
                jb["results"].as_array().unwrap(),
            );
            for (i, card) in many.iter().enumerate() {
                let j = many.len() - 1 - i;
                assert!(
                    ta[i]["token"].is_string() && ta[i]["token"] == tb[j]["token"],
                    "round {round}: two tokens for {}",
                    cards::masked(card)
                );
            }
        }

        // A token deleted, then detokenized: not found, on both nodes.
        let e = cards::fresh();
        let r = sf_a.tokenize(&e).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let t = r.json()["token"].as_str().unwrap().to_owned();
        let del = sf_a.delete(&format!("/v1/tokens/{t}")).await;
        assert!(del.status == 204 || del.status == 200, "{}", del.text());
        for n in [&a, &b] {
            let r = v.client(n.addr, "payments").detokenize(&t, "check").await;
            assert_eq!(r.status, 404, "{}", r.text());
        }

        // Every row sealed is counted once, whichever node sealed it (each
        // node counts in rows of its own): 4 + 1 + 5 × 40 + 1 rows were made,
        // one of them deleted since.
        let out = v
            .run(&["keys", "list", "--json"], true, Duration::from_secs(60))
            .await;
        assert!(out.success(), "{}", out.stderr);
        let keys: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let v1 = &keys[0];
        assert_eq!(
            (
                v1["version"].as_u64(),
                v1["encryptions"].as_i64(),
                v1["records"].as_i64()
            ),
            (Some(1), Some(206), Some(205)),
            "{keys}"
        );

        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}
