//! A real vault, a real PKI and a real configuration, assessed.
use std::path::{Path, PathBuf};

use panvault_audit::compliance::{Format, Report, Status, render};

use super::config_facts::{server_suites, versions_from};
use super::*;
use crate::config::Config;
use crate::core::kdf::KdfParams;
use crate::{AccessContext, SealSpec, SecretText, TokenizeRequest, Unlock, Vault, system_clock};

#[test]
fn versions_from_minimum() {
    assert_eq!(versions_from("1.2"), ["1.2", "1.3"]);
    assert_eq!(versions_from("1.0"), ["1.0", "1.1", "1.2", "1.3"]);
    assert_eq!(versions_from("1.3"), ["1.3"]);
    assert!(
        server_suites()
            .iter()
            .all(|s| panvault_audit::compliance::suite_is_aead(s)),
        "{:?}",
        server_suites()
    );
}

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read"]
[[clients]]
name = "payments"
tenant = "demo-shop"
permissions = ["detokenize"]
"#;

fn unlock() -> Unlock {
    Unlock::Passphrase(SecretText::new("correct horse battery staple".into()))
}

/// A real vault (shares seal when `shares`), two cards, a dev PKI, a config.
fn deployment(shares: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let spec = SealSpec {
        unlock: unlock(),
        kdf: KdfParams::MINIMUM,
        shares: shares.then_some((3, 2)),
    };
    let report = Vault::init(&data, &spec, &system_clock()).unwrap();
    if !shares {
        let v = Vault::open(&data, &unlock()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ctx = AccessContext {
            actor: "storefront".into(),
            peer: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        for n in ["4111111111111111", "5555555555554444"] {
            rt.block_on(v.tokenize(
                "demo-shop",
                TokenizeRequest::new(n, 12, 2031, v.today()).unwrap(),
                &ctx,
            ))
            .unwrap();
        }
        v.shutdown();
    }
    drop(report);
    crate::tls::pki::ensure_dev_pki(&tmp.path().join("pki"), &["storefront", "payments"]).unwrap();
    let config = tmp.path().join("panvault.toml");
    std::fs::write(&config, CONFIG).unwrap();
    (tmp, config)
}

fn pci() -> Policy {
    Policy::builtin("pci-dss-4.0.1").unwrap().unwrap()
}

fn options() -> CollectOptions {
    CollectOptions {
        probe_timeout: Duration::from_secs(2),
        ..CollectOptions::default()
    }
}

fn assess_with(config: &Path, opts: &CollectOptions) -> Report {
    let c = Config::load_lenient(config).unwrap();
    assess(&c, &pci(), opts, OffsetDateTime::now_utc())
}

fn statuses(r: &Report) -> Vec<(String, Status)> {
    r.results
        .iter()
        .filter(|x| x.status != Status::Pass)
        .map(|x| (x.id.clone(), x.status))
        .collect()
}

#[test]
fn real_vault_passphrase_seal() {
    let (tmp, config) = deployment(false);
    let report = assess_with(&config, &options());
    assert_eq!(report.results.len(), 21);
    let bad = statuses(&report);
    let plain = render(&report, Format::Text, false);
    // One passphrase: no dual control. No endpoint given: skipped.
    assert!(
        bad.contains(&("keys.dual_control".into(), Status::Fail)),
        "{plain}"
    );
    assert!(
        bad.contains(&("tls.endpoints".into(), Status::Skip)),
        "{plain}"
    );
    for id in [
        "keys.fingerprint_keyed",
        "data.display_masking",
        "tls.configuration",
    ] {
        assert_eq!(
            report.result(id).unwrap().status,
            Status::Attest,
            "{id}\n{plain}"
        );
    }
    for id in [
        "keys.cryptoperiod",
        "keys.nonce_budget",
        "keys.kek_strength",
        "data.no_clear_pan",
        "data.no_sensitive_auth_data",
        "data.cvc_not_retained",
        "data.retention",
        "tls.certificates",
        "tls.inventory",
        "access.permissions",
        "access.file_modes",
    ] {
        assert_eq!(
            report.result(id).unwrap().status,
            Status::Pass,
            "{id}\n{plain}"
        );
    }
    let evidence = |id: &str| report.result(id).unwrap().evidence.join("\n");
    let masking = evidence("data.display_masking");
    assert!(masking.contains("first 6 and last 4"), "{masking}");
    let fp = evidence("keys.fingerprint_keyed");
    assert!(fp.contains("stored fingerprints are 16 bytes"), "{fp}");
    let scanned = evidence("data.no_clear_pan");
    assert!(
        scanned.contains("no card number found in the clear"),
        "{scanned}"
    );
    assert!(report.target.vault_id.is_some());
    drop(tmp);
}

#[test]
fn live_panvault_server_passes_the_probe() {
    let (tmp, config) = deployment(false);
    let cfg = Config::load(&config).unwrap();
    let vault = Vault::open(&cfg.data_dir, &unlock()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt
        .block_on(crate::http::start(&cfg, vault.clone(), async move {
            let _ = stopped.await;
        }))
        .unwrap();
    let mut opts = options();
    opts.endpoints = vec![server.addr().to_string()];
    let report = assess_with(&config, &opts);
    let _ = stop.send(());
    rt.block_on(server.wait());
    vault.shutdown();
    let r = report.result("tls.endpoints").unwrap();
    let ev = r.evidence.join("\n");
    assert_eq!(r.status, Status::Pass, "{ev}");
    assert!(
        ev.contains("negotiated TLS 1.3") && ev.contains("client certificate required"),
        "{ev}"
    );
    assert!(
        ev.contains("TLS 1.0 ClientHello") && ev.contains("refused"),
        "{ev}"
    );
    drop(tmp);
}

#[test]
fn real_vault_in_bad_states_fails_exactly_that_check() {
    let (tmp, config) = deployment(true);
    let data = tmp.path().join("data");
    let not_passing = |config: &Path, opts: &CollectOptions| statuses(&assess_with(config, opts));
    let base = not_passing(&config, &options());
    assert_eq!(
        base,
        [
            ("keys.fingerprint_keyed".to_owned(), Status::Attest),
            ("tls.configuration".to_owned(), Status::Attest),
            ("tls.endpoints".to_owned(), Status::Skip),
            ("audit.event_classes".to_owned(), Status::Warn)
        ],
        "a fresh share-sealed vault"
    );
    let only = |config: &Path, opts: &CollectOptions, id: &str| {
        let mut want = base.clone();
        want.retain(|(x, _)| x != id);
        want.push((id.to_owned(), Status::Fail));
        want.sort_by(|x, y| x.0.cmp(&y.0));
        let mut got = not_passing(config, opts);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, want, "{id}");
    };
    // A plaintext card in a server log passed with --scan.
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("server.log"),
        "WARN body={\"pan\":\"4000056655665556\"}\n",
    )
    .unwrap();
    let mut opts = options();
    opts.scan = vec![logs.clone()];
    only(&config, &opts, "data.no_clear_pan");
    std::fs::remove_file(logs.join("server.log")).unwrap();
    // An old data key.
    let conn = rusqlite::Connection::open(data.join("vault.db")).unwrap();
    conn.execute(
        "UPDATE data_keys SET created_at = created_at - 400 * 86400",
        [],
    )
    .unwrap();
    only(&config, &opts, "keys.cryptoperiod");
    conn.execute(
        "UPDATE data_keys SET created_at = created_at + 400 * 86400",
        [],
    )
    .unwrap();
    // A broken audit chain.
    let actor: String = conn
        .query_row("SELECT actor FROM audit_events WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute(
        "UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 1",
        [],
    )
    .unwrap();
    only(&config, &opts, "audit.integrity");
    conn.execute("UPDATE audit_events SET actor = ?1 WHERE seq = 1", [actor])
        .unwrap();
    drop(conn);
    assert_eq!(not_passing(&config, &opts), base);
    // A world-readable seal (the database holds the sealed root key).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("vault.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        only(&config, &opts, "access.file_modes");
        std::fs::set_permissions(
            data.join("vault.db"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    // TLS 1.0 allowed.
    let bad = tmp.path().join("tls10.toml");
    std::fs::write(
        &bad,
        CONFIG.replace(
            "client_ca = \"pki/ca.pem\"",
            "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
        ),
    )
    .unwrap();
    only(&bad, &options(), "tls.configuration");
}

/// A code held for the relay passes while sealed and within its lifetime; left
/// past its deadline without a sweep, under a key kept past its destruction
/// time, or beside a column outside the sealed layout, that check alone fails.
#[test]
fn held_security_codes_in_bad_states_fail_exactly_the_cvc_check() {
    let (tmp, config) = deployment(false);
    let data = tmp.path().join("data");
    let opts = crate::VaultOptions {
        cvc_ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let v = Vault::open_with(&data, &unlock(), opts).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut req = TokenizeRequest::new("378282246310005", 12, 2031, v.today()).unwrap();
    req.cvc =
        Some(crate::core::cvc::Cvc::parse("7391", panvault_audit::card::Brand::Amex).unwrap());
    let info = rt
        .block_on(v.tokenize(
            "demo-shop",
            req,
            &AccessContext {
                actor: "storefront".into(),
                peer: Some("127.0.0.1:1".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(info.cvc.is_some_and(|c| c.held));
    v.shutdown();
    drop(v);
    let check = |config: &Path| {
        let r = assess_with(config, &options());
        let c = r.result("data.cvc_not_retained").unwrap().clone();
        (statuses(&r), c.status, c.evidence.join("\n"))
    };
    let (base, status, evidence) = check(&config);
    assert_eq!(status, Status::Pass, "{evidence}");
    assert!(
        evidence.contains("1 security code held under 1 window key")
            && evidence.contains("every held code is sealed"),
        "{evidence}"
    );
    let conn = rusqlite::Connection::open(data.join("vault.db")).unwrap();
    let fails_alone = |what: &str| {
        let (got, status, evidence) = check(&config);
        assert_eq!(status, Status::Fail, "{what}: {evidence}");
        let mut want = base.clone();
        want.push(("data.cvc_not_retained".to_owned(), Status::Fail));
        want.sort_by(|x, y| x.0.cmp(&y.0));
        let mut got = got;
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, want, "{what}");
        evidence
    };
    // Ten minutes past its deadline, never swept.
    conn.execute(
        "UPDATE held_cvcs SET created_at = created_at - 660, deadline = deadline - 660",
        [],
    )
    .unwrap();
    let ev = fails_alone("a code past its deadline");
    assert!(ev.contains("still stored past the deadline"), "{ev}");
    conn.execute(
        "UPDATE held_cvcs SET created_at = created_at + 660, deadline = deadline + 660",
        [],
    )
    .unwrap();
    // A window key kept past its destruction time.
    conn.execute(
        "UPDATE cvc_keys SET created_at = created_at - 3600, destroy_at = destroy_at - 3600",
        [],
    )
    .unwrap();
    let ev = fails_alone("a key past its destruction");
    assert!(ev.contains("after its destruction time"), "{ev}");
    conn.execute(
        "UPDATE cvc_keys SET created_at = created_at + 3600, destroy_at = destroy_at + 3600",
        [],
    )
    .unwrap();
    assert_eq!(check(&config).1, Status::Pass);
    // A code written in the clear beside the sealed one.
    conn.execute("ALTER TABLE held_cvcs ADD COLUMN cvc TEXT", [])
        .unwrap();
    let ev = fails_alone("a clear column");
    assert!(
        ev.contains("column `cvc` outside the sealed layout"),
        "{ev}"
    );
    drop(tmp);
}

#[test]
fn a_stored_key_state_the_vault_does_not_know_fails_the_key_facts() {
    let (tmp, config) = deployment(true);
    let conn = rusqlite::Connection::open(tmp.path().join("data/vault.db")).unwrap();
    // A corrupted row: the schema's CHECK would refuse the write itself.
    conn.pragma_update(None, "ignore_check_constraints", "ON")
        .unwrap();
    conn.execute("UPDATE data_keys SET state = 'paused'", [])
        .unwrap();
    drop(conn);
    let report = assess_with(&config, &options());
    for id in [
        "keys.cryptoperiod",
        "keys.nonce_budget",
        "keys.dual_control",
    ] {
        let r = report.result(id).unwrap();
        assert_eq!(r.status, Status::Error, "{id}: {:?}", r.evidence);
    }
    let ev = report
        .result("keys.cryptoperiod")
        .unwrap()
        .evidence
        .join("\n");
    assert!(ev.contains("could not be read"), "{ev}");
}

#[test]
fn shares_seal_passes_dual_control() {
    let (_tmp, config) = deployment(true);
    let report = assess_with(&config, &options());
    let plain = render(&report, Format::Text, false);
    let r = report.result("keys.dual_control").unwrap();
    assert_eq!(r.status, Status::Pass, "{plain}");
    assert!(r.evidence.join(" ").contains("2-of-3"), "{plain}");
}

#[test]
fn the_erasure_requests_and_card_table_are_read_through_the_store() {
    let (tmp, config) = deployment(false);
    let db = tmp.path().join("data/vault.db");
    let conn = crate::store::Reader::open(&db).unwrap();
    let now = OffsetDateTime::now_utc();
    let table = vault_facts::card_table(&conn).unwrap();
    assert_eq!((table.max_bin, table.max_last), (6, 4));
    assert_eq!(table.fingerprint_len, Some(16));
    assert!(table.columns.iter().any(|c| c == "bin"));
    let Fact::Known(e) = vault_facts::erasure_facts(&conn, now) else {
        panic!("erasure facts")
    };
    assert!(e.open.is_empty());
    assert_eq!(e.completed, 0);
    drop(conn);
    // An open request, three days old; one completed.
    let w = rusqlite::Connection::open(&db).unwrap();
    let t = now.unix_timestamp();
    w.execute(
        "INSERT INTO erasure_requests (tenant, requested_at) VALUES ('demo-shop', ?1)",
        [t - 3 * 86_400 - 60],
    )
    .unwrap();
    w.execute(
        "INSERT INTO erasure_requests (tenant, requested_at, completed_at) VALUES ('demo-shop', ?1, ?1)",
        [t],
    )
    .unwrap();
    drop(w);
    let conn = crate::store::Reader::open(&db).unwrap();
    let Fact::Known(e) = vault_facts::erasure_facts(&conn, now) else {
        panic!("erasure facts")
    };
    assert_eq!(e.completed, 1);
    assert_eq!(e.open.len(), 1);
    assert_eq!(e.open[0].age_days, 3);
    assert!(e.open[0].id.starts_with('#'));
    drop(tmp);
    let _ = config;
}

#[test]
fn preflight_runs_the_tls_and_key_checks_and_names_each_failure() {
    let (tmp, config) = deployment(true);
    let results = preflight(&config, &pci()).unwrap();
    assert_eq!(PreflightFailure::from_results(&results), []);
    let names: Vec<&str> = results.iter().map(|r| r.check.as_str()).collect();
    assert!(
        names.contains(&"tls.configuration")
            && names.contains(&"keys.cryptoperiod")
            && !names.contains(&"data.no_clear_pan"),
        "{names:?}"
    );
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        CONFIG.replace(
            "client_ca = \"pki/ca.pem\"",
            "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
        ),
    )
    .unwrap();
    let failures = PreflightFailure::from_results(&preflight(&bad, &pci()).unwrap());
    let [f] = failures.as_slice() else {
        panic!("{failures:#?}")
    };
    assert_eq!(f.check, "tls.configuration");
    assert_eq!(f.requirements, ["4.2.1", "4.2.1.1"]);
    assert!(f.message.starts_with("FAIL: "), "{f}");
    assert!(
        f.to_string()
            .starts_with("tls.configuration (4.2.1, 4.2.1.1): FAIL:"),
        "{f}"
    );
    let report = assess_with(&bad, &options());
    let ev = report
        .result("tls.configuration")
        .unwrap()
        .evidence
        .join("\n");
    assert!(
        ev.contains("FAIL: TLS 1.0 is allowed")
            && ev.contains("the server refuses this configuration"),
        "{ev}"
    );
}

#[test]
fn preflight_refuses_an_expired_certificate() {
    let (tmp, config) = deployment(true);
    let pki = tmp.path().join("pki");
    let ca = crate::tls::pki::CertAuthority::load(
        &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca.key")).unwrap(),
    )
    .unwrap();
    let mut spec = crate::tls::pki::LeafSpec::localhost_server();
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(400);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let issued = ca.issue(&spec).unwrap();
    std::fs::write(pki.join("server.pem"), issued.cert_pem).unwrap();
    std::fs::write(pki.join("server.key"), issued.key_pem.as_bytes()).unwrap();
    let failures = PreflightFailure::from_results(&preflight(&config, &pci()).unwrap());
    let msg: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(
        msg.iter()
            .any(|m| m.starts_with("tls.certificates (4.2.1)") && m.contains("expired on")),
        "{msg:?}"
    );
}
