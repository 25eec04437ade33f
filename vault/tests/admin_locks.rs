//! Admin commands sharing the database with each other and with a running vault:
//! a rotation during a rewrap, two commands wanting the write lock at once, a WAL
//! truncation blocked by a reader and finished later by the server, the WAL's size
//! during a long rewrap.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use panvault_vault::service::EraseTarget;
use panvault_vault::{
    AccessContext, Admin, KeyState, TokenizeRequest, Vault, VaultError, system_clock,
};

mod common;
use common::{card, contains, init, pass, rt_multi as rt};

fn ctx() -> AccessContext {
    common::ctx_of("admin:test")
}

/// Tokenizes `n` cards (expiring 12/`year`) in tenant `shop` and closes the vault.
fn populate(dir: &Path, n: u64, year: i64) {
    let v = Vault::open(dir, &pass()).unwrap();
    rt().block_on(async {
        let mut i = 0;
        while i < n {
            let k = (n - i).min(1000);
            let items = (i..i + k)
                .map(|j| TokenizeRequest::new(&card(j), 12, year, v.today()))
                .collect();
            for r in v.tokenize_batch("shop", items, &ctx()).await.unwrap() {
                r.unwrap();
            }
            i += k;
        }
    });
    v.shutdown();
}

fn records_by_version(admin: &Admin) -> Vec<(u32, KeyState, i64)> {
    admin
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.state, k.records))
        .collect()
}

/// A `keys rotate` committed while a rewrap runs: the rewrap's next batch follows
/// the new active key, and it finishes with every record under it (before, it kept
/// encrypting under the key active when it started, now decrypt-only).
#[test]
fn a_rotation_during_a_rewrap_is_followed_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    populate(dir.path(), 3000, 2031);
    let mut a = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    assert_eq!(a.rotate(&ctx()).unwrap(), 2);
    let mut b = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    let mut rotated = None;
    let summary = a
        .rewrap(&ctx(), 100, None, |p| {
            if rotated.is_none() && p.done >= 500 {
                rotated = Some(b.rotate(&ctx()).unwrap());
            }
        })
        .unwrap();
    assert_eq!(rotated, Some(3), "the rewrap ended before the rotation");
    assert_eq!(summary.active_version, 3);
    assert_eq!(summary.remaining, 0);
    assert!(summary.rewrapped >= 3000, "{}", summary.rewrapped);
    assert_eq!(
        records_by_version(&a),
        vec![
            (1, KeyState::DecryptOnly, 0),
            (2, KeyState::DecryptOnly, 0),
            (3, KeyState::Active, 3000)
        ]
    );
    // and the records open under v3
    let v = Vault::open(dir.path(), &pass()).unwrap();
    v.shutdown();
}

/// Holds the write lock from another connection for `hold`, as another admin
/// command's long transaction would; returns once it has the lock.
fn hold_write_lock(db: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.to_owned();
    let h = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        tx.send(()).unwrap();
        // the holder's own duration, not a synchronisation
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    rx.recv().unwrap();
    h
}

/// `retention run` while another process holds the write lock for longer than
/// SQLite's 5 s busy timeout: it waits and then purges (before, it failed with a
/// bare `DatabaseBusy` and left the expired cards); with a shorter wait it gives up
/// with an error that says who holds the lock, which the CLI maps to exit 75.
#[test]
fn an_admin_command_waits_for_the_write_lock_then_gives_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    populate(dir.path(), 50, 2030);
    let db = dir.path().join("vault.db");
    // Ten years on, every card is past expiry + grace.
    let later: panvault_vault::Clock =
        Arc::new(|| time::OffsetDateTime::now_utc() + time::Duration::days(3650));
    let mut admin = Admin::open(dir.path(), &pass(), later).unwrap();

    let holder = hold_write_lock(&db, Duration::from_millis(6500));
    let report = admin.purge_retention(&ctx(), 90, false).unwrap();
    holder.join().unwrap();
    assert_eq!(report.past_expiry, 50);
    assert_eq!(admin.records_not_under_active().unwrap(), 0);
    let left: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);

    admin.set_lock_wait(Duration::from_secs(1));
    let holder = hold_write_lock(&db, Duration::from_secs(3));
    let err = admin.rotate(&ctx()).unwrap_err();
    holder.join().unwrap();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string()
            .contains("another admin command or the server"),
        "{err}"
    );
    // nothing half-done: the rotation simply did not happen
    assert_eq!(admin.rotate(&ctx()).unwrap(), 2);
}

