//! The PostgreSQL twins of the store's SQLite functions (`store::pg::{meta, keys,
//! cards, rewrap, erasure, inventory}`) against a real server the harness starts.
//! Each test runs the SQLite function and its twin on the same inputs, one call
//! after the other, and compares the results: that is what makes them twins. The
//! deliberate differences (a subject's keyed hash instead of the subject, sealed
//! metadata instead of clear) are mapped explicitly. No card number is involved:
//! the rows are made up and "sealed".

use panvault_audit::log::{Actor, SigningKey};
use panvault_vault::KeyState;
use panvault_vault::core::kdf::KdfParams;
use panvault_vault::store::cvc::{NewCvcKey, NewHeldCvc};
use panvault_vault::store::pg::cards::PgCardRow;
use panvault_vault::store::pg::{self, PgClient, PgError, PgSettings, schema};
use panvault_vault::store::{self, CardRow, CompletedErasure, Inserted, NewCard, SealRow};
use rusqlite::Connection;
use time::OffsetDateTime;

use crate::util::postgres::PgServer;

pub(crate) const NOW: i64 = 1_750_000_000;

/// One SQLite vault database and one migrated PostgreSQL database, side by side.
pub(crate) struct Both {
    pub(crate) s: Connection,
    pub(crate) p: PgClient,
    _dir: tempfile::TempDir,
    _pg: PgServer,
}

pub(crate) fn both(test: &str) -> Option<Both> {
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
pub(crate) use same;

/// The test's stand-in for the keyed subject hash (the service's is an HMAC).
fn hash(subject: &str) -> Vec<u8> {
    subject.bytes().rev().map(|b| b ^ 0x5a).collect()
}

fn card<'a>(
    token: &'a str,
    tenant: &'a str,
    subject: Option<&'a str>,
    exp_year: u16,
    expires_at: Option<i64>,
) -> NewCard<'a> {
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
        exp_year,
        subject,
        metadata: Some("{\"order\":\"1\"}"),
        created_at: NOW - 10,
        expires_at,
    }
}

/// Inserts `c` into both, the subject hashed and the metadata "sealed" on
/// PostgreSQL; both give the row the same id.
fn insert(b: &mut Both, c: &NewCard<'_>) -> i64 {
    let s = store::cards::insert(&b.s, c).unwrap();
    let sealed = c.metadata.map(hash);
    let p = pg::cards::insert(
        &mut b.p,
        c,
        c.subject.map(hash).as_deref(),
        sealed.as_deref(),
    )
    .unwrap();
    assert_eq!(s, p);
    let Inserted::Row(id) = s else {
        panic!("insert refused");
    };
    id
}

/// The columns both tables hold (the subject as its hash).
type Common = (
    (i64, String, String, i64, Vec<u8>, Vec<u8>, Vec<u8>),
    (
        String,
        String,
        String,
        i64,
        i64,
        Option<Vec<u8>>,
        i64,
        Option<i64>,
    ),
);

/// A SQLite row as PostgreSQL must hold it: subject hashed, metadata left out
/// (compared separately, sealed).
fn from_sqlite(r: CardRow) -> Common {
    (
        (
            r.id,
            r.token,
            r.tenant,
            i64::from(r.key_version),
            r.nonce,
            r.ciphertext,
            r.fingerprint,
        ),
        (
            r.brand,
            r.bin,
            r.last4,
            r.exp_month,
            r.exp_year,
            r.subject.as_deref().map(hash),
            r.created_at,
            r.expires_at,
        ),
    )
}

fn from_pg(r: PgCardRow) -> Common {
    (
        (
            r.id,
            r.token,
            r.tenant,
            r.key_version,
            r.nonce,
            r.ciphertext,
            r.fingerprint,
        ),
        (
            r.brand,
            r.bin,
            r.last4,
            r.exp_month,
            r.exp_year,
            r.subject_hash,
            r.created_at,
            r.expires_at,
        ),
    )
}

fn same_card(b: &mut Both, token: &str, tenant: &str) -> Option<Common> {
    let s = store::cards::by_token(&b.s, token, tenant)
        .unwrap()
        .map(from_sqlite);
    let p = pg::cards::by_token(&mut b.p, token, tenant)
        .unwrap()
        .map(from_pg);
    assert_eq!(s, p, "row of {token} in {tenant}");
    s
}

