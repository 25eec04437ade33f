//! The card rows on PostgreSQL (`store::pg::cards`) against a real server the
//! harness starts: a card inserted by one node is found by another, only in its
//! tenant; the dedup lookup; the API's delete returning what the dedup index needs.
//! The rows here are made up (no card number is involved: the card is sealed).

use panvault_vault::store::pg::cards::{self, Inserted, NewCard};
use panvault_vault::store::pg::{self, PgClient, PgSettings, schema};

use crate::util::postgres::PgServer;

const NOW: i64 = 1_750_000_000;
const FP: [u8; 32] = [1; 32];
const SUBJECT_HASH: [u8; 32] = [5; 32];

fn client(pg: &PgServer) -> PgClient {
    pg::connect(&PgSettings::from_url(&pg.url("disable")).unwrap()).unwrap()
}

fn card<'a>(token: &'a str, tenant: &'a str) -> NewCard<'a> {
    NewCard {
        token,
        tenant,
        key_version: 1,
        nonce: &[7; 12],
        ciphertext: &[9; 32],
        fingerprint: &FP,
        brand: "visa",
        bin: "424242",
        last4: "4242",
        exp_month: 12,
        exp_year: 2031,
        subject: Some("cust-1"),
        metadata: Some("{\"order\":\"1\"}"),
        created_at: NOW - 10,
        expires_at: Some(NOW + 1000),
    }
}

#[test]
fn pg_cards_cross_node_tenant_scoped_dedup_and_delete() {
    let Some(pg) = PgServer::start("pg_cards_cross_node_tenant_scoped_dedup_and_delete") else {
        return;
    };
    let mut a = client(&pg);
    schema::migrate(&mut a).unwrap();
    let mut b = client(&pg);

    // Node A inserts in a transaction; a taken token (same tenant) is reported
    // without aborting the transaction, and the same token in another tenant is fine.
    let mut tx = a.transaction().unwrap();
    let sealed_meta = [3u8; 40];
    let Inserted::Row(id) = cards::insert(
        &mut tx,
        &card("tok_1", "shop"),
        Some(&SUBJECT_HASH),
        Some(&sealed_meta),
    )
    .unwrap() else {
        panic!("first insert refused");
    };
    assert_eq!(
        cards::insert(&mut tx, &card("tok_1", "shop"), Some(&SUBJECT_HASH), None).unwrap(),
        Inserted::TokenTaken
    );
    let Inserted::Row(other_id) =
        cards::insert(&mut tx, &card("tok_2", "other"), None, None).unwrap()
    else {
        panic!("insert in another tenant refused");
    };
    // Not visible to node B before the commit.
    assert!(cards::by_token(&mut b, "tok_1", "shop").unwrap().is_none());
    tx.commit().unwrap();

    // Node B finds it at once, as written; nothing in clear was stored.
    let row = cards::by_token(&mut b, "tok_1", "shop").unwrap().unwrap();
    assert_eq!((row.id, row.tenant.as_str()), (id, "shop"));
    assert_eq!(
        (row.key_version, row.exp_month, row.exp_year),
        (1, 12, 2031)
    );
    assert_eq!((row.nonce, row.ciphertext), (vec![7; 12], vec![9; 32]));
    assert_eq!(row.fingerprint, FP.to_vec());
    assert_eq!(row.subject_hash, Some(SUBJECT_HASH.to_vec()));
    assert_eq!(row.metadata_sealed, Some(sealed_meta.to_vec()));
    assert_eq!(
        (row.created_at, row.expires_at),
        (NOW - 10, Some(NOW + 1000))
    );
    let clear: i64 = b
        .query_one(
            "SELECT count(*) FROM cards WHERE position('cust-1'::bytea IN subject_hash) > 0 \
             OR position('order'::bytea IN metadata_sealed) > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(clear, 0);

    // Tenant isolation: the same token in another tenant is not this row.
    assert!(cards::by_token(&mut b, "tok_1", "other").unwrap().is_none());
    assert!(cards::by_token(&mut b, "tok_2", "shop").unwrap().is_none());
    assert_eq!(
        cards::by_token(&mut b, "tok_2", "other")
            .unwrap()
            .unwrap()
            .id,
        other_id
    );

    // Dedup: per tenant, per subject, live rows only.
    let hit = cards::live_dedup_row(&mut b, "shop", &FP, Some(&SUBJECT_HASH), NOW).unwrap();
    assert_eq!(hit.map(|r| r.id), Some(id));
    assert!(
        cards::live_dedup_row(&mut b, "shop", &FP, None, NOW)
            .unwrap()
            .is_none()
    );
    assert!(
        cards::live_dedup_row(&mut b, "shop", &FP, Some(&[6; 32]), NOW)
            .unwrap()
            .is_none()
    );
    assert!(
        cards::live_dedup_row(&mut b, "shop", &[2; 32], Some(&SUBJECT_HASH), NOW)
            .unwrap()
            .is_none()
    );
    assert!(
        cards::live_dedup_row(&mut b, "elsewhere", &FP, Some(&SUBJECT_HASH), NOW)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        cards::live_dedup_row(&mut b, "other", &FP, None, NOW)
            .unwrap()
            .map(|r| r.id),
        Some(other_id)
    );
    assert!(
        cards::live_dedup_row(&mut b, "shop", &FP, Some(&SUBJECT_HASH), NOW + 1000)
            .unwrap()
            .is_none()
    );

    // The API's delete: an expired token is not deleted; a live one returns the
    // (id, fingerprint) the dedup index needs, and is gone for every node.
    assert!(
        cards::delete_live_token(&mut b, "shop", "tok_1", NOW + 1000)
            .unwrap()
            .is_empty()
    );
    assert!(
        cards::delete_live_token(&mut b, "other", "tok_1", NOW)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cards::delete_live_token(&mut b, "shop", "tok_1", NOW).unwrap(),
        vec![(id, FP.to_vec())]
    );
    assert!(cards::by_token(&mut a, "tok_1", "shop").unwrap().is_none());
    assert!(
        cards::live_dedup_row(&mut a, "shop", &FP, Some(&SUBJECT_HASH), NOW)
            .unwrap()
            .is_none()
    );
    assert!(
        cards::delete_live_token(&mut a, "shop", "tok_1", NOW)
            .unwrap()
            .is_empty()
    );
    // An erasure deletes expired or not; the other tenant's row stays until then.
    assert_eq!(
        cards::delete_token(&mut a, "other", "tok_2").unwrap(),
        vec![(other_id, FP.to_vec())]
    );
    assert!(cards::by_token(&mut b, "tok_2", "other").unwrap().is_none());
}
