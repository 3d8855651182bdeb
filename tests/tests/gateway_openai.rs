//! The `openai` provider through the gateway protocol, against the fake
//! OpenAI-compatible server: streamed answers to v3 and v4 clients (exactly
//! one terminal event), the request the model receives (model, messages,
//! the tool plugins as `tools`), a tool-call round trip through a bundled
//! tool plugin with its agent tool events, provider errors as `error`
//! terminal events, and `chat.abort` closing the model's stream.

use std::future::Future;
use std::time::Duration;

use pincer_tests::fake_openai::{FakeOpenAi, FakeToolCall, Script};
use pincer_tests::gateway::{ALL, Client, TestGateway, connect_params};
use serde_json::{Value, json};

const MODEL: &str = "gw-test-model";
const API_KEY: &str = "sk-gw-test-secret";

/// A gateway (token `secret`) whose agent is the `openai` provider
/// pointed at `fake`.
async fn gateway(fake: &FakeOpenAi) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.agent.provider = "openai".into();
    opts.agent.openai.base_url = fake.base_url();
    opts.agent.openai.model = MODEL.into();
    opts.agent.openai.api_key = Some(API_KEY.into());
    TestGateway::start_with(opts, dir).await
}

/// Guards against a hung test only; nothing is timed.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("the test hung")
}

fn text_of(msg: &Value) -> String {
    msg["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A `chat.completion.chunk` event carrying `text`.
fn content_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// Every `agent` and `chat` event frame of `run_id`, in arrival order, up
/// to and including its terminal `chat` event.
async fn run_frames(c: &mut Client, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let rid = run_id.to_string();
        let e = c
            .event(move |e| {
                (e["event"] == "chat" || e["event"] == "agent")
                    && e["payload"]["runId"] == rid.as_str()
            })
            .await;
        let terminal = e["event"] == "chat" && e["payload"]["state"] != "delta";
        out.push(e);
        if terminal {
            return out;
        }
    }
}

/// The `chat` payloads among `frames`.
fn chat_payloads(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["event"] == "chat")
        .map(|f| f["payload"].clone())
        .collect()
}

/// The `agent` payloads of `stream` among `frames`.
fn agent_payloads(frames: &[Value], stream: &str) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["event"] == "agent" && f["payload"]["stream"] == stream)
        .map(|f| f["payload"].clone())
        .collect()
}

/// After a round trip, no further `chat` event of `run_id` has arrived:
/// its terminal event was the only one.
async fn assert_no_more_chat(c: &mut Client, run_id: &str) {
    let h = c.call("health", json!({})).await;
    assert_eq!(h["ok"], true, "{h}");
    let late: Vec<&Value> = c
        .events
        .iter()
        .filter(|e| e["event"] == "chat" && e["payload"]["runId"] == run_id)
        .collect();
    assert!(
        late.is_empty(),
        "chat events after the terminal one: {late:?}"
    );
}

