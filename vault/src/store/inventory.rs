//! Read-only counts and names for a vault's inventory (compliance checks and
//! reports): nothing secret, readable without unsealing.

use rusqlite::Connection;

use super::StoreError;

/// Cards stored.
pub fn count_cards(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?)
}

/// Cards whose expiry month index (year * 12 + month - 1) is before `cutoff_month`.
pub fn count_expired_before(conn: &Connection, cutoff_month: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE exp_year * 12 + exp_month - 1 < ?1",
        [cutoff_month],
        |r| r.get(0),
    )?)
}

/// Names of the auxiliary wrapped keys, in name order.
pub fn wrapped_key_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM wrapped_keys ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// What the `cards` table can hold, for the data-minimisation checks: its
/// columns and the longest stored BIN, last four and fingerprint (in
/// characters, bytes for the fingerprint; `None` when no card is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardShape {
    /// Column names, in table order.
    pub columns: Vec<String>,
    /// Cards stored when the lengths were read.
    pub cards: i64,
    /// Longest `bin`.
    pub max_bin_len: Option<i64>,
    /// Longest `last4`.
    pub max_last4_len: Option<i64>,
    /// Longest `fingerprint`.
    pub max_fingerprint_len: Option<i64>,
}

/// The shape of the `cards` table and its stored values.
pub fn card_shape(conn: &Connection) -> Result<CardShape, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('cards')")?;
    let columns = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let (cards, max_bin_len, max_last4_len, max_fingerprint_len) = conn.query_row(
        "SELECT count(*), max(length(bin)), max(length(last4)), max(length(fingerprint)) FROM cards",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    Ok(CardShape {
        columns,
        cards,
        max_bin_len,
        max_last4_len,
        max_fingerprint_len,
    })
}

/// Cards grouped by the length of their token when it is all digits (a
/// format-preserving token has the card's length), with the most leading and
/// trailing digits any of them keeps in the clear.
#[derive(Debug, PartialEq, Eq)]
pub struct MaskingShape {
    /// The token's length when it is all digits; `None` for opaque tokens.
    pub digit_token_len: Option<i64>,
    /// Cards in the group.
    pub cards: i64,
    /// Longest `bin` in the group.
    pub max_bin_len: Option<i64>,
    /// Longest `last4` in the group.
    pub max_last4_len: Option<i64>,
}

/// [`MaskingShape`] of every group, shortest tokens first.
pub fn masking_shape(conn: &Connection) -> Result<Vec<MaskingShape>, StoreError> {
    // GLOB '*[^0-9]*' is true when any character is not a digit.
    let mut stmt = conn.prepare(
        "SELECT CASE WHEN token GLOB '*[^0-9]*' THEN NULL ELSE length(token) END AS len, \
         count(*), max(length(bin)), max(length(last4)) FROM cards GROUP BY len ORDER BY len",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(MaskingShape {
            digit_token_len: r.get(0)?,
            cards: r.get(1)?,
            max_bin_len: r.get(2)?,
            max_last4_len: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_card_table_has_no_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_writer(&dir.path().join("vault.db"), true).unwrap();
        let shape = card_shape(&conn).unwrap();
        assert_eq!(shape.cards, 0);
        assert_eq!(
            (
                shape.max_bin_len,
                shape.max_last4_len,
                shape.max_fingerprint_len
            ),
            (None, None, None)
        );
        assert!(shape.columns.iter().any(|c| c == "fingerprint"));
        assert!(!shape.columns.iter().any(|c| c == "pan"));
    }
}
