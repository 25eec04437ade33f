//! The audit log's write path on PostgreSQL: [`LogStore`] and [`LogTx`] for a
//! `postgres::Transaction`, and the self-contained export of a PostgreSQL log.
//!
//! The chain logic stays in the audit crate; this only stores and finds rows,
//! inside the caller's transaction. A taken `seq` or checkpoint `id` is
//! answered with `ON CONFLICT DO NOTHING` and a row count of zero: a failed
//! statement would abort a PostgreSQL transaction, and the chain must be able
//! to reload its head and try again in the same one.
//!
//! The read side has one implementation, SQLite's: the log is written out in the
//! export format (`panvault-audit-export-v2`) and verified with the audit crate's
//! `verify_export`. A prune verifies what it would delete the same way.

use std::cell::RefCell;
use std::io::{BufReader, BufWriter, Write};

use panvault_audit::log::{
    AuditError, ChainHash, Checkpoint, EventRow, ExportWriter, Insert, LogStore, LogTx,
    PruneRecord, PublicKey, StoredEvent, VerifyReport, time_ns, verify_export_through,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row};

use super::PgError;

/// The audit log inside a PostgreSQL transaction: what `AuditChain` and
/// `prune` take on this engine. The driver's queries need `&mut`, the seam's
/// methods take `&self`: the transaction is borrowed for the life of this value.
pub struct PgLog<'a, C: GenericClient> {
    tx: RefCell<&'a mut C>,
}

impl<C: GenericClient> std::fmt::Debug for PgLog<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog").finish_non_exhaustive()
    }
}

impl<'a, C: GenericClient> PgLog<'a, C> {
    /// The log as seen from `tx` (a transaction, or a client inside a transaction
    /// begun with `BEGIN`); every write joins it (commit or roll back after this
    /// value is dropped).
    pub fn new(tx: &'a mut C) -> Self {
        PgLog {
            tx: RefCell::new(tx),
        }
    }

    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, AuditError> {
        self.tx.borrow_mut().query_opt(sql, params).map_err(db)
    }

    fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, AuditError> {
        self.tx.borrow_mut().query_one(sql, params).map_err(db)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, AuditError> {
        self.tx.borrow_mut().execute(sql, params).map_err(db)
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

fn prune_record_err() -> AuditError {
    AuditError::Parse {
        what: "stored prune record",
    }
}

fn checkpoint_err() -> AuditError {
    AuditError::Parse {
        what: "stored checkpoint",
    }
}

/// A row `id, seq, head, time_ns, signature`; `None` if a column is not what
/// the schema says.
fn checkpoint_from(row: &Row) -> Option<Checkpoint> {
    Checkpoint::from_columns(
        row.try_get(0).ok()?,
        row.try_get(1).ok()?,
        row.try_get::<_, &[u8]>(2).ok()?,
        row.try_get(3).ok()?,
        row.try_get::<_, &[u8]>(4).ok()?,
    )
}

/// A row of `audit_prunes` in schema order; `None` if a column is not what the
/// schema says.
fn prune_from(row: &Row) -> Option<PruneRecord> {
    PruneRecord::from_columns(
        [
            row.try_get(0).ok()?,
            row.try_get(1).ok()?,
            row.try_get(3).ok()?,
            row.try_get(4).ok()?,
            row.try_get(5).ok()?,
            row.try_get(6).ok()?,
        ],
        row.try_get::<_, &[u8]>(2).ok()?,
        row.try_get::<_, &[u8]>(7).ok()?,
    )
}

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

impl<C: GenericClient> LogStore for PgLog<'_, C> {
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let Some(row) = self.query_opt(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        else {
            return Ok(None);
        };
        let seq: i64 = row.try_get(0).map_err(db)?;
        let bad = || AuditError::CorruptEvent { seq };
        let hash: &[u8] = row.try_get(1).map_err(|_| bad())?;
        Ok(Some((
            seq_of(seq)?,
            ChainHash::from_slice(hash).ok_or_else(bad)?,
        )))
    }

    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let Some(row) = self.query_opt(
            "SELECT first_seq, prev_hash FROM audit_prunes ORDER BY id DESC LIMIT 1",
            &[],
        )?
        else {
            return Ok(None);
        };
        let first: i64 = row.try_get(0).map_err(db)?;
        let prev: &[u8] = row.try_get(1).map_err(db)?;
        Ok(Some((
            u64::try_from(first).map_err(|_| prune_record_err())?,
            ChainHash::from_slice(prev).ok_or_else(prune_record_err)?,
        )))
    }

    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        match self.query_opt(
            "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints \
             ORDER BY id DESC LIMIT 1",
            &[],
        )? {
            None => Ok(None),
            Some(row) => checkpoint_from(&row).map(Some).ok_or_else(checkpoint_err),
        }
    }

    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
        let row = self.query_one(
            "SELECT (SELECT max(seq) FROM audit_events), (SELECT max(id) FROM audit_checkpoints)",
            &[],
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
            "INSERT INTO audit_events (seq, time_ns, actor, actor_fp, action, tenant, token, \
             purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT DO NOTHING",
            &[
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

    fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<Insert, AuditError> {
        let n = self.execute(
            "INSERT INTO audit_checkpoints (id, seq, head, time_ns, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &to_i64(cp.id)?,
                &to_i64(cp.seq)?,
                &&cp.head.0[..],
                &time_ns(cp.time)?,
                &&cp.signature[..],
            ],
        )?;
        Ok(inserted(n))
    }

    fn first_event_since(&self, time_ns: i64) -> Result<Option<u64>, AuditError> {
        let row = self.query_opt(
            "SELECT seq FROM audit_events WHERE time_ns >= $1 ORDER BY seq LIMIT 1",
            &[&time_ns],
        )?;
        row.map(|r| r.try_get::<_, i64>(0).map_err(db).and_then(seq_of))
            .transpose()
    }

    fn kept_from(&self) -> Result<u64, AuditError> {
        let start: i64 = self
            .query_one("SELECT COALESCE(MAX(first_seq), 1) FROM audit_prunes", &[])?
            .try_get(0)
            .map_err(db)?;
        u64::try_from(start).map_err(|_| prune_record_err())
    }

    fn newest_checkpoint_between(
        &self,
        lo: u64,
        hi: u64,
    ) -> Result<Option<Checkpoint>, AuditError> {
        Ok(self
            .query_opt(
                "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints \
                 WHERE seq >= $1 AND seq <= $2 ORDER BY seq DESC, id DESC LIMIT 1",
                &[&to_i64(lo)?, &to_i64(hi)?],
            )?
            .as_ref()
            .and_then(checkpoint_from))
    }

    /// The documented route: the log up to `seq` is written out as an export
    /// and verified by the audit crate's one verifier. The export streams through
    /// a pipe to the verifier on a scoped thread rather than being held whole.
    fn verify_through(&self, key: &PublicKey, seq: u64) -> Result<VerifyReport, AuditError> {
        let (reader, writer) = std::io::pipe()?;
        let mut tx = self.tx.borrow_mut();
        std::thread::scope(|s| {
            let verifier = s.spawn(move || verify_export_through(BufReader::new(reader), key, seq));
            // The writer end is dropped when this returns: the verifier sees the end.
            let written = write_export(&mut **tx, 1, Some(seq), BufWriter::new(writer));
            let verified = verifier.join().map_err(|_| AuditError::Parse {
                what: "export verification (the verifier thread panicked)",
            })?;
            match written {
                Ok(_) => verified,
                // The verifier stopped reading: its error says why.
                Err(AuditError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    verified.and(Err(AuditError::Io(e)))
                }
                // A truncated export must never pass: the writer's error wins.
                Err(e) => Err(e),
            }
        })
    }

    fn delete_events_through(&self, seq: u64) -> Result<u64, AuditError> {
        self.execute("DELETE FROM audit_events WHERE seq <= $1", &[&to_i64(seq)?])
    }

    fn next_prune_id(&self) -> Result<u64, AuditError> {
        let next: i64 = self
            .query_one("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_prunes", &[])?
            .try_get(0)
            .map_err(db)?;
        u64::try_from(next).map_err(|_| AuditError::Overflow)
    }

    fn insert_prune(&self, record: &PruneRecord) -> Result<(), AuditError> {
        self.execute(
            "INSERT INTO audit_prunes (id, first_seq, prev_hash, checkpoint_id, cutoff_ns, \
             deleted, time_ns, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &to_i64(record.id)?,
                &to_i64(record.first_seq)?,
                &&record.prev_hash.0[..],
                &to_i64(record.checkpoint_id)?,
                &time_ns(record.cutoff)?,
                &to_i64(record.deleted)?,
                &time_ns(record.time)?,
                &&record.signature[..],
            ],
        )?;
        Ok(())
    }
}

