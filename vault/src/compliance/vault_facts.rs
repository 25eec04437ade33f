//! Facts from the vault itself, read without unsealing: keys, stored data,
//! erasure requests. A value the store cannot vouch for fails the fact; it is
//! never replaced by a plausible default.
use std::path::Path;

use panvault_audit::compliance::{
    CvcFacts, DataFacts, DataKeyFacts, ErasureFacts, ErasureRequest, Fact, FingerprintFacts,
    KeyFacts, MaskingRow, SealFacts,
};
use time::OffsetDateTime;

use crate::service::inventory::Inventory;
use crate::store::{CardShape, Reader};

/// What [`collect`] learned.
pub(super) struct VaultFacts {
    pub keys: Fact<KeyFacts>,
    pub data: Fact<DataFacts>,
    pub vault_id: Option<String>,
    pub erasure: Fact<ErasureFacts>,
    pub masking: Fact<Vec<MaskingRow>>,
    pub cvc: Fact<CvcFacts>,
}

/// Keys and data of the vault in `data_dir`; `grace_days` is the card retention
/// after the expiry month.
pub(super) fn collect(data_dir: &Path, grace_days: i64, now: OffsetDateTime) -> VaultFacts {
    let inv = match Inventory::read(data_dir, grace_days, now) {
        Ok(i) => i,
        Err(e) => {
            let why = format!("{}: {e}", data_dir.display());
            return VaultFacts {
                keys: Fact::Failed(why.clone()),
                data: Fact::Failed(why.clone()),
                vault_id: None,
                erasure: Fact::Failed(why.clone()),
                masking: Fact::Failed(why.clone()),
                cvc: Fact::Failed(why),
            };
        }
    };
    let db = &inv.db_path;
    let conn = match crate::service::inventory::open_reader(data_dir).map(|(r, _)| r) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("{}: {e}", db.display());
            return VaultFacts {
                keys: Fact::Failed(why.clone()),
                data: Fact::Failed(why.clone()),
                vault_id: Some(inv.vault_id),
                erasure: Fact::Failed(why.clone()),
                masking: Fact::Failed(why.clone()),
                cvc: Fact::Failed(why),
            };
        }
    };
    let table = match card_table(&conn) {
        Ok(t) => t,
        Err(e) => {
            // The fingerprint facts need the table too: both facts fail.
            let why = format!("{}: {e}", db.display());
            return VaultFacts {
                keys: Fact::Failed(why.clone()),
                data: Fact::Failed(why),
                vault_id: Some(inv.vault_id),
                erasure: erasure_facts(&conn, now),
                masking: masking_facts(&conn),
                cvc: cvc_facts(&conn, now),
            };
        }
    };
    let keys = key_facts(&inv, table.fingerprint_len);
    let data = DataFacts {
        records: inv.records,
        records_past_retention: inv.records_past_retention,
        retention_days_after_expiry: grace_days,
        card_columns: table.columns,
        max_leading_digits: table.max_bin,
        max_trailing_digits: table.max_last,
    };
    VaultFacts {
        keys: Fact::Known(keys),
        data: Fact::Known(data),
        vault_id: Some(inv.vault_id),
        erasure: erasure_facts(&conn, now),
        masking: masking_facts(&conn),
        cvc: cvc_facts(&conn, now),
    }
}

/// The columns a held code is stored in: every one of them sealed bytes or
/// bookkeeping, none the code.
const HELD_CVC_LAYOUT: &[&str] = &[
    "tenant",
    "token",
    "key_id",
    "nonce",
    "sealed",
    "created_at",
    "deadline",
];

/// Held security codes and their window keys; unknown for a vault whose schema
/// predates them.
pub(super) fn cvc_facts(conn: &Reader<'_>, now: OffsetDateTime) -> Fact<CvcFacts> {
    let shape = match conn.cvc_shape(now.unix_timestamp()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Fact::Unknown(
                "this vault does not hold security codes (no held_cvcs table)".to_owned(),
            );
        }
        Err(e) => return Fact::Failed(e.to_string()),
    };
    let n = |what: &str, v: i64| {
        u64::try_from(v).map_err(|_| format!("held_cvcs: impossible count of {what}: {v}"))
    };
    let read = || -> Result<CvcFacts, String> {
        Ok(CvcFacts {
            held: n("codes", shape.held)?,
            past_deadline: n("expired codes", shape.past_deadline)?,
            orphaned: n("orphaned codes", shape.orphaned)?,
            keys: n("keys", shape.keys)?,
            columns: shape.columns.clone(),
            sealed_layout: HELD_CVC_LAYOUT.iter().map(|s| (*s).to_owned()).collect(),
            most_overdue_secs: shape.most_overdue_secs,
            longest_lifetime_secs: shape.longest_lifetime_secs,
            sealed_len: shape.sealed_len,
            oldest_key_age_secs: shape.oldest_key_age_secs,
            longest_key_life_secs: shape.longest_key_life_secs,
            key_overdue_secs: shape.key_overdue_secs,
        })
    };
    Fact::from_result(read())
}

