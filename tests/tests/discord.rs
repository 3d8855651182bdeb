//! The Discord channel (`plugins/discord`, issue 12 sections 3 and 6)
//! through a real gateway on loopback, with the plugin built from source,
//! its Gateway WebSocket held by the host (`pincer:socket`), and
//! `pincer::fakes::discord::FakeDiscord` standing in for discord.com and
//! gateway.discord.gg. The echo agent answers with the user's text, so a
//! message in the fake's record proves the whole path: frame, socket event,
//! inbox, run, reply by REST.
//!
//! The fake knows the bot only by its token (in `Authorization` and in
//! Identify/Resume), so every established session and answered call shows
//! the host filled the token in; the plugin's config never holds it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pincer::fakes::discord::{DEFAULT_TOKEN, DiscordConfig, FakeDiscord, RestFault, SentMessage};
use pincer_tests::discord::{
    CHANNEL, gateway, gateway_with, install, settings, settings_for, started, texts_in, wait_texts,
};
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::{Value, json};

/// Every value in the plugin's key-value store, as text.
fn kv_values(g: &TestGateway) -> Vec<String> {
    let kv = g.gw().runtime.plugins.kv();
    kv.list_keys(CHANNEL, "", 10_000)
        .unwrap()
        .iter()
        .filter_map(|k| kv.get(CHANNEL, k).unwrap())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
}

/// The channel's entry in `channels.status`.
async fn channel_status(g: &TestGateway) -> Value {
    let mut admin = Client::admin(&g.url()).await;
    let status = admin.call("channels.status", json!({})).await;
    status["channels"][CHANNEL].clone()
}

