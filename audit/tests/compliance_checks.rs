//! Each check against a vault in a good state (everything passes) and in a
//! deliberately bad state (exactly that check fails).
// Test helpers outside #[test] functions: a panic is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod compliance_util;

use compliance_util::*;
use panvault_audit::compliance::{
    CertRole, ClientFacts, DataKeyFacts, ErasureFacts, ErasureRequest, Fact, Facts, HelloReply,
    KeyAlgorithm, KeyState, MaskingRow, ParamValue, SealFacts, Status, x509,
};
use panvault_audit::log::{Action, ActionName, Actor, NewEvent, Outcome};
use time::Duration;

fn assert_only(f: &Facts, expected: &[(&str, Status)]) {
    let got = not_passing(f);
    let want: Vec<(String, Status)> = expected
        .iter()
        .map(|(c, s)| ((*c).to_owned(), *s))
        .collect();
    if got != want {
        let reports: Vec<String> = [pci(), gdpr()]
            .iter()
            .map(|p| {
                panvault_audit::compliance::render(
                    &run(p, f),
                    panvault_audit::compliance::Format::Text,
                    false,
                )
            })
            .collect();
        panic!("expected {want:?}, got {got:?}\n{}", reports.join("\n"));
    }
}

fn evidence(f: &Facts, control: &str) -> String {
    let r = run(&pci(), f);
    r.result(control).unwrap().evidence.join("\n")
}

#[test]
fn good_state_passes_everything() {
    let v = good_vault();
    let f = good_facts(&v);
    for policy in [pci(), gdpr()] {
        let r = run(&policy, &f);
        let text =
            panvault_audit::compliance::render(&r, panvault_audit::compliance::Format::Text, false);
        assert_eq!(
            r.summary.pass + r.summary.attest,
            r.summary.total(),
            "{text}"
        );
        for x in &r.results {
            assert_eq!(
                x.status == Status::Attest,
                ATTESTED.contains(&x.check.as_str()),
                "{}: {text}",
                x.id
            );
        }
        // Attested controls never count as passed, nor fail the run.
        assert_eq!(r.exit_code(), 0);
    }
    assert_eq!(run(&pci(), &f).results.len(), 21);
}

#[test]
fn old_data_key_and_root_key() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys[0].age_days = 400;
    }
    assert_only(&f, &[("keys.cryptoperiod", Status::Fail)]);
    assert!(evidence(&f, "keys.cryptoperiod").contains("active data key v1 is 400 days old"));
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys[0].age_days = 10;
        k.root_age_days = 350;
    }
    assert_only(&f, &[("keys.cryptoperiod", Status::Warn)]);
}

#[test]
fn records_under_retired_and_destroyed_keys() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys.insert(
            0,
            DataKeyFacts {
                version: 0,
                state: KeyState::Destroyed,
                age_days: 500,
                superseded_days: Some(400),
                records: 3,
                encryptions: 9,
            },
        );
    }
    assert_only(&f, &[("keys.retired_versions", Status::Fail)]);
    assert!(evidence(&f, "keys.retired_versions").contains("v0 destroyed but 3 records"));
}

#[test]
fn nonce_budget_exhausted() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys[0].encryptions = 1 << 32;
    }
    assert_only(&f, &[("keys.nonce_budget", Status::Fail)]);
    if let Fact::Known(k) = &mut f.keys {
        k.data_keys[0].encryptions = 3 << 30;
    }
    assert_only(&f, &[("keys.nonce_budget", Status::Warn)]);
    assert!(evidence(&f, "keys.nonce_budget").contains("75.00% of the 4294967296 limit"));
}

#[test]
fn single_passphrase_is_not_dual_control() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.seal = SealFacts::Passphrase {
            memory_kib: 65536,
            passes: 3,
            lanes: 1,
        };
    }
    assert_only(&f, &[("keys.dual_control", Status::Fail)]);
    if let Fact::Known(k) = &mut f.keys {
        k.seal = SealFacts::Shares {
            total: 3,
            threshold: 1,
        };
    }
    assert_only(&f, &[("keys.dual_control", Status::Fail)]);
    if let Fact::Known(k) = &mut f.keys {
        k.seal = SealFacts::Passphrase {
            memory_kib: 1024,
            passes: 1,
            lanes: 1,
        };
    }
    assert_only(
        &f,
        &[
            ("keys.dual_control", Status::Fail),
            ("keys.kek_strength", Status::Fail),
        ],
    );
}

