//! The PostgreSQL store (`--store postgres://user@host:port/db`): the same
//! traits as [`super::SqliteStore`], on a pool of connections to a shared
//! server, so several gateways can one day share their state (issue 13).
//!
//! Every store call runs off the async worker threads (see [`offload`]) on
//! a pooled connection whose statements are prepared once ([`conn::Db`]).
//! Writes are one `READ COMMITTED` transaction each, retried on a
//! serialization failure or deadlock; the orderings SQLite's single writer
//! gave for free are kept with locks: event-log rows take a transaction
//! advisory lock before their id and per-scope seq are allocated (so ids
//! commit in order and a reader paging by id never skips one), inbox
//! commits take one per channel (same for the inbox's `seq`), and
//! read-modify-write paths lock their row. As in SQLite, an event and its
//! webhook deliveries are written in the transaction of the change that
//! caused them.

mod cluster;
mod conn;
mod inbox;
mod kv;
mod leases;
mod migrations;
mod outbox;
mod pairing;
mod sessions;
mod tls;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, Transaction};
use tokio::sync::Notify;

use self::conn::{Db, Manager, PgConn};
use super::sqlite::now_ms;
use super::{StoreConfig, StoreError};

/// How long connecting (at start-up, or a new pooled connection) may take
/// when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection (a free one, or a new one
/// while the server is unreachable) before failing with `Unavailable`.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Times a write transaction is retried after a serialization failure or a
/// deadlock (both roll it back entirely, so running it again is safe).
const WRITE_RETRIES: u32 = 8;
/// How long a successful readiness probe answers for.
const PROBE_TTL: Duration = Duration::from_secs(1);

/// Whether `url` names a PostgreSQL store (rather than a SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The PostgreSQL-backed store.
pub struct PgStore {
    /// Always `Some` until dropped (see the `Drop` impl).
    pool: Option<r2d2::Pool<Manager>>,
    /// `user@host:port/db`, never the password (for errors and logs).
    target: String,
    /// Connection settings and TLS (for the cluster listener's own
    /// connection).
    connect_to: tls::Target,
    /// Notified when webhook deliveries are committed.
    outbox: Arc<Notify>,
    /// When the readiness probe last succeeded.
    probe_ok: Mutex<Option<Instant>>,
    /// This node's id in leases and webhook claims.
    node: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to the server `url` names (`postgres://user:password@host:
    /// port/db`), run the migrations it has not seen, and pool up to
    /// `config.pool` connections. A bad URL or an unreachable server is an
    /// error naming the host (never the password).
    pub fn connect(url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        // The synchronous client may not connect on an async worker thread.
        offload(|| Self::connect_blocking(url, config))
    }

