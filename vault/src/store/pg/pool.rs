//! A node's bounded pool of connections: at most `pool_size` of them, a caller waits
//! at most the connect timeout for one (then the store answers "unavailable"), and a
//! connection the server dropped (restart, failover) is replaced at checkout.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use postgres::Statement;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::{PgError, PgSettings};

/// Opens and checks connections for [`r2d2`].
pub struct PgManager {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    /// The settings as printed (the password redacted).
    shown: String,
}

impl fmt::Debug for PgManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgManager")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

/// A client of the pool with the statements it has prepared: a statement given
/// as text is parsed by the server on every call (one more round trip), so the
/// statements of the hot paths are prepared once per connection and kept.
pub struct CachingClient {
    client: postgres::Client,
    prepared: HashMap<&'static str, Statement>,
}

impl fmt::Debug for CachingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingClient")
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl CachingClient {
    /// `sql` prepared on this connection (once; later calls answer the kept one).
    pub fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }
}

impl Deref for CachingClient {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl DerefMut for CachingClient {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl r2d2::ManageConnection for PgManager {
    type Connection = CachingClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<CachingClient, postgres::Error> {
        Ok(CachingClient {
            client: self.config.connect(self.tls.clone())?,
            prepared: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut CachingClient) -> Result<(), postgres::Error> {
        conn.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut CachingClient) -> bool {
        conn.is_closed()
    }
}

/// A connection checked out of a [`PgPool`]; back in the pool when dropped.
pub type PooledClient = r2d2::PooledConnection<PgManager>;

/// The bounded pool of one node.
#[derive(Debug)]
pub struct PgPool {
    pool: r2d2::Pool<PgManager>,
    wait: Duration,
}

impl PgPool {
    /// A pool for the settings. Opens no connection yet: a node may start while
    /// the database is down, and its requests are refused until it is back.
    pub fn open(settings: &PgSettings) -> Result<PgPool, PgError> {
        let (config, tls) = super::connect::driver_config(settings)?;
        let manager = PgManager {
            config,
            tls,
            shown: settings.to_string(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(u32::from(settings.pool_size))
            .min_idle(Some(0))
            .connection_timeout(settings.connect_timeout)
            // One empty round trip per checkout buys that a connection the server
            // closed (a restart) fails here and is replaced, not in the caller's
            // transaction.
            .test_on_check_out(true)
            // Failures reach the caller through `get`; r2d2's own logging goes
            // through the `log` crate, which the vault does not route.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(PgPool {
            pool,
            wait: settings.connect_timeout,
        })
    }

    /// A connection, waiting at most the connect timeout for one to be free or
    /// opened.
    pub fn get(&self) -> Result<PooledClient, PgError> {
        self.pool.get().map_err(|source| PgError::Pool {
            wait: self.wait,
            source,
        })
    }

    /// The most connections this pool holds.
    pub fn max_size(&self) -> u32 {
        self.pool.max_size()
    }
}
