//! The `openai` provider against the fake OpenAI-compatible server: text
//! streaming, tool-call round trips, round limit, abort, HTTP and stream
//! errors, and the API key header. The provider is driven directly (no
//! gateway); the tool host is a small in-test one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pincer::agent::openai::{OpenAiConfig, OpenAiProvider};
use pincer::agent::{
    AgentError, AgentEvent, ContextMessage, Provider, RunOutcome, RunRequest, ToolHost, ToolSpec,
    Usage,
};
use pincer_tests::fake_openai::{FakeOpenAi, FakeToolCall, Script};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CLOCK_RESULT: &str = r#"{"utc":"2025-01-01T00:00:00Z"}"#;

/// `clock` answers fixed JSON; `broken` always fails.
#[derive(Default)]
struct TestTools {
    invoked: Mutex<Vec<(String, String)>>,
}

impl TestTools {
    fn invoked(&self) -> Vec<(String, String)> {
        self.invoked.lock().expect("lock").clone()
    }
}

impl ToolHost for TestTools {
    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "clock".into(),
                plugin: "clock".into(),
                description: "The current time".into(),
                parameters: json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
            },
            ToolSpec {
                name: "broken".into(),
                plugin: "broken".into(),
                description: "Always fails".into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ]
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        args: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        self.invoked
            .lock()
            .expect("lock")
            .push((name.to_string(), args.to_string()));
        Box::pin(async move {
            match name {
                "clock" => Ok(CLOCK_RESULT.to_string()),
                "broken" => Err("disk on fire".to_string()),
                other => Err(format!("no tool {other}")),
            }
        })
    }
}

/// No tools at all.
struct NoTools;

impl ToolHost for NoTools {
    fn tools(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        _args: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move { Err(format!("no tool {name}")) })
    }
}

/// Guards against a hung test only; nothing is timed.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("the test hung")
}

fn config(fake: &FakeOpenAi) -> OpenAiConfig {
    OpenAiConfig {
        base_url: fake.base_url(),
        model: "test-model".into(),
        api_key: None,
        request_timeout_ms: 30_000,
        ..OpenAiConfig::default()
    }
}

fn provider(fake: &FakeOpenAi, max_rounds: u32) -> OpenAiProvider {
    OpenAiProvider::with_config(config(fake), max_rounds).expect("provider")
}

fn request(message: &str) -> RunRequest {
    RunRequest {
        session_key: "agent:main:test".into(),
        history: Vec::new(),
        message: message.into(),
        model: None,
        operator: true,
        files: Vec::new(),
    }
}

/// Run to the end; returns the outcome and every event.
async fn run(
    provider: &OpenAiProvider,
    req: RunRequest,
    tools: Arc<dyn ToolHost>,
) -> (Result<RunOutcome, AgentError>, Vec<AgentEvent>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = within(provider.run(req, tools, tx, CancellationToken::new())).await;
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (result, events)
}

fn deltas(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streams_text_deltas_and_reports_usage() {
    let fake = FakeOpenAi::start(vec![Script::text_with_usage(
        &["Hel", "lo, ", "world"],
        12,
        3,
    )])
    .await;
    let p = provider(&fake, 8);
    let mut req = request("say hello");
    req.history = vec![
        ContextMessage {
            role: "user".into(),
            text: "earlier".into(),
            ..Default::default()
        },
        ContextMessage {
            role: "assistant".into(),
            text: "noted".into(),
            ..Default::default()
        },
    ];
    let (result, events) = run(&p, req, Arc::new(NoTools)).await;
    let outcome = result.expect("run");
    assert_eq!(deltas(&events), ["Hel", "lo, ", "world"]);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(outcome.text, "Hello, world");
    assert_eq!(outcome.stop_reason.as_deref(), Some("stop"));
    assert_eq!(
        outcome.usage,
        Some(Usage {
            input_tokens: 12,
            output_tokens: 3
        })
    );

    let bodies = fake.requests();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": "say hello"},
        ])
    );
    assert!(body.get("tools").is_none(), "no tools, no `tools`: {body}");
    assert_eq!(fake.recorded()[0].path, "/v1/chat/completions");
}

