//! Cluster mode, part C (issue 13): what the nodes claim from each other
//! and how they wake each other, with three real `pincer` processes on
//! one real PostgreSQL database (`pincer_tests::cluster_claims`): one run
//! at a time per session cluster-wide (a dead node's claim expires with
//! its heartbeat), `agent` idempotency and `agent.wait` across nodes, a
//! push accepted by one node answered by the channel's lease holder
//! through a wake-up alone (every safety-net poll is set to minutes), and
//! the per-endpoint webhook limit held across nodes. Every wait is on
//! observable state under a generous hang guard.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use pincer::fakes::telegram::{Chat, FakeTelegram, User};
use pincer::store::{LeaseStore, NewMessage, SessionStore, WebhookStore};
use pincer_tests::cluster::{STEP_GUARD, await_presence, cursor_client, of_run, run_end, words};
use pincer_tests::cluster_claims::{Node, PER_ENDPOINT, PUSH_SECRET, SlowReceiver};
use pincer_tests::postgres::TestPostgres;

/// The child test every node runs.
const CHILD: &str = "claims_child";

/// Not a test: one cluster node, started by the tests below.
#[test]
#[ignore = "a cluster node, run as a child process by the tests"]
fn claims_child() {
    pincer_tests::cluster_claims::run_child();
}

async fn guard<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what}"))
}

