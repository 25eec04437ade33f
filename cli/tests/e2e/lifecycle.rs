//! The server's life: slow handshakes time out without stalling others, the
//! connection limit holds, shutdown drains in-flight requests, slow bodies get
//! 408, and keys rotated by another process are picked up.

use std::time::{Duration, Instant};

use panvault_vault::{AccessContext, Admin, SecretText, Unlock, system_clock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{self, ServerOpts, TestServer, cards};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or("0")
        .parse()
        .unwrap()
}

/// Reads until the peer closes (cleanly or not) or `limit` passes.
async fn read_all<R: AsyncReadExt + Unpin>(r: &mut R, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Reads until `end` has arrived (or the peer closes, or `limit` passes).
async fn read_until<R: AsyncReadExt + Unpin>(r: &mut R, end: &[u8], limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut byte = [0u8; 1];
        while !out.ends_with(end) {
            match r.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => out.push(byte[0]),
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_and_the_limit_holds() {
    let server = TestServer::start_with(ServerOpts {
        limits: "handshake_timeout_ms = 400\nmax_connections = 2".into(),
        ..Default::default()
    })
    .await;
    // Connections that never start a handshake hold no connection slot (only a
    // handshake slot, until the handshake timeout).
    let mut idle1 = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut idle2 = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let r = server.client("storefront").tokenize(&cards::fresh()).await;
    assert_eq!(r.status, 201);
    // the server closed the silent ones
    assert!(
        read_all(&mut idle1, Duration::from_secs(3))
            .await
            .is_empty()
    );
    assert!(
        read_all(&mut idle2, Duration::from_secs(3))
            .await
            .is_empty()
    );
    // Two kept-alive connections take both slots: a third connection waits
    // (up to the handshake timeout) for one, then is closed.
    let (p1, p2) = (server.client("payments"), server.client("payments"));
    assert_eq!(p1.get("/healthz").await.status, 200);
    assert_eq!(p2.get("/healthz").await.status, 200);
    assert!(
        server
            .client("other-shop")
            .request("GET", "/healthz", None, None)
            .await
            .is_err(),
        "served beyond max_connections"
    );
    drop((p1, p2));
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        if let Ok(r) = server
            .client("monitor")
            .request("GET", "/metrics", None, None)
            .await
        {
            break r.text();
        }
        assert!(Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metric(&m, "panvault_tls_handshake_timeouts_total") >= 2,
        "{m}"
    );
    assert!(metric(&m, "panvault_connection_refusals_total") >= 1, "{m}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_request_in_flight() {
    let mut server = TestServer::start().await;
    let client = server.client("storefront");
    let mut tls = client.connect_tls().await.unwrap();
    let body = util::card_request(&cards::fresh()).to_string();
    let (first, rest) = body.split_at(12);
    // `expect: 100-continue`: the server answers `100 Continue` once the handler
    // reads the body, which tells the test the request is in flight.
    let head = format!(
        "POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let continued = read_until(&mut tls, b"\r\n\r\n", Duration::from_secs(10)).await;
    assert!(
        continued.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&continued)
    );
    tls.write_all(first.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    server.signal_shutdown();
    // The listener closes on the signal; the request in flight keeps the server up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after the shutdown signal"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !server.is_finished(),
        "the server stopped with a request in flight"
    );
    tls.write_all(rest.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let answer =
        String::from_utf8_lossy(&read_all(&mut tls, Duration::from_secs(10)).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"token\":\"tok_"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_gets_408() {
    let server = TestServer::start_with(ServerOpts {
        limits: "header_read_timeout_ms = 500".into(),
        ..Default::default()
    })
    .await;
    let mut tls = server.client("storefront").connect_tls().await.unwrap();
    let head = "POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"card\":";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let answer =
        String::from_utf8_lossy(&read_all(&mut tls, Duration::from_secs(5)).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotated_by_another_process_are_picked_up() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let before = sf.tokenize(&cards::fresh()).await.json();
    assert_eq!(before["key_version"], 1);
    let dir = server.config.data_dir.clone();
    let pass = server.passphrase;
    let v = tokio::task::spawn_blocking(move || {
        let unlock = Unlock::Passphrase(SecretText::new(pass.into()));
        let mut admin = Admin::open(&dir, &unlock, system_clock()).unwrap();
        admin
            .rotate(&AccessContext {
                actor: "admin:e2e".into(),
                ..Default::default()
            })
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(v, 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = sf.tokenize(&cards::fresh()).await.json();
        if r["key_version"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still seals with v{} after 5 s",
            r["key_version"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // older records still open
    let d = server
        .client("payments")
        .detokenize(before["token"].as_str().unwrap(), "charge")
        .await;
    assert_eq!(d.status, 200);
    let m = server.client("monitor").get("/metrics").await.text();
    assert_eq!(metric(&m, "panvault_active_key_version"), 2, "{m}");
    assert!(metric(&m, "panvault_tokens_stored") >= 2);
    server.stop().await;
}
