//! The vault library end to end (no network): tokenize, dedup, detokenize, tenants,
//! tampering at rest, no PAN on disk, wrong passphrase, key rotation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::type_complexity
)]

use std::path::Path;

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::{
    AccessContext, Admin, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, VaultError,
    system_clock,
};
use proptest::prelude::*;

mod common;
use common::{contains, raw, rt};

fn ctx() -> AccessContext {
    common::ctx_of("test")
}

const PASS: &str = "correct horse battery staple";

fn unlock() -> Unlock {
    common::pass_of(PASS)
}

fn new_vault(dir: &Path) -> Vault {
    common::init_with(dir, unlock());
    Vault::open(dir, &unlock()).unwrap()
}

fn req(v: &Vault, number: &str) -> TokenizeRequest {
    TokenizeRequest::new(number, 12, 2031, v.today()).unwrap()
}

fn valid_pan() -> impl Strategy<Value = String> {
    (12usize..=19, proptest::collection::vec(0u8..10, 19))
        .prop_map(|(len, ds)| panvault_audit::card::testing::complete(&ds[..len - 1]).unwrap())
}

#[test]
fn round_trip_arbitrary_cards_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let rt = rt();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(
            &(valid_pan(), "[A-Za-z0-9._-]{1,64}", any::<bool>()),
            |(pan, tenant, bin_last4)| {
                rt.block_on(async {
                    let mut r = req(&v, &pan);
                    if bin_last4 {
                        r.format = panvault_vault::TokenFormat::BinLast4;
                    }
                    r.force_new = true;
                    let info = v.tokenize(&tenant, r, &ctx()).await.unwrap();
                    let back = v
                        .detokenize(&tenant, &info.token, "test", &ctx())
                        .await
                        .unwrap();
                    prop_assert_eq!(back.card.pan.expose_digits(), pan.as_str());
                    prop_assert_eq!(info.card.last4.as_str(), &pan[pan.len() - 4..]);
                    Ok(())
                })
            },
        )
        .unwrap();
    v.shutdown();
}

#[test]
fn dedup_per_tenant_and_force_new() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    rt().block_on(async {
        let a = v
            .tokenize("shop-a", req(&v, "4242424242424242"), &ctx())
            .await
            .unwrap();
        assert!(!a.deduplicated);
        let again = v
            .tokenize("shop-a", req(&v, "4242 4242 4242 4242"), &ctx())
            .await
            .unwrap();
        assert!(again.deduplicated);
        assert_eq!(again.token, a.token);
        let b = v
            .tokenize("shop-b", req(&v, "4242424242424242"), &ctx())
            .await
            .unwrap();
        assert!(!b.deduplicated);
        assert_ne!(b.token, a.token);
        assert_ne!(
            b.fingerprint, a.fingerprint,
            "fingerprints must differ across tenants"
        );
        let mut r = req(&v, "4242424242424242");
        r.force_new = true;
        let c = v.tokenize("shop-a", r, &ctx()).await.unwrap();
        assert_ne!(c.token, a.token);
        // deleted card: dedup gives a new token, not a dangling one
        v.delete("shop-a", &a.token, &ctx()).await.unwrap();
        v.delete("shop-a", &c.token, &ctx()).await.unwrap();
        let d = v
            .tokenize("shop-a", req(&v, "4242424242424242"), &ctx())
            .await
            .unwrap();
        assert!(!d.deduplicated);
        assert!(matches!(
            v.detokenize("shop-a", &a.token, "x", &ctx()).await,
            Err(VaultError::NotFound)
        ));
    });
    v.shutdown();
}

#[test]
fn dedup_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let t = rt()
        .block_on(v.tokenize("s", req(&v, "5555555555554444"), &ctx()))
        .unwrap();
    v.shutdown();
    drop(v);
    let v = Vault::open(dir.path(), &unlock()).unwrap();
    let again = rt()
        .block_on(v.tokenize("s", req(&v, "5555555555554444"), &ctx()))
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.token, t.token);
    v.shutdown();
}

