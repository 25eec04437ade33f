//! Moving a SQLite vault into an empty PostgreSQL database (`panvault migrate
//! --to-postgres`): the keys (seal, data keys, auxiliary keys), `meta`, the cards,
//! the erasure records and the audit log's chain as they are, so every token
//! detokenizes afterwards and the log verifies with the same public key.
//!
//! Held security codes, their window keys and the stored answers of idempotent
//! requests move too (live ones only; see [`SHORT_LIVED`]): a checkout in progress
//! and a retry of a charge keep working across the move.
//!
//! One PostgreSQL transaction: the schema is migrated first, then every table is
//! locked and found empty (a target holding any row is refused with
//! [`PgError::NotEmpty`]), the rows are copied with their ids, the identity
//! sequences are moved past them, the copy is counted, and it commits whole or not
//! at all. The SQLite side is read in one read transaction (one snapshot); the
//! caller keeps other writers away (the CLI holds the data directory's lock).
//!
//! What changes on the way: PostgreSQL stores no personal data in clear, so a
//! card's subject becomes its keyed hash and its subject and metadata are sealed
//! under the record's data key. Both need keys the store never holds: the caller
//! supplies them through [`Protect`] (the service, with the unsealed keys). Left
//! behind on purpose: SQLite's WAL-scrub marks in `meta` and the erasure records'
//! `wal_scrubbed_at` (they describe SQLite's files, not PostgreSQL's), and
//! `audit_meta` (the version of SQLite's audit tables; PostgreSQL's schema has
//! its own version). Audit events keep their sequence numbers and hashes: the log
//! becomes the chain of one node, [`MIGRATED_NODE`], registered and anchored by a
//! cluster checkpoint at the move; SQLite's own checkpoints (signed over the
//! single-chain message, which PostgreSQL does not store) are left behind, so the
//! caller verifies the log before the move. A pruned log is refused.

use panvault_audit::log::{Actor, AuditChain, AuditError, ChainHash, NodeId, SigningKey};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Transaction};
use rusqlite::Connection;
use time::OffsetDateTime;

use super::{PgError, PgLog};
use crate::store::{CardRow, SCRUB_PENDING, SCRUBBED_AT, StoreError};

/// A failure of [`Protect`] (the service's error, kept as the cause).
pub type ProtectError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the store cannot do itself: protecting a card's personal data under keys
/// of the unsealed vault. Any `FnMut(&CardRow) -> Result<(…), ProtectError>` is one.
pub trait Protect {
    /// For `card` as SQLite holds it (subject and metadata in clear): what
    /// PostgreSQL's row holds instead, `(subject_hash, metadata_sealed)`: the
    /// subject's keyed hash (if it has a subject; the dedup lookup and the erasure
    /// by subject find the card by it) and its personal data sealed under its data
    /// key and bound to the row (if it has a subject or metadata).
    fn protect(&mut self, card: &CardRow) -> Result<Protected, ProtectError>;
}

/// `(subject_hash, metadata_sealed)` of a card row on PostgreSQL.
pub type Protected = (Option<Vec<u8>>, Option<Vec<u8>>);

impl<F> Protect for F
where
    F: FnMut(&CardRow) -> Result<Protected, ProtectError>,
{
    fn protect(&mut self, card: &CardRow) -> Result<Protected, ProtectError> {
        self(card)
    }
}

