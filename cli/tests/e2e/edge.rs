//! The network edge: silent sockets and idle connections must not keep clients
//! out, and each client's connections are capped so that one client never keeps
//! another out.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use panvault_vault::tls::pki::LeafSpec;

use crate::util::{Client, ServerOpts, TestServer, within};

/// Bound for a whole test: a server that keeps a client out makes it time out.
const LIMIT: Duration = Duration::from_secs(40);
/// Bound for "the server closed this connection".
const CLOSE_LIMIT: Duration = Duration::from_secs(20);

/// Waits until the server closes `s` (EOF or reset); fails the test after
/// `CLOSE_LIMIT`.
async fn assert_closed<S: tokio::io::AsyncRead + Unpin>(mut s: S, what: &str) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(CLOSE_LIMIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: the server did not close it");
}

fn h2_client(server: &TestServer, name: &str) -> Client {
    let (cert, key) = server.pki.client_pems(name);
    Client::new(
        server.addr,
        &server.pki.ca_pem(),
        Some((&cert, &key)),
        &[b"h2"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_hold_no_connection_slot() {
    within(LIMIT, async {
        // A long handshake timeout: if silent sockets held connection slots, the
        // real client would wait for it and the test would time out.
        let server = TestServer::start_with(ServerOpts {
            limits: "max_connections = 4\nhandshake_timeout_ms = 120000\n".into(),
            ..Default::default()
        })
        .await;
        let mut silent = Vec::new();
        for _ in 0..12 {
            silent.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let resp = server.client("other-shop").get("/healthz").await;
        assert_eq!(resp.status, 200);
        drop(silent);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_capped_per_source_address() {
    within(LIMIT, async {
        let server = TestServer::start_with(ServerOpts {
            limits: "max_handshakes_per_source = 3\nhandshake_timeout_ms = 120000\n".into(),
            ..Default::default()
        })
        .await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // One more from the same address is closed at once, unread.
        let extra = TcpStream::connect(server.addr).await.unwrap();
        assert_closed(extra, "a socket over the per-source handshake cap").await;
        // Once the silent ones go, handshakes from here are served again.
        drop(silent);
        let deadline = std::time::Instant::now() + CLOSE_LIMIT;
        loop {
            if let Ok(r) = server
                .client("other-shop")
                .request("GET", "/healthz", None, None)
                .await
            {
                assert_eq!(r.status, 200);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never served again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = server.client("monitor").get("/metrics").await.text();
        assert!(
            m.lines()
                .any(|l| l.starts_with("panvault_tls_handshake_refusals_total ")
                    && !l.ends_with(" 0")),
            "{m}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_idle_connections_never_keep_another_client_out() {
    within(LIMIT, async {
        // Idle connections are closed only after a minute: the per-client cap
        // alone must keep room for the other tenant.
        let server = TestServer::start_with(ServerOpts {
            limits: "max_connections = 16\nmax_connections_per_client = 4\nfirst_request_timeout_ms = 60000\n".into(),
            ..Default::default()
        })
        .await;
        let storefront = server.client("storefront");
        let mut idle = Vec::new();
        for _ in 0..24 {
            // TLS 1.3: the connect succeeds even when the server then closes it.
            if let Ok(s) = storefront.connect_tls().await {
                idle.push(s);
            }
        }
        // The other tenant gets an answer (on HTTP/1 and on HTTP/2).
        let resp = server.client("other-shop").tokenize(&crate::util::cards::fresh()).await;
        assert_eq!(resp.status, 201);
        assert_eq!(h2_client(&server, "other-shop").get("/healthz").await.status, 200);
        // Past its cap, the storefront's connections were closed by the server.
        let mut open = 0;
        let mut closed = 0;
        for mut s in idle {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Err(_) => open += 1,
                Ok(_) => closed += 1,
            }
        }
        assert_eq!((open, closed), (4, 20));
        let m = server.client("monitor").get("/metrics").await.text();
        assert!(
            m.lines().any(|l| l == "panvault_connection_refusals_total 20"),
            "{m}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_are_closed() {
    within(LIMIT, async {
        let server = TestServer::start_with(ServerOpts {
            limits: "first_request_timeout_ms = 300\nheader_read_timeout_ms = 1000\n".into(),
            ..Default::default()
        })
        .await;
        // HTTP/1 (or anything) that sends nothing after the handshake.
        let silent = server.client("storefront").connect_tls().await.unwrap();
        assert_closed(silent, "a TLS connection that sent nothing").await;

        // HTTP/2 that sends its preface and settings but no request.
        let tls = h2_client(&server, "storefront")
            .connect_tls()
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (_send, conn) = hyper::client::conn::http2::handshake::<
            _,
            _,
            http_body_util::Empty<hyper::body::Bytes>,
        >(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        let ended = tokio::time::timeout(CLOSE_LIMIT, conn).await;
        assert!(
            ended.is_ok(),
            "an HTTP/2 connection with no request stayed open"
        );

        // HTTP/2 idle after a request is closed too (after the idle timeout).
        let tls = h2_client(&server, "storefront")
            .connect_tls()
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri("https://localhost/healthz")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 200);
        let ended = tokio::time::timeout(CLOSE_LIMIT, conn).await;
        assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
        server.stop().await;
    })
    .await;
}

// ---- client certificates: usage, names, CRLs ----

/// Whether a request with `cert`/`key` on a fresh connection gets an answer.
/// With TLS 1.3 the connect itself succeeds even when the server refuses the
/// certificate: only the request tells.
async fn answered(server: &TestServer, cert: &str, key: &str) -> bool {
    server
        .client_with(cert, key)
        .request("GET", "/healthz", None, None)
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Polls (fresh connections) until `answered` is `want`; fails after `CLOSE_LIMIT`.
async fn until_answered(server: &TestServer, cert: &str, key: &str, want: bool, what: &str) {
    let deadline = std::time::Instant::now() + CLOSE_LIMIT;
    while answered(server, cert, key).await != want {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_without_client_auth_or_with_two_names_are_refused() {
    within(LIMIT, async {
        let server = TestServer::start().await;
        let good = server.pki.issue(&LeafSpec::client("storefront"));
        assert!(answered(&server, &good.cert_pem, &good.key_pem).await);
        let no_eku = server.pki.issue(&LeafSpec {
            client_auth: false,
            ..LeafSpec::client("storefront")
        });
        assert!(
            !answered(&server, &no_eku.cert_pem, &no_eku.key_pem).await,
            "a certificate with no extended key usage was accepted"
        );
        let two_names = server.pki.issue(&LeafSpec {
            extra_common_names: vec!["payments".into()],
            ..LeafSpec::client("storefront")
        });
        assert!(
            !answered(&server, &two_names.cert_pem, &two_names.key_pem).await,
            "a certificate with two common names was accepted"
        );
        assert!(
            crate::util::captured_logs().contains("more than one common name"),
            "the refusal is not logged"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_are_reloaded_and_an_expired_one_refuses_everyone() {
    within(Duration::from_secs(90), async {
        let server = TestServer::start_with(ServerOpts {
            revoked_clients: vec!["revoked"],
            ..Default::default()
        })
        .await;
        let crl_path = server.pki.dir.join("ca.crl");
        let late = server.pki.issue(&LeafSpec::client("storefront"));
        assert!(answered(&server, &late.cert_pem, &late.key_pem).await);
        let (rc, rk) = server.pki.client_pems("revoked");
        assert!(!answered(&server, &rc, &rk).await);

        // Revoke `late` too, while the server runs: new connections refuse it.
        let crl = server.pki.ca.crl(&[late.serial.as_slice()]).unwrap();
        std::fs::write(&crl_path, crl).unwrap();
        until_answered(
            &server,
            &late.cert_pem,
            &late.key_pem,
            false,
            "a certificate revoked while the server runs is still accepted",
        )
        .await;
        let (sc, sk) = server.pki.client_pems("storefront");
        assert!(answered(&server, &sc, &sk).await);

        // A CRL past its next update: nobody's status is known, nobody gets in.
        let now = time::OffsetDateTime::now_utc();
        let stale = server
            .pki
            .ca
            .crl_valid(
                &[],
                now - time::Duration::days(10),
                now - time::Duration::days(1),
            )
            .unwrap();
        std::fs::write(&crl_path, stale).unwrap();
        until_answered(&server, &sc, &sk, false, "an expired CRL is trusted").await;
        assert!(!answered(&server, &late.cert_pem, &late.key_pem).await);

        // A current one again: back in service, without a restart.
        let fresh = server.pki.ca.crl(&[]).unwrap();
        std::fs::write(&crl_path, fresh).unwrap();
        until_answered(&server, &sc, &sk, true, "a renewed CRL is not picked up").await;
        assert!(answered(&server, &late.cert_pem, &late.key_pem).await);
        server.stop().await;
    })
    .await;
}

/// The issue's reproduction at full size, for a figure (not run by default:
/// `PANVAULT_EDGE_FLOOD=1 cargo test -p panvault-cli --test e2e edge::flood -- --nocapture`):
/// 1,024 TLS connections of one storefront certificate that send nothing, then
/// another tenant's request (default limits); 1,100 silent sockets, then a request;
/// prints how long each took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_idle_connections_from_one_client() {
    if std::env::var_os("PANVAULT_EDGE_FLOOD").is_none() {
        return;
    }
    within(Duration::from_secs(300), async {
        let server = TestServer::start().await;
        let storefront = server.client("storefront");
        let mut idle = Vec::new();
        for _ in 0..1024 {
            if let Ok(s) = storefront.connect_tls().await {
                idle.push(s);
            }
        }
        let other = server.client("other-shop");
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            other.request("GET", "/healthz", None, None),
        )
        .await;
        println!(
            "1024 idle storefront connections: other-shop's first request: {:?} after {:?}",
            r.map(|r| r.map(|r| r.status)),
            start.elapsed()
        );
        drop(idle);
        server.stop().await;

        // 1,100 sockets that never start a handshake (as from many addresses:
        // the per-source cap raised), then a real request.
        let server = TestServer::start_with(ServerOpts {
            limits: "max_handshakes = 2048\nmax_handshakes_per_source = 2048\n".into(),
            ..Default::default()
        })
        .await;
        let mut silent = Vec::new();
        for _ in 0..1100 {
            silent.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            server
                .client("other-shop")
                .request("GET", "/healthz", None, None),
        )
        .await;
        println!(
            "1100 silent sockets: a request: {:?} after {:?}",
            r.map(|r| r.map(|r| r.status)),
            start.elapsed()
        );
        drop(silent);
        server.stop().await;
    })
    .await;
}
