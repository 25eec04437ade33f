//! Tamper detection: for a generated log, any single change made directly in the
//! database makes `verify` fail and name the place of the change; an untouched log
//! always verifies.
//!
//! The default run is small (64 cases); `cargo test -p panvault-audit --test
//! log_tamper -- --ignored` runs 4,096.
// Test code: a panic is a failure; casts of test-sized numbers.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
mod log_util;

use log_util::*;
use panvault_audit::log::*;
use proptest::prelude::*;
use proptest::sample::Index;
use rusqlite::Connection;
use rusqlite::types::Value;

/// The columns of `audit_events`, in schema order.
const EVENT_COLUMNS: [&str; 15] = [
    "seq",
    "time_ns",
    "actor",
    "actor_fp",
    "action",
    "tenant",
    "token",
    "purpose",
    "outcome",
    "code",
    "request_id",
    "peer",
    "details",
    "prev_hash",
    "hash",
];
const CHECKPOINT_COLUMNS: [&str; 5] = ["id", "seq", "head", "time_ns", "signature"];
const PRUNE_COLUMNS: [&str; 8] = [
    "id",
    "first_seq",
    "prev_hash",
    "checkpoint_id",
    "cutoff_ns",
    "deleted",
    "time_ns",
    "signature",
];

/// The shape of the generated log.
#[derive(Clone, Debug)]
struct Spec {
    /// Events appended.
    n: u64,
    /// A checkpoint every this many events (and one at the end).
    every: u64,
    /// How many of the first events are old enough to prune (prune runs if > 0).
    old: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        2u64..40,
        1u64..9,
        prop_oneof![3 => Just(0u64), 1 => 0u64..30],
    )
        .prop_map(|(n, every, old)| Spec {
            n,
            every,
            old: old.min(n - 1),
        })
}

/// One change made directly in the database.
#[derive(Clone, Debug)]
enum Change {
    AlterEvent {
        row: Index,
        col: usize,
        salt: u64,
    },
    DeleteEvent {
        row: Index,
    },
    InsertEvent {
        place: u8,
        copy: Option<Index>,
        salt: u64,
    },
    SwapEvents {
        a: Index,
        b: Index,
    },
    AlterCheckpoint {
        row: Index,
        col: usize,
        salt: u64,
    },
    DeleteCheckpoint {
        row: Index,
    },
    InsertCheckpoint {
        copy: Option<Index>,
        salt: u64,
    },
    SwapCheckpoints {
        a: Index,
        b: Index,
    },
    AlterPrune {
        col: usize,
        salt: u64,
    },
    DeletePrune,
    Rewrite {
        row: Index,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => (any::<Index>(), 0..EVENT_COLUMNS.len(), any::<u64>())
            .prop_map(|(row, col, salt)| Change::AlterEvent { row, col, salt }),
        2 => any::<Index>().prop_map(|row| Change::DeleteEvent { row }),
        2 => (0u8..4, proptest::option::of(any::<Index>()), any::<u64>())
            .prop_map(|(place, copy, salt)| Change::InsertEvent { place, copy, salt }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Change::SwapEvents { a, b }),
        2 => (any::<Index>(), 0..CHECKPOINT_COLUMNS.len(), any::<u64>())
            .prop_map(|(row, col, salt)| Change::AlterCheckpoint { row, col, salt }),
        1 => any::<Index>().prop_map(|row| Change::DeleteCheckpoint { row }),
        1 => (proptest::option::of(any::<Index>()), any::<u64>())
            .prop_map(|(copy, salt)| Change::InsertCheckpoint { copy, salt }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Change::SwapCheckpoints { a, b }),
        1 => (0..PRUNE_COLUMNS.len(), any::<u64>()).prop_map(|(col, salt)| Change::AlterPrune { col, salt }),
        1 => Just(Change::DeletePrune),
        2 => any::<Index>().prop_map(|row| Change::Rewrite { row }),
    ]
}

/// What verification must report.
#[derive(Debug)]
struct Expect {
    seq: Option<u64>,
    kinds: &'static [BreakKind],
    location: Location,
}

struct Log {
    conn: Connection,
    key: SigningKey,
    /// Kept event seqs, first..=last.
    first: u64,
    last: u64,
    /// (id, seq) of every checkpoint.
    checkpoints: Vec<(u64, u64)>,
    /// The newest checkpoint, as kept off the host.
    anchor: Checkpoint,
    pruned: bool,
}

