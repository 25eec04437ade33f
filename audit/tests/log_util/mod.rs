//! Shared by the audit-log tests: a vault-like writer over an in-memory database.
// Test helpers: a panic is a test failure, and each test binary uses a subset.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_wrap)]

use panvault_audit::log::{
    Action, Actor, AuditChain, Checkpoint, NewEvent, Outcome, SigningKey, migrate,
};
use rusqlite::Connection;
use time::{Duration, OffsetDateTime};

/// A fixed "now" for reproducible logs (2025-06-01T00:00:00Z).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_748_736_000).unwrap()
}

/// A deterministic signing key.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32]).unwrap()
}

/// A fresh in-memory database with the audit tables.
pub fn fresh_db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate(&conn).unwrap();
    conn
}

/// A realistic event, varied by `i` (some optional fields absent, some outcomes refused).
pub fn sample_event(i: u64, time: OffsetDateTime) -> NewEvent {
    let actor = if i % 7 == 3 {
        Actor::admin("ops")
    } else {
        Actor::client(
            format!("storefront-{}", i % 3),
            format!("{:064x}", i.wrapping_mul(0x9e37)),
        )
    };
    let (action, outcome) = match i % 5 {
        0 => (Action::Tokenize, Outcome::Success),
        1 => (Action::Detokenize, Outcome::Success),
        2 => (Action::Detokenize, Outcome::Denied("forbidden".into())),
        3 => (Action::KeyRotate, Outcome::Success),
        _ => (Action::Delete, Outcome::Error("audit_unavailable".into())),
    };
    let mut ev = NewEvent::new(time, actor, action, outcome)
        .with_tenant(if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        })
        .with_request_id(format!("req-{i:08}"))
        .with_peer(format!("10.0.{}.{}:443", i % 250, i % 199));
    if i % 5 != 3 {
        ev = ev.with_token(format!("tok_{:020}", i.wrapping_mul(7919)));
    }
    if i % 5 == 1 || i % 5 == 2 {
        ev = ev.with_purpose("refund");
    }
    if i.is_multiple_of(11) {
        ev = ev.with_details(format!("{{\"count\":{i}}}"));
    }
    ev
}

/// What [`build_log`] made.
#[derive(Debug)]
pub struct Built {
    pub chain: AuditChain,
    pub checkpoints: Vec<Checkpoint>,
}

/// Appends `n` events, a checkpoint every `every` events and one at the end.
/// Events with index below `old` are dated two years before [`now`].
pub fn build_log(conn: &mut Connection, key: &SigningKey, n: u64, every: u64, old: u64) -> Built {
    let mut chain = AuditChain::load(conn).unwrap();
    let mut checkpoints = Vec::new();
    let tx = conn.transaction().unwrap();
    for i in 0..n {
        let t = if i < old {
            now() - Duration::days(730) + Duration::seconds(i as i64)
        } else {
            now() - Duration::hours(1) + Duration::milliseconds(i as i64)
        };
        chain.append(&tx, &sample_event(i, t)).unwrap();
        if (i + 1) % every == 0 {
            checkpoints.push(chain.checkpoint(&tx, key, t).unwrap());
        }
    }
    if chain.events_since_checkpoint() > 0 || checkpoints.is_empty() {
        checkpoints.push(chain.checkpoint(&tx, key, now()).unwrap());
    }
    tx.commit().unwrap();
    Built { chain, checkpoints }
}
