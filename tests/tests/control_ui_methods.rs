//! The methods OpenClaw's Control UI needs, over the protocol without a
//! browser: each is advertised and answered in the shape the UI reads;
//! runs end in session rows (`hasActiveRun`/`activeRunIds`), history says
//! what became of sent input; unknown methods keep OpenClaw's error.

use pincer_tests::gateway::{Client, TestGateway};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_ui_method_is_advertised_and_answered() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let methods = c.hello["features"]["methods"].clone();
    let advertised = |m: &str| methods.as_array().unwrap().iter().any(|x| x == m);
    let key = json!({"sessionKey": "agent:main:main"});
    let calls = [
        ("chat.startup", key.clone()),
        ("chat.metadata", key.clone()),
        ("sessions.describe", json!({"key": "agent:main:main"})),
        ("models.authStatus", json!({"agentId": "main"})),
        ("config.get", json!({})),
        ("update.status", json!({})),
        ("cron.list", json!({"limit": 50})),
        ("cron.status", json!({})),
        ("tasks.list", key.clone()),
        ("question.list", json!({})),
        ("talk.catalog", json!({})),
        ("exec.approval.list", json!({})),
        ("plugin.approval.list", json!({})),
        ("openclaw.approval.list", json!({})),
        ("progressCard.get", key.clone()),
        ("sessions.branches.list", key.clone()),
        ("sessions.companion.state", key.clone()),
        ("sessions.observer.visibility", json!({"visible": true})),
        ("plugins.catalog.browse", json!({"intent": "all"})),
        ("channels.pairing.list", json!({})),
        ("skills.library.list", json!({"scope": "all"})),
        ("skills.search", json!({"limit": 20})),
        ("skills.status", json!({})),
        ("exec.approvals.get", json!({})),
        ("themes.list", json!({})),
        ("usage.status", json!({})),
        (
            "sessions.usage",
            json!({"startDate": "2026-01-01", "endDate": "2026-01-30", "limit": 1000}),
        ),
        ("environments.list", json!({"includeDesktopSetup": true})),
        ("system.info", json!({})),
    ];
    for (m, p) in calls {
        assert!(advertised(m), "{m} is not in features.methods");
        let r = c.request(m, p).await;
        assert_eq!(r["ok"], true, "{m}: {r}");
    }
    // Shapes the UI reads.
    let a = c.call("agents.list", json!({})).await;
    assert_eq!(a["agents"][0]["model"]["primary"], "echo/echo");
    let s = c.call("chat.startup", key.clone()).await;
    assert!(s["messages"].as_array().unwrap().is_empty());
    assert_eq!(s["sessionInfo"]["key"], "agent:main:main");
    assert_eq!(s["sessionInfo"]["hasActiveRun"], false);
    let d = c
        .call("sessions.describe", json!({"key": "agent:main:main"}))
        .await;
    assert!(d["session"].is_null(), "no session before a message: {d}");
    let auth = c.call("models.authStatus", json!({})).await;
    assert_eq!(auth["providers"][0]["provider"], "echo");
    assert!(c.call("exec.approval.list", json!({})).await.is_array());
    assert_eq!(
        c.call("question.list", json!({})).await["questions"],
        json!([])
    );
    assert!(c.call("progressCard.get", key.clone()).await["card"].is_null());
    let pairing = c.call("channels.pairing.list", json!({})).await;
    assert!(pairing["requests"].is_array() && pairing["accounts"].is_array());
    let plugins = c.call("plugins.list", json!({})).await;
    let echo = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "echo")
        .expect("echo in plugins.list")
        .clone();
    assert_eq!(echo["installed"], true);
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["channelIds"], json!(["echo"]));

    // Still OpenClaw's error for what nobody implements.
    let r = c.request("no.such.method", json!({})).await;
    assert_eq!(r["error"]["code"], "INVALID_REQUEST");
    assert_eq!(r["error"]["message"], "unknown method: no.such.method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ends_in_session_rows_and_history_receipts() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "one two", "idempotencyKey": "run-ui-1"}),
    )
    .await;
    let events = c.chat_run("run-ui-1").await;
    assert_eq!(events.last().unwrap()["state"], "final");
    // The row sent with the run's end no longer counts it.
    let mut ended = None;
    while ended.is_none() {
        let e = c.event(|e| e["event"] == "sessions.changed").await;
        if e["payload"]["runId"] == "run-ui-1" && e["payload"]["hasActiveRun"] == false {
            ended = Some(e);
        }
    }
    assert_eq!(ended.unwrap()["payload"]["activeRunIds"], json!([]));
    // Once the run manager has let go of the run, rows agree.
    let w = c.call("agent.wait", json!({"runId": "run-ui-1"})).await;
    assert_eq!(w["status"], "ok");
    let list = c.call("sessions.list", json!({})).await;
    assert_eq!(list["sessions"][0]["hasActiveRun"], false);

    // History: the sent message carries its key, and a receipt says it
    // was consumed by that message.
    let h = c
        .call(
            "chat.history",
            json!({"sessionKey": "main", "inputRunIds": ["run-ui-1", "never-sent"]}),
        )
        .await;
    let user = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .expect("user message")
        .clone();
    assert_eq!(user["idempotencyKey"], "run-ui-1");
    assert_eq!(
        h["inputReceipts"],
        json!([{"runId": "run-ui-1", "state": "consumed", "consumedByEventId": user["__openclaw"]["id"]}])
    );
    let d = c.call("sessions.describe", json!({"key": "main"})).await;
    assert_eq!(d["session"]["key"], "agent:main:main");
    assert_eq!(d["session"]["hasActiveRun"], false);
}
