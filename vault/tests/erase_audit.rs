//! Erasure, retention and the audit log as the vault writes it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::type_complexity
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use panvault_audit::log::{PublicKey, verify, verify_receipt};
use panvault_vault::service::{EraseTarget, VaultOptions};
use panvault_vault::{AccessContext, Admin, TokenizeRequest, Vault, VaultError};

mod common;
use common::{contains, full_ctx as ctx, init, pass, rt};

fn verify_log(dir: &Path) {
    let key = PublicKey::read_from(&dir.join("audit-signing.pub")).unwrap();
    let conn = panvault_audit::log::open_read_only(&dir.join("vault.db")).unwrap();
    let report = verify(&conn, &key, None).unwrap();
    assert!(
        report.problem.is_none(),
        "audit log broken: {:?}",
        report.problem
    );
    assert!(report.events > 0);
}

#[test]
fn erase_subject_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let rt = rt();
    let alice = ["4242424242424242", "5555555555554444", "378282246310005"];
    let bob = ["6011111111111117", "3566002020360505"];
    let (a_tokens, b_tokens) = rt.block_on(async {
        let mut a = Vec::new();
        for c in alice {
            let mut r = TokenizeRequest::new(c, 12, 2031, v.today()).unwrap();
            r.subject = Some("cust_alice".into());
            a.push(v.tokenize("shop", r, &ctx()).await.unwrap().token);
        }
        let mut b = Vec::new();
        for c in bob {
            let mut r = TokenizeRequest::new(c, 12, 2031, v.today()).unwrap();
            r.subject = Some("cust_bob".into());
            b.push(v.tokenize("shop", r, &ctx()).await.unwrap().token);
        }
        (a, b)
    });
    // ciphertexts of alice's rows, to look for afterwards
    let ciphertexts: Vec<Vec<u8>> = {
        let c = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        a_tokens
            .iter()
            .map(|t| {
                c.query_row("SELECT ciphertext FROM cards WHERE token = ?1", [t], |r| {
                    r.get(0)
                })
                .unwrap()
            })
            .collect()
    };
    assert_eq!(rt.block_on(v.dedup_entries()).unwrap(), 5);
    let erasure = rt
        .block_on(v.erase("shop", EraseTarget::Subject("cust_alice".into()), &ctx()))
        .unwrap();
    assert_eq!(erasure.receipt.tokens_erased, 3);
    // Nothing of alice's cards is left in memory either: their dedup entries
    // (keyed fingerprints) went with the rows.
    assert_eq!(rt.block_on(v.dedup_entries()).unwrap(), 2);
    assert!(erasure.wal_scrubbed);
    rt.block_on(async {
        for t in &a_tokens {
            assert!(matches!(
                v.detokenize("shop", t, "x", &ctx()).await,
                Err(VaultError::NotFound)
            ));
        }
        for t in &b_tokens {
            v.detokenize("shop", t, "x", &ctx()).await.unwrap();
        }
    });
    for f in ["vault.db", "vault.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.path().join(f)) else {
            continue;
        };
        for c in alice {
            assert!(!contains(&bytes, c.as_bytes()), "a card number in {f}");
        }
        for ct in &ciphertexts {
            assert!(
                !contains(&bytes, &ct[..24]),
                "an erased ciphertext is still in {f}"
            );
        }
    }
    // receipt verifies; a modified one does not
    let key = PublicKey::read_from(&dir.path().join("audit-signing.pub")).unwrap();
    verify_receipt(&erasure.receipt, &key).unwrap();
    let mut forged = erasure.receipt.clone();
    forged.tokens_erased = 2;
    assert!(verify_receipt(&forged, &key).is_err());
    // no subject id in the clear in the audit log
    let conn = panvault_audit::log::open_read_only(&dir.path().join("vault.db")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_events WHERE details LIKE '%cust_alice%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    // erasing nobody is fine
    let none = rt
        .block_on(v.erase("shop", EraseTarget::Subject("cust_nobody".into()), &ctx()))
        .unwrap();
    assert_eq!(none.receipt.tokens_erased, 0);
    v.shutdown();
    verify_log(dir.path());
}

