//! Which store the end-to-end tests' gateways run on: SQLite files (the
//! default) or, with `PINCER_TEST_STORE=postgres`, PostgreSQL, so the same
//! suite runs against both backends (`tests/run.sh` runs it twice).
//!
//! On PostgreSQL, one throwaway server serves the whole test process:
//! started lazily on first use ([`pincer::bench::pgserver::PgServer`] under
//! the temporary directory), and stopped and deleted when the process ends
//! however it ends (normal exit, panic, SIGKILL) by a watchdog process that
//! waits for the end of a pipe only this process holds. Each gateway data
//! directory gets its own fresh database (`CREATE DATABASE` with a unique
//! name), recorded in the directory ([`MARKER`]), so a gateway restarted on
//! the same directory (after a clean stop or a kill -9, in this process or
//! in a child process) reconnects to the same database. Child gateways
//! ([`crate::gateway::ChildGateway`]) get the server's URL in
//! [`SERVER_ENV`] and create their databases there instead of starting a
//! server of their own.
//!
//! Tests reach the store of a data directory through [`open`] (the store
//! traits, whatever the backend) instead of opening `pincer.db`.
//!
//! # Tests that stay on SQLite
//! The one list; each calls [`keep_sqlite`] (or opens the SQLite file
//! itself) and runs on SQLite in both passes:
//! - `hardening_store` (every test): SQLite's own machinery (a reader's
//!   WAL snapshot against the writer, the prune's SQLite query plan and
//!   index, SQLite migration 4, the `max_db_mb` file-size cap);
//! - `ops_readiness::readyz_health_and_status_report_the_same_readiness`:
//!   fills the SQLite file to its `max_db_mb` cap (a file-level limit
//!   PostgreSQL has no equivalent of);
//! - `webhooks_delivery`: drives the dispatcher over a `SqliteStore` it
//!   builds itself, below the gateway (the PostgreSQL outbox has its own
//!   claim tests in `cluster_*` and `store_postgres`).
//! - `console::console_marks_a_channel_that_gave_up_and_restarts_it`:
//!   drives the health monitor with a manual clock ten minutes ahead; on
//!   PostgreSQL the channel's lease and the node's heartbeat run on the
//!   database's clock, which a manual clock cannot move, so the channel is
//!   still `starting` there when the monitor checks. (Found by the first
//!   PostgreSQL pass; a monitor check that waits for the lease is the
//!   better fix, not done yet.)
//!
//! Tests that are PostgreSQL-only already (`store_postgres`, `cluster_*`)
//! start their own [`crate::postgres::TestPostgres`] and are not repeated
//! by the PostgreSQL pass of `tests/run.sh`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use pincer::bench::pgserver::PgServer;
use pincer::gateway::launch::Options;
use pincer::store::{SharedStore, StoreConfig};

/// Env var choosing the store: `sqlite` (or unset) or `postgres`.
pub const STORE_ENV: &str = "PINCER_TEST_STORE";

/// Env var a parent test process sets for its child gateways: the URL of
/// its server's maintenance database (`postgres://pincer@127.0.0.1:PORT/postgres`).
pub const SERVER_ENV: &str = "PINCER_TEST_PG_SERVER";

/// The file in a data directory naming the database of the gateway that
/// runs on it (PostgreSQL pass only).
pub const MARKER: &str = ".pincer-test-store";

/// The store backends the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in each data directory (the default).
    Sqlite,
    /// A database per data directory on one throwaway PostgreSQL server.
    Postgres,
}

/// The backend `PINCER_TEST_STORE` names; panics on anything else (a typo
/// must not silently run the SQLite pass twice).
pub fn backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var(STORE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") | Ok("postgresql") | Ok("pg") => Backend::Postgres,
        Ok(other) => panic!("{STORE_ENV}={other:?}: expected `sqlite` or `postgres`"),
    })
}

/// The process's server: started here, or a parent's.
struct Server {
    /// URL of the maintenance database `postgres`.
    admin_url: String,
    /// The server when this process started it (never dropped: the
    /// watchdog stops it when the process ends).
    _own: Option<PgServer>,
    /// The watchdog, with our end of its stdin pipe (held until the
    /// process ends; never waited for: it outlives us).
    _watchdog: Option<Child>,
}

