//! The statements that open and close a writer batch on PostgreSQL in one round
//! trip each (see `session::Batch` for why round trips matter):
//!
//! - [`begin_sql`]: `BEGIN`, the shared key lock, the transaction id, every
//!   card lock of the batch, the dedup rows of its cards, the liveness of the
//!   rows it re-checks and the active key version, as one simple query. A
//!   simple query takes no parameters, so the values are written into the text;
//!   only values that cannot carry SQL are: integers, fingerprints as hex
//!   `bytea` literals, and tenants checked against the API's tenant alphabet
//!   (`[A-Za-z0-9._-]`; anything else makes the caller fall back to bound
//!   parameters). Each statement runs after the one before it has finished,
//!   with a snapshot of its own, so the dedup lookup sees every row committed
//!   by a node whose lock it waited for. Every result row starts with a tag
//!   naming its statement; [`parse_begin`] reads them back (text format).
//! - [`FLUSH`]: the batch's new card rows, audit events and encryption counts in
//!   one statement of three data-modifying `WITH` parts, with bound parameters.

use std::fmt::Write as _;

use postgres::{SimpleQueryMessage, SimpleQueryRow};

use super::PgError;
use super::cards::PgCardRow;

/// What [`begin_sql`] read.
#[derive(Debug, Default)]
pub(crate) struct Begun {
    /// The transaction's id.
    pub(crate) xid: Option<i64>,
    /// Every row (any expiry) of the announced cards.
    pub(crate) rows: Vec<PgCardRow>,
    /// `(id, token, tenant, expires_at)` of each announced row that exists.
    pub(crate) live: Vec<(i64, String, String, Option<i64>)>,
    /// The active data key version, if one is active.
    pub(crate) active: Option<i64>,
    /// The rows read by tenant and token.
    pub(crate) by_token: Vec<PgCardRow>,
}

/// The card columns the `'r'` and `'c'` statements read, in [`card_row`]'s order.
const CARD_COLUMNS: &str = "id, token, tenant, key_version, nonce, ciphertext, fingerprint, brand, \
                            bin, last4, exp_month, exp_year, subject_hash, metadata_sealed, \
                            created_at, expires_at";

/// Whether `tenant` can be written into a statement as a literal: the API's
/// tenant alphabet only (no quote, backslash or anything else).
pub(crate) fn literal_safe(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The opening simple query of a writer batch. `keys`: the card locks, sorted;
/// `cards`: tenant and fingerprint of each announced card (every tenant
/// [`literal_safe`]); `live`: row ids to re-check; `reads`: tenant and token of
/// each card to read (both [`literal_safe`]).
pub(crate) fn begin_sql(
    key_lock: i64,
    wait_ms: i32,
    keys: &[(i32, i32)],
    cards: &[(&str, &[u8])],
    live: &[i64],
    reads: &[(&str, &str)],
) -> Result<String, PgError> {
    let mut sql = String::with_capacity(256 + 40 * keys.len() + 90 * cards.len());
    let w = |e: std::fmt::Error| PgError::Foreign(format!("building a statement: {e}"));
    write!(
        sql,
        "BEGIN; SET LOCAL lock_timeout = {wait_ms}; SET LOCAL bytea_output = 'hex'; \
         SELECT 'k', pg_advisory_xact_lock_shared({key_lock}); SET LOCAL lock_timeout = 0; \
         SELECT 'x', txid_current()"
    )
    .map_err(w)?;
    if !keys.is_empty() {
        // A VALUES list is read in its order: the locks are taken sorted.
        sql.push_str("; SELECT 'l', count(pg_advisory_xact_lock(h, l)) FROM (VALUES ");
        for (i, (h, l)) in keys.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(sql, "{sep}({h},{l})").map_err(w)?;
        }
        sql.push_str(") AS v(h, l)");
    }
    if !cards.is_empty() {
        write!(
            sql,
            "; SELECT 'r', {CARD_COLUMNS} FROM cards WHERE (tenant, fingerprint) IN (VALUES "
        )
        .map_err(w)?;
        for (i, (tenant, fp)) in cards.iter().enumerate() {
            if !literal_safe(tenant) {
                return Err(PgError::Foreign(
                    "a tenant outside the API's alphabet cannot be written into a statement".into(),
                ));
            }
            let sep = if i == 0 { "" } else { "," };
            write!(sql, "{sep}('{tenant}'::text,'\\x").map_err(w)?;
            for b in *fp {
                write!(sql, "{b:02x}").map_err(w)?;
            }
            sql.push_str("'::bytea)");
        }
        sql.push_str(") ORDER BY id");
    }
    if !live.is_empty() {
        sql.push_str("; SELECT 'v', id, token, tenant, expires_at FROM cards WHERE id IN (");
        for (i, id) in live.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(sql, "{sep}{id}").map_err(w)?;
        }
        sql.push(')');
    }
    if !reads.is_empty() {
        write!(
            sql,
            "; SELECT 'c', {CARD_COLUMNS} FROM cards WHERE (tenant, token) IN (VALUES "
        )
        .map_err(w)?;
        for (i, (tenant, token)) in reads.iter().enumerate() {
            if !literal_safe(tenant) || !literal_safe(token) {
                return Err(PgError::Foreign(
                    "a tenant or token outside the API's alphabet cannot be written into a \
                     statement"
                        .into(),
                ));
            }
            let sep = if i == 0 { "" } else { "," };
            write!(sql, "{sep}('{tenant}'::text,'{token}'::text)").map_err(w)?;
        }
        sql.push(')');
    }
    sql.push_str("; SELECT 'a', version FROM data_keys WHERE state = 'active'");
    Ok(sql)
}

