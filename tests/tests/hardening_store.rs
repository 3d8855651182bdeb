//! Issue 8, item 18 and the readiness part of item 12: the store never
//! stalls the gateway. Real SQLite files throughout: a reader holding a read
//! transaction open does not block a write or another read; a prune of 200k
//! events runs in batches that let other writers in and keeps each scope's
//! newest event; migration 4 adds the index the prune walks; `/readyz` turns
//! 503 with a reason while the database cannot grow, and back once it can.
//!
//! Ordering is asserted with channels and barriers, never with timing; the
//! only timeouts are hang guards that turn a deadlock into a clear failure.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use pincer::store::{EventRecord, PRUNE_BATCH, SessionStore, SqliteStore, StoreConfig, StoreError};
use pincer_tests::gateway::TestGateway;
use serde_json::{Value, json};

/// How long a test waits for something that must happen before failing (a
/// hang guard, not a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(60);

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("pincer.db")).expect("open store")
}

fn count_events(conn: &pincer::store::Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?)
}

#[test]
fn a_reader_holding_a_read_transaction_blocks_neither_a_write_nor_another_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(&dir));
    store
        .append_event("plugin.loaded", None, json!({"plugin": "a"}))
        .expect("first event");

    // A long read: a read transaction held open until the test says so.
    let holding = Arc::new(Barrier::new(2));
    let (release, released) = mpsc::channel::<()>();
    let reader = {
        let (store, holding) = (store.clone(), holding.clone());
        std::thread::spawn(move || {
            store.read(|conn| {
                conn.execute_batch("BEGIN")?;
                let before = count_events(conn)?;
                holding.wait();
                released.recv().expect("released");
                // Its snapshot is unchanged: it really was one transaction
                // open across the write.
                let during = count_events(conn)?;
                conn.execute_batch("COMMIT")?;
                Ok((before, during))
            })
        })
    };
    holding.wait();

    // A write from another thread commits while the read is open.
    let (done, wrote) = mpsc::channel();
    {
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = done.send(store.append_event("plugin.loaded", None, json!({"plugin": "b"})));
        });
    }
    let written = wrote
        .recv_timeout(HANG_GUARD)
        .expect("the write waited for the open read transaction")
        .expect("write succeeds");
    assert_eq!(written.seq, 1);

    // Another reader sees the committed write at once.
    let seen: Vec<EventRecord> = store.events_after(0, 10).expect("second reader");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], written);

    release.send(()).expect("reader alive");
    let (before, during) = reader.join().expect("reader thread").expect("read");
    assert_eq!((before, during), (1, 1));
    assert_eq!(store.events_after(0, 10).expect("read").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_from_async_tasks_do_not_wait_for_a_long_read() {
    // The same on the async side: a gateway-style task reads and writes
    // while another task's read transaction is open on a blocking thread.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(&dir));
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let long_read = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.read(|conn| {
                conn.execute_batch("BEGIN")?;
                let n = count_events(conn)?;
                let _ = held_tx.send(());
                release_rx.recv().map_err(|_| StoreError::Closed)?;
                conn.execute_batch("COMMIT")?;
                Ok(n)
            })
        })
    };
    held_rx.await.expect("read transaction open");
    let work = {
        let store = store.clone();
        tokio::spawn(async move {
            let (session, created) = store
                .ensure_session("agent:main:main", &Default::default())
                .expect("write");
            assert!(created);
            assert_eq!(store.count_sessions().expect("read"), 1);
            session
        })
    };
    let session = tokio::time::timeout(HANG_GUARD, work)
        .await
        .expect("async store calls waited for the long read")
        .expect("task");
    assert_eq!(
        store.get_session("agent:main:main").expect("read"),
        Some(session)
    );
    release_tx.send(()).expect("long read alive");
    assert_eq!(long_read.await.expect("join").expect("read"), 0);
}

