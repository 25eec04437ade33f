//! The handles the service holds: the storage seam. A [`Reader`] reads, a [`Tx`]
//! is a unit of work inside a transaction (the writer's batch, or an admin
//! command's own), a [`Session`] is a write connection owned by one process.
//! Their methods are the domain operations of the vault; the service never sees
//! the engine (SQLite today) underneath. A second engine implements these same
//! methods.

use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use panvault_audit::log::{AuditChain, AuditError, Checkpoint, NewEvent, PruneReport, SigningKey};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::pool::PooledConn;
use super::{
    CardRow, CardShape, CompletedErasure, CvcKeyRow, CvcShape, CvcSweep, DataKeyRow, DeletedCard,
    HeldCvcRow, IdempotencyRow, Inserted, NewCard, NewCvcKey, NewHeldCvc, RequestOverview, SealRow,
    SealedCard, StoreError, WrappedDataKey, cards, cvc, erasure, idempotency, inventory, keys,
    meta, rewrap,
};
use crate::key_state::KeyState;

enum Conn<'a> {
    Borrowed(&'a Connection),
    Pooled(PooledConn<'a>),
    Owned(Connection),
}

/// Read access to the vault's database: a connection of the read pool, or the
/// reading side of a [`Tx`] or a [`Session`].
pub struct Reader<'a> {
    conn: Conn<'a>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

/// A unit of work inside an open transaction: every change it makes commits or
/// rolls back with the transaction's other work (the writer's whole batch, or an
/// admin command's transaction), audit events included. Reads through
/// [`Reader`]'s methods see the transaction's own changes.
pub struct Tx<'a> {
    r: Reader<'a>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

impl<'a> Deref for Tx<'a> {
    type Target = Reader<'a>;
    fn deref(&self) -> &Reader<'a> {
        &self.r
    }
}

impl<'a> Reader<'a> {
    pub(super) fn borrowed(conn: &'a Connection) -> Reader<'a> {
        Reader {
            conn: Conn::Borrowed(conn),
        }
    }

    pub(super) fn pooled(conn: PooledConn<'a>) -> Reader<'a> {
        Reader {
            conn: Conn::Pooled(conn),
        }
    }

    fn c(&self) -> &Connection {
        match &self.conn {
            Conn::Borrowed(c) => c,
            Conn::Pooled(c) => c,
            Conn::Owned(c) => c,
        }
    }
}

impl Reader<'static> {
    /// A read-only connection of its own to the existing vault database at `path`.
    pub fn open(path: &Path) -> Result<Reader<'static>, StoreError> {
        Ok(Reader {
            conn: Conn::Owned(super::open_reader(path)?),
        })
    }
}

