//! Admin commands on a live vault under load: `keys rewrap` (full speed, no
//! `--max-rate`) and `retention run` from the real binary while clients tokenize and
//! detokenize over mTLS against a running `panvault serve`. The admin process must
//! yield the write lock: the server's writes keep being answered while it runs, and
//! nobody gets a 5xx.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use panvault_vault::{AccessContext, TokenizeRequest, Vault};

use crate::util::{self, BinVault, ServeProcess, cards};

/// Records in the store before the rewrap (a CI-friendly size: about a second of
/// rewrap in a debug build; `PANVAULT_ADMIN_LOAD_RECORDS` to change).
const RECORDS: u64 = 10_000;
/// Concurrent clients: half tokenize, half detokenize.
const CLIENTS: usize = 4;

/// What the load tasks saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    /// Tokenize answers received while the admin command was still running.
    writes_during: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Fills the store through the library (faster than HTTP in a debug build) before
/// the server starts; returns some of the tokens, for detokenize.
async fn preload(v: &BinVault, n: u64) -> Vec<String> {
    let vault = Vault::open(&v.data, &v.unlock()).unwrap();
    let ctx = AccessContext {
        actor: "storefront".into(),
        ..Default::default()
    };
    let mut tokens = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let items = (0..k)
            .map(|_| {
                TokenizeRequest::new(
                    &cards::fresh(),
                    12,
                    i64::from(util::this_year() + 4),
                    vault.today(),
                )
            })
            .collect();
        for r in vault
            .tokenize_batch("demo-shop", items, &ctx)
            .await
            .unwrap()
        {
            let t = r.unwrap();
            if tokens.len() < 2000 {
                tokens.push(t.token);
            }
        }
        left -= k;
    }
    vault.shutdown();
    tokens
}

/// Runs `CLIENTS` tasks of tokenize / detokenize until `stop`; every answer that is
/// not a success (or a transport error, or no answer within 30 s) is recorded.
fn start_load(
    v: &BinVault,
    addr: std::net::SocketAddr,
    tokens: Arc<Vec<String>>,
    admin_running: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|i| {
            let writer = i % 2 == 0;
            let client = v.client(addr, if writer { "storefront" } else { "payments" });
            let (tokens, admin_running, stop, seen) = (
                Arc::clone(&tokens),
                Arc::clone(&admin_running),
                Arc::clone(&stop),
                Arc::clone(&seen),
            );
            tokio::spawn(async move {
                let mut k = i;
                while !stop.load(Ordering::SeqCst) {
                    k += CLIENTS;
                    let (path, body) = if writer {
                        (
                            "/v1/tokens".to_owned(),
                            util::card_request(&cards::fresh()).to_string(),
                        )
                    } else {
                        let tok = &tokens[k % tokens.len()];
                        (
                            format!("/v1/tokens/{tok}/detokenize"),
                            r#"{"purpose":"load test"}"#.to_owned(),
                        )
                    };
                    let fut = client.request(
                        "POST",
                        &path,
                        Some(body.as_bytes()),
                        Some("application/json"),
                    );
                    let what = if writer { "tokenize" } else { "detokenize" };
                    match tokio::time::timeout(Duration::from_secs(30), fut).await {
                        Ok(Ok(r)) if r.status == 200 || r.status == 201 => {
                            seen.ok.fetch_add(1, Ordering::Relaxed);
                            if writer && admin_running.load(Ordering::SeqCst) {
                                seen.writes_during.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The body is a problem+json answer, never a card number.
                        Ok(Ok(r)) => seen.errors.lock().unwrap().push(format!(
                            "{what}: {} {}",
                            r.status,
                            r.text()
                        )),
                        Ok(Err(e)) => seen
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("{what}: transport: {e}")),
                        Err(_) => seen
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("{what}: no answer within 30 s")),
                    }
                }
            })
        })
        .collect()
}

