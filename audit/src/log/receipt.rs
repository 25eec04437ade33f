//! Erasure receipts (signed proof that a data subject's records were erased) and
//! keyed hashes of data-subject ids.
use std::str::FromStr;

use ring::hmac;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cluster::NodeId;
use super::encoding::{hex_decode_array, hex_encode, push_lp};
use super::error::AuditError;
use super::event::{time_ns, utc};
use super::keys::{PublicKey, SigningKey};

/// Domain separation for receipt signatures.
const RECEIPT_DOMAIN: &[u8] = b"panvault-audit erasure-receipt v1\0";
/// Domain separation for receipts that name the storage and its residue.
const RECEIPT_DOMAIN_V2: &[u8] = b"panvault-audit erasure-receipt v2\0";
/// Domain separation for receipts that also name the audit node whose chain
/// holds the `erase` event (a log of one chain per node).
const RECEIPT_DOMAIN_V3: &[u8] = b"panvault-audit erasure-receipt v3\0";
/// Domain separation for subject hashes.
const SUBJECT_DOMAIN: &[u8] = b"panvault subject-id v1\0";
/// The `format` field of the JSON form.
const RECEIPT_FORMAT: &str = "panvault-erasure-receipt-v1";
/// The `format` field of a receipt that names its storage ([`ReceiptStorage`]).
const RECEIPT_FORMAT_V2: &str = "panvault-erasure-receipt-v2";
/// The `format` field of a receipt that also names its audit node.
const RECEIPT_FORMAT_V3: &str = "panvault-erasure-receipt-v3";

/// The keyed hash that stands for a data subject's id in events and receipts:
/// HMAC-SHA256 under `key` (a vault secret) of the tenant and the subject id,
/// each length-prefixed, as lower-case hex. The raw id is never stored.
pub fn subject_hash(key: &[u8; 32], tenant: &str, subject: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut msg = Vec::with_capacity(SUBJECT_DOMAIN.len() + 8 + tenant.len() + subject.len() + 2);
    msg.extend_from_slice(SUBJECT_DOMAIN);
    push_lp(&mut msg, tenant.as_bytes());
    push_lp(&mut msg, subject.as_bytes());
    hex_encode(hmac::sign(&key, &msg).as_ref())
}

/// A signed statement that a subject's card data was erased, handed to whoever
/// asked for the erasure. It names the audit event that recorded the erasure.
///
/// JSON form (one object):
/// `{"format":"panvault-erasure-receipt-v1","subject_hash":"…","tenant":"…",
/// "tokens_erased":3,"time":"2025-06-01T12:00:00Z","audit_seq":1234,"signature":"<128 hex>"}`;
/// with [`ReceiptStorage`], format `panvault-erasure-receipt-v2` and two more signed
/// fields, `"engine"` and `"residue"`; with an audit node as well (a log of one
/// chain per node, where `audit_seq` alone names an event of no particular node),
/// format `panvault-erasure-receipt-v3` and one more signed field, `"audit_node"`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ErasureReceipt {
    /// [`subject_hash`] of the subject.
    pub subject_hash: String,
    /// The tenant.
    pub tenant: String,
    /// How many tokens were erased.
    pub tokens_erased: u64,
    /// When (UTC).
    pub time: OffsetDateTime,
    /// The sequence number of the `erase` audit event (in `audit_node`'s chain
    /// when that is given).
    pub audit_seq: u64,
    /// The storage engine and what of the erased data it may still hold (v2 and
    /// v3; `None` in a v1 receipt).
    pub storage: Option<ReceiptStorage>,
    /// The node whose chain of the shared audit log holds the `erase` event (v3,
    /// always with `storage`; `None` in v1 and v2 receipts).
    pub audit_node: Option<NodeId>,
    /// Ed25519 signature by the audit signing key.
    pub signature: [u8; 64],
}

/// Where the erased data was held and what residue of it remains, signed into
/// the receipt so the subject's controller has it in writing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReceiptStorage {
    /// `sqlite` or `postgresql`.
    pub engine: String,
    /// In plain words: what copies of the erased records may remain, and in
    /// what form.
    pub residue: String,
}

