//! The request path's card reads on PostgreSQL, without blocking a worker
//! thread: a few connections of the asynchronous driver, each shared by every
//! request that reads through it (the driver pipelines their statements on the
//! one connection), with the read's statement prepared once per connection.
//!
//! The synchronous pool ([`super::PgPool`]) would park a tokio worker for each
//! read (`block_in_place` hands the worker's queue to a fresh thread every time)
//! and spend a round trip testing the connection at checkout; under load both
//! cost more than the read.
//!
//! A connection the server closed (a restart, a failover) is replaced by the
//! next read through it; a read that failed because its connection closed is
//! tried once more on a fresh one (a read changes nothing). Every read is
//! bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::cards::{BY_TOKEN, PgCardRow};
use super::{PgError, PgSettings};
use crate::store::StoreError;

/// How many connections a node reads through.
const CONNECTIONS: usize = 4;

/// One connection and its prepared statement.
struct Slot {
    client: Client,
    by_token: Statement,
}

/// A node's asynchronous read connections (opened on first use).
pub struct AsyncReads {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    slots: Vec<Mutex<Option<Arc<Slot>>>>,
    next: AtomicUsize,
    /// The longest a read may take, connecting included.
    limit: Duration,
}

impl std::fmt::Debug for AsyncReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReads")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl AsyncReads {
    /// Read connections for the settings; none is opened yet.
    pub fn new(settings: &PgSettings) -> Result<AsyncReads, PgError> {
        let (config, tls) = super::connect::async_driver_config(settings)?;
        let n = CONNECTIONS.min(usize::from(settings.pool_size)).max(1);
        Ok(AsyncReads {
            config,
            tls,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            // The connect timeout for the connection, as long again for the read.
            limit: settings.connect_timeout.saturating_mul(2),
        })
    }

    /// The row of `token` in `tenant` (expired or not), as [`super::cards::by_token`].
    pub async fn card_by_token(
        &self,
        token: &str,
        tenant: &str,
    ) -> Result<Option<PgCardRow>, StoreError> {
        match tokio::time::timeout(self.limit, self.by_token(token, tenant)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer a read in time",
            )),
        }
    }

    async fn by_token(&self, token: &str, tenant: &str) -> Result<Option<PgCardRow>, PgError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = self.slot(i).await?;
        match slot
            .client
            .query_opt(&slot.by_token, &[&token, &tenant])
            .await
        {
            Ok(row) => row.as_ref().map(PgCardRow::from_row).transpose(),
            // Its connection closed (the server restarted): once more on a new one.
            Err(_) if slot.client.is_closed() => {
                let slot = self.slot(i).await?;
                let row = slot
                    .client
                    .query_opt(&slot.by_token, &[&token, &tenant])
                    .await?;
                row.as_ref().map(PgCardRow::from_row).transpose()
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Connection `i`, opened (again) if it is not open.
    async fn slot(&self, i: usize) -> Result<Arc<Slot>, PgError> {
        let cell = self
            .slots
            .get(i)
            .ok_or_else(|| PgError::Foreign("no such read connection".into()))?;
        let mut held = cell.lock().await;
        if let Some(s) = held.as_ref()
            && !s.client.is_closed()
        {
            return Ok(Arc::clone(s));
        }
        *held = None;
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        // The connection's own task: it ends when the client is dropped or the
        // server closes it (the client then reports `is_closed`).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let by_token = client.prepare(BY_TOKEN.as_str()).await?;
        let slot = Arc::new(Slot { client, by_token });
        *held = Some(Arc::clone(&slot));
        Ok(slot)
    }
}