/// Two rewraps at once share the lock and both finish, with every record under the
/// active key.
#[test]
fn two_rewraps_at_once_both_finish() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    populate(dir.path(), 4000, 2031);
    let mut a = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    a.rotate(&ctx()).unwrap();
    let path = dir.path().to_owned();
    let other = std::thread::spawn(move || {
        let mut b = Admin::open(&path, &pass(), system_clock()).unwrap();
        b.rewrap(&ctx(), 1000, None, |_| {}).map(|s| s.remaining)
    });
    let mine = a.rewrap(&ctx(), 1000, None, |_| {}).unwrap();
    assert_eq!(other.join().unwrap().unwrap(), 0);
    assert_eq!(mine.remaining, 0);
    assert_eq!(a.records_not_under_active().unwrap(), 0);
}

/// An erasure whose WAL truncation a reader blocks says so (before, it claimed the
/// WAL was scrubbed) and marks the vault; once the reader is gone, a running
/// vault's checkpointer truncates the WAL, clears the mark and records when, and
/// the erased metadata is in neither file.
#[test]
fn a_blocked_wal_scrub_is_reported_and_finished_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let db = dir.path().join("vault.db");
    let wal = dir.path().join("vault.db-wal");
    let marker = "erase-me-wal-marker";
    let v = Vault::open(dir.path(), &pass()).unwrap();
    rt().block_on(async {
        for i in 0..20 {
            let mut req = TokenizeRequest::new(&card(i), 12, 2031, v.today()).unwrap();
            req.subject = Some("cust-wal".into());
            req.metadata = Some(
                serde_json::json!({ "note": marker })
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            v.tokenize("shop", req, &ctx()).await.unwrap();
        }
    });
    assert!(contains(&std::fs::read(&wal).unwrap(), marker.as_bytes()));

    // A reader holding a snapshot that still sees the rows.
    let reader = rusqlite::Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);

    let mut admin = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    let erasure = admin
        .erase(&ctx(), "shop", &EraseTarget::Subject("cust-wal".into()))
        .unwrap();
    assert_eq!(erasure.receipt.tokens_erased, 20);
    assert!(!erasure.wal_scrubbed, "the WAL was reported scrubbed");
    assert_eq!(admin.wal_scrubbed(), Some(false));
    let meta = |key: &str| -> Option<String> {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .ok()
    };
    assert!(meta("wal_scrub_pending").is_some());
    let scrubbed_at = || -> Option<i64> {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT wal_scrubbed_at FROM erasure_requests ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(scrubbed_at(), None);
    assert!(contains(&std::fs::read(&wal).unwrap(), marker.as_bytes()));

    // The reader goes; the running vault's checkpointer finishes the scrub.
    drop(reader);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while meta("wal_scrub_pending").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never truncated the WAL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(meta("wal_scrubbed_at").is_some());
    assert!(scrubbed_at().is_some());
    assert!(!contains(&std::fs::read(&wal).unwrap(), marker.as_bytes()));
    assert!(!contains(&std::fs::read(&db).unwrap(), marker.as_bytes()));
    v.shutdown();
}

/// A long rewrap with no server running keeps the WAL near its restart bound
/// (before, the admin connection never checkpointed and the WAL held every batch).
#[test]
fn a_long_rewrap_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    populate(dir.path(), 20_000, 2031);
    let wal = dir.path().join("vault.db-wal");
    let mut admin = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    admin.rotate(&ctx()).unwrap();
    // 1 MiB of 4 KiB pages, so a small store shows it.
    admin.set_wal_restart_frames(256);
    let mut biggest = 0;
    let s = admin
        .rewrap(&ctx(), 1000, None, |_| {
            biggest = biggest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        })
        .unwrap();
    assert_eq!(s.remaining, 0);
    let after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    println!("WAL: at most {biggest} bytes during the rewrap, {after} after");
    assert!(biggest < 2 << 20, "the WAL grew to {biggest} bytes");
}

/// Rejected: the lock error is `unavailable` (exit 75 in the CLI).
#[test]
fn lock_errors_are_unavailable() {
    let e = VaultError::Store(panvault_vault::store::StoreError::LockHeld(60));
    assert!(e.is_unavailable());
}
