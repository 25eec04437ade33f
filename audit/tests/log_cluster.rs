//! A log shared by several nodes: one chain per node, anchored by cluster
//! checkpoints. The nodes here write into an in-memory store (the engine's
//! part is only rows), the log is exported in the multi-node format and
//! verified with the public key alone; then each kind of tampering with the
//! rows is detected, and named by node.
// Test code: a panic is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use panvault_audit::log::{
    Action, Actor, AuditChain, AuditError, BreakKind, ChainHash, Checkpoint, ClusterCheckpoint,
    ClusterExportWriter, ClusterLogTx, ClusterPruneRecord, ClusterPruneTx, EventRow, Insert,
    LogStore, LogTx, NewEvent, NodeHead, NodeId, Outcome, PruneRecord, PublicKey, SigningKey,
    StoredEvent, VerifyReport, time_ns, verify_export,
};
use time::OffsetDateTime;

#[derive(Default, Clone)]
struct Db {
    nodes: BTreeMap<NodeId, i64>,
    events: BTreeMap<(NodeId, u64), StoredEvent>,
    checkpoints: BTreeMap<(NodeId, u64), ClusterCheckpoint>,
    prunes: BTreeMap<u64, ClusterPruneRecord>,
    /// Another transaction holds the prune lock.
    prune_locked: bool,
}

impl Db {
    /// `node`'s cut in the latest prune record (seq 0: none).
    fn cut(&self, node: &NodeId) -> Option<NodeHead> {
        let last = self.prunes.values().next_back()?;
        last.cut_of(node).cloned().filter(|c| c.seq > 0)
    }
}

/// One node's view of the shared store.
struct View {
    db: Rc<RefCell<Db>>,
    node: NodeId,
}

fn unsupported<T>() -> Result<T, AuditError> {
    Err(AuditError::Unsupported {
        what: "retention in this test store",
    })
}

impl LogStore for View {
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        let db = self.db.borrow();
        let last = db
            .events
            .range((self.node.clone(), 0)..=(self.node.clone(), u64::MAX))
            .next_back();
        Ok(last.map(|((_, seq), e)| (*seq, ChainHash::from_slice(&e.hash).unwrap())))
    }
    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
        Ok(self
            .db
            .borrow()
            .cut(&self.node)
            .map(|c| (c.seq + 1, c.head)))
    }
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let db = self.db.borrow();
        let last = db
            .checkpoints
            .range((self.node.clone(), 0)..=(self.node.clone(), u64::MAX))
            .next_back();
        Ok(last.and_then(|(_, c)| c.own_mark()))
    }
    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
        let seq = self.last_event()?.map(|(s, _)| s);
        Ok((seq, self.latest_checkpoint()?.map_or(0, |c| c.id)))
    }
}

impl LogTx for View {
    fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError> {
        let key = (self.node.clone(), row.seq);
        let mut db = self.db.borrow_mut();
        if db.events.contains_key(&key) {
            return Ok(Insert::Taken);
        }
        let text = row.text_columns().map(|t| t.map(str::to_owned));
        db.events.insert(
            key,
            StoredEvent {
                seq: i64::try_from(row.seq).unwrap(),
                time_ns: row.time_ns()?,
                text,
                prev_hash: row.prev_hash.0.to_vec(),
                hash: row.hash.0.to_vec(),
            },
        );
        Ok(Insert::Done)
    }
    fn insert_checkpoint(&self, _: &Checkpoint) -> Result<Insert, AuditError> {
        unsupported()
    }
    fn first_event_since(&self, _: i64) -> Result<Option<u64>, AuditError> {
        unsupported()
    }
    fn kept_from(&self) -> Result<u64, AuditError> {
        Ok(1)
    }
    fn newest_checkpoint_between(&self, _: u64, _: u64) -> Result<Option<Checkpoint>, AuditError> {
        unsupported()
    }
    fn verify_through(&self, _: &PublicKey, _: u64) -> Result<VerifyReport, AuditError> {
        unsupported()
    }
    fn delete_events_through(&self, _: u64) -> Result<u64, AuditError> {
        unsupported()
    }
    fn next_prune_id(&self) -> Result<u64, AuditError> {
        unsupported()
    }
    fn insert_prune(&self, _: &PruneRecord) -> Result<(), AuditError> {
        unsupported()
    }
}