fn make_log(spec: &Spec) -> Log {
    let mut conn = fresh_db();
    let key = key(42);
    let built = build_log(&mut conn, &key, spec.n, spec.every, spec.old);
    let mut pruned = false;
    if spec.old > 0 {
        pruned = prune(&conn, &key, now(), DEFAULT_RETENTION)
            .unwrap()
            .deleted
            > 0;
    }
    let first: i64 = conn
        .query_row("SELECT COALESCE(MIN(seq), 0) FROM audit_events", [], |r| {
            r.get(0)
        })
        .unwrap();
    let checkpoints = conn
        .prepare("SELECT id, seq FROM audit_checkpoints ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let anchor = built.checkpoints.last().unwrap().clone();
    Log {
        conn,
        key,
        first: first as u64,
        last: spec.n,
        checkpoints,
        anchor,
        pruned,
    }
}

fn exec(conn: &Connection, sql: &str, params: &[Value]) {
    conn.execute(sql, rusqlite::params_from_iter(params.iter()))
        .unwrap();
}

fn get(conn: &Connection, table: &str, col: &str, key_col: &str, key: i64) -> Value {
    conn.query_row(
        &format!("SELECT {col} FROM {table} WHERE {key_col} = ?1"),
        [key],
        |r| r.get(0),
    )
    .unwrap()
}

/// A different value of the same column kind.
fn other_value(old: &Value, col: &str, salt: u64) -> Value {
    match old {
        Value::Integer(i) => Value::Integer(i.wrapping_add(1 + (salt % 1000) as i64)),
        Value::Null => {
            Value::Text(["", "x", "admin:root", "10.0.0.1:1"][(salt % 4) as usize].into())
        }
        Value::Text(t) => match (salt % 4, col) {
            (0, "outcome") => Value::Text(if t == "success" { "denied" } else { "success" }.into()),
            (0, _) => Value::Text(format!("{t}x")),
            (1, "actor" | "action" | "outcome") => Value::Text(String::new()),
            (1, _) => Value::Null,
            (2, _) if !t.is_empty() => {
                // Same length, one byte changed.
                let mut b = t.clone().into_bytes();
                let i = (salt as usize / 4) % b.len();
                b[i] ^= 0x01;
                Value::Text(String::from_utf8(b).unwrap_or_else(|_| format!("{t}y")))
            }
            _ => Value::Text(format!("z{t}")),
        },
        Value::Blob(b) => {
            let mut b = b.clone();
            if salt.is_multiple_of(5) {
                b.pop(); // wrong length
            } else {
                let i = (salt as usize / 5) % b.len();
                b[i] ^= 1 << (salt % 8);
            }
            Value::Blob(b)
        }
        Value::Real(r) => Value::Real(r + 1.0),
    }
}

/// A seq not used by any event: before the start or after the end.
fn free_seq(log: &Log, place: u64, salt: u64) -> i64 {
    let last = log.last as i64;
    match place % 4 {
        0 => 0,
        1 => -1 - (salt % 3) as i64,
        2 if log.first > 1 => 1 + (salt % (log.first - 1)) as i64,
        _ => last + 1 + (salt % 4) as i64,
    }
}

fn apply(log: &Log, change: &Change) -> Option<Expect> {
    let c = &log.conn;
    c.pragma_update(None, "ignore_check_constraints", true)
        .unwrap();
    let seqs: Vec<u64> = (log.first..=log.last).collect();
    let ev = |i: &Index| seqs[i.index(seqs.len())];
    let cp_ids: Vec<u64> = log.checkpoints.iter().map(|c| c.0).collect();
    let at = |seq, kinds| {
        Some(Expect {
            seq: Some(seq),
            kinds,
            location: Location::Event,
        })
    };
    match change {
        Change::AlterEvent { row, col, salt } => {
            let k = ev(row);
            let name = EVENT_COLUMNS[*col];
            let new = if name == "seq" {
                Value::Integer(free_seq(log, *salt, *salt / 4))
            } else {
                other_value(&get(c, "audit_events", name, "seq", k as i64), name, *salt)
            };
            let required = ["actor", "action", "outcome", "time_ns", "prev_hash", "hash"];
            if new == Value::Null && required.contains(&name) {
                return None;
            }
            exec(
                c,
                &format!("UPDATE audit_events SET {name} = ?1 WHERE seq = ?2"),
                &[new, Value::Integer(k as i64)],
            );
            at(k, &[BreakKind::Modified])
        }
        Change::DeleteEvent { row } => {
            let k = ev(row);
            exec(
                c,
                "DELETE FROM audit_events WHERE seq = ?1",
                &[Value::Integer(k as i64)],
            );
            let kind: &[BreakKind] = if k == log.last {
                &[BreakKind::Truncated]
            } else {
                &[BreakKind::Missing]
            };
            at(k, kind)
        }
        Change::InsertEvent { place, copy, salt } => {
            let seq = free_seq(log, u64::from(*place), *salt);
            let src = copy
                .as_ref()
                .map_or(seqs[(*salt as usize) % seqs.len()], ev);
            let cols = EVENT_COLUMNS[1..].join(", ");
            exec(
                c,
                &format!(
                    "INSERT INTO audit_events (seq, {cols}) SELECT ?1, {cols} FROM audit_events \
                     WHERE seq = ?2"
                ),
                &[Value::Integer(seq), Value::Integer(src as i64)],
            );
            if copy.is_none() {
                // Not a copy: new contents and a random-looking hash chain.
                let salt_bytes = salt.to_be_bytes().repeat(4);
                exec(
                    c,
                    "UPDATE audit_events SET purpose = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                    &[
                        Value::Text(format!("forged-{salt}")),
                        Value::Blob(salt_bytes.clone()),
                        Value::Blob(salt_bytes.iter().map(|b| b ^ 0x5a).collect()),
                        Value::Integer(seq),
                    ],
                );
            }
            at(seq.max(0) as u64, &[BreakKind::Inserted])
        }
        Change::SwapEvents { a, b } => {
            let (a, b) = (ev(a), ev(b));
            if a == b {
                return None;
            }
            let (a, b) = (a.min(b), a.max(b));
            // Swap the seq values through a free one: three updates, one swap.
            let tmp = log.last as i64 + 1000;
            exec(
                c,
                "UPDATE audit_events SET seq = ?1 WHERE seq = ?2",
                &[Value::Integer(tmp), Value::Integer(a as i64)],
            );
            exec(
                c,
                "UPDATE audit_events SET seq = ?1 WHERE seq = ?2",
                &[Value::Integer(a as i64), Value::Integer(b as i64)],
            );
            exec(
                c,
                "UPDATE audit_events SET seq = ?1 WHERE seq = ?2",
                &[Value::Integer(b as i64), Value::Integer(tmp)],
            );
            at(a, &[BreakKind::Reordered])
        }
        Change::AlterCheckpoint { row, col, salt } => {
            let id = cp_ids[row.index(cp_ids.len())];
            let name = CHECKPOINT_COLUMNS[*col];
            let new = if name == "id" {
                Value::Integer(*cp_ids.last().unwrap() as i64 + 1 + (*salt % 3) as i64)
            } else {
                other_value(
                    &get(c, "audit_checkpoints", name, "id", id as i64),
                    name,
                    *salt,
                )
            };
            exec(
                c,
                &format!("UPDATE audit_checkpoints SET {name} = ?1 WHERE id = ?2"),
                &[new.clone(), Value::Integer(id as i64)],
            );
            let id = if let (Value::Integer(n), "id") = (&new, name) {
                *n as u64
            } else {
                id
            };
            Some(Expect {
                seq: None,
                kinds: &[BreakKind::BadSignature],
                location: Location::Checkpoint(id),
            })
        }
        Change::DeleteCheckpoint { row } => {
            // Deleting the newest checkpoint cannot be seen without a kept copy
            // (documented); any other is.
            if cp_ids.len() < 2 {
                return None;
            }
            let id = cp_ids[row.index(cp_ids.len() - 1)];
            exec(
                c,
                "DELETE FROM audit_checkpoints WHERE id = ?1",
                &[Value::Integer(id as i64)],
            );
            Some(Expect {
                seq: None,
                kinds: &[BreakKind::Missing],
                location: Location::Checkpoint(id),
            })
        }
        Change::InsertCheckpoint { copy, salt } => {
            let new_id = *cp_ids.last().unwrap() + 1;
            let src = cp_ids[copy.as_ref().map_or(0, |i| i.index(cp_ids.len()))];
            exec(
                c,
                "INSERT INTO audit_checkpoints (id, seq, head, time_ns, signature) \
                 SELECT ?1, seq, head, time_ns, signature FROM audit_checkpoints WHERE id = ?2",
                &[Value::Integer(new_id as i64), Value::Integer(src as i64)],
            );
            if copy.is_none() {
                exec(
                    c,
                    "UPDATE audit_checkpoints SET seq = ?1 WHERE id = ?2",
                    &[
                        Value::Integer(log.last as i64 + (*salt % 5) as i64),
                        Value::Integer(new_id as i64),
                    ],
                );
            }
            Some(Expect {
                seq: None,
                kinds: &[BreakKind::BadSignature],
                location: Location::Checkpoint(new_id),
            })
        }
        Change::SwapCheckpoints { a, b } => {
            let (a, b) = (cp_ids[a.index(cp_ids.len())], cp_ids[b.index(cp_ids.len())]);
            if a == b {
                return None;
            }
            let (a, b) = (a.min(b), a.max(b));
            let tmp = 1_000_000i64;
            for (from, to) in [(a as i64, tmp), (b as i64, a as i64), (tmp, b as i64)] {
                exec(
                    c,
                    "UPDATE audit_checkpoints SET id = ?1 WHERE id = ?2",
                    &[Value::Integer(to), Value::Integer(from)],
                );
            }
            Some(Expect {
                seq: None,
                kinds: &[BreakKind::BadSignature],
                location: Location::Checkpoint(a),
            })
        }
        Change::AlterPrune { col, salt } => {
            if !log.pruned {
                return None;
            }
            let name = PRUNE_COLUMNS[*col];
            let new = other_value(&get(c, "audit_prunes", name, "id", 1), name, *salt);
            exec(
                c,
                &format!("UPDATE audit_prunes SET {name} = ?1 WHERE id = 1"),
                std::slice::from_ref(&new),
            );
            let id = if let (Value::Integer(n), "id") = (&new, name) {
                *n as u64
            } else {
                1
            };
            Some(Expect {
                seq: None,
                kinds: &[BreakKind::BadSignature],
                location: Location::Prune(id),
            })
        }
        Change::DeletePrune => {
            if !log.pruned {
                return None;
            }
            exec(c, "DELETE FROM audit_prunes", &[]);
            // The kept log no longer has a signed reason to start late.
            at(1, &[BreakKind::Missing])
        }
        Change::Rewrite { row } => {
            let k = ev(row);
            rewrite_from(c, log.first, k);
            let (id, seq) = *log.checkpoints.iter().find(|(_, s)| *s >= k).unwrap();
            Some(Expect {
                seq: Some(seq),
                kinds: &[BreakKind::Modified],
                location: Location::Checkpoint(id),
            })
        }
    }
}