fn run_id(e: &Value) -> String {
    e["payload"]["runId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The run ids of `events` with consecutive repeats collapsed: each run
/// appears once if no two runs' events interleave.
fn blocks(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let id = run_id(e);
        if out.last() != Some(&id) {
            out.push(id);
        }
    }
    out
}

/// The text of a terminal `chat` event's message.
fn final_text(e: &Value) -> String {
    e["payload"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_at_a_time_per_session_across_nodes_agent_idempotency_and_a_dead_nodes_claim() {
    let pg = TestPostgres::start();
    let url = pg.database("claims_sessions");
    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node::start(CHILD, &url, n, None))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.gw.url.clone()).collect();
    let mut observer = cursor_client(&urls[2]).await;
    guard(
        "presence lists three nodes",
        await_presence(&mut observer, &["node-a", "node-b", "node-c"]),
    )
    .await;

    // 1. One chat.send per node for one session, at once: three runs, one
    // after another (no two runs' events interleave; each run's events
    // start after the previous run's final), nothing lost.
    let mut senders = Vec::new();
    for u in &urls {
        senders.push(cursor_client(u).await);
    }
    let messages: Vec<String> = (0..3)
        .map(|i| format!("from-node-{i} {}", words(40)))
        .collect();
    let answers = join_all(senders.iter_mut().enumerate().map(|(i, s)| {
        s.call(
            "chat.send",
            json!({"sessionKey": "shared", "message": messages[i],
                   "idempotencyKey": format!("shared-{i}")}),
        )
    }))
    .await;
    for a in &answers {
        assert_eq!(a["status"], "started", "{a}");
    }
    let ids: Vec<String> = (0..3).map(|i| format!("shared-{i}")).collect();
    let mut seen = Vec::new();
    let mut ended = HashSet::new();
    while ended.len() < 3 {
        let want = ids.clone();
        let e = guard(
            "the three runs' events",
            observer.event(move |e| want.iter().any(|id| of_run(e, id))),
        )
        .await;
        let id = run_id(&e);
        if run_end(&e, &id) {
            assert_eq!(e["payload"]["state"], "final", "{e}");
            let i: usize = id["shared-".len()..].parse().expect("index");
            assert_eq!(final_text(&e), messages[i], "the whole answer: {e}");
            ended.insert(id);
        }
        seen.push(e);
    }
    let order = blocks(&seen);
    assert_eq!(
        order.len(),
        3,
        "the runs of one session overlapped across nodes: {order:?}"
    );
    for (i, id) in order.iter().enumerate().skip(1) {
        let first = seen
            .iter()
            .position(|e| run_id(e) == *id)
            .expect("run events");
        let prev_final = seen
            .iter()
            .position(|e| run_end(e, &order[i - 1]))
            .expect("previous final");
        assert!(
            prev_final < first,
            "{id} started before {} ended",
            order[i - 1]
        );
        assert_eq!(seen[first]["event"], "agent");
        assert_eq!(seen[first]["payload"]["data"]["phase"], "start");
    }
    let history = observer
        .call("chat.history", json!({"sessionKey": "shared"}))
        .await;
    let msgs = history["messages"].as_array().expect("messages");
    for id in &ids {
        for role in ["user", "assistant"] {
            let n = msgs
                .iter()
                .filter(|m| m["role"] == role && m["runId"] == id.as_str())
                .count();
            assert_eq!(n, 1, "one {role} message of {id}: {history}");
        }
    }

    // 2. `agent` with one key on every node at once starts one run; each
    // caller gets its result.
    let message = words(30);
    let mut req_ids = Vec::new();
    for s in senders.iter_mut() {
        req_ids.push(
            s.send_req(
                "agent",
                json!({"message": message, "sessionKey": "agents", "idempotencyKey": "ag-1"}),
            )
            .await,
        );
    }
    for (s, id) in senders.iter_mut().zip(&req_ids) {
        let mut r = guard("agent's answer", s.response(id)).await;
        if r["payload"]["status"] == "accepted" {
            r = guard("agent's result", s.response(id)).await;
        }
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["payload"]["status"], "ok", "{r}");
        assert_eq!(r["payload"]["result"]["text"], message.as_str(), "{r}");
    }
    let history = observer
        .call("chat.history", json!({"sessionKey": "agents"}))
        .await;
    let users = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "user" && m["runId"] == "ag-1")
        .count();
    assert_eq!(users, 1, "one run for the key: {history}");

    // `agent.wait` on node C for a run executing on node A; an unknown run
    // is unknown everywhere.
    let id = senders[0]
        .send_req(
            "agent",
            json!({"message": words(200), "sessionKey": "waited", "idempotencyKey": "ag-2"}),
        )
        .await;
    let accepted = guard("agent accepted", senders[0].response(&id)).await;
    assert_eq!(accepted["payload"]["status"], "accepted", "{accepted}");
    let waited = guard(
        "agent.wait on another node",
        senders[2].call("agent.wait", json!({"runId": "ag-2", "timeoutMs": 120_000})),
    )
    .await;
    assert_eq!(waited["status"], "ok", "{waited}");
    assert_eq!(waited["runId"], "ag-2");
    let unknown = senders[1]
        .request(
            "agent.wait",
            json!({"runId": "never-ran", "timeoutMs": 1000}),
        )
        .await;
    assert_eq!(unknown["ok"], false, "{unknown}");
    assert_eq!(
        unknown["error"]["code"], "AGENT_RESULT_NOT_FOUND",
        "{unknown}"
    );

    // 3. A run waiting for a session that node A runs does not start while
    // A's run streams; kill -9 of node A frees the session once A's
    // heartbeat expires, and the waiting run answers in full.
    let sent = senders[0]
        .call(
            "chat.send",
            json!({"sessionKey": "dies", "message": words(4000), "idempotencyKey": "long-1"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    guard(
        "the long run streams",
        observer.event(|e| of_run(e, "long-1") && e["payload"]["stream"] == "assistant"),
    )
    .await;
    let after = words(20);
    let sent = senders[1]
        .call(
            "chat.send",
            json!({"sessionKey": "dies", "message": after, "idempotencyKey": "after-1"}),
        )
        .await;
    assert_eq!(sent["status"], "started");
    // Twenty more events of the long run with none of the waiting one's.
    for _ in 0..20 {
        let e = guard(
            "the long run goes on",
            observer.event(|e| of_run(e, "long-1") || of_run(e, "after-1")),
        )
        .await;
        assert_eq!(run_id(&e), "long-1", "the waiting run started: {e}");
    }
    nodes[0].gw.kill();
    let mut long_end = None;
    let mut after_end = None;
    while long_end.is_none() || after_end.is_none() {
        let e = guard(
            "both runs end after the kill",
            observer.event(|e| run_end(e, "long-1") || run_end(e, "after-1")),
        )
        .await;
        if run_id(&e) == "long-1" {
            long_end = Some(e);
        } else {
            after_end = Some(e);
        }
    }
    let long_end = long_end.expect("long end");
    assert_eq!(long_end["payload"]["state"], "error", "{long_end}");
    assert_eq!(
        long_end["payload"]["errorMessage"],
        pincer::gateway::cluster::NODE_LOST
    );
    let after_end = after_end.expect("after end");
    assert_eq!(after_end["payload"]["state"], "final", "{after_end}");
    assert_eq!(final_text(&after_end), after);
}

/// A Telegram update of a DM from `chat`/`user` with `text`.
fn update(update_id: i64, chat: &Chat, user: &User, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000,
            "chat": chat.to_json(),
            "from": user.to_json(),
            "text": text,
        }
    })
}

