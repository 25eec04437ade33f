//! Faults while serving, and a damaged database at start.
//!
//! - The audit log cannot be written (a trigger from another connection refuses
//!   every insert, or another process holds the write lock): every audited
//!   request answers 503 and releases nothing, and once the fault is gone the
//!   same server serves again.
//! - The disk is full (a small tmpfs, when this process may mount one; else the
//!   server's file-size limit lowered with `prlimit`, the same failure to get
//!   new space): writes answer 503, nothing is half-written, and the server
//!   recovers once space is freed.
//! - `vault.db` truncated, overwritten with garbage or not a database at all:
//!   `serve` and `keys list` refuse, naming the damage, and leave the file as is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{self, BinVault, Resp, ServeProcess, TestRng, TestServer, cards};

/// The codes a write refused for want of storage or audit may carry.
const UNAVAILABLE: &[&str] = &["audit_unavailable", "unavailable"];

#[track_caller]
fn assert_503(r: &Resp, codes: &[&str], what: &str) {
    let v = r.json();
    assert!(
        r.status == 503 && codes.contains(&v["code"].as_str().unwrap_or_default()),
        "{what}: expected 503 {codes:?}, got {} {v}",
        r.status
    );
    assert_eq!(r.headers["content-type"], "application/problem+json");
}

/// A detokenize refused because its access could not be audited: 503
/// `audit_unavailable`, and the card nowhere in the answer (checked first, so a
/// failure never prints the number).
#[track_caller]
fn assert_withheld(r: &Resp, card: &str) {
    assert!(
        !r.text().contains(card),
        "a detokenize that could not be audited released the card {} ({})",
        cards::masked(card),
        r.status
    );
    r.assert_problem(503, "audit_unavailable");
}

fn token_count(db: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
        .unwrap()
}

async fn audit_verifies(data: &Path) {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(["audit", "verify", "--data-dir"]).arg(data);
    let out = util::run_command(cmd, Duration::from_secs(60)).await;
    assert!(
        out.success(),
        "audit verify: {}\n{}",
        out.stdout,
        out.stderr
    );
}

// ---- the audit log cannot be written ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_fails_closed_then_recovers_without_restart() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120),
        an_unwritable_audit_log_fails_closed_then_recovers_without_restart_body(),
    )
    .await;
}

async fn an_unwritable_audit_log_fails_closed_then_recovers_without_restart_body() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let pay = server.client("payments");
    let card = cards::fresh();
    let r = sf.tokenize(&card).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let db = server.config.data_dir.join("vault.db");
    let before = token_count(&db);

    // Another connection makes every audit insert fail.
    let admin = rusqlite::Connection::open(&db).unwrap();
    admin.busy_timeout(Duration::from_secs(5)).unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER e2e_audit_fault BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'e2e: the audit log refuses writes'); END;",
        )
        .unwrap();
    let refused = cards::fresh();
    for round in 0..2 {
        let r = sf.tokenize(&refused).await;
        assert_503(&r, UNAVAILABLE, "tokenize");
        assert!(!r.text().contains(&refused));
        let r = sf
            .post(
                "/v1/tokens/batch",
                &json!({"items": [util::card_request(&cards::fresh()), util::card_request(&refused)]}),
            )
            .await;
        assert_503(&r, UNAVAILABLE, "batch");
        let r = pay.detokenize(&token, "charge order 1").await;
        assert_withheld(&r, &card);
        let r = sf.get(&format!("/v1/tokens/{token}")).await;
        r.assert_problem(503, "audit_unavailable");
        let r = sf.delete(&format!("/v1/tokens/{token}")).await;
        assert_503(&r, UNAVAILABLE, "delete");
        assert_eq!(
            token_count(&db),
            before,
            "round {round}: a refused write left rows behind (or deleted one)"
        );
    }

    // The fault is removed: the same server serves again.
    admin.execute_batch("DROP TRIGGER e2e_audit_fault").unwrap();
    let r = sf.tokenize(&refused).await;
    assert_eq!(r.status, 201, "after the fault: {}", r.text());
    assert_eq!(r.json()["deduplicated"], false);
    let new_token = r.json()["token"].as_str().unwrap().to_owned();
    for (t, c) in [(&token, &card), (&new_token, &refused)] {
        let d = pay.detokenize(t, "charge order 2").await;
        assert!(
            d.status == 200 && d.json()["card"]["number"] == c.as_str(),
            "after the fault, {t} ({}): {}",
            cards::masked(c),
            d.status
        );
        assert_eq!(sf.get(&format!("/v1/tokens/{t}")).await.status, 200);
    }
    assert_eq!(token_count(&db), before + 1);
    // The chain head went back with every rolled-back batch: no gap, no fork.
    audit_verifies(&server.config.data_dir).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_elsewhere_answers_503_in_bounded_time_then_recovers() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120),
        a_write_lock_held_elsewhere_answers_503_in_bounded_time_then_recovers_body(),
    )
    .await;
}

