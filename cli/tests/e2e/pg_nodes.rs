//! Several `panvault serve` nodes on one PostgreSQL database, with the real binary
//! and a real server the harness starts: a card tokenized on one node detokenizes
//! on the other at once; the same card sent to both at the same moment yields one
//! token; a key rotation made from the CLI is followed by both (the next tokenize
//! on each is sealed under the new version: each writer batch checks the active
//! version in the database under the shared key lock); the audit log verifies
//! afterwards. No card number is printed (messages show masked numbers).

use std::time::{Duration, Instant};

use crate::util::postgres::PgServer;
use crate::util::{self, BinVault, Client, ServeProcess, cards};

const LIMIT: Duration = Duration::from_secs(60);

/// Tokenizes `card` on `sf`, retrying a 503 for up to 10 s; (status, token, key version).
async fn tokenize(sf: &Client, card: &str) -> (u16, String, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = sf.tokenize(card).await;
        if r.status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert!(
            r.status == 201 || r.status == 200,
            "tokenize of {}: {} {}",
            cards::masked(card),
            r.status,
            r.text()
        );
        let j = r.json();
        return (
            r.status,
            j["token"].as_str().unwrap().to_owned(),
            j["key_version"].as_u64().unwrap(),
        );
    }
}

async fn assert_detokenizes(payments: &Client, token: &str, card: &str) {
    let d = payments.detokenize(token, "check").await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert!(
        d.json()["card"]["number"] == card,
        "detokenized number differs from {}",
        cards::masked(card)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_share_tokens_dedup_across_nodes_and_follow_a_key_rotation() {
    let Some(pg) =
        PgServer::start("pg_nodes_share_tokens_dedup_across_nodes_and_follow_a_key_rotation")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        assert!(!v.db().exists(), "the vault must not be in SQLite");
        let a = ServeProcess::start(&v).await.unwrap();
        let b = ServeProcess::start(&v).await.unwrap();
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let (pay_a, pay_b) = (v.client(a.addr, "payments"), v.client(b.addr, "payments"));

        // Tokenized on A, detokenized on B at once (and the other way round).
        let card = cards::fresh();
        let (_, token, v1) = tokenize(&sf_a, &card).await;
        assert_eq!(v1, 1);
        assert_detokenizes(&pay_b, &token, &card).await;
        let card2 = cards::fresh();
        let (_, token2, _) = tokenize(&sf_b, &card2).await;
        assert_detokenizes(&pay_a, &token2, &card2).await;
        // B's dedup finds A's row.
        let (status, again, _) = tokenize(&sf_b, &card).await;
        assert_eq!((status, again.as_str()), (200, token.as_str()));
        // Metadata (sealed on PostgreSQL) reads back on the other node.
        let r = sf_a
            .post(
                "/v1/tokens",
                &serde_json::json!({"card": {"number": card2, "exp_month": 12,
                    "exp_year": util::this_year() + 4}, "metadata": {"order": "A-1"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let m = sf_b.get(&format!("/v1/tokens/{token2}")).await;
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(m.json()["metadata"]["order"], "A-1", "{}", m.text());

        // The same card on both nodes at the same moment: one token, every round.
        for _ in 0..25 {
            let card = cards::fresh();
            let (ra, rb) = tokio::join!(tokenize(&sf_a, &card), tokenize(&sf_b, &card));
            assert_eq!(ra.1, rb.1, "two tokens for {}", cards::masked(&card));
            let mut statuses = [ra.0, rb.0];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 201], "one created, one found");
        }

        // A rotation from the CLI: the next tokenize on each node seals under v2
        // (checked inside the writer batch, not after a reload interval).
        let out = v.run(&["keys", "rotate"], true, LIMIT).await;
        assert!(out.success(), "keys rotate: {}", out.stderr);
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            let (_, t, version) = tokenize(sf, &card).await;
            assert_eq!(version, 2, "a node sealed under a key no longer active");
            assert_detokenizes(&pay_a, &t, &card).await;
            assert_detokenizes(&pay_b, &t, &card).await;
        }
        // Tokens sealed under v1 still open on both nodes.
        assert_detokenizes(&pay_a, &token, &card).await;
        assert_detokenizes(&pay_b, &token, &card).await;

        // One audit log for both nodes, verified with the public key alone.
        let out = v.run(&["audit", "verify"], false, LIMIT).await;
        assert!(
            out.success(),
            "audit verify: {}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(a.terminate().await.success());
        assert!(b.terminate().await.success());
        let out = v.run(&["audit", "verify"], false, LIMIT).await;
        assert!(
            out.success(),
            "audit verify: {}\n{}",
            out.stdout,
            out.stderr
        );
    })
    .await;
}