#[test]
fn retention_with_a_controlled_clock() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let now = Arc::new(AtomicI64::new(
        time::macros::datetime!(2026-01-15 12:00 UTC).unix_timestamp(),
    ));
    let n2 = now.clone();
    let clock: panvault_vault::Clock = Arc::new(move || {
        time::OffsetDateTime::from_unix_timestamp(n2.load(Ordering::SeqCst)).unwrap()
    });
    let v = Vault::open_with(
        dir.path(),
        &pass(),
        VaultOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = rt();
    let (jan, jun, ttl) = rt.block_on(async {
        let jan = v
            .tokenize(
                "s",
                TokenizeRequest::new("4242424242424242", 1, 2026, v.today()).unwrap(),
                &ctx(),
            )
            .await
            .unwrap()
            .token;
        let jun = v
            .tokenize(
                "s",
                TokenizeRequest::new("5555555555554444", 6, 2026, v.today()).unwrap(),
                &ctx(),
            )
            .await
            .unwrap()
            .token;
        let mut r = TokenizeRequest::new("378282246310005", 12, 2030, v.today()).unwrap();
        r.ttl_seconds = Some(3600);
        let ttl = v.tokenize("s", r, &ctx()).await.unwrap().token;
        (jan, jun, ttl)
    });
    // two hours later the TTL token is 404 even before any purge
    now.fetch_add(7200, Ordering::SeqCst);
    assert!(matches!(
        rt.block_on(v.metadata("s", &ttl, &ctx())),
        Err(VaultError::NotFound)
    ));
    // May 2026: January card + 90 days grace is past
    now.store(
        time::macros::datetime!(2026-05-15 00:00 UTC).unix_timestamp(),
        Ordering::SeqCst,
    );
    let dry = rt.block_on(v.purge_retention(90, true, &ctx())).unwrap();
    assert_eq!((dry.past_expiry, dry.past_ttl, dry.deleted), (1, 1, false));
    assert_eq!(v.token_count().unwrap(), 3, "dry run changed nothing");
    assert_eq!(rt.block_on(v.dedup_entries()).unwrap(), 3);
    let done = rt.block_on(v.purge_retention(90, false, &ctx())).unwrap();
    assert!(done.deleted && done.audit_seq.is_some());
    assert_eq!(v.token_count().unwrap(), 1);
    assert_eq!(
        rt.block_on(v.dedup_entries()).unwrap(),
        1,
        "purged cards are forgotten by the dedup index too"
    );
    assert!(rt.block_on(v.metadata("s", &jan, &ctx())).is_err());
    rt.block_on(v.metadata("s", &jun, &ctx())).unwrap();
    v.shutdown();
    // the CLI path: Admin purge later in the year
    now.store(
        time::macros::datetime!(2026-10-01 00:00 UTC).unix_timestamp(),
        Ordering::SeqCst,
    );
    let mut admin = Admin::open(dir.path(), &pass(), clock).unwrap();
    let r = admin
        .purge_retention(
            &AccessContext {
                actor: "admin:test".into(),
                ..Default::default()
            },
            90,
            false,
        )
        .unwrap();
    assert_eq!(r.past_expiry, 1);
    drop(admin);
    verify_log(dir.path());
}

#[test]
fn detokenize_fails_closed_when_the_audit_log_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let rt = rt();
    let t = rt
        .block_on(v.tokenize(
            "s",
            TokenizeRequest::new("4242424242424242", 12, 2031, v.today()).unwrap(),
            &ctx(),
        ))
        .unwrap();
    let other = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    other
        .execute_batch("CREATE TRIGGER block_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END;")
        .unwrap();
    let err = rt
        .block_on(v.detokenize("s", &t.token, "charge", &ctx()))
        .unwrap_err();
    assert!(matches!(err, VaultError::AuditUnavailable(_)), "{err}");
    // writes fail closed too, and leave nothing behind
    let before = v.token_count().unwrap();
    assert!(
        rt.block_on(v.tokenize(
            "s",
            TokenizeRequest::new("5555555555554444", 12, 2031, v.today()).unwrap(),
            &ctx()
        ))
        .is_err()
    );
    assert_eq!(v.token_count().unwrap(), before);
    other.execute_batch("DROP TRIGGER block_audit;").unwrap();
    let card = rt
        .block_on(v.detokenize("s", &t.token, "charge", &ctx()))
        .unwrap();
    assert_eq!(card.card.pan.expose_digits(), "4242424242424242");
    v.shutdown();
    verify_log(dir.path());
}