#[test]
fn unkeyed_fingerprints() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(k) = &mut f.keys {
        k.fingerprint.keyed = false;
        k.fingerprint.algorithm = "SHA-256".into();
    }
    assert_only(&f, &[("keys.fingerprint_keyed", Status::Fail)]);
}

#[test]
fn plaintext_card_in_a_log_file() {
    let v = good_vault();
    let mut f = good_facts(&v);
    std::fs::write(
        v.log_dir.join("debug.log"),
        "2025-06-01 DEBUG request body {\"number\":\"4111 1111 1111 1111\",\"exp\":\"12/31\"}\n",
    )
    .unwrap();
    refresh(&v, &mut f);
    assert_only(&f, &[("data.no_clear_pan", Status::Fail)]);
    let ev = evidence(&f, "data.no_clear_pan");
    assert!(
        ev.contains("debug.log:1: PAN 411111******1111 (published test number)"),
        "{ev}"
    );
    let report = run(&pci(), &f);
    for fmt in panvault_audit::compliance::Format::ALL {
        let out = panvault_audit::compliance::render(&report, fmt, false);
        assert!(
            !out.contains("4111111111111111") && !out.contains("4111 1111 1111 1111"),
            "{fmt:?} shows the card number"
        );
    }
    // Test numbers can be excluded by the policy.
    let mut p = pci();
    p.controls
        .iter_mut()
        .find(|c| c.id == "data.no_clear_pan")
        .unwrap()
        .params
        .set("count_test_cards", ParamValue::Bool(false));
    assert_eq!(
        run(&p, &f).result("data.no_clear_pan").unwrap().status,
        Status::Pass
    );
}

#[test]
fn plaintext_card_in_the_database_wal() {
    let v = good_vault();
    let mut f = good_facts(&v);
    let wal = v.data_dir.join("vault.db-wal");
    std::fs::write(&wal, b"\x00\x01binary page 5555555555554444\x00").unwrap();
    #[cfg(unix)]
    chmod(&wal, 0o600);
    refresh(&v, &mut f);
    assert_only(&f, &[("data.no_clear_pan", Status::Fail)]);
    assert!(evidence(&f, "data.no_clear_pan").contains("vault.db-wal:1: PAN 555555******4444"));
}

#[test]
fn track_data_and_cvv_columns() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(d) = &mut f.data {
        d.card_columns.push("cvv2".into());
    }
    assert_only(&f, &[("data.no_sensitive_auth_data", Status::Fail)]);
    if let Fact::Known(d) = &mut f.data {
        d.card_columns.pop();
    }
    std::fs::write(
        v.log_dir.join("pos.log"),
        "swipe ;4111111111111111=31121010000012300000?\n",
    )
    .unwrap();
    refresh(&v, &mut f);
    assert_only(
        &f,
        &[
            ("data.no_clear_pan", Status::Fail),
            ("data.no_sensitive_auth_data", Status::Fail),
        ],
    );
    assert!(
        evidence(&f, "data.no_sensitive_auth_data").contains("track 2 data of 411111******1111")
    );
}

#[test]
fn unmasked_display() {
    let v = good_vault();
    let mut f = good_facts(&v);
    f.masking = Fact::Known(vec![MaskingRow {
        pan_len: Some(16),
        cards: 1,
        leading: 8,
        trailing: 4,
    }]);
    assert_only(&f, &[("data.display_masking", Status::Fail)]);
}

#[test]
fn short_card_numbers_keep_too_few_digits_hidden() {
    let v = good_vault();
    let mut f = good_facts(&v);
    // A 12-digit card under a format-preserving token: 10 of its 12 digits in the clear.
    f.masking = Fact::Known(vec![
        MaskingRow {
            pan_len: Some(16),
            cards: 3,
            leading: 6,
            trailing: 4,
        },
        MaskingRow {
            pan_len: Some(12),
            cards: 1,
            leading: 6,
            trailing: 4,
        },
    ]);
    assert_only(&f, &[("data.display_masking", Status::Fail)]);
    assert!(
        evidence(&f, "data.display_masking")
            .contains("FAIL: 1 card of 12 digits (format-preserving tokens): 10 of 12 digits in the clear, 2 hidden"),
        "{}",
        evidence(&f, "data.display_masking")
    );
    // Opaque tokens: the length is sealed, so the control is attested, not passed.
    f.masking = Fact::Known(vec![MaskingRow {
        pan_len: None,
        cards: 4,
        leading: 6,
        trailing: 4,
    }]);
    assert_only(&f, &[("data.display_masking", Status::Attest)]);
}

