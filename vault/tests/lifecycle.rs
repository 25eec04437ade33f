//! Key lifecycle: rotate, rewrap under load, retire, destroy, master rotate,
//! passphrase change, custodian shares.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::type_complexity
)]

use std::path::Path;

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::service::shamir::ShareFile;
use panvault_vault::{
    AccessContext, Admin, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, VaultError,
    system_clock,
};

mod common;
use common::{card, init, pass_of as pass, rt_multi as rt};

fn ctx() -> AccessContext {
    common::ctx_of("admin:test")
}

#[test]
fn rotate_rewrap_under_load_retire_destroy() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    let rt = rt();
    let n = 300;
    let mut tokens = rt.block_on(async {
        let items = (0..n)
            .map(|i| TokenizeRequest::new(&card(i), 12, 2031, v.today()))
            .collect();
        v.tokenize_batch("shop", items, &ctx())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().token)
            .collect::<Vec<_>>()
    });
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    assert_eq!(admin.rotate(&ctx()).unwrap(), 2);
    // A client keeps tokenizing and detokenizing while rewrap runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let v = v.clone();
        let stop = stop.clone();
        let tokens = tokens.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut made = Vec::new();
            let mut i = 10_000u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                rt.block_on(async {
                    // v2 is active in the database but not loaded here yet: the
                    // first tokenize is refused (503-class) and loads it; nothing
                    // is ever sealed under v1 again.
                    let t = match v
                        .tokenize(
                            "shop",
                            TokenizeRequest::new(&card(i), 12, 2031, v.today()).unwrap(),
                            &ctx(),
                        )
                        .await
                    {
                        Err(VaultError::KeysOutOfDate) => return,
                        other => other.unwrap(),
                    };
                    assert_eq!(t.key_version, 2);
                    made.push(t.token);
                    let tok = &tokens[usize::try_from(i).unwrap() % tokens.len()];
                    v.detokenize("shop", tok, "load", &ctx()).await.unwrap();
                });
                i += 1;
            }
            made
        })
    };
    let mut seen = Vec::new();
    let summary = admin
        .rewrap(&ctx(), 50, None, |p| seen.push(p.done))
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let made = client.join().unwrap();
    tokens.extend(made);
    assert!(summary.rewrapped >= n || summary.remaining == 0);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // records made by the client under v1 before it saw v2 are rewrapped by a second run
    let again = admin.rewrap(&ctx(), 50, None, |_| {}).unwrap();
    assert_eq!(again.remaining, 0);
    let err = admin.retire(&ctx(), 2).unwrap_err();
    assert!(err.to_string().contains("active"), "{err}");
    admin.retire(&ctx(), 1).unwrap();
    assert!(admin.destroy(&ctx(), 2).is_err());
    admin.destroy(&ctx(), 1).unwrap();
    let keys = admin.list_keys().unwrap();
    assert_eq!(keys[0].state, panvault_vault::KeyState::Destroyed);
    assert!(keys[0].destroyed_at.is_some());
    assert_eq!(keys[0].records, 0);
    v.refresh_keys().unwrap();
    rt.block_on(async {
        for t in &tokens {
            v.detokenize("shop", t, "check", &ctx()).await.unwrap();
        }
    });
    v.shutdown();
}

#[test]
fn retire_refuses_while_records_use_the_key() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    rt().block_on(v.tokenize(
        "s",
        TokenizeRequest::new(&card(1), 12, 2031, v.today()).unwrap(),
        &ctx(),
    ))
    .unwrap();
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    admin.rotate(&ctx()).unwrap();
    let err = admin.retire(&ctx(), 1).unwrap_err().to_string();
    assert!(err.contains("1 record"), "{err}");
    v.shutdown();
}

#[test]
fn master_rotate_and_passphrase_change() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    let t = rt()
        .block_on(v.tokenize(
            "s",
            TokenizeRequest::new(&card(2), 12, 2031, v.today()).unwrap(),
            &ctx(),
        ))
        .unwrap();
    v.shutdown();
    drop(v);
    let before: Vec<u8> = rusqlite::Connection::open(dir.path().join("vault.db"))
        .unwrap()
        .query_row("SELECT sealed_root FROM seal", [], |r| r.get(0))
        .unwrap();
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    let done = admin.master_rotate(&ctx(), &pass("pw")).unwrap();
    // It says what it re-wrapped: the one data key and the named auxiliary keys.
    assert_eq!(done.data_keys, 1);
    assert!(
        done.other_keys.iter().any(|k| k == "fingerprint"),
        "{done:?}"
    );
    admin
        .change_passphrase(
            &ctx(),
            &SecretText::new("new pw".into()),
            KdfParams::MINIMUM,
        )
        .unwrap();
    drop(admin);
    let after: Vec<u8> = rusqlite::Connection::open(dir.path().join("vault.db"))
        .unwrap()
        .query_row("SELECT sealed_root FROM seal", [], |r| r.get(0))
        .unwrap();
    assert_ne!(before, after);
    assert!(matches!(
        Vault::open(dir.path(), &pass("pw")),
        Err(VaultError::WrongSecret)
    ));
    let v = Vault::open(dir.path(), &pass("new pw")).unwrap();
    let back = rt()
        .block_on(v.detokenize("s", &t.token, "x", &ctx()))
        .unwrap();
    assert_eq!(back.card.pan.expose_digits(), card(2));
    v.shutdown();
}