#[test]
fn every_operation_leaves_an_event_with_the_10_2_2_fields() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let rt = rt();
    rt.block_on(async {
        let t = v
            .tokenize(
                "s",
                TokenizeRequest::new("4242424242424242", 12, 2031, v.today()).unwrap(),
                &ctx(),
            )
            .await
            .unwrap();
        v.metadata("s", &t.token, &ctx()).await.unwrap();
        v.detokenize("s", &t.token, "charge order 1", &ctx())
            .await
            .unwrap();
        let _ = v.detokenize("other", &t.token, "peek", &ctx()).await;
        v.delete("s", &t.token, &ctx()).await.unwrap();
    });
    v.shutdown();
    let conn = panvault_audit::log::open_read_only(&dir.path().join("vault.db")).unwrap();
    let rows: Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = {
        let mut s = conn.prepare("SELECT action, outcome, code, purpose, request_id, peer FROM audit_events ORDER BY seq").unwrap();
        s.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "init",
            "tokenize",
            "token.read",
            "detokenize",
            "detokenize",
            "token.delete"
        ]
    );
    assert_eq!(rows[3].3.as_deref(), Some("charge order 1"));
    assert_eq!(
        (rows[4].1.as_str(), rows[4].2.as_deref()),
        ("denied", Some("not_found"))
    );
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.4.as_deref() == Some("req-1") && r.5.as_deref() == Some("127.0.0.1:5555"))
    );
    let export = {
        let mut out = Vec::new();
        panvault_audit::log::export_jsonl(&conn, 0, &mut out).unwrap();
        out
    };
    assert!(!contains(&export, b"4242424242424242"));
    verify_log(dir.path());
}

/// `(open, completed, completed with tokens erased)` erasure requests.
fn requests(dir: &Path) -> (i64, i64, i64) {
    rusqlite::Connection::open(dir.join("vault.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FILTER (WHERE completed_at IS NULL), \
             count(*) FILTER (WHERE completed_at >= requested_at), \
             coalesce(sum(tokens_erased), 0) FROM erasure_requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

#[test]
fn the_cli_records_an_erasure_request_as_it_arrives_and_completes_it_when_done() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let token = rt().block_on(async {
        let mut r = TokenizeRequest::new("4242424242424242", 12, 2031, v.today()).unwrap();
        r.subject = Some("cust_1".into());
        v.tokenize("shop", r, &ctx()).await.unwrap().token
    });
    v.shutdown();
    drop(v);
    let mut admin = Admin::open(dir.path(), &pass(), panvault_vault::system_clock()).unwrap();
    admin
        .erase(&ctx(), "shop", &EraseTarget::Subject("cust_1".into()))
        .unwrap();
    assert_eq!(requests(dir.path()), (0, 1, 1));
    // A token erased already: nothing held, the request is done at once.
    let again = admin
        .erase(&ctx(), "shop", &EraseTarget::Token(token.to_string()))
        .unwrap();
    assert_eq!(again.receipt.tokens_erased, 0);
    assert_eq!(requests(dir.path()), (0, 2, 1));
    // Not a token at all: not found, and no request is left behind.
    let bad = admin.erase(&ctx(), "shop", &EraseTarget::Token("nope".into()));
    assert!(matches!(bad, Err(VaultError::NotFound)), "{bad:?}");
    assert_eq!(requests(dir.path()), (0, 2, 1));
    // An erasure that cannot be audited is refused; its request stays open for the
    // erasure-deadline check to see.
    let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END",
    )
    .unwrap();
    assert!(
        admin
            .erase(&ctx(), "shop", &EraseTarget::Subject("cust_2".into()))
            .is_err()
    );
    conn.execute_batch("DROP TRIGGER no_audit").unwrap();
    assert_eq!(requests(dir.path()), (1, 2, 1));
    drop(admin);
    verify_log(dir.path());
}