/// The channel's last error, once it has one (the close event reaches the
/// plugin after the fake's close; polled, with a hang guard).
async fn last_error(g: &TestGateway) -> String {
    let runner = g.gw().runtime.channels.get(CHANNEL).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = runner.status().last_error {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no error shown: {:?}",
            runner.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_and_a_guild_mention_are_answered_and_the_rest_ignored() {
    let (fake, g) = started(DiscordConfig::default()).await;
    // Identify asked for GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES and
    // MESSAGE_CONTENT, with the token the host filled in (the fake accepts
    // nothing else).
    let stats = fake.gateway_stats();
    assert_eq!(stats.identifies.len(), 1);
    let intents = stats.identifies[0];
    for bit in [0, 9, 12, 15] {
        assert_ne!(intents & (1 << bit), 0, "intent bit {bit} in {intents:#b}");
    }
    let dm = fake.dm("700", "42", "hello there");
    let sent = wait_texts(&fake, "700", &["hello there"]).await;
    assert_eq!(sent[0].reply_to.as_deref(), Some(dm.as_str()));

    // In a guild: an unmentioned message and another bot's mention first,
    // then a person's mention. Messages of a conversation are handled in
    // order, so once the mention is answered the others were passed over.
    fake.guild_message("1", "800", "42", "just chatting");
    fake.bot_message("1", "800", "555", &format!("{} beep", fake.mention()));
    let asked = fake.guild_message(
        "1",
        "800",
        "43",
        &format!("{} what time is it?", fake.mention()),
    );
    let sent = wait_texts(&fake, "800", &["what time is it?"]).await;
    let answer = sent.iter().find(|m| m.channel_id == "800").unwrap();
    assert_eq!(answer.reply_to.as_deref(), Some(asked.as_str()));
    // Every REST call carried the filled-in token; none was refused.
    let calls = fake.calls();
    assert!(
        calls.iter().all(|c| c.status != Some(401)),
        "a call was refused"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.header("authorization") == Some(&format!("Bot {DEFAULT_TOKEN}")))
    );
    assert!(
        kv_values(&g).iter().all(|v| !v.contains(DEFAULT_TOKEN)),
        "the token reached the plugin's store"
    );
    let status = channel_status(&g).await;
    assert_eq!(status["lastError"], Value::Null, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_without_losing_or_doubling_an_event() {
    let (fake, _g) = started(DiscordConfig::default()).await;
    let first = fake.dm("700", "42", "before the drop");
    wait_texts(&fake, "700", &["before the drop"]).await;
    assert!(fake.drop_connection());
    // Dispatched while the connection is gone (or going), each from its
    // own user in its own DM: Discord keeps them for the session and
    // replays them on resume.
    let during: Vec<(String, String)> = (0..5)
        .map(|i| {
            let channel = format!("71{i}");
            let id = fake.dm(&channel, &format!("5{i}"), &format!("during {i}"));
            (channel, id)
        })
        .collect();
    let stats = fake.wait_established(2).await;
    assert_eq!(stats.identifies.len(), 1, "resumed, not identified again");
    assert_eq!(stats.resumes.len(), 1);
    let sent = fake
        .wait_sent("every message answered", |s| s.len() >= 6)
        .await;
    // Each user message answered once, with its own text.
    assert_eq!(texts_in(&sent, "700"), ["before the drop"]);
    assert_eq!(sent[0].reply_to.as_deref(), Some(first.as_str()));
    for (i, (channel, id)) in during.iter().enumerate() {
        let replies: Vec<&SentMessage> = sent.iter().filter(|m| &m.channel_id == channel).collect();
        assert_eq!(replies.len(), 1, "{channel}: {replies:?}");
        assert_eq!(replies[0].content, format!("during {i}"));
        assert_eq!(replies[0].reply_to.as_deref(), Some(id.as_str()));
    }
    fake.dm("720", "60", "after");
    let sent = wait_texts(&fake, "720", &["after"]).await;
    assert_eq!(sent.len(), 7, "nothing doubled: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeat_acks_reconnect_and_resume() {
    let (fake, _g) = started(DiscordConfig {
        heartbeat_interval_ms: 300,
        ..DiscordConfig::default()
    })
    .await;
    fake.wait_gateway("a heartbeat acked", |s| s.heartbeats >= 1)
        .await;
    fake.set_acks(false);
    // The next beat goes unanswered; the one after finds the zombie and
    // the plugin closes (non-1000) and resumes.
    let stats = fake
        .wait_gateway("a resume after missed ACKs", |s| !s.resumes.is_empty())
        .await;
    assert_eq!(stats.identifies.len(), 1);
    fake.set_acks(true);
    fake.wait_established(2).await;
    fake.dm("700", "42", "still there?");
    wait_texts(&fake, "700", &["still there?"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4004_stops_reconnecting_and_shows_a_clear_error_until_restarted() {
    let fake = FakeDiscord::start(DiscordConfig::default()).await;
    fake.close_next_identify(4004, "Authentication failed.");
    let g = gateway(settings(&fake)).await;
    let runner = g.gw().runtime.channels.get(CHANNEL).unwrap();
    fake.wait_gateway("a close", |s| !s.closes_sent.is_empty())
        .await;
    let error = last_error(&g).await;
    assert!(
        error.contains("4004") && error.contains("bot_token"),
        "{error}"
    );
    let status = channel_status(&g).await;
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("4004")),
        "{status}"
    );
    // Absence check: with a 100 ms backoff a reconnect would have come
    // long before this second passes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.gateway_stats().connections,
        1,
        "reconnected after 4004"
    );
    // Once fixed, an operator restart connects again.
    runner.restart(Duration::from_secs(30)).await.unwrap();
    fake.wait_established(1).await;
    fake.dm("700", "42", "back");
    wait_texts(&fake, "700", &["back"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_intents_4014_name_the_portal_switch() {
    let fake = FakeDiscord::start(DiscordConfig {
        message_content_allowed: false,
        ..DiscordConfig::default()
    })
    .await;
    let g = gateway(settings(&fake)).await;
    fake.wait_gateway("a close", |s| !s.closes_sent.is_empty())
        .await;
    let error = last_error(&g).await;
    assert!(
        error.contains("4014") && error.contains("MESSAGE CONTENT"),
        "{error}"
    );
    assert_eq!(fake.gateway_stats().closes_sent, vec![4014]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op7_reconnect_resumes_and_op9_identifies_again() {
    let (fake, _g) = started(DiscordConfig::default()).await;
    assert!(fake.reconnect());
    let stats = fake.wait_established(2).await;
    assert_eq!((stats.identifies.len(), stats.resumes.len()), (1, 1));
    fake.dm("700", "42", "after op 7");
    wait_texts(&fake, "700", &["after op 7"]).await;
    // A resumable op 9 resumes again; a non-resumable one identifies anew.
    assert!(fake.invalid_session(true));
    let stats = fake.wait_established(3).await;
    assert_eq!((stats.identifies.len(), stats.resumes.len()), (1, 2));
    assert!(fake.invalid_session(false));
    let stats = fake.wait_established(4).await;
    assert_eq!(stats.identifies.len(), 2, "{stats:?}");
    fake.dm("700", "42", "after op 9");
    wait_texts(&fake, "700", &["after op 7", "after op 9"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stream_by_editing_in_place_with_typing_shown() {
    let fake = FakeDiscord::start(DiscordConfig::default()).await;
    let _g = gateway_with(settings(&fake), |o| o.agent.echo_word_delay_ms = 300).await;
    fake.wait_established(1).await;
    let words = "one two three four five six seven eight";
    fake.dm("700", "42", words);
    let sent = fake
        .wait_sent("the streamed reply complete", |s| {
            s.len() == 1 && s[0].content == words && s[0].edits > 0
        })
        .await;
    // One message, opened early and edited until it read the whole answer.
    assert_eq!(sent.len(), 1);
    let edits = fake.calls_of("edit_message");
    assert!(!edits.is_empty());
    assert!(edits.iter().all(|c| c.status == Some(200)));
    assert_eq!(fake.calls_of("create_message")[0].status, Some(200));
    assert!(fake.typing().iter().any(|c| c == "700"), "no typing shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replies_are_split_at_2000_characters() {
    let (fake, _g) = started(DiscordConfig::default()).await;
    let paragraph =
        |c: char| std::iter::repeat_n(format!("{c}{c}{c}{c} "), 300).collect::<String>();
    let text = format!(
        "{}\n\n{}\n\n{}",
        paragraph('a'),
        paragraph('b'),
        paragraph('c')
    );
    assert!(text.chars().count() > 4_000);
    fake.dm("700", "42", &text);
    let sent = fake
        .wait_sent("the split reply", |s| {
            s.iter().any(|m| m.content.contains("cccc"))
        })
        .await;
    assert!(sent.len() >= 3, "{} messages", sent.len());
    for m in &sent {
        assert!(m.content.chars().count() <= 2_000, "{}", m.content.len());
    }
    let joined = sent
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squash(&joined), squash(&text));
    // No call was refused for its length.
    assert!(
        fake.calls_of("create_message")
            .iter()
            .all(|c| c.status == Some(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_with_retry_after() {
    let (fake, _g) = started(DiscordConfig::default()).await;
    fake.fail_next("create_message", RestFault::RateLimited(1.5));
    fake.dm("700", "42", "slow down");
    wait_texts(&fake, "700", &["slow down"]).await;
    let calls = fake.calls_of("create_message");
    assert_eq!(calls.len(), 2, "one 429 and one retry");
    assert_eq!(calls[0].status, Some(429));
    assert_eq!(calls[1].status, Some(200));
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(1_500),
        "retried after {gap:?}, before retry_after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_reload_keeps_the_session() {
    let (fake, g) = started(DiscordConfig::default()).await;
    fake.dm("700", "42", "before the reload");
    wait_texts(&fake, "700", &["before the reload"]).await;
    let plugins = g.gw().runtime.plugins.clone();
    let before = plugins.current(CHANNEL).unwrap().sha256.clone();
    // A new version: the same component under a new manifest version.
    let dir = g.dir.path().join("plugins");
    let manifest = std::fs::read_to_string(dir.join("discord.toml")).unwrap();
    std::fs::write(
        dir.join("discord.toml"),
        manifest.replace("version = \"0.1.0\"", "version = \"0.1.1\""),
    )
    .unwrap();
    let mut wasm = std::fs::read(dir.join("discord.wasm")).unwrap();
    // A custom section changes the hash without changing the code.
    wasm.extend_from_slice(&[0, 6, 5, b'r', b'e', b'l', b'o', b'd']);
    std::fs::write(dir.join("discord.wasm"), wasm).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while plugins.current(CHANNEL).unwrap().sha256 == before {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.dm("700", "42", "after the reload");
    wait_texts(&fake, "700", &["before the reload", "after the reload"]).await;
    let stats = fake.gateway_stats();
    // The host kept the socket across the reload, or the plugin resumed
    // it; never a fresh Identify that would drop events.
    assert_eq!(stats.identifies.len(), 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_a_lost_answer_posts_once_by_its_nonce() {
    let (fake, _g) = started(DiscordConfig::default()).await;
    // The streamed first attempt fails outright; the outbox takes the
    // reply over, and its first attempt is posted but the answer is lost.
    fake.fail_next("create_message", RestFault::Status(502));
    fake.fail_next("create_message", RestFault::LostAnswer);
    fake.dm("700", "42", "exactly once");
    let calls = fake.wait_for_calls("create_message", 3).await;
    let statuses: Vec<_> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(502), Some(502), Some(200)]);
    // The outbox's retry carries the same nonce (its row's key), enforced,
    // so Discord answers with the message already posted.
    let nonce = calls[1].params["nonce"]
        .as_str()
        .expect("a nonce")
        .to_string();
    assert!(nonce.len() <= 25, "{nonce}");
    assert_eq!(calls[2].params["nonce"], json!(nonce));
    assert_eq!(calls[2].params["enforce_nonce"], json!(true));
    assert_eq!(texts_in(&fake.sent(), "700"), ["exactly once"]);
}

// ----- the fake itself (no gateway): what the tests above rely on -----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    use futures::StreamExt;
    loop {
        match ws.next().await.expect("a frame").expect("no error") {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                return serde_json::from_str(t.as_str()).unwrap();
            }
            tokio_tungstenite::tungstenite::Message::Close(f) => {
                return json!({"closed": f.map(|f| u16::from(f.code))});
            }
            _ => {}
        }
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_gateway_identifies_resumes_with_a_replay_and_refuses_bad_tokens() {
    let fake = FakeDiscord::start(DiscordConfig::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(fake.gateway_url())
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["op"], 10);
    send_json(
        &mut ws,
        json!({"op": 2, "d": {"token": DEFAULT_TOKEN, "intents": 37377}}),
    )
    .await;
    let ready = next_json(&mut ws).await;
    assert_eq!(
        (ready["t"].as_str(), ready["s"].as_u64()),
        (Some("READY"), Some(1))
    );
    let sid = ready["d"]["session_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"op": 1, "d": 1})).await;
    assert_eq!(next_json(&mut ws).await["op"], 11);
    fake.dm("7", "42", "one");
    assert_eq!(next_json(&mut ws).await["s"], 2);
    assert!(fake.drop_connection());
    fake.wait_gateway("detached", |s| !s.attached).await;
    fake.dm("7", "42", "two");
    fake.dm("7", "42", "three");
    let (mut ws, _) = tokio_tungstenite::connect_async(fake.gateway_url())
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["op"], 10);
    send_json(
        &mut ws,
        json!({"op": 6, "d": {"token": DEFAULT_TOKEN, "session_id": sid, "seq": 2}}),
    )
    .await;
    let replay: Vec<Value> = vec![next_json(&mut ws).await, next_json(&mut ws).await];
    assert_eq!(replay[0]["d"]["content"], "two");
    assert_eq!(replay[1]["d"]["content"], "three");
    assert_eq!(next_json(&mut ws).await["t"], "RESUMED");
    // A bad token is closed with 4004.
    let (mut bad, _) = tokio_tungstenite::connect_async(fake.gateway_url())
        .await
        .unwrap();
    next_json(&mut bad).await;
    send_json(
        &mut bad,
        json!({"op": 2, "d": {"token": "nope", "intents": 1}}),
    )
    .await;
    assert_eq!(next_json(&mut bad).await, json!({"closed": 4004}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_bot_answers_through_the_fake() {
    let fake = FakeDiscord::start(DiscordConfig::default()).await;
    let bot = pincer::fakes::discord::bare_bot(
        fake.api_base().to_string(),
        fake.gateway_url().to_string(),
        DEFAULT_TOKEN.to_string(),
    );
    fake.wait_established(1).await;
    fake.dm("9", "42", "ping");
    wait_texts(&fake, "9", &["ping"]).await;
    assert_eq!(
        bot.stats.errors.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

// ----- kill -9 during traffic -----

/// Env vars of [`kill_child`]: its data directory, the fake's REST base
/// and gateway URL.
const KILL_DIR: &str = "PINCER_DISCORD_KILL_DIR";
const KILL_API: &str = "PINCER_DISCORD_KILL_API";
const KILL_GW: &str = "PINCER_DISCORD_KILL_GW";

/// Not a test: the gateway the kill test starts and kills (the fake lives
/// in the parent, so it outlives every kill).
#[test]
#[ignore]
fn kill_child() {
    let (Ok(dir), Ok(api), Ok(gw)) = (
        std::env::var(KILL_DIR),
        std::env::var(KILL_API),
        std::env::var(KILL_GW),
    ) else {
        return;
    };
    let rt = pincer_tests::gateway::child_runtime();
    rt.block_on(async move {
        let mut settings = settings_for(&api, &gw, DEFAULT_TOKEN);
        settings.queue.send_interval_ms = 1;
        settings.queue.send_burst = 1000;
        settings.queue.retry_base_ms = 20;
        settings.queue.retry_max_ms = 200;
        let mut opts = pincer::gateway::launch::Options::new(Path::new(&dir));
        opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
        opts.watch_settle = Duration::from_millis(100);
        opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
        opts.gateway.runs.sender_per_minute = u32::MAX;
        opts.gateway.runs.sender_burst = u32::MAX;
        opts.plugins.insert(CHANNEL.into(), settings);
        let running = pincer_tests::gateway::start(opts).await.expect("starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_traffic_loses_and_doubles_nothing() {
    const N: usize = 60;
    const KILLS: usize = 3;
    let fake = FakeDiscord::start(DiscordConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("plugins"));
    let env = [
        (KILL_DIR, dir.path().to_str().unwrap()),
        (KILL_API, fake.api_base()),
        (KILL_GW, fake.gateway_url()),
    ];
    let mut child = pincer_tests::gateway::ChildGateway::spawn("kill_child", &env);
    fake.wait_established(1).await;
    // Every message from its own user in its own DM, dispatched while the
    // gateway is answering and being killed.
    let mut asked = Vec::new();
    let mut established = 1;
    for k in 0..KILLS {
        for i in 0..N / KILLS {
            let n = k * (N / KILLS) + i;
            let channel = format!("{}", 9_000 + n);
            let id = fake.dm(&channel, &format!("{}", 8_000 + n), &format!("m{n}"));
            asked.push((channel, id, format!("m{n}")));
        }
        // Kill once a few of this round are answered, mid-traffic.
        let target = k * (N / KILLS) + 3;
        fake.wait_sent("answers before the kill", |s| s.len() >= target)
            .await;
        child.kill();
        child = pincer_tests::gateway::ChildGateway::spawn("kill_child", &env);
        established += 1;
        fake.wait_established(established).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let sent = loop {
        let s = fake.sent();
        let missing: Vec<&String> = asked
            .iter()
            .map(|(c, _, _)| c)
            .filter(|c| !s.iter().any(|m| &m.channel_id == *c))
            .collect();
        if missing.is_empty() {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            let mut counts = BTreeMap::<&str, usize>::new();
            for m in &s {
                *counts.entry(m.channel_id.as_str()).or_default() += 1;
            }
            let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
            let store = pincer_tests::test_store::open(dir.path());
            let inbox: Vec<String> = store
                .inbox_pending(CHANNEL, 0, 1000)
                .unwrap()
                .iter()
                .map(|r| format!("{} {}", r.seq, r.conversation))
                .collect();
            let outbox: Vec<String> = store
                .outbox_rows(CHANNEL, 1000)
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {} {:?}",
                        r.id, r.status, r.conversation, r.last_error
                    )
                })
                .collect();
            let session = store
                .get(CHANNEL, "gateway")
                .unwrap()
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            eprintln!("data dir kept: {}", dir.path().display());
            std::mem::forget(dir);
            panic!(
                "unanswered {missing:?}; doubled {doubled:?}; inbox {inbox:?} ({:?}); outbox {outbox:?}; session {session:?}; gateway {:?}; nonces of doubled {:?}",
                store.inbox_stats(CHANNEL),
                fake.gateway_stats(),
                s.iter()
                    .filter(|m| counts[m.channel_id.as_str()] > 1)
                    .map(|m| (&m.channel_id, &m.nonce))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Settle: the outbox may still retry an in-doubt send; the fake's
    // nonce answers it with the message already posted.
    let stats = fake.gateway_stats();
    child.kill();
    // Nothing lost: every question answered with its own text. Doubles:
    // a retried send carries the same nonce and the fake (as Discord with
    // `enforce_nonce`) answers it with the message already posted, so a
    // second message for one question can only come from two different
    // keys. The host gives a piece streamed directly (`s...`) and the same
    // text re-sent through the outbox after a kill (`o...`) different keys
    // (channels/reply.rs, pincer:delivery): counted and reported here, not
    // the plugin's doing.
    let mut doubled = 0;
    for (channel, id, text) in &asked {
        let replies: Vec<&SentMessage> = sent.iter().filter(|m| &m.channel_id == channel).collect();
        assert!(!replies.is_empty(), "{channel} unanswered");
        for r in &replies {
            assert_eq!(&r.content, text);
            assert_eq!(r.reply_to.as_deref(), Some(id.as_str()));
        }
        if replies.len() > 1 {
            doubled += replies.len() - 1;
            let mut nonces: Vec<&str> = replies.iter().filter_map(|r| r.nonce.as_deref()).collect();
            nonces.sort_unstable();
            nonces.dedup();
            assert_eq!(
                nonces.len(),
                replies.len(),
                "{channel}: a nonce posted twice: {replies:?}"
            );
        }
    }
    eprintln!(
        "kill -9 x{KILLS}: {N} questions, {} answers, {doubled} doubled by a change of idempotency key",
        fake.sent().len()
    );
    // Every restart resumed the session from the kv the plugin kept.
    assert_eq!(stats.identifies.len(), 1, "{stats:?}");
    assert_eq!(stats.resumes.len(), KILLS, "{stats:?}");
}
