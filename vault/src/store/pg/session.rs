//! A node's PostgreSQL connection as the store's handles use it: one pooled
//! client, transactions run as `BEGIN` … `COMMIT` on it (so a handle borrows the
//! client only for each statement), the advisory locks that take the place of
//! SQLite's write lock, and the one place the audit log is reached ([`PgConn::audit`]).
//!
//! Locks (transaction-level, released by `COMMIT` or `ROLLBACK`):
//! - every writer batch takes [`KEY_LOCK`] shared; a command that changes keys
//!   (and every admin transaction) takes it exclusively, so no batch that seals
//!   interleaves with a key change: a batch sees the active key it checks at its
//!   start until it commits;
//! - a tokenize takes a lock on the card's keyed fingerprint (two 32-bit keys, a
//!   key space apart from the single 64-bit keys above) before it looks the card
//!   up, so two nodes tokenizing one card at once make one row: the second waits
//!   for the first's commit and then finds its row;
//! - an upkeep task (`store::Upkeep`) has a lock of its own: a round of a
//!   periodic one is claimed with `pg_try_advisory_xact_lock`, `keys rewrap` holds
//!   it for its run with `pg_try_advisory_lock` (session level: released by the
//!   server when the connection closes).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use panvault_audit::log::{AuditError, MAX_NODE_LEN, NodeId};

use super::audit::PendingEvent;
use super::cards::{PendingCard, PgCardRow};
use super::{CachingClient, PgError, PgLog, PgPool, PooledClient};
use crate::store::StoreError;

/// The advisory lock between writer batches (shared) and key changes (exclusive): "PNVK".
pub(crate) const KEY_LOCK: i64 = 0x504E_564B;

/// `lock_not_available`: a `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// One client of the pool, used by one handle at a time.
pub(crate) struct PgConn {
    pool: Option<Arc<PgPool>>,
    /// Always `Some` until dropped (see `Drop`).
    client: RefCell<Option<PooledClient>>,
    /// A statement failed since the transaction began: PostgreSQL has aborted
    /// it, and its `COMMIT` would quietly roll back.
    failed: Cell<bool>,
    /// The open transaction's id (`txid_current()`, read with `BEGIN`): when the
    /// answer to its `COMMIT` is lost, a fresh connection asks the server
    /// whether it committed (`txid_status`), so callers hear the truth.
    xid: Cell<Option<i64>>,
    /// The open writer batch's look-ups and new rows (see [`Batch`]).
    batch: RefCell<Batch>,
    /// The open writer batch's audit events, not inserted yet.
    events: RefCell<Vec<PendingEvent>>,
}

/// What a writer batch keeps on its connection so that its jobs cost a few round
/// trips together rather than several each (a node's writer runs its jobs one
/// after the other on one connection, so every round trip of a job delays the
/// whole batch):
/// - the look-ups the jobs announced, made with `BEGIN` ([`PgConn::begin_batch`]):
///   every card lock in a fixed order (two nodes' batches never wait on each
///   other in a cycle), then the dedup rows of those cards, the liveness of the
///   rows the jobs will re-check, and the active key version;
/// - new card rows, audit events and encryption counts, written together
///   before the next statement that could read them and before `COMMIT`
///   ([`PgConn::flush`]).
///
/// A job's own change of a card row makes the look-ups it could affect stale:
/// a queued row drops its card's dedup rows, any other change or delete of a
/// card drops them all ([`PgConn::forget_cards`]); a look-up not kept goes to the
/// database as before.
#[derive(Debug, Default)]
struct Batch {
    /// A writer batch is open: new cards and events may wait.
    open: bool,
    /// The card locks this transaction holds.
    locked: HashSet<(i32, i32)>,
    /// Every row (any expiry) of each announced card, by (tenant, fingerprint).
    rows: HashMap<(String, Vec<u8>), Vec<PgCardRow>>,
    /// Each announced row id: its token, tenant and expiry, `None` if gone.
    live: HashMap<i64, Option<(String, String, Option<i64>)>>,
    /// New card rows, not inserted yet.
    cards: Vec<PendingCard>,
    /// Records sealed per key version, not counted yet.
    encryptions: Vec<(i64, i64)>,
    /// The active key version read when the batch began (`Some(None)`: none).
    active: Option<Option<i64>>,
    /// Each announced card read, by (tenant, token): its row, `None` if none.
    by_token: HashMap<(String, String), Option<PgCardRow>>,
}

