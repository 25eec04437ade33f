//! The writer thread's state: the in-memory dedup index, per-key encryption
//! counters, and the audit chain head.
//!
//! ## Why the dedup index lives in memory
//! Tokenizing the same card twice in a tenant returns the existing token, found by
//! the card's keyed fingerprint. An SQLite index on fingerprints is a random-key
//! B-tree: every insert dirties one more 4 KiB page that must be written to the WAL
//! and fsynced, which halved durable tokenize throughput at 300k+ records. The
//! fingerprints stay in the `cards` table (the source of truth); the lookup
//! structure is a hash map from fingerprint to row id, built by one scan when the
//! vault opens (≈ 1 s and ≈ 40 bytes per record) and kept by the writer, the only
//! inserter of cards. Other processes (the CLI's erase, retention) only delete or
//! rewrite rows in place, so a hit is always re-checked against the row; a stale hit
//! is dropped and counts as a miss.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::Connection;

use panvault_audit::log::{ChainHead, CheckpointPolicy};

use super::audit_hook::{AuditRecord, AuditState};
use super::keyring::Keyring;
use super::request::AccessContext;
use crate::core::kdf::FINGERPRINT_LEN;
use crate::error::VaultError;
use crate::store::{StoreError, WriterState};

/// Fingerprint → row id of a live card holding it.
#[derive(Debug, Default)]
pub(crate) struct DedupIndex {
    map: HashMap<[u8; FINGERPRINT_LEN], i64>,
    /// Rows deleted by the open batch: forgotten once it commits (a rollback keeps
    /// them, and their entries).
    deleted: Vec<([u8; FINGERPRINT_LEN], i64)>,
    /// Card rows in the table (counted once at open, then kept by every insert
    /// and delete of the writer): `/metrics` reads it instead of a `count(*)`.
    stored: Arc<AtomicI64>,
    /// Rows inserted minus rows deleted by the open batch.
    pending: i64,
}

impl DedupIndex {
    fn load(conn: &Connection) -> Result<Self, VaultError> {
        let mut map = HashMap::new();
        let mut rows_seen: i64 = 0;
        let mut stmt = conn
            .prepare("SELECT id, fingerprint FROM cards")
            .map_err(|e| VaultError::Store(e.into()))?;
        let mut rows = stmt.query([]).map_err(|e| VaultError::Store(e.into()))?;
        while let Some(r) = rows.next().map_err(|e| VaultError::Store(e.into()))? {
            let id: i64 = r.get(0).map_err(|e| VaultError::Store(e.into()))?;
            let fp: Vec<u8> = r.get(1).map_err(|e| VaultError::Store(e.into()))?;
            rows_seen += 1;
            if let Ok(fp) = <[u8; FINGERPRINT_LEN]>::try_from(fp.as_slice()) {
                map.entry(fp).or_insert(id);
            }
        }
        Ok(DedupIndex {
            map,
            deleted: Vec::new(),
            stored: Arc::new(AtomicI64::new(rows_seen)),
            pending: 0,
        })
    }

    /// The row id the index holds for `fp`, to be re-checked by the caller.
    pub(crate) fn get(&self, fp: &[u8; FINGERPRINT_LEN]) -> Option<i64> {
        self.map.get(fp).copied()
    }

    /// Remembers a new row (keeps an existing live entry). Called once for every
    /// row the writer inserts.
    pub(crate) fn insert(&mut self, fp: [u8; FINGERPRINT_LEN], id: i64) {
        self.pending += 1;
        self.map.entry(fp).or_insert(id);
    }

    /// The running count of card rows (shared with readers of the count).
    pub(crate) fn stored(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.stored)
    }

    /// Forgets a stale entry.
    pub(crate) fn remove(&mut self, fp: &[u8; FINGERPRINT_LEN]) {
        self.map.remove(fp);
    }

    /// Notes that the open batch deleted row `id` holding `fp`; its entry goes when
    /// the batch commits. (Without this every deleted card stayed in memory until
    /// the same card came back or the vault restarted.)
    pub(crate) fn deleted_in_batch(&mut self, fp: &[u8], id: i64) {
        self.pending -= 1;
        if let Ok(fp) = <[u8; FINGERPRINT_LEN]>::try_from(fp) {
            self.deleted.push((fp, id));
        }
    }

    /// The batch committed: forget its deleted rows (only entries still pointing
    /// at them; another live row with the same card keeps its own).
    fn commit(&mut self) {
        self.stored
            .fetch_add(std::mem::take(&mut self.pending), Ordering::Relaxed);
        for (fp, id) in self.deleted.drain(..) {
            if self.map.get(&fp) == Some(&id) {
                self.map.remove(&fp);
            }
        }
    }

    /// The batch rolled back: its rows were not deleted after all.
    fn rollback(&mut self) {
        self.pending = 0;
        self.deleted.clear();
    }

    /// Cards remembered.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Everything the writer thread keeps between batches.
