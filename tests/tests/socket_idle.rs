//! Socket accounts hold no plugin instance while idle (issue 12's memory
//! aim): the host keeps the WebSocket session and the timers, drops the
//! account's instance once no event came for `idle_instance_ms`
//! (`[sandbox.socket]` or the plugin's `socket = {..}`), and starts a fresh
//! one for the next frame or timer. The Discord plugin keeps its gateway
//! state (`session_id`, `seq`, heartbeat ACK tracking, resume URL) in kv,
//! so a fresh instance carries on where the dropped one stopped.
//!
//! Real parts throughout: the plugin built from source in a real wasmtime
//! sandbox, a real gateway on loopback, and
//! `pincer::fakes::discord::FakeDiscord` standing in for discord.com and its
//! Gateway. With `idle_instance_ms = 0` every event of these tests runs on
//! an instance created for it: the tests wait until the plugin has no live
//! instance at all (its gate is empty) before the event they check.

use std::time::Duration;

use pincer::fakes::discord::{DiscordConfig, FakeDiscord, GatewayStats};
use pincer::plugins::SocketOverrides;
use pincer_tests::discord::{self, CHANNEL, wait_texts};
use pincer_tests::gateway::TestGateway;

/// A fake (heartbeats every `heartbeat_ms`) and a gateway whose bot has
/// established its first session, idle instances dropped after
/// `idle_instance_ms` (`None`: the host's default).
async fn started(heartbeat_ms: u64, idle_instance_ms: Option<u64>) -> (FakeDiscord, TestGateway) {
    let cfg = DiscordConfig {
        heartbeat_interval_ms: heartbeat_ms,
        ..DiscordConfig::default()
    };
    discord::started_with(cfg, |s| {
        s.socket = idle_instance_ms.map(|ms| SocketOverrides {
            idle_instance_ms: Some(ms),
            ..Default::default()
        });
    })
    .await
}

/// Plugin instances alive now (pooled, or in a call).
fn live_instances(g: &TestGateway) -> usize {
    g.gw()
        .runtime
        .plugins
        .instances(CHANNEL)
        .expect("the discord plugin is loaded")
        .0
}

/// Wait until the plugin has no live instance: the account went quiet and
/// the host dropped it. Nothing signals a drop, so this polls (bounded).
async fn wait_no_instance(g: &TestGateway) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while live_instances(g) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle account still holds {} instance(s)",
            live_instances(g)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway session the plugin keeps in its kv (`session_id`, `seq`).
fn kept_session(g: &TestGateway) -> serde_json::Value {
    let raw = g
        .gw()
        .runtime
        .plugins
        .kv()
        .get(CHANNEL, "gateway")
        .unwrap()
        .expect("the plugin keeps its gateway session in kv");
    serde_json::from_slice(&raw).unwrap()
}

