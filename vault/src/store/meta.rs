//! The `meta` table: the vault id and the key epoch (the WAL scrub marks, which
//! also live in `meta`, are kept beside the scrub itself in the parent module).

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The value of `key`, if set.
pub fn get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets `key` to `value` (replacing any).
pub fn set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(())
}

/// Bumps `key_epoch` (starting it at 1), so running servers reload their keys.
pub fn bump_key_epoch(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('key_epoch', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

/// The raw `key_epoch` value, if set (parsing it is the caller's: a value that is
/// not a number is corruption).
pub fn key_epoch(conn: &Connection) -> Result<Option<String>, StoreError> {
    get(conn, "key_epoch")
}
