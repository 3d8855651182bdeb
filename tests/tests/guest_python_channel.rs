//! A Python *channel* built from source (`plugins/py-relay`, with
//! `sdk/python/build.sh` and componentize-py) on the SDK's helper layer
//! (`pincer_sdk.export_channel`, `http`, `secrets`, `kv`, `log`, typed
//! errors), in a real gateway. The host checks each push's shared token
//! before the plugin runs; a pushed message reaches the (echo) agent, and
//! the agent's reply goes out through the plugin as a JSON POST over
//! `wasi:http` to a local receiver, with the bearer token filled in by the
//! host (the guest only ever holds the placeholder).

use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::SecretSource;
use pincer_tests::gateway::TestGateway;
use pincer_tests::http_server;
use pincer_tests::script_guests::install_guest;
use serde_json::{Value, json};

const PUSH_TOKEN: &str = "push-token-4711";
const API_TOKEN: &str = "api-token-0815";

/// Wait for the next request the receiver got (the reply POST), as
/// `(head, body)`.
async fn next_reply(
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    g: &TestGateway,
) -> (String, Value) {
    let reply = tokio::time::timeout(Duration::from_secs(120), replies.recv())
        .await
        .unwrap_or_else(|_| panic!("no reply: {:?}", g.gw().runtime.plugins.info("py-relay")))
        .expect("a reply was POSTed");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP request");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (head.to_string(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_message_reaches_the_agent_and_the_reply_goes_out_through_the_python_channel() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let (receiver, mut replies) = http_server(200, r#"{"id":"platform-7"}"#).await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins.insert(
        "py-relay".into(),
        PluginSettings {
            dm_policy: DmPolicy::Open,
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            secrets: [
                (
                    "push_token".to_string(),
                    SecretSource::Value(PUSH_TOKEN.into()),
                ),
                (
                    "api_token".to_string(),
                    SecretSource::Value(API_TOKEN.into()),
                ),
            ]
            .into(),
            config: [(
                "reply_url".to_string(),
                format!("http://{receiver}/v1/replies"),
            )]
            .into(),
            ..Default::default()
        },
    );
    // The receiver speaks plain http on loopback: let the token go there too.
    install_guest(&dir.path().join("plugins"), "py-relay", |m| {
        let widened = m.replace(
            r#"hosts = ["https://*"]"#,
            r#"hosts = ["https://*", "http://127.0.0.1:*"]"#,
        );
        assert_ne!(m, widened, "the manifest's api_token hosts line moved");
        widened
    });
    let g = TestGateway::start_with(opts, dir).await;
    let info = g.gw().runtime.plugins.info("py-relay").expect("loaded");
    assert_eq!(
        info.kind,
        Some(pincer::plugins::PluginKind::Channel),
        "{info:?}"
    );
    let url = format!("http://{}/channels/py-relay/webhook", g.addr);
    let http = reqwest::Client::new();
    let calls = || g.gw().runtime.plugins.info("py-relay").unwrap().calls;

    // A push with the wrong token is refused by the host; the plugin is not called.
    let body = json!({"id": "m-1", "conversation": "room-1", "sender": "u-1", "sender_name": "Ann", "text": "hello there"})
        .to_string();
    let before = calls();
    let resp = http
        .post(&url)
        .header("X-Relay-Token", "wrong")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(calls(), before, "an unverified push reached the plugin");

    // A verified push: the plugin answers the platform and hands the message
    // over; the echo agent's reply goes out through `send`.
    let resp = http
        .post(&url)
        .header("X-Relay-Token", PUSH_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({"ok": true, "received": 1}));
    let (head, out) = next_reply(&mut replies, &g).await;
    assert!(head.starts_with("POST /v1/replies "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("authorization: bearer {API_TOKEN}")),
        "the host fills the api token into the header: {head}"
    );
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(
        !head.contains("{{secret:"),
        "a placeholder went out: {head}"
    );
    assert_eq!(out["conversation"], "room-1", "{out}");
    assert!(
        out["text"]
            .as_str()
            .unwrap_or_default()
            .contains("hello there"),
        "the agent's reply to the pushed text: {out}"
    );
    assert!(out["markdown"].is_boolean(), "{out}");
    assert_eq!(out["thread"], Value::Null, "{out}");

    // The pushed message is in the channel's session transcript.
    let sessions = g.gw().sessions.list_sessions(100).expect("sessions");
    let first_user_message = sessions
        .iter()
        .filter(|s| s.key.contains("py-relay"))
        .filter_map(|s| g.gw().sessions.history(&s.key, 10).ok())
        .filter_map(|h| h.into_iter().next())
        .find(|m| m.content.to_string().contains("hello there"));
    let m = first_user_message
        .unwrap_or_else(|| panic!("no py-relay session holds the message: {sessions:?}"));
    assert_eq!(m.role, "user", "{m:?}");

    // A push that is not JSON is a clear 400 for the platform; so is a
    // message without its sender. Nothing reaches the agent.
    for (junk, reason) in [
        ("not json".to_string(), "push body is not JSON"),
        (
            json!({"conversation": "room-1", "text": "who am I"}).to_string(),
            "each message needs a non-empty string `sender`",
        ),
        (
            json!({"messages": [{"conversation": "room-1", "sender": "u-1", "text": 5}]})
                .to_string(),
            "each message needs a string `text`",
        ),
    ] {
        let resp = http
            .post(&url)
            .header("X-Relay-Token", PUSH_TOKEN)
            .body(junk)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        let refused: Value = resp.json().await.unwrap();
        assert_eq!(refused, json!({"ok": false, "error": reason}));
    }

    // The gateway and the plugin keep serving: a batch of two (one without
    // an id: the plugin numbers it in key-value) gets two replies.
    let batch = json!({"messages": [
        {"id": "m-2", "conversation": "room-2", "sender": "u-2", "text": "first of two"},
        {"conversation": "room-3", "sender": "u-3", "text": "second of two"},
    ]})
    .to_string();
    let resp = http
        .post(&url)
        .header("X-Relay-Token", PUSH_TOKEN)
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"ok": true, "received": 2})
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        let (_, out) = next_reply(&mut replies, &g).await;
        got.push((
            out["conversation"].as_str().unwrap_or_default().to_string(),
            out["text"].as_str().unwrap_or_default().to_string(),
        ));
    }
    got.sort();
    assert_eq!(got[0].0, "room-2");
    assert!(got[0].1.contains("first of two"), "{got:?}");
    assert_eq!(got[1].0, "room-3");
    assert!(got[1].1.contains("second of two"), "{got:?}");
    let seq = g
        .gw()
        .runtime
        .plugins
        .kv()
        .get("py-relay", "inbound-seq")
        .expect("kv");
    assert!(
        seq.is_some(),
        "the id-less message was numbered in key-value"
    );
}