/// Digits kept in the clear per card length (known only under format-preserving
/// tokens, which have the card's length).
pub(super) fn masking_facts(conn: &Reader<'_>) -> Fact<Vec<MaskingRow>> {
    let read = || -> Result<Vec<MaskingRow>, String> {
        let groups = conn.masking_shape().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let cards = u64::try_from(g.cards)
                .map_err(|_| format!("cards: impossible count {}", g.cards))?;
            // Absent only when no card of the group keeps digits of that kind.
            let digits =
                |column: &str, v: Option<i64>| length(column, v).map(|n| n.unwrap_or_default());
            out.push(MaskingRow {
                pan_len: length("token", g.digit_token_len)?,
                cards,
                leading: digits("bin", g.max_bin_len)?,
                trailing: digits("last4", g.max_last4_len)?,
            });
        }
        Ok(out)
    };
    Fact::from_result(read())
}

fn key_facts(inv: &Inventory, fingerprint_len: Option<u32>) -> KeyFacts {
    let mut data_keys: Vec<DataKeyFacts> = inv
        .keys
        .iter()
        .map(|k| DataKeyFacts {
            version: k.version,
            state: k.state.into(),
            age_days: k.age_days,
            superseded_days: inv
                .keys
                .iter()
                .filter(|n| n.version > k.version)
                .min_by_key(|n| n.version)
                .map(|n| n.age_days),
            records: k.records,
            encryptions: k.encryptions,
        })
        .collect();
    data_keys.sort_by_key(|k| k.version);
    let seal = match (inv.seal_method.as_str(), inv.kdf, inv.shares) {
        ("passphrase", Some((m, t, p)), _) => SealFacts::Passphrase {
            memory_kib: m,
            passes: t,
            lanes: p,
        },
        ("shamir", _, Some((total, threshold))) => SealFacts::Shares { total, threshold },
        (other, _, _) => SealFacts::Other {
            name: other.to_owned(),
        },
    };
    let has_fp_key = inv.wrapped_keys.iter().any(|n| n == "fingerprint");
    KeyFacts {
        data_keys,
        root_age_days: inv.root_age_days,
        seal,
        fingerprint: FingerprintFacts {
            algorithm: "HMAC-SHA-256 truncated to 128 bits, per-tenant key derived with HKDF from the fingerprint key".to_owned(),
            keyed: has_fp_key,
            key_wrapped: has_fp_key,
            stored_len: fingerprint_len,
        },
    }
}

/// The `cards` table as the data-minimisation checks see it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CardTable {
    pub columns: Vec<String>,
    /// Most leading digits stored (0 with no card stored).
    pub max_bin: u32,
    /// Most trailing digits stored (0 with no card stored).
    pub max_last: u32,
    /// Longest stored fingerprint in bytes (none with no card stored).
    pub fingerprint_len: Option<u32>,
}

/// A stored length as a fact: absent when no row holds one, an error when the
/// store reports one no column can have.
fn length(column: &str, v: Option<i64>) -> Result<Option<u32>, String> {
    v.map(|n| u32::try_from(n).map_err(|_| format!("cards.{column}: impossible length {n}")))
        .transpose()
}

/// The `cards` table and the lengths of what it stores.
pub(super) fn card_table(conn: &Reader<'_>) -> Result<CardTable, String> {
    let CardShape {
        columns,
        cards,
        max_bin_len,
        max_last4_len,
        max_fingerprint_len,
    } = conn.card_shape().map_err(|e| e.to_string())?;
    // Absent only when no card is stored (then no digit of one is kept); absent
    // beside stored cards, the rows are not what the vault writes.
    let digits = |column: &str, v: Option<i64>| match (length(column, v)?, cards) {
        (Some(n), _) => Ok(n),
        (None, 0) => Ok(0),
        (None, _) => Err(format!(
            "cards.{column}: no value in any of the {cards} stored cards"
        )),
    };
    Ok(CardTable {
        max_bin: digits("bin", max_bin_len)?,
        max_last: digits("last4", max_last4_len)?,
        fingerprint_len: length("fingerprint", max_fingerprint_len)?,
        columns,
    })
}

/// Open and completed erasure requests; unknown for a vault whose schema
/// predates erasure tracking.
pub(super) fn erasure_facts(conn: &Reader<'_>, now: OffsetDateTime) -> Fact<ErasureFacts> {
    let overview = match conn.erasure_overview() {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Fact::Unknown(
                "this vault does not track erasure requests (no erasure_requests table)".to_owned(),
            );
        }
        Err(e) => return Fact::Failed(e.to_string()),
    };
    let completed = match u64::try_from(overview.completed) {
        Ok(n) => n,
        Err(_) => return Fact::Failed("erasure_requests: impossible count".to_owned()),
    };
    Fact::Known(ErasureFacts {
        open: overview
            .open
            .into_iter()
            .map(|(id, at)| ErasureRequest {
                id: format!("#{id}"),
                age_days: (now.unix_timestamp() - at).max(0) / 86_400,
            })
            .collect(),
        completed,
    })
}
