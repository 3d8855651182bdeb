//! OpenClaw's real Control UI (the `openclaw` 2026.9.6 npm package's
//! `dist/control-ui`, fetched and verified by
//! `tests/browser/fetch-control-ui.sh`) served by the gateway itself
//! (`[gateway] control_ui`, `pincer serve --control-ui DIR`) and driven in
//! headless Chromium by `tests/browser/control-ui.mjs`: every method the
//! page calls must be answered without an error, a message typed into the
//! composer gets the echo agent's streamed reply on the page, a long run is
//! stopped from the page, and the sessions, channels and plugins pages show
//! Pincer's data. Screenshots go to `target/test-artifacts/control_ui/`.

use std::collections::BTreeSet;

use pincer_tests::browser;
use pincer_tests::gateway::TestGateway;
use serde_json::{Value, json};

const TOKEN: &str = "control-ui-secret";

/// Methods the Control UI must have called (and had answered) on the way:
/// start-up, the chat, and the pages the driver opens; among them the 18
/// that issue 10 found refused as unknown.
const EXPECTED: &[&str] = &[
    "connect",
    "chat.startup",
    "chat.send",
    "chat.abort",
    "sessions.list",
    "agents.list",
    "models.list",
    "models.authStatus",
    "channels.status",
    "plugins.list",
    // The 18 of issue 10 (chat.startup and models.authStatus above).
    "chat.metadata",
    "config.get",
    "sessions.describe",
    "update.status",
    "cron.list",
    "cron.status",
    "tasks.list",
    "question.list",
    "talk.catalog",
    "exec.approval.list",
    "plugin.approval.list",
    "openclaw.approval.list",
    "progressCard.get",
    "sessions.branches.list",
    "sessions.companion.state",
    "sessions.observer.visibility",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_ui_chats_aborts_and_lists_against_pincer() {
    browser::require_tools();
    let ui = browser::control_ui_dir();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    opts.gateway.control_ui = Some(ui);
    // Slow enough that the long message below is still streaming when the
    // page's stop button is pressed; the short one finishes at once.
    opts.agent.echo_word_delay_ms = 40;
    // The plugins directory is left absent, so the gateway installs its
    // five bundled plugins: echo, clock, http-fetch and the telegram and
    // whatsapp channels (unconfigured: no platform secrets), whose
    // platform-specific cards on the channels page must render.
    let mut gw = TestGateway::start_with(opts, dir).await;
    let addr = gw.addr;

    // The gateway serves the UI: the shell at `/` and at an app route.
    let http = reqwest::Client::new();
    for path in ["/", "/chat"] {
        let r = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("GET the Control UI");
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.contains("OpenClaw Control"), "{path}: {body:.200}");
    }
    // A path that climbs out of the directory (sent raw: HTTP clients
    // normalise `..` away) is refused, encoded or not.
    for path in ["/../../etc/passwd", "/assets/%2e%2e/%2e%2e/etc/passwd"] {
        let status = raw_get_status(addr, path).await;
        assert!(status.contains(" 404 "), "{path}: {status}");
    }

    let message = "hello pincer from the control ui";
    // 800 words at 40 ms: about half a minute of streaming, ample time for
    // the page to show the stop button and for the click to land.
    let long: String = (0..800).map(|i| format!("word{i} ")).collect();
    let artifacts = browser::artifacts_dir("control_ui");
    let gateway_url = format!("ws://{addr}");
    let url = format!(
        "http://{addr}/?gatewayUrl={}#token={TOKEN}",
        gateway_url.replace(':', "%3A").replace('/', "%2F")
    );
    let (report, exited_ok) = browser::run_driver(
        "control-ui.mjs",
        &json!({
            "url": url,
            "artifacts": artifacts,
            "message": message,
            "longMessage": long.trim_end(),
            "channels": channel_names(&gw).await,
            "channelCards": ["telegram", "whatsapp", "echo"],
            "plugins": gw.gw().runtime.plugins.list().iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
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
    // The page understood every answer: no uncaught exception.
    assert_eq!(
        report["pageErrors"],
        json!([]),
        "uncaught exceptions in the page"
    );
    // No method the page called was refused, unknown or failed.
    let calls = report["calls"].as_array().expect("calls");
    let errors: Vec<&Value> = calls.iter().filter(|c| c["ok"] != true).collect();
    assert!(errors.is_empty(), "error answers: {errors:#?}");
    let called: BTreeSet<&str> = calls.iter().filter_map(|c| c["method"].as_str()).collect();
    for m in EXPECTED {
        assert!(called.contains(m), "the page never called {m}: {called:?}");
    }
    // Every method the page called is one Pincer advertises.
    for m in &called {
        assert!(
            *m == "connect" || pincer::gateway::methods::METHODS.contains(m),
            "{m} was answered but is not in features.methods"
        );
    }
    assert!(
        report["pendingMethods"]
            .as_array()
            .is_some_and(|p| p.is_empty()),
        "requests never answered: {}",
        report["pendingMethods"]
    );
    // The chat: one run ended `final`, the long one `aborted`.
    let states: Vec<&str> = report["chatEvents"]
        .as_array()
        .expect("chatEvents")
        .iter()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert!(states.contains(&"final"), "{states:?}");
    assert!(states.contains(&"aborted"), "{states:?}");
    // The channel cards show each channel's state from `channels.status`:
    // telegram and whatsapp are unconfigured (no platform secrets), the
    // echo channel runs.
    let card = |name: &str| {
        let text = report["channelCards"][name].as_str().unwrap_or_default();
        // The status rows as `label: value` lines (the page renders each
        // `<dt>`/`<dd>` pair on two lines).
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let row = |label: &str| {
            lines
                .iter()
                .position(|l| l.eq_ignore_ascii_case(label))
                .and_then(|i| lines.get(i + 1))
                .map(|v| v.to_string())
                .unwrap_or_else(|| panic!("{name}'s card has no {label} row:\n{text}"))
        };
        (
            text.to_string(),
            [row("Configured"), row("Running"), row("Last error")],
        )
    };
    // Telegram's card: its polling mode and why it does not run.
    let (tg, [configured, running, error]) = card("telegram");
    assert_eq!(
        (configured.as_str(), running.as_str()),
        ("No", "No"),
        "{tg}"
    );
    assert!(error.contains("bot_token"), "{tg}");
    assert!(tg.contains("Mode\npolling"), "{tg}");
    // WhatsApp's card: not linked (no access token granted).
    let (wa, [configured, running, error]) = card("whatsapp");
    assert_eq!(
        (configured.as_str(), running.as_str()),
        ("No", "No"),
        "{wa}"
    );
    assert!(error.contains("access_token"), "{wa}");
    assert!(wa.contains("Linked\nNo"), "{wa}");
    // A channel OpenClaw has no card for lists its accounts, each with
    // its state badge: the echo channel's `default` account runs.
    let echo = report["channelCards"]["echo"].as_str().unwrap_or_default();
    let lines: Vec<&str> = echo.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"default") && lines.contains(&"Running"),
        "{echo}"
    );
    for shot in ["chat-before", "chat-after"] {
        let f = artifacts.join(format!("{shot}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "no screenshot {}", f.display());
    }

    // The gateway's own record agrees with what the page showed.
    let key = pincer::gateway::MAIN_SESSION;
    let history = gw.gw().sessions.history(key, 50).expect("history");
    let texts: Vec<String> = history.iter().map(|m| format!("{m:?}")).collect();
    assert!(
        texts.iter().filter(|t| t.contains(message)).count() >= 2,
        "the transcript lacks the message and its echo: {texts:#?}"
    );
    gw.stop().await;
}

/// The channel names the gateway reports (the channels page must show
/// each of them).
async fn channel_names(gw: &TestGateway) -> Vec<String> {
    gw.gw()
        .runtime
        .health
        .snapshot()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The status line of a raw `GET path` (no client-side normalisation).
async fn raw_get_status(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
