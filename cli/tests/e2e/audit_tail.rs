//! The end of the audit log through the real binary and a running server: an
//! idle server signs its tail within `checkpoint_every_secs` and appends every
//! checkpoint to the witness file; `audit checkpoint` signs one that covers the
//! head while the server runs; truncation to checkpoint #1 (or deleting events
//! and rehashing the rest) on a copy is caught with what the operator kept;
//! `audit verify-receipt` takes the erase endpoint's answer as it came.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use panvault_audit::log::{AuditChain, Checkpoint, latest_checkpoint, read_events};
use serde_json::json;

use crate::util::{self, BinVault, ServeProcess, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

/// Adds an `[audit]` table to the vault's configuration.
fn configure_audit(v: &BinVault, every_secs: u64, witness: &Path) {
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    text.push_str(&format!(
        "[audit]\ncheckpoint_every_secs = {every_secs}\ncheckpoint_witness = {}\n",
        serde_json::Value::String(witness.display().to_string())
    ));
    std::fs::write(&v.config, text).unwrap();
}

/// The last event's seq and the newest checkpoint of the database in `data`.
fn head_and_checkpoint(data: &Path) -> (u64, Option<Checkpoint>) {
    let conn = panvault_audit::log::open_read_only(&data.join("vault.db")).unwrap();
    let head: i64 = conn
        .query_row("SELECT max(seq) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    (
        u64::try_from(head).unwrap(),
        latest_checkpoint(&conn).unwrap(),
    )
}

/// `panvault audit verify --data-dir DATA --pubkey PUB [--checkpoint FILE]`.
async fn verify(v: &BinVault, data: &Path, pubkey: &Path, kept: Option<&Path>) -> util::CmdOutput {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(["audit", "verify", "--data-dir"])
        .arg(data)
        .arg("--pubkey")
        .arg(pubkey);
    if let Some(k) = kept {
        cmd.arg("--checkpoint").arg(k);
    }
    let _ = v;
    util::run_command(cmd, LIMIT).await
}

/// A copy of the data directory (the server stopped) at `to`.
fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    to.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_signs_its_tail_and_audit_checkpoint_covers_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let witness_dir = tmp.path().join("witness");
    std::fs::create_dir_all(&witness_dir).unwrap();
    let witness = witness_dir.join("checkpoints.jsonl");
    configure_audit(&v, 1, &witness);
    let server = ServeProcess::start(&v).await.unwrap();
    let shop = v.client(server.addr, "storefront");
    let payments = v.client(server.addr, "payments");
    // A burst: at most its first batch is due for a checkpoint; the rest of it
    // stays unsigned until the server is idle.
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let r = shop.tokenize(&util::cards::fresh()).await;
        assert_eq!(r.status, 201);
        tokens.push(r.json()["token"].as_str().unwrap().to_owned());
    }
    for t in &tokens {
        assert_eq!(payments.detokenize(t, "refund").await.status, 200);
    }
    let (head, _) = head_and_checkpoint(&v.data);
    // Idle now: the tail is signed within checkpoint_every_secs (polled, bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let signed = loop {
        if let (h, Some(cp)) = head_and_checkpoint(&v.data)
            && cp.seq >= head
        {
            assert_eq!(cp.seq, h, "a checkpoint that does not reach the head");
            break cp;
        }
        assert!(
            Instant::now() < deadline,
            "the idle server did not sign its tail (head {head}) within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let witnessed = Checkpoint::parse_many(&std::fs::read_to_string(&witness).unwrap()).unwrap();
    assert!(witnessed.contains(&signed), "not in the witness file");

    // `audit checkpoint` while the server runs: a fresh checkpoint covering every
    // event, its own included.
    let out = v.run(&["audit", "checkpoint"], true, LIMIT).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let kept: Checkpoint = out.stdout.trim().parse().unwrap();
    let (head, newest) = head_and_checkpoint(&v.data);
    assert_eq!(kept.seq, head, "audit checkpoint does not cover the head");
    assert_eq!(newest.as_ref(), Some(&kept));
    // The server goes on writing after it.
    assert_eq!(shop.tokenize(&util::cards::fresh()).await.status, 201);

    // And while the server writes: the head moves under the command, which waits
    // for the write lock and covers everything committed before it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        let shop = v.client(server.addr, "storefront");
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(shop.tokenize(&util::cards::fresh()).await.status);
            }
            statuses
        })
    };
    let (before, _) = head_and_checkpoint(&v.data);
    let out = v.run(&["audit", "checkpoint"], true, LIMIT).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.await.unwrap();
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let under_load: Checkpoint = out.stdout.trim().parse().unwrap();
    assert!(
        under_load.seq > before,
        "does not cover the head before the call"
    );
    let kept_file = v.root.join("kept.txt");
    std::fs::write(&kept_file, format!("{kept}\n{under_load}\n")).unwrap();

    // A clean stop signs the tail, and the witness file ends with it.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let (head, newest) = head_and_checkpoint(&v.data);
    let newest = newest.unwrap();
    assert_eq!(newest.seq, head);
    let witnessed = Checkpoint::parse_many(&std::fs::read_to_string(&witness).unwrap()).unwrap();
    assert_eq!(witnessed.last(), Some(&newest));
    let pubkey = v.data.join("audit-signing.pub");
    // Verifying and exporting read the log without writing into it: the stop's
    // checkpoint stays the newest, with no unsigned event after it.
    let (events_before, _) = head_and_checkpoint(&v.data);
    let out = verify(&v, &v.data, &pubkey, Some(&kept_file)).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let out = verify(&v, &v.data, &pubkey, Some(&witness)).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "the log extends the newest given checkpoint #{}",
            newest.id
        )),
        "{}",
        out.stdout
    );
    let out = v
        .run(
            &[
                "audit",
                "export",
                "--output",
                v.root.join("events.jsonl").to_str().unwrap(),
            ],
            false,
            LIMIT,
        )
        .await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("not recorded in the log"),
        "{}",
        out.stderr
    );
    assert_eq!(head_and_checkpoint(&v.data), (events_before, Some(newest)));
}

