//! The audit chain end to end: append, checkpoint, verify, export, prune, anchor.
// Test code: a panic is a failure; small casts of test-sized numbers.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
mod log_util;

use log_util::*;
use panvault_audit::log::*;
use proptest::prelude::*;
use ring::digest;
use rusqlite::Connection;
use time::{Duration, OffsetDateTime};

fn intact(conn: &Connection, key: &SigningKey) -> VerifyReport {
    let r = verify(conn, &key.public_key(), None).unwrap();
    assert_eq!(r.problem, None);
    r
}

#[test]
fn empty_log_verifies() {
    let conn = fresh_db();
    let k = key(1);
    let r = intact(&conn, &k);
    assert_eq!(
        (r.events, r.checkpoints, r.first_seq, r.last_seq),
        (0, 0, 1, 0)
    );

    let mut chain = AuditChain::load(&conn).unwrap();
    let cp = chain.checkpoint(&conn, &k, now()).unwrap();
    assert_eq!((cp.id, cp.seq, cp.head), (1, 0, ChainHash::GENESIS));
    let r = intact(&conn, &k);
    assert_eq!(r.checkpoints, 1);
}

#[test]
fn migrate_is_idempotent() {
    let conn = fresh_db();
    migrate(&conn).unwrap();
    migrate(&conn).unwrap();
    conn.execute(
        "UPDATE audit_meta SET value = 99 WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    assert!(matches!(
        migrate(&conn),
        Err(AuditError::SchemaTooNew { found: 99, .. })
    ));
    assert!(matches!(
        verify(&conn, &key(1).public_key(), None),
        Err(AuditError::SchemaTooNew { .. })
    ));
}

/// The INSERT of an event builds no ephemeral b-tree: a CHECK with `IN (…)` of
/// three constants made SQLite build one on every append (about 40 % of its cost).
#[test]
fn appending_builds_no_ephemeral_table() {
    let conn = fresh_db();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN INSERT INTO audit_events (seq, time_ns, actor, actor_fp, action, tenant, \
             token, purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )
        .unwrap()
        .query_map([rusqlite::types::Null; 15], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan.iter().any(|op| op == "Insert"), "{plan:?}");
    assert!(!plan.iter().any(|op| op == "OpenEphemeral"), "{plan:?}");
}

