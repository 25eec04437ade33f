//! The writer thread's state: the in-memory dedup index, per-key encryption
//! counters, and the audit chain head.
//!
//! ## Why the dedup index lives in memory
//! Tokenizing the same card twice for the same subject of a tenant returns the
//! existing token, found by the card's keyed fingerprint and the subject. An SQLite
//! index on fingerprints is a random-key B-tree: every insert dirties one more 4 KiB
//! page that must be written to the WAL and fsynced, which halved durable tokenize
//! throughput at 300k+ records. The fingerprints stay in the `cards` table (the
//! source of truth); the lookup structure is a hash map from fingerprint to (subject
//! tag, row id), built by one scan when the vault opens (≈ 1 s and ≈ 50 bytes per
//! record) and kept by the writer, the only inserter of cards. Other processes (the
//! CLI's erase, retention) only delete or rewrite rows in place, so a hit is always
//! re-checked against the row (fingerprint, tenant and subject); a stale hit is
//! dropped and counts as a miss.
//!
//! ## Why the subject is part of the key
//! Two customers of one shop may hold the same card. Each must get a token of
//! their own, which only their own erasure removes: a hit on the card alone
//! returned the first customer's row to the second, whose erasure then found
//! nothing. The subject enters the map only as a tag, a SipHash under a key drawn
//! at random when the vault opens (never the subject itself); a tag collision at
//! worst makes a miss, because the row's subject is compared in SQL.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use panvault_audit::log::{ChainHead, CheckpointPolicy};

use super::audit_hook::{AuditRecord, AuditState};
use super::keyring::{self, Keyring};
use super::request::AccessContext;
use crate::core::kdf::FINGERPRINT_LEN;
use crate::error::VaultError;
use crate::store::{Reader, Session, StoreError, Tx, WriterState};

/// The tag of a subject (or of "no subject") in the dedup index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubjectTag(u64);

/// One live row of a card: whose it is and where.
#[derive(Debug, Clone, Copy)]
struct Entry {
    subject: SubjectTag,
    id: i64,
}

/// Fingerprint and subject → row id of a live card holding it.
#[derive(Debug, Default)]
pub(crate) struct DedupIndex {
    /// The first row of each card: nearly every card has one subject only.
    map: HashMap<[u8; FINGERPRINT_LEN], Entry>,
    /// Rows of the same card held for further subjects (one card, several
    /// customers of a tenant).
    more: HashMap<[u8; FINGERPRINT_LEN], Vec<Entry>>,
    /// Keys the subject tags (random per process: tags are never stored).
    tags: RandomState,
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
    fn load(conn: &Reader<'_>) -> Result<Self, VaultError> {
        let mut index = DedupIndex::default();
        if conn.is_postgres() {
            // Nodes share the database: dedup is looked up there (no index in
            // memory), and the count starts at the table's.
            index.stored = Arc::new(AtomicI64::new(conn.card_count()?));
            return Ok(index);
        }
        let mut rows_seen: i64 = 0;
        conn.for_each_fingerprint(|id, fp, subject| {
            rows_seen += 1;
            if let Ok(fp) = <[u8; FINGERPRINT_LEN]>::try_from(fp.as_slice()) {
                let tag = index.tag(subject.as_deref());
                index.insert(fp, tag, id);
            }
        })?;
        // Loading is not a batch: the count starts at the rows seen.
        index.pending = 0;
        index.stored = Arc::new(AtomicI64::new(rows_seen));
        Ok(index)
    }

    /// The tag of `subject` (`None`: a card tokenized without a subject, which is
    /// a subject of its own).
    pub(crate) fn tag(&self, subject: Option<&str>) -> SubjectTag {
        SubjectTag(self.tags.hash_one(subject))
    }

    /// The row id the index holds for card `fp` of `subject`, to be re-checked by
    /// the caller.
    pub(crate) fn get(&self, fp: &[u8; FINGERPRINT_LEN], subject: SubjectTag) -> Option<i64> {
        match self.map.get(fp) {
            None => None,
            Some(e) if e.subject == subject => Some(e.id),
            Some(_) => self
                .more
                .get(fp)?
                .iter()
                .find(|e| e.subject == subject)
                .map(|e| e.id),
        }
    }

