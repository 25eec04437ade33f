//! The audit log on PostgreSQL, shared by several vault nodes: one hash chain
//! per node, anchored together by signed cluster checkpoints (the audit crate's
//! `ClusterLogTx`; `docs/audit-log.md`, "Several nodes"). [`PgLog`] is one
//! node's view inside the caller's transaction, and [`export_jsonl`] writes the
//! whole log (format `panvault-audit-export-v3`) for `verify_export`.
//!
//! The chain logic stays in the audit crate; this only stores and finds rows.
//! A node appends to its own rows `(node, seq)` only, so nodes never wait for
//! each other's rows. A taken `seq` or checkpoint `id` is answered with `ON
//! CONFLICT DO NOTHING` and a row count of zero: a failed statement would abort
//! a PostgreSQL transaction, and the chain must be able to reload its head and
//! try again in the same one.
//!
//! Retention is the audit crate's `prune_cluster` over `ClusterPruneTx`: one
//! cluster prune record cuts every node's chain at the heads of one signed
//! cluster checkpoint. The single-log retention methods of `LogTx` answer
//! `AuditError::Unsupported` (a single chain's prune would cut one node only).

use std::cell::RefCell;
use std::io::Write;

use panvault_audit::log::{
    AuditError, ChainHash, Checkpoint, ClusterCheckpoint, ClusterExportWriter, ClusterLogTx,
    ClusterPruneRecord, ClusterPruneTx, EventRow, Insert, LogStore, LogTx, NodeHead, NodeId,
    PruneRecord, PublicKey, StoredEvent, VerifyReport, time_ns,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row};
use time::OffsetDateTime;

use super::PgError;

/// One node's view of the shared audit log, inside the caller's transaction:
/// what `AuditChain` takes on this engine (`load`, `append`, `register_node`,
/// `cluster_checkpoint`). `C` is a `postgres::Client` on which the caller ran
/// `BEGIN` (and will run `COMMIT`), or a `postgres::Transaction`. The driver's
/// queries need `&mut`, the seam's methods take `&self`: the client is
/// borrowed for the life of this value.
pub struct PgLog<'a, C: GenericClient> {
    client: RefCell<&'a mut C>,
    node: NodeId,
    /// Where appended events wait for [`flush_events`] instead of being
    /// inserted one statement each (a writer batch; see [`PgLog::deferring`]).
    defer: Option<&'a RefCell<Vec<PendingEvent>>>,
}

/// An event appended to the chain (its seq and hashes fixed) whose row is not
/// inserted yet: the writer inserts a batch's events in one statement.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    seq: u64,
    event: panvault_audit::log::NewEvent,
    prev_hash: ChainHash,
    hash: ChainHash,
}