/// The attack on copies of a real vault, with the public key, the output
/// of `audit checkpoint` and the witness file kept off the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_rehashing_are_caught_with_what_was_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create(tmp.path());
    let offhost = tmp.path().join("offhost");
    std::fs::create_dir_all(&offhost).unwrap();
    let witness = offhost.join("checkpoints.jsonl");
    // The default interval: a short test run signs nothing by time.
    configure_audit(&v, 60, &witness);
    let pubkey = offhost.join("audit-signing.pub");
    std::fs::copy(v.data.join("audit-signing.pub"), &pubkey).unwrap();

    let server = ServeProcess::start(&v).await.unwrap();
    let shop = v.client(server.addr, "storefront");
    let payments = v.client(server.addr, "payments");
    let mut tokens = Vec::new();
    for i in 0..4 {
        let mut body = util::card_request(&util::cards::fresh());
        body["subject"] = json!(format!("cust_{i}"));
        let r = shop.post("/v1/tokens", &body).await;
        assert_eq!(r.status, 201);
        tokens.push(r.json()["token"].as_str().unwrap().to_owned());
    }
    for t in &tokens {
        assert_eq!(payments.detokenize(t, "refund").await.status, 200);
    }
    // The erase endpoint's answer, saved as it came, checks with verify-receipt.
    let r = shop.post("/v1/subjects/cust_0/erase", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = offhost.join("erase-answer.json");
    std::fs::write(&answer, r.text()).unwrap();
    let out = v
        .run(
            &[
                "audit",
                "verify-receipt",
                answer.to_str().unwrap(),
                "--pubkey",
                pubkey.to_str().unwrap(),
            ],
            false,
            LIMIT,
        )
        .await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("erasure receipt valid"),
        "{}",
        out.stdout
    );

    let out = v.run(&["audit", "checkpoint"], true, LIMIT).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let kept = offhost.join("kept-checkpoint.txt");
    std::fs::write(&kept, &out.stdout).unwrap();
    assert!(server.terminate().await.success());

    let first = {
        let conn = panvault_audit::log::open_read_only(&v.db()).unwrap();
        conn.query_row("SELECT seq FROM audit_checkpoints WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    // Untouched: intact against everything kept.
    for k in [&kept, &witness] {
        let out = verify(&v, &v.data, &pubkey, Some(k)).await;
        assert!(out.success(), "{}{}", out.stdout, out.stderr);
    }

    // 1. Every event after checkpoint #1 deleted, and the later checkpoints.
    let cut = copy_dir(&v.data, &tmp.path().join("cut"));
    {
        let c = rusqlite::Connection::open(cut.join("vault.db")).unwrap();
        c.execute("DELETE FROM audit_events WHERE seq > ?1", [first])
            .unwrap();
        c.execute("DELETE FROM audit_checkpoints WHERE id > 1", [])
            .unwrap();
    }
    // 2. Every detokenize event deleted and the rest rehashed (what someone
    //    without the signing key can do), the checkpoints after #1 deleted.
    let rehashed = copy_dir(&v.data, &tmp.path().join("rehashed"));
    {
        let mut c = rusqlite::Connection::open(rehashed.join("vault.db")).unwrap();
        let events = read_events(&c, 1, usize::MAX).unwrap();
        let detokenize_from = events
            .iter()
            .find(|e| e.event.action.as_str() == "detokenize")
            .unwrap()
            .seq;
        let tx = c.transaction().unwrap();
        let from = i64::try_from(detokenize_from).unwrap();
        tx.execute("DELETE FROM audit_events WHERE seq >= ?1", [from])
            .unwrap();
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE seq >= ?1 AND id > 1",
            [from],
        )
        .unwrap();
        let mut chain = AuditChain::load(&tx).unwrap();
        for e in events
            .iter()
            .filter(|e| e.seq >= detokenize_from && e.event.action.as_str() != "detokenize")
        {
            chain.append(&tx, &e.event).unwrap();
        }
        tx.commit().unwrap();
    }
    // 3. Every checkpoint deleted.
    let unsigned = copy_dir(&v.data, &tmp.path().join("unsigned"));
    {
        let c = rusqlite::Connection::open(unsigned.join("vault.db")).unwrap();
        c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    }

    for (name, dir) in [("cut", &cut), ("rehashed", &rehashed)] {
        for k in [&kept, &witness] {
            let out = verify(&v, dir, &pubkey, Some(k)).await;
            assert_eq!(
                out.status.code(),
                Some(3),
                "{name} with {} verified: {}{}",
                k.display(),
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains("audit log broken at seq"),
                "{}",
                out.stderr
            );
        }
    }
    let out = verify(&v, &unsigned, &pubkey, None).await;
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("checkpoint #1 is missing"),
        "{}",
        out.stderr
    );
}