    /// Remembers a new row (keeps an existing live entry of the same subject).
    /// Called once for every row the writer inserts.
    pub(crate) fn insert(&mut self, fp: [u8; FINGERPRINT_LEN], subject: SubjectTag, id: i64) {
        self.pending += 1;
        let new = Entry { subject, id };
        match self.map.entry(fp) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(new);
            }
            std::collections::hash_map::Entry::Occupied(o) if o.get().subject == subject => {}
            std::collections::hash_map::Entry::Occupied(_) => {
                let more = self.more.entry(fp).or_default();
                if !more.iter().any(|e| e.subject == subject) {
                    more.push(new);
                }
            }
        }
    }

    /// Counts a new row without remembering it (PostgreSQL: nodes look dedup up
    /// in the shared table). Called once for every row the writer inserts there.
    pub(crate) fn counted_insert(&mut self) {
        self.pending += 1;
    }

    /// Forgets the entries of `fp` that `gone` selects, moving a further
    /// subject's row up when the first goes.
    fn forget(&mut self, fp: &[u8; FINGERPRINT_LEN], gone: impl Fn(&Entry) -> bool) {
        if self.map.get(fp).is_some_and(&gone) {
            let next = self.more.get_mut(fp).and_then(Vec::pop);
            match next {
                Some(e) => {
                    self.map.insert(*fp, e);
                }
                None => {
                    self.map.remove(fp);
                }
            }
        } else if let Some(more) = self.more.get_mut(fp) {
            more.retain(|e| !gone(e));
        }
        if self.more.get(fp).is_some_and(Vec::is_empty) {
            self.more.remove(fp);
        }
    }

    /// The running count of card rows (shared with readers of the count).
    pub(crate) fn stored(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.stored)
    }

    /// Forgets a stale entry.
    pub(crate) fn remove(&mut self, fp: &[u8; FINGERPRINT_LEN], subject: SubjectTag) {
        self.forget(fp, |e| e.subject == subject);
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
        for (fp, id) in std::mem::take(&mut self.deleted) {
            self.forget(&fp, |e| e.id == id);
        }
    }

    /// The batch rolled back: its rows were not deleted after all.
    fn rollback(&mut self) {
        self.pending = 0;
        self.deleted.clear();
    }

    /// Rows remembered (one per card and subject of a tenant).
    pub(crate) fn len(&self) -> usize {
        self.map.len() + self.more.values().map(Vec::len).sum::<usize>()
    }
}

/// Everything the writer thread keeps between batches.
#[derive(Debug)]
pub struct VaultState {
    pub(crate) dedup: DedupIndex,
    encryptions: BTreeMap<u32, i64>,
    audit: AuditState,
    /// The version `active` in the database, read once per batch inside its
    /// transaction (`None` until a job of the batch needs it).
    db_active: Option<u32>,
    /// Raised when the writer found the callers' keys behind the database's; the
    /// vault reloads.
    reload_wanted: Arc<AtomicBool>,
    /// The keyring the writer loaded itself after such a mismatch.
    fresh_keys: Option<Arc<Keyring>>,
}