#[test]
fn other_tenants_token_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    rt().block_on(async {
        let a = v
            .tokenize("shop-a", req(&v, "378282246310005"), &ctx())
            .await
            .unwrap();
        assert!(matches!(
            v.metadata("shop-b", &a.token, &ctx()).await,
            Err(VaultError::NotFound)
        ));
        assert!(matches!(
            v.detokenize("shop-b", &a.token, "x", &ctx()).await,
            Err(VaultError::NotFound)
        ));
        assert!(matches!(
            v.delete("shop-b", &a.token, &ctx()).await,
            Err(VaultError::NotFound)
        ));
        // still there for its owner
        let m = v.metadata("shop-a", &a.token, &ctx()).await.unwrap();
        assert_eq!(m.card.brand, "amex");
        assert_eq!(m.card.bin, "378282");
        assert!(matches!(
            v.metadata("shop-a", "tok_nope", &ctx()).await,
            Err(VaultError::NotFound)
        ));
    });
    v.shutdown();
}

#[test]
fn tampering_at_rest_fails_with_one_opaque_error() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let (a, b) = rt().block_on(async {
        let a = v
            .tokenize("shop", req(&v, "4242424242424242"), &ctx())
            .await
            .unwrap();
        let b = v
            .tokenize("shop", req(&v, "5555555555554444"), &ctx())
            .await
            .unwrap();
        (a, b)
    });
    let db = raw(dir.path());
    // swap ciphertexts (and nonces) of two rows
    db.execute_batch(&format!(
        "UPDATE cards SET ciphertext = (SELECT ciphertext FROM cards WHERE token = '{b}'), nonce = (SELECT nonce FROM cards WHERE token = '{b}') WHERE token = '{a}'",
        a = a.token,
        b = b.token
    ))
    .unwrap();
    let err = rt()
        .block_on(v.detokenize("shop", &a.token, "x", &ctx()))
        .unwrap_err();
    assert!(matches!(err, VaultError::Decryption), "{err}");
    assert_eq!(err.to_string(), "record could not be decrypted");
    // The access is logged as what the caller got: an error, not a success.
    let (outcome, code): (String, Option<String>) = db
        .query_row(
            "SELECT outcome, code FROM audit_events WHERE action = 'detokenize' AND token = ?1 \
             ORDER BY seq DESC LIMIT 1",
            [&a.token],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (outcome.as_str(), code.as_deref()),
        ("error", Some("decryption_failed"))
    );
    // relabel the other row's key version (a v2 exists after rotation)
    let mut admin = Admin::open(dir.path(), &unlock(), system_clock()).unwrap();
    admin.rotate(&ctx()).unwrap();
    v.refresh_keys().unwrap();
    db.execute(
        "UPDATE cards SET key_version = 2 WHERE token = ?1",
        [&b.token],
    )
    .unwrap();
    assert!(matches!(
        rt().block_on(v.detokenize("shop", &b.token, "x", &ctx())),
        Err(VaultError::Decryption)
    ));
    db.execute(
        "UPDATE cards SET key_version = 1, tenant = 'other' WHERE token = ?1",
        [&b.token],
    )
    .unwrap();
    assert!(matches!(
        rt().block_on(v.detokenize("other", &b.token, "x", &ctx())),
        Err(VaultError::Decryption)
    ));
    v.shutdown();
}

