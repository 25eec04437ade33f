//! The log's write path on SQLite: [`LogStore`] and [`LogTx`] for a
//! `rusqlite::Connection` (inside the caller's transaction) and a
//! `rusqlite::Transaction`, and the decoding of stored checkpoints and prune
//! records that the read side (verify, export) shares.
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction};

use super::checkpoint::{Checkpoint, to_i64};
use super::encoding::ChainHash;
use super::error::AuditError;
use super::event::time_ns;
use super::keys::PublicKey;
use super::prune::PruneRecord;
use super::store::{EventRow, Insert, LogStore, LogTx};
use super::verify::{self, Bound, VerifyReport};

/// A constraint violation (a taken key) is [`Insert::Taken`]; SQLite undoes the
/// failed statement only, so the transaction goes on.
fn inserted(r: rusqlite::Result<usize>) -> Result<Insert, AuditError> {
    match r {
        Ok(_) => Ok(Insert::Done),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            Ok(Insert::Taken)
        }
        Err(e) => Err(e.into()),
    }
}

fn prune_record_err() -> AuditError {
    AuditError::Parse {
        what: "stored prune record",
    }
}

impl LogStore for Connection {
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let last: Option<(i64, Vec<u8>)> = self
            .query_row(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match last {
            None => Ok(None),
            Some((seq, hash)) => {
                let bad = || AuditError::CorruptEvent { seq };
                let s = u64::try_from(seq).map_err(|_| bad())?;
                Ok(Some((s, ChainHash::from_slice(&hash).ok_or_else(bad)?)))
            }
        }
    }

    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let pruned: Option<(i64, Vec<u8>)> = self
            .query_row(
                "SELECT first_seq, prev_hash FROM audit_prunes ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match pruned {
            None => Ok(None),
            Some((first, prev)) => {
                let first = u64::try_from(first).map_err(|_| prune_record_err())?;
                let prev = ChainHash::from_slice(&prev).ok_or_else(prune_record_err)?;
                Ok(Some((first, prev)))
            }
        }
    }

    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        latest_checkpoint(self)
    }

    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
        let (seq, id): (Option<i64>, Option<i64>) = self.query_row(
            "SELECT (SELECT max(seq) FROM audit_events), (SELECT max(id) FROM audit_checkpoints)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let seq = match seq {
            Some(s) => Some(u64::try_from(s).map_err(|_| AuditError::CorruptEvent { seq: s })?),
            None => None,
        };
        let id = match id {
            Some(i) => u64::try_from(i).map_err(|_| AuditError::Parse {
                what: "stored checkpoint",
            })?,
            None => 0,
        };
        Ok((seq, id))
    }
}

impl LogTx for Connection {
    fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO audit_events (seq, time_ns, actor, actor_fp, action, tenant, token, \
             purpose, outcome, code, request_id, peer, details, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
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
        inserted(stmt.execute(rusqlite::params![
            to_i64(row.seq)?,
            row.time_ns()?,
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
            &row.prev_hash.0[..],
            &row.hash.0[..],
        ]))
    }

    fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<Insert, AuditError> {
        let mut stmt = self.prepare_cached(
            "INSERT INTO audit_checkpoints (id, seq, head, time_ns, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        inserted(stmt.execute(rusqlite::params![
            to_i64(cp.id)?,
            to_i64(cp.seq)?,
            &cp.head.0[..],
            time_ns(cp.time)?,
            &cp.signature[..],
        ]))
    }

    fn first_event_since(&self, time_ns: i64) -> Result<Option<u64>, AuditError> {
        let seq: Option<i64> = self
            .query_row(
                "SELECT seq FROM audit_events WHERE time_ns >= ?1 ORDER BY seq LIMIT 1",
                [time_ns],
                |r| r.get(0),
            )
            .optional()?;
        seq.map(|s| u64::try_from(s).map_err(|_| AuditError::CorruptEvent { seq: s }))
            .transpose()
    }

    fn kept_from(&self) -> Result<u64, AuditError> {
        let start: i64 = self.query_row(
            "SELECT COALESCE(MAX(first_seq), 1) FROM audit_prunes",
            [],
            |r| r.get(0),
        )?;
        u64::try_from(start).map_err(|_| prune_record_err())
    }

    fn newest_checkpoint_between(
        &self,
        lo: u64,
        hi: u64,
    ) -> Result<Option<Checkpoint>, AuditError> {
        Ok(self
            .query_row(
                "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints \
                 WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq DESC, id DESC LIMIT 1",
                [to_i64(lo)?, to_i64(hi)?],
                |r| Ok(Checkpoint::from_row(r)),
            )
            .optional()?
            .flatten())
    }

    fn verify_through(&self, key: &PublicKey, seq: u64) -> Result<VerifyReport, AuditError> {
        verify::verify_bounded(self, key, &[], Bound::UpTo(seq))
    }

    fn delete_events_through(&self, seq: u64) -> Result<u64, AuditError> {
        let deleted = self.execute("DELETE FROM audit_events WHERE seq <= ?1", [to_i64(seq)?])?;
        u64::try_from(deleted).map_err(|_| AuditError::Overflow)
    }

    fn next_prune_id(&self) -> Result<u64, AuditError> {
        let next: i64 = self.query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM audit_prunes",
            [],
            |r| r.get(0),
        )?;
        u64::try_from(next).map_err(|_| AuditError::Overflow)
    }

    fn insert_prune(&self, record: &PruneRecord) -> Result<(), AuditError> {
        self.execute(
            "INSERT INTO audit_prunes (id, first_seq, prev_hash, checkpoint_id, cutoff_ns, \
             deleted, time_ns, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                to_i64(record.id)?,
                to_i64(record.first_seq)?,
                &record.prev_hash.0[..],
                to_i64(record.checkpoint_id)?,
                time_ns(record.cutoff)?,
                to_i64(record.deleted)?,
                time_ns(record.time)?,
                &record.signature[..],
            ],
        )?;
        Ok(())
    }
}

