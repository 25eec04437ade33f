//! Retention: deleting events older than the retention period, leaving a signed
//! record of where the kept log starts.
use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::cluster::{
    ClusterCheckpoint, ClusterLogTx, NodeHead, NodeId, parse_heads, put_heads, put_lp,
};
use super::encoding::{self, ChainHash};
use super::error::AuditError;
use super::event::{time_ns, utc};
use super::export::StoredEvent;
use super::keys::{PublicKey, SigningKey};
use super::store::{Insert, LogTx};
use super::verify::BreakKind;

/// Domain separation for prune-record signatures.
const PRUNE_DOMAIN: &[u8] = b"panvault-audit prune v1\0";

/// Default retention of audit events (PCI DSS 10.5.1: at least twelve months).
pub const DEFAULT_RETENTION: Duration = Duration::days(365);
/// The shortest retention [`prune`] accepts.
pub const MIN_RETENTION: Duration = Duration::days(365);

/// A signed statement that the events before `first_seq` were deleted under the
/// retention policy; verification starts at `first_seq` with `prev_hash`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PruneRecord {
    /// Record number: 1, 2, 3 … without gaps.
    pub id: u64,
    /// The first event kept.
    pub first_seq: u64,
    /// The hash of event `first_seq - 1` (the head of checkpoint `checkpoint_id`).
    pub prev_hash: ChainHash,
    /// The checkpoint at `first_seq - 1`, where verification of the kept log starts.
    pub checkpoint_id: u64,
    /// Events older than this were eligible.
    pub cutoff: OffsetDateTime,
    /// How many events this purge deleted.
    pub deleted: u64,
    /// When the purge ran.
    pub time: OffsetDateTime,
    /// Ed25519 signature over all the fields above.
    pub signature: [u8; 64],
}

impl PruneRecord {
    pub(crate) fn message(&self) -> Result<Vec<u8>, AuditError> {
        let mut m = Vec::with_capacity(PRUNE_DOMAIN.len() + 8 * 6 + 32);
        m.extend_from_slice(PRUNE_DOMAIN);
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&self.first_seq.to_be_bytes());
        m.extend_from_slice(&self.prev_hash.0);
        m.extend_from_slice(&self.checkpoint_id.to_be_bytes());
        m.extend_from_slice(&time_ns(self.cutoff)?.to_be_bytes());
        m.extend_from_slice(&self.deleted.to_be_bytes());
        m.extend_from_slice(&time_ns(self.time)?.to_be_bytes());
        Ok(m)
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        key.verify(&self.message()?, &self.signature)
    }
}

/// What a purge did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PruneReport {
    /// Events deleted (0: nothing was old enough and covered by a checkpoint).
    pub deleted: u64,
    /// The signed record written, if anything was deleted.
    pub record: Option<PruneRecord>,
}

/// Deletes, inside the caller's transaction, the events that are older than
/// `retention` at `now` **and** covered by a signed checkpoint, after checking
/// that they verify (a broken log is kept as evidence: [`AuditError::Tampered`]).
///
/// Deletion stops at the newest checkpoint `c` such that every event up to
/// `c.seq` is older than `now - retention`; a signed [`PruneRecord`] then says
/// the kept log starts at `c.seq + 1` with `prev_hash = c.head`. Checkpoints are
/// never deleted. Events younger than the retention are never deleted, whatever
/// their order in the log. `retention` below [`MIN_RETENTION`] is refused.
pub fn prune<S: LogTx + ?Sized>(
    store: &S,
    key: &SigningKey,
    now: OffsetDateTime,
    retention: Duration,
) -> Result<PruneReport, AuditError> {
    if retention < MIN_RETENTION {
        return Err(AuditError::RetentionTooShort {
            days: retention.whole_days(),
            min_days: MIN_RETENTION.whole_days(),
        });
    }
    let now = utc(now)?;
    let cutoff = now
        .checked_sub(retention)
        .ok_or(AuditError::TimeOutOfRange)?;

    // The first event that must be kept because of its age (events may be out of
    // time order: take the lowest seq of any young event).
    let limit = match store.first_event_since(time_ns(cutoff)?)? {
        Some(s) => s.saturating_sub(1),
        None => u64::MAX,
    };
    // The newest checkpoint at or before that, beyond what is already pruned.
    let none = PruneReport {
        deleted: 0,
        record: None,
    };
    let start = store.kept_from()?;
    let Some(last_event) = store.log_end()?.0 else {
        return Ok(none); // no event to delete
    };
    let hi = limit.min(last_event);
    if start > hi {
        return Ok(none);
    }
    let Some(cp) = store.newest_checkpoint_between(start, hi)? else {
        return Ok(none);
    };

    // Keep the evidence if what would be deleted does not verify.
    let report = store.verify_through(&key.public_key(), cp.seq)?;
    if let Some(b) = report.problem {
        return Err(AuditError::Tampered {
            seq: b.seq,
            kind: b.kind,
        });
    }

    let deleted = store.delete_events_through(cp.seq)?;
    let mut record = PruneRecord {
        id: store.next_prune_id()?,
        first_seq: cp.seq.checked_add(1).ok_or(AuditError::Overflow)?,
        prev_hash: cp.head,
        checkpoint_id: cp.id,
        cutoff,
        deleted,
        time: now,
        signature: [0; 64],
    };
    record.signature = key.sign(&record.message()?);
    store.insert_prune(&record)?;
    Ok(PruneReport {
        deleted,
        record: Some(record),
    })
}