impl VaultState {
    pub(crate) fn load(
        conn: &Tx<'_>,
        keys: &Keyring,
        policy: CheckpointPolicy,
        witness: Option<std::path::PathBuf>,
    ) -> Result<Self, VaultError> {
        let mut audit = AuditState::load(conn, keys, policy)?;
        audit.set_witness(witness);
        Ok(VaultState {
            dedup: DedupIndex::load(conn)?,
            encryptions: BTreeMap::new(),
            audit,
            db_active: None,
            reload_wanted: Arc::new(AtomicBool::new(false)),
            fresh_keys: None,
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

    /// The keyring to seal a new record with: `None` when the caller's keyring
    /// (`keys`) has the version `active` in the database now, else a keyring
    /// loaded here, inside the batch's transaction, that has it. The check holds
    /// the write lock, so no key change can commit between it and the insert:
    /// nothing is sealed under a key that is not active, whatever the
    /// administrator did meanwhile. A rotation made by another process therefore
    /// costs callers nothing (the writer loads the new key once and the vault
    /// swaps it in); only keys that cannot be loaded (a changed root) refuse with
    /// [`VaultError::KeysOutOfDate`].
    pub(crate) fn sealing_keyring(
        &mut self,
        conn: &Reader<'_>,
        keys: &Keyring,
    ) -> Result<Option<Arc<Keyring>>, VaultError> {
        let active = match self.db_active {
            Some(v) => v,
            None => {
                let v = keyring::active_version(conn)?.ok_or(VaultError::KeysOutOfDate)?;
                self.db_active = Some(v);
                v
            }
        };
        if active == keys.active {
            return Ok(None);
        }
        self.reload_wanted.store(true, Ordering::SeqCst);
        if let Some(fresh) = &self.fresh_keys
            && fresh.active == active
            && fresh.vault_id == keys.vault_id
        {
            return Ok(Some(Arc::clone(fresh)));
        }
        let root = crate::core::secret::SecretKey32::from_slice(keys.root.expose_secret())
            .ok_or(VaultError::KeysOutOfDate)?;
        let fresh = match Keyring::load(conn, &keys.vault_id, root) {
            Ok(k) if k.active == active => Arc::new(k),
            Ok(_) | Err(_) => return Err(VaultError::KeysOutOfDate),
        };
        self.fresh_keys = Some(Arc::clone(&fresh));
        Ok(Some(fresh))
    }

    /// The flag [`VaultState::sealing_keyring`] raises on a key mismatch.
    pub(crate) fn reload_wanted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reload_wanted)
    }

    /// Counts one encryption under `version` (flushed before the batch commits).
    pub(crate) fn count_encryption(&mut self, version: u32) {
        *self.encryptions.entry(version).or_insert(0) += 1;
    }

    /// Appends an audit event inside the current transaction.
    pub(crate) fn record(
        &mut self,
        conn: &Tx<'_>,
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
    fn begin_batch(&mut self, _conn: &Tx<'_>) {
        // Another process may have changed the keys between two batches.
        self.db_active = None;
    }
    fn restore(&mut self, snap: ChainHead) {
        // Counters of a rolled-back batch were never flushed; the chain goes back.
        self.encryptions.clear();
        self.dedup.rollback();
        self.audit.restore(snap);
    }
    fn on_shutdown(&mut self, conn: &mut Session) {
        // A final signed checkpoint so the log's end is covered (also events
        // other processes appended).
        self.audit.on_idle(conn, true);
    }
    fn idle_wait(&self) -> std::time::Duration {
        self.audit.idle_wait()
    }
    fn on_idle(&mut self, conn: &mut Session) {
        // An idle server still signs its tail within the checkpoint interval.
        self.audit.on_idle(conn, false);
    }
    fn after_commit(&mut self, _conn: &mut Session) {
        self.dedup.commit();
        self.audit.committed();
    }
    fn before_commit(&mut self, conn: &Tx<'_>) -> Result<(), StoreError> {
        self.audit
            .checkpoint_if_due(conn, false)
            .map_err(|_| StoreError::Unavailable("audit checkpoint could not be written"))?;
        if self.encryptions.is_empty() {
            return Ok(());
        }
        for (v, n) in std::mem::take(&mut self.encryptions) {
            conn.add_encryptions(v, n)?;
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
        let none = d.tag(None);
        let (a, b) = ([1u8; FINGERPRINT_LEN], [2u8; FINGERPRINT_LEN]);
        d.insert(a, none, 10);
        d.insert(b, none, 20);
        // Rolled back: nothing forgotten.
        d.deleted_in_batch(&a, 10);
        d.rollback();
        d.commit();
        assert_eq!(d.get(&a, none), Some(10));
        // Committed: forgotten; a delete of another row of the same card (made with
        // force_new) leaves the entry of the row it points at.
        d.deleted_in_batch(&a, 10);
        d.deleted_in_batch(&b, 21);
        d.deleted_in_batch(&[3u8; 7], 30); // not a fingerprint: ignored
        d.commit();
        assert_eq!(
            (d.get(&a, none), d.get(&b, none), d.len()),
            (None, Some(20), 1)
        );
    }

    #[test]
    fn one_card_of_several_subjects_keeps_a_row_per_subject() {
        let mut d = DedupIndex::default();
        let (none, alice, bob) = (d.tag(None), d.tag(Some("alice")), d.tag(Some("bob")));
        assert!(none != alice && alice != bob && none != bob);
        let fp = [7u8; FINGERPRINT_LEN];
        d.insert(fp, alice, 1);
        d.insert(fp, bob, 2);
        d.insert(fp, none, 3);
        d.insert(fp, bob, 4); // a force_new duplicate: the first row stays
        assert_eq!(
            (
                d.get(&fp, alice),
                d.get(&fp, bob),
                d.get(&fp, none),
                d.len()
            ),
            (Some(1), Some(2), Some(3), 3)
        );
        // The first subject's row goes: the others stay findable.
        d.deleted_in_batch(&fp, 1);
        d.commit();
        assert_eq!(
            (
                d.get(&fp, alice),
                d.get(&fp, bob),
                d.get(&fp, none),
                d.len()
            ),
            (None, Some(2), Some(3), 2)
        );
        d.remove(&fp, none);
        d.remove(&fp, bob);
        assert_eq!((d.get(&fp, bob), d.len()), (None, 0));
        assert!(d.more.is_empty(), "no empty list is left behind");
    }
}
