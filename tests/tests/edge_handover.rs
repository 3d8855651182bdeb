//! The hand-over of authenticated WebSockets from the edge runtime to the
//! control runtime (issue 8, the attack benchmark's pre-auth flood):
//! sockets are accepted, upgraded and handshaken on the edge runtime, and a
//! connection that gets its `hello-ok` moves to the control runtime with
//! its socket. After the move the connection works as before (requests,
//! events, chat streaming, the shutdown close); frames a client pipelines
//! right after `connect` (in the same write as the HTTP upgrade, or before
//! reading anything) are all answered; and a flood of unauthenticated
//! sockets neither moves nor stops the operator's connection.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use pincer_tests::ws::{read_upgrade_head, tcp_from, upgrade_from, upgrade_request};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A hang guard for one exchange, not a timing check.
const WAIT: Duration = Duration::from_secs(30);

fn handovers(g: &TestGateway) -> (u64, u64) {
    let c = &g.gw().counters;
    (
        c.handovers.load(Ordering::Relaxed),
        c.handovers_skipped.load(Ordering::Relaxed),
    )
}

/// A masked client text frame.
fn client_text(payload: &str) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let n = payload.len();
    let mut out = vec![0x81];
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 65535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A `req` frame's JSON text.
fn req(id: &str, method: &str, params: Value) -> String {
    json!({"type": "req", "id": id, "method": method, "params": params}).to_string()
}

