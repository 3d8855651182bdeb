//! The embedded store: one SQLite file in WAL mode, with versioned
//! migrations, written through one connection and read through a pool (see
//! `pool.rs`), and the plugin key-value data.
//!
//! Other store modules reach the database only through
//! [`SqliteStore::read`] and [`SqliteStore::write_tx`]: both run off the
//! async worker threads, reads never wait for a write, and every write is
//! one `IMMEDIATE` transaction after which the webhook dispatcher is woken
//! if deliveries were inserted. A new table is a new entry at the end of
//! [`MIGRATIONS`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::MutexGuard;
use rusqlite::hooks::Action;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Deserialize;
use tokio::sync::Notify;

use super::check_kv_sizes;
use super::pool::{Pool, configure_writer, offload};
use super::readiness::WriteHealth;
use super::{KvStore, KvUsage, StoreError};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: plugin key-value data.
    "CREATE TABLE plugin_kv (
        plugin TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (plugin, key)
    ) WITHOUT ROWID;",
    // 2: sessions, transcripts, inbound dedupe, device pairing and the event
    // log (the webhook outbox). JSON columns hold serde_json text.
    "CREATE TABLE sessions (
        key          TEXT PRIMARY KEY NOT NULL,
        session_id   TEXT NOT NULL UNIQUE,
        agent_id     TEXT NOT NULL,
        channel      TEXT,
        conversation TEXT,
        created_ms   INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        message_count INTEGER NOT NULL DEFAULT 0,
        settings     TEXT NOT NULL DEFAULT '{}',
        last_preview TEXT
    );
    CREATE INDEX sessions_by_updated ON sessions (updated_ms DESC, key);
    -- session_key survives resets, so deleting a session can find every
    -- transcript it ever had.
    CREATE TABLE messages (
        session_id  TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        session_key TEXT NOT NULL,
        id          TEXT NOT NULL UNIQUE,
        role        TEXT NOT NULL,
        content     TEXT NOT NULL,
        ts          INTEGER NOT NULL,
        run_id      TEXT,
        stop_reason TEXT,
        meta        TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, seq)
    );
    CREATE INDEX messages_by_key ON messages (session_key);
    CREATE TABLE inbound_seen (
        channel    TEXT NOT NULL,
        message_id TEXT NOT NULL,
        ts         INTEGER NOT NULL,
        PRIMARY KEY (channel, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX inbound_seen_by_ts ON inbound_seen (ts);
    CREATE TABLE devices (
        device_id   TEXT PRIMARY KEY NOT NULL,
        public_key  TEXT NOT NULL,
        roles       TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        meta        TEXT NOT NULL,
        approved_ms INTEGER NOT NULL
    );
    -- One pending request per device (UNIQUE device_id).
    CREATE TABLE pair_requests (
        request_id TEXT PRIMARY KEY NOT NULL,
        device_id  TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        role       TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        meta       TEXT NOT NULL,
        ts         INTEGER NOT NULL
    );
    CREATE TABLE device_tokens (
        device_id    TEXT NOT NULL,
        role         TEXT NOT NULL,
        token_sha256 TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        issued_ms    INTEGER NOT NULL,
        PRIMARY KEY (device_id, role)
    ) WITHOUT ROWID;
    -- scope: 'session:<key>', 'plugin:<channel or plugin name>' or 'global';
    -- seq is contiguous per scope (the unique index also serves MAX(seq)).
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,
        session_key TEXT,
        scope       TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        ts          INTEGER NOT NULL,
        data        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_scope_seq ON events (scope, seq);",
    // 3: outgoing webhooks (registry, outbox, attempt log).
    "CREATE TABLE webhook_endpoints (
        id                         TEXT PRIMARY KEY NOT NULL,
        url                        TEXT NOT NULL,
        description                TEXT,
        events                     TEXT NOT NULL, -- JSON array of filters
        enabled                    INTEGER NOT NULL,
        secret                     TEXT NOT NULL,
        previous_secret            TEXT,
        previous_secret_expires_ms INTEGER,
        failing_since_ms           INTEGER,
        disabled_reason            TEXT,
        created_ms                 INTEGER NOT NULL,
        updated_ms                 INTEGER NOT NULL
    );
    -- One row per (event, endpoint), inserted in the event's transaction.
    CREATE TABLE webhook_deliveries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
        event_id        INTEGER NOT NULL,
        msg_id          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        body            TEXT NOT NULL,
        status          TEXT NOT NULL, -- pending, in_flight, delivered, failed
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,
        last_status     INTEGER,
        last_error      TEXT,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
    CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
    CREATE INDEX webhook_deliveries_due_by_endpoint
        ON webhook_deliveries (endpoint_id, status, next_attempt_ms);
    CREATE TABLE webhook_attempts (
        delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        attempt     INTEGER NOT NULL,
        ts_ms       INTEGER NOT NULL,
        status      INTEGER,
        latency_ms  INTEGER NOT NULL,
        error       TEXT,
        PRIMARY KEY (delivery_id, attempt)
    ) WITHOUT ROWID;",
    // 4: the event prune walks old events in (ts, id) order without a
    // table scan; the readiness probe writes (and deletes) a row here.
    "CREATE INDEX events_by_ts ON events (ts, id);
    CREATE TABLE store_probe (pad BLOB NOT NULL);",
    // 5: channel sender pairing (see store/sqlite_pairing.rs).
    super::sqlite_pairing::MIGRATION,
    // 6: the durable channel inbox and platform cursors (store/sqlite_inbox.rs).
    super::sqlite_inbox::MIGRATION,
    // 7: the durable channel outbox (store/sqlite_outbox.rs).
    super::sqlite_outbox::MIGRATION,
    // 8: exactly once on the channel path: sends in flight, delivery
    // statuses, attachment blobs, reply progress (store/sqlite_outbox.rs).
    super::sqlite_outbox::MIGRATION_EXACTLY_ONCE,
];