/// An error and its causes, as displayed.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn pg_ops_meta_and_keys_are_twins_and_refuse_corrupt_rows() {
    let Some(mut b) = both("pg_ops_meta_and_keys_are_twins_and_refuse_corrupt_rows") else {
        return;
    };
    // meta
    same!(b, meta::get("vault_id"));
    same!(b, meta::key_epoch());
    same!(b, meta::bump_key_epoch());
    assert_eq!(same!(b, meta::key_epoch()).as_deref(), Some("1"));
    same!(b, meta::set("vault_id", "v-1"));
    same!(b, meta::set("vault_id", "v-2"));
    same!(b, meta::set("key_epoch", "41"));
    same!(b, meta::bump_key_epoch());
    assert_eq!(same!(b, meta::key_epoch()).as_deref(), Some("42"));
    assert_eq!(same!(b, meta::get("vault_id")).as_deref(), Some("v-2"));

    // the seal: a passphrase seal, then replaced by a share seal
    assert_eq!(same!(b, keys::read_seal()), None);
    let pass = SealRow {
        method: "passphrase".into(),
        kdf: Some(KdfParams::MINIMUM),
        salt: Some(vec![7; 16]),
        shares: None,
        sealed_root: vec![1, 2, 3],
        root_created_at: 10,
        generation: 2,
    };
    same!(b, keys::write_seal(&pass));
    assert_eq!(same!(b, keys::read_seal()), Some(pass));
    let shares = SealRow {
        method: "shamir".into(),
        kdf: None,
        salt: None,
        shares: Some((5, 3)),
        sealed_root: vec![4; 60],
        root_created_at: 20,
        generation: 3,
    };
    same!(b, keys::write_seal(&shares));
    assert_eq!(same!(b, keys::read_seal()), Some(shares));

    // data keys through their life cycle
    assert_eq!(same!(b, keys::next_version()), 1);
    assert_eq!(same!(b, keys::active_version()), None);
    same!(b, keys::insert_data_key(1, b"w1", 100));
    same!(
        b,
        keys::set_state_where(KeyState::Active, KeyState::DecryptOnly)
    );
    same!(b, keys::insert_data_key(2, b"w2", 200));
    assert_eq!(same!(b, keys::active_version()), Some(2));
    assert_eq!(same!(b, keys::next_version()), 3);
    assert_eq!(same!(b, keys::key_state(1)), Some(KeyState::DecryptOnly));
    assert_eq!(same!(b, keys::key_state(9)), None);
    insert(&mut b, &card("t1", "shop", None, 2031, None));
    insert(&mut b, &card("t2", "shop", None, 2031, None));
    assert_eq!(same!(b, keys::records_under(1)), 2);
    assert_eq!(same!(b, keys::records_under(2)), 0);
    same!(b, keys::add_encryptions(2, 5));
    same!(b, keys::add_encryptions(2, 1));
    same!(b, keys::mark_retired(1, 300));
    assert_eq!(same!(b, keys::wrapped_data_keys()).len(), 2);
    same!(b, keys::mark_destroyed(1, 400));
    let rows = same!(b, keys::list_data_keys());
    assert_eq!(
        (rows[0].state, rows[0].retired_at, rows[0].destroyed_at),
        (KeyState::Destroyed, Some(300), Some(400))
    );
    assert_eq!((rows[1].encryptions, rows[0].records), (6, 2));
    assert_eq!(
        same!(b, keys::wrapped_data_key_bytes()),
        vec![(2, b"w2".to_vec())]
    );
    same!(b, keys::rewrap_data_key(2, b"w2'"));
    assert_eq!(same!(b, keys::wrapped_data_keys())[0].wrapped, b"w2'");

    // auxiliary keys
    same!(b, keys::insert_aux_key("fingerprint", b"a", 1));
    same!(b, keys::insert_aux_key("audit-signing", b"s", 1));
    same!(b, keys::insert_aux_key("fingerprint", b"a2", 2));
    same!(b, keys::rewrap_aux_key("fingerprint", b"b"));
    assert_eq!(same!(b, keys::read_aux_key("fingerprint")), b"b");
    let mut s = store::keys::aux_keys(&b.s).unwrap();
    s.sort();
    assert_eq!(s, pg::keys::aux_keys(&mut b.p).unwrap());
    assert!(store::keys::read_aux_key(&b.s, "missing").is_err());
    assert!(pg::keys::read_aux_key(&mut b.p, "missing").is_err());

    // Corrupt rows are errors, never defaults: an unknown key state (the CHECK
    // dropped to plant it), a version past u32, a negative KDF parameter.
    b.p.batch_execute(
        "ALTER TABLE data_keys DROP CONSTRAINT data_keys_state_check;
         UPDATE data_keys SET state = 'activ' WHERE version = 2;",
    )
    .unwrap();
    for e in [
        pg::keys::key_state(&mut b.p, 2).unwrap_err(),
        pg::keys::list_data_keys(&mut b.p).unwrap_err(),
        pg::keys::wrapped_data_keys(&mut b.p).unwrap_err(),
    ] {
        assert!(matches!(e, PgError::Db(_)), "{e:?}");
        let text = chain(&e);
        assert!(text.contains("unknown key state"), "{text}");
        assert!(!text.contains("activ'"), "the stored value echoed: {text}");
    }
    b.p.batch_execute(
        "INSERT INTO data_keys (version, state, created_at) VALUES (4294967296, 'retired', 0)",
    )
    .unwrap();
    assert!(matches!(
        pg::keys::next_version(&mut b.p).unwrap_err(),
        PgError::Corrupt(_)
    ));
    assert!(matches!(
        pg::keys::wrapped_data_key_bytes(&mut b.p).unwrap(),
        v if v.len() == 1
    ));
    b.p.batch_execute(
        "UPDATE seal SET method = 'passphrase', kdf_m_kib = -1, kdf_t = 1, kdf_p = 1",
    )
    .unwrap();
    assert!(matches!(
        pg::keys::read_seal(&mut b.p).unwrap_err(),
        PgError::Corrupt(_)
    ));
    b.p.batch_execute("UPDATE meta SET value = 'x' WHERE key = 'key_epoch'")
        .unwrap();
    assert!(pg::meta::bump_key_epoch(&mut b.p).is_err());
    assert_eq!(pg::meta::key_epoch(&mut b.p).unwrap().as_deref(), Some("x"));
}

#[test]
fn pg_ops_cards_and_rewrap_are_twins() {
    let Some(mut b) = both("pg_ops_cards_and_rewrap_are_twins") else {
        return;
    };
    let a = insert(&mut b, &card("t1", "shop", Some("cust-1"), 2031, None));
    let c = insert(&mut b, &card("t2", "shop", None, 2031, Some(NOW + 100)));
    let d = insert(&mut b, &card("t1", "other", Some("cust-2"), 2031, None));
    // A taken token in the same tenant is reported alike.
    let taken = card("t1", "shop", None, 2031, None);
    assert_eq!(
        store::cards::insert(&b.s, &taken).unwrap(),
        pg::cards::insert(&mut b.p, &taken, None, None).unwrap()
    );
    assert_eq!(same!(b, cards::count()), 3);
    for (token, tenant) in [
        ("t1", "shop"),
        ("t2", "shop"),
        ("t1", "other"),
        ("t2", "other"),
    ] {
        same_card(&mut b, token, tenant);
    }
    for (id, token, tenant, now) in [
        (a, "t1", "shop", NOW),
        (a, "t1", "other", NOW),
        (d, "t1", "other", NOW),
        (c, "t2", "shop", NOW),
        (c, "t2", "shop", NOW + 100),
        (a, "t2", "shop", NOW),
        (99, "t1", "shop", NOW),
    ] {
        same!(b, cards::is_live(id, token, tenant, now));
    }
    // The dedup re-check (SQLite, by id) and lookup (PostgreSQL, by hash) agree.
    for (id, token, tenant, subject, now) in [
        (a, "t1", "shop", Some("cust-1"), NOW),
        (a, "t1", "shop", None, NOW),
        (c, "t2", "shop", None, NOW),
        (c, "t2", "shop", None, NOW + 100),
        (d, "t1", "other", Some("cust-2"), NOW),
        (d, "t1", "other", Some("cust-1"), NOW),
    ] {
        let s = store::cards::live_dedup_row(&b.s, id, token.as_bytes(), tenant, subject, now)
            .unwrap()
            .map(from_sqlite);
        let h = subject.map(hash);
        let p = pg::cards::live_dedup_row(&mut b.p, tenant, token.as_bytes(), h.as_deref(), now)
            .unwrap()
            .map(from_pg);
        assert_eq!(s, p);
    }
    // The dedup index's scan: the subject comes back as its hash.
    let mut s = Vec::new();
    store::cards::for_each_fingerprint(&b.s, |id, fp, subject| {
        s.push((id, fp, subject.as_deref().map(hash)));
    })
    .unwrap();
    let mut p = Vec::new();
    pg::cards::for_each_fingerprint(&mut b.p, |id, fp, h| p.push((id, fp, h))).unwrap();
    s.sort();
    assert_eq!((s.len(), s), (3, p));

    // Updates: terms (metadata sealed on PostgreSQL) and the sealed card.
    store::cards::update_terms(&b.s, a, 1, 2033, Some("{}"), Some(NOW + 5)).unwrap();
    pg::cards::update_terms(&mut b.p, a, 1, 2033, Some(&hash("{}")), Some(NOW + 5)).unwrap();
    same!(b, cards::update_sealed(c, 2, &[3; 12], &[4; 40]));
    same_card(&mut b, "t1", "shop");
    same_card(&mut b, "t2", "shop");
    let s = store::cards::by_token(&b.s, "t1", "shop").unwrap().unwrap();
    let p = pg::cards::by_token(&mut b.p, "t1", "shop")
        .unwrap()
        .unwrap();
    assert_eq!(s.metadata.as_deref().map(hash), p.metadata_sealed);
    store::cards::update_terms(&b.s, a, 1, 2033, None, None).unwrap();
    pg::cards::update_terms(&mut b.p, a, 1, 2033, None, None).unwrap();
    same_card(&mut b, "t1", "shop");

    // rewrap: batches not under the active version, a stale write left alone.
    assert_eq!(same!(b, rewrap::count_not_under(2)), 2);
    assert_eq!(same!(b, rewrap::count_not_under(1)), 1);
    let batch = same!(b, rewrap::batch_not_under(2, 1));
    assert_eq!(batch.len(), 1);
    let all = same!(b, rewrap::batch_not_under(2, 10));
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, d]);
    assert_eq!(same!(b, rewrap::update_sealed(a, 3, 2, b"n", b"c")), 0);
    assert_eq!(same!(b, rewrap::update_sealed(a, 1, 2, b"n", b"c")), 1);
    assert_eq!(same!(b, rewrap::update_sealed(99, 1, 2, b"n", b"c")), 0);
    assert_eq!(same!(b, rewrap::count_not_under(2)), 1);
    same_card(&mut b, "t1", "shop");
    assert_eq!(same!(b, cards::count()), 3);
}

