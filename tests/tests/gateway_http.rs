//! The HTTP side of the gateway port over real sockets: health and
//! readiness, bearer auth on `/v1` and `/metrics`, session transcripts,
//! inbound channel webhooks (routed to runs, deduplicated by id), unknown
//! channels, and WebSocket upgrades on any path.

use pincer_tests::gateway::{Client, TestGateway};
use serde_json::{Value, json};

fn http(g: &TestGateway, path: &str) -> String {
    format!("http://{}{}", g.addr, path)
}

fn text_of(msg: &Value) -> String {
    msg["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let r = client
        .get(url)
        .bearer_auth("secret")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.expect("json body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz() {
    let g = TestGateway::start().await;
    let client = reqwest::Client::new();
    let r = client.get(http(&g, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"ok": true}));
    let r = client.get(http(&g, "/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_metrics_need_the_bearer_token() {
    let g = TestGateway::start().await;
    let client = reqwest::Client::new();
    for path in ["/v1/plugins", "/v1/sessions", "/v1/channels", "/metrics"] {
        let r = client.get(http(&g, path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{path}"
        );
        let r = client
            .get(http(&g, path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = client
            .get(http(&g, path))
            .bearer_auth("secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
        if path == "/metrics" {
            let text = r.text().await.unwrap();
            assert!(
                text.contains("# TYPE pincer_connections gauge"),
                "/metrics lacks the connections gauge:\n{text}"
            );
            assert!(
                text.contains("pincer_plugin_calls_total{plugin=\"echo\"}"),
                "/metrics lacks plugin calls:\n{text}"
            );
        } else {
            let body: Value = r.json().await.unwrap();
            assert!(body.is_object(), "{path}: {body}");
        }
    }
    let plugins = get_json(&client, &http(&g, "/v1/plugins")).await;
    assert!(
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo"),
        "{plugins}"
    );
}

/// The method-duration histogram includes calls made before the first
/// scrape (the recorder is installed when the server starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_include_method_durations_after_a_ws_call() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let h = c.call("health", json!({})).await;
    assert_eq!(h["ok"], true);
    let r = reqwest::Client::new()
        .get(http(&g, "/metrics"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for name in [
        "# TYPE pincer_connections gauge",
        "pincer_plugin_calls_total",
        "pincer_method_duration_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_messages_after_a_chat() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let ack = c
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "hello over http", "idempotencyKey": "h-1"}),
        )
        .await;
    assert_eq!(ack["runId"], "h-1");
    let events = c.chat_run("h-1").await;
    assert_eq!(events.last().unwrap()["state"], "final");
    let client = reqwest::Client::new();
    let body = get_json(&client, &http(&g, "/v1/sessions/main/messages")).await;
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{body}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(text_of(&msgs[0]), "hello over http");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(text_of(&msgs[1]), "hello over http");
    // The same without the token is refused.
    let r = client
        .get(http(&g, "/v1/sessions/main/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn final_chat(c: &mut Client, key: &str) -> Value {
    let key = key.to_string();
    c.event(move |e| {
        e["event"] == "chat"
            && e["payload"]["sessionKey"] == key.as_str()
            && e["payload"]["state"] == "final"
    })
    .await["payload"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_webhook_runs_once_per_message_id() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    let client = reqwest::Client::new();
    let url = http(&g, "/channels/echo/webhook");
    let key = "agent:main:echo:direct:c1";
    let post = |body: Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client.post(&url).json(&body).send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "webhook answered {status}: {text}");
        }
    };
    let m1 = json!({"conversation": "c1", "text": "hi there", "sender": "alice", "id": "m1"});
    post(m1.clone()).await;
    let fin = final_chat(&mut c, key).await;
    assert_eq!(text_of(&fin["message"]), "hi there", "{fin}");
    // A redelivery of m1 is accepted but not answered again.
    post(m1).await;
    post(json!({"conversation": "c1", "text": "second", "sender": "alice", "id": "m2"})).await;
    let fin = final_chat(&mut c, key).await;
    assert_eq!(
        text_of(&fin["message"]),
        "second",
        "the next run after a duplicate must be m2's: {fin}"
    );
    let h = c.call("chat.history", json!({"sessionKey": key})).await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "{h}");
    let texts: Vec<String> = msgs.iter().map(text_of).collect();
    assert_eq!(texts, ["hi there", "hi there", "second", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channel_webhook_is_404() {
    let g = TestGateway::start().await;
    let r = reqwest::Client::new()
        .post(http(&g, "/channels/nope/webhook"))
        .json(&json!({"conversation": "c1", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_any_path() {
    let g = TestGateway::start().await;
    let url = format!("ws://{}/some/deep/path", g.addr);
    let c = Client::open(&url).await;
    assert!(!c.nonce.is_empty());
    let mut c = Client::admin(&url).await;
    assert_eq!(c.call("health", json!({})).await["ok"], true);
}