/// The rows of `pending`, as the log stores them.
pub(crate) fn event_rows(pending: &[PendingEvent]) -> Vec<EventRow<'_>> {
    pending
        .iter()
        .map(|r| EventRow {
            seq: r.seq,
            event: &r.event,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
        .collect()
}

impl<C: GenericClient> std::fmt::Debug for PgLog<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl<'a, C: GenericClient> PgLog<'a, C> {
    /// `node`'s view of the log through `client`; every write joins the
    /// transaction open on it (commit or roll back after this value is dropped).
    pub fn new(client: &'a mut C, node: NodeId) -> Self {
        PgLog {
            client: RefCell::new(client),
            node,
            defer: None,
        }
    }

    /// As [`PgLog::new`], but an appended event's row is pushed to `pending`
    /// rather than inserted: the caller inserts them with [`flush_events`]
    /// before any other statement of the transaction reads the log, and before
    /// its `COMMIT`.
    pub fn deferring(
        client: &'a mut C,
        node: NodeId,
        pending: &'a RefCell<Vec<PendingEvent>>,
    ) -> Self {
        PgLog {
            client: RefCell::new(client),
            node,
            defer: Some(pending),
        }
    }

    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, AuditError> {
        self.client.borrow_mut().query_opt(sql, params).map_err(db)
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, AuditError> {
        self.client.borrow_mut().query(sql, params).map_err(db)
    }

    fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, AuditError> {
        self.client.borrow_mut().query_one(sql, params).map_err(db)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, AuditError> {
        self.client.borrow_mut().execute(sql, params).map_err(db)
    }

    fn last_record(&self) -> Result<Option<ClusterPruneRecord>, AuditError> {
        self.query_opt(
            &format!("SELECT {PRUNE_COLUMNS} FROM audit_prunes ORDER BY id DESC LIMIT 1"),
            &[],
        )?
        .map(|row| prune_from(&row))
        .transpose()
    }

    /// This node's cut in the latest prune record (`None`: never pruned, or a
    /// cut before its first event).
    fn own_cut(&self) -> Result<Option<NodeHead>, AuditError> {
        Ok(self
            .last_record()?
            .and_then(|r| r.cut_of(&self.node).cloned())
            .filter(|c| c.seq > 0))
    }
}

/// A driver or server error, as the audit crate carries another engine's errors
/// (described without the server's DETAIL, which can quote row values).
fn db(e: postgres::Error) -> AuditError {
    AuditError::Storage(Box::new(PgError::Db(e)))
}

fn to_i64(v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::Overflow)
}

fn seq_of(seq: i64) -> Result<u64, AuditError> {
    u64::try_from(seq).map_err(|_| AuditError::CorruptEvent { seq })
}

fn inserted(rows: u64) -> Insert {
    if rows == 0 {
        Insert::Taken
    } else {
        Insert::Done
    }
}

fn checkpoint_err() -> AuditError {
    AuditError::Parse {
        what: "stored cluster checkpoint",
    }
}

fn retention<T>() -> Result<T, AuditError> {
    Err(AuditError::Unsupported {
        what: "a single chain's retention (the shared log prunes every node at once)",
    })
}

/// The advisory lock one prune of the shared log holds ("PNVA"), apart from
/// the key lock, the upkeep rounds' and the cards' two-key locks.
const PRUNE_LOCK: i64 = 0x504E_5641;

fn prune_err() -> AuditError {
    AuditError::Parse {
        what: "stored cluster prune record",
    }
}

/// A row `id, checkpoint_node, checkpoint_id, cuts, cutoff_ns, deleted, time_ns, signature`.
fn prune_from(row: &Row) -> Result<ClusterPruneRecord, AuditError> {
    let n = |i: usize| row.try_get::<_, i64>(i).map_err(|_| prune_err());
    ClusterPruneRecord::from_columns(
        [n(0)?, n(2)?, n(4)?, n(5)?, n(6)?],
        row.try_get(1).map_err(|_| prune_err())?,
        row.try_get::<_, &[u8]>(3).map_err(|_| prune_err())?,
        row.try_get::<_, &[u8]>(7).map_err(|_| prune_err())?,
    )
    .ok_or_else(prune_err)
}

const PRUNE_COLUMNS: &str =
    "id, checkpoint_node, checkpoint_id, cuts, cutoff_ns, deleted, time_ns, signature";

/// A row `node, id, time_ns, heads, signature`.
fn checkpoint_from(row: &Row) -> Result<ClusterCheckpoint, AuditError> {
    ClusterCheckpoint::from_columns(
        row.try_get(0).map_err(|_| checkpoint_err())?,
        row.try_get(1).map_err(|_| checkpoint_err())?,
        row.try_get(2).map_err(|_| checkpoint_err())?,
        row.try_get::<_, &[u8]>(3).map_err(|_| checkpoint_err())?,
        row.try_get::<_, &[u8]>(4).map_err(|_| checkpoint_err())?,
    )
    .ok_or_else(checkpoint_err)
}

/// A row `seq, time_ns, the eleven text columns, prev_hash, hash`.
fn event_from(row: &Row) -> Result<StoredEvent, AuditError> {
    let seq: i64 = row.try_get(0).map_err(db)?;
    let bad = |_| AuditError::CorruptEvent { seq };
    let text = |i: usize| row.try_get::<_, Option<String>>(i).map_err(bad);
    Ok(StoredEvent {
        seq,
        time_ns: row.try_get(1).map_err(bad)?,
        text: [
            text(2)?,
            text(3)?,
            text(4)?,
            text(5)?,
            text(6)?,
            text(7)?,
            text(8)?,
            text(9)?,
            text(10)?,
            text(11)?,
            text(12)?,
        ],
        prev_hash: row.try_get(13).map_err(bad)?,
        hash: row.try_get(14).map_err(bad)?,
    })
}

/// `(seq, hash)` of a row, as the last event of a chain.
fn head_from(seq: i64, hash: &[u8]) -> Result<(u64, ChainHash), AuditError> {
    let bad = || AuditError::CorruptEvent { seq };
    Ok((seq_of(seq)?, ChainHash::from_slice(hash).ok_or_else(bad)?))
}

impl<C: GenericClient> LogStore for PgLog<'_, C> {
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let Some(row) = self.query_opt(
            "SELECT seq, hash FROM audit_events WHERE node = $1 ORDER BY seq DESC LIMIT 1",
            &[&self.node.as_str()],
        )?
        else {
            return Ok(None);
        };
        let seq: i64 = row.try_get(0).map_err(db)?;
        let hash: &[u8] = row
            .try_get(1)
            .map_err(|_| AuditError::CorruptEvent { seq })?;
        head_from(seq, hash).map(Some)
    }

    /// Where this node's chain goes on when all its events were pruned: after
    /// its cut in the latest cluster prune record.
    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let Some(cut) = self.own_cut()? else {
            return Ok(None);
        };
        Ok(Some((
            cut.seq.checked_add(1).ok_or(AuditError::Overflow)?,
            cut.head,
        )))
    }

    /// This node's latest cluster checkpoint, as the mark the chain reads.
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        match self.query_opt(
            "SELECT node, id, time_ns, heads, signature FROM audit_checkpoints              WHERE node = $1 ORDER BY id DESC LIMIT 1",
            &[&self.node.as_str()],
        )? {
            None => Ok(None),
            Some(row) => checkpoint_from(&row)?
                .own_mark()
                .map(Some)
                .ok_or_else(checkpoint_err),
        }
    }

    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
        let row = self.query_one(
            "SELECT (SELECT max(seq) FROM audit_events WHERE node = $1),                     (SELECT max(id) FROM audit_checkpoints WHERE node = $1)",
            &[&self.node.as_str()],
        )?;
        let seq: Option<i64> = row.try_get(0).map_err(db)?;
        let id: Option<i64> = row.try_get(1).map_err(db)?;
        let id = match id {
            Some(i) => u64::try_from(i).map_err(|_| checkpoint_err())?,
            None => 0,
        };
        Ok((seq.map(seq_of).transpose()?, id))
    }
}

