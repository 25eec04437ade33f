//! Shared by the compliance tests: a vault-like data directory in a good state
//! (audit log, modes, logs, a throwaway PKI) and the facts of it.
// Test helpers: a panic is a test failure, and each test binary uses a subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use panvault_audit::compliance::{
    AccessFacts, ClientAuth, ClientFacts, CvcFacts, DataFacts, DataKeyFacts, EndpointFacts,
    ErasureFacts, Fact, Facts, FileRole, FingerprintFacts, HelloProbe, HelloReply, KeyFacts,
    KeyState, MaskingRow, Negotiated, Policy, Report, SealFacts, Status, Target, TlsConfigFacts,
    collect, evaluate, x509,
};
use panvault_audit::compliance::{CertRole, CertSource};
use panvault_audit::log::{Action, Actor, AuditChain, NewEvent, Outcome, SigningKey, migrate};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rusqlite::Connection;
use time::{Duration, OffsetDateTime};

/// A tool a test needs is missing. Outside CI the test says SKIPPED and returns; under
/// CI (`CI` set, as `.ci/run` runs) or with `PANVAULT_REQUIRE_TOOLS=1` it fails: a skip
/// counted as a pass would hide a hole, and `.ci/run` installs every tool.
pub fn tool_missing(what: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let required = std::env::var("PANVAULT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        !(ci || required),
        "{what} is missing, and CI requires it (.ci/run installs it)"
    );
    eprintln!("SKIPPED: {what} is missing");
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(unix)]
pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A CA and a server certificate for localhost / 127.0.0.1 (ECDSA P-256).
pub struct Pki {
    pub ca_pem: PathBuf,
    pub server_pem: PathBuf,
    pub server_key: PathBuf,
    pub ca_der: Vec<u8>,
    pub server_der: Vec<u8>,
    pub server_key_der: Vec<u8>,
    pub client_der: Vec<u8>,
    pub client_key_der: Vec<u8>,
}

pub fn pki(dir: &Path, server_not_before: OffsetDateTime, server_not_after: OffsetDateTime) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "panvault test CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now() - Duration::days(1);
    ca_params.not_after = now() + Duration::days(3650);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |cn: &str, before: OffsetDateTime, after: OffsetDateTime| {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.not_before = before;
        p.not_after = after;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert, key)
    };
    let (server, server_key) = leaf("localhost", server_not_before, server_not_after);
    let (client, client_key) = leaf(
        "storefront",
        now() - Duration::days(1),
        now() + Duration::days(365),
    );
    let ca_pem = dir.join("ca.pem");
    let server_pem = dir.join("server.pem");
    let server_key_path = dir.join("server.key");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&server_pem, server.pem()).unwrap();
    std::fs::write(&server_key_path, server_key.serialize_pem()).unwrap();
    #[cfg(unix)]
    chmod(&server_key_path, 0o600);
    Pki {
        ca_pem,
        server_pem,
        server_key: server_key_path,
        ca_der: ca_cert.der().to_vec(),
        server_der: server.der().to_vec(),
        server_key_der: server_key.serialize_der(),
        client_der: client.der().to_vec(),
        client_key_der: client_key.serialize_der(),
    }
}

/// A good data directory: `vault.db` (0600) with an intact audit log holding every
/// 10.2.1 event class, `audit-signing.pub`, a clean log directory, a PKI.
pub struct GoodVault {
    pub tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub db: PathBuf,
    pub pubkey: PathBuf,
    pub log_dir: PathBuf,
    pub pki: Pki,
    pub key: SigningKey,
}

pub fn event(action: Action, actor: Actor) -> NewEvent {
    NewEvent::new(
        now() - Duration::minutes(5),
        actor,
        action,
        Outcome::Success,
    )
}

pub fn client() -> Actor {
    Actor::client("storefront", "ab".repeat(32))
}

