//! The embedded store: one SQLite file in WAL mode, with versioned migrations.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::hooks::Action;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::{KvStore, StoreError};
use crate::clock::Clock;

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
    // 4: channel sender pairing (see store/sqlite_pairing.rs).
    super::sqlite_pairing::MIGRATION,
];

/// SQLite-backed store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Notified when webhook deliveries are inserted (see
    /// [`super::WebhookStore::outbox_signal`]).
    pub(super) outbox: Arc<Notify>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and run migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {sql} PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))?;
        }
        // Wake the webhook dispatcher whenever deliveries are written. The
        // hook runs while the writer holds the connection lock, so the
        // dispatcher's read (which takes the lock) sees the committed rows.
        let outbox = Arc::new(Notify::new());
        let signal = outbox.clone();
        conn.update_hook(Some(
            move |action: Action, _db: &str, table: &str, _row: i64| {
                if action == Action::SQLITE_INSERT && table == "webhook_deliveries" {
                    signal.notify_one();
                }
            },
        ));
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            outbox,
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Largest key a plugin may use.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

impl KvStore for SqliteStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2")?
            .query_row(params![plugin, key], |r| r.get(0))
            .optional()?)
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
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
        let now = crate::clock::SystemClock.now_ms() as i64;
        self.conn()
            .prepare_cached(
                "INSERT INTO plugin_kv (plugin, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            )?
            .execute(params![plugin, key, value, now])?;
        Ok(())
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2")?
            .execute(params![plugin, key])?;
        Ok(())
    }

    fn list_keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key FROM plugin_kv WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2
             ORDER BY key LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![plugin, prefix, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }
}