#[test]
fn no_pan_in_database_or_wal_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let cards = [
        "4242424242424242",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3566002020360505",
    ];
    rt().block_on(async {
        for c in cards {
            let mut r = req(&v, c);
            r.card.name = Some(panvault_vault::CardholderName::parse("Jane Q Cardholder").unwrap());
            v.tokenize("shop", r, &ctx()).await.unwrap();
        }
    });
    // read while the WAL still holds the pages, then again after shutdown's checkpoint
    for phase in ["live", "after shutdown"] {
        for f in ["vault.db", "vault.db-wal"] {
            let Ok(bytes) = std::fs::read(dir.path().join(f)) else {
                continue;
            };
            for c in cards {
                assert!(
                    !contains(&bytes, c.as_bytes()),
                    "{phase}: a card number was found in {f}"
                );
            }
            assert!(
                !contains(&bytes, b"Jane Q Cardholder"),
                "{phase}: cardholder name in {f}"
            );
        }
        v.shutdown();
    }
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    v.shutdown();
    drop(v);
    let before = std::fs::read(dir.path().join("vault.db")).unwrap();
    let err = Vault::open(
        dir.path(),
        &Unlock::Passphrase(SecretText::new("wrong".into())),
    )
    .unwrap_err();
    assert!(matches!(err, VaultError::WrongSecret));
    assert!(!err.to_string().contains("wrong"));
    let err = Admin::open(
        dir.path(),
        &Unlock::Passphrase(SecretText::new("wrong".into())),
        system_clock(),
    )
    .unwrap_err();
    assert!(matches!(err, VaultError::WrongSecret));
    assert_eq!(before, std::fs::read(dir.path().join("vault.db")).unwrap());
    // and init refuses to overwrite
    let spec = SealSpec {
        unlock: unlock(),
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    assert!(matches!(
        Vault::init(dir.path(), &spec, &system_clock()),
        Err(VaultError::AlreadyInitialized(_))
    ));
}

#[test]
fn rotation_keeps_old_cards_readable() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let old = rt()
        .block_on(v.tokenize("s", req(&v, "4111111111111111"), &ctx()))
        .unwrap();
    assert_eq!(old.key_version, 1);
    let mut admin = Admin::open(dir.path(), &unlock(), system_clock()).unwrap();
    assert_eq!(admin.rotate(&ctx()).unwrap(), 2);
    assert!(v.refresh_keys().unwrap());
    let new = rt()
        .block_on(v.tokenize("s", req(&v, "5105105105105100"), &ctx()))
        .unwrap();
    assert_eq!(new.key_version, 2);
    let back = rt()
        .block_on(v.detokenize("s", &old.token, "x", &ctx()))
        .unwrap();
    assert_eq!(back.card.pan.expose_digits(), "4111111111111111");
    let keys = admin.list_keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].state.as_str(), keys[0].records, keys[0].encryptions),
        ("decrypt_only", 1, 1)
    );
    assert_eq!((keys[1].state.as_str(), keys[1].records), ("active", 1));
    v.shutdown();
}

#[test]
fn secret_bearing_types_print_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let t = rt()
        .block_on(v.tokenize("s", req(&v, "4242424242424242"), &ctx()))
        .unwrap();
    let d = rt()
        .block_on(v.detokenize("s", &t.token, "x", &ctx()))
        .unwrap();
    let printed = [
        format!("{d:?}"),
        format!("{:?}", d.card),
        format!("{}", d.card.pan),
        format!("{:?}", unlock()),
        format!("{v:?}"),
        format!("{:?}", req(&v, "4242424242424242")),
        format!(
            "{:?}",
            Admin::open(dir.path(), &unlock(), system_clock()).unwrap()
        ),
    ];
    for p in printed {
        assert!(!p.contains("4242424242424242"), "a card number was printed");
        assert!(!p.contains(PASS), "the passphrase was printed");
    }
    v.shutdown();
}

