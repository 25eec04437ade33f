//! One log shared by several vault nodes: one hash chain per node, anchored
//! together by signed cluster checkpoints.
//!
//! Each node appends to its own chain `(node, seq)` exactly as a single vault
//! appends to its log (same encoding, same hash, seq 1 after 32 zero bytes), so
//! nodes never contend on a shared row. A node's checkpoint lists **every**
//! registered node with its head `(node, seq, head hash)` as the signing node's
//! transaction sees it, and is signed with the audit key every node holds:
//! a node whose whole history is removed is still named, with its head, by the
//! checkpoints the other nodes signed. Registering a node is itself an event (seq
//! 1 of its chain, `node.register`), signed by the node's first checkpoint in the
//! same transaction. `docs/audit-log.md`, "Several nodes", gives the format.
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::checkpoint::Checkpoint;
use super::encoding::{ChainHash, hex_decode_array, hex_encode};
use super::error::AuditError;
use super::event::{from_time_ns, time_ns, utc};
use super::keys::{PublicKey, SigningKey};
use super::store::{Insert, LogTx};

/// Domain separation for cluster checkpoint signatures.
const CLUSTER_CHECKPOINT_DOMAIN: &[u8] = b"panvault-audit cluster-checkpoint v1\0";

/// The longest node id, in bytes.
pub const MAX_NODE_LEN: usize = 64;

/// A node's name in the shared log: 1 to [`MAX_NODE_LEN`] bytes of
/// `a-z 0-9 . _ -`. Stable for the node's life: its chain is found by it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Checks `name` and makes it a node id.
    pub fn new(name: impl Into<String>) -> Result<NodeId, AuditError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_NODE_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(AuditError::InvalidEvent {
                field: "node",
                reason: "must be 1 to 64 characters of a-z 0-9 . _ -",
            });
        }
        Ok(NodeId(name))
    }

    /// A new random id, `n-` and 16 hex digits (64 random bits), for a node
    /// whose configuration names none. It is the node's for as long as it is
    /// kept: a node that takes a new one at each start registers a new chain
    /// each time, and every later checkpoint names them all.
    pub fn generate() -> Result<NodeId, AuditError> {
        let bytes: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map_err(|_| AuditError::Key)?
            .expose();
        NodeId::new(format!("n-{}", super::encoding::hex_encode(&bytes)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// Where one node's chain stands: after event `seq` its hash was `head`
/// (`seq` 0 and [`ChainHash::GENESIS`] for a chain without events).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeHead {
    /// The node.
    pub node: NodeId,
    /// Its last event (the count of its events, as seqs run 1, 2, 3 …).
    pub seq: u64,
    /// The hash of that event.
    pub head: ChainHash,
}

/// A signed statement of every registered node's head, made by one node.
///
/// The signature covers the signer, its checkpoint number, the time and the
/// heads, in the canonical order (by node name, bytewise); see
/// `docs/audit-log.md`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterCheckpoint {
    /// The node that signed it.
    pub node: NodeId,
    /// The signer's checkpoint number: 1, 2, 3 … without gaps, per node.
    pub id: u64,
    /// When it was signed (UTC, nanoseconds).
    pub time: OffsetDateTime,
    /// Every registered node's head, sorted by node name, one entry per node;
    /// the signer is among them.
    pub heads: Vec<NodeHead>,
    /// Ed25519 signature.
    pub signature: [u8; 64],
}

impl ClusterCheckpoint {
    pub(crate) fn sign(
        key: &SigningKey,
        node: NodeId,
        id: u64,
        mut heads: Vec<NodeHead>,
        time: OffsetDateTime,
    ) -> Result<ClusterCheckpoint, AuditError> {
        heads.sort_by(|a, b| a.node.cmp(&b.node));
        heads.dedup_by(|a, b| a.node == b.node);
        let time = utc(time)?;
        let mut cp = ClusterCheckpoint {
            node,
            id,
            time,
            heads,
            signature: [0; 64],
        };
        cp.signature = key.sign(&cp.message()?);
        Ok(cp)
    }

    /// Checks the signature with `key`, and that the heads are in the canonical
    /// order and name the signer.
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        let sorted = self.heads.windows(2).all(|w| match w {
            [a, b] => a.node < b.node,
            _ => true,
        });
        if !sorted || self.head_of(&self.node).is_none() {
            return Err(AuditError::BadSignature);
        }
        key.verify(&self.message()?, &self.signature)
    }

    /// The head it states for `node`, if it names that node.
    pub fn head_of(&self, node: &NodeId) -> Option<&NodeHead> {
        self.heads
            .binary_search_by(|h| h.node.cmp(node))
            .ok()
            .and_then(|i| self.heads.get(i))
    }

    /// The heads as stored in one column: `count u64 ‖ (lp(node) ‖ seq u64 ‖
    /// head [32])…`, the same bytes as in the signed message.
    pub fn heads_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(8 + self.heads.len() * 48);
        put_heads(&mut out, &self.heads)?;
        Ok(out)
    }

    /// A stored cluster checkpoint from its columns (for any engine); `None` if
    /// one does not hold what the schema says.
    pub fn from_columns(
        node: &str,
        id: i64,
        time_ns: i64,
        heads: &[u8],
        signature: &[u8],
    ) -> Option<ClusterCheckpoint> {
        Some(ClusterCheckpoint {
            node: NodeId::new(node).ok()?,
            id: u64::try_from(id).ok()?,
            time: from_time_ns(time_ns).ok()?,
            heads: parse_heads(heads)?,
            signature: <[u8; 64]>::try_from(signature).ok()?,
        })
    }

    /// The signer's own entry as a [`Checkpoint`] *mark* — id, seq, head and
    /// time, with an all-zero signature — for [`super::LogStore::latest_checkpoint`]
    /// of a node's chain, which reads only those. It does not verify.
    pub fn own_mark(&self) -> Option<Checkpoint> {
        let own = self.head_of(&self.node)?;
        Some(Checkpoint {
            id: self.id,
            seq: own.seq,
            head: own.head,
            time: self.time,
            signature: [0; 64],
        })
    }

    /// The signed bytes.
    fn message(&self) -> Result<Vec<u8>, AuditError> {
        let mut m =
            Vec::with_capacity(CLUSTER_CHECKPOINT_DOMAIN.len() + 96 + 48 * self.heads.len());
        m.extend_from_slice(CLUSTER_CHECKPOINT_DOMAIN);
        put_lp(&mut m, self.node.as_str())?;
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&time_ns(self.time)?.to_be_bytes());
        put_heads(&mut m, &self.heads)?;
        Ok(m)
    }
}