fn share_init(dir: &Path, n: u8, m: u8) -> Vec<ShareFile> {
    let spec = SealSpec {
        unlock: pass("unused"),
        kdf: KdfParams::MINIMUM,
        shares: Some((n, m)),
    };
    Vault::init(dir, &spec, &system_clock()).unwrap().shares
}

fn reparse(s: &[ShareFile], idx: &[usize]) -> Vec<ShareFile> {
    idx.iter()
        .map(|&i| ShareFile::parse(&s[i].to_text()).unwrap())
        .collect()
}

#[test]
fn custodian_shares_m_of_n() {
    let dir = tempfile::tempdir().unwrap();
    let shares = share_init(dir.path(), 4, 2);
    assert_eq!(shares.len(), 4);
    for combo in [[0usize, 1], [0, 3], [2, 3], [1, 2]] {
        let v = Vault::open(dir.path(), &Unlock::Shares(reparse(&shares, &combo))).unwrap();
        v.shutdown();
    }
    let one = Vault::open(dir.path(), &Unlock::Shares(reparse(&shares, &[1]))).unwrap_err();
    assert!(one.to_string().contains("needed"), "{one}");
    assert!(Vault::open(dir.path(), &pass("unused")).is_err());
    // shares of another vault
    let other = tempfile::tempdir().unwrap();
    let foreign = share_init(other.path(), 4, 2);
    let e = Vault::open(dir.path(), &Unlock::Shares(reparse(&foreign, &[0, 1]))).unwrap_err();
    assert!(e.to_string().contains("another vault"), "{e}");
    // reshare invalidates the old set
    let mut admin = Admin::open(
        dir.path(),
        &Unlock::Shares(reparse(&shares, &[0, 1])),
        system_clock(),
    )
    .unwrap();
    assert_eq!(admin.share_numbers(), &[1, 2]);
    let mut fresh = Vec::new();
    admin
        .reshare(&ctx(), 3, 3, |s| {
            fresh = reparse(s, &[0, 1, 2]);
            Ok(())
        })
        .unwrap();
    admin
        .master_rotate(&ctx(), &Unlock::Shares(reparse(&fresh, &[0, 1, 2])))
        .unwrap();
    drop(admin);
    assert!(Vault::open(dir.path(), &Unlock::Shares(reparse(&shares, &[0, 1]))).is_err());
    assert!(Vault::open(dir.path(), &Unlock::Shares(reparse(&fresh, &[0, 1]))).is_err());
    Vault::open(dir.path(), &Unlock::Shares(reparse(&fresh, &[0, 1, 2])))
        .unwrap()
        .shutdown();
}

/// A record rewrapped by another process under a key this vault has not loaded yet:
/// detokenize reloads the keys and answers, and the access is logged once.
#[test]
fn a_key_made_by_another_process_is_loaded_and_the_read_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass("pw")).unwrap();
    let rt = rt();
    let number = card(7);
    let token = rt
        .block_on(v.tokenize(
            "shop",
            TokenizeRequest::new(&number, 12, 2031, v.today()).unwrap(),
            &ctx(),
        ))
        .unwrap()
        .token;
    let mut admin = Admin::open(dir.path(), &pass("pw"), system_clock()).unwrap();
    assert_eq!(admin.rotate(&ctx()).unwrap(), 2);
    assert_eq!(admin.rewrap(&ctx(), 50, None, |_| {}).unwrap().remaining, 0);
    assert_eq!(v.active_key_version().unwrap(), 1, "not refreshed yet");
    let d = rt
        .block_on(v.detokenize("shop", &token, "charge", &ctx()))
        .unwrap();
    assert!(d.card.pan.expose_digits() == number, "wrong card returned");
    let db = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    let logged: Vec<(String, String)> = db
        .prepare("SELECT outcome, purpose FROM audit_events WHERE action = 'detokenize'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(logged, [("success".to_owned(), "charge".to_owned())]);
    v.shutdown();
}