impl<C: GenericClient> LogTx for PgLog<'_, C> {
    fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError> {
        if let Some(pending) = self.defer {
            pending
                .try_borrow_mut()
                .map_err(|_| AuditError::Conflict)?
                .push(PendingEvent {
                    seq: row.seq,
                    event: row.event.clone(),
                    prev_hash: row.prev_hash,
                    hash: row.hash,
                });
            return Ok(Insert::Done);
        }
        let [
            actor,
            actor_fp,
            action,
            tenant,
            token,
            purpose,
            outcome,
            code,
            request_id,
            peer,
            details,
        ] = row.text_columns();
        let n = self.execute(
            "INSERT INTO audit_events (node, seq, time_ns, actor, actor_fp, action, tenant,              token, purpose, outcome, code, request_id, peer, details, prev_hash, hash)              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)              ON CONFLICT DO NOTHING",
            &[
                &self.node.as_str(),
                &to_i64(row.seq)?,
                &row.time_ns()?,
                &actor,
                &actor_fp,
                &action,
                &tenant,
                &token,
                &purpose,
                &outcome,
                &code,
                &request_id,
                &peer,
                &details,
                &&row.prev_hash.0[..],
                &&row.hash.0[..],
            ],
        )?;
        Ok(inserted(n))
    }

    /// All rows in one statement (one round trip): `unnest` over one array
    /// per column.
    fn insert_events(&self, rows: &[EventRow<'_>]) -> Result<Insert, AuditError> {
        if let Some(pending) = self.defer {
            let mut pending = pending.try_borrow_mut().map_err(|_| AuditError::Conflict)?;
            pending.extend(rows.iter().map(|row| PendingEvent {
                seq: row.seq,
                event: row.event.clone(),
                prev_hash: row.prev_hash,
                hash: row.hash,
            }));
            return Ok(Insert::Done);
        }
        insert_event_rows(&self.node, rows, |sql, params| self.execute(sql, params))
    }

    /// Refused: on a shared log every checkpoint is a cluster checkpoint
    /// (`AuditChain::cluster_checkpoint`).
    fn insert_checkpoint(&self, _: &Checkpoint) -> Result<Insert, AuditError> {
        Err(AuditError::Unsupported {
            what: "a single-log checkpoint (sign a cluster checkpoint)",
        })
    }

    fn first_event_since(&self, time_ns: i64) -> Result<Option<u64>, AuditError> {
        let row = self.query_opt(
            "SELECT seq FROM audit_events WHERE node = $1 AND time_ns >= $2              ORDER BY seq LIMIT 1",
            &[&self.node.as_str(), &time_ns],
        )?;
        row.map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(seq_of))
            .transpose()
    }

    fn kept_from(&self) -> Result<u64, AuditError> {
        match self.own_cut()? {
            Some(cut) => cut.seq.checked_add(1).ok_or(AuditError::Overflow),
            None => Ok(1),
        }
    }

    fn newest_checkpoint_between(&self, _: u64, _: u64) -> Result<Option<Checkpoint>, AuditError> {
        retention()
    }

    fn verify_through(&self, _: &PublicKey, _: u64) -> Result<VerifyReport, AuditError> {
        retention()
    }

    fn delete_events_through(&self, _: u64) -> Result<u64, AuditError> {
        retention()
    }

    fn next_prune_id(&self) -> Result<u64, AuditError> {
        retention()
    }

    fn insert_prune(&self, _: &PruneRecord) -> Result<(), AuditError> {
        retention()
    }
}

