//! What issue 10 asks that the other browser tests left unproven, driven
//! in headless Chromium by `tests/browser/issue10-gaps.mjs` (screenshots
//! in `target/test-artifacts/issue10-*/`):
//!
//! - readiness is the same on `/readyz`, in OpenClaw's Control UI (its
//!   debug page's Health block, the `health` answer) and in Pincer's
//!   console (the readiness badge), also when the gateway is not ready
//!   (its store cannot write); the debug page gets no error answer (it
//!   calls `diagnostics.lanes`, once "unknown method", which held its
//!   Health block back for about a minute);
//! - `diagnostics.lanes` counts running and queued runs truthfully;
//! - `chat.send`'s run is released by the client's Pong (not the bound)
//!   on protocol v3 and v4 alike;
//! - the console's channel Stop and Start buttons stop and start the
//!   channel, its row shows the channel's last activity (and another's
//!   last error), a pairing request
//!   dismissed in the page is gone and admits nobody, and the plugin rows
//!   show kind, version, load time, and a plugin that failed to load with
//!   its error.

use std::sync::Arc;

use pincer::store::StoreConfig;
use pincer_tests::browser;
use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use pincer_tests::webhook_receiver::Receiver;
use serde_json::{Value, json};

const TOKEN: &str = "gaps-secret";

/// `GET /readyz`: status and body.
async fn readyz(g: &TestGateway) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/readyz", g.addr))
        .send()
        .await
        .expect("GET /readyz");
    let code = r.status().as_u16();
    (code, r.json().await.expect("readyz json"))
}

/// [`browser::drive_checked`] with the issue-10 driver.
async fn drive(name: &str, opts: Value) -> Value {
    browser::drive_checked("issue10-gaps.mjs", name, opts).await
}

/// The Control UI's debug page (gateway `g`) and the console, as URLs.
fn page_urls(g: &TestGateway) -> (String, String) {
    let gateway_url = format!("ws://{}", g.addr)
        .replace(':', "%3A")
        .replace('/', "%2F");
    (
        format!(
            "http://{}/debug?gatewayUrl={gateway_url}#token={TOKEN}",
            g.addr
        ),
        format!("http://{}/console#token={TOKEN}", g.addr),
    )
}

