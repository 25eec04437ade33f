//! The live TLS probe against real servers on 127.0.0.1: a rustls mTLS server
//! (TLS 1.2/1.3, AEAD, client certificates required) passes; a raw-socket fake
//! that takes TLS 1.0/1.1 only with a NULL suite, and OpenSSL's `s_server`
//! allowing TLS 1.0/1.1 (when `openssl` is installed), are caught. (The
//! agreement with sslyze is tested end to end in `cli/tests/e2e/tls_probe.rs`.)
// Test helpers outside #[test] functions: a panic is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod compliance_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compliance_util::*;
use panvault_audit::compliance::{Fact, HelloReply, Status, probe};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

const TIMEOUT: Duration = Duration::from_secs(3);

fn mtls_server(p: &Pki, versions: &[&'static rustls::SupportedProtocolVersion]) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(p.ca_der.clone())).unwrap();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(p.server_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.server_key_der.clone())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut conn = ServerConnection::new(Arc::clone(&config)).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut s).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// The one suite the fake legacy server takes: TLS_ECDHE_ECDSA_WITH_NULL_SHA,
/// which the probe's hand-picked legacy lists never offered.
const FAKE_SUITE: [u8; 2] = [0xc0, 0x06];

/// A fake legacy server: answers a TLS 1.0/1.1 ClientHello that offers
/// [`FAKE_SUITE`] with a ServerHello of that version and suite; anything else
/// gets a handshake_failure alert (as a server that has no shared suite sends).
fn legacy_fake() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut head = [0u8; 5];
            if s.read_exact(&mut head).is_err() || head[0] != 0x16 {
                // Not a TLS record (SSL 2.0's hello): hang up.
                continue;
            }
            let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
            if s.read_exact(&mut body).is_err() {
                continue;
            }
            let version = [body[4], body[5]];
            let sid = usize::from(body[38]);
            let n = usize::from(u16::from_be_bytes([body[39 + sid], body[40 + sid]]));
            let offered = body[41 + sid..41 + sid + n]
                .chunks(2)
                .any(|c| c == FAKE_SUITE);
            let v = u16::from_be_bytes(version);
            if (0x0301..0x0303).contains(&v) && offered {
                let mut sh = vec![2, 0, 0, 38];
                sh.extend_from_slice(&version);
                sh.extend_from_slice(&[0x42; 32]);
                sh.push(0);
                sh.extend_from_slice(&FAKE_SUITE);
                sh.push(0);
                let mut rec = vec![
                    0x16,
                    version[0],
                    version[1],
                    0,
                    u8::try_from(sh.len()).unwrap(),
                ];
                rec.extend_from_slice(&sh);
                let _ = s.write_all(&rec);
            } else {
                let _ = s.write_all(&[0x15, 3, 1, 0, 2, 2, 40]);
            }
        }
    });
    addr
}

fn endpoint_report(
    v: &GoodVault,
    e: panvault_audit::compliance::EndpointFacts,
) -> (Status, String) {
    let mut f = good_facts(v);
    f.endpoints = vec![e];
    let r = run(&pci(), &f);
    let x = r.result("tls.endpoints").unwrap();
    (x.status, x.evidence.join("\n"))
}