impl PruneRecord {
    /// A stored prune record from its columns (for any engine): the numbers
    /// `[id, first_seq, checkpoint_id, cutoff_ns, deleted, time_ns]`, then
    /// `prev_hash` and `signature`; `None` if one does not hold what the schema says.
    pub fn from_columns(
        numbers: [i64; 6],
        prev_hash: &[u8],
        signature: &[u8],
    ) -> Option<PruneRecord> {
        let [id, first_seq, checkpoint_id, cutoff_ns, deleted, time_ns] = numbers;
        let u = |v: i64| u64::try_from(v).ok();
        let t = |v: i64| super::event::from_time_ns(v).ok();
        Some(PruneRecord {
            id: u(id)?,
            first_seq: u(first_seq)?,
            prev_hash: ChainHash::from_slice(prev_hash)?,
            checkpoint_id: u(checkpoint_id)?,
            cutoff: t(cutoff_ns)?,
            deleted: u(deleted)?,
            time: t(time_ns)?,
            signature: <[u8; 64]>::try_from(signature).ok()?,
        })
    }
}

// --- A log shared by several nodes (one chain per node, `cluster.rs`).

/// How many of the newest checkpoints signed before the cutoff a purge of a
/// shared log considers (a bounded read, whatever the log's size).
pub const PRUNE_CANDIDATES: u32 = 256;

/// Domain separation for cluster prune-record signatures.
const CLUSTER_PRUNE_DOMAIN: &[u8] = b"panvault-audit cluster-prune v1\0";

/// A signed statement that, on a log shared by several nodes, each node's
/// events up to its *cut* were deleted under the retention policy; each node's
/// kept chain starts at `cut.seq + 1` with `prev_hash = cut.head`.
///
/// The cuts are exactly the heads of one signed cluster checkpoint
/// (`checkpoint_node`'s `#checkpoint_id`), which is never deleted: one signed
/// moment of the whole log, so a verifier checks that the record repeats it.
/// A later record names every node an earlier one names, never with a lower cut.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterPruneRecord {
    /// Record number: 1, 2, 3 … without gaps, for the whole cluster.
    pub id: u64,
    /// The node that signed the cluster checkpoint the cuts come from.
    pub checkpoint_node: NodeId,
    /// That checkpoint's number (per its signer).
    pub checkpoint_id: u64,
    /// Each node's last deleted event (`seq` 0: none of its events), sorted by
    /// node name: that checkpoint's heads.
    pub cuts: Vec<NodeHead>,
    /// Events older than this were eligible.
    pub cutoff: OffsetDateTime,
    /// How many events this purge deleted, over every node.
    pub deleted: u64,
    /// When the purge ran.
    pub time: OffsetDateTime,
    /// Ed25519 signature over all the fields above.
    pub signature: [u8; 64],
}

impl ClusterPruneRecord {
    /// The signed bytes: domain ‖ id ‖ lp(checkpoint_node) ‖ checkpoint_id ‖
    /// cutoff ns ‖ deleted ‖ time ns ‖ cuts (as a cluster checkpoint's heads).
    pub(crate) fn message(&self) -> Result<Vec<u8>, AuditError> {
        let mut m = Vec::with_capacity(CLUSTER_PRUNE_DOMAIN.len() + 128 + 48 * self.cuts.len());
        m.extend_from_slice(CLUSTER_PRUNE_DOMAIN);
        m.extend_from_slice(&self.id.to_be_bytes());
        put_lp(&mut m, self.checkpoint_node.as_str())?;
        m.extend_from_slice(&self.checkpoint_id.to_be_bytes());
        m.extend_from_slice(&time_ns(self.cutoff)?.to_be_bytes());
        m.extend_from_slice(&self.deleted.to_be_bytes());
        m.extend_from_slice(&time_ns(self.time)?.to_be_bytes());
        put_heads(&mut m, &self.cuts)?;
        Ok(m)
    }