/// The advisory lock key of card `fingerprint`: its first 8 bytes as two 32-bit
/// keys (a key space apart from the single 64-bit keys of the other locks).
fn card_lock_key(fingerprint: &[u8]) -> (i32, i32) {
    let mut k = [0u8; 8];
    for (d, s) in k.iter_mut().zip(fingerprint) {
        *d = *s;
    }
    let [a, b, c, d, e, f, g, h] = k;
    (
        i32::from_be_bytes([a, b, c, d]),
        i32::from_be_bytes([e, f, g, h]),
    )
}

impl PgConn {
    /// A client of `pool`, which also replaces it when the server closed it.
    pub(crate) fn from_pool(pool: Arc<PgPool>) -> Result<PgConn, StoreError> {
        let client = blocking(|| pool.get())?;
        Ok(PgConn {
            pool: Some(pool),
            client: RefCell::new(Some(client)),
            failed: Cell::new(false),
            xid: Cell::new(None),
            batch: RefCell::new(Batch::default()),
            events: RefCell::new(Vec::new()),
        })
    }

    /// Replaces a client the server closed (a restart, a failover) with a fresh
    /// one from the pool; a live client stays.
    pub(crate) fn reconnect_if_closed(&self) -> Result<(), StoreError> {
        let closed = self
            .client
            .try_borrow()
            .map(|c| c.as_ref().is_none_or(|c| c.is_closed()))
            .unwrap_or(false);
        if closed && let Some(pool) = &self.pool {
            let fresh = blocking(|| pool.get())?;
            let old = self
                .client
                .try_borrow_mut()
                .map_err(|_| in_use())?
                .replace(fresh);
            blocking(|| drop(old));
        }
        Ok(())
    }