impl<'a> Tx<'a> {
    pub(super) fn new(conn: &'a Connection) -> Tx<'a> {
        Tx {
            r: Reader::borrowed(conn),
        }
    }
}

/// Reads.
impl Reader<'_> {
    // --- meta
    pub(crate) fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        meta::get(self.c(), key)
    }
    pub(crate) fn key_epoch(&self) -> Result<Option<String>, StoreError> {
        meta::key_epoch(self.c())
    }

    // --- keys
    pub(crate) fn read_seal(&self) -> Result<Option<SealRow>, StoreError> {
        keys::read_seal(self.c())
    }
    pub(crate) fn active_key_version(&self) -> Result<Option<u32>, StoreError> {
        keys::active_version(self.c())
    }
    pub(crate) fn wrapped_data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        keys::wrapped_data_keys(self.c())
    }
    pub(crate) fn wrapped_data_key_bytes(&self) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        keys::wrapped_data_key_bytes(self.c())
    }
    pub(crate) fn list_data_keys(&self) -> Result<Vec<DataKeyRow>, StoreError> {
        keys::list_data_keys(self.c())
    }
    pub(crate) fn key_state(&self, version: u32) -> Result<Option<KeyState>, StoreError> {
        keys::key_state(self.c(), version)
    }
    pub(crate) fn next_key_version(&self) -> Result<u32, StoreError> {
        keys::next_version(self.c())
    }
    pub(crate) fn records_under(&self, version: u32) -> Result<i64, StoreError> {
        keys::records_under(self.c(), version)
    }
    pub(crate) fn read_aux_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        keys::read_aux_key(self.c(), name)
    }
    pub(crate) fn aux_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        keys::aux_keys(self.c())
    }

    // --- cards
    pub(crate) fn card_by_token(
        &self,
        token: &str,
        tenant: &str,
    ) -> Result<Option<CardRow>, StoreError> {
        cards::by_token(self.c(), token, tenant)
    }
    pub(crate) fn card_is_live(
        &self,
        id: i64,
        token: &str,
        tenant: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        cards::is_live(self.c(), id, token, tenant, now)
    }
    pub(crate) fn live_dedup_row(
        &self,
        id: i64,
        fingerprint: &[u8],
        tenant: &str,
        subject: Option<&str>,
        now: i64,
    ) -> Result<Option<CardRow>, StoreError> {
        cards::live_dedup_row(self.c(), id, fingerprint, tenant, subject, now)
    }
    pub(crate) fn card_count(&self) -> Result<i64, StoreError> {
        cards::count(self.c())
    }
    pub(crate) fn for_each_fingerprint(
        &self,
        f: impl FnMut(i64, Vec<u8>, Option<String>),
    ) -> Result<(), StoreError> {
        cards::for_each_fingerprint(self.c(), f)
    }
    pub(crate) fn count_not_under(&self, version: u32) -> Result<i64, StoreError> {
        rewrap::count_not_under(self.c(), version)
    }
    pub(crate) fn sealed_not_under(
        &self,
        version: u32,
        limit: i64,
    ) -> Result<Vec<SealedCard>, StoreError> {
        rewrap::batch_not_under(self.c(), version, limit)
    }

    // --- retention and erasure
    pub(crate) fn count_past_expiry(&self, cutoff_month: i64, now: i64) -> Result<i64, StoreError> {
        erasure::count_past_expiry(self.c(), cutoff_month, now)
    }
    pub(crate) fn count_past_ttl_only(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<i64, StoreError> {
        erasure::count_past_ttl_only(self.c(), cutoff_month, now)
    }
    pub(crate) fn retention_candidates(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        erasure::retention_candidates(self.c(), cutoff_month, now)
    }
    pub(crate) fn count_open_requests_before(&self, cutoff: i64) -> Result<i64, StoreError> {
        erasure::count_open_requests_before(self.c(), cutoff)
    }
    pub(crate) fn erasure_overview(&self) -> Result<Option<RequestOverview>, StoreError> {
        erasure::request_overview(self.c())
    }

    // --- inventory
    pub(crate) fn count_cards(&self) -> Result<i64, StoreError> {
        inventory::count_cards(self.c())
    }
    pub(crate) fn count_expired_before(&self, cutoff_month: i64) -> Result<i64, StoreError> {
        inventory::count_expired_before(self.c(), cutoff_month)
    }
    pub(crate) fn wrapped_key_names(&self) -> Result<Vec<String>, StoreError> {
        inventory::wrapped_key_names(self.c())
    }
    pub(crate) fn card_shape(&self) -> Result<CardShape, StoreError> {
        inventory::card_shape(self.c())
    }
    /// Cards grouped by token length, with the digits they keep in the clear.
    pub(crate) fn masking_shape(&self) -> Result<Vec<inventory::MaskingShape>, StoreError> {
        inventory::masking_shape(self.c())
    }

    // --- held card security codes
    pub(crate) fn cvc_key_for_window(
        &self,
        window_start: i64,
        ttl_secs: i64,
    ) -> Result<Option<CvcKeyRow>, StoreError> {
        cvc::key_for_window(self.c(), window_start, ttl_secs)
    }
    pub(crate) fn cvc_key(&self, id: i64) -> Result<Option<CvcKeyRow>, StoreError> {
        cvc::key_by_id(self.c(), id)
    }
    pub(crate) fn cvc_keys(&self) -> Result<Vec<CvcKeyRow>, StoreError> {
        cvc::all_keys(self.c())
    }
    pub(crate) fn held_cvc(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<HeldCvcRow>, StoreError> {
        cvc::held(self.c(), tenant, token)
    }
    /// The held codes and their keys as the compliance check sees them (`None`
    /// before the schema had them).
    pub(crate) fn cvc_shape(&self, now: i64) -> Result<Option<CvcShape>, StoreError> {
        cvc::shape(self.c(), now)
    }

    // --- idempotency keys
    pub(crate) fn idempotency_row(
        &self,
        client: &str,
        key_hash: &[u8],
    ) -> Result<Option<IdempotencyRow>, StoreError> {
        idempotency::get(self.c(), client, key_hash)
    }

    // --- audit log
    pub(crate) fn load_audit_chain(&self) -> Result<AuditChain, AuditError> {
        AuditChain::load(self.c())
    }
    pub(crate) fn audit_chain_is_current(&self, chain: &AuditChain) -> Result<bool, AuditError> {
        chain.is_current(self.c())
    }
}

/// Changes, inside the transaction.
impl Tx<'_> {
    // --- meta
    pub(crate) fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        meta::set(self.c(), key, value)
    }
    pub(crate) fn bump_key_epoch(&self) -> Result<(), StoreError> {
        meta::bump_key_epoch(self.c())
    }

    // --- keys
    pub(crate) fn write_seal(&self, seal: &SealRow) -> Result<(), StoreError> {
        keys::write_seal(self.c(), seal)
    }
    pub(crate) fn insert_data_key(
        &self,
        version: u32,
        wrapped: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        keys::insert_data_key(self.c(), version, wrapped, now)
    }
    pub(crate) fn rewrap_data_key(&self, version: u32, wrapped: &[u8]) -> Result<(), StoreError> {
        keys::rewrap_data_key(self.c(), version, wrapped)
    }
    pub(crate) fn set_key_state_where(
        &self,
        from: KeyState,
        to: KeyState,
    ) -> Result<(), StoreError> {
        keys::set_state_where(self.c(), from, to)
    }
    pub(crate) fn mark_key_retired(&self, version: u32, now: i64) -> Result<(), StoreError> {
        keys::mark_retired(self.c(), version, now)
    }
    pub(crate) fn mark_key_destroyed(&self, version: u32, now: i64) -> Result<(), StoreError> {
        keys::mark_destroyed(self.c(), version, now)
    }
    pub(crate) fn insert_aux_key(
        &self,
        name: &str,
        wrapped: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        keys::insert_aux_key(self.c(), name, wrapped, now)
    }
    pub(crate) fn rewrap_aux_key(&self, name: &str, wrapped: &[u8]) -> Result<(), StoreError> {
        keys::rewrap_aux_key(self.c(), name, wrapped)
    }
    pub(crate) fn add_encryptions(&self, version: u32, n: i64) -> Result<(), StoreError> {
        keys::add_encryptions(self.c(), version, n)
    }

    // --- cards
    pub(crate) fn insert_card(&self, card: &NewCard<'_>) -> Result<Inserted, StoreError> {
        cards::insert(self.c(), card)
    }
    pub(crate) fn update_card_terms(
        &self,
        id: i64,
        exp_month: i64,
        exp_year: i64,
        metadata: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        cards::update_terms(self.c(), id, exp_month, exp_year, metadata, expires_at)
    }
    pub(crate) fn update_card_sealed(
        &self,
        id: i64,
        key_version: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError> {
        cards::update_sealed(self.c(), id, key_version, nonce, ciphertext)
    }
    pub(crate) fn rewrap_card(
        &self,
        id: i64,
        old_version: u32,
        key_version: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<usize, StoreError> {
        rewrap::update_sealed(self.c(), id, old_version, key_version, nonce, ciphertext)
    }

    // --- held card security codes
    /// Stores a window's key; false when another writer stored that window's first.
    pub(crate) fn insert_cvc_key(&self, k: &NewCvcKey<'_>) -> Result<bool, StoreError> {
        cvc::insert_key(self.c(), k)
    }
    pub(crate) fn rewrap_cvc_key(&self, id: i64, wrapped: &[u8]) -> Result<(), StoreError> {
        cvc::rewrap_key(self.c(), id, wrapped)
    }
    pub(crate) fn put_held_cvc(&self, c: &NewHeldCvc<'_>) -> Result<(), StoreError> {
        cvc::put_held(self.c(), c)
    }
    /// Deletes and returns the code held for `(tenant, token)`.
    pub(crate) fn take_held_cvc(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<HeldCvcRow>, StoreError> {
        cvc::take_held(self.c(), tenant, token)
    }
    /// Deletes codes past their deadline and keys past their destruction time.
    pub(crate) fn sweep_cvcs(&self, now: i64) -> Result<CvcSweep, StoreError> {
        cvc::sweep(self.c(), now)
    }

    // --- idempotency keys
    pub(crate) fn reserve_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        idempotency::reserve(self.c(), client, key_hash, request_hash, now)
    }
    pub(crate) fn complete_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        status: i64,
        answer: &[u8],
    ) -> Result<bool, StoreError> {
        idempotency::complete(self.c(), client, key_hash, request_hash, status, answer)
    }
    pub(crate) fn release_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
    ) -> Result<(), StoreError> {
        idempotency::release(self.c(), client, key_hash, request_hash)
    }
    pub(crate) fn purge_idempotency(&self, cutoff: i64) -> Result<u64, StoreError> {
        idempotency::purge(self.c(), cutoff)
    }

    // --- deletes: each returns the `(id, fingerprint)` of every row it removed
    pub(crate) fn delete_live_token(
        &self,
        tenant: &str,
        token: &str,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_live_token(self.c(), tenant, token, now)
    }
    pub(crate) fn delete_token(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_token(self.c(), tenant, token)
    }
    pub(crate) fn delete_subject(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_subject(self.c(), tenant, subject)
    }
    pub(crate) fn delete_past_retention(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_past_retention(self.c(), cutoff_month, now)
    }
    pub(crate) fn delete_id_past_expiry(
        &self,
        id: i64,
        cutoff_month: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_id_past_expiry(self.c(), id, cutoff_month)
    }
    pub(crate) fn delete_id_past_ttl(
        &self,
        id: i64,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        erasure::delete_id_past_ttl(self.c(), id, now)
    }
    pub(crate) fn insert_completed_erasure(
        &self,
        e: &CompletedErasure<'_>,
    ) -> Result<(), StoreError> {
        erasure::insert_completed_request(self.c(), e)
    }
    /// Records an erasure request as it arrives (open); returns its id.
    pub(crate) fn insert_open_erasure_request(
        &self,
        tenant: &str,
        subject_hash: &str,
        token: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        erasure::insert_open_request(self.c(), tenant, subject_hash, token, now)
    }
    /// Completes open request `id`; false when no open request has that id.
    pub(crate) fn complete_erasure_request(
        &self,
        id: i64,
        now: i64,
        tokens_erased: i64,
        audit_seq: Option<i64>,
    ) -> Result<bool, StoreError> {
        erasure::complete_request(self.c(), id, now, tokens_erased, audit_seq)
    }
    /// Marks the WAL as holding deleted data (SQLite: see [`super::mark_scrub_pending`]).
    pub(crate) fn mark_scrub_pending(&self, now: i64) -> Result<(), StoreError> {
        super::mark_scrub_pending(self.c(), now)
    }

    // --- audit log: events and checkpoints commit with the transaction's other work.
    // The chain and prune take the engine's `LogTx` (SQLite: the connection of the
    // open transaction); they never begin or commit themselves.
    pub(crate) fn migrate_audit(&self) -> Result<(), AuditError> {
        panvault_audit::log::migrate(self.c())
    }
    pub(crate) fn append_audit(
        &self,
        chain: &mut AuditChain,
        ev: &NewEvent,
    ) -> Result<u64, AuditError> {
        chain.append(self.c(), ev)
    }
    pub(crate) fn reload_audit_chain(&self, chain: &mut AuditChain) -> Result<(), AuditError> {
        chain.reload(self.c())
    }
    pub(crate) fn sign_audit_checkpoint(
        &self,
        chain: &mut AuditChain,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        chain.checkpoint(self.c(), key, now)
    }
    pub(crate) fn prune_audit(
        &self,
        key: &SigningKey,
        now: OffsetDateTime,
        retention: time::Duration,
    ) -> Result<PruneReport, AuditError> {
        panvault_audit::log::prune(self.c(), key, now, retention)
    }
}

