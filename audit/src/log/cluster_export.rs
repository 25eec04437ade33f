//! The export of a log shared by several nodes (format
//! `panvault-audit-export-v3`, `docs/audit-log.md`, "Several nodes"), and its
//! verification with the public key alone.
//!
//! Lines: a header, every registered node (by name), every cluster checkpoint
//! (by signer, then id), every cluster prune record (by id), every event (by
//! node, then seq). Verification checks every checkpoint's and prune record's
//! signature, that each signer's checkpoint ids and the prune record ids run
//! 1, 2, 3 …, and that each prune record's cuts are the heads of the
//! checkpoint it names, never behind an earlier record's; then, node by node,
//! it walks the node's chain with the same verifier (and the same diagnosis of
//! a break) as a single log, from the node's latest cut, against every head
//! the checkpoints name for that node. So a node whose whole history is gone
//! is reported at the head another node signed for it.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::checkpoint::Checkpoint;
use super::cluster::{ClusterCheckpoint, NodeHead, NodeId};
use super::encoding::{ChainHash, hex_decode_array, hex_encode};
use super::error::AuditError;
use super::event::utc;
use super::export::{Line, StoredEvent, insert_line, rfc3339};
use super::keys::{PublicKey, SigningKey};
use super::prune::{ClusterPruneRecord, PruneRecord};
use super::schema::migrate;
use super::store::LogTx;
use super::verify::{Break, BreakKind, Location, VerifyReport, verify_against};

/// The `format` of a multi-node export's header line.
pub const CLUSTER_EXPORT_FORMAT: &str = "panvault-audit-export-v3";

/// One entry of a checkpoint's `heads`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadJson {
    node: String,
    seq: u64,
    head: String,
}

/// One line of a multi-node export: every key required, no other allowed.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "one line is alive at a time; boxing the event would only add an allocation"
)]
enum ClusterLine {
    Header {
        format: String,
    },
    Node {
        node: String,
        registered: String,
    },
    Checkpoint {
        node: String,
        id: u64,
        time: String,
        heads: Vec<HeadJson>,
        signature: String,
    },
    Prune {
        id: u64,
        checkpoint_node: String,
        checkpoint_id: u64,
        cuts: Vec<HeadJson>,
        cutoff: String,
        deleted: u64,
        time: String,
        signature: String,
    },
    Event {
        node: String,
        seq: u64,
        time: String,
        actor: String,
        #[serde(deserialize_with = "required")]
        actor_fingerprint: Option<String>,
        action: String,
        #[serde(deserialize_with = "required")]
        tenant: Option<String>,
        #[serde(deserialize_with = "required")]
        token: Option<String>,
        #[serde(deserialize_with = "required")]
        purpose: Option<String>,
        outcome: String,
        #[serde(deserialize_with = "required")]
        code: Option<String>,
        #[serde(deserialize_with = "required")]
        request_id: Option<String>,
        #[serde(deserialize_with = "required")]
        peer: Option<String>,
        #[serde(deserialize_with = "required")]
        details: Option<String>,
        prev_hash: String,
        hash: String,
    },
}

/// An `Option` field that must be present (as `null` or a value).
fn required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// The multi-node export's line writer: the caller reads, in one snapshot,
/// the registered nodes (by name), the cluster checkpoints (by signer, then
/// id), the cluster prune records (by id) and the events (by node, then seq),
/// and hands them over in that order.
pub struct ClusterExportWriter<W: Write> {
    writer: W,
    line: Vec<u8>,
    events: u64,
}