/// A version 1 log (outcome checked with `IN`) is rebuilt in place: same rows,
/// same chain, still verifies; the old CHECK still refuses a bad outcome.
#[test]
fn version_1_log_is_upgraded_in_place() {
    let v1_sql = SCHEMA_SQL.replace(
        "CHECK (outcome = 'success' OR outcome = 'denied' OR outcome = 'error')",
        "CHECK (outcome IN ('success', 'denied', 'error'))",
    );
    assert_ne!(v1_sql, SCHEMA_SQL);
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(&v1_sql).unwrap();
    conn.execute(
        "INSERT INTO audit_meta (key, value) VALUES ('schema_version', 1)",
        [],
    )
    .unwrap();
    let k = key(4);
    let built = build_log(&mut conn, &k, 250, 100, 0);
    let before = intact(&conn, &k);

    migrate(&conn).unwrap();
    let version: i64 = conn
        .query_row(
            "SELECT value FROM audit_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let ddl: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'audit_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!ddl.contains(" IN ("), "{ddl}");
    let after = intact(&conn, &k);
    assert_eq!(
        (after.events, after.checkpoints, after.last_seq),
        (before.events, before.checkpoints, before.last_seq)
    );
    assert_eq!(AuditChain::load(&conn).unwrap().head(), built.chain.head());
    // The constraint still holds after the rebuild.
    let refused = conn.execute(
        "UPDATE audit_events SET outcome = 'maybe' WHERE seq = 1",
        [],
    );
    assert!(refused.is_err());
    // And a second migrate changes nothing.
    migrate(&conn).unwrap();
    assert_eq!(intact(&conn, &k).events, 250);
}

#[test]
fn a_database_without_audit_tables_is_an_error() {
    let conn = Connection::open_in_memory().unwrap();
    assert!(matches!(
        verify(&conn, &key(1).public_key(), None),
        Err(AuditError::NotAnAuditLog)
    ));
}

#[test]
fn appended_events_verify_and_read_back() {
    let mut conn = fresh_db();
    let k = key(2);
    let built = build_log(&mut conn, &k, 25, 10, 0);
    let r = intact(&conn, &k);
    assert_eq!(
        (r.events, r.first_seq, r.last_seq, r.checkpoints),
        (25, 1, 25, 3)
    );
    assert_eq!(r.head, built.chain.head());
    assert_eq!(r.unsigned_tail, 0);
    assert_eq!(r.last_checkpoint.as_ref(), built.checkpoints.last());

    let events = read_events(&conn, 1, usize::MAX).unwrap();
    assert_eq!(events.len(), 25);
    let mut prev = ChainHash::GENESIS;
    for (i, ev) in events.iter().enumerate() {
        let i = i as u64;
        assert_eq!(ev.seq, i + 1);
        assert_eq!(ev.prev_hash, prev);
        prev = ev.hash;
        let expected = sample_event(i, ev.event.time);
        assert_eq!(ev.event, expected);
    }
    assert_eq!(read_events(&conn, 20, 3).unwrap().len(), 3);
}

/// The documented encoding, built by hand, gives the stored hash; and a frozen
/// vector guards against any change of the format.
#[test]
fn known_answer_event_hash() {
    let conn = fresh_db();
    let mut chain = AuditChain::load(&conn).unwrap();
    let time = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_000_042).unwrap();
    let ev = NewEvent::new(
        time,
        Actor::client("shop", "ab"),
        Action::Detokenize,
        Outcome::Success,
    )
    .with_tenant("acme")
    .with_token("tok_1")
    .with_purpose("refund");
    assert_eq!(chain.append(&conn, &ev).unwrap(), 1);

    let mut enc = vec![1u8];
    enc.extend_from_slice(&1u64.to_be_bytes());
    enc.extend_from_slice(&1_700_000_000_000_000_042i64.to_be_bytes());
    let fields: [Option<&str>; 11] = [
        Some("shop"),
        Some("ab"),
        Some("detokenize"),
        Some("acme"),
        Some("tok_1"),
        Some("refund"),
        Some("success"),
        None,
        None,
        None,
        None,
    ];
    for f in fields {
        match f {
            None => enc.push(0),
            Some(s) => {
                enc.push(1);
                enc.extend_from_slice(&(s.len() as u32).to_be_bytes());
                enc.extend_from_slice(s.as_bytes());
            }
        }
    }
    let mut input = vec![0u8; 32];
    input.extend_from_slice(&enc);
    let by_hand = digest::digest(&digest::SHA256, &input);
    assert_eq!(chain.head().as_bytes().as_slice(), by_hand.as_ref());
    assert_eq!(
        chain.head().to_string(),
        "3dabac3d68893fedca9db59a2adec689f75e6d0ed62bb3ded4486d0791fcb553",
        "the canonical encoding changed: bump ENCODING_VERSION instead"
    );
}

#[test]
fn rollback_then_restore_keeps_the_chain_whole() {
    let mut conn = fresh_db();
    let k = key(3);
    let mut chain = AuditChain::load(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    chain.append(&tx, &sample_event(0, now())).unwrap();
    tx.commit().unwrap();

    let before = chain.snapshot();
    let tx = conn.transaction().unwrap();
    chain.append(&tx, &sample_event(1, now())).unwrap();
    chain.checkpoint(&tx, &k, now()).unwrap();
    assert_eq!(chain.last_seq(), 2);
    tx.rollback().unwrap();
    chain.restore(before);
    assert_eq!(chain.last_seq(), 1);

    let tx = conn.transaction().unwrap();
    assert_eq!(chain.append(&tx, &sample_event(2, now())).unwrap(), 2);
    let cp = chain.checkpoint(&tx, &k, now()).unwrap();
    assert_eq!(cp.id, 1);
    tx.commit().unwrap();
    intact(&conn, &k);
}

#[test]
fn a_second_writer_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let a = Connection::open(&path).unwrap();
    a.pragma_update(None, "journal_mode", "WAL").unwrap();
    migrate(&a).unwrap();
    let b = Connection::open(&path).unwrap();
    let k = key(4);
    let mut server = AuditChain::load(&a).unwrap();
    let mut admin = AuditChain::load(&b).unwrap();
    server.append(&a, &sample_event(0, now())).unwrap();
    // The admin's chain is stale: it reloads and appends after the server's event.
    assert_eq!(admin.append(&b, &sample_event(1, now())).unwrap(), 2);
    admin.checkpoint(&b, &k, now()).unwrap();
    // And the server's in turn.
    assert_eq!(server.append(&a, &sample_event(2, now())).unwrap(), 3);
    assert_eq!(server.checkpoint(&a, &k, now()).unwrap().id, 2);
    intact(&a, &k);
}

#[test]
fn checkpoint_policy() {
    let conn = fresh_db();
    let k = key(5);
    let policy = CheckpointPolicy {
        every_events: 3,
        every: std::time::Duration::from_secs(60),
    };
    let mut chain = AuditChain::load(&conn).unwrap();
    assert!(!chain.checkpoint_due(&policy, now()), "nothing to sign");
    chain.append(&conn, &sample_event(0, now())).unwrap();
    assert!(chain.checkpoint_due(&policy, now()), "never signed yet");
    chain.checkpoint(&conn, &k, now()).unwrap();
    assert_eq!(chain.events_since_checkpoint(), 0);
    chain.append(&conn, &sample_event(1, now())).unwrap();
    assert!(!chain.checkpoint_due(&policy, now() + Duration::seconds(59)));
    assert!(chain.checkpoint_due(&policy, now() + Duration::seconds(60)));
    chain.append(&conn, &sample_event(2, now())).unwrap();
    chain.append(&conn, &sample_event(3, now())).unwrap();
    assert!(chain.checkpoint_due(&policy, now()));
    // Loading again gives the same state.
    let again = AuditChain::load(&conn).unwrap();
    assert_eq!(again.snapshot(), chain.snapshot());
}

#[test]
fn invalid_events_are_refused_and_nothing_is_written() {
    let conn = fresh_db();
    let mut chain = AuditChain::load(&conn).unwrap();
    let ev = sample_event(0, now()).with_purpose("x".repeat(MAX_FIELD_LEN + 1));
    assert!(matches!(
        chain.append(&conn, &ev),
        Err(AuditError::InvalidEvent {
            field: "purpose",
            ..
        })
    ));
    assert_eq!(chain.last_seq(), 0);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

/// An attacker who edits an event and recomputes every later hash is caught by the
/// first signed checkpoint after the edit.
#[test]
fn rewriting_history_is_caught_by_the_next_checkpoint() {
    let mut conn = fresh_db();
    let k = key(6);
    build_log(&mut conn, &k, 30, 10, 0);
    rewrite_from(&conn, 14);
    let r = verify(&conn, &k.public_key(), None).unwrap();
    let b = r.problem.unwrap();
    assert_eq!(
        (b.seq, b.kind, b.location),
        (20, BreakKind::Modified, Location::Checkpoint(2))
    );
    assert!(b.detail.contains("11..=20"), "{}", b.detail);
    assert_eq!(
        r.events, 20,
        "the chain itself is consistent up to the checkpoint"
    );
}

/// Re-signing the checkpoints with another key does not help without replacing
/// the verifier's public key.
#[test]
fn re_signed_checkpoints_fail_with_the_real_key() {
    let mut conn = fresh_db();
    let k = key(7);
    build_log(&mut conn, &k, 12, 5, 0);
    rewrite_from(&conn, 3);
    let forger = key(8);
    // The forger drops the real checkpoints and signs the rewritten head with their key.
    conn.execute("DELETE FROM audit_checkpoints", []).unwrap();
    let mut chain = AuditChain::load(&conn).unwrap();
    chain.checkpoint(&conn, &forger, now()).unwrap();
    assert!(
        verify(&conn, &forger.public_key(), None)
            .unwrap()
            .is_intact()
    );
    let b = verify(&conn, &k.public_key(), None)
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::BadSignature, Location::Checkpoint(1))
    );
}