#[test]
fn pg_ops_erasure_and_retention_are_twins() {
    let Some(mut b) = both("pg_ops_erasure_and_retention_are_twins") else {
        return;
    };
    let a = insert(&mut b, &card("a", "t", Some("s1"), 2099, None));
    let b2 = insert(&mut b, &card("b", "t", Some("s1"), 2099, None));
    let c = insert(&mut b, &card("c", "t", Some("s2"), 2000, None));
    let d = insert(&mut b, &card("d", "t", Some("s3"), 2099, Some(10)));
    let e = insert(&mut b, &card("e", "t", None, 2000, Some(10)));
    let f = insert(&mut b, &card("f", "u", Some("s1"), 2099, None));
    let cutoff = 2020 * 12;
    assert_eq!(same!(b, erasure::count_past_expiry(cutoff, 100)), 2);
    assert_eq!(same!(b, erasure::count_past_ttl_only(cutoff, 100)), 1);
    assert_eq!(same!(b, erasure::count_past_ttl_only(cutoff, 5)), 0);
    assert_eq!(
        same!(b, erasure::retention_candidates(cutoff, 100)),
        vec![c, d, e]
    );
    // An expired token is not deleted by the API's delete, but is by an erasure.
    assert!(same!(b, erasure::delete_live_token("t", "d", 100)).is_empty());
    assert_eq!(
        same!(b, erasure::delete_token("t", "d")),
        vec![(d, b"d".to_vec())]
    );
    assert!(same!(b, erasure::delete_id_past_expiry(a, cutoff)).is_empty());
    assert_eq!(
        same!(b, erasure::delete_id_past_expiry(c, cutoff)),
        vec![(c, b"c".to_vec())]
    );
    assert!(same!(b, erasure::delete_id_past_ttl(a, 100)).is_empty());
    assert!(same!(b, erasure::delete_id_past_ttl(e, 5)).is_empty());
    assert_eq!(
        same!(b, erasure::delete_id_past_ttl(e, 100)),
        vec![(e, b"e".to_vec())]
    );
    // The subject: SQLite by name, PostgreSQL by its keyed hash; the other
    // tenant's card of the same subject stays.
    let mut s = store::erasure::delete_subject(&b.s, "t", "s1").unwrap();
    let mut p = pg::erasure::delete_subject(&mut b.p, "t", &hash("s1")).unwrap();
    s.sort();
    p.sort();
    assert_eq!(s, p);
    assert_eq!(s, vec![(a, b"a".to_vec()), (b2, b"b".to_vec())]);
    assert_eq!(same!(b, cards::count()), 1);
    // The retention purge.
    insert(&mut b, &card("g", "t", None, 2000, None));
    let h = insert(&mut b, &card("h", "t", None, 2099, Some(50)));
    insert(&mut b, &card("i", "t", None, 2099, Some(500)));
    let purged = same!(b, erasure::delete_past_retention(cutoff, 100));
    assert_eq!(purged.len(), 2);
    assert!(purged.iter().any(|(id, _)| *id == h));
    assert_eq!(same!(b, cards::count()), 2);
    assert!(same!(b, erasure::delete_live_token("u", "f", NOW)) == vec![(f, b"f".to_vec())]);

    // The erasure requests.
    assert_eq!(
        same!(b, erasure::request_overview()),
        Some(store::RequestOverview {
            open: vec![],
            completed: 0
        })
    );
    same!(
        b,
        erasure::insert_completed_request(&CompletedErasure {
            tenant: "t",
            subject_hash: "h1",
            token: None,
            at: 5,
            tokens_erased: 2,
            audit_seq: 1,
        })
    );
    let open = same!(b, erasure::insert_open_request("t", "h2", Some("tok"), 50));
    let open2 = same!(b, erasure::insert_open_request("t", "h3", None, 40));
    assert_eq!((open, open2), (2, 3));
    assert_eq!(same!(b, erasure::count_open_requests_before(45)), 1);
    assert_eq!(same!(b, erasure::count_open_requests_before(100)), 2);
    assert_eq!(
        same!(b, erasure::request_overview()),
        Some(store::RequestOverview {
            open: vec![(open2, 40), (open, 50)],
            completed: 1
        })
    );
    assert!(same!(b, erasure::complete_request(open, 60, 1, Some(7))));
    assert!(!same!(b, erasure::complete_request(open, 61, 1, Some(8))));
    assert!(!same!(b, erasure::complete_request(99, 61, 1, None)));
    assert!(same!(b, erasure::complete_request(open2, 62, 0, None)));
    assert_eq!(same!(b, erasure::count_open_requests_before(100)), 0);
    assert_eq!(
        same!(b, erasure::request_overview()).map(|o| o.completed),
        Some(3)
    );
}