impl<W: Write> std::fmt::Debug for ClusterExportWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExportWriter")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ClusterExportWriter<W> {
    /// Starts an export: writes the header.
    pub fn new(writer: W) -> Result<Self, AuditError> {
        let mut w = ClusterExportWriter {
            writer,
            line: Vec::with_capacity(512),
            events: 0,
        };
        w.put(&ClusterLine::Header {
            format: CLUSTER_EXPORT_FORMAT.to_owned(),
        })?;
        Ok(w)
    }

    /// Writes a registered node.
    pub fn node(&mut self, node: &NodeId, registered: OffsetDateTime) -> Result<(), AuditError> {
        self.put(&ClusterLine::Node {
            node: node.to_string(),
            registered: rfc3339(registered)?,
        })
    }

    /// Writes a cluster checkpoint.
    pub fn checkpoint(&mut self, c: &ClusterCheckpoint) -> Result<(), AuditError> {
        self.put(&ClusterLine::Checkpoint {
            node: c.node.to_string(),
            id: c.id,
            time: rfc3339(c.time)?,
            heads: heads_json(&c.heads),
            signature: hex_encode(&c.signature),
        })
    }

    /// Writes a cluster prune record.
    pub fn prune(&mut self, p: &ClusterPruneRecord) -> Result<(), AuditError> {
        self.put(&ClusterLine::Prune {
            id: p.id,
            checkpoint_node: p.checkpoint_node.to_string(),
            checkpoint_id: p.checkpoint_id,
            cuts: heads_json(&p.cuts),
            cutoff: rfc3339(p.cutoff)?,
            deleted: p.deleted,
            time: rfc3339(p.time)?,
            signature: hex_encode(&p.signature),
        })
    }

    /// Writes one event of `node`'s chain exactly as stored.
    pub fn event(&mut self, node: &NodeId, ev: &StoredEvent) -> Result<(), AuditError> {
        let Line::Event {
            seq,
            time,
            actor,
            actor_fingerprint,
            action,
            tenant,
            token,
            purpose,
            outcome,
            code,
            request_id,
            peer,
            details,
            prev_hash,
            hash,
        } = ev.line()?
        else {
            return Err(AuditError::Internal);
        };
        self.put(&ClusterLine::Event {
            node: node.to_string(),
            seq,
            time,
            actor,
            actor_fingerprint,
            action,
            tenant,
            token,
            purpose,
            outcome,
            code,
            request_id,
            peer,
            details,
            prev_hash,
            hash,
        })?;
        self.events = self.events.saturating_add(1);
        Ok(())
    }

    /// Flushes the writer; returns how many events were written.
    pub fn finish(mut self) -> Result<u64, AuditError> {
        self.writer.flush()?;
        Ok(self.events)
    }

    fn put(&mut self, value: &ClusterLine) -> Result<(), AuditError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|_| AuditError::Parse {
            what: "export line",
        })?;
        self.line.push(b'\n');
        self.writer.write_all(&self.line)?;
        Ok(())
    }
}

fn heads_json(heads: &[NodeHead]) -> Vec<HeadJson> {
    heads
        .iter()
        .map(|h| HeadJson {
            node: h.node.to_string(),
            seq: h.seq,
            head: h.head.to_string(),
        })
        .collect()
}

fn heads_of(heads: Vec<HeadJson>) -> Result<Vec<NodeHead>, AuditError> {
    heads
        .into_iter()
        .map(|h| {
            Ok(NodeHead {
                node: NodeId::new(h.node)?,
                seq: h.seq,
                head: ChainHash::from_hex(&h.head).ok_or(AuditError::BadExport {
                    line: 0,
                    reason: "a hash is not 64 hex digits",
                })?,
            })
        })
        .collect()
}

/// Whether `first_line` is the header of a multi-node export.
pub(crate) fn is_cluster_header(first_line: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        format: String,
    }
    serde_json::from_str::<Probe>(first_line)
        .is_ok_and(|p| p.kind == "header" && p.format == CLUSTER_EXPORT_FORMAT)
}

/// A head some checkpoint states for a node, and the first checkpoint that does.
struct Mark {
    seq: u64,
    head: ChainHash,
    time: OffsetDateTime,
    signer: NodeId,
    id: u64,
}

/// Verifies a multi-node export with `key` alone (see the module doc), against
/// `anchors`: cluster checkpoints kept elsewhere (a witness file). Each must
/// verify, be in the log unchanged if the log has its signer's id, and is
/// then one more set of heads the nodes' chains must reach and match; one
/// whose id is beyond its signer's last checkpoint in the log says the log
/// was cut back.
pub fn verify_cluster_export(
    reader: impl BufRead,
    key: &PublicKey,
    anchors: &[ClusterCheckpoint],
) -> Result<VerifyReport, AuditError> {
    let mut v = ClusterVerifier::new(key, anchors)?;
    let mut line_no = 0u64;
    let mut seen_header = false;
    for text in reader.lines() {
        let text = text?;
        line_no = line_no.saturating_add(1);
        if text.trim().is_empty() {
            continue;
        }
        let bad = |reason: &'static str| AuditError::BadExport {
            line: line_no,
            reason,
        };
        let parsed: ClusterLine = serde_json::from_str(&text)
            .map_err(|_| bad("not a line of a panvault audit export (v3)"))?;
        if !seen_header {
            match parsed {
                ClusterLine::Header { format } if format == CLUSTER_EXPORT_FORMAT => {
                    seen_header = true;
                    continue;
                }
                _ => {
                    return Err(bad(
                        "the first line must be the header of a multi-node export (v3)",
                    ));
                }
            }
        }
        v.line(parsed).map_err(|e| match e {
            AuditError::BadExport { reason, .. } => bad(reason),
            AuditError::InvalidEvent { .. } => bad("a node id is not a-z 0-9 . _ - (1 to 64)"),
            e => e,
        })?;
        if v.report.problem.is_some() {
            return Ok(v.report);
        }
    }
    if !seen_header {
        return Err(AuditError::BadExport {
            line: line_no,
            reason: "no header: not a panvault audit export",
        });
    }
    v.finish()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Nodes,
    Checkpoints,
    Prunes,
    Events,
}

