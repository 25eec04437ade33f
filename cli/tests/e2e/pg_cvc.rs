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
use serde_json::{Value, json};

use crate::util::postgres::PgServer;
use crate::util::provider::{FakeProvider, Mode};
use crate::util::{self, BinVault, Client, ServeProcess, cards};

use crate::pg_ops::{Both, NOW, both, same};

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

/// `panvault serve` for `v` as node `name` of the shared audit log.
async fn node(v: &BinVault, name: &str) -> ServeProcess {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(v.serve_args()).env("PANVAULT_NODE", name);
    ServeProcess::spawn(cmd).await.unwrap()
}

/// A vault in PostgreSQL whose `storefront` may relay to an echoing provider,
/// holding codes for `ttl` seconds.
pub(crate) fn relay_config(v: &BinVault, echo: &FakeProvider, ttl: u64, first: bool) {
    let mut text = std::fs::read_to_string(&v.config).unwrap();
    if first {
        echo.write_ca(&v.root.join("echo-ca.pem"));
        text = text.replace(
            "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [",
            "name = \"storefront\"\ntenant = \"demo-shop\"\npermissions = [\"relay\", ",
        );
        text.push_str(&format!(
            "[relay]\ncvc_ttl_secs = {ttl}\n[[relay.destinations]]\nname = \"echo\"\nurl = \"{}\"\nca_file = \"echo-ca.pem\"\nclients = [\"storefront\"]\n",
            echo.url("/echo")
        ));
    } else {
        text = text.replace("cvc_ttl_secs = 900\n", &format!("cvc_ttl_secs = {ttl}\n"));
    }
    std::fs::write(&v.config, text).unwrap();
}

/// Tokenizes `number` with security code `cvc` on `c`: the answer's JSON.
async fn tokenize_with_cvc(c: &Client, number: &str, cvc: &str, key: Option<&str>) -> Value {
    let mut req = util::card_request(number);
    req["card"]["cvc"] = json!(cvc);
    let extra: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let r = c
        .request_with_headers(
            "POST",
            "/v1/tokens",
            Some(req.to_string().as_bytes()),
            Some("application/json"),
            &extra,
        )
        .await
        .unwrap();
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    assert!(!r.text().contains(cvc), "the code came back");
    r.json()
}

/// A relay of the number and the held code to the echoing provider, with the
/// vault's `Idempotency-Key` when `key` is given.
pub(crate) async fn relay_cvc(c: &Client, token: &str, key: Option<&str>) -> crate::util::Resp {
    let body = json!({
        "token": token,
        "purpose": "charge order 1234",
        "headers": {"content-type": "application/json"},
        "body": r#"{"amount":1999,"card":{"number":"{{card.number}}","cvc":"{{card.cvc}}"}}"#,
    });
    let extra: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    c.request_with_headers(
        "POST",
        "/v1/relay/echo",
        Some(body.to_string().as_bytes()),
        Some("application/json"),
        &extra,
    )
    .await
    .unwrap()
}

async fn cvc_status(c: &Client, token: &str) -> Value {
    let m = c.get(&format!("/v1/tokens/{token}")).await;
    assert_eq!(m.status, 200, "{}", m.text());
    m.json()["cvc"].clone()
}

/// `SELECT count(*)` of `table`, on a connection of its own (the driver blocks:
/// outside the async workers).
fn count(url: &str, table: &str) -> i64 {
    tokio::task::block_in_place(|| {
        let mut p = pg::connect(&PgSettings::from_url(url).unwrap()).unwrap();
        p.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    })
}

/// The compliance result about held codes (its evidence names them).
async fn cvc_check(v: &BinVault) -> Value {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(["audit", "run", "--format", "json", "--config"])
        .arg(&v.config);
    let out = util::run_command(cmd, Duration::from_secs(120)).await;
    assert!(
        matches!(out.status.code(), Some(0 | 100 | 101)),
        "audit run: {}\n{}",
        out.status,
        out.stderr
    );
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "data.cvc_not_retained")
        .cloned()
        .unwrap_or_else(|| panic!("no check of held codes: {}", out.stdout))
}

