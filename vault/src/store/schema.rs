//! Schema and versioned migrations (tracked in `PRAGMA user_version`).

use rusqlite::Connection;

use super::StoreError;

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: keys, cards
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE seal (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    method           TEXT NOT NULL CHECK (method IN ('passphrase', 'shamir')),
    kdf_m_kib        INTEGER,
    kdf_t            INTEGER,
    kdf_p            INTEGER,
    salt             BLOB,
    shares_total     INTEGER,
    shares_threshold INTEGER,
    sealed_root      BLOB NOT NULL,
    root_created_at  INTEGER NOT NULL,
    generation       INTEGER NOT NULL
) STRICT;

CREATE TABLE data_keys (
    version      INTEGER PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('active', 'decrypt_only', 'retired', 'destroyed')),
    wrapped      BLOB,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,
    destroyed_at INTEGER,
    encryptions  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX data_keys_one_active ON data_keys(state) WHERE state = 'active';

CREATE TABLE wrapped_keys (
    name       TEXT PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE cards (
    id          INTEGER PRIMARY KEY,
    token       TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    fingerprint BLOB NOT NULL,
    brand       TEXT NOT NULL,
    bin         TEXT NOT NULL,
    last4       TEXT NOT NULL,
    exp_month   INTEGER NOT NULL,
    exp_year    INTEGER NOT NULL,
    subject     TEXT,
    metadata    TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
) STRICT;
CREATE UNIQUE INDEX cards_token ON cards(token);
CREATE INDEX cards_subject ON cards(tenant, subject) WHERE subject IS NOT NULL;
CREATE INDEX cards_key_version ON cards(key_version);
"#,
    // 2: erasure requests (GDPR Art. 17), visible to compliance checks
    r#"
CREATE TABLE erasure_requests (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT NOT NULL,
    subject_hash  TEXT,
    token         TEXT,
    requested_at  INTEGER NOT NULL,
    completed_at  INTEGER,
    tokens_erased INTEGER,
    audit_seq     INTEGER
) STRICT;
CREATE INDEX erasure_requests_open ON erasure_requests(completed_at) WHERE completed_at IS NULL;
"#,
    // 3: a token is unique within its tenant, not across tenants: a bin_last4 token
    // has few free values per card (BIN and last 4 fixed), and another tenant's
    // tokens of the same card used them up. Every lookup by token also names the
    // tenant; token first, so the index still serves a lookup by token alone.
    r#"
DROP INDEX cards_token;
CREATE UNIQUE INDEX cards_token_tenant ON cards(token, tenant);
"#,
    // 4: when the WAL was truncated after an erasure (NULL: page copies of the erased
    // rows may still be in the WAL; the server truncates it as soon as readers allow)
    r#"
ALTER TABLE erasure_requests ADD COLUMN wal_scrubbed_at INTEGER;
"#,
    // 5: card security codes held until a card's first relay (sealed under a key
    // per time window that is deleted once every code under it has expired), and
    // the first answers of requests retried with an `Idempotency-Key`.
    r#"
CREATE TABLE cvc_keys (
    id           INTEGER PRIMARY KEY,
    window_start INTEGER NOT NULL,
    ttl_secs     INTEGER NOT NULL,
    wrapped      BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    destroy_at   INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX cvc_keys_window ON cvc_keys(window_start, ttl_secs);

CREATE TABLE held_cvcs (
    tenant     TEXT NOT NULL,
    token      TEXT NOT NULL,
    key_id     INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    deadline   INTEGER NOT NULL,
    PRIMARY KEY (tenant, token)
) STRICT;
CREATE INDEX held_cvcs_deadline ON held_cvcs(deadline);
CREATE INDEX held_cvcs_key ON held_cvcs(key_id);
-- A deleted, erased or purged card takes its code with it: a later token of the
-- same value (a bin_last4 token can come back) never finds it.
CREATE TRIGGER cards_delete_held_cvc AFTER DELETE ON cards BEGIN
    DELETE FROM held_cvcs WHERE tenant = old.tenant AND token = old.token;
END;

CREATE TABLE idempotency (
    client       TEXT NOT NULL,
    key_hash     BLOB NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER,
    answer       BLOB,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (client, key_hash)
) STRICT;
CREATE INDEX idempotency_created ON idempotency(created_at);
"#,
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// `PRAGMA application_id` of a panvault database ("PNVT"), SQLite's own way of
/// naming a file's application: a foreign SQLite file is refused by it before any
/// migration touches it.
pub const APPLICATION_ID: i64 = 0x504E_5654;

/// Brings the database to the latest schema, each migration in its own transaction,
/// and stamps it with [`APPLICATION_ID`]. A database from a newer build is refused.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest_version() {
        return Err(StoreError::SchemaTooNew(current));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app != APPLICATION_ID {
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(conn: &Connection, token: &str, tenant: &str) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin,
                                last4, exp_month, exp_year, created_at)
             VALUES (?1, ?2, 1, x'00', x'00', x'00', 'visa', '424242', '4242', 12, 2031, 0)",
            [token, tenant],
        )
    }

    /// A vault made before tokens were scoped to their tenant is migrated: the
    /// same token may then exist once per tenant, never twice in one.
    #[test]
    fn tokens_are_unique_per_tenant_after_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        insert(&conn, "424242ab4242", "shop-a").unwrap();
        assert!(insert(&conn, "424242ab4242", "shop-b").is_err());
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        insert(&conn, "424242ab4242", "shop-b").unwrap();
        assert!(insert(&conn, "424242ab4242", "shop-a").is_err());
    }
}