/// Appends events and signs a checkpoint.
pub fn append(db: &Path, key: &SigningKey, events: &[NewEvent]) {
    let mut conn = Connection::open(db).unwrap();
    let mut chain = AuditChain::load(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    for e in events {
        chain.append(&tx, e).unwrap();
    }
    chain.checkpoint(&tx, key, now()).unwrap();
    tx.commit().unwrap();
}

pub fn good_events() -> Vec<NewEvent> {
    let admin = Actor::admin("ops");
    vec![
        event(Action::Init, admin.clone()),
        event(Action::ServeStart, admin.clone()),
        event(Action::Tokenize, client())
            .with_tenant("demo-shop")
            .with_token("tok_a")
            .with_peer("127.0.0.1:5000")
            .with_request_id("r1"),
        event(Action::Detokenize, client())
            .with_tenant("demo-shop")
            .with_token("tok_a")
            .with_purpose("refund")
            .with_peer("127.0.0.1:5000")
            .with_request_id("r2"),
        NewEvent::new(
            now(),
            Actor::unauthenticated(None),
            Action::Denied,
            Outcome::Denied("bad_certificate".into()),
        )
        .with_peer("127.0.0.1:5001"),
        event(Action::KeyRotate, admin.clone()).with_details("new_version=2"),
        event(Action::AuditVerify, admin),
    ]
}

pub fn good_vault() -> GoodVault {
    vault_with_events(&good_events())
}

pub fn vault_with_events(events: &[NewEvent]) -> GoodVault {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    #[cfg(unix)]
    chmod(&data_dir, 0o700);
    let db = data_dir.join("vault.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE cards (id INTEGER PRIMARY KEY, token TEXT, bin TEXT, last4 TEXT);",
        )
        .unwrap();
        migrate(&conn).unwrap();
    }
    #[cfg(unix)]
    chmod(&db, 0o600);
    let (key, _) = SigningKey::generate().unwrap();
    let pubkey = data_dir.join("audit-signing.pub");
    key.public_key().write_to(&pubkey).unwrap();
    append(&db, &key, events);
    let log_dir = tmp.path().join("logs");
    std::fs::create_dir(&log_dir).unwrap();
    std::fs::write(
        log_dir.join("server.log"),
        "2025-06-01T00:00:00Z INFO tokenize tenant=demo-shop token=tok_a last4=1111 status=200\n",
    )
    .unwrap();
    let pki = pki(
        &tmp.path().join("pki"),
        now() - Duration::days(1),
        now() + Duration::days(365),
    );
    GoodVault {
        tmp,
        data_dir,
        db,
        pubkey,
        log_dir,
        pki,
        key,
    }
}

pub fn key_facts() -> KeyFacts {
    KeyFacts {
        data_keys: vec![DataKeyFacts {
            version: 1,
            state: KeyState::Active,
            age_days: 10,
            superseded_days: None,
            records: 5,
            encryptions: 1000,
        }],
        root_age_days: 10,
        seal: SealFacts::Shares {
            total: 3,
            threshold: 2,
        },
        fingerprint: FingerprintFacts {
            algorithm: "HMAC-SHA-256/128, per-tenant key (HKDF)".into(),
            keyed: true,
            key_wrapped: true,
            stored_len: Some(16),
        },
    }
}

pub fn data_facts() -> DataFacts {
    DataFacts {
        records: 5,
        records_past_retention: 0,
        retention_days_after_expiry: 90,
        card_columns: [
            "id",
            "token",
            "tenant",
            "key_version",
            "nonce",
            "ciphertext",
            "fingerprint",
            "brand",
            "bin",
            "last4",
            "exp_month",
            "exp_year",
        ]
        .map(String::from)
        .to_vec(),
        max_leading_digits: 6,
        max_trailing_digits: 4,
    }
}

pub fn tls_facts(v: &GoodVault) -> TlsConfigFacts {
    TlsConfigFacts {
        source: "panvault.toml".into(),
        versions: vec!["1.2".into(), "1.3".into()],
        cipher_suites: [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ]
        .map(String::from)
        .to_vec(),
        client_auth: ClientAuth::Required,
        client_ca: Some(v.pki.ca_pem.display().to_string()),
        crls: 0,
        config_error: None,
    }
}

pub fn cert_facts(v: &GoodVault) -> Vec<CertSource> {
    vec![
        x509::read_cert_file(&v.pki.server_pem, CertRole::ServerLeaf),
        x509::read_cert_file(&v.pki.ca_pem, CertRole::ClientCa),
    ]
}

pub fn good_endpoint(v: &GoodVault) -> EndpointFacts {
    let refused = |offered: &str| HelloProbe {
        offered: offered.into(),
        reply: HelloReply::Alert {
            description: "protocol_version".into(),
        },
    };
    EndpointFacts {
        endpoint: "127.0.0.1:8443".into(),
        address: Some("127.0.0.1:8443".into()),
        error: None,
        negotiated: Some(Negotiated {
            version: "TLS 1.3".into(),
            suite: "TLS13_AES_256_GCM_SHA384".into(),
            alpn: Some("h2".into()),
        }),
        handshake_error: Some("received fatal alert: CertificateRequired".into()),
        chain: vec![x509::cert_facts(&v.pki.server_der).unwrap()],
        client_cert_requested: true,
        anonymous_refused: true,
        legacy: vec![
            refused("TLS 1.0 ClientHello"),
            refused("TLS 1.1 ClientHello"),
            HelloProbe {
                offered: "TLS 1.2 CBC".into(),
                reply: HelloReply::Closed,
            },
        ],
    }
}