impl ClusterLogTx for View {
    fn node(&self) -> &NodeId {
        &self.node
    }
    fn node_heads(&self) -> Result<Vec<NodeHead>, AuditError> {
        let nodes: Vec<NodeId> = self.db.borrow().nodes.keys().cloned().collect();
        Ok(nodes
            .into_iter()
            .map(|node| {
                let view = View {
                    db: self.db.clone(),
                    node: node.clone(),
                };
                let (seq, head) = view.last_event().unwrap().unwrap_or_else(|| {
                    self.db
                        .borrow()
                        .cut(&node)
                        .map_or((0, ChainHash::GENESIS), |c| (c.seq, c.head))
                });
                NodeHead { node, seq, head }
            })
            .collect())
    }
    fn register_node(&self, time_ns: i64) -> Result<Insert, AuditError> {
        let mut db = self.db.borrow_mut();
        if db.nodes.contains_key(&self.node) {
            return Ok(Insert::Taken);
        }
        db.nodes.insert(self.node.clone(), time_ns);
        Ok(Insert::Done)
    }
    fn insert_cluster_checkpoint(&self, cp: &ClusterCheckpoint) -> Result<Insert, AuditError> {
        let key = (self.node.clone(), cp.id);
        let mut db = self.db.borrow_mut();
        if db.checkpoints.contains_key(&key) {
            return Ok(Insert::Taken);
        }
        db.checkpoints.insert(key, cp.clone());
        Ok(Insert::Done)
    }
}

impl ClusterPruneTx for View {
    fn try_lock_prune(&self) -> Result<bool, AuditError> {
        Ok(!self.db.borrow().prune_locked)
    }
    fn last_cluster_prune(&self) -> Result<Option<ClusterPruneRecord>, AuditError> {
        Ok(self.db.borrow().prunes.values().next_back().cloned())
    }
    fn cluster_checkpoints_before(
        &self,
        t: i64,
        limit: u32,
    ) -> Result<Vec<ClusterCheckpoint>, AuditError> {
        let mut cps: Vec<ClusterCheckpoint> = self
            .db
            .borrow()
            .checkpoints
            .values()
            .filter(|c| time_ns(c.time).unwrap() <= t)
            .cloned()
            .collect();
        cps.sort_by_key(|c| std::cmp::Reverse(c.time));
        cps.truncate(usize::try_from(limit).unwrap());
        Ok(cps)
    }
    fn first_event_of_since(&self, node: &NodeId, t: i64) -> Result<Option<u64>, AuditError> {
        let db = self.db.borrow();
        let young = db
            .events
            .iter()
            .filter(|((n, _), e)| n == node && e.time_ns >= t);
        Ok(young.map(|((_, seq), _)| *seq).min())
    }
    fn node_events(
        &self,
        node: &NodeId,
        lo: u64,
        hi: u64,
        each: &mut dyn FnMut(&StoredEvent) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let db = self.db.borrow();
        for (_, e) in db.events.range((node.clone(), lo)..=(node.clone(), hi)) {
            each(e)?;
        }
        Ok(())
    }
    fn delete_node_events_through(&self, node: &NodeId, seq: u64) -> Result<u64, AuditError> {
        let mut db = self.db.borrow_mut();
        let before = db.events.len();
        db.events.retain(|(n, s), _| n != node || *s > seq);
        Ok(u64::try_from(before - db.events.len()).unwrap())
    }
    fn insert_cluster_prune(&self, r: &ClusterPruneRecord) -> Result<Insert, AuditError> {
        let mut db = self.db.borrow_mut();
        if db.prunes.contains_key(&r.id) {
            return Ok(Insert::Taken);
        }
        db.prunes.insert(r.id, r.clone());
        Ok(Insert::Done)
    }
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[9; 32]).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
}

fn event(node: &str, i: u32) -> NewEvent {
    NewEvent::new(
        now(),
        Actor::client(format!("client-{node}"), "ab"),
        Action::Detokenize,
        Outcome::Success,
    )
    .with_tenant("shop")
    .with_token(format!("tok_{node}_{i}"))
    .with_purpose("refund")
}

