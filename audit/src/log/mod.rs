//! The tamper-evident audit log (PCI DSS 10.2–10.3, 10.5.1, 10.7).
//!
//! Every event is stored as one row of `audit_events` in the vault's database,
//! written in the same transaction as the change it records. Each row carries
//! the hash of the previous row and its own hash,
//! `hash = SHA-256(prev_hash ‖ canonical encoding)`, where the encoding is
//! versioned, in a fixed field order and length-prefixed (see the `encoding`
//! section of `docs/audit-log.md`). Every so often the writer signs a
//! [`Checkpoint`] — `(id, seq, head hash, time)` — with an Ed25519 key sealed
//! under the vault's root key; [`verify`] needs only the [`PublicKey`].
//!
//! What the vault calls, from its single writer thread, inside its transaction:
//! [`migrate`] once, [`AuditChain::load`], then per event [`AuditChain::append`],
//! [`AuditChain::snapshot`]/[`AuditChain::restore`] around each transaction, and
//! [`AuditChain::checkpoint`] when [`AuditChain::checkpoint_due`] says so, when
//! idle (waiting until [`AuditChain::checkpoint_due_at`], reloading the head when
//! [`AuditChain::is_current`] says another process appended) and at shutdown;
//! [`Checkpoint::append_to_witness`] copies each one to a witness file. Retention
//! runs [`prune`]; erasures hand out an [`ErasureReceipt`].
//!
//! The write path holds no SQL: it goes through [`LogStore`] and [`LogTx`], which
//! SQLite implements for `rusqlite::Connection` and `Transaction` (so `&conn` and
//! `&tx` are what the vault passes); another engine implements them for its own
//! transaction type.
//!
//! A log shared by several nodes (PostgreSQL) keeps one chain per node: the
//! engine implements [`ClusterLogTx`] for one node's view, the writer calls
//! [`AuditChain::register_node`] at start and [`AuditChain::cluster_checkpoint`]
//! where a single log signs a [`Checkpoint`]; retention runs [`prune_cluster`]
//! over the engine's [`ClusterPruneTx`] (one signed [`ClusterPruneRecord`]
//! cuts every node's chain at one cluster checkpoint); the export is written
//! with [`ClusterExportWriter`] and [`verify_export`] checks it.
//!
//! What a verifier calls: [`open_read_only`], [`verify`] (optionally against a
//! checkpoint kept elsewhere) or [`verify_against`] (against many, e.g. a
//! witness file read with [`Checkpoint::parse_many`]), [`export_jsonl`],
//! [`latest_checkpoint`].
//!
//! Events never carry card numbers or keys; a data subject appears only as
//! [`subject_hash`].

mod chain;
mod checkpoint;
mod cluster;
mod cluster_export;
mod encoding;
mod error;
mod event;
mod export;
mod keys;
mod prune;
mod receipt;
mod schema;
mod sqlite;
mod stats;
mod store;
mod verify;

pub use chain::{AuditChain, ChainHead, CheckpointPolicy};
pub use checkpoint::Checkpoint;
pub use cluster::{
    ClusterCheckpoint, ClusterLogTx, MAX_NODE_LEN, NodeHead, NodeId, SignedCheckpoint,
};
pub use cluster_export::{CLUSTER_EXPORT_FORMAT, ClusterExportWriter, verify_cluster_export};
pub use encoding::{ChainHash, ENCODING_VERSION, sha256_hex};
pub use error::AuditError;
pub use event::time_ns;
pub use event::{
    Action, ActionName, Actor, Event, MAX_CODE_LEN, MAX_DETAILS_LEN, MAX_FIELD_LEN, NewEvent,
    Outcome, Resource,
};
pub use export::{
    EXPORT_FORMAT, ExportWriter, StoredEvent, export_jsonl, read_events, verify_export,
    verify_export_through,
};
pub use keys::{PublicKey, SigningKey};
pub use prune::{
    ClusterPruneRecord, ClusterPruneReport, ClusterPruneTx, DEFAULT_RETENTION, MIN_RETENTION,
    PRUNE_CANDIDATES, PruneRecord, PruneReport, Pruned, prune, prune_cluster,
};
pub use receipt::{ErasureReceipt, ReceiptStorage, subject_hash, verify_receipt};
pub use schema::{SCHEMA_SQL, SCHEMA_VERSION, migrate, open_read_only};
pub use sqlite::latest_checkpoint;
pub use stats::{EventStats, event_stats, has_audit_log, oldest_event_time, prune_retention_days};
pub use store::{EventRow, Insert, LogStore, LogTx};
pub use verify::{Break, BreakKind, Location, VerifyReport, verify, verify_against};
