//! Issue 8, the HTTP surface (A3, A5, A8), against a real gateway on
//! loopback with raw sockets:
//!
//! - A3: `Host` is checked on every request and upgrade (DNS rebinding),
//!   `Origin` on state-changing requests and upgrades, API bodies must be
//!   JSON (a cross-site `text/plain` post is refused), and the token file
//!   generated on first start is created once and reused;
//! - A5: header, idle and body timeouts close slow sockets; over the socket
//!   cap a new connection gets a quick 503, and a freed slot serves again;
//! - A8: `Debug` never prints secrets; provider and plugin error text stays
//!   in the log (under a reference) and out of chats, channel replies and
//!   unauthenticated answers.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use pincer::gateway::{AuthMode, GatewayConfig, launch};
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::SecretSource;
use pincer_tests::fake_openai::{FakeOpenAi, Script};
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::http_surface::{log_lines, logs, read_response, request, wait_closed};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// An open gateway (no token: the loopback default the issue attacked).
async fn open_gateway() -> TestGateway {
    let (opts, dir) = TestGateway::options();
    TestGateway::start_with(opts, dir).await
}

fn post(host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.push_str(body);
    r
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

async fn webhook_count(g: &TestGateway) -> usize {
    g.gw().webhooks.list().expect("list").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_text_plain_post_cannot_register_a_webhook() {
    let (mut opts, dir) = TestGateway::options();
    opts.webhooks.allow_cidrs = vec!["127.0.0.0/8".into()];
    let g = TestGateway::start_with(opts, dir).await;
    let host = g.addr.to_string();
    let body = json!({"url": "http://127.0.0.1:9/stolen-chats", "events": ["*"]}).to_string();

    // What a page on another site can send without a preflight.
    let r = request(
        g.addr,
        &post(
            &host,
            "/v1/webhooks",
            &[
                ("Content-Type", "text/plain"),
                ("Origin", "https://evil.example"),
            ],
            &body,
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "ORIGIN_NOT_ALLOWED");
    // The same without Origin (an older browser, a form): still not JSON.
    let r = request(
        g.addr,
        &post(
            &host,
            "/v1/webhooks",
            &[("Content-Type", "text/plain")],
            &body,
        ),
    )
    .await;
    assert_eq!(r.status, 415, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");
    let r = request(g.addr, &post(&host, "/v1/webhooks", &[], &body)).await;
    assert_eq!(r.status, 415, "no content type: {r:?}");
    // A JSON post from a foreign page is refused too.
    let r = request(
        g.addr,
        &post(
            &host,
            "/v1/webhooks",
            &[
                ("Content-Type", "application/json"),
                ("Origin", "https://evil.example"),
            ],
            &body,
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(webhook_count(&g).await, 0, "nothing was registered");

    // The gateway's own page and non-browser clients still work.
    let own = format!("http://{host}");
    let r = request(
        g.addr,
        &post(
            &host,
            "/v1/webhooks",
            &[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Origin", &own),
            ],
            &body,
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(webhook_count(&g).await, 1);

    // Channel pushes keep their platforms' content types and no Origin.
    let push =
        json!({"conversation": "c1", "sender": "u1", "text": "hello", "id": "m1"}).to_string();
    let r = request(
        g.addr,
        &post(
            &host,
            "/channels/echo/webhook",
            &[("Content-Type", "text/plain")],
            &push,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_and_foreign_upgrades_are_refused() {
    let g = open_gateway().await;
    let port = g.addr.port();
    // A name the attacker points at 127.0.0.1: the browser sends it as Host.
    for host in ["evil.example", &format!("evil.example:{port}")] {
        for path in ["/v1/sessions", "/v1/sessions/main/messages", "/healthz"] {
            let r = request(g.addr, &get(host, path)).await;
            assert_eq!(r.status, 421, "{host} {path}: {r:?}");
            assert_eq!(r.json()["error"]["code"], "HOST_NOT_ALLOWED");
        }
    }
    // The gateway's own names answer.
    for host in [g.addr.to_string(), format!("localhost:{port}")] {
        let r = request(g.addr, &get(&host, "/v1/sessions")).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }

    // WebSocket upgrades: the rebinding page (Host and Origin the attacker's)
    // and a foreign page on the right Host are refused before any frame.
    let cases = [
        (
            format!("evil.example:{port}"),
            format!("http://evil.example:{port}"),
            421,
        ),
        (g.addr.to_string(), "https://evil.example".to_string(), 403),
    ];
    for (host, origin, status) in cases {
        let mut req = g.url().into_client_request().expect("request");
        req.headers_mut()
            .insert("Host", HeaderValue::from_str(&host).expect("host"));
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(&origin).expect("origin"));
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{host} {origin}");
            }
            Err(e) => panic!("{host} {origin}: expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("{host} {origin}: the upgrade was accepted"),
        }
    }
    // A same-origin page still connects.
    let mut req = g.url().into_client_request().expect("request");
    let origin = format!("http://{}", g.addr);
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(&origin).expect("origin"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let first = ws.next().await.expect("a frame").expect("ok");
    assert!(first.to_text().expect("text").contains("connect.challenge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_the_token_file_and_later_starts_reuse_it() {
    let (mut opts, dir) = TestGateway::options();
    opts.token_file = true;
    let path = dir.path().join(pincer::gateway::token_file::FILE_NAME);
    let opts2 = opts.clone();
    let mut g = TestGateway::start_with(opts, dir).await;
    let running = g.running.as_ref().expect("running");
    let t = running.token_file.as_ref().expect("a generated token");
    assert!(t.created);
    assert_eq!(t.path, path);
    let token = std::fs::read_to_string(&path).expect("token file");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No longer open: the API wants the token; WebSocket connect too.
    let host = g.addr.to_string();
    let r = request(g.addr, &get(&host, "/v1/sessions")).await;
    assert_eq!(r.status, 401, "{r:?}");
    let authed = format!(
        "GET /v1/sessions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(request(g.addr, &authed).await.status, 200);
    let mut c = Client::open(&g.url()).await;
    let res = c
        .request(
            "connect",
            pincer_tests::gateway::connect_params(3, 4, None, &["operator.read"]),
        )
        .await;
    assert_eq!(res["ok"], false, "{res}");
    let c = Client::connect(
        &g.url(),
        pincer_tests::gateway::connect_params(3, 4, Some(&token), &["operator.read"]),
    )
    .await;
    assert_eq!(c.hello["type"], "hello-ok");
    drop(c);
    g.stop().await;

    // The next start reuses it and says it did not create it.
    let g2 = pincer_tests::gateway::start(opts2.clone())
        .await
        .expect("restart");
    let t2 = g2.token_file.as_ref().expect("token");
    assert!(!t2.created);
    assert_eq!(t2.token.expose(), token);
    g2.stop().await.expect("stop");

    // An explicit opt-out stays open (loopback only) and writes no file.
    let other = tempfile::tempdir().expect("tempdir");
    let mut open = launch::Options::new(other.path());
    open.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    open.token_file = true;
    open.gateway.no_auth = true;
    let g3 = pincer_tests::gateway::start(open.clone())
        .await
        .expect("open start");
    assert!(g3.token_file.is_none());
    assert!(matches!(g3.gateway.config.auth_mode(), AuthMode::None));
    assert!(
        !other
            .path()
            .join(pincer::gateway::token_file::FILE_NAME)
            .exists()
    );
    g3.stop().await.expect("stop");
    open.gateway.listen = "0.0.0.0:0".parse().expect("addr");
    let err = pincer_tests::gateway::start(open)
        .await
        .expect_err("open beyond loopback");
    assert!(err.to_string().contains("without authentication"), "{err}");
}

/// A gateway with the given HTTP timeouts (ms) and socket cap.
async fn timed_gateway(
    header: u64,
    idle: u64,
    body: u64,
    max_sockets: Option<usize>,
) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.http_header_timeout_ms = header;
    opts.gateway.http_idle_timeout_ms = idle;
    opts.gateway.http_body_timeout_ms = body;
    opts.gateway.max_sockets = max_sockets;
    TestGateway::start_with(opts, dir).await
}

/// Send all but the last of `bytes` one at a time, `gap` apart (so the
/// request is never complete), until the server answers or closes the
/// socket; whether it did.
async fn trickle(sock: &mut TcpStream, bytes: &[u8], gap: Duration) -> bool {
    for b in &bytes[..bytes.len() - 1] {
        if sock.write_all(&[*b]).await.is_err() {
            return true;
        }
        let mut probe = [0u8; 512];
        // The gap is the attack's pace, not a synchronisation: the test
        // watches for the server's close while it waits.
        match tokio::time::timeout(gap, sock.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {
                // An answer (408) before the close: read it, then EOF.
                wait_closed(sock).await;
                return true;
            }
            Err(_) => continue,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    // Headers must arrive within 300 ms of their first byte; this client
    // sends one byte every 100 ms, a request of ~600 bytes (a minute).
    let g = timed_gateway(300, 600_000, 600_000, None).await;
    let mut sock = TcpStream::connect(g.addr).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Padding: {}\r\n\r\n",
        g.addr,
        "a".repeat(540)
    );
    assert!(
        trickle(&mut sock, head.as_bytes(), Duration::from_millis(100)).await,
        "the whole slow header was accepted"
    );
    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(g.addr).await.expect("connect");
    wait_closed(&mut silent).await;
    // And the gateway still answers others.
    let r = request(g.addr, &get(&g.addr.to_string(), "/healthz")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_sockets_are_closed() {
    // Idle timeout 200 ms; header timeout far beyond the hang guard, so a
    // close here can only be the idle timeout.
    let g = timed_gateway(600_000, 200, 600_000, None).await;
    let mut sock = TcpStream::connect(g.addr).await.expect("connect");
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", g.addr);
    sock.write_all(req.as_bytes()).await.expect("send");
    let r = read_response(&mut sock).await.expect("response");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"), "kept alive");
    wait_closed(&mut sock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_cut_off() {
    // Bodies must arrive within 300 ms; this one would take ~40 s.
    let g = timed_gateway(600_000, 600_000, 300, None).await;
    let mut sock = TcpStream::connect(g.addr).await.expect("connect");
    let body = format!(
        "{{\"conversation\":\"c\",\"text\":\"{}\"}}",
        "x".repeat(380)
    );
    let head = format!(
        "POST /channels/echo/webhook HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        g.addr,
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    assert!(
        trickle(&mut sock, body.as_bytes(), Duration::from_millis(100)).await,
        "the whole slow body was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_socket_cap_healthz_gets_a_quick_503_then_a_freed_slot_serves() {
    let g = timed_gateway(600_000, 600_000, 600_000, Some(2)).await;
    let host = g.addr.to_string();
    // Two keep-alive connections hold both slots (each served once, so
    // both are surely accepted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sock = TcpStream::connect(g.addr).await.expect("connect");
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
        sock.write_all(req.as_bytes()).await.expect("send");
        assert_eq!(
            read_response(&mut sock).await.expect("response").status,
            200
        );
        held.push(sock);
    }
    let r = request(g.addr, &get(&host, "/healthz")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "OVERLOADED");

    // One client leaves: once the gateway has closed its side, the slot is
    // free (it is released before the gateway's FIN).
    let mut leaving = held.pop().expect("socket");
    leaving.shutdown().await.expect("half-close");
    wait_closed(&mut leaving).await;
    // The slot is released when the connection's task ends, which races
    // with the FIN the client just saw: ask until it is served (a 503 here
    // is the quick refusal, not a hang; the guard bounds the wait).
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = request(g.addr, &get(&host, "/healthz")).await;
            if r.status != 503 {
                return r;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a freed slot serves /healthz again");
    assert_eq!(r.status, 200, "{r:?}");
    // Operators see the refusals (one slot is free; the previous request's
    // connection may still hold it for a moment, as above).
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = request(g.addr, &get(&host, "/metrics")).await;
            if r.status != 503 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("/metrics is served");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("pincer_http_sockets_refused_total"),
        "{}",
        r.body
    );
    assert!(r.body.contains("pincer_http_sockets_open"), "{}", r.body);
}

#[test]
fn debug_never_prints_secrets() {
    const S: &str = "s3cr3t-value-4242";
    let config = GatewayConfig {
        token: Some(S.into()),
        password: Some(format!("{S}-pw").into()),
        ..GatewayConfig::default()
    };
    let shown = format!("{config:?} {:?}", config.auth_mode());
    assert!(!shown.contains(S), "{shown}");
    let pw = GatewayConfig {
        password: Some(S.into()),
        ..GatewayConfig::default()
    };
    assert!(!format!("{:?}", pw.auth_mode()).contains(S));

    let mut secrets = BTreeMap::new();
    secrets.insert("bot_token".to_string(), SecretSource::Value(S.into()));
    secrets.insert(
        "from_env".to_string(),
        SecretSource::Value("env:BOT_TOKEN".into()),
    );
    let settings = PluginSettings {
        secrets,
        ..PluginSettings::default()
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains(S), "{shown}");
    assert!(
        shown.contains("env:BOT_TOKEN"),
        "references are not secret: {shown}"
    );

    // The whole configuration file, as `?config` would log it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pincer.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\ntoken = \"{S}\"\n[plugins.telegram]\nsecrets = {{ bot_token = \"{S}\" }}\n[agent.openai]\napi_key = \"{S}\"\n"
        ),
    )
    .expect("write config");
    let file = pincer::config::FileConfig::load(&path).expect("config");
    assert_eq!(file.gateway.token.as_ref().map(|t| t.expose()), Some(S));
    let shown = format!("{file:?}");
    assert!(!shown.contains(S), "{shown}");

    let ep = pincer::store::WebhookEndpoint {
        id: "ep_1".into(),
        url: "https://example.com/hook".into(),
        description: None,
        events: vec!["*".into()],
        enabled: true,
        created_ms: 0,
        updated_ms: 0,
        secret: format!("whsec_{S}").into(),
        previous_secret: Some(format!("whsec_{S}old").into()),
        previous_secret_expires_ms: Some(1),
        failing_since_ms: None,
        disabled_reason: None,
    };
    let with = pincer::webhooks::WithSecret {
        endpoint: ep.clone(),
        secret: format!("whsec_{S}").into(),
    };
    let shown = format!("{ep:?} {with:?}");
    assert!(!shown.contains(S), "{shown}");
    // What the API shows once is still the real secret.
    assert_eq!(with.to_json()["secret"], format!("whsec_{S}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_text_stays_in_the_log() {
    const MARKER: &str = "PROVIDER-DETAIL-7d1f";
    let _ = logs();
    let fake = FakeOpenAi::start(vec![
        Script::error(500, &format!("{MARKER} internal trace")),
        Script::error(500, &format!("{MARKER} internal trace")),
    ])
    .await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.agent.provider = "openai".into();
    opts.agent.openai.base_url = fake.base_url();
    opts.agent.openai.api_key = Some("sk-test".into());
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;

    // An operator's chat.
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "fail-1"}),
    )
    .await;
    let chat = c.chat_run("fail-1").await;
    let err = chat.last().expect("terminal event");
    assert_eq!(err["state"], "error");
    let msg = err["errorMessage"].as_str().expect("errorMessage");
    assert_no_detail(msg, MARKER, &fake.base_url());
    let reference = reference_of(msg);
    let w = c.call("agent.wait", json!({"runId": "fail-1"})).await;
    assert_no_detail(&w.to_string(), MARKER, &fake.base_url());
    assert_logged(&reference, MARKER);

    // A channel sender.
    let host = g.addr.to_string();
    let push =
        json!({"conversation": "c-ext", "sender": "stranger", "text": "hello", "id": "m-ext"})
            .to_string();
    let r = request(
        g.addr,
        &post(
            &host,
            "/channels/echo/webhook",
            &[("Content-Type", "application/json")],
            &push,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ev = c
        .event(|e| {
            e["event"] == "chat"
                && e["payload"]["state"] == "error"
                && e["payload"]["sessionKey"] != "agent:main:main"
        })
        .await;
    let run_id = ev["payload"]["runId"].as_str().expect("runId").to_string();
    let msg = ev["payload"]["errorMessage"]
        .as_str()
        .expect("errorMessage");
    assert_no_detail(msg, MARKER, &fake.base_url());
    // agent.wait answers once the run, its reply included, has ended.
    let w = c
        .call("agent.wait", json!({"runId": run_id, "timeoutMs": 30_000}))
        .await;
    assert_eq!(w["status"], "error", "{w}");
    // The reply is committed to the durable outbox when the run ends and
    // delivered by the channel's worker just after.
    let kv = g.gw().runtime.plugins.kv();
    let mut sent = Vec::new();
    for _ in 0..1500 {
        sent = kv.list_keys("echo", "sent/", 100).expect("keys");
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!sent.is_empty(), "the sender got a reply");
    for key in sent {
        let v: Value = serde_json::from_slice(&kv.get("echo", &key).expect("get").expect("value"))
            .expect("JSON");
        let text = v["text"].as_str().expect("text");
        assert_no_detail(text, MARKER, &fake.base_url());
        assert!(text.contains("(ref "), "{text}");
        assert_logged(&reference_of(text), MARKER);
    }
}

fn assert_no_detail(shown: &str, marker: &str, url: &str) {
    assert!(!shown.contains(marker), "provider text leaked: {shown}");
    assert!(!shown.contains(url), "provider URL leaked: {shown}");
    assert!(!shown.contains("500"), "provider status leaked: {shown}");
}

/// The reference id in `… (ref <id>)`.
fn reference_of(msg: &str) -> String {
    let start = msg
        .find("(ref ")
        .unwrap_or_else(|| panic!("no reference in {msg:?}"))
        + 5;
    msg[start..].trim_end_matches(')').to_string()
}

/// The log has a line with the reference and the detail.
fn assert_logged(reference: &str, detail: &str) {
    let lines = log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(reference) && l.contains(detail)),
        "no log line with {reference} and {detail}: {:#?}",
        lines
            .iter()
            .filter(|l| l.contains(reference))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_on_unauthenticated_routes_are_generic() {
    let _ = logs();
    let (opts, dir) = TestGateway::options();
    // testchan is a poll channel: a push to it fails inside the plugin
    // (`unsupported`), which is a refusal (400: the platform should not
    // retry it), with the same generic shape as any internal error.
    std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
    pincer_tests::install_plugin(&opts.plugins_dir, "testchan", "testchan");
    let g = TestGateway::start_with(opts, dir).await;
    let host = g.addr.to_string();
    let r = request(
        g.addr,
        &post(
            &host,
            "/channels/testchan/webhook",
            &[("Content-Type", "application/json")],
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    let e = &v["error"];
    assert_eq!(e["code"], "REFUSED", "{v}");
    let reference = e["ref"].as_str().expect("a reference").to_string();
    let keys: Vec<&String> = e.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "code, message and ref only: {v}");
    for leak in ["handle-webhook", "unsupported", "testchan", "wasm"] {
        assert!(
            !r.body.to_lowercase().contains(leak),
            "{leak} leaked: {}",
            r.body
        );
    }
    let lines = log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&reference) && l.contains("testchan")),
        "the detail is logged under {reference}"
    );
    // Unknown channels: a short 404.
    let r = request(g.addr, &post(&host, "/channels/nope/webhook", &[], "{}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "no such channel");
}