#[tokio::test]
async fn the_session_model_overrides_the_configured_one() {
    let fake = FakeOpenAi::start(vec![Script::text(&["ok"])]).await;
    let p = provider(&fake, 8);
    let mut req = request("hi");
    req.model = Some("other-model".into());
    let (result, _) = run(&p, req, Arc::new(NoTools)).await;
    assert_eq!(result.expect("run").text, "ok");
    assert_eq!(fake.requests()[0]["model"], "other-model");
    assert_eq!(p.models()[0].id, "test-model");
}

#[tokio::test]
async fn tool_call_round_trip() {
    let fake = FakeOpenAi::start(vec![
        Script::ToolCalls {
            text: vec!["Let me look. ".into()],
            calls: vec![FakeToolCall::new(
                "call_clock_1",
                "clock",
                &["{\"t", "z\":", "\"UTC\"}"],
            )],
            usage: Some(pincer_tests::fake_openai::FakeUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
            }),
        },
        Script::text_with_usage(&["It is ", "midnight."], 20, 7),
    ])
    .await;
    let p = provider(&fake, 8);
    let tools = Arc::new(TestTools::default());
    let (result, events) = run(&p, request("what time is it?"), tools.clone()).await;
    let outcome = result.expect("run");

    assert_eq!(outcome.text, "It is midnight.");
    assert_eq!(outcome.stop_reason.as_deref(), Some("stop"));
    assert_eq!(
        outcome.usage,
        Some(Usage {
            input_tokens: 30,
            output_tokens: 12
        })
    );
    assert_eq!(
        tools.invoked(),
        [("clock".to_string(), "{\"tz\":\"UTC\"}".to_string())]
    );
    assert_eq!(
        events,
        [
            AgentEvent::TextDelta("Let me look. ".into()),
            AgentEvent::ToolStart {
                call_id: "call_clock_1".into(),
                name: "clock".into(),
                args: json!({"tz": "UTC"}),
            },
            AgentEvent::ToolResult {
                call_id: "call_clock_1".into(),
                name: "clock".into(),
                result: serde_json::from_str(CLOCK_RESULT).expect("json"),
                is_error: false,
            },
            AgentEvent::TextDelta("It is ".into()),
            AgentEvent::TextDelta("midnight.".into()),
        ]
    );

    let bodies = fake.requests();
    assert_eq!(bodies.len(), 2);
    let expected_tools = json!([
        {"type": "function", "function": {
            "name": "clock",
            "description": "The current time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        }},
        {"type": "function", "function": {
            "name": "broken",
            "description": "Always fails",
            "parameters": {"type": "object", "properties": {}},
        }},
    ]);
    assert_eq!(bodies[0]["tools"], expected_tools);
    assert_eq!(bodies[1]["tools"], expected_tools);
    assert_eq!(
        bodies[1]["messages"],
        json!([
            {"role": "user", "content": "what time is it?"},
            {"role": "assistant", "content": "Let me look. ", "tool_calls": [{
                "id": "call_clock_1",
                "type": "function",
                "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"},
            }]},
            {"role": "tool", "tool_call_id": "call_clock_1", "content": CLOCK_RESULT},
        ])
    );
}

#[tokio::test]
async fn a_failing_tool_is_reported_and_the_model_still_gets_its_message() {
    let fake = FakeOpenAi::start(vec![
        Script::tool_calls(vec![
            FakeToolCall::new("call_b", "broken", &["{", "}"]),
            FakeToolCall::new("call_c", "clock", &[]),
        ]),
        Script::text(&["Sorry, the disk is on fire."]),
    ])
    .await;
    let p = provider(&fake, 8);
    let tools = Arc::new(TestTools::default());
    let (result, events) = run(&p, request("try both"), tools.clone()).await;
    assert_eq!(result.expect("run").text, "Sorry, the disk is on fire.");
    assert_eq!(
        tools.invoked(),
        [
            ("broken".to_string(), "{}".to_string()),
            ("clock".to_string(), "{}".to_string())
        ]
    );

    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult {
                call_id,
                result,
                is_error,
                ..
            } => Some((call_id.as_str(), result.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2, "{events:?}");
    assert_eq!(results[0].0, "call_b");
    assert!(results[0].2, "the broken tool's result is an error");
    assert!(
        results[0]
            .1
            .as_str()
            .is_some_and(|m| m.contains("disk on fire")),
        "{results:?}"
    );
    assert_eq!(results[1].0, "call_c");
    assert!(!results[1].2);

    let messages = fake.requests()[1]["messages"].clone();
    let tool_messages: Vec<&Value> = messages
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 2, "{messages}");
    assert_eq!(tool_messages[0]["tool_call_id"], "call_b");
    assert!(
        tool_messages[0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("disk on fire")),
        "{messages}"
    );
    assert_eq!(tool_messages[1]["tool_call_id"], "call_c");
    assert_eq!(tool_messages[1]["content"], CLOCK_RESULT);
}