/// Settings of the embedded store (`[store]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Read-only connections serving reads while the writer writes
    /// (default 4, at least 1).
    pub readers: usize,
    /// The largest the database may grow, in MiB; `0` (the default) means
    /// no limit but the disk. Writes that would grow it further fail with
    /// "database or disk is full" and `/readyz` answers 503 until space is
    /// freed (by deleting data) or the limit is raised.
    pub max_db_mb: u64,
    /// Where the data lives instead of `<data-dir>/pincer.db`: a
    /// `postgres://user:password@host:port/db` URL (also `--store` and
    /// `PINCER_STORE`), or a SQLite file path. Unset (the default): SQLite
    /// in the data directory. A secret: it may carry a password.
    pub url: Option<crate::secret::Secret>,
    /// Most PostgreSQL connections the gateway keeps (default 8, at least
    /// 1); unused with SQLite.
    pub pool: u32,
    /// With PostgreSQL (cluster mode): how long a channel account's lease
    /// lasts, ms (default 15000, at least 1000). The holder renews it every
    /// third of that; when a node dies, another takes its accounts over
    /// within this time. Unused with SQLite (one node holds every lease).
    pub lease_ms: u64,
    /// With PostgreSQL (cluster mode): how often a node looks at the shared
    /// channel inbox and outbox (for the accounts it holds) and the webhook
    /// outbox without a wake-up, ms (default 5000, at least 10). A safety
    /// net only: commits on any node wake the node that serves them at
    /// once (`LISTEN`/`NOTIFY`). Unused with SQLite.
    pub safety_poll_ms: u64,
    /// With PostgreSQL: this node's id in leases and webhook claims
    /// (default: a random id per process). Two live processes must never
    /// share one.
    pub node_id: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            readers: 4,
            max_db_mb: 0,
            url: None,
            pool: 8,
            lease_ms: 15_000,
            safety_poll_ms: crate::channels::lease::DEFAULT_SAFETY_POLL_MS,
            node_id: None,
        }
    }
}