/// Reads the answers of [`begin_sql`].
pub(crate) fn parse_begin(messages: &[SimpleQueryMessage]) -> Result<Begun, PgError> {
    let mut out = Begun::default();
    for m in messages {
        let SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        match r.try_get(0)? {
            Some("x") => out.xid = Some(int(r, 1)?),
            Some("r") => out.rows.push(card_row(r)?),
            Some("c") => out.by_token.push(card_row(r)?),
            Some("v") => out
                .live
                .push((int(r, 1)?, text(r, 2)?, text(r, 3)?, opt_int(r, 4)?)),
            Some("a") => out.active = Some(int(r, 1)?),
            Some("k" | "l") => {}
            _ => return Err(bad("an answer of the batch's opening statements")),
        }
    }
    Ok(out)
}

fn bad(what: &str) -> PgError {
    PgError::Foreign(format!("the server sent {what} the vault did not ask for"))
}

fn opt_text(r: &SimpleQueryRow, i: usize) -> Result<Option<&str>, PgError> {
    Ok(r.try_get(i)?)
}

fn text(r: &SimpleQueryRow, i: usize) -> Result<String, PgError> {
    opt_text(r, i)?
        .map(str::to_owned)
        .ok_or_else(|| bad("a null where a value is required"))
}

fn opt_int(r: &SimpleQueryRow, i: usize) -> Result<Option<i64>, PgError> {
    opt_text(r, i)?
        .map(|s| s.parse().map_err(|_| bad("a malformed integer")))
        .transpose()
}

fn int(r: &SimpleQueryRow, i: usize) -> Result<i64, PgError> {
    opt_int(r, i)?.ok_or_else(|| bad("a null where a number is required"))
}

/// A `bytea` in the hex output format (`\x` then two hex digits a byte).
fn opt_bytes(r: &SimpleQueryRow, i: usize) -> Result<Option<Vec<u8>>, PgError> {
    let Some(s) = opt_text(r, i)? else {
        return Ok(None);
    };
    let hex = s
        .strip_prefix("\\x")
        .ok_or_else(|| bad("a bytea not in hex format"))?;
    if hex.len() % 2 != 0 {
        return Err(bad("a bytea of odd length"));
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or_else(|| bad("a bytea with a non-hex digit"))
    };
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Ok(digit(*hi)? << 4 | digit(*lo)?),
            _ => Err(bad("a bytea of odd length")),
        })
        .collect::<Result<Vec<u8>, PgError>>()
        .map(Some)
}

fn bytes(r: &SimpleQueryRow, i: usize) -> Result<Vec<u8>, PgError> {
    opt_bytes(r, i)?.ok_or_else(|| bad("a null where bytes are required"))
}

