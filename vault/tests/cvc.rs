//! Security codes held for the relay and idempotent answers, through the
//! library with a clock the test moves (no network, no waiting).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use panvault_audit::card::Brand;
use panvault_vault::core::cvc::Cvc;
use panvault_vault::service::VaultOptions;
use panvault_vault::service::idempotency::{IdempotencyKey, IdempotencyStart, StoredAnswer};
use panvault_vault::{Admin, CardError, TokenizeRequest, Vault, VaultError, system_clock};

mod common;
use common::{contains, ctx_of, init, pass, raw, rt};

const AMEX: &str = "378282246310005";
const TTL: u64 = 60;

/// A clock the test moves forward by hand.
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn new() -> (Clock, panvault_vault::Clock) {
        let offset = Arc::new(AtomicI64::new(0));
        let o = Arc::clone(&offset);
        let clock: panvault_vault::Clock = Arc::new(move || {
            time::OffsetDateTime::now_utc() + time::Duration::seconds(o.load(Ordering::SeqCst))
        });
        (Clock(offset), clock)
    }

    fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

fn open(dir: &Path, ttl: Option<u64>, clock: panvault_vault::Clock) -> Vault {
    let opts = VaultOptions {
        clock,
        cvc_ttl: ttl.map(Duration::from_secs),
        ..VaultOptions::default()
    };
    Vault::open_with(dir, &pass(), opts).unwrap()
}

fn with_cvc(v: &Vault, number: &str, cvc: &str, brand: Brand) -> TokenizeRequest {
    let mut r = TokenizeRequest::new(number, 12, 2031, v.today()).unwrap();
    r.cvc = Some(Cvc::parse(cvc, brand).unwrap());
    r
}

/// The bytes of the database file and its WAL.
fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut all = std::fs::read(dir.join("vault.db")).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("vault.db-wal")) {
        all.extend(wal);
    }
    all
}

#[test]
fn a_held_code_is_given_once_then_gone() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (_clock, c) = Clock::new();
    let v = open(dir.path(), Some(TTL), c);
    rt().block_on(async {
        let info = v
            .tokenize(
                "shop",
                with_cvc(&v, AMEX, "7391", Brand::Amex),
                &ctx_of("t"),
            )
            .await
            .unwrap();
        let held = info.cvc.clone().unwrap();
        assert!(held.held && held.until.is_some());
        assert_eq!(v.cvc_status("shop", &info.token).unwrap(), held);
        // Another tenant's token of the same value holds nothing.
        assert!(!v.cvc_status("other", &info.token).unwrap().held);
        assert!(v.take_cvc("other", &info.token).await.unwrap().is_none());
        let got = v.take_cvc("shop", &info.token).await.unwrap().unwrap();
        assert_eq!(got.expose(), "7391");
        assert!(v.take_cvc("shop", &info.token).await.unwrap().is_none());
        assert!(!v.cvc_status("shop", &info.token).unwrap().held);
        // The card itself stays.
        let meta = v.metadata("shop", &info.token, &ctx_of("t")).await.unwrap();
        assert_eq!(meta.cvc.map(|c| c.held), Some(false));
    });
    v.shutdown();
}

#[test]
fn an_expired_code_is_refused_before_the_sweep_and_its_key_destroyed_after() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (clock, c) = Clock::new();
    let v = open(dir.path(), Some(TTL), c);
    let (token, sealed, wrapped) = rt().block_on(async {
        let info = v
            .tokenize(
                "shop",
                with_cvc(&v, "4111111111111111", "123", Brand::Visa),
                &ctx_of("t"),
            )
            .await
            .unwrap();
        let db = raw(dir.path());
        let sealed: Vec<u8> = db
            .query_row("SELECT sealed FROM held_cvcs", [], |r| r.get(0))
            .unwrap();
        let wrapped: Vec<u8> = db
            .query_row("SELECT wrapped FROM cvc_keys", [], |r| r.get(0))
            .unwrap();
        (info.token, sealed, wrapped)
    });
    assert_eq!(sealed.len(), 3 + 16);
    clock.advance(i64::try_from(TTL).unwrap());
    rt().block_on(async {
        // Past its deadline, not yet swept: not held, not given.
        assert!(!v.cvc_status("shop", &token).unwrap().held);
        assert!(v.take_cvc("shop", &token).await.unwrap().is_none());
        // Another code of the same window keeps the key alive until its window ends.
        let r = v.sweep_cvcs(&ctx_of("sweep")).await.unwrap();
        assert_eq!(r.keys, 0, "{r:?}");
        clock.advance(i64::try_from(2 * TTL).unwrap());
        let r = v.sweep_cvcs(&ctx_of("sweep")).await.unwrap();
        assert_eq!(r.keys, 1, "{r:?}");
        assert_eq!(
            v.sweep_cvcs(&ctx_of("sweep")).await.unwrap().keys,
            0,
            "swept once"
        );
    });
    let db = raw(dir.path());
    let left: i64 = db
        .query_row(
            "SELECT (SELECT count(*) FROM held_cvcs) + (SELECT count(*) FROM cvc_keys)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    drop(db);
    v.shutdown();
    drop(v);
    // Neither the sealed code nor its wrapped key is left in the file or the WAL.
    let bytes = db_bytes(dir.path());
    assert!(
        !contains(&bytes, &sealed),
        "the sealed code is still on disk"
    );
    assert!(
        !contains(&bytes, &wrapped),
        "the window key is still on disk"
    );
}