/// Without a checkpoint kept elsewhere, dropping the tail together with its
/// checkpoints cannot be seen; with it, it can.
#[test]
fn truncation_needs_the_kept_checkpoint() {
    let mut conn = fresh_db();
    let k = key(9);
    let built = build_log(&mut conn, &k, 30, 10, 0);
    let kept = built.checkpoints.last().unwrap().clone();
    let kept: Checkpoint = kept.to_string().parse().unwrap();
    conn.execute("DELETE FROM audit_events WHERE seq > 17", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE seq > 17", [])
        .unwrap();
    assert!(
        verify(&conn, &k.public_key(), None).unwrap().is_intact(),
        "documented limitation"
    );
    let b = verify(&conn, &k.public_key(), Some(&kept))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (b.seq, b.kind, b.location),
        (18, BreakKind::Truncated, Location::Event)
    );

    // An anchor from another key is refused.
    let other = fresh_db();
    let foreign = AuditChain::load(&other)
        .unwrap()
        .checkpoint(&other, &key(10), now())
        .unwrap();
    let b = verify(&conn, &k.public_key(), Some(&foreign))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::BadSignature, Location::Anchor)
    );
}

#[test]
fn an_anchor_older_than_the_head_verifies() {
    let mut conn = fresh_db();
    let k = key(11);
    let built = build_log(&mut conn, &k, 30, 10, 0);
    for cp in &built.checkpoints {
        assert!(
            verify(&conn, &k.public_key(), Some(cp))
                .unwrap()
                .is_intact()
        );
    }
    // Events intact but the newest checkpoint rows removed: caught with the anchor.
    let last = built.checkpoints.last().unwrap();
    conn.execute(
        "DELETE FROM audit_checkpoints WHERE id = ?1",
        [last.id as i64],
    )
    .unwrap();
    let b = verify(&conn, &k.public_key(), Some(last))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::Missing, Location::Checkpoint(last.id))
    );
}

