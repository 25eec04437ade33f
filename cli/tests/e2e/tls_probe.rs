//! The live TLS probe of `panvault audit run --endpoint` agrees with sslyze, a
//! scanner nobody here wrote, on the real vault and on deliberately weak
//! `openssl s_server` set-ups: the same protocol versions accepted, the same
//! suites accepted (so the same answer to "is any non-AEAD suite accepted?"),
//! the same client-certificate requirement, and `tls.endpoints`
//! fails exactly when sslyze's findings say it should. The vault's
//! `tls.inventory` suites are the ones sslyze finds it serving.
//!
//! Needs `openssl` and Python's `sslyze` (`pip install sslyze`; `.ci/run`
//! installs it): without them the tests say SKIPPED, under CI they fail.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use panvault_audit::compliance::{
    EndpointFacts, Facts, Policy, Status, Target, evaluate, probe, suite_is_aead, version_rank,
};
use serde_json::Value;

use crate::util::{self, TestPki, TestServer, run_command};

/// Per connection of the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole sslyze scan (it takes about a second on 127.0.0.1).
const SSLYZE_LIMIT: Duration = Duration::from_secs(180);

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether openssl and sslyze are there; says SKIPPED (or fails under CI) if not.
fn tools(test: &str) -> bool {
    if !have("openssl", &["version"]) {
        util::tools::missing(test, "`openssl` is not installed (apt-get install openssl)");
        return false;
    }
    if !have("python3", &["-c", "import sslyze"]) {
        util::tools::missing(
            test,
            "Python's sslyze is not installed (pip install sslyze)",
        );
        return false;
    }
    true
}

/// An `openssl s_server` child, killed (and reaped) on drop.
struct SServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `openssl s_server` on 127.0.0.1 with the PKI's server certificate
/// (ECDSA P-256) and `args`; returns once it says ACCEPT.
fn s_server(pki: &Path, args: &[&str]) -> SServer {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", &addr.to_string()])
        .arg("-cert")
        .arg(pki.join("server.pem"))
        .arg("-key")
        .arg(pki.join("server.key"))
        .args(args)
        // stdin stays open: s_server stops at the end of its input.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = SServer { child, addr };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if line.starts_with("ACCEPT") {
                let _ = tx.send(());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("openssl s_server {args:?} did not start"));
    server
}

/// What sslyze found.
#[derive(Debug)]
struct Sslyze {
    /// `SSL 3.0`, `TLS 1.0` … with at least one accepted suite.
    versions: BTreeSet<String>,
    /// `(version, IANA suite name)` accepted.
    suites: BTreeSet<(String, String)>,
    /// `DISABLED`, `OPTIONAL` or `REQUIRED`.
    client_auth: String,
}

