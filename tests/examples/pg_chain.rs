//! What one audit chain serialised in PostgreSQL costs, against one chain per node.
//!
//! Each transaction appends `rows` cards and their audit events:
//! - `one-chain`: every writer locks the single head row (`SELECT … FOR UPDATE`),
//!   hashes its events onto it, inserts, moves the head, commits. The lock is held
//!   through the commit's flush, so commits of different nodes cannot share a flush.
//! - `per-node`: the same, but each writer (node) has its own head row and chain.
//! - `PgLog`: what the vault runs: the audit crate's `AuditChain` on
//!   `store::pg::PgLog` (one chain per node, one INSERT per event, the head in
//!   memory, no head row), with signed cluster checkpoints every 1,000 events of
//!   a node or every second (`cluster_checkpoint_due`), the cards as above;
//!   the events in one statement (`append_all`), or one INSERT each (`append`).
//!
//! Starts its own PostgreSQL (the test harness's: `initdb` in a temporary directory,
//! fsync on, on this machine's disk) unless given a URL:
//!
//! ```text
//! cargo run -p panvault-tests --example pg_chain -- [SECONDS] [URL]
//! ```
//!
//! Writers: 3 (three nodes), one connection each. Not a test: prints figures only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use panvault_audit::log::{
    Action, Actor, AuditChain, CheckpointPolicy, NewEvent, NodeId, Outcome, SigningKey,
};
use panvault_tests::postgres::PgServer;
use panvault_vault::store::pg::{self, PgClient, PgLog, PgSettings};
use time::OffsetDateTime;

const WRITERS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Design {
    OneChain,
    PerNode,
    PgLog,
    PgLogOneByOne,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |s| s.parse().unwrap());
    let url_arg = args.next();
    let server = if url_arg.is_none() {
        Some(PgServer::start("pg_chain").expect("PostgreSQL is not installed"))
    } else {
        None
    };
    let url = url_arg.unwrap_or_else(|| server.as_ref().unwrap().url("disable"));
    let settings = PgSettings::from_url(&url).unwrap();
    println!("database: {settings}");
    let mut c = pg::connect(&settings).unwrap();
    pg::schema::migrate(&mut c).unwrap();
    let version: String = c.query_one("SHOW server_version", &[]).unwrap().get(0);
    let fsync: String = c.query_one("SHOW fsync", &[]).unwrap().get(0);
    let sc: String = c.query_one("SHOW synchronous_commit", &[]).unwrap().get(0);
    println!(
        "PostgreSQL {version}, fsync={fsync}, synchronous_commit={sc}, {WRITERS} writers, {seconds} s per run"
    );
    println!("| design | rows/tx | tx/s | rows/s | mean ms/tx | p99 ms/tx |");
    println!("|---|---|---|---|---|---|");
    for rows in [1usize, 16] {
        for design in [
            Design::OneChain,
            Design::PerNode,
            Design::PgLog,
            Design::PgLogOneByOne,
        ] {
            reset(&mut c);
            let r = run(&url, design, rows, Duration::from_secs(seconds));
            let name = match design {
                Design::OneChain => "one chain (FOR UPDATE)",
                Design::PerNode => "per-node chains",
                Design::PgLog => "PgLog + cluster checkpoints (append_all)",
                Design::PgLogOneByOne => "PgLog + cluster checkpoints (append each)",
            };
            println!(
                "| {name} | {rows} | {:.0} | {:.0} | {:.2} | {:.2} |",
                r.tx_per_s,
                r.tx_per_s * f64::from(u32::try_from(rows).unwrap()),
                r.mean_ms,
                r.p99_ms
            );
        }
    }
}

fn reset(c: &mut PgClient) {
    c.batch_execute(
        "TRUNCATE audit_events, audit_checkpoints, audit_nodes;
         DROP TABLE IF EXISTS bench_cards, bench_events, bench_heads;
         CREATE TABLE bench_cards (
             id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             token       text NOT NULL,
             tenant      text NOT NULL,
             nonce       bytea NOT NULL,
             ciphertext  bytea NOT NULL,
             fingerprint bytea NOT NULL,
             created_at  bigint NOT NULL
         );
         CREATE UNIQUE INDEX bench_cards_token ON bench_cards(token, tenant);
         CREATE INDEX bench_cards_fp ON bench_cards(tenant, fingerprint);
         CREATE TABLE bench_events (
             node      int NOT NULL,
             seq       bigint NOT NULL,
             time_ns   bigint NOT NULL,
             action    text NOT NULL,
             token     text,
             prev_hash bytea NOT NULL,
             hash      bytea NOT NULL,
             PRIMARY KEY (node, seq)
         );
         CREATE TABLE bench_heads (node int PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL);
         INSERT INTO bench_heads SELECT n, 0, '\\x0000000000000000000000000000000000000000000000000000000000000000'
           FROM generate_series(0, 3) AS n;
         CHECKPOINT;",
    )
    .unwrap();
}

struct RunResult {
    tx_per_s: f64,
    mean_ms: f64,
    p99_ms: f64,
}