impl<C: GenericClient> ClusterLogTx for PgLog<'_, C> {
    fn node(&self) -> &NodeId {
        &self.node
    }

    /// One index lookup per registered node (its last event), no locks; a
    /// node without events is at its cut in the latest prune record, if any.
    fn node_heads(&self) -> Result<Vec<NodeHead>, AuditError> {
        let mut heads = self.query(
            "SELECT n.node, e.seq, e.hash FROM audit_nodes n LEFT JOIN LATERAL              (SELECT seq, hash FROM audit_events WHERE node = n.node ORDER BY seq DESC LIMIT 1) e              ON true",
            &[],
        )?
        .iter()
        .map(|row| {
            let node: &str = row.try_get(0).map_err(db)?;
            let node = NodeId::new(node)?;
            let seq: Option<i64> = row.try_get(1).map_err(db)?;
            let (seq, head) = match seq {
                None => (0, ChainHash::GENESIS),
                Some(s) => head_from(
                    s,
                    row.try_get(2)
                        .map_err(|_| AuditError::CorruptEvent { seq: s })?,
                )?,
            };
            Ok(NodeHead { node, seq, head })
        })
        .collect::<Result<Vec<_>, AuditError>>()?;
        if heads.iter().any(|h| h.seq == 0)
            && let Some(record) = self.last_record()?
        {
            for h in heads.iter_mut().filter(|h| h.seq == 0) {
                if let Some(cut) = record.cut_of(&h.node) {
                    h.seq = cut.seq;
                    h.head = cut.head;
                }
            }
        }
        Ok(heads)
    }

    fn register_node(&self, time_ns: i64) -> Result<Insert, AuditError> {
        let n = self.execute(
            "INSERT INTO audit_nodes (node, registered_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&self.node.as_str(), &time_ns],
        )?;
        Ok(inserted(n))
    }

    fn insert_cluster_checkpoint(&self, cp: &ClusterCheckpoint) -> Result<Insert, AuditError> {
        if cp.node != self.node {
            return Err(AuditError::Internal);
        }
        let n = self.execute(
            "INSERT INTO audit_checkpoints (node, id, time_ns, heads, signature)              VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &cp.node.as_str(),
                &to_i64(cp.id)?,
                &time_ns(cp.time)?,
                &cp.heads_bytes()?,
                &&cp.signature[..],
            ],
        )?;
        Ok(inserted(n))
    }
}

