//! The root key, its seal and the data keys administered with the real binary while
//! a real server runs: `master rotate` refuses while the server holds the vault;
//! rotate → rewrap → retire → destroy never leaves the server sealing under an old
//! key; `change-passphrase` does not disturb it; `master reshare` commits a new
//! share set only once its shares are stored; the audit actor is the real user;
//! admin commands apply the server's process hygiene.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{self, BinVault, Client, ServeProcess, cards};

const LIMIT: Duration = Duration::from_secs(60);

/// Tokenizes a fresh card; returns (token, card, key version). A 503 (keys being
/// reloaded) is retried, anything else fails the test.
async fn tokenize(sf: &Client) -> (String, String, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let card = cards::fresh();
        let r = sf.tokenize(&card).await;
        if r.status == 503 {
            assert!(Instant::now() < deadline, "503 for 10 s: {}", r.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(r.status, 201, "{}", r.text());
        let j = r.json();
        return (
            j["token"].as_str().unwrap().to_owned(),
            card,
            j["key_version"].as_u64().unwrap(),
        );
    }
}

async fn assert_detokenizes(payments: &Client, held: &[(String, String)]) {
    for (token, card) in held {
        let d = payments.detokenize(token, "check").await;
        assert_eq!(d.status, 200, "{}", d.text());
        assert!(
            d.json()["card"]["number"] == card.as_str(),
            "detokenized number differs from {}",
            cards::masked(card)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_rotate_is_refused_while_the_server_runs_and_works_once_it_stopped() {
    util::within(Duration::from_secs(240), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let server = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(server.addr, "storefront");
        let payments = v.client(server.addr, "payments");
        let (t, c, _) = tokenize(&sf).await;
        let mut held = vec![(t, c)];

        let out = v.run(&["master", "rotate"], true, LIMIT).await;
        assert!(!out.success(), "{}", out.stdout);
        assert!(
            out.stderr
                .contains("stop it, run `panvault master rotate`, start it again"),
            "{}",
            out.stderr
        );
        // The vault goes on as before.
        let (t, c, version) = tokenize(&sf).await;
        assert_eq!(version, 1);
        held.push((t, c));
        assert_detokenizes(&payments, &held).await;
        assert!(server.terminate().await.success());

        let out = v.run(&["master", "rotate"], true, LIMIT).await;
        assert!(out.success(), "{}", out.stderr);
        assert!(
            out.stdout.contains("New root key in place")
                && out.stdout.contains("re-wrapped 1 data key(s) and "),
            "{}",
            out.stdout
        );

        let server = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(server.addr, "storefront");
        let payments = v.client(server.addr, "payments");
        let (t, c, _) = tokenize(&sf).await;
        held.push((t, c));
        assert_detokenizes(&payments, &held).await;
        assert!(server.terminate().await.success());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_rotated_retired_and_destroyed_under_a_running_server() {
    util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let server = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(server.addr, "storefront");
        let payments = v.client(server.addr, "payments");
        let mut held = Vec::new();
        for _ in 0..5 {
            let (t, c, version) = tokenize(&sf).await;
            assert_eq!(version, 1);
            held.push((t, c));
        }

        let out = v.run(&["keys", "rotate"], true, LIMIT).await;
        assert!(out.success(), "{}", out.stderr);
        // From the moment the rotation committed, nothing is sealed under v1: an
        // answer is v2, or a 503 while the server loads the new key.
        for _ in 0..5 {
            let (t, c, version) = tokenize(&sf).await;
            assert_eq!(version, 2, "sealed under a key that is no longer active");
            held.push((t, c));
        }
        for args in [
            &["keys", "rewrap", "--quiet"][..],
            &["keys", "retire", "--version", "1"],
        ] {
            let out = v.run(args, true, LIMIT).await;
            assert!(out.success(), "{args:?}: {}", out.stderr);
        }
        let out = v
            .run(&["keys", "destroy", "--version", "1"], true, LIMIT)
            .await;
        assert!(out.success(), "{}", out.stderr);
        // It says what destroying a key does not do.
        for said in [
            "Backups made before still hold this key",
            "change the passphrase",
            "destroy every copy of the old passphrase or shares",
        ] {
            assert!(out.stdout.contains(said), "{said:?} in {}", out.stdout);
        }
        let (t, c, version) = tokenize(&sf).await;
        assert_eq!(version, 2);
        held.push((t, c));
        assert_detokenizes(&payments, &held).await;

        // A new passphrase keeps the root key: the running server does not notice.
        let new_pass = tmp.path().join("new-pass");
        std::fs::write(&new_pass, "a brand new e2e passphrase\n").unwrap();
        let out = v
            .run(
                &[
                    "master",
                    "change-passphrase",
                    "--new-passphrase-file",
                    new_pass.to_str().unwrap(),
                ],
                true,
                LIMIT,
            )
            .await;
        assert!(out.success(), "{}", out.stderr);
        let (t, c, version) = tokenize(&sf).await;
        assert_eq!(version, 2);
        held.push((t, c));
        assert_detokenizes(&payments, &held).await;
        assert!(server.terminate().await.success());

        // After a restart with the new passphrase, everything is still there.
        std::fs::copy(&new_pass, &v.pass).unwrap();
        let server = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(server.addr, "storefront");
        let payments = v.client(server.addr, "payments");
        let (t, c, version) = tokenize(&sf).await;
        assert_eq!(version, 2);
        held.push((t, c));
        assert_detokenizes(&payments, &held).await;
        assert!(server.terminate().await.success());
    })
    .await;
}

/// `panvault ARGS --data-dir DIR`, no passphrase; (success, stdout + stderr).
async fn panvault(args: &[&str], dir: &Path) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(args).arg("--data-dir").arg(dir);
    let out = util::run_command(cmd, LIMIT).await;
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

fn share_args(dir: &Path, numbers: &[u8], args: &mut Vec<String>) {
    for n in numbers {
        args.push("--share".into());
        args.push(dir.join(format!("share-{n}")).display().to_string());
    }
}

async fn keys_list_with(data: &Path, shares: &Path, numbers: &[u8]) -> (bool, String) {
    let mut args: Vec<String> = vec!["keys".into(), "list".into()];
    share_args(shares, numbers, &mut args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    panvault(&args, data).await
}

async fn reshare(data: &Path, with: &Path, into: &Path) -> (bool, String) {
    let mut args: Vec<String> = [
        "master",
        "reshare",
        "--custodians",
        "3",
        "--threshold",
        "2",
        "--shares-dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(into.display().to_string());
    share_args(with, &[1, 2], &mut args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    panvault(&args, data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_that_cannot_store_its_shares_changes_nothing() {
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("v");
        let old = tmp.path().join("old");
        let (ok, out) = panvault(
            &[
                "init",
                "--custodians",
                "3",
                "--threshold",
                "2",
                "--shares-dir",
                old.to_str().unwrap(),
            ],
            &data,
        )
        .await;
        assert!(ok, "{out}");

        // A directory that already holds a share: refused before anything changes.
        let busy = tmp.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("share-1"), "a custodian's share\n").unwrap();
        let (ok, out) = reshare(&data, &old, &busy).await;
        assert!(!ok, "{out}");
        assert!(out.contains("is not empty"), "{out}");
        assert!(out.contains("nothing was changed"), "{out}");
        assert_eq!(
            std::fs::read_to_string(busy.join("share-1")).unwrap(),
            "a custodian's share\n"
        );
        assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
        let (ok, out) = keys_list_with(&data, &old, &[1, 3]).await;
        assert!(ok, "the old shares must still open the vault: {out}");

        // A new directory: three shares that open the vault; the old ones no longer do.
        let fresh = tmp.path().join("fresh");
        let (ok, out) = reshare(&data, &old, &fresh).await;
        assert!(ok, "{out}");
        let mut names: Vec<String> = std::fs::read_dir(&fresh)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["share-1", "share-2", "share-3"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(fresh.join("share-2"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (ok, out) = keys_list_with(&data, &fresh, &[2, 3]).await;
        assert!(ok, "{out}");
        let (ok, out) = keys_list_with(&data, &old, &[1, 2]).await;
        assert!(!ok && out.contains("generation"), "{out}");
        // No temporary directory left beside it.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // An existing empty directory is fine too.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let (ok, out) = reshare(&data, &fresh, &empty).await;
        assert!(ok, "{out}");
        let (ok, out) = keys_list_with(&data, &empty, &[1, 3]).await;
        assert!(ok, "{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_actor_is_the_real_user_not_user() {
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let mut cmd = tokio::process::Command::new(util::panvault_bin());
        cmd.args(["keys", "rotate", "--data-dir"])
            .arg(&v.data)
            .arg("--passphrase-file")
            .arg(&v.pass)
            .env("USER", "mallory")
            .env("LOGNAME", "mallory");
        let out = util::run_command(cmd, LIMIT).await;
        assert!(out.success(), "{}", out.stderr);
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        assert!(id.status.success());
        let me = String::from_utf8(id.stdout).unwrap().trim().to_owned();
        assert!(!me.is_empty() && me != "mallory");
        let actor: String = rusqlite::Connection::open(v.db())
            .unwrap()
            .query_row(
                "SELECT actor FROM audit_events WHERE action = 'key.rotate'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(actor, format!("admin:{me}"));
    })
    .await;
}

/// An admin command is hardened before it reads the passphrase: its passphrase
/// file is a FIFO, so the command waits on it while the test looks at its limits.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_disables_core_dumps_before_reading_the_secret() {
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let fifo = tmp.path().join("pass.fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        // Core dumps allowed to start with (soft limit raised by the shell).
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -S -c unlimited && exec \"$0\" \"$@\"")
            .arg(util::panvault_bin())
            .args(["keys", "list", "--data-dir"])
            .arg(&v.data)
            .arg("--passphrase-file")
            .arg(&fifo)
            .env_remove("PANVAULT_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        // Opening the FIFO for writing returns once the command opened it to read.
        let writer = {
            let fifo = fifo.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
            })
            .await
            .unwrap()
        };
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap()
            .to_owned();
        {
            use std::io::Write;
            let mut writer = writer;
            writeln!(writer, "{}", util::BIN_PASSPHRASE).unwrap();
        }
        let out = util::kept(child.wait_with_output().await.unwrap());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let soft: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(soft.get(4), Some(&"0"), "{core}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_cannot_store_its_shares_leaves_no_vault() {
    util::within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("v");
        let init = |shares: &Path| {
            vec![
                "init".to_owned(),
                "--custodians".into(),
                "3".into(),
                "--threshold".into(),
                "2".into(),
                "--shares-dir".into(),
                shares.display().to_string(),
            ]
        };
        // Not a directory (and, below it, not even a possible path).
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "something else\n").unwrap();
        for target in [file.clone(), file.join("shares")] {
            let args = init(&target);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out) = panvault(&args, &data).await;
            assert!(!ok, "{out}");
            assert!(
                !data.join("vault.db").exists(),
                "a vault without shares was left behind: {out}"
            );
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "something else\n");
        // Nothing is in the way of doing it right.
        let shares = tmp.path().join("shares");
        let args = init(&shares);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = panvault(&args, &data).await;
        assert!(ok, "{out}");
        let (ok, out) = keys_list_with(&data, &shares, &[1, 2]).await;
        assert!(ok, "{out}");
    })
    .await;
}
