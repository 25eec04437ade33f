//! What an outsider verifies: a vault's export and an erasure receipt, checked by
//! `tests/verifier/verify.py` (written from docs/audit-log.md alone, Python with
//! `cryptography`) and by `panvault audit verify --export` on a machine with no
//! vault. Both must accept the genuine evidence and reject every tampering.

use std::path::{Path, PathBuf};
use std::time::Duration;

use panvault_audit::log::{
    Action, Actor, AuditChain, ChainHash, DEFAULT_RETENTION, NewEvent, Outcome, SigningKey, prune,
    read_events,
};
use serde_json::{Value, json};

use crate::util::{self, CmdOutput, TestServer, cards, panvault_bin, run_command, this_year};

const LIMIT: Duration = Duration::from_secs(60);

fn verifier() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/verifier/verify.py")
}

/// `python3` with `cryptography`, or why not.
fn python_ready() -> Result<(), String> {
    match std::process::Command::new("python3")
        .args([
            "-c",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
        ])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 has no `cryptography` ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("no python3 ({e})")),
    }
}

async fn python(args: &[&Path]) -> CmdOutput {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(verifier()).args(args);
    run_command(cmd, LIMIT).await
}

/// `python3 verify.py export PUBKEY FILE [KEPT]`.
async fn py_export(pubkey: &Path, file: &Path, kept: Option<&Path>) -> CmdOutput {
    let mut args = vec![Path::new("export"), pubkey, file];
    args.extend(kept);
    python(&args).await
}