fn out_of_order() -> AuditError {
    AuditError::BadExport {
        line: 0,
        reason: "records out of order or repeated",
    }
}

struct ClusterVerifier<'k> {
    key: &'k PublicKey,
    anchors: &'k [ClusterCheckpoint],
    /// Carries heads already checked under `key` through the single-log
    /// verifier, which wants signed checkpoints. It protects nothing: it
    /// exists only inside this verification, over facts verified with `key`.
    relay: SigningKey,
    section: Section,
    registered: BTreeSet<NodeId>,
    checkpoints: Vec<ClusterCheckpoint>,
    prunes: Vec<ClusterPruneRecord>,
    /// Every head stated for each node, once the checkpoints are read.
    marks: BTreeMap<NodeId, Vec<Mark>>,
    /// Each node's latest cut (its last pruned event).
    cuts: BTreeMap<NodeId, NodeHead>,
    /// The node whose events are being read, and its chain so far.
    current: Option<(NodeId, Connection)>,
    last_event: Option<(NodeId, u64)>,
    done: BTreeSet<NodeId>,
    report: VerifyReport,
}

impl<'k> ClusterVerifier<'k> {
    fn new(key: &'k PublicKey, anchors: &'k [ClusterCheckpoint]) -> Result<Self, AuditError> {
        Ok(ClusterVerifier {
            key,
            anchors,
            relay: SigningKey::from_seed(&[0; 32])?,
            section: Section::Nodes,
            registered: BTreeSet::new(),
            checkpoints: Vec::new(),
            prunes: Vec::new(),
            marks: BTreeMap::new(),
            cuts: BTreeMap::new(),
            current: None,
            last_event: None,
            done: BTreeSet::new(),
            report: VerifyReport {
                events: 0,
                checkpoints: 0,
                prunes: 0,
                first_seq: 1,
                last_seq: 0,
                head: ChainHash::GENESIS,
                last_checkpoint: None,
                unsigned_tail: 0,
                unsigned_since: None,
                problem: None,
                nodes: Vec::new(),
            },
        })
    }

    fn enter(&mut self, section: Section) -> Result<(), AuditError> {
        if section < self.section {
            return Err(AuditError::BadExport {
                line: 0,
                reason: "lines out of order (header, nodes, checkpoints, prune records, events)",
            });
        }
        if self.section < Section::Events && section == Section::Events {
            self.section = section;
            self.check_checkpoints()?;
        }
        self.section = section;
        Ok(())
    }