/// Checks the deltas-then-one-terminal shape and the streamed text; returns
/// the terminal payload.
fn check_stream(chat: &[Value], terminal_state: &str, streamed: &str) -> Value {
    let (last, deltas) = chat.split_last().expect("at least the terminal event");
    assert_eq!(last["state"], terminal_state, "{last}");
    assert!(!deltas.is_empty(), "the text is streamed before the end");
    let mut acc = String::new();
    let mut prev = String::new();
    for d in deltas {
        assert_eq!(d["state"], "delta", "one terminal event, last: {chat:?}");
        // v3: the cumulative text grows by prefix.
        let cum = text_of(&d["message"]);
        assert!(
            cum.starts_with(&prev),
            "cumulative text must grow: {chat:?}"
        );
        // v4: deltaText concatenates to it.
        acc.push_str(d["deltaText"].as_str().expect("deltaText"));
        assert_eq!(acc, cum);
        prev = cum;
    }
    assert_eq!(prev, streamed, "every delta is flushed before the end");
    last.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_send_streams_the_model_answer_to_v3_and_v4_clients() {
    let chunks = ["The quick ", "brown fox ", "jumps over ", "the lazy dog."];
    let answer = chunks.concat();
    let question = "what does the fox do?";
    let fake = FakeOpenAi::start(vec![Script::text_with_usage(&chunks, 11, 4)]).await;
    let g = gateway(&fake).await;
    let mut v3 = Client::connect(&g.url(), connect_params(3, 3, Some("secret"), ALL)).await;
    let mut v4 = Client::connect(&g.url(), connect_params(4, 4, Some("secret"), ALL)).await;
    assert_eq!(v3.hello["protocol"], 3);
    assert_eq!(v4.hello["protocol"], 4);

    let models = v4.call("models.list", json!({})).await;
    assert_eq!(models["models"][0]["id"], MODEL, "{models}");
    assert_eq!(models["models"][0]["provider"], "openai", "{models}");

    let ack = v4
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": question, "idempotencyKey": "oa-1"}),
        )
        .await;
    assert_eq!(ack, json!({"runId": "oa-1", "status": "started"}));

    for c in [&mut v3, &mut v4] {
        let frames = run_frames(c, "oa-1").await;
        let last = check_stream(&chat_payloads(&frames), "final", &answer);
        assert_eq!(text_of(&last["message"]), answer);
        assert_eq!(last["sessionKey"], "agent:main:main");
        assert_eq!(last["stopReason"], "stop");
        assert_eq!(last["usage"], json!({"input": 11, "output": 4}));
        // One `assistant` agent event per streamed chunk (not throttled).
        let assistant: Vec<String> = agent_payloads(&frames, "assistant")
            .iter()
            .map(|p| p["data"]["delta"].as_str().expect("delta").to_string())
            .collect();
        assert_eq!(assistant, chunks);
        // Lifecycle events bracket the run, before the terminal chat event.
        let lifecycle: Vec<Value> = agent_payloads(&frames, "lifecycle")
            .iter()
            .map(|p| p["data"]["phase"].clone())
            .collect();
        assert_eq!(lifecycle, [json!("start"), json!("end")]);
        assert_eq!(frames[0]["payload"]["data"]["phase"], "start");
        assert!(agent_payloads(&frames, "tool").is_empty());
        assert_no_more_chat(c, "oa-1").await;
    }

    let h = v3.call("chat.history", json!({"sessionKey": "main"})).await;
    let msgs = h["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(text_of(&msgs[0]), question);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(text_of(&msgs[1]), answer);
    assert_eq!(msgs[1]["stopReason"], "stop");
    assert_eq!(msgs[1]["usage"], json!({"input": 11, "output": 4}));
    assert_eq!(msgs[1]["runId"], "oa-1");

    // What the model was asked.
    let recorded = fake.recorded();
    assert_eq!(recorded.len(), 1);
    let req = &recorded[0];
    assert_eq!(req.path, "/v1/chat/completions");
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(req.authorization().as_deref(), Some(bearer.as_str()));
    let body = &req.body;
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    // No system prompt is configured: the conversation is the user's message.
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": question}])
    );
    // `tools` is the tool plugins' describe, as `tools.catalog` shows it.
    let mut sent: Vec<Value> = body["tools"].as_array().expect("tools").clone();
    sent.sort_by_key(|t| t["function"]["name"].as_str().unwrap_or("").to_string());
    let catalog = v4.call("tools.catalog", json!({})).await;
    let mut expected: Vec<Value> = catalog["groups"][0]["tools"]
        .as_array()
        .expect("catalog tools")
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t["name"], "description": t["description"], "parameters": t["parameters"],
            }})
        })
        .collect();
    expected.sort_by_key(|t| t["function"]["name"].as_str().unwrap_or("").to_string());
    assert_eq!(sent, expected);
    let names: Vec<&str> = sent
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["clock", "http_fetch"]);
    let clock = &sent[0]["function"];
    assert!(
        clock["description"]
            .as_str()
            .is_some_and(|d| d.contains("time")),
        "{clock}"
    );
    assert_eq!(clock["parameters"]["type"], "object");
    assert_eq!(
        clock["parameters"]["properties"]["utc_offset_minutes"]["type"], "integer",
        "{clock}"
    );
    let fetch = &sent[1]["function"];
    assert_eq!(fetch["parameters"]["required"], json!(["url"]), "{fetch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_sends_the_transcript_and_the_session_model() {
    let fake = FakeOpenAi::start(vec![
        Script::text(&["Paris", "."]),
        Script::text(&["About two ", "million."]),
    ])
    .await;
    let g = gateway(&fake).await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "capital of France?", "idempotencyKey": "turn-1"}),
    )
    .await;
    let first = c.chat_run("turn-1").await;
    assert_eq!(
        text_of(&first.last().expect("terminal")["message"]),
        "Paris."
    );

    let p = c
        .call(
            "sessions.patch",
            json!({"key": "main", "model": "other-model"}),
        )
        .await;
    assert_eq!(p["resolved"]["model"], "other-model", "{p}");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "and its population?", "idempotencyKey": "turn-2"}),
    )
    .await;
    let second = c.chat_run("turn-2").await;
    let last = second.last().expect("terminal");
    assert_eq!(last["state"], "final");
    assert_eq!(text_of(&last["message"]), "About two million.");

    let bodies = fake.requests();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["model"], MODEL);
    assert_eq!(bodies[1]["model"], "other-model");
    assert_eq!(
        bodies[1]["messages"],
        json!([
            {"role": "user", "content": "capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "and its population?"},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_runs_the_bundled_plugin_and_feeds_the_result_back() {
    let fake = FakeOpenAi::start(vec![
        Script::ToolCalls {
            text: vec!["Let me check. ".into()],
            calls: vec![FakeToolCall::new(
                "call_clock_1",
                "clock",
                &["{\"utc_off", "set_minutes\"", ":60}"],
            )],
            usage: None,
        },
        Script::text(&["It is ", "an hour ahead."]),
        Script::text(&["Yes."]),
    ])
    .await;
    let g = gateway(&fake).await;
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "what time is it in Paris?", "idempotencyKey": "oa-tool"}),
    )
    .await;
    let frames = run_frames(&mut c, "oa-tool").await;

    // Tool events: one start, one result, for the model's call id.
    let tool = agent_payloads(&frames, "tool");
    assert_eq!(tool.len(), 2, "{tool:?} frames: {frames:?}");
    let start = &tool[0]["data"];
    assert_eq!(start["phase"], "start");
    assert_eq!(start["name"], "clock");
    assert_eq!(start["toolCallId"], "call_clock_1");
    assert_eq!(start["args"], json!({"utc_offset_minutes": 60}));
    let result = &tool[1]["data"];
    assert_eq!(result["phase"], "result");
    assert_eq!(result["name"], "clock");
    assert_eq!(result["toolCallId"], "call_clock_1");
    assert_eq!(result["isError"], false, "{result}");
    let out = &result["result"];
    assert_eq!(out["utc_offset_minutes"], 60, "{out}");
    assert!(out["unix_ms"].is_u64(), "{out}");
    assert!(
        out["iso8601"]
            .as_str()
            .is_some_and(|s| s.ends_with("+01:00")),
        "{out}"
    );

    // The text before the call is flushed as a delta before the tool events.
    let pos = |pred: &dyn Fn(&Value) -> bool| frames.iter().position(pred).expect("frame");
    let start_at =
        pos(&|f| f["payload"]["data"]["phase"] == "start" && f["payload"]["stream"] == "tool");
    let result_at =
        pos(&|f| f["payload"]["data"]["phase"] == "result" && f["payload"]["stream"] == "tool");
    assert!(start_at < result_at);
    let before_tool = frames[..start_at]
        .iter()
        .rev()
        .find(|f| f["event"] == "chat")
        .expect("a delta before the tool call");
    assert_eq!(before_tool["payload"]["state"], "delta");
    assert_eq!(
        text_of(&before_tool["payload"]["message"]),
        "Let me check. "
    );
    assert!(
        frames[start_at..result_at]
            .iter()
            .all(|f| f["event"] != "chat"),
        "no text while the tool runs"
    );

    // The run streams on after the tool and ends with one final event. The
    // gateway's answer is all the text the model streamed in the run.
    let chat = chat_payloads(&frames);
    let streamed = "Let me check. It is an hour ahead.";
    let last = check_stream(&chat, "final", streamed);
    assert_eq!(text_of(&last["message"]), streamed);
    assert!(text_of(&last["message"]).ends_with("It is an hour ahead."));
    assert_eq!(last["stopReason"], "stop");
    assert_no_more_chat(&mut c, "oa-tool").await;

    // Session subscribers get the same tool events.
    let st = c
        .event(|e| e["event"] == "session.tool" && e["payload"]["data"]["phase"] == "start")
        .await;
    assert_eq!(st["payload"]["data"]["toolCallId"], "call_clock_1");
    let sr = c
        .event(|e| e["event"] == "session.tool" && e["payload"]["data"]["phase"] == "result")
        .await;
    assert_eq!(sr["payload"]["data"]["result"], *out);

    // The second request carries the call and its result.
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["tools"], bodies[0]["tools"]);
    let msgs = bodies[1]["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(
        msgs[0],
        json!({"role": "user", "content": "what time is it in Paris?"})
    );
    assert_eq!(
        msgs[1],
        json!({"role": "assistant", "content": "Let me check. ", "tool_calls": [{
            "id": "call_clock_1",
            "type": "function",
            "function": {"name": "clock", "arguments": "{\"utc_offset_minutes\":60}"},
        }]})
    );
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], "call_clock_1");
    let content: Value =
        serde_json::from_str(msgs[2]["content"].as_str().expect("tool content")).expect("JSON");
    assert_eq!(content, *out, "the model gets what the tool returned");

    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let hm = h["messages"].as_array().expect("messages");
    assert_eq!(hm.len(), 2, "{h}");
    assert_eq!(text_of(&hm[1]), streamed);

    // The next turn gives the model the whole exchange again: the call,
    // its result under the same id, then the answer.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "sure?", "idempotencyKey": "oa-tool-2"}),
    )
    .await;
    let frames = run_frames(&mut c, "oa-tool-2").await;
    assert_eq!(chat_payloads(&frames).last().unwrap()["state"], "final");
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 3);
    let replay = bodies[2]["messages"].as_array().expect("messages");
    assert_eq!(replay.len(), 5, "{replay:?}");
    assert_eq!(replay[0], msgs[0]);
    assert_eq!(replay[1], msgs[1]);
    assert_eq!(replay[2]["role"], "tool");
    assert_eq!(replay[2]["tool_call_id"], "call_clock_1");
    let replayed: Value =
        serde_json::from_str(replay[2]["content"].as_str().expect("tool content")).expect("JSON");
    assert_eq!(replayed, *out);
    assert_eq!(
        replay[3],
        json!({"role": "assistant", "content": "It is an hour ahead."})
    );
    assert_eq!(replay[4], json!({"role": "user", "content": "sure?"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_end_the_run_with_one_error_event() {
    let fake = FakeOpenAi::start(vec![
        Script::error(
            500,
            "The server had an error while processing your request.",
        ),
        Script::error(401, "Incorrect API key provided"),
        Script::text(&["back ", "online"]),
    ])
    .await;
    let g = gateway(&fake).await;
    let mut c = Client::admin(&g.url()).await;

    // A 500.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "err-500"}),
    )
    .await;
    let frames = run_frames(&mut c, "err-500").await;
    let chat = chat_payloads(&frames);
    assert_eq!(chat.len(), 1, "no text, no deltas: {chat:?}");
    let err = &chat[0];
    assert_eq!(err["state"], "error");
    assert_eq!(err["errorKind"], "unknown");
    let msg = err["errorMessage"].as_str().expect("errorMessage");
    // A short message with a log reference; the provider's status, text and
    // URL stay in the log.
    assert!(msg.starts_with("the model provider failed (ref "), "{msg}");
    assert!(
        !msg.contains("The server had an error while processing your request."),
        "{msg}"
    );
    assert!(!msg.contains(&fake.base_url()), "{msg}");
    let lifecycle = agent_payloads(&frames, "lifecycle");
    assert_eq!(lifecycle.len(), 2, "{lifecycle:?}");
    assert_eq!(lifecycle[1]["data"]["phase"], "error");
    assert_eq!(lifecycle[1]["data"]["error"], msg);
    assert_no_more_chat(&mut c, "err-500").await;
    let w = c.call("agent.wait", json!({"runId": "err-500"})).await;
    assert_eq!(w["status"], "error");
    assert_eq!(w["error"], msg);

    // A 401 says the provider is misconfigured, never the key.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "again", "idempotencyKey": "err-401"}),
    )
    .await;
    let chat = c.chat_run("err-401").await;
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0]["state"], "error");
    let msg = chat[0]["errorMessage"].as_str().expect("errorMessage");
    assert!(msg.contains("not configured correctly (ref "), "{msg}");
    assert!(!msg.contains("Incorrect API key provided"), "{msg}");
    assert!(!msg.contains(API_KEY), "the key leaked: {msg}");
    assert_no_more_chat(&mut c, "err-401").await;

    // Failed runs leave only the user messages in the transcript.
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let roles: Vec<&Value> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["role"])
        .collect();
    assert_eq!(roles, [&json!("user"), &json!("user")], "{h}");

    // The gateway keeps serving, and the next run works.
    let health = c.call("health", json!({})).await;
    assert_eq!(health["ok"], true);
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "still there?", "idempotencyKey": "ok-after"}),
    )
    .await;
    let chat = c.chat_run("ok-after").await;
    let last = check_stream(&chat, "final", "back online");
    assert_eq!(text_of(&last["message"]), "back online");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_is_an_error_that_keeps_the_partial_answer() {
    let fake = FakeOpenAi::start(vec![Script::raw(&[
        &content_chunk("half an "),
        &content_chunk("answer"),
    ])])
    .await;
    let g = gateway(&fake).await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "cut"}),
    )
    .await;
    let chat = c.chat_run("cut").await;
    let last = check_stream(&chat, "error", "half an answer");
    let msg = last["errorMessage"].as_str().expect("errorMessage");
    assert!(msg.starts_with("the model provider failed (ref "), "{msg}");
    assert_no_more_chat(&mut c, "cut").await;
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let msgs = h["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(text_of(&msgs[1]), "half an answer");
    assert_eq!(msgs[1]["stopReason"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_stream_ends_with_one_aborted_event_and_closes_the_model_stream() {
    let fake = FakeOpenAi::start(vec![
        Script::hang(&["Once ", "upon"]),
        Script::text(&["The end."]),
    ])
    .await;
    let mut g = gateway(&fake).await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "tell a story", "idempotencyKey": "oa-abort"}),
    )
    .await;
    // Everything the model sent has reached the client; the stream hangs.
    let partial = c
        .event(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == "oa-abort"
                && e["payload"]["state"] == "delta"
                && text_of(&e["payload"]["message"]) == "Once upon"
        })
        .await;
    assert_eq!(
        partial["payload"]["deltaText"].as_str().map(str::is_empty),
        Some(false)
    );
    assert_eq!(fake.disconnects(), 0, "the model's stream is still open");

    let r = c
        .call(
            "chat.abort",
            json!({"sessionKey": "main", "runId": "oa-abort"}),
        )
        .await;
    assert_eq!(
        r,
        json!({"ok": true, "aborted": true, "runIds": ["oa-abort"]})
    );
    let frames = run_frames(&mut c, "oa-abort").await;
    let chat = chat_payloads(&frames);
    let last = chat.last().expect("terminal");
    assert_eq!(last["state"], "aborted");
    assert_eq!(last["stopReason"], "rpc");
    assert_eq!(text_of(&last["message"]), "Once upon");
    assert!(
        chat[..chat.len() - 1].iter().all(|p| p["state"] == "delta"),
        "{chat:?}"
    );
    let end = agent_payloads(&frames, "lifecycle");
    let end = end.last().expect("lifecycle end");
    assert_eq!(end["data"]["phase"], "end");
    assert_eq!(end["data"]["aborted"], true);
    assert_no_more_chat(&mut c, "oa-abort").await;

    // The provider dropped the HTTP stream.
    within(fake.wait_disconnect()).await;
    assert_eq!(fake.disconnects(), 1);
    assert_eq!(fake.requests().len(), 1);

    let w = c.call("agent.wait", json!({"runId": "oa-abort"})).await;
    assert_eq!(w["aborted"], true, "{w}");
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    assert_eq!(text_of(&h["messages"][1]), "Once upon", "{h}");
    assert_eq!(h["messages"][1]["stopReason"], "aborted");

    // The session goes on; the partial answer is context.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "finish it", "idempotencyKey": "oa-next"}),
    )
    .await;
    let chat = c.chat_run("oa-next").await;
    let last = check_stream(&chat, "final", "The end.");
    assert_eq!(text_of(&last["message"]), "The end.");
    assert_eq!(
        fake.requests()[1]["messages"],
        json!([
            {"role": "user", "content": "tell a story"},
            {"role": "assistant", "content": "Once upon"},
            {"role": "user", "content": "finish it"},
        ])
    );
    g.stop().await;
}
