//! A channel whose plugin refuses its configuration (`error.config` from
//! `start`: the real WhatsApp plugin granted its secrets but without
//! `phone_number_id`) is `unconfigured` with the plugin's reason, and the
//! health monitor leaves it alone: restarting cannot fix a config, and
//! before, it was restarted up to the hourly cap and then given up.

use pincer::channels::ChannelState;
use pincer::channels::access::DmPolicy;
use pincer::clock::ManualClock;
use pincer::health::HealthConfig;
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{PluginSettings, RuntimeConfig};
use pincer_tests::TestRuntime;

const T0: u64 = 1_800_000_000_000;

fn health() -> HealthConfig {
    HealthConfig {
        check_interval_ms: 1_000,
        stale_threshold_ms: 3_000,
        restart_cooldown_ms: 1_000,
        max_restarts_per_hour: 3,
        restart_timeout_ms: 2_000,
        startup_grace_ms: 0,
        confirm_checks: 1,
    }
}

/// WhatsApp with every secret granted and `config` as given.
fn whatsapp(config: &[(&str, &str)]) -> PluginSettings {
    let secret = |v: &str| SecretSource::Value(v.to_string());
    PluginSettings {
        dm_policy: DmPolicy::Open,
        secrets: [
            ("access_token".to_string(), secret("EAAtoken")),
            ("app_secret".to_string(), secret("app-secret")),
            ("verify_token".to_string(), secret("verify")),
        ]
        .into(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_plugin_refuses_leaves_the_channel_unconfigured_not_restarted() {
    let clock = ManualClock::new(T0);
    let t = TestRuntime::new(
        RuntimeConfig {
            clock: clock.clone(),
            settings: [(
                "whatsapp".to_string(),
                whatsapp(&[("api_version", "v21.0")]),
            )]
            .into(),
            ..Default::default()
        },
        health(),
    );
    pincer_tests::whatsapp::install(&t.plugins_dir(), "http://127.0.0.1:9");
    assert!(t.runtime.load_dir().await.expect("load").is_empty());

    let snapshot = || pincer_tests::channel_health(&t.runtime, "whatsapp");
    let h = snapshot().await;
    assert_eq!(h.state, ChannelState::Unconfigured, "{h:?}");
    let why = h.last_error.clone().unwrap_or_default();
    assert!(why.contains("phone_number_id"), "{why}");
    assert!(h.missing_secrets.is_empty(), "{h:?}");

    // However long and often the monitor looks, it restarts nothing.
    for _ in 0..5 {
        clock.advance(60_000);
        t.runtime.health.check_once().await;
    }
    let h = snapshot().await;
    assert_eq!(
        (h.state, h.restarts_total),
        (ChannelState::Unconfigured, 0),
        "{h:?}"
    );
}
