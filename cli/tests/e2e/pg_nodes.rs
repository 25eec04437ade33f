//! Several `panvault serve` nodes on one PostgreSQL database, with the real binary
//! and a real server the harness starts: a card tokenized on one node detokenizes
//! on the other at once; the same card sent to both at the same moment yields one
//! token; a key rotation made from the CLI is followed by both (the next tokenize
//! on each is sealed under the new version: each writer batch checks the active
//! version in the database under the shared key lock); the audit log verifies
//! afterwards. No card number is printed (messages show masked numbers).

use std::time::{Duration, Instant};

use crate::pg_harness::{
    Load, assert_detokenizes, audit_verifies, check_told_the_truth, health, node, stop_and_verify,
};
use crate::util::postgres::PgServer;
use crate::util::{self, BinVault, Client, ServeProcess, cards};

const LIMIT: Duration = Duration::from_secs(60);

/// Tokenizes `card` on `sf`, retrying a 503 for up to 10 s; (status, token, key version).
async fn tokenize(sf: &Client, card: &str) -> (u16, String, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = sf.tokenize(card).await;
        if r.status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert!(
            r.status == 201 || r.status == 200,
            "tokenize of {}: {} {}",
            cards::masked(card),
            r.status,
            r.text()
        );
        let j = r.json();
        return (
            r.status,
            j["token"].as_str().unwrap().to_owned(),
            j["key_version"].as_u64().unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_share_tokens_dedup_across_nodes_and_follow_a_key_rotation() {
    let Some(pg) =
        PgServer::start("pg_nodes_share_tokens_dedup_across_nodes_and_follow_a_key_rotation")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        assert!(!v.db().exists(), "the vault must not be in SQLite");
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let (pay_a, pay_b) = (v.client(a.addr, "payments"), v.client(b.addr, "payments"));

        // Tokenized on A, detokenized on B at once (and the other way round).
        let card = cards::fresh();
        let (_, token, v1) = tokenize(&sf_a, &card).await;
        assert_eq!(v1, 1);
        assert_detokenizes(&pay_b, &token, &card).await;
        let card2 = cards::fresh();
        let (_, token2, _) = tokenize(&sf_b, &card2).await;
        assert_detokenizes(&pay_a, &token2, &card2).await;
        // B's dedup finds A's row.
        let (status, again, _) = tokenize(&sf_b, &card).await;
        assert_eq!((status, again.as_str()), (200, token.as_str()));
        // Metadata (sealed on PostgreSQL) reads back on the other node.
        let r = sf_a
            .post(
                "/v1/tokens",
                &serde_json::json!({"card": {"number": card2, "exp_month": 12,
                    "exp_year": util::this_year() + 4}, "metadata": {"order": "A-1"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let m = sf_b.get(&format!("/v1/tokens/{token2}")).await;
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(m.json()["metadata"]["order"], "A-1", "{}", m.text());

        // The same card on both nodes at the same moment: one token, every round.
        for _ in 0..25 {
            let card = cards::fresh();
            let (ra, rb) = tokio::join!(tokenize(&sf_a, &card), tokenize(&sf_b, &card));
            assert_eq!(ra.1, rb.1, "two tokens for {}", cards::masked(&card));
            let mut statuses = [ra.0, rb.0];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 201], "one created, one found");
        }

        // A rotation from the CLI: the next tokenize on each node seals under v2
        // (checked inside the writer batch, not after a reload interval).
        let out = v.run(&["keys", "rotate"], true, LIMIT).await;
        assert!(out.success(), "keys rotate: {}", out.stderr);
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            let (_, t, version) = tokenize(sf, &card).await;
            assert_eq!(version, 2, "a node sealed under a key no longer active");
            assert_detokenizes(&pay_a, &t, &card).await;
            assert_detokenizes(&pay_b, &t, &card).await;
        }
        // Tokens sealed under v1 still open on both nodes.
        assert_detokenizes(&pay_a, &token, &card).await;
        assert_detokenizes(&pay_b, &token, &card).await;

        // One audit log for both nodes, verified with the public key alone.
        audit_verifies(&v).await;
        // The children log at TRACE: the driver's statement parameters (sealed
        // cards, keyed hashes, wrapped keys) stay out of it unless asked for.
        for n in [&a, &b] {
            let log = n.stderr();
            assert!(
                !log.contains("executing statement"),
                "driver parameters logged"
            );
        }
        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_answer_503_while_the_database_is_down_and_recover_losing_nothing() {
    let Some(mut pg) = PgServer::start(
        "pg_nodes_answer_503_while_the_database_is_down_and_recover_losing_nothing",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let load = Load::start((0..2).map(|_| v.client(a.addr, "storefront")).collect());
        load.acked_at_least(20).await;

        // The database goes away: the node says so (503), never 500, never a hang.
        tokio::task::block_in_place(|| pg.stop());
        let before = load.answers();
        let down = health(&v.client(a.addr, "payments"), 503).await;
        assert_eq!(down.json()["database"], "down", "{}", down.text());
        load.answered_since(before, 503).await;

        // Back: the node recovers by itself (its pool replaces dead connections).
        tokio::task::block_in_place(|| pg.restart());
        let back = Instant::now();
        health(&v.client(a.addr, "payments"), 200).await;
        load.acked_at_least(load.acked() + 10).await;
        eprintln!(
            "pg_nodes: healthy again {} ms after the database was back",
            back.elapsed().as_millis()
        );
        let seen = load.stop().await;
        // Only 201 and 503, nothing acknowledged lost, nothing refused stored.
        check_told_the_truth(
            seen,
            &v.client(a.addr, "storefront"),
            &v.client(a.addr, "payments"),
        )
        .await;
        stop_and_verify(&v, [a]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_one_killed_under_load_the_other_serves_and_nothing_acknowledged_is_lost() {
    let Some(pg) = PgServer::start(
        "pg_nodes_one_killed_under_load_the_other_serves_and_nothing_acknowledged_is_lost",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let mut a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Load on both nodes; A's answers may break off when it dies (no answer,
        // or a connection error): only what was acknowledged counts.
        let mut load = Vec::new();
        let counts = [
            std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        ];
        for ((addr, name), count) in [(a.addr, "a"), (b.addr, "b")].into_iter().zip(&counts) {
            let (sf, stop, count) = (v.client(addr, "storefront"), stop.clone(), count.clone());
            load.push(tokio::spawn(async move {
                let mut seen = crate::pg_harness::Seen::default();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let card = cards::fresh();
                    let Ok(r) = sf
                        .request(
                            "POST",
                            "/v1/tokens",
                            Some(util::card_request(&card).to_string().as_bytes()),
                            Some("application/json"),
                        )
                        .await
                    else {
                        assert_eq!(name, "a", "node b's request failed");
                        break;
                    };
                    seen.statuses.push(r.status);
                    if r.status == 201 {
                        seen.acked
                            .push((r.json()["token"].as_str().unwrap().to_owned(), card));
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                seen
            }));
        }
        let pay_b = v.client(b.addr, "payments");
        let acked = |i: usize| counts[i].load(std::sync::atomic::Ordering::SeqCst);
        let until = |i: usize, n: usize| async move {
            while acked(i) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        // Both get going, then A is killed in the middle of its work.
        until(0, 10).await;
        until(1, 10).await;
        a.kill().await;
        // B keeps serving.
        let n = acked(1);
        until(1, n + 30).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = Vec::new();
        for (i, t) in load.into_iter().enumerate() {
            let seen = t.await.unwrap();
            if i == 1 {
                assert!(
                    seen.statuses.iter().all(|s| *s == 201),
                    "node b answered {:?}",
                    seen.statuses
                        .iter()
                        .filter(|s| **s != 201)
                        .collect::<Vec<_>>()
                );
                assert!(seen.acked.len() > 5, "node b served too little to tell");
            }
            all.extend(seen.acked);
        }
        for (token, card) in &all {
            assert_detokenizes(&pay_b, token, card).await;
        }
        stop_and_verify(&v, [b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_store_no_personal_data_in_clear_and_keep_it_readable_across_key_destruction() {
    let Some(pg) = PgServer::start(
        "pg_nodes_store_no_personal_data_in_clear_and_keep_it_readable_across_key_destruction",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let sf = v.client(a.addr, "storefront");
        let pay = v.client(a.addr, "payments");
        let (subject, order) = ("cust-clear-7731", "ORD-clear-5519");
        let card = cards::fresh();
        let body = |card: &str| {
            serde_json::json!({"card": {"number": card, "exp_month": 12,
                "exp_year": util::this_year() + 4}, "subject": subject,
                "metadata": {"order": order}})
        };
        let r = sf.post("/v1/tokens", &body(&card)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let token = r.json()["token"].as_str().unwrap().to_owned();
        // Same card and subject: the same token (the dedup lookup by the subject's hash).
        let again = sf.post("/v1/tokens", &body(&card)).await;
        assert_eq!(again.json()["token"], token.as_str(), "{}", again.text());

        // Nothing of the subject or the metadata is in the table in clear.
        let settings = panvault_vault::store::pg::PgSettings::from_url(&pg.url("disable")).unwrap();
        let rows = tokio::task::block_in_place(|| {
            let mut c = panvault_vault::store::pg::connect(&settings).unwrap();
            c.query("SELECT cards::text FROM cards", &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        });
        assert_eq!(rows.len(), 1);
        for needle in [
            subject,
            order,
            &hex(subject.as_bytes())[..],
            &hex(order.as_bytes())[..],
        ] {
            assert!(!rows[0].contains(needle), "{needle:?} stored in clear");
        }

        // Rotate, rewrap, retire and destroy v1: the subject and metadata still read.
        for args in [
            &["keys", "rotate"][..],
            &["keys", "rewrap", "--quiet"],
            &["keys", "retire", "--version", "1"],
            &["keys", "destroy", "--version", "1"],
        ] {
            let out = v.run(args, true, LIMIT).await;
            assert!(out.success(), "{args:?}: {}", out.stderr);
        }
        // A node started now holds no v1 at all.
        let b = node(&v, "node-b").await;
        let m = v
            .client(b.addr, "storefront")
            .get(&format!("/v1/tokens/{token}"))
            .await;
        assert_eq!(m.status, 200, "{}", m.text());
        let j = m.json();
        assert_eq!(
            (j["subject"].as_str(), j["metadata"]["order"].as_str()),
            (Some(subject), Some(order))
        );
        assert_eq!(j["key_version"], 2);
        assert_detokenizes(&pay, &token, &card).await;

        // Erasure by subject finds the card by the subject's hash.
        let e = sf
            .post(
                &format!("/v1/subjects/{subject}/erase"),
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(e.status, 200, "{}", e.text());
        assert_eq!(e.json()["receipt"]["tokens_erased"], 1, "{}", e.text());
        assert_eq!(pay.detokenize(&token, "check").await.status, 404);
        assert!(a.terminate().await.success());
        assert!(b.terminate().await.success());
    })
    .await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_nodes_init_with_postgres_records_the_engine_for_every_admin_command() {
    let Some(pg) =
        PgServer::start("pg_nodes_init_with_postgres_records_the_engine_for_every_admin_command")
    else {
        return;
    };
    util::within(Duration::from_secs(180), async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let pass = tmp.path().join("pass");
        std::fs::write(&pass, "init-postgres-passphrase\n").unwrap();
        let run = |args: &[&str]| {
            let mut cmd = tokio::process::Command::new(util::panvault_bin());
            cmd.args(args)
                .arg("--data-dir")
                .arg(&data)
                .arg("--passphrase-file")
                .arg(&pass);
            util::run_command(cmd, LIMIT)
        };
        let url = pg.url("disable");
        let out = run(&["init", "--postgres", &url]).await;
        assert!(out.success(), "init: {}", out.stderr);
        let config = std::fs::read_to_string(data.join("panvault.toml")).unwrap();
        assert!(config.contains("[storage]") && config.contains("engine = \"postgres\""));
        assert!(!data.join("vault.db").exists(), "a SQLite file was made");
        // Admin commands find the engine from --data-dir alone.
        let out = run(&["keys", "list", "--json"]).await;
        assert!(out.success(), "keys list: {}", out.stderr);
        assert!(out.stdout.contains("\"active\""), "{}", out.stdout);
        let out = run(&["keys", "rotate"]).await;
        assert!(out.success(), "keys rotate: {}", out.stderr);
        // A second init finds the vault in the database and refuses.
        let out = run(&["init", "--postgres", &url]).await;
        assert!(!out.success(), "a second init was accepted");
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(["audit", "verify", "--data-dir"]).arg(&data);
        let out = util::run_command(cmd, LIMIT).await;
        assert!(
            out.success(),
            "audit verify: {}\n{}",
            out.stdout,
            out.stderr
        );
        // A malformed URL is described, never echoed; the password is never printed.
        let bad = format!("mysql://panvault:{}@127.0.0.1/x", pg.password());
        let out = run(&["init", "--postgres", &bad]).await;
        assert!(!out.success());
        for o in [&out.stdout, &out.stderr] {
            assert!(!o.contains(pg.password()), "the password was printed");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_nodes_quickstart_with_postgres_serves_from_the_database() {
    let Some(pg) = PgServer::start("pg_nodes_quickstart_with_postgres_serves_from_the_database")
    else {
        return;
    };
    util::within(Duration::from_secs(180), async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("qs");
        let url = pg.url("disable");
        let qs = Quickstart::start(&dir, &["--listen", "127.0.0.1:0", "--postgres", &url])
            .await
            .unwrap();
        assert!(!dir.join("vault.db").exists(), "a SQLite file was made");
        let config = std::fs::read_to_string(dir.join("panvault.toml")).unwrap();
        assert!(config.contains("listen") && config.contains("engine = \"postgres\""));
        let client = |name: &str| qs.client(&dir, name);
        let card = cards::fresh();
        let (_, token, _) = tokenize(&client("storefront"), &card).await;
        assert_detokenizes(&client("payments"), &token, &card).await;
        let h = client("payments").get("/healthz").await;
        assert_eq!(h.json()["database"], "up", "{}", h.text());
        // The compliance run measures what it can and says what it cannot.
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(["audit", "run", "--format", "json", "--config"])
            .arg(dir.join("panvault.toml"));
        let run = util::run_command(cmd, LIMIT).await;
        assert!(
            run.stdout.contains("not measured by this check"),
            "{}\n{}",
            run.stdout,
            run.stderr
        );
        let said = qs.stop().await;
        for o in [said, run.stdout, run.stderr] {
            assert!(!o.contains(pg.password()), "the password was printed");
        }
    })
    .await;
}

/// A running `panvault quickstart`: the child, its port and its output.
struct Quickstart {
    child: tokio::process::Child,
    port: u16,
    stdout: util::LineCollector,
    stderr: util::LineCollector,
}

impl Quickstart {
    /// `panvault quickstart --data-dir DIR ARGS…` until it says where it is ready
    /// (at most 60 s); `Err` with its stderr if it exits first.
    async fn start(dir: &std::path::Path, args: &[&str]) -> Result<Quickstart, String> {
        let mut child = tokio::process::Command::new(util::panvault_bin())
            .args(["quickstart", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("PANVAULT_LOG", util::child_log_level())
            .env_remove("PANVAULT_PASSPHRASE")
            .env_remove("PANVAULT_POSTGRES_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = util::LineCollector::start(child.stdout.take().unwrap());
        let mut stderr = util::LineCollector::start(child.stderr.take().unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(rest) = stdout.text().split("ready at https://localhost:").nth(1) {
                let port = rest.split_whitespace().next().unwrap().parse().unwrap();
                return Ok(Quickstart {
                    child,
                    port,
                    stdout,
                    stderr,
                });
            }
            tokio::select! {
                _ = stdout.changed() => {}
                status = child.wait() => {
                    stderr.finished(Duration::from_secs(10)).await;
                    return Err(format!("quickstart exited with {}: {}", status.unwrap(), stderr.text()));
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!("quickstart not ready after 60 s: {}", stderr.text()));
                }
            }
        }
    }

    /// A client of its development PKI.
    fn client(&self, dir: &std::path::Path, name: &str) -> Client {
        let pki = dir.join("pki");
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
        Client::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            &read("ca.pem"),
            Some((&read(&format!("{name}.pem")), &read(&format!("{name}.key")))),
            &[b"http/1.1"],
        )
    }

    /// Kills it; everything it wrote (stdout, then stderr).
    async fn stop(mut self) -> String {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        self.stdout.finished(Duration::from_secs(10)).await;
        self.stderr.finished(Duration::from_secs(10)).await;
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }
}

/// `quickstart` on a data directory whose `panvault.toml` its owner began with
/// only `[storage]` (a `url_file`, so no password in the file) and a comment: the
/// file keeps them and gains the server settings with the `--listen` given, and
/// the vault is made in PostgreSQL (before, the file was overwritten without the
/// storage and a SQLite vault made). A second run reuses file and vault as on
/// SQLite. `quickstart --postgres` on a SQLite vault's directory is refused
/// (before, a new empty vault was made in PostgreSQL and the old one left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_nodes_quickstart_keeps_an_existing_configuration() {
    let Some(pg) = PgServer::start("pg_nodes_quickstart_keeps_an_existing_configuration") else {
        return;
    };
    util::within(Duration::from_secs(240), async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("qs");
        std::fs::create_dir_all(&dir).unwrap();
        let url = pg.url("disable");
        panvault_vault::data_dir::write_owner_only(
            &dir.join("pg-url"),
            format!("{url}\n").as_bytes(),
        )
        .unwrap();
        let begun = "# my own note\n[storage]\nengine = \"postgres\"\nurl_file = \"pg-url\"\n";
        let config = dir.join("panvault.toml");
        panvault_vault::data_dir::write_owner_only(&config, begun.as_bytes()).unwrap();

        let qs = Quickstart::start(&dir, &["--listen", "127.0.0.1:0"])
            .await
            .unwrap();
        let written = std::fs::read_to_string(&config).unwrap();
        assert!(written.contains(begun), "its own text is gone:\n{written}");
        assert!(written.contains("listen = \"127.0.0.1:0\""), "{written}");
        assert!(!written.contains(pg.password()), "the password was written");
        assert!(!dir.join("vault.db").exists(), "a SQLite vault was made");
        let card = cards::fresh();
        let (_, token, _) = tokenize(&qs.client(&dir, "storefront"), &card).await;
        let h = qs.client(&dir, "payments").get("/healthz").await;
        assert_eq!(h.json()["database"], "up", "{}", h.text());
        let err = qs.stop().await;
        assert!(err.contains("created a vault"), "{err}");

        // Again: the same file, byte for byte, and the same vault.
        let qs = Quickstart::start(&dir, &[]).await.unwrap();
        assert_detokenizes(&qs.client(&dir, "payments"), &token, &card).await;
        let err = qs.stop().await;
        assert!(
            !err.contains("created a vault") && !err.contains("wrote"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

        // A SQLite vault's directory: refused, nothing written there.
        let sqlite = BinVault::create(&tmp.path().join("sqlite"));
        let err = Quickstart::start(
            &sqlite.data,
            &["--listen", "127.0.0.1:0", "--postgres", &url],
        )
        .await
        .err()
        .expect("quickstart --postgres made a new vault beside a SQLite one");
        assert!(
            err.contains("holds a SQLite vault") && err.contains("migrate"),
            "{err}"
        );
        assert!(!err.contains(pg.password()), "the password was printed");
        let layout = panvault_vault::DataDir::new(&sqlite.data);
        assert!(!layout.config().exists() && !layout.dev_passphrase().exists());
    })
    .await;
}

/// Two processes appending to one audit chain under load fail each other's
/// batches, so a second node with a running node's id is refused at start, and
/// nodes left to name themselves on one host get ids of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_a_second_node_with_a_running_nodes_id_is_refused() {
    let Some(pg) = PgServer::start("pg_nodes_a_second_node_with_a_running_nodes_id_is_refused")
    else {
        return;
    };
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "same-id").await;
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(v.serve_args()).env("PANVAULT_NODE", "same-id");
        let err = ServeProcess::spawn(cmd)
            .await
            .err()
            .expect("a second node of one id started");
        assert!(
            err.contains("already uses the node id \"same-id\"") && err.contains("PANVAULT_NODE"),
            "{err}"
        );
        // Without PANVAULT_NODE, two nodes on one host name themselves apart.
        let mut unnamed = Vec::new();
        for _ in 0..2 {
            let mut cmd = tokio::process::Command::new(util::panvault_bin());
            cmd.args(v.serve_args()).env_remove("PANVAULT_NODE");
            unnamed.push(ServeProcess::spawn(cmd).await.unwrap());
        }
        for n in &unnamed {
            let r = v
                .client(n.addr, "storefront")
                .tokenize(&cards::fresh())
                .await;
            assert!(r.status == 201 || r.status == 200, "{}", r.text());
        }
        for n in unnamed {
            assert!(n.terminate().await.success());
        }
        stop_and_verify(&v, [a]).await;
    })
    .await;
}

const RECOUNT_ENV: &str = panvault_vault::http::TOKEN_RECOUNT_ENV;

/// `panvault_tokens_stored` of a node's `/metrics`.
async fn tokens_stored(monitor: &Client) -> i64 {
    let m = monitor.get("/metrics").await;
    assert_eq!(m.status, 200, "{}", m.text());
    let text = m.text();
    text.lines()
        .find_map(|l| l.strip_prefix("panvault_tokens_stored "))
        .unwrap_or_else(|| panic!("no panvault_tokens_stored in {text}"))
        .parse()
        .unwrap()
}

/// Polls a node's `panvault_tokens_stored` until it shows `want` (at most 30 s).
async fn until_gauge(monitor: &Client, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokens_stored(monitor).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node still shows {n} tokens, not {want}, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node keeps a running count of its own inserts only; the rows other nodes
/// insert reach its `panvault_tokens_stored` when it recounts the table, every
/// `PANVAULT_TOKEN_RECOUNT_SECS` (here 1 s instead of the default minute). The
/// gauge is polled under a bounded deadline, not timed. A value that is not a
/// whole number of seconds stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_nodes_token_gauge_shows_other_nodes_inserts_after_a_recount() {
    let Some(pg) =
        PgServer::start("pg_nodes_token_gauge_shows_other_nodes_inserts_after_a_recount")
    else {
        return;
    };
    util::within(Duration::from_secs(180), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let spawn = |name: &'static str, secs: &'static str| {
            let mut cmd = tokio::process::Command::new(util::panvault_bin());
            cmd.args(v.serve_args())
                .env("PANVAULT_NODE", name)
                .env(RECOUNT_ENV, secs);
            ServeProcess::spawn(cmd)
        };
        let a = spawn("node-a", "1").await.unwrap();
        let b = spawn("node-b", "1").await.unwrap();
        let (mon_a, mon_b) = (v.client(a.addr, "monitor"), v.client(b.addr, "monitor"));
        assert_eq!(tokens_stored(&mon_b).await, 0);
        let sf_a = v.client(a.addr, "storefront");
        let mut tokens = Vec::new();
        for _ in 0..3 {
            tokens.push(tokenize(&sf_a, &cards::fresh()).await.1);
        }
        // A counts its own inserts at once; B after its next recount.
        assert_eq!(tokens_stored(&mon_a).await, 3);
        until_gauge(&mon_b, 3).await;
        // And its own deletes.
        let d = sf_a.delete(&format!("/v1/tokens/{}", tokens[0])).await;
        assert!(d.status == 200 || d.status == 204, "{}", d.text());
        assert_eq!(tokens_stored(&mon_a).await, 2);
        until_gauge(&mon_b, 2).await;
        assert!(a.terminate().await.success());
        assert!(b.terminate().await.success());
        for bad in ["0", "soon"] {
            let err = spawn("node-bad", bad)
                .await
                .err()
                .expect("a node started with a malformed recount interval");
            assert!(err.contains(RECOUNT_ENV), "{err}");
        }
    })
    .await;
}