/// [`insert_event_rows`]' statement.
const INSERT_EVENTS: &str = "INSERT INTO audit_events (node, seq, time_ns, actor, actor_fp, action, \
     tenant, token, purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
     SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
     $12::text[], $13::text[], $14::text[], $15::bytea[], $16::bytea[]) \
     ON CONFLICT DO NOTHING";

/// Inserts `rows` of `node` in one statement (one round trip: `unnest` over one
/// array per column) run by `execute`.
fn insert_event_rows(
    node: &NodeId,
    rows: &[EventRow<'_>],
    execute: impl FnOnce(&'static str, &[&(dyn ToSql + Sync)]) -> Result<u64, AuditError>,
) -> Result<Insert, AuditError> {
    let n = with_event_params(node, rows, |params| execute(INSERT_EVENTS, params))?;
    match usize::try_from(n) {
        Ok(0) if !rows.is_empty() => Ok(Insert::Taken),
        Ok(n) if n == rows.len() => Ok(Insert::Done),
        _ => Err(AuditError::Conflict),
    }
}

/// Calls `f` with the parameters of [`INSERT_EVENTS`] (`$1`–`$16`) for `rows`
/// of `node`: the node, then one array per column.
pub(super) fn with_event_params<T>(
    node: &NodeId,
    rows: &[EventRow<'_>],
    f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> Result<T, AuditError>,
) -> Result<T, AuditError> {
    let mut seqs = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut text: [Vec<Option<&str>>; 11] = Default::default();
    let mut prev = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    for row in rows {
        seqs.push(to_i64(row.seq)?);
        times.push(row.time_ns()?);
        for (column, value) in text.iter_mut().zip(row.text_columns()) {
            column.push(value);
        }
        prev.push(&row.prev_hash.0[..]);
        hashes.push(&row.hash.0[..]);
    }
    let [
        actor,
        actor_fp,
        action,
        tenant,
        token,
        purpose,
        outcome,
        code,
        request_id,
        peer,
        details,
    ] = &text;
    f(&[
        &node.as_str(),
        &seqs,
        &times,
        actor,
        actor_fp,
        action,
        tenant,
        token,
        purpose,
        outcome,
        code,
        request_id,
        peer,
        details,
        &prev,
        &hashes,
    ])
}

impl<C: GenericClient> ClusterPruneTx for PgLog<'_, C> {
    fn try_lock_prune(&self) -> Result<bool, AuditError> {
        self.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])?
            .try_get(0)
            .map_err(db)
    }

    fn last_cluster_prune(&self) -> Result<Option<ClusterPruneRecord>, AuditError> {
        self.last_record()
    }

    /// One index range scan (`audit_checkpoints_time`).
    fn cluster_checkpoints_before(
        &self,
        time_ns: i64,
        limit: u32,
    ) -> Result<Vec<ClusterCheckpoint>, AuditError> {
        self.query(
            "SELECT node, id, time_ns, heads, signature FROM audit_checkpoints \
             WHERE time_ns <= $1 ORDER BY time_ns DESC, node COLLATE \"C\", id LIMIT $2",
            &[&time_ns, &i64::from(limit)],
        )?
        .iter()
        .map(checkpoint_from)
        .collect()
    }

    fn first_event_of_since(&self, node: &NodeId, time_ns: i64) -> Result<Option<u64>, AuditError> {
        let row = self.query_opt(
            "SELECT seq FROM audit_events WHERE node = $1 AND time_ns >= $2 ORDER BY seq LIMIT 1",
            &[&node.as_str(), &time_ns],
        )?;
        row.map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(seq_of))
            .transpose()
    }

    /// Streams the rows (never all in memory at once).
    fn node_events(
        &self,
        node: &NodeId,
        lo: u64,
        hi: u64,
        each: &mut dyn FnMut(&StoredEvent) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let (lo, hi) = (to_i64(lo)?, to_i64(hi)?);
        let params: [&(dyn ToSql + Sync); 3] = [&node.as_str(), &lo, &hi];
        let mut client = self.client.borrow_mut();
        let mut rows = client
            .query_raw(
                "SELECT seq, time_ns, actor, actor_fp, action, tenant, token, purpose, outcome, \
                 code, request_id, peer, details, prev_hash, hash FROM audit_events \
                 WHERE node = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
                params,
            )
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            each(&event_from(&row)?)?;
        }
        Ok(())
    }

    fn delete_node_events_through(&self, node: &NodeId, seq: u64) -> Result<u64, AuditError> {
        self.execute(
            "DELETE FROM audit_events WHERE node = $1 AND seq <= $2",
            &[&node.as_str(), &to_i64(seq)?],
        )
    }

    fn insert_cluster_prune(&self, r: &ClusterPruneRecord) -> Result<Insert, AuditError> {
        let n = self.execute(
            "INSERT INTO audit_prunes (id, checkpoint_node, checkpoint_id, cuts, cutoff_ns, \
             deleted, time_ns, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING",
            &[
                &to_i64(r.id)?,
                &r.checkpoint_node.as_str(),
                &to_i64(r.checkpoint_id)?,
                &r.cuts_bytes()?,
                &time_ns(r.cutoff)?,
                &to_i64(r.deleted)?,
                &time_ns(r.time)?,
                &&r.signature[..],
            ],
        )?;
        Ok(inserted(n))
    }
}

