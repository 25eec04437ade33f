//! The handles the service holds: the storage seam. A [`Reader`] reads, a [`Tx`]
//! is a unit of work inside a transaction (the writer's batch, or an admin
//! command's own), a [`Session`] is a write connection owned by one process.
//! Their methods are the domain operations of the vault; the service never sees
//! the engine (SQLite today) underneath. A second engine implements these same
//! methods.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use panvault_audit::log::{
    Actor, AuditChain, AuditError, CheckpointPolicy, NewEvent, Pruned, SignedCheckpoint, SigningKey,
};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::pg::session::{KeyLock, PgConn};
use super::pg::{self, PgPool};
use super::pool::PooledConn;
use super::{
    CardRow, CardShape, CompletedErasure, CvcKeyRow, CvcShape, CvcSweep, DataKeyRow, DeletedCard,
    HeldCvcRow, IdempotencyRow, Inserted, Location, NewCard, NewCvcKey, NewHeldCvc,
    RequestOverview, SealRow, SealedCard, StoreError, WrappedDataKey, cards, cvc, erasure,
    idempotency, inventory, keys, meta, rewrap,
};
use crate::key_state::KeyState;

enum Conn<'a> {
    Borrowed(&'a Connection),
    Pooled(PooledConn<'a>),
    Owned(Connection),
    PgBorrowed(&'a PgConn),
    PgOwned(Box<PgConn>),
}

/// The engine under a handle.
enum Eng<'r> {
    Sqlite(&'r Connection),
    Pg(&'r PgConn),
}

/// Runs the SQLite function or its PostgreSQL twin (whose errors become
/// [`StoreError`]s, and whose failure marks the transaction as aborted).
macro_rules! on {
    ($r:expr, $c:ident => $sqlite:expr, $p:ident => $pg:expr) => {
        match $r.eng() {
            Eng::Sqlite($c) => $sqlite,
            Eng::Pg(conn) => conn.run(|$p| $pg),
        }
    };
}

/// As [`on!`], for a statement that changes or deletes card rows: on PostgreSQL
/// the batch's kept card look-ups are forgotten first (see `pg::session`).
macro_rules! on_cards {
    ($r:expr, $c:ident => $sqlite:expr, $p:ident => $pg:expr) => {
        match $r.eng() {
            Eng::Sqlite($c) => $sqlite,
            Eng::Pg(conn) => {
                conn.forget_cards();
                conn.run(|$p| $pg)
            }
        }
    };
}

/// A PostgreSQL card row as the service reads it: the subject and metadata stay
/// sealed (`sealed_personal`) until the service opens them.
pub(super) fn from_pg(row: pg::cards::PgCardRow) -> Result<CardRow, pg::PgError> {
    let key_version = u32::try_from(row.key_version).map_err(|_| {
        pg::PgError::Foreign("cards.key_version holds a value the vault never writes".into())
    })?;
    Ok(CardRow {
        id: row.id,
        token: row.token,
        tenant: row.tenant,
        key_version,
        nonce: row.nonce,
        ciphertext: row.ciphertext,
        fingerprint: row.fingerprint,
        brand: row.brand,
        bin: row.bin,
        last4: row.last4,
        exp_month: row.exp_month,
        exp_year: row.exp_year,
        subject: None,
        metadata: None,
        created_at: row.created_at,
        expires_at: row.expires_at,
        sealed_personal: row.metadata_sealed,
    })
}

/// What the PostgreSQL card row holds in place of the subject and the metadata:
/// the subject's keyed hash and both sealed under the record's data key. SQLite
/// keeps them in clear and ignores this.
#[derive(Debug, Default)]
pub(crate) struct SealedPersonal {
    /// The subject's keyed hash.
    pub(crate) subject_hash: Option<Vec<u8>>,
    /// The subject and the metadata, sealed.
    pub(crate) sealed: Option<Vec<u8>>,
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

    pub(super) fn pg(conn: PgConn) -> Reader<'a> {
        Reader {
            conn: Conn::PgOwned(Box::new(conn)),
        }
    }

    fn eng(&self) -> Eng<'_> {
        match &self.conn {
            Conn::Borrowed(c) => Eng::Sqlite(c),
            Conn::Pooled(c) => Eng::Sqlite(c),
            Conn::Owned(c) => Eng::Sqlite(c),
            Conn::PgBorrowed(c) => Eng::Pg(c),
            Conn::PgOwned(c) => Eng::Pg(c),
        }
    }

    /// Whether the engine is PostgreSQL: nodes share the database, so the dedup
    /// lookup runs in it ([`Tx::lock_card`], [`Tx::dedup_row`]) rather than in a
    /// node's memory, and personal data is stored sealed ([`SealedPersonal`]).
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.eng(), Eng::Pg(_))
    }
}

impl Reader<'static> {
    /// A read-only connection of its own to the existing vault database at `path`.
    pub fn open(path: &Path) -> Result<Reader<'static>, StoreError> {
        Ok(Reader {
            conn: Conn::Owned(super::open_reader(path)?),
        })
    }

    /// A reading connection of its own to the vault at `location` (PostgreSQL: a
    /// client of a pool of its own; the schema must exist).
    pub fn open_at(location: &Location) -> Result<Reader<'static>, StoreError> {
        match location {
            Location::Sqlite(path) => Reader::open(path),
            Location::Postgres(settings) => {
                let pool = Arc::new(PgPool::open(settings)?);
                let conn = PgConn::from_pool(pool)?;
                if conn.run(pg::schema::version)?.is_none() {
                    return Err(StoreError::NoVault);
                }
                Ok(Reader::pg(conn))
            }
        }
    }
}

