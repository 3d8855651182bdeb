//! Runs are ordered and bounded (issue 8, C16/C17): one run at a time per
//! session (later messages queued FIFO, abortable and awaitable while
//! queued, a full queue refuses or drops with a clear answer), a global cap
//! on executing runs, per-sender rate limits on channel messages, huge
//! timeouts clamped, and a run whose provider panics still ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pincer::gateway::launch::ProviderOverride;
use pincer::gateway::run_queue::{QueueDrop, QueueMode};
use pincer::plugins::PluginSettings;
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::runs::{GateProvider, PanicProvider};
use serde_json::{Value, json};

fn text_of(msg: &Value) -> String {
    msg["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A gateway with token `secret` whose echo provider waits `word_delay_ms`
/// between words.
async fn echo_gateway(
    word_delay_ms: u64,
    tweak: impl FnOnce(&mut pincer::gateway::launch::Options),
) -> TestGateway {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.agent.echo_word_delay_ms = word_delay_ms;
    tweak(&mut opts);
    TestGateway::start_with(opts, dir).await
}

fn words(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every event until `done` holds for one, in arrival order, as
/// `(event, runId, lifecycle phase or chat state)`.
async fn events_until(
    c: &mut Client,
    done: impl Fn(&Value) -> bool,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    loop {
        let e = c.event(|_| true).await;
        let p = &e["payload"];
        let what = match e["event"].as_str() {
            Some("chat") => p["state"].as_str().unwrap_or_default().to_string(),
            Some("agent") => p["data"]["phase"].as_str().unwrap_or_default().to_string(),
            _ => String::new(),
        };
        out.push((
            e["event"].as_str().unwrap_or_default().to_string(),
            p["runId"].as_str().unwrap_or_default().to_string(),
            what,
        ));
        if done(&e) {
            return out;
        }
    }
}

fn is_terminal(e: &Value, run_id: &str) -> bool {
    e["event"] == "chat" && e["payload"]["runId"] == run_id && e["payload"]["state"] != "delta"
}

fn position(events: &[(String, String, String)], event: &str, run: &str, what: &str) -> usize {
    events
        .iter()
        .position(|(e, r, w)| e == event && r == run && w == what)
        .unwrap_or_else(|| panic!("no {event} {what} for {run} in {events:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_messages_to_one_chat_run_one_after_the_other() {
    let g = echo_gateway(20, |_| {}).await;
    let mut c = Client::admin(&g.url()).await;
    let (m1, m2) = (words(8, "one"), words(8, "two"));
    let a1 = c
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": m1, "idempotencyKey": "q1"}),
        )
        .await;
    let a2 = c
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": m2, "idempotencyKey": "q2"}),
        )
        .await;
    assert_eq!(a1, json!({"runId": "q1", "status": "started"}));
    // The second answers at once, queued behind the first.
    assert_eq!(
        a2,
        json!({"runId": "q2", "status": "started", "queued": true, "position": 1})
    );
    let events = events_until(&mut c, |e| is_terminal(e, "q2")).await;
    let first_end = position(&events, "chat", "q1", "final");
    let second_start = position(&events, "agent", "q2", "start");
    assert!(
        first_end < second_start,
        "q2 must start after q1 ended: {events:?}"
    );
    assert_eq!(events.last().unwrap().2, "final");
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let got: Vec<(String, String)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), text_of(m)))
        .collect();
    let want: Vec<(String, String)> = [
        ("user", &m1),
        ("assistant", &m1),
        ("user", &m2),
        ("assistant", &m2),
    ]
    .iter()
    .map(|(r, t)| (r.to_string(), t.to_string()))
    .collect();
    assert_eq!(got, want, "the transcript never interleaves two runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_can_be_waited_for_and_aborted() {
    let g = echo_gateway(50, |_| {}).await;
    let mut c = Client::admin(&g.url()).await;
    let long = words(400, "w");
    for (id, m) in [("a", long.as_str()), ("b", "bee"), ("c", "sea")] {
        c.call(
            "chat.send",
            json!({"sessionKey": "main", "message": m, "idempotencyKey": id}),
        )
        .await;
    }
    // A queued run is known to agent.wait (not "not found").
    let w = c
        .call("agent.wait", json!({"runId": "b", "timeoutMs": 1}))
        .await;
    assert_eq!(w["status"], "timeout", "{w}");
    assert_eq!(g.gw().runs.counts().queued, 2);
    // Aborting a queued run removes it: it ends at once, the others keep
    // their places.
    let r = c
        .call("chat.abort", json!({"sessionKey": "main", "runId": "b"}))
        .await;
    assert_eq!(r, json!({"ok": true, "aborted": true, "runIds": ["b"]}));
    let b = c.chat_run("b").await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["state"], "aborted");
    assert_eq!(b[0]["stopReason"], "rpc");
    let w = c.call("agent.wait", json!({"runId": "b"})).await;
    assert_eq!(w["aborted"], true, "{w}");
    assert_eq!(g.gw().runs.counts().queued, 1);
    // Abort the long run once it has streamed (so a partial answer is
    // kept): the next one runs.
    c.event(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == "a" && e["payload"]["state"] == "delta"
    })
    .await;
    c.call("chat.abort", json!({"sessionKey": "main", "runId": "a"}))
        .await;
    assert_eq!(c.chat_run("a").await.last().unwrap()["state"], "aborted");
    let w = c
        .call("agent.wait", json!({"runId": "c", "timeoutMs": 30000}))
        .await;
    assert_eq!(w["status"], "ok", "{w}");
    assert_eq!(c.chat_run("c").await.last().unwrap()["state"], "final");
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let texts: Vec<String> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(text_of)
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[0], long);
    assert!(long.starts_with(&texts[1]) && texts[1].len() < long.len());
    assert_eq!(&texts[2..], ["sea", "sea"], "b never ran");
    no_run_in_flight(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_queue_refuses_the_new_message_with_a_clear_error() {
    let g = echo_gateway(50, |o| o.gateway.runs.queue_cap = 1).await;
    let mut c = Client::admin(&g.url()).await;
    let long = words(400, "w");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": long, "idempotencyKey": "a"}),
    )
    .await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "b", "idempotencyKey": "b"}),
    )
    .await;
    let r = c
        .request(
            "chat.send",
            json!({"sessionKey": "main", "message": "c", "idempotencyKey": "c"}),
        )
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "UNAVAILABLE");
    assert_eq!(r["error"]["retryable"], true);
    assert_eq!(r["error"]["details"]["reason"], "queue_full");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("busy"),
        "{r}"
    );
    // Nothing of it is kept: it is unknown, and may be sent again later.
    let w = c.request("agent.wait", json!({"runId": "c"})).await;
    assert_eq!(w["ok"], false, "{w}");
    // Other sessions are not affected.
    let other = c
        .call(
            "chat.send",
            json!({"sessionKey": "other", "message": "hi", "idempotencyKey": "o"}),
        )
        .await;
    assert_eq!(other["status"], "started");
    assert_eq!(c.chat_run("o").await.last().unwrap()["state"], "final");
    c.call("chat.abort", json!({"sessionKey": "main"})).await;
    g.gw().runs.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_dropping_old_ends_the_oldest_waiting_run() {
    let g = echo_gateway(50, |o| {
        o.gateway.runs.queue_cap = 1;
        o.gateway.runs.queue_drop = QueueDrop::Old;
    })
    .await;
    let mut c = Client::admin(&g.url()).await;
    let long = words(400, "w");
    for (id, m) in [("a", long.as_str()), ("b", "bee"), ("c", "sea")] {
        c.call(
            "chat.send",
            json!({"sessionKey": "main", "message": m, "idempotencyKey": id}),
        )
        .await;
    }
    let b = c.chat_run("b").await;
    assert_eq!(b.last().unwrap()["state"], "aborted");
    assert_eq!(b.last().unwrap()["stopReason"], "queue_overflow");
    let w = c.call("agent.wait", json!({"runId": "b"})).await;
    assert_eq!(w["aborted"], true, "{w}");
    c.call("chat.abort", json!({"sessionKey": "main", "runId": "a"}))
        .await;
    assert_eq!(c.chat_run("c").await.last().unwrap()["state"], "final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_cap_bounds_executing_runs_and_the_rest_wait_in_order() {
    let gate = GateProvider::new();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.gateway.runs.max_concurrent = 2;
    opts.provider = Some(ProviderOverride(gate.clone()));
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    for i in 0..5 {
        let ack = c
            .call(
                "chat.send",
                json!({"sessionKey": format!("s{i}"), "message": format!("m{i}"), "idempotencyKey": format!("r{i}")}),
            )
            .await;
        assert_eq!(ack["status"], "started");
    }
    gate.until(|s| s.inside == 2).await;
    let counts = g.gw().runs.counts();
    assert_eq!((counts.running, counts.waiting), (2, 3), "{counts:?}");
    let status = c.call("status", json!({})).await;
    assert_eq!(
        status["tasks"],
        json!({"active": 5, "running": 2, "waiting": 3, "queued": 0})
    );
    // Let one run through at a time: each freed slot goes to the next
    // waiting run in the order they were sent.
    for n in 3..=5 {
        gate.open(1);
        gate.until(|s| s.entered.len() == n).await;
    }
    gate.open(2);
    for i in 0..5 {
        assert_eq!(
            c.chat_run(&format!("r{i}")).await.last().unwrap()["state"],
            "final"
        );
    }
    let s = gate.until(|s| s.left == 5).await;
    assert_eq!(s.high_water, 2, "never more than the cap at once: {s:?}");
    assert_eq!(
        &s.entered[2..],
        ["m2", "m3", "m4"],
        "waiting runs start in order"
    );
}

/// Options whose echo channel POSTs every reply to `addr`.
fn echo_channel_options(
    addr: std::net::SocketAddr,
) -> (pincer::gateway::launch::Options, tempfile::TempDir) {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    let mut settings = BTreeMap::new();
    settings.insert(
        "echo".to_string(),
        PluginSettings {
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            config: [("reply_url".to_string(), format!("http://{addr}/reply"))].into(),
            // These tests push as strangers; pairing has its own tests.
            dm_policy: pincer::channels::access::DmPolicy::Open,
            ..Default::default()
        },
    );
    opts.plugins = settings;
    (opts, dir)
}

/// POST a message to the echo channel's webhook.
async fn push(g: &TestGateway, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/channels/echo/webhook", g.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Read channel replies until one contains `needle`, then everything
/// already there; how many contained it.
async fn count_replies(
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> usize {
    let mut n = 0;
    while n == 0 {
        let r = tokio::time::timeout(Duration::from_secs(30), replies.recv())
            .await
            .expect("a notice within the hang guard")
            .expect("reply server");
        n += usize::from(r.contains(needle));
    }
    while let Ok(r) = replies.try_recv() {
        n += usize::from(r.contains(needle));
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spammer_over_the_sender_rate_gets_no_runs_beyond_it_and_one_notice() {
    let (addr, mut replies) = pincer_tests::http_server(200, "ok").await;
    let (mut opts, dir) = echo_channel_options(addr);
    opts.gateway.runs.sender_burst = 3;
    opts.gateway.runs.sender_per_minute = 1;
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    let began = Instant::now();
    for i in 0..10 {
        push(&g, json!({"conversation": "c1", "sender": "spammer", "text": format!("spam {i}"), "id": format!("s{i}")}))
            .await;
    }
    // Someone else in the same chat: routed after all the spam, and run
    // after every spam run that was admitted (same session, FIFO).
    push(
        &g,
        json!({"conversation": "c1", "sender": "friend", "text": "done", "id": "f1"}),
    )
    .await;
    c.event(|e| is_terminal(e, "echo:f1")).await;
    let elapsed = began.elapsed();
    let h = c
        .call(
            "chat.history",
            json!({"sessionKey": "agent:main:echo:direct:c1", "limit": 1000}),
        )
        .await;
    let users: Vec<String> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(text_of)
        .collect();
    // The bucket refills one token a minute: at most that many more.
    let allowed = 3 + (elapsed.as_secs() / 60) as usize;
    let spam = users.iter().filter(|t| t.starts_with("spam")).count();
    assert!(
        (3..=allowed).contains(&spam),
        "{spam} spam runs, allowed {allowed}: {users:?}"
    );
    assert_eq!(&users[..3], ["spam 0", "spam 1", "spam 2"]);
    assert_eq!(users.last().unwrap(), "done");
    // The spammer was told once to slow down.
    assert_eq!(
        count_replies(&mut replies, "slow down").await,
        1,
        "one notice per limited stretch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_message_to_a_full_queue_is_not_run_and_its_sender_is_told() {
    let (addr, mut replies) = pincer_tests::http_server(200, "ok").await;
    let (mut opts, dir) = echo_channel_options(addr);
    opts.agent.echo_word_delay_ms = 50;
    opts.gateway.runs.queue_cap = 1;
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    let long = words(400, "w");
    // The channel's inbox hands a conversation one message at a time, so
    // the session's queue is filled by operator runs: one running, one
    // waiting (the cap); then a channel message finds it full.
    let key = "agent:main:echo:direct:c1";
    c.call(
        "chat.send",
        json!({"sessionKey": key, "message": long.as_str(), "idempotencyKey": "m0"}),
    )
    .await;
    // m0 is running once its first delta streams (a run starts just after
    // its `chat.send` answer; aborted before that, it would never run).
    c.event(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == "m0" && e["payload"]["state"] == "delta"
    })
    .await;
    c.call(
        "chat.send",
        json!({"sessionKey": key, "message": "second", "idempotencyKey": "m1"}),
    )
    .await;
    push(
        &g,
        json!({"conversation": "c1", "sender": "u2", "text": "third", "id": "m2"}),
    )
    .await;
    assert_eq!(
        count_replies(&mut replies, "Too many messages are waiting").await,
        1
    );
    c.call("chat.abort", json!({"sessionKey": key, "runId": "m0"}))
        .await;
    c.event(|e| is_terminal(e, "m1")).await;
    let h = c.call("chat.history", json!({"sessionKey": key})).await;
    let users: Vec<String> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(text_of)
        .collect();
    assert_eq!(users, [long.as_str(), "second"], "the third never ran");
    let w = c.request("agent.wait", json!({"runId": "echo:m2"})).await;
    assert_eq!(w["ok"], false, "unknown: {w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_timeout_is_clamped_and_the_run_completes() {
    let g = echo_gateway(0, |_| {}).await;
    let mut c = Client::admin(&g.url()).await;
    for timeout in [u64::MAX, u64::MAX / 1000 + 1, 1 << 53] {
        let key = format!("big-{timeout}");
        let id = c
            .send_req(
                "agent",
                json!({"message": "still here", "idempotencyKey": key, "timeout": timeout}),
            )
            .await;
        assert_eq!(c.response(&id).await["payload"]["status"], "accepted");
        let second = c.response(&id).await;
        assert_eq!(second["payload"]["status"], "ok", "{second}");
        let w = c
            .call("agent.wait", json!({"runId": key, "timeoutMs": 30000}))
            .await;
        assert_eq!(w["status"], "ok", "{w}");
        let chat_key = format!("chat-{timeout}");
        c.call(
            "chat.send",
            json!({"sessionKey": "main", "message": "hi", "idempotencyKey": chat_key, "timeoutMs": timeout}),
        )
        .await;
        assert_eq!(
            c.chat_run(&chat_key).await.last().unwrap()["state"],
            "final"
        );
    }
    no_run_in_flight(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_provider_still_ends_the_run() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    // A run left in flight would hold shutdown for an hour.
    opts.gateway.shutdown_grace_ms = 3_600_000;
    opts.provider = Some(ProviderOverride(Arc::new(PanicProvider)));
    let mut g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    // Panics inside the provider's future; the next run in the session
    // still runs.
    for (id, m) in [("p1", "panic-in-run"), ("p2", "fine")] {
        c.call(
            "chat.send",
            json!({"sessionKey": "main", "message": m, "idempotencyKey": id}),
        )
        .await;
    }
    let p1 = c.chat_run("p1").await;
    let end = p1.last().unwrap();
    assert_eq!(end["state"], "error", "{p1:?}");
    assert!(
        !end["errorMessage"].as_str().unwrap().contains("panics"),
        "the panic message stays in the log: {end}"
    );
    let w = c
        .call("agent.wait", json!({"runId": "p1", "timeoutMs": 30000}))
        .await;
    assert_eq!(w["status"], "error", "{w}");
    assert_eq!(c.chat_run("p2").await.last().unwrap()["state"], "final");
    // Panics before returning a future (outside the run's own handling):
    // the guard ends it.
    let id = c
        .send_req(
            "agent",
            json!({"message": "panic-before-run", "idempotencyKey": "p3"}),
        )
        .await;
    assert_eq!(c.response(&id).await["payload"]["status"], "accepted");
    let second = c.response(&id).await;
    assert_eq!(second["ok"], false, "{second}");
    assert_eq!(second["payload"]["status"], "error", "{second}");
    assert_eq!(c.chat_run("p3").await.last().unwrap()["state"], "error");
    let w = c
        .call("agent.wait", json!({"runId": "p3", "timeoutMs": 30000}))
        .await;
    assert_eq!(w["status"], "error", "{w}");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "after", "idempotencyKey": "p4"}),
    )
    .await;
    assert_eq!(c.chat_run("p4").await.last().unwrap()["state"], "final");
    no_run_in_flight(&g).await;
    tokio::time::timeout(Duration::from_secs(60), g.stop())
        .await
        .expect("shutdown does not wait for a dead run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_mode_answers_everything_queued_in_one_turn() {
    let g = echo_gateway(50, |o| o.gateway.runs.queue_mode = QueueMode::Collect).await;
    let mut c = Client::admin(&g.url()).await;
    let long = words(400, "w");
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": long, "idempotencyKey": "a"}),
    )
    .await;
    // Run `a` has streamed something, so its abort leaves a partial answer.
    c.event(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == "a" && e["payload"]["state"] == "delta"
    })
    .await;
    for (id, m) in [("b", "bee"), ("c", "sea")] {
        c.call(
            "chat.send",
            json!({"sessionKey": "main", "message": m, "idempotencyKey": id}),
        )
        .await;
    }
    c.call("chat.abort", json!({"sessionKey": "main", "runId": "a"}))
        .await;
    let b = c.chat_run("b").await;
    let c_end = c.chat_run("c").await;
    for end in [b.last().unwrap(), c_end.last().unwrap()] {
        assert_eq!(end["state"], "final", "{end}");
        assert_eq!(text_of(&end["message"]), "bee\n\nsea");
    }
    let w = c.call("agent.wait", json!({"runId": "c"})).await;
    assert_eq!(w["status"], "ok", "{w}");
    let h = c.call("chat.history", json!({"sessionKey": "main"})).await;
    let texts: Vec<String> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(text_of)
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(
        &texts[2..],
        ["bee\n\nsea", "bee\n\nsea"],
        "one turn for both"
    );
    no_run_in_flight(&g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_run_timeout_applies_to_runs_that_ask_for_none() {
    // The gate never opens: only the timeout can end the run.
    let gate = GateProvider::new();
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.agent.run_timeout_ms = 200;
    opts.provider = Some(ProviderOverride(gate.clone()));
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "wait", "idempotencyKey": "t1"}),
    )
    .await;
    let end = c.chat_run("t1").await;
    let end = end.last().unwrap();
    assert_eq!(end["state"], "error", "{end}");
    assert_eq!(end["errorKind"], "timeout");
    let w = c.call("agent.wait", json!({"runId": "t1"})).await;
    assert_eq!(w["status"], "error", "{w}");
    no_run_in_flight(&g).await;
}

/// Wait until every run has left the in-flight set: a run's terminal event
/// goes out just before it leaves, so asserting at once would race. Fails
/// after a hang guard if a run stays in flight.
async fn no_run_in_flight(g: &TestGateway) {
    tokio::time::timeout(std::time::Duration::from_secs(30), g.gw().runs.wait_idle())
        .await
        .expect("a run stayed in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_aborted_before_it_executes_still_leaves_its_message_in_the_history() {
    // One run slot, taken by a long run of another session: the second
    // session's run has its turn but cannot execute until it is aborted.
    let g = echo_gateway(50, |o| {
        o.gateway.runs.max_concurrent = 1;
        o.gateway.runs.operator_reserve = 0;
    })
    .await;
    let mut c = Client::admin(&g.url()).await;
    c.call(
        "chat.send",
        json!({"sessionKey": "a", "message": words(400, "w"), "idempotencyKey": "long"}),
    )
    .await;
    c.event(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == "long" && e["payload"]["state"] == "delta"
    })
    .await;
    c.call(
        "chat.send",
        json!({"sessionKey": "b", "message": "never answered", "idempotencyKey": "b1"}),
    )
    .await;
    let r = c
        .call("chat.abort", json!({"sessionKey": "b", "runId": "b1"}))
        .await;
    assert_eq!(r["aborted"], true, "{r}");
    let b = c.chat_run("b1").await;
    assert_eq!(b.last().unwrap()["state"], "aborted", "{b:?}");
    let h = c.call("chat.history", json!({"sessionKey": "b"})).await;
    let messages = h["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{h}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(text_of(&messages[0]), "never answered");
    assert_eq!(messages[0]["idempotencyKey"], "b1");
    c.call("chat.abort", json!({"sessionKey": "a", "runId": "long"}))
        .await;
    no_run_in_flight(&g).await;
}