/// A database restored from a backup and written on afterwards signs a different
/// checkpoint under the same number: a rollback.
#[test]
fn rollback_is_caught_by_the_kept_checkpoint() {
    let k = key(12);
    let mut original = fresh_db();
    let built = build_log(&mut original, &k, 20, 5, 0);
    let kept = built.checkpoints.last().unwrap();

    let mut restored = fresh_db();
    let mut chain = AuditChain::load(&restored).unwrap();
    let tx = restored.transaction().unwrap();
    for i in 0..20 {
        let ev = if i < 10 {
            sample_event(i, now())
        } else {
            sample_event(i + 100, now())
        };
        chain.append(&tx, &ev).unwrap();
        if (i + 1) % 5 == 0 {
            chain.checkpoint(&tx, &k, now()).unwrap();
        }
    }
    tx.commit().unwrap();
    assert!(
        verify(&restored, &k.public_key(), None)
            .unwrap()
            .is_intact()
    );
    let b = verify(&restored, &k.public_key(), Some(kept))
        .unwrap()
        .problem
        .unwrap();
    assert_eq!(
        (b.kind, b.location),
        (BreakKind::Truncated, Location::Anchor)
    );
    assert!(b.detail.contains("rolled back"), "{}", b.detail);
}

#[test]
fn prune_keeps_young_events_and_leaves_a_signed_record() {
    let mut conn = fresh_db();
    let k = key(13);
    build_log(&mut conn, &k, 40, 7, 25);
    assert!(matches!(
        prune(&conn, &k, now(), Duration::days(30)),
        Err(AuditError::RetentionTooShort { days: 30, .. })
    ));
    let report = prune(&conn, &k, now(), DEFAULT_RETENTION).unwrap();
    // Events 1..=25 are old; the newest checkpoint within them is at seq 21.
    assert_eq!(report.deleted, 21);
    let rec = report.record.unwrap();
    assert_eq!((rec.id, rec.first_seq, rec.checkpoint_id), (1, 22, 3));
    rec.verify(&k.public_key()).unwrap();
    let r = intact(&conn, &k);
    assert_eq!(
        (r.first_seq, r.last_seq, r.events, r.prunes),
        (22, 40, 19, 1)
    );
    let oldest_kept: i64 = conn
        .query_row("SELECT MIN(seq) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(oldest_kept, 22);

    // Nothing more is old enough and checkpointed.
    let again = prune(&conn, &k, now(), DEFAULT_RETENTION).unwrap();
    assert_eq!(again.deleted, 0);
    // A year later everything is old: the kept log can be emptied, and a new chain continues.
    let later = now() + Duration::days(400);
    let r2 = prune(&conn, &k, later, DEFAULT_RETENTION).unwrap();
    assert_eq!((r2.deleted, r2.record.as_ref().unwrap().id), (19, 2));
    intact(&conn, &k);
    let mut chain = AuditChain::load(&conn).unwrap();
    assert_eq!(chain.append(&conn, &sample_event(0, later)).unwrap(), 41);
    chain.checkpoint(&conn, &k, later).unwrap();
    let r = intact(&conn, &k);
    assert_eq!((r.first_seq, r.last_seq), (41, 41));
}

#[test]
fn prune_refuses_to_destroy_evidence() {
    let mut conn = fresh_db();
    let k = key(14);
    build_log(&mut conn, &k, 20, 5, 15);
    conn.execute(
        "UPDATE audit_events SET purpose = 'other' WHERE seq = 3",
        [],
    )
    .unwrap();
    let err = prune(&conn, &k, now(), DEFAULT_RETENTION).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Tampered {
                seq: 3,
                kind: BreakKind::Modified
            }
        ),
        "{err:?}"
    );
    let n: i64 = conn
        .query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
}