    /// Checks the signature with `key`, and that the cuts are in the canonical
    /// order (by node name, one each).
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        let sorted = self.cuts.windows(2).all(|w| match w {
            [a, b] => a.node < b.node,
            _ => true,
        });
        if !sorted {
            return Err(AuditError::BadSignature);
        }
        key.verify(&self.message()?, &self.signature)
    }

    /// The cut it states for `node`, if it names that node.
    pub fn cut_of(&self, node: &NodeId) -> Option<&NodeHead> {
        self.cuts
            .binary_search_by(|h| h.node.cmp(node))
            .ok()
            .and_then(|i| self.cuts.get(i))
    }

    /// The cuts as stored in one column (the encoding of a cluster
    /// checkpoint's heads).
    pub fn cuts_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(8 + self.cuts.len() * 48);
        put_heads(&mut out, &self.cuts)?;
        Ok(out)
    }

    /// A stored record from its columns (for any engine): the numbers `[id,
    /// checkpoint_id, cutoff_ns, deleted, time_ns]`, then `checkpoint_node`,
    /// the cuts column and the signature; `None` if one does not hold what the
    /// schema says.
    pub fn from_columns(
        numbers: [i64; 5],
        checkpoint_node: &str,
        cuts: &[u8],
        signature: &[u8],
    ) -> Option<ClusterPruneRecord> {
        let [id, checkpoint_id, cutoff_ns, deleted, time_ns] = numbers;
        let u = |v: i64| u64::try_from(v).ok();
        let t = |v: i64| super::event::from_time_ns(v).ok();
        Some(ClusterPruneRecord {
            id: u(id)?,
            checkpoint_node: NodeId::new(checkpoint_node).ok()?,
            checkpoint_id: u(checkpoint_id)?,
            cuts: parse_heads(cuts)?,
            cutoff: t(cutoff_ns)?,
            deleted: u(deleted)?,
            time: t(time_ns)?,
            signature: <[u8; 64]>::try_from(signature).ok()?,
        })
    }
}

/// What retention needs from a log shared by several nodes, inside the
/// caller's transaction, beyond [`ClusterLogTx`].
pub trait ClusterPruneTx: ClusterLogTx {
    /// Takes the cluster's prune lock until the transaction ends; `false` if
    /// another transaction (another node, an admin command) holds it.
    fn try_lock_prune(&self) -> Result<bool, AuditError>;

    /// The latest cluster prune record (highest id), if any.
    fn last_cluster_prune(&self) -> Result<Option<ClusterPruneRecord>, AuditError>;

    /// The newest cluster checkpoints (of any signer) signed at or before
    /// `time_ns`, newest first, at most `limit` of them.
    fn cluster_checkpoints_before(
        &self,
        time_ns: i64,
        limit: u32,
    ) -> Result<Vec<ClusterCheckpoint>, AuditError>;

    /// The lowest seq of `node`'s events whose `time_ns` is at or after `time_ns`.
    fn first_event_of_since(&self, node: &NodeId, time_ns: i64) -> Result<Option<u64>, AuditError>;

    /// `node`'s events with a seq in `lo..=hi`, handed to `each` in seq order.
    fn node_events(
        &self,
        node: &NodeId,
        lo: u64,
        hi: u64,
        each: &mut dyn FnMut(&StoredEvent) -> Result<(), AuditError>,
    ) -> Result<(), AuditError>;

    /// Deletes `node`'s events with a seq at or below `seq`; returns how many.
    fn delete_node_events_through(&self, node: &NodeId, seq: u64) -> Result<u64, AuditError>;

    /// Stores a signed cluster prune record; [`Insert::Taken`] if its id is used.
    fn insert_cluster_prune(&self, record: &ClusterPruneRecord) -> Result<Insert, AuditError>;
}

/// What a purge of a log shared by several nodes did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterPruneReport {
    /// Events deleted, over every node.
    pub deleted: u64,
    /// The signed record written, if anything was deleted.
    pub record: Option<ClusterPruneRecord>,
    /// Nothing was done because another transaction holds the prune lock (it
    /// prunes now; the next round finds what it left).
    pub busy: bool,
}