/// Changes event `from`'s purpose and recomputes every later hash, as an attacker
/// without the signing key would.
fn rewrite_from(conn: &Connection, first: u64, from: u64) {
    exec(
        conn,
        "UPDATE audit_events SET purpose = 'rewritten' WHERE seq = ?1",
        &[Value::Integer(from as i64)],
    );
    let events = read_events(conn, first, usize::MAX).unwrap();
    let scratch = fresh_db();
    // Re-append into a scratch database positioned at the same seq and head.
    let mut prev = events[0].prev_hash;
    let mut chain = AuditChain::load(&scratch).unwrap();
    for ev in events {
        let hash = recompute(&scratch, &mut chain, ev.seq, prev, &ev.event);
        if ev.seq >= from {
            exec(
                conn,
                "UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                &[
                    Value::Blob(prev.0.to_vec()),
                    Value::Blob(hash.0.to_vec()),
                    Value::Integer(ev.seq as i64),
                ],
            );
        }
        prev = hash;
    }
}

/// The hash an event gets as number `seq` after `prev`, computed by the library
/// itself (a scratch database whose chain is placed at that point).
fn recompute(
    scratch: &Connection,
    chain: &mut AuditChain,
    seq: u64,
    prev: ChainHash,
    ev: &NewEvent,
) -> ChainHash {
    scratch.execute("DELETE FROM audit_events", []).unwrap();
    if seq > 1 {
        scratch
            .execute(
                "INSERT INTO audit_events (seq, time_ns, actor, action, outcome, prev_hash, hash) \
                 VALUES (?1, 0, 'a', 'a', 'success', ?2, ?3)",
                rusqlite::params![seq as i64 - 1, vec![0u8; 32], prev.0.to_vec()],
            )
            .unwrap();
    }
    chain.reload(scratch).unwrap();
    assert_eq!(chain.append(scratch, ev).unwrap(), seq);
    chain.head()
}

