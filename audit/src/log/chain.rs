//! The writer's side: appending events and checkpoints inside the caller's transaction.
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension};
use time::OffsetDateTime;

use super::checkpoint::{Checkpoint, latest_checkpoint, to_i64};
use super::encoding::{self, ChainHash};
use super::error::AuditError;
use super::event::{NewEvent, time_ns};
use super::keys::SigningKey;

/// When the writer should sign a checkpoint (besides at shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many events since the last checkpoint (default 1,000).
    pub every_events: u64,
    /// Or when this much time has passed since the last checkpoint and there are
    /// new events (default 60 s).
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_events: 1000,
            every: Duration::from_secs(60),
        }
    }
}

/// The in-memory state of the chain: where the next event goes.
///
/// Cheap to copy; the vault takes one with [`AuditChain::snapshot`] before a
/// transaction and puts it back with [`AuditChain::restore`] if it rolls back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    next_seq: u64,
    head: ChainHash,
    since_checkpoint: u64,
    next_checkpoint_id: u64,
    last_checkpoint_time: Option<OffsetDateTime>,
}

impl ChainHead {
    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last event (the next event's `prev_hash`).
    pub fn head(&self) -> ChainHash {
        self.head
    }
}

/// The audit chain as the vault's single writer sees it.
///
/// All methods that write take the connection of the caller's open transaction
/// (a `rusqlite::Transaction` derefs to `Connection`); they never begin, commit
/// or roll back themselves, so an event commits atomically with the change it
/// records.
///
/// ```no_run
/// # use panvault_audit::log::*;
/// # fn demo(conn: &mut rusqlite::Connection, key: &SigningKey, ev: NewEvent) -> Result<(), AuditError> {
/// let mut chain = AuditChain::load(conn)?;
/// let policy = CheckpointPolicy::default();
/// let before = chain.snapshot();
/// let tx = conn.transaction()?;
/// let seq = chain.append(&tx, &ev)?; // … together with the data change
/// let now = time::OffsetDateTime::now_utc();
/// if chain.checkpoint_due(&policy, now) {
///     chain.checkpoint(&tx, key, now)?;
/// }
/// if tx.commit().is_err() {
///     chain.restore(before); // nothing of it reached the disk
/// }
/// # let _ = seq; Ok(()) }
/// ```
pub struct AuditChain {
    state: ChainHead,
    /// Scratch space for the encoding (reused; not shown by `Debug`).
    buf: Vec<u8>,
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditChain")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl AuditChain {
    /// Reads the head of the chain from the database (after [`super::migrate`]).
    pub fn load(conn: &Connection) -> Result<AuditChain, AuditError> {
        Ok(AuditChain {
            state: read_head(conn)?,
            buf: Vec::with_capacity(512),
        })
    }

    /// Re-reads the head from the database, e.g. after another process (an admin
    /// command) appended. [`AuditChain::append`] does this by itself when its
    /// sequence number turns out to be taken.
    pub fn reload(&mut self, conn: &Connection) -> Result<(), AuditError> {
        self.state = read_head(conn)?;
        Ok(())
    }

    /// Appends `ev` inside the caller's transaction and returns its sequence
    /// number. The in-memory head moves on at once: restore a snapshot if the
    /// transaction does not commit.
    pub fn append(&mut self, conn: &Connection, ev: &NewEvent) -> Result<u64, AuditError> {
        ev.validate()?;
        match self.try_append(conn, ev) {
            Err(AuditError::Database(e)) if is_constraint(&e) => {
                // Someone else (an admin command in another process) appended:
                // take their head and try once more.
                self.reload(conn)?;
                self.try_append(conn, ev).map_err(|e| match e {
                    AuditError::Database(e) if is_constraint(&e) => AuditError::Conflict,
                    other => other,
                })
            }
            other => other,
        }
    }

    fn try_append(&mut self, conn: &Connection, ev: &NewEvent) -> Result<u64, AuditError> {
        let seq = self.state.next_seq;
        ev.encode(seq, &mut self.buf)?;
        let prev = self.state.head;
        let hash = encoding::chain_hash(&prev, &self.buf);
        let mut stmt = conn.prepare_cached(
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
        ] = ev.text_columns();
        stmt.execute(rusqlite::params![
            to_i64(seq)?,
            time_ns(ev.time)?,
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
            &prev.0[..],
            &hash.0[..],
        ])?;
        self.state.next_seq = seq.checked_add(1).ok_or(AuditError::Overflow)?;
        self.state.head = hash;
        self.state.since_checkpoint = self.state.since_checkpoint.saturating_add(1);
        Ok(seq)
    }

    /// The state to put back with [`AuditChain::restore`] if the transaction fails.
    pub fn snapshot(&self) -> ChainHead {
        self.state
    }

    /// Puts back a snapshot (after a rollback).
    pub fn restore(&mut self, head: ChainHead) {
        self.state = head;
    }

    /// The last appended sequence number (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.state.next_seq.saturating_sub(1)
    }

    /// The hash of the last event.
    pub fn head(&self) -> ChainHash {
        self.state.head
    }

