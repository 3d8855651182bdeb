//! Every bundled plugin is built from source, installed the way `pincer
//! serve` installs it, loaded by the real host, and answers.

use std::collections::BTreeMap;
use std::time::Duration;

use pincer::health::HealthConfig;
use pincer::plugins::bindings::{OutboundMessage, WebhookRequest};
use pincer::plugins::{PluginKind, PluginSettings, PluginState, RuntimeConfig};
use pincer_tests::{TestRuntime, http_server};
use serde_json::Value;

fn post(body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: body.to_vec(),
        verified: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_plugins_load_and_answer() {
    // Senders here are strangers: let anyone through echo (the default
    // access policy, pairing, is tested in hardening_access.rs).
    let open = PluginSettings {
        dm_policy: pincer::channels::access::DmPolicy::Open,
        ..Default::default()
    };
    let t = TestRuntime::new(
        RuntimeConfig {
            settings: [("echo".to_string(), open)].into(),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    let written = pincer::bundled::install(&t.plugins_dir(), false).unwrap();
    assert_eq!(
        written,
        [
            "echo",
            "clock",
            "http-fetch",
            "telegram",
            "whatsapp",
            "matrix",
            "discord",
            "slack"
        ]
    );
    let failures = t.runtime.load_dir().await.unwrap();
    assert!(failures.is_empty(), "failures: {failures:?}");

    let list = t.runtime.plugins.list();
    let names: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "clock",
            "discord",
            "echo",
            "http-fetch",
            "matrix",
            "slack",
            "telegram",
            "whatsapp"
        ]
    );
    for p in &list {
        assert_eq!(p.state, PluginState::Loaded, "{p:?}");
        assert!(p.last_error.is_none());
    }
    assert_eq!(
        t.runtime.plugins.info("echo").unwrap().kind,
        Some(PluginKind::Channel)
    );

    // clock
    let out = t
        .runtime
        .plugins
        .invoke_tool("clock", r#"{"utc_offset_minutes": 60}"#)
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(v["iso8601"].as_str().unwrap().ends_with("+01:00"), "{v}");
    let err = t
        .runtime
        .plugins
        .invoke_tool("clock", r#"{"utc_offset_minutes": 99999}"#)
        .await
        .unwrap_err();
    assert!(err.plugin_error().is_some(), "typed error expected: {err}");

    // echo: a webhook push becomes an inbound message; a send is stored.
    let mut inbound = t.runtime.channels.subscribe_inbound();
    let resp = t
        .runtime
        .channels
        .webhook(
            "echo",
            post(br#"{"conversation":"c1","sender":"u1","text":"hello","id":"m1"}"#),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let m = inbound.recv().await.unwrap();
    assert_eq!(
        (m.channel.as_str(), m.id.as_str(), m.text.as_str()),
        ("echo", "m1", "hello")
    );
    let bad = t
        .runtime
        .channels
        .webhook("echo", post(b"not json"))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let id = t
        .runtime
        .channels
        .send(
            "echo",
            OutboundMessage {
                reply_to: Some("m1".into()),
                ..OutboundMessage::plain("c1", "hi back")
            },
        )
        .await
        .unwrap();
    let stored = t
        .runtime
        .plugins
        .kv()
        .get("echo", &format!("sent/{id}"))
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["text"], "hi back");
    t.runtime
        .channels
        .edit("echo", "c1", &id, "edited")
        .await
        .unwrap();
    let health = t.runtime.health.snapshot().await;
    let echo = health.iter().find(|h| h.name == "echo").unwrap();
    assert!(echo.healthy && echo.last_inbound_at.is_some() && echo.last_outbound_at.is_some());
    assert_eq!(echo.mode, "webhook");
}

/// http-fetch reaches a loopback server only when the operator allows the
/// host and the loopback range, and the host fills in secrets the plugin
/// only names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_allowed_hosts_private_ranges_and_secrets() {
    let (addr, mut requests) = http_server(200, "pong").await;
    let mut settings = BTreeMap::new();
    settings.insert(
        "http-fetch".to_string(),
        PluginSettings {
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            // http-fetch declares no secrets: the operator binds this one
            // to the host and place it belongs (issue 8, B9).
            secrets: [(
                "token".to_string(),
                pincer::plugins::manifest::SecretSource::Bound(
                    pincer::plugins::manifest::BoundSecret {
                        value: "s3cr3t".into(),
                        hosts: Some(vec!["http://127.0.0.1:*".into()]),
                        places: Some(vec!["path".into()]),
                    },
                ),
            )]
            .into(),
            ..Default::default()
        },
    );
    // Loopback allowed by host pattern but not by the address guard.
    let blocked = TestRuntime::new(
        RuntimeConfig {
            settings: settings.clone(),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    pincer_tests::install_plugin(&blocked.plugins_dir(), "http-fetch", "http-fetch");
    assert!(blocked.runtime.load_dir().await.unwrap().is_empty());
    let url = format!("http://{addr}/bot{{{{secret:token}}}}/getMe");
    let args = serde_json::json!({ "url": url }).to_string();
    let err = blocked
        .runtime
        .plugins
        .invoke_tool("http-fetch", &args)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("address prohibited"), "{err}");

    // With the operator's exception for 127.0.0.0/8 the request goes through.
    let t = TestRuntime::new(
        RuntimeConfig {
            settings,
            allow_cidrs: pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap(),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    pincer_tests::install_plugin(&t.plugins_dir(), "http-fetch", "http-fetch");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    let out = t
        .runtime
        .plugins
        .invoke_tool("http-fetch", &args)
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], "pong");
    let seen = tokio::time::timeout(Duration::from_secs(30), requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen.starts_with("GET /bots3cr3t/getMe "),
        "secret not filled in: {seen}"
    );

    // A host outside the allowed list is denied before any connection.
    let other =
        serde_json::json!({ "url": format!("http://localhost:{}/", addr.port()) }).to_string();
    let err = t
        .runtime
        .plugins
        .invoke_tool("http-fetch", &other)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("host not allowed"), "{err}");
}