async fn a_write_lock_held_elsewhere_answers_503_in_bounded_time_then_recovers_body() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let pay = server.client("payments");
    let card = cards::fresh();
    let r = sf.tokenize(&card).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let db = server.config.data_dir.join("vault.db");
    let before = token_count(&db);

    // Another process holds the write lock (a stuck admin command, say).
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The writer waits out its busy timeout (5 s), then the batch fails.
    let start = Instant::now();
    let d = pay.detokenize(&token, "charge order 3").await;
    let waited = start.elapsed();
    assert_withheld(&d, &card);
    assert!(
        waited < Duration::from_secs(12),
        "answered only after {waited:?}"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(token_count(&db), before);

    let r = sf.tokenize(&cards::fresh()).await;
    assert_eq!(r.status, 201, "after the lock: {}", r.text());
    let d = pay.detokenize(&token, "charge order 4").await;
    assert!(d.status == 200 && d.json()["card"]["number"] == card.as_str());
    audit_verifies(&server.config.data_dir).await;
    server.stop().await;
}

// ---- disk full ----

/// Drives a server whose disk `fill` makes full and `free` frees again; checks
/// that writes answer 503 and change nothing while full, and that the same
/// server recovers.
async fn disk_full_then_freed(
    v: &BinVault,
    server: ServeProcess,
    fill: impl FnOnce(),
    free: impl FnOnce(),
) {
    let sf = v.client(server.addr, "storefront");
    let pay = v.client(server.addr, "payments");
    let mut acked: Vec<(String, String)> = Vec::new();
    for _ in 0..20 {
        let card = cards::fresh();
        let r = sf.tokenize(&card).await;
        assert_eq!(r.status, 201, "{}", r.text());
        acked.push((r.json()["token"].as_str().unwrap().to_owned(), card));
    }
    fill();
    // Pages the WAL already holds may still take a few writes; then no more.
    let mut refused = None;
    for _ in 0..2000 {
        let card = cards::fresh();
        let r = sf
            .request(
                "POST",
                "/v1/tokens",
                Some(util::card_request(&card).to_string().as_bytes()),
                Some("application/json"),
            )
            .await
            .unwrap_or_else(|e| panic!("the server died on a full disk: {e}\n{}", server.stderr()));
        match r.status {
            201 => acked.push((r.json()["token"].as_str().unwrap().to_owned(), card)),
            503 => {
                assert_503(&r, UNAVAILABLE, "tokenize on a full disk");
                println!("disk full: tokenize answered 503 {}", r.json()["code"]);
                refused = Some(card);
                break;
            }
            s => panic!("tokenize on a full disk: {s} {}", r.text()),
        }
    }
    let refused = refused.expect("2000 tokenizes fit on a full disk");
    let stored = i64::try_from(acked.len()).unwrap();
    println!(
        "disk full: {} tokenize(s) still fitted, then 503",
        acked.len() - 20
    );
    assert_eq!(
        token_count(&v.db()),
        stored,
        "a refused tokenize left a row"
    );
    // While full: writes and audited reads keep failing closed, and change nothing.
    for _ in 0..3 {
        assert_503(&sf.tokenize(&cards::fresh()).await, UNAVAILABLE, "tokenize");
        let (token, card) = &acked[0];
        // Its audit event needs space too (unless it fits in pages the WAL
        // already has): refused without the card, or served.
        let d = pay.detokenize(token, "charge on a full disk").await;
        println!("disk full: detokenize answered {}", d.status);
        if d.status != 200 {
            assert_withheld(&d, card);
        }
    }
    assert_eq!(token_count(&v.db()), stored);

    free();
    let r = sf.tokenize(&refused).await;
    assert_eq!(r.status, 201, "after space was freed: {}", r.text());
    assert_eq!(r.json()["deduplicated"], false);
    acked.push((r.json()["token"].as_str().unwrap().to_owned(), refused));
    for (token, card) in &acked {
        let d = pay
            .detokenize(token, "charge after the disk was freed")
            .await;
        assert!(
            d.status == 200 && d.json()["card"]["number"] == card.as_str(),
            "{token} ({}): {} {}",
            cards::masked(card),
            d.status,
            if d.status == 200 {
                String::new()
            } else {
                d.text()
            }
        );
    }
    assert_eq!(token_count(&v.db()), stored + 1);
    let err = server.stderr();
    let status = server.terminate().await;
    assert!(status.success(), "exit {status}: {err}");
    assert_eq!(util::integrity_check(&v.db()), "ok");
    audit_verifies(&v.data).await;
}