/// A migration that did not happen (nothing was committed to PostgreSQL).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// Reading the SQLite vault failed.
    #[error("reading the SQLite vault: {0}")]
    Sqlite(#[source] StoreError),
    /// PostgreSQL refused the schema, the target or a row (or is unreachable).
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Hashing a subject or sealing the personal data failed.
    #[error("protecting the subject or metadata of card row {id} failed")]
    Protect {
        /// The card row.
        id: i64,
        /// The caller's error.
        #[source]
        source: ProtectError,
    },
    /// The SQLite audit log was pruned: the per-node log on PostgreSQL carries
    /// no prune records yet, so a chain that does not start at event 1 could not
    /// be verified there.
    #[error(
        "the SQLite audit log was pruned (it starts after event 1): the PostgreSQL log cannot carry prune records yet"
    )]
    Pruned,
    /// The target's tables of held security codes are not `UNLOGGED`: codes
    /// copied into them would reach WAL, replicas and backups.
    #[error(
        "the target's held_cvcs and cvc_keys are not UNLOGGED: held security codes are not copied into tables that reach WAL and backups"
    )]
    CodesLogged,
    /// Registering the moved log as a node's chain, or signing its checkpoint, failed.
    #[error("moving the audit log: {0}")]
    Audit(#[source] AuditError),
    /// The rows in PostgreSQL after the copy are not the rows read: nothing is
    /// committed.
    #[error("{table}: {read} rows read from SQLite, {found} found in PostgreSQL after the copy")]
    Mismatch {
        /// The table.
        table: &'static str,
        /// Rows read from SQLite.
        read: u64,
        /// Rows counted in PostgreSQL.
        found: i64,
    },
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e.into())
    }
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Pg(e.into())
    }
}

/// What a migration moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The PostgreSQL schema version written.
    pub schema_version: i64,
    /// Rows written per table, in copy order (`audit_events` counts the moved
    /// events and the node's registration event, `audit_checkpoints` the one
    /// cluster checkpoint signed at the move).
    pub tables: Vec<(&'static str, u64)>,
    /// The node whose chain the moved events are ([`MIGRATED_NODE`]).
    pub audit_node: String,
    /// The SQLite log's checkpoints: checked when the caller verified the log
    /// before the move, superseded by the cluster checkpoint signed at the move
    /// (they are signed over the single-chain message, which the per-node log
    /// does not store).
    pub sqlite_checkpoints: u64,
}