#[test]
fn rustls_mtls_server_passes() {
    let v = good_vault();
    let addr = mtls_server(&v.pki, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let e = probe::probe(&addr.to_string(), TIMEOUT);
    assert_eq!(e.error, None);
    let n = e.negotiated.clone().unwrap();
    assert_eq!(n.version, "TLS 1.3");
    assert!(
        n.suite.starts_with("TLS_AES") || n.suite.starts_with("TLS_CHACHA"),
        "{n:?}"
    );
    assert!(e.client_cert_requested && e.anonymous_refused, "{e:?}");
    assert_eq!(e.chain.len(), 1);
    assert_eq!(e.chain[0].subject, "CN=localhost");
    // Hand-built hellos: everything below TLS 1.2 refused, and at TLS 1.2 the
    // three ECDHE-ECDSA AEAD suites rustls has for an EC key, found one by one;
    // TLS 1.3's three suites, one rustls handshake each.
    assert_eq!(
        probe::accepted_versions(&e).into_iter().collect::<Vec<_>>(),
        ["TLS 1.2", "TLS 1.3"]
    );
    let mut suites: Vec<String> = probe::accepted_suites(&e)
        .into_iter()
        .map(|(v, s)| format!("{v} {s}"))
        .collect();
    suites.sort();
    assert_eq!(
        suites,
        [
            "TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS 1.2 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS 1.3 TLS_AES_128_GCM_SHA256",
            "TLS 1.3 TLS_AES_256_GCM_SHA384",
            "TLS 1.3 TLS_CHACHA20_POLY1305_SHA256",
        ]
    );
    for h in e.legacy.iter().filter(|h| !h.reply.accepted()) {
        assert!(
            matches!(h.reply, HelloReply::Alert { .. } | HelloReply::Closed),
            "{h:?}"
        );
    }
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Pass, "{ev}");
    assert!(
        ev.contains("TLS 1.0 ClientHellos (389 suites in 12 hellos, by family) → alert handshake_failure: refused"),
        "{ev}"
    );
    assert!(
        ev.contains("TLS 1.2 ClientHello (ECDHE-ECDSA suites) → ServerHello TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: accepted (AEAD)"),
        "{ev}"
    );
    assert!(ev.contains("client certificate required"), "{ev}");
}

#[test]
fn tls_1_2_only_mtls_server_passes() {
    // With TLS 1.2 the server refuses the anonymous client inside the handshake:
    // version, suite and chain must still be recorded.
    let v = good_vault();
    let addr = mtls_server(&v.pki, &[&rustls::version::TLS12]);
    let e = probe::probe(&addr.to_string(), TIMEOUT);
    let n = e.negotiated.clone().unwrap();
    assert_eq!(n.version, "TLS 1.2");
    assert_eq!(n.suite, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    assert!(e.client_cert_requested && e.anonymous_refused, "{e:?}");
    assert!(e.handshake_error.is_some());
    assert_eq!(e.chain.len(), 1);
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Pass, "{ev}");
}

#[test]
fn raw_socket_fake_accepting_tls_1_0_and_1_1_with_a_null_suite_is_caught() {
    // A server that takes TLS 1.0/1.1 only with a suite outside a short list
    // answers every other hello with handshake_failure: the probe must offer
    // the whole registry to find it.
    let v = good_vault();
    let addr = legacy_fake();
    let e = probe::probe(&addr.to_string(), TIMEOUT);
    assert!(e.negotiated.is_none());
    assert_eq!(
        probe::accepted_suites(&e),
        [
            (
                "TLS 1.0".to_owned(),
                "TLS_ECDHE_ECDSA_WITH_NULL_SHA".to_owned()
            ),
            (
                "TLS 1.1".to_owned(),
                "TLS_ECDHE_ECDSA_WITH_NULL_SHA".to_owned()
            ),
        ]
    );
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Fail);
    assert!(ev.contains("FAIL: 127.0.0.1:") && ev.contains("TLS 1.0 ClientHello (ECDHE-ECDSA suites) → ServerHello TLS 1.0 TLS_ECDHE_ECDSA_WITH_NULL_SHA: accepted, below TLS 1.2"), "{ev}");
    assert!(
        ev.contains("TLS 1.1 ClientHello (ECDHE-ECDSA suites) → ServerHello TLS 1.1"),
        "{ev}"
    );
    assert!(
        ev.contains("SSL 3.0 ClientHellos (") && ev.contains("alert handshake_failure: refused"),
        "{ev}"
    );
}

