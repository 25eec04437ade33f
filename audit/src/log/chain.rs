//! The writer's side: appending events and checkpoints inside the caller's transaction.
use std::time::Duration;

use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::cluster::{ClusterCheckpoint, ClusterLogTx, NodeHead};
use super::encoding::{self, ChainHash};
use super::error::AuditError;
use super::event::{Action, Actor, NewEvent, Outcome, time_ns};
use super::keys::SigningKey;
use super::store::{EventRow, Insert, LogStore, LogTx};

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
/// All methods that write take the caller's open transaction as a [`LogTx`]
/// (on SQLite a `rusqlite::Connection` or `Transaction`); they never begin,
/// commit or roll back themselves, so an event commits atomically with the
/// change it records. The chain logic is here; the store only keeps rows.
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
    /// On a log shared by several nodes: the heads of this node's last cluster
    /// checkpoint, with its id (stale once the id is not the last one signed,
    /// e.g. after a rollback).
    signed_heads: Option<(u64, Vec<NodeHead>)>,
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
    pub fn load<S: LogStore + ?Sized>(store: &S) -> Result<AuditChain, AuditError> {
        Ok(AuditChain {
            state: read_head(store)?,
            buf: Vec::with_capacity(512),
            signed_heads: None,
        })
    }

    /// Re-reads the head from the database, e.g. after another process (an admin
    /// command) appended. [`AuditChain::append`] does this by itself when its
    /// sequence number turns out to be taken.
    pub fn reload<S: LogStore + ?Sized>(&mut self, store: &S) -> Result<(), AuditError> {
        self.state = read_head(store)?;
        Ok(())
    }

    /// Appends `ev` inside the caller's transaction and returns its sequence
    /// number. The in-memory head moves on at once: restore a snapshot if the
    /// transaction does not commit.
    pub fn append<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        ev: &NewEvent,
    ) -> Result<u64, AuditError> {
        ev.validate()?;
        if let Some(seq) = self.try_append(store, ev)? {
            return Ok(seq);
        }
        // Someone else (an admin command in another process) appended: take
        // their head and try once more.
        self.reload(store)?;
        self.try_append(store, ev)?.ok_or(AuditError::Conflict)
    }

    /// `None` if the sequence number was taken (nothing written, head unchanged).
    fn try_append<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        ev: &NewEvent,
    ) -> Result<Option<u64>, AuditError> {
        let seq = self.state.next_seq;
        ev.encode(seq, &mut self.buf)?;
        let prev_hash = self.state.head;
        let hash = encoding::chain_hash(&prev_hash, &self.buf);
        let row = EventRow {
            seq,
            event: ev,
            prev_hash,
            hash,
        };
        if store.insert_event(&row)? == Insert::Taken {
            return Ok(None);
        }
        self.state.next_seq = seq.checked_add(1).ok_or(AuditError::Overflow)?;
        self.state.head = hash;
        self.state.since_checkpoint = self.state.since_checkpoint.saturating_add(1);
        Ok(Some(seq))
    }

    /// Appends `events` in order inside the caller's transaction, stored in one
    /// call ([`LogTx::insert_events`]), and returns the seq of the first (the
    /// others follow it). As [`AuditChain::append`]: the head moves on at once,
    /// and a taken first seq reloads the head and tries once more.
    pub fn append_all<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        events: &[NewEvent],
    ) -> Result<u64, AuditError> {
        for ev in events {
            ev.validate()?;
        }
        if let Some(first) = self.try_append_all(store, events)? {
            return Ok(first);
        }
        self.reload(store)?;
        self.try_append_all(store, events)?
            .ok_or(AuditError::Conflict)
    }

    fn try_append_all<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        events: &[NewEvent],
    ) -> Result<Option<u64>, AuditError> {
        let first = self.state.next_seq;
        let (mut seq, mut prev_hash) = (first, self.state.head);
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            event.encode(seq, &mut self.buf)?;
            let hash = encoding::chain_hash(&prev_hash, &self.buf);
            rows.push(EventRow {
                seq,
                event,
                prev_hash,
                hash,
            });
            (seq, prev_hash) = (seq.checked_add(1).ok_or(AuditError::Overflow)?, hash);
        }
        if rows.is_empty() {
            return Ok(Some(first));
        }
        if store.insert_events(&rows)? == Insert::Taken {
            return Ok(None);
        }
        let n = u64::try_from(rows.len()).map_err(|_| AuditError::Overflow)?;
        self.state.next_seq = seq;
        self.state.head = prev_hash;
        self.state.since_checkpoint = self.state.since_checkpoint.saturating_add(n);
        Ok(Some(first))
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
    pub fn is_current<S: LogStore + ?Sized>(&self, store: &S) -> Result<bool, AuditError> {
        let (seq_now, id_now) = store.log_end()?;
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
    pub fn checkpoint<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        if let Some(cp) = self.try_checkpoint(store, key, now)? {
            return Ok(cp);
        }
        self.reload(store)?;
        self.try_checkpoint(store, key, now)?
            .ok_or(AuditError::Conflict)
    }

    /// `None` if the checkpoint id was taken (nothing written, head unchanged).
    fn try_checkpoint<S: LogTx + ?Sized>(
        &mut self,
        store: &S,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let id = self.state.next_checkpoint_id;
        let cp = Checkpoint::sign(key, id, self.last_seq(), self.state.head, now)?;
        if store.insert_checkpoint(&cp)? == Insert::Taken {
            return Ok(None);
        }
        self.state.next_checkpoint_id = id.checked_add(1).ok_or(AuditError::Overflow)?;
        self.state.since_checkpoint = 0;
        self.state.last_checkpoint_time = Some(cp.time);
        Ok(Some(cp))
    }
}