/// SQLite-backed store.
pub struct SqliteStore {
    pool: Pool,
    /// Set by the update hook when a webhook delivery row is inserted;
    /// taken after the transaction commits.
    deliveries_written: Arc<AtomicBool>,
    /// Notified when webhook deliveries are committed (see
    /// [`super::WebhookStore::outbox_signal`]).
    pub(super) outbox: Arc<Notify>,
    /// Whether writes succeed (for `/readyz`).
    pub(super) health: WriteHealth,
    /// The file's path (`:memory:` for an in-memory database).
    pub(super) location: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` with default
    /// settings and run migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreConfig::default())
    }

    /// Open (creating if needed) the database at `path` with `config` and
    /// run migrations.
    pub fn open_with(path: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn, Some(path), config)
    }

    /// An in-memory database (tests, benchmarks); reads share the writer.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None, &StoreConfig::default())
    }

    fn init(
        conn: Connection,
        path: Option<&Path>,
        config: &StoreConfig,
    ) -> Result<Self, StoreError> {
        configure_writer(&conn)?;
        migrate(&conn)?;
        if config.max_db_mb > 0 {
            let page_size: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = config.max_db_mb.saturating_mul(1 << 20) / page_size.max(1);
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )?;
        }
        // Remember that deliveries were written; `write_tx` wakes the
        // dispatcher once the transaction has committed, so its read (on
        // another connection) sees the rows.
        let deliveries_written = Arc::new(AtomicBool::new(false));
        let flag = deliveries_written.clone();
        conn.update_hook(Some(
            move |action: Action, _db: &str, table: &str, _row: i64| {
                if action == Action::SQLITE_INSERT && table == "webhook_deliveries" {
                    flag.store(true, Ordering::Relaxed);
                }
            },
        ));
        Ok(SqliteStore {
            pool: Pool::new(conn, path, config.readers)?,
            deliveries_written,
            outbox: Arc::new(Notify::new()),
            health: WriteHealth::default(),
            location: path.map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string()),
        })
    }

    /// Run `f` on a reader connection, off the async worker threads. Reads
    /// run concurrently with each other and with the writer; each sees the
    /// database as of its first statement (a read transaction for the whole
    /// of `f` needs an explicit `BEGIN`).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        offload(|| f(&self.pool.reader()))
    }

    /// Run `f` in one `IMMEDIATE` transaction on the writer with the current
    /// time (Unix ms), off the async worker threads, committing only if it
    /// succeeds. Waiting writers get the writer in turn. A failure that
    /// means the database cannot be written (disk full, read-only, I/O
    /// error) is remembered for `/readyz`.
    pub fn write_tx<R>(
        &self,
        f: impl FnOnce(&Connection, i64) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        offload(|| {
            let mut conn = self.pool.writer();
            let out = run_tx(&mut conn, f);
            let deliveries = self.deliveries_written.swap(false, Ordering::Relaxed);
            // Hand the writer straight to the next waiting writer, so a loop
            // of writes (a batched prune) cannot starve the others.
            MutexGuard::unlock_fair(conn);
            match &out {
                Ok(_) if deliveries => self.outbox.notify_one(),
                Ok(_) => {}
                Err(e) => self.health.write_failed(e),
            }
            out
        })
    }
}

fn run_tx<R>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection, i64) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx, now_ms())?;
    tx.commit()?;
    Ok(out)
}

/// Apply the migrations the database has not seen yet.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql} PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

/// Unix ms now.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl KvStore for SqliteStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2")?
                .query_row(params![plugin, key], |r| r.get(0))
                .optional()?)
        })
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_kv_sizes(key, value)?;
        self.write_tx(|tx, now| {
            tx.prepare_cached(
                "INSERT INTO plugin_kv (plugin, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            )?
            .execute(params![plugin, key, value, now])?;
            Ok(())
        })
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached("DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2")?
                .execute(params![plugin, key])?;
            Ok(())
        })
    }

    fn compare_and_swap(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        if let Some(v) = new {
            check_kv_sizes(key, v)?;
        }
        self.write_tx(|tx, now| {
            // One conditional statement per case: the condition and the
            // write are the same statement.
            let changed = match (expected, new) {
                (Some(e), Some(n)) => tx
                    .prepare_cached(
                        "UPDATE plugin_kv SET value = ?3, updated_ms = ?4
                         WHERE plugin = ?1 AND key = ?2 AND value = ?5",
                    )?
                    .execute(params![plugin, key, n, now, e])?,
                (Some(e), None) => tx
                    .prepare_cached(
                        "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2 AND value = ?3",
                    )?
                    .execute(params![plugin, key, e])?,
                (None, Some(n)) => tx
                    .prepare_cached(
                        "INSERT INTO plugin_kv (plugin, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (plugin, key) DO NOTHING",
                    )?
                    .execute(params![plugin, key, n, now])?,
                (None, None) => {
                    let present = tx
                        .prepare_cached("SELECT 1 FROM plugin_kv WHERE plugin = ?1 AND key = ?2")?
                        .query_row(params![plugin, key], |_| Ok(()))
                        .optional()?
                        .is_some();
                    usize::from(!present)
                }
            };
            Ok(changed == 1)
        })
    }

    fn list_keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key FROM plugin_kv WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2
                 ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![plugin, prefix, limit as i64], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn usage(&self, plugin: &str) -> Result<KvUsage, StoreError> {
        let (keys, bytes): (i64, i64) = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0)
                     FROM plugin_kv WHERE plugin = ?1",
                )?
                .query_row(params![plugin], |r| Ok((r.get(0)?, r.get(1)?)))?)
        })?;
        Ok(KvUsage {
            keys: keys.max(0) as u64,
            bytes: bytes.max(0) as u64,
        })
    }
}
