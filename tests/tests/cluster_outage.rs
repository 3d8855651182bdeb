//! Cluster mode: PostgreSQL going away under three real `pincer` nodes and
//! coming back. Every node says it is not ready while the store is gone,
//! answers a new run with an error instead of hanging, and recovers by
//! itself when the store returns: runs stream across nodes again and
//! nothing committed before the outage is lost.

use std::time::Duration;

use serde_json::{Value, json};

use pincer_tests::cluster::{STEP_GUARD, TestCluster, cursor_client, node_main, run_events};

/// The child test every node runs.
const CHILD: &str = "cluster_outage_node";

/// Not a test: one cluster node, started by the tests below.
#[test]
#[ignore = "a cluster node, run as a child process by the tests"]
fn cluster_outage_node() {
    node_main();
}

async fn guard<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

/// `/readyz` of the node at `addr`: the status code (0: no answer).
async fn readyz(addr: &str) -> u16 {
    match reqwest::Client::new()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Wait until every node's `/readyz` answers `code`.
async fn all_ready(c: &TestCluster, code: u16) {
    loop {
        let mut all = true;
        for n in &c.nodes {
            all &= readyz(&n.addr).await == code;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(m: &Value) -> String {
    m["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_new_runs_while_the_store_is_gone_and_recover_when_it_returns() {
    let mut c = TestCluster::start(CHILD, &["node-a", "node-b", "node-c"]);
    let mut on_a = cursor_client(c.url(0)).await;
    let mut on_b = cursor_client(c.url(1)).await;
    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "outage", "message": "before the outage", "idempotencyKey": "o-before"}),
        )
        .await;
    assert_eq!(sent["status"], "started", "{sent}");
    let events = guard("the first run on node A", run_events(&mut on_a, "o-before")).await;
    assert_eq!(events.last().expect("events")["payload"]["state"], "final");

    c.pg.server.stop_immediate().expect("stop PostgreSQL");
    guard("every node not ready", all_ready(&c, 503)).await;
    // A new run cannot be claimed: a clear error, not a hang.
    let res = guard(
        "chat.send answered during the outage",
        on_b.request(
            "chat.send",
            json!({"sessionKey": "outage", "message": "during", "idempotencyKey": "o-during"}),
        ),
    )
    .await;
    assert_eq!(res["ok"], false, "{res}");
    // What needs no store still works.
    on_a.call("health", json!({})).await;

    c.pg.server.restart().expect("start PostgreSQL again");
    guard("every node ready again", all_ready(&c, 200)).await;
    // A run on node C streams to node A again: the log, its wake-ups and
    // the claims work without a restart.
    let mut on_c = cursor_client(c.url(2)).await;
    let sent = on_c
        .call(
            "chat.send",
            json!({"sessionKey": "outage", "message": "after the outage", "idempotencyKey": "o-after"}),
        )
        .await;
    assert_eq!(sent["status"], "started", "{sent}");
    let events = guard(
        "the run after the outage on node A",
        run_events(&mut on_a, "o-after"),
    )
    .await;
    assert_eq!(events.last().expect("events")["payload"]["state"], "final");
    // Nothing committed before the outage was lost.
    let h = on_a
        .call("chat.history", json!({"sessionKey": "outage"}))
        .await;
    let texts: Vec<String> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(text)
        .collect();
    assert!(texts.contains(&"before the outage".to_string()), "{h}");
    assert!(texts.contains(&"after the outage".to_string()), "{h}");
}
