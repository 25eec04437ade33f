//! Crash safety: the real `panvault serve` killed with SIGKILL under load, and
//! `panvault keys rewrap` killed in the middle of its batches. Nothing that was
//! acknowledged may be lost, the database must pass `PRAGMA integrity_check`,
//! the audit chain must verify, and the vault must serve again at once.
//!
//! Kill points come from a seeded RNG; the seed is printed (`--nocapture`) and
//! can be replayed with `PANVAULT_CRASH_SEED=N`. The default (short) form kills
//! the server 4 times under load (and now and then once more while it starts)
//! and the rewrap 5 times, in a few seconds each. The long form kills both 20
//! times (the rewrap then gets 5,000 cards so that every kill lands mid-run):
//!
//! ```sh
//! PANVAULT_CRASH_KILLS=20 cargo test -p panvault-cli --test e2e crash -- --nocapture
//! ```
//!
//! `PANVAULT_REWRAP_KILLS=N` sets the rewrap's kills on their own. Every restart
//! also proves the file sound: `serve` runs `PRAGMA quick_check` before it
//! answers, and refuses a damaged database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panvault_vault::{AccessContext, TokenizeRequest, Vault};

use crate::util::{self, BinVault, ServeProcess, TestRng, cards};

/// (token, card) pairs the server acknowledged with 201/200.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// What went wrong, collected from the load tasks (never a full card number).
type Failures = Arc<Mutex<Vec<String>>>;

/// Kills under load: `PANVAULT_CRASH_KILLS`, 4 by default.
fn serve_kills() -> u64 {
    util::env_number("PANVAULT_CRASH_KILLS", 4)
}

/// Rewrap kills: `PANVAULT_REWRAP_KILLS`, else as many as the server's, at least 5.
fn rewrap_kills() -> u64 {
    util::env_number("PANVAULT_REWRAP_KILLS", serve_kills().max(5))
}

const TOKENIZERS: usize = 3;
const DETOKENIZERS: usize = 1;
const VERIFIERS: usize = 4;

/// `POST /v1/tokens/{token}/detokenize`; `Err` on a transport error.
async fn detokenize(
    client: &util::Client,
    token: &str,
    purpose: &str,
) -> Result<util::Resp, String> {
    let body = serde_json::json!({ "purpose": purpose }).to_string();
    client
        .request(
            "POST",
            &format!("/v1/tokens/{token}/detokenize"),
            Some(body.as_bytes()),
            Some("application/json"),
        )
        .await
}