async fn sslyze(addr: SocketAddr) -> Sslyze {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sslyze.json");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        "-m",
        "sslyze",
        "--sslv2",
        "--sslv3",
        "--tlsv1",
        "--tlsv1_1",
        "--tlsv1_2",
        "--tlsv1_3",
    ])
    .arg(format!("--json_out={}", json.display()))
    .arg(addr.to_string());
    let out = run_command(cmd, SSLYZE_LIMIT).await;
    assert!(
        out.success(),
        "sslyze failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let server = &v["server_scan_results"][0];
    assert_eq!(
        server["connectivity_status"], "COMPLETED",
        "sslyze could not connect: {server}"
    );
    let mut found = Sslyze {
        versions: BTreeSet::new(),
        suites: BTreeSet::new(),
        client_auth: server["connectivity_result"]["client_auth_requirement"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    for (key, version) in [
        ("ssl_2_0_cipher_suites", "SSL 2.0"),
        ("ssl_3_0_cipher_suites", "SSL 3.0"),
        ("tls_1_0_cipher_suites", "TLS 1.0"),
        ("tls_1_1_cipher_suites", "TLS 1.1"),
        ("tls_1_2_cipher_suites", "TLS 1.2"),
        ("tls_1_3_cipher_suites", "TLS 1.3"),
    ] {
        let scan = &server["scan_result"][key];
        assert_eq!(scan["status"], "COMPLETED", "sslyze {key}: {scan}");
        for s in scan["result"]["accepted_cipher_suites"].as_array().unwrap() {
            let name = s["cipher_suite"]["name"].as_str().unwrap().to_owned();
            found.versions.insert(version.to_owned());
            found.suites.insert((version.to_owned(), name));
        }
    }
    found
}

fn pci() -> Policy {
    Policy::builtin("pci-dss-4.0.1").unwrap().unwrap()
}

/// `tls.endpoints` for one endpoint: status and evidence.
fn endpoint_check(e: &EndpointFacts) -> (Status, String) {
    let now = time::OffsetDateTime::now_utc();
    let mut f = Facts::unknown(now);
    f.endpoints = vec![e.clone()];
    let report = evaluate(&pci(), &f, Target::default(), now);
    let r = report.result("tls.endpoints").unwrap();
    (r.status, r.evidence.join("\n"))
}

async fn probe_of(addr: SocketAddr) -> EndpointFacts {
    tokio::task::spawn_blocking(move || probe::probe(&addr.to_string(), PROBE_TIMEOUT))
        .await
        .unwrap()
}

/// Requires the probe and the check to agree with sslyze on `addr`; returns
/// sslyze's findings.
async fn agree(setup: &str, addr: SocketAddr) -> Sslyze {
    let s = sslyze(addr).await;
    let e = probe_of(addr).await;
    assert_eq!(e.error, None, "{setup}: {e:?}");
    let versions = probe::accepted_versions(&e);
    assert_eq!(
        versions, s.versions,
        "{setup}: accepted protocol versions (probe, sslyze)"
    );
    // The probe names every suite it saw accepted; TLS 1.3's CCM suites it
    // cannot offer (rustls has none), so those are left out of sslyze's list.
    let probe_suites: BTreeSet<(String, String)> = probe::accepted_suites(&e).into_iter().collect();
    let sslyze_suites: BTreeSet<(String, String)> = s
        .suites
        .iter()
        .filter(|(v, n)| !(v == "TLS 1.3" && n.contains("_CCM")))
        .cloned()
        .collect();
    assert_eq!(
        probe_suites, sslyze_suites,
        "{setup}: accepted suites (probe, sslyze)"
    );
    let weak = |set: &BTreeSet<(String, String)>| set.iter().any(|(_, n)| !suite_is_aead(n));
    assert_eq!(
        weak(&probe_suites),
        weak(&sslyze_suites),
        "{setup}: a non-AEAD suite accepted (probe, sslyze)"
    );
    let probe_auth = match (e.client_cert_requested, e.anonymous_refused) {
        (false, _) => "DISABLED",
        (true, false) => "OPTIONAL",
        (true, true) => "REQUIRED",
    };
    assert_eq!(
        probe_auth, s.client_auth,
        "{setup}: client authentication (probe, sslyze)"
    );

    let legacy = s
        .versions
        .iter()
        .any(|v| version_rank(v) < version_rank("TLS 1.2"));
    let should_fail = legacy || weak(&sslyze_suites) || s.client_auth != "REQUIRED";
    let (status, evidence) = endpoint_check(&e);
    let expected = if should_fail {
        Status::Fail
    } else {
        Status::Pass
    };
    assert_eq!(
        status, expected,
        "{setup}: tls.endpoints; sslyze found {s:?}\n{evidence}"
    );
    // The evidence names what was accepted.
    for (v, n) in &sslyze_suites {
        assert!(
            evidence.contains(&format!("ServerHello {v} {n}")),
            "{setup}: {v} {n} not named\n{evidence}"
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_agrees_with_sslyze_on_the_vault() {
    if !tools("probe_agrees_with_sslyze_on_the_vault") {
        return;
    }
    let server = TestServer::start().await;
    let s = agree("the vault", server.addr).await;
    assert_eq!(
        s.versions.iter().map(String::as_str).collect::<Vec<_>>(),
        ["TLS 1.2", "TLS 1.3"]
    );
    assert_eq!(s.client_auth, "REQUIRED");
    // tls.inventory's suites are what the endpoint serves: the ones its key can
    // negotiate, by the names sslyze prints.
    let inventory: BTreeSet<String> =
        panvault_vault::tls::negotiable_suite_names(&server.config.tls)
            .into_iter()
            .collect();
    let served: BTreeSet<String> = s.suites.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        inventory, served,
        "tls.inventory's suites (left) and sslyze's (right)"
    );
}

/// One weak set-up: `args` to `openssl s_server`; `fails` says whether sslyze
/// must find something wrong with it (a check on the set-up itself).
async fn weak_setup(test: &str, args: &[&str], fails: bool) -> Sslyze {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"));
    let ca = pki.dir.join("ca.pem");
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "CA" { ca.to_str().unwrap() } else { a })
        .collect();
    let server = s_server(&pki.dir, &args);
    let s = agree(test, server.addr).await;
    let legacy = s
        .versions
        .iter()
        .any(|v| version_rank(v) < version_rank("TLS 1.2"));
    let weak = s.suites.iter().any(|(_, n)| !suite_is_aead(n));
    assert_eq!(
        legacy || weak || s.client_auth != "REQUIRED",
        fails,
        "{test}: the set-up is not what it means to be: {s:?}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_protocols_with_only_a_null_suite() {
    // TLS 1.0 and 1.1 work only with ECDHE-ECDSA-NULL-SHA (the GCM suites
    // need TLS 1.2): a probe offering a short legacy list is told
    // handshake_failure and reads it as "refused".
    let t = "legacy_protocols_with_only_a_null_suite";
    if !tools(t) {
        return;
    }
    let s = weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1",
            "-cipher",
            "ECDHE+AESGCM:ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0",
        ],
        true,
    )
    .await;
    assert!(
        s.versions.contains("TLS 1.0") && s.versions.contains("TLS 1.1"),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_only_with_one_cbc_suite_and_client_certificates() {
    let t = "tls_1_1_only_with_one_cbc_suite_and_client_certificates";
    if !tools(t) {
        return;
    }
    weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1.1",
            "-max_protocol",
            "TLSv1.1",
            "-cipher",
            "ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0",
            "-Verify",
            "1",
            "-verifyCAfile",
            "CA",
        ],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camellia_cbc_only_tls_1_2_with_client_certificates() {
    let t = "camellia_cbc_only_tls_1_2_with_client_certificates";
    if !tools(t) {
        return;
    }
    let s = weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1.2",
            "-max_protocol",
            "TLSv1.2",
            "-cipher",
            "CAMELLIA:!aNULL:@SECLEVEL=0",
            "-Verify",
            "1",
            "-verifyCAfile",
            "CA",
        ],
        true,
    )
    .await;
    assert!(
        s.suites.iter().all(|(_, n)| n.contains("CAMELLIA")),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_suite_beside_aead_at_tls_1_2() {
    let t = "a_null_suite_beside_aead_at_tls_1_2";
    if !tools(t) {
        return;
    }
    let s = weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1.2",
            "-cipher",
            "ECDHE+AESGCM:eNULL:!aNULL:@SECLEVEL=0",
            "-Verify",
            "1",
            "-verifyCAfile",
            "CA",
        ],
        true,
    )
    .await;
    assert!(s.suites.iter().any(|(_, n)| n.contains("NULL")), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aead_only_without_client_certificates() {
    let t = "aead_only_without_client_certificates";
    if !tools(t) {
        return;
    }
    let s = weak_setup(
        t,
        &["-min_protocol", "TLSv1.2", "-cipher", "ECDHE+AESGCM"],
        true,
    )
    .await;
    assert_eq!(s.client_auth, "DISABLED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aead_only_with_optional_client_certificates() {
    let t = "aead_only_with_optional_client_certificates";
    if !tools(t) {
        return;
    }
    let s = weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1.2",
            "-cipher",
            "ECDHE+AESGCM",
            "-verify",
            "1",
            "-verifyCAfile",
            "CA",
        ],
        true,
    )
    .await;
    assert_eq!(s.client_auth, "OPTIONAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aead_only_with_required_client_certificates_passes() {
    // The control: an OpenSSL front end configured like the vault passes, and
    // sslyze agrees there is nothing to find.
    let t = "aead_only_with_required_client_certificates_passes";
    if !tools(t) {
        return;
    }
    weak_setup(
        t,
        &[
            "-min_protocol",
            "TLSv1.2",
            "-cipher",
            "ECDHE+AESGCM",
            "-Verify",
            "1",
            "-verifyCAfile",
            "CA",
        ],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_naming_an_ip_address_in_sni_leave_no_warning_each() {
    // Scanners connecting by IP put the address in the server name; rustls
    // warned about each such ClientHello.
    let tmp = tempfile::tempdir().unwrap();
    let v = util::BinVault::create(tmp.path());
    let server = util::ServeProcess::start(&v).await.unwrap();
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        for _ in 0..5 {
            // A name as long as the address, then the address in its place.
            let mut hello =
                probe::client_hello(probe::TLS1_2, &[0xc02b, 0xc02c], Some("x.invalid"), [7; 32])
                    .unwrap();
            let at = hello.windows(9).position(|w| w == b"x.invalid").unwrap();
            hello[at..at + 9].copy_from_slice(b"127.0.0.1");
            let reply = probe::send_hello(addr, &hello, PROBE_TIMEOUT).unwrap();
            assert!(reply.accepted(), "{reply:?}");
        }
    })
    .await
    .unwrap();
    // Stop it and read everything it wrote: "panvault: stopped" comes last.
    let mut server = server;
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("no exit 30 s after SIGTERM")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("panvault: stopped") {
        assert!(
            std::time::Instant::now() < deadline,
            "{status}: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = server.stderr();
    assert!(!stderr.contains("Illegal SNI"), "{stderr}");
}
