//! The end of the audit log as the vault writes it: an idle vault signs its
//! tail (also events other processes appended), a stop signs it, every signed
//! checkpoint reaches the witness file, and refused erasures are audited.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::time::{Duration, Instant};

use panvault_audit::log::{Checkpoint, CheckpointPolicy, PublicKey, latest_checkpoint};
use panvault_vault::service::{AuditAction, EraseTarget, VaultOptions, append_admin_event};
use panvault_vault::{AccessContext, Admin, TokenizeRequest, Vault, VaultError, system_clock};

mod common;
use common::{full_ctx as ctx, init, pass, rt};

/// The last event's seq and the newest checkpoint.
fn head_and_checkpoint(dir: &Path) -> (i64, Option<Checkpoint>) {
    let conn = panvault_audit::log::open_read_only(&dir.join("vault.db")).unwrap();
    let head: i64 = conn
        .query_row("SELECT max(seq) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    (head, latest_checkpoint(&conn).unwrap())
}

/// Polls (at most 30 s) until the newest checkpoint covers the last event.
fn wait_until_signed(dir: &Path) -> (i64, Checkpoint) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (head, cp) = head_and_checkpoint(dir);
        if let Some(cp) = cp
            && i64::try_from(cp.seq).unwrap() == head
        {
            return (head, cp);
        }
        assert!(
            Instant::now() < deadline,
            "the tail (head {head}) was not signed within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_vault_signs_its_tail_and_writes_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    init(&data);
    let witness = dir.path().join("witness.jsonl");
    let opts = VaultOptions {
        checkpoint: CheckpointPolicy {
            every_events: 1000,
            every: Duration::from_secs(1),
        },
        checkpoint_witness: Some(witness.clone()),
        ..VaultOptions::default()
    };
    let v = Vault::open_with(&data, &pass(), opts).unwrap();
    let rt = rt();
    rt.block_on(async {
        // A burst: only the first batch can be due; the rest stay unsigned
        // until the writer is idle.
        for c in ["4242424242424242", "5555555555554444", "378282246310005"] {
            let r = TokenizeRequest::new(c, 12, 2031, v.today()).unwrap();
            v.tokenize("shop", r, &ctx()).await.unwrap();
        }
    });
    let (head, cp) = wait_until_signed(&data);
    let key = PublicKey::read_from(&data.join("audit-signing.pub")).unwrap();
    cp.verify(&key).unwrap();

    // An event another process appended (without the key) is signed too.
    let admin = AccessContext {
        actor: "admin:ops".into(),
        ..AccessContext::default()
    };
    let seq = append_admin_event(&data, &admin, AuditAction::AuditExport, "from_seq=1").unwrap();
    assert_eq!(i64::try_from(seq).unwrap(), head + 1);
    let (head2, cp2) = wait_until_signed(&data);
    assert_eq!(head2, head + 1);
    assert!(cp2.id > cp.id);

    // A stop signs what is left (here: nothing new, so no new checkpoint).
    v.shutdown();
    let written = Checkpoint::parse_many(&std::fs::read_to_string(&witness).unwrap()).unwrap();
    assert_eq!(written.last(), Some(&cp2), "the witness file lags the log");
    assert!(written.contains(&cp));
}

#[test]
fn a_stop_signs_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    // The default policy: nothing is due for a minute.
    let v = Vault::open(dir.path(), &pass()).unwrap();
    rt().block_on(async {
        for c in ["4242424242424242", "5555555555554444"] {
            let r = TokenizeRequest::new(c, 12, 2031, v.today()).unwrap();
            v.tokenize("shop", r, &ctx()).await.unwrap();
        }
    });
    v.shutdown();
    let (head, cp) = head_and_checkpoint(dir.path());
    assert_eq!(i64::try_from(cp.unwrap().seq).unwrap(), head);
}

/// Denied erase events: (tenant, token, code, details) of each.
fn refused_erasures(dir: &Path) -> Vec<(Option<String>, Option<String>, String, String)> {
    let conn = panvault_audit::log::open_read_only(&dir.join("vault.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT tenant, token, code, details FROM audit_events \
             WHERE action = 'erase' AND outcome = 'denied' ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn refused_erasures_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let v = Vault::open(dir.path(), &pass()).unwrap();
    let rt = rt();
    let card_like = "4242424242424242";
    let refusals = [
        ("bad tenant!", EraseTarget::Subject("cust_1".into())),
        ("shop", EraseTarget::Subject(String::new())),
        ("shop", EraseTarget::Subject(format!("cust {card_like}"))),
        ("shop", EraseTarget::Token("not-a-token".into())),
    ];
    for (tenant, target) in refusals {
        let r = rt.block_on(v.erase(tenant, target, &ctx()));
        assert!(
            matches!(
                r,
                Err(VaultError::InvalidRequest { .. } | VaultError::NotFound)
            ),
            "{r:?}"
        );
    }
    v.shutdown();
    // The CLI's erase refuses and audits the same way.
    let mut admin = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    let admin_ctx = AccessContext {
        actor: "admin:ops".into(),
        ..AccessContext::default()
    };
    assert!(
        admin
            .erase(&admin_ctx, "shop", &EraseTarget::Subject(String::new()))
            .is_err()
    );
    drop(admin);

    let events = refused_erasures(dir.path());
    let got: Vec<(Option<&str>, &str, &str)> = events
        .iter()
        .map(|(t, _, c, d)| (t.as_deref(), c.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "invalid_request", "refused=tenant"),
            (Some("shop"), "invalid_request", "refused=subject"),
            (Some("shop"), "invalid_request", "refused=subject"),
            (Some("shop"), "not_found", "refused=not_found"),
            (Some("shop"), "invalid_request", "refused=subject"),
        ]
    );
    // The refused subject is not in the log, in any form.
    for file in ["vault.db", "vault.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(card_like.len())
                .any(|w| w == card_like.as_bytes()),
            "{file}"
        );
    }
}