impl<'a> Tx<'a> {
    pub(super) fn new(conn: &'a Connection) -> Tx<'a> {
        Tx {
            r: Reader::borrowed(conn),
        }
    }

    pub(super) fn pg(conn: &'a PgConn) -> Tx<'a> {
        Tx {
            r: Reader {
                conn: Conn::PgBorrowed(conn),
            },
        }
    }
}

/// Reads.
impl Reader<'_> {
    // --- meta
    pub(crate) fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        on!(self, c => meta::get(c, key), p => pg::meta::get(p, key))
    }
    pub(crate) fn key_epoch(&self) -> Result<Option<String>, StoreError> {
        on!(self, c => meta::key_epoch(c), p => pg::meta::key_epoch(p))
    }

    // --- keys
    pub(crate) fn read_seal(&self) -> Result<Option<SealRow>, StoreError> {
        on!(self, c => keys::read_seal(c), p => pg::keys::read_seal(p))
    }
    pub(crate) fn active_key_version(&self) -> Result<Option<u32>, StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => keys::active_version(c),
            Eng::Pg(conn) => match conn.prefetched_active_version() {
                Some(read) => read,
                None => conn.run_prepared(pg::keys::active_version_prepared),
            },
        }
    }
    pub(crate) fn wrapped_data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        on!(self, c => keys::wrapped_data_keys(c), p => pg::keys::wrapped_data_keys(p))
    }
    pub(crate) fn wrapped_data_key_bytes(&self) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        on!(self, c => keys::wrapped_data_key_bytes(c), p => pg::keys::wrapped_data_key_bytes(p))
    }
    pub(crate) fn list_data_keys(&self) -> Result<Vec<DataKeyRow>, StoreError> {
        on!(self, c => keys::list_data_keys(c), p => pg::keys::list_data_keys(p))
    }
    pub(crate) fn key_state(&self, version: u32) -> Result<Option<KeyState>, StoreError> {
        on!(self, c => keys::key_state(c, version), p => pg::keys::key_state(p, version))
    }
    pub(crate) fn next_key_version(&self) -> Result<u32, StoreError> {
        on!(self, c => keys::next_version(c), p => pg::keys::next_version(p))
    }
    pub(crate) fn records_under(&self, version: u32) -> Result<i64, StoreError> {
        on!(self, c => keys::records_under(c, version), p => pg::keys::records_under(p, version))
    }
    pub(crate) fn read_aux_key(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        on!(self, c => keys::read_aux_key(c, name), p => pg::keys::read_aux_key(p, name))
    }
    pub(crate) fn aux_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        on!(self, c => keys::aux_keys(c), p => pg::keys::aux_keys(p))
    }

    // --- cards
    pub(crate) fn card_by_token(
        &self,
        token: &str,
        tenant: &str,
    ) -> Result<Option<CardRow>, StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => cards::by_token(c, token, tenant),
            Eng::Pg(conn) => {
                if let Some(row) = conn.prefetched_by_token(token, tenant) {
                    return row.map(from_pg).transpose().map_err(StoreError::from);
                }
                conn.run_prepared(|p| {
                    pg::cards::by_token_prepared(p, token, tenant)?
                        .map(from_pg)
                        .transpose()
                })
            }
        }
    }
    pub(crate) fn card_is_live(
        &self,
        id: i64,
        token: &str,
        tenant: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        if let Eng::Pg(conn) = self.eng()
            && let Some(live) = conn.prefetched_live(id, token, tenant, now)
        {
            return Ok(live);
        }
        on!(self, c => cards::is_live(c, id, token, tenant, now),
            p => pg::cards::is_live(p, id, token, tenant, now))
    }
    /// Re-checks a hit of the in-memory dedup index (SQLite only: on PostgreSQL
    /// the lookup is [`Tx::dedup_row`]).
    pub(crate) fn live_dedup_row(
        &self,
        id: i64,
        fingerprint: &[u8],
        tenant: &str,
        subject: Option<&str>,
        now: i64,
    ) -> Result<Option<CardRow>, StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => cards::live_dedup_row(c, id, fingerprint, tenant, subject, now),
            Eng::Pg(_) => Err(StoreError::Unsupported(
                "the in-memory dedup index (PostgreSQL looks cards up in the database)",
            )),
        }
    }
    pub(crate) fn card_count(&self) -> Result<i64, StoreError> {
        on!(self, c => cards::count(c), p => pg::cards::count(p))
    }
    /// Every card's fingerprint for the in-memory dedup index (SQLite only: on
    /// PostgreSQL nothing is visited, the index stays empty).
    pub(crate) fn for_each_fingerprint(
        &self,
        f: impl FnMut(i64, Vec<u8>, Option<String>),
    ) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => cards::for_each_fingerprint(c, f),
            Eng::Pg(_) => Ok(()),
        }
    }
    pub(crate) fn count_not_under(&self, version: u32) -> Result<i64, StoreError> {
        on!(self, c => rewrap::count_not_under(c, version), p => pg::rewrap::count_not_under(p, version))
    }
    pub(crate) fn sealed_not_under(
        &self,
        version: u32,
        limit: i64,
    ) -> Result<Vec<SealedCard>, StoreError> {
        on!(self, c => rewrap::batch_not_under(c, version, limit),
            p => pg::rewrap::batch_not_under(p, version, limit))
    }

    // --- retention and erasure
    pub(crate) fn count_past_expiry(&self, cutoff_month: i64, now: i64) -> Result<i64, StoreError> {
        on!(self, c => erasure::count_past_expiry(c, cutoff_month, now),
            p => pg::erasure::count_past_expiry(p, cutoff_month, now))
    }
    pub(crate) fn count_past_ttl_only(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<i64, StoreError> {
        on!(self, c => erasure::count_past_ttl_only(c, cutoff_month, now),
            p => pg::erasure::count_past_ttl_only(p, cutoff_month, now))
    }
    pub(crate) fn retention_candidates(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        on!(self, c => erasure::retention_candidates(c, cutoff_month, now),
            p => pg::erasure::retention_candidates(p, cutoff_month, now))
    }
    pub(crate) fn count_open_requests_before(&self, cutoff: i64) -> Result<i64, StoreError> {
        on!(self, c => erasure::count_open_requests_before(c, cutoff),
            p => pg::erasure::count_open_requests_before(p, cutoff))
    }
    pub(crate) fn erasure_overview(&self) -> Result<Option<RequestOverview>, StoreError> {
        on!(self, c => erasure::request_overview(c), p => pg::erasure::request_overview(p))
    }

    // --- inventory
    pub(crate) fn count_cards(&self) -> Result<i64, StoreError> {
        on!(self, c => inventory::count_cards(c), p => pg::inventory::count_cards(p))
    }
    pub(crate) fn count_expired_before(&self, cutoff_month: i64) -> Result<i64, StoreError> {
        on!(self, c => inventory::count_expired_before(c, cutoff_month),
            p => pg::inventory::count_expired_before(p, cutoff_month))
    }
    pub(crate) fn wrapped_key_names(&self) -> Result<Vec<String>, StoreError> {
        on!(self, c => inventory::wrapped_key_names(c), p => pg::inventory::wrapped_key_names(p))
    }
    pub(crate) fn card_shape(&self) -> Result<CardShape, StoreError> {
        on!(self, c => inventory::card_shape(c), p => pg::inventory::card_shape(p))
    }
    /// Cards grouped by token length, with the digits they keep in the clear.
    pub(crate) fn masking_shape(&self) -> Result<Vec<inventory::MaskingShape>, StoreError> {
        on!(self, c => inventory::masking_shape(c), p => pg::inventory::masking_shape(p))
    }

    /// One round trip to the database (SQLite: a trivial read).
    pub(crate) fn ping(&self) -> Result<(), StoreError> {
        on!(self, c => c.query_row("SELECT 1", [], |_| Ok(())).map_err(StoreError::from),
            p => p.simple_query("").map(|_| ()).map_err(pg::PgError::from))
    }

    /// PostgreSQL: `VACUUM`s the tables deletes leave dead row versions in (see
    /// [`Session::scrub_wal`]). SQLite truncates its WAL instead
    /// ([`super::scrub_wal`]).
    pub(crate) fn vacuum(&self, now: i64) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Err(StoreError::Unsupported(
                "VACUUM of a read connection (SQLite)",
            )),
            Eng::Pg(conn) => conn.vacuum(now),
        }
    }

    /// PostgreSQL: `VACUUM`s the held codes and their keys after a sweep (SQLite
    /// truncates its WAL instead).
    pub(crate) fn vacuum_cvcs(&self) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Err(StoreError::Unsupported(
                "VACUUM of a read connection (SQLite)",
            )),
            Eng::Pg(conn) => conn.vacuum_cvcs(),
        }
    }

    // --- held card security codes
    pub(crate) fn cvc_key_for_window(
        &self,
        window_start: i64,
        ttl_secs: i64,
    ) -> Result<Option<CvcKeyRow>, StoreError> {
        on!(self, c => cvc::key_for_window(c, window_start, ttl_secs),
            p => pg::cvc::key_for_window(p, window_start, ttl_secs))
    }
    pub(crate) fn cvc_key(&self, id: i64) -> Result<Option<CvcKeyRow>, StoreError> {
        on!(self, c => cvc::key_by_id(c, id), p => pg::cvc::key_by_id(p, id))
    }
    pub(crate) fn cvc_keys(&self) -> Result<Vec<CvcKeyRow>, StoreError> {
        on!(self, c => cvc::all_keys(c), p => pg::cvc::all_keys(p))
    }
    pub(crate) fn held_cvc(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<HeldCvcRow>, StoreError> {
        on!(self, c => cvc::held(c, tenant, token), p => pg::cvc::held(p, tenant, token))
    }
    /// The held codes and their keys as the compliance check sees them (`None`
    /// before the schema had them).
    pub(crate) fn cvc_shape(&self, now: i64) -> Result<Option<CvcShape>, StoreError> {
        on!(self, c => cvc::shape(c, now), p => pg::cvc::shape(p, now))
    }

    // --- idempotency keys
    pub(crate) fn idempotency_row(
        &self,
        client: &str,
        key_hash: &[u8],
    ) -> Result<Option<IdempotencyRow>, StoreError> {
        on!(self, c => idempotency::get(c, client, key_hash),
            p => pg::idempotency::get(p, client, key_hash))
    }

    // --- audit log
    pub(crate) fn load_audit_chain(&self) -> Result<AuditChain, AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => AuditChain::load(c),
            Eng::Pg(conn) => conn.audit(|log| AuditChain::load(log)),
        }
    }
    /// Whether a checkpoint is due: the policy's (events or time since the last),
    /// and on PostgreSQL also when another node's head moved since this node last
    /// signed and the interval passed, so idle nodes anchor the others.
    pub(crate) fn audit_checkpoint_due(
        &self,
        chain: &AuditChain,
        policy: &CheckpointPolicy,
        now: OffsetDateTime,
    ) -> Result<bool, AuditError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(chain.checkpoint_due(policy, now)),
            Eng::Pg(conn) => conn.audit(|log| chain.cluster_checkpoint_due(log, policy, now)),
        }
    }
    pub(crate) fn audit_chain_is_current(&self, chain: &AuditChain) -> Result<bool, AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => chain.is_current(c),
            Eng::Pg(conn) => conn.audit(|log| chain.is_current(log)),
        }
    }
}

