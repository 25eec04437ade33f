//! The vault service: the operations the HTTP API and the CLI call.
//!
//! Writes (tokenize, delete, key changes) become jobs for the single writer and are
//! answered only after their transaction has committed. Reads go through the read
//! pool. Every operation records an audit event through the writer; detokenize
//! releases the card only after its event has committed.

mod admin;
mod audit_hook;
pub mod cvc;
mod detokenize;
pub mod erase;
pub mod idempotency;
pub mod inventory;
pub mod keyring;
mod keys;
pub mod migrate;
mod open;
mod personal;
pub mod relay;
pub mod request;
pub mod shamir;
mod state;
mod tokenize;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

use crate::core::token::Token;
use crate::error::VaultError;
use crate::store::{self, CardRow, JobOutcome, ReadPool, StoreError, Tx, Writer, WriterConfig};
pub use admin::{Admin, MasterRotation, RewrapProgress, RewrapSummary};
pub use audit_hook::{AuditAction, AuditOutcome, AuditRecord, append_admin_event, card_code};
pub use erase::{EraseTarget, Erasure, PurgeReport};
use keyring::Keyring;
pub use keys::{KeyInfo, default_kdf, list_keys};
pub use open::InitReport;
use request::{AccessContext, CardFacts, TokenInfo};
pub use state::VaultState;

/// A source of "now" (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// How to open a vault.
#[derive(Clone)]
pub struct VaultOptions {
    /// Now.
    pub clock: Clock,
    /// Writer tuning.
    pub writer: WriterConfig,
    /// Read connections kept idle.
    pub read_pool: usize,
    /// How long a caller waits for the writer before answering 503.
    pub write_timeout: Duration,
    /// When the writer signs audit checkpoints.
    pub checkpoint: panvault_audit::log::CheckpointPolicy,
    /// A file outside the data directory that every signed checkpoint is
    /// appended to (`[audit] checkpoint_witness`).
    pub checkpoint_witness: Option<PathBuf>,
    /// Where the data lives (`[storage]` of the server's configuration); `None`:
    /// as the data directory's `panvault.toml` says ([`store::Location::of`]).
    pub storage: Option<crate::config::StorageSettings>,
    /// How long a card security code given to tokenize is held for the relay
    /// (`[relay] cvc_ttl_secs`, at most an hour); `None`: no relay, and a
    /// request carrying a code is refused.
    pub cvc_ttl: Option<Duration>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            clock: system_clock(),
            writer: WriterConfig::default(),
            read_pool: 8,
            write_timeout: Duration::from_secs(10),
            checkpoint: panvault_audit::log::CheckpointPolicy::default(),
            checkpoint_witness: None,
            storage: None,
            cvc_ttl: None,
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("writer", &self.writer)
            .field("read_pool", &self.read_pool)
            .finish_non_exhaustive()
    }
}

struct Inner {
    data_dir: PathBuf,
    db: PathBuf,
    keys: RwLock<Arc<Keyring>>,
    /// A reload of changed keys failed: the keys above may be stale, so nothing is
    /// sealed until a reload succeeds.
    keys_stale: AtomicBool,
    /// Set by the writer when it refused to seal under a key that is no longer
    /// active in the database: the next tokenize or refresh reloads the keys.
    reload_wanted: Arc<AtomicBool>,
    /// The shared lock on the data directory, held while this vault is open, so
    /// that `master rotate` cannot replace the root key under it (SQLite; nodes
    /// on PostgreSQL share no directory).
    _serve_lock: Option<store::DirLock>,
    /// PostgreSQL: the node's pool (`None` on SQLite).
    pg_pool: Option<Arc<store::pg::PgPool>>,
    /// PostgreSQL: this node's presence on the database, through which it tells
    /// `master rotate` which root it holds.
    presence: Option<std::sync::Mutex<store::pg::Presence>>,
    writer: Writer<VaultState>,
    readers: ReadPool,
    opts: VaultOptions,
    /// Card rows, kept by the writer (see `DedupIndex`).
    tokens_stored: Arc<std::sync::atomic::AtomicI64>,
}