/// [`prune`] for a log shared by several nodes, inside the caller's
/// transaction, once across the cluster (the prune lock; another holder makes
/// it a no-op with [`ClusterPruneReport::busy`]).
///
/// It cuts every node's chain at one signed cluster checkpoint `c`: the one
/// that deletes the most among the newest [`PRUNE_CANDIDATES`] signed before
/// `now - retention` whose every head is older than that too (every event of
/// each node up to the head `c` states for it) and that are not behind the
/// previous cut of any node. (A checkpoint's heads are events committed before
/// it was signed, so one signed before the cutoff normally qualifies; nodes'
/// clocks that disagree only make a round find nothing.) What it deletes is
/// checked first: each node's events from its previous cut (signed by the
/// previous record) must chain to the head `c` signs (a broken log is kept as
/// evidence: [`AuditError::Tampered`]). A signed [`ClusterPruneRecord`]
/// repeats `c`'s heads as the cuts. Nodes `c` does not name (registered after
/// it) keep all their events; events of the nodes appending meanwhile are
/// after their cut, and their writers' heads stay where they are.
pub fn prune_cluster<S: ClusterPruneTx + ?Sized>(
    store: &S,
    key: &SigningKey,
    now: OffsetDateTime,
    retention: Duration,
) -> Result<ClusterPruneReport, AuditError> {
    if retention < MIN_RETENTION {
        return Err(AuditError::RetentionTooShort {
            days: retention.whole_days(),
            min_days: MIN_RETENTION.whole_days(),
        });
    }
    let now = utc(now)?;
    let cutoff = now
        .checked_sub(retention)
        .ok_or(AuditError::TimeOutOfRange)?;
    let cutoff_ns = time_ns(cutoff)?;
    let nothing = |busy| ClusterPruneReport {
        deleted: 0,
        record: None,
        busy,
    };
    if !store.try_lock_prune()? {
        return Ok(nothing(true));
    }
    let public = key.public_key();
    let last = store.last_cluster_prune()?;
    if let Some(l) = &last
        && l.verify(&public).is_err()
    {
        return Err(AuditError::Tampered {
            seq: 0,
            kind: BreakKind::BadSignature,
        });
    }
    let prev: &[NodeHead] = last.as_ref().map_or(&[], |l| &l.cuts);
    let prev_seq = |node: &NodeId| {
        prev.binary_search_by(|h| h.node.cmp(node))
            .ok()
            .and_then(|i| prev.get(i))
            .map_or(0, |h| h.seq)
    };

    // The last event of each node that is old enough (events may be out of
    // time order: everything before the node's first young event).
    let mut limits: BTreeMap<NodeId, u64> = BTreeMap::new();
    let checkpoints = store.cluster_checkpoints_before(cutoff_ns, PRUNE_CANDIDATES)?;
    let mut best: Option<(u128, &ClusterCheckpoint)> = None;
    'candidates: for cp in &checkpoints {
        for p in prev {
            if cp.head_of(&p.node).is_none_or(|h| h.seq < p.seq) {
                continue 'candidates;
            }
        }
        let mut gain = 0u128;
        for h in &cp.heads {
            let limit = match limits.get(&h.node) {
                Some(l) => *l,
                None => {
                    let l = match store.first_event_of_since(&h.node, cutoff_ns)? {
                        Some(s) => s.saturating_sub(1),
                        None => u64::MAX,
                    };
                    limits.insert(h.node.clone(), l);
                    l
                }
            };
            if h.seq > limit {
                continue 'candidates;
            }
            gain = gain.saturating_add(u128::from(h.seq.saturating_sub(prev_seq(&h.node))));
        }
        if gain > 0 && best.is_none_or(|(g, _)| gain > g) {
            best = Some((gain, cp));
        }
    }
    let Some((_, cut)) = best else {
        return Ok(nothing(false));
    };
    let bad_signature = |cp: &ClusterCheckpoint| AuditError::Tampered {
        seq: cp.head_of(&cp.node).map_or(0, |h| h.seq),
        kind: BreakKind::BadSignature,
    };
    if cut.verify(&public).is_err() {
        return Err(bad_signature(cut));
    }

    // Verify, then delete, node by node: from the previous cut to this one.
    let mut deleted = 0u64;
    for h in &cut.heads {
        let (from_seq, from_head) = prev
            .binary_search_by(|p| p.node.cmp(&h.node))
            .ok()
            .and_then(|i| prev.get(i))
            .map_or((0, ChainHash::GENESIS), |p| (p.seq, p.head));
        if h.seq <= from_seq {
            continue;
        }
        check_segment(store, &h.node, (from_seq, from_head), (h.seq, h.head))?;
        deleted = deleted.saturating_add(store.delete_node_events_through(&h.node, h.seq)?);
    }

    let mut record = ClusterPruneRecord {
        id: last
            .as_ref()
            .map_or(Some(1), |l| l.id.checked_add(1))
            .ok_or(AuditError::Overflow)?,
        checkpoint_node: cut.node.clone(),
        checkpoint_id: cut.id,
        cuts: cut.heads.clone(),
        cutoff,
        deleted,
        time: now,
        signature: [0; 64],
    };
    record.signature = key.sign(&record.message()?);
    if store.insert_cluster_prune(&record)? == Insert::Taken {
        return Err(AuditError::Conflict);
    }
    Ok(ClusterPruneReport {
        deleted,
        record: Some(record),
        busy: false,
    })
}

