//! Dedup per card and subject, updates on a hit, bin_last4 tokens scoped to their
//! tenant, and a detokenize that races an erasure (the library, no network).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use panvault_vault::service::{EraseTarget, VaultOptions};
use panvault_vault::{
    AccessContext, CardholderName, TokenFormat, TokenizeRequest, Vault, VaultError,
};
use serde_json::json;

mod common;
use common::{init, pass, rt};

fn ctx() -> AccessContext {
    common::ctx_of("test")
}

const CARD: &str = "4242424242424242";

fn req(v: &Vault, number: &str, subject: Option<&str>) -> TokenizeRequest {
    let mut r = TokenizeRequest::new(number, 12, 2031, v.today()).unwrap();
    r.subject = subject.map(str::to_owned);
    r
}

/// `(outcome, details)` of every tokenize event of `token`, oldest first.
fn tokenize_events(dir: &Path, token: &str) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(dir.join("vault.db")).unwrap();
    let mut s = conn
        .prepare(
            "SELECT outcome, details FROM audit_events WHERE action = 'tokenize' AND token = ?1 \
             ORDER BY seq",
        )
        .unwrap();
    s.query_map([token], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Two customers of one shop holding the same card get a token each, and each
/// customer's erasure removes exactly their own. (A hit on the card alone handed
/// the second customer the first one's token, and erasing the second erased
/// nothing while their card stayed.)
#[test]
fn one_card_two_subjects_two_tokens_each_erased_by_its_own_subject() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    rt().block_on(async {
        let a = v
            .tokenize("shop", req(&v, CARD, Some("cust_a")), &ctx())
            .await
            .unwrap();
        let b = v
            .tokenize("shop", req(&v, CARD, Some("cust_b")), &ctx())
            .await
            .unwrap();
        let anonymous = v
            .tokenize("shop", req(&v, CARD, None), &ctx())
            .await
            .unwrap();
        assert!(!b.deduplicated && !anonymous.deduplicated);
        assert_ne!(a.token, b.token);
        assert_ne!(anonymous.token, a.token);
        assert_ne!(anonymous.token, b.token);
        assert_eq!(b.subject.as_deref(), Some("cust_b"));
        // Each subject's own token comes back.
        for (subject, token) in [
            (Some("cust_a"), &a.token),
            (Some("cust_b"), &b.token),
            (None, &anonymous.token),
        ] {
            let again = v
                .tokenize("shop", req(&v, CARD, subject), &ctx())
                .await
                .unwrap();
            assert!(again.deduplicated);
            assert_eq!(&again.token, token);
            assert_eq!(again.subject.as_deref(), subject);
        }
        assert_eq!(v.dedup_entries().await.unwrap(), 3);

        let erased = v
            .erase("shop", EraseTarget::Subject("cust_b".into()), &ctx())
            .await
            .unwrap();
        assert_eq!(erased.receipt.tokens_erased, 1);
        assert!(matches!(
            v.detokenize("shop", &b.token, "check", &ctx()).await,
            Err(VaultError::NotFound)
        ));
        for t in [&a.token, &anonymous.token] {
            let card = v.detokenize("shop", t, "check", &ctx()).await.unwrap();
            assert_eq!(card.card.pan.expose_digits(), CARD);
        }
        assert_eq!(v.dedup_entries().await.unwrap(), 2);
        // cust_b tokenizing again gets a new token, not cust_a's.
        let b2 = v
            .tokenize("shop", req(&v, CARD, Some("cust_b")), &ctx())
            .await
            .unwrap();
        assert!(!b2.deduplicated);
        assert!(b2.token != a.token && b2.token != b.token);
    });
    v.shutdown();
}

