//! A Python plugin built from source (`plugins/py-weather`, with
//! `sdk/python/build.sh` and componentize-py) in the real host: it calls an
//! allowed HTTP API (a fake on loopback) through `wasi:http` and caches the
//! answer in key-value. It is called through the echo provider's `/tool`
//! and by the OpenAI-compatible agent (a scripted fake model asking for it);
//! a restarted gateway loads it from the compiled cache; and a new version
//! compiling in the background does not stop another plugin answering.

use pincer::health::HealthConfig;
use pincer::plugins::{PluginSettings, RuntimeConfig};
use pincer_tests::fake_openai::{FakeOpenAi, FakeToolCall, Script};
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::script_guests::{assert_new_version_compiles_while_others_answer, install_guest};
use pincer_tests::{TestRuntime, http_server};
use serde_json::{Value, json};

const WEATHER: &str = r#"{"latitude":52.52,"longitude":13.41,"current_weather":{"temperature":21.5,"windspeed":7.25}}"#;

/// The operator's settings: the tool may reach the loopback fake.
fn weather_settings() -> PluginSettings {
    PluginSettings {
        allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
        ..Default::default()
    }
}

fn args(api: std::net::SocketAddr) -> String {
    json!({"latitude": 52.52, "longitude": 13.41, "api_base": format!("http://{api}")}).to_string()
}

/// Run `/tool py-weather ARGS` as an operator; the tool's result event.
async fn tool_command(c: &mut Client, run: &str, args: &str) -> Value {
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": format!("/tool py-weather {args}"), "idempotencyKey": run}),
    )
    .await;
    let result = c
        .event(|e| {
            e["event"] == "agent"
                && e["payload"]["stream"] == "tool"
                && e["payload"]["data"]["phase"] == "result"
        })
        .await;
    c.chat_run(run).await;
    result["payload"]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_tool_fetches_caches_in_kv_and_restarts_from_the_compile_cache() {
    let (api, mut requests) = http_server(200, WEATHER).await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins.insert("py-weather".into(), weather_settings());
    install_guest(&dir.path().join("plugins"), "py-weather", |m| m);
    let mut g = TestGateway::start_with(opts.clone(), dir).await;
    let info = g.gw().runtime.plugins.info("py-weather").expect("loaded");
    assert_eq!(info.cached, Some(false), "first start compiles: {info:?}");
    let tool = g.gw().runtime.plugins.current("py-weather").unwrap();
    assert_eq!(tool.tool_info().unwrap().name, "py-weather");

    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    let first = tool_command(&mut c, "w-1", &args(api)).await;
    assert_eq!(first["isError"], false, "{first}");
    assert_eq!(first["result"]["temperature_c"], 21.5, "{first}");
    assert_eq!(first["result"]["windspeed_kmh"], 7.25, "{first}");
    assert_eq!(first["result"]["cached"], false, "{first}");
    let req = requests.recv().await.expect("the API was called");
    assert!(
        req.starts_with("GET /v1/forecast?latitude=52.52&longitude=13.41&current_weather=true "),
        "{req}"
    );
    // The answer sits in the plugin's key-value store (JSON).
    let stored = g
        .gw()
        .runtime
        .plugins
        .kv()
        .get("py-weather", "weather/52.52,13.41")
        .unwrap()
        .expect("cached in kv");
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["temperature_c"], 21.5);

    // The second call answers from key-value: the API sees no request.
    let second = tool_command(&mut c, "w-2", &args(api)).await;
    assert_eq!(second["result"]["cached"], true, "{second}");
    assert_eq!(
        second["result"]["fetched_at_ms"],
        first["result"]["fetched_at_ms"]
    );
    assert!(
        requests.try_recv().is_err(),
        "a cached answer called the API"
    );

    // Bad input is a typed, permanent tool error; the plugin keeps serving.
    let bad = tool_command(&mut c, "w-3", r#"{"latitude": 91, "longitude": 0}"#).await;
    assert_eq!(bad["isError"], true, "{bad}");
    assert!(
        bad.to_string().contains("latitude must be a number"),
        "{bad}"
    );

    // A restarted gateway over the same data directory loads the compiled
    // artifact from the cache, and the key-value cache survived too.
    drop(c);
    g.stop().await;
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    let g = TestGateway::start_with(opts, dir).await;
    let info = g.gw().runtime.plugins.info("py-weather").expect("loaded");
    assert_eq!(
        info.cached,
        Some(true),
        "second start loads from the cache: {info:?}"
    );
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    let third = tool_command(&mut c, "w-4", &args(api)).await;
    assert_eq!(third["result"]["cached"], true, "{third}");
    assert!(requests.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_calls_the_python_tool() {
    let (api, mut requests) = http_server(200, WEATHER).await;
    let call_args = args(api);
    let fake = FakeOpenAi::start(vec![
        Script::ToolCalls {
            text: vec![],
            calls: vec![FakeToolCall::new("call_w", "py-weather", &[&call_args])],
            usage: None,
        },
        Script::text(&["It is 21.5 degrees."]),
    ])
    .await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.agent.provider = "openai".into();
    opts.agent.openai.base_url = fake.base_url();
    opts.agent.openai.model = "m".into();
    opts.agent.openai.api_key = Some("sk-test".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins.insert("py-weather".into(), weather_settings());
    install_guest(&dir.path().join("plugins"), "py-weather", |m| m);
    let g = TestGateway::start_with(opts, dir).await;

    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "weather in Berlin?", "idempotencyKey": "a-1"}),
    )
    .await;
    let events = c.chat_run("a-1").await;
    let last = events.last().unwrap();
    assert_eq!(last["state"], "final", "{last}");
    requests.recv().await.expect("the tool called the API");
    // The model's second request carries the tool's answer.
    let bodies = fake.requests();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let tools = bodies[0]["tools"].to_string();
    assert!(tools.contains("py-weather"), "{tools}");
    let tool_msg = bodies[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message")
        .clone();
    assert_eq!(tool_msg["tool_call_id"], "call_w");
    let result: Value = serde_json::from_str(tool_msg["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["temperature_c"], 21.5, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_version_compiles_while_other_plugins_answer() {
    let t = TestRuntime::new(
        RuntimeConfig {
            settings: [("py-weather".to_string(), weather_settings())].into(),
            ..Default::default()
        },
        HealthConfig::default(),
    );
    assert_new_version_compiles_while_others_answer(&t, "py-weather").await;
}