fn export(db: &Db) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut out = ClusterExportWriter::new(&mut buf).unwrap();
        for (node, t) in &db.nodes {
            out.node(
                node,
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(*t)).unwrap(),
            )
            .unwrap();
        }
        for cp in db.checkpoints.values() {
            out.checkpoint(cp).unwrap();
        }
        for p in db.prunes.values() {
            out.prune(p).unwrap();
        }
        for ((node, _), ev) in &db.events {
            out.event(node, ev).unwrap();
        }
        out.finish().unwrap();
    }
    buf
}

fn verify(db: &Db) -> VerifyReport {
    verify_export(export(db).as_slice(), &key().public_key(), &[]).unwrap()
}

/// Three nodes: `a` and `b` interleave appends and checkpoints, `c` registers
/// and then stays idle but keeps signing; `a` appends two more events after its
/// last checkpoint (the unanchored tail).
fn cluster() -> Db {
    let db = Rc::new(RefCell::new(Db::default()));
    let view = |n: &str| View {
        db: db.clone(),
        node: NodeId::new(n).unwrap(),
    };
    let mut chains = Vec::new();
    for n in ["a", "b", "c"] {
        let v = view(n);
        let mut chain = AuditChain::load(&v).unwrap();
        let cp = chain
            .register_node(&v, &key(), Actor::admin("ops"), now())
            .unwrap()
            .unwrap();
        assert_eq!((cp.id, chain.last_seq()), (1, 1));
        assert!(
            chain
                .register_node(&v, &key(), Actor::admin("ops"), now())
                .unwrap()
                .is_none()
        );
        chains.push((v, chain));
    }
    for round in 0..4u32 {
        for (v, chain) in chains.iter_mut().take(2) {
            let name = v.node.as_str();
            if name == "a" {
                for i in 0..3 {
                    chain.append(v, &event(name, round * 3 + i)).unwrap();
                }
            } else {
                // b writes its batches in one call.
                let events: Vec<NewEvent> = (0..3).map(|i| event(name, round * 3 + i)).collect();
                let first = chain.append_all(v, &events).unwrap();
                assert_eq!(first, 2 + u64::from(round) * 3);
            }
            chain.cluster_checkpoint(v, &key(), now()).unwrap();
        }
        let (v, chain) = &mut chains[2];
        let cp = chain.cluster_checkpoint(v, &key(), now()).unwrap();
        assert_eq!(cp.heads.len(), 3, "every registered node is named");
    }
    let (v, chain) = &mut chains[0];
    for i in 100..102 {
        chain.append(v, &event("a", i)).unwrap();
    }
    // A chain reloaded from the store alone ends where the writer's does.
    let reloaded = AuditChain::load(&chains[0].0).unwrap();
    assert_eq!(reloaded.snapshot(), chains[0].1.snapshot());
    db.borrow().clone()
}

fn problem(r: &VerifyReport) -> (BreakKind, u64, String) {
    let b = r.problem.as_ref().expect("the change went unnoticed");
    (b.kind, b.seq, b.detail.clone())
}

#[test]
fn an_intact_cluster_log_verifies_with_its_unanchored_tail() {
    let db = cluster();
    let r = verify(&db);
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.events, 1 + 12 + 2 + 1 + 12 + 1);
    assert_eq!(r.checkpoints, 5 + 5 + 5);
    assert_eq!(
        r.unsigned_tail, 2,
        "a's two events after its last checkpoint"
    );
    let heads: Vec<(&str, u64)> = r.nodes.iter().map(|h| (h.node.as_str(), h.seq)).collect();
    assert_eq!(heads, [("a", 15), ("b", 13), ("c", 1)]);
}

#[test]
fn a_modified_event_is_named_by_node_and_seq() {
    let mut db = cluster();
    let key_b = (NodeId::new("b").unwrap(), 5);
    db.events.get_mut(&key_b).unwrap().text[5] = Some("other".into());
    let (kind, seq, detail) = problem(&verify(&db));
    assert_eq!((kind, seq), (BreakKind::Modified, 5));
    assert!(detail.starts_with("node b:"), "{detail}");
}

#[test]
fn a_deleted_event_is_named_by_node() {
    let mut db = cluster();
    db.events.remove(&(NodeId::new("a").unwrap(), 7));
    let (kind, seq, detail) = problem(&verify(&db));
    assert_eq!((kind, seq), (BreakKind::Missing, 7));
    assert!(detail.starts_with("node a:"), "{detail}");
}