    /// Runs `f` on the client, noting a failure (the transaction is aborted).
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        self.flush()?;
        self.run_cached(|c| f(c))
    }

    /// The audit log on this client, inside its open transaction. The only place
    /// the vault builds a [`PgLog`].
    pub(crate) fn audit<T>(
        &self,
        f: impl FnOnce(&PgLog<'_, postgres::Client>) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        self.flush().map_err(|e| AuditError::Storage(Box::new(e)))?;
        self.audit_inner(false, f)
    }

    /// As [`PgConn::audit`] for appending events: in a writer batch their rows
    /// wait for [`PgConn::flush`] rather than being inserted one by one.
    pub(crate) fn audit_append<T>(
        &self,
        f: impl FnOnce(&PgLog<'_, postgres::Client>) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let open = self.batch.try_borrow().is_ok_and(|b| b.open);
        self.audit_inner(open, f)
    }

    fn audit_inner<T>(
        &self,
        defer: bool,
        f: impl FnOnce(&PgLog<'_, postgres::Client>) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let in_use = || AuditError::Storage(Box::new(in_use()));
        let mut guard = self.client.try_borrow_mut().map_err(|_| in_use())?;
        let client: &mut postgres::Client = guard.as_mut().ok_or_else(in_use)?;
        let r = blocking(|| {
            let log = if defer {
                PgLog::deferring(client, node_id(), &self.events)
            } else {
                PgLog::new(client, node_id())
            };
            f(&log)
        });
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }

    /// As [`PgConn::run`], on the client itself, whose prepared statements `f`
    /// may use ([`CachingClient::prepared`]).
    pub(crate) fn run_prepared<T>(
        &self,
        f: impl FnOnce(&mut CachingClient) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        self.flush()?;
        self.run_cached(f)
    }

    /// Runs `f` on the client itself, whose prepared statements it may use;
    /// nothing waiting is flushed first.
    fn run_cached<T>(
        &self,
        f: impl FnOnce(&mut CachingClient) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.try_borrow_mut().map_err(|_| in_use())?;
        let client = guard.as_mut().ok_or_else(in_use)?;
        let r = blocking(|| f(client));
        if r.is_err() {
            self.failed.set(true);
        }
        r.map_err(StoreError::from)
    }

    /// `BEGIN` of a writer batch, in one round trip (`batch::begin_sql`): the key
    /// lock shared (waiting at most `wait`, then [`StoreError::LockHeld`]), the
    /// transaction id, then the locks of the announced cards (`cards`: tenant
    /// and keyed fingerprint) in key order, their rows, the liveness of rows
    /// `live` and the active key version, kept for the batch's jobs ([`Batch`]).
    /// A tenant that cannot be written into the statement (never one the API
    /// accepts) leaves its cards to be looked up by each job.
    pub(crate) fn begin_batch(
        &self,
        wait: Duration,
        cards: &[(&str, &[u8])],
        live: &[i64],
        reads: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        self.failed.set(false);
        self.close_batch();
        self.xid.set(None);
        let mut wanted: Vec<(&str, &[u8])> = cards
            .iter()
            .copied()
            .filter(|(t, _)| super::batch::literal_safe(t))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut keys: Vec<(i32, i32)> = wanted.iter().map(|(_, fp)| card_lock_key(fp)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut ids = live.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut reads: Vec<(&str, &str)> = reads
            .iter()
            .copied()
            .filter(|(t, k)| super::batch::literal_safe(t) && super::batch::literal_safe(k))
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        let begun = super::batch::begin_sql(KEY_LOCK, ms, &keys, &wanted, &ids, &reads)
            .map_err(StoreError::from)
            .and_then(|sql| self.run_cached(|c| Ok(c.simple_query(&sql)?)))
            .and_then(|messages| super::batch::parse_begin(&messages).map_err(StoreError::from));
        let begun = match begun {
            Ok(b) => b,
            Err(e) => {
                self.rollback();
                return Err(match &e {
                    StoreError::Postgres { code: Some(c), .. } if c == LOCK_NOT_AVAILABLE => {
                        StoreError::LockHeld(wait.as_secs())
                    }
                    _ => e,
                });
            }
        };
        self.xid.set(begun.xid);
        let mut b = self.batch.try_borrow_mut().map_err(|_| in_use())?;
        *b = Batch {
            open: true,
            ..Batch::default()
        };
        b.locked.extend(keys);
        for (tenant, fp) in wanted {
            b.rows.entry((tenant.to_owned(), fp.to_vec())).or_default();
        }
        for row in begun.rows {
            b.rows
                .entry((row.tenant.clone(), row.fingerprint.clone()))
                .or_default()
                .push(row);
        }
        for id in ids {
            b.live.insert(id, None);
        }
        for (id, token, tenant, expires_at) in begun.live {
            b.live.insert(id, Some((token, tenant, expires_at)));
        }
        b.active = Some(begun.active);
        for (tenant, token) in reads {
            b.by_token
                .insert((tenant.to_owned(), token.to_owned()), None);
        }
        for row in begun.by_token {
            b.by_token
                .insert((row.tenant.clone(), row.token.clone()), Some(row));
        }
        Ok(())
    }

    /// Forgets the batch (after `COMMIT` or `ROLLBACK`): nothing waits any more.
    fn close_batch(&self) {
        if let Ok(mut b) = self.batch.try_borrow_mut() {
            *b = Batch::default();
        }
        if let Ok(mut e) = self.events.try_borrow_mut() {
            e.clear();
        }
    }

    /// Writes what waits (new card rows, audit events, encryption counts) in one
    /// statement (`batch::FLUSH`), and checks every row was written: a token or
    /// an event's sequence number already taken fails the batch.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let (cards, encryptions) = {
            let mut b = self.batch.try_borrow_mut().map_err(|_| in_use())?;
            if !b.open {
                return Ok(());
            }
            (
                std::mem::take(&mut b.cards),
                std::mem::take(&mut b.encryptions),
            )
        };
        let events = std::mem::take(&mut *self.events.try_borrow_mut().map_err(|_| in_use())?);
        if cards.is_empty() && events.is_empty() && encryptions.is_empty() {
            return Ok(());
        }
        let (versions, counts): (Vec<i64>, Vec<i64>) = encryptions.into_iter().unzip();
        let rows = super::audit::event_rows(&events);
        let written = self.run_cached(|c| {
            let stmt = c.prepared(super::batch::FLUSH)?;
            super::cards::with_card_params(&cards, |card_params| {
                super::audit::with_event_params(&node_id(), &rows, |event_params| {
                    let mut params = Vec::with_capacity(33);
                    params.extend_from_slice(card_params);
                    params.extend_from_slice(event_params);
                    params.push(&versions);
                    params.push(&counts);
                    c.query_one(&stmt, &params)
                        .map_err(|e| AuditError::Storage(Box::new(e)))
                })
            })
            .map_err(|e| match e {
                AuditError::Storage(s) => match s.downcast::<postgres::Error>() {
                    Ok(db) => PgError::Db(*db),
                    Err(other) => PgError::Foreign(other.to_string()),
                },
                other => PgError::Foreign(format!("audit events could not be written: {other}")),
            })
            .and_then(|row| {
                Ok((
                    row.try_get::<_, i64>(0)?,
                    row.try_get::<_, i64>(1)?,
                    row.try_get::<_, i64>(2)?,
                ))
            })
        })?;
        let want = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if written != (want(cards.len()), want(events.len()), want(versions.len())) {
            self.failed.set(true);
            return Err(StoreError::Unavailable(
                "a token or audit sequence number of the batch was already taken; \
                 the batch is rolled back",
            ));
        }
        Ok(())
    }

    /// Counts `n` more records sealed under key `version` with the batch's other
    /// writes (`true`); outside a writer batch `false`, and nothing is counted.
    pub(crate) fn queue_encryptions(&self, version: u32, n: i64) -> Result<bool, StoreError> {
        let mut b = self.batch.try_borrow_mut().map_err(|_| in_use())?;
        if !b.open {
            return Ok(false);
        }
        b.encryptions.push((i64::from(version), n));
        Ok(true)
    }

    /// The active key version the batch read when it began (`None`: not read,
    /// ask the database).
    pub(crate) fn prefetched_active_version(&self) -> Option<Result<Option<u32>, StoreError>> {
        let b = self.batch.try_borrow().ok()?;
        let active = b.active?;
        Some(
            active
                .map(|v| {
                    u32::try_from(v).map_err(|_| {
                        StoreError::from(PgError::Foreign(
                            "data_keys.version holds a value the vault never writes".into(),
                        ))
                    })
                })
                .transpose(),
        )
    }

    /// The dedup row of card `fingerprint` for `subject_hash` in `tenant` if the
    /// batch looked it up ([`PgConn::prefetch`]): the oldest unexpired at `now`.
    /// `None`: not looked up (ask the database).
    pub(crate) fn prefetched_dedup_row(
        &self,
        tenant: &str,
        fingerprint: &[u8],
        subject_hash: Option<&[u8]>,
        now: i64,
    ) -> Option<Option<PgCardRow>> {
        let b = self.batch.try_borrow().ok()?;
        let rows = b.rows.get(&(tenant.to_owned(), fingerprint.to_vec()))?;
        Some(
            rows.iter()
                .find(|r| {
                    r.subject_hash.as_deref() == subject_hash
                        && r.expires_at.is_none_or(|e| e > now)
                })
                .cloned(),
        )
    }

    /// Whether row `id` holds `token` of `tenant` unexpired at `now`, if the batch
    /// looked it up. `None`: not looked up (ask the database).
    pub(crate) fn prefetched_live(
        &self,
        id: i64,
        token: &str,
        tenant: &str,
        now: i64,
    ) -> Option<bool> {
        let b = self.batch.try_borrow().ok()?;
        let found = b.live.get(&id)?;
        Some(
            found
                .as_ref()
                .is_some_and(|(t, n, e)| t == token && n == tenant && e.is_none_or(|e| e > now)),
        )
    }

    /// Queues `card` for the batch's one insert (a writer batch) and answers
    /// `true`; outside a writer batch answers `false` and queues nothing.
    pub(crate) fn queue_card(&self, card: PendingCard) -> Result<bool, StoreError> {
        let mut b = self.batch.try_borrow_mut().map_err(|_| in_use())?;
        if !b.open {
            return Ok(false);
        }
        let (tenant, fp) = card.dedup_key();
        b.rows.remove(&(tenant.to_owned(), fp.to_vec()));
        b.cards.push(card);
        Ok(true)
    }

    /// Forgets every look-up of the batch: a card row changed or was deleted.
    pub(crate) fn forget_cards(&self) {
        if let Ok(mut b) = self.batch.try_borrow_mut() {
            b.rows.clear();
            b.live.clear();
            b.by_token.clear();
        }
    }

    /// The row of `token` in `tenant` if the batch read it when it began.
    /// `None`: not read (ask the database).
    pub(crate) fn prefetched_by_token(
        &self,
        token: &str,
        tenant: &str,
    ) -> Option<Option<PgCardRow>> {
        let b = self.batch.try_borrow().ok()?;
        b.by_token
            .get(&(tenant.to_owned(), token.to_owned()))
            .cloned()
    }

    /// `BEGIN`, then the key lock: shared (a writer batch), exclusive (a key
    /// change or an admin transaction), or none. `wait` bounds the wait for an
    /// exclusive lock ([`StoreError::LockHeld`] after it).
    pub(crate) fn begin(&self, lock: KeyLock, wait: Option<Duration>) -> Result<(), StoreError> {
        self.failed.set(false);
        self.close_batch();
        // One round trip: `BEGIN`, the bounded wait, the lock.
        let mut sql = String::from("BEGIN");
        if let Some(w) = wait {
            let ms = i32::try_from(w.as_millis()).unwrap_or(i32::MAX).max(1);
            sql.push_str(&format!("; SET LOCAL lock_timeout = {ms}"));
        }
        match lock {
            KeyLock::None => {}
            KeyLock::Exclusive => {
                sql.push_str(&format!("; SELECT pg_advisory_xact_lock({KEY_LOCK})"));
            }
        }
        if wait.is_some() {
            sql.push_str("; SET LOCAL lock_timeout = 0");
        }
        sql.push_str("; SELECT txid_current()");
        self.xid.set(None);
        let locked = self.run(|c| Ok(c.simple_query(&sql)?)).map(|messages| {
            let xid = messages.iter().rev().find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                _ => None,
            });
            self.xid.set(xid);
        });
        if let Err(e) = locked {
            self.rollback();
            return Err(match (&e, wait) {
                (StoreError::Postgres { code: Some(c), .. }, Some(w))
                    if c == LOCK_NOT_AVAILABLE =>
                {
                    StoreError::LockHeld(w.as_secs())
                }
                _ => e,
            });
        }
        Ok(())
    }

    /// `COMMIT` (durable: `synchronous_commit` is left on). A transaction in which
    /// a statement failed is rolled back instead, and says so. A `COMMIT` whose
    /// answer never came (the connection broke) may or may not have committed:
    /// it is an error, never a success.
    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        if self.failed.get() {
            self.rollback();
            return Err(StoreError::Unavailable(
                "a statement of the transaction failed; it was rolled back",
            ));
        }
        if let Err(e) = self.flush() {
            self.rollback();
            return Err(e);
        }
        self.close_batch();
        let r = self.run(|c| Ok(c.batch_execute("COMMIT")?));
        let xid = self.xid.take();
        let Err(e) = r else {
            return Ok(());
        };
        // The connection broke during COMMIT (or the server ended the session,
        // e.g. `pg_terminate_backend`, whose FATAL can come after the commit is
        // durable): ask a fresh connection what became of the transaction.
        let StoreError::Postgres {
            connection: true,
            source,
            ..
        } = &e
        else {
            return Err(e);
        };
        match xid.map(|x| self.commit_status(x)) {
            Some(Some(true)) => Ok(()),
            Some(Some(false)) => Err(StoreError::Postgres {
                reason: "the connection broke during COMMIT; the transaction did not commit".into(),
                code: None,
                connection: true,
                source: source.clone(),
            }),
            _ => Err(StoreError::Postgres {
                reason: "the connection broke during COMMIT: whether the transaction \
                         committed is unknown"
                    .into(),
                code: None,
                connection: true,
                source: source.clone(),
            }),
        }
    }

    /// Whether transaction `xid` committed, asked on a fresh connection after
    /// the answer to its `COMMIT` was lost: `Some(true|false)` once the server
    /// knows, `None` when it cannot be asked (it is down) within about a second.
    fn commit_status(&self, xid: i64) -> Option<bool> {
        for _ in 0..10 {
            if self.reconnect_if_closed().is_ok() {
                let status = self.run(|c| {
                    Ok(c.query_one("SELECT txid_status($1)", &[&xid])?
                        .try_get::<_, Option<String>>(0)?)
                });
                self.failed.set(false);
                match status.ok().flatten().as_deref() {
                    Some("committed") => return Some(true),
                    Some("aborted") => return Some(false),
                    // Still "in progress" (the server is finishing it), or unknown.
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// `ROLLBACK`, best effort (a broken connection has rolled back already).
    pub(crate) fn rollback(&self) {
        self.close_batch();
        if let Ok(mut c) = self.client.try_borrow_mut()
            && let Some(c) = c.as_mut()
        {
            let _ = blocking(|| c.batch_execute("ROLLBACK"));
        }
        self.failed.set(false);
    }

    /// Takes the transaction's lock on card `fingerprint` (see the module).
    pub(crate) fn lock_card(&self, fingerprint: &[u8]) -> Result<(), StoreError> {
        let key = card_lock_key(fingerprint);
        if self
            .batch
            .try_borrow()
            .is_ok_and(|b| b.locked.contains(&key))
        {
            return Ok(());
        }
        let (hi, lo) = key;
        self.run(|c| {
            c.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&hi, &lo])?;
            Ok(())
        })?;
        if let Ok(mut b) = self.batch.try_borrow_mut()
            && b.open
        {
            b.locked.insert(key);
        }
        Ok(())
    }

    /// `pg_try_advisory_xact_lock` on `task`'s lock: held until the transaction
    /// ends; false when another session holds it.
    pub(crate) fn try_task_xact_lock(
        &self,
        task: crate::store::Upkeep,
    ) -> Result<bool, StoreError> {
        let key = task.lock_key();
        self.run(|c| {
            Ok(
                c.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])?
                    .try_get(0)?,
            )
        })
    }

    /// `pg_try_advisory_lock` on `task`'s lock: held by this connection until
    /// [`PgConn::task_unlock`] or until the connection closes (a killed process
    /// leaves nothing held); false when another session holds it.
    pub(crate) fn try_task_lock(&self, task: crate::store::Upkeep) -> Result<bool, StoreError> {
        let key = task.lock_key();
        self.run(|c| {
            Ok(c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
                .try_get(0)?)
        })
    }

    /// Releases what [`PgConn::try_task_lock`] took.
    pub(crate) fn task_unlock(&self, task: crate::store::Upkeep) -> Result<(), StoreError> {
        let key = task.lock_key();
        self.run(|c| {
            c.query_one("SELECT pg_advisory_unlock($1)", &[&key])?;
            Ok(())
        })
    }

    /// `VACUUM` of the tables deletes leave dead row versions in (outside any
    /// transaction): their space is marked for reuse. What it cannot remove (WAL,
    /// backups, pages not yet reused) stays ciphertext.
    /// Then records `now` in `erasure_requests.vacuumed_at` of every erasure
    /// completed before the `VACUUM` began.
    pub(crate) fn vacuum(&self, now: i64) -> Result<(), StoreError> {
        let ids = self.run(super::erasure::not_vacuumed)?;
        self.run(|c| Ok(c.batch_execute("VACUUM cards, erasure_requests")?))?;
        self.run(|c| super::erasure::mark_vacuumed(c, &ids, now))?;
        Ok(())
    }

    /// `VACUUM` of the held security codes and their window keys after a sweep:
    /// the deleted rows' heap versions are marked for reuse at once rather than
    /// at autovacuum's leisure (the tables are unlogged: no WAL or backup holds
    /// them).
    pub(crate) fn vacuum_cvcs(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.batch_execute("VACUUM held_cvcs, cvc_keys")?))
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // A client the pool discards (closed) is dropped here, and the driver's
        // drop blocks on its runtime: never on an async worker thread as it is.
        let client = self.client.get_mut().take();
        let pool = self.pool.take();
        blocking(|| {
            drop(client);
            // The last handle on a pool closes its idle clients.
            drop(pool);
        });
    }
}

