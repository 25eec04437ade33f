//! Signed checkpoints: "after event `seq` the chain's head was `head`".
use std::fmt;
use std::str::FromStr;

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::encoding::{ChainHash, hex_decode_array, hex_encode};
use super::error::AuditError;
use super::event::{time_ns, utc};
use super::keys::{PublicKey, SigningKey};

/// Domain separation for checkpoint signatures.
const CHECKPOINT_DOMAIN: &[u8] = b"panvault-audit checkpoint v1\0";
/// First word of the text form.
const CHECKPOINT_LABEL: &str = "panvault-audit-checkpoint";
/// The `format` field of the JSON form.
const CHECKPOINT_FORMAT: &str = "panvault-audit-checkpoint-v1";

/// A signed statement of the chain's head.
///
/// The signature covers `id`, `seq`, `head` and `time` (see
/// `docs/audit-log.md`). The text form is one line, printed by
/// `panvault audit checkpoint` and read back by `panvault audit verify --checkpoint`:
///
/// ```text
/// panvault-audit-checkpoint v1 id=3 seq=3000 head=<64 hex> time=2025-06-01T12:00:00.5Z sig=<128 hex>
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Checkpoint number: 1, 2, 3 … without gaps.
    pub id: u64,
    /// The last event covered (0 for an empty log).
    pub seq: u64,
    /// The hash of event `seq` ([`ChainHash::GENESIS`] for an empty log).
    pub head: ChainHash,
    /// When it was signed (UTC, nanoseconds).
    pub time: OffsetDateTime,
    /// Ed25519 signature.
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Signs a new checkpoint.
    pub(crate) fn sign(
        key: &SigningKey,
        id: u64,
        seq: u64,
        head: ChainHash,
        time: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        let time = utc(time)?;
        let message = message(id, seq, &head, time_ns(time)?);
        let signature = key.sign(&message);
        Ok(Checkpoint {
            id,
            seq,
            head,
            time,
            signature,
        })
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), AuditError> {
        let message = message(self.id, self.seq, &self.head, time_ns(self.time)?);
        key.verify(&message, &self.signature)
    }
}

impl Checkpoint {
    /// The JSON form, one line (what the server appends to a witness file):
    /// `{"format":"panvault-audit-checkpoint-v1","id":3,"seq":3000,"head":"<64 hex>",
    /// "time":"2025-06-01T12:00:00.5Z","signature":"<128 hex>"}`.
    pub fn to_json(&self) -> Result<String, AuditError> {
        let time = self
            .time
            .format(&Rfc3339)
            .map_err(|_| AuditError::TimeOutOfRange)?;
        let json = CheckpointJson {
            format: CHECKPOINT_FORMAT.to_owned(),
            id: self.id,
            seq: self.seq,
            head: self.head.to_string(),
            time,
            signature: hex_encode(&self.signature),
        };
        serde_json::to_string(&json).map_err(|_| AuditError::Parse { what: "checkpoint" })
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Checkpoint, AuditError> {
        let err = || AuditError::Parse { what: "checkpoint" };
        let j: CheckpointJson = serde_json::from_str(text).map_err(|_| err())?;
        if j.format != CHECKPOINT_FORMAT {
            return Err(err());
        }
        Ok(Checkpoint {
            id: j.id,
            seq: j.seq,
            head: ChainHash::from_hex(&j.head).ok_or_else(err)?,
            time: OffsetDateTime::parse(&j.time, &Rfc3339)
                .ok()
                .and_then(|t| utc(t).ok())
                .ok_or_else(err)?,
            signature: hex_decode_array(&j.signature).ok_or_else(err)?,
        })
    }

    /// Parses a file of checkpoints: one per line, each in the text form (what
    /// `panvault audit checkpoint` prints) or the JSON form (a witness file).
    /// Blank lines are skipped; anything else that is not a checkpoint is an
    /// error naming its line, and so is a file without any.
    pub fn parse_many(text: &str) -> Result<Vec<Checkpoint>, AuditError> {
        let mut out = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let cp = if line.starts_with('{') {
                Checkpoint::from_json(line)?
            } else {
                line.parse()?
            };
            out.push(cp);
        }
        if out.is_empty() {
            return Err(AuditError::Parse {
                what: "checkpoint file (no checkpoint in it)",
            });
        }
        Ok(out)
    }

    /// Appends `checkpoints` to the witness file at `path`, one JSON line each,
    /// and syncs it to disk before returning. The file is created (mode 0640)
    /// if it does not exist; nothing in it is ever rewritten.
    pub fn append_to_witness(path: &Path, checkpoints: &[Checkpoint]) -> Result<(), AuditError> {
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
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    format: String,
    id: u64,
    seq: u64,
    head: String,
    time: String,
    signature: String,
}

/// The signed bytes of a checkpoint.
fn message(id: u64, seq: u64, head: &ChainHash, time_ns: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&head.0);
    m.extend_from_slice(&time_ns.to_be_bytes());
    m
}

