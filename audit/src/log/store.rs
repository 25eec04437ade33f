//! The storage seam of the log's write path: what the chain, checkpoint signing
//! and retention need from a database, and nothing else.
//!
//! The chain logic (sequence numbers, the canonical encoding, hashing, what a
//! checkpoint or a prune record says and its signature) lives in [`AuditChain`]
//! and [`prune`]; an engine only stores and finds rows. SQLite's implementation
//! is in `sqlite.rs` (for `rusqlite::Connection` and `Transaction`); another
//! engine implements [`LogStore`] and [`LogTx`] for its own transaction type.
//!
//! Every method runs inside the caller's transaction: none begins, commits or
//! rolls back, so an event commits atomically with the change it records.
//!
//! [`AuditChain`]: super::AuditChain
//! [`prune`]: super::prune
use super::checkpoint::Checkpoint;
use super::encoding::ChainHash;
use super::error::AuditError;
use super::event::{NewEvent, time_ns};
use super::keys::PublicKey;
use super::prune::PruneRecord;
use super::verify::VerifyReport;

/// What an insert keyed by a number (an event's `seq`, a checkpoint's `id`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// The row was written.
    Done,
    /// The key is taken (another writer got there first) or the engine refused
    /// the row by a constraint: nothing was written and the transaction can go on.
    /// The chain then reloads its head and tries once more.
    Taken,
}

/// One row of `audit_events` as the chain hands it to the store.
#[derive(Clone, Copy, Debug)]
pub struct EventRow<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// The event.
    pub event: &'a NewEvent,
    /// The hash of event `seq - 1` (or of the prune record's start, or genesis).
    pub prev_hash: ChainHash,
    /// `SHA-256(prev_hash ‖ canonical encoding)`.
    pub hash: ChainHash,
}

impl<'a> EventRow<'a> {
    /// The `time_ns` column: nanoseconds since the Unix epoch, UTC.
    pub fn time_ns(&self) -> Result<i64, AuditError> {
        time_ns(self.event.time)
    }

    /// The text columns in schema order: `actor, actor_fp, action, tenant,
    /// token, purpose, outcome, code, request_id, peer, details`.
    pub fn text_columns(&self) -> [Option<&'a str>; 11] {
        self.event.text_columns()
    }
}

/// Reading where the log stands (what [`super::AuditChain::load`] needs).
pub trait LogStore {
    /// The sequence number and hash of the last event, if the log holds any.
    fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError>;

    /// `(first_seq, prev_hash)` of the latest prune record (highest id), if any:
    /// where an emptied log goes on.
    fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError>;

    /// The latest checkpoint (highest id), if any, without checking it.
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError>;

    /// The highest event seq (`None` for no event) and the highest checkpoint id
    /// (0 for none): cheap, asked on every idle tick.
    fn log_end(&self) -> Result<(Option<u64>, u64), AuditError>;
}

/// Writing, inside the caller's transaction (what appending, signing
/// checkpoints and retention need).
pub trait LogTx: LogStore {
    /// Stores one event row; [`Insert::Taken`] if its `seq` is already used.
    fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError>;

    /// Stores consecutive event rows (in seq order) at once; [`Insert::Taken`]
    /// if nothing was written because the first seq is used. Some but not all
    /// written is [`AuditError::Conflict`]: the caller rolls back. The default
    /// inserts them one by one; an engine with a round trip per statement
    /// (PostgreSQL) writes them in one.
    fn insert_events(&self, rows: &[EventRow<'_>]) -> Result<Insert, AuditError> {
        for (i, row) in rows.iter().enumerate() {
            if self.insert_event(row)? == Insert::Taken {
                return if i == 0 {
                    Ok(Insert::Taken)
                } else {
                    Err(AuditError::Conflict)
                };
            }
        }
        Ok(Insert::Done)
    }

    /// Stores a signed checkpoint; [`Insert::Taken`] if its `id` is already used.
    fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<Insert, AuditError>;

    /// The lowest seq of an event whose `time_ns` is at or after `time_ns`.
    fn first_event_since(&self, time_ns: i64) -> Result<Option<u64>, AuditError>;

    /// Where the kept log starts: the highest `first_seq` of any prune record,
    /// 1 if never pruned.
    fn kept_from(&self) -> Result<u64, AuditError>;

    /// The checkpoint with the highest `seq` (then highest `id`) in `lo..=hi`;
    /// `None` if there is none or it cannot be decoded.
    fn newest_checkpoint_between(&self, lo: u64, hi: u64)
    -> Result<Option<Checkpoint>, AuditError>;

    /// Verifies the stored log with `key` up to event `seq` (before a prune
    /// deletes those events: a broken log is kept as evidence).
    fn verify_through(&self, key: &PublicKey, seq: u64) -> Result<VerifyReport, AuditError>;

    /// Deletes every event with a seq at or below `seq`; returns how many.
    fn delete_events_through(&self, seq: u64) -> Result<u64, AuditError>;

    /// The id the next prune record gets (highest id + 1, 1 for the first).
    fn next_prune_id(&self) -> Result<u64, AuditError>;

    /// Stores a signed prune record.
    fn insert_prune(&self, record: &PruneRecord) -> Result<(), AuditError>;
}

#[cfg(test)]
mod tests {
    //! The seam carries everything the chain needs: a store that is not SQLite
    //! (rows in `Vec`s) takes the chain, its checkpoints and a prune, and what it
    //! received verifies once written into SQLite.
    use std::cell::RefCell;

