//! `chat.send`'s answer, then a WebSocket Ping, then the run: the run
//! executes only once the client's Pong proves it read the answer (OpenClaw's
//! TUI handles every frame of one read before its `chat.send` await
//! resumes, so a fast run's `final` in the same read as the answer was lost
//! to it). Driven with a raw WebSocket client that answers pings only when
//! the test says so:
//!
//! - the order on the wire is answer, Ping, and the run's events only after
//!   the Pong; while the Pong is held the run has not executed, the user's
//!   message is already in the history (saved when `chat.send` accepted
//!   it), and another connection's run is not held up;
//! - a run aborted before its Pong keeps the user's message in history
//!   (once; the next run's message is appended once too);
//! - a client that never answers pings still gets its run, after the bound
//!   (`pong_barrier_timeout_ms`), counted in the metric.

use std::sync::atomic::Ordering;

use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use pincer_tests::ws::{RawWs, ServerFrame, op};
use serde_json::{Value, json};

const TOKEN: &str = "secret";
/// Pong.
const PONG: u8 = 10;

/// A gateway whose runs wait at most `bound_ms` for the Pong.
async fn gateway(bound_ms: u64) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.pong_barrier_timeout_ms = bound_ms;
    TestGateway::start_with(opts, dir).await
}

/// A raw client past the handshake (it answers no ping by itself).
async fn raw_client(g: &TestGateway) -> RawWs {
    let mut ws = RawWs::open(g.addr).await;
    let connect = json!({"type": "req", "id": "c1", "method": "connect",
        "params": connect_params(3, 4, Some(TOKEN), ALL)});
    send(&mut ws, &connect).await;
    loop {
        let v = text_frame(&next(&mut ws).await);
        if v["type"] == "res" && v["id"] == "c1" {
            assert_eq!(v["ok"], true, "{v}");
            return ws;
        }
    }
}

async fn send(ws: &mut RawWs, v: &Value) {
    ws.frame(true, op::TEXT, v.to_string().as_bytes())
        .await
        .expect("write frame");
}

async fn next(ws: &mut RawWs) -> ServerFrame {
    ws.read_frame().await.expect("a frame")
}

fn text_frame(f: &ServerFrame) -> Value {
    assert_eq!(f.opcode, op::TEXT, "a text frame");
    serde_json::from_slice(&f.payload).expect("JSON frame")
}

/// Whether `v` is an event of run `run_id`.
fn of_run(v: &Value, run_id: &str) -> bool {
    v["type"] == "event" && v["payload"]["runId"] == run_id
}

/// Send `chat.send` and read up to and including the Ping that follows
/// its answer: (the answer, the Ping's payload). Fails if an event of the
/// run comes before the answer or before the Ping.
async fn chat_send_until_ping(
    ws: &mut RawWs,
    session: &str,
    text: &str,
    run_id: &str,
) -> (Value, Vec<u8>) {
    send(
        ws,
        &json!({"type": "req", "id": "s1", "method": "chat.send",
            "params": {"sessionKey": session, "message": text, "idempotencyKey": run_id}}),
    )
    .await;
    let mut answer = None;
    loop {
        let f = next(ws).await;
        if f.opcode == op::PING {
            let answer = answer.expect("the Ping comes after the chat.send answer");
            return (answer, f.payload);
        }
        let v = text_frame(&f);
        assert!(
            !of_run(&v, run_id),
            "an event of the run before its answer and Ping: {v}"
        );
        if v["type"] == "res" && v["id"] == "s1" {
            assert!(answer.is_none(), "two answers");
            answer = Some(v);
        }
    }
}