    fn line(&mut self, line: ClusterLine) -> Result<(), AuditError> {
        match line {
            ClusterLine::Header { .. } => Err(AuditError::BadExport {
                line: 0,
                reason: "a second header",
            }),
            ClusterLine::Node { node, registered } => {
                self.enter(Section::Nodes)?;
                let node = NodeId::new(node)?;
                parse_time(&registered)?;
                if self.registered.last().is_some_and(|last| *last >= node) {
                    return Err(out_of_order());
                }
                self.registered.insert(node);
                Ok(())
            }
            ClusterLine::Checkpoint {
                node,
                id,
                time,
                heads,
                signature,
            } => {
                self.enter(Section::Checkpoints)?;
                let node = NodeId::new(node)?;
                if let Some(last) = self.checkpoints.last()
                    && (&last.node, last.id) >= (&node, id)
                {
                    return Err(out_of_order());
                }
                let heads = heads_of(heads)?;
                self.checkpoints.push(ClusterCheckpoint {
                    node,
                    id,
                    time: parse_time(&time)?,
                    heads,
                    signature: hex_decode_array::<64>(&signature).ok_or(AuditError::BadExport {
                        line: 0,
                        reason: "a signature is not 128 hex digits",
                    })?,
                });
                Ok(())
            }
            ClusterLine::Prune {
                id,
                checkpoint_node,
                checkpoint_id,
                cuts,
                cutoff,
                deleted,
                time,
                signature,
            } => {
                self.enter(Section::Prunes)?;
                if self.prunes.last().is_some_and(|last| last.id >= id) {
                    return Err(out_of_order());
                }
                self.prunes.push(ClusterPruneRecord {
                    id,
                    checkpoint_node: NodeId::new(checkpoint_node)?,
                    checkpoint_id,
                    cuts: heads_of(cuts)?,
                    cutoff: parse_time(&cutoff)?,
                    deleted,
                    time: parse_time(&time)?,
                    signature: hex_decode_array::<64>(&signature).ok_or(AuditError::BadExport {
                        line: 0,
                        reason: "a signature is not 128 hex digits",
                    })?,
                });
                Ok(())
            }
            ClusterLine::Event {
                node,
                seq,
                time,
                actor,
                actor_fingerprint,
                action,
                tenant,
                token,
                purpose,
                outcome,
                code,
                request_id,
                peer,
                details,
                prev_hash,
                hash,
            } => {
                self.enter(Section::Events)?;
                if self.report.problem.is_some() {
                    return Ok(());
                }
                let node = NodeId::new(node)?;
                if let Some((last_node, last_seq)) = &self.last_event
                    && (last_node, *last_seq) >= (&node, seq)
                {
                    return Err(out_of_order());
                }
                self.last_event = Some((node.clone(), seq));
                if self.current.as_ref().is_none_or(|(n, _)| *n != node) {
                    self.finish_node()?;
                    if self.report.problem.is_some() {
                        return Ok(());
                    }
                    let conn = Connection::open_in_memory()?;
                    migrate(&conn)?;
                    self.current = Some((node, conn));
                }
                let Some((_, conn)) = &self.current else {
                    return Err(AuditError::Internal);
                };
                let event = Line::Event {
                    seq,
                    time,
                    actor,
                    actor_fingerprint,
                    action,
                    tenant,
                    token,
                    purpose,
                    outcome,
                    code,
                    request_id,
                    peer,
                    details,
                    prev_hash,
                    hash,
                };
                insert_line(conn, event).map_err(|e| match e {
                    AuditError::BadExport { .. } => e,
                    _ => AuditError::BadExport {
                        line: 0,
                        reason: "a value the audit log cannot hold",
                    },
                })
            }
        }
    }

    /// Every signature, then each signer's ids 1, 2, 3 …; collects the heads
    /// stated for each node.
    fn check_checkpoints(&mut self) -> Result<(), AuditError> {
        self.report.checkpoints =
            u64::try_from(self.checkpoints.len()).map_err(|_| AuditError::Overflow)?;
        for cp in &self.checkpoints {
            if cp.verify(self.key).is_err() {
                self.report.problem = Some(Break {
                    seq: cp.head_of(&cp.node).map_or(0, |h| h.seq),
                    kind: BreakKind::BadSignature,
                    location: Location::Checkpoint(cp.id),
                    detail: format!(
                        "node {}: its checkpoint #{} does not verify with the public key",
                        cp.node, cp.id
                    ),
                });
                return Ok(());
            }
        }
        let mut expected: BTreeMap<&NodeId, u64> = BTreeMap::new();
        for cp in &self.checkpoints {
            let next = expected.entry(&cp.node).or_insert(1);
            if cp.id != *next {
                self.report.problem = Some(Break {
                    seq: cp.head_of(&cp.node).map_or(0, |h| h.seq),
                    kind: BreakKind::Missing,
                    location: Location::Checkpoint(*next),
                    detail: format!(
                        "node {}: its checkpoints #{}..#{} are missing",
                        cp.node,
                        next,
                        cp.id.saturating_sub(1)
                    ),
                });
                return Ok(());
            }
            *next = next.saturating_add(1);
        }
        if let Some(b) = self.check_anchors() {
            self.report.problem = Some(b);
            return Ok(());
        }
        self.report.prunes = u64::try_from(self.prunes.len()).map_err(|_| AuditError::Overflow)?;
        if let Some(b) = self.check_prunes() {
            self.report.problem = Some(b);
            return Ok(());
        }
        for cp in self.checkpoints.iter().chain(self.anchors) {
            for h in &cp.heads {
                self.marks.entry(h.node.clone()).or_default().push(Mark {
                    seq: h.seq,
                    head: h.head,
                    time: cp.time,
                    signer: cp.node.clone(),
                    id: cp.id,
                });
            }
        }
        Ok(())
    }

