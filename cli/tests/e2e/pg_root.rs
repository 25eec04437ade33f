//! `master rotate` while `panvault serve` nodes serve one PostgreSQL database, with
//! the real binary: both nodes follow the new root under load (the command says
//! which nodes hold it, from their acknowledgements on the database), keys,
//! tokens and held security codes made before and after keep working on both,
//! a restarted node unseals the new root with the same passphrase, and the
//! successor row (the new root wrapped under the old) is gone at the end. A node
//! paused through the rotation cannot follow: it refuses to seal (503) and wraps
//! nothing under the old root, and a restart brings it back. No card number or
//! code is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panvault_audit::card::Brand;
use panvault_vault::core::cvc::Cvc;
use panvault_vault::service::VaultOptions;
use panvault_vault::{AccessContext, Admin, TokenizeRequest, Vault};
use serde_json::json;

use crate::pg_cvc::{relay_config, relay_cvc};
use crate::pg_harness::{assert_detokenizes, node, stop_and_verify};
use crate::util::postgres::PgServer;
use crate::util::provider::{FakeProvider, Mode};
use crate::util::{self, BinVault, Client, cards};

const LIMIT: Duration = Duration::from_secs(60);

/// The first column of `sql`'s first row, as i64, on a connection of its own.
fn query_i64(pg: &PgServer, sql: &str) -> i64 {
    let settings = panvault_vault::store::pg::PgSettings::from_url(&pg.url("disable")).unwrap();
    tokio::task::block_in_place(|| {
        let mut c = panvault_vault::store::pg::connect(&settings).unwrap();
        c.query_one(sql, &[]).unwrap().get::<_, i64>(0)
    })
}

/// Runs `sql` on the test database.
fn execute(pg: &PgServer, sql: &str) {
    let settings = panvault_vault::store::pg::PgSettings::from_url(&pg.url("disable")).unwrap();
    tokio::task::block_in_place(|| {
        let mut c = panvault_vault::store::pg::connect(&settings).unwrap();
        c.batch_execute(sql).unwrap();
    });
}

/// Tokenizes `card` on `sf`: 201 expected; the token.
async fn tokenize(sf: &Client, card: &str) -> String {
    let r = sf.tokenize(card).await;
    assert_eq!(
        r.status,
        201,
        "tokenize of {}: {}",
        cards::masked(card),
        r.text()
    );
    r.json()["token"].as_str().unwrap().to_owned()
}

/// Detokenizes every `(token, card)` of `held` on `pay`: each gives its card.
async fn detokenize_all(pay: &Client, held: &[(String, String)]) {
    for (token, card) in held {
        assert_detokenizes(pay, token, card).await;
    }
}

/// What a load loop saw: every status, and the cards acknowledged.
#[derive(Default)]
struct Seen {
    statuses: Vec<u16>,
    acked: Vec<(String, String)>,
}

/// Tokenizes a fresh card on `sf` and detokenizes it on `pay`, until `stop`.
fn load(
    sf: Client,
    pay: Client,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let card = cards::fresh();
            let r = sf.tokenize(&card).await;
            seen.lock().unwrap().statuses.push(r.status);
            if r.status != 201 {
                continue;
            }
            let token = r.json()["token"].as_str().unwrap().to_owned();
            let d = pay.detokenize(&token, "check").await;
            let mut s = seen.lock().unwrap();
            s.statuses.push(d.status);
            if d.status == 200 {
                assert!(
                    d.json()["card"]["number"] == card.as_str(),
                    "detokenized number differs from {}",
                    cards::masked(&card)
                );
            }
            s.acked.push((token, card));
        }
    })
}

/// Tokenizes `number` with security code `cvc` on `c` (201 expected): the
/// answer's JSON. A three-digit code may occur by chance inside a token or a
/// fingerprint, so the answer is checked for the code as a value of its own.
async fn tokenize_with_cvc(c: &Client, number: &str, cvc: &str) -> serde_json::Value {
    let r = tokenize_cvc_raw(c, number, cvc).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !r.text().contains(&format!("\"{cvc}\"")),
        "the code came back"
    );
    r.json()
}

/// A tokenize carrying security code `cvc`: the raw answer.
async fn tokenize_cvc_raw(c: &Client, number: &str, cvc: &str) -> util::Resp {
    let mut req = util::card_request(number);
    req["card"]["cvc"] = json!(cvc);
    c.post("/v1/tokens", &req).await
}