/// A write connection owned by one process: the server's before its writer takes
/// it over, or an admin command's. Each statement outside [`Session::begin`]'s
/// transactions commits on its own.
pub struct Session {
    conn: Connection,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

/// A transaction opened by a [`Session`]: its work goes through [`OpenTx::tx`];
/// dropped without [`OpenTx::commit`], it rolls back.
pub struct OpenTx<'a> {
    tx: Transaction<'a>,
}

impl std::fmt::Debug for OpenTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenTx")
    }
}

impl OpenTx<'_> {
    /// The unit of work of this transaction.
    pub fn tx(&self) -> Tx<'_> {
        Tx::new(&self.tx)
    }

    /// Commits (durably: `synchronous=FULL`).
    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

impl Session {
    /// Opens (creating if `create`) the vault database at `path` for writing,
    /// migrated to the latest schema.
    pub fn open(path: &Path, create: bool) -> Result<Session, StoreError> {
        Ok(Session {
            conn: super::open_writer(path, create)?,
        })
    }

    /// Opens an existing database for a short write from a process that does not
    /// own the vault (see [`super::open_for_append`]).
    pub fn open_for_append(path: &Path) -> Result<Session, StoreError> {
        Ok(Session {
            conn: super::open_for_append(path)?,
        })
    }

    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Reads outside any transaction.
    pub fn reader(&self) -> Reader<'_> {
        Reader::borrowed(&self.conn)
    }

    /// Work outside any explicit transaction: each statement commits on its own.
    pub fn autocommit(&self) -> Tx<'_> {
        Tx::new(&self.conn)
    }

    /// Refuses a damaged or foreign file (a full quick check of the database).
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        super::check_integrity(&self.conn)
    }

    /// Waits up to `limit` for a write lock another process holds, polling (see
    /// [`super::poll_for_locks`]).
    pub fn poll_for_locks(&mut self, limit: Duration) -> Result<(), StoreError> {
        super::poll_for_locks(&mut self.conn, limit)
    }

    /// The database file, if the connection has one.
    pub fn path(&self) -> Option<&Path> {
        self.conn.path().map(Path::new)
    }

    /// Begins a transaction that takes the write lock on its first write.
    pub fn begin(&self) -> Result<OpenTx<'_>, StoreError> {
        Ok(OpenTx {
            tx: Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?,
        })
    }

    /// Begins a transaction holding the write lock, waiting once (the busy handler's
    /// wait) for another process to release it.
    pub fn begin_immediate(&self) -> Result<OpenTx<'_>, StoreError> {
        Ok(OpenTx {
            tx: Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?,
        })
    }

    /// Begins a transaction holding the write lock, retrying while another process
    /// holds it for up to `wait` ([`StoreError::LockHeld`] after that); `on_busy`
    /// runs after each attempt the lock was busy.
    pub fn begin_immediate_waiting(
        &self,
        wait: Duration,
        mut on_busy: impl FnMut(),
    ) -> Result<OpenTx<'_>, StoreError> {
        let start = Instant::now();
        loop {
            match Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate) {
                Ok(tx) => return Ok(OpenTx { tx }),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy =>
                {
                    if start.elapsed() >= wait {
                        return Err(StoreError::LockHeld(wait.as_secs()));
                    }
                    on_busy();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Empties the WAL after deleting data (see [`super::scrub_wal_on`]).
    pub fn scrub_wal(&mut self, wait: Duration, now: i64) -> Result<bool, StoreError> {
        super::scrub_wal_on(&mut self.conn, wait, now)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Production files under `dir` (test modules and `tests.rs` files left out)
    /// that name `word`.
    fn naming(dir: &Path, word: &str, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                naming(&path, word, found);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.file_name().is_some_and(|n| n == "tests.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap_or_default();
            if production.contains(word) {
                found.push(path.display().to_string());
            }
        }
    }

    /// The service and the compliance collection hold store handles, never the
    /// engine's types: a second engine plugs in under `store/` alone.
    #[test]
    fn the_service_does_not_name_the_database_engine() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for dir in ["service", "compliance"] {
            naming(&src.join(dir), "rusqlite", &mut found);
        }
        assert!(found.is_empty(), "rusqlite named in {found:?}");
    }
}
