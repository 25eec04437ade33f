//! Certificates the server refuses: none, another CA's, expired, revoked, not a
//! client certificate; and valid ones that name no configured client (403) or no
//! one at all (401).

use time::{Duration, OffsetDateTime};

use panvault_vault::tls::pki::{CertAuthority, LeafSpec};

use crate::util::{ServerOpts, TestServer, cards};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_at_the_handshake() {
    let server = TestServer::start().await;
    let now = OffsetDateTime::now_utc();

    // no client certificate
    let r = server
        .anonymous_client()
        .request("GET", "/healthz", None, None)
        .await;
    assert!(r.is_err(), "no certificate was served: {r:?}");

    // a certificate from another CA, with a known client's name
    let other_ca = CertAuthority::generate("some other CA", 1).unwrap();
    let foreign = other_ca.issue(&LeafSpec::client("storefront")).unwrap();
    let r = server
        .client_with(&foreign.cert_pem, &foreign.key_pem)
        .request("POST", "/v1/tokens", Some(b"{}"), Some("application/json"))
        .await;
    assert!(r.is_err(), "another CA's certificate was served: {r:?}");

    // expired, from the right CA
    let expired = server.pki.issue(&LeafSpec {
        not_before: now - Duration::days(30),
        not_after: now - Duration::days(1),
        ..LeafSpec::client("storefront")
    });
    let r = server
        .client_with(&expired.cert_pem, &expired.key_pem)
        .request("GET", "/healthz", None, None)
        .await;
    assert!(r.is_err(), "an expired certificate was served: {r:?}");

    // not yet valid
    let future = server.pki.issue(&LeafSpec {
        not_before: now + Duration::days(1),
        not_after: now + Duration::days(30),
        ..LeafSpec::client("storefront")
    });
    assert!(
        server
            .client_with(&future.cert_pem, &future.key_pem)
            .request("GET", "/healthz", None, None)
            .await
            .is_err()
    );

    // a server certificate (no clientAuth usage) presented as a client
    let server_only = server.pki.issue(&LeafSpec {
        common_name: Some("storefront".into()),
        ..LeafSpec::localhost_server()
    });
    assert!(
        server
            .client_with(&server_only.cert_pem, &server_only.key_pem)
            .request("GET", "/healthz", None, None)
            .await
            .is_err()
    );

    // the right certificate still works on the same server
    assert_eq!(
        server
            .client("storefront")
            .tokenize(&cards::fresh())
            .await
            .status,
        201
    );

    let metrics = server.client("monitor").get("/metrics").await.text();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("panvault_tls_handshake_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 5, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_certificates_for_nobody_get_401_or_403() {
    let server = TestServer::start().await;
    let stranger = server.pki.issue(&LeafSpec::client("stranger"));
    let c = server.client_with(&stranger.cert_pem, &stranger.key_pem);
    c.tokenize(&cards::fresh())
        .await
        .assert_problem(403, "forbidden");
    c.get("/metrics").await.assert_problem(403, "forbidden");
    // TLS accepted it, so healthz answers
    assert_eq!(c.get("/healthz").await.status, 200);

    let nameless = server.pki.issue(&LeafSpec {
        common_name: None,
        dns_sans: vec!["nobody.example".into()],
        ..LeafSpec::client("x")
    });
    let c = server.client_with(&nameless.cert_pem, &nameless.key_pem);
    c.tokenize(&cards::fresh())
        .await
        .assert_problem(401, "unauthenticated");

    // matched by URI SAN rather than common name
    let spiffe = server.pki.issue(&LeafSpec {
        uri_sans: vec!["spiffe://demo/payments".into()],
        ..LeafSpec::client("not-a-configured-cn")
    });
    let c = server.client_with(&spiffe.cert_pem, &spiffe.key_pem);
    c.tokenize(&cards::fresh())
        .await
        .assert_problem(403, "forbidden");
    server.stop().await;

    let with_uri = TestServer::start_with(ServerOpts {
        extra_clients: "[[clients]]\nname = \"spiffe-payments\"\nuri_san = \"spiffe://demo/payments\"\ntenant = \"demo-shop\"\npermissions = [\"read\", \"detokenize\"]\n".into(),
        ..Default::default()
    })
    .await;
    let tok = with_uri
        .client("storefront")
        .tokenize(&cards::fresh())
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let spiffe = with_uri.pki.issue(&LeafSpec {
        uri_sans: vec!["spiffe://demo/payments".into()],
        ..LeafSpec::client("not-a-configured-cn")
    });
    let c = with_uri.client_with(&spiffe.cert_pem, &spiffe.key_pem);
    assert_eq!(c.detokenize(&tok, "charge").await.status, 200);
    with_uri.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate_is_refused() {
    let server = TestServer::start_with(ServerOpts {
        revoked_clients: vec!["storefront-old"],
        ..Default::default()
    })
    .await;
    let cert = std::fs::read_to_string(server.pki.dir.join("storefront-old.pem")).unwrap();
    let key = std::fs::read_to_string(server.pki.dir.join("storefront-old.key")).unwrap();
    let r = server
        .client_with(&cert, &key)
        .request("GET", "/healthz", None, None)
        .await;
    assert!(r.is_err(), "a revoked certificate was served: {r:?}");
    // certificates the CRL does not list still work
    assert_eq!(
        server
            .client("storefront")
            .tokenize(&cards::fresh())
            .await
            .status,
        201
    );
    server.stop().await;
}
