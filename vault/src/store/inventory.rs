//! Read-only counts and names for a vault's inventory (compliance checks and
//! reports): nothing secret, readable without unsealing.

use rusqlite::Connection;

use super::StoreError;

/// Cards stored.
pub(crate) fn count_cards(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?)
}

/// Cards whose expiry month index (year * 12 + month - 1) is before `cutoff_month`.
pub(crate) fn count_expired_before(
    conn: &Connection,
    cutoff_month: i64,
) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM cards WHERE exp_year * 12 + exp_month - 1 < ?1",
        [cutoff_month],
        |r| r.get(0),
    )?)
}

/// Names of the auxiliary wrapped keys, in name order.
pub(crate) fn wrapped_key_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM wrapped_keys ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}
