//! The audit chain inside PostgreSQL transactions (`store::pg::PgLog`) against a
//! real server the harness starts: appends and checkpoints from racing writers,
//! retention, and the self-contained export that `verify_export` checks with the
//! public key alone — and that fails once a row is changed or removed in the
//! database.

use panvault_audit::log::{
    Action, Actor, AuditChain, AuditError, DEFAULT_RETENTION, NewEvent, Outcome, PublicKey,
    SigningKey, VerifyReport, prune, verify_export,
};
use panvault_vault::store::pg::{self, PgClient, PgLog, PgSettings, schema};
use time::{Duration, OffsetDateTime};

use crate::util::postgres::PgServer;

fn client(pg: &PgServer) -> PgClient {
    pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

fn event(t: OffsetDateTime, writer: &str, i: u32) -> NewEvent {
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

/// The database's log, exported and verified with the public key alone.
fn export_and_verify(c: &mut PgClient, public: &PublicKey) -> (u64, VerifyReport) {
    let mut out = Vec::new();
    let n = pg::audit::export_jsonl(c, 1, &mut out).unwrap();
    (n, verify_export(out.as_slice(), public, &[]).unwrap())
}

/// One event in its own transaction, as a node commits it with its data change;
/// a conflict the chain could not settle in one reload rolls back and goes again.
fn append_committed(c: &mut PgClient, chain: &mut AuditChain, ev: &NewEvent) -> u64 {
    loop {
        let before = chain.snapshot();
        let mut tx = c.transaction().unwrap();
        let r = chain.append(&PgLog::new(&mut tx), ev);
        match r {
            Ok(seq) => {
                tx.commit().unwrap();
                return seq;
            }
            Err(AuditError::Conflict) => {
                tx.rollback().unwrap();
                chain.restore(before);
                let mut tx = c.transaction().unwrap();
                chain.reload(&PgLog::new(&mut tx)).unwrap();
                tx.rollback().unwrap();
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
}

/// A checkpoint of the head as the database has it, in its own transaction;
/// retried like an append when a racing writer took the id twice.
fn checkpoint_committed(c: &mut PgClient, chain: &mut AuditChain, now: OffsetDateTime) {
    loop {
        let before = chain.snapshot();
        let mut tx = c.transaction().unwrap();
        let log = PgLog::new(&mut tx);
        if !chain.is_current(&log).unwrap() {
            chain.reload(&log).unwrap();
        }
        match chain.checkpoint(&log, &key(), now) {
            Ok(_) => {
                tx.commit().unwrap();
                return;
            }
            Err(AuditError::Conflict) => chain.restore(before),
            Err(e) => panic!("checkpoint failed: {e}"),
        }
    }
}

/// A fresh schema, and checkpoint #1 signed at creation as the vault does.
fn create(pg: &PgServer, now: OffsetDateTime) -> PgClient {
    let mut c = client(pg);
    schema::migrate(&mut c).unwrap();
    let mut tx = c.transaction().unwrap();
    let log = PgLog::new(&mut tx);
    let mut chain = AuditChain::load(&log).unwrap();
    assert_eq!(chain.checkpoint(&log, &key(), now).unwrap().id, 1);
    tx.commit().unwrap();
    c
}

#[test]
fn pg_audit_chain_races_checkpoints_and_verifies_from_the_export() {
    let Some(pg) = PgServer::start("pg_audit_chain_races_checkpoints_and_verifies_from_the_export")
    else {
        return;
    };
    let now = OffsetDateTime::now_utc();
    let public = key().public_key();
    let mut a = create(&pg, now);
    let mut b = client(&pg);

    // Two writers load the same head; A appends seq 1 and holds its transaction
    // open. B appends from another thread: its insert of seq 1 waits for A, finds
    // the number taken (without aborting B's transaction), and B reloads and
    // writes seq 2 in the same transaction.
    let mut chain_a = AuditChain::load(&PgLog::new(&mut a.transaction().unwrap())).unwrap();
    let mut chain_b = AuditChain::load(&PgLog::new(&mut b.transaction().unwrap())).unwrap();
    assert_eq!(chain_a.snapshot(), chain_b.snapshot());
    let mut tx_a = a.transaction().unwrap();
    assert_eq!(
        chain_a
            .append(&PgLog::new(&mut tx_a), &event(now, "a", 0))
            .unwrap(),
        1
    );
    let racer = std::thread::spawn(move || {
        let mut tx = b.transaction().unwrap();
        let seq = chain_b
            .append(&PgLog::new(&mut tx), &event(now, "b", 0))
            .unwrap();
        tx.commit().unwrap();
        (b, chain_b, seq)
    });
    tx_a.commit().unwrap();
    let (mut b, mut chain_b, seq_b) = racer.join().unwrap();
    assert_eq!(seq_b, 2, "the loser reloads and takes the next number");

    // Checkpoints race the same way: A signs #2 first, B's #2 is taken, B signs #3.
    {
        let mut tx = a.transaction().unwrap();
        chain_a.reload(&PgLog::new(&mut tx)).unwrap();
        let cp = chain_a
            .checkpoint(&PgLog::new(&mut tx), &key(), now)
            .unwrap();
        assert_eq!((cp.id, cp.seq), (2, 2));
        tx.commit().unwrap();
        let mut tx = b.transaction().unwrap();
        let cp = chain_b
            .checkpoint(&PgLog::new(&mut tx), &key(), now)
            .unwrap();
        assert_eq!((cp.id, cp.seq), (3, 2));
        tx.commit().unwrap();
    }

    // Both writers at full speed, each event in its own transaction, signing
    // every few events: every number is used once and the chain holds.
    const EACH: u32 = 60;
    let writers: Vec<_> = [("a", a, chain_a), ("b", b, chain_b)]
        .into_iter()
        .map(|(name, mut c, mut chain)| {
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 1..=EACH {
                    seqs.push(append_committed(&mut c, &mut chain, &event(now, name, i)));
                    if i % 10 == 0 {
                        checkpoint_committed(&mut c, &mut chain, now);
                    }
                }
                seqs
            })
        })
        .collect();
    let mut seqs: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    seqs.sort_unstable();
    let total = 2 + u64::from(EACH) * 2;
    assert_eq!(seqs, (3..=total).collect::<Vec<_>>());

    let mut c = client(&pg);
    let (n, report) = export_and_verify(&mut c, &public);
    assert_eq!(n, total);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, total);
    assert_eq!(report.checkpoints, 3 + 2 * u64::from(EACH / 10));
}

#[test]
fn pg_audit_tamper_in_the_database_fails_the_export_and_blocks_a_prune() {
    let Some(pg) =
        PgServer::start("pg_audit_tamper_in_the_database_fails_the_export_and_blocks_a_prune")
    else {
        return;
    };
    let now = OffsetDateTime::now_utc();
    let old = now - Duration::days(400);
    let public = key().public_key();
    let mut c = create(&pg, old);
    let mut chain = AuditChain::load(&PgLog::new(&mut c.transaction().unwrap())).unwrap();
    for i in 0..6 {
        append_committed(&mut c, &mut chain, &event(old, "a", i));
    }
    let mut tx = c.transaction().unwrap();
    chain.checkpoint(&PgLog::new(&mut tx), &key(), old).unwrap();
    tx.commit().unwrap();
    for i in 6..9 {
        append_committed(&mut c, &mut chain, &event(now, "a", i));
    }
    let mut tx = c.transaction().unwrap();
    chain.checkpoint(&PgLog::new(&mut tx), &key(), now).unwrap();
    tx.commit().unwrap();
    let (_, report) = export_and_verify(&mut c, &public);
    assert!(report.is_intact(), "{report:?}");

    // A field changed in the database: the export no longer verifies, and a
    // prune refuses to delete the evidence (its transaction goes on unharmed).
    c.batch_execute("UPDATE audit_events SET purpose = 'other' WHERE seq = 3")
        .unwrap();
    let (_, report) = export_and_verify(&mut c, &public);
    assert_eq!(
        report.problem.as_ref().map(|b| b.seq),
        Some(3),
        "{report:?}"
    );
    let mut tx = c.transaction().unwrap();
    let refused = prune(&PgLog::new(&mut tx), &key(), now, DEFAULT_RETENTION);
    assert!(
        matches!(refused, Err(AuditError::Tampered { seq: 3, .. })),
        "{refused:?}"
    );
    tx.commit().unwrap();
    let left: i64 = c
        .query_one("SELECT count(*) FROM audit_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 9);

    // Put back: intact again; retention then deletes the six old events with a
    // signed record, and the rest still verifies from the export.
    c.batch_execute("UPDATE audit_events SET purpose = 'refund' WHERE seq = 3")
        .unwrap();
    let (_, report) = export_and_verify(&mut c, &public);
    assert!(report.is_intact(), "{report:?}");
    let mut tx = c.transaction().unwrap();
    let pruned = prune(&PgLog::new(&mut tx), &key(), now, DEFAULT_RETENTION).unwrap();
    tx.commit().unwrap();
    assert_eq!(pruned.deleted, 6);
    assert_eq!(pruned.record.unwrap().first_seq, 7);
    append_committed(&mut c, &mut chain, &event(now, "a", 9));
    let mut tx = c.transaction().unwrap();
    chain.checkpoint(&PgLog::new(&mut tx), &key(), now).unwrap();
    tx.commit().unwrap();
    let (n, report) = export_and_verify(&mut c, &public);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((n, report.first_seq, report.prunes), (4, 7, 1));

    // Two events swapped in the database (reordered): detected; swapped back: intact.
    let swap = "UPDATE audit_events SET seq = -1 WHERE seq = 8;
                UPDATE audit_events SET seq = 8 WHERE seq = 9;
                UPDATE audit_events SET seq = 9 WHERE seq = -1;";
    c.batch_execute(swap).unwrap();
    let (_, report) = export_and_verify(&mut c, &public);
    assert!(!report.is_intact(), "reordered events went unnoticed");
    c.batch_execute(swap).unwrap();
    let (_, report) = export_and_verify(&mut c, &public);
    assert!(report.is_intact(), "{report:?}");

    // An event deleted in the database: detected.
    c.batch_execute("DELETE FROM audit_events WHERE seq = 8")
        .unwrap();
    let (n, report) = export_and_verify(&mut c, &public);
    assert_eq!(n, 3);
    assert!(!report.is_intact(), "a deleted event went unnoticed");
}