#[test]
fn swapped_events_are_reordered() {
    let mut db = cluster();
    let (k3, k4) = (
        (NodeId::new("b").unwrap(), 3),
        (NodeId::new("b").unwrap(), 4),
    );
    let mut e3 = db.events.remove(&k3).unwrap();
    let mut e4 = db.events.remove(&k4).unwrap();
    std::mem::swap(&mut e3.seq, &mut e4.seq);
    db.events.insert(k3, e4);
    db.events.insert(k4, e3);
    let (kind, seq, detail) = problem(&verify(&db));
    assert_eq!((kind, seq), (BreakKind::Reordered, 3));
    assert!(detail.starts_with("node b:"), "{detail}");
}

#[test]
fn an_event_moved_to_another_node_is_caught_in_both() {
    let mut db = cluster();
    let from = (NodeId::new("b").unwrap(), 13);
    let ev = db.events.remove(&from).unwrap();
    db.events
        .insert((NodeId::new("c").unwrap(), 2), StoredEvent { seq: 2, ..ev });
    let (_, seq, detail) = problem(&verify(&db));
    assert_eq!(seq, 13);
    assert!(detail.starts_with("node b:"), "{detail}");
}

#[test]
fn a_nodes_whole_history_gone_is_caught_by_the_others_checkpoints() {
    let mut db = cluster();
    let b = NodeId::new("b").unwrap();
    db.events.retain(|(n, _), _| *n != b);
    db.checkpoints.retain(|(n, _), _| *n != b);
    db.nodes.remove(&b);
    let (kind, seq, detail) = problem(&verify(&db));
    assert_eq!((kind, seq), (BreakKind::Truncated, 1));
    assert!(detail.starts_with("node b:"), "{detail}");
    assert!(detail.contains("checkpoint #"), "{detail}");
}

#[test]
fn checkpoints_removed_from_a_signers_run_or_altered_are_caught() {
    let mut db = cluster();
    db.checkpoints.remove(&(NodeId::new("c").unwrap(), 2));
    let (kind, _, detail) = problem(&verify(&db));
    assert_eq!(kind, BreakKind::Missing);
    assert!(detail.starts_with("node c:"), "{detail}");

    let mut db = cluster();
    let cp = db
        .checkpoints
        .get_mut(&(NodeId::new("c").unwrap(), 3))
        .unwrap();
    cp.heads[0].seq += 1;
    let (kind, _, detail) = problem(&verify(&db));
    assert_eq!(kind, BreakKind::BadSignature);
    assert!(detail.starts_with("node c:"), "{detail}");
}

#[test]
fn a_truncated_tail_beyond_every_checkpoint_goes_unnoticed_but_is_reported_unanchored() {
    let mut db = cluster();
    let a = NodeId::new("a").unwrap();
    db.events.remove(&(a.clone(), 15));
    db.events.remove(&(a, 14));
    let r = verify(&db);
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.unsigned_tail, 0);
    // One more, into the signed part: caught.
    db.events.remove(&(NodeId::new("a").unwrap(), 13));
    let (kind, seq, _) = problem(&verify(&db));
    assert_eq!((kind, seq), (BreakKind::Truncated, 13));
}