/// Settings of the suite's server: no fsync (a test may kill the server,
/// never the machine); room for every pool of the gateways one test
/// binary has alive at once.
const SETTINGS: &[&str] = &["fsync=off", "full_page_writes=off", "max_connections=500"];

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var(SERVER_ENV) {
            return Server {
                admin_url: url,
                _own: None,
                _watchdog: None,
            };
        }
        let server = PgServer::start(SETTINGS)
            .unwrap_or_else(|e| panic!("starting the suite's PostgreSQL: {e:#}"));
        let watchdog = watchdog(server.dir());
        Server {
            admin_url: server.url("postgres"),
            _own: Some(server),
            _watchdog: Some(watchdog),
        }
    })
}

/// Start a process that, once this process has ended (its stdin, a pipe
/// only we hold, reaches end of file), stops the server in `dir` at once
/// (SIGQUIT to the postmaster: immediate shutdown) and deletes `dir`. It
/// runs in its own process group, so a Ctrl-C of the test run does not
/// stop it before it has cleaned up.
fn watchdog(dir: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    const SCRIPT: &str = r#"
cat >/dev/null
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while [ "$i" -lt 100 ] && kill -0 "$pid" 2>/dev/null \
        && ! grep -q '^State:.Z' "/proc/$pid/status" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "pincer-test-pg-watchdog"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the PostgreSQL watchdog (sh)")
}

/// Extra environment for a child gateway process: in the PostgreSQL pass,
/// this process's server (started now if need be), so the child creates
/// and finds its databases there.
pub fn child_env() -> Vec<(&'static str, String)> {
    match backend() {
        Backend::Sqlite => Vec::new(),
        Backend::Postgres => vec![(SERVER_ENV, server().admin_url.clone())],
    }
}

/// The URL of the database of data directory `dir`: the one recorded in
/// `dir` ([`MARKER`]), else a fresh one, created and recorded now.
pub fn database_for(dir: &Path) -> String {
    let marker = dir.join(MARKER);
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let admin = &server().admin_url;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = create_database(admin, &name);
    // Record it atomically: write a temporary file, then link it into
    // place; if another process won the race, use its database.
    let tmp: PathBuf = dir.join(format!("{MARKER}.{name}"));
    let mut f = std::fs::File::create(&tmp).expect("marker temp file");
    f.write_all(url.as_bytes()).expect("write marker");
    drop(f);
    let linked = std::fs::hard_link(&tmp, &marker);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => url,
        Err(_) => std::fs::read_to_string(&marker).expect("read marker"),
    }
}

/// `CREATE DATABASE name` on the server whose maintenance database is at
/// `admin`; the new database's URL.
fn create_database(admin: &str, name: &str) -> String {
    let admin_owned = admin.to_string();
    let sql = format!("CREATE DATABASE \"{name}\"");
    // The synchronous client may not run on an async worker thread.
    std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&admin_owned, postgres::NoTls)?;
        client.batch_execute(&sql)
    })
    .join()
    .expect("creating a database panicked")
    .unwrap_or_else(|e| panic!("creating database {name} on {admin}: {e}"));
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad server URL {admin}"),
    }
}

/// Point `opts` at the suite's store: in the PostgreSQL pass, the
/// database of `opts.data_dir` (unless the test chose a store itself by
/// setting `opts.store.url`); in the SQLite pass, nothing changes.
pub fn apply(opts: &mut Options) {
    if backend() == Backend::Postgres && opts.store.url.is_none() {
        opts.store.url = Some(database_for(&opts.data_dir).into());
    }
}

/// Keep the gateway of `opts` on its SQLite file in both passes (for the
/// tests listed in this module's comment).
pub fn keep_sqlite(opts: &mut Options) {
    opts.store.url = Some(
        opts.data_dir
            .join(pincer::store::DB_FILE)
            .to_str()
            .expect("utf-8 data dir")
            .to_string()
            .into(),
    );
}

/// The store settings for data directory `dir` in this pass.
pub fn config_for(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::default();
    if backend() == Backend::Postgres {
        config.url = Some(database_for(dir).into());
    }
    config
}

/// The store of the gateway on data directory `dir` (opened beside it, or
/// before it starts): its SQLite file, or its PostgreSQL database. Tests
/// ask it their questions through the store traits, on either backend.
pub fn open(dir: &Path) -> SharedStore {
    pincer::store::open(dir, &config_for(dir))
        .unwrap_or_else(|e| panic!("opening the store of {}: {e}", dir.display()))
}