#[test]
fn export_jsonl_writes_one_object_per_event() {
    let mut conn = fresh_db();
    let k = key(15);
    build_log(&mut conn, &k, 12, 5, 0);
    let mut out = Vec::new();
    assert_eq!(export_jsonl(&conn, 5, &mut out).unwrap(), 8);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // header, 3 checkpoints (5, 10, 12), 8 events
    assert_eq!(lines.len(), 1 + 3 + 8);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], EXPORT_FORMAT);
    assert_eq!(lines[0]["from_seq"], 5);
    assert_eq!(lines[1]["type"], "checkpoint");
    assert_eq!(lines[1]["seq"], 5);
    let events = &lines[4..];
    assert!(events.iter().all(|e| e["type"] == "event"));
    assert_eq!(events[0]["seq"], 5);
    assert_eq!(events[1]["prev_hash"], events[0]["hash"]);
    assert_eq!(lines[1]["head"], events[0]["hash"]);
    let t = events[0]["time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    assert_eq!(events[0]["outcome"], "error");
    assert_eq!(events[0]["code"], "audit_unavailable");
    assert!(events[0]["purpose"].is_null());
}

fn export_text(conn: &Connection) -> String {
    let mut out = Vec::new();
    export_jsonl(conn, 1, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn verify_text(
    text: &str,
    k: &SigningKey,
    anchors: &[Checkpoint],
) -> Result<VerifyReport, AuditError> {
    verify_export(text.as_bytes(), &k.public_key(), anchors)
}

#[test]
fn an_export_verifies_alone_and_names_the_break() {
    let mut conn = fresh_db();
    let k = key(17);
    let built = build_log(&mut conn, &k, 30, 10, 0);
    let partial;
    // A genuine export: the same report as the vault's own.
    let text = export_text(&conn);
    let report = verify_text(&text, &k, &built.checkpoints).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report, verify_against(&conn, &k.public_key(), &[]).unwrap());
    // With the wrong key, every signature fails.
    let other = key(18);
    assert_eq!(
        verify_text(&text, &other, &[])
            .unwrap()
            .problem
            .unwrap()
            .kind,
        BreakKind::BadSignature
    );

    // An attacker rewrites event 12 and recomputes the chain after it: the
    // export carries checkpoint #2 (seq 20), whose signed head no longer matches.
    let rewritten = {
        let mut out = Vec::new();
        export_jsonl(&conn, 5, &mut out).unwrap();
        partial = out;
        rewrite_from(&conn, 12);
        export_text(&conn)
    };
    let b = verify_text(&rewritten, &k, &[]).unwrap().problem.unwrap();
    assert_eq!((b.seq, b.kind), (20, BreakKind::Modified), "{b}");

    // A checkpoint line removed from the middle: a gap in the ids.
    let lines: Vec<&str> = text.lines().collect();
    let cp2 = lines
        .iter()
        .position(|l| l.contains("\"type\":\"checkpoint\",\"id\":2,"))
        .unwrap();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cp2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let b = verify_text(&without, &k, &[]).unwrap().problem.unwrap();
    assert_eq!(b.kind, BreakKind::Missing, "{b}");

    // The tail cut off together with the checkpoints that covered it: only a
    // checkpoint kept elsewhere shows it.
    let last_cp = lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"checkpoint\""))
        .unwrap();
    let truncated: String = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            *i != last_cp
                && !(l.contains("\"type\":\"event\"")
                    && serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                        > 20)
        })
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert!(verify_text(&truncated, &k, &[]).unwrap().is_intact());
    let kept = built.checkpoints.last().unwrap();
    assert!(
        verify_text(&truncated, &k, std::slice::from_ref(kept))
            .unwrap()
            .problem
            .is_some()
    );

    // Not an export, or lines out of order: refused with the line.
    let swapped: String = {
        let mut l = lines.clone();
        let n = l.len();
        l.swap(n - 1, n - 2);
        l.iter().map(|l| format!("{l}\n")).collect()
    };
    let e = verify_text(&swapped, &k, &[]).unwrap_err();
    assert!(matches!(e, AuditError::BadExport { .. }), "{e}");
    assert!(matches!(
        verify_text("{}\n", &k, &[]),
        Err(AuditError::BadExport { line: 1, .. })
    ));
    assert!(matches!(
        verify_text("", &k, &[]),
        Err(AuditError::BadExport { .. })
    ));
    let missing_key = text.replacen(",\"purpose\":null", "", 1);
    assert!(matches!(
        verify_text(&missing_key, &k, &[]),
        Err(AuditError::BadExport { .. })
    ));
    // A partial export cannot stand alone.
    assert!(matches!(
        verify_export(partial.as_slice(), &k.public_key(), &[]),
        Err(AuditError::BadExport { line: 1, .. })
    ));
}