#[test]
fn cards_past_retention() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(d) = &mut f.data {
        d.records_past_retention = 3;
    }
    assert_only(&f, &[("data.retention", Status::Fail)]);
}

#[test]
fn tls_1_0_allowed() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(t) = &mut f.tls {
        t.versions = vec!["1.0".into(), "1.1".into(), "1.2".into(), "1.3".into()];
    }
    assert_only(&f, &[("tls.configuration", Status::Fail)]);
    let ev = evidence(&f, "tls.configuration");
    assert!(
        ev.contains("FAIL: TLS 1.0 is allowed (minimum TLS 1.2)")
            && ev.contains("FAIL: TLS 1.1 is allowed"),
        "{ev}"
    );
    if let Fact::Known(t) = &mut f.tls {
        t.versions = vec!["1.2".into()];
        t.cipher_suites
            .push("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into());
        t.client_auth = panvault_audit::compliance::ClientAuth::Optional;
    }
    let ev = evidence(&f, "tls.configuration");
    assert!(
        ev.contains("not an AEAD suite") && ev.contains("client certificates are optional"),
        "{ev}"
    );
}

#[test]
fn expired_certificate() {
    let v = good_vault();
    let mut f = good_facts(&v);
    pki(
        &v.tmp.path().join("pki"),
        now() - Duration::days(400),
        now() - Duration::days(2),
    );
    refresh(&v, &mut f);
    assert_only(&f, &[("tls.certificates", Status::Fail)]);
    assert!(evidence(&f, "tls.certificates").contains("expired on"));
    pki(
        &v.tmp.path().join("pki"),
        now() - Duration::days(400),
        now() + Duration::days(10),
    );
    refresh(&v, &mut f);
    assert_only(&f, &[("tls.certificates", Status::Warn)]);
}

#[test]
fn weak_key_and_sha1_signature() {
    let weak = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/compliance/weak-rsa1024-sha1.pem");
    let src = x509::read_cert_file(&weak, CertRole::ServerLeaf);
    let c = &src.certs[0];
    assert_eq!(c.key, KeyAlgorithm::Rsa { bits: 1024 });
    assert_eq!(c.signature_hash, "SHA-1");
    let v = good_vault();
    let mut f = good_facts(&v);
    // A self-signed leaf that is not a CA: its SHA-1 signature counts.
    f.certificates = Fact::Known(vec![src]);
    assert_only(&f, &[("tls.certificates", Status::Fail)]);
    let ev = evidence(&f, "tls.certificates");
    assert!(ev.contains("key RSA-1024 is not allowed"), "{ev}");
    assert!(
        ev.contains("SHA-1 is weaker than SHA-256") || ev.contains("self-signed root"),
        "{ev}"
    );
}

#[test]
fn endpoint_accepting_tls_1_0() {
    let v = good_vault();
    let mut f = good_facts(&v);
    f.endpoints[0].legacy[0].reply = HelloReply::ServerHello {
        version: "TLS 1.0".into(),
        suite: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into(),
    };
    assert_only(&f, &[("tls.endpoints", Status::Fail)]);
    f.endpoints.clear();
    assert_only(&f, &[("tls.endpoints", Status::Skip)]);
    assert_eq!(run(&pci(), &f).exit_code(), 101);
}

#[test]
fn missing_key_file_breaks_the_inventory() {
    let v = good_vault();
    let mut f = good_facts(&v);
    std::fs::remove_file(&v.pki.server_key).unwrap();
    refresh(&v, &mut f);
    assert_only(&f, &[("tls.inventory", Status::Fail)]);
    let ev = evidence(&f, "tls.inventory");
    assert!(
        ev.contains("certificate [server]") && ev.contains("SHA-256"),
        "{ev}"
    );
}

#[test]
fn broken_audit_chain() {
    let v = good_vault();
    let mut f = good_facts(&v);
    let conn = rusqlite::Connection::open(&v.db).unwrap();
    conn.execute(
        "UPDATE audit_events SET purpose = 'marketing' WHERE action = 'detokenize'",
        [],
    )
    .unwrap();
    drop(conn);
    refresh(&v, &mut f);
    assert_only(&f, &[("audit.integrity", Status::Fail)]);
    assert!(evidence(&f, "audit.integrity").contains("chain broken (modified)"));
}

