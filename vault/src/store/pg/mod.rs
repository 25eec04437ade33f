//! The PostgreSQL engine, for several stateless vault nodes on one database.
//!
//! Behind the store's seam (`store::handle`): the connection settings (a URL or a
//! file holding it; the password never printed), connecting over TLS verified with
//! rustls and *ring*, a node's bounded pool, the versioned schema, the twins below,
//! and the audit log's per-node chains and export ([`audit`]).
//!
//! Every function of `store::{meta, keys, cards, rewrap, erasure, inventory, cvc,
//! idempotency}` the
//! store's handles call has a twin here in the module of the same name, with the
//! same name, arguments and result, taking any [`postgres::GenericClient`] (a
//! transaction or a plain connection) and failing with [`PgError`]. The exceptions
//! are on purpose, because PostgreSQL stores no personal data in clear: where the
//! SQLite function takes or yields a subject, the twin takes or yields its keyed
//! hash (`erasure::delete_subject`, `cards::for_each_fingerprint`, and the card
//! functions that were written for PostgreSQL first: `cards::insert`,
//! `cards::by_token`, `cards::live_dedup_row`), and metadata is passed sealed
//! (`cards::update_terms`, `cards::insert`). SQLite's WAL scrub
//! (`Tx::mark_scrub_pending`, `Session::scrub_wal`) has no twin: it has no
//! PostgreSQL meaning (see [`erasure`]).

/// Log filters the binaries add unless `PANVAULT_LOG` names the crate: the driver
/// logs every statement's parameters at DEBUG, and those are sealed cards, keyed
/// hashes and wrapped keys — nothing an operator's debug log needs.
pub const LOG_DIRECTIVES: &[&str] = &["tokio_postgres=info", "postgres=info"];

pub mod audit;
mod batch;
pub mod cards;
mod connect;
pub mod cvc;
pub mod erasure;
pub mod idempotency;
pub mod inventory;
pub mod keys;
pub mod meta;
pub mod migrate;
pub mod personal;
mod pool;
mod presence;
pub mod reads;
pub mod rewrap;
pub mod schema;
pub(crate) mod session;
mod settings;

use std::path::PathBuf;

pub use audit::PgLog;
pub use connect::{client_tls_config, connect};
pub use pool::{CachingClient, PgManager, PgPool, PooledClient};
/// A connection to the database (the synchronous driver's client).
pub use postgres::Client as PgClient;
pub use presence::{NodeFollowing, Presence, RootSuccessor, SUCCESSOR_TTL_SECS};
pub(crate) use presence::{
    delete_successor, followers, put_successor, successor, sweep_successors,
};
pub use session::{name_serving_node, node_id};
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, MAX_POOL_SIZE, PgHost, PgSettings, SslMode,
};

/// A failure of the PostgreSQL engine. Never carries the password or a URL's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL is malformed or asks for something unsupported (described, not quoted).
    #[error("PostgreSQL URL: {0}")]
    Url(String),
    /// The file holding the URL could not be read.
    #[error("reading the PostgreSQL URL from {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The CA file of `sslrootcert` could not be used.
    #[error("PostgreSQL CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// rustls refused the TLS settings.
    #[error("PostgreSQL TLS settings: {0}")]
    Tls(#[source] rustls::Error),
    /// The server or the connection to it failed.
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[source] postgres::Error),
    /// No connection within the wait (all in use, or the database unreachable: the
    /// last connection error, if any, is the source).
    #[error("no PostgreSQL connection within {wait:?}: {source}")]
    Pool {
        /// How long the caller waited.
        wait: std::time::Duration,
        /// r2d2's error (the last connection error's message).
        #[source]
        source: r2d2::Error,
    },
    /// The database holds a newer schema than this build knows: refused rather
    /// than written with assumptions that may no longer hold.
    #[error(
        "the PostgreSQL schema is version {found}, newer than this build knows ({known}): upgrade panvault"
    )]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The database holds tables that are not panvault's.
    #[error("the PostgreSQL database is not a panvault database: {0}")]
    Foreign(String),
    /// A stored value is impossible (out of its type's range, an unknown key state,
    /// a negative count): the database is broken, and says so rather than being
    /// read as a plausible value. Never quotes the value.
    #[error("corrupt PostgreSQL data: {0}")]
    Corrupt(String),
    /// The target of a migration already holds a vault (or any row): a migration
    /// only fills an empty database.
    #[error("the PostgreSQL database is not empty: {0}")]
    NotEmpty(String),
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl PgError {
    /// The SQLSTATE of a server error (e.g. `40001` serialization failure).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Db(e) => e.code().map(postgres::error::SqlState::code),
            _ => None,
        }
    }
}

/// A value stored as `bigint` that the vault reads as `u32` (a key version, a KDF
/// parameter): out of range is corruption, never truncated. `what` names the
/// column, never the value.
fn stored_u32(v: i64, what: &str) -> Result<u32, PgError> {
    u32::try_from(v).map_err(|_| PgError::Corrupt(format!("{what} is out of range")))
}

/// As [`stored_u32`], for `u8` columns (a share count).
fn stored_u8(v: i64, what: &str) -> Result<u8, PgError> {
    u8::try_from(v).map_err(|_| PgError::Corrupt(format!("{what} is out of range")))
}

/// A server error as its message and SQLSTATE, without DETAIL (which can quote
/// row values, e.g. the key of a unique violation); other errors as they are.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
