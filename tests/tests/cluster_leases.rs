//! Cluster mode, part B (issue 13): exactly one receiver per channel
//! account and webhook-outbox claims, across three real `pincer`
//! processes on one real PostgreSQL database (`pincer_tests::postgres`),
//! with the Telegram plugin built from source polling the local fake Bot
//! API (which counts overlapping long polls) and webhooks delivered to a
//! real loopback receiver. Nodes are killed with SIGKILL, paused with
//! SIGSTOP and resumed with SIGCONT; every wait is on observable state
//! (the fake, the database, `/metrics`) under a generous hang guard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pincer::fakes::telegram::{Chat, FakeTelegram, User, UserMessage};
use pincer::store::{
    LeaseRow, LeaseStore, NewMessage, OutboxStore, PgStore, SessionStore, WebhookStore,
};
use pincer_tests::cluster_leases::{CHANNEL, Node, in_doubt, until};
use pincer_tests::exactly_once::{token, token_in};
use pincer_tests::postgres::TestPostgres;
use pincer_tests::webhook_receiver::{Receiver, Reply};
use serde_json::json;

/// The lease time of the test clusters, ms: short, so takeovers happen
/// within the test, yet several renewals long on a loaded machine.
const LEASE_MS: u64 = 4_000;
/// Hang guard of every wait.
const GUARD: Duration = Duration::from_secs(240);
/// Chats the messages are spread over.
const CHATS: i64 = 10;

/// Not a test: one node of a cluster (see `pincer_tests::cluster`).
#[test]
#[ignore]
fn cluster_child() {
    pincer_tests::cluster_leases::run_child();
}

fn chat(i: i64) -> (Chat, User) {
    let id = 5000 + i;
    (
        Chat::private(id, &format!("User{i}")),
        User::new(id, &format!("User{i}")),
    )
}

/// Push message `token(i)` into chat `i % CHATS`.
fn push(fake: &FakeTelegram, i: usize) {
    let (c, u) = chat(i as i64 % CHATS);
    fake.push(UserMessage::text(&c, &u, &token(i)));
}

/// How often each token was answered (the bot's messages in every chat).
fn answers(fake: &FakeTelegram) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in 0..CHATS {
        for text in fake.sent_texts(chat(i).0.id) {
            if let Some(t) = token_in(&text) {
                *out.entry(t).or_default() += 1;
            }
        }
    }
    out
}

/// The current lease of the Telegram account (a live one: not released).
fn lease(store: &PgStore) -> Option<LeaseRow> {
    store
        .lease_row(CHANNEL)
        .expect("lease row")
        .filter(|r| r.expires_ms > 0)
}

/// Three nodes serving the fake's bot on database `url`.
fn telegram_cluster(url: &str, fake: &FakeTelegram) -> Vec<Node> {
    (1..=3)
        .map(|i| {
            Node::start(
                "cluster_child",
                url,
                &format!("n{i}"),
                Some(fake.base_url()),
                LEASE_MS,
                5_000,
            )
        })
        .collect()
}