pub fn access_facts() -> AccessFacts {
    let c = |name: &str, perms: &[&str]| ClientFacts {
        name: name.into(),
        common_name: Some(name.into()),
        uri_san: None,
        tenant: "demo-shop".into(),
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
    };
    AccessFacts {
        source: "panvault.toml".into(),
        clients: vec![
            c("storefront", &["tokenize", "read"]),
            c("payments", &["detokenize"]),
            c("privacy", &["erase", "delete"]),
        ],
        all_permissions: ["tokenize", "read", "detokenize", "delete", "erase"]
            .map(String::from)
            .to_vec(),
    }
}

/// Collects the file-based facts again (after a test changed files).
pub fn refresh(v: &GoodVault, f: &mut Facts) {
    f.scan = Fact::from_result(collect::scan_facts(&[
        v.data_dir.clone(),
        v.log_dir.clone(),
    ]));
    f.files = Fact::from_result(collect::data_dir_modes(
        &v.data_dir,
        &[(v.pki.server_key.clone(), FileRole::TlsKey)],
    ));
    f.audit_log = Fact::from_result(collect::audit_log_facts(
        &v.db,
        &v.pubkey,
        (Some(365), "test".into()),
    ));
    f.certificates = Fact::Known(cert_facts(v));
    f.key_files = Fact::Known(vec![x509::read_key_file(&v.pki.server_key, "tls.key")]);
}

pub fn good_facts(v: &GoodVault) -> Facts {
    let mut f = Facts::unknown(now());
    f.keys = Fact::Known(key_facts());
    f.data = Fact::Known(data_facts());
    f.tls = Fact::Known(tls_facts(v));
    f.endpoints = vec![good_endpoint(v)];
    f.access = Fact::Known(access_facts());
    f.erasure = Fact::Known(ErasureFacts {
        open: Vec::new(),
        completed: 2,
    });
    // Format-preserving tokens of 16-digit cards: the digits kept in the clear
    // per length are measured.
    f.masking = Fact::Known(vec![MaskingRow {
        pan_len: Some(16),
        cards: 2,
        leading: 6,
        trailing: 4,
    }]);
    f.cvc = Fact::Known(cvc_facts());
    refresh(v, &mut f);
    f
}

/// One security code held for the relay, sealed, 5 minutes before its deadline,
/// under a window key 5 minutes old.
pub fn cvc_facts() -> CvcFacts {
    let layout: Vec<String> = [
        "tenant",
        "token",
        "key_id",
        "nonce",
        "sealed",
        "created_at",
        "deadline",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    CvcFacts {
        columns: layout.clone(),
        sealed_layout: layout,
        held: 1,
        past_deadline: 0,
        most_overdue_secs: None,
        longest_lifetime_secs: Some(900),
        sealed_len: Some((19, 19)),
        orphaned: 0,
        keys: 1,
        oldest_key_age_secs: Some(300),
        longest_key_life_secs: Some(1800),
        key_overdue_secs: None,
    }
}

/// The controls that are attested, never measured, on any panvault deployment
/// whose facts are otherwise good.
pub const ATTESTED: [&str; 2] = ["keys.fingerprint_keyed", "tls.configuration"];

pub fn pci() -> Policy {
    Policy::builtin("pci-dss-4.0.1").unwrap().unwrap()
}

pub fn gdpr() -> Policy {
    Policy::builtin("gdpr").unwrap().unwrap()
}

pub fn run(policy: &Policy, f: &Facts) -> Report {
    let target = Target {
        config: "panvault.toml".into(),
        data_dir: "data".into(),
        host: "test".into(),
        ..Target::default()
    };
    evaluate(policy, f, target, now())
}

/// The checks (by built-in name) that did not pass under both shipped policies.
pub fn not_passing(f: &Facts) -> Vec<(String, Status)> {
    let mut out: Vec<(String, Status)> = [pci(), gdpr()]
        .iter()
        .flat_map(|p| run(p, f).results)
        .filter(|r| {
            r.status != Status::Pass
                && !(r.status == Status::Attest && ATTESTED.contains(&r.check.as_str()))
        })
        .map(|r| (r.check, r.status))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup();
    out
}