/// Refused erasures over HTTP leave an event with their failure outcome: a
/// subject the vault refuses, a path that is not UTF-8, a client without the
/// `erase` permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_erasures_over_http_are_audited() {
    let server = TestServer::start().await;
    let shop = server.client("storefront");
    let payments = server.client("payments");
    let long = "s".repeat(200);
    let r = shop
        .post(&format!("/v1/subjects/{long}/erase"), &json!({}))
        .await;
    r.assert_problem(400, "invalid_request");
    let r = shop.post("/v1/subjects/%FF%FE/erase", &json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = payments.post("/v1/subjects/cust_1/erase", &json!({})).await;
    r.assert_problem(403, "forbidden");
    let db = server.vault.db_path().to_owned();
    let conn = panvault_audit::log::open_read_only(&db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT actor, action, outcome, code, details FROM audit_events \
             WHERE outcome = 'denied' ORDER BY seq",
        )
        .unwrap();
    let rows: Vec<(String, String, String, String, Option<String>)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let got: Vec<(&str, &str, &str, Option<&str>)> = rows
        .iter()
        .map(|(a, b, _, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "storefront",
                "erase",
                "invalid_request",
                Some("refused=subject")
            ),
            (
                "storefront",
                "auth.failed",
                "not_found",
                Some("attempted=erase")
            ),
            (
                "payments",
                "auth.failed",
                "forbidden",
                Some("attempted=erase")
            ),
        ]
    );
    server.stop().await;
}