/// The same card for the same subject with a later expiry, a new name, metadata
/// and a TTL updates the stored record (same token, new values, audited); an
/// earlier expiry is not taken.
#[test]
fn a_hit_for_the_same_subject_updates_the_record() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    rt().block_on(async {
        let mut first = req(&v, CARD, Some("cust_a"));
        first.card.name = Some(CardholderName::parse("A OLDNAME").unwrap());
        first.metadata = Some(json!({"order": "1"}).as_object().unwrap().clone());
        let first = v.tokenize("shop", first, &ctx()).await.unwrap();
        assert_eq!(first.card.exp_year, 2031);

        // Nothing new: a plain hit changes nothing.
        let plain = v
            .tokenize("shop", req(&v, CARD, Some("cust_a")), &ctx())
            .await
            .unwrap();
        assert!(plain.deduplicated && plain.updated.is_empty());
        assert_eq!(
            plain.metadata, first.metadata,
            "a missing field keeps its value"
        );

        let mut newer = TokenizeRequest::new(CARD, 3, 2033, v.today()).unwrap();
        newer.subject = Some("cust_a".into());
        newer.card.name = Some(CardholderName::parse("A NEWNAME").unwrap());
        newer.metadata = Some(json!({"order": "2"}).as_object().unwrap().clone());
        newer.ttl_seconds = Some(86_400);
        let updated = v.tokenize("shop", newer, &ctx()).await.unwrap();
        assert!(updated.deduplicated);
        assert_eq!(updated.token, first.token);
        assert_eq!(
            updated.updated,
            ["expiry", "name", "metadata", "expires_at"]
        );
        assert_eq!((updated.card.exp_month, updated.card.exp_year), (3, 2033));
        assert_eq!(updated.metadata.as_ref().unwrap()["order"], "2");
        assert!(updated.expires_at.is_some());

        // What a later read sees.
        let stored = v.metadata("shop", &first.token, &ctx()).await.unwrap();
        assert_eq!((stored.card.exp_month, stored.card.exp_year), (3, 2033));
        assert_eq!(stored.metadata, updated.metadata);
        assert_eq!(stored.expires_at, updated.expires_at);
        let card = v
            .detokenize("shop", &first.token, "check", &ctx())
            .await
            .unwrap();
        assert_eq!(card.card.name.as_ref().unwrap().expose(), "A NEWNAME");
        assert_eq!((card.expiry.month(), card.expiry.year()), (3, 2033));
        assert_eq!(card.card.pan.expose_digits(), CARD);

        // An earlier expiry does not replace the later one.
        let mut older = TokenizeRequest::new(CARD, 12, 2031, v.today()).unwrap();
        older.subject = Some("cust_a".into());
        let older = v.tokenize("shop", older, &ctx()).await.unwrap();
        assert!(older.deduplicated && older.updated.is_empty());
        assert_eq!((older.card.exp_month, older.card.exp_year), (3, 2033));

        // Each request was audited; the one that changed the record says what.
        let events = tokenize_events(dir.path(), &first.token);
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(|(o, _)| o == "success"));
        let details = |i: usize| events[i].1.clone().unwrap_or_default();
        assert!(
            details(2).ends_with(" updated=expiry,name,metadata,expires_at"),
            "{}",
            details(2)
        );
        assert!(!details(1).contains("updated=") && !details(3).contains("updated="));
    });
    v.shutdown();
}