/// Changes, inside the transaction.
impl Tx<'_> {
    // --- upkeep rounds
    /// Claims this round of `task` for this node: true when it should run now.
    /// PostgreSQL: false when another node's transaction runs it
    /// (`pg_try_advisory_xact_lock`, held until this transaction ends) or a node
    /// ran it less than nine tenths of `every_secs` ago (`meta` `round.<task>`,
    /// set here when claimed; a clock that disagrees by that much either way
    /// counts as recent). SQLite: one server per database, always true.
    pub(crate) fn claim_round(
        &self,
        task: super::Upkeep,
        now: i64,
        every_secs: i64,
    ) -> Result<bool, StoreError> {
        let conn = match self.eng() {
            Eng::Sqlite(_) => return Ok(true),
            Eng::Pg(conn) => conn,
        };
        if !conn.try_task_xact_lock(task)? {
            return Ok(false);
        }
        let key = format!("round.{}", task.name());
        let gap = every_secs.saturating_sub(every_secs / 10).max(1);
        if let Some(v) = self.meta_get(&key)? {
            let last: i64 = v.parse().map_err(|_| {
                StoreError::Corrupt(format!("meta {key} is not a number of seconds"))
            })?;
            if now.saturating_sub(last).saturating_abs() < gap {
                return Ok(false);
            }
        }
        self.meta_set(&key, &now.to_string())?;
        Ok(true)
    }

    // --- meta
    pub(crate) fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        on!(self, c => meta::set(c, key, value), p => pg::meta::set(p, key, value))
    }
    pub(crate) fn bump_key_epoch(&self) -> Result<(), StoreError> {
        on!(self, c => meta::bump_key_epoch(c), p => pg::meta::bump_key_epoch(p))
    }

    // --- keys
    pub(crate) fn write_seal(&self, seal: &SealRow) -> Result<(), StoreError> {
        on!(self, c => keys::write_seal(c, seal), p => pg::keys::write_seal(p, seal))
    }
    pub(crate) fn insert_data_key(
        &self,
        version: u32,
        wrapped: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        on!(self, c => keys::insert_data_key(c, version, wrapped, now),
            p => pg::keys::insert_data_key(p, version, wrapped, now))
    }
    pub(crate) fn rewrap_data_key(&self, version: u32, wrapped: &[u8]) -> Result<(), StoreError> {
        on!(self, c => keys::rewrap_data_key(c, version, wrapped),
            p => pg::keys::rewrap_data_key(p, version, wrapped))
    }
    pub(crate) fn set_key_state_where(
        &self,
        from: KeyState,
        to: KeyState,
    ) -> Result<(), StoreError> {
        on!(self, c => keys::set_state_where(c, from, to), p => pg::keys::set_state_where(p, from, to))
    }
    pub(crate) fn mark_key_retired(&self, version: u32, now: i64) -> Result<(), StoreError> {
        on!(self, c => keys::mark_retired(c, version, now), p => pg::keys::mark_retired(p, version, now))
    }
    pub(crate) fn mark_key_destroyed(&self, version: u32, now: i64) -> Result<(), StoreError> {
        on!(self, c => keys::mark_destroyed(c, version, now),
            p => pg::keys::mark_destroyed(p, version, now))
    }
    pub(crate) fn insert_aux_key(
        &self,
        name: &str,
        wrapped: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        on!(self, c => keys::insert_aux_key(c, name, wrapped, now),
            p => pg::keys::insert_aux_key(p, name, wrapped, now))
    }
    pub(crate) fn rewrap_aux_key(&self, name: &str, wrapped: &[u8]) -> Result<(), StoreError> {
        on!(self, c => keys::rewrap_aux_key(c, name, wrapped),
            p => pg::keys::rewrap_aux_key(p, name, wrapped))
    }
    pub(crate) fn add_encryptions(&self, version: u32, n: i64) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => keys::add_encryptions(c, version, n),
            Eng::Pg(conn) => {
                if conn.queue_encryptions(version, n)? {
                    return Ok(());
                }
                conn.run_prepared(|p| pg::keys::add_encryptions_prepared(p, version, n))
            }
        }
    }

    // --- cards
    /// Inserts a card. On PostgreSQL `personal` takes the place of the card's
    /// subject and metadata (see [`SealedPersonal`]); SQLite stores them in clear.
    ///
    /// `random_token`: the token is 128 random bits, which no row holds but by a
    /// collision nobody will see. On PostgreSQL in a writer batch the row is then
    /// queued for the batch's one insert ([`Inserted::Queued`]), and a collision
    /// fails the whole batch rather than answer [`Inserted::TokenTaken`].
    pub(crate) fn insert_card(
        &self,
        card: &NewCard<'_>,
        personal: &SealedPersonal,
        random_token: bool,
    ) -> Result<Inserted, StoreError> {
        if random_token
            && let Eng::Pg(conn) = self.eng()
            && conn.queue_card(pg::cards::PendingCard::new(
                card,
                personal.subject_hash.as_deref(),
                personal.sealed.as_deref(),
            ))?
        {
            return Ok(Inserted::Queued);
        }
        on_cards!(self, c => cards::insert(c, card),
            p => pg::cards::insert(p, card, personal.subject_hash.as_deref(), personal.sealed.as_deref()))
    }
    /// Takes this transaction's lock on card `fingerprint` (PostgreSQL: nodes
    /// tokenizing one card take turns, see `store::pg::session`; SQLite: its write
    /// lock already serialises every writer, nothing to do).
    pub(crate) fn lock_card(&self, fingerprint: &[u8]) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(()),
            Eng::Pg(conn) => conn.lock_card(fingerprint),
        }
    }
    /// The oldest live row of card `fingerprint` for the subject hashed to
    /// `subject_hash` in `tenant` (PostgreSQL's dedup lookup, after
    /// [`Tx::lock_card`]; SQLite uses its in-memory index and
    /// [`Reader::live_dedup_row`]).
    pub(crate) fn dedup_row(
        &self,
        tenant: &str,
        fingerprint: &[u8],
        subject_hash: Option<&[u8]>,
        now: i64,
    ) -> Result<Option<CardRow>, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Err(StoreError::Unsupported(
                "the dedup lookup in the database (SQLite uses the in-memory index)",
            )),
            Eng::Pg(conn) => {
                if let Some(row) = conn.prefetched_dedup_row(tenant, fingerprint, subject_hash, now)
                {
                    return row.map(from_pg).transpose().map_err(StoreError::from);
                }
                conn.run(|p| {
                    pg::cards::live_dedup_row(p, tenant, fingerprint, subject_hash, now)?
                        .map(from_pg)
                        .transpose()
                })
            }
        }
    }
    /// Updates a card's terms; on PostgreSQL `sealed_personal` replaces the
    /// stored sealed subject and metadata (`metadata` in clear is for SQLite).
    pub(crate) fn update_card_terms(
        &self,
        id: i64,
        exp_month: i64,
        exp_year: i64,
        metadata: Option<&str>,
        sealed_personal: Option<&[u8]>,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        on_cards!(self, c => cards::update_terms(c, id, exp_month, exp_year, metadata, expires_at),
            p => pg::cards::update_terms(p, id, exp_month, exp_year, sealed_personal, expires_at))
    }
    pub(crate) fn update_card_sealed(
        &self,
        id: i64,
        key_version: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError> {
        on_cards!(self, c => cards::update_sealed(c, id, key_version, nonce, ciphertext),
            p => pg::cards::update_sealed(p, id, key_version, nonce, ciphertext))
    }
    pub(crate) fn rewrap_card(
        &self,
        id: i64,
        old_version: u32,
        key_version: u32,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<usize, StoreError> {
        on_cards!(self, c => rewrap::update_sealed(c, id, old_version, key_version, nonce, ciphertext),
            p => pg::rewrap::update_sealed(p, id, old_version, key_version, nonce, ciphertext))
    }

    /// PostgreSQL: row `id`'s sealed subject and metadata (SQLite keeps them in
    /// clear: `None`).
    pub(crate) fn card_sealed_personal(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(None),
            Eng::Pg(conn) => conn.run(|p| pg::personal::sealed(p, id)),
        }
    }
    /// PostgreSQL: replaces row `id`'s sealed subject and metadata (a rewrap).
    pub(crate) fn rewrap_card_personal(&self, id: i64, blob: &[u8]) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Err(StoreError::Unsupported("sealed personal data (SQLite)")),
            Eng::Pg(conn) => conn.run(|p| pg::personal::update_sealed(p, id, blob)),
        }
    }

    // --- held card security codes
    /// Stores a window's key; false when another writer stored that window's first.
    pub(crate) fn insert_cvc_key(&self, k: &NewCvcKey<'_>) -> Result<bool, StoreError> {
        on!(self, c => cvc::insert_key(c, k), p => pg::cvc::insert_key(p, k))
    }
    pub(crate) fn rewrap_cvc_key(&self, id: i64, wrapped: &[u8]) -> Result<(), StoreError> {
        on!(self, c => cvc::rewrap_key(c, id, wrapped), p => pg::cvc::rewrap_key(p, id, wrapped))
    }
    pub(crate) fn put_held_cvc(&self, c: &NewHeldCvc<'_>) -> Result<(), StoreError> {
        on!(self, conn => cvc::put_held(conn, c), p => pg::cvc::put_held(p, c))
    }
    /// Deletes and returns the code held for `(tenant, token)`.
    pub(crate) fn take_held_cvc(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<HeldCvcRow>, StoreError> {
        on!(self, c => cvc::take_held(c, tenant, token),
            p => pg::cvc::take_held(p, tenant, token))
    }
    /// Deletes codes past their deadline and keys past their destruction time.
    pub(crate) fn sweep_cvcs(&self, now: i64) -> Result<CvcSweep, StoreError> {
        on!(self, c => cvc::sweep(c, now), p => pg::cvc::sweep(p, now))
    }

    // --- idempotency keys
    pub(crate) fn reserve_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        on!(self, c => idempotency::reserve(c, client, key_hash, request_hash, now),
            p => pg::idempotency::reserve(p, client, key_hash, request_hash, now))
    }
    pub(crate) fn complete_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        status: i64,
        answer: &[u8],
    ) -> Result<bool, StoreError> {
        on!(self, c => idempotency::complete(c, client, key_hash, request_hash, status, answer),
            p => pg::idempotency::complete(p, client, key_hash, request_hash, status, answer))
    }
    pub(crate) fn release_idempotency(
        &self,
        client: &str,
        key_hash: &[u8],
        request_hash: &[u8],
    ) -> Result<(), StoreError> {
        on!(self, c => idempotency::release(c, client, key_hash, request_hash),
            p => pg::idempotency::release(p, client, key_hash, request_hash))
    }
    pub(crate) fn purge_idempotency(&self, cutoff: i64) -> Result<u64, StoreError> {
        on!(self, c => idempotency::purge(c, cutoff), p => pg::idempotency::purge(p, cutoff))
    }

    // --- deletes: each returns the `(id, fingerprint)` of every row it removed
    pub(crate) fn delete_live_token(
        &self,
        tenant: &str,
        token: &str,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_live_token(c, tenant, token, now),
            p => pg::cards::delete_live_token(p, tenant, token, now))
    }
    pub(crate) fn delete_token(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_token(c, tenant, token),
            p => pg::cards::delete_token(p, tenant, token))
    }
    /// Deletes a subject's cards: SQLite matches `subject`, PostgreSQL its keyed
    /// hash `subject_hash` (the same hash the cards were stored with).
    pub(crate) fn delete_subject(
        &self,
        tenant: &str,
        subject: &str,
        subject_hash: &[u8],
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_subject(c, tenant, subject),
            p => pg::erasure::delete_subject(p, tenant, subject_hash))
    }
    pub(crate) fn delete_past_retention(
        &self,
        cutoff_month: i64,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_past_retention(c, cutoff_month, now),
            p => pg::erasure::delete_past_retention(p, cutoff_month, now))
    }
    pub(crate) fn delete_id_past_expiry(
        &self,
        id: i64,
        cutoff_month: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_id_past_expiry(c, id, cutoff_month),
            p => pg::erasure::delete_id_past_expiry(p, id, cutoff_month))
    }
    pub(crate) fn delete_id_past_ttl(
        &self,
        id: i64,
        now: i64,
    ) -> Result<Vec<DeletedCard>, StoreError> {
        on_cards!(self, c => erasure::delete_id_past_ttl(c, id, now),
            p => pg::erasure::delete_id_past_ttl(p, id, now))
    }
    pub(crate) fn insert_completed_erasure(
        &self,
        e: &CompletedErasure<'_>,
    ) -> Result<(), StoreError> {
        on!(self, c => erasure::insert_completed_request(c, e),
            p => pg::erasure::insert_completed_request(p, e))
    }
    /// Records an erasure request as it arrives (open); returns its id.
    pub(crate) fn insert_open_erasure_request(
        &self,
        tenant: &str,
        subject_hash: &str,
        token: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        on!(self, c => erasure::insert_open_request(c, tenant, subject_hash, token, now),
            p => pg::erasure::insert_open_request(p, tenant, subject_hash, token, now))
    }
    /// Completes open request `id`; false when no open request has that id.
    pub(crate) fn complete_erasure_request(
        &self,
        id: i64,
        now: i64,
        tokens_erased: i64,
        audit_seq: Option<i64>,
    ) -> Result<bool, StoreError> {
        on!(self, c => erasure::complete_request(c, id, now, tokens_erased, audit_seq),
            p => pg::erasure::complete_request(p, id, now, tokens_erased, audit_seq))
    }
    /// Marks the WAL as holding deleted data (SQLite: see
    /// [`super::mark_scrub_pending`]). PostgreSQL has no such mark: the session
    /// vacuums after deleting ([`Session::scrub_wal`]).
    pub(crate) fn mark_scrub_pending(&self, now: i64) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(c) => super::mark_scrub_pending(c, now),
            Eng::Pg(_) => Ok(()),
        }
    }

    // --- audit log: events and checkpoints commit with the transaction's other work.
    // The chain and prune take the engine's `LogTx` (SQLite: the connection of the
    // open transaction; PostgreSQL: `PgLog` on the transaction's client); they
    // never begin or commit themselves.
    /// Creates the audit tables (SQLite; PostgreSQL's schema has them already).
    pub(crate) fn migrate_audit(&self) -> Result<(), AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => panvault_audit::log::migrate(c),
            Eng::Pg(_) => Ok(()),
        }
    }
    pub(crate) fn append_audit(
        &self,
        chain: &mut AuditChain,
        ev: &NewEvent,
    ) -> Result<u64, AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => chain.append(c, ev),
            Eng::Pg(conn) => conn.audit_append(|log| chain.append(log, ev)),
        }
    }
    pub(crate) fn reload_audit_chain(&self, chain: &mut AuditChain) -> Result<(), AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => chain.reload(c),
            Eng::Pg(conn) => conn.audit(|log| chain.reload(log)),
        }
    }
    /// Signs a checkpoint of the chain's head. On PostgreSQL a cluster checkpoint
    /// (every registered node's head, see `panvault_audit::log::cluster`).
    pub(crate) fn sign_audit_checkpoint(
        &self,
        chain: &mut AuditChain,
        key: &SigningKey,
        now: OffsetDateTime,
    ) -> Result<SignedCheckpoint, AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => chain.checkpoint(c, key, now).map(SignedCheckpoint::Single),
            Eng::Pg(conn) => conn
                .audit(|log| chain.cluster_checkpoint(log, key, now))
                .map(SignedCheckpoint::Cluster),
        }
    }
    /// Registers this node in the shared log (PostgreSQL: its `node.register`
    /// event and first cluster checkpoint, once; nothing if it is registered
    /// already). SQLite has one chain: nothing to do.
    pub(crate) fn register_audit_node(
        &self,
        chain: &mut AuditChain,
        key: &SigningKey,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<(), AuditError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(()),
            Eng::Pg(conn) => conn
                .audit(|log| chain.register_node(log, key, actor, now))
                .map(|_| ()),
        }
    }
    /// Prunes the log under `retention`. PostgreSQL: every node's chain at
    /// once, at one cluster checkpoint, once across the cluster (a prune lock;
    /// [`Pruned::busy`] if another transaction holds it).
    pub(crate) fn prune_audit(
        &self,
        key: &SigningKey,
        now: OffsetDateTime,
        retention: time::Duration,
    ) -> Result<Pruned, AuditError> {
        match self.eng() {
            Eng::Sqlite(c) => panvault_audit::log::prune(c, key, now, retention).map(Pruned::Log),
            Eng::Pg(conn) => conn
                .audit(|log| panvault_audit::log::prune_cluster(log, key, now, retention))
                .map(Pruned::Cluster),
        }
    }
}