/// Unmounts (lazily) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_writes_nothing_and_recovers() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120),
        a_full_disk_answers_503_writes_nothing_and_recovers_body(),
    )
    .await;
}

async fn a_full_disk_answers_503_writes_nothing_and_recovers_body() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small-fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "e2e-panvault"])
        .arg(&mnt)
        .stderr(std::process::Stdio::piped())
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            util::tools::missing(
                "a_full_disk_answers_503",
                &format!(
                    "cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            return;
        }
        Err(e) => {
            util::tools::missing(
                "a_full_disk_answers_503",
                &format!("no mount command ({e})"),
            );
            return;
        }
    }
    let _mount = Mount(mnt.clone());
    let v = BinVault::create_in(tmp.path(), &mnt.join("data"));
    let server = ServeProcess::start(&v).await.unwrap();
    let ballast = mnt.join("ballast");
    disk_full_then_freed(
        &v,
        server,
        || {
            use std::io::Write;
            let mut f = std::fs::File::create(&ballast).unwrap();
            let chunk = vec![0x5au8; 16 * 1024];
            loop {
                match f.write_all(&chunk) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
            // the last partial blocks too
            while f.write(&[0x5a; 512]).is_ok_and(|n| n > 0) {}
            let _ = f.sync_all();
        },
        || std::fs::remove_file(&ballast).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_answers_503_writes_nothing_and_recovers() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120),
        a_file_size_limit_answers_503_writes_nothing_and_recovers_body(),
    )
    .await;
}

async fn a_file_size_limit_answers_503_writes_nothing_and_recovers_body() {
    // RLIMIT_FSIZE works without privileges: writes past the limit fail (EFBIG)
    // as they would for want of space. The server runs through `sh`, which
    // ignores SIGXFSZ before `exec` (an ignored signal stays ignored), so the
    // writes fail instead of the process being killed.
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        util::tools::missing(
            "a_file_size_limit_answers_503",
            "no prlimit (util-linux) here",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(util::panvault_bin())
        .args(v.serve_args());
    let server = ServeProcess::spawn(cmd).await.unwrap();
    let pid = server.pid().to_string();
    let prlimit = |limit: &str| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}:")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // "Full": no write may reach past the WAL's current end (the limit is one
    // offset for every file), so the WAL cannot grow, whatever it already holds
    // may be reused, and the database file takes nothing beyond that offset.
    let wal = v.db().with_extension("db-wal");
    disk_full_then_freed(
        &v,
        server,
        || {
            let end = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            prlimit(&end.max(4096).to_string());
        },
        || prlimit("unlimited"),
    )
    .await;
}

// ---- a damaged database at start ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_vault_db_is_refused_and_left_as_it_is() {
    util::panvault_bin(); // built, if need be, before the clock starts
    util::within(
        Duration::from_secs(120),
        a_damaged_vault_db_is_refused_and_left_as_it_is_body(),
    )
    .await;
}