/// The Health block of the Control UI's debug page (the `health` answer).
fn health_block(report: &Value) -> Value {
    report["controlUiBlocks"]
        .as_array()
        .expect("controlUiBlocks")
        .iter()
        .find(|b| b["ok"].is_boolean() && b["ready"].is_object())
        .cloned()
        .unwrap_or_else(|| panic!("no Health block: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_ui_and_console_show_what_readyz_reports_ready_or_not() {
    browser::require_tools();
    let ui = browser::control_ui_dir();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.control_ui = Some(ui);
    opts.store = StoreConfig {
        max_db_mb: 2,
        ..StoreConfig::default()
    };
    // SQLite-only (listed in pincer_tests::test_store): the file-size cap.
    pincer_tests::test_store::keep_sqlite(&mut opts);
    let mut g = TestGateway::start_with(opts, dir).await;
    let (debug_url, console_url) = page_urls(&g);

    // Ready: both pages say so.
    let (code, ready) = readyz(&g).await;
    assert_eq!(code, 200, "{ready}");
    let report = drive(
        "issue10-ready",
        json!({"controlUiDebugUrl": debug_url, "consoleUrl": console_url}),
    )
    .await;
    let health = health_block(&report);
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["ready"], ready, "{health}");
    assert_eq!(report["consoleReadiness"], "ready", "{report}");

    // The store fills to its cap: `/readyz` says not ready, and so do both
    // pages, with the same reason.
    let kv = g.gw().runtime.plugins.kv().clone();
    let mut n = 0;
    for size in (12..=20).rev().map(|bits| 1usize << bits) {
        let blob = vec![7u8; size];
        while kv.set("readiness", &format!("blob-{n}"), &blob).is_ok() {
            n += 1;
        }
    }
    let (code, not_ready) = readyz(&g).await;
    assert_eq!(code, 503, "{not_ready}");
    let reason = not_ready["reason"].as_str().expect("a reason").to_string();
    assert!(reason.starts_with("store cannot write"), "{not_ready}");
    let report = drive(
        "issue10-not-ready",
        json!({"controlUiDebugUrl": debug_url, "consoleUrl": console_url}),
    )
    .await;
    let health = health_block(&report);
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["ready"], not_ready, "{health}");
    assert_eq!(
        report["consoleReadiness"],
        format!("not ready: {reason}"),
        "{report}"
    );
    assert!(
        report["consoleReadinessClass"]
            .as_str()
            .is_some_and(|c| c.contains("bad")),
        "{report}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_stops_starts_dismisses_and_shows_plugin_details() {
    browser::require_tools();
    let rx = Arc::new(Receiver::start().await);
    let (opts, dir) = TestGateway::console_options(TOKEN, rx.url());
    // Telegram without its bot token: a channel with a last error.
    for name in ["echo", "clock", "telegram"] {
        pincer_tests::install_plugin(&opts.plugins_dir, name, name);
    }
    // A file that is no plugin: listed as failed, with its error.
    std::fs::write(
        opts.plugins_dir.join("broken.wasm"),
        b"not a wasm component",
    )
    .expect("broken plugin");
    let mut g = TestGateway::start_with(opts, dir).await;

    // A stranger writes: a pairing code goes back, a request waits.
    let push = |text: &'static str| {
        let url = format!("http://{}/channels/echo/webhook", g.addr);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"conversation": "stranger-dm", "sender": "stranger", "text": text}))
                .send()
                .await
                .expect("push");
            assert_eq!(r.status(), 200);
        }
    };
    let pushed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    push("hello, may I?").await;
    rx.wait_for(1).await;
    let first = rx.texts_to("stranger-dm");
    assert!(
        first.len() == 1 && first[0].contains("Pairing code"),
        "{first:?}"
    );

    let (_, console_url) = page_urls(&g);
    let report = drive(
        "issue10-console",
        json!({"consoleUrl": console_url, "channel": "echo", "dismissSender": "stranger"}),
    )
    .await;

    // Stop, then Start, from the page; the gateway agrees.
    assert_eq!(report["stateAfterStop"], "stopped", "{report}");
    assert_eq!(report["stateAfterStart"], "running", "{report}");
    let echo = g
        .gw()
        .runtime
        .health
        .snapshot()
        .await
        .into_iter()
        .find(|c| c.name == "echo")
        .expect("echo channel");
    assert_eq!(echo.state.as_str(), "running");
    // Last activity: at least the stranger's message, as a time. (The
    // gateway may keep whole seconds.)
    let inbound = echo
        .last_inbound_at
        .expect("the message counted as inbound");
    assert!(
        inbound >= pushed_at / 1000 * 1000,
        "{inbound} vs {pushed_at}"
    );
    let shown = report["lastActivity"]["ms"].as_u64();
    assert!(
        shown.is_some_and(|t| t >= inbound),
        "last activity shown {:?}, the message came at {inbound}",
        report["lastActivity"]
    );

    // The dismissed request is gone, and the stranger is not admitted:
    // the next message gets a new code, not the agent.
    let code = report["dismissedCode"].as_str().expect("dismissed code");
    assert!(first[0].contains(code), "{first:?} vs {code}");
    assert_eq!(report["pairingError"], "", "{report}");
    let pairing = g
        .gw()
        .runtime
        .channels
        .pairing()
        .list("echo", None)
        .expect("pairing list");
    assert!(
        pairing.pending.iter().all(|p| p.code != code),
        "{pairing:?}"
    );
    push("still a stranger").await;
    rx.wait_for(2).await;
    let after = rx.texts_to("stranger-dm");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[1].contains("Pairing code"), "{after:?}");
    assert!(
        !after[1].contains(code),
        "the dismissed code again: {after:?}"
    );

    // A channel's last error, as the gateway reports it.
    let telegram = report["channelRows"]
        .as_array()
        .expect("channelRows")
        .iter()
        .find(|r| r["name"] == "telegram")
        .unwrap_or_else(|| panic!("no telegram row: {report}"))
        .clone();
    // Cells: name, state, last activity, restarts, last error, actions.
    assert!(
        telegram["cells"][4]
            .as_str()
            .is_some_and(|e| e.contains("bot_token")),
        "{telegram}"
    );

    // The plugin rows: name, kind, version, state, load time, last error.
    let rows = report["pluginRows"].as_array().expect("pluginRows");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
    };
    let cells = |name: &str| -> Vec<String> {
        row(name)["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_string())
            .collect()
    };
    for (name, kind) in [("echo", "channel"), ("clock", "tool")] {
        let c = cells(name);
        let info = g
            .gw()
            .runtime
            .plugins
            .list()
            .into_iter()
            .find(|p| p.name == name)
            .expect("plugin info");
        assert_eq!(c[1], kind, "{name}: {c:?}");
        assert_eq!(
            Some(c[2].as_str()),
            info.version.as_deref(),
            "{name}: {c:?}"
        );
        assert_eq!(row(name)["state"], "loaded", "{name}");
        assert!(row(name)["loadedAt"].is_string(), "{name}: no load time");
        assert_eq!(c[5], "", "{name}: {c:?}");
    }
    let broken = cells("broken");
    assert_eq!(row("broken")["state"], "failed", "{broken:?}");
    assert!(row("broken")["loadedAt"].is_null(), "{broken:?}");
    assert!(!broken[5].is_empty(), "no last error shown: {broken:?}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_lanes_counts_running_and_queued_runs() {
    let (mut opts, dir) = TestGateway::options();
    // Slow enough that the long run below is still streaming while the
    // lanes are read.
    opts.agent.echo_word_delay_ms = 40;
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    let max = g.gw().runs.limits().total_slots();

    let idle = c.call("diagnostics.lanes", json!({})).await;
    assert!(idle["ts"].is_u64(), "{idle}");
    let main = &idle["lanes"][0];
    assert_eq!(main["lane"], "main", "{idle}");
    assert_eq!(
        (
            &main["activeCount"],
            &main["queuedCount"],
            &main["maxConcurrent"]
        ),
        (&json!(0), &json!(0), &json!(max)),
        "{idle}"
    );
    assert!(idle["dynamic"].is_null(), "{idle}");

    // A long run streaming, and a message queued behind it.
    let long: String = (0..400).map(|i| format!("w{i} ")).collect();
    c.call(
        "chat.send",
        json!({"sessionKey": "busy", "message": long, "idempotencyKey": "lane-1"}),
    )
    .await;
    c.event(|e| {
        e["event"] == "chat"
            && e["payload"]["runId"] == "lane-1"
            && e["payload"]["state"] == "delta"
    })
    .await;
    let queued = c
        .call(
            "chat.send",
            json!({"sessionKey": "busy", "message": "behind it", "idempotencyKey": "lane-2"}),
        )
        .await;
    assert_eq!(queued["queued"], true, "{queued}");
    let busy = c.call("diagnostics.lanes", json!({})).await;
    assert_eq!(busy["lanes"][0]["activeCount"], 1, "{busy}");
    assert_eq!(busy["lanes"][0]["queuedCount"], 0, "{busy}");
    assert_eq!(
        busy["dynamic"],
        json!({"laneCount": 1, "activeCount": 1, "queuedCount": 1, "queuedLaneCount": 1}),
        "{busy}"
    );

    // Both stopped: the lanes are idle again.
    c.call("chat.abort", json!({"sessionKey": "busy"})).await;
    g.gw().runs.wait_idle().await;
    let after = c.call("diagnostics.lanes", json!({})).await;
    assert_eq!(after["lanes"][0]["activeCount"], 0, "{after}");
    assert!(after["dynamic"].is_null(), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_send_runs_are_released_by_the_pong_on_v3_and_v4() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    // Far beyond the test: only a Pong can release a run.
    opts.gateway.pong_barrier_timeout_ms = 600_000;
    let g = TestGateway::start_with(opts, dir).await;
    let counters = || {
        let c = &g.gw().counters;
        (
            c.pong_barriers.load(std::sync::atomic::Ordering::Relaxed),
            c.pong_barrier_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    for (n, v) in [(1, 3), (2, 4)] {
        let mut c = Client::connect(&g.url(), connect_params(v, v, Some(TOKEN), ALL)).await;
        assert_eq!(c.hello["protocol"], v, "{}", c.hello);
        let run = format!("v{v}-run");
        c.call(
            "chat.send",
            json!({"sessionKey": format!("v{v}"), "message": "hello", "idempotencyKey": run}),
        )
        .await;
        let states = c.chat_run(&run).await;
        assert_eq!(
            states.last().expect("events")["state"],
            "final",
            "{states:?}"
        );
        assert_eq!(counters(), (n, 0), "protocol v{v}");
    }
}