/// A write connection owned by one process: the server's before its writer takes
/// it over, or an admin command's. Each statement outside [`Session::begin`]'s
/// transactions commits on its own.
pub struct Session {
    conn: SessionConn,
}

enum SessionConn {
    Sqlite(Connection),
    Pg(Box<PgConn>),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

/// A transaction opened by a [`Session`]: its work goes through [`OpenTx::tx`];
/// dropped without [`OpenTx::commit`], it rolls back.
pub struct OpenTx<'a> {
    tx: OpenKind<'a>,
}

enum OpenKind<'a> {
    Sqlite(Transaction<'a>),
    Pg(PgOpen<'a>),
}

/// A PostgreSQL transaction begun with `BEGIN` on the session's client; rolled
/// back when dropped uncommitted.
struct PgOpen<'a> {
    conn: &'a PgConn,
    done: bool,
}

impl Drop for PgOpen<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.rollback();
        }
    }
}

impl std::fmt::Debug for OpenTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenTx")
    }
}

impl OpenTx<'_> {
    /// The unit of work of this transaction.
    pub fn tx(&self) -> Tx<'_> {
        match &self.tx {
            OpenKind::Sqlite(t) => Tx::new(t),
            OpenKind::Pg(p) => Tx::pg(p.conn),
        }
    }

    /// Commits (durably: SQLite's `synchronous=FULL`, PostgreSQL's
    /// `synchronous_commit`). On PostgreSQL a transaction in which a statement
    /// failed is rolled back and reported, and a commit whose answer was lost is
    /// an error.
    pub fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            OpenKind::Sqlite(t) => Ok(t.commit()?),
            OpenKind::Pg(mut p) => {
                p.done = true;
                p.conn.commit()
            }
        }
    }
}