#[test]
fn pg_ops_inventory_and_schema_are_twins() {
    let Some(mut b) = both("pg_ops_inventory_and_schema_are_twins") else {
        return;
    };
    let empty_s = store::inventory::card_shape(&b.s).unwrap();
    let empty_p = pg::inventory::card_shape(&mut b.p).unwrap();
    assert_eq!(
        (
            empty_p.cards,
            empty_p.max_bin_len,
            empty_p.max_fingerprint_len
        ),
        (0, None, None)
    );
    assert_eq!(
        (empty_s.cards, empty_s.max_last4_len),
        (empty_p.cards, empty_p.max_last4_len)
    );
    assert_eq!(same!(b, inventory::masking_shape()), vec![]);
    // Format-preserving tokens of two lengths, opaque ones, one BIN of 8.
    for (token, tenant) in [
        ("4242420000004242", "shop"),
        ("4242421111114242", "shop"),
        ("424242111114242", "shop"),
        ("tok_abc", "shop"),
        ("tok_def", "other"),
        ("12a4", "other"),
    ] {
        insert(&mut b, &card(token, tenant, None, 2031, None));
    }
    let mut eight = card("4242420000001111", "wide", None, 2010, None);
    eight.bin = "42424200";
    insert(&mut b, &eight);
    assert_eq!(same!(b, inventory::count_cards()), 7);
    assert_eq!(same!(b, inventory::count_expired_before(2020 * 12)), 1);
    let shapes = same!(b, inventory::masking_shape());
    assert_eq!(
        shapes.iter().map(|s| s.digit_token_len).collect::<Vec<_>>(),
        vec![None, Some(15), Some(16)]
    );
    assert_eq!(
        same!(b, inventory::wrapped_key_names()),
        Vec::<String>::new()
    );
    for name in ["fingerprint", "audit-signing", "Zeta"] {
        same!(b, keys::insert_aux_key(name, b"w", 1));
    }
    assert_eq!(
        same!(b, inventory::wrapped_key_names()),
        vec!["Zeta", "audit-signing", "fingerprint"]
    );

    // The card table's shape: the same columns in the same order, except that
    // PostgreSQL holds the subject's hash and the sealed metadata.
    let s = store::inventory::card_shape(&b.s).unwrap();
    let p = pg::inventory::card_shape(&mut b.p).unwrap();
    let renamed: Vec<String> = s
        .columns
        .iter()
        .map(|c| match c.as_str() {
            "subject" => "subject_hash".to_owned(),
            "metadata" => "metadata_sealed".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(renamed, p.columns);
    assert_eq!(
        (
            s.cards,
            s.max_bin_len,
            s.max_last4_len,
            s.max_fingerprint_len
        ),
        (
            p.cards,
            p.max_bin_len,
            p.max_last4_len,
            p.max_fingerprint_len
        )
    );
    assert_eq!(p.max_bin_len, Some(8));

    // Nothing of the SQLite schema is missing on PostgreSQL: every table with its
    // columns, but for the documented differences (no clear subject or metadata;
    // the erasure's residue is the vacuum there, the WAL scrub here).
    let tables: Vec<String> = {
        let mut st =
            b.s.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        tables.contains(&"erasure_requests".to_owned()),
        "{tables:?}"
    );
    // Tables added to SQLite after the twins were written, with no PostgreSQL
    // twin yet: the engine refuses their writes there (`StoreError::Unsupported`).
    // Named one by one, so any other table missing on PostgreSQL still fails.
    const NOT_YET_ON_POSTGRES: &[&str] = &["cvc_keys", "held_cvcs", "idempotency"];
    for table in tables
        .into_iter()
        .filter(|t| !NOT_YET_ON_POSTGRES.contains(&t.as_str()))
    {
        let mut st =
            b.s.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .unwrap();
        let sqlite: Vec<String> = st
            .query_map([&table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<String> = sqlite
            .into_iter()
            .map(|c| match (table.as_str(), c.as_str()) {
                ("cards", "subject") => "subject_hash".to_owned(),
                ("cards", "metadata") => "metadata_sealed".to_owned(),
                ("erasure_requests", "wal_scrubbed_at") => "vacuumed_at".to_owned(),
                _ => c,
            })
            .collect();
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
        assert_eq!(want, have, "table {table}");
    }
}

/// The test's stand-in for the service's protection (the real one hashes under
/// the subject key and seals under the card's data key): a recognisable
/// transform, so the copy can be checked.
fn fake_protect(card: &CardRow) -> Result<pg::migrate::Protected, pg::migrate::ProtectError> {
    let subject_hash = card
        .subject
        .as_ref()
        .map(|s| hash(&format!("{}/{s}", card.tenant)));
    let sealed = match (&card.subject, &card.metadata) {
        (None, None) => None,
        (s, m) => Some(hash(&format!("{}/{s:?}/{m:?}", card.id))),
    };
    Ok((subject_hash, sealed))
}

/// `SELECT count(*)` of a SQLite table.
fn sqlite_count(s: &Connection, table: &str) -> u64 {
    s.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap())
    .unwrap()
}

/// A real SQLite vault (cards with and without subject and metadata, two
/// tenants, an erasure, a signed checkpoint) moved into PostgreSQL: every row
/// arrives, the log exports and verifies with the vault's public key alone, and
/// verifies as the SQLite log did; a second migration into it is refused.
#[test]
fn pg_ops_migrate_moves_a_real_sqlite_vault_and_refuses_a_non_empty_target() {
    use panvault_audit::log::{PublicKey, verify, verify_export};
    use panvault_vault::service::erase::EraseTarget;
    use panvault_vault::{
        AccessContext, Admin, DataDir, SealSpec, SecretText, TokenizeRequest, Unlock, Vault,
        system_clock,
    };

    let Some(pg) =
        PgServer::start("pg_ops_migrate_moves_a_real_sqlite_vault_and_refuses_a_non_empty_target")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let unlock = || Unlock::Passphrase(SecretText::new("migrate-test-passphrase".into()));
    let spec = SealSpec {
        unlock: unlock(),
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    drop(Vault::init(&data, &spec, &system_clock()).unwrap());
    let ctx = AccessContext {
        actor: "storefront".into(),
        peer: Some("127.0.0.1:1".into()),
        ..Default::default()
    };
    // The vault's service runs on tokio; the PostgreSQL client below blocks, so
    // the vault is filled on a runtime of its own, gone before PostgreSQL is used.
    let tokens = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let vault = Vault::open(&data, &unlock()).unwrap();
            let mut tokens = Vec::new();
            for i in 0..6 {
                let mut req =
                    TokenizeRequest::new(&crate::util::cards::fresh(), 12, 2031, vault.today())
                        .unwrap();
                if i % 2 == 0 {
                    req.subject = Some(format!("cust-{}", i % 4));
                }
                if i % 3 == 0 {
                    let mut m = serde_json::Map::new();
                    m.insert("order".into(), serde_json::Value::String(format!("o-{i}")));
                    req.metadata = Some(m);
                }
                let tenant = if i == 5 { "other-shop" } else { "demo-shop" };
                tokens.push(vault.tokenize(tenant, req, &ctx).await.unwrap().token);
            }
            vault
                .erase("demo-shop", EraseTarget::Token(tokens[1].clone()), &ctx)
                .await
                .unwrap();
            vault
                .erase("demo-shop", EraseTarget::Subject("cust-2".into()), &ctx)
                .await
                .unwrap();
            vault.shutdown();
            tokens
        });
    let mut admin = Admin::open(&data, &unlock(), system_clock()).unwrap();
    admin.audit_checkpoint(&ctx, None).unwrap();
    drop(admin);
    // Short-lived rows (made up: the store copies them as they are): a live
    // window key with a live code and an expired one, a key past its destruction
    // with a live code, and two idempotent requests (answered, in progress).
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let live_key = {
        let w = store::open_writer(&store::db_path(&data), false).unwrap();
        let window = now - now % 900;
        let key = |window_start: i64, destroy_at: i64, wrapped: &'static [u8]| NewCvcKey {
            window_start,
            ttl_secs: 900,
            wrapped,
            created_at: window_start,
            destroy_at,
        };
        assert!(store::cvc::insert_key(&w, &key(window - 3600, now - 10, b"dead")).unwrap());
        assert!(store::cvc::insert_key(&w, &key(window, window + 1800, b"live")).unwrap());
        let live = store::cvc::key_for_window(&w, window, 900)
            .unwrap()
            .unwrap();
        let dead = store::cvc::key_for_window(&w, window - 3600, 900)
            .unwrap()
            .unwrap();
        for (token, key_id, deadline) in [
            (&tokens[0], live.id, now + 600),
            (&tokens[3], live.id, now - 5),
            (&tokens[4], dead.id, now + 600),
        ] {
            store::cvc::put_held(
                &w,
                &NewHeldCvc {
                    tenant: "demo-shop",
                    token,
                    key_id,
                    nonce: &[3; 12],
                    sealed: &[0xa5; 19],
                    created_at: now - 60,
                    deadline,
                },
            )
            .unwrap();
        }
        store::idempotency::reserve(&w, "storefront", b"key-1", b"req-1", now - 30).unwrap();
        assert!(
            store::idempotency::complete(&w, "storefront", b"key-1", b"req-1", 201, b"sealed")
                .unwrap()
        );
        store::idempotency::reserve(&w, "storefront", b"key-2", b"req-2", now - 5).unwrap();
        live
    };

    let src = store::open_reader(&store::db_path(&data)).unwrap();
    let mut dst = pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap();
    // The test signs the move's cluster checkpoint with a key of its own (the
    // service signs with the vault's audit key: see the command's test).
    let key = SigningKey::from_seed(&[7; 32]).unwrap();
    let moved = pg::migrate::from_sqlite(
        &src,
        &mut dst,
        &mut fake_protect,
        &key,
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(moved.schema_version, schema::latest_version());
    assert_eq!(moved.audit_node, pg::migrate::MIGRATED_NODE);
    assert_eq!(
        moved.sqlite_checkpoints,
        sqlite_count(&src, "audit_checkpoints")
    );

    // Every row arrived (meta but for SQLite's WAL-scrub marks).
    let scrub_marks: u64 = src
        .query_row(
            "SELECT count(*) FROM meta WHERE key IN (?1, ?2)",
            [store::SCRUB_PENDING, store::SCRUBBED_AT],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u64::try_from(n).unwrap())
        .unwrap();
    for table in [
        "meta",
        "seal",
        "data_keys",
        "wrapped_keys",
        "cards",
        "erasure_requests",
        "audit_events",
    ] {
        let want = match table {
            "meta" => sqlite_count(&src, table) - scrub_marks,
            // the moved events, then the node's registration
            "audit_events" => sqlite_count(&src, table) + 1,
            _ => sqlite_count(&src, table),
        };
        let found: i64 = dst
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(moved.rows(table), want, "{table}");
        assert_eq!(u64::try_from(found).unwrap(), want, "{table}");
    }
    assert_eq!(moved.rows("cards"), 4);
    assert!(moved.rows("erasure_requests") >= 2);
    // The live code and its key, and both idempotent requests, arrived as they
    // are (read through the twins); the expired code and the dead key's code did
    // not, and the code tables are still kept out of WAL.
    assert_eq!(
        (
            moved.rows("cvc_keys"),
            moved.rows("held_cvcs"),
            moved.rows("idempotency")
        ),
        (1, 1, 2)
    );
    assert_eq!(pg::cvc::all_keys(&mut dst).unwrap(), vec![live_key.clone()]);
    assert_eq!(
        pg::cvc::held(&mut dst, "demo-shop", &tokens[0]).unwrap(),
        store::cvc::held(&src, "demo-shop", &tokens[0]).unwrap()
    );
    for t in [&tokens[3], &tokens[4]] {
        assert_eq!(pg::cvc::held(&mut dst, "demo-shop", t).unwrap(), None);
    }
    for k in [b"key-1", b"key-2"] {
        let row = pg::idempotency::get(&mut dst, "storefront", k).unwrap();
        assert!(row.is_some());
        assert_eq!(row, store::idempotency::get(&src, "storefront", k).unwrap());
    }
    assert_eq!(pg::cvc::unlogged(&mut dst).unwrap(), Some(true));
    // The next window's key continues after the copied ids.
    assert!(
        pg::cvc::insert_key(
            &mut dst,
            &NewCvcKey {
                window_start: live_key.window_start + 900,
                ttl_secs: 900,
                wrapped: b"next",
                created_at: now,
                destroy_at: live_key.destroy_at + 900,
            }
        )
        .unwrap()
    );
    let next_key = pg::cvc::key_for_window(&mut dst, live_key.window_start + 900, 900)
        .unwrap()
        .unwrap();
    assert!(next_key.id > live_key.id);
    assert!(moved.sqlite_checkpoints >= 2);
    assert_eq!(
        (moved.rows("audit_nodes"), moved.rows("audit_checkpoints")),
        (1, 1)
    );

    // The rows read back alike through the twins.
    assert_eq!(
        store::keys::read_seal(&src).unwrap(),
        pg::keys::read_seal(&mut dst).unwrap()
    );
    assert_eq!(
        store::keys::list_data_keys(&src).unwrap(),
        pg::keys::list_data_keys(&mut dst).unwrap()
    );
    assert_eq!(
        store::keys::wrapped_data_keys(&src).unwrap(),
        pg::keys::wrapped_data_keys(&mut dst).unwrap()
    );
    let mut aux = store::keys::aux_keys(&src).unwrap();
    aux.sort();
    assert_eq!(aux, pg::keys::aux_keys(&mut dst).unwrap());
    assert_eq!(
        store::meta::key_epoch(&src).unwrap(),
        pg::meta::key_epoch(&mut dst).unwrap()
    );
    assert_eq!(
        store::meta::get(&src, "vault_id").unwrap(),
        pg::meta::get(&mut dst, "vault_id").unwrap()
    );
    assert_eq!(
        store::erasure::request_overview(&src).unwrap(),
        pg::erasure::request_overview(&mut dst).unwrap()
    );
    let mut with_subject = 0;
    for (i, token) in tokens.iter().enumerate() {
        let tenant = if i == 5 { "other-shop" } else { "demo-shop" };
        let s = store::cards::by_token(&src, token, tenant).unwrap();
        let p = pg::cards::by_token(&mut dst, token, tenant).unwrap();
        let (Some(s), Some(p)) = (s, p) else {
            assert!(matches!(i, 1 | 2), "card {i} missing on one side");
            continue;
        };
        let subject = s.subject.as_ref().map(|x| hash(&format!("{tenant}/{x}")));
        let metadata = fake_protect(&s).unwrap().1;
        with_subject += usize::from(subject.is_some());
        assert_eq!(
            (subject, metadata),
            (p.subject_hash.clone(), p.metadata_sealed.clone())
        );
        let mut s = from_sqlite(s);
        s.1.5 = p.subject_hash.clone();
        assert_eq!(s, from_pg(p));
    }
    assert_eq!(with_subject, 2);
    // New rows continue after the copied ids.
    let max_id: i64 = dst
        .query_one("SELECT max(id) FROM cards", &[])
        .unwrap()
        .get(0);
    let next = pg::cards::insert(
        &mut dst,
        &card("tok_new", "demo-shop", None, 2031, None),
        None,
        None,
    )
    .unwrap();
    assert_eq!(next, Inserted::Row(max_id + 1));
    let next_req = pg::erasure::insert_open_request(&mut dst, "demo-shop", "h", None, NOW).unwrap();
    let max_req: i64 = src
        .query_row("SELECT max(id) FROM erasure_requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(next_req, max_req + 1);

    // The log moved as one node's chain: SQLite's events exactly (the same
    // hashes), then the registration, all signed by the move's checkpoint; the
    // export verifies with the public key alone.
    let public = PublicKey::read_from(&DataDir::new(&data).audit_public_key()).unwrap();
    let from_sqlite = verify(&src, &public, None).unwrap();
    assert!(from_sqlite.is_intact());
    let mut out = Vec::new();
    let n = pg::audit::export_jsonl(&mut dst, &mut out).unwrap();
    assert_eq!(n, moved.rows("audit_events"));
    let from_pg = verify_export(out.as_slice(), &key.public_key(), &[]).unwrap();
    assert!(from_pg.is_intact(), "{:?}", from_pg.problem);
    assert_eq!(from_pg.events, from_sqlite.events + 1);
    assert_eq!((from_pg.checkpoints, from_pg.unsigned_tail), (1, 0));
    assert_eq!(from_pg.nodes.len(), 1);
    assert_eq!(from_pg.nodes[0].node.as_str(), pg::migrate::MIGRATED_NODE);
    assert_eq!(from_pg.nodes[0].seq, from_sqlite.last_seq + 1);
    let head: Vec<u8> = dst
        .query_one(
            "SELECT hash FROM audit_events WHERE node = $1 AND seq = $2",
            &[
                &pg::migrate::MIGRATED_NODE,
                &i64::try_from(from_sqlite.last_seq).unwrap(),
            ],
        )
        .unwrap()
        .get(0);
    assert_eq!(head, from_sqlite.head.0.to_vec());

    // A non-empty target is refused, and nothing is added to it.
    let before: i64 = dst
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    let err = pg::migrate::from_sqlite(
        &src,
        &mut dst,
        &mut fake_protect,
        &key,
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(err, pg::migrate::MigrateError::Pg(PgError::NotEmpty(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("not empty"), "{err}");
    let after: i64 = dst
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    // A database holding another application's tables is refused too.
    let mut other = pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap();
    other
        .batch_execute("CREATE SCHEMA elsewhere; SET search_path TO elsewhere; CREATE TABLE orders (id bigint)")
        .unwrap();
    let err = pg::migrate::from_sqlite(
        &src,
        &mut other,
        &mut fake_protect,
        &key,
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(err, pg::migrate::MigrateError::Pg(PgError::Foreign(_))),
        "{err:?}"
    );
    // A target whose code tables were made LOGGED gets no held code (nor
    // anything else).
    other.batch_execute("CREATE DATABASE logged").unwrap();
    let mut logged = pg::connect(
        &PgSettings::from_url(&pg.url("disable").replace("/postgres?", "/logged?")).unwrap(),
    )
    .unwrap();
    schema::migrate(&mut logged).unwrap();
    logged
        .batch_execute("ALTER TABLE held_cvcs SET LOGGED")
        .unwrap();
    let err = pg::migrate::from_sqlite(
        &src,
        &mut logged,
        &mut fake_protect,
        &key,
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(err, pg::migrate::MigrateError::CodesLogged),
        "{err:?}"
    );
    let cards: i64 = logged
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    assert_eq!(cards, 0);

    // A pruned SQLite log (its chain no longer starts at event 1) is refused, and
    // nothing of the vault is committed to the (empty) target.
    drop(src);
    let pruned = tmp.path().join("pruned.db");
    std::fs::copy(store::db_path(&data), &pruned).unwrap();
    Connection::open(&pruned)
        .unwrap()
        .execute_batch(
            "INSERT INTO audit_prunes (id, first_seq, prev_hash, checkpoint_id, cutoff_ns, deleted,
                                       time_ns, signature)
             VALUES (1, 3, zeroblob(32), 1, 0, 2, 0, zeroblob(64));
             DELETE FROM audit_events WHERE seq < 3;",
        )
        .unwrap();
    other.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = pg::connect(
        &PgSettings::from_url(&pg.url("disable").replace("/postgres?", "/fresh?")).unwrap(),
    )
    .unwrap();
    let src = store::open_reader(&pruned).unwrap();
    let err = pg::migrate::from_sqlite(
        &src,
        &mut fresh,
        &mut fake_protect,
        &key,
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(matches!(err, pg::migrate::MigrateError::Pruned), "{err:?}");
    let cards: i64 = fresh
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    assert_eq!(cards, 0);
}

const MIGRATE_PASS: &str = "migrate-command-passphrase";

fn migrate_unlock() -> panvault_vault::Unlock {
    panvault_vault::Unlock::Passphrase(panvault_vault::SecretText::new(MIGRATE_PASS.into()))
}

fn migrate_ctx() -> panvault_vault::AccessContext {
    panvault_vault::AccessContext {
        actor: "storefront".into(),
        ..Default::default()
    }
}

/// A fresh SQLite vault at `data` (passphrase [`MIGRATE_PASS`]).
fn init_sqlite_vault(data: &std::path::Path) {
    let spec = panvault_vault::SealSpec {
        unlock: migrate_unlock(),
        kdf: KdfParams::MINIMUM,
        shares: None,
    };
    drop(panvault_vault::Vault::init(data, &spec, &panvault_vault::system_clock()).unwrap());
}

/// Runs `panvault ARGS --data-dir DATA` (with `--passphrase-file` for `migrate`)
/// and returns whether it succeeded and what it printed, which must not hold the
/// database password.
fn run_panvault(pg: &PgServer, args: &[&str], data: &std::path::Path) -> (bool, String) {
    let pass = data.with_extension("pass");
    std::fs::write(&pass, format!("{MIGRATE_PASS}\n")).unwrap();
    let mut cmd = std::process::Command::new(crate::util::panvault_bin());
    cmd.args(args).arg("--data-dir").arg(data);
    if args.first() == Some(&"migrate") {
        cmd.arg("--passphrase-file").arg(&pass);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map(crate::util::kept)
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(pg.password()), "password printed");
    (out.status.success(), text)
}

/// A SQLite vault at `data` with five cards tokenized (with and without subject
/// and metadata), one of them erased; returns `(token, number, facts)` of the
/// four left. The numbers stay in memory: never printed.
fn filled_sqlite_vault(data: &std::path::Path) -> Vec<(String, String, panvault_vault::TokenInfo)> {
    use panvault_vault::service::erase::EraseTarget;
    use panvault_vault::{TokenizeRequest, Vault};

    init_sqlite_vault(data);
    let ctx = migrate_ctx();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let vault = Vault::open(data, &migrate_unlock()).unwrap();
            let mut kept = Vec::new();
            for i in 0..5 {
                let number = crate::util::cards::fresh();
                let mut req = TokenizeRequest::new(&number, 12, 2031, vault.today()).unwrap();
                if i != 3 {
                    req.subject = Some(format!("cust-{}", i % 2));
                }
                if i % 2 == 0 {
                    let mut m = serde_json::Map::new();
                    m.insert("order".into(), serde_json::Value::String(format!("o-{i}")));
                    req.metadata = Some(m);
                }
                let token = vault.tokenize("demo-shop", req, &ctx).await.unwrap().token;
                if i == 4 {
                    vault
                        .erase("demo-shop", EraseTarget::Token(token), &ctx)
                        .await
                        .unwrap();
                    continue;
                }
                let info = vault.metadata("demo-shop", &token, &ctx).await.unwrap();
                kept.push((token, number, info));
            }
            vault.shutdown();
            kept
        })
}

/// `panvault migrate --to-postgres` through the real binary: the SQLite vault's
/// rows arrive (compared through the twins), the data directory then names
/// PostgreSQL in an owner-only file, `panvault audit verify` checks the moved log
/// there; a second migration of it, and a migration of another vault into the now
/// non-empty database, are refused and change nothing. The database password is
/// never printed.
#[test]
fn pg_ops_migrate_command_moves_a_vault_and_refuses_twice() {
    use panvault_vault::DataDir;
    use panvault_vault::store::Location;

    let Some(pg) = PgServer::start("pg_ops_migrate_command_moves_a_vault_and_refuses_twice") else {
        return;
    };
    let url = pg.url("disable");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let kept = filled_sqlite_vault(&data);
    // Not while the vault is open (a server holds it): nothing is written anywhere.
    let open = panvault_vault::Vault::open(&data, &migrate_unlock()).unwrap();
    let (ok, text) = run_panvault(&pg, &["migrate", "--to-postgres", &url], &data);
    assert!(!ok && text.contains("stop it, then migrate"), "{text}");
    assert!(!DataDir::new(&data).config().exists());
    let mut c = pg::connect(&PgSettings::from_url(&url).unwrap()).unwrap();
    assert_eq!(schema::version(&mut c).unwrap(), None);
    open.shutdown();
    drop(open);

    let (ok, text) = run_panvault(&pg, &["migrate", "--to-postgres", &url], &data);
    assert!(ok, "{text}");
    assert!(text.contains("cards"), "{text}");

    // The rows, as the twins read them.
    let src = store::open_reader(&store::db_path(&data)).unwrap();
    assert_eq!(
        store::keys::list_data_keys(&src).unwrap(),
        pg::keys::list_data_keys(&mut c).unwrap()
    );
    assert_eq!(
        store::keys::read_seal(&src).unwrap(),
        pg::keys::read_seal(&mut c).unwrap()
    );
    assert_eq!(
        store::erasure::request_overview(&src).unwrap(),
        pg::erasure::request_overview(&mut c).unwrap()
    );
    for (token, _, _) in &kept {
        let s = store::cards::by_token(&src, token, "demo-shop")
            .unwrap()
            .unwrap();
        let p = pg::cards::by_token(&mut c, token, "demo-shop")
            .unwrap()
            .unwrap();
        assert_eq!(s.subject.is_some(), p.subject_hash.is_some());
        assert_eq!(
            s.subject.is_some() || s.metadata.is_some(),
            p.metadata_sealed.is_some()
        );
        // Nothing personal in clear.
        for (clear, held) in [
            (&s.subject, &p.subject_hash),
            (&s.metadata, &p.metadata_sealed),
        ] {
            if let (Some(clear), Some(held)) = (clear, held) {
                assert!(!held.windows(clear.len()).any(|w| w == clear.as_bytes()));
            }
        }
        assert_eq!(
            (s.id, s.ciphertext, s.fingerprint),
            (p.id, p.ciphertext, p.fingerprint)
        );
    }
    drop(src);

    // `[storage]` as `init --postgres` records it, in a file only its owner reads.
    let config_path = DataDir::new(&data).config();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&config_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "{config_path:?} is readable by others");
    assert!(Location::of(&data).unwrap().is_postgres());
    let (ok, text) = run_panvault(&pg, &["audit", "verify"], &data);
    assert!(ok, "{text}");

    // Again: refused (the configuration names PostgreSQL already).
    let (ok, text) = run_panvault(&pg, &["migrate", "--to-postgres", &url], &data);
    assert!(!ok && text.contains("[storage]"), "{text}");

    // Another vault into the same, now non-empty database: refused, and its data
    // directory still leads to its SQLite file.
    let other = tmp.path().join("other");
    init_sqlite_vault(&other);
    let (ok, text) = run_panvault(&pg, &["migrate", "--to-postgres", &url], &other);
    assert!(!ok && text.contains("not empty"), "{text}");

    // A vault whose audit log does not verify is not moved (a modified event).
    let broken = tmp.path().join("broken");
    filled_sqlite_vault(&broken);
    let fresh =
        PgServer::start("pg_ops_migrate_command_moves_a_vault_and_refuses_twice_2").unwrap();
    let fresh_url = fresh.url("disable");
    rusqlite::Connection::open(store::db_path(&broken))
        .unwrap()
        .execute(
            "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3",
            [],
        )
        .unwrap();
    let (ok, text) = run_panvault(&fresh, &["migrate", "--to-postgres", &fresh_url], &broken);
    assert!(!ok && text.contains("does not verify"), "{text}");
    assert!(!Location::of(&broken).unwrap().is_postgres());
    let mut f = pg::connect(&PgSettings::from_url(&fresh_url).unwrap()).unwrap();
    assert_eq!(
        schema::version(&mut f).unwrap(),
        None,
        "the target was touched"
    );
    assert!(!DataDir::new(&other).config().exists());
    assert!(!Location::of(&other).unwrap().is_postgres());
    let cards: i64 = c
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    assert_eq!(cards, i64::try_from(kept.len()).unwrap());
}

/// After `panvault migrate`, the vault opened from its data directory serves from
/// PostgreSQL: every token detokenizes to its card, every token's subject and
/// metadata read back, an erasure by subject finds the subject's cards by the
/// hash PostgreSQL holds, and the new events continue the moved chain, which
/// verifies with the public key alone.
#[test]
fn pg_ops_migrated_vault_serves_every_token_from_postgres() {
    use panvault_audit::log::{PublicKey, verify_export};
    use panvault_vault::service::erase::EraseTarget;
    use panvault_vault::{DataDir, Vault};

    let Some(pg) = PgServer::start("pg_ops_migrated_vault_serves_every_token_from_postgres") else {
        return;
    };
    let url = pg.url("disable");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let kept = filled_sqlite_vault(&data);
    let (ok, text) = run_panvault(&pg, &["migrate", "--to-postgres", &url], &data);
    assert!(ok, "{text}");
    let before = {
        let mut c = pg::connect(&PgSettings::from_url(&url).unwrap()).unwrap();
        pg::audit::export_jsonl(&mut c, std::io::sink()).unwrap()
    };

    // The SQLite file out of the way: whatever answers, answers from PostgreSQL.
    std::fs::rename(
        DataDir::new(&data).database(),
        tmp.path().join("vault.db.moved"),
    )
    .unwrap();
    let ctx = migrate_ctx();
    let vault = Vault::open(&data, &migrate_unlock()).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            for (i, (token, number, info)) in kept.iter().enumerate() {
                let d = vault
                    .detokenize("demo-shop", token, "migration check", &ctx)
                    .await
                    .unwrap();
                assert!(
                    d.card.pan.expose_digits() == number.as_str(),
                    "card {i} detokenizes to another number after the migration"
                );
                let after = vault.metadata("demo-shop", token, &ctx).await.unwrap();
                assert_eq!(&after, info, "card {i}");
            }
            let gone = vault
                .erase("demo-shop", EraseTarget::Subject("cust-0".into()), &ctx)
                .await
                .unwrap();
            assert_eq!(gone.receipt.tokens_erased, 2);
            vault.shutdown();
        });
    drop(vault);

    let public = PublicKey::read_from(&DataDir::new(&data).audit_public_key()).unwrap();
    let mut c = pg::connect(&PgSettings::from_url(&url).unwrap()).unwrap();
    let mut out = Vec::new();
    let n = pg::audit::export_jsonl(&mut c, &mut out).unwrap();
    let report = verify_export(out.as_slice(), &public, &[]).unwrap();
    assert_eq!(report.events, n);
    assert!(n > before, "{n} events after, {before} before");
}

/// How fast `store::pg::migrate` copies (a measurement, not a check): `N` cards
/// (all with a subject, half with metadata, the test's stand-in protection) and
/// `N` audit rows (`N` = `PANVAULT_MIGRATE_ROWS`, default 20000), built straight into SQLite.
/// `PANVAULT_MIGRATE_ROWS=100000 cargo test -p panvault-cli --test e2e pg_ops_measure -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
fn pg_ops_measure_migrate_rows_per_second() {
    let n: u32 = std::env::var("PANVAULT_MIGRATE_ROWS").map_or(20_000, |v| v.parse().unwrap());
    let Some(pg) = PgServer::start("pg_ops_measure_migrate_rows_per_second") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = store::open_writer(&dir.path().join("vault.db"), true).unwrap();
    panvault_audit::log::migrate(&s).unwrap();
    let tx = s.transaction().unwrap();
    for i in 0..n {
        let token = format!("tok_{i:08}");
        let subject = format!("cust-{}", i % 1000);
        let mut c = card(&token, "shop", Some(&subject), 2031, None);
        c.metadata = (i % 2 == 0).then_some("{\"o\":\"1\"}");
        store::cards::insert(&tx, &c).unwrap();
        tx.execute(
            "INSERT INTO audit_events (seq, time_ns, actor, action, outcome, prev_hash, hash) \
             VALUES (?1, 0, 'a', 'tokenize', 'success', zeroblob(32), zeroblob(32))",
            [i64::from(i) + 1],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let mut p = pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap();
    let t = std::time::Instant::now();
    let m = pg::migrate::from_sqlite(
        &s,
        &mut p,
        &mut fake_protect,
        &SigningKey::from_seed(&[7; 32]).unwrap(),
        Actor::admin("ops"),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let e = t.elapsed();
    assert_eq!(m.rows("cards"), u64::from(n));
    eprintln!(
        "migrate: {n} cards + {n} audit events in {e:?}: {:.0} rows/s",
        2.0 * f64::from(n) / e.as_secs_f64()
    );
}

/// A shop mid-checkout across `panvault migrate`: a SQLite server holds a
/// security code (tokenized, not yet relayed), has answered an idempotent
/// tokenize and an idempotent relay; after the move, the same configuration
/// serves from PostgreSQL (the SQLite file moved away): the code is still held
/// (same deadline), relays once to the provider, and the compliance check of held
/// codes passes; both retries replay their first answers (the provider is not
/// called again). The code tables stay `UNLOGGED`; the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_ops_migrate_keeps_held_codes_and_idempotent_answers() {
    use crate::pg_cvc::{count, cvc_check, cvc_status, relay_config, relay_cvc, tokenize_with_cvc};
    use crate::util::provider::{FakeProvider, Mode};
    use crate::util::{BinVault, ServeProcess, cards};
    use std::time::Duration;

    let Some(pg) = PgServer::start("pg_ops_migrate_keeps_held_codes_and_idempotent_answers") else {
        return;
    };
    let limit = Duration::from_secs(120);
    crate::util::within(Duration::from_secs(300), async {
        let tmp = tempfile::tempdir().unwrap();
        let v = BinVault::create(tmp.path());
        let echo = FakeProvider::start(Mode::Echo).await;
        relay_config(&v, &echo, 900, true);

        // On SQLite: a code held for a checkout still to come, an idempotent
        // tokenize, and an idempotent relay (the provider called once).
        let s = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(s.addr, "storefront");
        let t = tokenize_with_cvc(&sf, cards::AMEX, "7391", None).await;
        assert_eq!(t["cvc"]["held"], true, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        let card = cards::fresh();
        let t1 = tokenize_with_cvc(&sf, &card, "123", Some("order-77")).await;
        let token2 = t1["token"].as_str().unwrap().to_owned();
        let r1 = relay_cvc(&sf, &token2, Some("charge-77")).await;
        assert_eq!(r1.status, 200, "{}", r1.text());
        assert_eq!(echo.received().len(), 1);
        assert!(s.terminate().await.success());

        let url = pg.url("disable");
        let out = v
            .run(&["migrate", "--to-postgres", &url], true, limit)
            .await;
        assert!(out.success(), "migrate: {}\n{}", out.stdout, out.stderr);
        assert!(!out.stdout.contains(pg.password()) && !out.stderr.contains(pg.password()));
        let p = url.as_str();
        assert_eq!(count(p, "held_cvcs"), 1);
        assert_eq!(count(p, "idempotency"), 2);
        assert_eq!(
            count(
                p,
                "pg_class WHERE relname IN ('held_cvcs', 'cvc_keys') AND relpersistence = 'u'"
            ),
            2
        );
        // Whatever answers now, answers from PostgreSQL.
        std::fs::rename(v.db(), tmp.path().join("vault.db.moved")).unwrap();

        let s = ServeProcess::start(&v).await.unwrap();
        let sf = v.client(s.addr, "storefront");
        // The code held before the move: still held, with its deadline.
        assert_eq!(cvc_status(&sf, &token).await, t["cvc"]);
        let check = cvc_check(&v).await;
        assert_eq!(check["status"], "pass", "{check}");
        // The retries replay.
        let t2 = tokenize_with_cvc(&sf, &card, "123", Some("order-77")).await;
        assert_eq!(t1, t2, "the retry after the move got another answer");
        let r2 = relay_cvc(&sf, &token2, Some("charge-77")).await;
        assert_eq!(r2.status, 200, "{}", r2.text());
        assert_eq!(r2.body, r1.body, "the relay retry got another answer");
        assert_eq!(r2.headers["idempotent-replayed"], "true");
        assert_eq!(echo.received().len(), 1, "the retry called the provider");
        // The held code relays once, to the provider, as before the move.
        let r = relay_cvc(&sf, &token, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let got = echo.received();
        assert_eq!(got.len(), 2);
        assert!(
            got[1].json()["card"]["cvc"] == "7391"
                && got[1].json()["card"]["number"] == cards::AMEX,
            "the provider did not get the card and its code"
        );
        relay_cvc(&sf, &token, None)
            .await
            .assert_problem(409, "cvc_unavailable");
        assert!(s.terminate().await.success());
        // The compliance run appended its event to the log unsigned (it holds no
        // key), on an admin chain of its own: a checkpoint covers it (on
        // PostgreSQL `audit checkpoint` signs a cluster checkpoint).
        let out = v.run(&["audit", "checkpoint"], true, limit).await;
        assert!(
            out.success() && out.stderr.contains("signed cluster checkpoint"),
            "audit checkpoint: {}\n{}",
            out.stdout,
            out.stderr
        );
        crate::pg_harness::audit_verifies(&v).await;
    })
    .await;
}