#[test]
fn an_export_not_in_the_format_is_refused_by_line() {
    let db = cluster();
    let text = String::from_utf8(export(&db)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2); // two node lines out of order: the second is line 3
    let err = verify_export(lines.join("\n").as_bytes(), &key().public_key(), &[]).unwrap_err();
    assert!(
        matches!(err, AuditError::BadExport { line: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn an_idle_node_signs_when_the_others_moved_and_the_interval_passed() {
    use panvault_audit::log::CheckpointPolicy;
    use time::Duration;

    let db = Rc::new(RefCell::new(Db::default()));
    let (a, idle) = (
        View {
            db: db.clone(),
            node: NodeId::new("a").unwrap(),
        },
        View {
            db: db.clone(),
            node: NodeId::new("idle").unwrap(),
        },
    );
    let mut chain_a = AuditChain::load(&a).unwrap();
    chain_a
        .register_node(&a, &key(), Actor::admin("ops"), now())
        .unwrap();
    let mut chain_i = AuditChain::load(&idle).unwrap();
    chain_i
        .register_node(&idle, &key(), Actor::admin("ops"), now())
        .unwrap();
    let policy = CheckpointPolicy {
        every_events: 1000,
        every: std::time::Duration::from_secs(60),
    };
    let later = now() + Duration::seconds(61);
    // Nothing moved since its checkpoint: nothing to sign, however long it waits.
    assert!(
        !chain_i
            .cluster_checkpoint_due(&idle, &policy, later)
            .unwrap()
    );
    chain_a.append(&a, &event("a", 1)).unwrap();
    // a moved: not before the interval, then yes.
    let soon = now() + Duration::seconds(10);
    assert!(
        !chain_i
            .cluster_checkpoint_due(&idle, &policy, soon)
            .unwrap()
    );
    assert!(
        chain_i
            .cluster_checkpoint_due(&idle, &policy, later)
            .unwrap()
    );
    let cp = chain_i.cluster_checkpoint(&idle, &key(), later).unwrap();
    assert_eq!(cp.head_of(&a.node).map(|h| h.seq), Some(2));
    assert!(
        !chain_i
            .cluster_checkpoint_due(&idle, &policy, later + Duration::seconds(120))
            .unwrap()
    );
    // a's event is anchored by the idle node alone.
    let r = verify(&db.borrow());
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.unsigned_tail, 0);
}

#[test]
fn cluster_checkpoints_kept_elsewhere_catch_a_log_cut_back_on_every_node() {
    use panvault_audit::log::{Location, verify_cluster_export};

    let db = cluster();
    let (a, b, c) = (
        NodeId::new("a").unwrap(),
        NodeId::new("b").unwrap(),
        NodeId::new("c").unwrap(),
    );
    // A witness file: every checkpoint a signed, as JSON lines.
    let witness: String = db
        .checkpoints
        .iter()
        .filter(|((n, _), _)| *n == a)
        .map(|(_, cp)| cp.to_json().unwrap() + "\n")
        .collect();
    let kept = ClusterCheckpoint::parse_many(&witness).unwrap();
    assert_eq!(kept.len(), 5);
    let with = |db: &Db, kept: &[ClusterCheckpoint]| {
        verify_cluster_export(export(db).as_slice(), &key().public_key(), kept).unwrap()
    };
    assert!(with(&db, &kept).is_intact());

    // Every node's newest checkpoint removed, and a's events they alone
    // covered: the log verifies on its own, not against what was kept.
    let mut cut = db.clone();
    for n in [&a, &b, &c] {
        cut.checkpoints.remove(&(n.clone(), 5));
    }
    for seq in 11..=15 {
        cut.events.remove(&(a.clone(), seq));
    }
    assert!(
        verify(&cut).is_intact(),
        "nothing in the log itself shows it"
    );
    let r = with(&cut, &kept);
    let p = r.problem.expect("the cut went unnoticed");
    assert_eq!((p.kind, p.location), (BreakKind::Missing, Location::Anchor));
    assert!(p.detail.starts_with("node a:"), "{p}");

    // The events cut, the checkpoints kept: the kept heads still name them.
    let mut cut = db.clone();
    for seq in 12..=15 {
        cut.events.remove(&(a.clone(), seq));
    }
    cut.checkpoints.retain(|(n, id), _| *n == a || *id < 5);
    let p = with(&cut, &kept).problem.expect("the cut went unnoticed");
    assert_eq!((p.kind, p.seq), (BreakKind::Truncated, 12));

    // A kept checkpoint that was altered does not verify.
    let mut bad = kept.clone();
    bad[4].heads[0].seq += 1;
    let p = with(&db, &bad)
        .problem
        .expect("an altered anchor went unnoticed");
    assert_eq!(
        (p.kind, p.location),
        (BreakKind::BadSignature, Location::Anchor)
    );

    // Single-log checkpoints are not anchors of a multi-node export.
    let single = Checkpoint::from_columns(1, 1, &[0; 32], 0, &[0; 64]).unwrap();
    assert!(matches!(
        verify_export(export(&db).as_slice(), &key().public_key(), &[single]),
        Err(AuditError::Unsupported { .. })
    ));
}

// --- Retention on a log shared by several nodes.

mod pruned {
    use panvault_audit::log::{DEFAULT_RETENTION, Location, prune_cluster};
    use time::Duration;

    use super::*;

    fn old() -> OffsetDateTime {
        now() - Duration::days(800)
    }

    fn event_at(node: &str, i: u32, t: OffsetDateTime) -> NewEvent {
        NewEvent::new(t, Actor::admin("ops"), Action::Tokenize, Outcome::Success)
            .with_tenant("shop")
            .with_token(format!("tok_{node}_{i}"))
    }

    struct Cluster {
        db: Rc<RefCell<Db>>,
        chains: Vec<(View, AuditChain)>,
    }

    impl Cluster {
        fn view(&self, n: &str) -> View {
            View {
                db: self.db.clone(),
                node: NodeId::new(n).unwrap(),
            }
        }
        /// Node `i` appends `n` events at `t` and signs.
        fn work(&mut self, i: usize, n: u32, t: OffsetDateTime) {
            let (v, chain) = &mut self.chains[i];
            let name = v.node.as_str().to_owned();
            for k in 0..n {
                chain.append(v, &event_at(&name, k, t)).unwrap();
            }
            chain.cluster_checkpoint(v, &key(), t).unwrap();
        }
        fn prune(
            &self,
            at: OffsetDateTime,
        ) -> Result<panvault_audit::log::ClusterPruneReport, AuditError> {
            prune_cluster(&self.view("admin"), &key(), at, DEFAULT_RETENTION)
        }
        fn snapshot(&self) -> Db {
            self.db.borrow().clone()
        }
    }

    /// Nodes `a`, `b` and `c` work 800 days ago (`c` only registers); then
    /// `a` and `b` work today, `c` staying idle, and `admin` registers today.
    fn aged() -> Cluster {
        let db = Rc::new(RefCell::new(Db::default()));
        let mut c = Cluster {
            db,
            chains: Vec::new(),
        };
        for n in ["a", "b", "c", "admin"] {
            let v = c.view(n);
            let mut chain = AuditChain::load(&v).unwrap();
            let t = if n == "admin" { now() } else { old() };
            if n != "admin" {
                chain
                    .register_node(&v, &key(), Actor::admin("ops"), t)
                    .unwrap();
            }
            c.chains.push((v, chain));
        }
        for _ in 0..3 {
            c.work(0, 4, old());
            c.work(1, 2, old());
        }
        c.work(2, 0, old()); // c signs the old heads too
        c.work(0, 3, now());
        c.work(1, 3, now());
        let (v, chain) = &mut c.chains[3];
        chain
            .register_node(v, &key(), Actor::admin("ops"), now())
            .unwrap();
        c
    }

    #[test]
    fn a_prune_cuts_every_node_at_one_checkpoint_and_the_log_still_verifies() {
        let mut c = aged();
        let before = verify(&c.snapshot());
        assert!(before.is_intact(), "{before:?}");
        let r = c.prune(now()).unwrap();
        let record = r.record.clone().unwrap();
        // a: registration + 12 old events; b: 1 + 6; c: its registration.
        assert_eq!(r.deleted, 13 + 7 + 1);
        let cuts: Vec<(&str, u64)> = record
            .cuts
            .iter()
            .map(|h| (h.node.as_str(), h.seq))
            .collect();
        assert_eq!(
            cuts,
            [("a", 13), ("b", 7), ("c", 1)],
            "admin registered later"
        );
        let named =
            &c.snapshot().checkpoints[&(record.checkpoint_node.clone(), record.checkpoint_id)];
        assert_eq!(
            named.heads, record.cuts,
            "the cuts are a checkpoint's heads"
        );
        record.verify(&key().public_key()).unwrap();

        let after = verify(&c.snapshot());
        assert!(after.is_intact(), "{after:?}");
        assert_eq!(after.prunes, 1);
        assert_eq!(after.events, before.events - 21);
        assert_eq!(after.nodes, before.nodes, "every head where it was");

        // The writers go on from their heads; c, whose whole chain went, too,
        // and so does a chain loaded from the store alone.
        for (v, chain) in &c.chains {
            assert_eq!(
                AuditChain::load(v).unwrap().snapshot(),
                chain.snapshot(),
                "{}",
                v.node
            );
        }
        c.work(2, 1, now());
        c.work(0, 1, now());
        let r = verify(&c.snapshot());
        assert!(r.is_intact(), "{r:?}");
        let c_head = r.nodes.iter().find(|h| h.node.as_str() == "c").unwrap();
        assert_eq!(c_head.seq, 2);

        // Once: nothing more is old enough now; a year later the rest goes.
        let again = c.prune(now()).unwrap();
        assert_eq!((again.deleted, again.record.is_none()), (0, true));
        let later = c.prune(now() + Duration::days(400)).unwrap();
        assert_eq!(later.record.as_ref().unwrap().id, 2);
        assert!(later.deleted > 0);
        let r = verify(&c.snapshot());
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.prunes, 2);
    }

    #[test]
    fn a_prune_held_elsewhere_does_nothing() {
        let c = aged();
        c.db.borrow_mut().prune_locked = true;
        let r = c.prune(now()).unwrap();
        assert!(r.busy);
        assert_eq!((r.deleted, r.record), (0, None));
        assert!(c.snapshot().prunes.is_empty());
    }

    #[test]
    fn a_prune_refuses_a_log_that_does_not_verify() {
        let c = aged();
        let a = NodeId::new("a").unwrap();
        c.db.borrow_mut()
            .events
            .get_mut(&(a.clone(), 5))
            .unwrap()
            .text[6] = Some("other".into());
        let err = c.prune(now()).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Tampered {
                    seq: 5,
                    kind: BreakKind::Modified
                }
            ),
            "{err:?}"
        );
        c.db.borrow_mut().events.remove(&(a, 7));
        assert!(matches!(
            c.prune(now()).unwrap_err(),
            AuditError::Tampered { .. }
        ));
        assert!(c.snapshot().prunes.is_empty());
        assert_eq!(
            c.snapshot().events.len(),
            aged().snapshot().events.len() - 1
        );
    }

    fn pruned_db() -> Db {
        let c = aged();
        c.prune(now()).unwrap().record.unwrap();
        c.snapshot()
    }

    #[test]
    fn after_a_prune_an_event_deleted_beyond_a_cut_is_named_by_node() {
        let mut db = pruned_db();
        db.events.remove(&(NodeId::new("b").unwrap(), 9));
        let (kind, seq, detail) = problem(&verify(&db));
        assert_eq!((kind, seq), (BreakKind::Missing, 9));
        assert!(detail.starts_with("node b:"), "{detail}");
        // The first event after the cut too.
        let mut db = pruned_db();
        db.events.remove(&(NodeId::new("a").unwrap(), 14));
        let (kind, seq, detail) = problem(&verify(&db));
        assert_eq!(seq, 14, "{kind:?} {detail}");
        assert!(detail.starts_with("node a:"), "{detail}");
    }

    #[test]
    fn after_a_prune_a_nodes_whole_remaining_history_gone_is_caught() {
        let mut db = pruned_db();
        let b = NodeId::new("b").unwrap();
        db.events.retain(|(n, _), _| *n != b);
        let (kind, seq, detail) = problem(&verify(&db));
        assert_eq!((kind, seq), (BreakKind::Truncated, 8));
        assert!(detail.starts_with("node b:"), "{detail}");
        // Its checkpoints and registration gone as well: the others name it.
        db.checkpoints.retain(|(n, _), _| *n != b);
        db.nodes.remove(&b);
        let (_, _, detail) = problem(&verify(&db));
        assert!(detail.contains("node b"), "{detail}");
    }

    #[test]
    fn a_forged_altered_or_removed_prune_record_is_caught() {
        // Altered: any field.
        for change in 0..3 {
            let mut db = pruned_db();
            let p = db.prunes.get_mut(&1).unwrap();
            match change {
                0 => p.deleted += 1,
                1 => p.cuts[0].seq += 1,
                _ => p.checkpoint_id -= 1,
            }
            let r = verify(&db);
            let b = r.problem.expect("an altered prune record went unnoticed");
            assert_eq!(
                (b.kind, b.location),
                (BreakKind::BadSignature, Location::Prune(1))
            );
        }
        // Forged: a second record made up from the first, without the key.
        let mut db = pruned_db();
        let forged = panvault_audit::log::ClusterPruneRecord {
            id: 2,
            ..db.prunes[&1].clone()
        };
        db.prunes.insert(2, forged);
        let b = verify(&db)
            .problem
            .expect("a forged prune record went unnoticed");
        assert_eq!(
            (b.kind, b.location),
            (BreakKind::BadSignature, Location::Prune(2))
        );
        // Removed: the kept chains no longer start where the log says.
        let mut db = pruned_db();
        db.prunes.clear();
        let (kind, _, detail) = problem(&verify(&db));
        assert_eq!(kind, BreakKind::Missing, "{detail}");
        assert!(detail.starts_with("node a:"), "{detail}");
    }
}