impl Session {
    /// Opens (creating if `create`) the vault database at `path` for writing,
    /// migrated to the latest schema.
    pub fn open(path: &Path, create: bool) -> Result<Session, StoreError> {
        Ok(Session {
            conn: SessionConn::Sqlite(super::open_writer(path, create)?),
        })
    }

    /// Opens the vault's database at `location` for writing, migrated to the
    /// latest schema (PostgreSQL: the schema is created only if `create`; a
    /// database without one is [`StoreError::NoVault`]). `pool` is the node's
    /// pool to take the client from (one of its own if `None`).
    pub fn open_at(
        location: &Location,
        create: bool,
        pool: Option<Arc<PgPool>>,
    ) -> Result<Session, StoreError> {
        match location {
            Location::Sqlite(path) => Session::open(path, create),
            Location::Postgres(settings) => {
                let pool = match pool {
                    Some(p) => p,
                    None => Arc::new(PgPool::open(settings)?),
                };
                let conn = PgConn::from_pool(pool)?;
                if !create && conn.run(pg::schema::version)?.is_none() {
                    return Err(StoreError::NoVault);
                }
                conn.run(|c| pg::schema::migrate(c).map(|_| ()))?;
                Ok(Session {
                    conn: SessionConn::Pg(Box::new(conn)),
                })
            }
        }
    }

