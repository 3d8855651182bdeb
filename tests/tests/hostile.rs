//! Hostile plugins built from source are contained: the call errors with a
//! classified error, other plugins keep answering, the process stays up.

use std::collections::BTreeMap;

use pincer::health::HealthConfig;
use pincer::plugins::{CallError, PluginSettings, RuntimeConfig};
use pincer_tests::{TestRuntime, install_plugin};

async fn runtime(settings: BTreeMap<String, PluginSettings>) -> TestRuntime {
    let t = TestRuntime::new(
        RuntimeConfig {
            settings,
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    install_plugin(&t.plugins_dir(), "clock", "clock");
    let failures = t.runtime.load_dir().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    t
}

async fn hostile(t: &TestRuntime, mode: &str) -> Result<String, CallError> {
    let args = serde_json::json!({ "mode": mode }).to_string();
    t.runtime.plugins.invoke_tool("hostile", &args).await
}

async fn clock_still_answers(t: &TestRuntime) {
    let out = t
        .runtime
        .plugins
        .invoke_tool("clock", "{}")
        .await
        .expect("clock answers");
    assert!(out.contains("unix_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained() {
    let t = runtime(BTreeMap::new()).await;
    assert_eq!(hostile(&t, "ok").await.unwrap(), r#"{"ok":true}"#);

    let e = hostile(&t, "loop").await.unwrap_err();
    assert!(
        matches!(e, CallError::CpuLimit { .. }),
        "infinite loop: {e}"
    );
    clock_still_answers(&t).await;

    let e = hostile(&t, "membomb").await.unwrap_err();
    assert!(
        matches!(e, CallError::MemoryLimit { mb: 32, .. }),
        "memory bomb: {e}"
    );
    clock_still_answers(&t).await;

    let e = hostile(&t, "trap").await.unwrap_err();
    assert!(matches!(e, CallError::Trap { .. }), "trap: {e}");
    clock_still_answers(&t).await;

    let e = hostile(&t, "slow").await.unwrap_err();
    assert!(
        matches!(e, CallError::Timeout { ms: 3000, .. }),
        "blocked in a host call: {e}"
    );
    clock_still_answers(&t).await;

    // Outside the allowed hosts: denied before any connection.
    for mode in ["forbidden", "metadata"] {
        let e = hostile(&t, mode).await.unwrap_err();
        let msg = e.plugin_error().map(|p| p.to_string()).unwrap_or_default();
        assert!(msg.contains("host not allowed"), "{mode}: {e}");
    }

    // The log flood is rate-limited; the call completes and others answer.
    assert!(hostile(&t, "logflood").await.unwrap().contains("flooded"));
    clock_still_answers(&t).await;

    // Failures are counted for the plugin list and the health monitor.
    let info = t.runtime.plugins.info("hostile").unwrap();
    assert!(info.failures >= 4, "{info:?}");
    // And the plugin itself still works after every failure (fresh instance).
    assert!(hostile(&t, "ok").await.is_ok());
}

/// Even when the operator allows every host, the metadata address and
/// other private ranges are refused after DNS resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_address_refused_even_when_host_allowed() {
    let mut settings = BTreeMap::new();
    settings.insert(
        "hostile".to_string(),
        PluginSettings {
            allowed_hosts: Some(vec!["http://*:*".into()]),
            ..Default::default()
        },
    );
    let t = runtime(settings).await;
    let e = hostile(&t, "metadata").await.unwrap_err();
    assert!(e.to_string().contains("address prohibited"), "{e}");
    for url in [
        "http://127.0.0.1:9/",
        "http://[::1]:9/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://0.0.0.0:9/",
    ] {
        let args = serde_json::json!({ "mode": "forbidden", "url": url }).to_string();
        let e = t
            .runtime
            .plugins
            .invoke_tool("hostile", &args)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("address prohibited"), "{url}: {e}");
    }
    clock_still_answers(&t).await;
}
