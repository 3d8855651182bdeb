//! Pincer's own operator console (`/console`, issue 10) and the plugin
//! upload endpoint it uses (`PUT /v1/plugins/{name}`).
//!
//! The browser test drives the real page in headless Chromium
//! (`tests/browser/console.mjs`) against a real gateway with the bundled
//! plugins built from source: a wrong token is refused with a clear error,
//! the login form logs in, a channel restart clicked in the page shows in
//! the live feed and in the channel's restart count, a pairing request
//! approved in the page admits the sender (echo channel, `dm_policy =
//! "pairing"`, replies observed at a local receiver), and an uploaded
//! plugin appears loaded and answers, and a failed webhook delivery
//! replayed from the page is sent again. Screenshots go to
//! `target/test-artifacts/console/`.
//!
//! The HTTP tests check the page's headers and every refusal of the upload
//! endpoint (no token, not wasm, oversized, bad name, wrong type, foreign
//! origin): each is a clear JSON error and leaves the plugins directory as
//! it was.

use std::path::Path;
use std::sync::Arc;

use pincer_tests::browser;
use pincer_tests::gateway::{Client, TestGateway, connect_params};
use pincer_tests::webhook_receiver::{Receiver, Reply};
use serde_json::{Value, json};

const TOKEN: &str = "console-secret";

/// The plugins directory as (file name, size), sorted.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("plugins dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("metadata").len(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A protocol client for `gw` with every operator scope and `TOKEN`.
async fn operator(gw: &TestGateway) -> Client {
    Client::connect(
        &gw.url(),
        connect_params(3, 4, Some(TOKEN), pincer_tests::gateway::ALL),
    )
    .await
}