impl ErasureReceipt {
    /// Signs a receipt.
    pub fn sign(
        key: &SigningKey,
        subject_hash: impl Into<String>,
        tenant: impl Into<String>,
        tokens_erased: u64,
        time: OffsetDateTime,
        audit_seq: u64,
    ) -> Result<ErasureReceipt, AuditError> {
        let mut r = ErasureReceipt {
            subject_hash: subject_hash.into(),
            tenant: tenant.into(),
            tokens_erased,
            time: utc(time)?,
            audit_seq,
            storage: None,
            audit_node: None,
            signature: [0; 64],
        };
        r.signature = key.sign(&r.message()?);
        Ok(r)
    }

    /// Signs a receipt that names its storage engine and residue (v2).
    pub fn sign_with_storage(
        key: &SigningKey,
        subject_hash: impl Into<String>,
        tenant: impl Into<String>,
        tokens_erased: u64,
        time: OffsetDateTime,
        audit_seq: u64,
        storage: ReceiptStorage,
    ) -> Result<ErasureReceipt, AuditError> {
        let mut r = ErasureReceipt {
            subject_hash: subject_hash.into(),
            tenant: tenant.into(),
            tokens_erased,
            time: utc(time)?,
            audit_seq,
            storage: Some(storage),
            audit_node: None,
            signature: [0; 64],
        };
        r.signature = key.sign(&r.message()?);
        Ok(r)
    }