/// Read until run `run_id`'s terminal chat event (answering no ping);
/// its chat states in order.
async fn read_run(ws: &mut RawWs, run_id: &str) -> Vec<String> {
    let mut states = Vec::new();
    loop {
        let f = next(ws).await;
        if f.opcode != op::TEXT {
            continue;
        }
        let v = text_frame(&f);
        if v["event"] == "chat" && v["payload"]["runId"] == run_id {
            let state = v["payload"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            states.push(state.clone());
            if state != "delta" {
                return states;
            }
        }
    }
}

/// `(role, text)` of the session's history.
async fn history(c: &mut Client, session: &str) -> Vec<(String, String)> {
    let h = c.call("chat.history", json!({"sessionKey": session})).await;
    h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn counters(g: &TestGateway) -> (u64, u64) {
    let c = &g.gw().counters;
    (
        c.pong_barriers.load(Ordering::Relaxed),
        c.pong_barrier_timeouts.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_starts_after_the_pong_to_the_ping_that_follows_the_answer() {
    // A bound far beyond the test: only the Pong can let the run go.
    let g = gateway(600_000).await;
    let mut ws = raw_client(&g).await;
    let (answer, ping) = chat_send_until_ping(&mut ws, "barrier", "ping pong", "run-b1").await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["payload"]["status"], "started", "{answer}");
    assert!(
        ping.starts_with(b"pincer-barrier:"),
        "{}",
        String::from_utf8_lossy(&ping)
    );

    // The Pong is held: the user's turn is in the history already (saved
    // at acceptance), the run has not executed (no reply), and another
    // connection's run goes through meanwhile (its client library answers
    // its own Ping).
    let mut other = Client::connect(&g.url(), connect_params(3, 4, Some(TOKEN), ALL)).await;
    assert_eq!(
        history(&mut other, "barrier").await,
        [("user".to_string(), "ping pong".to_string())]
    );
    other
        .call(
            "chat.send",
            json!({"sessionKey": "elsewhere", "message": "not held up", "idempotencyKey": "run-o1"}),
        )
        .await;
    let states = other.chat_run("run-o1").await;
    assert_eq!(states.last().unwrap()["state"], "final", "{states:?}");
    assert_eq!(
        counters(&g),
        (1, 0),
        "the other client's Pong released its run"
    );
    assert_eq!(
        history(&mut other, "barrier").await,
        [("user".to_string(), "ping pong".to_string())],
        "the held run executed before its Pong"
    );

    // The Pong: the run executes and its events follow.
    ws.frame(true, PONG, &ping).await.expect("pong");
    let states = read_run(&mut ws, "run-b1").await;
    assert_eq!(
        states.last().map(String::as_str),
        Some("final"),
        "{states:?}"
    );
    assert_eq!(counters(&g), (2, 0));
    // The user's message is in the history once, the reply after it.
    let h = history(&mut other, "barrier").await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0], ("user".to_string(), "ping pong".to_string()));
    assert_eq!(h[1].0, "assistant");
    assert!(h[1].1.contains("ping pong"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_aborted_before_its_pong_leaves_the_users_message_once() {
    let g = gateway(600_000).await;
    let mut ws = raw_client(&g).await;
    let (answer, _ping) = chat_send_until_ping(&mut ws, "aborts", "never answered", "run-a1").await;
    assert_eq!(answer["payload"]["status"], "started", "{answer}");
    let mut other = Client::connect(&g.url(), connect_params(3, 4, Some(TOKEN), ALL)).await;
    let aborted = other
        .call(
            "chat.abort",
            json!({"sessionKey": "aborts", "runId": "run-a1"}),
        )
        .await;
    assert_eq!(aborted["aborted"], true, "{aborted}");
    // The raw client gets the run's end without ever answering the Ping.
    let states = read_run(&mut ws, "run-a1").await;
    assert_eq!(states, ["aborted"]);
    assert_eq!(
        history(&mut other, "aborts").await,
        [("user".to_string(), "never answered".to_string())]
    );
    // The session takes the next message; each user message is there once.
    other
        .call(
            "chat.send",
            json!({"sessionKey": "aborts", "message": "second try", "idempotencyKey": "run-a2"}),
        )
        .await;
    let states = other.chat_run("run-a2").await;
    assert_eq!(states.last().unwrap()["state"], "final", "{states:?}");
    let h = history(&mut other, "aborts").await;
    let roles: Vec<&str> = h.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "user", "assistant"], "{h:?}");
    assert_eq!(h[0].1, "never answered");
    assert_eq!(h[1].1, "second try");
    assert!(h[2].1.contains("second try"), "{h:?}");
    assert!(
        !h[2].1.contains("never answered"),
        "the aborted message reached the model: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_gets_its_run_after_the_bound() {
    let g = gateway(300).await;
    let mut ws = raw_client(&g).await;
    let (answer, _ping) = chat_send_until_ping(&mut ws, "deaf", "no pongs here", "run-d1").await;
    assert_eq!(answer["payload"]["status"], "started", "{answer}");
    let states = read_run(&mut ws, "run-d1").await;
    assert_eq!(
        states.last().map(String::as_str),
        Some("final"),
        "{states:?}"
    );
    assert_eq!(counters(&g), (0, 1), "the run went ahead on the bound");
    // The metric is on /metrics.
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", g.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pincer_pong_barrier_timeouts_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    // The connection still works: a second message also gets its run.
    let (_, _) = chat_send_until_ping(&mut ws, "deaf", "still here", "run-d2").await;
    let states = read_run(&mut ws, "run-d2").await;
    assert_eq!(
        states.last().map(String::as_str),
        Some("final"),
        "{states:?}"
    );
    assert_eq!(counters(&g), (0, 2));
}
