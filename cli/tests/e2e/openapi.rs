//! The API description (`docs/openapi.yaml`) against the real server: every route
//! of `panvault serve` asked with valid and invalid requests until every problem
//! code has answered, each answer (status, headers, body) captured and checked by
//! `tests/openapi/validate.py` against the operation's described response, the
//! description itself checked by openapi-spec-validator, and its problem schemas
//! checked against the server's `CODES`. A drifted description fails here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use panvault_vault::http::CODES;
use panvault_vault::tls::pki::LeafSpec;

use crate::util::provider::{FakeProvider, Mode, closed_port};
use crate::util::{
    self, BinVault, Client, CmdOutput, Resp, ServeProcess, ServerOpts, TestPki, TestServer, cards,
    run_command,
};

/// How long the validator may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Detokenize requests each client may make before its rate limit answers 429
/// (the rate refills one every 1000 s: never within the test).
const DETOKENIZE_BURST: usize = 8;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docs/openapi.yaml`.
pub fn description() -> PathBuf {
    workspace().join("docs/openapi.yaml")
}

/// `python3` with the modules `tests/openapi/validate.py` and the fuzzer use, or why not.
pub fn python_ready(modules: &str) -> Result<(), String> {
    match std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 lacks one of {modules} ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("no python3 ({e})")),
    }
}

/// The captured exchanges.
#[derive(Default)]
struct Exchanges(Vec<Value>);

impl Exchanges {
    fn record(&mut self, name: &str, method: &str, path: &str, r: &Resp) {
        let mut headers = serde_json::Map::new();
        for (k, v) in &r.headers {
            let v = v.to_str().unwrap_or("<not visible ASCII>").to_owned();
            match headers.get_mut(k.as_str()) {
                Some(Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(&v);
                }
                _ => {
                    headers.insert(k.as_str().to_owned(), Value::String(v));
                }
            }
        }
        self.0.push(json!({
            "name": name,
            "method": method,
            "path": path,
            "status": r.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&r.body),
        }));
    }

    /// Sends a request with `client` and records the answer.
    async fn send(
        &mut self,
        name: &str,
        client: &Client,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Resp {
        self.send_with(name, client, method, path, body, content_type, &[])
            .await
    }

    /// [`Exchanges::send`] with extra request headers.
    #[expect(clippy::too_many_arguments, reason = "a request's parts, spelled out")]
    async fn send_with(
        &mut self,
        name: &str,
        client: &Client,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let r = client
            .request_with_headers(method, path, body, content_type, extra)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.record(name, method, path, &r);
        r
    }

    async fn json(
        &mut self,
        name: &str,
        client: &Client,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Resp {
        self.send(
            name,
            client,
            method,
            path,
            Some(body.to_string().as_bytes()),
            Some("application/json"),
        )
        .await
    }

    async fn get(&mut self, name: &str, client: &Client, path: &str) -> Resp {
        self.send(name, client, "GET", path, None, None).await
    }
}

/// A client of `pki` presenting an issued certificate.
fn client_for(addr: SocketAddr, ca_pem: &str, spec: &LeafSpec, pki: &TestPki) -> Client {
    let issued = pki.issue(spec);
    Client::new(
        addr,
        ca_pem,
        Some((&issued.cert_pem, &issued.key_pem)),
        &[b"http/1.1"],
    )
}

/// A request whose body never arrives: the raw HTTP/1.1 answer, parsed.
async fn slow_body(client: &Client) -> Resp {
    let mut tls = client.connect_tls().await.unwrap();
    let head = "POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"card\":";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|n| raw.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    })
    .await;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = hyper::HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        headers.append(
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    let body = hyper::body::Bytes::copy_from_slice(&raw[end + 4..]);
    util::keep_output("responses", &body);
    Resp {
        status,
        headers,
        body,
    }
}

/// Every route of the real binary, valid and invalid, into `ex`.
async fn exercise_binary(root: &Path, ex: &mut Exchanges) {
    let v = BinVault::create(root);
    // A rate limit that allows `DETOKENIZE_BURST` requests per client, and a short
    // body timeout for the 408.
    let mut config = std::fs::read_to_string(&v.config).unwrap();
    config.push_str(&format!(
        "[limits]\nheader_read_timeout_ms = 3000\ndetokenize_per_second = 0.001\ndetokenize_burst = {DETOKENIZE_BURST}\n"
    ));
    let providers = relay_config(&v, &mut config).await;
    std::fs::write(&v.config, config).unwrap();
    let server = ServeProcess::start(&v).await.unwrap();
    let addr = server.addr;
    server.wait_healthy(&v, Duration::from_secs(30)).await;
    let pki = TestPki::new(&v.root.join("pki"));
    let sf = v.client(addr, "storefront");
    let pay = v.client(addr, "payments");
    let other = v.client(addr, "other-shop");
    let monitor = v.client(addr, "monitor");
    let nameless = client_for(
        addr,
        &v.ca_pem,
        &LeafSpec {
            common_name: None,
            dns_sans: vec!["n.example".into()],
            ..LeafSpec::client("x")
        },
        &pki,
    );
    let stranger = client_for(addr, &v.ca_pem, &LeafSpec::client("stranger"), &pki);
    let year = util::this_year() + 4;

    // health and metrics
    ex.get("health", &sf, "/healthz").await;
    ex.get("health, certificate naming no one", &nameless, "/healthz")
        .await;
    ex.get("health, unknown client", &stranger, "/healthz")
        .await;
    assert_eq!(ex.get("metrics", &monitor, "/metrics").await.status, 200);
    ex.get("metrics without the permission", &sf, "/metrics")
        .await;
    ex.get("metrics, certificate naming no one", &nameless, "/metrics")
        .await;

    // tokenize
    let card = cards::fresh();
    let full = json!({
        "card": {"number": card, "exp_month": 12, "exp_year": year, "name": "Jane Doe"},
        "subject": "cust_openapi",
        "format": "opaque",
        "metadata": {"order": "1234", "n": [1, 2]},
        "force_new": false,
        "ttl_seconds": 86400,
    });
    let r = ex.json("tokenize", &sf, "POST", "/v1/tokens", &full).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let mut again = full.clone();
    again["card"]["exp_year"] = json!(year + 1);
    again["metadata"] = json!({"order": "5678"});
    let r = ex
        .json(
            "tokenize, dedup with changes",
            &sf,
            "POST",
            "/v1/tokens",
            &again,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ex
        .json(
            "tokenize, dedup unchanged",
            &sf,
            "POST",
            "/v1/tokens",
            &again,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ex
        .json(
            "tokenize, bin_last4 and nulls",
            &sf,
            "POST",
            "/v1/tokens",
            &json!({"card": {"number": cards::fresh(), "exp_month": 1, "exp_year": year, "name": null},
                    "format": "bin_last4", "subject": null, "metadata": null, "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let bin_token = r.json()["token"].as_str().unwrap().to_owned();
    let raw: [(&str, &[u8], Option<&str>); 6] = [
        (
            "tokenize, not JSON",
            b"{\"card\":",
            Some("application/json"),
        ),
        ("tokenize, empty body", b"", None),
        (
            "tokenize, repeated key",
            b"{\"card\":{},\"card\":{}}",
            Some("application/json"),
        ),
        ("tokenize, not an object", b"[1]", Some("application/json")),
        ("tokenize, text/plain", b"{}", Some("text/plain")),
        (
            "tokenize, +json type",
            b"{\"card\":{\"number\":1}}",
            Some("application/merge-patch+json"),
        ),
    ];
    for (name, body, ct) in raw {
        ex.send(name, &sf, "POST", "/v1/tokens", Some(body), ct)
            .await;
    }
    for (name, body) in [
        (
            "tokenize, unknown field",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "colour": "red"}),
        ),
        ("tokenize, no card", json!({"subject": "x"})),
        (
            "tokenize, bad format",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "format": "short"}),
        ),
        (
            "tokenize, bad ttl",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "ttl_seconds": 0}),
        ),
        ("tokenize, Luhn", util::card_request("4242424242424241")),
        (
            "tokenize, letters",
            util::card_request("4242-4242-abcd-4242"),
        ),
        (
            "tokenize, expired",
            json!({"card": {"number": cards::fresh(), "exp_month": 1, "exp_year": 2020}}),
        ),
        (
            "tokenize, month 13",
            json!({"card": {"number": cards::fresh(), "exp_month": 13, "exp_year": year}}),
        ),
        (
            "tokenize, cvv",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year, "cvv": "123"}}),
        ),
        (
            "tokenize, cvc too long for the brand",
            json!({"card": {"number": cards::VISA, "exp_month": 12, "exp_year": year, "cvc": "1234"}}),
        ),
        (
            "tokenize, metadata too big",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "metadata": {"pad": "x".repeat(5000)}}),
        ),
        (
            "tokenize, body too large",
            json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "metadata": {"pad": "x".repeat(65 * 1024)}}),
        ),
    ] {
        ex.json(name, &sf, "POST", "/v1/tokens", &body).await;
    }
    let c = util::card_request(&cards::fresh());
    ex.json(
        "tokenize without the permission",
        &pay,
        "POST",
        "/v1/tokens",
        &c,
    )
    .await;
    ex.json(
        "tokenize, unknown client",
        &stranger,
        "POST",
        "/v1/tokens",
        &c,
    )
    .await;
    ex.json(
        "tokenize, certificate naming no one",
        &nameless,
        "POST",
        "/v1/tokens",
        &c,
    )
    .await;
    let r = slow_body(&sf).await;
    ex.record("tokenize, body too slow", "POST", "/v1/tokens", &r);

    // batch
    let r = ex
        .json(
            "batch",
            &sf,
            "POST",
            "/v1/tokens/batch",
            &json!({"items": [
                util::card_request(&cards::fresh()),
                again,
                util::card_request("4242424242424241"),
                {"card": {"number": cards::fresh(), "exp_month": 1, "exp_year": 2020}},
                {"card": {"number": cards::fresh(), "exp_month": 13, "exp_year": year}},
                {"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year, "cvv": "1"}},
                {"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year}, "x": 1},
                "not an object",
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (name, body) in [
        ("batch, no items", json!({"items": []})),
        (
            "batch, unknown field",
            json!({"items": [util::card_request(&cards::fresh())], "more": 1}),
        ),
        ("batch, items not an array", json!({"items": {}})),
        ("batch, not an object", json!([])),
    ] {
        ex.json(name, &sf, "POST", "/v1/tokens/batch", &body).await;
    }
    ex.send(
        "batch, not JSON",
        &sf,
        "POST",
        "/v1/tokens/batch",
        Some(b"{"),
        Some("application/json"),
    )
    .await;
    ex.send(
        "batch, text/plain",
        &sf,
        "POST",
        "/v1/tokens/batch",
        Some(b"{}"),
        Some("text/plain"),
    )
    .await;
    let item = util::card_request(&cards::fresh()).to_string();
    let huge = format!(
        "{{\"items\":[{}]}}",
        vec![item; 2 * 1024 * 1024 / 60].join(",")
    );
    ex.send(
        "batch, too large",
        &sf,
        "POST",
        "/v1/tokens/batch",
        Some(huge.as_bytes()),
        Some("application/json"),
    )
    .await;
    ex.json(
        "batch without the permission",
        &monitor,
        "POST",
        "/v1/tokens/batch",
        &json!({"items": []}),
    )
    .await;
    ex.json(
        "batch, certificate naming no one",
        &nameless,
        "POST",
        "/v1/tokens/batch",
        &json!({"items": []}),
    )
    .await;

    // metadata
    let path = format!("/v1/tokens/{token}");
    assert_eq!(ex.get("metadata", &sf, &path).await.status, 200);
    ex.get(
        "metadata, bin_last4",
        &pay,
        &format!("/v1/tokens/{bin_token}"),
    )
    .await;
    ex.get("metadata, other tenant", &other, &path).await;
    ex.get(
        "metadata, unknown token",
        &sf,
        "/v1/tokens/tok_0000000000000000000000",
    )
    .await;
    ex.get("metadata, not a token", &sf, "/v1/tokens/x%20y")
        .await;
    ex.get("metadata without the permission", &monitor, &path)
        .await;
    ex.get("metadata, certificate naming no one", &nameless, &path)
        .await;

    // detokenize: `payments` makes exactly DETOKENIZE_BURST requests, then 429
    let detok = format!("/v1/tokens/{token}/detokenize");
    let mut paid = 0;
    let raw: [(&str, &[u8], Option<&str>); 7] = [
        (
            "detokenize",
            b"{\"purpose\":\"charge order 1234\"}",
            Some("application/json"),
        ),
        ("detokenize, empty body", b"", None),
        ("detokenize, no purpose", b"{}", Some("application/json")),
        (
            "detokenize, purpose not a string",
            b"{\"purpose\":1}",
            Some("application/json"),
        ),
        (
            "detokenize, not JSON",
            b"{\"purpose\"",
            Some("application/json"),
        ),
        (
            "detokenize, unknown field",
            b"{\"purpose\":\"x\",\"why\":1}",
            Some("application/json"),
        ),
        ("detokenize, text/plain", b"charge", Some("text/plain")),
    ];
    for (name, body, ct) in raw {
        let r = ex.send(name, &pay, "POST", &detok, Some(body), ct).await;
        if name == "detokenize" {
            assert_eq!(r.status, 200);
        }
        paid += 1;
    }
    ex.json(
        "detokenize, unknown token",
        &pay,
        "POST",
        "/v1/tokens/tok_0000000000000000000000/detokenize",
        &json!({"purpose": "x"}),
    )
    .await;
    paid += 1;
    assert_eq!(paid, DETOKENIZE_BURST);
    let r = ex
        .json(
            "detokenize, rate limited",
            &pay,
            "POST",
            &detok,
            &json!({"purpose": "x"}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let pad = json!({"purpose": "x".repeat(65 * 1024)});
    ex.json("detokenize, body too large", &other, "POST", &detok, &pad)
        .await;
    ex.json(
        "detokenize, other tenant",
        &other,
        "POST",
        &detok,
        &json!({"purpose": "x"}),
    )
    .await;
    ex.json(
        "detokenize without the permission",
        &sf,
        "POST",
        &detok,
        &json!({"purpose": "x"}),
    )
    .await;
    ex.json(
        "detokenize, certificate naming no one",
        &nameless,
        "POST",
        &detok,
        &json!({"purpose": "x"}),
    )
    .await;

    // delete
    let doomed = ex
        .json(
            "tokenize, to delete",
            &sf,
            "POST",
            "/v1/tokens",
            &util::card_request(&cards::fresh()),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dpath = format!("/v1/tokens/{doomed}");
    ex.send(
        "delete without the permission",
        &pay,
        "DELETE",
        &dpath,
        None,
        None,
    )
    .await;
    ex.send(
        "delete, certificate naming no one",
        &nameless,
        "DELETE",
        &dpath,
        None,
        None,
    )
    .await;
    assert_eq!(
        ex.send("delete", &sf, "DELETE", &dpath, None, None)
            .await
            .status,
        204
    );
    ex.send("delete, again", &sf, "DELETE", &dpath, None, None)
        .await;

    // erase
    let r = ex
        .send(
            "erase",
            &sf,
            "POST",
            "/v1/subjects/cust_openapi/erase",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    ex.send(
        "erase, nothing held",
        &sf,
        "POST",
        "/v1/subjects/nobody/erase",
        Some(b"ignored"),
        Some("text/plain"),
    )
    .await;
    ex.send(
        "erase, control character",
        &sf,
        "POST",
        "/v1/subjects/a%01b/erase",
        None,
        None,
    )
    .await;
    ex.send(
        "erase, not UTF-8",
        &sf,
        "POST",
        "/v1/subjects/%FF/erase",
        None,
        None,
    )
    .await;
    ex.send(
        "erase without the permission",
        &pay,
        "POST",
        "/v1/subjects/x/erase",
        None,
        None,
    )
    .await;
    ex.send(
        "erase, certificate naming no one",
        &nameless,
        "POST",
        "/v1/subjects/x/erase",
        None,
        None,
    )
    .await;

    exercise_relay(&v, addr, &providers, ex).await;

    // what no operation serves
    ex.get("unknown route", &sf, "/v2/tokens").await;
    ex.send(
        "unknown method",
        &sf,
        "PUT",
        "/v1/tokens",
        Some(b"{}"),
        Some("application/json"),
    )
    .await;
    ex.send("healthz, POST", &sf, "POST", "/healthz", None, None)
        .await;
    ex.send("erase, GET", &sf, "GET", "/v1/subjects/x/erase", None, None)
        .await;

    let status = server.terminate().await;
    assert!(status.success(), "serve exited with {status}");
}

/// The 503s, from the in-process server (the same HTTP layer) whose vault's
/// writer is stopped under it.
async fn exercise_unavailable(ex: &mut Exchanges) {
    let server = TestServer::start_with(ServerOpts::default()).await;
    let sf = server.client("storefront");
    let pay = server.client("payments");
    let token = sf.tokenize(&cards::fresh()).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let vault = server.vault.clone();
    tokio::task::spawn_blocking(move || vault.shutdown())
        .await
        .unwrap();
    let r = ex
        .json(
            "tokenize, store stopped",
            &sf,
            "POST",
            "/v1/tokens",
            &util::card_request(&cards::fresh()),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = ex
        .json(
            "detokenize, audit stopped",
            &pay,
            "POST",
            &format!("/v1/tokens/{token}/detokenize"),
            &json!({"purpose": "x"}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    server.stop().await;
}

/// `python3 tests/openapi/validate.py SPEC FILE`.
async fn validate(spec: &Path, file: &Path) -> CmdOutput {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(workspace().join("tests/openapi/validate.py"))
        .arg(spec)
        .arg(file);
    run_command(cmd, LIMIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_openapi_description() {
    if let Err(why) = python_ready("yaml, jsonschema, openapi_spec_validator") {
        util::tools::missing("real_answers_match_the_openapi_description", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ex = Exchanges::default();
    exercise_binary(&dir.path().join("vault"), &mut ex).await;
    exercise_unavailable(&mut ex).await;

    let codes: Vec<Value> = CODES.iter().map(|(c, s, t)| json!([c, s, t])).collect();
    // Every code but `internal` (a bug or a corrupted record) has been answered.
    let required: Vec<&str> = CODES
        .iter()
        .map(|(c, _, _)| *c)
        .filter(|c| *c != "internal")
        .collect();
    let file = dir.path().join("exchanges.json");
    let run = json!({"codes": codes, "required_codes": required, "exchanges": ex.0});
    std::fs::write(&file, serde_json::to_vec_pretty(&run).unwrap()).unwrap();

    let o = validate(&description(), &file).await;
    println!("{}", o.stdout);
    if o.status.code() == Some(3) {
        util::tools::missing(
            "real_answers_match_the_openapi_description",
            o.stdout.trim(),
        );
        return;
    }
    assert!(
        o.success(),
        "the answers drifted from docs/openapi.yaml:\n{}{}",
        o.stdout,
        o.stderr
    );

    // The referee is not vacuous: a description that drifted by one title fails.
    let text = std::fs::read_to_string(description()).unwrap();
    let drifted = text.replace("title: { const: Not found }", "title: { const: Not Found }");
    assert_ne!(drifted, text);
    let spec = dir.path().join("drifted.yaml");
    std::fs::write(&spec, drifted).unwrap();
    let o = validate(&spec, &file).await;
    assert_eq!(o.status.code(), Some(1), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Problem_not_found"), "{}", o.stdout);
    assert!(o.stdout.contains("unknown route"), "{}", o.stdout);
}

/// The fake payment providers the relay destinations point at.
struct Providers {
    psp: FakeProvider,
    echo: FakeProvider,
    slow: FakeProvider,
}

/// A `[relay]` section whose destinations point at fake providers started here
/// (`psp` answers at once, `echo` echoes, `slow` never answers, `down` is a
/// closed port, `narrow` lists only `other-shop`); `storefront` and
/// `other-shop` get the `relay` permission. Tight limits, so that each relay
/// failure can be produced: answers over 2048 bytes, requests over 4096, a 3 s
/// timeout.
async fn relay_config(v: &BinVault, config: &mut String) -> Providers {
    let p = Providers {
        psp: FakeProvider::start(Mode::Answer(201, r#"{"id":"ch_1","status":"succeeded"}"#)).await,
        echo: FakeProvider::start(Mode::Echo).await,
        slow: FakeProvider::start(Mode::Slow).await,
    };
    for (name, prov) in [("psp", &p.psp), ("echo", &p.echo), ("slow", &p.slow)] {
        prov.write_ca(&v.root.join(format!("{name}-ca.pem")));
    }
    for client in ["storefront", "other-shop"] {
        let from = format!("name = \"{client}\"\n");
        let at = config
            .find(&from)
            .unwrap_or_else(|| panic!("no client {client}"));
        let perms = at + config[at..].find("permissions = [").unwrap() + "permissions = [".len();
        config.insert_str(perms, "\"relay\", ");
    }
    config.push_str(
        "[relay]\ncvc_ttl_secs = 900\nconnect_timeout_secs = 3\ntimeout_secs = 3\nrequest_bytes = 4096\nresponse_bytes = 2048\n",
    );
    let down = format!("https://127.0.0.1:{}/v1/charges", closed_port());
    for (name, url, ca, clients) in [
        (
            "psp",
            p.psp.url("/v1/charges"),
            "psp",
            "\"storefront\", \"other-shop\"",
        ),
        ("echo", p.echo.url("/echo"), "echo", "\"storefront\""),
        ("slow", p.slow.url("/slow"), "slow", "\"storefront\""),
        ("down", down, "psp", "\"storefront\""),
        ("narrow", p.psp.url("/v1/charges"), "psp", "\"other-shop\""),
    ] {
        config.push_str(&format!(
            "[[relay.destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nca_file = \"{ca}-ca.pem\"\nclients = [{clients}]\n"
        ));
    }
    p
}

/// A relay request of `token` with `body` as its template.
fn relay_request(token: &str, body: &str) -> Value {
    json!({
        "token": token,
        "purpose": "charge order 1234",
        "method": "POST",
        "headers": {"content-type": "application/json", "idempotency-key": "order-1234"},
        "body": body,
    })
}

/// The relay route and the security code, through the real binary and the fake
/// providers: every answer the relay has, including its failures, and
/// `Idempotency-Key` (replay, reuse, a request still running) on the tokenize
/// and relay routes.
async fn exercise_relay(v: &BinVault, addr: SocketAddr, p: &Providers, ex: &mut Exchanges) {
    const CHARGE: &str = r#"{"amount":1999,"card":{"number":"{{card.number}}","exp_month":"{{card.exp_month}}","exp_year":"{{card.exp_year}}"}}"#;
    const WITH_CVC: &str =
        r#"{"amount":1999,"card":{"number":"{{card.number}}","cvc":"{{card.cvc}}"}}"#;
    let sf = v.client(addr, "storefront");
    let sf2 = v.client(addr, "storefront");
    let pay = v.client(addr, "payments");
    let other = v.client(addr, "other-shop");
    let year = util::this_year() + 4;

    // A card with its security code, tokenized with an idempotency key, twice.
    let card = json!({"card": {"number": cards::fresh(), "exp_month": 12, "exp_year": year, "cvc": "739"}});
    let body = card.to_string();
    let key = [("idempotency-key", "tokenize-cvc-1")];
    let r = ex
        .send_with(
            "tokenize, cvc, idempotent",
            &sf,
            "POST",
            "/v1/tokens",
            Some(body.as_bytes()),
            Some("application/json"),
            &key,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["cvc"]["held"], true, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = ex
        .send_with(
            "tokenize, idempotent replay",
            &sf,
            "POST",
            "/v1/tokens",
            Some(body.as_bytes()),
            Some("application/json"),
            &key,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.headers["idempotent-replayed"], "true");
    let batch = json!({"items": [card]}).to_string();
    let r = ex
        .send_with(
            "batch, idempotency key reused",
            &sf,
            "POST",
            "/v1/tokens/batch",
            Some(batch.as_bytes()),
            Some("application/json"),
            &[("idempotency-key", "batch-1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ex
        .send_with(
            "batch, idempotency key reused",
            &sf,
            "POST",
            "/v1/tokens/batch",
            Some(b"{\"items\":[]}"),
            Some("application/json"),
            &[("idempotency-key", "batch-1")],
        )
        .await;
    r.assert_problem(409, "idempotency_key_reused");
    ex.send_with(
        "tokenize, bad idempotency key",
        &sf,
        "POST",
        "/v1/tokens",
        Some(body.as_bytes()),
        Some("application/json"),
        &[("idempotency-key", " ")],
    )
    .await;
    assert_eq!(
        ex.get("metadata, cvc held", &sf, &format!("/v1/tokens/{token}"))
            .await
            .json()["cvc"]["held"],
        true
    );

    // The relay: the code used once, the answer kept under the vault's key.
    let path = "/v1/relay/psp";
    let req = relay_request(&token, WITH_CVC).to_string();
    let key = [("idempotency-key", "relay-1")];
    let r = ex
        .send_with(
            "relay, with the code",
            &sf,
            "POST",
            path,
            Some(req.as_bytes()),
            Some("application/json"),
            &key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], 201);
    let r = ex
        .send_with(
            "relay, idempotent replay",
            &sf,
            "POST",
            path,
            Some(req.as_bytes()),
            Some("application/json"),
            &key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(p.psp.received().len(), 1, "the replay called the provider");
    let changed = relay_request(&token, CHARGE).to_string();
    ex.send_with(
        "relay, idempotency key reused",
        &sf,
        "POST",
        path,
        Some(changed.as_bytes()),
        Some("application/json"),
        &key,
    )
    .await
    .assert_problem(409, "idempotency_key_reused");
    ex.json(
        "relay, code used",
        &sf,
        "POST",
        path,
        &relay_request(&token, WITH_CVC),
    )
    .await
    .assert_problem(409, "cvc_unavailable");
    assert_eq!(
        ex.get("metadata, cvc used", &sf, &format!("/v1/tokens/{token}"))
            .await
            .json()["cvc"]["held"],
        false
    );
    let r = ex
        .json(
            "relay, no code needed",
            &sf,
            "POST",
            path,
            &relay_request(&token, CHARGE),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ex
        .json(
            "relay, echoed and masked",
            &sf,
            "POST",
            "/v1/relay/echo",
            &relay_request(&token, CHARGE),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["body"].as_str().map(|b| b.contains("1999")),
        Some(true)
    );

    // Refused before any card is opened.
    let before = p.psp.received().len();
    for (name, template, code) in [
        (
            "relay, placeholder outside a string",
            r#"{"amount":{{card.exp_month}}}"#,
            "bad_template",
        ),
        (
            "relay, unknown placeholder",
            r#"{"pin":"{{card.pin}}"}"#,
            "unknown_placeholder",
        ),
    ] {
        ex.json(name, &sf, "POST", path, &relay_request(&token, template))
            .await
            .assert_problem(422, code);
    }
    let big = format!(
        r#"{{"pad":"{}","n":"{{{{card.number}}}}"}}"#,
        "x".repeat(5000)
    );
    ex.json(
        "relay, request too large",
        &sf,
        "POST",
        path,
        &relay_request(&token, &big),
    )
    .await
    .assert_problem(422, "request_too_large");
    ex.json(
        "relay, text/plain template",
        &sf,
        "POST",
        path,
        &json!({"token": token, "purpose": "x", "headers": {"content-type": "text/plain"}, "body": "{{card.number}}"}),
    )
    .await
    .assert_problem(422, "unsupported_content_type");
    ex.json(
        "relay, host header",
        &sf,
        "POST",
        path,
        &json!({"token": token, "purpose": "x", "headers": {"host": "evil.example", "content-type": "application/json"}, "body": "{}"}),
    )
    .await
    .assert_problem(422, "invalid_header");
    // Caller headers are bounded: at most `max_headers` (32 by default), at most
    // `header_bytes` (8192) together.
    let mut many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    many.insert("content-type".into(), json!("application/json"));
    ex.json(
        "relay, too many headers",
        &sf,
        "POST",
        path,
        &json!({"token": token, "purpose": "x", "headers": many, "body": "{}"}),
    )
    .await
    .assert_problem(422, "invalid_header");
    ex.json(
        "relay, headers too large",
        &sf,
        "POST",
        path,
        &json!({"token": token, "purpose": "x", "headers": {"content-type": "application/json", "x-pad": "v".repeat(9000)}, "body": "{}"}),
    )
    .await
    .assert_problem(422, "invalid_header");
    ex.json(
        "relay, no purpose",
        &sf,
        "POST",
        path,
        &json!({"token": token, "body": "{}"}),
    )
    .await
    .assert_problem(400, "purpose_required");
    ex.json(
        "relay, unknown field",
        &sf,
        "POST",
        path,
        &json!({"token": token, "purpose": "x", "url": "https://evil.example"}),
    )
    .await
    .assert_problem(400, "invalid_request");
    ex.send(
        "relay, not JSON",
        &sf,
        "POST",
        path,
        Some(b"{\"token\""),
        Some("application/json"),
    )
    .await;
    ex.send(
        "relay, text/plain",
        &sf,
        "POST",
        path,
        Some(b"{}"),
        Some("text/plain"),
    )
    .await;
    ex.json(
        "relay, unknown token",
        &sf,
        "POST",
        path,
        &relay_request("tok_0000000000000000000000", CHARGE),
    )
    .await
    .assert_problem(404, "not_found");
    ex.json(
        "relay, other tenant's token",
        &other,
        "POST",
        path,
        &relay_request(&token, CHARGE),
    )
    .await
    .assert_problem(404, "not_found");
    ex.json(
        "relay, unknown destination",
        &sf,
        "POST",
        "/v1/relay/nowhere",
        &relay_request(&token, CHARGE),
    )
    .await
    .assert_problem(404, "not_found");
    ex.json(
        "relay, destination not listing the client",
        &sf,
        "POST",
        "/v1/relay/narrow",
        &relay_request(&token, CHARGE),
    )
    .await
    .assert_problem(403, "forbidden");
    ex.json(
        "relay without the permission",
        &pay,
        "POST",
        path,
        &relay_request(&token, CHARGE),
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(
        p.psp.received().len(),
        before,
        "a refused relay reached the provider"
    );

    // The provider's failures.
    ex.json(
        "relay, provider down",
        &sf,
        "POST",
        "/v1/relay/down",
        &relay_request(&token, CHARGE),
    )
    .await
    .assert_problem(502, "upstream_unreachable");
    let padded = format!(
        r#"{{"pad":"{}","n":"{{{{card.number}}}}"}}"#,
        "x".repeat(3000)
    );
    ex.json(
        "relay, answer too large",
        &sf,
        "POST",
        "/v1/relay/echo",
        &relay_request(&token, &padded),
    )
    .await
    .assert_problem(502, "upstream_answer_too_large");
    // A slow provider, and a retry while the first relay still waits for it (on
    // a second connection, the same client): the retry is told so, the first
    // times out.
    let req = relay_request(&token, CHARGE).to_string();
    let key = [("idempotency-key", "slow-1")];
    let first = sf.request_with_headers(
        "POST",
        "/v1/relay/slow",
        Some(req.as_bytes()),
        Some("application/json"),
        &key,
    );
    let retry = async {
        // The provider has the request: the key is reserved.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.slow.received().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow provider got nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sf2.request_with_headers(
            "POST",
            "/v1/relay/slow",
            Some(req.as_bytes()),
            Some("application/json"),
            &key,
        )
        .await
    };
    let (first, retry) = tokio::join!(first, retry);
    let (first, retry) = (first.unwrap(), retry.unwrap());
    ex.record("relay, provider slow", "POST", "/v1/relay/slow", &first);
    ex.record(
        "relay, idempotency key in use",
        "POST",
        "/v1/relay/slow",
        &retry,
    );
    first.assert_problem(504, "upstream_timeout");
    retry.assert_problem(409, "idempotency_key_in_use");
    assert_eq!(p.slow.received().len(), 1);
}