    /// The prune records: signed, numbered 1, 2, 3 …, each repeating the heads
    /// of the checkpoint it names, and none behind an earlier one for any node.
    /// Sets each node's latest cut.
    fn check_prunes(&mut self) -> Option<Break> {
        let prune_break = |p: &ClusterPruneRecord, kind, detail: String| Break {
            seq: 0,
            kind,
            location: Location::Prune(p.id),
            detail: format!("prune record #{}: {detail}", p.id),
        };
        for p in &self.prunes {
            if p.verify(self.key).is_err() {
                return Some(prune_break(
                    p,
                    BreakKind::BadSignature,
                    "it does not verify with the public key".to_owned(),
                ));
            }
        }
        let mut expected = 1u64;
        for p in &self.prunes {
            if p.id != expected {
                return Some(Break {
                    seq: 0,
                    kind: BreakKind::Missing,
                    location: Location::Prune(expected),
                    detail: format!(
                        "prune records #{}..#{} are missing",
                        expected,
                        p.id.saturating_sub(1)
                    ),
                });
            }
            expected = expected.saturating_add(1);
            let named = self
                .checkpoints
                .iter()
                .find(|c| (&c.node, c.id) == (&p.checkpoint_node, p.checkpoint_id));
            match named {
                None => {
                    return Some(Break {
                        seq: p.cut_of(&p.checkpoint_node).map_or(0, |c| c.seq),
                        kind: BreakKind::Missing,
                        location: Location::Checkpoint(p.checkpoint_id),
                        detail: format!(
                            "node {}: its checkpoint #{}, whose heads prune record #{} names \
                             as the cuts, is missing",
                            p.checkpoint_node, p.checkpoint_id, p.id
                        ),
                    });
                }
                Some(c) if c.heads != p.cuts => {
                    return Some(prune_break(
                        p,
                        BreakKind::Modified,
                        format!(
                            "its cuts are not the heads of node {}'s checkpoint #{}",
                            p.checkpoint_node, p.checkpoint_id
                        ),
                    ));
                }
                Some(_) => {}
            }
            for (node, cut) in &self.cuts {
                if p.cut_of(node).is_none_or(|c| c.seq < cut.seq) {
                    return Some(prune_break(
                        p,
                        BreakKind::Modified,
                        format!(
                            "it goes back on node {node}'s earlier cut at seq {}",
                            cut.seq
                        ),
                    ));
                }
            }
            for c in &p.cuts {
                self.cuts.insert(c.node.clone(), c.clone());
            }
        }
        None
    }

    /// The checkpoints kept elsewhere: signed, consistent with each other and
    /// with the log, and not beyond it.
    fn check_anchors(&self) -> Option<Break> {
        let own_seq = |c: &ClusterCheckpoint| c.head_of(&c.node).map_or(0, |h| h.seq);
        let anchor_break = |c: &ClusterCheckpoint, kind, detail: String| Break {
            seq: own_seq(c),
            kind,
            location: Location::Anchor,
            detail: format!("node {}: {detail}", c.node),
        };
        for (i, a) in self.anchors.iter().enumerate() {
            if a.verify(self.key).is_err() {
                return Some(anchor_break(
                    a,
                    BreakKind::BadSignature,
                    format!("the given checkpoint #{} does not verify", a.id),
                ));
            }
            let twin = self
                .anchors
                .iter()
                .take(i)
                .find(|b| (&b.node, b.id) == (&a.node, a.id));
            if twin.is_some_and(|b| b != a) {
                return Some(anchor_break(
                    a,
                    BreakKind::Truncated,
                    format!(
                        "two given checkpoints #{} differ: the log was rolled back and signed again",
                        a.id
                    ),
                ));
            }
            match self
                .checkpoints
                .iter()
                .find(|c| (&c.node, c.id) == (&a.node, a.id))
            {
                Some(c) if c == a => {}
                Some(_) => {
                    return Some(anchor_break(
                        a,
                        BreakKind::Truncated,
                        format!(
                            "its checkpoint #{} differs from the one kept elsewhere: the log \
                             was rolled back and signed again",
                            a.id
                        ),
                    ));
                }
                None => {
                    return Some(anchor_break(
                        a,
                        BreakKind::Missing,
                        format!(
                            "its checkpoint #{}, kept elsewhere, is not in the log: the log \
                             was cut back",
                            a.id
                        ),
                    ));
                }
            }
        }
        None
    }