/// Two nodes on one database: a code held when node A tokenizes is relayed by
/// node B (the provider gets it), then it is gone for both nodes (409
/// `cvc_unavailable`); a relay retried with the same `Idempotency-Key` on the
/// other node gets the first answer and the provider sees one request; a
/// tokenize retried on the other node gets the first answer; the compliance
/// check measures the held code on PostgreSQL. With a 2 s lifetime, an unused
/// code expires for both nodes and the sweep destroys it and its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cvc_two_nodes_use_a_held_code_once_and_replay_idempotent_retries() {
    let Some(pg) =
        PgServer::start("pg_cvc_two_nodes_use_a_held_code_once_and_replay_idempotent_retries")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let echo = FakeProvider::start(Mode::Echo).await;
        relay_config(&v, &echo, 900, true);
        let url = pg.url("disable");
        let p = url.as_str();
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );

        // Held on A; both nodes say so.
        let number = cards::AMEX.to_owned();
        let t = tokenize_with_cvc(&sf_a, &number, "7391", None).await;
        assert_eq!(t["cvc"]["held"], true, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        assert_eq!(cvc_status(&sf_b, &token).await, t["cvc"]);
        assert_eq!(cvc_status(&sf_a, &token).await, t["cvc"]);
        assert_eq!(count(p, "held_cvcs"), 1);

        // The compliance check measures it in PostgreSQL (not an error).
        let check = cvc_check(&v).await;
        assert_eq!(check["status"], "pass", "{check}");
        assert!(
            check
                .to_string()
                .contains("1 security code held under 1 window key"),
            "{check}"
        );

        // Relayed by B: the provider gets the number and the code.
        let first = relay_cvc(&sf_b, &token, None).await;
        assert_eq!(first.status, 200, "{}", first.text());
        assert!(!first.text().contains("7391"), "the answer holds the code");
        let got = echo.received();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].json()["card"]["cvc"] == "7391" && got[0].json()["card"]["number"] == number,
            "the provider did not get the card and its code"
        );
        // Used once, for both nodes.
        for sf in [&sf_a, &sf_b] {
            relay_cvc(sf, &token, None)
                .await
                .assert_problem(409, "cvc_unavailable");
            assert_eq!(cvc_status(sf, &token).await, json!({"held": false}));
        }
        assert_eq!(echo.received().len(), 1);
        assert_eq!(count(p, "held_cvcs"), 0);

        // A tokenize retried on the other node: the first answer.
        let card = cards::fresh();
        let t1 = tokenize_with_cvc(&sf_a, &card, "123", Some("order-77")).await;
        let t2 = tokenize_with_cvc(&sf_b, &card, "123", Some("order-77")).await;
        assert_eq!(t1, t2, "the retry on the other node got another answer");
        let token2 = t1["token"].as_str().unwrap().to_owned();

        // A relay retried on the other node: the first answer, one provider call.
        let r1 = relay_cvc(&sf_a, &token2, Some("charge-77")).await;
        assert_eq!(r1.status, 200, "{}", r1.text());
        assert_eq!(echo.received().len(), 2);
        let r2 = relay_cvc(&sf_b, &token2, Some("charge-77")).await;
        assert_eq!(r2.status, 200, "{}", r2.text());
        assert_eq!(r2.body, r1.body, "the retry got another answer");
        assert_eq!(r2.headers["idempotent-replayed"], "true");
        assert_eq!(echo.received().len(), 2, "the retry called the provider");
        assert!(count(p, "idempotency") >= 2);
        assert!(a.terminate().await.success());
        assert!(b.terminate().await.success());

        // A 2 s lifetime: an unused code expires for both nodes; the sweep
        // deletes it and destroys its key (the 900 s window's key of the first
        // run is not due yet). Bounded: fails after 30 s.
        relay_config(&v, &echo, 2, false);
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let t = tokenize_with_cvc(&sf_a, &cards::fresh(), "456", None).await;
        assert_eq!(t["cvc"]["held"], true, "{t}");
        let token3 = t["token"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (sa, sb) = (
                cvc_status(&sf_a, &token3).await,
                cvc_status(&sf_b, &token3).await,
            );
            let (codes, keys) = (
                count(p, "held_cvcs"),
                count(p, "cvc_keys WHERE ttl_secs = 2"),
            );
            if sa == json!({"held": false}) && sb == json!({"held": false}) && codes + keys == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after 30 s: A {sa}, B {sb}, {codes} codes, {keys} keys"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for sf in [&sf_a, &sf_b] {
            relay_cvc(sf, &token3, None)
                .await
                .assert_problem(409, "cvc_unavailable");
        }
        assert_eq!(echo.received().len(), 2);
        assert!(a.terminate().await.success());
        assert!(b.terminate().await.success());
        let out = v
            .run(&["audit", "verify"], false, Duration::from_secs(60))
            .await;
        assert!(
            out.success(),
            "audit verify: {}\n{}",
            out.stdout,
            out.stderr
        );
    })
    .await;
}

