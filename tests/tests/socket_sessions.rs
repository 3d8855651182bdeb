//! Host-managed WebSocket sessions and timers (`pincer:socket@0.1.0`)
//! through the real gateway: the `ws-probe` socket channel built from source
//! connects to a local tokio-tungstenite server started by each test
//! ([`pincer_tests::ws_server`]). Messages arriving as frames reach the
//! echo agent through the durable inbox and the answers leave as frames;
//! order, secrets, allowed hosts, frame limits, close codes, restarts, hot
//! reloads, stopping and timers are checked at the server.

use std::collections::BTreeSet;

use pincer::channels::QueueSettings;
use pincer::channels::access::DmPolicy;
use pincer::gateway::launch::Options;
use pincer::plugins::manifest::{BoundSecret, SecretSource};
use pincer::plugins::{PluginSettings, SocketOverrides};
use pincer_tests::gateway::TestGateway;
use pincer_tests::install_plugin;
use pincer_tests::ws_server::{Seen, WsServer};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const PLUGIN: &str = "ws-probe";
const SECRET: &str = "tok-SECRET-4711";

/// Gateway options with `ws-probe` connecting to `server` (its `ws://`
/// host allowed by the operator), open to anyone, replies sent at once;
/// `config` adds plugin config entries and `tweak` changes the rest.
fn options(
    server: &WsServer,
    config: &[(&str, &str)],
    tweak: impl FnOnce(&mut PluginSettings),
) -> (Options, tempfile::TempDir) {
    let (mut opts, dir) = TestGateway::options();
    std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
    install_plugin(&opts.plugins_dir, PLUGIN, PLUGIN);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("cidrs");
    opts.gateway.runs.sender_per_minute = u32::MAX;
    opts.gateway.runs.sender_burst = u32::MAX;
    let mut settings = PluginSettings {
        dm_policy: DmPolicy::Open,
        allowed_hosts: Some(vec![format!("ws://127.0.0.1:{}", server.addr.port())]),
        queue: QueueSettings {
            send_interval_ms: 1,
            send_burst: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    settings
        .config
        .insert("url".into(), server.url("/gateway?v=1"));
    for (k, v) in config {
        settings.config.insert(k.to_string(), v.to_string());
    }
    tweak(&mut settings);
    opts.plugins.insert(PLUGIN.into(), settings);
    (opts, dir)
}

/// The first connection's number, once the server accepted it.
async fn accepted(server: &mut WsServer) -> (usize, Vec<(String, String)>) {
    loop {
        if let Seen::Accepted { conn, headers } = server.next().await {
            return (conn, headers);
        }
    }
}

fn message(id: &str, conversation: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "conversation": conversation, "text": text})
}