    /// Verifies the chain of the node being read (if any) against every head
    /// stated for it, and adds it to the report.
    fn finish_node(&mut self) -> Result<(), AuditError> {
        let Some((node, conn)) = self.current.take() else {
            return Ok(());
        };
        self.verify_node(node, &conn)
    }

    fn verify_node(&mut self, node: NodeId, conn: &Connection) -> Result<(), AuditError> {
        let mut marks: Vec<&Mark> = self.marks.get(&node).into_iter().flatten().collect();
        marks.sort_by_key(|m| (m.seq, m.head.0, m.time));
        marks.dedup_by(|a, b| (a.seq, a.head) == (b.seq, b.head));
        let cut = self.cuts.get(&node).filter(|c| c.seq > 0).cloned();
        let mut cut_mark = None;
        for (i, m) in marks.iter().enumerate() {
            let id = u64::try_from(i)
                .map_err(|_| AuditError::Overflow)?
                .saturating_add(1);
            conn.insert_checkpoint(&Checkpoint::sign(&self.relay, id, m.seq, m.head, m.time)?)?;
            if cut
                .as_ref()
                .is_some_and(|c| (c.seq, c.head) == (m.seq, m.head))
            {
                cut_mark = Some((id, m.time));
            }
        }
        if let Some(c) = &cut {
            // The cut is the head of the checkpoint the record names, which is
            // among the marks: the kept chain starts right after it.
            let Some((checkpoint_id, time)) = cut_mark else {
                return Err(AuditError::Internal);
            };
            let mut p = PruneRecord {
                id: 1,
                first_seq: c.seq.checked_add(1).ok_or(AuditError::Overflow)?,
                prev_hash: c.head,
                checkpoint_id,
                cutoff: time,
                deleted: 0,
                time,
                signature: [0; 64],
            };
            p.signature = self.relay.sign(&p.message()?);
            conn.insert_prune(&p)?;
        }
        let mut r = verify_against(conn, &self.relay.public_key(), &[])?;
        self.report.events = self.report.events.saturating_add(r.events);
        self.report.unsigned_tail = self.report.unsigned_tail.saturating_add(r.unsigned_tail);
        self.report.unsigned_since = match (self.report.unsigned_since, r.unsigned_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if r.events == 0 && r.problem.is_none() && cut.is_none() && self.registered.contains(&node)
        {
            r.problem = Some(Break {
                seq: 1,
                kind: BreakKind::Missing,
                location: Location::Event,
                detail: "registered, but its chain holds no event (its registration is missing)"
                    .to_owned(),
            });
        }
        if let Some(mut b) = r.problem.take() {
            let signed = match b.location {
                Location::Checkpoint(i) => usize::try_from(i.saturating_sub(1))
                    .ok()
                    .and_then(|i| marks.get(i)),
                _ => None,
            };
            b.detail = match signed {
                Some(m) => {
                    b.location = Location::Checkpoint(m.id);
                    format!(
                        "node {node}: {} (its head at seq {} as node {}'s checkpoint #{} states it)",
                        b.detail, m.seq, m.signer, m.id
                    )
                }
                None => format!("node {node}: {}", b.detail),
            };
            self.report.problem = Some(b);
        }
        self.report.nodes.push(NodeHead {
            node: node.clone(),
            seq: r.last_seq,
            head: r.head,
        });
        self.done.insert(node);
        Ok(())
    }

    /// After the last line: the last node read, then every node named by a
    /// checkpoint or the registry whose events were not in the file at all.
    fn finish(mut self) -> Result<VerifyReport, AuditError> {
        if self.section < Section::Events {
            self.enter(Section::Events)?;
        }
        if self.report.problem.is_none() {
            self.finish_node()?;
        }
        let named: BTreeSet<NodeId> = self
            .marks
            .keys()
            .chain(self.registered.iter())
            .filter(|n| !self.done.contains(*n))
            .cloned()
            .collect();
        for node in named {
            if self.report.problem.is_some() {
                break;
            }
            let conn = Connection::open_in_memory()?;
            migrate(&conn)?;
            self.verify_node(node, &conn)?;
        }
        self.report.nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(self.report)
    }
}

fn parse_time(s: &str) -> Result<OffsetDateTime, AuditError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| utc(t).ok())
        .ok_or(AuditError::BadExport {
            line: 0,
            reason: "a time is not RFC 3339 within the log's range",
        })
}
