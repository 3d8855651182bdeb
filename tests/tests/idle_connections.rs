//! Idle connections hold no frame buffers (issue 13, "one node's own
//! scale"), and a connection that sat idle still works fully afterwards:
//! a large frame in and a large event out make the server's buffers grow
//! on demand, and they are freed again once the frames are through. The
//! frame limits of issue 8 still hold: 64 KiB before `hello-ok`,
//! `max_payload` after.
//!
//! The server's frame buffers are watched through the gateway's
//! `ws_frame_buffers` gauge (`pincer_ws_frame_buffer_bytes` on /metrics).

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pincer_tests::gateway::{Client, FRAME_WAIT, TestGateway};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Bytes the gateway's WebSocket connections hold in frame buffers.
fn frame_buffers(g: &TestGateway) -> usize {
    g.gw().counters.ws_frame_buffers.load(Ordering::Relaxed)
}

/// Wait until no connection holds a frame buffer. The last write of a
/// frame frees its buffer just after the bytes left, so a client can see
/// the frame a moment before the gauge drops: poll, with the hang guard.
async fn until_no_frame_buffers(g: &TestGateway) {
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    while frame_buffers(g) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "frame buffers still held: {} bytes",
            frame_buffers(g)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_no_buffers_and_still_works_fully() {
    let g = TestGateway::start().await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(Client::admin(&g.url()).await);
    }
    // Eight connected, idle connections: nothing buffered on the server.
    until_no_frame_buffers(&g).await;

    // A ping on an idle connection is answered (on a connection of its
    // own: the frames it skips here would be missing from its event
    // sequence below).
    let mut pinger = Client::admin(&g.url()).await;
    until_no_frame_buffers(&g).await;
    pinger
        .ws
        .send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(FRAME_WAIT, pinger.ws.next())
            .await
            .expect("a frame within the hang guard");
        match m {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"still there?");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }

    // A large frame in (a 600 KB chat message in one frame) and large
    // events out to every idle connection (the echo provider answers with
    // the same text).
    let word = "w".repeat(600_000);
    let ack = idle[0]
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": word, "idempotencyKey": "big-1"}),
        )
        .await;
    assert_eq!(ack["runId"], "big-1");
    for c in idle.iter_mut() {
        let events = c.chat_run("big-1").await;
        let last = events.last().expect("terminal event");
        assert_eq!(last["state"], "final");
        let text = last["message"]["content"][0]["text"].as_str().unwrap_or("");
        assert_eq!(text.len(), 600_000, "the whole text arrives");
    }
    // The buffers grew for those frames and are freed again.
    until_no_frame_buffers(&g).await;

    // Every connection still answers requests after being idle.
    for c in idle.iter_mut() {
        let h = c.call("last-heartbeat", json!({})).await;
        assert!(h.is_null() || h.is_object(), "{h}");
    }
    until_no_frame_buffers(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_limits_still_hold_before_and_after_hello_ok() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.max_payload = 256 * 1024;
    let g = TestGateway::start_with(opts, dir).await;
    let mut bystander = Client::admin(&g.url()).await;

    // Before hello-ok: a frame over 64 KiB closes the socket with 1009.
    let mut early = Client::open(&g.url()).await;
    let pad = "x".repeat(70 * 1024);
    let _ = early
        .ws
        .send(Message::Text(
            json!({"type": "req", "id": "1", "method": "connect", "params": {"pad": pad}})
                .to_string()
                .into(),
        ))
        .await;
    let closed = early.closed().await;
    assert_eq!(closed.code, 1009, "{closed:?}");

    // After hello-ok: a frame under max_payload works (a 200 KiB request)...
    let mut c = Client::admin(&g.url()).await;
    let pad = "y".repeat(200 * 1024);
    let r = c.request("last-heartbeat", json!({"pad": pad})).await;
    assert_eq!(r["type"], "res", "{r}");
    // ...and one over it closes with 1009.
    let pad = "z".repeat(300 * 1024);
    let _ =
        c.ws.send(Message::Text(
            json!({"type": "req", "id": "big", "method": "last-heartbeat", "params": {"pad": pad}})
                .to_string()
                .into(),
        ))
        .await;
    let closed = c.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1009, "payload too large")
    );

    // Fragments adding up past max_payload close with 1009 too, even
    // though each frame is under it.
    let mut f = Client::admin(&g.url()).await;
    let part = "f".repeat(200 * 1024);
    let frame = |fin: bool, opcode| {
        use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
        let header = FrameHeader {
            is_final: fin,
            opcode,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(
            header,
            part.clone().into_bytes().into(),
        ))
    };
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let _ = f.ws.send(frame(false, OpCode::Data(Data::Text))).await;
    let _ = f.ws.send(frame(true, OpCode::Data(Data::Continue))).await;
    let closed = f.closed().await;
    assert_eq!(closed.code, 1009, "{closed:?}");

    // Nobody else noticed, and nothing is left buffered.
    bystander.call("last-heartbeat", json!({})).await;
    until_no_frame_buffers(&g).await;
}
