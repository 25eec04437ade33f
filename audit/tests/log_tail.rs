//! The end of the log: checkpoint #1 is required, the unsigned tail is reported
//! with its age, and a file of many kept checkpoints (a witness file) pins the
//! log to the newest of them.
// Test code: a panic is a failure; small casts of test-sized numbers.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_wrap
)]
mod log_util;

use log_util::*;
use panvault_audit::log::*;
use rusqlite::Connection;

fn problem(conn: &Connection, key: &SigningKey, anchors: &[Checkpoint]) -> Option<Break> {
    verify_against(conn, &key.public_key(), anchors)
        .unwrap()
        .problem
}

/// A log without any checkpoint but with events: every checkpoint was deleted.
#[test]
fn events_without_any_checkpoint_are_refused() {
    let mut conn = fresh_db();
    let k = key(21);
    build_log(&mut conn, &k, 12, 4, 0);
    conn.execute("DELETE FROM audit_checkpoints", []).unwrap();
    let b = problem(&conn, &k, &[]).expect("a log without checkpoints verified");
    assert_eq!(
        (b.seq, b.kind, b.location),
        (1, BreakKind::Missing, Location::Checkpoint(1))
    );
    // Deleting checkpoint #1 alone is a gap in the numbering.
    let mut conn = fresh_db();
    build_log(&mut conn, &k, 12, 4, 0);
    conn.execute("DELETE FROM audit_checkpoints WHERE id = 1", [])
        .unwrap();
    let b = problem(&conn, &k, &[]).unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::Missing, Location::Checkpoint(1))
    );
    // An empty log needs none.
    assert!(problem(&fresh_db(), &k, &[]).is_none());
}

#[test]
fn the_unsigned_tail_is_reported_with_its_age() {
    let mut conn = fresh_db();
    let k = key(22);
    let mut built = build_log(&mut conn, &k, 10, 5, 0);
    let r = verify(&conn, &k.public_key(), None).unwrap();
    assert_eq!((r.unsigned_tail, r.unsigned_since), (0, None));
    let t = now() - time::Duration::minutes(30);
    for i in 0..3 {
        built
            .chain
            .append(
                &conn,
                &sample_event(100 + i, t + time::Duration::seconds(i as i64)),
            )
            .unwrap();
    }
    let r = verify(&conn, &k.public_key(), None).unwrap();
    assert!(r.is_intact());
    assert_eq!((r.unsigned_tail, r.unsigned_since), (3, Some(t)));
}

/// The attacks of the issue, on a log whose first checkpoint is old: drop every
/// event after checkpoint #1 (with the later checkpoints), or drop some events in
/// the middle and rehash the rest. With only checkpoint #1 kept, both verify;
/// with a witness file of every checkpoint, both are caught at the newest.
#[test]
fn a_witness_file_pins_the_log_to_its_newest_checkpoint() {
    let k = key(23);
    let fresh = || {
        let mut conn = fresh_db();
        let built = build_log(&mut conn, &k, 40, 10, 0);
        (conn, built.checkpoints)
    };
    let (_, cps) = fresh();
    assert_eq!(cps.len(), 4);
    let witness: String = cps.iter().map(|c| c.to_json().unwrap() + "\n").collect();
    let witness = Checkpoint::parse_many(&witness).unwrap();
    let first = std::slice::from_ref(&cps[0]);

    // Untouched: consistent with every kept checkpoint.
    let (conn, _) = fresh();
    assert!(problem(&conn, &k, &witness).is_none());

    // Truncated to checkpoint #1.
    let (conn, _) = fresh();
    conn.execute("DELETE FROM audit_events WHERE seq > 10", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE id > 1", [])
        .unwrap();
    assert!(
        problem(&conn, &k, first).is_none(),
        "the old anchor alone cannot see it"
    );
    let b = problem(&conn, &k, &witness).expect("truncation to checkpoint #1 verified");
    assert_eq!((b.seq, b.kind), (11, BreakKind::Truncated));

    // Events 15 and 25 deleted and the rest rehashed (the checkpoints after #1 go too).
    let (conn, _) = fresh();
    let events = read_events(&conn, 1, usize::MAX).unwrap();
    conn.execute("DELETE FROM audit_events WHERE seq > 10", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE id > 1", [])
        .unwrap();
    let mut chain = AuditChain::load(&conn).unwrap();
    for ev in events
        .iter()
        .filter(|e| e.seq > 10 && e.seq != 15 && e.seq != 25)
    {
        chain.append(&conn, &ev.event).unwrap();
    }
    assert!(
        problem(&conn, &k, first).is_none(),
        "the old anchor alone cannot see it"
    );
    let b = problem(&conn, &k, &witness).expect("a rehashed log verified");
    assert_eq!(b.kind, BreakKind::Truncated);
    assert_eq!(b.location, Location::Anchor);

    // Two different checkpoints with one id: the log was rolled back and re-signed.
    let (conn, _) = fresh();
    let mut forked = witness.clone();
    // A checkpoint the key really signed under the same id, for another log.
    let twin = {
        let db = fresh_db();
        let mut c = AuditChain::load(&db).unwrap();
        for i in 0..cps[3].id {
            c.checkpoint(&db, &k, now() + time::Duration::seconds(i as i64))
                .unwrap();
        }
        latest_checkpoint(&db).unwrap().unwrap()
    };
    assert_eq!(twin.id, cps[3].id);
    forked.push(twin);
    let b = problem(&conn, &k, &forked).unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::Truncated, Location::Anchor)
    );
}