/// POST `body` to node `n`'s Telegram webhook with the push secret, once
/// the node serves the channel (404/503 until its plugin is loaded).
async fn push_to(n: &Node, body: &Value) {
    let http = reqwest::Client::new();
    let url = format!("{}/channels/telegram/webhook", n.http());
    let deadline = tokio::time::Instant::now() + STEP_GUARD;
    loop {
        let r = http
            .post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", PUSH_SECRET)
            .json(body)
            .send()
            .await
            .expect("POST webhook");
        let status = r.status().as_u16();
        if status == 200 {
            return;
        }
        assert!(
            [404, 503].contains(&status) && tokio::time::Instant::now() < deadline,
            "push to {} answered {status}: {}",
            n.name,
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_accepted_by_one_node_is_answered_by_the_lease_holder_through_a_wake_up() {
    let fake = FakeTelegram::start().await;
    let pg = TestPostgres::start();
    let url = pg.database("claims_push");
    let store = TestPostgres::store(&url);
    // Node B starts first and takes the account's lease.
    let b = Node::start(CHILD, &url, "node-b", Some(fake.base_url()));
    let holder = || {
        store
            .lease_row(pincer_tests::cluster_leases::CHANNEL)
            .expect("lease row")
            .filter(|r| r.expires_ms > 0)
            .map(|r| r.owner)
    };
    pincer_tests::cluster_leases::until(
        || format!("node-b holds the lease (now {:?})", holder()),
        STEP_GUARD,
        || (holder().as_deref() == Some("node-b")).then_some(()),
    )
    .await;
    let a = Node::start(CHILD, &url, "node-a", Some(fake.base_url()));
    let c = Node::start(CHILD, &url, "node-c", Some(fake.base_url()));

    // Pushes through the standby nodes: each answered once by node B,
    // whose processor only a wake-up can have woken (its safety net is
    // ten minutes away).
    for (i, n) in [&a, &c, &a].into_iter().enumerate() {
        let id = 9100 + i as i64;
        let (chat, user) = (Chat::private(id, "Ann"), User::new(id, "Ann"));
        fake.add_chat(&chat);
        let text = format!("pushed through {} number {i}", n.name);
        push_to(n, &update(77_000 + i as i64, &chat, &user, &text)).await;
        let sent = guard("the answer", fake.wait_for_sent(chat.id, 1)).await;
        assert_eq!(sent.len(), 1);
        let texts = fake.sent_texts(chat.id);
        assert!(
            texts.iter().any(|t| t.contains(&text)),
            "the echo answers {text:?}: {texts:?}"
        );
    }
    assert_eq!(holder().as_deref(), Some("node-b"), "the lease never moved");

    // An operator's chat.send on node A and a channel message (pushed
    // through node C, run by holder B) for one session, at once: one run
    // after the other.
    let id = 9300;
    let (chat, user) = (Chat::private(id, "Cy"), User::new(id, "Cy"));
    fake.add_chat(&chat);
    let key = format!("agent:main:telegram:direct:{id}");
    let mut observer = cursor_client(&a.gw.url).await;
    let mut operator = cursor_client(&a.gw.url).await;
    let pushed = update(79_000, &chat, &user, &format!("channel {}", words(60)));
    let (_, sent) = tokio::join!(
        push_to(&c, &pushed),
        operator.call(
            "chat.send",
            json!({"sessionKey": key, "message": format!("operator {}", words(60)),
                   "idempotencyKey": "op-1"}),
        )
    );
    assert_eq!(sent["status"], "started", "{sent}");
    let mut seen = Vec::new();
    let mut ends = 0;
    while ends < 2 {
        let k = key.clone();
        let e = guard(
            "both runs of the session",
            observer.event(move |e| {
                (e["event"] == "chat" || e["event"] == "agent")
                    && e["payload"]["sessionKey"] == k.as_str()
            }),
        )
        .await;
        if run_end(&e, &run_id(&e)) {
            assert_eq!(e["payload"]["state"], "final", "{e}");
            ends += 1;
        }
        seen.push(e);
    }
    let order = blocks(&seen);
    assert_eq!(
        order.len(),
        2,
        "the operator's run and the channel's run overlapped: {order:?}"
    );
    assert!(order.contains(&"op-1".to_string()), "{order:?}");
    guard("the channel's answer", fake.wait_for_sent(id, 1)).await;
    // A repeated push (the platform retrying) is not answered again.
    let (chat, user) = (Chat::private(9100, "Ann"), User::new(9100, "Ann"));
    push_to(
        &c,
        &update(77_000, &chat, &user, "pushed through node-a number 0"),
    )
    .await;
    let fresh = 9200;
    let (chat2, user2) = (Chat::private(fresh, "Bo"), User::new(fresh, "Bo"));
    fake.add_chat(&chat2);
    push_to(&c, &update(78_000, &chat2, &user2, "after the repeat")).await;
    guard("the later answer", fake.wait_for_sent(fresh, 1)).await;
    assert_eq!(fake.sent_texts(9100).len(), 1, "the repeat was answered");
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_endpoint_webhook_limit_holds_across_three_nodes() {
    let pg = TestPostgres::start();
    let url = pg.database("claims_hooks");
    let store = TestPostgres::store(&url);
    // Each answer takes a while, so attempts from every node overlap.
    let rx = SlowReceiver::start(Duration::from_millis(150)).await;
    store
        .add_endpoint(&pincer::store::WebhookEndpoint {
            id: "ep_claims0123456789abcdef0123456789ab".into(),
            url: rx.url(),
            description: None,
            events: vec!["message.*".into()],
            enabled: true,
            created_ms: 0,
            updated_ms: 0,
            secret: "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
            previous_secret: None,
            previous_secret_expires_ms: None,
            failing_since_ms: None,
            disabled_reason: None,
        })
        .expect("endpoint");
    let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node::start(CHILD, &url, n, None))
        .collect();
    const EVENTS: usize = 30;
    for i in 0..EVENTS {
        store
            .append_message(
                &format!("s{}", i % 5),
                NewMessage {
                    role: "user".into(),
                    content: json!([{"type": "text", "text": format!("m{i}")}]),
                    event: Some("message.received"),
                    ..Default::default()
                },
            )
            .expect("append");
    }
    // Delivered through wake-ups (the nodes' idle poll is minutes away).
    let st = guard("every delivery answered", rx.wait_answered(EVENTS)).await;
    assert!(
        st.max <= PER_ENDPOINT,
        "{} attempts in flight at once to one endpoint; the limit is {PER_ENDPOINT}",
        st.max
    );
    assert_eq!(st.by_msg.len(), EVENTS);
    for (msg, attempts) in &st.by_msg {
        assert_eq!(attempts, &vec![1], "{msg} was attempted more than once");
    }
    // Each settles as delivered, with its one attempt.
    let list = || {
        store
            .list_deliveries("ep_claims0123456789abcdef0123456789ab", None, None, 1000)
            .expect("deliveries")
    };
    let deliveries = pincer_tests::cluster_leases::until(
        || format!("every delivery settled: {:?}", list()),
        STEP_GUARD,
        || {
            let d = list();
            (d.len() == EVENTS
                && d.iter()
                    .all(|d| d.status == pincer::store::DeliveryStatus::Delivered))
            .then_some(d)
        },
    )
    .await;
    assert!(deliveries.iter().all(|d| d.attempts == 1), "{deliveries:?}");
    drop(nodes);
}
