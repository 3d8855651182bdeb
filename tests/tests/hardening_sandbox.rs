//! What a plugin may reach and spend (issue 8, B9, B10, B15), with the
//! hostile plugin built from source and loopback servers:
//!
//! - secrets are filled only where bound (hosts, places); anywhere else the
//!   request is refused and never sent; echoed values come back scrubbed;
//! - a manifest's limits are only a request: host-wide ceilings decide;
//! - outbound requests are rate-limited, response bodies capped, and
//!   connections reused.

use std::collections::BTreeMap;
use std::time::Instant;

use pincer::health::HealthConfig;
use pincer::plugins::manifest::{BoundSecret, SecretSource};
use pincer::plugins::{
    CallError, HttpOverrides, Limits, PluginError, PluginSettings, RuntimeConfig, SandboxConfig,
};
use pincer_tests::sandbox::EchoServer;
use pincer_tests::{TestRuntime, install_plugin};
use serde_json::{Value, json};

const SECRET: &str = "S3cr3t:Value_42";

/// A runtime with the hostile plugin under `manifest` (its TOML) and the
/// operator's `settings` for it; loopback is reachable.
async fn runtime(manifest: &str, settings: PluginSettings, sandbox: SandboxConfig) -> TestRuntime {
    let t = TestRuntime::new(
        RuntimeConfig {
            settings: BTreeMap::from([("hostile".to_string(), settings)]),
            allow_cidrs: pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap(),
            sandbox,
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    std::fs::write(t.plugins_dir().join("hostile.toml"), manifest).unwrap();
    let failures = t.runtime.load_dir().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    t
}

fn manifest(extra: &str) -> String {
    format!(
        r#"name = "hostile"
kind = "tool"
allowed_hosts = ["http://127.0.0.1:*"]
{extra}
[limits]
call_timeout_ms = 30000
"#
    )
}

fn grant(value: &str) -> BTreeMap<String, SecretSource> {
    BTreeMap::from([("tok".to_string(), SecretSource::Value(value.into()))])
}

async fn call(t: &TestRuntime, args: Value) -> Result<Value, CallError> {
    let out = t
        .runtime
        .plugins
        .invoke_tool("hostile", &args.to_string())
        .await?;
    Ok(serde_json::from_str(&out).unwrap())
}

/// The permanent error's message, or a panic with what came instead.
fn refusal(r: Result<Value, CallError>) -> String {
    match r {
        Err(CallError::Plugin {
            error: PluginError::Permanent { message },
            ..
        }) => message,
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
}

fn nobody_saw_the_secret(servers: &[&EchoServer], legit: usize) {
    let with_value = servers
        .iter()
        .flat_map(|s| s.requests())
        .filter(|r| r.contains(SECRET))
        .count();
    assert_eq!(
        with_value, legit,
        "the secret went out in a refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_go_only_where_bound_and_come_back_scrubbed() {
    let a = EchoServer::start().await;
    let b = EchoServer::start().await;
    let t = runtime(
        &manifest(&format!(
            r#"[secrets.tok]
hosts = ["http://127.0.0.1:{}"]
in = ["path", "header:authorization", "body:secret_token"]"#,
            a.addr.port()
        )),
        PluginSettings {
            secrets: grant(SECRET),
            ..Default::default()
        },
        SandboxConfig::default(),
    )
    .await;

    // The legitimate uses: path, the bound header, the bound JSON field.
    let out = call(
        &t,
        json!({"mode": "request", "url": a.url("/bot{{secret:tok}}/getMe"),
               "headers": [["authorization", "Bearer {{secret:tok}}"]]}),
    )
    .await
    .unwrap();
    let seen = a.requests().pop().unwrap();
    assert!(
        seen.starts_with(&format!("GET /bot{SECRET}/getMe ")),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("authorization: Bearer {SECRET}")),
        "{seen}"
    );
    // The server echoed everything; the guest sees only placeholders.
    let body = out["body"].as_str().unwrap();
    assert!(!body.contains(SECRET), "echo reached the guest: {body}");
    assert!(body.contains("GET /bot{{secret:tok}}/getMe "), "{body}");
    assert_eq!(
        out["headers"]["x-echo-authorization"],
        "Bearer {{secret:tok}}"
    );

    let out = call(
        &t,
        json!({"mode": "request", "method": "POST", "url": a.url("/setWebhook"),
               "headers": [["content-type", "application/json"]],
               "body": json!({"url": "https://x", "secret_token": "{{secret:tok}}"}).to_string()}),
    )
    .await
    .unwrap();
    let seen = a.requests().pop().unwrap();
    assert!(
        seen.contains(&format!(r#""secret_token":"{SECRET}""#)),
        "{seen}"
    );
    assert!(!out["body"].as_str().unwrap().contains(SECRET));

    // Everywhere else: refused, naming the secret and the place, never sent.
    let cases = [
        (
            json!({"url": a.url("/x?token={{secret:tok}}")}),
            "URL query",
        ),
        (
            json!({"url": a.url("/x"), "headers": [["cookie", "s={{secret:tok}}"]]}),
            "header `cookie`",
        ),
        (
            json!({"url": a.url("/x"), "headers": [["user-agent", "{{secret:tok}}"]]}),
            "header `user-agent`",
        ),
        (
            json!({"url": a.url("/x"), "headers": [["x-anything", "{{secret:tok}}"]]}),
            "header `x-anything`",
        ),
        (
            json!({"url": a.url("/x"), "method": "POST",
                   "body": json!({"text": "{{secret:tok}}"}).to_string()}),
            "body field `text`",
        ),
        (
            json!({"url": a.url("/x"), "method": "POST", "body": "t={{secret:tok}}"}),
            "body outside a JSON string field",
        ),
        // A second allowed host is not the secret's host.
        (
            json!({"url": b.url("/bot{{secret:tok}}/getMe")}),
            "URL path",
        ),
    ];
    let before = a.requests().len();
    for (mut args, place) in cases.clone() {
        args["mode"] = json!("request");
        let message = refusal(call(&t, args.clone()).await);
        assert!(
            message.contains("secret `tok`") && message.contains(place),
            "{args}: {message}"
        );
    }
    assert_eq!(a.requests().len(), before, "a refused request was sent");
    assert_eq!(b.requests().len(), 0, "a refused request was sent");
    nobody_saw_the_secret(&[&a, &b], 2);

    let info = t.runtime.plugins.info("hostile").unwrap();
    let outbound = info.outbound.unwrap();
    assert_eq!(outbound.secrets_refused, cases.len() as u64, "{outbound:?}");
}

/// The list form (and a secret the manifest does not declare) may go only
/// in the URL path and the `authorization` header of the manifest's own
/// hosts; the operator's binding narrows further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_form_is_narrow_and_the_operator_narrows_more() {
    let a = EchoServer::start().await;
    let t = runtime(
        &format!(
            r#"name = "hostile"
kind = "tool"
allowed_hosts = ["http://127.0.0.1:{}"]
secrets = ["tok"]
"#,
            a.addr.port()
        ),
        PluginSettings {
            // The operator widens the hosts; the secret does not follow.
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            secrets: grant(SECRET),
            ..Default::default()
        },
        SandboxConfig::default(),
    )
    .await;
    let b = EchoServer::start().await;
    call(
        &t,
        json!({"mode": "request", "url": a.url("/p/{{secret:tok}}"),
               "headers": [["authorization", "{{secret:tok}}"]]}),
    )
    .await
    .unwrap();
    for args in [
        json!({"mode": "request", "url": a.url("/x"), "headers": [["x-api-key", "{{secret:tok}}"]]}),
        json!({"mode": "request", "url": a.url("/x"), "method": "POST",
               "body": json!({"secret_token": "{{secret:tok}}"}).to_string()}),
        json!({"mode": "request", "url": b.url("/p/{{secret:tok}}")}),
    ] {
        let message = refusal(call(&t, args.clone()).await);
        assert!(message.contains("secret `tok`"), "{args}: {message}");
    }
    nobody_saw_the_secret(&[&a, &b], 1);
    assert_eq!(b.requests().len(), 0);

    // The operator's table form narrows the manifest's binding to one header.
    let t = runtime(
        &manifest(r#"secrets = ["tok"]"#),
        PluginSettings {
            secrets: BTreeMap::from([(
                "tok".to_string(),
                SecretSource::Bound(BoundSecret {
                    value: SECRET.into(),
                    hosts: None,
                    places: Some(vec!["header:authorization".into()]),
                }),
            )]),
            ..Default::default()
        },
        SandboxConfig::default(),
    )
    .await;
    let message = refusal(
        call(
            &t,
            json!({"mode": "request", "url": a.url("/p/{{secret:tok}}")}),
        )
        .await,
    );
    assert!(message.contains("URL path"), "{message}");
    call(
        &t,
        json!({"mode": "request", "url": a.url("/x"),
               "headers": [["authorization", "{{secret:tok}}"]]}),
    )
    .await
    .unwrap();
    nobody_saw_the_secret(&[&a, &b], 2);
}

/// A manifest asking for 1 GiB and an hour gets the host-wide ceilings, and
/// a memory bomb stops at the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_limits_are_capped_by_the_host_ceilings() {
    let greedy = r#"name = "hostile"
kind = "tool"
[limits]
memory_mb = 1024
call_timeout_ms = 3600000
cpu_ms = 3600000
poll_wait_ms = 3600000
"#;
    let t = runtime(greedy, PluginSettings::default(), SandboxConfig::default()).await;
    let info = t.runtime.plugins.info("hostile").unwrap();
    assert_eq!(
        info.limits,
        Some(Limits {
            memory_mb: 128,
            call_timeout_ms: 60_000,
            cpu_ms: 30_000,
            poll_wait_ms: 60_000,
        })
    );
    let e = call(&t, json!({"mode": "membomb"})).await.unwrap_err();
    assert!(
        matches!(e, CallError::MemoryLimit { mb: 128, .. }),
        "memory bomb: {e}"
    );

    // The operator may raise a limit up to the (configured) ceiling only.
    let t = runtime(
        greedy,
        PluginSettings {
            limits: Some(Limits {
                memory_mb: 4096,
                call_timeout_ms: 5_000,
                ..Limits::default()
            }),
            ..Default::default()
        },
        SandboxConfig {
            memory_mb: 48,
            ..Default::default()
        },
    )
    .await;
    let limits = t.runtime.plugins.info("hostile").unwrap().limits.unwrap();
    assert_eq!((limits.memory_mb, limits.call_timeout_ms), (48, 5_000));
    let e = call(&t, json!({"mode": "membomb"})).await.unwrap_err();
    assert!(
        matches!(e, CallError::MemoryLimit { mb: 48, .. }),
        "memory bomb: {e}"
    );
}

/// 1,000 requests in one call: the default budget lets through at most the
/// burst plus the refill, refuses the rest as `rate-limited`, and the
/// server saw only what got through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_are_rate_limited() {
    let a = EchoServer::start().await;
    let t = runtime(
        &manifest(""),
        PluginSettings::default(),
        SandboxConfig::default(),
    )
    .await;
    let started = Instant::now();
    let out = call(
        &t,
        json!({"mode": "flood", "url": a.url("/x"), "count": 1000}),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = out["ok"].as_u64().unwrap();
    let limited = out["rate_limited"].as_u64().unwrap();
    assert_eq!(out["other"], 0, "{out}");
    assert_eq!(ok + limited, 1000);
    // Burst 40, 20 per second, over however long the call took.
    assert!(
        (ok as f64) <= 40.0 + 20.0 * elapsed + 1.0,
        "{ok} in {elapsed} s"
    );
    assert_eq!(a.requests().len() as u64, ok);
    let first = out["first_refusal"].as_str().unwrap();
    assert!(
        first.starts_with("rate limited (retry after")
            && first.contains("may make 20 outbound requests per second (burst 40)"),
        "{first}"
    );
    let stats = t.runtime.plugins.info("hostile").unwrap().outbound.unwrap();
    assert_eq!((stats.requests, stats.rate_limited), (ok, limited));

    // The operator's budget for this plugin: 3 requests, no refill.
    let t = runtime(
        &manifest(""),
        PluginSettings {
            http: Some(HttpOverrides {
                rate_per_sec: Some(0),
                burst: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        },
        SandboxConfig::default(),
    )
    .await;
    let before = a.requests().len();
    let out = call(
        &t,
        json!({"mode": "flood", "url": a.url("/x"), "count": 1000}),
    )
    .await
    .unwrap();
    assert_eq!(
        (out["ok"].as_u64(), out["rate_limited"].as_u64()),
        (Some(3), Some(997))
    );
    assert_eq!(a.requests().len() - before, 3);
}

/// A response body over the cap fails the request cleanly (with or without
/// a content-length), and the plugin keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_size_cap_fail_cleanly() {
    let a = EchoServer::start().await;
    let t = runtime(
        &manifest(""),
        PluginSettings {
            http: Some(HttpOverrides {
                max_response_bytes: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        },
        SandboxConfig::default(),
    )
    .await;
    let fits = call(&t, json!({"mode": "request", "url": a.url("/big/1000")}))
        .await
        .unwrap();
    assert_eq!(fits["body"].as_str().unwrap().len(), 1000);
    for path in ["/big/1001", "/bigclose/5000"] {
        let message = refusal(call(&t, json!({"mode": "request", "url": a.url(path)})).await);
        assert!(message.contains("limit of 1000 bytes"), "{path}: {message}");
    }
    let stats = t.runtime.plugins.info("hostile").unwrap().outbound.unwrap();
    assert_eq!(stats.responses_too_large, 2);

    // The default cap is 10 MiB.
    let t = runtime(
        &manifest(""),
        PluginSettings::default(),
        SandboxConfig::default(),
    )
    .await;
    let message = refusal(
        call(
            &t,
            json!({"mode": "request", "url": a.url(&format!("/big/{}", (10 << 20) + 1))}),
        )
        .await,
    );
    assert!(message.contains("limit of 10485760 bytes"), "{message}");
    assert!(call(&t, json!({"mode": "ok"})).await.is_ok());
}

/// Sequential requests to one host share one keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused() {
    let a = EchoServer::start().await;
    let t = runtime(
        &manifest(""),
        PluginSettings::default(),
        SandboxConfig::default(),
    )
    .await;
    let out = call(
        &t,
        json!({"mode": "flood", "url": a.url("/x"), "count": 10}),
    )
    .await
    .unwrap();
    assert_eq!(out["ok"], 10, "{out}");
    assert_eq!(a.requests().len(), 10);
    assert_eq!(a.connections(), 1);
    let stats = t.runtime.plugins.info("hostile").unwrap().outbound.unwrap();
    assert_eq!((stats.connections_opened, stats.connections_reused), (1, 9));
}

/// Through a real gateway: the `[sandbox]` ceilings and a plugin's outbound
/// budget come from the gateway options, and `/v1/plugins` and `/metrics`
/// show the limits in force and the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_shows_limits_and_outbound_refusals() {
    let a = EchoServer::start().await;
    let (mut opts, dir) = pincer_tests::gateway::TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.sandbox.memory_mb = 48;
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins.insert(
        "http-fetch".into(),
        PluginSettings {
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            limits: Some(Limits {
                memory_mb: 512,
                ..Limits::default()
            }),
            http: Some(HttpOverrides {
                rate_per_sec: Some(0),
                burst: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let g = pincer_tests::gateway::TestGateway::start_with(opts, dir).await;
    let plugins = &g.gw().runtime.plugins;
    let args = json!({ "url": a.url("/x") }).to_string();
    plugins.invoke_tool("http-fetch", &args).await.unwrap();
    let e = plugins.invoke_tool("http-fetch", &args).await.unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Plugin {
                error: PluginError::RateLimited { .. },
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(a.requests().len(), 1);

    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("http://{}{path}", g.addr))
            .bearer_auth("secret")
            .send()
    };
    let list: Value = get("/v1/plugins").await.unwrap().json().await.unwrap();
    let fetch = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http-fetch")
        .unwrap()
        .clone();
    assert_eq!(fetch["limits"]["memory_mb"], 48, "{fetch}");
    assert_eq!(fetch["outbound"]["requests"], 1, "{fetch}");
    assert_eq!(fetch["outbound"]["rate_limited"], 1, "{fetch}");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("pincer_plugin_http_rate_limited_total{plugin=\"http-fetch\"} 1"),
        "{metrics}"
    );
}