    /// Signs a receipt that names its storage engine and residue and the audit
    /// node whose chain holds event `audit_seq` (v3).
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a signed field of the receipt"
    )]
    pub fn sign_on_node(
        key: &SigningKey,
        subject_hash: impl Into<String>,
        tenant: impl Into<String>,
        tokens_erased: u64,
        time: OffsetDateTime,
        audit_seq: u64,
        storage: ReceiptStorage,
        audit_node: NodeId,
    ) -> Result<ErasureReceipt, AuditError> {
        let mut r = ErasureReceipt {
            subject_hash: subject_hash.into(),
            tenant: tenant.into(),
            tokens_erased,
            time: utc(time)?,
            audit_seq,
            storage: Some(storage),
            audit_node: Some(audit_node),
            signature: [0; 64],
        };
        r.signature = key.sign(&r.message()?);
        Ok(r)
    }

    /// The format label and signature domain of the fields this receipt has; a
    /// node without a storage is no format.
    fn version(&self) -> Result<(&'static str, &'static [u8]), AuditError> {
        match (&self.storage, &self.audit_node) {
            (None, None) => Ok((RECEIPT_FORMAT, RECEIPT_DOMAIN)),
            (Some(_), None) => Ok((RECEIPT_FORMAT_V2, RECEIPT_DOMAIN_V2)),
            (Some(_), Some(_)) => Ok((RECEIPT_FORMAT_V3, RECEIPT_DOMAIN_V3)),
            (None, Some(_)) => Err(AuditError::Parse {
                what: "erasure receipt",
            }),
        }
    }

    fn message(&self) -> Result<Vec<u8>, AuditError> {
        let (_, domain) = self.version()?;
        let mut m = Vec::with_capacity(domain.len() + self.subject_hash.len() + 512);
        m.extend_from_slice(domain);
        push_lp(&mut m, self.subject_hash.as_bytes());
        push_lp(&mut m, self.tenant.as_bytes());
        m.extend_from_slice(&self.tokens_erased.to_be_bytes());
        m.extend_from_slice(&time_ns(self.time)?.to_be_bytes());
        m.extend_from_slice(&self.audit_seq.to_be_bytes());
        if let Some(s) = &self.storage {
            push_lp(&mut m, s.engine.as_bytes());
            push_lp(&mut m, s.residue.as_bytes());
        }
        if let Some(node) = &self.audit_node {
            push_lp(&mut m, node.as_str().as_bytes());
        }
        Ok(m)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Result<String, AuditError> {
        let time = self
            .time
            .format(&Rfc3339)
            .map_err(|_| AuditError::TimeOutOfRange)?;
        let json = ReceiptJson {
            format: self.version()?.0.to_owned(),
            subject_hash: self.subject_hash.clone(),
            tenant: self.tenant.clone(),
            tokens_erased: self.tokens_erased,
            time,
            audit_seq: self.audit_seq,
            audit_node: self.audit_node.as_ref().map(|n| n.as_str().to_owned()),
            engine: self.storage.as_ref().map(|s| s.engine.clone()),
            residue: self.storage.as_ref().map(|s| s.residue.clone()),
            signature: hex_encode(&self.signature),
        };
        serde_json::to_string(&json).map_err(|_| AuditError::Parse {
            what: "erasure receipt",
        })
    }

    /// Parses the JSON form: the receipt itself, or the answer of
    /// `POST /v1/subjects/{subject}/erase` as it came (`{"receipt": {…}, …}`).
    pub fn from_json(text: &str) -> Result<ErasureReceipt, AuditError> {
        let err = || AuditError::Parse {
            what: "erasure receipt",
        };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|_| err())?;
        if let Some(obj) = value.as_object_mut()
            && !obj.contains_key("format")
            && let Some(inner) = obj.remove("receipt")
        {
            value = inner;
        }
        let j: ReceiptJson = serde_json::from_value(value).map_err(|_| err())?;
        let (storage, audit_node) = match (j.format.as_str(), j.engine, j.residue, j.audit_node) {
            (RECEIPT_FORMAT, None, None, None) => (None, None),
            (RECEIPT_FORMAT_V2, Some(engine), Some(residue), None) => {
                (Some(ReceiptStorage { engine, residue }), None)
            }
            (RECEIPT_FORMAT_V3, Some(engine), Some(residue), Some(node)) => (
                Some(ReceiptStorage { engine, residue }),
                Some(NodeId::new(node).map_err(|_| err())?),
            ),
            _ => return Err(err()),
        };
        Ok(ErasureReceipt {
            subject_hash: j.subject_hash,
            tenant: j.tenant,
            tokens_erased: j.tokens_erased,
            time: OffsetDateTime::parse(&j.time, &Rfc3339)
                .ok()
                .and_then(|t| utc(t).ok())
                .ok_or_else(err)?,
            audit_seq: j.audit_seq,
            storage,
            audit_node,
            signature: hex_decode_array(&j.signature).ok_or_else(err)?,
        })
    }
}

impl FromStr for ErasureReceipt {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<ErasureReceipt, AuditError> {
        ErasureReceipt::from_json(s)
    }
}