async fn a_damaged_vault_db_is_refused_and_left_as_it_is_body() {
    let mut rng = TestRng::from_env("PANVAULT_CRASH_SEED", "damaged db test");
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    {
        let vault = panvault_vault::Vault::open(&v.data, &v.unlock()).unwrap();
        let ctx = panvault_vault::AccessContext {
            actor: "admin:e2e".into(),
            ..Default::default()
        };
        let year = i64::from(util::this_year() + 4);
        let items = (0..400)
            .map(|_| panvault_vault::TokenizeRequest::new(&cards::fresh(), 12, year, vault.today()))
            .collect();
        let out = vault
            .tokenize_batch("demo-shop", items, &ctx)
            .await
            .unwrap();
        assert!(out.iter().all(Result::is_ok));
        tokio::task::spawn_blocking(move || vault.shutdown())
            .await
            .unwrap();
    }
    let db = v.db();
    let pristine = std::fs::read(&db).unwrap();
    let page = 4096;
    let pages = pristine.len() / page;
    assert!(pages >= 8, "only {pages} pages");
    let mut garbage_page = pristine.clone();
    for b in &mut garbage_page[(pages / 2) * page..(pages / 2 + 1) * page] {
        *b = u8::try_from(rng.next_u64() & 0xff).unwrap();
    }
    let mut zero_header = pristine.clone();
    zero_header[..100].fill(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half", pristine[..pristine.len() / 2].to_vec()),
        ("a page of garbage in the middle", garbage_page),
        ("a zeroed header", zero_header),
        ("not a database at all", b"panvault? no.\n".repeat(700)),
        ("empty", Vec::new()),
    ];
    let side_files = |db: &Path| {
        for ext in ["db-wal", "db-shm", "db-journal"] {
            let _ = std::fs::remove_file(db.with_extension(ext));
        }
    };
    let mut problems = Vec::new();
    for (what, bytes) in &cases {
        side_files(&db);
        std::fs::write(&db, bytes).unwrap();
        let mut serve = tokio::process::Command::new(util::panvault_bin());
        serve.args(v.serve_args());
        let runs = [
            (
                "serve",
                util::run_command(serve, Duration::from_secs(60)).await,
            ),
            (
                "keys list",
                v.run(&["keys", "list"], true, Duration::from_secs(60))
                    .await,
            ),
        ];
        // `keys list` (like every admin command) skips the full integrity scan
        // that `serve` runs, to stay quick on a large vault: damage in pages it
        // does not read goes unnoticed there, and it must still change nothing.
        let scanned = |cmd: &str| cmd == "serve" || !what.contains("garbage");
        for (cmd, out) in runs {
            let err = out.stderr.to_lowercase();
            println!(
                "vault.db {what}: {cmd} exit {:?}: {}",
                out.status.code(),
                out.stderr.trim()
            );
            if !out.success() && !err.contains("serving") {
                if !(err.contains("corrupt") || err.contains("not a panvault vault")) {
                    problems.push(format!(
                        "{cmd}, vault.db {what}: the message does not say the database is damaged: {}",
                        out.stderr.trim()
                    ));
                }
            } else if scanned(cmd) {
                problems.push(format!(
                    "{cmd} accepted a vault.db {what}: {}{}",
                    out.stdout, out.stderr
                ));
            }
            if std::fs::read(&db).unwrap() != *bytes {
                problems.push(format!("{cmd} changed a vault.db {what}"));
            }
        }
        // The library itself, as `--share` reaches it (no read-only look first).
        let opened = panvault_vault::Vault::open(&v.data, &v.unlock());
        match &opened {
            Err(e) if e.to_string().contains("corrupt or not a panvault vault") => {}
            Err(e) => problems.push(format!("Vault::open, vault.db {what}: {e}")),
            Ok(_) => problems.push(format!("Vault::open accepted a vault.db {what}")),
        }
        if let Ok(vault) = opened {
            tokio::task::spawn_blocking(move || vault.shutdown())
                .await
                .unwrap();
        }
        let admin =
            panvault_vault::Admin::open(&v.data, &v.unlock(), panvault_vault::system_clock());
        match &admin {
            Err(e) if e.to_string().contains("corrupt or not a panvault vault") => {}
            Err(e) => problems.push(format!("Admin::open, vault.db {what}: {e}")),
            Ok(_) if !scanned("admin") => {}
            Ok(_) => problems.push(format!("Admin::open accepted a vault.db {what}")),
        }
        drop(admin);
        if std::fs::read(&db).unwrap() != *bytes {
            problems.push(format!("the library changed a vault.db {what}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The damage was refused, not the vault: the pristine file works.
    side_files(&db);
    std::fs::write(&db, &pristine).unwrap();
    let out = v
        .run(&["keys", "list"], true, Duration::from_secs(60))
        .await;
    assert!(out.success(), "{}", out.stderr);
}