/// Writes the whole PostgreSQL log as a multi-node export
/// (`panvault-audit-export-v3`) and returns how many events it holds. It is
/// read in one `REPEATABLE READ`, read-only transaction: one snapshot of the
/// log, whatever the nodes append meanwhile. `verify_export` checks the result
/// with the public key alone.
pub fn export_jsonl(client: &mut Client, writer: impl Write) -> Result<u64, AuditError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db)?;
    let mut out = ClusterExportWriter::new(writer)?;
    // Node names are a-z 0-9 . _ -: in the "C" collation their order is the
    // bytewise order the export requires.
    for row in tx
        .query(
            "SELECT node, registered_ns FROM audit_nodes ORDER BY node COLLATE \"C\"",
            &[],
        )
        .map_err(db)?
    {
        let node: &str = row.try_get(0).map_err(db)?;
        let registered: i64 = row.try_get(1).map_err(db)?;
        let registered = OffsetDateTime::from_unix_timestamp_nanos(i128::from(registered))
            .map_err(|_| AuditError::TimeOutOfRange)?;
        out.node(&NodeId::new(node)?, registered)?;
    }
    for row in tx
        .query(
            "SELECT node, id, time_ns, heads, signature FROM audit_checkpoints              ORDER BY node COLLATE \"C\", id",
            &[],
        )
        .map_err(db)?
    {
        out.checkpoint(&checkpoint_from(&row)?)?;
    }
    for row in tx
        .query(
            &format!("SELECT {PRUNE_COLUMNS} FROM audit_prunes ORDER BY id"),
            &[],
        )
        .map_err(db)?
    {
        out.prune(&prune_from(&row)?)?;
    }
    let none: [&(dyn ToSql + Sync); 0] = [];
    let mut rows = tx
        .query_raw(
            "SELECT seq, time_ns, actor, actor_fp, action, tenant, token, purpose, outcome,              code, request_id, peer, details, prev_hash, hash, node FROM audit_events              ORDER BY node COLLATE \"C\", seq",
            none,
        )
        .map_err(db)?;
    let mut current: Option<NodeId> = None;
    while let Some(row) = rows.next().map_err(db)? {
        let node: &str = row.try_get(15).map_err(db)?;
        if current.as_ref().is_none_or(|c| c.as_str() != node) {
            current = Some(NodeId::new(node)?);
        }
        let Some(node) = &current else {
            return Err(AuditError::Internal);
        };
        out.event(node, &event_from(&row)?)?;
    }
    drop(rows);
    let n = out.finish()?;
    tx.commit().map_err(db)?;
    Ok(n)
}
