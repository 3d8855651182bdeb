//! Channels: a send completes while a long poll is in flight; inbound
//! messages flow and are deduplicated; the health monitor restarts stale
//! channels with confirmation, cooldown and an hourly cap, gives up
//! visibly, and an operator restart recovers.

use std::sync::Arc;
use std::time::Duration;

use pincer::channels::ChannelState;
use pincer::clock::ManualClock;
use pincer::events::Event;
use pincer::health::HealthConfig;
use pincer::plugins::RuntimeConfig;
use pincer::plugins::bindings::OutboundMessage;
use pincer_tests::{TestRuntime, install_plugin, wait_event};

const T0: u64 = 1_800_000_000_000;

fn health() -> HealthConfig {
    HealthConfig {
        check_interval_ms: 1_000,
        stale_threshold_ms: 5_000,
        restart_cooldown_ms: 15_000,
        max_restarts_per_hour: 2,
        restart_timeout_ms: 2_000,
        startup_grace_ms: 1_000,
        confirm_checks: 2,
    }
}

async fn testchan(clock: Arc<ManualClock>) -> TestRuntime {
    // The test channel's senders are strangers: let anyone through (the
    // access policy's default, pairing, is tested in hardening_access.rs).
    let settings = [(
        "testchan".to_string(),
        pincer::plugins::PluginSettings {
            dm_policy: pincer::channels::access::DmPolicy::Open,
            ..Default::default()
        },
    )]
    .into();
    let t = TestRuntime::new(
        RuntimeConfig {
            clock,
            settings,
            ..Default::default()
        },
        health(),
    );
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    assert!(t.runtime.load_dir().await.unwrap().is_empty());
    assert_eq!(
        t.runtime.channels.get("testchan").unwrap().status().state,
        ChannelState::Running
    );
    t
}

