//! Checks on a vault's database file.

use std::path::Path;

/// `PRAGMA integrity_check` of the database at `db` (opened read-write, so a
/// WAL left by a killed process is recovered first).
pub fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("\n")
}