/// Another application's SQLite file in the vault's place, even one with its own
/// schema version, is refused by name before anything is written to it; a vault
/// carries panvault's `application_id`, and one made before the id existed (known
/// by its `meta` table) is stamped when next opened.
#[test]
fn foreign_sqlite_file_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vault.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE notes (x TEXT); PRAGMA user_version = 3;")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let err = Vault::open(dir.path(), &unlock()).unwrap_err().to_string();
    assert!(err.contains("another application"), "{err}");
    let err = Admin::open(dir.path(), &unlock(), system_clock())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another application"), "{err}");
    assert_eq!(before, std::fs::read(&db).unwrap());

    // A real vault has the id; a legacy one (id 0) still opens and gets it.
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    v.shutdown();
    drop(v);
    let app_id = |dir: &Path| -> i64 {
        rusqlite::Connection::open(dir.join("vault.db"))
            .unwrap()
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(app_id(dir.path()), 0x504E_5654);
    rusqlite::Connection::open(dir.path().join("vault.db"))
        .unwrap()
        .pragma_update(None, "application_id", 0)
        .unwrap();
    let v = Vault::open(dir.path(), &unlock()).unwrap();
    v.shutdown();
    drop(v);
    assert_eq!(app_id(dir.path()), 0x504E_5654);
}

#[test]
fn a_corrupted_stored_column_is_reported_not_served() {
    use panvault_vault::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let rt = rt();
    let mut r = req(&v, "4242424242424242");
    r.metadata = Some(serde_json::from_str(r#"{"order": "A-1"}"#).unwrap());
    let good = rt.block_on(v.tokenize("shop", r, &ctx())).unwrap();
    let db = raw(dir.path());
    let restore = "UPDATE cards SET exp_month = 12, exp_year = 2031, \
                   metadata = '{\"order\": \"A-1\"}', created_at = unixepoch()";
    for (column, corrupt) in [
        ("cards.exp_month", "exp_month = 300"),
        ("cards.exp_month", "exp_month = 13"),
        ("cards.exp_year", "exp_year = 70000"),
        ("cards.metadata", "metadata = 'not json 9'"),
        ("cards.metadata", "metadata = '[1, 2]'"),
        ("cards.created_at", "created_at = 9223372036854775807"),
    ] {
        db.execute_batch(restore).unwrap();
        db.execute_batch(&format!("UPDATE cards SET {corrupt}"))
            .unwrap();
        let err = rt
            .block_on(v.metadata("shop", &good.token, &ctx()))
            .unwrap_err();
        let VaultError::Store(StoreError::Corrupt(msg)) = &err else {
            panic!("{column}: expected a corrupt-row error, got {err}");
        };
        assert!(msg.contains(column), "{msg}");
        // The stored value is not echoed.
        for value in ["300", "13", "70000", "not json", "[1, 2]", "922337"] {
            assert!(!msg.contains(value), "{msg}");
        }
        // A dedup hit on the corrupted row is refused too, and changes nothing.
        let mut again = req(&v, "4242424242424242");
        again.expiry = panvault_vault::Expiry::new(1, 2032, v.today()).unwrap();
        let err = rt.block_on(v.tokenize("shop", again, &ctx())).unwrap_err();
        assert!(
            matches!(err, VaultError::Store(StoreError::Corrupt(_))),
            "{column}: {err}"
        );
        let year: i64 = db
            .query_row("SELECT exp_year FROM cards", [], |r| r.get(0))
            .unwrap();
        assert_ne!(year, 2032, "{column}: the corrupted row was updated");
    }
    // Restored, the row reads again.
    db.execute_batch(restore).unwrap();
    let info = rt
        .block_on(v.metadata("shop", &good.token, &ctx()))
        .unwrap();
    assert_eq!((info.card.exp_month, info.card.exp_year), (12, 2031));
    v.shutdown();
}

#[test]
fn inventory_of_a_vault_that_lost_its_id_fails_loudly() {
    // A vault without its `vault_id` row is damaged: its inventory must say so
    // rather than report an empty id as if it were one.
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let now = time::OffsetDateTime::now_utc();
    let inv = panvault_vault::service::inventory::Inventory::read(dir.path(), 30, now).unwrap();
    assert!(!inv.vault_id.is_empty());
    raw(dir.path())
        .execute("DELETE FROM meta WHERE key = 'vault_id'", [])
        .unwrap();
    let err = panvault_vault::service::inventory::Inventory::read(dir.path(), 30, now).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Store(panvault_vault::store::StoreError::Corrupt(_))
        ),
        "{err}"
    );
}