impl Checkpoint {
    /// A stored checkpoint from its columns `id, seq, head, time_ns, signature`
    /// (for any engine); `None` if one does not hold what the schema says.
    pub fn from_columns(
        id: i64,
        seq: i64,
        head: &[u8],
        time_ns: i64,
        signature: &[u8],
    ) -> Option<Checkpoint> {
        Some(Checkpoint {
            id: u64::try_from(id).ok()?,
            seq: u64::try_from(seq).ok()?,
            head: ChainHash::from_slice(head)?,
            time: super::event::from_time_ns(time_ns).ok()?,
            signature: <[u8; 64]>::try_from(signature).ok()?,
        })
    }
}

pub(crate) fn to_i64(v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::Overflow)
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A time RFC 3339 cannot show (not one this crate signs) prints as
        // `invalid`, which does not parse back.
        let time = self
            .time
            .format(&Rfc3339)
            .unwrap_or_else(|_| "invalid".to_owned());
        write!(
            f,
            "{CHECKPOINT_LABEL} v1 id={} seq={} head={} time={} sig={}",
            self.id,
            self.seq,
            self.head,
            time,
            hex_encode(&self.signature)
        )
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checkpoint({self})")
    }
}

impl FromStr for Checkpoint {
    type Err = AuditError;

    /// Parses the one-line text form (surrounding whitespace and a trailing
    /// newline are ignored).
    fn from_str(s: &str) -> Result<Checkpoint, AuditError> {
        let err = || AuditError::Parse { what: "checkpoint" };
        let mut words = s.split_whitespace();
        if words.next() != Some(CHECKPOINT_LABEL) || words.next() != Some("v1") {
            return Err(err());
        }
        let mut field = |name: &str| -> Result<&str, AuditError> {
            let word = words.next().ok_or_else(err)?;
            let (k, v) = word.split_once('=').ok_or_else(err)?;
            if k == name { Ok(v) } else { Err(err()) }
        };
        let id = field("id")?.parse().map_err(|_| err())?;
        let seq = field("seq")?.parse().map_err(|_| err())?;
        let head = ChainHash::from_hex(field("head")?).ok_or_else(err)?;
        let time = OffsetDateTime::parse(field("time")?, &Rfc3339)
            .ok()
            .and_then(|t| utc(t).ok())
            .ok_or_else(err)?;
        let signature = hex_decode_array(field("sig")?).ok_or_else(err)?;
        if words.next().is_some() {
            return Err(err());
        }
        Ok(Checkpoint {
            id,
            seq,
            head,
            time,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_signature() {
        let key = SigningKey::from_seed(&[9; 32]).unwrap();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let cp = Checkpoint::sign(&key, 4, 4000, ChainHash([5; 32]), time).unwrap();
        cp.verify(&key.public_key()).unwrap();
        let text = cp.to_string();
        assert!(
            text.contains("time=2023-11-14T22:13:20.123456789Z"),
            "{text}"
        );
        let back: Checkpoint = format!("  {text}\n").parse().unwrap();
        assert_eq!(back, cp);
        back.verify(&key.public_key()).unwrap();

        let altered = Checkpoint {
            seq: 4001,
            ..cp.clone()
        };
        assert!(altered.verify(&key.public_key()).is_err());
        let altered = Checkpoint {
            id: 5,
            ..cp.clone()
        };
        assert!(altered.verify(&key.public_key()).is_err());
        assert!(
            text.replace("seq=4000", "seq=x")
                .parse::<Checkpoint>()
                .is_err()
        );
        assert!(format!("{text} extra").parse::<Checkpoint>().is_err());
    }

    #[test]
    fn json_form_and_files_of_many() {
        let key = SigningKey::from_seed(&[9; 32]).unwrap();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_500_000_000).unwrap();
        let a = Checkpoint::sign(&key, 1, 10, ChainHash([1; 32]), time).unwrap();
        let b = Checkpoint::sign(&key, 2, 20, ChainHash([2; 32]), time).unwrap();
        let json = a.to_json().unwrap();
        assert!(
            json.starts_with("{\"format\":\"panvault-audit-checkpoint-v1\""),
            "{json}"
        );
        assert_eq!(Checkpoint::from_json(&json).unwrap(), a);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness.jsonl");
        Checkpoint::append_to_witness(&path, std::slice::from_ref(&a)).unwrap();
        Checkpoint::append_to_witness(&path, std::slice::from_ref(&b)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            Checkpoint::parse_many(&text).unwrap(),
            vec![a.clone(), b.clone()]
        );
        // The text form, a blank line and the JSON form mix.
        let mixed = format!("{a}\n\n{}\n", b.to_json().unwrap());
        assert_eq!(Checkpoint::parse_many(&mixed).unwrap(), vec![a, b]);
        assert!(Checkpoint::parse_many("\n \n").is_err());
        assert!(Checkpoint::parse_many(&format!("{text}garbage\n")).is_err());
    }
}