/// The `format` of a cluster checkpoint's JSON form.
const CLUSTER_CHECKPOINT_FORMAT: &str = "panvault-audit-cluster-checkpoint-v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadJson {
    node: String,
    seq: u64,
    head: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterCheckpointJson {
    format: String,
    node: String,
    id: u64,
    time: String,
    heads: Vec<HeadJson>,
    signature: String,
}

impl ClusterCheckpoint {
    /// The JSON form, one line (what a node appends to its witness file):
    /// `{"format":"panvault-audit-cluster-checkpoint-v1","node":…,"id":…,
    /// "time":…,"heads":[{"node":…,"seq":…,"head":…}…],"signature":…}`.
    pub fn to_json(&self) -> Result<String, AuditError> {
        let json = ClusterCheckpointJson {
            format: CLUSTER_CHECKPOINT_FORMAT.to_owned(),
            node: self.node.to_string(),
            id: self.id,
            time: self
                .time
                .format(&Rfc3339)
                .map_err(|_| AuditError::TimeOutOfRange)?,
            heads: self
                .heads
                .iter()
                .map(|h| HeadJson {
                    node: h.node.to_string(),
                    seq: h.seq,
                    head: h.head.to_string(),
                })
                .collect(),
            signature: hex_encode(&self.signature),
        };
        serde_json::to_string(&json).map_err(|_| AuditError::Parse {
            what: "cluster checkpoint",
        })
    }