#[test]
fn a_code_is_refused_without_a_relay_and_goes_with_its_card() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (_clock, c) = Clock::new();
    let v = open(dir.path(), None, c);
    let e = rt()
        .block_on(v.tokenize(
            "shop",
            with_cvc(&v, AMEX, "7391", Brand::Amex),
            &ctx_of("t"),
        ))
        .unwrap_err();
    assert!(
        matches!(e, VaultError::Card(CardError::CvvNotAccepted)),
        "{e}"
    );
    assert_eq!(v.token_count().unwrap(), 0);
    v.shutdown();
    drop(v);
    let (_clock, c) = Clock::new();
    let v = open(dir.path(), Some(TTL), c);
    rt().block_on(async {
        let info = v
            .tokenize(
                "shop",
                with_cvc(&v, AMEX, "7391", Brand::Amex),
                &ctx_of("t"),
            )
            .await
            .unwrap();
        v.delete("shop", &info.token, &ctx_of("t")).await.unwrap();
        let n: i64 = raw(dir.path())
            .query_row("SELECT count(*) FROM held_cvcs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "a deleted card's code stayed");
    });
    v.shutdown();
}

#[test]
fn a_held_code_survives_a_root_rotation() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (_clock, c) = Clock::new();
    let v = open(dir.path(), Some(TTL), c);
    let token = rt()
        .block_on(v.tokenize(
            "shop",
            with_cvc(&v, AMEX, "7391", Brand::Amex),
            &ctx_of("t"),
        ))
        .unwrap()
        .token;
    v.shutdown();
    drop(v);
    let mut admin = Admin::open(dir.path(), &pass(), system_clock()).unwrap();
    admin.master_rotate(&ctx_of("admin"), &pass()).unwrap();
    drop(admin);
    let (_clock, c) = Clock::new();
    let v = open(dir.path(), Some(TTL), c);
    let got = rt().block_on(v.take_cvc("shop", &token)).unwrap().unwrap();
    assert_eq!(got.expose(), "7391");
    v.shutdown();
}

fn answer(body: &str) -> StoredAnswer {
    StoredAnswer {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn an_idempotency_key_replays_its_first_answer_for_a_day() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (clock, c) = Clock::new();
    let v = open(dir.path(), None, c);
    let key = IdempotencyKey::parse(b"order-1234").unwrap();
    rt().block_on(async {
        let begin = |client: &'static str, body: &'static [u8]| {
            let v = v.clone();
            let key = key.clone();
            async move {
                v.idempotency_begin(client, &key, "POST", "/v1/tokens", body)
                    .await
            }
        };
        let IdempotencyStart::Proceed(ticket) = begin("shop", b"{1}").await.unwrap() else {
            panic!("a first request was replayed");
        };
        // In progress: a concurrent retry does not run the work again.
        assert!(matches!(
            begin("shop", b"{1}").await,
            Err(VaultError::IdempotencyKeyInUse)
        ));
        v.idempotency_finish(ticket, &answer("answer-body-7f3a"))
            .await
            .unwrap();
        match begin("shop", b"{1}").await.unwrap() {
            IdempotencyStart::Replay(a) => assert_eq!(a, answer("answer-body-7f3a")),
            IdempotencyStart::Proceed(_) => panic!("a retry ran again"),
        }
        assert!(matches!(
            begin("shop", b"{2}").await,
            Err(VaultError::IdempotencyKeyReused)
        ));
        // Another client's key of the same text is its own.
        let IdempotencyStart::Proceed(other) = begin("back-office", b"{2}").await.unwrap() else {
            panic!("another client's key was shared");
        };
        // A 503 (nothing was done) is not kept: the retry runs afresh.
        let mut failed = answer("busy");
        failed.status = 503;
        v.idempotency_finish(other, &failed).await.unwrap();
        assert!(matches!(
            begin("back-office", b"{2}").await.unwrap(),
            IdempotencyStart::Proceed(_)
        ));
        // A day later the key is fresh, and purged.
        clock.advance(86_401);
        assert_eq!(v.purge_idempotency().await.unwrap(), 2);
        assert!(matches!(
            begin("shop", b"{2}").await.unwrap(),
            IdempotencyStart::Proceed(_)
        ));
    });
    // The key and the request are stored as keyed hashes, the answer sealed.
    let bytes = db_bytes(dir.path());
    assert!(!contains(&bytes, b"order-1234"));
    assert!(!contains(&bytes, b"answer-body-7f3a"));
    v.shutdown();
}