/// A `Transaction` is its connection (callers pass `&tx` as well as `&conn`).
impl LogStore for Transaction<'_> {
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        (**self).last_event()
    }
    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        (**self).last_prune()
    }
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        LogStore::latest_checkpoint(&**self)
    }
    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
        (**self).log_end()
    }
}

impl LogTx for Transaction<'_> {
    fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError> {
        (**self).insert_event(row)
    }
    fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<Insert, AuditError> {
        (**self).insert_checkpoint(cp)
    }
    fn first_event_since(&self, time_ns: i64) -> Result<Option<u64>, AuditError> {
        (**self).first_event_since(time_ns)
    }
    fn kept_from(&self) -> Result<u64, AuditError> {
        (**self).kept_from()
    }
    fn newest_checkpoint_between(
        &self,
        lo: u64,
        hi: u64,
    ) -> Result<Option<Checkpoint>, AuditError> {
        (**self).newest_checkpoint_between(lo, hi)
    }
    fn verify_through(&self, key: &PublicKey, seq: u64) -> Result<VerifyReport, AuditError> {
        (**self).verify_through(key, seq)
    }
    fn delete_events_through(&self, seq: u64) -> Result<u64, AuditError> {
        (**self).delete_events_through(seq)
    }
    fn next_prune_id(&self) -> Result<u64, AuditError> {
        (**self).next_prune_id()
    }
    fn insert_prune(&self, record: &PruneRecord) -> Result<(), AuditError> {
        (**self).insert_prune(record)
    }
}

/// The latest checkpoint in the log (highest id), if any, without checking it.
pub fn latest_checkpoint(conn: &Connection) -> Result<Option<Checkpoint>, AuditError> {
    let row = conn
        .query_row(
            "SELECT id, seq, head, time_ns, signature FROM audit_checkpoints \
             ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok(Checkpoint::from_row(r)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some(Some(cp)) => Ok(Some(cp)),
        Some(None) => Err(AuditError::Parse {
            what: "stored checkpoint",
        }),
    }
}

impl Checkpoint {
    /// Decodes a row `id, seq, head, time_ns, signature`; `None` if any column is
    /// not what the schema says (the row is then reported as a bad signature).
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> Option<Checkpoint> {
        Checkpoint::from_columns(
            row.get(0).ok()?,
            row.get(1).ok()?,
            &row.get::<_, Vec<u8>>(2).ok()?,
            row.get(3).ok()?,
            &row.get::<_, Vec<u8>>(4).ok()?,
        )
    }
}

impl PruneRecord {
    /// Decodes a row of `audit_prunes` (columns in schema order); `None` if a
    /// column does not hold what the schema says.
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> Option<PruneRecord> {
        PruneRecord::from_columns(
            [
                row.get(0).ok()?,
                row.get(1).ok()?,
                row.get(3).ok()?,
                row.get(4).ok()?,
                row.get(5).ok()?,
                row.get(6).ok()?,
            ],
            &row.get::<_, Vec<u8>>(2).ok()?,
            &row.get::<_, Vec<u8>>(7).ok()?,
        )
    }
}
