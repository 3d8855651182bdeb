//! A gateway on PostgreSQL dropped without a stop when its runtime shuts
//! down (a test that fails before `stop`), and a `PgStore` dropped
//! wherever that happens to drop it: inside a tokio task when its runtime
//! shuts down (the task is dropped on whichever thread the runtime then
//! uses), on a worker thread at runtime, and on a current-thread runtime.
//! A runtime dropped inside an async context (the gateway's edge runtime,
//! the synchronous PostgreSQL client's own per connection) panics with
//! "Cannot drop a runtime in a context where blocking is not allowed"
//! (caught by tokio and only printed); none of these may panic.
//!
//! This binary counts panics with a process-wide hook, so it holds this
//! one test only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pincer::store::{PgStore, SessionStore};
use pincer_tests::gateway::TestGateway;
use pincer_tests::postgres::TestPostgres;

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Panics of a task polling a timer after its runtime's time driver shut
/// down (see the gateway case below).
static TIMER_PANICS: AtomicUsize = AtomicUsize::new(0);
/// tokio's message for a timer polled during shutdown.
const SHUTTING_DOWN: &str = "A Tokio 1.x context was found, but it is being shutdown";

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains(SHUTTING_DOWN) {
            TIMER_PANICS.fetch_add(1, Ordering::SeqCst);
        } else {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
}

/// Connections of the server's database `db` other than the asker's.
fn connections(admin_url: &str, db: &str) -> i64 {
    let mut c = postgres::Client::connect(admin_url, postgres::NoTls).expect("admin connection");
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .expect("pg_stat_activity");
    row.get(0)
}

fn use_store(store: &PgStore) {
    // A read and a write, so the pool holds a connection that was used.
    store.check_writable().expect("store writable");
    store.list_sessions(10).expect("list sessions");
}

#[test]
fn dropping_a_pg_store_anywhere_at_shutdown_panics_nowhere() {
    count_panics();
    let pg = TestPostgres::start();
    let url = pg.database("store_drop");
    let db = url.rsplit('/').next().expect("db name").to_string();
    let admin = url.replace(&format!("/{db}"), "/postgres");

    // 0. A whole gateway on PostgreSQL, never stopped: its tasks (the
    //    server's, holding its edge runtime; the store's holders) are
    //    dropped when the test's runtime shuts down, as when a test fails
    //    before its `stop`.
    // (Its own database: a gateway never stopped keeps its cluster
    // listener's connection, on a plain thread, until the process ends.)
    let gateway_url = pg.database("store_drop_gateway");
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let u = gateway_url.clone();
        let gw = rt.block_on(async move {
            let (mut opts, dir) = TestGateway::options();
            opts.store = TestPostgres::config(&u);
            let gw = TestGateway::start_with(opts, dir).await;
            // One request served, so the edge runtime did work.
            let health = reqwest::get(format!("http://{}/healthz", gw.addr))
                .await
                .expect("healthz");
            assert!(health.status().is_success());
            gw
        });
        drop(rt);
        drop(gw);
        // No runtime (the edge runtime, a connection's) dropped in an
        // async context, no store drop panicked. Left alone and not
        // asserted: a task that was inside a blocking store call
        // (`block_in_place`) when the runtime shut down goes on with its
        // poll after it and may poll a timer, which tokio refuses with a
        // panic ([`SHUTTING_DOWN`]); a gateway stopped with `stop` (or
        // SIGTERM) never gets there.
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "after a gateway's runtime ended"
        );
    }
    let timer_panics = TIMER_PANICS.load(Ordering::SeqCst);

    // 1. Held by a task that never ends; the multi-threaded runtime is
    //    dropped (its tasks are dropped at shutdown).
    for shutdown in ["drop", "shutdown_background", "shutdown_timeout"] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let u = url.clone();
        rt.spawn(async move {
            let store = TestPostgres::store(&u);
            use_store(&store);
            let _ = ready_tx.send(());
            std::future::pending::<()>().await;
            drop(store);
        });
        ready_rx.recv().expect("the task connected");
        match shutdown {
            "drop" => drop(rt),
            "shutdown_background" => rt.shutdown_background(),
            _ => rt.shutdown_timeout(std::time::Duration::from_secs(30)),
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "after runtime {shutdown}");
    }

    // 2. Dropped by a task at runtime (a worker thread).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let u = url.clone();
        tokio::spawn(async move {
            let store = TestPostgres::store(&u);
            use_store(&store);
            drop(store);
        })
        .await
        .expect("task");
    });
    // 3. On a current-thread runtime, inside and outside a task.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    current.block_on(async {
        let store = TestPostgres::store(&url);
        use_store(&store);
        drop(store);
    });
    let u = url.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    current.spawn(async move {
        let store: Arc<PgStore> = TestPostgres::store(&u);
        use_store(&store);
        let _ = ready_tx.send(());
        std::future::pending::<()>().await;
        drop(store);
    });
    current
        .block_on(ready_rx)
        .expect("the current-thread task connected");
    drop(current);
    drop(rt);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no drop may panic");
    assert_eq!(
        TIMER_PANICS.load(Ordering::SeqCst),
        timer_panics,
        "a store dropped alone leaves no task behind"
    );

    // Every store's pool closed its connections (none left for the server
    // to time out).
    assert_eq!(connections(&admin, &db), 0, "connections left open");
}