    fn connect_blocking(url: &str, config: &StoreConfig) -> Result<Self, StoreError> {
        let mut connect_to = tls::Target::parse(url)?;
        let pg = &mut connect_to.config;
        if pg.get_hosts().is_empty() {
            return Err(StoreError::Config(
                "bad PostgreSQL URL: it names no host".into(),
            ));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("pincer");
        }
        let target = describe(pg);
        let manager = Manager {
            target: connect_to.clone(),
        };
        let mut first = r2d2::ManageConnection::connect(&manager).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {target}: {}",
                with_causes(&e)
            ))
        })?;
        migrations::migrate(&mut first.client)
            .map_err(|e| StoreError::Unavailable(format!("migrating {target}: {e}")))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(config.pool.max(1))
            .min_idle(Some(1))
            // A checkout costs no round trip: a connection the server
            // dropped fails its next query and is then discarded.
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_TIMEOUT)
            .build_unchecked(manager);
        tracing::info!(store = %target, pool = config.pool.max(1), "PostgreSQL store ready");
        let node = match config.node_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("node-{}", uuid::Uuid::new_v4().simple()),
        };
        tracing::info!(store = %target, node = %node, "cluster node id");
        Ok(PgStore {
            pool: Some(pool),
            target,
            connect_to,
            outbox: Arc::new(Notify::new()),
            probe_ok: Mutex::new(None),
            node,
        })
    }

    /// `user@host:port/db` of the server (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        let pool = self.pool.as_ref().ok_or(StoreError::Closed)?;
        pool.get().map_err(|e| {
            StoreError::Unavailable(format!("no PostgreSQL connection to {}: {e}", self.target))
        })
    }

    /// Run `f` on a pooled connection outside any transaction (each
    /// statement sees what was committed when it started).
    fn read<R: Send>(
        &self,
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        offload(|| {
            let mut conn = self.conn()?;
            let PgConn { client, stmts } = &mut *conn;
            f(&mut Db::new(client, stmts, 0))
        })
    }

    /// Run `f` in one transaction with the current time (`Db::now`),
    /// committing only if it succeeds; retried from the start after a
    /// serialization failure or a deadlock. The webhook dispatcher is woken
    /// after a commit that inserted deliveries.
    fn write<R: Send>(
        &self,
        mut f: impl FnMut(&mut Db<'_, Transaction<'_>>) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        let out = offload(|| {
            let mut conn = self.conn()?;
            let mut retries = 0;
            loop {
                match run_tx(&mut conn, &mut f) {
                    Err(e) if retryable(&e) && retries < WRITE_RETRIES => {
                        retries += 1;
                        tracing::debug!(error = %e, retries, "store transaction retried");
                        std::thread::sleep(Duration::from_millis(1 << retries.min(6)));
                    }
                    out => return out,
                }
            }
        });
        let (value, deliveries) = out?;
        if deliveries {
            self.outbox.notify_one();
        }
        Ok(value)
    }

    /// `Ok` if the server takes writes: a probe write succeeded within the
    /// last second, or one succeeds now.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self
            .probe_ok
            .lock()
            .is_some_and(|at| at.elapsed() < PROBE_TTL)
        {
            return Ok(());
        }
        let probe = self.write(|db| {
            db.exec("INSERT INTO store_probe (pad) VALUES ('\\x00'::bytea)", &[])?;
            db.exec("DELETE FROM store_probe", &[])?;
            Ok(())
        });
        let mut ok_at = self.probe_ok.lock();
        match probe {
            Ok(()) => {
                if ok_at.is_none() {
                    tracing::info!(store = %self.target, "store writes: ready");
                }
                *ok_at = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                if ok_at.take().is_some() {
                    tracing::warn!(store = %self.target, error = %e, "store write probe failed: not ready");
                }
                Err(e)
            }
        }
    }
}

impl Drop for PgStore {
    /// Closing a connection blocks on its socket, which the client may not
    /// do on an async worker thread: the pool is dropped through
    /// [`offload`].
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            offload(move || drop(pool));
        }
    }
}

type TxOut<R> = Result<(R, bool), StoreError>;

fn run_tx<R>(
    conn: &mut PgConn,
    f: &mut impl FnMut(&mut Db<'_, Transaction<'_>>) -> Result<R, StoreError>,
) -> TxOut<R> {
    let PgConn { client, stmts } = conn;
    let mut tx = client.transaction()?;
    let mut db = Db::new(&mut tx, stmts, now_ms());
    let value = f(&mut db)?;
    let deliveries = db.deliveries;
    tx.commit()?;
    Ok((value, deliveries))
}

/// Whether `e` rolled its transaction back for a reason a retry can fix.
fn retryable(e: &StoreError) -> bool {
    let StoreError::Postgres(e) = e else {
        return false;
    };
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// `e` and its causes, `: `-separated (a TLS failure's reason is a cause
/// of the driver's "error performing TLS handshake").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// `user@host:port/db` of `config` (no password).
fn describe(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    if user.is_empty() {
        format!("{host}:{port}/{db}")
    } else {
        format!("{user}@{host}:{port}/{db}")
    }
}

/// Run blocking store work without stalling the async runtime: on a
/// multi-threaded runtime the worker hands its tasks to another thread for
/// the duration ([`tokio::task::block_in_place`]); on a current-thread
/// runtime (where the client's own `block_on` may not nest) on a scoped
/// thread; elsewhere inline.
fn offload<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
        Err(_) => f(),
    }
}

/// A `usize` limit as a `BIGINT`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn urls_are_told_apart_and_described_without_the_password() -> Result<(), StoreError> {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("/var/lib/pincer/pincer.db"));
        let config = postgres::Config::from_str("postgres://alice:hunter2@db.example:6543/pincer")?;
        assert_eq!(describe(&config), "alice@db.example:6543/pincer");
        let e = PgStore::connect("postgres://alice:hunter2@/pincer", &StoreConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("names no host"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        Ok(())
    }

    #[test]
    fn an_unreachable_server_fails_naming_the_host_not_the_password() {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://alice:hunter2@127.0.0.1:1/pincer?connect_timeout=5";
        match PgStore::connect(url, &StoreConfig::default()) {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("alice@127.0.0.1:1/pincer"), "{m}");
                assert!(!m.contains("hunter2"), "{m}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