impl Migrated {
    /// Rows copied into `table` (0 for a table not copied).
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// The audit node whose chain the moved SQLite events become: SQLite's log is the
/// one-node case, its events keep their numbers and hashes.
pub const MIGRATED_NODE: &str = "migrated-sqlite";

/// Every table of the PostgreSQL schema a vault writes (all must be empty before).
const TABLES: &[&str] = &[
    "audit_nodes",
    "meta",
    "seal",
    "data_keys",
    "wrapped_keys",
    "cards",
    "erasure_requests",
    "audit_meta",
    "audit_events",
    "audit_checkpoints",
    "audit_prunes",
    "cvc_keys",
    "held_cvcs",
    "idempotency",
];

/// The tables copied as they are: (table, columns, SQLite's filter and order).
const PLAIN: &[(&str, &str, &str)] = &[
    (
        "meta",
        "key, value",
        "WHERE key <> ?1 AND key <> ?2 ORDER BY key",
    ),
    (
        "seal",
        "id, method, kdf_m_kib, kdf_t, kdf_p, salt, shares_total, shares_threshold, \
         sealed_root, root_created_at, generation",
        "ORDER BY id",
    ),
    (
        "data_keys",
        "version, state, wrapped, created_at, retired_at, destroyed_at, encryptions",
        "ORDER BY version",
    ),
    ("wrapped_keys", "name, wrapped, created_at", "ORDER BY name"),
];

/// The erasure records, copied after the cards.
const PLAIN_AFTER: &[(&str, &str, &str)] = &[(
    "erasure_requests",
    "id, tenant, subject_hash, token, requested_at, completed_at, tokens_erased, audit_seq",
    "ORDER BY id",
)];

/// The short-lived rows, copied after the cards so that a shop mid-checkout keeps
/// working: the window keys of held security codes (wrapped under the root key,
/// which moves too) and the codes sealed under them, and the stored first answers
/// of idempotent requests (sealed under a key derived from the subject key), so a
/// retry after the move replays rather than charging twice. Only live codes and
/// keys (`?1` is the time of the move): an expired one would only be swept. Every
/// stored answer: one past its 24 hours is not replayed, and the purge deletes it.
/// PostgreSQL's code tables are `UNLOGGED` (checked before the copy), so the
/// codes reach neither WAL nor a replica nor a backup there either.
const SHORT_LIVED: &[(&str, &str, &str)] = &[
    (
        "cvc_keys",
        "id, window_start, ttl_secs, wrapped, created_at, destroy_at",
        "WHERE destroy_at > ?1 ORDER BY id",
    ),
    (
        "held_cvcs",
        "tenant, token, key_id, nonce, sealed, created_at, deadline",
        "WHERE deadline > ?1 AND key_id IN (SELECT id FROM cvc_keys WHERE destroy_at > ?1) \
         ORDER BY tenant, token",
    ),
    (
        "idempotency",
        "client, key_hash, request_hash, status, answer, created_at",
        "ORDER BY client, key_hash",
    ),
];

/// The columns of an audit event, as both engines store them.
const EVENT_COLUMNS: &str = "seq, time_ns, actor, actor_fp, action, tenant, token, purpose, \
                             outcome, code, request_id, peer, details, prev_hash, hash";

/// Copies the vault of SQLite connection `src` into the empty PostgreSQL database
/// of `dst` (creating or completing its schema first) in one transaction; the
/// subjects and metadata of the cards go through `protect`. A target holding any
/// row is refused before anything is copied.
///
/// The audit events become the chain of node [`MIGRATED_NODE`], unchanged; the
/// node is then registered (its `node.register` event names `actor`) and signs
/// its first cluster checkpoint with `key` (the vault's audit key) at `now`,
/// naming the moved head. The caller verifies the SQLite log before (its
/// checkpoints are not stored on PostgreSQL) and the PostgreSQL export after.
pub fn from_sqlite(
    src: &Connection,
    dst: &mut Client,
    protect: &mut impl Protect,
    key: &SigningKey,
    actor: Actor,
    now: OffsetDateTime,
) -> Result<Migrated, MigrateError> {
    let schema_version = super::schema::migrate(dst)?;
    let read = src.unchecked_transaction()?;
    let mut tx = dst.transaction()?;
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        TABLES.join(", ")
    ))?;
    for table in TABLES {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
            .try_get(0)?;
        if n != 0 {
            return Err(PgError::NotEmpty(format!(
                "table {table} holds {n} rows; migrate only into an empty database"
            ))
            .into());
        }
    }
    let mut tables = Vec::new();
    for (table, columns, tail) in PLAIN {
        let n = if *table == "meta" {
            copy_plain(
                &read,
                &mut tx,
                table,
                columns,
                tail,
                &[&SCRUB_PENDING, &SCRUBBED_AT],
            )?
        } else {
            copy_plain(&read, &mut tx, table, columns, tail, &[])?
        };
        tables.push((*table, n));
    }
    tables.push(("cards", copy_cards(&read, &mut tx, protect)?));
    for (table, columns, tail) in PLAIN_AFTER {
        tables.push((
            *table,
            copy_plain(&read, &mut tx, table, columns, tail, &[])?,
        ));
    }
    if super::cvc::unlogged(&mut tx)? != Some(true) {
        return Err(MigrateError::CodesLogged);
    }
    let moved_at = now.unix_timestamp();
    for (table, columns, tail) in SHORT_LIVED {
        // `?1`, in the tails that have it, is the time of the move.
        let args: &[&dyn rusqlite::ToSql] = if tail.contains("?1") {
            &[&moved_at]
        } else {
            &[]
        };
        tables.push((
            *table,
            copy_plain(&read, &mut tx, table, columns, tail, args)?,
        ));
    }
    let (events, sqlite_checkpoints) = move_audit_log(&read, &mut tx, key, actor, now)?;
    tables.push(("audit_nodes", 1));
    tables.push(("audit_events", events + 1));
    tables.push(("audit_checkpoints", 1));
    // New rows continue after the copied ids.
    for table in ["cards", "erasure_requests", "cvc_keys"] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )?;
    }
    for (table, n) in &tables {
        let found: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
            .try_get(0)?;
        if u64::try_from(found).ok() != Some(*n) {
            return Err(MigrateError::Mismatch {
                table,
                read: *n,
                found,
            });
        }
    }
    tx.commit()?;
    read.finish()?;
    Ok(Migrated {
        schema_version,
        tables,
        audit_node: MIGRATED_NODE.to_owned(),
        sqlite_checkpoints,
    })
}