/// Detokenizes every acknowledged token over `VERIFIERS` connections; returns
/// the failures (any non-200, a wrong card, a transport error).
async fn verify_acked(
    v: &BinVault,
    server: &ServeProcess,
    acked: &[(String, String)],
) -> Vec<String> {
    let chunk = acked.len().div_ceil(VERIFIERS).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for part in acked.chunks(chunk) {
        let part = part.to_vec();
        let client = v.client(server.addr, "payments");
        tasks.spawn(async move {
            let mut bad = Vec::new();
            for (token, card) in part {
                match detokenize(&client, &token, "crash check").await {
                    Ok(r) if r.status == 200 && r.json()["card"]["number"] == card.as_str() => {}
                    Ok(r) => bad.push(format!(
                        "{token} ({}): {} {}",
                        cards::masked(&card),
                        r.status,
                        if r.status == 200 {
                            "wrong card".into()
                        } else {
                            r.text()
                        }
                    )),
                    Err(e) => bad.push(format!("{token} ({}): {e}", cards::masked(&card))),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = tasks.join_next().await {
        bad.extend(r.unwrap());
    }
    bad
}

/// `panvault audit verify --data-dir DIR` must exit 0.
async fn audit_verifies(v: &BinVault, when: &str) {
    let out = v
        .run(&["audit", "verify"], false, Duration::from_secs(60))
        .await;
    assert!(
        out.success(),
        "audit verify failed {when}: {}\n{}",
        out.stdout,
        out.stderr
    );
}

/// One load task: tokenizes fresh cards (or detokenizes acknowledged ones)
/// until `killing`; a failure before the kill was ordered is recorded.
async fn load(
    client: util::Client,
    tokenizer: bool,
    mut rng: TestRng,
    acked: Acked,
    killing: Arc<AtomicBool>,
    failures: Failures,
    requests: Arc<AtomicU64>,
) {
    while !killing.load(Ordering::SeqCst) {
        if tokenizer {
            let card = cards::fresh();
            let r = client
                .request(
                    "POST",
                    "/v1/tokens",
                    Some(util::card_request(&card).to_string().as_bytes()),
                    Some("application/json"),
                )
                .await;
            requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(r) if r.status == 201 || r.status == 200 => {
                    let token = r.json()["token"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().push((token, card));
                }
                Ok(r) => failures.lock().unwrap().push(format!(
                    "tokenize {}: {} {}",
                    cards::masked(&card),
                    r.status,
                    r.text()
                )),
                // The error may only come from the kill, ordered before it.
                Err(_) if killing.load(Ordering::SeqCst) => return,
                Err(e) => failures
                    .lock()
                    .unwrap()
                    .push(format!("tokenize {}: {e}", cards::masked(&card))),
            }
        } else {
            let pick = {
                let a = acked.lock().unwrap();
                if a.is_empty() {
                    None
                } else {
                    let len = u64::try_from(a.len()).unwrap();
                    let i = usize::try_from(rng.range(0, len)).unwrap();
                    Some(a[i].clone())
                }
            };
            let Some((token, card)) = pick else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let r = detokenize(&client, &token, "crash load").await;
            requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(r) if r.status == 200 && r.json()["card"]["number"] == card.as_str() => {}
                Ok(r) => failures.lock().unwrap().push(format!(
                    "detokenize {token}: {} {}",
                    r.status,
                    if r.status == 200 {
                        "wrong card".into()
                    } else {
                        r.text()
                    }
                )),
                Err(_) if killing.load(Ordering::SeqCst) => return,
                Err(e) => failures
                    .lock()
                    .unwrap()
                    .push(format!("detokenize {token}: {e}")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_under_load_loses_nothing_acknowledged() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(60 + 20 * serve_kills()),
        serve_killed_under_load_loses_nothing_acknowledged_body(),
    )
    .await;
}

async fn serve_killed_under_load_loses_nothing_acknowledged_body() {
    let kills = serve_kills();
    let mut rng = TestRng::from_env("PANVAULT_CRASH_SEED", "serve crash test");
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let acked: Acked = Arc::default();
    let started = Instant::now();
    let mut total_requests = 0;
    let mut startup_kills = 0;
    for round in 0..=kills {
        if round > 0 && rng.range(0, 4) == 0 {
            // Now and then, a kill while the server is still opening the vault
            // (recovering the WAL, scanning, recording serve.start).
            let mut child = tokio::process::Command::new(util::panvault_bin())
                .args(v.serve_args())
                .env_remove("PANVAULT_PASSPHRASE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let after = rng.millis(0, 80);
            tokio::time::sleep(after).await;
            child.start_kill().unwrap();
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("no exit after SIGKILL")
                .unwrap();
            startup_kills += 1;
            println!("round {round}: also killed while starting, after {after:?}");
        }
        let mut server = ServeProcess::start(&v)
            .await
            .unwrap_or_else(|e| panic!("restart {round} failed: {e}"));
        server.wait_healthy(&v, Duration::from_secs(30)).await;
        // Everything acknowledged before the kills is still there, and every
        // request after the restart succeeds (the checks are requests too).
        let snapshot = acked.lock().unwrap().clone();
        let bad = verify_acked(&v, &server, &snapshot).await;
        assert!(
            bad.is_empty(),
            "after restart {round}: {} of {} acknowledged tokens failed: {:?}\n{}",
            bad.len(),
            snapshot.len(),
            &bad[..bad.len().min(10)],
            server.stderr()
        );
        audit_verifies(&v, &format!("after restart {round}")).await;
        if round == kills {
            let err = server.stderr();
            let status = server.terminate().await;
            assert!(status.success(), "exit {status}: {err}");
            break;
        }
        // Load, then SIGKILL at a random moment.
        let killing = Arc::new(AtomicBool::new(false));
        let failures: Failures = Arc::default();
        let requests = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..TOKENIZERS + DETOKENIZERS {
            let client = v.client(
                server.addr,
                if i < TOKENIZERS {
                    "storefront"
                } else {
                    "payments"
                },
            );
            tasks.spawn(load(
                client,
                i < TOKENIZERS,
                TestRng::new(rng.next_u64()),
                Arc::clone(&acked),
                Arc::clone(&killing),
                Arc::clone(&failures),
                Arc::clone(&requests),
            ));
        }
        let before = acked.lock().unwrap().len();
        let after = rng.millis(0, 900);
        tokio::time::sleep(after).await;
        killing.store(true, Ordering::SeqCst);
        server.kill().await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .expect("load tasks did not stop after the kill");
        let n = requests.load(Ordering::Relaxed);
        total_requests += n;
        println!(
            "round {round}: killed after {after:?}, {n} requests, {} new tokens acknowledged",
            acked.lock().unwrap().len() - before
        );
        let failures = failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "round {round}: {} request(s) failed while the server was up: {:?}\n{}",
            failures.len(),
            &failures[..failures.len().min(10)],
            server.stderr()
        );
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "{kills} kills under load + {startup_kills} while starting, {total_requests} load requests, {} tokens acknowledged, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(kills == 0 || !acked.is_empty(), "no load was acknowledged");
    // After the final (clean) stop: the file is sound, the log verifies, and
    // every acknowledged token is in the table.
    assert_eq!(util::integrity_check(&v.db()), "ok");
    audit_verifies(&v, "at the end").await;
    let conn = rusqlite::Connection::open(v.db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT count(*) FROM cards WHERE token = ?1")
        .unwrap();
    for (token, _) in &acked {
        let n: i64 = stmt.query_row([token], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "{token} is not stored exactly once");
    }
}

// ---- keys rewrap killed mid-run ----

/// Cards to rewrap: 3,000, more when more kills must land (≈ 250 per kill).
fn rewrap_cards(kills: u64) -> usize {
    usize::try_from(kills * 250).unwrap().max(3000)
}

/// (records under v1, all records), read without disturbing the run.
fn key_counts(db: &std::path::Path) -> (i64, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        "SELECT (SELECT count(*) FROM cards WHERE key_version = 1), (SELECT count(*) FROM cards)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Detokenizes every card through the library; returns the failures.
async fn detokenize_all(v: &BinVault, stored: &[(String, String)]) -> Vec<String> {
    let vault = Vault::open(&v.data, &v.unlock()).unwrap();
    let ctx = AccessContext {
        actor: "admin:e2e-rewrap".into(),
        ..Default::default()
    };
    let chunk = stored.len().div_ceil(16).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for part in stored.chunks(chunk) {
        let (part, vault, ctx) = (part.to_vec(), vault.clone(), ctx.clone());
        tasks.spawn(async move {
            let mut bad = Vec::new();
            for (token, card) in part {
                match vault
                    .detokenize("demo-shop", &token, "rewrap check", &ctx)
                    .await
                {
                    Ok(d) if d.card.pan.expose_digits() == card => {}
                    Ok(_) => bad.push(format!("{token}: wrong card")),
                    Err(e) => bad.push(format!("{token} ({}): {e}", cards::masked(&card))),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = tasks.join_next().await {
        bad.extend(r.unwrap());
    }
    tokio::task::spawn_blocking(move || vault.shutdown())
        .await
        .unwrap();
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_killed_mid_run_resumes_and_loses_nothing() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120 + 10 * rewrap_kills()),
        rewrap_killed_mid_run_resumes_and_loses_nothing_body(),
    )
    .await;
}

async fn rewrap_killed_mid_run_resumes_and_loses_nothing_body() {
    let kills = rewrap_kills();
    let mut rng = TestRng::from_env("PANVAULT_CRASH_SEED", "rewrap crash test");
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());

    // N cards under v1, through the library (one writer job per 500).
    let vault = Vault::open(&v.data, &v.unlock()).unwrap();
    let ctx = AccessContext {
        actor: "admin:e2e-rewrap".into(),
        ..Default::default()
    };
    let year = i64::from(util::this_year() + 4);
    let wanted = rewrap_cards(kills);
    let mut stored: Vec<(String, String)> = Vec::with_capacity(wanted);
    while stored.len() < wanted {
        let batch: Vec<String> = (0..500).map(|_| cards::fresh()).collect();
        let items = batch
            .iter()
            .map(|c| TokenizeRequest::new(c, 12, year, vault.today()))
            .collect();
        let out = vault
            .tokenize_batch("demo-shop", items, &ctx)
            .await
            .unwrap();
        for (card, info) in batch.into_iter().zip(out) {
            let info = info.unwrap();
            assert_eq!(info.key_version, 1);
            if !info.deduplicated {
                stored.push((info.token, card));
            }
        }
    }
    tokio::task::spawn_blocking(move || vault.shutdown())
        .await
        .unwrap();
    let n = i64::try_from(stored.len()).unwrap();

    let out = v
        .run(&["keys", "rotate"], true, Duration::from_secs(60))
        .await;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(key_counts(&v.db()), (n, n));

    // Kill the rewrap at random points, then run it again.
    let started = Instant::now();
    let mut landed = 0;
    let mut attempts = 0;
    let mut last_v1 = n;
    while landed < kills {
        attempts += 1;
        assert!(attempts <= kills * 4, "could not land {kills} kills");
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(["keys", "rewrap", "--batch", "100", "--quiet", "--data-dir"])
            .arg(&v.data)
            .arg("--passphrase-file")
            .arg(&v.pass)
            .env_remove("PANVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let spawned = Instant::now();
        // Either a moment after the start (unsealing, first batches), or once a
        // random share of what is left has been rewrapped, plus a few ms so the
        // kill lands inside a later batch.
        let how = if rng.range(0, 4) == 0 {
            tokio::time::sleep(rng.millis(0, 50)).await;
            "early".to_owned()
        } else {
            // Spread over the kills still to land, so work is left for each.
            let left = u64::try_from(last_v1).unwrap();
            let share = rng.range(0, (left / (kills - landed + 1)).max(1));
            let target = last_v1 - i64::try_from(share).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if key_counts(&v.db()).0 <= target || child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "the rewrap made no progress");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(rng.millis(0, 15)).await;
            format!("after {share} more")
        };
        let ran = spawned.elapsed();
        if let Some(status) = child.try_wait().unwrap() {
            // It finished first: nothing to kill this time.
            assert!(status.success(), "rewrap exited with {status}");
            println!("rewrap run {attempts}: finished before the kill ({how})");
            break;
        }
        child.start_kill().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("rewrap did not die")
            .unwrap();
        assert!(!status.success());
        landed += 1;
        let (v1, all) = key_counts(&v.db());
        println!("rewrap kill {landed}: {how}, after {ran:?}; {v1} of {all} left under v1");
        assert_eq!(all, n, "records lost or duplicated by a killed rewrap");
        assert!(v1 <= last_v1, "records went back under v1");
        last_v1 = v1;
    }
    assert!(
        landed >= kills,
        "only {landed} of {kills} kills landed: the rewrap finished too soon"
    );

    // To the end.
    let out = v
        .run(
            &["keys", "rewrap", "--batch", "100", "--quiet"],
            true,
            Duration::from_secs(120),
        )
        .await;
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("0 left"), "{}", out.stdout);
    let out = v
        .run(&["keys", "list", "--json"], true, Duration::from_secs(60))
        .await;
    assert!(out.success(), "{}", out.stderr);
    let keys: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let records = |ver: u64| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["version"] == ver)
            .unwrap()["records"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((records(1), records(2)), (0, n), "{keys}");
    let bad = detokenize_all(&v, &stored).await;
    assert!(
        bad.is_empty(),
        "{} failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    audit_verifies(&v, "after the rewrap").await;
    assert_eq!(util::integrity_check(&v.db()), "ok");

    // The old key can now go.
    for args in [
        ["keys", "retire", "--version", "1"],
        ["keys", "destroy", "--version", "1"],
    ] {
        let out = v.run(&args, true, Duration::from_secs(60)).await;
        assert!(out.success(), "{args:?}: {}", out.stderr);
    }
    let bad = detokenize_all(&v, &stored).await;
    assert!(
        bad.is_empty(),
        "{} failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    audit_verifies(&v, "after destroying v1").await;
    assert_eq!(util::integrity_check(&v.db()), "ok");
    println!(
        "rewrap: {landed} kills, {n} records, {:?}",
        started.elapsed()
    );
}
