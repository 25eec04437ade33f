//! Audit log benchmarks: verification throughput on 1,000,000 events (the
//! requirement is at least 1,000,000 events/s) and the cost of one append.
//!
//! `cargo bench -p panvault-audit --bench verify`
// Bench code: a panic is a failure; casts of bench-sized numbers.
#![allow(clippy::unwrap_used, clippy::cast_possible_wrap)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use panvault_audit::log::{
    Action, Actor, AuditChain, NewEvent, Outcome, SigningKey, migrate, open_read_only, verify,
};
use rusqlite::Connection;
use time::OffsetDateTime;

const EVENTS: u64 = 1_000_000;

/// A typical detokenize event (about 230 bytes of fields).
fn event(i: u64, time: OffsetDateTime) -> NewEvent {
    NewEvent::new(
        time,
        Actor::client(
            "storefront-1",
            format!("{:064x}", i.wrapping_mul(0x9e37_79b9)),
        ),
        Action::Detokenize,
        Outcome::Success,
    )
    .with_tenant("acme")
    .with_token(format!("tok_{:022}", i.wrapping_mul(7919)))
    .with_purpose("refund")
    .with_request_id(format!("{:032x}", i))
    .with_peer("10.1.2.3:51234")
}

fn bench_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let key = SigningKey::from_seed(&[1; 32]).unwrap();
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "OFF").unwrap();
        migrate(&conn).unwrap();
        let mut chain = AuditChain::load(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        let t0 = OffsetDateTime::now_utc();
        for i in 0..EVENTS {
            chain.append(&tx, &event(i, t0)).unwrap();
            if (i + 1) % 1000 == 0 {
                chain.checkpoint(&tx, &key, t0).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let conn = open_read_only(&path).unwrap();
    let public = key.public_key();
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("1M_events_1000_checkpoints", |b| {
        b.iter(|| {
            let r = verify(&conn, &public, None).unwrap();
            assert!(r.is_intact());
            black_box(r.events)
        });
    });
    g.finish();
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("vault.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    migrate(&conn).unwrap();
    let mut chain = AuditChain::load(&conn).unwrap();
    let t0 = OffsetDateTime::now_utc();
    let mut i = 0u64;
    let mut g = c.benchmark_group("audit_append");
    g.throughput(Throughput::Elements(100));
    // 100 events per transaction, as a group commit would (fsync excluded).
    g.bench_function("100_events_per_transaction", |b| {
        b.iter(|| {
            let tx = conn.transaction().unwrap();
            for _ in 0..100 {
                i += 1;
                black_box(chain.append(&tx, &event(i, t0)).unwrap());
            }
            tx.commit().unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench_verify, bench_append);
criterion_main!(benches);
