//! Cluster mode, part A: three real `pincer` gateways (child processes) on
//! one real PostgreSQL database share run events, idempotency keys, aborts
//! and presence.

use futures::future::join_all;
use serde_json::{Value, json};

use pincer_tests::cluster::{
    STEP_GUARD, TestCluster, await_presence, cursor_client, node_main, of_run, run_end, run_events,
    words,
};
use pincer_tests::gateway::Client;

/// The child test every node runs.
const CHILD: &str = "cluster_node_child";

/// Not a test: one cluster node, started by the tests below.
#[test]
#[ignore = "a cluster node, run as a child process by the tests"]
fn cluster_node_child() {
    node_main();
}

async fn guard<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

fn cursor(e: &Value) -> i64 {
    e["cursor"]
        .as_i64()
        .unwrap_or_else(|| panic!("a logged event carries its cursor: {e}"))
}

/// The agent events' per-run seqs are 1..=n with no gap, chat events carry
/// the seq of the agent event before them, and cursors strictly increase.
fn assert_in_order(events: &[Value]) {
    let mut agent_seq = 0;
    let mut last_cursor = 0;
    for e in events {
        let c = cursor(e);
        assert!(c > last_cursor, "cursors increase: {c} after {last_cursor}");
        last_cursor = c;
        let seq = e["payload"]["seq"].as_i64().unwrap_or(-1);
        if e["event"] == "agent" {
            assert_eq!(seq, agent_seq + 1, "agent seqs have no gap: {e}");
            agent_seq = seq;
        } else {
            assert_eq!(seq, agent_seq, "a chat event follows its agent event: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_run_events_idempotency_aborts_and_presence() {
    let cluster = TestCluster::start(CHILD, &["node-a", "node-b", "node-c"]);
    let (a, b, c) = (cluster.url(0), cluster.url(1), cluster.url(2));

    // Presence and channels.status show the whole cluster, on every node.
    let mut on_a = cursor_client(a).await;
    let mut on_b = cursor_client(b).await;
    let mut on_c = cursor_client(c).await;
    let all = ["node-a", "node-b", "node-c"];
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        guard("presence lists three nodes", await_presence(client, &all)).await;
    }
    let status = on_a.call("channels.status", json!({})).await;
    let nodes = status["cluster"]["nodes"]
        .as_array()
        .expect("cluster nodes");
    let mut names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, all, "{status}");
    assert_eq!(
        nodes.iter().filter(|n| n["self"] == true).count(),
        1,
        "{status}"
    );
    for n in nodes {
        assert!(
            n["lastSeenAt"].as_i64().unwrap_or(0)
                >= n["startedAt"].as_i64().unwrap_or(i64::MAX) - 60_000
        );
        assert!(!n["nodeId"].as_str().unwrap_or("").is_empty());
    }

    // 1. A run on node B streams to a client on node A, in order, no gaps;
    // a client that drops mid-run and resumes on node C with its last
    // cursor gets exactly what it missed.
    let mut dropper = cursor_client(a).await;
    let message = words(40);
    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "stream", "message": message, "idempotencyKey": "run-b1"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    let seen_on_a = guard("run events on node A", run_events(&mut on_a, "run-b1")).await;
    assert_in_order(&seen_on_a);
    assert_eq!(seen_on_a[0]["payload"]["stream"], "lifecycle");
    assert_eq!(seen_on_a[0]["payload"]["data"]["phase"], "start");
    let last = seen_on_a.last().expect("events");
    assert_eq!(last["payload"]["state"], "final", "{last}");
    assert_eq!(
        last["payload"]["message"]["content"][0]["text"], message,
        "the whole answer arrives on node A"
    );
    // The run's own node saw the same events with the same cursors.
    let seen_on_b = guard("run events on node B", run_events(&mut on_b, "run-b1")).await;
    let cursors = |v: &[Value]| v.iter().map(cursor).collect::<Vec<_>>();
    assert_eq!(cursors(&seen_on_b), cursors(&seen_on_a));

    // The dropper read a few of them, then its socket went away.
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(guard("first events", dropper.event(|e| of_run(e, "run-b1"))).await);
    }
    let last_seen = cursor(before.last().expect("five events"));
    drop(dropper);
    let mut resumed = cursor_client_resuming(c, last_seen).await;
    let mut after = Vec::new();
    loop {
        let e = guard(
            "resumed events",
            resumed.event(|e| e.get("cursor").is_some()),
        )
        .await;
        let end = run_end(&e, "run-b1");
        after.push(e);
        if end {
            break;
        }
    }
    let mut whole = before.clone();
    whole.extend(after.iter().cloned());
    assert_eq!(
        cursors(&whole),
        cursors(&seen_on_a),
        "before the drop plus the resumed events are the run's events, once each"
    );
    for (x, y) in whole.iter().zip(&seen_on_a) {
        assert_eq!(x["event"], y["event"]);
        assert_eq!(x["payload"], y["payload"]);
    }

    // 2. The same idempotency key sent to all three nodes at once starts
    // one run; every sender gets its events.
    let long = words(60);
    let mut senders = vec![
        cursor_client(a).await,
        cursor_client(b).await,
        cursor_client(c).await,
    ];
    let answers = join_all(senders.iter_mut().map(|s| {
        s.call(
            "chat.send",
            json!({"sessionKey": "dup", "message": long, "idempotencyKey": "dup-1"}),
        )
    }))
    .await;
    let started = answers.iter().filter(|a| a["status"] == "started").count();
    assert_eq!(started, 1, "exactly one node starts the run: {answers:?}");
    for a in &answers {
        assert!(
            ["started", "in_flight", "ok"].contains(&a["status"].as_str().unwrap_or("")),
            "{a}"
        );
        assert_eq!(a["runId"], "dup-1");
    }
    for s in &mut senders {
        let events = guard("the one run's events", run_events(s, "dup-1")).await;
        assert_eq!(events.last().expect("end")["payload"]["state"], "final");
    }
    // Repeated once it ended: the result, from any node.
    let again = senders[2]
        .call(
            "chat.send",
            json!({"sessionKey": "dup", "message": long, "idempotencyKey": "dup-1"}),
        )
        .await;
    assert_eq!(again["status"], "ok", "{again}");
    let history = senders[0]
        .call("chat.history", json!({"sessionKey": "dup"}))
        .await;
    let msgs = history["messages"].as_array().expect("messages");
    let by_role = |role: &str| {
        msgs.iter()
            .filter(|m| m["role"] == role && m["runId"] == "dup-1")
            .count()
    };
    assert_eq!(by_role("user"), 1, "one user message: {history}");
    assert_eq!(by_role("assistant"), 1, "one answer: {history}");

    // 3. chat.abort sent to node A stops a run executing on node B; its
    // `aborted` end reaches every node's clients.
    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "abort", "message": words(20_000), "idempotencyKey": "long-b"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    // Running: its first words arrived on node A.
    guard(
        "the long run streams",
        on_a.event(|e| of_run(e, "long-b") && e["payload"]["stream"] == "assistant"),
    )
    .await;
    let aborted = on_a
        .call(
            "chat.abort",
            json!({"sessionKey": "abort", "runId": "long-b"}),
        )
        .await;
    assert_eq!(aborted["aborted"], true, "{aborted}");
    assert_eq!(aborted["runIds"], json!(["long-b"]));
    // A runId of another session is refused, as on one node.
    let wrong = on_a
        .request(
            "chat.abort",
            json!({"sessionKey": "stream", "runId": "long-b"}),
        )
        .await;
    assert_eq!(wrong["ok"], false, "{wrong}");
    for (name, client) in [("A", &mut on_a), ("B", &mut on_b), ("C", &mut on_c)] {
        let end = guard("the aborted end", client.event(|e| run_end(e, "long-b"))).await;
        assert_eq!(end["payload"]["state"], "aborted", "node {name}: {end}");
        assert_eq!(end["payload"]["stopReason"], "rpc", "node {name}: {end}");
    }

    // 4. Every node's wake-up connection drops (a network blip): wake-ups
    // are missed, and the nodes catch up from the log; nothing is lost.
    let url = cluster.url.clone();
    let dropped = tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("raw connection");
        db.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'
               AND pid != pg_backend_pid()",
            &[],
        )
        .expect("terminating the listeners")
        .len()
    })
    .await
    .expect("blocking task");
    assert_eq!(dropped, 3, "one listener per node");
    let message = words(30);
    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "blip", "message": message, "idempotencyKey": "after-blip"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    for client in [&mut on_a, &mut on_c] {
        let events = guard("events after the blip", run_events(client, "after-blip")).await;
        assert_in_order(&events);
        let end = events.last().expect("end");
        assert_eq!(end["payload"]["state"], "final");
        assert_eq!(end["payload"]["message"]["content"][0]["text"], message);
    }
}