/// Rows of `sql` on database `url`, each column as text (a raw client on a
/// blocking thread: the synchronous client may not run on a worker).
async fn sql(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let (url, sql) = (url.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.simple_query(&sql)
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    })
    .await
    .expect("sql task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_polling_node_hands_the_bot_to_another_and_answers_500_messages_once() {
    let pg = TestPostgres::start();
    let url = pg.database("tg_failover");
    let store = TestPostgres::store(&url);
    let fake = FakeTelegram::start().await;
    let mut nodes = telegram_cluster(&url, &fake);
    let first = until(|| "a node takes the lease".into(), GUARD, || lease(&store)).await;
    for i in 0..250 {
        push(&fake, i);
    }
    until(
        || {
            format!(
                "100 answers before the kill (have {})",
                answers(&fake).len()
            )
        },
        GUARD,
        || (answers(&fake).len() >= 100).then_some(()),
    )
    .await;
    let victim = nodes
        .iter()
        .position(|n| n.id == first.owner)
        .expect("the holder is one of the nodes");
    nodes[victim].gw.kill();
    // What the kill cut in its send may be sent once more, no more.
    let doubt = in_doubt(&*store, CHANNEL);
    for i in 250..500 {
        push(&fake, i);
    }
    let second = until(
        || format!("another node takes over from {}", first.owner),
        GUARD,
        || lease(&store).filter(|l| l.token > first.token),
    )
    .await;
    assert_ne!(second.owner, first.owner);
    assert!(nodes.iter().any(|n| n.id == second.owner));
    until(
        || {
            format!(
                "all 500 answered (have {}, in doubt {doubt:?})",
                answers(&fake).len()
            )
        },
        GUARD,
        || (answers(&fake).len() == 500).then_some(()),
    )
    .await;
    // Settled: nothing left waiting to be sent (a late double would show).
    until(
        || "the outbox settles".into(),
        GUARD,
        || {
            let s = store.outbox_stats(CHANNEL).expect("outbox stats");
            (s.depth == 0).then_some(())
        },
    )
    .await;
    let got = answers(&fake);
    for i in 0..500 {
        let t = token(i);
        let n = got.get(&t).copied().unwrap_or(0);
        if doubt.contains(&t) {
            assert!(
                (1..=2).contains(&n),
                "{t} in doubt at the kill, sent {n} times"
            );
        } else {
            assert_eq!(n, 1, "{t} sent {n} times, never in doubt");
        }
    }
    assert_eq!(
        fake.overlapping_polls(),
        0,
        "two nodes long-polled the bot at once"
    );
    assert!(
        fake.max_pollers() <= 1,
        "max pollers {}",
        fake.max_pollers()
    );
    // The survivors still agree on one holder.
    assert_eq!(lease(&store).map(|l| l.owner), Some(second.owner));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_with_webhook_deliveries_in_flight_delivers_all_without_repeating_an_attempt()
 {
    let pg = TestPostgres::start();
    let url = pg.database("hook_claims");
    let store = TestPostgres::store(&url);
    let rx = Receiver::start().await;
    // Every request is held until released: each node fills its
    // per-endpoint concurrency with deliveries in flight.
    rx.set_default(Reply::Hold);
    store
        .add_endpoint(&pincer::store::WebhookEndpoint {
            id: "ep_0123456789abcdef0123456789abcdef".into(),
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
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            Node::start(
                "cluster_child",
                &url,
                &format!("w{i}"),
                None,
                LEASE_MS,
                5_000,
            )
        })
        .collect();
    const EVENTS: usize = 200;
    for i in 0..EVENTS {
        store
            .append_message(
                &format!("s{}", i % 7),
                NewMessage {
                    role: "user".into(),
                    content: json!([{"type": "text", "text": format!("m{i}")}]),
                    event: Some("message.received"),
                    ..Default::default()
                },
            )
            .expect("append");
    }
    // Deliveries held in flight by more than one node.
    let deadline = tokio::time::Instant::now() + GUARD;
    let by_node = loop {
        let rows = sql(
            &url,
            "SELECT claimed_by, count(*) FROM webhook_deliveries
             WHERE status = 'in_flight' GROUP BY claimed_by ORDER BY claimed_by",
        )
        .await;
        if rows.len() >= 2 {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never in flight on two nodes: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim_id = by_node[0][0].clone().expect("claimed_by");
    let cut: Vec<(i64, i64)> = sql(
        &url,
        &format!(
            "SELECT id, attempts FROM webhook_deliveries
             WHERE status = 'in_flight' AND claimed_by = '{victim_id}'"
        ),
    )
    .await
    .iter()
    .map(|r| {
        (
            r[0].as_deref().and_then(|v| v.parse().ok()).expect("id"),
            r[1].as_deref()
                .and_then(|v| v.parse().ok())
                .expect("attempts"),
        )
    })
    .collect();
    assert!(!cut.is_empty());
    let victim = nodes
        .iter()
        .position(|n| n.id == victim_id)
        .expect("the claimer is one of the nodes");
    nodes[victim].gw.kill();
    rx.set_default(Reply::Status(200));
    rx.release();
    let pending = || async {
        sql(
            &url,
            "SELECT count(*) FROM webhook_deliveries WHERE status != 'delivered'",
        )
        .await[0][0]
            .clone()
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        if pending().await == "0" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never all delivered"
        );
        rx.release();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: usize = sql(&url, "SELECT count(*) FROM webhook_deliveries").await[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("count");
    assert!(total >= EVENTS, "{total} deliveries");
    // No (delivery, attempt) pair was ever sent twice.
    let received = rx.received();
    let mut pairs = BTreeSet::new();
    for r in &received {
        assert!(
            pairs.insert((r.msg_id().to_string(), r.attempt())),
            "({}, {}) sent twice",
            r.msg_id(),
            r.attempt()
        );
    }
    // The dead node's claims went to the survivors as new attempts.
    for (id, attempts) in &cut {
        let d = store
            .get_delivery(*id)
            .expect("delivery")
            .expect("delivery row");
        assert!(
            i64::from(d.attempts) > *attempts,
            "delivery {id}: attempts {} after the cut attempt {attempts}",
            d.attempts
        );
        let by = sql(
            &url,
            &format!("SELECT claimed_by FROM webhook_deliveries WHERE id = {id}"),
        )
        .await;
        assert_ne!(by[0][0].as_deref(), Some(victim_id.as_str()));
    }
    // The work was shared.
    let senders = sql(
        &url,
        "SELECT count(DISTINCT claimed_by) FROM webhook_deliveries WHERE status = 'delivered'",
    )
    .await;
    let senders: usize = senders[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("count");
    assert!(senders > 1, "only {senders} node sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_cannot_commit_and_stops_receiving() {
    let pg = TestPostgres::start();
    let url = pg.database("tg_paused");
    let store = TestPostgres::store(&url);
    let fake = FakeTelegram::start().await;
    let nodes = telegram_cluster(&url, &fake);
    let first = until(|| "a node takes the lease".into(), GUARD, || lease(&store)).await;
    let a = nodes
        .iter()
        .find(|n| n.id == first.owner)
        .expect("the holder is one of the nodes");
    // Paused mid long poll: the fake answers that poll with the next
    // messages while the node cannot read them.
    until(
        || "the holder long-polls".into(),
        GUARD,
        || (fake.pollers() == 1).then_some(()),
    )
    .await;
    a.signal("STOP");
    for i in 0..5 {
        push(&fake, i);
    }
    let second = until(
        || format!("another node takes over from the paused {}", first.owner),
        GUARD,
        || lease(&store).filter(|l| l.token > first.token),
    )
    .await;
    until(
        || format!("the new holder answers (have {:?})", answers(&fake)),
        GUARD,
        || (answers(&fake).len() == 5).then_some(()),
    )
    .await;
    a.signal("CONT");
    // The resumed node's first fenced write (the poll it got while paused,
    // or its lease renewal) is refused, counted and logged.
    let deadline = tokio::time::Instant::now() + GUARD;
    while a.metric("pincer_channel_lease_fenced_total", CHANNEL).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed node never hit the fence"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + GUARD;
    while a.metric("pincer_channel_lease_lost_total", CHANNEL).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed node never gave the account up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its receiver is stopped: the bot keeps one poller while new
    // messages are answered once each by the new holder.
    for i in 5..10 {
        push(&fake, i);
    }
    until(
        || format!("10 answers (have {:?})", answers(&fake)),
        GUARD,
        || (answers(&fake).len() == 10).then_some(()),
    )
    .await;
    let got = answers(&fake);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(fake.overlapping_polls(), 0, "two pollers at once");
    // Nothing was committed under the paused node's token: every inbox
    // row and the cursor carry the new holder's.
    let fences = sql(
        &url,
        "SELECT DISTINCT fence FROM channel_inbox WHERE channel = 'telegram'
         UNION SELECT DISTINCT fence FROM channel_cursors WHERE channel = 'telegram'",
    )
    .await;
    let fences: BTreeSet<Option<String>> = fences.into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        fences,
        BTreeSet::from([Some(second.token.to_string())]),
        "commits under token {} (paused node) or none at all",
        first.token
    );
    assert_eq!(
        lease(&store).map(|l| (l.owner, l.token)),
        Some((second.owner, second.token))
    );
}

#[test]
fn a_takeover_bumps_the_token_and_fences_the_old_holders_commits_and_renewals() {
    let pg = TestPostgres::start();
    let url = pg.database("fence");
    let node = |id: &str| {
        PgStore::connect(
            &url,
            &pincer::store::StoreConfig {
                node_id: Some(id.into()),
                ..TestPostgres::config(&url)
            },
        )
        .expect("store")
    };
    let (a, b) = (node("a"), node("b"));
    let msg = |id: &str| pincer::store::NewInbound {
        platform_id: id.into(),
        conversation: "c".into(),
        payload: "{}".into(),
    };
    let fa = a
        .lease_acquire("tg", 60_000)
        .expect("acquire")
        .expect("free");
    assert_eq!((fa.owner.as_str(), fa.token), ("a", 1));
    // Held: nobody else takes it.
    assert_eq!(b.lease_acquire("tg", 60_000).expect("acquire"), None);
    assert_eq!(
        a.commit_inbound_fenced("tg", "default", &[msg("1")], Some("c1"), &fa)
            .expect("fenced commit"),
        1
    );
    assert!(a.lease_renew(&fa, 60_000).expect("renew"));
    // A graceful stop releases it: b takes it at once, with a new token.
    a.lease_release(&fa).expect("release");
    let fb = b
        .lease_acquire("tg", 60_000)
        .expect("acquire")
        .expect("released");
    assert_eq!((fb.owner.as_str(), fb.token), ("b", 2));
    // The old holder can neither commit nor renew any more.
    match a.commit_inbound_fenced("tg", "default", &[msg("2")], Some("c2"), &fa) {
        Err(pincer::store::StoreError::Fenced(why)) => assert!(why.contains("token 2"), "{why}"),
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
    assert!(!a.lease_renew(&fa, 60_000).expect("renew"));
    use pincer::store::InboxStore;
    assert_eq!(
        a.inbox_cursor("tg", "default").expect("cursor").as_deref(),
        Some("c1"),
        "the refused commit left the cursor alone"
    );
    assert_eq!(a.inbox_pending("tg", 0, 10).expect("pending").len(), 1);
    assert_eq!(
        b.commit_inbound_fenced("tg", "default", &[msg("2")], Some("c2"), &fb)
            .expect("the new holder commits"),
        1
    );
    // A lease that ran out (by the server's clock) is free again.
    let fc = b.lease_acquire("other", 1).expect("acquire").expect("free");
    let deadline = std::time::Instant::now() + GUARD;
    let fd = loop {
        if let Some(f) = a.lease_acquire("other", 60_000).expect("acquire") {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "never ran out");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(fd.token, fc.token + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_releases_the_lease_at_once_and_another_node_takes_over() {
    let pg = TestPostgres::start();
    let url = pg.database("tg_release");
    let store = TestPostgres::store(&url);
    let fake = FakeTelegram::start().await;
    // A lease far longer than the test: only the release can hand it on.
    const LONG: u64 = 3_600_000;
    let gateway = |id: &str| {
        let dir = tempfile::tempdir().expect("tmp");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins");
        pincer_tests::cluster_leases::install_telegram(&plugins);
        let opts = pincer_tests::cluster_leases::node_options(
            dir.path(),
            &url,
            id,
            Some(fake.base_url()),
            LONG,
            5_000,
        );
        pincer_tests::gateway::TestGateway::start_with(opts, dir)
    };
    let mut g1 = gateway("g1").await;
    let first = until(|| "g1 takes the lease".into(), GUARD, || lease(&store)).await;
    assert_eq!(first.owner, "g1");
    let mut g2 = gateway("g2").await;
    push(&fake, 0);
    until(
        || "g1 answers".into(),
        GUARD,
        || (answers(&fake).len() == 1).then_some(()),
    )
    .await;
    g1.stop().await;
    // Released as the gateway stopped, not left to run out.
    let row = store.lease_row(CHANNEL).expect("row").expect("lease row");
    assert_eq!((row.owner.as_str(), row.expires_ms), ("g1", 0));
    let second = until(
        || "g2 takes over".into(),
        GUARD,
        || lease(&store).filter(|l| l.owner == "g2"),
    )
    .await;
    assert_eq!(second.token, first.token + 1);
    push(&fake, 1);
    until(
        || "g2 answers".into(),
        GUARD,
        || (answers(&fake).len() == 2).then_some(()),
    )
    .await;
    assert!(answers(&fake).values().all(|n| *n == 1));
    assert_eq!(fake.overlapping_polls(), 0);
    g2.stop().await;
}
