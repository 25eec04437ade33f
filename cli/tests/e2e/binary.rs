//! The real `panvault` binary: `quickstart` end to end (and again, reusing what it
//! made), `serve` refusing bad configurations, `bench` against a live server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use panvault_vault::config::{Config, Permission};
use panvault_vault::tls::pki;
use tokio::process::{Child, Command};

use crate::util::{self, Client, TestServer, cards};

pub(crate) struct Quickstart {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The end of stderr: everything is in `stderr` once it has come.
    stderr_lines: util::LineCollector,
}

pub(crate) async fn quickstart(dir: &Path) -> Quickstart {
    let mut child = Command::new(util::panvault_bin())
        .args(["quickstart", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "PANVAULT_LOG",
            std::env::var("PANVAULT_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("PANVAULT_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = util::collect_lines(child.stdout.take().unwrap());
    let stderr_lines = util::LineCollector::start(child.stderr.take().unwrap());
    let stderr = Arc::clone(&stderr_lines.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = stdout.lock().unwrap().clone();
        if let Some(rest) = text.split("ready at https://localhost:").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "quickstart exited with {status}: {}",
                stderr.lock().unwrap()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quickstart not ready: {}",
            stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Quickstart {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        stdout,
        stderr,
        stderr_lines,
    }
}

impl Quickstart {
    pub(crate) fn client(&self, dir: &Path, name: &str) -> Client {
        let p = dir.join("pki");
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap();
        Client::new(
            self.addr,
            &read("ca.pem"),
            Some((&read(&format!("{name}.pem")), &read(&format!("{name}.key")))),
            &[b"http/1.1"],
        )
    }

    /// SIGTERM, then the exit status must be success.
    pub(crate) async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap();
        self.stderr_lines.finished(Duration::from_secs(10)).await;
        let err = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "exit {status}: {err}");
        err
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_makes_a_working_vault_and_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("panvault-data");
    let qs = quickstart(&dir).await;

    // what it made
    let pass = std::fs::read_to_string(dir.join("dev-passphrase")).unwrap();
    assert_eq!(pass.trim().len(), 64);
    assert!(pass.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("dev-passphrase"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "storefront.pem",
        "storefront.key",
        "payments.pem",
        "payments.key",
        "other-shop.pem",
        "other-shop.key",
        "monitor.pem",
        "monitor.key",
    ] {
        assert!(dir.join("pki").join(f).exists(), "{f}");
    }
    let config = Config::load(&dir.join("panvault.toml")).unwrap();
    let c = |n: &str| config.client(n).unwrap().clone();
    assert_eq!(
        (
            c("storefront").tenant.as_str(),
            c("payments").tenant.as_str(),
            c("other-shop").tenant.as_str()
        ),
        ("demo-shop", "demo-shop", "other-shop")
    );
    assert!(
        c("storefront").can(Permission::Tokenize)
            && c("storefront").can(Permission::Erase)
            && !c("storefront").can(Permission::Detokenize)
    );
    assert!(c("payments").can(Permission::Detokenize) && !c("payments").can(Permission::Tokenize));
    assert!(
        c("other-shop").can(Permission::Detokenize) && c("other-shop").can(Permission::Tokenize)
    );
    // /metrics (every tenant's figures) is for `monitor` alone, and it can do
    // nothing else; the printed example scrapes with it, not with `payments`.
    assert_eq!(c("monitor").permissions, vec![Permission::Metrics]);
    for name in ["storefront", "payments", "other-shop"] {
        assert!(!c(name).can(Permission::Metrics), "{name}");
    }
    // stdout and stderr are read by two tasks: what was printed before "ready"
    // on the other pipe may not have been read yet.
    let printed = |pipe: &std::sync::Arc<std::sync::Mutex<String>>, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pipe.lock().unwrap().contains(what) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        pipe.lock().unwrap().contains(what)
    };
    assert!(printed(&qs.stderr, "development only"));
    assert!(printed(&qs.stdout, "/metrics"));
    let out = qs.stdout.lock().unwrap().clone();
    assert!(
        out.contains("curl -sS --cacert")
            && out.contains("storefront.pem")
            && out.contains("/detokenize"),
        "{out}"
    );

    // it works as the README says
    let card = cards::fresh();
    let r = qs.client(&dir, "storefront").tokenize(&card).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let d = qs
        .client(&dir, "payments")
        .detokenize(&token, "charge order 1234")
        .await;
    assert!(
        d.status == 200 && d.json()["card"]["number"] == card.as_str(),
        "detokenize failed: {}",
        d.status
    );
    qs.client(&dir, "storefront")
        .detokenize(&token, "charge")
        .await
        .assert_problem(403, "forbidden");
    qs.client(&dir, "other-shop")
        .get(&format!("/v1/tokens/{token}"))
        .await
        .assert_problem(404, "not_found");
    let metrics_line = out
        .lines()
        .find(|l| l.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no metrics example in {out}"));
    assert!(
        metrics_line.contains("monitor.pem") && !metrics_line.contains("payments"),
        "{metrics_line}"
    );
    let m = qs.client(&dir, "monitor").get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.text().contains("panvault_tokens_stored 1"),
        "{}",
        m.text()
    );
    for name in ["payments", "other-shop"] {
        qs.client(&dir, name)
            .get("/metrics")
            .await
            .assert_problem(403, "forbidden");
    }
    qs.client(&dir, "monitor")
        .tokenize(&cards::fresh())
        .await
        .assert_problem(403, "forbidden");
    let ca_before = std::fs::read(dir.join("pki/ca.pem")).unwrap();
    let err = qs.stop().await;
    assert!(err.contains("stopped"), "{err}");
    assert!(
        !err.contains(&card),
        "the server's log holds the card {}",
        cards::masked(&card)
    );

    // again: same passphrase, same CA, same vault
    let qs = quickstart(&dir).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("dev-passphrase")).unwrap(),
        pass
    );
    assert_eq!(std::fs::read(dir.join("pki/ca.pem")).unwrap(), ca_before);
    let d = qs
        .client(&dir, "payments")
        .detokenize(&token, "refund order 1234")
        .await;
    assert!(
        d.status == 200 && d.json()["card"]["number"] == card.as_str(),
        "after restart: {}",
        d.status
    );
    let err = qs.stop().await;
    assert!(!err.contains("created a vault"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_bad_configuration_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    pki::ensure_dev_pki(&tmp.path().join("pki"), &["storefront"]).unwrap();
    std::fs::write(tmp.path().join("pass"), "not-the-passphrase\n").unwrap();
    let good = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n\
                [[clients]]\nname = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [\"tokenize\"]\n";
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace(
                "data_dir = \"data\"",
                "data_dir = \"data\"\ncolour = \"red\"",
            ),
            "colour",
        ),
        (good.replace("listen = \"127.0.0.1:0\"\n", ""), "listen"),
        (
            good.replace("listen = \"127.0.0.1:0\"", "listen = \"everywhere\""),
            "listen",
        ),
        (good.replace("pki/server.key", "pki/missing.key"), "tls.key"),
        (
            good.replace("cert = \"pki/server.pem\"", "cert = \"pki/server.key\""),
            "tls.cert",
        ),
        (
            good.replace("key = \"pki/server.key\"", "key = \"pki/storefront.key\""),
            "tls.key",
        ),
        (
            good.replace("[\"tokenize\"]", "[\"everything\"]"),
            "everything",
        ),
        (good.replace("demo-shop", "demo shop"), "clients[0].tenant"),
        (
            format!("{good}[[clients]]\nname = \"storefront\"\ntenant = \"t\"\n"),
            "clients[1].name",
        ),
        (
            format!("{good}[limits]\nbody_bytes = 1\n"),
            "limits.body_bytes",
        ),
        (
            good.split("[[clients]]").next().unwrap().to_owned(),
            "clients",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(util::panvault_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--passphrase-file")
            .arg(tmp.path().join("pass"))
            .stdin(Stdio::null())
            .output()
            .await
            .map(util::kept)
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} ({field}) was accepted");
        assert!(
            err.contains(field),
            "case {i}: the message does not name {field}: {err}"
        );
        assert!(!err.contains("serving"), "case {i}: {err}");
    }
    // a good configuration but the wrong passphrase: refused too
    util::init_logs();
    let data = tmp.path().join("data");
    let spec = panvault_vault::SealSpec {
        unlock: panvault_vault::Unlock::Passphrase(panvault_vault::SecretText::new("right".into())),
        kdf: util::TEST_KDF,
        shares: None,
    };
    panvault_vault::Vault::init(&data, &spec, &panvault_vault::system_clock()).unwrap();
    std::fs::write(tmp.path().join("good.toml"), good).unwrap();
    let out = Command::new(util::panvault_bin())
        .args(["serve", "--allow-noncompliant", "--config"])
        .arg(tmp.path().join("good.toml"))
        .arg("--passphrase-file")
        .arg(tmp.path().join("pass"))
        .stdin(Stdio::null())
        .output()
        .await
        .map(util::kept)
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("passphrase"), "{err}");
    // The override is said as what it does (a passphrase seal fails dual control),
    // not as the refusal it overrides.
    assert!(
        err.contains("WARNING: starting despite ")
            && err.contains("keys.dual_control")
            && !err.contains("refusing to start"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_a_mix_against_a_live_server() {
    let server = TestServer::start().await;
    let out = Command::new(util::panvault_bin())
        .args(["bench", "--config"])
        .arg(server.dir.path().join("panvault.toml"))
        .args([
            "--client",
            "other-shop",
            "--op",
            "mix",
            "--connections",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--preload",
            "2000",
        ])
        .args(["--addr", &server.addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .map(util::kept)
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tokenize")
            && stdout.contains("detokenize")
            && stdout.contains("req/s")
            && stdout.contains("p99"),
        "{stdout}"
    );
    assert!(stdout.contains("errors      0"), "{stdout}");
    server.stop().await;
}

/// `serve --allow-noncompliant` records in the audit log each preflight check it
/// was told to override, as the check, its requirements and its first finding —
/// the same words it printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_audits_each_overridden_preflight_failure_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let v = util::BinVault::create(tmp.path());
    let server = util::ServeProcess::start(&v).await.unwrap();
    let stderr = server.stderr();
    assert!(server.terminate().await.success());
    let conn = panvault_audit::log::open_read_only(&v.db()).unwrap();
    let events = panvault_audit::log::read_events(&conn, 1, 10_000).unwrap();
    let overridden = events
        .iter()
        .find(|e| e.event.action == panvault_audit::log::Action::ServeNoncompliant)
        .expect("a serve.noncompliant event");
    let details = overridden.event.details.as_deref().unwrap();
    // A passphrase seal fails dual control by design.
    assert!(details.contains("keys.dual_control (3.6.1.2"), "{details}");
    for failure in details.split("; ") {
        assert!(
            failure.contains(" (") && failure.contains("): "),
            "{failure}"
        );
        assert!(
            stderr.contains(&format!("\n  {failure}")),
            "{failure}\n{stderr}"
        );
    }
}

/// `serve --listen ADDR` listens there rather than at the configuration's
/// `listen`, so several nodes can share one configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listen_overrides_the_configured_address() {
    let tmp = tempfile::tempdir().unwrap();
    let v = util::BinVault::create(tmp.path());
    // A port that was free a moment ago (the configuration says port 0).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(util::panvault_bin());
    cmd.args(v.serve_args())
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let server = util::ServeProcess::spawn(cmd).await.unwrap();
    assert_eq!(server.addr.port(), port, "{}", server.stderr());
    let health = v.client(server.addr, "storefront").get("/healthz").await;
    assert_eq!(health.status, 200);
    assert!(server.terminate().await.success());
    // A malformed address is a usage error that names the flag.
    let out = Command::new(util::panvault_bin())
        .args(v.serve_args())
        .args(["--listen", "not-an-address"])
        .stdin(Stdio::null())
        .output()
        .await
        .map(util::kept)
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
