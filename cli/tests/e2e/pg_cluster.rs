//! Upkeep across several `panvault serve` nodes on one PostgreSQL database, with
//! the real binary and a real server: the periodic retention purge runs once per
//! round across the nodes (an advisory lock and the round's time in `meta`), and
//! `keys rewrap` runs one at a time, resumes after SIGKILL and leaves the nodes
//! writing. No card number is printed (messages show masked numbers).

use std::time::{Duration, Instant};

use crate::pg_harness::{Load, check_told_the_truth, health, node, stop_and_verify};
use crate::util::postgres::PgServer;
use crate::util::{self, BinVault, Client, cards};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `sql` on the test database and returns the first column of each row as i64.
fn query_i64(pg: &PgServer, sql: &str) -> Vec<i64> {
    let settings = panvault_vault::store::pg::PgSettings::from_url(&pg.url("disable")).unwrap();
    tokio::task::block_in_place(|| {
        let mut c = panvault_vault::store::pg::connect(&settings).unwrap();
        c.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect()
    })
}

/// Tokenizes `card` on `sf`: 201 expected.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cluster_retention_purge_runs_once_per_round_across_nodes() {
    let Some(pg) = PgServer::start("pg_cluster_retention_purge_runs_once_per_round_across_nodes")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let mut text = std::fs::read_to_string(&v.config).unwrap();
        text.push_str("[retention]\npurge_interval_secs = 2\n");
        std::fs::write(&v.config, text).unwrap();
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;

        // Wait for six purge rounds (bounded), then look at when each ran.
        let deadline = Instant::now() + Duration::from_secs(120);
        let times = loop {
            let t = query_i64(
                &pg,
                "SELECT time_ns FROM audit_events WHERE action = 'retention.purge' ORDER BY time_ns",
            );
            if t.len() >= 6 {
                break t;
            }
            assert!(Instant::now() < deadline, "only {} purges ran", t.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Event times are whole seconds, the round's claim is made at the purge's
        // own time: one purge per round leaves at least 2 s between two. Two nodes
        // each purging every 2 s make two per round: some two at most 1 s apart.
        for w in times.windows(2) {
            let gap = Duration::from_nanos(u64::try_from(w[1] - w[0]).unwrap());
            assert!(
                gap >= Duration::from_secs(2),
                "two purges {gap:?} apart: the round ran on both nodes"
            );
        }
        let rounds = query_i64(&pg, "SELECT value::bigint FROM meta WHERE key = 'round.retention'");
        assert_eq!(rounds.len(), 1, "the round's time is recorded");

        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cluster_keys_rewrap_runs_once_resumes_after_sigkill_and_nodes_keep_writing() {
    let Some(pg) = PgServer::start(
        "pg_cluster_keys_rewrap_runs_once_resumes_after_sigkill_and_nodes_keep_writing",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let (sf_a, sf_b) = (
            v.client(a.addr, "storefront"),
            v.client(b.addr, "storefront"),
        );
        let pay = v.client(a.addr, "payments");
        let mut held = Vec::new();
        for i in 0..200 {
            let card = cards::fresh();
            let sf = if i % 2 == 0 { &sf_a } else { &sf_b };
            held.push((tokenize(sf, &card).await, card));
        }
        let out = v.run(&["keys", "rotate"], true, LIMIT).await;
        assert!(out.success(), "keys rotate: {}", out.stderr);

        // A slow rewrap (20 records/s), killed once it has done some of the work.
        let mut slow = tokio::process::Command::new(util::panvault_bin());
        slow.args([
            "keys",
            "rewrap",
            "--quiet",
            "--batch",
            "5",
            "--max-rate",
            "20",
        ])
        .arg("--data-dir")
        .arg(&v.data)
        .arg("--passphrase-file")
        .arg(&v.pass)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
        let mut slow = slow.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let moved = query_i64(&pg, "SELECT count(*) FROM cards WHERE key_version = 2")[0];
            if moved >= 10 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rewrap moved only {moved} records"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A second rewrap meanwhile is refused (exit 75), saying why.
        let out = v.run(&["keys", "rewrap", "--quiet"], true, LIMIT).await;
        assert_eq!(
            out.status.code(),
            Some(75),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr
                .contains("another process is running `keys rewrap`"),
            "{}",
            out.stderr
        );

        // The nodes keep writing while it runs.
        for sf in [&sf_a, &sf_b] {
            let card = cards::fresh();
            held.push((tokenize(sf, &card).await, card));
        }

        slow.start_kill().unwrap();
        let status = slow.wait().await.unwrap();
        assert!(
            !status.success(),
            "the slow rewrap finished before it was killed"
        );
        let left = query_i64(&pg, "SELECT count(*) FROM cards WHERE key_version = 1")[0];
        assert!(left > 0, "nothing was left for the resumed run");

        // The lock went with the killed process's connection: a new run resumes
        // and finishes.
        let out = v.run(&["keys", "rewrap", "--quiet"], true, LIMIT).await;
        assert!(out.success(), "keys rewrap: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("0 left under older keys"),
            "{}",
            out.stdout
        );
        let left = query_i64(&pg, "SELECT count(*) FROM cards WHERE key_version = 1")[0];
        assert_eq!(left, 0);
        for (token, card) in &held {
            let d = pay.detokenize(token, "check").await;
            assert_eq!(d.status, 200, "{}", d.text());
            assert!(
                d.json()["card"]["number"] == card.as_str(),
                "detokenized number differs from {}",
                cards::masked(card)
            );
        }
        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

/// How many `erase` events the receipt's node and seq name in the shared log.
fn names_an_erase(pg: &PgServer, receipt: &serde_json::Value) -> i64 {
    let node = receipt["audit_node"].as_str().unwrap();
    assert!(
        node.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    );
    query_i64(
        pg,
        &format!(
            "SELECT count(*) FROM audit_events WHERE node = '{node}' AND seq = {} AND action = 'erase'",
            receipt["audit_seq"].as_u64().unwrap()
        ),
    )[0]
}

/// What an outsider checks of an erasure answer or receipt (`file`): the
/// verifier written from docs/audit-log.md accepts it and refuses it with another
/// node named, and it matches `schema` of docs/openapi.yaml (closed schemas).
async fn outside_checks(v: &BinVault, file: &std::path::Path, schema: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let test = "pg_cluster_erasure_vacuums_and_its_receipt_names_the_engine_and_residue";
    let python = |args: Vec<std::ffi::OsString>| {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.args(args);
        util::run_command(cmd, LIMIT)
    };
    if let Err(why) = crate::openapi::python_ready("cryptography, yaml, jsonschema") {
        util::tools::missing(test, &why);
        return;
    }
    let verifier = root.join("tests/verifier/verify.py");
    let pubkey = panvault_vault::DataDir::new(&v.data).audit_public_key();
    let out = python(vec![
        verifier.clone().into(),
        "receipt".into(),
        pubkey.clone().into(),
        file.into(),
    ])
    .await;
    assert!(
        out.success() && out.stdout.contains("of node "),
        "verify.py: {}\n{}",
        out.stdout,
        out.stderr
    );
    let forged = file.with_extension("forged.json");
    let text = std::fs::read_to_string(file).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = if j.get("receipt").is_some() {
        &mut j["receipt"]
    } else {
        &mut j
    };
    r["audit_node"] = serde_json::json!("node-x");
    std::fs::write(&forged, j.to_string()).unwrap();
    let out = python(vec![
        verifier.into(),
        "receipt".into(),
        pubkey.into(),
        forged.into(),
    ])
    .await;
    assert!(
        !out.success() && out.stderr.contains("REJECTED"),
        "verify.py accepted another node: {}\n{}",
        out.stdout,
        out.stderr
    );
    let check = "import json, sys, yaml, jsonschema\n\
                 spec = yaml.safe_load(open(sys.argv[1]))\n\
                 schema = {'$ref': '#/components/schemas/' + sys.argv[3], 'components': spec['components']}\n\
                 jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))\n";
    let out = python(vec![
        "-c".into(),
        check.into(),
        root.join("docs/openapi.yaml").into(),
        file.into(),
        schema.into(),
    ])
    .await;
    assert!(
        out.success(),
        "{} does not match {schema} of docs/openapi.yaml: {}",
        file.display(),
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cluster_erasure_vacuums_and_its_receipt_names_the_engine_and_residue() {
    let Some(pg) =
        PgServer::start("pg_cluster_erasure_vacuums_and_its_receipt_names_the_engine_and_residue")
    else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let sf_a = v.client(a.addr, "storefront");
        let sf_b = v.client(b.addr, "storefront");
        let body = |card: &str, subject: &str| {
            serde_json::json!({"card": {"number": card, "exp_month": 12,
                "exp_year": util::this_year() + 4}, "subject": subject})
        };
        for subject in ["cust-erase-api", "cust-erase-cli"] {
            let r = sf_a
                .post("/v1/tokens", &body(&cards::fresh(), subject))
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
        }

        // Erased through node B's API: VACUUM ran and is recorded, the receipt
        // names PostgreSQL and its residue, and verifies as it came.
        let e = sf_b
            .post("/v1/subjects/cust-erase-api/erase", &serde_json::json!({}))
            .await;
        assert_eq!(e.status, 200, "{}", e.text());
        let j = e.json();
        assert_eq!(j["receipt"]["tokens_erased"], 1, "{}", e.text());
        assert_eq!(j["receipt"]["format"], "panvault-erasure-receipt-v3");
        assert_eq!(j["receipt"]["engine"], "postgresql");
        // Each node has a chain of its own: the receipt names B's, and the
        // event at its seq there is the erasure.
        assert_eq!(j["receipt"]["audit_node"], "node-b", "{}", e.text());
        assert_eq!(names_an_erase(&pg, &j["receipt"]), 1);
        let residue = j["receipt"]["residue"].as_str().unwrap();
        for words in ["ciphertext", "WAL", "backups", "destroyed", "vacuum"] {
            assert!(
                residue.contains(words),
                "residue says nothing of {words}: {residue}"
            );
        }
        assert_eq!(
            j["wal_scrubbed"],
            true,
            "the VACUUM did not run: {}",
            e.text()
        );
        let answer = tmp.path().join("answer.json");
        std::fs::write(&answer, e.text()).unwrap();
        outside_checks(&v, &answer, "ErasureAnswer").await;
        let out = v
            .run(
                &["audit", "verify-receipt", answer.to_str().unwrap()],
                false,
                LIMIT,
            )
            .await;
        assert!(
            out.success(),
            "verify-receipt: {}\n{}",
            out.stdout,
            out.stderr
        );
        let vacuumed = query_i64(
            &pg,
            "SELECT count(*) FROM erasure_requests WHERE vacuumed_at IS NOT NULL",
        )[0];
        assert_eq!(
            vacuumed, 1,
            "vacuumed_at not recorded for the API's erasure"
        );

        // Erased from the CLI while both nodes run: the same.
        let receipt = tmp.path().join("receipt.json");
        let out = v
            .run(
                &[
                    "erase",
                    "--tenant",
                    "demo-shop",
                    "--subject",
                    "cust-erase-cli",
                    "--output",
                    receipt.to_str().unwrap(),
                ],
                true,
                LIMIT,
            )
            .await;
        assert!(out.success(), "erase: {}\n{}", out.stdout, out.stderr);
        let text = std::fs::read_to_string(&receipt).unwrap();
        assert!(text.contains("\"engine\":\"postgresql\""), "{text}");
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            r["audit_node"].as_str().unwrap().starts_with("admin-"),
            "{text}"
        );
        assert_eq!(names_an_erase(&pg, &r), 1);
        outside_checks(&v, &receipt, "ErasureReceipt").await;
        let out = v
            .run(
                &["audit", "verify-receipt", receipt.to_str().unwrap()],
                false,
                LIMIT,
            )
            .await;
        assert!(
            out.success(),
            "verify-receipt: {}\n{}",
            out.stdout,
            out.stderr
        );
        let open = query_i64(
            &pg,
            "SELECT count(*) FROM erasure_requests WHERE vacuumed_at IS NULL",
        )[0];
        assert_eq!(open, 0, "vacuumed_at not recorded for the CLI's erasure");

        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cluster_database_restarted_under_load_two_nodes_503_reconnect_and_lose_nothing() {
    let Some(mut pg) = PgServer::start(
        "pg_cluster_database_restarted_under_load_two_nodes_503_reconnect_and_lose_nothing",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let b = node(&v, "node-b").await;
        let load = Load::start(
            [&a, &b, &a, &b]
                .iter()
                .map(|n| v.client(n.addr, "storefront"))
                .collect(),
        );
        load.acked_at_least(40).await;

        // A restart (fast shutdown, start again) while both nodes are loaded.
        tokio::task::block_in_place(|| pg.restart());
        let back = Instant::now();
        for n in [&a, &b] {
            health(&v.client(n.addr, "payments"), 200).await;
        }
        load.acked_at_least(load.acked() + 40).await;
        eprintln!(
            "pg_cluster: both nodes healthy and acknowledging {} ms after the restart",
            back.elapsed().as_millis()
        );
        let seen = load.stop().await;
        eprintln!(
            "pg_cluster: {} acknowledged, {} refused with 503, longest wait {:?}",
            seen.acked.len(),
            seen.refused.len(),
            seen.longest
        );
        check_told_the_truth(
            seen,
            &v.client(b.addr, "storefront"),
            &v.client(a.addr, "payments"),
        )
        .await;
        stop_and_verify(&v, [a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_cluster_connections_broken_mid_batch_tell_each_caller_whether_it_committed() {
    let Some(pg) = PgServer::start(
        "pg_cluster_connections_broken_mid_batch_tell_each_caller_whether_it_committed",
    ) else {
        return;
    };
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create_pg(tmp.path(), &pg.url("disable"));
        let a = node(&v, "node-a").await;
        let load = Load::start((0..8).map(|_| v.client(a.addr, "storefront")).collect());
        load.acked_at_least(40).await;

        // Every connection of the node is terminated by the server, again and
        // again, while its writer commits batches of several callers.
        let settings = panvault_vault::store::pg::PgSettings::from_url(&pg.url("disable")).unwrap();
        let mut killed = 0;
        for _ in 0..15 {
            killed += tokio::task::block_in_place(|| {
                let mut c = panvault_vault::store::pg::connect(&settings).unwrap();
                c.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                     AND datname = current_database()",
                    &[],
                )
                .unwrap()
                .len()
            });
            load.acked_at_least(load.acked() + 5).await;
        }
        assert!(killed > 0, "no connection was terminated");
        let seen = load.stop().await;
        eprintln!(
            "pg_cluster: {killed} connections terminated; {} acknowledged, {} refused with 503",
            seen.acked.len(),
            seen.refused.len()
        );
        let sf = v.client(a.addr, "storefront");
        let pay = v.client(a.addr, "payments");
        check_told_the_truth(seen, &sf, &pay).await;
        stop_and_verify(&v, [a]).await;
    })
    .await;
}