#[test]
fn a_big_prune_goes_in_batches_lets_writers_in_and_keeps_each_scopes_newest() {
    const SCOPES: i64 = 1_000;
    const PER_SCOPE: i64 = 200;
    const OLD: i64 = SCOPES * PER_SCOPE;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(&dir));
    // 200k old events: scopes plugin:p0..p999, seqs 1..=200 each, stamped
    // long ago (ts = 1000 + i ms since the epoch).
    store
        .write_tx(|tx, _| {
            tx.execute(
                "INSERT INTO events (kind, session_key, scope, seq, ts, data)
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
                 SELECT 'plugin.loaded', NULL, 'plugin:p' || (i % ?2), i / ?2 + 1, 1000 + i,
                        json_object('plugin', 'p' || (i % ?2))
                 FROM n",
                [OLD, SCOPES],
            )?;
            Ok(())
        })
        .expect("seed events");
    // Recent events, which no prune with an old cut-off may touch.
    let fresh = store
        .append_event("plugin.loaded", None, json!({"plugin": "fresh"}))
        .expect("fresh event");
    let cutoff = 1_000_000;

    // A writer on another thread, driven from between the prune's batches.
    let (ask, asked) = mpsc::channel::<()>();
    let (answer, answered) = mpsc::channel();
    {
        let store = store.clone();
        std::thread::spawn(move || {
            for () in asked {
                let r = store.append_event("plugin.loaded", None, json!({"plugin": "mid"}));
                let _ = answer.send(r);
            }
        });
    }
    let mut batches = 1;
    let mut during = None;
    let pruned = store
        .prune_events_in_batches(cutoff, PRUNE_BATCH, |deleted_so_far| {
            batches += 1;
            if during.is_none() {
                assert!(deleted_so_far > 0 && deleted_so_far < OLD as u64);
                // Mid-prune: another writer and a reader get through.
                ask.send(()).expect("writer alive");
                let written = answered
                    .recv_timeout(HANG_GUARD)
                    .expect("a write waited for the whole prune")
                    .expect("write during the prune");
                let read = store.events_after(written.id - 1, 1).expect("read");
                assert_eq!(read, vec![written.clone()]);
                during = Some(written);
            }
        })
        .expect("prune");
    let during = during.expect("the prune ran in more than one batch");

    // Every old event but each scope's newest (seq 200) went, in batches of
    // at most PRUNE_BATCH rows examined.
    assert_eq!(pruned, (OLD - SCOPES) as u64);
    assert!(
        batches >= (OLD as usize) / PRUNE_BATCH,
        "{batches} batches for {OLD} events"
    );
    let left = store.events_after(0, usize::MAX).expect("read");
    let old_left: Vec<&EventRecord> = left.iter().filter(|e| e.ts < cutoff).collect();
    assert_eq!(old_left.len(), SCOPES as usize);
    assert!(old_left.iter().all(|e| e.seq == PER_SCOPE), "{old_left:?}");
    let mut scopes: Vec<&str> = old_left
        .iter()
        .filter_map(|e| e.data["plugin"].as_str())
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    assert_eq!(scopes.len(), SCOPES as usize);
    // The recent events (including the one written mid-prune) are intact.
    assert!(left.contains(&fresh));
    assert!(left.contains(&during));
    assert_eq!(during.seq, 1);
    // Sequences carry on after a prune.
    let next = store
        .append_event("plugin.loaded", None, json!({"plugin": "p8"}))
        .expect("append");
    assert_eq!(next.seq, PER_SCOPE + 1);
    // p8's old newest is now superseded, so the next prune takes it (and
    // only it); then nothing is left to do.
    assert_eq!(store.prune_events(cutoff).expect("prune"), 1);
    assert_eq!(store.prune_events(cutoff).expect("prune"), 0);
}

/// The planner's plan for the prune's walk over old events, as text.
fn prune_plan(store: &SqliteStore) -> Result<String, StoreError> {
    store.read(|conn| {
        let mut stmt = conn.prepare(
            "EXPLAIN QUERY PLAN SELECT e.id FROM events e
             WHERE e.ts < ?1 AND (e.ts, e.id) > (?2, ?3) ORDER BY e.ts, e.id LIMIT 1000",
        )?;
        let rows = stmt.query_map([0i64, 0, 0], |r| r.get::<_, String>(3))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
    })
}