/// `panvault audit verify --export FILE --pubkey KEY [--checkpoint KEPT]`, run in
/// an empty directory with no data directory anywhere.
async fn pv_export(nowhere: &Path, pubkey: &Path, file: &Path, kept: Option<&Path>) -> CmdOutput {
    let mut cmd = tokio::process::Command::new(panvault_bin());
    cmd.current_dir(nowhere)
        .args(["audit", "verify", "--export"])
        .arg(file)
        .arg("--pubkey")
        .arg(pubkey);
    if let Some(k) = kept {
        cmd.arg("--checkpoint").arg(k);
    }
    run_command(cmd, LIMIT).await
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn is(line: &Value, kind: &str) -> bool {
    line["type"] == kind
}

/// Exports `data`'s log with the binary into `out`.
async fn export(data: &Path, out: &Path) {
    let mut cmd = tokio::process::Command::new(panvault_bin());
    cmd.args(["audit", "export", "--data-dir"])
        .arg(data)
        .arg("--output")
        .arg(out);
    let o = run_command(cmd, LIMIT).await;
    assert!(o.success(), "audit export failed: {}", o.stderr);
}

/// A copy of the database where, as an attacker with write access but not the
/// key would, event `seq` gets another purpose and every hash from it on is
/// recomputed (the chain is consistent again; only a signed head can tell).
fn rewritten_copy(db: &Path, dir: &Path, seq: u64) -> PathBuf {
    let data = dir.join("rewritten");
    std::fs::create_dir_all(&data).unwrap();
    let copy = data.join("vault.db");
    let src = rusqlite::Connection::open(db).unwrap();
    src.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    drop(src);
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute(
        "UPDATE audit_events SET purpose = 'rewritten' WHERE seq = ?1",
        [i64::try_from(seq).unwrap()],
    )
    .unwrap();
    let scratch = rusqlite::Connection::open_in_memory().unwrap();
    panvault_audit::log::migrate(&scratch).unwrap();
    let mut chain = AuditChain::load(&scratch).unwrap();
    let mut prev = ChainHash::GENESIS;
    for ev in read_events(&conn, 1, usize::MAX).unwrap() {
        assert_eq!(chain.append(&scratch, &ev.event).unwrap(), ev.seq);
        let hash = chain.head();
        if ev.seq >= seq {
            conn.execute(
                "UPDATE audit_events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![&prev.0[..], &hash.0[..], i64::try_from(ev.seq).unwrap()],
            )
            .unwrap();
        }
        prev = hash;
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_verifier_accepts_genuine_evidence_and_rejects_tampering() {
    if let Err(why) = python_ready() {
        util::tools::missing(
            "outside_verifier_accepts_genuine_evidence_and_rejects_tampering",
            &why,
        );
        return;
    }
    let server = TestServer::start().await;
    let storefront = server.client("storefront");
    let payments = server.client("payments");
    let year = this_year() + 2;
    let mut tokens = Vec::new();
    for subject in ["cust_a", "cust_a", "cust_b"] {
        let r = storefront
            .post(
                "/v1/tokens",
                &json!({"card": {"number": cards::fresh(), "exp_month": 4, "exp_year": year}, "subject": subject}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        tokens.push(r.json()["token"].as_str().unwrap().to_owned());
    }
    assert_eq!(payments.detokenize(&tokens[2], "refund").await.status, 200);
    let erased = storefront
        .post("/v1/subjects/cust_a/erase", &json!({}))
        .await;
    assert_eq!(erased.status, 200, "{}", erased.text());
    let answer = erased.json();
    assert_eq!(answer["receipt"]["tokens_erased"], 2);
    let data = server.config.data_dir.clone();
    let db = data.join("vault.db");
    let pubkey = data.join("audit-signing.pub");
    let work = tempfile::tempdir().unwrap();
    let nowhere = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    // An admin signs a checkpoint over everything so far (the server keeps
    // running): every event above is covered by a signature.
    std::fs::write(w("pass"), format!("{}\n", server.passphrase)).unwrap();
    let mut cmd = tokio::process::Command::new(panvault_bin());
    cmd.args(["audit", "checkpoint", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(w("pass"));
    let o = run_command(cmd, LIMIT).await;
    assert!(o.success(), "audit checkpoint: {}", o.stderr);

    // The receipt, alone and as the erase endpoint answered.
    std::fs::write(w("answer.json"), answer.to_string()).unwrap();
    std::fs::write(w("receipt.json"), answer["receipt"].to_string()).unwrap();
    for f in ["answer.json", "receipt.json"] {
        let o = python(&[Path::new("receipt"), &pubkey, &w(f)]).await;
        assert!(o.success(), "{f}: {}{}", o.stdout, o.stderr);
    }
    for (field, value) in [
        ("tokens_erased", json!(3)),
        ("tenant", json!("other-shop")),
        (
            "audit_seq",
            json!(answer["receipt"]["audit_seq"].as_u64().unwrap() + 1),
        ),
        (
            "subject_hash",
            json!(flip_first(
                answer["receipt"]["subject_hash"].as_str().unwrap()
            )),
        ),
        (
            "time",
            json!(
                answer["receipt"]["time"]
                    .as_str()
                    .unwrap()
                    .replace('Z', "+01:00")
            ),
        ),
    ] {
        let mut r = answer["receipt"].clone();
        r[field] = value;
        std::fs::write(w("forged.json"), r.to_string()).unwrap();
        let o = python(&[Path::new("receipt"), &pubkey, &w("forged.json")]).await;
        assert_eq!(
            o.status.code(),
            Some(1),
            "forged {field} accepted: {}",
            o.stdout
        );
        let mut cmd = tokio::process::Command::new(panvault_bin());
        cmd.current_dir(nowhere.path())
            .args(["audit", "verify-receipt"])
            .arg(w("forged.json"))
            .arg("--pubkey")
            .arg(&pubkey);
        assert_eq!(
            run_command(cmd, LIMIT).await.status.code(),
            Some(3),
            "{field}"
        );
    }

    // The genuine export: both verifiers accept it.
    let genuine = w("export.jsonl");
    export(&data, &genuine).await;
    let o = py_export(&pubkey, &genuine, None).await;
    assert!(
        o.success(),
        "verify.py rejected a genuine export: {}",
        o.stderr
    );
    let o = pv_export(nowhere.path(), &pubkey, &genuine, None).await;
    assert!(
        o.success(),
        "audit verify --export: {}{}",
        o.stdout,
        o.stderr
    );
    assert!(o.stdout.contains("audit log intact"), "{}", o.stdout);

    let lines = lines_of(&genuine);
    let events: Vec<usize> = (0..lines.len())
        .filter(|&i| is(&lines[i], "event"))
        .collect();
    let cps: Vec<usize> = (0..lines.len())
        .filter(|&i| is(&lines[i], "checkpoint"))
        .collect();
    assert!(events.len() >= 6, "{} events", events.len());
    assert!(cps.len() >= 2, "{} checkpoints", cps.len());
    // The vault's first event names the OS user who created it, as the docs
    // say (`admin:<login name>`, or `admin:uid:<n>` without one).
    assert_eq!(lines[events[0]]["action"], "init");
    assert_eq!(lines[events[0]]["actor"], json!(expected_admin()));
    let detok = *events
        .iter()
        .find(|&&i| lines[i]["action"] == "detokenize")
        .unwrap();
    let last_cp = &lines[*cps.last().unwrap()];
    let prev_cp_seq = lines[cps[cps.len() - 2]]["seq"].as_u64().unwrap();
    assert!(prev_cp_seq < last_cp["seq"].as_u64().unwrap());
    // A checkpoint kept elsewhere: the newest one, in the witness file's form.
    let kept = w("kept.jsonl");
    let mut kept_cp = last_cp.clone();
    let obj = kept_cp.as_object_mut().unwrap();
    obj.remove("type");
    obj.insert("format".into(), json!("panvault-audit-checkpoint-v1"));
    std::fs::write(&kept, format!("{kept_cp}\n")).unwrap();
    let o = py_export(&pubkey, &genuine, Some(&kept)).await;
    assert!(o.success(), "{}", o.stderr);
    let o = pv_export(nowhere.path(), &pubkey, &genuine, Some(&kept)).await;
    assert!(o.success(), "{}{}", o.stdout, o.stderr);

    // Each tampering, and whether it needs the kept checkpoint to be seen.
    let mut cases: Vec<(&str, Vec<Value>, bool)> = Vec::new();
    let mut t = lines.clone();
    t[detok]["purpose"] = json!("audit");
    cases.push(("an event modified", t, false));
    let mut t = lines.clone();
    t.remove(events[2]);
    cases.push(("an event deleted", t, false));
    let mut t = lines.clone();
    t.swap(events[1], events[2]);
    cases.push(("two events reordered", t, false));
    let mut t = lines.clone();
    let (a, b) = (t[events[1]]["seq"].clone(), t[events[2]]["seq"].clone());
    t[events[1]]["seq"] = b;
    t[events[2]]["seq"] = a;
    t.swap(events[1], events[2]);
    cases.push(("two events swapped with their seqs", t, false));
    let mut t = lines.clone();
    t.remove(cps[0]);
    cases.push(("checkpoint #1 removed", t, false));
    let mut t = lines.clone();
    t[cps[0]]["time"] = json!("2020-01-01T00:00:00Z");
    cases.push(("a checkpoint's time altered", t, false));
    // The newest checkpoint and the events it alone covers cut off: consistent
    // on its own, caught by the checkpoint kept elsewhere.
    let t: Vec<Value> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            *i != *cps.last().unwrap()
                && !(is(l, "event") && l["seq"].as_u64().unwrap() > prev_cp_seq)
        })
        .map(|(_, l)| l.clone())
        .collect();
    let o = py_export(&pubkey, &write_to(&w("cut.jsonl"), &t), None).await;
    assert!(
        o.success(),
        "a cut tail is consistent on its own: {}",
        o.stderr
    );
    cases.push(("the tail cut off with its checkpoint", t, true));
    // An attacker rewrote an event in the database and re-hashed the chain
    // after it, then exported: the export's checkpoints give it away.
    let rewritten = rewritten_copy(&db, work.path(), lines[detok]["seq"].as_u64().unwrap());
    std::fs::copy(&pubkey, rewritten.join("audit-signing.pub")).unwrap();
    export(&rewritten, &w("rewritten.jsonl")).await;
    cases.push((
        "an event rewritten and re-hashed",
        lines_of(&w("rewritten.jsonl")),
        false,
    ));

    for (what, tampered, needs_kept) in &cases {
        let file = write_to(&w("tampered.jsonl"), tampered);
        let k = needs_kept.then_some(kept.as_path());
        let o = py_export(&pubkey, &file, k).await;
        assert_eq!(
            o.status.code(),
            Some(1),
            "verify.py accepted: {what}: {}",
            o.stdout
        );
        assert!(o.stderr.contains("REJECTED"), "{what}: {}", o.stderr);
        let o = pv_export(nowhere.path(), &pubkey, &file, k).await;
        assert_eq!(
            o.status.code(),
            Some(3),
            "audit verify --export: {what}: {}{}",
            o.stdout,
            o.stderr
        );
        assert!(
            o.stderr.contains("broken at") || o.stderr.contains("not a verifiable audit export"),
            "{what}: {}",
            o.stderr
        );
    }
    server.stop().await;
}

/// A log whose oldest events were pruned under the retention policy: the
/// verifiers start at the signed prune record, and a forged or removed prune
/// record is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_verifier_follows_a_pruned_log() {
    if let Err(why) = python_ready() {
        util::tools::missing("outside_verifier_follows_a_pruned_log", &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nowhere = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[7; 32]).unwrap();
    let pubkey = dir.path().join("audit-signing.pub");
    key.public_key().write_to(&pubkey).unwrap();
    let now = time::OffsetDateTime::now_utc();
    {
        let mut conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        panvault_audit::log::migrate(&conn).unwrap();
        let mut chain = AuditChain::load(&conn).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..25i64 {
            let t = if i < 20 {
                now - time::Duration::days(800) + time::Duration::seconds(i)
            } else {
                now - time::Duration::minutes(30 - i)
            };
            let ev = NewEvent::new(t, Actor::admin("ops"), Action::Tokenize, Outcome::Success)
                .with_tenant("acme")
                .with_token(format!("tok_{i:020}"));
            chain.append(&tx, &ev).unwrap();
            if i % 10 == 9 || i == 24 {
                chain.checkpoint(&tx, &key, t).unwrap();
            }
        }
        let pruned = prune(&tx, &key, now, DEFAULT_RETENTION).unwrap();
        assert_eq!(pruned.deleted, 20);
        tx.commit().unwrap();
    }
    let genuine = dir.path().join("export.jsonl");
    export(dir.path(), &genuine).await;
    let lines = lines_of(&genuine);
    assert!(is(&lines[1], "prune"), "{}", lines[1]);
    let o = py_export(&pubkey, &genuine, None).await;
    assert!(
        o.success(),
        "verify.py rejected a pruned export: {}",
        o.stderr
    );
    let o = pv_export(nowhere.path(), &pubkey, &genuine, None).await;
    assert!(o.success(), "{}{}", o.stdout, o.stderr);

    let mut forged = lines.clone();
    forged[1]["deleted"] = json!(19);
    let mut removed = lines.clone();
    removed.remove(1);
    for (what, t) in [
        ("a prune record altered", forged),
        ("the prune record removed", removed),
    ] {
        let file = write_to(&dir.path().join("tampered.jsonl"), &t);
        let o = py_export(&pubkey, &file, None).await;
        assert_eq!(o.status.code(), Some(1), "verify.py accepted: {what}");
        let o = pv_export(nowhere.path(), &pubkey, &file, None).await;
        assert_eq!(
            o.status.code(),
            Some(3),
            "audit verify --export accepted: {what}"
        );
    }
}

/// `admin:<login name>` of this process's real uid per `id`, or `admin:uid:<n>`.
fn expected_admin() -> String {
    let id = |arg: &str| {
        let o = std::process::Command::new("id").arg(arg).output().unwrap();
        o.status
            .success()
            .then(|| String::from_utf8(o.stdout).unwrap().trim().to_owned())
    };
    match id("-run") {
        Some(name) => format!("admin:{name}"),
        None => format!("admin:uid:{}", id("-ru").unwrap()),
    }
}

/// The same hex with its first digit changed.
fn flip_first(hex: &str) -> String {
    let first = if hex.starts_with('0') { "1" } else { "0" };
    format!("{first}{}", &hex[1..])
}

fn write_to(path: &Path, lines: &[Value]) -> PathBuf {
    write_lines(path, lines);
    path.to_owned()
}
