//! Relay throughput and the vault's added latency, against a local fake provider
//! that answers at once: the same number of keep-alive connections first relay
//! through `panvault serve` (mTLS in, HTTPS out, audit events, masking), then send
//! the same request straight to the provider. The vault's share is the difference
//! of the two latency distributions at p50 and p99.
//!
//! The suite runs it for 2 s a phase (every relay must succeed); for figures:
//!
//! ```sh
//! PANVAULT_RELAY_BENCH_SECS=20 cargo test --release -p panvault-cli --test e2e relay_bench -- --nocapture
//! ```

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::util::provider::{FakeProvider, Mode};
use crate::util::{self, BinVault, Client, ServeProcess, cards};

const CONNECTIONS: usize = 16;
const CHARGE: &str = r#"{"amount":1999,"card":{"number":"{{card.number}}","exp_month":"{{card.exp_month}}","exp_year":"{{card.exp_year}}"}}"#;

/// Sends `request` on each client until `secs` pass; every answer's status
/// must be `want`. Latencies in microseconds, sorted.
async fn run<F, Fut>(clients: Vec<Client>, secs: u64, want: u16, request: F) -> Vec<u64>
where
    F: Fn(Client) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Client, u16)> + Send,
{
    let end = Instant::now() + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for c in clients {
        let request = request.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut c = c;
            while Instant::now() < end {
                let t = Instant::now();
                let (back, status) = request(c).await;
                c = back;
                lat.push(u64::try_from(t.elapsed().as_micros()).unwrap());
                assert_eq!(status, want);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort_unstable();
    all
}

/// The `per_mille`-th per-mille of `sorted` (nearest rank).
fn pct(sorted: &[u64], per_mille: usize) -> u64 {
    let i = (sorted.len() - 1) * per_mille / 1000;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_bench() {
    let secs = util::env_number("PANVAULT_RELAY_BENCH_SECS", 2).max(1);
    util::within(Duration::from_secs(2 * secs + 120), async {
        let psp = FakeProvider::start(Mode::Answer(201, r#"{"id":"ch_1","status":"succeeded"}"#)).await;
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        psp.write_ca(&v.root.join("psp-ca.pem"));
        let pki = util::TestPki::new(&v.root.join("pki"));
        let leaf = pki.issue(&panvault_vault::tls::pki::LeafSpec::client("checkout"));
        std::fs::write(v.root.join("pki/checkout.pem"), leaf.cert_pem).unwrap();
        std::fs::write(v.root.join("pki/checkout.key"), leaf.key_pem.as_bytes()).unwrap();
        let mut text = std::fs::read_to_string(&v.config).unwrap();
        text.push_str(&format!(
            "[[clients]]\nname = \"checkout\"\ntenant = \"demo-shop\"\npermissions = [\"tokenize\", \"relay\"]\n\
             [relay]\n[[relay.destinations]]\nname = \"psp\"\nurl = \"{}\"\nca_file = \"psp-ca.pem\"\nclients = [\"checkout\"]\n",
            psp.url("/v1/charges")
        ));
        std::fs::write(&v.config, text).unwrap();
        let server = ServeProcess::start(&v).await.unwrap();
        let r = v.client(server.addr, "checkout").tokenize(&cards::fresh()).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let token = r.json()["token"].as_str().unwrap().to_owned();
        let body = json!({
            "token": token,
            "purpose": "relay benchmark",
            "headers": {"content-type": "application/json"},
            "body": CHARGE,
        })
        .to_string();

        let clients = (0..CONNECTIONS)
            .map(|_| v.client(server.addr, "checkout"))
            .collect();
        let relayed = run(clients, secs, 200, move |c: Client| {
            let body = body.clone();
            async move {
                let r = c
                    .request("POST", "/v1/relay/psp", Some(body.as_bytes()), Some("application/json"))
                    .await
                    .unwrap();
                (c, r.status)
            }
        })
        .await;
        // One pool for the destination: its connections are reused, not one a relay.
        let opened = psp.connections();
        assert!(
            opened <= 2 * CONNECTIONS,
            "{opened} connections to the provider for {} relays",
            relayed.len()
        );

        // The same request body the provider gets, straight to it (no card in it:
        // the stand-in is as long as a 16-digit number).
        let direct_body = CHARGE
            .replace("{{card.number}}", "0000000000000000")
            .replace("{{card.exp_month}}", "12")
            .replace("{{card.exp_year}}", "2030");
        let clients = (0..CONNECTIONS)
            .map(|_| Client::new(psp.addr, psp.ca_pem(), None, &[b"http/1.1"]))
            .collect();
        let direct = run(clients, secs, 201, move |c: Client| {
            let body = direct_body.clone();
            async move {
                let r = c
                    .request("POST", "/v1/charges", Some(body.as_bytes()), Some("application/json"))
                    .await
                    .unwrap();
                (c, r.status)
            }
        })
        .await;

        let rate = |n: usize| n as f64 / secs as f64;
        let (r50, r99) = (pct(&relayed, 500), pct(&relayed, 990));
        let (d50, d99) = (pct(&direct, 500), pct(&direct, 990));
        println!(
            "relay_bench: {CONNECTIONS} connections, {secs} s a phase, {opened} connections from the vault to the provider\n  \
             through the vault: {} relays, {:.0}/s, p50 {r50} µs, p99 {r99} µs\n  \
             straight to the provider: {} requests, {:.0}/s, p50 {d50} µs, p99 {d99} µs\n  \
             the vault's added latency: p50 {} µs, p99 {} µs",
            relayed.len(),
            rate(relayed.len()),
            direct.len(),
            rate(direct.len()),
            r50.saturating_sub(d50),
            r99.saturating_sub(d99),
        );
        assert!(!relayed.is_empty() && !direct.is_empty());
    })
    .await;
}