    /// Parses the JSON form (without checking the signature).
    pub fn from_json(text: &str) -> Result<ClusterCheckpoint, AuditError> {
        let err = || AuditError::Parse {
            what: "cluster checkpoint",
        };
        let j: ClusterCheckpointJson = serde_json::from_str(text).map_err(|_| err())?;
        if j.format != CLUSTER_CHECKPOINT_FORMAT {
            return Err(err());
        }
        Ok(ClusterCheckpoint {
            node: NodeId::new(j.node).map_err(|_| err())?,
            id: j.id,
            time: OffsetDateTime::parse(&j.time, &Rfc3339)
                .ok()
                .and_then(|t| utc(t).ok())
                .ok_or_else(err)?,
            heads: j
                .heads
                .into_iter()
                .map(|h| {
                    Some(NodeHead {
                        node: NodeId::new(h.node).ok()?,
                        seq: h.seq,
                        head: ChainHash::from_hex(&h.head)?,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(err)?,
            signature: hex_decode_array(&j.signature).ok_or_else(err)?,
        })
    }

    /// Parses a witness file of cluster checkpoints: one JSON form per line,
    /// blank lines skipped; anything else, or no checkpoint at all, is an error.
    pub fn parse_many(text: &str) -> Result<Vec<ClusterCheckpoint>, AuditError> {
        let out = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(ClusterCheckpoint::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        if out.is_empty() {
            return Err(AuditError::Parse {
                what: "checkpoint file (no checkpoint in it)",
            });
        }
        Ok(out)
    }

    /// Appends `checkpoints` to the witness file at `path`, one JSON line
    /// each, synced before it returns (as [`Checkpoint::append_to_witness`]).
    pub fn append_to_witness(
        path: &std::path::Path,
        checkpoints: &[ClusterCheckpoint],
    ) -> Result<(), AuditError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for cp in checkpoints {
            text.push_str(&cp.to_json()?);
            text.push('\n');
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o640);
        }
        let mut file = opts.open(path)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_data()?;
        Ok(())
    }
}

/// A checkpoint as an engine signs it: a single log's (SQLite), or a cluster
/// checkpoint of every node's head (a log shared by several nodes).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SignedCheckpoint {
    /// A single log's checkpoint.
    Single(Checkpoint),
    /// A cluster checkpoint.
    Cluster(ClusterCheckpoint),
}

impl SignedCheckpoint {
    /// Checks the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        match self {
            SignedCheckpoint::Single(c) => c.verify(key),
            SignedCheckpoint::Cluster(c) => c.verify(key),
        }
    }

    /// Its number (a cluster checkpoint's: per its signer).
    pub fn id(&self) -> u64 {
        match self {
            SignedCheckpoint::Single(c) => c.id,
            SignedCheckpoint::Cluster(c) => c.id,
        }
    }

    /// The one line `audit checkpoint` prints and `audit verify --checkpoint`
    /// reads back: a single checkpoint's text form, or a cluster checkpoint's
    /// JSON form (a witness file's line).
    pub fn to_line(&self) -> Result<String, AuditError> {
        match self {
            SignedCheckpoint::Single(c) => Ok(c.to_string()),
            SignedCheckpoint::Cluster(c) => c.to_json(),
        }
    }

    /// Appends `checkpoints` to the witness file at `path` in their JSON
    /// forms, synced (a file holds one kind: an engine signs one kind).
    pub fn append_to_witness(
        path: &std::path::Path,
        checkpoints: &[SignedCheckpoint],
    ) -> Result<(), AuditError> {
        let single: Vec<Checkpoint> = checkpoints
            .iter()
            .filter_map(|c| match c {
                SignedCheckpoint::Single(c) => Some(c.clone()),
                SignedCheckpoint::Cluster(_) => None,
            })
            .collect();
        let cluster: Vec<ClusterCheckpoint> = checkpoints
            .iter()
            .filter_map(|c| match c {
                SignedCheckpoint::Cluster(c) => Some(c.clone()),
                SignedCheckpoint::Single(_) => None,
            })
            .collect();
        Checkpoint::append_to_witness(path, &single)?;
        ClusterCheckpoint::append_to_witness(path, &cluster)
    }
}

/// `0x01 ‖ u32 big-endian length ‖ bytes`, as the event encoding writes a value.
pub(crate) fn put_lp(out: &mut Vec<u8>, s: &str) -> Result<(), AuditError> {
    let len = u32::try_from(s.len()).map_err(|_| AuditError::Overflow)?;
    out.push(1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_heads(out: &mut Vec<u8>, heads: &[NodeHead]) -> Result<(), AuditError> {
    let n = u64::try_from(heads.len()).map_err(|_| AuditError::Overflow)?;
    out.extend_from_slice(&n.to_be_bytes());
    for h in heads {
        put_lp(out, h.node.as_str())?;
        out.extend_from_slice(&h.seq.to_be_bytes());
        out.extend_from_slice(&h.head.0);
    }
    Ok(())
}

pub(crate) fn parse_heads(mut b: &[u8]) -> Option<Vec<NodeHead>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn u64_of(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(take(b, 8)?.try_into().ok()?))
    }
    let n = u64_of(&mut b)?;
    let mut heads = Vec::new();
    for _ in 0..n {
        if take(&mut b, 1)? != [1] {
            return None;
        }
        let len = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
        let name = std::str::from_utf8(take(&mut b, usize::try_from(len).ok()?)?).ok()?;
        let seq = u64_of(&mut b)?;
        let head = ChainHash::from_slice(take(&mut b, 32)?)?;
        heads.push(NodeHead {
            node: NodeId::new(name).ok()?,
            seq,
            head,
        });
    }
    b.is_empty().then_some(heads)
}