/// Wait for `n` more heartbeats than `before` saw; the stats then.
async fn heartbeats_after(fake: &FakeDiscord, before: &GatewayStats, n: usize) -> GatewayStats {
    let want = before.heartbeats + n;
    fake.wait_gateway(&format!("{want} heartbeats"), |s| s.heartbeats >= want)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_default_settings_a_quiet_bot_holds_no_instance_and_answers_the_next_message() {
    // Discord's own interval: no heartbeat falls in this test.
    let (fake, g) = started(41_250, None).await;
    wait_no_instance(&g).await;
    let runner = g.gw().runtime.channels.get(CHANNEL).unwrap();
    assert_eq!(runner.idle_instances(), 0);
    assert_eq!(
        runner.sockets().sessions().len(),
        1,
        "the socket stays open"
    );
    assert!(
        runner.sockets().timer_count() >= 1,
        "the heartbeat timer stays set"
    );
    fake.dm("700", "42", "are you there?");
    wait_texts(&fake, "700", &["are you there?"]).await;
    wait_no_instance(&g).await;
    fake.dm("700", "42", "again");
    wait_texts(&fake, "700", &["are you there?", "again"]).await;
    let stats = fake.gateway_stats();
    assert_eq!(
        stats.identifies.len(),
        1,
        "one session throughout: {stats:?}"
    );
    assert!(stats.resumes.is_empty(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_instance_answers_the_next_message_and_heartbeats_with_the_last_seq() {
    let (fake, g) = started(400, Some(0)).await;
    let runner = g.gw().runtime.channels.get(CHANNEL).unwrap();
    for round in 0..3 {
        let text = format!("message {round}");
        let channel = format!("70{round}");
        let msg = fake.dm(&channel, "42", &text);
        wait_texts(&fake, &channel, &[text.as_str()]).await;
        let sent = fake.sent();
        let reply = sent.iter().find(|m| m.channel_id == channel).unwrap();
        assert_eq!(reply.reply_to.as_deref(), Some(msg.as_str()));
        // The dispatch's seq is in the kept session once it was handled.
        let seq = kept_session(&g)["seq"].as_u64().unwrap();
        wait_no_instance(&g).await;
        assert_eq!(runner.idle_instances(), 0);
        // The next beat comes from an instance made for it, which knows
        // the seq only from kv.
        let before = fake.gateway_stats();
        let after = heartbeats_after(&fake, &before, 1).await;
        let beat = after.heartbeat_seqs[before.heartbeats];
        assert_eq!(beat, Some(seq), "round {round}: {after:?}");
    }
    let stats = fake.gateway_stats();
    assert_eq!(stats.identifies.len(), 1, "{stats:?}");
    assert!(stats.resumes.is_empty(), "every ACK was seen: {stats:?}");
    assert_eq!(stats.connections, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_instance_drops_sends_the_session_id_and_seq_of_the_last_event() {
    // Heartbeats rare enough that none comes between the drop and the
    // resume they would otherwise race with.
    let (fake, g) = started(41_250, Some(0)).await;
    for i in 0..3 {
        let channel = format!("71{i}");
        fake.dm(&channel, "42", &format!("before {i}"));
        wait_texts(&fake, &channel, &[format!("before {i}").as_str()]).await;
    }
    wait_no_instance(&g).await;
    let kept = kept_session(&g);
    let session_id = kept["session_id"].as_str().unwrap().to_string();
    let seq = kept["seq"].as_u64().unwrap();
    assert!(session_id.starts_with("fake-session-"), "{kept}");
    assert!(fake.drop_connection());
    // Dispatched while the connection is gone: replayed on resume.
    let during = fake.dm("720", "43", "during the drop");
    let stats = fake.wait_established(2).await;
    assert_eq!(
        stats.identifies.len(),
        1,
        "resumed, not identified: {stats:?}"
    );
    assert_eq!(stats.resumes, vec![(session_id, seq)], "{stats:?}");
    let sent = wait_texts(&fake, "720", &["during the drop"]).await;
    let reply = sent.iter().find(|m| m.channel_id == "720").unwrap();
    assert_eq!(reply.reply_to.as_deref(), Some(during.as_str()));
    wait_no_instance(&g).await;
    fake.dm("730", "44", "after");
    let sent = wait_texts(&fake, "730", &["after"]).await;
    assert_eq!(sent.len(), 5, "nothing lost or doubled: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_ack_is_seen_by_the_next_fresh_instance_and_the_session_resumes() {
    let (fake, g) = started(400, Some(0)).await;
    fake.dm("740", "42", "hello");
    wait_texts(&fake, "740", &["hello"]).await;
    let before = fake.gateway_stats();
    heartbeats_after(&fake, &before, 1).await;
    fake.set_acks(false);
    // One beat goes unanswered; the instance made for the next beat finds
    // `awaiting_ack` in kv: a zombie, closed and resumed.
    let stats = fake
        .wait_gateway("a resume after a missed ACK", |s| !s.resumes.is_empty())
        .await;
    assert_eq!(stats.identifies.len(), 1, "{stats:?}");
    let kept = kept_session(&g);
    assert_eq!(
        stats.resumes[0],
        (
            kept["session_id"].as_str().unwrap().to_string(),
            stats.resumes[0].1
        ),
        "the kept session was resumed: {stats:?}"
    );
    fake.set_acks(true);
    fake.wait_established(2).await;
    fake.dm("750", "43", "still there?");
    wait_texts(&fake, "750", &["still there?"]).await;
}
