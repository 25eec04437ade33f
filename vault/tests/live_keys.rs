//! Key changes while a vault is open (as a server holds it): nothing is ever sealed
//! under a key that is not active in the database, a reload that fails stops
//! tokenize instead of sealing with stale keys, `master rotate` waits for no server
//! (it refuses), and a new seal or share set is committed only after its shares are
//! stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::service::shamir::ShareFile;
use panvault_vault::{
    AccessContext, Admin, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, VaultError,
    system_clock,
};

mod common;
use common::{card, init, pass_of as pass, raw, rt};

fn ctx() -> AccessContext {
    common::ctx_of("admin:test")
}

fn tokenize(v: &Vault, i: u64) -> Result<panvault_vault::TokenInfo, VaultError> {
    rt().block_on(v.tokenize(
        "shop",
        TokenizeRequest::new(&card(i), 12, 2031, v.today()).unwrap(),
        &ctx(),
    ))
}

fn cards(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
        .unwrap()
}

/// The outcome and code of the newest tokenize event.
fn last_tokenize_event(db: &rusqlite::Connection) -> (String, Option<String>) {
    db.query_row(
        "SELECT outcome, code FROM audit_events WHERE action = 'tokenize' ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn tokenize_never_seals_under_a_key_that_is_no_longer_active() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    assert_eq!(tokenize(&v, 1).unwrap().key_version, 1);
    // Another process rotates, and the vault is not told: the epoch is put back,
    // so no refresh would notice.
    let db = raw(dir.path());
    let epoch: String = db
        .query_row("SELECT value FROM meta WHERE key = 'key_epoch'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    assert_eq!(admin.rotate(&ctx()).unwrap(), 2);
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'key_epoch'",
        [&epoch],
    )
    .unwrap();
    assert!(!v.refresh_keys().unwrap(), "the epoch says nothing changed");
    assert_eq!(v.active_key_version().unwrap(), 1);
    // The writer checks the database's active version inside its transaction and
    // seals under v2, which it loads itself: never under v1, and no 503 for a
    // rotation.
    assert_eq!(tokenize(&v, 2).unwrap().key_version, 2);
    assert_eq!(
        last_tokenize_event(&db),
        ("success".to_owned(), None::<String>)
    );
    // ...and the vault swaps the new keys in for its next call.
    assert_eq!(tokenize(&v, 3).unwrap().key_version, 2);
    assert_eq!(v.active_key_version().unwrap(), 2);
    let versions: Vec<u32> = db
        .prepare("SELECT key_version FROM cards ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(versions, [1, 2, 2]);
    v.shutdown();
}

#[test]
fn a_failed_key_reload_stops_tokenize_until_the_keys_load_again() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    let kept = tokenize(&v, 1).unwrap();
    // A key change this vault cannot load (its wrapped key no longer opens under
    // the root it holds, as after a root change).
    let db = raw(dir.path());
    let wrapped: Vec<u8> = db
        .query_row("SELECT wrapped FROM data_keys WHERE version = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut broken = wrapped.clone();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let bump =
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'key_epoch'";
    db.execute(
        "UPDATE data_keys SET wrapped = ?1 WHERE version = 1",
        [&broken],
    )
    .unwrap();
    db.execute(bump, []).unwrap();
    assert!(v.refresh_keys().is_err());
    let before = cards(&db);
    for i in 2..4 {
        let err = tokenize(&v, i).unwrap_err();
        assert!(matches!(err, VaultError::KeysOutOfDate), "{err}");
        assert_eq!(cards(&db), before, "nothing written");
        assert_eq!(
            last_tokenize_event(&db),
            ("error".to_owned(), Some("unavailable".to_owned()))
        );
    }
    // Reads of what is stored go on.
    rt().block_on(v.detokenize("shop", &kept.token, "check", &ctx()))
        .unwrap();
    // Once the keys load again, tokenize resumes.
    db.execute(
        "UPDATE data_keys SET wrapped = ?1 WHERE version = 1",
        [&wrapped],
    )
    .unwrap();
    db.execute(bump, []).unwrap();
    assert!(v.refresh_keys().unwrap());
    assert_eq!(tokenize(&v, 5).unwrap().key_version, 1);
    v.shutdown();
}

#[test]
fn master_rotate_is_refused_while_a_vault_is_open_and_works_after() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    let old = tokenize(&v, 1).unwrap();
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    let err = admin.master_rotate(&ctx(), &pass("pw")).unwrap_err();
    assert!(
        err.to_string()
            .contains("stop it, run `panvault master rotate`"),
        "{err}"
    );
    assert!(Admin::ensure_not_served(dir.path()).is_err());
    // Nothing changed: the open vault goes on.
    let seal_before: Vec<u8> = raw(dir.path())
        .query_row("SELECT sealed_root FROM seal", [], |r| r.get(0))
        .unwrap();
    tokenize(&v, 2).unwrap();
    // change-passphrase and reshare keep the root: allowed, and the open vault
    // does not notice.
    admin
        .change_passphrase(&ctx(), &SecretText::new("pw2".into()), KdfParams::MINIMUM)
        .unwrap();
    v.refresh_keys().unwrap();
    tokenize(&v, 3).unwrap();
    rt().block_on(v.detokenize("shop", &old.token, "check", &ctx()))
        .unwrap();
    v.shutdown();
    drop(v);
    Admin::ensure_not_served(dir.path()).unwrap();
    let mut admin = Admin::open(dir.path(), &pass("pw2"), system_clock()).unwrap();
    admin.master_rotate(&ctx(), &pass("pw2")).unwrap();
    let seal_after: Vec<u8> = raw(dir.path())
        .query_row("SELECT sealed_root FROM seal", [], |r| r.get(0))
        .unwrap();
    assert_ne!(seal_before, seal_after);
    drop(admin);
    let v = Vault::open(dir.path(), &pass("pw2")).unwrap();
    let back = rt()
        .block_on(v.detokenize("shop", &old.token, "check", &ctx()))
        .unwrap();
    assert!(back.card.pan.expose_digits() == card(1), "wrong card");
    v.shutdown();
}

#[test]
fn a_vault_does_not_open_while_master_rotate_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let held = panvault_vault::store::lock_exclusive(dir.path())
        .unwrap()
        .unwrap();
    let err = Vault::open(dir.path(), &pass("pw")).unwrap_err();
    assert!(err.to_string().contains("master rotate"), "{err}");
    drop(held);
    Vault::open(dir.path(), &pass("pw")).unwrap().shutdown();
}

