//! The `meta` table on PostgreSQL: the twins of `store::meta` (same names,
//! arguments and results), inside the caller's transaction or on a plain
//! connection ([`GenericClient`]).

use postgres::GenericClient;

use super::PgError;

/// The value of `key`, if set.
pub fn get(c: &mut impl GenericClient, key: &str) -> Result<Option<String>, PgError> {
    Ok(
        c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.try_get(0))
            .transpose()?,
    )
}

/// Sets `key` to `value` (replacing any).
pub fn set(c: &mut impl GenericClient, key: &str, value: &str) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// Bumps `key_epoch` (starting it at 1), so running nodes reload their keys. A
/// stored value that is not a number fails the statement (SQLite's `CAST` would
/// read it as 0): the epoch is never restarted from a corrupt value.
pub fn bump_key_epoch(c: &mut impl GenericClient) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('key_epoch', '1')
         ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text",
        &[],
    )?;
    Ok(())
}

/// The raw `key_epoch` value, if set (parsing it is the caller's: a value that is
/// not a number is corruption).
pub fn key_epoch(c: &mut impl GenericClient) -> Result<Option<String>, PgError> {
    get(c, "key_epoch")
}
