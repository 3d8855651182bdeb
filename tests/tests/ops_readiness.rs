//! Readiness is one answer on every surface: `GET /readyz`, the `health`
//! method (whose `ok` OpenClaw's Control UI shows) and the `status`
//! method agree while the gateway is ready, and again when its store can
//! no longer write (a database filled to its `max_db_mb` cap).

use pincer::store::StoreConfig;
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::{Value, json};

/// `/readyz`'s status and body, `health`'s payload and `status`'s payload.
async fn surfaces(g: &TestGateway, c: &mut Client) -> (u16, Value, Value, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/readyz", g.addr))
        .send()
        .await
        .expect("GET /readyz");
    let code = r.status().as_u16();
    let body: Value = r.json().await.expect("readyz json");
    let health = c.call("health", json!({})).await;
    let status = c.call("status", json!({})).await;
    (code, body, health, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_health_and_status_report_the_same_readiness() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.store = StoreConfig {
        max_db_mb: 2,
        ..StoreConfig::default()
    };
    // SQLite-only (listed in pincer_tests::test_store): the file-size cap.
    pincer_tests::test_store::keep_sqlite(&mut opts);
    let mut g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;

    let (code, body, health, status) = surfaces(&g, &mut c).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!({"ready": true, "store": true, "plugins": true}));
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["ready"], body);
    assert_eq!(status["ready"], body);

    // Fill the database to its cap: the store cannot write any more.
    let kv = g.gw().runtime.plugins.kv().clone();
    let mut n = 0;
    for size in (12..=20).rev().map(|bits| 1usize << bits) {
        let blob = vec![7u8; size];
        while kv.set("readiness", &format!("blob-{n}"), &blob).is_ok() {
            n += 1;
        }
    }
    let (code, body, health, status) = surfaces(&g, &mut c).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["store"], false, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("store cannot write")),
        "{body}"
    );
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["ready"], body);
    assert_eq!(status["ready"], body);
    drop(c);
    g.stop().await;
}
