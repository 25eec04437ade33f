//! A node's presence on the database, and how nodes follow a new root key.
//!
//! While a `panvault serve` node runs it holds [`SERVE_LOCK`] shared, on a
//! connection of its own named after its node id (`application_name`), so an
//! administrator (and `master rotate`) can tell which nodes hold the root key in
//! memory. Advisory session locks go with their connection: a killed node holds
//! nothing, and a node whose connection broke takes its locks again when it
//! reconnects ([`Presence::keep`], every second). It also holds its node id
//! exclusively ([`NODE_LOCK`]): a second process with the same id is refused at
//! start, since two writers of one audit chain under load fail each other's
//! batches.
//!
//! Root succession: `master rotate` runs while nodes serve. In its transaction it
//! stores the new root wrapped under the old one in `root_successors` (an UNLOGGED
//! table: no WAL, so never in a WAL archive, a replica or a base backup), keyed by
//! the old root's public id. A node that sees the new seal unwraps the successor
//! with the root it holds, checks that it opens the keys, swaps it in and
//! acknowledges by holding [`ROOT_ACK_LOCK`] shared on the new root's id on this
//! same connection ([`Presence::acknowledge`]). `master rotate` waits (bounded)
//! until every present node holds it ([`followers`]), then deletes the row. A row
//! older than [`SUCCESSOR_TTL_SECS`] (a `master rotate` killed before it deleted
//! its row) is deleted by any node within a second ([`Presence::keep`]) and by the
//! next admin command ([`sweep_successors`]).

use postgres::GenericClient;

use super::{PgError, PgSettings, session::blocking};
use crate::store::StoreError;

/// The advisory lock every serving node holds shared on its presence
/// connection: "PNVS".
pub(crate) const SERVE_LOCK: i64 = 0x504E_5653;

/// The class of the advisory locks on node ids ("PNVN"; the object is the id's
/// `hashtext`), held exclusively by the serving node of that id.
pub(crate) const NODE_LOCK: i32 = 0x504E_564E;

/// The class of the advisory locks a node holds shared on the root it holds
/// ("PNVR"; the object is [`ack_object`] of the root's public id).
pub(crate) const ROOT_ACK_LOCK: i32 = 0x504E_5652;

/// Seconds after which a successor row is deleted by whoever sees it, whether
/// or not every node followed: longer than any wait of `master rotate` (at most
/// 20 s), short enough that the old root and the database stop yielding the new
/// root soon after a killed rotation.
pub const SUCCESSOR_TTL_SECS: i64 = 30;

/// The prefix of a presence connection's `application_name`, before the node id.
const APP_PREFIX: &str = "panvault-node ";

/// The lock object for a root's public id (hex): its first 28 bits, so it is
/// non-negative and shows in `pg_locks.objid` as the same number. Two roots in a
/// row sharing them (2⁻²⁸) would only make `master rotate` count a node that did
/// not follow as followed; such a node still refuses to wrap under its old root.
fn ack_object(root_id: &str) -> Result<i32, PgError> {
    root_id
        .get(..7)
        .and_then(|h| i32::from_str_radix(h, 16).ok())
        .ok_or_else(|| PgError::Corrupt("a root id is not hexadecimal".into()))
}