    /// Opens an existing database for a short write from a process that does not
    /// own the vault (see [`super::open_for_append`]).
    pub fn open_for_append(path: &Path) -> Result<Session, StoreError> {
        Ok(Session {
            conn: SessionConn::Sqlite(super::open_for_append(path)?),
        })
    }

    /// [`Session::open_for_append`] at `location` (PostgreSQL: a client of its
    /// own; the schema must exist).
    pub fn open_for_append_at(location: &Location) -> Result<Session, StoreError> {
        match location {
            Location::Sqlite(path) => Session::open_for_append(path),
            Location::Postgres(_) => Session::open_at(location, false, None),
        }
    }

    /// The SQLite connection (`None` on PostgreSQL).
    pub(super) fn conn_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.conn {
            SessionConn::Sqlite(c) => Some(c),
            SessionConn::Pg(_) => None,
        }
    }

    /// The PostgreSQL connection (`None` on SQLite).
    pub(super) fn pg(&self) -> Option<&PgConn> {
        match &self.conn {
            SessionConn::Sqlite(_) => None,
            SessionConn::Pg(c) => Some(c),
        }
    }

    /// Whether the engine is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, SessionConn::Pg(_))
    }

    /// Reads outside any transaction.
    pub fn reader(&self) -> Reader<'_> {
        match &self.conn {
            SessionConn::Sqlite(c) => Reader::borrowed(c),
            SessionConn::Pg(c) => Reader {
                conn: Conn::PgBorrowed(c),
            },
        }
    }

    /// Work outside any explicit transaction: each statement commits on its own.
    pub fn autocommit(&self) -> Tx<'_> {
        match &self.conn {
            SessionConn::Sqlite(c) => Tx::new(c),
            SessionConn::Pg(c) => Tx::pg(c),
        }
    }

    /// Refuses a damaged or foreign file (a full quick check of the database).
    /// PostgreSQL checks its own pages; the schema check at open is what this
    /// means there, so nothing more is done.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        match &self.conn {
            SessionConn::Sqlite(c) => super::check_integrity(c),
            SessionConn::Pg(_) => Ok(()),
        }
    }

    /// Waits up to `limit` for a write lock another process holds, polling (see
    /// [`super::poll_for_locks`]). PostgreSQL: nothing to set (its advisory locks
    /// queue the waiters).
    pub fn poll_for_locks(&mut self, limit: Duration) -> Result<(), StoreError> {
        match &mut self.conn {
            SessionConn::Sqlite(c) => super::poll_for_locks(c, limit),
            SessionConn::Pg(_) => Ok(()),
        }
    }

    /// Takes `task`'s lock for as long as this session lasts or until
    /// [`Session::task_unlock`]: false when another process holds it. PostgreSQL:
    /// a session-level advisory lock, released by the server when the connection
    /// closes, so a killed command leaves nothing held. SQLite: always true (its
    /// admin commands already take turns on the write lock).
    pub fn try_task_lock(&self, task: super::Upkeep) -> Result<bool, StoreError> {
        match &self.conn {
            SessionConn::Sqlite(_) => Ok(true),
            SessionConn::Pg(c) => c.try_task_lock(task),
        }
    }

    /// Releases what [`Session::try_task_lock`] took.
    pub fn task_unlock(&self, task: super::Upkeep) -> Result<(), StoreError> {
        match &self.conn {
            SessionConn::Sqlite(_) => Ok(()),
            SessionConn::Pg(c) => c.task_unlock(task),
        }
    }

    /// The database file, if the connection has one (never on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        match &self.conn {
            SessionConn::Sqlite(c) => c.path().map(Path::new),
            SessionConn::Pg(_) => None,
        }
    }

    fn begin_pg(
        c: &PgConn,
        lock: KeyLock,
        wait: Option<Duration>,
    ) -> Result<OpenTx<'_>, StoreError> {
        c.reconnect_if_closed()?;
        c.begin(lock, wait)?;
        Ok(OpenTx {
            tx: OpenKind::Pg(PgOpen {
                conn: c,
                done: false,
            }),
        })
    }

    /// Begins a transaction that takes the write lock on its first write
    /// (PostgreSQL: a plain transaction, no key lock).
    pub fn begin(&self) -> Result<OpenTx<'_>, StoreError> {
        match &self.conn {
            SessionConn::Sqlite(c) => Ok(OpenTx {
                tx: OpenKind::Sqlite(Transaction::new_unchecked(
                    c,
                    TransactionBehavior::Deferred,
                )?),
            }),
            SessionConn::Pg(c) => Session::begin_pg(c, KeyLock::None, None),
        }
    }

    /// Begins a transaction holding the write lock, waiting once (the busy handler's
    /// wait) for another process to release it. PostgreSQL: the key lock,
    /// exclusively, waiting up to [`super::LOCK_WAIT`]: no writer batch of any node
    /// runs meanwhile.
    pub fn begin_immediate(&self) -> Result<OpenTx<'_>, StoreError> {
        match &self.conn {
            SessionConn::Sqlite(c) => Ok(OpenTx {
                tx: OpenKind::Sqlite(Transaction::new_unchecked(
                    c,
                    TransactionBehavior::Immediate,
                )?),
            }),
            SessionConn::Pg(c) => Session::begin_pg(c, KeyLock::Exclusive, Some(super::LOCK_WAIT)),
        }
    }

    /// Begins a transaction holding the write lock, retrying while another process
    /// holds it for up to `wait` ([`StoreError::LockHeld`] after that); `on_busy`
    /// runs after each attempt the lock was busy (PostgreSQL: one wait of up to
    /// `wait` for the exclusive key lock; `on_busy` runs once before it).
    pub fn begin_immediate_waiting(
        &self,
        wait: Duration,
        mut on_busy: impl FnMut(),
    ) -> Result<OpenTx<'_>, StoreError> {
        let c = match &self.conn {
            SessionConn::Sqlite(c) => c,
            SessionConn::Pg(c) => {
                return match Session::begin_pg(
                    c,
                    KeyLock::Exclusive,
                    Some(Duration::from_millis(100)),
                ) {
                    Err(StoreError::LockHeld(_)) => {
                        on_busy();
                        Session::begin_pg(c, KeyLock::Exclusive, Some(wait)).map_err(|e| match e {
                            StoreError::LockHeld(_) => StoreError::LockHeld(wait.as_secs()),
                            other => other,
                        })
                    }
                    other => other,
                };
            }
        };
        let start = Instant::now();
        loop {
            match Transaction::new_unchecked(c, TransactionBehavior::Immediate) {
                Ok(tx) => {
                    return Ok(OpenTx {
                        tx: OpenKind::Sqlite(tx),
                    });
                }
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
    /// PostgreSQL: `VACUUM`s the tables the deletes left dead row versions in
    /// (true when it ran); what it cannot reach (WAL segments, backups, pages not
    /// yet reused) holds ciphertext only.
    pub fn scrub_wal(&mut self, wait: Duration, now: i64) -> Result<bool, StoreError> {
        match &mut self.conn {
            SessionConn::Sqlite(c) => super::scrub_wal_on(c, wait, now),
            SessionConn::Pg(c) => c.vacuum(now).map(|()| true),
        }
    }
}

/// Root succession: how nodes follow a `master rotate` made while they serve
/// (PostgreSQL; see `store::pg::presence`). On SQLite `master rotate` is refused
/// while a server holds the vault, so there is never a successor to read.
impl Reader<'_> {
    /// The successor of the root whose public id is `from`, if stored.
    pub(crate) fn root_successor(
        &self,
        from: &str,
    ) -> Result<Option<pg::RootSuccessor>, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(None),
            Eng::Pg(conn) => conn.run(|p| pg::successor(p, from)),
        }
    }

    /// Every serving node present now and whether it holds the root whose public
    /// id is `root_id` (SQLite: none; its one server holds the data directory's
    /// lock instead).
    pub(crate) fn root_followers(
        &self,
        root_id: &str,
    ) -> Result<Vec<pg::NodeFollowing>, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(Vec::new()),
            Eng::Pg(conn) => conn.run(|p| pg::followers(p, root_id)),
        }
    }
}

impl Tx<'_> {
    /// Stores the root `to` wrapped under the root `from` for the nodes that hold
    /// `from`. SQLite: unsupported (nodes never follow there).
    pub(crate) fn put_root_successor(
        &self,
        from: &str,
        to: &str,
        wrapped: &[u8],
    ) -> Result<(), StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Err(StoreError::Unsupported(
                "a root successor on SQLite (its server is stopped for `master rotate`)",
            )),
            Eng::Pg(conn) => conn.run(|p| pg::put_successor(p, from, to, wrapped)),
        }
    }

    /// Deletes the successor of the root `from`; whether there was one.
    pub(crate) fn delete_root_successor(&self, from: &str) -> Result<bool, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(false),
            Eng::Pg(conn) => conn.run(|p| pg::delete_successor(p, from)),
        }
    }

    /// Deletes every successor row past its time ([`pg::SUCCESSOR_TTL_SECS`]).
    pub(crate) fn sweep_root_successors(&self) -> Result<u64, StoreError> {
        match self.eng() {
            Eng::Sqlite(_) => Ok(0),
            Eng::Pg(conn) => conn.run(pg::sweep_successors),
        }
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