/// Writes the PostgreSQL log as a self-contained export (`panvault-audit-export-v2`,
/// the same lines as the audit crate's `export_jsonl`), from event `from_seq` on,
/// and returns how many events it holds. It is read in one `REPEATABLE READ`,
/// read-only transaction: one snapshot of the log, whatever the nodes append
/// meanwhile. `verify_export` checks the result with the public key alone.
pub fn export_jsonl(
    client: &mut Client,
    from_seq: u64,
    writer: impl Write,
) -> Result<u64, AuditError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db)?;
    let n = write_export(&mut tx, from_seq, None, writer)?;
    tx.commit().map_err(db)?;
    Ok(n)
}

/// Every prune record, every checkpoint, and the events from `from_seq` on (up
/// to `through` if given), in the export's order, read inside `tx`.
fn write_export(
    tx: &mut impl GenericClient,
    from_seq: u64,
    through: Option<u64>,
    writer: impl Write,
) -> Result<u64, AuditError> {
    let mut out = ExportWriter::new(writer, from_seq)?;
    for row in tx
        .query(
            "SELECT id, first_seq, prev_hash, checkpoint_id, cutoff_ns, deleted, time_ns, \
             signature FROM audit_prunes ORDER BY id",
            &[],
        )
        .map_err(db)?
    {
        out.prune(&prune_from(&row).ok_or_else(prune_record_err)?)?;
    }
    for row in tx
        .query(
            "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints ORDER BY id",
            &[],
        )
        .map_err(db)?
    {
        out.checkpoint(&checkpoint_from(&row).ok_or_else(checkpoint_err)?)?;
    }
    let last = match through {
        Some(s) => to_i64(s)?,
        None => i64::MAX,
    };
    let params: [&(dyn ToSql + Sync); 2] = [&to_i64(from_seq)?, &last];
    let mut rows = tx
        .query_raw(
            "SELECT seq, time_ns, actor, actor_fp, action, tenant, token, purpose, outcome, \
             code, request_id, peer, details, prev_hash, hash FROM audit_events \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
            params,
        )
        .map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        out.event(&event_from(&row)?)?;
    }
    drop(rows);
    out.finish()
}
