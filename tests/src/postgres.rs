//! A real PostgreSQL for the tests: one throwaway server (initdb in a
//! temporary directory, started on a free loopback port, stopped and
//! deleted on drop; see `pincer::bench::pgserver`) with a fresh database
//! per use. A machine without PostgreSQL fails the test (never skips):
//! `tests/setup.sh` installs Debian's package.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pincer::bench::pgserver::PgServer;
use pincer::store::{PgStore, SharedStore, StoreConfig};

/// Server settings for tests: no fsync (a test may kill the server, never
/// the machine), but every commit written to the WAL before it is
/// acknowledged (`synchronous_commit` stays on), so a server crash loses
/// nothing committed.
const TEST_SETTINGS: &[&str] = &["fsync=off", "full_page_writes=off"];

/// A running test server.
pub struct TestPostgres {
    /// The server (public for tests that stop or inspect it).
    pub server: PgServer,
    next: AtomicUsize,
}

impl TestPostgres {
    /// Start a server; panics (failing the test) if PostgreSQL is missing
    /// or does not start.
    pub fn start() -> TestPostgres {
        let server = PgServer::start(TEST_SETTINGS)
            .unwrap_or_else(|e| panic!("starting a test PostgreSQL: {e:#}"));
        TestPostgres {
            server,
            next: AtomicUsize::new(0),
        }
    }

    /// Start a server with TLS on, presenting `cert_pem` (with `key_pem`).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> TestPostgres {
        let server = PgServer::start_tls(TEST_SETTINGS, cert_pem, key_pem)
            .unwrap_or_else(|e| panic!("starting a test PostgreSQL with TLS: {e:#}"));
        TestPostgres {
            server,
            next: AtomicUsize::new(0),
        }
    }

    /// A fresh empty database named after `what` (and a counter); its URL.
    pub fn database(&self, what: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name: String = what
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        self.server
            .create_db(&format!("{name}_{n}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e:#}\n{}", self.server.log()))
    }

    /// A store on the database at `url` (migrated on first use).
    pub fn store(url: &str) -> Arc<PgStore> {
        Arc::new(PgStore::connect(url, &StoreConfig::default()).expect("PostgreSQL store"))
    }

    /// The same, as the gateway sees it.
    pub fn shared(url: &str) -> SharedStore {
        Self::store(url)
    }

    /// Store settings naming the database at `url` (for gateway options).
    pub fn config(url: &str) -> StoreConfig {
        StoreConfig {
            url: Some(url.into()),
            pool: 4,
            ..StoreConfig::default()
        }
    }
}