/// A node's own connection holding [`SERVE_LOCK`] shared.
pub struct Presence {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Option<postgres::Client>,
    /// The lock object of the root this node holds, once acknowledged.
    ack: Option<i32>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("held", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// Connects and takes the lock.
    pub fn take(settings: &PgSettings) -> Result<Presence, StoreError> {
        let (mut config, tls) = super::connect::driver_config(settings)?;
        let node = super::session::node_id();
        config.application_name(&format!("{APP_PREFIX}{}", node.as_str()));
        let mut p = Presence {
            config,
            tls,
            client: None,
            ack: None,
        };
        p.keep()?;
        Ok(p)
    }

    /// Checks the connection (deleting any successor row past its time on the
    /// way); when it broke, connects again and takes the locks.
    pub fn keep(&mut self) -> Result<(), StoreError> {
        if let Some(c) = self.client.as_mut()
            && !c.is_closed()
            && blocking(|| {
                // A sweep that fails on a live connection (a schema not migrated
                // yet) is retried next time; only a dead connection is replaced.
                sweep_successors(c).is_ok() || c.simple_query("").is_ok()
            })
        {
            return Ok(());
        }
        let old = self.client.take();
        blocking(|| drop(old));
        let (config, tls, ack) = (&self.config, self.tls.clone(), self.ack);
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
            if let Some(a) = ack {
                c.execute(
                    "SELECT pg_advisory_lock_shared($1, $2)",
                    &[&ROOT_ACK_LOCK, &a],
                )?;
            }
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

    /// Says that this node holds the root whose public id is `root_id` (at start,
    /// and after following a `master rotate`): holds [`ROOT_ACK_LOCK`] on it,
    /// releasing the previous one. When the connection fails meanwhile, it is
    /// dropped and [`Presence::keep`] takes the locks again, this one included.
    pub fn acknowledge(&mut self, root_id: &str) -> Result<(), StoreError> {
        let next = ack_object(root_id)?;
        let previous = self.ack.replace(next);
        if previous == Some(next) {
            return Ok(());
        }
        let Some(c) = self.client.as_mut() else {
            return self.keep();
        };
        let done = blocking(|| -> Result<(), PgError> {
            c.execute(
                "SELECT pg_advisory_lock_shared($1, $2)",
                &[&ROOT_ACK_LOCK, &next],
            )?;
            if let Some(p) = previous {
                c.execute(
                    "SELECT pg_advisory_unlock_shared($1, $2)",
                    &[&ROOT_ACK_LOCK, &p],
                )?;
            }
            Ok(())
        });
        if done.is_err() {
            let old = self.client.take();
            blocking(|| drop(old));
            return self.keep();
        }
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

/// A successor row: the root whose public id is `to`, wrapped under the root
/// whose id is the row's key.
#[derive(Debug)]
pub struct RootSuccessor {
    /// The new root's public id.
    pub to: String,
    /// The new root, wrapped under the old one.
    pub wrapped: Vec<u8>,
}

/// Stores `wrapped` (the root `to`, wrapped under the root `from`), replacing a
/// successor of `from`.
pub fn put_successor(
    c: &mut impl GenericClient,
    from: &str,
    to: &str,
    wrapped: &[u8],
) -> Result<(), PgError> {
    c.execute(
        "INSERT INTO root_successors (from_id, to_id, wrapped) VALUES ($1, $2, $3)
         ON CONFLICT (from_id) DO UPDATE SET to_id = EXCLUDED.to_id,
             wrapped = EXCLUDED.wrapped, created_at = now()",
        &[&from, &to, &wrapped],
    )?;
    Ok(())
}

/// The successor of the root `from`, if stored.
pub fn successor(c: &mut impl GenericClient, from: &str) -> Result<Option<RootSuccessor>, PgError> {
    c.query_opt(
        "SELECT to_id, wrapped FROM root_successors WHERE from_id = $1",
        &[&from],
    )?
    .map(|r| {
        Ok(RootSuccessor {
            to: r.try_get(0)?,
            wrapped: r.try_get(1)?,
        })
    })
    .transpose()
}

/// Deletes the successor of the root `from`; whether there was one.
pub fn delete_successor(c: &mut impl GenericClient, from: &str) -> Result<bool, PgError> {
    Ok(c.execute("DELETE FROM root_successors WHERE from_id = $1", &[&from])? > 0)
}

/// Deletes every successor row older than [`SUCCESSOR_TTL_SECS`] (the
/// database's clock); how many.
pub fn sweep_successors(c: &mut impl GenericClient) -> Result<u64, PgError> {
    Ok(c.execute(
        "DELETE FROM root_successors WHERE created_at < now() - $1::bigint * interval '1 second'",
        &[&SUCCESSOR_TTL_SECS],
    )?)
}

/// A serving node as `master rotate` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFollowing {
    /// Its node id (from its presence connection's `application_name`; the
    /// backend's process id when that is not visible).
    pub node: String,
    /// Whether it holds the root asked about.
    pub follows: bool,
}

/// Every node present on this database now (holding [`SERVE_LOCK`]), and whether
/// it acknowledged the root whose public id is `root_id`.
pub fn followers(c: &mut impl GenericClient, root_id: &str) -> Result<Vec<NodeFollowing>, PgError> {
    let object = i64::from(ack_object(root_id)?);
    let rows = c.query(
        "SELECT a.application_name, l.pid,
                    EXISTS (SELECT 1 FROM pg_locks m
                             WHERE m.pid = l.pid AND m.locktype = 'advisory' AND m.granted
                               AND m.database = l.database AND m.objsubid = 2
                               AND m.classid::bigint = $1 AND m.objid::bigint = $2)
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::bigint = 0 AND l.objid::bigint = $3
              ORDER BY 1, 2",
        &[&i64::from(ROOT_ACK_LOCK), &object, &SERVE_LOCK],
    )?;
    rows.iter()
        .map(|r| {
            let name: Option<String> = r.try_get(0)?;
            let pid: i32 = r.try_get(1)?;
            let node = name
                .as_deref()
                .and_then(|n| n.strip_prefix(APP_PREFIX))
                .map_or_else(|| format!("(backend {pid})"), str::to_owned);
            Ok(NodeFollowing {
                node,
                follows: r.try_get(2)?,
            })
        })
        .collect()
}