/// A `cards` row of the `'r'` or `'c'` statement (columns after the tag, in
/// `cards::ROW_COLUMNS` order).
fn card_row(r: &SimpleQueryRow) -> Result<PgCardRow, PgError> {
    Ok(PgCardRow {
        id: int(r, 1)?,
        token: text(r, 2)?,
        tenant: text(r, 3)?,
        key_version: int(r, 4)?,
        nonce: bytes(r, 5)?,
        ciphertext: bytes(r, 6)?,
        fingerprint: bytes(r, 7)?,
        brand: text(r, 8)?,
        bin: text(r, 9)?,
        last4: text(r, 10)?,
        exp_month: int(r, 11)?,
        exp_year: int(r, 12)?,
        subject_hash: opt_bytes(r, 13)?,
        metadata_sealed: opt_bytes(r, 14)?,
        created_at: int(r, 15)?,
        expires_at: opt_int(r, 16)?,
    })
}

/// The batch's new card rows, audit events and encryption counts, in one
/// statement: `$1`–`$15` the cards, `$16` the node and `$17`–`$31` its events (as
/// the audit log's `insert_events`), `$32`/`$33` key versions and counts, added
/// to the node's own rows of `key_encryptions` (a row every node's batch
/// updated would make each wait for the other's commit). Answers how many rows
/// each part wrote.
pub(crate) const FLUSH: &str = "WITH c AS (\
     INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, \
     last4, exp_month, exp_year, subject_hash, metadata_sealed, created_at, expires_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::bytea[], \
     $6::bytea[], $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[], $12::bytea[], \
     $13::bytea[], $14::int8[], $15::int8[]) \
     ON CONFLICT (token, tenant) DO NOTHING RETURNING 1), \
     e AS (INSERT INTO audit_events (node, seq, time_ns, actor, actor_fp, action, \
     tenant, token, purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
     SELECT $16, * FROM unnest($17::bigint[], $18::bigint[], $19::text[], $20::text[], \
     $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::text[], \
     $27::text[], $28::text[], $29::text[], $30::bytea[], $31::bytea[]) \
     ON CONFLICT DO NOTHING RETURNING 1), \
     k AS (INSERT INTO key_encryptions (version, node, n) \
     SELECT v.version, $16, v.n FROM unnest($32::int8[], $33::int8[]) AS v(version, n) \
     ON CONFLICT (version, node) DO UPDATE SET n = key_encryptions.n + EXCLUDED.n \
     RETURNING 1) \
     SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM e), (SELECT count(*) FROM k)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenant_alphabet_is_written_into_a_statement() {
        for ok in ["shop", "shop-1.eu_west", "A", &"a".repeat(64)] {
            assert!(literal_safe(ok), "{ok}");
        }
        for bad in [
            "",
            "sh'op",
            "sh\\op",
            "a b",
            "a;b",
            "é",
            &"a".repeat(65),
            "a\0",
        ] {
            assert!(!literal_safe(bad), "{bad:?}");
        }
        let e = begin_sql(
            1,
            10,
            &[],
            &[("x'; DROP TABLE cards; --", &[1u8][..])],
            &[],
            &[],
        );
        assert!(e.is_err());
        let e = begin_sql(
            1,
            10,
            &[],
            &[],
            &[],
            &[("shop", "tok_'); DELETE FROM cards; --")],
        );
        assert!(e.is_err());
    }

    #[test]
    fn the_opening_statement_holds_only_numbers_hex_and_checked_tenants() {
        let sql = begin_sql(
            7,
            10_000,
            &[(-2, 3), (5, -6)],
            &[("shop", &[0xab, 0x01][..])],
            &[42, 43],
            &[("shop", "tok_AbC1")],
        )
        .unwrap();
        assert!(sql.contains("('shop'::text,'tok_AbC1'::text)"));
        assert!(sql.starts_with("BEGIN; SET LOCAL lock_timeout = 10000;"));
        assert!(sql.contains("(VALUES (-2,3),(5,-6))"));
        assert!(sql.contains("('shop'::text,'\\xab01'::bytea)"));
        assert!(sql.contains("WHERE id IN (42,43)"));
        assert!(sql.ends_with("FROM data_keys WHERE state = 'active'"));
    }
}
