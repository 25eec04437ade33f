//! The key commands through the real binary: `keys rotate --if-older-than` (for
//! cron), and a share-sealed vault driven with `--share`.

use std::process::Stdio;

use tokio::process::Command;

use crate::util;

async fn panvault(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(util::panvault_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("PANVAULT_PASSPHRASE", "cron-test-passphrase")
        .stdin(Stdio::null())
        .output()
        .await
        .map(util::kept)
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_if_older_than_only_rotates_old_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let (ok, out) = panvault(&["init"], &dir).await;
    assert!(ok, "{out}");
    let (ok, out) = panvault(&["keys", "rotate", "--if-older-than", "365d"], &dir).await;
    assert!(ok && out.contains("not rotated"), "{out}");
    let (ok, out) = panvault(&["keys", "rotate", "--if-older-than", "0d"], &dir).await;
    assert!(ok && out.contains("v2 is now active"), "{out}");
    let (ok, out) = panvault(&["keys", "rotate", "--if-older-than", "soon"], &dir).await;
    assert!(
        !ok && out.contains("expected a number with d, w or h"),
        "{out}"
    );
    let (ok, out) = panvault(&["keys", "list", "--json"], &dir).await;
    assert!(ok);
    let keys: serde_json::Value = serde_json::from_str(out.trim_end_matches(|c| c != ']')).unwrap();
    assert_eq!(keys[1]["state"], "active");
    assert_eq!(keys[0]["state"], "decrypt_only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_sealed_vault_needs_its_threshold_of_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let shares = tmp.path().join("shares");
    let sh = shares.to_str().unwrap();
    let (ok, out) = panvault(
        &[
            "init",
            "--custodians",
            "3",
            "--threshold",
            "2",
            "--shares-dir",
            sh,
        ],
        &dir,
    )
    .await;
    assert!(ok, "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(shares.join("share-1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let s1 = shares.join("share-1");
    let s3 = shares.join("share-3");
    let (ok, out) = panvault(
        &[
            "keys",
            "list",
            "--share",
            s1.to_str().unwrap(),
            "--share",
            s3.to_str().unwrap(),
        ],
        &dir,
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = panvault(&["keys", "list", "--share", s1.to_str().unwrap()], &dir).await;
    assert!(!ok && out.contains("needed"), "{out}");
    // no shares and no terminal: a clear message, not a passphrase prompt
    let (ok, out) = panvault(&["keys", "rotate"], &dir).await;
    assert!(!ok && out.contains("--share"), "{out}");
    // reshare, then the old shares no longer work
    let fresh = tmp.path().join("fresh");
    let (ok, out) = panvault(
        &[
            "master",
            "reshare",
            "--custodians",
            "2",
            "--threshold",
            "2",
            "--shares-dir",
            fresh.to_str().unwrap(),
            "--share",
            s1.to_str().unwrap(),
            "--share",
            s3.to_str().unwrap(),
        ],
        &dir,
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = panvault(
        &[
            "keys",
            "list",
            "--share",
            s1.to_str().unwrap(),
            "--share",
            s3.to_str().unwrap(),
        ],
        &dir,
    )
    .await;
    assert!(!ok && out.contains("generation"), "{out}");
    let f1 = fresh.join("share-1");
    let f2 = fresh.join("share-2");
    let (ok, out) = panvault(
        &[
            "keys",
            "list",
            "--share",
            f1.to_str().unwrap(),
            "--share",
            f2.to_str().unwrap(),
        ],
        &dir,
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = panvault(&["audit", "verify"], &dir).await;
    assert!(ok, "{out}");
}