fn event_indexes(store: &SqliteStore) -> Result<Vec<String>, StoreError> {
    store.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'
             ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

#[test]
fn migration_4_adds_the_index_the_prune_uses_also_to_an_existing_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        assert!(
            event_indexes(&store)
                .expect("indexes")
                .contains(&"events_by_ts".to_owned())
        );
        let plan = prune_plan(&store).expect("plan");
        assert!(plan.contains("events_by_ts"), "{plan}");
        assert!(!plan.contains("SCAN e"), "a table scan: {plan}");
        // Make it a database from before migration 4 (which also lacks the
        // later migrations, such as pairing's).
        store
            .write_tx(|tx, _| {
                tx.execute_batch(
                    "DROP INDEX events_by_ts; DROP TABLE store_probe;
                     DROP TABLE channel_pairing_requests; DROP TABLE channel_pairing_approved;
                     DROP TABLE channel_inbox; DROP TABLE channel_cursors;
                     DROP TABLE channel_outbox;
                     PRAGMA user_version = 3;",
                )?;
                Ok(())
            })
            .expect("downgrade");
        assert!(
            !event_indexes(&store)
                .expect("indexes")
                .contains(&"events_by_ts".to_owned())
        );
    }
    let store = open(&dir);
    assert!(
        event_indexes(&store)
            .expect("indexes")
            .contains(&"events_by_ts".to_owned())
    );
    let version: i64 = store
        .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .expect("version");
    assert!(version >= 4, "user_version {version}");
    store.check_writable().expect("the probe table is back");
}

fn readyz_url(g: &TestGateway) -> String {
    format!("http://{}/readyz", g.addr)
}

async fn readyz(client: &reqwest::Client, g: &TestGateway) -> (u16, Value) {
    let r = client.get(readyz_url(g)).send().await.expect("GET /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_with_a_reason_while_the_store_cannot_write_and_recovers() {
    let (mut opts, dir) = TestGateway::options();
    opts.store = StoreConfig {
        max_db_mb: 2,
        ..StoreConfig::default()
    };
    // SQLite-only (listed in pincer_tests::test_store): the file-size cap.
    pincer_tests::test_store::keep_sqlite(&mut opts);
    let mut g = TestGateway::start_with(opts, dir).await;
    let client = reqwest::Client::new();
    let (status, body) = readyz(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ready": true, "store": true, "plugins": true}));

    // Fill the database to its 2 MiB cap: 1 MiB values while they fit,
    // then halves down to 4 KiB, until not even 4 KiB more fits.
    let kv = g.gw().runtime.plugins.kv().clone();
    let mut stored: Vec<(String, usize)> = Vec::new();
    let mut last_error = None;
    for size in (12..=20).rev().map(|bits| 1usize << bits) {
        let blob = vec![7u8; size];
        loop {
            let key = format!("blob-{}", stored.len());
            match kv.set("hardening", &key, &blob) {
                Ok(()) => stored.push((key, size)),
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
            let total: usize = stored.iter().map(|(_, n)| n).sum();
            assert!(total <= 2 << 20, "a 2 MiB database took {total} bytes");
        }
    }
    let full = last_error.expect("the cap was reached");
    assert_eq!(full.reason(), "database or disk is full", "{full}");

    let (status, body) = readyz(&client, &g).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({"ready": false, "store": false, "plugins": true,
               "reason": "store cannot write: database or disk is full"})
    );
    // Nothing stored before is lost, and the rest of the gateway serves on.
    for (key, size) in &stored {
        assert_eq!(
            kv.get("hardening", key).expect("read").map(|v| v.len()),
            Some(*size)
        );
    }
    let healthz = client
        .get(format!("http://{}/healthz", g.addr))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(healthz.status(), 200);

    // Freeing space makes it ready again at the next check.
    for (key, _) in &stored {
        kv.delete("hardening", key).expect("delete");
    }
    let (status, body) = readyz(&client, &g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    kv.set("hardening", "after", b"fits again")
        .expect("write after recovery");
    g.stop().await;
}
