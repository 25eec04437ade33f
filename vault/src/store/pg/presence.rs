//! A node's presence on the database: while a `panvault serve` node runs it holds
//! [`SERVE_LOCK`] shared, on a connection of its own, so `master rotate` (which
//! needs it exclusively, see `Tx::no_node_serving`) can tell that nodes hold the
//! root key in memory and refuse, and a node cannot start in the middle of one.
//! Advisory session locks go with their connection: a killed node holds nothing,
//! and a node whose connection broke takes the lock again when it reconnects
//! ([`Presence::keep`], every second). It also holds its node id exclusively
//! ([`NODE_LOCK`]): a second process with the same id is refused at start, since
//! two writers of one audit chain under load fail each other's batches.

use super::{PgError, PgSettings, session::blocking};
use crate::store::StoreError;

/// The advisory lock of serving nodes (shared) against `master rotate`
/// (exclusive): "PNVS".
pub(crate) const SERVE_LOCK: i64 = 0x504E_5653;

/// The class of the advisory locks on node ids ("PNVN"; the object is the id's
/// `hashtext`), held exclusively by the serving node of that id.
pub(crate) const NODE_LOCK: i32 = 0x504E_564E;

/// A node's own connection holding [`SERVE_LOCK`] shared.
pub struct Presence {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Option<postgres::Client>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("held", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// Connects and takes the lock, waiting while a `master rotate` runs.
    pub fn take(settings: &PgSettings) -> Result<Presence, StoreError> {
        let (config, tls) = super::connect::driver_config(settings)?;
        let mut p = Presence {
            config,
            tls,
            client: None,
        };
        p.keep()?;
        Ok(p)
    }

    /// Checks the connection; when it broke, connects again and takes the lock.
    pub fn keep(&mut self) -> Result<(), StoreError> {
        if let Some(c) = self.client.as_mut()
            && !c.is_closed()
            && blocking(|| c.simple_query("")).is_ok()
        {
            return Ok(());
        }
        let old = self.client.take();
        blocking(|| drop(old));
        let (config, tls) = (&self.config, self.tls.clone());
        let node = super::session::node_id();
        let client = blocking(|| -> Result<Option<postgres::Client>, PgError> {
            let mut c = config.connect(tls)?;
            let mine: bool = c
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&NODE_LOCK, &node.as_str()],
                )?
                .try_get(0)?;
            if !mine {
                return Ok(None);
            }
            c.execute("SELECT pg_advisory_lock_shared($1)", &[&SERVE_LOCK])?;
            Ok(Some(c))
        })?;
        let client = client.ok_or_else(|| {
            StoreError::Config(format!(
                "another running node already uses the node id {:?} of the shared audit log; \
                 give each node its own with PANVAULT_NODE",
                node.as_str()
            ))
        })?;
        self.client = Some(client);
        Ok(())
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        // The driver's drop blocks on its runtime: never on an async worker as it is.
        let client = self.client.take();
        blocking(|| drop(client));
    }
}
