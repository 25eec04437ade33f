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
use crate::util::{self, BinVault, ServeProcess, TestPki, run_command};

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
    let mut config = std::fs::read_to_string(&v.config).unwrap();
    config.push_str(&format!(
        "[[clients]]\nname = \"{FUZZER}\"\ntenant = \"fuzz\"\npermissions = [\"tokenize\", \"read\", \"detokenize\", \"delete\", \"erase\", \"metrics\"]\n"
    ));
    std::fs::write(&v.config, config).unwrap();
    let server = ServeProcess::start(&v).await.unwrap();
    server.wait_healthy(&v, Duration::from_secs(30)).await;

    let examples = util::env_number("PANVAULT_API_FUZZ_EXAMPLES", EXAMPLES);
    let seed = util::env_number("PANVAULT_API_FUZZ_SEED", 1);
    // Hypothesis keeps its database in the working directory: a temporary one.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.current_dir(&work)
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "run",
        ])
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
    assert!(
        o.success(),
        "schemathesis found answers that break docs/openapi.yaml (above)"
    );
    assert!(status.success(), "serve exited with {status}");
}