/// Runs `f`, which blocks on the synchronous driver's own runtime: on a worker
/// thread of a multi-threaded tokio runtime (a request handler reading through
/// the pool) it runs in `block_in_place`, which is allowed to; elsewhere (the
/// writer thread, admin commands) as it is. A current-thread runtime cannot host
/// the PostgreSQL engine's blocking calls: use `spawn_blocking` there.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// What a serving process adds to the host name to make its node id
/// ([`name_serving_node`]); unset in admin commands.
static SERVING_SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Marks this process as a serving node, told apart from other nodes on the same
/// host by `suffix` (its listen port): its default node id becomes `HOST-SUFFIX`.
/// Call before the vault is opened; later calls change nothing.
pub fn name_serving_node(suffix: &str) {
    let _ = SERVING_SUFFIX.set(suffix.to_owned());
}

/// This process's node id in the shared audit log (one chain per node): the
/// environment's `PANVAULT_NODE`, else `HOST-PORT` for a serving node and
/// `admin-HOST` for an admin command, lowercased, with anything outside
/// `a-z 0-9 . _ -` as `-`. Two processes writing one chain under load make each
/// other's batches fail, so a serving node holds its id exclusively
/// ([`super::Presence`]) and admin commands never share a node's id.
pub fn node_id() -> NodeId {
    static NODE: std::sync::OnceLock<NodeId> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let raw = std::env::var("PANVAULT_NODE")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                let host = host.trim();
                Some(match SERVING_SUFFIX.get() {
                    Some(suffix) => format!("{host}-{suffix}"),
                    None => format!("admin-{host}"),
                })
            })
            .unwrap_or_default();
        let name: String = raw
            .trim()
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_NODE_LEN)
            .collect();
        NodeId::new(name)
            .unwrap_or_else(|_| NodeId::new("node").unwrap_or_else(|_| unreachable_node()))
    })
    .clone()
}

#[allow(clippy::panic)] // "node" is a valid node id: checked by a test
fn unreachable_node() -> NodeId {
    panic!("\"node\" is not a valid node id")
}

/// Which key lock a transaction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLock {
    /// None (reads, the schema, `init`).
    None,
    /// Exclusive: a key change, an admin transaction.
    Exclusive,
}

fn in_use() -> StoreError {
    StoreError::Unavailable(
        "the PostgreSQL connection is in use by another statement of this handle",
    )
}
