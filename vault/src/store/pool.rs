//! A small pool of read-only connections (SQLite), or the node's PostgreSQL pool.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::pg::reads::AsyncReads;
use super::pg::session::PgConn;
use super::pg::{PgPool, PgSettings};
use super::{CardRow, Reader, StoreError, open_reader};

/// Read connections, opened on demand and kept for reuse.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// PostgreSQL: the node's bounded pool (its clients read outside any
    /// transaction; a dead one is replaced at checkout).
    pg: Option<std::sync::Arc<PgPool>>,
    /// PostgreSQL: the request path's reads ([`ReadPool::card_by_token`]).
    pg_reads: Option<AsyncReads>,
}

impl ReadPool {
    /// A pool over the database at `path`, keeping at most `max_idle` connections.
    pub fn new(path: PathBuf, max_idle: usize) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle,
            pg: None,
            pg_reads: None,
        }
    }

    /// Readers from the node's PostgreSQL pool, and the request path's own
    /// read connections for `settings`.
    pub fn postgres(
        pool: std::sync::Arc<PgPool>,
        settings: &PgSettings,
    ) -> Result<Self, super::pg::PgError> {
        Ok(ReadPool {
            path: PathBuf::new(),
            idle: Mutex::new(Vec::new()),
            max_idle: 0,
            pg: Some(pool),
            pg_reads: Some(AsyncReads::new(settings)?),
        })
    }

    /// The row of `token` in `tenant` (expired or not): the read of every
    /// request that names a token. On PostgreSQL it waits without holding a
    /// worker thread (see `pg::reads`).
    pub async fn card_by_token(
        &self,
        token: &str,
        tenant: &str,
    ) -> Result<Option<CardRow>, StoreError> {
        match &self.pg_reads {
            Some(reads) => reads
                .card_by_token(token, tenant)
                .await?
                .map(super::handle::from_pg)
                .transpose()
                .map_err(StoreError::from),
            None => self.get()?.card_by_token(token, tenant),
        }
    }

    /// A reader, whose connection returns to the pool when dropped.
    pub fn get(&self) -> Result<Reader<'_>, StoreError> {
        if let Some(pool) = &self.pg {
            return Ok(Reader::pg(PgConn::from_pool(std::sync::Arc::clone(pool))?));
        }
        let conn = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(_) => None,
        };
        let conn = match conn {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        Ok(Reader::pooled(PooledConn {
            pool: self,
            conn: Some(conn),
        }))
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        // Closing PostgreSQL clients blocks on the driver's runtime.
        let pg = self.pg.take();
        super::pg::session::blocking(|| drop(pg));
    }
}

/// A read connection borrowed from a [`ReadPool`].
#[derive(Debug)]
pub(super) struct PooledConn<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Always Some until drop.
        match &self.conn {
            Some(c) => c,
            None => unreachable_conn(),
        }
    }
}

#[allow(clippy::panic)] // invariant: `conn` is taken only in `drop`
fn unreachable_conn() -> ! {
    panic!("pooled connection used after drop")
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < self.pool.max_idle
        {
            idle.push(c);
        }
    }
}