/// Reads where the chain stands: the last event, else the last prune record, else genesis.
fn read_head<S: LogStore + ?Sized>(store: &S) -> Result<ChainHead, AuditError> {
    // The checkpoint first: on an engine where each statement sees what has been
    // committed by then (PostgreSQL's READ COMMITTED), the event a checkpoint
    // covers is visible once the checkpoint is, so the head read next is never
    // behind the checkpoint that sets the next id.
    let cp = store.latest_checkpoint()?;
    let (last_seq, head) = match store.last_event()? {
        Some(last) => last,
        None => match store.last_prune()? {
            Some((first, prev)) => (first.saturating_sub(1), prev),
            None => (0, ChainHash::GENESIS),
        },
    };
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

/// A log shared by several nodes: this chain is one node's ([`ClusterLogTx`]).
impl AuditChain {
    /// Signs a cluster checkpoint: every registered node's head as `store`'s
    /// transaction sees it, this node's being the chain's own head, and stores
    /// it inside the caller's transaction. Idle nodes sign too (when
    /// [`AuditChain::checkpoint_due`] says so, or on a timer: a checkpoint
    /// anchors the other nodes' heads even when this chain has not moved).
    ///
    /// If this node's chain in the database is not where the in-memory head
    /// says, or the checkpoint number is taken, the head is reloaded and it
    /// tries once more ([`AuditError::Conflict`] after that).
    pub fn cluster_checkpoint<S: ClusterLogTx + ?Sized>(
        &mut self,
        store: &S,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<ClusterCheckpoint, AuditError> {
        if let Some(cp) = self.try_cluster_checkpoint(store, key, now)? {
            return Ok(cp);
        }
        self.reload(store)?;
        self.try_cluster_checkpoint(store, key, now)?
            .ok_or(AuditError::Conflict)
    }

    fn try_cluster_checkpoint<S: ClusterLogTx + ?Sized>(
        &mut self,
        store: &S,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Option<ClusterCheckpoint>, AuditError> {
        let heads = store.node_heads()?;
        let node = store.node();
        let Some(own) = heads.iter().find(|h| &h.node == node) else {
            return Err(AuditError::NodeNotRegistered);
        };
        if own.seq != self.last_seq() || own.head != self.state.head {
            return Ok(None);
        }
        let id = self.state.next_checkpoint_id;
        let cp = ClusterCheckpoint::sign(key, node.clone(), id, heads, now)?;
        if store.insert_cluster_checkpoint(&cp)? == Insert::Taken {
            return Ok(None);
        }
        self.state.next_checkpoint_id = id.checked_add(1).ok_or(AuditError::Overflow)?;
        self.state.since_checkpoint = 0;
        self.state.last_checkpoint_time = Some(cp.time);
        self.signed_heads = Some((id, cp.heads.clone()));
        Ok(Some(cp))
    }

    /// Whether this node should sign a cluster checkpoint now (on a write
    /// batch, and on the writer's idle tick): when
    /// [`AuditChain::checkpoint_due`] says so for its own events, or when
    /// `policy.every` has passed since its last checkpoint and another node's
    /// head moved since then. So an idle node keeps anchoring the others, and
    /// signs nothing while nothing anywhere changes. One index lookup per node.
    pub fn cluster_checkpoint_due<S: ClusterLogTx + ?Sized>(
        &self,
        store: &S,
        policy: &CheckpointPolicy,
        now: OffsetDateTime,
    ) -> Result<bool, AuditError> {
        if self.checkpoint_due(policy, now) {
            return Ok(true);
        }
        if let Some(last) = self.state.last_checkpoint_time
            && (now - last) < policy.every
        {
            return Ok(false);
        }
        let mut heads = store.node_heads()?;
        heads.sort_by(|a, b| a.node.cmp(&b.node));
        let last_id = self.state.next_checkpoint_id.saturating_sub(1);
        Ok(match &self.signed_heads {
            Some((id, signed)) if *id == last_id => *signed != heads,
            _ => true,
        })
    }

    /// Registers `store`'s node, once: adds it to the registry, appends its
    /// `node.register` event (seq 1 of its chain, by `actor`) and signs its
    /// first cluster checkpoint, all inside the caller's transaction. `None` if
    /// the node was registered already (nothing written). Call it at a node's
    /// start, before its first append.
    pub fn register_node<S: ClusterLogTx + ?Sized>(
        &mut self,
        store: &S,
        key: &SigningKey,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Option<ClusterCheckpoint>, AuditError> {
        if store.register_node(time_ns(now)?)? == Insert::Taken {
            return Ok(None);
        }
        let event = NewEvent::new(now, actor, Action::NodeRegister, Outcome::Success)
            .with_details(format!("node={}", store.node()));
        self.append(store, &event)?;
        self.cluster_checkpoint(store, key, now).map(Some)
    }
}