    use rusqlite::Connection;
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::log::{
        Action, Actor, AuditChain, DEFAULT_RETENTION, Outcome, SigningKey, migrate, prune, verify,
    };

    #[derive(Default)]
    struct MemLog {
        events: RefCell<Vec<(u64, NewEvent, ChainHash, ChainHash)>>,
        checkpoints: RefCell<Vec<Checkpoint>>,
        prunes: RefCell<Vec<PruneRecord>>,
    }

    impl MemLog {
        /// Everything it holds, written as rows into a fresh SQLite log.
        fn to_sqlite(&self) -> Connection {
            let conn = Connection::open_in_memory().unwrap();
            migrate(&conn).unwrap();
            for (seq, event, prev_hash, hash) in self.events.borrow().iter() {
                let row = EventRow {
                    seq: *seq,
                    event,
                    prev_hash: *prev_hash,
                    hash: *hash,
                };
                assert_eq!(conn.insert_event(&row).unwrap(), Insert::Done);
            }
            for cp in self.checkpoints.borrow().iter() {
                assert_eq!(conn.insert_checkpoint(cp).unwrap(), Insert::Done);
            }
            for p in self.prunes.borrow().iter() {
                conn.insert_prune(p).unwrap();
            }
            conn
        }
    }

    impl LogStore for MemLog {
        fn last_event(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
            Ok(self.events.borrow().last().map(|e| (e.0, e.3)))
        }
        fn last_prune(&self) -> Result<Option<(u64, ChainHash)>, AuditError> {
            Ok(self
                .prunes
                .borrow()
                .last()
                .map(|p| (p.first_seq, p.prev_hash)))
        }
        fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
            Ok(self.checkpoints.borrow().last().cloned())
        }
        fn log_end(&self) -> Result<(Option<u64>, u64), AuditError> {
            let cp = self.checkpoints.borrow().last().map_or(0, |c| c.id);
            Ok((self.events.borrow().last().map(|e| e.0), cp))
        }
    }