#[derive(Debug)]
pub struct VaultState {
    pub(crate) dedup: DedupIndex,
    encryptions: BTreeMap<u32, i64>,
    audit: AuditState,
}

impl VaultState {
    pub(crate) fn load(
        conn: &Connection,
        keys: &Keyring,
        policy: CheckpointPolicy,
    ) -> Result<Self, VaultError> {
        Ok(VaultState {
            dedup: DedupIndex::load(conn)?,
            encryptions: BTreeMap::new(),
            audit: AuditState::load(conn, keys, policy)?,
        })
    }

    /// The audit side and the dedup index together (an erasure writes to both).
    pub(crate) fn audit_and_dedup(&mut self) -> (&mut AuditState, &mut DedupIndex) {
        (&mut self.audit, &mut self.dedup)
    }

    /// The audit side (erasure, purge, receipts).
    pub(crate) fn audit_mut(&mut self) -> &mut AuditState {
        &mut self.audit
    }

    /// Counts one encryption under `version` (flushed before the batch commits).
    pub(crate) fn count_encryption(&mut self, version: u32) {
        *self.encryptions.entry(version).or_insert(0) += 1;
    }

    /// Appends an audit event inside the current transaction.
    pub(crate) fn record(
        &mut self,
        conn: &Connection,
        keys: &Keyring,
        ctx: &AccessContext,
        rec: &AuditRecord<'_>,
        now: i64,
    ) -> Result<u64, VaultError> {
        self.audit.record(conn, keys, ctx, rec, now)
    }
}

impl WriterState for VaultState {
    type Snapshot = ChainHead;
    fn snapshot(&self) -> ChainHead {
        self.audit.snapshot()
    }
    fn restore(&mut self, snap: ChainHead) {
        // Counters of a rolled-back batch were never flushed; the chain goes back.
        self.encryptions.clear();
        self.dedup.rollback();
        self.audit.restore(snap);
    }
    fn on_shutdown(&mut self, conn: &mut Connection) {
        // A final signed checkpoint so the log's end is covered.
        let before = self.audit.snapshot();
        let ok = conn.transaction().ok().and_then(|tx| {
            self.audit.checkpoint_if_due(&tx, true).ok()?;
            tx.commit().ok()
        });
        if ok.is_none() {
            self.audit.restore(before);
        }
    }
    fn after_commit(&mut self, _conn: &mut Connection) {
        self.dedup.commit();
    }
    fn before_commit(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.audit
            .checkpoint_if_due(conn, false)
            .map_err(|_| StoreError::Unavailable("audit checkpoint could not be written"))?;
        if self.encryptions.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(
            "UPDATE data_keys SET encryptions = encryptions + ?2 WHERE version = ?1",
        )?;
        for (v, n) in std::mem::take(&mut self.encryptions) {
            stmt.execute([i64::from(v), n])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_leave_the_index_only_when_their_batch_commits() {
        let mut d = DedupIndex::default();
        let (a, b) = ([1u8; FINGERPRINT_LEN], [2u8; FINGERPRINT_LEN]);
        d.insert(a, 10);
        d.insert(b, 20);
        // Rolled back: nothing forgotten.
        d.deleted_in_batch(&a, 10);
        d.rollback();
        d.commit();
        assert_eq!(d.get(&a), Some(10));
        // Committed: forgotten; a delete of another row of the same card (made with
        // force_new) leaves the entry of the row it points at.
        d.deleted_in_batch(&a, 10);
        d.deleted_in_batch(&b, 21);
        d.deleted_in_batch(&[3u8; 7], 30); // not a fingerprint: ignored
        d.commit();
        assert_eq!((d.get(&a), d.get(&b), d.len()), (None, Some(20), 1));
    }
}
