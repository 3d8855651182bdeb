//! Liveness is contact with the platform: a quiet poll channel stays up over
//! many stale thresholds with no restart, a channel whose polls keep
//! failing is restarted with the cause shown and recovers; a channel whose
//! declared secrets are not granted is `unconfigured`, not started and not
//! restarted, and starts once they are granted.

use std::sync::Arc;
use std::time::Duration;

use pincer::channels::ChannelState;
use pincer::channels::access::DmPolicy;
use pincer::clock::{Clock, ManualClock};
use pincer::health::{ChannelHealth, HealthConfig};
use pincer::plugins::{Limits, PluginSettings, RuntimeConfig};
use pincer_tests::{TestRuntime, install_plugin};

const T0: u64 = 1_800_000_000_000;
const HANG_GUARD: Duration = Duration::from_secs(120);

fn health() -> HealthConfig {
    HealthConfig {
        check_interval_ms: 1_000,
        stale_threshold_ms: 3_000,
        restart_cooldown_ms: 1_000,
        max_restarts_per_hour: 3,
        restart_timeout_ms: 2_000,
        startup_grace_ms: 0,
        confirm_checks: 2,
    }
}

fn settings() -> PluginSettings {
    PluginSettings {
        dm_policy: DmPolicy::Open,
        limits: Some(Limits {
            poll_wait_ms: 100,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn runtime(clock: Arc<ManualClock>, settings: PluginSettings) -> TestRuntime {
    TestRuntime::new(
        RuntimeConfig {
            clock,
            settings: [("testchan".to_string(), settings)].into(),
            ..Default::default()
        },
        health(),
    )
}

async fn snapshot(t: &TestRuntime) -> ChannelHealth {
    pincer_tests::channel_health(&t.runtime, "testchan").await
}

/// Wait until the channel's status satisfies `f` (it changes when a poll
/// returns).
async fn until(t: &TestRuntime, what: &str, f: impl Fn(&ChannelHealth) -> bool) -> ChannelHealth {
    pincer_tests::until_health(&t.runtime, "testchan", what, HANG_GUARD, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_poll_channel_stays_up_and_a_failing_one_is_restarted_then_recovers() {
    let clock = ManualClock::new(T0);
    let t = runtime(clock.clone(), settings()).await;
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let monitor = &t.runtime.health;

    // 20 steps of 1 s against a 3 s stale threshold: nobody writes, every
    // poll returns empty, and that contact keeps the channel healthy.
    for _ in 0..20 {
        clock.advance(1_000);
        let now = Clock::now_ms(&*clock);
        until(&t, "a poll after the clock moved", |h| {
            h.last_contact_at.is_some_and(|c| c >= now)
        })
        .await;
        monitor.check_once().await;
    }
    let h = snapshot(&t).await;
    assert_eq!(h.restarts_total, 0, "a quiet channel was restarted: {h:?}");
    assert_eq!(h.state, ChannelState::Running);

    // Now every poll fails: no contact, the cause is shown, and after the
    // threshold (confirmed) it is restarted.
    let fails = serde_json::Value::from(vec!["auth"; 1000]).to_string();
    t.runtime
        .plugins
        .kv()
        .set("testchan", "fail/poll", fails.as_bytes())
        .expect("fail");
    let h = until(&t, "a failed poll", |h| h.poll_errors > 0).await;
    assert!(
        h.last_error.as_deref().unwrap_or("").contains("auth"),
        "{h:?}"
    );
    clock.advance(4_000);
    monitor.check_once().await;
    monitor.check_once().await;
    let h = snapshot(&t).await;
    assert_eq!(h.restarts_total, 1, "{h:?}");

    // The platform answers again: contact resumes and the channel is healthy.
    t.runtime
        .plugins
        .kv()
        .delete("testchan", "fail/poll")
        .expect("clear");
    let now = Clock::now_ms(&*clock);
    until(&t, "contact after recovery", |h| {
        h.poll_errors == 0 && h.last_contact_at.is_some_and(|c| c >= now)
    })
    .await;
    monitor.check_once().await;
    let h = snapshot(&t).await;
    assert!(h.healthy && h.state == ChannelState::Running, "{h:?}");
    assert_eq!(h.restarts_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_channel_is_not_started_until_its_secrets_are_granted() {
    let clock = ManualClock::new(T0);
    let t = runtime(clock.clone(), settings()).await;
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    // The same channel, declaring a secret the operator has not granted.
    let manifest = t.plugins_dir().join("testchan.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, format!("secrets = [\"bot_token\"]\n{text}")).expect("write");
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let runner = t.runtime.channels.get("testchan").expect("runner");
    let h = snapshot(&t).await;
    assert_eq!(h.state, ChannelState::Unconfigured, "{h:?}");
    assert_eq!(h.missing_secrets, vec!["bot_token".to_string()]);
    assert!(
        !runner.receiver_alive().await,
        "an unconfigured channel polls"
    );
    // The monitor leaves it alone, however long it is quiet.
    clock.advance(60_000);
    t.runtime.health.check_once().await;
    t.runtime.health.check_once().await;
    let h = snapshot(&t).await;
    assert_eq!((h.state, h.restarts_total), (ChannelState::Unconfigured, 0));
    let status = serde_json::to_value(&h).expect("json");
    assert_eq!(status["state"], "unconfigured");
    assert_eq!(status["missingSecrets"][0], "bot_token");

    // Granted (a restart with the new settings): it starts and polls.
    let mut granted: PluginSettings = serde_json::from_value(serde_json::json!({
        "dm_policy": "open",
        "secrets": {"bot_token": "123:abc"},
    }))
    .expect("settings");
    granted.limits = settings().limits;
    let t2 = TestRuntime::new(
        RuntimeConfig {
            clock: clock.clone(),
            settings: [("testchan".to_string(), granted)].into(),
            ..Default::default()
        },
        health(),
    );
    std::fs::copy(
        t.plugins_dir().join("testchan.wasm"),
        t2.plugins_dir().join("testchan.wasm"),
    )
    .expect("copy");
    std::fs::copy(&manifest, t2.plugins_dir().join("testchan.toml")).expect("copy");
    assert!(t2.runtime.load_dir().await.expect("load").is_empty());
    let h = snapshot(&t2).await;
    assert_eq!(h.state, ChannelState::Running, "{h:?}");
    assert!(h.missing_secrets.is_empty());
    assert!(
        t2.runtime
            .channels
            .get("testchan")
            .expect("runner")
            .receiver_alive()
            .await
    );
}
