//! OpenClaw's own CLI, `openclaw gateway call METHOD --params JSON --url
//! ... --token ... --json` (the pinned `openclaw` package run with Node 24),
//! against a Pincer gateway: every method Pincer lists in
//! `hello-ok.features.methods` is called once, with valid params where it
//! needs them, and answers without an error, or with the specific error a
//! method gives when the state it acts on does not exist.

use std::collections::BTreeSet;
use std::sync::Arc;

use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use pincer_tests::openclaw_cli::OpenclawCli;
use serde_json::{Value, json};

const TOKEN: &str = "cli-secret";

/// What a call must answer.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `ok`, with this field in the payload (`""`: any payload).
    Ok(&'static str),
    /// An error with this code whose message contains this text.
    Err(&'static str, &'static str),
}

/// Every advertised method with its params and expected answer.
fn calls() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    let main = "agent:main:main";
    vec![
        ("health", json!({}), Ok("ok")),
        ("status", json!({}), Ok("")),
        (
            "chat.send",
            json!({"sessionKey": main, "message": "hello from the cli", "idempotencyKey": "cli-run-1"}),
            Ok("runId"),
        ),
        ("chat.abort", json!({"sessionKey": main}), Ok("")),
        ("chat.history", json!({"sessionKey": main}), Ok("messages")),
        (
            "chat.inject",
            json!({"sessionKey": main, "message": "injected by the cli"}),
            Ok(""),
        ),
        ("sessions.list", json!({}), Ok("sessions")),
        ("sessions.subscribe", json!({}), Ok("subscribed")),
        ("sessions.unsubscribe", json!({}), Ok("subscribed")),
        ("sessions.messages.subscribe", json!({"key": main}), Ok("")),
        (
            "sessions.messages.unsubscribe",
            json!({"key": main}),
            Ok(""),
        ),
        (
            "sessions.patch",
            json!({"key": "agent:main:cli-patch", "label": "from the cli"}),
            Ok(""),
        ),
        (
            "sessions.reset",
            json!({"key": "agent:main:cli-reset"}),
            Ok(""),
        ),
        (
            "sessions.delete",
            json!({"key": "agent:main:cli-delete"}),
            Ok(""),
        ),
        ("sessions.abort", json!({"key": main}), Ok("")),
        ("models.list", json!({}), Ok("models")),
        ("agents.list", json!({}), Ok("agents")),
        ("agent.identity.get", json!({}), Ok("")),
        (
            "agent",
            json!({"message": "agent from the cli", "idempotencyKey": "cli-agent-1"}),
            Ok("runId"),
        ),
        (
            "agent.wait",
            json!({"runId": "cli-agent-unknown", "timeoutMs": 1}),
            Err("AGENT_RESULT_NOT_FOUND", "unknown runId"),
        ),
        ("system-presence", json!({}), Ok("")),
        ("last-heartbeat", json!({}), Ok("")),
        ("node.list", json!({}), Ok("nodes")),
        ("device.pair.list", json!({}), Ok("")),
        (
            "device.pair.approve",
            json!({"requestId": "no-such-request"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "device.pair.reject",
            json!({"requestId": "no-such-request"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "device.pair.remove",
            json!({"deviceId": "no-such-device"}),
            Err("INVALID_REQUEST", ""),
        ),
        ("logs.tail", json!({}), Ok("")),
        ("tools.catalog", json!({}), Ok("")),
        ("channels.status", json!({}), Ok("channelMeta")),
        ("channels.stop", json!({"channel": "echo"}), Ok("")),
        ("channels.start", json!({"channel": "echo"}), Ok("")),
        ("channels.restart", json!({"channel": "echo"}), Ok("")),
        ("channels.pairing.list", json!({}), Ok("accounts")),
        (
            "channels.pairing.approve",
            json!({"channel": "telegram", "code": "NOPE2345"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "channels.pairing.dismiss",
            json!({"channel": "telegram", "code": "NOPE2345"}),
            Err("INVALID_REQUEST", ""),
        ),
        ("plugins.list", json!({}), Ok("plugins")),
        ("plugins.reload", json!({"name": "clock"}), Ok("results")),
        (
            "webhooks.add",
            json!({"url": "https://93.184.215.14/pincer-hook"}),
            Ok(""),
        ),
        ("webhooks.list", json!({}), Ok("")),
        (
            "send",
            json!({"channel": "no-such-channel", "to": "someone", "message": "hi"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.get",
            json!({"id": "no-such-hook"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.delete",
            json!({"id": "no-such-hook"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.toggle",
            json!({"id": "no-such-hook", "enabled": false}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.rotate",
            json!({"id": "no-such-hook"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.deliveries",
            json!({"id": "no-such-hook"}),
            Err("INVALID_REQUEST", ""),
        ),
        (
            "webhooks.replay",
            json!({"id": "no-such-hook"}),
            Err("INVALID_REQUEST", ""),
        ),
        ("chat.startup", json!({"sessionKey": main}), Ok("")),
        ("chat.metadata", json!({}), Ok("")),
        ("sessions.describe", json!({"key": main}), Ok("session")),
        ("models.authStatus", json!({}), Ok("")),
        ("cron.list", json!({}), Ok("")),
        ("cron.status", json!({}), Ok("")),
        ("tasks.list", json!({}), Ok("")),
        ("question.list", json!({}), Ok("questions")),
        ("talk.catalog", json!({}), Ok("")),
        ("exec.approval.list", json!({}), Ok("")),
        ("plugin.approval.list", json!({}), Ok("")),
        ("openclaw.approval.list", json!({}), Ok("")),
        ("progressCard.get", json!({}), Ok("")),
        ("sessions.branches.list", json!({"key": main}), Ok("")),
        ("sessions.companion.state", json!({"key": main}), Ok("")),
        ("sessions.observer.visibility", json!({"key": main}), Ok("")),
        ("update.status", json!({}), Ok("")),
        ("config.get", json!({}), Ok("config")),
        // This gateway has no configuration file to read again.
        (
            "config.reload",
            json!({}),
            Err("UNAVAILABLE", "without a configuration file"),
        ),
        ("plugins.catalog.browse", json!({}), Ok("")),
        ("diagnostics.lanes", json!({}), Ok("lanes")),
        (
            "skills.library.list",
            json!({"scope": "all"}),
            Ok("entries"),
        ),
        ("skills.search", json!({"limit": 20}), Ok("results")),
        ("skills.status", json!({}), Ok("skills")),
        ("exec.approvals.get", json!({}), Ok("resolvedDefaults")),
        ("themes.list", json!({}), Ok("themes")),
        ("usage.status", json!({}), Ok("providers")),
        ("sessions.usage", json!({"limit": 10}), Ok("totals")),
        ("environments.list", json!({}), Ok("environments")),
        ("system.info", json!({}), Ok("uptimeMs")),
    ]
}

/// Run `openclaw gateway call`; its exit status and JSON output.
fn call(
    cli: &OpenclawCli,
    home: &std::path::Path,
    url: &str,
    method: &str,
    params: &Value,
) -> (bool, Value, String) {
    let out = cli
        .command(
            home,
            &[
                "gateway",
                "call",
                method,
                "--params",
                &params.to_string(),
                "--url",
                url,
                "--token",
                TOKEN,
                "--json",
                "--timeout",
                "60000",
            ],
        )
        .output()
        .expect("running the openclaw CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.success(), v, format!("{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_gateway_call_answers_every_advertised_method() {
    let cli = Arc::new(OpenclawCli::get());
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some(TOKEN.into());
    let mut gw = TestGateway::start_with(opts, dir).await;
    let url = format!("ws://{}", gw.addr);

    // The table covers exactly what the gateway advertises.
    let mut c = Client::connect(&url, connect_params(3, 4, Some(TOKEN), ALL)).await;
    let advertised: BTreeSet<String> = c.hello["features"]["methods"]
        .as_array()
        .expect("features.methods")
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect();
    let table = calls();
    let covered: BTreeSet<String> = table.iter().map(|(m, ..)| m.to_string()).collect();
    assert_eq!(advertised, covered, "the table and features.methods differ");
    // The main session exists before the calls (they run in parallel).
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "before the cli", "idempotencyKey": "pre-1"}),
    )
    .await;
    c.chat_run("pre-1").await;
    drop(c);

    // Four CLI processes at a time (each is a Node start-up).
    let home = Arc::new(tempfile::tempdir().expect("home for the CLI"));
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for (method, params, expect) in table {
        let (cli, home, url, sem) = (cli.clone(), home.clone(), url.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let (ok, v, raw) =
                tokio::task::spawn_blocking(move || call(&cli, home.path(), &url, method, &params))
                    .await
                    .expect("CLI thread");
            (method, expect, ok, v, raw)
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let (method, expect, ok, v, raw) = t.await.expect("call task");
        let verdict = match expect {
            Expect::Ok(field) => {
                ok && (field.is_empty() || !v.get(field).unwrap_or(&Value::Null).is_null())
            }
            Expect::Err(code, text) => {
                !ok && v["ok"] == false
                    && v["error"]["code"] == code
                    && v["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(text))
            }
        };
        if !verdict {
            failures.push(format!(
                "{method}: expected {expect:?}, got (exit ok: {ok}) {raw}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    gw.stop().await;
}