#[test]
fn read_only_open_of_a_wal_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let k = key(16);
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        migrate(&conn).unwrap();
        build_log(&mut conn, &k, 10, 5, 0);
    }
    let ro = open_read_only(&path).unwrap();
    assert_eq!(verify(&ro, &k.public_key(), None).unwrap().events, 10);
    assert!(ro.execute("DELETE FROM audit_events", []).is_err());
    // While a writer has it open too.
    let mut w = Connection::open(&path).unwrap();
    let mut chain = AuditChain::load(&w).unwrap();
    let tx = w.transaction().unwrap();
    chain.append(&tx, &sample_event(10, now())).unwrap();
    tx.commit().unwrap();
    assert_eq!(verify(&ro, &k.public_key(), None).unwrap().events, 11);
    assert!(open_read_only(&dir.path().join("missing.db")).is_err());
}

/// Recomputes, as an attacker would, every hash from event `from` on after
/// changing its purpose.
pub fn rewrite_from(conn: &Connection, from: i64) {
    conn.execute(
        "UPDATE audit_events SET purpose = 'rewritten' WHERE seq = ?1",
        [from],
    )
    .unwrap();
    let rows: Vec<Event> = read_events(conn, 1, usize::MAX).unwrap();
    let mut prev = ChainHash::GENESIS;
    let mut chain = AuditChain::load(&fresh_db()).unwrap();
    let scratch = fresh_db();
    for ev in rows {
        // Re-append into a scratch database to get the recomputed hash for this seq.
        let seq = chain.append(&scratch, &ev.event).unwrap();
        assert_eq!(seq, ev.seq);
        let hash = chain.head();
        if ev.seq as i64 >= from {
            conn.execute(
                "UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![&prev.0[..], &hash.0[..], ev.seq as i64],
            )
            .unwrap();
        }
        prev = hash;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any event the API accepts is stored, read back and verified exactly.
    #[test]
    fn arbitrary_events_round_trip(
        fields in proptest::collection::vec(
            (any::<String>(), proptest::option::of(any::<String>()), proptest::option::of(".{0,40}"),
             any::<i64>(), 0u8..3),
            1..12,
        )
    ) {
        let conn = fresh_db();
        let k = key(17);
        let mut chain = AuditChain::load(&conn).unwrap();
        let mut written = Vec::new();
        for (actor, tenant, details, t, outcome) in fields {
            let actor = if actor.is_empty() { "x".to_owned() } else { actor };
            let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t)).unwrap();
            let outcome = match outcome {
                0 => Outcome::Success,
                1 => Outcome::Denied("forbidden".into()),
                _ => Outcome::Error("internal".into()),
            };
            let mut ev = NewEvent::new(time, Actor { name: actor, fingerprint: None }, Action::Erase, outcome);
            ev.tenant = tenant;
            ev.details = details;
            chain.append(&conn, &ev).unwrap();
            written.push(ev);
        }
        chain.checkpoint(&conn, &k, now()).unwrap();
        prop_assert!(verify(&conn, &k.public_key(), None).unwrap().is_intact());
        let back: Vec<NewEvent> =
            read_events(&conn, 1, usize::MAX).unwrap().into_iter().map(|e| e.event).collect();
        let written: Vec<NewEvent> = written
            .into_iter()
            .map(|mut e| { e.time = e.time.to_offset(time::UtcOffset::UTC); e })
            .collect();
        prop_assert_eq!(back, written);
    }
}

