//! Sessions and transcripts survive a clean restart and a kill -9.
//!
//! The kill -9 test runs the gateway in a child process: this test binary
//! re-executes itself with `child_gateway` selected and an environment
//! variable naming the data directory; the child prints its address and
//! serves until it is killed with SIGKILL.

use pincer_tests::gateway::{ChildGateway, Client, TestGateway};
use serde_json::{Value, json};

const CHILD_ENV: &str = "PINCER_TEST_CHILD_DATA_DIR";

fn text_of(msg: &Value) -> String {
    msg["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Not a test on its own: the gateway process the kill -9 test starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by kill_9_loses_nothing_committed as a child process"]
async fn child_gateway() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut opts = pincer::gateway::launch::Options::new(&dir);
    opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
    opts.gateway.token = Some("secret".into());
    opts.agent.echo_word_delay_ms = 100;
    let running = pincer_tests::gateway::start(opts)
        .await
        .expect("child gateway");
    println!("LISTENING {}", running.addr);
    std::future::pending::<()>().await;
}

fn spawn_child(dir: &std::path::Path) -> ChildGateway {
    ChildGateway::spawn("child_gateway", &[(CHILD_ENV, &dir.display().to_string())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = spawn_child(dir.path());
    let mut c = Client::admin(&g.url).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "first message", "idempotencyKey": "k1"}),
    )
    .await;
    let done = c.chat_run("k1").await;
    assert_eq!(done.last().unwrap()["state"], "final");
    // A second run is streaming when the process dies.
    let long = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": long, "idempotencyKey": "k2"}),
    )
    .await;
    c.event(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == "k2" && e["payload"]["state"] == "delta"
    })
    .await;
    g.kill();
    assert!(c.closed().await.code != 1000);

    let mut g2 = spawn_child(dir.path());
    let mut c = Client::admin(&g2.url).await;
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let msgs = h["messages"].as_array().unwrap();
    // The finished exchange and the user message of the interrupted run.
    assert_eq!(msgs.len(), 3, "{h}");
    assert_eq!(
        (msgs[0]["role"].as_str(), text_of(&msgs[0]).as_str()),
        (Some("user"), "first message")
    );
    assert_eq!(
        (msgs[1]["role"].as_str(), text_of(&msgs[1]).as_str()),
        (Some("assistant"), "first message")
    );
    assert_eq!(text_of(&msgs[2]), long);
    let list = c.call("sessions.list", json!({})).await;
    assert_eq!(list["count"], 1);
    // The restarted gateway answers normally.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "after", "idempotencyKey": "k3"}),
    )
    .await;
    assert_eq!(c.chat_run("k3").await.last().unwrap()["state"], "final");
    g2.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_keeps_history_and_persists_the_interrupted_answer() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.shutdown_grace_ms = 0;
    opts.agent.echo_word_delay_ms = 100;
    let data = dir.path().to_path_buf();
    let mut g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    let long = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": long, "idempotencyKey": "r1"}),
    )
    .await;
    c.event(|e| e["event"] == "chat" && e["payload"]["state"] == "delta")
        .await;
    let stopping = tokio::spawn(async move {
        g.stop().await;
        g
    });
    // The client sees the run end as aborted, the shutdown event, and 1012.
    let events = c.chat_run("r1").await;
    assert_eq!(events.last().unwrap()["state"], "aborted");
    assert_eq!(events.last().unwrap()["stopReason"], "shutdown");
    c.event(|e| e["event"] == "shutdown").await;
    assert_eq!(c.closed().await.code, 1012);
    let g = stopping.await.unwrap();

    let mut opts = pincer::gateway::launch::Options::new(&data);
    opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
    opts.gateway.token = Some("secret".into());
    let g2 = TestGateway::start_with(opts, g.dir).await;
    let mut c = Client::admin(&g2.url()).await;
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(msgs[1]["stopReason"], "aborted");
    assert!(text_of(&msgs[1]).starts_with("w0"));
}
