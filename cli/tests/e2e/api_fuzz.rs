//! A property-based fuzzer driven by the API description: schemathesis generates
//! requests from `docs/openapi.yaml` (valid ones, and ones that break it), sends
//! them over mutual TLS to a real `panvault serve`, and checks every answer: no
//! 5xx; status, content type, headers and body as described; a method a route does
//! not serve answered 405 with an `Allow` header naming the described ones.
//! Bounded by a fixed seed and a number of examples per operation (under a minute
//! on 2 cores); `PANVAULT_API_FUZZ_EXAMPLES` raises it for a longer run,
//! `PANVAULT_API_FUZZ_SEED` explores elsewhere.
//!
//! Needs Python's `schemathesis` (`.ci/run` installs it; under CI its absence fails
//! the test). Its output goes to the suite's leak scan like every other output.

use std::time::Duration;

use panvault_vault::tls::pki::LeafSpec;

use crate::openapi::{description, python_ready};
use crate::util::provider::{FakeProvider, Mode};
use crate::util::{self, BinVault, Client, ServeProcess, TestPki, cards, run_command};

/// Examples per operation unless `PANVAULT_API_FUZZ_EXAMPLES` says otherwise: about
/// 2,000 requests, half a minute on 2 idle cores (debug build).
const EXAMPLES: u64 = 300;

/// The fuzzing client: every permission, in a tenant of its own.
const FUZZER: &str = "fuzzer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_or_undescribed_answer() {
    let test = "schemathesis_finds_no_server_error_or_undescribed_answer";
    if let Err(why) = python_ready("schemathesis") {
        util::tools::missing(test, &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = BinVault::create(&dir.path().join("vault"));
    let pki_dir = v.root.join("pki");
    let issued = TestPki::new(&pki_dir).issue(&LeafSpec::client(FUZZER));
    let (cert, key) = (
        pki_dir.join(format!("{FUZZER}.pem")),
        pki_dir.join(format!("{FUZZER}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem.as_bytes()).unwrap();
    // The relay's example destination `psp`, pointing at a provider that answers
    // at once (a generated relay that gets past validation never waits long; the
    // timeouts bound one that would).
    let psp = FakeProvider::start(Mode::Answer(201, r#"{"id":"ch_1"}"#)).await;
    psp.write_ca(&v.root.join("psp-ca.pem"));
    let mut config = std::fs::read_to_string(&v.config).unwrap();
    config.push_str(&format!(
        "[[clients]]\nname = \"{FUZZER}\"\ntenant = \"fuzz\"\npermissions = [\"tokenize\", \"read\", \"detokenize\", \"delete\", \"erase\", \"metrics\", \"relay\"]\n\
         [relay]\nconnect_timeout_secs = 2\ntimeout_secs = 5\n\
         [[relay.destinations]]\nname = \"psp\"\nurl = \"{}\"\nca_file = \"psp-ca.pem\"\nclients = [\"{FUZZER}\"]\n",
        psp.url("/v1/charges")
    ));
    std::fs::write(&v.config, config).unwrap();
    let server = ServeProcess::start(&v).await.unwrap();
    server.wait_healthy(&v, Duration::from_secs(30)).await;

    let examples = util::env_number("PANVAULT_API_FUZZ_EXAMPLES", EXAMPLES);
    let seed = util::env_number("PANVAULT_API_FUZZ_SEED", 1);
    // Hypothesis keeps its database in the working directory: a temporary one.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // The relay is asked of its configured destination only (a random name is
    // a 404 before anything is checked), and often with a token the fuzzer
    // holds (a random one is a 404 once the template passed): the generated
    // bodies, headers and templates reach every check, and the provider.
    let fuzzer = Client::new(
        server.addr,
        &v.ca_pem,
        Some((&issued.cert_pem, &issued.key_pem)),
        &[b"http/1.1"],
    );
    let r = fuzzer.tokenize(&cards::fresh()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let settings = work.join("schemathesis.toml");
    std::fs::write(
        &settings,
        format!(
            "[dictionaries.tokens]\nvalues = [\"{token}\"]\n\
             [[operations]]\ninclude-operation-id = \"relay\"\n\
             parameters = {{ \"path.destination\" = \"psp\", \"body.token\" = {{ dictionary = \"tokens\", probability = 0.7 }} }}\n"
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.current_dir(&work)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        ])
        .arg("--config-file")
        .arg(&settings)
        .arg("run")
        .arg(description())
        .arg("--url")
        .arg(format!("https://{}", server.addr))
        .arg("--tls-verify")
        .arg(pki_dir.join("ca.pem"))
        .arg("--request-cert")
        .arg(&cert)
        .arg("--request-cert-key")
        .arg(&key)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance",
            "--max-examples",
            &examples.to_string(),
            "--seed",
            &seed.to_string(),
            // One worker: with two, Python 3.11's `ast.parse` (hypothesis
            // describes its filters with it) can fail across threads
            // ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .env("NO_COLOR", "1");
    let o = run_command(cmd, Duration::from_secs(600)).await;
    println!("{}", o.stdout);
    eprintln!("{}", o.stderr);
    let status = server.terminate().await;
    // The relay's answers, as its audit events record them.
    let conn =
        rusqlite::Connection::open_with_flags(v.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut st = conn
        .prepare(
            "SELECT coalesce(code, outcome), count(*) FROM audit_events \
             WHERE action = 'relay' GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    let relays: Vec<(String, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    eprintln!(
        "relay events by code: {relays:?}; the fake provider received {} requests",
        psp.received().len()
    );
    assert!(
        o.success(),
        "schemathesis found answers that break docs/openapi.yaml (above)"
    );
    assert!(status.success(), "serve exited with {status}");
    // The relay was fuzzed past its checks, not only refused at the door.
    assert!(
        !psp.received().is_empty() && relays.iter().any(|(c, _)| c != "not_found"),
        "the fuzzer never got a relay past the destination and the token: {relays:?}"
    );
}