/// CPU seconds used so far by this process and by this thread (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<(f64, f64)> {
    let read = |file: &str| -> Option<f64> {
        let stat = std::fs::read_to_string(file).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    };
    Some((read("/proc/self/stat")?, read("/proc/thread-self/stat")?))
}

/// Verification throughput on 1,000,000 events (run with `--release`):
/// `cargo test --release -p panvault-audit --test log_chain -- --ignored --nocapture throughput`
///
/// Prints the wall-clock rate and the CPU time of the reading thread, which bounds
/// the rate on an idle two-core machine.
#[test]
#[ignore]
fn verify_throughput_1m() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let mut conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    migrate(&conn).unwrap();
    let k = key(18);
    let n = 1_000_000u64;
    let t0 = std::time::Instant::now();
    build_log(&mut conn, &k, n, 1000, 0);
    let built = t0.elapsed();
    drop(conn);
    let ro = open_read_only(&path).unwrap();
    // Warm the page cache once, then measure.
    let _ = verify(&ro, &k.public_key(), None).unwrap();
    let mut best = f64::MAX;
    let mut best_cpu = None;
    for _ in 0..3 {
        let c0 = cpu_seconds();
        let t = std::time::Instant::now();
        let r = verify(&ro, &k.public_key(), None).unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(r.is_intact());
        assert_eq!(r.events, n);
        if s < best {
            best = s;
            best_cpu = c0
                .zip(cpu_seconds())
                .map(|((p0, t0), (p1, t1))| (p1 - p0, t1 - t0));
        }
    }
    println!(
        "appended {n} events in {:.2} s ({:.0} events/s, one transaction)",
        built.as_secs_f64(),
        n as f64 / built.as_secs_f64()
    );
    println!(
        "verified {n} events in {best:.3} s: {:.0} events/s",
        n as f64 / best
    );
    if let Some((process, reader)) = best_cpu {
        println!(
            "CPU: {process:.2} s in all, {reader:.2} s in the reading thread \
             ({:.0} events per reading-thread CPU second)",
            n as f64 / reader
        );
    }
}

#[test]
fn an_export_verified_through_a_seq_ignores_what_follows() {
    // What a prune on another engine checks: only the events it would delete.
    let mut conn = fresh_db();
    let k = key(19);
    build_log(&mut conn, &k, 30, 10, 0);
    conn.execute(
        "UPDATE audit_events SET purpose = 'other' WHERE seq = 25",
        [],
    )
    .unwrap();
    let text = export_text(&conn);
    let through = |seq| verify_export_through(text.as_bytes(), &k.public_key(), seq).unwrap();
    assert!(through(20).is_intact(), "{:?}", through(20).problem);
    assert_eq!(through(20).last_seq, 20);
    assert_eq!(through(25).problem.unwrap().seq, 25);
    assert!(!verify_text(&text, &k, &[]).unwrap().is_intact());
}