#[test]
fn deleted_audit_events_are_a_gap() {
    let v = good_vault();
    let mut f = good_facts(&v);
    let conn = rusqlite::Connection::open(&v.db).unwrap();
    conn.execute("DELETE FROM audit_events WHERE seq = 3", [])
        .unwrap();
    drop(conn);
    refresh(&v, &mut f);
    let got = not_passing(&f);
    assert!(
        got.contains(&("audit.integrity".into(), Status::Fail))
            && got.contains(&("audit.retention".into(), Status::Fail)),
        "{got:?}"
    );
}

#[test]
fn short_audit_retention() {
    let v = good_vault();
    let mut f = good_facts(&v);
    f.audit_log = Fact::from_result(panvault_audit::compliance::collect::audit_log_facts(
        &v.db,
        &v.pubkey,
        (Some(90), "audit.retention_days".into()),
    ));
    assert_only(&f, &[("audit.retention", Status::Fail)]);
}

#[test]
fn missing_event_classes_and_fields() {
    let events: Vec<NewEvent> = good_events()
        .into_iter()
        .filter(|e| e.action != Action::Denied)
        .collect();
    let v = vault_with_events(&events);
    let mut f = good_facts(&v);
    assert_only(&f, &[("audit.event_classes", Status::Warn)]);
    assert!(
        evidence(&f, "audit.event_classes")
            .contains("WARN: 10.2.1.4 invalid logical access attempts: 0 events")
    );
    let mut p = pci();
    p.controls
        .iter_mut()
        .find(|c| c.id == "audit.event_classes")
        .unwrap()
        .params
        .set("missing_status", ParamValue::Str("fail".into()));
    assert_eq!(
        run(&p, &f).result("audit.event_classes").unwrap().status,
        Status::Fail
    );

    let v = good_vault();
    append(
        &v.db,
        &v.key,
        &[event(Action::Detokenize, client())
            .with_tenant("demo-shop")
            .with_token("tok_b")],
    );
    refresh(&v, &mut f);
    assert_only(&f, &[("audit.event_fields", Status::Fail)]);
    let ev = evidence(&f, "audit.event_fields");
    assert!(
        ev.contains("1 events from the API without an origin")
            && ev.contains("1 events detokenize without a declared purpose"),
        "{ev}"
    );
}

#[test]
fn names_the_vault_never_emits_count_for_no_event_class() {
    // The only key change of the good log is a rotation; in its place, names
    // that once stood in the class table but that nothing writes.
    let mut events: Vec<NewEvent> = good_events()
        .into_iter()
        .filter(|e| e.action != Action::KeyRotate)
        .collect();
    for name in ["master_key.unseal", "audit.init"] {
        events.push(NewEvent::new(
            now(),
            Actor::admin("ops"),
            ActionName::new(name).unwrap(),
            Outcome::Success,
        ));
    }
    let v = vault_with_events(&events);
    let f = good_facts(&v);
    assert_only(&f, &[("audit.event_classes", Status::Warn)]);
    let ev = evidence(&f, "audit.event_classes");
    assert!(
        ev.contains("WARN: 10.2.1.5 changes to identification and authentication credentials and keys: 0 events"),
        "{ev}"
    );
}

#[test]
fn no_audit_log_at_all() {
    let v = good_vault();
    let mut f = good_facts(&v);
    let conn = rusqlite::Connection::open(&v.db).unwrap();
    conn.execute_batch("DROP TABLE audit_events;").unwrap();
    drop(conn);
    refresh(&v, &mut f);
    let got = not_passing(&f);
    for c in [
        "audit.integrity",
        "audit.retention",
        "audit.event_classes",
        "audit.event_fields",
    ] {
        assert!(got.contains(&(c.into(), Status::Fail)), "{got:?}");
    }
}

#[test]
fn catch_all_client_identity() {
    let v = good_vault();
    let mut f = good_facts(&v);
    if let Fact::Known(a) = &mut f.access {
        a.clients.push(ClientFacts {
            name: "ops".into(),
            common_name: Some("*".into()),
            uri_san: None,
            tenant: "demo-shop".into(),
            permissions: a.all_permissions.clone(),
        });
    }
    assert_only(&f, &[("access.permissions", Status::Fail)]);
    let ev = evidence(&f, "access.permissions");
    assert!(
        ev.contains("`detokenize`: payments (CN=payments, tenant demo-shop); ops (CN=*"),
        "{ev}"
    );
    assert!(
        ev.contains("client ops (CN=*) is a catch-all identity"),
        "{ev}"
    );
}