fn kv_string(gw: &TestGateway, key: &str) -> Option<String> {
    gw.gw()
        .runtime
        .plugins
        .kv()
        .get(PLUGIN, key)
        .expect("kv get")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_a_socket_is_answered_as_a_frame() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[], |_| {});
    let mut gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    let hello = server.json(|v| v["type"] == "hello").await;
    assert_eq!(hello["build"], "pincer-plugin-ws-probe");

    server.send_json(conn, &message("m1", "ws", "hello over a socket"));
    server
        .json(|v| v["type"] == "seen" && v["id"] == "m1")
        .await;
    let reply = server.json(|v| v["type"] == "reply").await;
    assert_eq!(reply["conversation"], "ws");
    let text = reply["text"].as_str().expect("reply text");
    assert!(text.contains("hello over a socket"), "{reply}");

    // The host answers pings itself.
    server.send(conn, Message::Ping(b"are you there".to_vec().into()));
    loop {
        if let Seen::Pong { payload, .. } = server.next().await {
            assert_eq!(payload, b"are you there");
            break;
        }
    }

    // The session shows in the channel's status.
    let health = gw.gw().runtime.health.snapshot().await;
    let probe = health
        .iter()
        .find(|h| h.name == PLUGIN)
        .expect("ws-probe in the status");
    let status = serde_json::to_value(probe).expect("json");
    let sessions = status["sockets"].as_array().expect("sockets in the status");
    assert_eq!(sessions.len(), 1, "{status}");
    let s = &sessions[0];
    assert_eq!(s["name"], "probe");
    assert_eq!(s["state"], "open");
    assert_eq!(s["reconnects"], 0);
    assert!(s["openedAt"].as_u64().unwrap() > 0, "{s}");
    assert!(s["lastFrameAt"].as_u64().unwrap() >= s["openedAt"].as_u64().unwrap());
    // In: the message and the ping. Out: hello, seen, reply.
    assert!(s["framesIn"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["framesOut"].as_u64().unwrap() >= 3, "{s}");
    assert!(probe.last_contact_at.is_some());

    // And in `/v1/channels` (as in `channels.status`).
    let channels: Value = reqwest::get(format!("http://{}/v1/channels", gw.addr))
        .await
        .expect("/v1/channels")
        .json()
        .await
        .expect("json");
    let text = channels.to_string();
    assert!(
        text.contains(r#""sockets":[{"#) && text.contains(r#""name":"probe""#),
        "{text}"
    );

    // And in /metrics.
    let metrics = reqwest::get(format!("http://{}/metrics", gw.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("pincer_socket_sessions{channel=\"ws-probe\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pincer_socket_frames_in_total{channel=\"ws-probe\"}"));
    assert_eq!(server.accepts(), 1);

    // A graceful shutdown closes the session with 1001.
    gw.stop().await;
    let (code, reason) = server.closed().await;
    assert_eq!(code, Some(1001));
    assert_eq!(reason, "going away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_frames_keep_their_order_and_each_is_answered_once() {
    const N: usize = 200;
    let mut server = WsServer::start().await;
    // The probe sends a `seen` and a reply per message: more than the
    // default 120 frames per minute.
    let (opts, dir) = options(&server, &[], |s| {
        s.socket = Some(SocketOverrides {
            frames_per_window: Some(10_000),
            ..Default::default()
        });
    });
    let _gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    for i in 0..N {
        server.send_json(
            conn,
            &message(
                &format!("f{i:03}"),
                &format!("c{i:03}"),
                &format!("token{i:03}"),
            ),
        );
    }
    let mut seen = Vec::new();
    let mut replies = Vec::new();
    while seen.len() < N || replies.len() < N {
        let Seen::Text { text, .. } = server.next().await else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).expect("json frame");
        match v["type"].as_str() {
            Some("seen") => seen.push(v["id"].as_str().unwrap().to_string()),
            Some("reply") => replies.push((
                v["conversation"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
            )),
            _ => {}
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("f{i:03}")).collect();
    assert_eq!(seen, expected, "the plugin saw the frames out of order");
    let answered: BTreeSet<String> = replies
        .iter()
        .map(|(c, t)| {
            assert!(t.contains(&format!("token{}", &c[1..])), "{c}: {t}");
            c.clone()
        })
        .collect();
    assert_eq!(answered.len(), N, "each conversation answered once");
    assert_eq!(replies.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_filled_where_bound_and_scrubbed_from_frames() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(
        &server,
        &[
            ("identify", "true"),
            ("auth_header", "Bearer {{secret:token}}"),
        ],
        |s| {
            s.secrets.insert(
                "token".into(),
                SecretSource::Bound(BoundSecret {
                    value: SECRET.into(),
                    hosts: None,
                    places: Some(vec!["body:token".into(), "header:authorization".into()]),
                }),
            );
        },
    );
    let gw = TestGateway::start_with(opts, dir).await;
    let (conn, headers) = accepted(&mut server).await;
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "authorization" && *v == format!("Bearer {SECRET}")),
        "{headers:?}"
    );
    let identify = server.json(|v| v["type"] == "identify").await;
    assert_eq!(identify["token"], SECRET, "the server gets the real value");

    server.send_json(
        conn,
        &message("s1", "ws", &format!("your token is {SECRET}!")),
    );
    server
        .json(|v| v["type"] == "seen" && v["id"] == "s1")
        .await;
    let seen_by_plugin = kv_string(&gw, "last_text").expect("last_text");
    assert_eq!(seen_by_plugin, "your token is {{secret:token}}!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_not_allowed_and_ws_without_the_operator_are_refused() {
    let server = WsServer::start().await;
    let other = WsServer::start().await;
    // A port the operator did not list.
    let (opts, dir) = options(&server, &[("url", &other.url("/"))], |_| {});
    let mut gw = TestGateway::start_with(opts, dir).await;
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    // On PostgreSQL (a cluster of one) the start that opens the session
    // comes once the account's lease is held, after the gateway started.
    let error = until_error(&runner, "is not an allowed host").await;
    assert!(error.contains("is not an allowed host"), "{error}");
    gw.stop().await;

    // `ws://` listed only by the manifest (`ws://127.0.0.1:*`) is not enough.
    let (opts, dir) = options(&server, &[], |s| s.allowed_hosts = None);
    let mut gw = TestGateway::start_with(opts, dir).await;
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    let error = until_error(&runner, "ws:// needs the operator's allowed_hosts").await;
    assert!(
        error.contains("ws:// needs the operator's allowed_hosts"),
        "{error}"
    );
    gw.stop().await;

    // Neither is a `wss://` host nobody listed.
    let (opts, dir) = options(&server, &[("url", "wss://example.com/gateway")], |_| {});
    let gw = TestGateway::start_with(opts, dir).await;
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    let error = until_error(&runner, "wss://example.com:443 is not an allowed host").await;
    assert!(
        error.contains("wss://example.com:443 is not an allowed host"),
        "{error}"
    );
    // The refusals happened in `open`, before any connection.
    assert_eq!(server.accepts(), 0);
    assert_eq!(other.accepts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_1009_and_the_plugin_hears_it() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[("reconnect", "true")], |s| {
        s.socket = Some(SocketOverrides {
            max_frame_bytes: Some(4096),
            ..Default::default()
        });
    });
    let gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    server.send(conn, Message::text("x".repeat(10_000)));
    let (code, _) = server.closed().await;
    assert_eq!(code, Some(1009));
    // The plugin got WS-CLOSE 1009 and reconnected.
    let (again, _) = accepted(&mut server).await;
    assert_eq!(again, 1);
    let hello = server.json(|v| v["type"] == "hello").await;
    assert_eq!(hello["last_close"], "1009 frame too big");
    let health = gw.gw().runtime.health.snapshot().await;
    let probe = health.iter().find(|h| h.name == PLUGIN).expect("status");
    assert_eq!(probe.sockets.len(), 1);
    assert_eq!(probe.sockets[0].reconnects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_close_code_reaches_the_plugin() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[("reconnect", "true")], |_| {});
    let _gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    server.close(conn, 4004, "Authentication failed");
    let (again, _) = accepted(&mut server).await;
    assert_eq!(again, 1);
    let hello = server.json(|v| v["type"] == "hello").await;
    assert_eq!(hello["last_close"], "4004 Authentication failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_survives_an_instance_restart_and_a_hot_reload() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[], |_| {});
    let plugins_dir = opts.plugins_dir.clone();
    let gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;

    // The health monitor's restart: the plugin's `restart`, then `start`
    // (which opens the same session again: a no-op).
    gw.gw()
        .runtime
        .health
        .restart_channel(PLUGIN)
        .await
        .expect("restart");
    server.send_json(conn, &message("r1", "ws", "after restart"));
    let seen = server
        .json(|v| v["type"] == "seen" && v["id"] == "r1")
        .await;
    assert_eq!(seen["build"], "pincer-plugin-ws-probe");

    // A hot reload to another build: the new version gets the next frame.
    let v2 = pincer_tests::built_plugin("ws-probe-v2");
    pincer::atomic_file::write(
        &plugins_dir.join("ws-probe.toml"),
        &std::fs::read(v2.with_extension("toml")).expect("v2 manifest"),
    )
    .expect("write manifest");
    pincer::atomic_file::write(
        &plugins_dir.join("ws-probe.wasm"),
        &std::fs::read(&v2).expect("v2 wasm"),
    )
    .expect("write wasm");
    for (name, r) in gw.gw().runtime.reload(Some(PLUGIN)).await {
        r.unwrap_or_else(|e| panic!("reloading {name}: {e}"));
    }
    let current = gw.gw().runtime.plugins.current(PLUGIN).expect("loaded");
    assert_eq!(current.manifest.version, "0.2.0");
    server.send_json(conn, &message("r2", "ws", "after reload"));
    let seen = server
        .json(|v| v["type"] == "seen" && v["id"] == "r2")
        .await;
    assert_eq!(seen["build"], "pincer-plugin-ws-probe-v2");
    // One TCP connection all along.
    assert_eq!(server.accepts(), 1);
    let health = gw.gw().runtime.health.snapshot().await;
    let probe = health.iter().find(|h| h.name == PLUGIN).expect("status");
    assert_eq!(probe.sockets.len(), 1);
    assert_eq!(probe.sockets[0].reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_channel_closes_its_session_with_1001() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[("tick_ms", "200")], |_| {});
    let gw = TestGateway::start_with(opts, dir).await;
    accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    gw.gw().runtime.channels.stop(PLUGIN).await.expect("stop");
    let (code, reason) = server.closed().await;
    assert_eq!(code, Some(1001));
    assert_eq!(reason, "going away");
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    assert!(runner.sockets().sessions().is_empty());
    assert_eq!(
        runner.sockets().timer_count(),
        0,
        "timers end with the account"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_repeatedly_until_cancelled() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[("tick_ms", "100")], |_| {});
    let _gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    let mut last = 0;
    for _ in 0..3 {
        let tick = server.json(|v| v["type"] == "tick").await;
        let n = tick["n"].as_i64().expect("n");
        assert!(n > last, "ticks count up: {n} after {last}");
        last = n;
    }
    server.send_json(conn, &json!({"type": "cancel-timer"}));
    // After `cancelled`, no tick until the one-shot `after` (three tick
    // intervals later) fires: a cancelled timer's pending firing is dropped.
    server.json(|v| v["type"] == "cancelled").await;
    loop {
        let Seen::Text { text, .. } = server.next().await else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_ne!(v["type"], "tick", "a tick after the timer was cancelled");
        if v["type"] == "after" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_keep_a_socket_channel_alive_and_silence_restarts_it() {
    use pincer::clock::ManualClock;
    use pincer::gateway::launch::ClockOverride;
    use pincer::health::HealthConfig;

    let clock = ManualClock::new(1_700_000_000_000);
    let mut server = WsServer::start().await;
    let (mut opts, dir) = options(&server, &[], |_| {});
    opts.clock = Some(ClockOverride(clock.clone()));
    opts.health = HealthConfig {
        // The test runs the checks itself.
        check_interval_ms: 24 * 3_600_000,
        stale_threshold_ms: 60_000,
        startup_grace_ms: 0,
        confirm_checks: 1,
        restart_cooldown_ms: 0,
        ..Default::default()
    };
    let gw = TestGateway::start_with(opts, dir).await;
    let (conn, _) = accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    let runtime = &gw.gw().runtime;
    let restarts = || {
        runtime
            .channels
            .get(PLUGIN)
            .expect("runner")
            .status()
            .restarts_total
    };

    // Two minutes without a message, but a frame (a ping) just arrived:
    // alive.
    clock.advance(120_000);
    server.send(conn, Message::Ping(b"hb".to_vec().into()));
    loop {
        if let Seen::Pong { .. } = server.next().await {
            break;
        }
    }
    runtime.health.check_once().await;
    assert_eq!(restarts(), 0, "a socket receiving frames is alive");

    // Two more minutes with no frame at all: stale, restarted (the session
    // itself is kept: the plugin may reconnect if it wants to).
    let mut events = runtime.events.subscribe();
    clock.advance(120_000);
    runtime.health.check_once().await;
    assert_eq!(restarts(), 1, "a silent socket channel is restarted");
    let restarted = pincer_tests::wait_event(&mut events, |e| {
        matches!(e, pincer::events::Event::ChannelRestarted { .. })
    })
    .await;
    let pincer::events::Event::ChannelRestarted { reason, .. } = restarted else {
        unreachable!()
    };
    assert!(reason.contains("no frame on its sockets"), "{reason}");
    assert_eq!(server.accepts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_the_plugin_closes_its_session_with_1001() {
    let mut server = WsServer::start().await;
    let (opts, dir) = options(&server, &[], |_| {});
    let plugins_dir = opts.plugins_dir.clone();
    let gw = TestGateway::start_with(opts, dir).await;
    accepted(&mut server).await;
    server.json(|v| v["type"] == "hello").await;
    let wasm = plugins_dir.join("ws-probe.wasm");
    std::fs::remove_file(&wasm).expect("remove the plugin");
    gw.gw()
        .runtime
        .apply(&pincer::plugins::watcher::Change::Remove(wasm))
        .await
        .expect("unload");
    let (code, reason) = server.closed().await;
    assert_eq!(code, Some(1001));
    assert_eq!(reason, "going away");
}

/// The runner's last error once it contains `want` (or, past the hang
/// guard, whatever it is then, for the assertion to show).
async fn until_error(runner: &pincer::channels::ChannelRunner, want: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let error = runner.status().last_error.unwrap_or_default();
        if error.contains(want) || tokio::time::Instant::now() >= deadline {
            return error;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_timer_limits_are_enforced() {
    let server = WsServer::start().await;
    // Five sessions on one account: past the default four.
    let (opts, dir) = options(&server, &[("sessions", "5")], |_| {});
    let mut gw = TestGateway::start_with(opts, dir).await;
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    // On PostgreSQL (a cluster of one) the first start may come before the
    // account's lease and fail for that reason; the next start names the
    // limit.
    let error = until_error(&runner, "the account has 4 sessions already").await;
    assert!(
        error.contains("the account has 4 sessions already"),
        "{error}"
    );
    gw.stop().await;

    // A timer faster than the host's minimum.
    let (opts, dir) = options(&server, &[("tick_ms", "50")], |_| {});
    let mut gw = TestGateway::start_with(opts, dir).await;
    let runner = gw.gw().runtime.channels.get(PLUGIN).expect("runner");
    let error = until_error(&runner, "delays below 100 ms").await;
    assert!(error.contains("delays below 100 ms"), "{error}");
    gw.stop().await;
}

#[test]
fn the_socket_plugin_imports_the_extension_and_others_do_not() {
    let import = b"pincer:socket/websocket@0.1.0";
    let has = |name: &str| {
        let bytes = std::fs::read(pincer_tests::built_plugin(name)).expect("read component");
        bytes.windows(import.len()).any(|w| w == import)
    };
    assert!(has("ws-probe"), "ws-probe must import pincer:socket");
    // Built with the same SDK, a plugin that never calls it imports nothing of it.
    assert!(!has("testchan"));
    assert!(!has("echo"));
}