fn check(spec: &Spec, change: &Change) -> Result<(), TestCaseError> {
    let log = make_log(spec);
    let public = log.key.public_key();
    // Untouched: intact, with and without the kept checkpoint.
    let r = verify(&log.conn, &public, None).unwrap();
    prop_assert!(r.is_intact(), "untouched log broken: {:?}", r.problem);
    prop_assert!(
        verify(&log.conn, &public, Some(&log.anchor))
            .unwrap()
            .is_intact()
    );
    prop_assert_eq!(r.last_seq, log.last);

    let Some(expect) = apply(&log, change) else {
        return Ok(());
    };
    let r = verify(&log.conn, &public, None).unwrap();
    let Some(b) = r.problem.clone() else {
        return Err(TestCaseError::fail(format!("{change:?} not detected")));
    };
    prop_assert!(
        expect.kinds.contains(&b.kind),
        "{:?}: got {} expected {:?}",
        change,
        b,
        expect
    );
    prop_assert_eq!(b.location, expect.location, "{:?}: {}", change, b);
    if let Some(seq) = expect.seq {
        prop_assert_eq!(b.seq, seq, "{:?}: {}", change, b);
    }
    Ok(())
}

/// Dropping the tail after a kept checkpoint (events and the checkpoints that
/// cover them): invisible without the kept checkpoint, `truncated` at the first
/// dropped seq with it.
fn check_drop_tail(spec: &Spec, keep: &Index) -> Result<(), TestCaseError> {
    let log = make_log(spec);
    let public = log.key.public_key();
    let span = (log.last - log.first + 1) as usize;
    let t = log.first - 1 + keep.index(span) as u64; // keep events first..=t
    log.conn
        .execute("DELETE FROM audit_events WHERE seq > ?1", [t as i64])
        .unwrap();
    log.conn
        .execute("DELETE FROM audit_checkpoints WHERE seq > ?1", [t as i64])
        .unwrap();
    let alone = verify(&log.conn, &public, None).unwrap().problem;
    if log.checkpoints.iter().any(|(_, s)| *s <= t) || t < log.first {
        // A checkpoint is left: the shorter log verifies on its own.
        prop_assert!(alone.is_none(), "{:?}", alone);
    } else {
        // Every checkpoint went with the tail: checkpoint #1 is missing.
        let b = alone.ok_or_else(|| TestCaseError::fail("no checkpoint left, not detected"))?;
        prop_assert_eq!(
            (b.kind, b.location),
            (BreakKind::Missing, Location::Checkpoint(1))
        );
    }
    let b = verify(&log.conn, &public, Some(&log.anchor))
        .unwrap()
        .problem;
    let b = b.ok_or_else(|| TestCaseError::fail("truncation not detected with the anchor"))?;
    prop_assert_eq!(
        (b.seq, b.kind, b.location),
        (t + 1, BreakKind::Truncated, Location::Event)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_single_change_is_detected_and_located(spec in spec(), change in change()) {
        check(&spec, &change)?;
    }

    #[test]
    fn dropping_the_tail_is_caught_by_the_kept_checkpoint(spec in spec(), keep in any::<Index>()) {
        check_drop_tail(&spec, &keep)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    #[ignore]
    fn any_single_change_is_detected_and_located_long(spec in spec(), change in change()) {
        check(&spec, &change)?;
    }

    #[test]
    #[ignore]
    fn dropping_the_tail_is_caught_by_the_kept_checkpoint_long(spec in spec(), keep in any::<Index>()) {
        check_drop_tail(&spec, &keep)?;
    }
}