/// `bin_last4` tokens are unique within a tenant: a 12-digit card has 90 of them,
/// and using them all up in one tenant leaves another tenant's untouched.
#[test]
fn bin_last4_tokens_of_one_card_are_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let card = "424242424242"; // 12 digits: 2 free middle digits
    let bin_last4 = |v: &Vault| {
        let mut r = req(v, card, None);
        r.format = TokenFormat::BinLast4;
        r.force_new = true;
        r
    };
    rt().block_on(async {
        let mut taken = std::collections::HashSet::new();
        for _round in 0..200 {
            let items = (0..30).map(|_| Ok(bin_last4(&v))).collect();
            let done = v.tokenize_batch("shop-a", items, &ctx()).await.unwrap();
            taken.extend(done.into_iter().flatten().map(|info| info.token));
            if taken.len() == 90 {
                break;
            }
        }
        assert_eq!(taken.len(), 90, "the card's bin_last4 space in shop-a");
        let full = v.tokenize("shop-a", bin_last4(&v), &ctx()).await;
        assert!(
            matches!(&full, Err(VaultError::InvalidRequest { field, .. }) if field == "format"),
            "{full:?}"
        );
        // Another tenant still gets one, and can reach it; shop-a's same-looking
        // token is not shop-b's.
        let b = v.tokenize("shop-b", bin_last4(&v), &ctx()).await.unwrap();
        assert!(
            taken.contains(&b.token),
            "all 90 values are taken in shop-a"
        );
        let back = v
            .detokenize("shop-b", &b.token, "check", &ctx())
            .await
            .unwrap();
        assert_eq!(back.card.pan.expose_digits(), card);
        v.delete("shop-b", &b.token, &ctx()).await.unwrap();
        v.detokenize("shop-a", &b.token, "check", &ctx())
            .await
            .unwrap();
        v.metadata("shop-a", &b.token, &ctx()).await.unwrap();
    });
    v.shutdown();
}

/// A detokenize reads its row before its event is committed. An erasure that
/// commits in between must win: the card is not released, the event says
/// `not_found`. The erasure is made to land exactly there by the clock: for a
/// token without an expiry the vault reads it once, when it builds the event,
/// after the read and the decryption. (Before the fix this test saw the card.)
#[test]
fn an_erasure_between_read_and_event_keeps_the_card() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let vault: Arc<OnceLock<Vault>> = Arc::new(OnceLock::new());
    // Clock reads left before the erasure runs (0: never).
    let countdown = Arc::new(AtomicUsize::new(0));
    let erased = Arc::new(Mutex::new(None::<u64>));
    let clock = {
        let (vault, countdown, erased) = (vault.clone(), countdown.clone(), erased.clone());
        Arc::new(move || {
            let fire = countdown
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok_and(|n| n == 1);
            if fire {
                // Through the vault's own writer, from another thread (as an
                // HTTP erase would come from another connection).
                let v = vault.get().unwrap().clone();
                let n = std::thread::spawn(move || {
                    rt().block_on(v.erase("shop", EraseTarget::Subject("cust_a".into()), &ctx()))
                        .unwrap()
                        .receipt
                        .tokens_erased
                })
                .join()
                .unwrap();
                *erased.lock().unwrap() = Some(n);
            }
            time::OffsetDateTime::now_utc()
        })
    };
    let opts = VaultOptions {
        clock,
        ..VaultOptions::default()
    };
    vault
        .set(Vault::open_with(dir.path(), &pass(), opts).unwrap())
        .unwrap();
    let v = vault.get().unwrap().clone();
    rt().block_on(async {
        let a = v
            .tokenize("shop", req(&v, CARD, Some("cust_a")), &ctx())
            .await
            .unwrap();
        // Unarmed, the card comes back.
        v.detokenize("shop", &a.token, "check", &ctx())
            .await
            .unwrap();
        countdown.store(1, Ordering::SeqCst);
        let raced = v.detokenize("shop", &a.token, "check", &ctx()).await;
        assert_eq!(
            *erased.lock().unwrap(),
            Some(1),
            "the erasure ran during the detokenize and erased the card"
        );
        assert!(
            matches!(raced, Err(VaultError::NotFound)),
            "a card was released after its erasure committed"
        );
        let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        let outcomes: Vec<(String, Option<String>)> = conn
            .prepare(
                "SELECT outcome, code FROM audit_events WHERE action = 'detokenize' ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            outcomes,
            [
                ("success".to_owned(), None),
                ("denied".to_owned(), Some("not_found".to_owned()))
            ]
        );
    });
    v.shutdown();
}