fn run(url: &str, design: Design, rows: usize, length: Duration) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, start) = (Arc::clone(&stop), Arc::clone(&start));
            let mut c = pg::connect(&PgSettings::from_url(url).unwrap()).unwrap();
            std::thread::spawn(move || {
                let node = match design {
                    Design::OneChain => 0,
                    Design::PerNode | Design::PgLog | Design::PgLogOneByOne => {
                        i32::try_from(w + 1).unwrap()
                    }
                };
                let mut lat = Vec::new();
                let mut counter = 0u64;
                let one_by_one = design == Design::PgLogOneByOne;
                let mut chain = matches!(design, Design::PgLog | Design::PgLogOneByOne)
                    .then(|| register(&mut c, w));
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match &mut chain {
                        Some(chain) => {
                            append_pglog(&mut c, chain, one_by_one, w, &mut counter, rows)
                        }
                        None => append(&mut c, node, w, &mut counter, rows),
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(length); // the measuring window, not synchronisation
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    let n = lat.len();
    let total: Duration = lat.iter().sum();
    RunResult {
        tx_per_s: f64::from(u32::try_from(n).unwrap()) / elapsed,
        mean_ms: total.as_secs_f64() * 1e3 / f64::from(u32::try_from(n).unwrap()),
        p99_ms: lat[n * 99 / 100].as_secs_f64() * 1e3,
    }
}

/// One durable transaction: `rows` cards, their events hashed onto the chain head.
fn append(c: &mut PgClient, node: i32, writer: usize, counter: &mut u64, rows: usize) {
    let mut tx = c.transaction().unwrap();
    let head = tx
        .query_one(
            "SELECT seq, hash FROM bench_heads WHERE node = $1 FOR UPDATE",
            &[&node],
        )
        .unwrap();
    let (mut seq, mut prev): (i64, Vec<u8>) = (head.get(0), head.get(1));
    let now = i64::try_from(
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    let (mut tokens, mut fps, mut seqs, mut prevs, mut hashes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rows {
        *counter += 1;
        let token = format!("tok_{writer}_{counter}_{now}");
        let fp = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec();
        seq += 1;
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(&prev);
        h.update(&seq.to_be_bytes());
        h.update(&now.to_be_bytes());
        h.update(token.as_bytes());
        let hash = h.finish().as_ref().to_vec();
        tokens.push(token);
        fps.push(fp);
        seqs.push(seq);
        prevs.push(std::mem::replace(&mut prev, hash.clone()));
        hashes.push(hash);
    }
    tx.execute(
        "INSERT INTO bench_cards (token, tenant, nonce, ciphertext, fingerprint, created_at)
         SELECT t, 'shop', '\\x000000000000000000000000', decode(repeat('ab', 64), 'hex'), f, $3
         FROM unnest($1::text[], $2::bytea[]) AS u(t, f)",
        &[&tokens, &fps, &now],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO bench_events (node, seq, time_ns, action, token, prev_hash, hash)
         SELECT $1, s, $2, 'tokenize', t, p, h
         FROM unnest($3::bigint[], $4::text[], $5::bytea[], $6::bytea[]) AS u(s, t, p, h)",
        &[&node, &now, &seqs, &tokens, &prevs, &hashes],
    )
    .unwrap();
    tx.execute(
        "UPDATE bench_heads SET seq = $2, hash = $3 WHERE node = $1",
        &[&node, &seq, &prev],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn node_of(writer: usize) -> NodeId {
    NodeId::new(format!("node-{writer}")).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[7; 32]).unwrap()
}

/// The node's chain, registered (its first event and cluster checkpoint).
fn register(c: &mut PgClient, writer: usize) -> AuditChain {
    let mut tx = c.transaction().unwrap();
    let log = PgLog::new(&mut tx, node_of(writer));
    let mut chain = AuditChain::load(&log).unwrap();
    let now = OffsetDateTime::now_utc();
    chain
        .register_node(&log, &key(), Actor::admin("bench"), now)
        .unwrap();
    drop(log);
    tx.commit().unwrap();
    chain
}

/// One durable transaction as the vault's writer makes it on PostgreSQL: `rows`
/// cards, their events appended by `AuditChain` through `PgLog`, and a cluster
/// checkpoint before the commit when one is due.
fn append_pglog(
    c: &mut PgClient,
    chain: &mut AuditChain,
    one_by_one: bool,
    writer: usize,
    counter: &mut u64,
    rows: usize,
) {
    let policy = CheckpointPolicy {
        every_events: 1000,
        every: Duration::from_secs(1),
    };
    let now = OffsetDateTime::now_utc();
    let now_ns = i64::try_from(now.unix_timestamp_nanos()).unwrap();
    let mut tokens = Vec::new();
    let mut fps = Vec::new();
    for _ in 0..rows {
        *counter += 1;
        let token = format!("tok_{writer}_{counter}_{now_ns}");
        fps.push(
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
                .as_ref()
                .to_vec(),
        );
        tokens.push(token);
    }
    let before = chain.snapshot();
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "INSERT INTO bench_cards (token, tenant, nonce, ciphertext, fingerprint, created_at)
         SELECT t, 'shop', '\\x000000000000000000000000', decode(repeat('ab', 64), 'hex'), f, $3
         FROM unnest($1::text[], $2::bytea[]) AS u(t, f)",
        &[&tokens, &fps, &now_ns],
    )
    .unwrap();
    let log = PgLog::new(&mut tx, node_of(writer));
    let events: Vec<NewEvent> = tokens
        .iter()
        .map(|token| {
            NewEvent::new(
                now,
                Actor::client("shop", "ab"),
                Action::Tokenize,
                Outcome::Success,
            )
            .with_tenant("shop")
            .with_token(token.clone())
        })
        .collect();
    if one_by_one {
        for ev in &events {
            chain.append(&log, ev).unwrap();
        }
    } else {
        chain.append_all(&log, &events).unwrap();
    }
    if chain.cluster_checkpoint_due(&log, &policy, now).unwrap() {
        chain.cluster_checkpoint(&log, &key(), now).unwrap();
    }
    drop(log);
    if tx.commit().is_err() {
        chain.restore(before);
        panic!("commit failed");
    }
}