#[tokio::test]
async fn stops_after_max_rounds_when_the_model_keeps_calling_tools() {
    let always_a_tool = || Script::ToolCalls {
        text: vec!["Checking. ".into()],
        calls: vec![FakeToolCall::new("call_x", "clock", &["{}"])],
        usage: None,
    };
    // One more than allowed, to show the provider stops on its own.
    let fake = FakeOpenAi::start((0..4).map(|_| always_a_tool()).collect()).await;
    let p = provider(&fake, 3);
    let tools = Arc::new(TestTools::default());
    let (result, events) = run(&p, request("loop"), tools.clone()).await;
    let outcome = result.expect("run");
    assert_eq!(outcome.stop_reason.as_deref(), Some("tool_rounds"));
    assert_eq!(outcome.text, "Checking. ");
    assert_eq!(fake.requests().len(), 3);
    // Rounds 1 and 2 ran their calls; round 3's call was not run.
    assert_eq!(tools.invoked().len(), 2);
    let starts = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolStart { .. }))
        .count();
    assert_eq!(starts, 2);
    let last_messages = fake.requests()[2]["messages"].clone();
    assert_eq!(
        last_messages.as_array().map(Vec::len),
        Some(5),
        "user + 2 x (assistant, tool): {last_messages}"
    );
}

#[tokio::test]
async fn abort_mid_stream_returns_promptly_and_closes_the_stream() {
    let fake = FakeOpenAi::start(vec![Script::hang(&["Once ", "upon"])]).await;
    let p = Arc::new(provider(&fake, 8));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let task = {
        let (p, cancel) = (p.clone(), cancel.clone());
        tokio::spawn(async move {
            p.run(request("tell a story"), Arc::new(NoTools), tx, cancel)
                .await
        })
    };
    let first = within(rx.recv()).await;
    assert_eq!(first, Some(AgentEvent::TextDelta("Once ".into())));
    assert_eq!(fake.disconnects(), 0, "the stream is still open");
    cancel.cancel();
    let result = within(task).await.expect("run task");
    assert!(matches!(result, Err(AgentError::Aborted)), "{result:?}");
    within(fake.wait_disconnect()).await;
    assert_eq!(fake.disconnects(), 1);
}

#[tokio::test]
async fn a_stalled_stream_fails_after_the_request_timeout() {
    let fake = FakeOpenAi::start(vec![Script::hang(&["partial"])]).await;
    let p = OpenAiProvider::with_config(
        OpenAiConfig {
            request_timeout_ms: 200,
            ..config(&fake)
        },
        8,
    )
    .expect("provider");
    let (result, events) = run(&p, request("hi"), Arc::new(NoTools)).await;
    assert_eq!(deltas(&events), ["partial"]);
    match result {
        Err(AgentError::Provider(m)) => assert!(m.contains("sent nothing for 200 ms"), "{m}"),
        other => panic!("expected a provider error, got {other:?}"),
    }
    within(fake.wait_disconnect()).await;
}