/// Copies SQLite's audit events as node [`MIGRATED_NODE`]'s chain, checks that
/// its head is SQLite's, registers the node and signs its cluster checkpoint.
/// Returns (events moved, SQLite checkpoints superseded).
fn move_audit_log(
    src: &Connection,
    tx: &mut Transaction<'_>,
    key: &SigningKey,
    actor: Actor,
    now: OffsetDateTime,
) -> Result<(u64, u64), MigrateError> {
    let (prunes, first, last, checkpoints): (i64, Option<i64>, Option<i64>, i64) = src.query_row(
        "SELECT (SELECT count(*) FROM audit_prunes), (SELECT min(seq) FROM audit_events),
                (SELECT max(seq) FROM audit_events), (SELECT count(*) FROM audit_checkpoints)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if prunes > 0 || first.is_some_and(|f| f != 1) {
        return Err(MigrateError::Pruned);
    }
    let sqlite_head: Option<Vec<u8>> = match last {
        Some(seq) => Some(src.query_row(
            "SELECT hash FROM audit_events WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )?),
        None => None,
    };
    let node = NodeId::new(MIGRATED_NODE).map_err(MigrateError::Audit)?;
    let (i8, text, bytes) = (Type::INT8, Type::TEXT, Type::BYTEA);
    let types = [
        text.clone(),
        i8.clone(),
        i8,
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text,
        bytes.clone(),
        bytes,
    ];
    let mut copy = BinaryCopyInWriter::new(
        tx.copy_in(&format!(
            "COPY audit_events (node, {EVENT_COLUMNS}) FROM STDIN BINARY"
        ))?,
        &types,
    );
    let mut select = src.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events ORDER BY seq"
    ))?;
    let mut rows = select.query([])?;
    let mut moved = 0u64;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let time_ns: i64 = r.get(1)?;
        let texts: [Option<String>; 11] = [
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
        ];
        let prev_hash: Vec<u8> = r.get(13)?;
        let hash: Vec<u8> = r.get(14)?;
        let [a, b, c, d, e, f, g, h, i, j, k] = &texts;
        let row: [&(dyn ToSql + Sync); 16] = [
            &MIGRATED_NODE,
            &seq,
            &time_ns,
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
            j,
            k,
            &prev_hash,
            &hash,
        ];
        copy.write(&row)?;
        moved += 1;
    }
    copy.finish()?;
    // The chain as PostgreSQL now holds it ends where SQLite's did; then the node
    // is registered (an event of its own) and signs the checkpoint naming it.
    let log = PgLog::new(&mut *tx, node);
    let mut chain = AuditChain::load(&log).map_err(MigrateError::Audit)?;
    let head_matches = match &sqlite_head {
        None => chain.last_seq() == 0 && chain.head() == ChainHash::GENESIS,
        Some(h) => {
            Some(chain.last_seq()) == last.and_then(|l| u64::try_from(l).ok())
                && chain.head().0.as_slice() == h.as_slice()
        }
    };
    if !head_matches {
        return Err(MigrateError::Mismatch {
            table: "audit_events",
            read: moved,
            found: i64::try_from(chain.last_seq()).unwrap_or(i64::MAX),
        });
    }
    let signed = chain
        .register_node(&log, key, actor, now)
        .map_err(MigrateError::Audit)?;
    if signed.is_none() {
        return Err(MigrateError::Audit(AuditError::Conflict));
    }
    let checkpoints = u64::try_from(checkpoints)
        .map_err(|_| PgError::Corrupt("a SQLite count is negative".into()))?;
    Ok((moved, checkpoints))
}

