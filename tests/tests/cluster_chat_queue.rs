//! Cluster mode: `chat.send` for a session whose run executes on another
//! node answers `queued: true` with its `position`, as it does behind a
//! run of its own node, and its message joins the transcript only at its turn
//! (after the other node's run). Two real `pincer` gateways (child
//! processes) on one real PostgreSQL database.

use serde_json::{Value, json};

use pincer_tests::cluster::{
    STEP_GUARD, TestCluster, cursor_client, node_main, of_run, run_events, words,
};

/// The child test every node runs.
const CHILD: &str = "chat_queue_node_child";

/// Not a test: one cluster node, started by the test below.
#[test]
#[ignore = "a cluster node, run as a child process by the tests"]
fn chat_queue_node_child() {
    node_main();
}

async fn guard<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

/// Index of the first transcript message of `run_id` with `role`.
fn index_of(msgs: &[Value], run_id: &str, role: &str) -> usize {
    msgs.iter()
        .position(|m| m["runId"] == run_id && m["role"] == role)
        .unwrap_or_else(|| panic!("no {role} message of {run_id}: {msgs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_send_behind_another_nodes_run_answers_queued_with_its_position() {
    let cluster = TestCluster::start(CHILD, &["node-a", "node-b"]);
    let (a, b) = (cluster.url(0), cluster.url(1));
    let mut on_a = cursor_client(a).await;
    let mut on_b = cursor_client(b).await;

    // A long run executes on node B (its first words are out, so it holds
    // the session).
    let sent = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "shared", "message": words(20_000), "idempotencyKey": "long-b"}),
        )
        .await;
    assert_eq!(sent["status"], "started", "{sent}");
    guard(
        "the long run streams",
        on_a.event(|e| of_run(e, "long-b") && e["payload"]["stream"] == "assistant"),
    )
    .await;

    // The same session on node A: it waits for node B's run.
    let queued = on_a
        .call(
            "chat.send",
            json!({"sessionKey": "shared", "message": "after the long one", "idempotencyKey": "next-a"}),
        )
        .await;
    assert_eq!(queued["status"], "started", "{queued}");
    assert_eq!(queued["queued"], true, "{queued}");
    assert_eq!(queued["position"], 1, "{queued}");
    assert_eq!(queued["runId"], "next-a", "{queued}");
    // On one node, behind its own run, the answer is the same.
    let local = on_b
        .call(
            "chat.send",
            json!({"sessionKey": "shared", "message": "behind it on b", "idempotencyKey": "next-b"}),
        )
        .await;
    assert_eq!(local["status"], "started", "{local}");
    assert_eq!(local["queued"], true, "{local}");
    assert_eq!(local["position"], 1, "{local}");
    // An idle session still starts at once on either node.
    let idle = on_a
        .call(
            "chat.send",
            json!({"sessionKey": "idle", "message": words(3), "idempotencyKey": "idle-a"}),
        )
        .await;
    assert_eq!(idle["status"], "started", "{idle}");
    assert!(idle.get("queued").is_none(), "{idle}");

    // The long run is aborted; both waiting runs then run, one at a time,
    // and answer.
    let aborted = on_a
        .call(
            "chat.abort",
            json!({"sessionKey": "shared", "runId": "long-b"}),
        )
        .await;
    assert_eq!(aborted["aborted"], true, "{aborted}");
    for run in ["next-a", "next-b"] {
        let events = guard("the queued run's events", run_events(&mut on_a, run)).await;
        let end = events.last().expect("end");
        assert_eq!(end["payload"]["state"], "final", "{end}");
    }
    let idle_events = guard("the idle run", run_events(&mut on_b, "idle-a")).await;
    assert_eq!(
        idle_events.last().expect("end")["payload"]["state"],
        "final"
    );

    // The queued message joined the transcript at its turn: after the
    // long run's, not inside it.
    let history = on_b
        .call("chat.history", json!({"sessionKey": "shared"}))
        .await;
    let msgs = history["messages"].as_array().expect("messages").clone();
    let long_user = index_of(&msgs, "long-b", "user");
    let next_user = index_of(&msgs, "next-a", "user");
    let next_answer = index_of(&msgs, "next-a", "assistant");
    assert!(long_user < next_user, "{msgs:?}");
    if let Some(long_answer) = msgs
        .iter()
        .position(|m| m["runId"] == "long-b" && m["role"] == "assistant")
    {
        assert!(long_answer < next_user, "{msgs:?}");
    }
    assert!(next_user < next_answer, "{msgs:?}");
}