fn kv_set(t: &TestRuntime, key: &str, value: &str) {
    t.runtime
        .plugins
        .kv()
        .set("testchan", key, value.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_completes_while_poll_in_flight_and_inbound_is_deduplicated() {
    let t = testchan(ManualClock::new(T0)).await;
    let runner = t.runtime.channels.get("testchan").unwrap();
    assert!(runner.receiver_alive().await);
    // The receiver sits in a 25 s poll; a send must not wait for it.
    let send = t.runtime.channels.send(
        "testchan",
        OutboundMessage {
            conversation: "c".into(),
            thread: None,
            text: "out".into(),
            format: pincer::plugins::bindings::TextFormat::Plain,
            reply_to: None,
            attachments: Vec::new(),
        },
    );
    let id = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("send waited behind the poll")
        .unwrap();
    assert_eq!(id, "t1");

    let mut inbound = t.runtime.channels.subscribe_inbound();
    kv_set(
        &t,
        "inbox",
        r#"[{"id":"1","conversation":"c","text":"a"},{"id":"1","conversation":"c","text":"dup"},{"id":"2","conversation":"c","text":"b"}]"#,
    );
    let a = inbound.recv().await.unwrap();
    let b = inbound.recv().await.unwrap();
    assert_eq!(
        (a.text.as_str(), b.text.as_str()),
        ("a", "b"),
        "duplicate id must be dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_channel_restarted_with_cooldown_and_cap_then_gave_up_then_manual() {
    let clock = ManualClock::new(T0);
    let t = testchan(clock.clone()).await;
    let mut events = t.subscribe();
    let runner = t.runtime.channels.get("testchan").unwrap();
    let monitor = &t.runtime.health;
    kv_set(&t, "last_activity", "1");

    // Fresh start: in grace, nothing happens.
    monitor.check_once().await;
    assert_eq!(runner.status().restarts_total, 0);

    // Stale: the first check only counts, the second confirms and restarts.
    clock.advance(10_000);
    monitor.check_once().await;
    assert_eq!(runner.status().restarts_total, 0, "needs confirmation");
    monitor.check_once().await;
    assert_eq!(runner.status().restarts_total, 1);
    assert_eq!(runner.status().state, ChannelState::Running);
    wait_event(&mut events, |e| {
        matches!(e, Event::ChannelRestarted { manual: false, .. })
    })
    .await;
    assert!(runner.receiver_alive().await);

    // Still stale 10 s later, but within the 15 s cooldown: no restart.
    clock.advance(10_000);
    monitor.check_once().await;
    monitor.check_once().await;
    assert_eq!(runner.status().restarts_total, 1, "cooldown must hold");
    assert_eq!(runner.status().state, ChannelState::Unhealthy);

    // Past the cooldown: second restart.
    clock.advance(10_000);
    monitor.check_once().await;
    assert_eq!(runner.status().restarts_total, 2);

    // Past the cooldown again, but 2 restarts in the hour: give up, visibly.
    clock.advance(20_000);
    monitor.check_once().await;
    monitor.check_once().await;
    let s = runner.status();
    assert_eq!(s.state, ChannelState::GaveUp);
    assert_eq!(s.restarts_total, 2, "hourly cap must hold");
    assert!(s.last_error.unwrap().contains("gave up"));
    wait_event(
        &mut events,
        |e| matches!(e, Event::ChannelState { to, .. } if to == "gave-up"),
    )
    .await;
    let snap = monitor.snapshot().await;
    let h = snap.iter().find(|h| h.name == "testchan").unwrap();
    assert!(!h.healthy && h.restarts == 2);

    // Gave-up stays put: checks do nothing.
    clock.advance(60_000);
    monitor.check_once().await;
    assert_eq!(runner.status().state, ChannelState::GaveUp);

    // An operator restart clears it.
    kv_set(&t, "last_activity", &(T0 + 200_000).to_string());
    let h = monitor.restart_channel("testchan").await.unwrap();
    assert_eq!(h.state, ChannelState::Running);
    assert!(runner.receiver_alive().await);
    wait_event(&mut events, |e| {
        matches!(e, Event::ChannelRestarted { manual: true, .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_restart_ends_in_gave_up_and_manual_restart_recovers() {
    let clock = ManualClock::new(T0);
    let t = testchan(clock.clone()).await;
    let runner = t.runtime.channels.get("testchan").unwrap();
    let monitor = &t.runtime.health;
    kv_set(&t, "last_activity", "1");
    // The plugin's `restart` hangs past the restart timeout: the instance
    // is dropped and re-created, and the channel runs again.
    kv_set(&t, "restart", "hang");
    clock.advance(10_000);
    monitor.check_once().await;
    monitor.check_once().await;
    let s = runner.status();
    assert_eq!(s.restarts_total, 1);
    assert_eq!(s.state, ChannelState::Running);
    assert!(runner.receiver_alive().await);

    // Now re-creating fails too (`start` fails): the restart ends `failed`.
    kv_set(&t, "start", "fail");
    clock.advance(20_000);
    monitor.check_once().await;
    monitor.check_once().await;
    let s = runner.status();
    assert_eq!(s.restarts_total, 2);
    assert_eq!(s.state, ChannelState::Failed);
    assert!(s.last_error.unwrap().contains("start failure requested"));

    // Failed is retried after the cooldown, but the hourly cap (2) is
    // reached: gave-up, visibly.
    clock.advance(20_000);
    monitor.check_once().await;
    monitor.check_once().await;
    assert_eq!(runner.status().state, ChannelState::GaveUp);
    assert_eq!(runner.status().restarts_total, 2);

    // The operator fixes the cause and restarts: running again.
    t.runtime.plugins.kv().delete("testchan", "start").unwrap();
    t.runtime
        .plugins
        .kv()
        .delete("testchan", "restart")
        .unwrap();
    let h = monitor.restart_channel("testchan").await.unwrap();
    assert_eq!(h.state, ChannelState::Running);
    assert!(runner.receiver_alive().await);
}