/// `keys rotate`, then a full-speed `keys rewrap` while clients tokenize and
/// detokenize: the rewrap finishes, every request succeeds, and tokenizes keep
/// completing while the rewrap runs (before, its back-to-back transactions kept the
/// write lock and the server's writes waited for the whole rewrap, or got 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_speed_rewrap_leaves_the_server_writing() {
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let records = util::env_number("PANVAULT_ADMIN_LOAD_RECORDS", RECORDS);
        let tokens = Arc::new(preload(&v, records).await);
        let server = ServeProcess::start(&v).await.unwrap();
        server.wait_healthy(&v, Duration::from_secs(30)).await;
        let sf = v.client(server.addr, "storefront");

        let out = v
            .run(&["keys", "rotate"], true, Duration::from_secs(60))
            .await;
        assert!(out.success(), "{}", out.stderr);
        // Wait until the server seals under v2 (it reloads keys within a second), so
        // the rewrap is the only thing to do.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = sf.tokenize(&cards::fresh()).await;
            assert_eq!(r.status, 201, "{}", r.text());
            if r.json()["key_version"] == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not pick up v2"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let admin_running = Arc::new(AtomicBool::new(false));
        let load = start_load(
            &v,
            server.addr,
            Arc::clone(&tokens),
            Arc::clone(&admin_running),
            Arc::clone(&stop),
            Arc::clone(&seen),
        );
        // Some answers before the rewrap starts: the load is running.
        while seen.ok.load(Ordering::Relaxed) < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The rewrap runs in its own process; writes count as "during" from its
        // first committed batch (the v1 count drops) to its last (none left), so
        // the process start and unseal are not counted.
        let rewrap = {
            let mut cmd = tokio::process::Command::new(util::panvault_bin());
            cmd.args(["keys", "rewrap", "--quiet", "--data-dir"])
                .arg(&v.data)
                .arg("--passphrase-file")
                .arg(&v.pass);
            tokio::spawn(util::run_command(cmd, Duration::from_secs(240)))
        };
        let db = v.db();
        let watch = {
            let admin_running = Arc::clone(&admin_running);
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open_with_flags(
                    &db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let under_v1 = || -> u64 {
                    let n: i64 = conn
                        .query_row(
                            "SELECT count(*) FROM cards WHERE key_version = 1",
                            [],
                            |r| r.get(0),
                        )
                        .unwrap();
                    u64::try_from(n).unwrap()
                };
                let first = under_v1();
                let deadline = std::time::Instant::now() + Duration::from_secs(240);
                let mut started = false;
                while std::time::Instant::now() < deadline {
                    let left = under_v1();
                    if !started && left < first {
                        started = true;
                        admin_running.store(true, Ordering::SeqCst);
                    }
                    if left == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                admin_running.store(false, Ordering::SeqCst);
                (first, started)
            })
        };
        let out = rewrap.await.unwrap();
        let (first, started) = watch.await.unwrap();
        assert!(first >= records && started, "{first} {started}");
        let during = seen.writes_during.load(Ordering::Relaxed);
        stop.store(true, Ordering::SeqCst);
        for t in load {
            t.await.unwrap();
        }
        assert!(out.success(), "rewrap failed: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("to v2") && out.stdout.contains("0 left"),
            "{}",
            out.stdout
        );
        let errors = seen.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "{} request(s) failed during the rewrap, first: {:?}",
            errors.len(),
            errors.first()
        );
        // Not a speed figure: only that the server's writes were not held off for the
        // whole rewrap (each client waits for its answer, so a stalled writer means
        // no tokenize completes until the rewrap ends).
        assert!(
            during >= 50,
            "only {during} tokenize(s) completed while the rewrap ran"
        );
        println!(
            "rewrap of {records} records: {}; {during} tokenizes completed meanwhile, {} requests in all",
            out.stdout.trim(),
            seen.ok.load(Ordering::Relaxed)
        );
        let keys = v
            .run(&["keys", "list", "--json"], true, Duration::from_secs(60))
            .await;
        assert!(keys.success(), "{}", keys.stderr);
        let list: serde_json::Value =
            serde_json::from_str(keys.stdout.trim_end_matches(|c| c != ']')).unwrap();
        assert_eq!(list[0]["records"], 0, "{list}");
        server.terminate().await;
    })
    .await;
}

/// An admin command that finds the write lock held (here by another connection's
/// transaction, as another admin command's would be) says so on stderr, waits and
/// then does its work once the lock is free (before, it waited silently and failed
/// with a bare `DatabaseBusy` after 5 s, exit 75).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_says_it_waits_for_the_write_lock() {
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        // built (if need be) before the lock is taken
        let bin = util::panvault_bin();
        let db = v.db();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
            conn.execute_batch("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();
        let mut child = tokio::process::Command::new(bin)
            .args(["retention", "run", "--data-dir"])
            .arg(&v.data)
            .arg("--passphrase-file")
            .arg(&v.pass)
            .env_remove("PANVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout_lines = util::LineCollector::start(child.stdout.take().unwrap());
        let mut stderr_lines = util::LineCollector::start(child.stderr.take().unwrap());
        let (stdout, stderr) = (
            Arc::clone(&stdout_lines.text),
            Arc::clone(&stderr_lines.text),
        );
        // Release the lock once the command says it waits for it (or has ended).
        let status = loop {
            if stderr
                .lock()
                .unwrap()
                .contains("another admin command or the server holds it")
            {
                release_tx.send(()).unwrap();
                break child.wait().await.unwrap();
            }
            if let Some(status) = child.try_wait().unwrap() {
                release_tx.send(()).unwrap();
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        holder.join().unwrap();
        // Everything it wrote: both streams have ended.
        stdout_lines.finished(Duration::from_secs(10)).await;
        stderr_lines.finished(Duration::from_secs(10)).await;
        let (out, err) = (
            stdout.lock().unwrap().clone(),
            stderr.lock().unwrap().clone(),
        );
        assert!(status.success(), "{status}: {out}{err}");
        assert!(
            err.contains("another admin command or the server holds it"),
            "{err}"
        );
        assert!(out.contains("Purged 0 card(s)"), "{out}");
    })
    .await;
}