/// Waits (bounded) until a backend of the server waits on a lock: the other
/// transaction's statement is really blocked behind ours.
fn until_one_waits(p: &mut PgClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = p
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if n >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "no statement waited on a lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two nodes at once (two connections, each in its own transaction): the same
/// window's key inserted by both keeps one, the second waits for the first and
/// then reads its key; a code taken by both is returned to one only.
#[test]
fn pg_cvc_concurrent_nodes_keep_one_window_key_and_take_a_code_once() {
    let Some(pg) =
        PgServer::start("pg_cvc_concurrent_nodes_keep_one_window_key_and_take_a_code_once")
    else {
        return;
    };
    let settings = PgSettings::from_url(&pg.url("disable")).unwrap();
    let mut a = pg::connect(&settings).unwrap();
    schema::migrate(&mut a).unwrap();
    let mut b = pg::connect(&settings).unwrap();
    let mut watch = pg::connect(&settings).unwrap();
    let key = |wrapped: &'static [u8]| NewCvcKey {
        window_start: 900,
        ttl_secs: 900,
        wrapped,
        created_at: NOW,
        destroy_at: 2700,
    };

    let mut ta = a.transaction().unwrap();
    assert!(pg::cvc::insert_key(&mut ta, &key(b"node-a")).unwrap());
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            let mut tb = b.transaction().unwrap();
            let made = pg::cvc::insert_key(&mut tb, &key(b"node-b")).unwrap();
            let found = pg::cvc::key_for_window(&mut tb, 900, 900).unwrap();
            tb.commit().unwrap();
            (made, found)
        });
        until_one_waits(&mut watch);
        ta.commit().unwrap();
        let (made, found) = other.join().unwrap();
        assert!(!made, "both nodes made the window's key");
        assert_eq!(found.unwrap().wrapped, b"node-a");
    });
    assert_eq!(pg::cvc::all_keys(&mut a).unwrap().len(), 1);

    let id = pg::cvc::key_for_window(&mut a, 900, 900)
        .unwrap()
        .unwrap()
        .id;
    pg::cvc::put_held(&mut a, &held("shop", "tok_x", id, NOW + 900)).unwrap();
    let mut ta = a.transaction().unwrap();
    let first = pg::cvc::take_held(&mut ta, "shop", "tok_x").unwrap();
    assert!(first.is_some());
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            let mut tb = b.transaction().unwrap();
            let got = pg::cvc::take_held(&mut tb, "shop", "tok_x").unwrap();
            tb.commit().unwrap();
            got
        });
        until_one_waits(&mut watch);
        ta.commit().unwrap();
        assert_eq!(other.join().unwrap(), None, "the code was used twice");
    });
}