    /// Events appended since the last checkpoint.
    pub fn events_since_checkpoint(&self) -> u64 {
        self.state.since_checkpoint
    }

    /// When the last checkpoint was signed (`None` if the log has none).
    pub fn last_checkpoint_time(&self) -> Option<OffsetDateTime> {
        self.state.last_checkpoint_time
    }

    /// When `policy` will ask for a checkpoint by time: `None` while every event
    /// is signed, the past if one is due already.
    pub fn checkpoint_due_at(&self, policy: &CheckpointPolicy) -> Option<OffsetDateTime> {
        if self.state.since_checkpoint == 0 {
            return None;
        }
        match self.state.last_checkpoint_time {
            None => Some(OffsetDateTime::UNIX_EPOCH),
            Some(last) => Some(last.saturating_add(
                time::Duration::try_from(policy.every).unwrap_or(time::Duration::MAX),
            )),
        }
    }

    /// Whether the database's log ends where this head says: no other process
    /// appended an event or a checkpoint since it was loaded. Two primary-key
    /// lookups; [`AuditChain::reload`] when it says `false`.
    pub fn is_current(&self, conn: &Connection) -> Result<bool, AuditError> {
        let (seq, id): (Option<i64>, Option<i64>) = conn.query_row(
            "SELECT (SELECT max(seq) FROM audit_events), (SELECT max(id) FROM audit_checkpoints)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let seq_now = match seq {
            Some(s) => Some(u64::try_from(s).map_err(|_| AuditError::CorruptEvent { seq: s })?),
            None => None,
        };
        let id_now = match id {
            Some(i) => u64::try_from(i).map_err(|_| AuditError::Parse {
                what: "stored checkpoint",
            })?,
            None => 0,
        };
        Ok(seq_now.is_none_or(|s| s == self.last_seq())
            && id_now.saturating_add(1) == self.state.next_checkpoint_id)
    }

    /// Whether `policy` asks for a checkpoint now: there are unsigned events and
    /// either enough of them or enough time has passed since the last checkpoint.
    pub fn checkpoint_due(&self, policy: &CheckpointPolicy, now: OffsetDateTime) -> bool {
        if self.state.since_checkpoint == 0 {
            return false;
        }
        if self.state.since_checkpoint >= policy.every_events {
            return true;
        }
        match self.state.last_checkpoint_time {
            None => true,
            Some(last) => (now - last) >= policy.every,
        }
    }

    /// Signs the current head and stores the checkpoint inside the caller's
    /// transaction (also for an empty log, and even if nothing changed since the
    /// last one — at shutdown call it when [`AuditChain::events_since_checkpoint`]
    /// is not zero).
    pub fn checkpoint(
        &mut self,
        conn: &Connection,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        match self.try_checkpoint(conn, key, now) {
            Err(AuditError::Database(e)) if is_constraint(&e) => {
                self.reload(conn)?;
                self.try_checkpoint(conn, key, now).map_err(|e| match e {
                    AuditError::Database(e) if is_constraint(&e) => AuditError::Conflict,
                    other => other,
                })
            }
            other => other,
        }
    }

    fn try_checkpoint(
        &mut self,
        conn: &Connection,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        let id = self.state.next_checkpoint_id;
        let cp = Checkpoint::sign(key, id, self.last_seq(), self.state.head, now)?;
        cp.insert(conn)?;
        self.state.next_checkpoint_id = id.checked_add(1).ok_or(AuditError::Overflow)?;
        self.state.since_checkpoint = 0;
        self.state.last_checkpoint_time = Some(cp.time);
        Ok(cp)
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// Reads where the chain stands: the last event, else the last prune record, else genesis.
fn read_head(conn: &Connection) -> Result<ChainHead, AuditError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (last_seq, head) = match last {
        Some((seq, hash)) => {
            let bad = AuditError::CorruptEvent { seq };
            let s = u64::try_from(seq).map_err(|_| AuditError::CorruptEvent { seq })?;
            (s, ChainHash::from_slice(&hash).ok_or(bad)?)
        }
        None => {
            let pruned: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT first_seq, prev_hash FROM audit_prunes ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match pruned {
                Some((first, prev)) => {
                    let err = AuditError::Parse {
                        what: "stored prune record",
                    };
                    let first = u64::try_from(first).map_err(|_| AuditError::Parse {
                        what: "stored prune record",
                    })?;
                    (
                        first.saturating_sub(1),
                        ChainHash::from_slice(&prev).ok_or(err)?,
                    )
                }
                None => (0, ChainHash::GENESIS),
            }
        }
    };
    let cp = latest_checkpoint(conn)?;
    Ok(ChainHead {
        next_seq: last_seq.checked_add(1).ok_or(AuditError::Overflow)?,
        head,
        since_checkpoint: last_seq.saturating_sub(cp.as_ref().map_or(0, |c| c.seq)),
        next_checkpoint_id: cp
            .as_ref()
            .map_or(Ok(1), |c| c.id.checked_add(1).ok_or(AuditError::Overflow))?,
        last_checkpoint_time: cp.map(|c| c.time),
    })
}