/// A client on `url` resuming after `after`.
async fn cursor_client_resuming(url: &str, after: i64) -> Client {
    pincer_tests::cluster::cursor_client_at(url, Some(after)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_run_ends_with_an_error_everywhere() {
    let mut cluster = TestCluster::start(CHILD, &["node-a", "node-b", "node-c"]);
    let mut on_a = cursor_client(cluster.url(0)).await;
    let mut on_c = cursor_client(cluster.url(2)).await;
    let mut on_b = cursor_client(cluster.url(1)).await;
    let all = ["node-a", "node-b", "node-c"];
    guard(
        "presence lists three nodes",
        await_presence(&mut on_a, &all),
    )
    .await;

    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "doomed", "message": words(20_000), "idempotencyKey": "doomed-1"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    for client in [&mut on_a, &mut on_c] {
        guard(
            "the run streams",
            client.event(|e| of_run(e, "doomed-1") && e["payload"]["stream"] == "assistant"),
        )
        .await;
    }
    cluster.nodes[1].kill();
    drop(on_b);

    // After node B's heartbeat expires, the others end its run with an
    // error, and it drops out of presence.
    for client in [&mut on_a, &mut on_c] {
        let end = guard(
            "the lost run's end",
            client.event(|e| run_end(e, "doomed-1")),
        )
        .await;
        assert_eq!(end["payload"]["state"], "error", "{end}");
        assert_eq!(
            end["payload"]["errorMessage"],
            pincer::gateway::cluster::NODE_LOST,
            "{end}"
        );
        let lifecycle = guard(
            "the lost run's lifecycle end",
            client.event(|e| {
                of_run(e, "doomed-1")
                    && e["event"] == "agent"
                    && e["payload"]["data"]["phase"] == "error"
            }),
        )
        .await;
        assert!(cursor(&lifecycle) < cursor(&end));
    }
    guard(
        "presence drops the dead node",
        await_presence(&mut on_a, &["node-a", "node-c"]),
    )
    .await;
    // The key stays taken: a retry gets the run's error, not a new run.
    let again = on_c
        .request(
            "chat.send",
            json!({"sessionKey": "doomed", "message": "again", "idempotencyKey": "doomed-1"}),
        )
        .await;
    assert_eq!(again["ok"], false, "{again}");
    assert_eq!(again["payload"]["status"], "error", "{again}");
}

mod log {
    //! The store side on its own: the stream log's ordering, the
    //! idempotency claim and the wake-up, with several stores (as several
    //! nodes) on one database.

    use std::sync::Arc;
    use std::time::Duration;

    use pincer::store::{Claim, ClusterStore, NewStreamEvent, PgStore, Wake};
    use pincer_tests::postgres::TestPostgres;

    fn event(node: &str, i: usize) -> NewStreamEvent {
        NewStreamEvent {
            node_id: node.into(),
            name: "agent".into(),
            payload: format!(r#"{{"runId":"{node}","seq":{i}}}"#),
            scope: Some("operator.read".into()),
            audience: "all".into(),
            droppable: true,
            run_id: Some(node.into()),
            run_seq: Some(i as i64),
            ts: 1,
        }
    }

    #[test]
    fn concurrent_appends_commit_in_id_order_so_a_reader_never_skips_one() {
        let pg = TestPostgres::start();
        let url = pg.database("stream_order");
        let nodes: Vec<Arc<PgStore>> = (0..3).map(|_| TestPostgres::store(&url)).collect();
        const PER_WRITER: usize = 150;
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let store = nodes[w % nodes.len()].clone();
                std::thread::spawn(move || {
                    let node = format!("w{w}");
                    let mut i = 0;
                    while i < PER_WRITER {
                        // Batches of 1 to 4 events.
                        let n = (1 + (i + w) % 4).min(PER_WRITER - i);
                        let batch: Vec<_> = (i..i + n).map(|k| event(&node, k + 1)).collect();
                        store.append_stream(&batch).expect("append");
                        i += n;
                    }
                })
            })
            .collect();
        // A reader paging by id while they write: every id it sees is the
        // next one (a later id committed before an earlier one would be
        // skipped for good by a reader whose cursor moved past it).
        let total = (6 * PER_WRITER) as i64;
        let reader = nodes[0].clone();
        let mut cursor = 0i64;
        let mut per_writer_seq = std::collections::HashMap::<String, i64>::new();
        while cursor < total {
            for e in reader.stream_after(cursor, 64).expect("read") {
                assert_eq!(e.id, cursor + 1, "no id skipped");
                cursor = e.id;
                // Each writer's events stay in its own order.
                let seq = per_writer_seq.entry(e.event.node_id.clone()).or_default();
                assert_eq!(e.event.run_seq, Some(*seq + 1));
                *seq += 1;
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(reader.stream_head().expect("head"), total);
        assert!(reader.stream_after(total, 10).expect("read").is_empty());
    }

    #[test]
    fn one_claim_per_key_whichever_node_asks_and_a_wake_up_carries_only_the_id() {
        let pg = TestPostgres::start();
        let url = pg.database("claims");
        let nodes: Vec<Arc<PgStore>> = (0..3).map(|_| TestPostgres::store(&url)).collect();
        for round in 0..5 {
            let key = format!("key-{round}");
            let claims: Vec<_> = (0..9)
                .map(|t| {
                    let store = nodes[t % 3].clone();
                    let key = key.clone();
                    std::thread::spawn(move || {
                        store
                            .claim_run(&key, "agent:main:main", &format!("node-{}", t % 3))
                            .expect("claim")
                    })
                })
                .collect();
            let claims: Vec<Claim> = claims.into_iter().map(|t| t.join().expect("t")).collect();
            let won = claims.iter().filter(|c| **c == Claim::Claimed).count();
            assert_eq!(won, 1, "exactly one claim wins: {claims:?}");
            let owners: std::collections::HashSet<_> = claims
                .iter()
                .filter_map(|c| match c {
                    Claim::Existing(r) => Some(r.node_id.clone()),
                    Claim::Claimed => None,
                })
                .collect();
            assert_eq!(owners.len(), 1, "every loser sees the one owner");
        }

        // A listener on one node is woken by an append on another, with
        // the id only.
        let mut listener = nodes[0].listen().expect("listen");
        let last = nodes[2]
            .append_stream(&[event("n2", 1), event("n2", 2)])
            .expect("append");
        match listener.next(Duration::from_secs(30)).expect("listener") {
            Some(Wake::Events(id)) => assert_eq!(id, last),
            other => panic!("expected an events wake-up, got {other:?}"),
        }
        // An abort request reaches the owner's wake-ups and its list.
        assert_eq!(
            nodes[1]
                .claim_run("long", "agent:main:x", "node-1")
                .expect("claim"),
            Claim::Claimed
        );
        let asked = nodes[0]
            .request_abort("agent:main:x", None, "rpc")
            .expect("abort");
        assert_eq!(asked.len(), 1);
        match listener.next(Duration::from_secs(30)).expect("listener") {
            Some(Wake::Abort(node)) => assert_eq!(node, "node-1"),
            other => panic!("expected an abort wake-up, got {other:?}"),
        }
        assert_eq!(
            nodes[1].abort_requests("node-1").expect("requests"),
            vec![("long".to_string(), "rpc".to_string())]
        );

        // A run of a node with no heartbeat is taken as lost exactly once;
        // the node's own late end then finds it ended.
        assert_eq!(
            nodes[0]
                .claim_run("ghost-run", "agent:main:g", "ghost")
                .expect("claim"),
            Claim::Claimed
        );
        let live = pincer::store::NodeRecord {
            node_id: "node-0".into(),
            name: "n0".into(),
            address: "127.0.0.1:1".into(),
            started_ms: 1,
            last_seen_ms: 0,
            channels: "[]".into(),
        };
        nodes[0].heartbeat(&live).expect("heartbeat");
        let lost = nodes[1].take_orphans(60_000, "{}").expect("orphans");
        let ids: Vec<&str> = lost.iter().map(|r| r.run_id.as_str()).collect();
        assert!(ids.contains(&"ghost-run"), "{ids:?}");
        assert!(
            nodes[2]
                .take_orphans(60_000, "{}")
                .expect("orphans")
                .is_empty()
        );
        assert!(
            !nodes[0]
                .finish_run("ghost-run", "ghost", "ok", "{}")
                .expect("finish"),
            "already ended by the others"
        );
        assert_eq!(
            nodes[0].live_nodes(60_000).expect("nodes")[0].node_id,
            "node-0"
        );
    }
}