    impl LogTx for MemLog {
        fn insert_event(&self, row: &EventRow<'_>) -> Result<Insert, AuditError> {
            let mut events = self.events.borrow_mut();
            if events.iter().any(|e| e.0 == row.seq) {
                return Ok(Insert::Taken);
            }
            events.push((row.seq, row.event.clone(), row.prev_hash, row.hash));
            Ok(Insert::Done)
        }
        fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<Insert, AuditError> {
            let mut cps = self.checkpoints.borrow_mut();
            if cps.iter().any(|c| c.id == cp.id) {
                return Ok(Insert::Taken);
            }
            cps.push(cp.clone());
            Ok(Insert::Done)
        }
        fn first_event_since(&self, t: i64) -> Result<Option<u64>, AuditError> {
            let events = self.events.borrow();
            let young = events.iter().filter(|e| time_ns(e.1.time).unwrap() >= t);
            Ok(young.map(|e| e.0).min())
        }
        fn kept_from(&self) -> Result<u64, AuditError> {
            Ok(self
                .prunes
                .borrow()
                .iter()
                .map(|p| p.first_seq)
                .max()
                .unwrap_or(1))
        }
        fn newest_checkpoint_between(
            &self,
            lo: u64,
            hi: u64,
        ) -> Result<Option<Checkpoint>, AuditError> {
            let cps = self.checkpoints.borrow();
            let inside = cps.iter().filter(|c| (lo..=hi).contains(&c.seq));
            Ok(inside.max_by_key(|c| (c.seq, c.id)).cloned())
        }
        fn verify_through(&self, key: &PublicKey, seq: u64) -> Result<VerifyReport, AuditError> {
            // The route another engine takes too: verification runs over a copy.
            self.to_sqlite().verify_through(key, seq)
        }
        fn delete_events_through(&self, seq: u64) -> Result<u64, AuditError> {
            let mut events = self.events.borrow_mut();
            let before = events.len();
            events.retain(|e| e.0 > seq);
            Ok(u64::try_from(before - events.len()).unwrap())
        }
        fn next_prune_id(&self) -> Result<u64, AuditError> {
            Ok(self.prunes.borrow().last().map_or(1, |p| p.id + 1))
        }
        fn insert_prune(&self, record: &PruneRecord) -> Result<(), AuditError> {
            self.prunes.borrow_mut().push(record.clone());
            Ok(())
        }
    }

    fn event(t: OffsetDateTime, i: u32) -> NewEvent {
        NewEvent::new(
            t,
            Actor::client("storefront", "ab"),
            Action::Detokenize,
            Outcome::Success,
        )
        .with_tenant("shop")
        .with_token(format!("tok_{i}"))
        .with_purpose("refund")
        .with_peer("127.0.0.1:1")
    }

    #[test]
    fn a_store_that_is_not_sqlite_carries_the_whole_write_path() {
        let key = SigningKey::from_seed(&[7; 32]).unwrap();
        let public = key.public_key();
        let mem = MemLog::default();
        let now = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let old = now - Duration::days(400);

        let mut chain = AuditChain::load(&mem).unwrap();
        assert_eq!(chain.snapshot().next_seq(), 1);
        chain.checkpoint(&mem, &key, old).unwrap(); // #1, as the vault signs at creation
        for i in 0..5 {
            chain.append(&mem, &event(old, i)).unwrap();
        }
        chain.checkpoint(&mem, &key, old).unwrap();
        assert!(chain.is_current(&mem).unwrap());

        // Another writer appends and signs behind the chain's back: the store says
        // the seq and the id are taken, the chain reloads and goes on after them.
        let mut other = AuditChain::load(&mem).unwrap();
        other.append(&mem, &event(now, 100)).unwrap();
        other.checkpoint(&mem, &key, now).unwrap();
        assert!(!chain.is_current(&mem).unwrap());
        assert_eq!(chain.append(&mem, &event(now, 5)).unwrap(), 7);
        for i in 6..9 {
            chain.append(&mem, &event(now, i)).unwrap();
        }
        let cp = chain.checkpoint(&mem, &key, now).unwrap();
        assert_eq!((cp.id, cp.seq), (4, 10));
        assert!(chain.is_current(&mem).unwrap());

        // What the store received verifies in SQLite.
        let report = verify(&mem.to_sqlite(), &public, Some(&cp)).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.events, report.checkpoints), (10, 4));

        // Retention through the seam: the five old events go, with a signed record.
        let pruned = prune(&mem, &key, now, DEFAULT_RETENTION).unwrap();
        assert_eq!(pruned.deleted, 5);
        let record = pruned.record.unwrap();
        assert_eq!((record.first_seq, record.checkpoint_id), (6, 2));
        record.verify(&public).unwrap();
        let appended = chain.append(&mem, &event(now, 9)).unwrap();
        let last = chain.checkpoint(&mem, &key, now).unwrap();
        assert_eq!((appended, last.seq), (11, 11));

        let report = verify(&mem.to_sqlite(), &public, Some(&last)).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.first_seq, report.events, report.prunes), (6, 6, 1));

        // A chain loaded from the store alone ends where the writer's does.
        let reloaded = AuditChain::load(&mem).unwrap();
        assert_eq!(reloaded.snapshot(), chain.snapshot());

        // And the SQLite store gives the same head for the same rows.
        let sqlite = AuditChain::load(&mem.to_sqlite()).unwrap();
        assert_eq!(sqlite.snapshot(), chain.snapshot());
    }
}