/// The events of `action` in the audit log.
fn events(pg: &PgServer, action: &str) -> i64 {
    query_i64(
        pg,
        &format!("SELECT count(*) FROM audit_events WHERE action = '{action}'"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_root_master_rotate_under_load_is_followed_by_both_nodes() {
    let Some(pg) = PgServer::start("pg_root_master_rotate_under_load_is_followed_by_both_nodes")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let echo = FakeProvider::start(Mode::Echo).await;
        relay_config(&v, &echo, 900, true);
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let (pay_a, pay_b) = (v.client(a.addr, "payments"), v.client(b.addr, "payments"));
        let mut held = Vec::new();
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            held.push((tokenize(sf, &card).await, card));
        }
        // A code held before the rotation: its window key is wrapped under the
        // old root, and the rotation re-wraps it.
        let before = tokenize_with_cvc(&sf_a, cards::AMEX, "7391").await;
        assert_eq!(before["cvc"]["held"], true, "{before}");
        let before = before["token"].as_str().unwrap().to_owned();

        // Both nodes under load through the rotation.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let loads: Vec<_> = [(a.addr, b.addr), (b.addr, a.addr), (a.addr, a.addr)]
            .into_iter()
            .map(|(t, d)| {
                load(
                    v.client(t, "storefront"),
                    v.client(d, "payments"),
                    seen.clone(),
                    stop.clone(),
                )
            })
            .collect();
        // Some load before the rotation starts.
        let deadline = Instant::now() + LIMIT;
        while seen.lock().unwrap().acked.len() < 20 {
            assert!(Instant::now() < deadline, "no load");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every running node follows within 5 s: the command waits that long
        // for their acknowledgements on the database, and says who gave one.
        let out = v
            .run(&["master", "rotate", "--wait", "5"], true, LIMIT)
            .await;
        assert!(
            out.success(),
            "master rotate: {}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("New root key in place"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("Nodes following the new root key: node-a, node-b"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(!out.stdout.contains("did NOT follow"), "{}", out.stdout);
        assert!(
            out.stderr.contains("2 of 2 serving node(s)"),
            "{}",
            out.stderr
        );
        // Load after the rotation, on the new root.
        let after = seen.lock().unwrap().acked.len();
        while seen.lock().unwrap().acked.len() < after + 20 {
            assert!(Instant::now() < deadline, "no load after the rotation");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for l in loads {
            l.await.unwrap();
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        // The data keys do not change with the root: nothing was refused.
        let odd: Vec<u16> = seen
            .statuses
            .iter()
            .copied()
            .filter(|s| *s != 200 && *s != 201)
            .collect();
        assert!(odd.is_empty(), "answers other than 200/201: {odd:?}");
        held.extend(seen.acked);

        // The successor lived only through the wait.
        assert_eq!(query_i64(&pg, "SELECT count(*) FROM root_successors"), 0);
        assert_eq!(events(&pg, "master_key.rotate"), 1);

        // The code held before is relayed by the other node (its window key
        // opens under the new root); new codes are held and relayed across nodes.
        let r = relay_cvc(&sf_b, &before, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        for (hold, relay) in [(&sf_a, &sf_b), (&sf_b, &sf_a)] {
            let t = tokenize_with_cvc(hold, &cards::fresh(), "482").await;
            assert_eq!(t["cvc"]["held"], true, "{t}");
            let r = relay_cvc(relay, t["token"].as_str().unwrap(), None).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(echo.received().len(), 3);

        // A data key made under the new root: the next tokenize on each node
        // loads it (under the root the node followed) and seals under it.
        let out = v.run(&["keys", "rotate"], true, LIMIT).await;
        assert!(out.success(), "keys rotate: {}", out.stderr);
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            let r = sf.tokenize(&card).await;
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(r.json()["key_version"], 2, "{}", r.text());
            held.push((r.json()["token"].as_str().unwrap().to_owned(), card));
        }
        detokenize_all(&pay_a, &held).await;
        detokenize_all(&pay_b, &held).await;

        // A node started again unseals the new root with the same passphrase.
        assert!(a.terminate().await.success());
        let a = node(&v, "node-a").await;
        let pay_a = v.client(a.addr, "payments");
        let card = cards::fresh();
        held.push((tokenize(&v.client(a.addr, "storefront"), &card).await, card));
        detokenize_all(&pay_a, &held).await;

        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_root_a_node_that_cannot_follow_refuses_to_seal_until_restarted() {
    let Some(pg) =
        PgServer::start("pg_root_a_node_that_cannot_follow_refuses_to_seal_until_restarted")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let echo = FakeProvider::start(Mode::Echo).await;
        relay_config(&v, &echo, 900, true);
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let mut held = Vec::new();
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            held.push((tokenize(sf, &card).await, card));
        }

        // B is paused through the whole rotation and its wait: it never sees the
        // successor, which is deleted when the wait ends.
        let signal = |sig: &'static str, pid: u32| async move {
            let st = tokio::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .await
                .unwrap();
            assert!(st.success());
        };
        signal("-STOP", b.pid()).await;
        let out = v
            .run(&["master", "rotate", "--wait", "2"], true, LIMIT)
            .await;
        signal("-CONT", b.pid()).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "master rotate: {}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("New root key in place"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("Nodes following the new root key: node-a"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("did NOT follow within 2 s: node-b"),
            "{}",
            out.stdout
        );
        assert!(out.stderr.contains("waiting for node-b"), "{}", out.stderr);
        assert_eq!(query_i64(&pg, "SELECT count(*) FROM root_successors"), 0);

        // A followed: it seals, and holds codes under the new root.
        let card = cards::fresh();
        held.push((tokenize(&sf_a, &card).await, card));
        let t = tokenize_with_cvc(&sf_a, &cards::fresh(), "551").await;
        assert_eq!(t["cvc"]["held"], true, "{t}");

        // B, running again, finds the new root it cannot reach: it refuses to
        // seal (503) rather than go on under the old root, and says why.
        let deadline = Instant::now() + LIMIT;
        loop {
            let r = sf_b.tokenize(&cards::fresh()).await;
            if r.status == 503 {
                r.assert_problem(503, "unavailable");
                break;
            }
            assert_eq!(r.status, 201, "{}", r.text());
            assert!(Instant::now() < deadline, "node-b never refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            let r = tokenize_cvc_raw(&sf_b, &cards::fresh(), "663").await;
            assert_eq!(r.status, 503, "{}", r.text());
            let r = sf_b.tokenize(&cards::fresh()).await;
            assert_eq!(r.status, 503, "{}", r.text());
        }
        assert!(b.stderr().contains("restart this node"), "{}", b.stderr());
        // Every window key opens under the new root: A relays its code.
        let r = relay_cvc(&sf_a, t["token"].as_str().unwrap(), None).await;
        assert_eq!(r.status, 200, "{}", r.text());

        // Restarted, B unseals the new root and serves again.
        assert!(b.terminate().await.success());
        let b = node(&v, "node-b").await;
        let sf_b = v.client(b.addr, "storefront");
        let card = cards::fresh();
        held.push((tokenize(&sf_b, &card).await, card));
        let t = tokenize_with_cvc(&sf_b, &cards::fresh(), "903").await;
        let r = relay_cvc(&sf_a, t["token"].as_str().unwrap(), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        detokenize_all(&v.client(b.addr, "payments"), &held).await;
        detokenize_all(&v.client(a.addr, "payments"), &held).await;

        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

/// A successor row left behind (a `master rotate` killed between its commit and
/// its delete) is deleted once past its time by the next admin command, and by
/// any running node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_root_a_stale_successor_is_deleted_by_admin_commands_and_nodes() {
    let Some(pg) =
        PgServer::start("pg_root_a_stale_successor_is_deleted_by_admin_commands_and_nodes")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let stale = |from: &str| {
            format!(
                "INSERT INTO root_successors (from_id, to_id, wrapped, created_at) \
                 VALUES ('{from}', 'b', '\\x00', now() - interval '1 hour')"
            )
        };
        execute(&pg, &stale("a"));
        execute(
            &pg,
            "INSERT INTO root_successors (from_id, to_id, wrapped) VALUES ('fresh', 'c', '\\x00')",
        );
        let out = v.run(&["keys", "list"], true, LIMIT).await;
        assert!(out.success(), "keys list: {}", out.stderr);
        // The stale row went; a fresh one (a rotation waiting now) stays.
        assert_eq!(query_i64(&pg, "SELECT count(*) FROM root_successors"), 1);
        execute(&pg, "DELETE FROM root_successors");

        let a = node(&v, "node-a").await;
        execute(&pg, &stale("d"));
        let deadline = Instant::now() + LIMIT;
        while query_i64(&pg, "SELECT count(*) FROM root_successors") > 0 {
            assert!(Instant::now() < deadline, "the node never deleted it");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(a.terminate().await.success());
    })
    .await;
}

/// A node that has not followed yet (here: a vault in this process that is not
/// asked to reload its keys until the test says so) wraps no CVC window key under
/// the root it holds once the rotation committed: the check inside the writer's
/// transaction refuses (503), while plain tokenize (the data keys
/// did not change) goes on. Once it follows, it holds codes under the new root
/// and the rotation counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_root_a_node_behind_the_root_wraps_no_window_key_under_the_old_one() {
    let Some(pg) =
        PgServer::start("pg_root_a_node_behind_the_root_wraps_no_window_key_under_the_old_one")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let opts = VaultOptions {
            cvc_ttl: Some(Duration::from_secs(900)),
            ..VaultOptions::default()
        };
        let vault =
            tokio::task::block_in_place(|| Vault::open_with(&v.data, &v.unlock(), opts)).unwrap();
        let ctx = AccessContext {
            actor: "storefront".into(),
            ..Default::default()
        };
        let with_cvc = |number: &str, code: &str, brand: Brand| {
            let mut r = TokenizeRequest::new(number, 12, 2031, vault.today()).unwrap();
            r.cvc = Some(Cvc::parse(code, brand).unwrap());
            r
        };
        let plain = || TokenizeRequest::new(&cards::fresh(), 12, 2031, vault.today()).unwrap();
        vault
            .tokenize(
                "demo-shop",
                with_cvc(cards::AMEX, "7391", Brand::Amex),
                &ctx,
            )
            .await
            .unwrap();

        // The rotation from another process, with an audit chain of its own; it
        // waits for this vault.
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(["master", "rotate", "--wait", "20", "--data-dir"])
            .arg(&v.data)
            .arg("--passphrase-file")
            .arg(&v.pass)
            .env("PANVAULT_NODE", "rotator");
        let rotation = tokio::spawn(util::run_command(cmd, LIMIT));
        let deadline = Instant::now() + LIMIT;
        while query_i64(&pg, "SELECT count(*) FROM root_successors") == 0 {
            assert!(Instant::now() < deadline, "the rotation never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // No window key left: the next code needs a new one.
        execute(&pg, "DELETE FROM held_cvcs; DELETE FROM cvc_keys");
        let e = vault
            .tokenize("demo-shop", with_cvc(cards::VISA, "123", Brand::Visa), &ctx)
            .await
            .unwrap_err();
        // The job's refusal rolls its batch back: 503 either way.
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(query_i64(&pg, "SELECT count(*) FROM cvc_keys"), 0);
        vault.tokenize("demo-shop", plain(), &ctx).await.unwrap();

        // It follows: codes are held (under the new root) again.
        assert!(tokio::task::block_in_place(|| vault.refresh_keys()).unwrap());
        let t = vault
            .tokenize("demo-shop", with_cvc(cards::VISA, "123", Brand::Visa), &ctx)
            .await
            .unwrap();
        let out = rotation.await.unwrap();
        assert!(
            out.success(),
            "master rotate: {}\n{}",
            out.stdout,
            out.stderr
        );
        let me = panvault_vault::store::pg::node_id();
        assert!(
            out.stdout.contains(&format!(
                "Nodes following the new root key: {}",
                me.as_str()
            )),
            "{}",
            out.stdout
        );
        let code = vault
            .take_cvc("demo-shop", &t.token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.expose(), "123");
        vault.shutdown();
    })
    .await;
}

/// An admin command that opened the vault before a `master rotate` committed
/// holds the replaced root: it must neither seal that root again (a passphrase
/// change would lock the vault's keys away) nor wrap a new data key under it.
/// Both are refused inside their transaction, and nothing changed.
#[test]
fn pg_root_an_admin_command_holding_a_replaced_root_changes_nothing() {
    let Some(pg) =
        PgServer::start("pg_root_an_admin_command_holding_a_replaced_root_changes_nothing")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
    let actor = AccessContext {
        actor: "admin:test".into(),
        ..Default::default()
    };
    let clock = panvault_vault::system_clock;
    let mut stale = Admin::open(&v.data, &v.unlock(), clock()).unwrap();
    let mut rotator = Admin::open(&v.data, &v.unlock(), clock()).unwrap();
    let done = rotator
        .master_rotate_with(&actor, &v.unlock(), Duration::from_secs(1), |_| {})
        .unwrap();
    assert!(done.behind.is_empty() && done.followed.is_empty());
    assert!(done.successor_deleted);
    drop(rotator);

    let new = panvault_vault::SecretText::new("another-passphrase".into());
    let e = stale
        .change_passphrase(&actor, &new, panvault_vault::service::default_kdf())
        .unwrap_err();
    assert!(e.to_string().contains("root key was replaced"), "{e}");
    let e = stale.rotate(&actor).unwrap_err();
    assert!(e.to_string().contains("root key was replaced"), "{e}");
    drop(stale);
    // The passphrase still opens the vault, under the new root, with one key.
    let admin = Admin::open(&v.data, &v.unlock(), clock()).unwrap();
    assert_eq!(admin.list_keys().unwrap().len(), 1);
}
