//! Gateway limits over real sockets: slow consumers are cut off (1008)
//! without hurting anyone else, the connection cap (503), the per-IP
//! connection rate (429), the browser origin check, graceful shutdown
//! (`shutdown` event then 1012), and refusing an unauthenticated
//! non-loopback listen.

use futures::{SinkExt, StreamExt};
use pincer_tests::gateway::{ALL, Client, FRAME_WAIT, TestGateway, connect_params};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The HTTP status a refused upgrade got (panics if it was accepted).
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("upgrade to {url} was accepted"),
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// The next text frame as JSON, or `Err((code, reason))` when it closed.
async fn next_json(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let msg = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame within the hang guard");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(f))) => {
                return Err(f.map_or((1005, String::new()), |f| {
                    (f.code.into(), f.reason.to_string())
                }));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err((1006, String::new())),
        }
    }
}

/// Open a socket with an `Origin` header, read the challenge, send connect
/// with the right token and return the connect response and the socket.
async fn connect_with_origin(url: &str, origin: &str) -> (Value, Ws) {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let challenge = next_json(&mut ws).await.expect("challenge");
    assert_eq!(challenge["event"], "connect.challenge");
    let frame = json!({
        "type": "req", "id": "c1", "method": "connect",
        "params": connect_params(3, 4, Some("secret"), ALL),
    });
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
    loop {
        let v = next_json(&mut ws).await.expect("connect response");
        if v["type"] == "res" && v["id"] == "c1" {
            return (v, ws);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_others_are_unaffected() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.max_buffered_bytes = 256 * 1024;
    let g = TestGateway::start_with(opts, dir).await;
    // Never read from `slow` until it has been cut off.
    let mut slow = Client::admin(&g.url()).await;
    let mut fast = Client::admin(&g.url()).await;
    assert_eq!(fast.call("status", json!({})).await["connections"], 2);
    let big = "x".repeat(100 * 1024);
    let mut cut_after = None;
    for i in 0..2000 {
        fast.call("chat.inject", json!({"sessionKey": "main", "message": big}))
            .await;
        fast.events.clear(); // the fast client read its copy; don't hoard it
        let status = fast.call("status", json!({})).await;
        if status["connections"] == 1 {
            cut_after = Some(i);
            break;
        }
        assert_eq!(status["connections"], 2, "{status}");
    }
    assert!(
        cut_after.is_some(),
        "the slow consumer was never cut off after 2000 x 100 KB non-droppable events"
    );
    // The fast client is still fine.
    assert_eq!(fast.call("health", json!({})).await["ok"], true);
    // The slow one gets what was already on the wire, then 1008.
    let closed = slow.closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1008, "slow consumer")
    );
    assert_eq!(fast.call("health", json!({})).await["ok"], true);
    assert_eq!(fast.call("status", json!({})).await["connections"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_with_503() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.max_connections = 2;
    let g = TestGateway::start_with(opts, dir).await;
    let mut a = Client::admin(&g.url()).await;
    let _b = Client::admin(&g.url()).await;
    assert_eq!(refused_status(&g.url()).await, 503);
    // The connected ones keep working.
    assert_eq!(a.call("health", json!({})).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_rate_refuses_with_429() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.connections_per_minute = 3;
    opts.gateway.limit_loopback = true;
    let g = TestGateway::start_with(opts, dir).await;
    let _a = Client::open(&g.url()).await;
    let _b = Client::open(&g.url()).await;
    let _c = Client::open(&g.url()).await;
    assert_eq!(refused_status(&g.url()).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_is_refused_and_loopback_origin_allowed() {
    let g = TestGateway::start().await;
    // Refused at the upgrade (403), before any frame.
    let mut req = g.url().into_client_request().expect("request");
    req.headers_mut().insert(
        "Origin",
        HeaderValue::from_str("https://evil.example").expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
        }
        other => panic!("expected a 403 at the upgrade, got {:?}", other.map(|_| ())),
    }
    let origin = format!("http://127.0.0.1:{}", g.addr.port());
    let (res, _ws) = connect_with_origin(&g.url(), &origin).await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["type"], "hello-ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_announces_then_closes_1012() {
    let mut g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let stop = tokio::spawn(async move {
        g.stop().await;
        g
    });
    let ev = c.event(|e| e["event"] == "shutdown").await;
    assert_eq!(ev["payload"]["reason"], "service restart");
    let closed = c.closed().await;
    assert_eq!(closed.code, 1012, "{closed:?}");
    stop.await.expect("stop task");
}

#[test]
fn unauthenticated_non_loopback_listen_is_refused() {
    let cfg = pincer::gateway::GatewayConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let err = cfg.check().expect_err("must refuse");
    assert!(err.to_string().contains("--token"), "{err}");
    let with_token = pincer::gateway::GatewayConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: Some("t".into()),
        ..Default::default()
    };
    assert!(with_token.check().is_ok());
    assert!(pincer::gateway::GatewayConfig::default().check().is_ok());
}