/// Copies `columns` of `table` as they are, every value bound with the type of
/// PostgreSQL's column (a NULL too, so it matches the column). `args` fill the
/// `?n` of SQLite's `tail`.
fn copy_plain(
    src: &Connection,
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &str,
    tail: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<u64, MigrateError> {
    let n = columns.split(',').count();
    // The statement is only prepared, never run: it tells the columns' types.
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    let insert = tx.prepare(&format!(
        "INSERT INTO {table} ({columns}) VALUES ({})",
        placeholders.join(", ")
    ))?;
    let types = insert.params().to_vec();
    let mut select = src.prepare(&format!("SELECT {columns} FROM {table} {tail}"))?;
    let mut rows = select.query(args)?;
    let mut copy = BinaryCopyInWriter::new(
        tx.copy_in(&format!("COPY {table} ({columns}) FROM STDIN BINARY"))?,
        &types,
    );
    let mut copied = 0u64;
    while let Some(r) = rows.next()? {
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(n);
        for (i, ty) in types.iter().enumerate() {
            values.push(match *ty {
                Type::INT8 => Box::new(r.get::<_, Option<i64>>(i)?),
                Type::INT2 => Box::new(
                    r.get::<_, Option<i64>>(i)?
                        .map(|v| {
                            i16::try_from(v).map_err(|_| {
                                PgError::Corrupt(format!("{table} holds an out-of-range value"))
                            })
                        })
                        .transpose()?,
                ),
                Type::TEXT => Box::new(r.get::<_, Option<String>>(i)?),
                Type::BYTEA => Box::new(r.get::<_, Option<Vec<u8>>>(i)?),
                _ => {
                    return Err(PgError::Corrupt(format!(
                        "{table}: a column of type {ty} has no copy rule"
                    ))
                    .into());
                }
            });
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(AsRef::as_ref).collect();
        copy.write(&refs)?;
        copied += 1;
    }
    copy.finish()?;
    Ok(copied)
}

/// Copies the cards with their ids, the subject hashed and the metadata sealed.
fn copy_cards(
    src: &Connection,
    tx: &mut Transaction<'_>,
    protect: &mut impl Protect,
) -> Result<u64, MigrateError> {
    let (i8, text, bytes) = (Type::INT8, Type::TEXT, Type::BYTEA);
    let types = [
        i8.clone(),
        text.clone(),
        text.clone(),
        i8.clone(),
        bytes.clone(),
        bytes.clone(),
        bytes.clone(),
        text.clone(),
        text.clone(),
        text,
        i8.clone(),
        i8.clone(),
        bytes.clone(),
        bytes,
        i8.clone(),
        i8,
    ];
    let mut copy = BinaryCopyInWriter::new(
        tx.copy_in(
            "COPY cards (id, token, tenant, key_version, nonce, ciphertext, fingerprint, brand,
                         bin, last4, exp_month, exp_year, subject_hash, metadata_sealed,
                         created_at, expires_at) FROM STDIN BINARY",
        )?,
        &types,
    );
    let mut select = src.prepare(
        "SELECT id, token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin, last4,
                exp_month, exp_year, subject, metadata, created_at, expires_at
         FROM cards ORDER BY id",
    )?;
    let mut rows = select.query([])?;
    let mut copied = 0u64;
    while let Some(r) = rows.next()? {
        let card = CardRow {
            id: r.get(0)?,
            token: r.get(1)?,
            tenant: r.get(2)?,
            key_version: r.get(3)?,
            nonce: r.get(4)?,
            ciphertext: r.get(5)?,
            fingerprint: r.get(6)?,
            brand: r.get(7)?,
            bin: r.get(8)?,
            last4: r.get(9)?,
            exp_month: r.get(10)?,
            exp_year: r.get(11)?,
            subject: r.get(12)?,
            metadata: r.get(13)?,
            created_at: r.get(14)?,
            expires_at: r.get(15)?,
            sealed_personal: None,
        };
        let (subject_hash, metadata_sealed) =
            protect
                .protect(&card)
                .map_err(|source| MigrateError::Protect {
                    id: card.id,
                    source,
                })?;
        copy.write(&[
            &card.id,
            &card.token,
            &card.tenant,
            &i64::from(card.key_version),
            &card.nonce,
            &card.ciphertext,
            &card.fingerprint,
            &card.brand,
            &card.bin,
            &card.last4,
            &card.exp_month,
            &card.exp_year,
            &subject_hash,
            &metadata_sealed,
            &card.created_at,
            &card.expires_at,
        ])?;
        copied += 1;
    }
    copy.finish()?;
    Ok(copied)
}
