//! The audit log shared by several nodes on a real PostgreSQL (the harness
//! starts it): one chain per node (`store::pg::PgLog`), anchored by cluster
//! checkpoints. Three "nodes" (threads, each with its own connection) append
//! concurrently and sign checkpoints, one of them idle; the export verifies
//! with the public key alone, in Rust, with `panvault audit verify --export`
//! and with the outside verifier `tests/verifier/verify.py`. Then each change
//! an attacker with write access to the database could make — an event
//! updated, deleted, two swapped, a node's whole history deleted — is detected
//! by all three, naming the node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use panvault_audit::log::{
    Action, Actor, AuditChain, AuditError, BreakKind, ClusterCheckpoint, NewEvent, NodeId, Outcome,
    PublicKey, SigningKey, VerifyReport, verify_export,
};
use panvault_vault::store::pg::{self, PgClient, PgLog, PgSettings, schema};
use time::OffsetDateTime;

use crate::util::postgres::PgServer;
use crate::util::{self, CmdOutput, panvault_bin, run_command};

const LIMIT: Duration = Duration::from_secs(60);

fn client(pg: &PgServer) -> PgClient {
    pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn event(writer: &str, i: u32) -> NewEvent {
    event_at(writer, i, OffsetDateTime::now_utc())
}

fn event_at(writer: &str, i: u32, t: OffsetDateTime) -> NewEvent {
    NewEvent::new(
        t,
        Actor::client(writer, "ab"),
        Action::Detokenize,
        Outcome::Success,
    )
    .with_tenant("shop")
    .with_token(format!("tok_{writer}_{i}"))
    .with_purpose("refund")
    .with_peer("127.0.0.1:1")
}

/// The node's chain, registered (its first event and checkpoint) in one transaction.
fn register(c: &mut PgClient, name: &str) -> AuditChain {
    register_at(c, name, OffsetDateTime::now_utc())
}

fn register_at(c: &mut PgClient, name: &str, t: OffsetDateTime) -> AuditChain {
    let mut tx = c.transaction().unwrap();
    let log = PgLog::new(&mut tx, node(name));
    let mut chain = AuditChain::load(&log).unwrap();
    let cp = chain
        .register_node(&log, &key(), Actor::admin("ops"), t)
        .unwrap()
        .expect("a new node registers");
    assert_eq!((cp.id, chain.last_seq()), (1, 1));
    drop(log);
    tx.commit().unwrap();
    chain
}

/// One write batch of a node: `n` events (in one statement), and a cluster checkpoint if `sign`,
/// in one transaction run as the engine runs it (BEGIN/COMMIT on a plain client).
fn batch(
    c: &mut PgClient,
    name: &str,
    chain: &mut AuditChain,
    first: u32,
    n: u32,
    sign: bool,
) -> Option<ClusterCheckpoint> {
    batch_at(c, name, chain, (first, n), sign, OffsetDateTime::now_utc())
}

/// [`batch`] of events `first..first + n` dated `t`.
fn batch_at(
    c: &mut PgClient,
    name: &str,
    chain: &mut AuditChain,
    (first, n): (u32, u32),
    sign: bool,
    t: OffsetDateTime,
) -> Option<ClusterCheckpoint> {
    let before = chain.snapshot();
    c.batch_execute("BEGIN").unwrap();
    let log = PgLog::new(c, node(name));
    let done: Result<Option<ClusterCheckpoint>, AuditError> = (|| {
        let events: Vec<NewEvent> = (first..first + n).map(|i| event_at(name, i, t)).collect();
        chain.append_all(&log, &events)?;
        if sign {
            return chain.cluster_checkpoint(&log, &key(), t).map(Some);
        }
        Ok(None)
    })();
    drop(log);
    match done {
        Ok(cp) => {
            c.batch_execute("COMMIT").unwrap();
            cp
        }
        Err(e) => {
            c.batch_execute("ROLLBACK").unwrap();
            chain.restore(before);
            panic!("node {name}: batch failed: {e}");
        }
    }
}

/// An idle node's checkpoint: nothing of its own to sign, the others' heads to anchor.
fn idle_checkpoint(c: &mut PgClient, name: &str, chain: &mut AuditChain) -> ClusterCheckpoint {
    batch(c, name, chain, 0, 0, true).unwrap()
}

struct Exported {
    _dir: tempfile::TempDir,
    pubkey: PathBuf,
    file: PathBuf,
    report: VerifyReport,
}

/// The database's log exported to a file, and verified in Rust with the public key alone.
fn export(c: &mut PgClient, public: &PublicKey) -> Exported {
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("audit-signing.pub");
    public.write_to(&pubkey).unwrap();
    let file = dir.path().join("export.jsonl");
    let mut out = Vec::new();
    pg::audit::export_jsonl(c, &mut out).unwrap();
    std::fs::write(&file, &out).unwrap();
    let report = verify_export(out.as_slice(), public, &[]).unwrap();
    Exported {
        _dir: dir,
        pubkey,
        file,
        report,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `python3 verify.py export PUBKEY FILE`, or `None` without python3 and `cryptography`.
fn python(e: &Exported) -> Option<CmdOutput> {
    let ready = std::process::Command::new("python3")
        .args([
            "-c",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        util::tools::missing("pg_audit (verify.py)", "python3 with `cryptography`");
        return None;
    }
    let verifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier/verify.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(verifier).arg("export").arg(&e.pubkey).arg(&e.file);
    Some(block_on(run_command(cmd, LIMIT)))
}

/// `panvault audit verify --export FILE --pubkey KEY`, with no data directory.
fn binary(e: &Exported) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(panvault_bin());
    cmd.current_dir(e.file.parent().unwrap())
        .args(["audit", "verify", "--export"])
        .arg(&e.file)
        .arg("--pubkey")
        .arg(&e.pubkey);
    block_on(run_command(cmd, LIMIT))
}

/// All three verifiers accept.
fn accepted(e: &Exported) {
    assert!(e.report.is_intact(), "{:?}", e.report);
    let o = binary(e);
    assert!(
        o.success(),
        "audit verify --export: {}{}",
        o.stdout,
        o.stderr
    );
    let nodes = format!("on {} ", e.report.nodes.len());
    assert!(
        o.stdout.contains(&nodes),
        "audit verify --export: {}",
        o.stdout
    );
    if let Some(o) = python(e) {
        assert!(
            o.success(),
            "verify.py rejected a genuine export: {}",
            o.stderr
        );
    }
}

/// All three verifiers reject, each naming `node`; the Rust report says `kind` at `seq`.
fn rejected(e: &Exported, node: &str, kind: BreakKind, seq: u64, what: &str) {
    let b = e
        .report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("{what} went unnoticed"));
    assert_eq!((b.kind, b.seq), (kind, seq), "{what}: {b}");
    let named = format!("node {node}");
    assert!(b.detail.starts_with(&named), "{what}: {b}");
    let o = binary(e);
    assert_eq!(o.status.code(), Some(3), "{what}: {}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(&named) || o.stderr.contains(&named),
        "{what}: {o:?}"
    );
    if let Some(o) = python(e) {
        assert_eq!(o.status.code(), Some(1), "verify.py accepted: {what}");
        assert!(o.stderr.contains(&named), "verify.py, {what}: {}", o.stderr);
    }
}

#[test]
fn pg_audit_nodes_append_concurrently_with_checkpoints_and_the_export_verifies() {
    let Some(pg) = PgServer::start(
        "pg_audit_nodes_append_concurrently_with_checkpoints_and_the_export_verifies",
    ) else {
        return;
    };
    let public = key().public_key();
    schema::migrate(&mut client(&pg)).unwrap();

    // Three nodes register at once; two append in batches and sign every few
    // batches, the third stays idle and only signs.
    const BATCHES: u32 = 30;
    const PER_BATCH: u32 = 4;
    let ready = Arc::new(Barrier::new(3));
    let nodes: Vec<_> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|name| {
            let mut c = client(&pg);
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                let mut chain = register(&mut c, name);
                ready.wait();
                for b in 0..BATCHES {
                    if name == "n3" {
                        if b % 5 == 0 {
                            idle_checkpoint(&mut c, name, &mut chain);
                        }
                    } else {
                        batch(
                            &mut c,
                            name,
                            &mut chain,
                            b * PER_BATCH,
                            PER_BATCH,
                            b % 7 == 6,
                        );
                    }
                }
                // A clean stop signs what is left, and the others' heads as they are.
                idle_checkpoint(&mut c, name, &mut chain);
                chain.last_seq()
            })
        })
        .collect();
    let last: Vec<u64> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
    let writes = u64::from(BATCHES * PER_BATCH);
    assert_eq!(last, [1 + writes, 1 + writes, 1]);

    let mut c = client(&pg);
    let e = export(&mut c, &public);
    accepted(&e);
    assert_eq!(e.report.events, 3 + 2 * writes);
    let heads: Vec<(&str, u64)> = e
        .report
        .nodes
        .iter()
        .map(|h| (h.node.as_str(), h.seq))
        .collect();
    assert_eq!(heads, [("n1", 1 + writes), ("n2", 1 + writes), ("n3", 1)]);
    // Every checkpoint names every node registered when it was signed: the
    // last ones name all three.
    let text = std::fs::read_to_string(&e.file).unwrap();
    let last_of_n3 = text
        .lines()
        .rfind(|l| l.contains(r#""type":"checkpoint","node":"n3""#))
        .unwrap();
    for n in ["n1", "n2", "n3"] {
        assert!(
            last_of_n3.contains(&format!(r#"{{"node":"{n}""#)),
            "{last_of_n3}"
        );
    }
}

/// Three nodes, sequentially: a and b append and sign, c registers and signs
/// later; a appends two events after everyone's last checkpoint. Returns c's
/// last checkpoint too, as a witness file would keep it.
fn small_cluster(pg: &PgServer) -> (PgClient, ClusterCheckpoint) {
    let mut c = client(pg);
    schema::migrate(&mut c).unwrap();
    let mut a = register(&mut c, "a");
    let mut b = register(&mut c, "b");
    for round in 0..3 {
        batch(&mut c, "a", &mut a, round * 3, 3, true);
        batch(&mut c, "b", &mut b, round * 3, 3, true);
    }
    let mut cn = register(&mut c, "c");
    let kept = idle_checkpoint(&mut c, "c", &mut cn);
    batch(&mut c, "a", &mut a, 100, 2, false);
    (c, kept)
}

#[test]
fn pg_audit_two_writers_of_one_node_take_turns_without_aborting() {
    let Some(pg) = PgServer::start("pg_audit_two_writers_of_one_node_take_turns_without_aborting")
    else {
        return;
    };
    let public = key().public_key();
    let mut a = client(&pg);
    schema::migrate(&mut a).unwrap();
    let mut chain_a = register(&mut a, "shared");
    let mut b = client(&pg);
    let mut chain_b = AuditChain::load(&PgLog::new(&mut b, node("shared"))).unwrap();
    assert_eq!(chain_a.snapshot(), chain_b.snapshot());

    // Two processes on one node id (admin commands sharing one): A appends seq
    // 2 and holds its transaction open. B's insert of seq 2 waits for A, finds
    // it taken without aborting B's transaction, and B reloads and writes seq 3.
    let mut tx_a = a.transaction().unwrap();
    let seq = chain_a
        .append(&PgLog::new(&mut tx_a, node("shared")), &event("a", 0))
        .unwrap();
    assert_eq!(seq, 2);
    let racer = std::thread::spawn(move || {
        let mut tx = b.transaction().unwrap();
        let log = PgLog::new(&mut tx, node("shared"));
        let seq = chain_b.append(&log, &event("b", 0)).unwrap();
        chain_b
            .cluster_checkpoint(&log, &key(), OffsetDateTime::now_utc())
            .unwrap();
        drop(log);
        tx.commit().unwrap();
        seq
    });
    tx_a.commit().unwrap();
    assert_eq!(
        racer.join().unwrap(),
        3,
        "the loser reloads and takes the next number"
    );
    let e = export(&mut a, &public);
    accepted(&e);
    assert_eq!((e.report.events, e.report.unsigned_tail), (3, 0));
}

#[test]
fn pg_audit_tamper_in_the_database_is_detected_and_names_the_node() {
    let Some(pg) =
        PgServer::start("pg_audit_tamper_in_the_database_is_detected_and_names_the_node")
    else {
        return;
    };
    let public = key().public_key();
    let (mut c, _) = small_cluster(&pg);
    let e = export(&mut c, &public);
    accepted(&e);
    assert_eq!(
        e.report.unsigned_tail, 2,
        "a's last two events are not anchored yet"
    );

    // One event's field updated.
    c.batch_execute("UPDATE audit_events SET purpose = 'other' WHERE node = 'b' AND seq = 5")
        .unwrap();
    rejected(
        &export(&mut c, &public),
        "b",
        BreakKind::Modified,
        5,
        "an UPDATE",
    );
    c.batch_execute("UPDATE audit_events SET purpose = 'refund' WHERE node = 'b' AND seq = 5")
        .unwrap();
    accepted(&export(&mut c, &public));

    // One event deleted.
    c.batch_execute(
        "CREATE TEMP TABLE saved AS SELECT * FROM audit_events WHERE node = 'a' AND seq = 4;
         DELETE FROM audit_events WHERE node = 'a' AND seq = 4;",
    )
    .unwrap();
    rejected(
        &export(&mut c, &public),
        "a",
        BreakKind::Missing,
        4,
        "a DELETE",
    );
    c.batch_execute("INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;")
        .unwrap();
    accepted(&export(&mut c, &public));

    // Two events' seq swapped.
    let swap = "UPDATE audit_events SET seq = -1 WHERE node = 'b' AND seq = 3;
                UPDATE audit_events SET seq = 3 WHERE node = 'b' AND seq = 4;
                UPDATE audit_events SET seq = 4 WHERE node = 'b' AND seq = -1;";
    c.batch_execute(swap).unwrap();
    rejected(
        &export(&mut c, &public),
        "b",
        BreakKind::Reordered,
        3,
        "a swap",
    );
    c.batch_execute(swap).unwrap();
    accepted(&export(&mut c, &public));

    // A node's whole history: its events, its checkpoints and its registration.
    // The checkpoints the other nodes signed still name its head.
    c.batch_execute(
        "DELETE FROM audit_events WHERE node = 'b';
         DELETE FROM audit_checkpoints WHERE node = 'b';
         DELETE FROM audit_nodes WHERE node = 'b';",
    )
    .unwrap();
    rejected(
        &export(&mut c, &public),
        "b",
        BreakKind::Truncated,
        1,
        "a node's whole history deleted",
    );
}

#[test]
fn pg_audit_a_log_cut_back_on_every_node_is_caught_by_a_kept_checkpoint() {
    let Some(pg) =
        PgServer::start("pg_audit_a_log_cut_back_on_every_node_is_caught_by_a_kept_checkpoint")
    else {
        return;
    };
    let public = key().public_key();
    let (mut c, kept) = small_cluster(&pg);

    // Every checkpoint naming a's events after seq 7 deleted with those events,
    // and node c (registered last, named by nobody else) with all its rows: what
    // is left verifies on its own, a's and b's later events are an unsigned tail.
    c.batch_execute(
        "DELETE FROM audit_events WHERE node = 'a' AND seq >= 8;
         DELETE FROM audit_checkpoints WHERE (node IN ('a', 'b') AND id = 4) OR node = 'c';
         DELETE FROM audit_events WHERE node = 'c';
         DELETE FROM audit_nodes WHERE node = 'c';",
    )
    .unwrap();
    let e = export(&mut c, &public);
    accepted(&e);

    // c's checkpoint, kept off the host (a witness file), catches it.
    let witness = e.file.with_file_name("witness.jsonl");
    ClusterCheckpoint::append_to_witness(&witness, &[kept]).unwrap();
    let mut cmd = tokio::process::Command::new(panvault_bin());
    cmd.current_dir(e.file.parent().unwrap())
        .args(["audit", "verify", "--export"])
        .arg(&e.file)
        .arg("--pubkey")
        .arg(&e.pubkey)
        .arg("--checkpoint")
        .arg(&witness);
    let o = block_on(run_command(cmd, LIMIT));
    assert_eq!(o.status.code(), Some(3), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("node c: its checkpoint #2, kept elsewhere, is not in the log"),
        "{}",
        o.stderr
    );
}

/// All three verifiers reject, each saying `said` (for a break that is no
/// node's: a prune record).
fn rejected_saying(e: &Exported, said: &str, what: &str) {
    let b = e
        .report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("{what} went unnoticed"));
    assert!(b.detail.contains(said), "{what}: {b}");
    let o = binary(e);
    assert_eq!(o.status.code(), Some(3), "{what}: {}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains(said), "{what}: {o:?}");
    if let Some(o) = python(e) {
        assert_eq!(o.status.code(), Some(1), "verify.py accepted: {what}");
        assert!(o.stderr.contains(said), "verify.py, {what}: {}", o.stderr);
    }
}

/// Retention on the shared log: nodes a, b and c worked 800 days ago (c only
/// registered), a and b work today. Two prunes race while a and b keep
/// appending and signing: one cuts every node's chain at one cluster
/// checkpoint, the other does nothing; the writers' heads stay valid (c's
/// whole chain is gone, and it goes on after its cut); the pruned log verifies
/// with all three verifiers; tampering after the prune is caught, naming the node.
#[test]
fn pg_audit_prune_cuts_every_node_once_while_nodes_append_and_the_log_verifies() {
    use panvault_audit::log::{ClusterPruneReport, DEFAULT_RETENTION, prune_cluster};

    let Some(pg) = PgServer::start(
        "pg_audit_prune_cuts_every_node_once_while_nodes_append_and_the_log_verifies",
    ) else {
        return;
    };
    let public = key().public_key();
    let mut c = client(&pg);
    schema::migrate(&mut c).unwrap();
    let old = OffsetDateTime::now_utc() - time::Duration::days(800);
    let mut chains: Vec<(&str, AuditChain)> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, register_at(&mut c, n, old)))
        .collect();
    for round in 0..3 {
        for (name, chain) in chains.iter_mut().take(2) {
            batch_at(&mut c, name, chain, (round * 4, 4), true, old);
        }
    }
    let (name, chain) = &mut chains[2];
    batch_at(&mut c, name, chain, (0, 0), true, old); // c anchors the old heads
    for (name, chain) in chains.iter_mut().take(2) {
        batch(&mut c, name, chain, 100, 3, true);
    }
    let before = export(&mut c, &public);
    accepted(&before);
    let old_events = 2 * (1 + 12) + 1;

    // a and b append and sign while two prunes race.
    const BATCHES: u32 = 20;
    let go = Arc::new(Barrier::new(4));
    let (mut c_chain, mut writers) = (None, Vec::new());
    for (name, mut chain) in chains {
        if name == "c" {
            c_chain = Some(chain);
            continue;
        }
        let mut conn = client(&pg);
        let go = Arc::clone(&go);
        writers.push(std::thread::spawn(move || {
            go.wait();
            for b in 0..BATCHES {
                batch(&mut conn, name, &mut chain, 200 + b * 2, 2, b % 3 == 2);
            }
            (name, conn, chain)
        }));
    }
    let pruners: Vec<_> = (0..2)
        .map(|_| {
            let mut conn = client(&pg);
            let go = Arc::clone(&go);
            std::thread::spawn(move || -> ClusterPruneReport {
                go.wait();
                let mut tx = conn.transaction().unwrap();
                let log = PgLog::new(&mut tx, node("admin"));
                let r = prune_cluster(&log, &key(), OffsetDateTime::now_utc(), DEFAULT_RETENTION)
                    .unwrap();
                drop(log);
                tx.commit().unwrap();
                r
            })
        })
        .collect();
    let reports: Vec<ClusterPruneReport> = pruners.into_iter().map(|p| p.join().unwrap()).collect();
    let done: Vec<ClusterPruneReport> = reports
        .iter()
        .filter(|r| r.record.is_some())
        .cloned()
        .collect();
    assert_eq!(done.len(), 1, "one prune across the cluster: {reports:?}");
    assert_eq!(done[0].deleted, old_events);
    let record = done[0].record.clone().unwrap();
    let cuts: Vec<(&str, u64)> = record
        .cuts
        .iter()
        .map(|h| (h.node.as_str(), h.seq))
        .collect();
    assert_eq!(cuts, [("a", 13), ("b", 13), ("c", 1)]);
    let mut chains: Vec<(&str, PgClient, AuditChain)> =
        writers.into_iter().map(|w| w.join().unwrap()).collect();

    // Every writer's head is still the store's; c, whose chain is empty now,
    // reloads at its cut and goes on from there.
    for (name, conn, chain) in &mut chains {
        let stored = AuditChain::load(&PgLog::new(conn, node(name))).unwrap();
        assert_eq!(stored.snapshot(), chain.snapshot(), "{name}");
    }
    let mut c_chain = c_chain.unwrap();
    let reloaded = AuditChain::load(&PgLog::new(&mut c, node("c"))).unwrap();
    assert_eq!(reloaded.snapshot(), c_chain.snapshot());
    batch(&mut c, "c", &mut c_chain, 0, 1, true);
    let (name, conn, chain) = &mut chains[0];
    batch(conn, name, chain, 900, 1, true);

    let e = export(&mut c, &public);
    accepted(&e);
    assert_eq!(e.report.prunes, 1);
    let writes = 2 * u64::from(BATCHES * 2) + 1 + 1;
    assert_eq!(e.report.events, before.report.events - old_events + writes);
    let text = std::fs::read_to_string(&e.file).unwrap();
    assert!(text.contains(r#"{"type":"prune","id":1,"#), "{text}");

    // Tampering after the prune.
    c.batch_execute(
        "CREATE TEMP TABLE saved AS SELECT * FROM audit_events WHERE node = 'b' AND seq = 14;
         DELETE FROM audit_events WHERE node = 'b' AND seq = 14;",
    )
    .unwrap();
    rejected(
        &export(&mut c, &public),
        "b",
        BreakKind::Missing,
        14,
        "the first event after b's cut deleted",
    );
    c.batch_execute("INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;")
        .unwrap();
    accepted(&export(&mut c, &public));

    c.batch_execute("UPDATE audit_prunes SET deleted = deleted + 1")
        .unwrap();
    rejected_saying(
        &export(&mut c, &public),
        "prune record #1",
        "a prune record altered",
    );
    c.batch_execute("UPDATE audit_prunes SET deleted = deleted - 1")
        .unwrap();
    accepted(&export(&mut c, &public));

    c.batch_execute(
        "CREATE TEMP TABLE saved AS SELECT * FROM audit_prunes;
         DELETE FROM audit_prunes;",
    )
    .unwrap();
    rejected(
        &export(&mut c, &public),
        "a",
        BreakKind::Missing,
        1,
        "the prune record deleted",
    );
    c.batch_execute("INSERT INTO audit_prunes SELECT * FROM saved; DROP TABLE saved;")
        .unwrap();
    accepted(&export(&mut c, &public));

    // a's whole remaining history: its events, checkpoints and registration.
    c.batch_execute(
        "DELETE FROM audit_events WHERE node = 'a';
         DELETE FROM audit_checkpoints WHERE node = 'a';
         DELETE FROM audit_nodes WHERE node = 'a';",
    )
    .unwrap();
    let e = export(&mut c, &public);
    rejected_saying(&e, "node a", "a node's whole remaining history deleted");
}

// --- The real binary: `panvault audit prune` and `audit checkpoint` on PostgreSQL.

mod binary {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    use panvault_vault::{Admin, Clock};

    use super::*;
    use crate::util::{BinVault, ServeProcess, cards};

    async fn serve(v: &BinVault, name: &str) -> ServeProcess {
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.args(v.serve_args()).env("PANVAULT_NODE", name);
        ServeProcess::spawn(cmd).await.unwrap()
    }

    /// The synchronous PostgreSQL client (and the synchronous verifiers)
    /// inside the test's runtime.
    fn sync<T>(f: impl FnOnce() -> T) -> T {
        tokio::task::block_in_place(f)
    }

    fn count(pg: &PgServer, sql: &str) -> i64 {
        sync(|| client(pg).query_one(sql, &[]).unwrap().get(0))
    }

    fn sql(pg: &PgServer, text: &str) {
        sync(|| client(pg).batch_execute(text).unwrap());
    }

    fn admin_node(pg: &PgServer) -> String {
        sync(|| {
            client(pg)
                .query_one(
                    "SELECT node FROM audit_nodes WHERE node LIKE 'admin-%'",
                    &[],
                )
                .unwrap()
                .get(0)
        })
    }

    /// Tokenizes and detokenizes on `node` until `stop`; counts what was answered 2xx,
    /// and fails the test on anything else.
    fn load(
        v: &BinVault,
        addr: std::net::SocketAddr,
        stop: Arc<AtomicBool>,
        ok: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        let (sf, pay) = (v.client(addr, "storefront"), v.client(addr, "payments"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let card = cards::fresh();
                let r = sf.tokenize(&card).await;
                assert!(
                    r.status == 201 || r.status == 200,
                    "tokenize: {} {}",
                    r.status,
                    r.text()
                );
                let token = r.json()["token"].as_str().unwrap().to_owned();
                let d = pay.detokenize(&token, "check").await;
                assert_eq!(d.status, 200, "detokenize: {}", d.text());
                ok.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// A vault created 800 days ago whose admin signed a checkpoint then: its
    /// first events (the admin node's chain) are past the retention.
    fn aged_vault(tmp: &Path, pg: &PgServer) -> BinVault {
        let then = OffsetDateTime::now_utc() - time::Duration::days(800);
        let clock: Clock = Arc::new(move || then);
        let v = BinVault::create_pg_at(tmp, &pg.url("disable"), &clock);
        sync(|| {
            let mut admin = Admin::open(&v.data, &v.unlock(), clock).unwrap();
            admin.audit_checkpoint(&Default::default(), None).unwrap();
        });
        v
    }

    async fn verify_db(v: &BinVault) -> CmdOutput {
        v.run(&["audit", "verify"], false, LIMIT).await
    }

    /// Two nodes serve under load; two `audit prune` run at once: one cuts the
    /// log (the admin node's old chain) at a signed cluster checkpoint, the
    /// other does nothing; no request fails. The database, the export (with
    /// `audit verify --export` and verify.py) verify; then tampering with the
    /// pruned log in the database is caught, naming the node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_audit_prune_from_the_cli_while_two_nodes_serve_under_load() {
        let Some(pg) =
            PgServer::start("pg_audit_prune_from_the_cli_while_two_nodes_serve_under_load")
        else {
            return;
        };
        util::within(Duration::from_secs(300), async {
            let tmp = tempfile::tempdir().unwrap();
            let v = aged_vault(tmp.path(), &pg);
            let admin = admin_node(&pg);
            let a = serve(&v, "node-a").await;
            let b = serve(&v, "node-b").await;
            let (stop, ok) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicU64::new(0)),
            );
            let loads = [
                load(&v, a.addr, stop.clone(), ok.clone()),
                load(&v, b.addr, stop.clone(), ok.clone()),
            ];
            let deadline = Instant::now() + Duration::from_secs(60);
            while ok.load(Ordering::Relaxed) < 20 {
                assert!(Instant::now() < deadline, "no load");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            // A prune SIGKILLed in the middle of its transaction (held at its
            // DELETE by a row lock of ours) leaves nothing: no record, no event gone.
            let old_events = count(
                &pg,
                &format!("SELECT count(*) FROM audit_events WHERE node = '{admin}'"),
            );
            let mut holder = sync(|| client(&pg));
            sync(|| {
                holder
                    .batch_execute(&format!(
                        "BEGIN; SELECT 1 FROM audit_events WHERE node = '{admin}' AND seq = 1 FOR UPDATE"
                    ))
                    .unwrap();
            });
            let mut killed = tokio::process::Command::new(panvault_bin());
            killed
                .args(["audit", "prune", "--data-dir"])
                .arg(&v.data)
                .arg("--passphrase-file")
                .arg(&v.pass)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let mut killed = killed.spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(
                &pg,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'DELETE FROM audit_events%'",
            ) == 0
            {
                assert!(Instant::now() < deadline, "the prune never reached its DELETE");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            killed.kill().await.unwrap();
            sync(move || {
                holder.batch_execute("ROLLBACK").unwrap();
                drop(holder);
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(
                &pg,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DELETE FROM audit_events%'",
            ) > 0
            {
                assert!(Instant::now() < deadline, "the killed prune's session lingers");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(count(&pg, "SELECT count(*) FROM audit_prunes"), 0);
            assert!(
                count(
                    &pg,
                    &format!("SELECT count(*) FROM audit_events WHERE node = '{admin}'"),
                ) >= old_events,
                "a killed prune deleted events"
            );

            let args = ["audit", "prune", "--retention-days", "365"];
            let (p1, p2) = tokio::join!(v.run(&args, true, LIMIT), v.run(&args, true, LIMIT));
            let pruned: Vec<&CmdOutput> = [&p1, &p2]
                .into_iter()
                .filter(|o| o.stdout.starts_with("pruned "))
                .collect();
            assert_eq!(pruned.len(), 1, "one prune:\n{p1:?}\n{p2:?}");
            assert!(pruned[0].success(), "{:?}", pruned[0]);
            assert!(
                pruned[0].stdout.contains(&format!("{admin} after seq ")),
                "{}",
                pruned[0].stdout
            );
            for o in [&p1, &p2] {
                assert!(
                    o.success() || o.stderr.contains("is pruning the audit log now"),
                    "{o:?}"
                );
            }
            assert_eq!(count(&pg, "SELECT count(*) FROM audit_prunes"), 1);
            let before = ok.load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(60);
            while ok.load(Ordering::Relaxed) < before + 20 {
                assert!(Instant::now() < deadline, "the nodes stopped serving");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.store(true, Ordering::Relaxed);
            for l in loads {
                l.await.unwrap();
            }
            assert!(a.terminate().await.success());
            assert!(b.terminate().await.success());

            // The database, the export, and the outside verifier.
            let o = verify_db(&v).await;
            assert!(o.success(), "audit verify: {}{}", o.stdout, o.stderr);
            assert!(
                o.stdout.contains("1 signed prune record were pruned"),
                "{}",
                o.stdout
            );
            let file = tmp.path().join("export.jsonl");
            let out = v
                .run(
                    &["audit", "export", "-o", file.to_str().unwrap()],
                    false,
                    LIMIT,
                )
                .await;
            assert!(out.success(), "{}", out.stderr);
            let report = sync(|| {
                verify_export(
                    std::fs::File::open(&file)
                        .map(std::io::BufReader::new)
                        .unwrap(),
                    &PublicKey::read_from(&v.data.join("audit-signing.pub")).unwrap(),
                    &[],
                )
                .unwrap()
            });
            let e = Exported {
                _dir: tempfile::tempdir().unwrap(),
                pubkey: v.data.join("audit-signing.pub"),
                file: file.clone(),
                report,
            };
            sync(|| accepted(&e));
            assert_eq!(e.report.prunes, 1);

            // Tampering with the pruned log: the first event kept of the admin node.
            let cut = count(
                &pg,
                &format!("SELECT min(seq) FROM audit_events WHERE node = '{admin}'"),
            );
            assert!(cut > 1, "the admin node's oldest events are gone");
            sql(
                &pg,
                &format!(
                    "CREATE TABLE saved AS SELECT * FROM audit_events \
                     WHERE node = '{admin}' AND seq = {cut};
                     DELETE FROM audit_events WHERE node = '{admin}' AND seq = {cut};"
                ),
            );
            let o = verify_db(&v).await;
            assert_eq!(o.status.code(), Some(3), "{}{}", o.stdout, o.stderr);
            assert!(o.stderr.contains(&format!("node {admin}")), "{}", o.stderr);
            sql(
                &pg,
                "INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;",
            );
            assert!(verify_db(&v).await.success());

            // The prune record altered.
            sql(&pg, "UPDATE audit_prunes SET deleted = deleted + 1");
            let o = verify_db(&v).await;
            assert_eq!(o.status.code(), Some(3), "{}{}", o.stdout, o.stderr);
            assert!(o.stderr.contains("prune record #1"), "{}", o.stderr);
            sql(&pg, "UPDATE audit_prunes SET deleted = deleted - 1");
            assert!(verify_db(&v).await.success());

            // A node's whole history.
            sql(
                &pg,
                "DELETE FROM audit_events WHERE node = 'node-b';
                 DELETE FROM audit_checkpoints WHERE node = 'node-b';
                 DELETE FROM audit_nodes WHERE node = 'node-b';",
            );
            let o = verify_db(&v).await;
            assert_eq!(o.status.code(), Some(3), "{}{}", o.stdout, o.stderr);
            assert!(o.stderr.contains("node node-b"), "{}", o.stderr);
        })
        .await;
    }

    /// The nodes' retention round prunes the shared log too, once across them;
    /// the nodes write the cluster checkpoints they sign to the witness file,
    /// which the pruned log then verifies against.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_audit_the_retention_round_prunes_the_shared_log_once() {
        let Some(pg) = PgServer::start("pg_audit_the_retention_round_prunes_the_shared_log_once")
        else {
            return;
        };
        util::within(Duration::from_secs(300), async {
            let tmp = tempfile::tempdir().unwrap();
            let v = aged_vault(tmp.path(), &pg);
            let mut text = std::fs::read_to_string(&v.config).unwrap();
            let witness = tmp.path().join("witness.jsonl");
            text.push_str(&format!(
                "[retention]\npurge_interval_secs = 1\n[audit]\ncheckpoint_witness = {}\n",
                serde_json::Value::String(witness.display().to_string())
            ));
            std::fs::write(&v.config, text).unwrap();
            let a = serve(&v, "node-a").await;
            let b = serve(&v, "node-b").await;
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(&pg, "SELECT count(*) FROM audit_prunes") == 0 {
                assert!(Instant::now() < deadline, "no node pruned the log");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Three more rounds: nothing more is old enough, nothing more is written.
            let rounds = |pg: &PgServer| {
                count(
                    pg,
                    "SELECT count(*) FROM audit_events WHERE action = 'retention.purge'",
                )
            };
            let seen = rounds(&pg);
            let deadline = Instant::now() + Duration::from_secs(60);
            while rounds(&pg) < seen + 3 {
                assert!(Instant::now() < deadline, "the rounds stopped");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(count(&pg, "SELECT count(*) FROM audit_prunes"), 1);
            assert!(a.terminate().await.success());
            assert!(b.terminate().await.success());
            let o = verify_db(&v).await;
            assert!(o.success(), "audit verify: {}{}", o.stdout, o.stderr);
            assert!(o.stdout.contains("signed prune record"), "{}", o.stdout);

            let kept =
                ClusterCheckpoint::parse_many(&std::fs::read_to_string(&witness).unwrap()).unwrap();
            for n in ["node-a", "node-b"] {
                assert!(kept.iter().any(|c| c.node.as_str() == n), "{n}: {kept:?}");
            }
            let w = witness.to_str().unwrap();
            let o = v
                .run(&["audit", "verify", "--checkpoint", w], false, LIMIT)
                .await;
            assert!(
                o.success(),
                "audit verify --checkpoint: {}{}",
                o.stdout,
                o.stderr
            );
        })
        .await;
    }

    /// The same command on SQLite: the single log's prune, with its own event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_prune_is_the_same_command_on_sqlite() {
        util::within(Duration::from_secs(120), async {
            let tmp = tempfile::tempdir().unwrap();
            let then = OffsetDateTime::now_utc() - time::Duration::days(800);
            let clock: Clock = Arc::new(move || then);
            let v = BinVault::create_in_at(tmp.path(), &tmp.path().join("data"), &clock);
            sync(|| {
                let mut admin = Admin::open(&v.data, &v.unlock(), clock).unwrap();
                admin.audit_checkpoint(&Default::default(), None).unwrap();
            });
            let o = v.run(&["audit", "prune"], true, LIMIT).await;
            assert!(o.success(), "audit prune: {}{}", o.stdout, o.stderr);
            assert!(
                o.stdout.starts_with("pruned ") && o.stdout.contains("prune record #1"),
                "{}",
                o.stdout
            );
            let o = v.run(&["audit", "prune"], true, LIMIT).await;
            assert!(o.stdout.starts_with("nothing to prune"), "{}", o.stdout);
            let o = verify_db(&v).await;
            assert!(o.success(), "audit verify: {}{}", o.stdout, o.stderr);
            assert!(o.stdout.contains("were pruned"), "{}", o.stdout);
            let o = v
                .run(&["audit", "prune", "--retention-days", "30"], true, LIMIT)
                .await;
            assert_eq!(o.status.code(), Some(1), "{o:?}");
        })
        .await;
    }

    /// `audit checkpoint` on PostgreSQL signs a cluster checkpoint, prints it
    /// (its signer, id and every node's head) and appends it to the witness
    /// file, which `audit verify --checkpoint` then holds the log to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_audit_checkpoint_command_signs_and_witnesses_a_cluster_checkpoint() {
        let Some(pg) =
            PgServer::start("pg_audit_checkpoint_command_signs_and_witnesses_a_cluster_checkpoint")
        else {
            return;
        };
        util::within(Duration::from_secs(120), async {
            let tmp = tempfile::tempdir().unwrap();
            let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
            let witness = tmp.path().join("witness.jsonl");
            let w = witness.to_str().unwrap();
            let o = v
                .run(&["audit", "checkpoint", "--witness", w], true, LIMIT)
                .await;
            assert!(o.success(), "audit checkpoint: {}{}", o.stdout, o.stderr);
            let cp = ClusterCheckpoint::from_json(o.stdout.trim()).unwrap();
            let public = PublicKey::read_from(&v.data.join("audit-signing.pub")).unwrap();
            cp.verify(&public).unwrap();
            assert!(cp.head_of(&cp.node).is_some_and(|h| h.seq >= 2));
            assert!(
                o.stderr
                    .contains(&format!("signed cluster checkpoint #{}", cp.id)),
                "{}",
                o.stderr
            );
            let kept =
                ClusterCheckpoint::parse_many(&std::fs::read_to_string(&witness).unwrap()).unwrap();
            assert_eq!(kept, [cp]);
            let o = v
                .run(&["audit", "verify", "--checkpoint", w], false, LIMIT)
                .await;
            assert!(
                o.success(),
                "audit verify --checkpoint: {}{}",
                o.stdout,
                o.stderr
            );
        })
        .await;
    }
}