/// Walks `node`'s events after `from` (a signed head: seq and hash) up to `to`
/// (another): each must be there, link to the one before and hash to what is
/// stored, and the last must be `to`'s head. Streams the rows.
fn check_segment<S: ClusterPruneTx + ?Sized>(
    store: &S,
    node: &NodeId,
    (from_seq, from_head): (u64, ChainHash),
    (to_seq, to_head): (u64, ChainHash),
) -> Result<(), AuditError> {
    let broken = |seq, kind| AuditError::Tampered { seq, kind };
    let mut expected = from_seq.checked_add(1).ok_or(AuditError::Overflow)?;
    let mut prev = from_head;
    let mut buf = Vec::with_capacity(512);
    store.node_events(node, expected, to_seq, &mut |ev| {
        let seq = u64::try_from(ev.seq).map_err(|_| broken(expected, BreakKind::Inserted))?;
        if seq != expected {
            return Err(broken(expected, BreakKind::Missing));
        }
        if ChainHash::from_slice(&ev.prev_hash) != Some(prev) {
            return Err(broken(seq, BreakKind::Modified));
        }
        buf.clear();
        encoding::begin(&mut buf, seq, ev.time_ns);
        for t in &ev.text {
            encoding::push_text(&mut buf, t.as_deref().map(str::as_bytes));
        }
        let hash = encoding::chain_hash(&prev, &buf);
        if ChainHash::from_slice(&ev.hash) != Some(hash) {
            return Err(broken(seq, BreakKind::Modified));
        }
        if seq == to_seq && hash != to_head {
            return Err(broken(seq, BreakKind::Modified));
        }
        prev = hash;
        expected = seq.saturating_add(1);
        Ok(())
    })?;
    if expected <= to_seq {
        return Err(broken(expected, BreakKind::Missing));
    }
    Ok(())
}

/// What a purge did, on either kind of log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Pruned {
    /// A single log's purge ([`prune`]).
    Log(PruneReport),
    /// A shared log's purge ([`prune_cluster`]).
    Cluster(ClusterPruneReport),
}

impl Pruned {
    /// Events deleted.
    pub fn deleted(&self) -> u64 {
        match self {
            Pruned::Log(r) => r.deleted,
            Pruned::Cluster(r) => r.deleted,
        }
    }

    /// Nothing was done because another transaction prunes the shared log now.
    pub fn busy(&self) -> bool {
        matches!(self, Pruned::Cluster(r) if r.busy)
    }

    /// What the signed record says, for people (`None`: nothing was deleted).
    pub fn describe(&self) -> Option<String> {
        match self {
            Pruned::Log(PruneReport {
                record: Some(r), ..
            }) => Some(format!(
                "prune record #{}: the kept log starts at seq {} (checkpoint #{})",
                r.id, r.first_seq, r.checkpoint_id
            )),
            Pruned::Cluster(ClusterPruneReport {
                record: Some(r), ..
            }) => {
                let cuts: Vec<String> = r
                    .cuts
                    .iter()
                    .map(|c| format!("{} after seq {}", c.node, c.seq))
                    .collect();
                Some(format!(
                    "cluster prune record #{} at node {}'s checkpoint #{}: kept {}",
                    r.id,
                    r.checkpoint_node,
                    r.checkpoint_id,
                    cuts.join(", ")
                ))
            }
            _ => None,
        }
    }
}