/// An open, unsealed vault. Cheap to clone (shared).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

/// `t` (Unix seconds, as stored in `column`) in RFC 3339. A value that is no
/// representable time is a corrupted row, never an empty string.
pub(crate) fn rfc3339(column: &'static str, t: i64) -> Result<String, VaultError> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .ok_or_else(|| corrupt_column(column))
}

/// A stored value the vault never writes: the error names the column, never the
/// value (a corrupted row may hold anything, even a card number).
pub(crate) fn corrupt_column(column: &'static str) -> VaultError {
    VaultError::Store(StoreError::Corrupt(format!(
        "{column} holds a value the vault never writes"
    )))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Vault {
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    fn keys(&self) -> Result<Arc<Keyring>, VaultError> {
        self.inner
            .keys
            .read()
            .map(|k| Arc::clone(&k))
            .map_err(|_| VaultError::KeyState("key lock poisoned".into()))
    }

    fn now(&self) -> OffsetDateTime {
        (self.inner.opts.clock)()
    }

    /// Today's date (for expiry checks).
    pub fn today(&self) -> time::Date {
        self.now().date()
    }

    /// Runs `job` on the writer and waits (bounded) for its answer.
    async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Tx<'_>, &mut VaultState) -> (bool, Result<T, VaultError>) + Send + 'static,
    ) -> Result<T, VaultError> {
        self.write_with(store::Hints::default(), job).await
    }

    /// As [`Vault::write`], for a job that announces what it will look up
    /// (`hints`: on PostgreSQL the writer looks a whole batch's up at once).
    async fn write_with<T: Send + 'static>(
        &self,
        hints: store::Hints,
        job: impl FnOnce(&Tx<'_>, &mut VaultState) -> (bool, Result<T, VaultError>) + Send + 'static,
    ) -> Result<T, VaultError> {
        let (tx, mut rx) = oneshot::channel::<Result<T, VaultError>>();
        let claim = Arc::new(store::Claim::default());
        let job_claim = Arc::clone(&claim);
        let job: store::Job<VaultState> = Box::new(move |conn, state| {
            if job_claim.abandoned() {
                // The caller stopped waiting (it was answered 503, e.g. while the
                // database was down): do nothing, so that what it was told
                // stays true.
                return JobOutcome {
                    keep: true,
                    completion: Box::new(|_| {}),
                    claim: None,
                };
            }
            let (keep, result) = job(conn, state);
            JobOutcome {
                keep,
                completion: Box::new(move |committed| {
                    let answer = match committed {
                        Ok(()) => result,
                        // The batch did not commit: storage trouble (disk full,
                        // read-only, locked) is `unavailable`; operations that exist
                        // only to be audited turn it into `audit_unavailable` themselves.
                        Err(e) => Err(VaultError::Store(e)),
                    };
                    let _ = tx.send(answer);
                }),
                claim: Some(job_claim),
            }
        });
        self.inner.writer.submit_with(job, hints)?;
        let wait = self.inner.opts.write_timeout;
        let answer = match tokio::time::timeout(wait, &mut rx).await {
            Ok(answer) => answer,
            // Out of time: abandon the job, unless the writer is committing it
            // already; then its outcome is the answer (a commit is bounded by the
            // database's own timeouts: wait once more at most).
            Err(_) if claim.try_abandon() => {
                return Err(VaultError::Store(StoreError::Unavailable(
                    "writer did not answer in time",
                )));
            }
            Err(_) => match tokio::time::timeout(wait, &mut rx).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(VaultError::Store(StoreError::Unavailable(
                        "the write's commit did not finish in time; whether it committed is \
                         unknown",
                    )));
                }
            },
        };
        answer.unwrap_or_else(|_| {
            Err(VaultError::Store(StoreError::Unavailable(
                "writer dropped the job",
            )))
        })
    }

    /// Deletes a token of `tenant`.
    pub async fn delete(
        &self,
        tenant: &str,
        token: &str,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let tenant = tenant.to_owned();
        let token_s = token.to_owned();
        let ctx = ctx.clone();
        let now = self.now().unix_timestamp();
        self.write(move |conn, state| {
            let parsed = Token::parse(&token_s);
            let result = match &parsed {
                None => Err(VaultError::NotFound),
                Some(t) => erase::note_deleted(
                    conn.delete_live_token(&tenant, t.as_str(), now),
                    Some(&mut state.dedup),
                )
                .and_then(|n| {
                    if n == 0 {
                        Err(VaultError::NotFound)
                    } else {
                        Ok(())
                    }
                }),
            };
            let rec = AuditRecord {
                action: AuditAction::Delete,
                tenant: Some(&tenant),
                token: parsed.as_ref().map(Token::as_str),
                purpose: None,
                subject: None,
                outcome: match &result {
                    Ok(()) => AuditOutcome::Success,
                    Err(e) => AuditOutcome::from_error(e),
                },
                details: None,
            };
            // A refused delete changed nothing; its event is still recorded.
            match state.record(conn, &keys, &ctx, &rec, now) {
                Ok(_) => (true, result),
                Err(e) => (false, Err(e)),
            }
        })
        .await
    }

    /// Records an event for a read-only operation and waits until it is durable.
    async fn audit_only<T>(
        &self,
        action: AuditAction,
        tenant: &str,
        token: &str,
        purpose: Option<&str>,
        result: &Result<T, VaultError>,
        ctx: &AccessContext,
    ) -> Result<(), VaultError> {
        let outcome = match result {
            Ok(_) => AuditOutcome::Success,
            Err(e) => AuditOutcome::from_error(e),
        };
        let token = Token::parse(token);
        let rec = AuditRecord {
            action,
            tenant: Some(tenant),
            token: token.as_ref().map(Token::as_str),
            purpose,
            subject: None,
            outcome,
            details: None,
        };
        self.append_event(ctx, &rec).await.map(|_| ())
    }

    /// Records an event that is not part of a data operation: a request refused
    /// before reaching one (authentication, authorization, validation), the
    /// server starting or stopping. Waits until it is durable.
    pub async fn record_event(
        &self,
        ctx: &AccessContext,
        action: AuditAction,
        tenant: Option<&str>,
        token: Option<&str>,
        outcome: AuditOutcome,
        details: Option<&str>,
    ) -> Result<u64, VaultError> {
        let token = token.and_then(Token::parse);
        let rec = AuditRecord {
            action,
            tenant,
            token: token.as_ref().map(Token::as_str),
            purpose: None,
            subject: None,
            outcome,
            details,
        };
        self.append_event(ctx, &rec).await
    }

    /// Appends the event of `rec` on its own and waits until it is durable; a
    /// failure is [`VaultError::AuditUnavailable`]. The event is built here, on the
    /// caller's thread: the writer only chains and inserts it.
    async fn append_event(
        &self,
        ctx: &AccessContext,
        rec: &AuditRecord<'_>,
    ) -> Result<u64, VaultError> {
        let keys = self.keys()?;
        let ev = audit_hook::build_event(&keys, ctx, rec, self.now().unix_timestamp())?;
        self.write(
            move |conn, state| match state.audit_mut().append(conn, &ev) {
                Ok(seq) => (true, Ok(seq)),
                Err(e) => (false, Err(e)),
            },
        )
        .await
        .map_err(audit_unavailable)
    }

    /// Cards the in-memory dedup index remembers (one per live card and tenant; a
    /// deleted, erased or purged card is forgotten once its batch commits). For
    /// tests and diagnostics: asks the writer thread.
    #[doc(hidden)]
    pub async fn dedup_entries(&self) -> Result<usize, VaultError> {
        self.write(|_, state| (true, Ok(state.dedup.len()))).await
    }

    /// Number of tokens stored.
    pub fn token_count(&self) -> Result<i64, VaultError> {
        let conn = self.inner.readers.get()?;
        Ok(conn.card_count()?)
    }

    /// Sets the running count of [`Vault::tokens_stored`] to the table's count
    /// (PostgreSQL: other nodes insert and delete too; called every minute, or
    /// every `PANVAULT_TOKEN_RECOUNT_SECS`).
    pub fn refresh_token_count(&self) -> Result<(), VaultError> {
        let n = self.token_count()?;
        self.inner
            .tokens_stored
            .store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Tokens stored, from the running count the writer keeps (counted once at
    /// open; no query). SQLite: deletions made by another process (the CLI's
    /// `erase`, `retention run`) show only after a restart. PostgreSQL: the count
    /// of the whole table, read again every minute ([`Vault::refresh_token_count`]),
    /// plus this node's own changes since.
    pub fn tokens_stored(&self) -> i64 {
        self.inner
            .tokens_stored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the writer after the jobs already queued.
    pub fn shutdown(&self) {
        self.inner.writer.shutdown();
    }

    /// The database path (SQLite; empty on PostgreSQL).
    pub fn db_path(&self) -> &Path {
        &self.inner.db
    }

    /// PostgreSQL: holds this node's presence lock again if its connection broke
    /// (blocking; called every second beside [`Vault::refresh_keys`]).
    pub fn keep_presence(&self) -> Result<(), VaultError> {
        if let Some(p) = &self.inner.presence {
            p.lock()
                .map_err(|_| VaultError::internal("presence lock poisoned"))?
                .keep()?;
        }
        Ok(())
    }

    /// Whether the vault's data is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.inner.pg_pool.is_some()
    }

    /// Whether the database answers now (PostgreSQL: a connection of the node's
    /// pool runs an empty query; SQLite: a read connection opens). For
    /// `/healthz`.
    pub fn database_reachable(&self) -> bool {
        match self.inner.readers.get() {
            Ok(r) => r.ping().is_ok(),
            Err(_) => false,
        }
    }

    /// After a commit that deleted card data: SQLite truncates its WAL
    /// ([`store::scrub_wal`]); PostgreSQL vacuums the tables. Whether it ran.
    pub(crate) async fn scrub_deleted(&self) -> bool {
        if self.is_postgres() {
            let v = self.clone();
            let now = self.now().unix_timestamp();
            return tokio::task::spawn_blocking(move || {
                v.inner.readers.get().and_then(|r| r.vacuum(now)).is_ok()
            })
            .await
            .unwrap_or(false);
        }
        let db = self.db_path().to_owned();
        tokio::task::spawn_blocking(move || {
            store::scrub_wal(&db, std::time::Duration::from_secs(5))
        })
        .await
        .unwrap_or(false)
    }
}

/// For an operation that exists to leave an audit trace: storage that cannot take
/// the event is `audit_unavailable` (the access is refused, fail closed).
fn audit_unavailable(e: VaultError) -> VaultError {
    if e.is_unavailable() {
        VaultError::AuditUnavailable(Some(Box::new(e)))
    } else {
        e
    }
}

/// A tenant name: 1–64 of `[A-Za-z0-9._-]`.
pub fn validate_tenant(tenant: &str) -> Result<(), VaultError> {
    if tenant.is_empty()
        || tenant.len() > 64
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(VaultError::invalid(
            "tenant",
            "1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(())
}

/// The service's reading of a stored row: each column checked for what the vault
/// writes there before it is shown.
trait StoredCard {
    fn exp_month(&self) -> Result<u8, VaultError>;
    fn exp_year(&self) -> Result<u16, VaultError>;
    fn metadata(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, VaultError>;
    fn check(&self) -> Result<(), VaultError>;
    fn info(self, deduplicated: bool) -> Result<TokenInfo, VaultError>;
}

impl StoredCard for CardRow {
    /// The stored month, 1 to 12.
    fn exp_month(&self) -> Result<u8, VaultError> {
        u8::try_from(self.exp_month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| corrupt_column("cards.exp_month"))
    }

    /// The stored four-digit year.
    fn exp_year(&self) -> Result<u16, VaultError> {
        u16::try_from(self.exp_year).map_err(|_| corrupt_column("cards.exp_year"))
    }

    /// The stored metadata: absent, or the JSON object the vault wrote.
    fn metadata(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, VaultError> {
        self.metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt_column("cards.metadata"))
    }

    /// Whether every column [`StoredCard::info`] shows holds what the vault writes there.
    fn check(&self) -> Result<(), VaultError> {
        self.exp_month()?;
        self.exp_year()?;
        self.metadata()?;
        rfc3339("cards.created_at", self.created_at)?;
        self.expires_at
            .map(|e| rfc3339("cards.expires_at", e))
            .transpose()?;
        Ok(())
    }

    /// The stored facts, as answered. A column holding what the vault never writes
    /// fails the read (naming the column), never turns into a plausible value.
    fn info(self, deduplicated: bool) -> Result<TokenInfo, VaultError> {
        let (exp_month, exp_year, metadata) =
            (self.exp_month()?, self.exp_year()?, self.metadata()?);
        Ok(TokenInfo {
            card: CardFacts {
                exp_month,
                exp_year,
                brand: self.brand,
                bin: self.bin,
                last4: self.last4,
            },
            metadata,
            created_at: rfc3339("cards.created_at", self.created_at)?,
            expires_at: self
                .expires_at
                .map(|e| rfc3339("cards.expires_at", e))
                .transpose()?,
            token: self.token,
            fingerprint: hex(&self.fingerprint),
            key_version: self.key_version,
            subject: self.subject,
            deduplicated,
            updated: Vec::new(),
            cvc: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> CardRow {
        CardRow {
            id: 1,
            token: "tok".into(),
            tenant: "shop".into(),
            key_version: 1,
            nonce: vec![0; 12],
            ciphertext: vec![0; 32],
            fingerprint: vec![0; 4],
            brand: "visa".into(),
            bin: "424242".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2031,
            subject: None,
            metadata: Some(r#"{"order":"A-1"}"#.into()),
            created_at: 1_700_000_000,
            expires_at: None,
            sealed_personal: None,
        }
    }

    fn corrupt_column_of(r: CardRow) -> String {
        match r.info(false) {
            Err(VaultError::Store(StoreError::Corrupt(msg))) => msg,
            Err(e) => panic!("not a corrupt-row error: {e}"),
            Ok(_) => panic!("a corrupted row was served"),
        }
    }

    #[test]
    fn a_row_with_a_corrupted_column_is_reported_not_served() {
        let info = row().info(false).unwrap();
        assert_eq!((info.card.exp_month, info.card.exp_year), (12, 2031));
        assert!(info.metadata.is_some());
        for (column, bad) in [
            (
                "cards.exp_month",
                CardRow {
                    exp_month: 300,
                    ..row()
                },
            ),
            (
                "cards.exp_month",
                CardRow {
                    exp_month: 0,
                    ..row()
                },
            ),
            (
                "cards.exp_year",
                CardRow {
                    exp_year: -1,
                    ..row()
                },
            ),
            (
                "cards.metadata",
                CardRow {
                    metadata: Some("{oops".into()),
                    ..row()
                },
            ),
            (
                "cards.created_at",
                CardRow {
                    created_at: i64::MAX,
                    ..row()
                },
            ),
            (
                "cards.expires_at",
                CardRow {
                    expires_at: Some(i64::MIN),
                    ..row()
                },
            ),
        ] {
            assert!(bad.check().is_err(), "{column}");
            let msg = corrupt_column_of(bad);
            assert!(msg.starts_with(column), "{msg}");
            assert!(!msg.contains("300") && !msg.contains("oops"), "{msg}");
        }
    }
}