fn share_spec() -> SealSpec {
    SealSpec {
        unlock: pass("unused"),
        kdf: KdfParams::MINIMUM,
        shares: Some((3, 2)),
    }
}

fn reparse(s: &[ShareFile]) -> Vec<ShareFile> {
    s.iter()
        .map(|s| ShareFile::parse(&s.to_text()).unwrap())
        .collect()
}

#[test]
fn a_reshare_whose_shares_cannot_be_stored_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = Vault::init(dir.path(), &share_spec(), &system_clock())
        .unwrap()
        .shares;
    let mut admin = Admin::open(
        dir.path(),
        &Unlock::Shares(reparse(&old[..2])),
        system_clock(),
    )
    .unwrap();
    let mut offered = 0;
    let err = admin
        .reshare(&ctx(), 3, 2, |s| {
            offered = s.len();
            Err(VaultError::invalid("shares_dir", "disk full"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(offered, 3);
    drop(admin);
    // The old shares still open the vault.
    Vault::open(dir.path(), &Unlock::Shares(reparse(&old[1..])))
        .unwrap()
        .shutdown();
}

#[test]
fn an_init_whose_shares_cannot_be_stored_leaves_no_vault() {
    let dir = tempfile::tempdir().unwrap();
    let err = Vault::init_with(dir.path(), &share_spec(), &system_clock(), &ctx(), |_| {
        Err(VaultError::invalid("shares_dir", "disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(!dir.path().join("vault.db").exists());
    // and it can simply be run again
    let shares = Vault::init(dir.path(), &share_spec(), &system_clock())
        .unwrap()
        .shares;
    Vault::open(dir.path(), &Unlock::Shares(reparse(&shares[..2])))
        .unwrap()
        .shutdown();
}
