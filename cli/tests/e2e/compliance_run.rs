//! `panvault audit run` (the real binary and its collector) over real vaults: a
//! fresh `quickstart` vault fails only what a development vault fails by design,
//! and a real vault put into a bad state fails exactly the check that covers it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use panvault_vault::core::kdf::KdfParams;
use panvault_vault::service::erase::EraseTarget;
use panvault_vault::tls::pki;
use panvault_vault::{
    AccessContext, SealSpec, SecretText, TokenFormat, TokenizeRequest, Unlock, Vault, system_clock,
};
use serde_json::Value;

use crate::util::{self, cards};

const PASS: &str = "correct horse battery staple";

const CONFIG: &str = r#"listen = "127.0.0.1:0"
data_dir = "data"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[[clients]]
name = "storefront"
tenant = "demo-shop"
permissions = ["tokenize", "read", "erase"]
[[clients]]
name = "payments"
tenant = "demo-shop"
permissions = ["detokenize"]
"#;

/// `panvault audit run --format json --config CONFIG ARGS…`: the parsed report.
async fn audit_run(config: &Path, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(["audit", "run", "--format", "json", "--config"])
        .arg(config)
        .args(args);
    let out = util::run_command(cmd, Duration::from_secs(120)).await;
    assert!(
        matches!(out.status.code(), Some(0 | 100 | 101)),
        "audit run: {}\n{}",
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `(id, status)` of every control that did not pass, sorted.
fn not_passing(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn evidence(report: &Value, id: &str) -> String {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["evidence"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    out.sort();
    out
}

#[cfg(unix)]
fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_quickstart_vault_fails_only_the_development_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let qs = crate::binary::quickstart(&dir).await;
    // Something to assess: a card tokenized through the API.
    let r = qs
        .client(&dir, "storefront")
        .tokenize(&cards::fresh())
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let config = dir.join("panvault.toml");
    let report = audit_run(&config, &[]).await;
    let text = report.to_string();
    assert_eq!(
        not_passing(&report),
        pairs(&[
            // one passphrase in dev-passphrase: the development seal, by design
            ("keys.dual_control", "fail"),
            // measured parts pass; the rest is for an assessor
            ("keys.fingerprint_keyed", "attest"),
            ("tls.configuration", "attest"),
            ("data.display_masking", "attest"),
            // no --endpoint given
            ("tls.endpoints", "skip"),
            // a new vault has not seen every event class yet
            ("audit.event_classes", "warn"),
        ]),
        "{:?}",
        not_passing(&report)
    );
    let seal = evidence(&report, "keys.dual_control");
    assert!(
        seal.contains("development vault") && seal.contains("dev-passphrase"),
        "the report says why: {seal}"
    );
    assert!(!dir.join("example-card.json").exists());
    let data_dir = report["target"]["data_dir"].as_str().unwrap();
    assert!(
        !data_dir.ends_with("/.") && !text.contains("/./"),
        "paths are normalised: {data_dir}"
    );
    // The CA key (it can mint a `payments` certificate) sits in a subdirectory.
    chmod(&dir.join("pki/ca.key"), 0o644);
    let report = audit_run(&config, &[]).await;
    let modes = evidence(&report, "access.file_modes");
    assert!(
        modes.contains("FAIL: private key ") && modes.contains("pki/ca.key: 0644"),
        "{modes}"
    );
    chmod(&dir.join("pki/ca.key"), 0o600);
    let err = qs.stop().await;
    assert!(err.contains("stopped"), "{err}");
}

/// A real vault (one passphrase, the minimum KDF), two cards under opaque
/// tokens, a development PKI beside it and a configuration naming it.
async fn deployment(root: &Path) -> PathBuf {
    let data = root.join("data");
    let unlock = || Unlock::Passphrase(SecretText::new(PASS.into()));
    let spec = SealSpec {
        unlock: unlock(),
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    drop(Vault::init(&data, &spec, &system_clock()).unwrap());
    let vault = Vault::open(&data, &unlock()).unwrap();
    let ctx = storefront();
    for _ in 0..2 {
        let req = TokenizeRequest::new(&cards::fresh(), 12, 2031, vault.today()).unwrap();
        vault.tokenize("demo-shop", req, &ctx).await.unwrap();
    }
    pki::ensure_dev_pki(&root.join("pki"), &["storefront", "payments"]).unwrap();
    vault.shutdown();
    let config = root.join("panvault.toml");
    std::fs::write(&config, CONFIG).unwrap();
    config
}

/// The vault of [`deployment`], open (while no `audit run` writes to its log).
fn open(data: &Path) -> Vault {
    Vault::open(data, &Unlock::Passphrase(SecretText::new(PASS.into()))).unwrap()
}

fn storefront() -> AccessContext {
    AccessContext {
        actor: "storefront".into(),
        peer: Some("127.0.0.1:1".into()),
        ..Default::default()
    }
}

/// `digits` completed with its Luhn check digit.
fn luhn_complete(digits: &str) -> String {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let v = u32::from(b - b'0');
            if i % 2 == 0 {
                let d = v * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                v
            }
        })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vault_in_bad_states_fails_exactly_that_check() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let config = deployment(root).await;
    let data = root.join("data");
    let base = not_passing(&audit_run(&config, &[]).await);
    assert_eq!(
        base,
        pairs(&[
            ("keys.dual_control", "fail"),
            ("keys.fingerprint_keyed", "attest"),
            ("tls.configuration", "attest"),
            ("data.display_masking", "attest"),
            ("tls.endpoints", "skip"),
            ("audit.event_classes", "warn"),
        ]),
        "a real passphrase-sealed vault"
    );
    // Runs `audit run` and requires exactly `id` to change, to `status`.
    let only = |config: PathBuf, id: &'static str, status: &'static str| {
        let base = base.clone();
        async move {
            let report = audit_run(&config, &[]).await;
            let mut want: Vec<(String, String)> =
                base.into_iter().filter(|(x, _)| x != id).collect();
            want.push((id.to_owned(), status.to_owned()));
            want.sort();
            assert_eq!(
                not_passing(&report),
                want,
                "{id}: {}",
                evidence(&report, id)
            );
            report
        }
    };
    let sql = || rusqlite::Connection::open(data.join("vault.db")).unwrap();

    // data.no_clear_pan: a card number in a file in the data directory.
    let notes = data.join("notes.txt");
    std::fs::write(&notes, format!("customer card {}\n", cards::fresh())).unwrap();
    chmod(&notes, 0o600);
    only(config.clone(), "data.no_clear_pan", "fail").await;
    std::fs::remove_file(&notes).unwrap();

    // access.file_modes: a readable file in a subdirectory of the data directory,
    // then the CA key beside the client CA the configuration names.
    let sub = data.join("exports");
    std::fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o700);
    std::fs::write(sub.join("tokens.csv"), "tok\n").unwrap();
    chmod(&sub.join("tokens.csv"), 0o644);
    only(config.clone(), "access.file_modes", "fail").await;
    std::fs::remove_dir_all(&sub).unwrap();
    chmod(&root.join("pki/ca.key"), 0o644);
    let r = only(config.clone(), "access.file_modes", "fail").await;
    assert!(
        evidence(&r, "access.file_modes").contains("pki/ca.key: 0644"),
        "{}",
        evidence(&r, "access.file_modes")
    );
    chmod(&root.join("pki/ca.key"), 0o600);

    // keys.cryptoperiod: an old data key.
    let db = sql();
    db.execute(
        "UPDATE data_keys SET created_at = created_at - 400 * 86400",
        [],
    )
    .unwrap();
    only(config.clone(), "keys.cryptoperiod", "fail").await;
    db.execute(
        "UPDATE data_keys SET created_at = created_at + 400 * 86400",
        [],
    )
    .unwrap();

    // keys.nonce_budget: the active key has used up its random-nonce budget.
    let used: i64 = db
        .query_row(
            "SELECT encryptions FROM data_keys WHERE state = 'active'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE data_keys SET encryptions = 4294967296 WHERE state = 'active'",
        [],
    )
    .unwrap();
    only(config.clone(), "keys.nonce_budget", "fail").await;
    db.execute(
        "UPDATE data_keys SET encryptions = ?1 WHERE state = 'active'",
        [used],
    )
    .unwrap();

    // keys.kek_strength: a passphrase KEK derived with too little memory.
    db.execute("UPDATE seal SET kdf_m_kib = kdf_m_kib / 4", [])
        .unwrap();
    only(config.clone(), "keys.kek_strength", "fail").await;
    db.execute("UPDATE seal SET kdf_m_kib = kdf_m_kib * 4", [])
        .unwrap();

    // keys.fingerprint_keyed: no wrapped fingerprint key.
    let (fp_wrapped, fp_at): (Vec<u8>, i64) = db
        .query_row(
            "SELECT wrapped, created_at FROM wrapped_keys WHERE name = 'fingerprint'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    db.execute("DELETE FROM wrapped_keys WHERE name = 'fingerprint'", [])
        .unwrap();
    only(config.clone(), "keys.fingerprint_keyed", "fail").await;
    db.execute(
        "INSERT INTO wrapped_keys (name, wrapped, created_at) VALUES ('fingerprint', ?1, ?2)",
        rusqlite::params![fp_wrapped, fp_at],
    )
    .unwrap();

    // data.no_sensitive_auth_data: a CVV column in the cards table.
    db.execute("ALTER TABLE cards ADD COLUMN cvv TEXT", [])
        .unwrap();
    only(config.clone(), "data.no_sensitive_auth_data", "fail").await;
    db.execute("ALTER TABLE cards DROP COLUMN cvv", []).unwrap();

    // data.retention: a card whose expiry month ended long ago.
    db.execute(
        "UPDATE cards SET exp_year = exp_year - 30 WHERE id = (SELECT min(id) FROM cards)",
        [],
    )
    .unwrap();
    only(config.clone(), "data.retention", "fail").await;
    db.execute(
        "UPDATE cards SET exp_year = exp_year + 30 WHERE id = (SELECT min(id) FROM cards)",
        [],
    )
    .unwrap();

    // audit.integrity: an edited audit event.
    let actor: String = db
        .query_row("SELECT actor FROM audit_events WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 1",
        [],
    )
    .unwrap();
    only(config.clone(), "audit.integrity", "fail").await;
    db.execute("UPDATE audit_events SET actor = ?1 WHERE seq = 1", [actor])
        .unwrap();
    drop(db);

    // tls.configuration: TLS 1.0 allowed (the server would refuse the file).
    let bad = root.join("tls10.toml");
    std::fs::write(
        &bad,
        CONFIG.replace(
            "client_ca = \"pki/ca.pem\"",
            "client_ca = \"pki/ca.pem\"\nmin_version = \"1.0\"",
        ),
    )
    .unwrap();
    only(bad, "tls.configuration", "fail").await;

    // access.permissions: a client with a generic identity.
    let bad = root.join("catch-all.toml");
    std::fs::write(
        &bad,
        format!("{CONFIG}[[clients]]\nname = \"ops\"\ncommon_name = \"admin\"\ntenant = \"demo-shop\"\npermissions = [\"read\"]\n"),
    )
    .unwrap();
    only(bad, "access.permissions", "fail").await;

    // tls.certificates: an expired server certificate.
    let pki_dir = root.join("pki");
    let saved = (
        std::fs::read(pki_dir.join("server.pem")).unwrap(),
        std::fs::read(pki_dir.join("server.key")).unwrap(),
    );
    let ca = pki::CertAuthority::load(
        &std::fs::read_to_string(pki_dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(pki_dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let mut spec = pki::LeafSpec::localhost_server();
    let now = time::OffsetDateTime::now_utc();
    spec.not_before = now - time::Duration::days(400);
    spec.not_after = now - time::Duration::days(1);
    let issued = ca.issue(&spec).unwrap();
    std::fs::write(pki_dir.join("server.pem"), issued.cert_pem).unwrap();
    std::fs::write(pki_dir.join("server.key"), issued.key_pem.as_bytes()).unwrap();
    only(config.clone(), "tls.certificates", "fail").await;
    std::fs::write(pki_dir.join("server.pem"), &saved.0).unwrap();
    std::fs::write(pki_dir.join("server.key"), &saved.1).unwrap();

    // keys.retired_versions: records still under the previous key 60 days after a
    // rotation (the re-wrap grace is 30).
    let pass = root.join("pass");
    std::fs::write(&pass, format!("{PASS}\n")).unwrap();
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(["keys", "rotate", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass);
    let out = util::run_command(cmd, Duration::from_secs(120)).await;
    assert!(out.success(), "{}", out.stderr);
    let db = sql();
    db.execute(
        "UPDATE data_keys SET created_at = created_at - 60 * 86400 WHERE version = 2",
        [],
    )
    .unwrap();
    only(config.clone(), "keys.retired_versions", "fail").await;
    db.execute(
        "UPDATE data_keys SET created_at = created_at + 60 * 86400 WHERE version = 2",
        [],
    )
    .unwrap();
    drop(db);
    // (just rotated: still what the base run saw)
    assert_eq!(not_passing(&audit_run(&config, &[]).await), base);

    // data.display_masking: a 12-digit card under a format-preserving token keeps
    // 10 of its 12 digits in the clear.
    let vault = open(&data);
    let mut req =
        TokenizeRequest::new(&luhn_complete("50000000000"), 12, 2031, vault.today()).unwrap();
    req.format = TokenFormat::BinLast4;
    vault
        .tokenize("demo-shop", req, &storefront())
        .await
        .unwrap();
    vault.shutdown();
    let r = only(config.clone(), "data.display_masking", "fail").await;
    assert!(
        evidence(&r, "data.display_masking").contains(
            "1 card of 12 digits (format-preserving tokens): 10 of 12 digits in the clear, 2 hidden"
        ),
        "{}",
        evidence(&r, "data.display_masking")
    );

    // gdpr.erasure_deadline (GDPR policy): an erasure request that arrived but
    // could not be carried out (its audit event cannot be written) stays open,
    // and is overdue 40 days later.
    let gdpr = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/gdpr.toml");
    let gdpr = gdpr.to_str().unwrap();
    let vault = open(&data);
    let done = vault
        .erase(
            "demo-shop",
            EraseTarget::Subject("cust_1".into()),
            &storefront(),
        )
        .await;
    assert!(done.is_ok(), "{:?}", done.err());
    let db = sql();
    db.execute_batch(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END",
    )
    .unwrap();
    let failed = vault
        .erase(
            "demo-shop",
            EraseTarget::Subject("cust_2".into()),
            &storefront(),
        )
        .await;
    assert!(
        failed.is_err(),
        "an erasure that cannot be audited is refused"
    );
    db.execute_batch("DROP TRIGGER no_audit").unwrap();
    let (open, completed): (i64, i64) = db
        .query_row(
            "SELECT count(*) FILTER (WHERE completed_at IS NULL), count(*) FILTER (WHERE completed_at >= requested_at) FROM erasure_requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((open, completed), (1, 1));
    drop(db);
    vault.shutdown();
    let later =
        (time::OffsetDateTime::now_utc() + time::Duration::days(40) + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    let report = audit_run(&config, &["--policy", gdpr, "--now", &later]).await;
    assert_eq!(
        not_passing(&report),
        pairs(&[
            ("gdpr.encryption-in-transit", "attest"),
            ("gdpr.erasure-deadline", "fail"),
            ("gdpr.pseudonymisation", "attest"),
        ]),
        "{}",
        evidence(&report, "gdpr.erasure-deadline")
    );
    assert!(
        evidence(&report, "gdpr.erasure-deadline").contains("open for 40 days (deadline 30 days)"),
        "{}",
        evidence(&report, "gdpr.erasure-deadline")
    );
    let report = audit_run(&config, &["--policy", gdpr]).await;
    assert_eq!(
        not_passing(&report),
        pairs(&[
            ("gdpr.encryption-in-transit", "attest"),
            ("gdpr.pseudonymisation", "attest"),
        ]),
        "{report}"
    );
}