/// Read server frames until every id in `want` has its response; returns
/// the responses by id and the events read meanwhile (a hang guard per
/// frame).
async fn responses<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    want: &HashSet<String>,
) -> (HashMap<String, Value>, Vec<Value>) {
    let mut got = HashMap::new();
    let mut events = Vec::new();
    while got.len() < want.len() {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the hang guard");
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => panic!(
                "closed with {f:?} after {} of {} answers",
                got.len(),
                want.len()
            ),
            Some(Ok(_)) => continue,
            other => panic!(
                "socket ended ({other:?}) after {} of {} answers",
                got.len(),
                want.len()
            ),
        };
        let v: Value = serde_json::from_str(&text).expect("server sends JSON");
        if v["type"] == "event" {
            events.push(v);
            continue;
        }
        let id = v["id"].as_str().expect("response id").to_string();
        assert!(want.contains(&id), "unexpected response {v}");
        assert!(got.insert(id, v).is_none(), "answered twice");
    }
    (got, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_connection_moves_to_the_control_runtime_and_keeps_working() {
    let mut g = TestGateway::start().await;
    assert_eq!(handovers(&g), (0, 0));
    let mut a = Client::admin(&g.url()).await;
    // The hand-over is counted before the connection's first write (its
    // `hello-ok`).
    assert_eq!(handovers(&g), (1, 0));
    let mut b = Client::connect(&g.url(), connect_params(3, 3, Some("secret"), ALL)).await;
    assert_eq!(handovers(&g), (2, 0));

    // Requests.
    let health = a.call("health", json!({})).await;
    assert!(health.is_object(), "{health}");
    let status = b.call("status", json!({})).await;
    assert!(status.is_object(), "{status}");

    // Chat streaming, with its events fanned out to both connections.
    let msg = "handed over to the control runtime";
    let ack = a
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": msg, "idempotencyKey": "handover-1"}),
        )
        .await;
    assert_eq!(ack["runId"], "handover-1");
    for c in [&mut a, &mut b] {
        let events = c.chat_run("handover-1").await;
        let last = events.last().expect("a terminal event");
        assert_eq!(last["state"], "final", "{events:?}");
        assert_eq!(last["message"]["content"][0]["text"], msg);
        assert!(events.len() > 1, "streamed in deltas: {events:?}");
    }
    let h = b.call("chat.history", json!({"sessionKey": "main"})).await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(2), "{h}");

    // Shutdown reaches the moved sockets: the `shutdown` event, then 1012.
    let gw = g.gw().clone();
    let stop = tokio::spawn(async move {
        g.stop().await;
        g
    });
    let closed = a.closed().await;
    assert_eq!(closed.code, 1012, "{closed:?}");
    assert_eq!(b.closed().await.code, 1012);
    let _g = stop.await.expect("stopped");
    let c = &gw.counters;
    assert_eq!(c.handovers.load(Ordering::Relaxed), 2);
    assert_eq!(c.handovers_skipped.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_right_after_connect_are_all_answered() {
    let g = TestGateway::start().await;
    let connect = req("c", "connect", connect_params(3, 4, Some("secret"), ALL));

    // 1. Everything in one write: the HTTP upgrade, `connect` and 64
    // requests (about 5 KiB of frames, more than one read of the
    // handshake), so the hand-over finds them in hyper's read-ahead, in
    // the WebSocket's buffer (one of them cut in half) and in the kernel.
    let mut s = TcpStream::connect(g.addr).await.expect("connect");
    let mut wire = upgrade_request(g.addr).into_bytes();
    wire.extend(client_text(&connect));
    let mut want: HashSet<String> = HashSet::from(["c".to_string()]);
    for i in 0..64 {
        let (id, method) = if i % 2 == 0 {
            (format!("health-{i}"), "health")
        } else {
            (format!("status-{i}"), "status")
        };
        wire.extend(client_text(&req(&id, method, json!({}))));
        want.insert(id);
    }
    assert!(wire.len() > 4096 + 512, "{} bytes", wire.len());
    s.write_all(&wire).await.expect("write");
    read_upgrade_head(&mut s).await;
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
    let (got, _) = responses(&mut ws, &want).await;
    assert_eq!(got["c"]["payload"]["type"], "hello-ok", "{}", got["c"]);
    for (id, v) in &got {
        assert_eq!(v["ok"], true, "{id}: {v}");
    }
    assert_eq!(handovers(&g), (1, 0));

    // 2. The upgrade and `connect` in one write, the requests in a second
    // one at once, before anything is read: they arrive while the
    // handshake runs or while the socket moves.
    let mut s = TcpStream::connect(g.addr).await.expect("connect");
    let mut wire = upgrade_request(g.addr).into_bytes();
    wire.extend(client_text(&connect));
    s.write_all(&wire).await.expect("write");
    let mut wire = Vec::new();
    let mut want: HashSet<String> = HashSet::from(["c".to_string()]);
    for i in 0..32 {
        let id = format!("later-{i}");
        wire.extend(client_text(&req(&id, "health", json!({}))));
        want.insert(id);
    }
    // A chat run too: its events must follow on the moved socket.
    wire.extend(client_text(&req(
        "chat",
        "chat.send",
        json!({"sessionKey": "pipelined", "message": "after connect", "idempotencyKey": "pipe-1"}),
    )));
    want.insert("chat".into());
    s.write_all(&wire).await.expect("write");
    read_upgrade_head(&mut s).await;
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
    let (got, mut events) = responses(&mut ws, &want).await;
    for (id, v) in &got {
        assert_eq!(v["ok"], true, "{id}: {v}");
    }
    // The run's events arrive on the same socket, up to its final one.
    let mut seen = 0;
    loop {
        let v: Value = if events.is_empty() {
            let msg = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("a frame within the hang guard");
            let t = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            };
            serde_json::from_str(&t).expect("JSON")
        } else {
            events.remove(0)
        };
        if v["event"] != "chat" || v["payload"]["runId"] != "pipe-1" {
            continue;
        }
        seen += 1;
        if v["payload"]["state"] == "final" {
            assert_eq!(
                v["payload"]["message"]["content"][0]["text"],
                "after connect"
            );
            break;
        }
        assert_eq!(v["payload"]["state"], "delta", "{v}");
    }
    assert!(seen > 1, "streamed in deltas");
    assert_eq!(handovers(&g), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_sockets_neither_moves_nor_stops_an_operator() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.limit_loopback = true;
    opts.gateway.preauth_violations_burst = 1;
    // Long enough that the flood's sockets and the block outlive the test.
    opts.gateway.handshake_timeout_ms = 600_000;
    opts.gateway.preauth_backoff_base_ms = 600_000;
    let g = TestGateway::start_with(opts, dir).await;

    // A blocked address: one oversize frame before `connect`.
    let blocked = Ipv4Addr::new(127, 0, 3, 1);
    let mut s = upgrade_from(blocked.into(), g.addr).await;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&frame).await.expect("write frame");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("closed after the oversize frame");

    // The flood: 200 silent upgraded sockets from 4 addresses, held open,
    // and 100 sockets from the blocked address, refused at accept.
    let mut flood = Vec::new();
    for i in 0..200u8 {
        flood.push(upgrade_from(Ipv4Addr::new(127, 0, 2, 1 + i % 4).into(), g.addr).await);
    }
    assert_eq!(g.gw().preauth.count(), 200);
    for _ in 0..100 {
        let mut s = tcp_from(blocked.into(), g.addr).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
            .await
            .expect("refused and closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    }

    // The operator connects through the flood and is served; only its
    // socket moved to the control runtime.
    let mut op = Client::admin(&g.url()).await;
    assert_eq!(handovers(&g), (1, 0));
    let ack = op
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "through the flood", "idempotencyKey": "flood-1"}),
        )
        .await;
    assert_eq!(ack["runId"], "flood-1");
    let events = op.chat_run("flood-1").await;
    assert_eq!(events.last().expect("terminal")["state"], "final");
    // 50 heavy requests at once (answered as they finish, in any order).
    let mut want = HashSet::new();
    for _ in 0..50 {
        want.insert(op.send_req("health", json!({})).await);
    }
    let (got, _) = responses(&mut op.ws, &want).await;
    for (id, v) in &got {
        assert_eq!(v["ok"], true, "{id}: {v}");
    }

    // The flood is still held, unauthenticated, where it was.
    assert_eq!(g.gw().preauth.count(), 200);
    let c = &g.gw().counters;
    assert_eq!(c.handshakes.load(Ordering::Relaxed), 1);
    assert_eq!(handovers(&g), (1, 0));
    drop(flood);
}