/// A node's view of the shared log, inside the caller's transaction: what
/// [`super::AuditChain::cluster_checkpoint`] and
/// [`super::AuditChain::register_node`] need beyond [`LogTx`]. The [`LogTx`]
/// methods of such a store act on this node's chain only (its events, its
/// checkpoints as [`ClusterCheckpoint::own_mark`]s).
pub trait ClusterLogTx: LogTx {
    /// The node whose chain this store appends to.
    fn node(&self) -> &NodeId;

    /// Every registered node with its last event as this transaction sees it
    /// (`seq` 0 and [`ChainHash::GENESIS`] for a node without events), in any order.
    fn node_heads(&self) -> Result<Vec<NodeHead>, AuditError>;

    /// Adds this node to the registry; [`Insert::Taken`] if it is there already.
    fn register_node(&self, time_ns: i64) -> Result<Insert, AuditError>;

    /// Stores a signed cluster checkpoint of this node; [`Insert::Taken`] if
    /// the node's checkpoint `id` is already used.
    fn insert_cluster_checkpoint(&self, cp: &ClusterCheckpoint) -> Result<Insert, AuditError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads() -> Vec<NodeHead> {
        vec![
            NodeHead {
                node: NodeId::new("b").unwrap(),
                seq: 7,
                head: ChainHash([2; 32]),
            },
            NodeHead {
                node: NodeId::new("a").unwrap(),
                seq: 0,
                head: ChainHash::GENESIS,
            },
        ]
    }

    #[test]
    fn node_ids_are_short_plain_names() {
        for ok in ["a", "node-1", "eu.west_2", &"x".repeat(64)] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "node 1", "nöde", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
        let (a, b) = (NodeId::generate().unwrap(), NodeId::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 18);
    }

    #[test]
    fn a_cluster_checkpoint_signs_every_head_in_name_order() {
        let key = SigningKey::from_seed(&[3; 32]).unwrap();
        let public = key.public_key();
        let t = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let cp = ClusterCheckpoint::sign(&key, NodeId::new("a").unwrap(), 4, heads(), t).unwrap();
        assert_eq!(cp.heads.first().map(|h| h.node.as_str()), Some("a"));
        cp.verify(&public).unwrap();

        // The message is the documented bytes.
        let mut m = b"panvault-audit cluster-checkpoint v1\0".to_vec();
        m.extend_from_slice(&[1, 0, 0, 0, 1, b'a']);
        m.extend_from_slice(&4u64.to_be_bytes());
        m.extend_from_slice(&1_750_000_000_000_000_000i64.to_be_bytes());
        m.extend_from_slice(&2u64.to_be_bytes());
        m.extend_from_slice(&[1, 0, 0, 0, 1, b'a']);
        m.extend_from_slice(&0u64.to_be_bytes());
        m.extend_from_slice(&[0; 32]);
        m.extend_from_slice(&[1, 0, 0, 0, 1, b'b']);
        m.extend_from_slice(&7u64.to_be_bytes());
        m.extend_from_slice(&[2; 32]);
        assert_eq!(cp.message().unwrap(), m);

        // Stored and read back.
        let back = ClusterCheckpoint::from_columns(
            "a",
            4,
            time_ns(t).unwrap(),
            &cp.heads_bytes().unwrap(),
            &cp.signature,
        )
        .unwrap();
        assert_eq!(back, cp);

        // Any change breaks it: a head, a seq, the signer, a dropped node.
        let mut c = cp.clone();
        if let Some(h) = c.heads.get_mut(1) {
            h.seq = 6;
        }
        assert!(c.verify(&public).is_err());
        let mut c = cp.clone();
        c.node = NodeId::new("b").unwrap();
        assert!(c.verify(&public).is_err());
        let mut c = cp.clone();
        c.heads.pop();
        assert!(c.verify(&public).is_err());
        let mut c = cp.clone();
        c.heads.reverse();
        assert!(c.verify(&public).is_err(), "not in canonical order");
        assert!(ClusterCheckpoint::from_columns("a", 4, 0, &[0, 0, 0], &cp.signature).is_none());

        // The JSON form (a witness file's line) reads back to the same checkpoint.
        let json = cp.to_json().unwrap();
        assert!(json.starts_with(r#"{"format":"panvault-audit-cluster-checkpoint-v1","node":"a""#));
        assert_eq!(ClusterCheckpoint::from_json(&json).unwrap(), cp);
        assert_eq!(
            ClusterCheckpoint::parse_many(&format!("{json}\n\n{json}\n"))
                .unwrap()
                .len(),
            2
        );
        assert!(ClusterCheckpoint::parse_many("").is_err());
    }
}