#[test]
fn unreachable_endpoint_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = good_vault();
    let e = probe::probe(&format!("127.0.0.1:{port}"), TIMEOUT);
    assert!(
        e.error.as_deref().unwrap().starts_with("cannot connect"),
        "{e:?}"
    );
    let (status, _) = endpoint_report(&v, e);
    assert_eq!(status, Status::Error);
    let e = probe::probe("no-such-host.invalid:443", TIMEOUT);
    assert!(e.error.is_some());
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// OpenSSL's test server allowing TLS 1.0 to 1.2 with every cipher (security level 0).
#[test]
fn openssl_s_server_allowing_tls_1_0_is_caught() {
    if Command::new("openssl").arg("version").output().is_err() {
        compliance_util::tool_missing("`openssl` (apt-get install openssl)");
        return;
    }
    let v = good_vault();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .arg("-cert")
        .arg(&v.pki.server_pem)
        .arg("-key")
        .arg(&v.pki.server_key)
        .args([
            "-min_protocol",
            "TLSv1",
            "-max_protocol",
            "TLSv1.2",
            "-cipher",
            "ALL:@SECLEVEL=0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "openssl s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = probe::probe(&addr.to_string(), TIMEOUT);
    let versions = probe::accepted_versions(&e);
    assert!(
        versions.contains("TLS 1.0") && versions.contains("TLS 1.1"),
        "{versions:?}"
    );
    assert!(
        probe::accepted_suites(&e)
            .iter()
            .any(|(v, s)| v == "TLS 1.2" && s.contains("_CBC_")),
        "{e:?}"
    );
    assert_eq!(
        e.negotiated.as_ref().map(|n| n.version.as_str()),
        Some("TLS 1.2")
    );
    assert!(!e.client_cert_requested);
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Fail);
    assert!(ev.contains("→ ServerHello TLS 1.0 "), "{ev}");
    assert!(ev.contains("did not ask for a client certificate"), "{ev}");
    let _ = Fact::<()>::Unknown(String::new());
}

#[test]
fn a_silent_server_costs_one_timeout_per_version() {
    // Accepts and never answers: each version is given up after its first
    // unanswered hello (inconclusive), not after one per family.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let e = probe::probe(&addr.to_string(), Duration::from_millis(500));
    assert!(e.negotiated.is_none());
    let timeouts: Vec<&str> = e
        .legacy
        .iter()
        .filter(|h| h.reply == HelloReply::Timeout)
        .map(|h| h.offered.as_str())
        .collect();
    assert_eq!(timeouts.len(), 5, "{:?}", e.legacy);
    assert_eq!(e.legacy.len(), 5, "{:?}", e.legacy);
    let v = good_vault();
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Fail, "no modern handshake: {ev}");
    assert!(
        ev.contains("SSL 3.0 ClientHello (ECDHE-ECDSA suites) → no answer: inconclusive"),
        "{ev}"
    );
}

/// A fake SSL 2.0 server: answers an SSL 2.0 CLIENT-HELLO with a SERVER-HELLO
/// listing RC4-128 and 3DES; any TLS hello gets a handshake_failure alert.
fn ssl2_fake() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut head = [0u8; 2];
            if s.read_exact(&mut head).is_err() {
                continue;
            }
            if head[0] & 0x80 != 0 {
                let mut body = vec![0u8; usize::from(head[1])];
                if s.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut sh = vec![4, 0, 1, 0, 2, 0, 3, 0, 6, 0, 16, 0xaa, 0xbb, 0xcc];
                sh.extend_from_slice(&[0x01, 0x00, 0x80, 0x07, 0x00, 0xc0]);
                sh.extend_from_slice(&[0x42; 16]);
                let mut rec = vec![0x80, u8::try_from(sh.len()).unwrap()];
                rec.extend_from_slice(&sh);
                let _ = s.write_all(&rec);
            } else {
                let _ = s.write_all(&[0x15, 3, 1, 0, 2, 2, 40]);
            }
        }
    });
    addr
}

#[test]
fn an_ssl_2_0_server_is_caught_and_its_ciphers_named() {
    let v = good_vault();
    let e = probe::probe(&ssl2_fake().to_string(), TIMEOUT);
    assert_eq!(
        probe::accepted_suites(&e),
        [
            ("SSL 2.0".to_owned(), "SSL_CK_RC4_128_WITH_MD5".to_owned()),
            (
                "SSL 2.0".to_owned(),
                "SSL_CK_DES_192_EDE3_CBC_WITH_MD5".to_owned()
            ),
        ]
    );
    let (status, ev) = endpoint_report(&v, e);
    assert_eq!(status, Status::Fail);
    assert!(
        ev.contains("SSL 2.0 CLIENT-HELLO (7 cipher kinds) → ServerHello SSL 2.0 SSL_CK_RC4_128_WITH_MD5: accepted, below TLS 1.2"),
        "{ev}"
    );
}
