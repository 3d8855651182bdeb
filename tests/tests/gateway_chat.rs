//! Chat over the protocol with the echo provider: streaming (v3 cumulative
//! text and v4 deltaText), exactly one terminal event, idempotent retry,
//! abort mid-stream, the two-phase `agent` method, `/tool` calls with tool
//! events, and the session methods' shapes.

use std::time::Duration;

use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use serde_json::{Value, json};

fn text_of(msg: &Value) -> String {
    msg["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_and_persists() {
    let g = TestGateway::start().await;
    let mut v3 = Client::connect(&g.url(), connect_params(3, 3, Some("secret"), ALL)).await;
    let mut v4 = Client::connect(&g.url(), connect_params(4, 4, Some("secret"), ALL)).await;
    let msg = "the quick brown fox jumps over the lazy dog";
    let ack = v4
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": msg, "idempotencyKey": "run-1"}),
        )
        .await;
    assert_eq!(ack, json!({"runId": "run-1", "status": "started"}));
    for c in [&mut v3, &mut v4] {
        let events = c.chat_run("run-1").await;
        let (last, deltas) = events.split_last().unwrap();
        assert_eq!(last["state"], "final");
        assert_eq!(text_of(&last["message"]), msg);
        assert_eq!(last["sessionKey"], "agent:main:main");
        // Cumulative text grows by prefix; deltaText concatenates to it.
        let mut acc = String::new();
        let mut prev = String::new();
        for d in deltas {
            assert_eq!(d["state"], "delta");
            let cum = text_of(&d["message"]);
            assert!(cum.starts_with(&prev), "cumulative text must grow");
            acc.push_str(d["deltaText"].as_str().unwrap());
            assert_eq!(acc, cum);
            prev = cum;
        }
        assert_eq!(prev, msg, "the last delta is flushed before final");
        // Exactly one terminal event: nothing else for this run follows.
        assert!(
            !c.events
                .iter()
                .any(|e| e["event"] == "chat" && e["payload"]["runId"] == "run-1")
        );
    }
    // Lifecycle agent events bracket the run.
    let start = v4
        .event(|e| e["event"] == "agent" && e["payload"]["data"]["phase"] == "start")
        .await;
    assert_eq!(start["payload"]["runId"], "run-1");
    let end = v4
        .event(|e| e["event"] == "agent" && e["payload"]["data"]["phase"] == "end")
        .await;
    assert_eq!(end["payload"]["stream"], "lifecycle");
    // History has both messages.
    let h = v3.call("chat.history", json!({"sessionKey": "main"})).await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(text_of(&msgs[1]), msg);
    // An idempotent retry does not run again.
    let again = v4
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": msg, "idempotencyKey": "run-1"}),
        )
        .await;
    assert_eq!(again, json!({"runId": "run-1", "status": "ok"}));
    let h = v3.call("chat.history", json!({"sessionKey": "main"})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_stream_ends_with_one_aborted_event() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    // Slow words so the run is certainly in flight when aborted.
    opts.agent.echo_word_delay_ms = 200;
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    let long = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": long, "idempotencyKey": "r-abort"}),
    )
    .await;
    // Wait until streaming has begun, then abort.
    c.event(|e| e["event"] == "chat" && e["payload"]["state"] == "delta")
        .await;
    let r = c
        .call(
            "chat.abort",
            json!({"sessionKey": "main", "runId": "r-abort"}),
        )
        .await;
    assert_eq!(r["aborted"], true);
    let events = c.chat_run("r-abort").await;
    let last = events.last().unwrap();
    assert_eq!(last["state"], "aborted");
    assert_eq!(last["stopReason"], "rpc");
    let partial = text_of(&last["message"]);
    assert!(partial.starts_with("w0") && partial.len() < long.len());
    // agent.wait reports it; the partial answer is in the transcript.
    let w = c.call("agent.wait", json!({"runId": "r-abort"})).await;
    assert_eq!(w["aborted"], true);
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    assert_eq!(h["messages"][1]["stopReason"], "aborted");
    // Aborting a run of another session is refused; unknown runs are no-ops.
    let r = c
        .call("chat.abort", json!({"sessionKey": "main", "runId": "nope"}))
        .await;
    assert_eq!(r, json!({"ok": true, "aborted": false, "runIds": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_two_phase_and_wait() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let id = c
        .send_req(
            "agent",
            json!({"message": "hello agent", "idempotencyKey": "a-1"}),
        )
        .await;
    let first = c.response(&id).await;
    assert_eq!(first["payload"]["status"], "accepted");
    assert_eq!(first["payload"]["runId"], "a-1");
    let second = c.response(&id).await;
    assert_eq!(second["ok"], true);
    assert_eq!(second["payload"]["status"], "ok");
    assert_eq!(
        second["payload"]["result"]["payloads"][0]["text"],
        "hello agent"
    );
    let w = c
        .call("agent.wait", json!({"runId": "a-1", "timeoutMs": 1000}))
        .await;
    assert_eq!(w["status"], "ok");
    let r = c.request("agent.wait", json!({"runId": "never"})).await;
    assert_eq!(r["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_command_calls_the_plugin_and_emits_tool_events() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "/tool clock {}", "idempotencyKey": "t-1"}),
    )
    .await;
    let start = c
        .event(|e| {
            e["event"] == "agent"
                && e["payload"]["stream"] == "tool"
                && e["payload"]["data"]["phase"] == "start"
        })
        .await;
    assert_eq!(start["payload"]["data"]["name"], "clock");
    let result = c
        .event(|e| {
            e["event"] == "agent"
                && e["payload"]["stream"] == "tool"
                && e["payload"]["data"]["phase"] == "result"
        })
        .await;
    assert_eq!(result["payload"]["data"]["isError"], false);
    assert!(
        result["payload"]["data"]["result"]["unix_ms"].is_u64(),
        "{result}"
    );
    let events = c.chat_run("t-1").await;
    assert!(text_of(&events.last().unwrap()["message"]).contains("unix_ms"));
    c.event(|e| e["event"] == "session.tool").await;
    // An unknown tool is an error result, not a failed run.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "/tool nope {}", "idempotencyKey": "t-2"}),
    )
    .await;
    let events = c.chat_run("t-2").await;
    assert_eq!(events.last().unwrap()["state"], "final");
    assert!(text_of(&events.last().unwrap()["message"]).contains("no tool named"));
    let cat = c.call("tools.catalog", json!({})).await;
    let names: Vec<&str> = cat["groups"][0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"clock") && names.contains(&"http_fetch"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_shapes() {
    let g = TestGateway::start().await;
    let mut c = Client::admin(&g.url()).await;
    let h = c.call("health", json!({})).await;
    for k in [
        "ok",
        "ts",
        "durationMs",
        "channels",
        "channelOrder",
        "channelLabels",
        "heartbeatSeconds",
        "defaultAgentId",
        "agents",
        "sessions",
    ] {
        assert!(h.get(k).is_some(), "health lacks {k}");
    }
    assert!(
        h["channelOrder"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "echo")
    );
    let s = c.call("status", json!({})).await;
    for k in [
        "runtimeVersion",
        "heartbeat",
        "channelSummary",
        "queuedSystemEvents",
        "sessions",
    ] {
        assert!(s.get(k).is_some(), "status lacks {k}");
    }
    assert!(c.call("models.list", json!({})).await["models"][0]["id"].is_string());
    assert_eq!(c.call("agents.list", json!({})).await["defaultId"], "main");
    assert_eq!(
        c.call("agent.identity.get", json!({})).await["agentId"],
        "main"
    );
    assert!(c.call("system-presence", json!({})).await.is_array());
    assert_eq!(c.call("last-heartbeat", json!({})).await, Value::Null);
    assert_eq!(c.call("node.list", json!({})).await["nodes"], json!([]));
    let d = c.call("device.pair.list", json!({})).await;
    assert!(d["pending"].is_array() && d["paired"].is_array());
    assert!(c.call("logs.tail", json!({})).await["lines"].is_array());
    let ch = c.call("channels.status", json!({})).await;
    let echo = &ch["channels"]["echo"];
    for k in [
        "running",
        "connected",
        "mode",
        "lastInboundAt",
        "lastOutboundAt",
        "lastStartAt",
        "reconnectAttempts",
        "lastError",
        "restarts",
        "state",
    ] {
        assert!(
            echo.get(k).is_some(),
            "channels.status.echo lacks {k}: {echo}"
        );
    }
    assert_eq!(echo["mode"], "webhook");
    let r = c.call("channels.restart", json!({"channel": "echo"})).await;
    assert_eq!(r["ok"], true);
    let p = c.call("plugins.list", json!({})).await;
    assert_eq!(
        p["plugins"].as_array().unwrap().len(),
        8,
        "the bundled plugins: telegram, whatsapp, matrix, discord, slack, echo, clock, http-fetch"
    );
    assert_eq!(
        c.call("plugins.reload", json!({"name": "clock"})).await["ok"],
        true
    );

    // Sessions.
    assert_eq!(
        c.call("sessions.subscribe", json!({})).await,
        json!({"subscribed": true})
    );
    let sub = c
        .call("sessions.messages.subscribe", json!({"key": "main"}))
        .await;
    assert_eq!(sub, json!({"subscribed": true, "key": "agent:main:main"}));
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "s-1"}),
    )
    .await;
    c.chat_run("s-1").await;
    c.event(|e| e["event"] == "session.message").await;
    c.event(|e| e["event"] == "sessions.changed").await;
    let list = c.call("sessions.list", json!({})).await;
    let row = &list["sessions"][0];
    assert_eq!(row["key"], "agent:main:main");
    assert_eq!(row["kind"], "direct");
    assert!(row["updatedAt"].is_i64());
    let p = c
        .call(
            "sessions.patch",
            json!({"key": "main", "label": "Main chat", "thinkingLevel": "low"}),
        )
        .await;
    assert_eq!(p["entry"]["label"], "Main chat");
    let p = c
        .call("sessions.patch", json!({"key": "main", "label": null}))
        .await;
    assert!(p["entry"].get("label").is_none());
    assert_eq!(
        c.request("sessions.patch", json!({"key": "main", "bogus": 1}))
            .await["ok"],
        false
    );
    let a = c.call("sessions.abort", json!({"key": "main"})).await;
    assert_eq!(a["status"], "no-active-run");
    let r = c.call("sessions.reset", json!({"key": "main"})).await;
    assert_eq!(r["ok"], true);
    assert_eq!(
        c.call("chat.history", json!({"sessionKey": "main"})).await["messages"],
        json!([])
    );
    let i = c
        .call(
            "chat.inject",
            json!({"sessionKey": "main", "message": "injected note"}),
        )
        .await;
    assert!(i["messageId"].is_string());
    let ev = c
        .event(|e| e["event"] == "chat" && e["payload"]["seq"] == 0)
        .await;
    assert!(
        ev["payload"]["runId"]
            .as_str()
            .unwrap()
            .starts_with("inject-")
    );
    let d = c.call("sessions.delete", json!({"key": "main"})).await;
    assert_eq!(d["deleted"], true);
    assert_eq!(c.call("sessions.list", json!({})).await["count"], 0);
    let _ = Duration::ZERO;
}

/// A provider that does a whole tool round and finishes within one poll
/// (what `openai` does when the model's response is already buffered): the
/// events it sent in that poll must all reach clients and the event log.
struct OnePollProvider;

impl pincer::agent::Provider for OnePollProvider {
    fn name(&self) -> &str {
        "one-poll"
    }
    fn models(&self) -> Vec<pincer::agent::ModelInfo> {
        Vec::new()
    }
    fn run<'a>(
        &'a self,
        _req: pincer::agent::RunRequest,
        _tools: std::sync::Arc<dyn pincer::agent::ToolHost>,
        events: tokio::sync::mpsc::UnboundedSender<pincer::agent::AgentEvent>,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> futures::future::BoxFuture<'a, Result<pincer::agent::RunOutcome, pincer::agent::AgentError>>
    {
        use pincer::agent::AgentEvent;
        Box::pin(async move {
            let _ = events.send(AgentEvent::TextDelta("Checking. ".into()));
            let _ = events.send(AgentEvent::ToolStart {
                call_id: "c1".into(),
                name: "clock".into(),
                args: json!({}),
            });
            let _ = events.send(AgentEvent::ToolResult {
                call_id: "c1".into(),
                name: "clock".into(),
                result: json!({"now": "noon"}),
                is_error: false,
            });
            let _ = events.send(AgentEvent::TextDelta("Noon.".into()));
            Ok(pincer::agent::RunOutcome {
                text: "Checking. Noon.".into(),
                stop_reason: Some("stop".into()),
                usage: None,
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_in_the_providers_last_poll_are_not_lost() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.provider = Some(pincer::gateway::launch::ProviderOverride(
        std::sync::Arc::new(OnePollProvider),
    ));
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "time?", "idempotencyKey": "p1"}),
    )
    .await;
    let fin = c.chat_run("p1").await;
    assert_eq!(fin.last().unwrap()["state"], "final");
    let tool: Vec<Value> = [
        c.event(|e| e["event"] == "agent" && e["payload"]["stream"] == "tool")
            .await,
        c.event(|e| e["event"] == "agent" && e["payload"]["stream"] == "tool")
            .await,
    ]
    .into_iter()
    .map(|e| e["payload"]["data"]["phase"].clone())
    .collect();
    assert_eq!(tool, [json!("start"), json!("result")]);
    let logged: Vec<String> = g
        .gw()
        .sessions
        .events_after(0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("tool."))
        .collect();
    assert_eq!(logged, ["tool.called", "tool.completed"]);
}