#[tokio::test]
async fn unauthorized_is_a_config_error_about_the_api_key() {
    let fake = FakeOpenAi::start(vec![Script::error(401, "Incorrect API key provided")]).await;
    let p = OpenAiProvider::with_config(
        OpenAiConfig {
            api_key: Some("sk-test-secret".into()),
            ..config(&fake)
        },
        8,
    )
    .expect("provider");
    let (result, events) = run(&p, request("hi"), Arc::new(NoTools)).await;
    assert!(events.is_empty());
    match result {
        Err(AgentError::Config(m)) => {
            assert!(m.contains("API key"), "{m}");
            assert!(m.contains("Incorrect API key provided"), "{m}");
            assert!(m.contains("401"), "{m}");
            assert!(!m.contains("sk-test-secret"), "the key leaked: {m}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let fake = FakeOpenAi::start(vec![Script::Error {
        status: 429,
        message: "Rate limit reached for requests".into(),
        retry_after: Some("7".into()),
    }])
    .await;
    let (result, _) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    let err = result.expect_err("rate limited");
    assert_eq!(err.kind(), "rate_limit");
    match err {
        AgentError::RateLimited(m) => {
            assert!(m.contains("Rate limit reached for requests"), "{m}");
            assert!(m.contains("Retry-After: 7"), "{m}");
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
}

#[tokio::test]
async fn server_error_surfaces_the_openai_message() {
    let fake = FakeOpenAi::start(vec![Script::error(
        500,
        "The server had an error while processing your request.",
    )])
    .await;
    let (result, _) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    match result {
        Err(AgentError::Provider(m)) => {
            assert!(m.contains("500"), "{m}");
            assert!(
                m.contains("The server had an error while processing your request."),
                "{m}"
            );
            assert!(m.contains(&fake.base_url()), "{m}");
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
}

fn content_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

#[tokio::test]
async fn a_malformed_chunk_is_a_clear_provider_error() {
    let fake = FakeOpenAi::start(vec![Script::raw(&[
        &content_chunk("ok"),
        "data: {\"choices\": [tru\n\n",
        "data: [DONE]\n\n",
    ])])
    .await;
    let (result, events) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    assert_eq!(deltas(&events), ["ok"]);
    match result {
        Err(AgentError::Provider(m)) => {
            assert!(m.contains("malformed chunk"), "{m}");
            assert!(m.contains("{\"choices\": [tru"), "{m}");
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_object_in_the_stream_is_a_provider_error() {
    let fake = FakeOpenAi::start(vec![Script::raw(&[
        &content_chunk("par"),
        "data: {\"error\":{\"message\":\"The model is overloaded\",\"type\":\"server_error\"}}\n\n",
    ])])
    .await;
    let (result, _) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    match result {
        Err(AgentError::Provider(m)) => assert!(m.contains("The model is overloaded"), "{m}"),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_cut_before_the_end_is_a_provider_error() {
    let fake = FakeOpenAi::start(vec![Script::raw(&[&content_chunk("half an ans")])]).await;
    let (result, _) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    match result {
        Err(AgentError::Provider(m)) => assert!(m.contains("ended before"), "{m}"),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_provider_error_naming_the_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let p = OpenAiProvider::with_config(
        OpenAiConfig {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            model: "m".into(),
            api_key: Some("sk-never-shown".into()),
            request_timeout_ms: 30_000,
            ..OpenAiConfig::default()
        },
        8,
    )
    .expect("provider");
    let (result, _) = run(&p, request("hi"), Arc::new(NoTools)).await;
    match result {
        Err(AgentError::Provider(m)) => {
            assert!(
                m.contains(&format!("http://127.0.0.1:{port}/v1/chat/completions")),
                "{m}"
            );
            assert!(!m.contains("sk-never-shown"), "{m}");
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_api_key_is_a_bearer_header_only_when_configured() {
    let fake = FakeOpenAi::start(vec![Script::text(&["a"]), Script::text(&["b"])]).await;
    let with_key = OpenAiProvider::with_config(
        OpenAiConfig {
            api_key: Some("sk-test-123".into()),
            ..config(&fake)
        },
        8,
    )
    .expect("provider");
    let (r, _) = run(&with_key, request("hi"), Arc::new(NoTools)).await;
    r.expect("run with key");
    let (r, _) = run(&provider(&fake, 8), request("hi"), Arc::new(NoTools)).await;
    r.expect("run without key");
    let recorded = fake.recorded();
    assert_eq!(
        recorded[0].authorization().as_deref(),
        Some("Bearer sk-test-123")
    );
    assert_eq!(recorded[1].authorization(), None);
}