/// Checks a receipt's signature with the audit public key.
pub fn verify_receipt(receipt: &ErasureReceipt, key: &PublicKey) -> Result<(), AuditError> {
    key.verify(&receipt.message()?, &receipt.signature)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptJson {
    format: String,
    subject_hash: String,
    tenant: String,
    tokens_erased: u64,
    time: String,
    audit_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    residue: Option<String>,
    signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_round_trip_and_tamper() {
        let key = SigningKey::from_seed(&[4; 32]).unwrap();
        let public = key.public_key();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_000_000_001).unwrap();
        let sh = subject_hash(&[8; 32], "acme", "customer-42");
        let r = ErasureReceipt::sign(&key, &sh, "acme", 3, time, 1234).unwrap();
        verify_receipt(&r, &public).unwrap();
        let json = r.to_json().unwrap();
        let back = ErasureReceipt::from_json(&json).unwrap();
        assert_eq!(back, r);
        verify_receipt(&back, &public).unwrap();
        // The erase endpoint's answer, as it came.
        let answer = format!("{{\"receipt\":{json},\"wal_scrubbed\":true}}");
        assert_eq!(ErasureReceipt::from_json(&answer).unwrap(), r);
        assert!(ErasureReceipt::from_json("{\"receipt\":{}}").is_err());
        assert!(ErasureReceipt::from_json("[1]").is_err());

        for altered in [
            ErasureReceipt {
                tokens_erased: 4,
                ..r.clone()
            },
            ErasureReceipt {
                audit_seq: 1235,
                ..r.clone()
            },
            ErasureReceipt {
                tenant: "acmf".into(),
                ..r.clone()
            },
            ErasureReceipt {
                subject_hash: subject_hash(&[8; 32], "acme", "x"),
                ..r.clone()
            },
            ErasureReceipt {
                time: time + time::Duration::nanoseconds(1),
                ..r.clone()
            },
        ] {
            assert!(verify_receipt(&altered, &public).is_err());
        }
        let other = SigningKey::from_seed(&[5; 32]).unwrap().public_key();
        assert!(verify_receipt(&r, &other).is_err());
        assert!(ErasureReceipt::from_json(&json.replace("v1", "v2")).is_err());
    }

    /// The signed bytes, built by hand from `docs/audit-log.md` ("Erasure
    /// receipts"): an outside verifier builds exactly these.
    #[test]
    fn receipt_message_is_what_the_docs_say() {
        let key = SigningKey::from_seed(&[4; 32]).unwrap();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_000_000_001).unwrap();
        let sh = "ab".repeat(32);
        let r = ErasureReceipt::sign(&key, &sh, "acme", 3, time, 1234).unwrap();
        let mut expected = b"panvault-audit erasure-receipt v1\0".to_vec();
        assert_eq!(expected.len(), 34);
        expected.push(0x01);
        expected.extend_from_slice(&64u32.to_be_bytes());
        expected.extend_from_slice(sh.as_bytes());
        expected.push(0x01);
        expected.extend_from_slice(&4u32.to_be_bytes());
        expected.extend_from_slice(b"acme");
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&1_750_000_000_000_000_001i64.to_be_bytes());
        expected.extend_from_slice(&1234u64.to_be_bytes());
        assert_eq!(r.message().unwrap(), expected);
        key.public_key().verify(&expected, &r.signature).unwrap();
        // The JSON time carries the nanoseconds.
        assert!(
            r.to_json()
                .unwrap()
                .contains("\"time\":\"2025-06-15T15:06:40.000000001Z\"")
        );
    }

    /// A v2 receipt signs its engine and residue: the JSON round-trips, the
    /// bytes are v1's under the v2 domain followed by both, and changing
    /// either, dropping them, or relabelling it v1 fails.
    #[test]
    fn receipt_v2_signs_engine_and_residue() {
        let key = SigningKey::from_seed(&[4; 32]).unwrap();
        let public = key.public_key();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_000_000_001).unwrap();
        let sh = "ab".repeat(32);
        let storage = ReceiptStorage {
            engine: "postgresql".into(),
            residue: "ciphertext in pages".into(),
        };
        let r =
            ErasureReceipt::sign_with_storage(&key, &sh, "acme", 3, time, 1234, storage).unwrap();
        verify_receipt(&r, &public).unwrap();
        let json = r.to_json().unwrap();
        assert!(
            json.contains("\"format\":\"panvault-erasure-receipt-v2\""),
            "{json}"
        );
        assert!(json.contains("\"engine\":\"postgresql\""), "{json}");
        let back = ErasureReceipt::from_json(&json).unwrap();
        assert_eq!(back, r);
        verify_receipt(&back, &public).unwrap();

        let v1 = ErasureReceipt::sign(&key, &sh, "acme", 3, time, 1234).unwrap();
        let mut expected = b"panvault-audit erasure-receipt v2\0".to_vec();
        expected.extend_from_slice(&v1.message().unwrap()[34..]);
        for text in ["postgresql", "ciphertext in pages"] {
            expected.push(0x01);
            expected.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
            expected.extend_from_slice(text.as_bytes());
        }
        assert_eq!(r.message().unwrap(), expected);

        for altered in [
            ErasureReceipt {
                storage: Some(ReceiptStorage {
                    engine: "sqlite".into(),
                    residue: "ciphertext in pages".into(),
                }),
                ..r.clone()
            },
            ErasureReceipt {
                storage: Some(ReceiptStorage {
                    engine: "postgresql".into(),
                    residue: "nothing".into(),
                }),
                ..r.clone()
            },
            ErasureReceipt {
                storage: None,
                ..r.clone()
            },
        ] {
            assert!(verify_receipt(&altered, &public).is_err());
        }
        // A v1 label on v2 fields, or a v2 label without them, is not a receipt.
        assert!(ErasureReceipt::from_json(&json.replace("-v2", "-v1")).is_err());
        let bare = v1.to_json().unwrap().replace("-v1", "-v2");
        assert!(ErasureReceipt::from_json(&bare).is_err());
    }

    /// A v3 receipt also signs the audit node whose chain holds the event: the
    /// bytes are v2's under the v3 domain followed by `lp(audit_node)`; another
    /// node, dropping it, or relabelling it v2 fails; a malformed node is refused.
    #[test]
    fn receipt_v3_signs_the_audit_node() {
        let key = SigningKey::from_seed(&[4; 32]).unwrap();
        let public = key.public_key();
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_750_000_000_000_000_001).unwrap();
        let sh = "ab".repeat(32);
        let storage = ReceiptStorage {
            engine: "postgresql".into(),
            residue: "ciphertext in pages".into(),
        };
        let node = NodeId::new("node-b").unwrap();
        let r = ErasureReceipt::sign_on_node(
            &key,
            &sh,
            "acme",
            3,
            time,
            1234,
            storage.clone(),
            node.clone(),
        )
        .unwrap();
        verify_receipt(&r, &public).unwrap();
        let json = r.to_json().unwrap();
        assert!(
            json.contains("\"format\":\"panvault-erasure-receipt-v3\"")
                && json.contains("\"audit_node\":\"node-b\""),
            "{json}"
        );
        let back = ErasureReceipt::from_json(&json).unwrap();
        assert_eq!(back, r);
        verify_receipt(&back, &public).unwrap();

        let v2 =
            ErasureReceipt::sign_with_storage(&key, &sh, "acme", 3, time, 1234, storage).unwrap();
        let mut expected = b"panvault-audit erasure-receipt v3\0".to_vec();
        expected.extend_from_slice(&v2.message().unwrap()[34..]);
        expected.push(0x01);
        expected.extend_from_slice(&6u32.to_be_bytes());
        expected.extend_from_slice(b"node-b");
        assert_eq!(r.message().unwrap(), expected);
        public.verify(&expected, &r.signature).unwrap();

        for altered in [
            ErasureReceipt {
                audit_node: Some(NodeId::new("node-a").unwrap()),
                ..r.clone()
            },
            ErasureReceipt {
                audit_node: None,
                ..r.clone()
            },
        ] {
            assert!(verify_receipt(&altered, &public).is_err());
        }
        // A node without storage is no receipt format.
        let bare = ErasureReceipt {
            storage: None,
            ..r.clone()
        };
        assert!(verify_receipt(&bare, &public).is_err());
        assert!(bare.to_json().is_err());
        // Labels and fields must agree; the node must be a node id.
        assert!(ErasureReceipt::from_json(&json.replace("-v3", "-v2")).is_err());
        let v2_json = v2.to_json().unwrap();
        assert!(ErasureReceipt::from_json(&v2_json.replace("-v2", "-v3")).is_err());
        assert!(ErasureReceipt::from_json(&json.replace("node-b", "Node B")).is_err());
    }

    #[test]
    fn subject_hash_is_keyed_and_unambiguous() {
        let a = subject_hash(&[1; 32], "acme", "bob");
        assert_eq!(a.len(), 64);
        assert_eq!(a, subject_hash(&[1; 32], "acme", "bob"));
        assert_ne!(a, subject_hash(&[2; 32], "acme", "bob"));
        assert_ne!(
            subject_hash(&[1; 32], "ab", "c"),
            subject_hash(&[1; 32], "a", "bc")
        );
        assert!(!a.contains("bob"));
    }
}
