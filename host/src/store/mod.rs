//! Durable state. The runtime talks to small traits ([`KvStore`] for plugin
//! data, [`SessionStore`] for sessions, devices and the event log,
//! [`WebhookStore`] for the webhook registry and its outbox, [`PairingStore`]
//! for channel sender pairing, [`InboxStore`] and [`OutboxStore`] for the
//! durable channel inbox and outbox) so a cluster
//! mode can swap the embedded SQLite database ([`SqliteStore`]) for
//! PostgreSQL or Redis.
//!
//! The traits are synchronous; [`SqliteStore`] keeps its blocking work off
//! the async worker threads itself, writes through one connection and reads
//! through a pool of read-only ones, so a slow read or a big prune never
//! stalls the gateway. [`PgStore`] implements the same traits on a
//! PostgreSQL server (`--store postgres://...`); [`open`] picks one (see
//! `backend.rs`).

mod backend;
mod cluster;
mod columns;
pub mod conformance;
mod inbox;
mod leases;
pub mod node_id;
mod outbox;
mod pairing;
mod pool;
mod postgres;
mod prune;
mod readiness;
mod sessions;
mod sqlite;
mod sqlite_inbox;
mod sqlite_outbox;
mod sqlite_pairing;
mod sqlite_sessions;
mod sqlite_webhooks;
mod webhooks;

pub use backend::{SharedStore, Store, deserialize_store_config, open, sqlite_path};
pub use cluster::*;
pub use inbox::*;
pub use leases::*;
pub use outbox::*;
pub use pairing::*;
pub use postgres::{PgStore, is_postgres_url};
pub use prune::PRUNE_BATCH;
pub use sessions::*;
pub use sqlite::{SqliteStore, StoreConfig};
pub use webhooks::*;

/// The SQLite connection type [`SqliteStore::read`] and
/// [`SqliteStore::write_tx`] hand to their closures.
pub use rusqlite::Connection;

use std::sync::Arc;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "pincer.db";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A limit (key or value size, key count) was exceeded.
    #[error("{0}")]
    Limit(String),
    /// A stored value could not be decoded (e.g. JSON that does not parse);
    /// the message names the table and column.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database worker is gone.
    #[error("store is closed")]
    Closed,
    /// PostgreSQL failed (a query, or the connection under it).
    #[error("database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The database server cannot be reached (the message names it, never
    /// its password).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's configuration is unusable (a bad URL, a schema newer
    /// than this build).
    #[error("store configuration: {0}")]
    Config(String),
    /// A fenced write was refused: the lease it was made under was taken
    /// over by another node (nothing was written).
    #[error("fenced: {0}")]
    Fenced(String),
    /// An atomic update kept losing to other writers and gave up (retry
    /// later).
    #[error("contended: {0}")]
    Contended(String),
}

/// Per-plugin key-value storage. Keys are namespaced by plugin name, so one
/// plugin can never see another's data.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key` in `plugin`'s namespace.
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Set `key` in `plugin`'s namespace.
    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Remove `key` from `plugin`'s namespace.
    fn delete(&self, plugin: &str, key: &str) -> Result<(), StoreError>;
    /// Replace the value of `key` with `new` (`None`: delete it) if it is
    /// `expected` (`None`: absent); whether it was. Atomic in the database,
    /// so it holds between processes sharing the store (cluster nodes) and
    /// against every other write, not just those of this process.
    fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;
    /// Keys with `prefix` in `plugin`'s namespace, in order (at most `limit`).
    fn list_keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// How much `plugin` stores: its key count and the bytes of its keys
    /// plus values (for quotas).
    fn usage(&self, plugin: &str) -> Result<KvUsage, StoreError>;
}

/// Largest key a plugin may use.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Refuse a key or value over [`MAX_KEY_BYTES`] / [`MAX_VALUE_BYTES`]
/// (every [`KvStore`] applies the same limits).
pub fn check_kv_sizes(key: &str, value: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Limit(format!(
            "key longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Limit(format!(
            "value larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What one plugin stores in the key-value store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of keys plus values.
    pub bytes: u64,
}

/// A shared key-value store.
pub type SharedKv = Arc<dyn KvStore>;