#[cfg(unix)]
#[test]
fn world_readable_seal() {
    let v = good_vault();
    let mut f = good_facts(&v);
    chmod(&v.db, 0o644);
    refresh(&v, &mut f);
    assert_only(&f, &[("access.file_modes", Status::Fail)]);
    assert!(
        evidence(&f, "access.file_modes")
            .contains("vault.db: 0644 (allowed 0600): anyone on the host can access it")
    );
    chmod(&v.db, 0o600);
    chmod(&v.data_dir, 0o750);
    refresh(&v, &mut f);
    assert_only(&f, &[("access.file_modes", Status::Fail)]);
}

#[test]
fn overdue_erasure_request() {
    let v = good_vault();
    let mut f = good_facts(&v);
    f.erasure = Fact::Known(ErasureFacts {
        open: vec![ErasureRequest {
            id: "er-1".into(),
            age_days: 45,
        }],
        completed: 0,
    });
    assert_only(&f, &[("gdpr.erasure_deadline", Status::Fail)]);
    f.erasure = Fact::Unknown("the vault does not track erasure requests yet".into());
    assert_only(&f, &[("gdpr.erasure_deadline", Status::Skip)]);
    let r = run(&gdpr(), &f);
    assert_eq!(r.exit_code(), 101);
    assert!(r.result("gdpr.erasure-deadline").unwrap().evidence[0].contains("does not track"));
}

/// A held security code past its deadline beyond the sweep's grace, a window
/// key kept past its destruction, a code longer than sealed, a clear column, or
/// a lifetime over the ceiling: each fails `data.cvc_not_retained` alone.
#[test]
fn security_codes_kept_too_long_or_in_the_clear() {
    let v = good_vault();
    let good = good_facts(&v);
    assert!(evidence(&good, "data.cvc_not_retained").contains("every held code is sealed"));
    let bad = |change: &dyn Fn(&mut panvault_audit::compliance::CvcFacts), says: &str| {
        let mut f = good_facts(&v);
        if let Fact::Known(c) = &mut f.cvc {
            change(c);
        }
        assert_only(&f, &[("data.cvc_not_retained", Status::Fail)]);
        let ev = evidence(&f, "data.cvc_not_retained");
        assert!(ev.contains(says), "{ev}");
    };
    bad(
        &|c| {
            c.past_deadline = 1;
            c.most_overdue_secs = Some(600);
        },
        "still stored past the deadline",
    );
    bad(
        &|c| c.key_overdue_secs = Some(600),
        "after its destruction time",
    );
    bad(
        &|c| c.sealed_len = Some((3, 19)),
        "not a sealed 3 or 4 digit code",
    );
    bad(
        &|c| c.columns.push("cvc".into()),
        "column `cvc` outside the sealed layout",
    );
    bad(&|c| c.longest_lifetime_secs = Some(7200), "7200 s to live");
    bad(
        &|c| c.longest_key_life_secs = Some(10_000),
        "more than twice the longest code lifetime",
    );
    // Within the sweep's grace: a note, not a failure.
    let mut f = good_facts(&v);
    if let Fact::Known(c) = &mut f.cvc {
        c.past_deadline = 1;
        c.most_overdue_secs = Some(30);
    }
    assert_only(&f, &[]);
}

#[test]
fn failed_facts_are_errors_and_fail_the_run() {
    let v = good_vault();
    let mut f = good_facts(&v);
    f.keys = Fact::Failed("vault.db: database is locked".into());
    let r = run(&pci(), &f);
    let k = r.result("keys.cryptoperiod").unwrap();
    assert_eq!(k.status, Status::Error);
    assert!(k.evidence[0].contains("database is locked"));
    assert_eq!(r.exit_code(), 100);
}

#[test]
fn disabled_controls_are_left_out() {
    let v = good_vault();
    let f = good_facts(&v);
    let mut p = pci();
    p.controls[0].enabled = false;
    assert_eq!(run(&p, &f).results.len(), 20);
    let _ = (
        DataKeyFacts {
            version: 0,
            state: KeyState::Active,
            age_days: 0,
            superseded_days: None,
            records: 0,
            encryptions: 0,
        },
        Duration::ZERO,
    );
}