/// `PUT /v1/plugins/{name}` with `body`, `content_type` and the token
/// when `token` is set; the status and the JSON answer.
async fn put(
    gw: &TestGateway,
    name: &str,
    content_type: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .put(format!("http://{}/v1/plugins/{name}", gw.addr))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("PUT");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_embedded_with_a_strict_policy() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    let mut gw = TestGateway::start_with(opts, dir).await;
    let http = reqwest::Client::new();
    for (path, ty, needle) in [
        ("/console", "text/html", "Pincer console"),
        ("/console/console.js", "text/javascript", "sessionStorage"),
        ("/console/console.css", "text/css", ".state-gave-up"),
    ] {
        // No token needed for the files: they hold no data.
        let r = http
            .get(format!("http://{}{path}", gw.addr))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        let header = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(header("content-type").starts_with(ty), "{path}: {h:?}");
        let csp = header("content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: CSP {csp:?} lacks {part}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = r.text().await.expect("body");
        assert!(body.contains(needle), "{path}: {body:.200}");
    }
    gw.stop().await;

    // Off: 404 (the Control UI fallback serves nothing here either).
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.console = false;
    let mut gw = TestGateway::start_with(opts, dir).await;
    let r = http
        .get(format!("http://{}/console", gw.addr))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_upload_refusals_are_clear_and_write_nothing() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.plugin_upload_max_bytes = 64 * 1024;
    let mut gw = TestGateway::start_with(opts, dir).await;
    let plugins_dir = gw.gw().runtime.plugins_dir().to_path_buf();
    let before = listing(&plugins_dir);
    let wasm = std::fs::read(pincer_tests::built_plugin("clock")).expect("clock.wasm");
    assert!(
        wasm.len() > 64 * 1024,
        "the oversize case needs a plugin over the cap"
    );
    let small_wasm = {
        // A valid header and nothing else: under the cap, passes the magic
        // check (it is refused later by the loader, not here).
        let mut v = b"\0asm\x0d\x00\x01\x00".to_vec();
        v.resize(100, 0);
        v
    };
    let not_wasm = b"#!/bin/sh\necho not a plugin\n".to_vec();
    let json_body = b"{}".to_vec();
    let wasm_ty = "application/wasm";
    // (what, plugin name, content type, token, body, status, the error says)
    let cases = [
        (
            "no token",
            "new-one",
            wasm_ty,
            None,
            &small_wasm,
            401,
            "bearer",
        ),
        (
            "wrong token",
            "new-one",
            wasm_ty,
            Some("nope"),
            &small_wasm,
            401,
            "bearer",
        ),
        (
            "not wasm",
            "new-one",
            wasm_ty,
            Some(TOKEN),
            &not_wasm,
            400,
            "not a WebAssembly file",
        ),
        (
            "oversized",
            "new-one",
            wasm_ty,
            Some(TOKEN),
            &wasm,
            413,
            "upload limit",
        ),
        (
            "hidden name",
            ".hidden",
            wasm_ty,
            Some(TOKEN),
            &small_wasm,
            400,
            "invalid plugin name",
        ),
        (
            "dotted name",
            "a.toml",
            wasm_ty,
            Some(TOKEN),
            &small_wasm,
            400,
            "invalid plugin name",
        ),
        (
            "climbing name",
            "..%2Fescape",
            wasm_ty,
            Some(TOKEN),
            &small_wasm,
            400,
            "invalid plugin name",
        ),
        (
            "octet-stream",
            "new-one",
            "application/octet-stream",
            Some(TOKEN),
            &small_wasm,
            415,
            "JSON",
        ),
        (
            "json",
            "new-one",
            "application/json",
            Some(TOKEN),
            &json_body,
            415,
            "application/wasm",
        ),
    ];
    for (what, name, ty, token, body, status, says) in cases {
        let (got, answer) = put(&gw, name, ty, token, body.clone()).await;
        assert_eq!(got, status, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
        assert_eq!(listing(&plugins_dir), before, "{what} wrote something");
    }

    // Oversized without a Content-Length (chunked): cut off while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        wasm.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = reqwest::Client::new()
        .put(format!("http://{}/v1/plugins/streamed", gw.addr))
        .header("content-type", wasm_ty)
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 413);
    assert_eq!(
        listing(&plugins_dir),
        before,
        "chunked oversize wrote something"
    );

    // A page on another origin cannot upload, even with the token.
    let r = reqwest::Client::new()
        .put(format!("http://{}/v1/plugins/evil", gw.addr))
        .header("content-type", wasm_ty)
        .header("origin", "http://evil.example")
        .bearer_auth(TOKEN)
        .body(small_wasm.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 403);
    assert_eq!(
        listing(&plugins_dir),
        before,
        "cross-origin wrote something"
    );
    // The gateway kept serving throughout.
    let mut c = operator(&gw).await;
    let list = c.call("plugins.list", json!({})).await;
    assert!(list["plugins"].as_array().is_some_and(|p| !p.is_empty()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_is_hot_loaded_and_answers() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    // No `clock` installed: the uploaded copy brings the `clock` tool.
    install_without_clock(&opts.plugins_dir);
    let mut gw = TestGateway::start_with(opts, dir).await;
    let plugins_dir = gw.gw().runtime.plugins_dir().to_path_buf();
    let wasm = std::fs::read(pincer_tests::built_plugin("clock")).expect("clock.wasm");
    let mut c = operator(&gw).await;

    let (status, answer) = put(
        &gw,
        "clock-up",
        "application/wasm",
        Some(TOKEN),
        wasm.clone(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["replaced"], false);
    assert_eq!(answer["bytes"], wasm.len());
    // Clients hear the watcher's load as a gateway event.
    let e = c
        .event(|e| e["event"] == "plugin.loaded" && e["payload"]["plugin"] == "clock-up")
        .await;
    assert_eq!(e["payload"]["kind"], "tool", "{e}");
    let out = gw
        .gw()
        .runtime
        .plugins
        .invoke_tool("clock-up", "{}")
        .await
        .expect("the uploaded tool answers");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert!(v["unix_ms"].as_u64().is_some_and(|t| t > 0), "{v}");
    // Exactly the one file appeared, no temporary left behind.
    let names: Vec<String> = listing(&plugins_dir).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"clock-up.wasm".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");

    // Uploading again replaces it (200, `replaced`).
    let (status, answer) = put(&gw, "clock-up", "application/wasm", Some(TOKEN), wasm).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replaced"], true);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_restarts_approves_and_uploads() {
    browser::require_tools();
    let rx = Arc::new(Receiver::start().await);
    // Strangers must be paired; every message echo sends goes to `rx`.
    let (mut opts, dir) = TestGateway::console_options(TOKEN, rx.url());
    // Webhook deliveries fail at their first attempt (no retries), so the
    // page has a failed delivery to show and replay.
    let hooks = Receiver::start().await;
    hooks.set_default(Reply::Status(500));
    opts.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    opts.webhooks.retry_schedule_secs = vec![];
    install_without_clock(&opts.plugins_dir);
    let mut gw = TestGateway::start_with(opts, dir).await;
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let push = |text: &'static str| {
        let http = http.clone();
        let url = format!("{base}/channels/echo/webhook");
        async move {
            let r = http
                .post(url)
                .json(&json!({"conversation": "stranger-dm", "sender": "stranger", "text": text}))
                .send()
                .await
                .expect("push");
            assert_eq!(r.status(), 200);
        }
    };
    // A stranger writes first: the answer is a pairing code, and a request
    // waits for an operator.
    push("hello, may I?").await;
    rx.wait_for(1).await;
    let first = rx.texts_to("stranger-dm");
    assert!(
        first.len() == 1 && first[0].contains("Pairing code"),
        "{first:?}"
    );
    let restarts_before = echo_restarts(&gw).await;

    // A webhook endpoint and one chat turn: its events fail to deliver.
    let r = http
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": hooks.url(), "events": ["message.*"], "description": "console"}))
        .send()
        .await
        .expect("add webhook");
    assert_eq!(r.status(), 201);
    let mut c = operator(&gw).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hello webhooks", "idempotencyKey": "console-1"}),
    )
    .await;
    assert_eq!(
        c.chat_run("console-1").await.last().expect("run")["state"],
        "final"
    );
    hooks.wait_for(1).await;
    let dispatcher = gw.running.as_ref().expect("running").dispatcher.clone();
    dispatcher.settled().await;
    let hook_calls_before = hooks.received().len();

    let artifacts = browser::artifacts_dir("console");
    let upload = pincer_tests::built_plugin("clock");
    let (report, exited_ok) = browser::run_driver(
        "console.mjs",
        &json!({
            "base": base,
            "token": TOKEN,
            "wrongToken": "not-the-token",
            "artifacts": artifacts,
            "channel": "echo",
            "pairingSender": "stranger",
            "uploadFile": upload,
            "uploadName": "clock",
            "webhookUrl": hooks.url(),
        }),
    )
    .await;
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(artifacts.join("report.json"), &pretty).expect("writing the report");
    assert!(
        exited_ok && report["failed"].is_null(),
        "the browser run failed: {}\n(report and screenshots in {})",
        report["failed"],
        artifacts.display()
    );
    assert_eq!(report["pageErrors"], json!([]), "uncaught exceptions");
    assert_eq!(report["cspViolations"], json!([]), "CSP violations");

    // The wrong token: a clear error naming the cause.
    let login_error = report["loginError"].as_str().unwrap_or_default();
    assert!(
        login_error.contains("Login failed") && login_error.contains("token mismatch"),
        "{login_error:?}"
    );
    // The token never stays in the address bar.
    let url = report["urlAfterLogin"].as_str().unwrap_or_default();
    assert!(!url.contains("token"), "{url}");
    assert_eq!(report["readiness"], "ready");

    // The restart: in the feed, in the row, and in the gateway's record.
    assert!(
        report["restartEvent"]
            .as_str()
            .is_some_and(|t| t.contains("echo") && t.contains("by an operator")),
        "{}",
        report["restartEvent"]
    );
    assert!(report["restartsAfter"].as_u64() > report["restartsBefore"].as_u64());
    assert!(echo_restarts(&gw).await > restarts_before);

    // The pairing approved in the page admits the sender: the next
    // message gets the echo agent's answer, not another code.
    let code = report["approvedCode"].as_str().expect("approved code");
    assert!(first[0].contains(code), "{first:?} vs {code}");
    let approved = gw
        .gw()
        .runtime
        .channels
        .pairing()
        .list("echo", None)
        .expect("pairing list");
    assert!(approved.pending.is_empty(), "{approved:?}");
    push("now I am paired").await;
    let mut seen = rx.received().len();
    loop {
        let after = rx.texts_to("stranger-dm");
        if after.iter().skip(1).any(|t| t.contains("now I am paired")) {
            assert!(
                !after.iter().skip(1).any(|t| t.contains("Pairing code")),
                "a second code after approval: {after:?}"
            );
            break;
        }
        seen += 1;
        rx.wait_for(seen).await;
    }

    // The uploaded plugin: listed as loaded in the page, and it answers.
    assert!(
        report["uploadStatus"]
            .as_str()
            .is_some_and(|s| s.contains("clock loaded")),
        "{}",
        report["uploadStatus"]
    );
    assert_eq!(report["uploadOutcome"], "loaded");
    assert_eq!(report["uploadedRow"]["state"], "loaded");
    let out = gw
        .gw()
        .runtime
        .plugins
        .invoke_tool("clock", "{}")
        .await
        .expect("the uploaded tool answers");
    assert!(out.contains("unix_ms"), "{out}");

    // The replay pressed in the page sends the delivery again.
    let replayed = report["replayedDelivery"]
        .as_i64()
        .expect("a replayed delivery");
    assert!(
        report["attemptsShown"].as_u64() >= Some(1),
        "no attempts shown: {}",
        report["deliveryText"]
    );
    assert_eq!(report["webhooksError"], "", "{}", report["webhooksError"]);
    assert!(
        report["attemptsAfterReplay"].as_u64() >= Some(2),
        "{report}"
    );
    hooks.wait_for(hook_calls_before + 1).await;
    dispatcher.settled().await;
    let webhook_id = c.call("webhooks.list", json!({})).await["webhooks"][0]["id"]
        .as_str()
        .expect("webhook id")
        .to_string();
    let d = c
        .call("webhooks.deliveries", json!({"id": webhook_id}))
        .await;
    let row = d["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|x| x["id"] == replayed)
        .cloned()
        .expect("the replayed delivery");
    assert!(row["attemptCount"].as_u64() >= Some(2), "{row}");

    for shot in [
        "webhooks",
        "login-error",
        "channel-restarted",
        "pairing-pending",
        "console",
    ] {
        let f = artifacts.join(format!("{shot}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "no screenshot {}", f.display());
    }
    gw.stop().await;
}

/// The bundled plugins except `clock` (a tool name is served by one
/// plugin only, so a second copy of `clock` would be refused): the
/// directory exists, so the gateway adds no bundled set of its own.
fn install_without_clock(dir: &Path) {
    std::fs::create_dir_all(dir).expect("plugins dir");
    for name in ["echo", "http-fetch", "telegram", "whatsapp"] {
        pincer_tests::install_plugin(dir, name, name);
    }
}

/// The echo channel's total restarts as the health monitor counts them.
async fn echo_restarts(gw: &TestGateway) -> u64 {
    gw.gw()
        .runtime
        .health
        .snapshot()
        .await
        .into_iter()
        .find(|c| c.name == "echo")
        .expect("echo channel")
        .restarts_total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_marks_a_channel_that_gave_up_and_restarts_it() {
    browser::require_tools();
    let clock = pincer::clock::ManualClock::new(1_800_000_000_000);
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.clock = Some(pincer::gateway::launch::ClockOverride(clock.clone()));
    // No restarts allowed: the first confirmed stale check gives up. The
    // monitor's own loop stays out of the way (hourly); the test checks.
    opts.health = pincer::health::HealthConfig {
        check_interval_ms: 3_600_000,
        stale_threshold_ms: 5_000,
        startup_grace_ms: 1_000,
        confirm_checks: 1,
        max_restarts_per_hour: 0,
        ..Default::default()
    };
    // A manual clock cannot move PostgreSQL's (see tests/src/test_store.rs).
    pincer_tests::test_store::keep_sqlite(&mut opts);
    std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
    pincer_tests::install_plugin(&opts.plugins_dir, "testchan", "testchan");
    let mut gw = TestGateway::start_with(opts, dir).await;
    let monitor = gw.gw().runtime.health.clone();
    // The channel's plugin reports old activity; ten minutes pass.
    gw.gw()
        .runtime
        .plugins
        .kv()
        .set("testchan", "last_activity", b"1")
        .expect("kv");
    clock.advance(600_000);
    monitor.check_once().await;
    let state = |snap: Vec<pincer::health::ChannelHealth>| {
        snap.into_iter()
            .find(|c| c.name == "testchan")
            .expect("testchan")
            .state
            .as_str()
    };
    assert_eq!(state(monitor.snapshot().await), "gave-up");

    let artifacts = browser::artifacts_dir("console-gave-up");
    let (report, exited_ok) = browser::run_driver(
        "console.mjs",
        &json!({
            "base": format!("http://{}", gw.addr),
            "token": TOKEN,
            "artifacts": artifacts,
            "gaveUpChannel": "testchan",
        }),
    )
    .await;
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(artifacts.join("report.json"), &pretty).expect("writing the report");
    assert!(
        exited_ok && report["failed"].is_null(),
        "the browser run failed: {}\n(report and screenshots in {})",
        report["failed"],
        artifacts.display()
    );
    // Marked and explained in the page.
    // (innerText, so as shown: the style sets it in capitals.)
    let text = report["gaveUpText"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        text.contains("gave up") && text.contains("press restart"),
        "{text:?}"
    );
    assert!(
        !report["urlAfterLogin"]
            .as_str()
            .unwrap_or("token")
            .contains("token")
    );
    // The page's Restart brought it back.
    assert_eq!(state(monitor.snapshot().await), "running");
    let f = artifacts.join("gave-up.png");
    assert!(
        std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) > 0,
        "no screenshot {}",
        f.display()
    );
    gw.stop().await;
}
