//! A gateway serving the `slack` channel plugin (built from source)
//! against a [`FakeSlack`] on loopback, for the Slack tests.
//!
//! The fake itself lives in `pincer::fakes::slack` (next to the Telegram
//! and WhatsApp fakes, so `pincer bench channels` drives it too). The
//! plugin's manifest is installed as it ships, except that its Slack hosts
//! are replaced by the fake's address: the bot token is bound to the
//! manifest's hosts, so this is the only way the fake can receive it. The
//! operator's settings are the ones issue 12 section 5 shows, with
//! `api_base` pointing at the fake.

use std::path::Path;

use pincer::channels::access::DmPolicy;
use pincer::fakes::slack::{FakeSlack, SlackConfig};
use pincer::gateway::launch::Options;
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{Instance, PluginSettings};

use crate::gateway::{Client, TestGateway};

/// The gateway token the rig uses.
pub const TOKEN: &str = "secret";

/// The shipped manifest's host list, which [`install`] replaces.
pub const SHIPPED_HOSTS: &str = r#"allowed_hosts = ["https://slack.com", "https://files.slack.com", "wss://wss-primary.slack.com", "wss://wss-backup.slack.com"]"#;

/// Install the built `slack` plugin into `plugins` with its Slack hosts
/// replaced by `fake_base` (`http://127.0.0.1:PORT`).
pub fn install(plugins: &Path, fake_base: &str) {
    std::fs::create_dir_all(plugins).expect("plugins dir");
    let wasm = crate::built_plugin("slack");
    std::fs::copy(&wasm, plugins.join("slack.wasm")).expect("copy slack.wasm");
    let shipped = std::fs::read_to_string(wasm.with_extension("toml")).expect("slack.toml");
    assert!(
        shipped.contains(SHIPPED_HOSTS),
        "the shipped manifest's hosts changed: {shipped}"
    );
    let manifest = shipped.replace(SHIPPED_HOSTS, &format!("allowed_hosts = [{fake_base:?}]"));
    std::fs::write(plugins.join("slack.toml"), manifest).expect("write slack.toml");
}

/// The operator's settings for the fake's workspace under `policy`, with
/// `extra` config entries (`mode`).
pub fn settings(slack: &FakeSlack, policy: DmPolicy, extra: &[(&str, &str)]) -> PluginSettings {
    settings_for(slack.config(), &slack.api_url(), policy, extra)
}

/// [`settings`] from the fake's configuration and Web API URL (for a
/// gateway in a child process, which has no handle on the fake).
pub fn settings_for(
    c: &SlackConfig,
    api_url: &str,
    policy: DmPolicy,
    extra: &[(&str, &str)],
) -> PluginSettings {
    let secret = |v: &str| SecretSource::Value(v.to_string());
    let mut config: std::collections::BTreeMap<String, String> =
        [("api_base".to_string(), api_url.to_string())].into();
    for (k, v) in extra {
        config.insert(k.to_string(), v.to_string());
    }
    PluginSettings {
        dm_policy: policy,
        // Mentions in channels are answered for any member (the default
        // allowlist is empty).
        group_policy: pincer::channels::access::GroupPolicy::Open,
        secrets: [
            ("bot_token".to_string(), secret(&c.bot_token)),
            ("signing_secret".to_string(), secret(&c.signing_secret)),
            ("app_token".to_string(), secret(&c.app_token)),
        ]
        .into(),
        config: config.into_iter().collect(),
        ..Default::default()
    }
}

/// A gateway with the Slack channel and its fake.
pub struct SlackRig {
    /// The gateway.
    pub g: TestGateway,
    /// The fake Slack.
    pub slack: FakeSlack,
}

impl SlackRig {
    /// A rig in Events API mode with the default fake, the channel open to
    /// everyone.
    pub async fn start() -> SlackRig {
        Self::start_with(SlackConfig::default(), DmPolicy::Open, &[], |_| {}).await
    }

    /// A rig with fake settings `cfg`, the channel under `policy` with
    /// `extra` config, and `adjust` applied to the gateway options last.
    pub async fn start_with(
        cfg: SlackConfig,
        policy: DmPolicy,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut Options),
    ) -> SlackRig {
        Self::start_on(FakeSlack::start(cfg).await, policy, extra, adjust).await
    }

    async fn start_on(
        slack: FakeSlack,
        policy: DmPolicy,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut Options),
    ) -> SlackRig {
        let dir = tempfile::tempdir().expect("tempdir");
        install(&dir.path().join("plugins"), slack.base_url());
        let mut opts = Options::new(dir.path());
        opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
        opts.gateway.token = Some(TOKEN.into());
        opts.watch_settle = std::time::Duration::from_millis(100);
        // The fake is on loopback, which the address guard refuses by default.
        opts.allow_cidrs =
            pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback range");
        opts.plugins
            .insert("slack".into(), settings(&slack, policy, extra));
        adjust(&mut opts);
        let g = TestGateway::start_with(opts, dir).await;
        SlackRig { g, slack }
    }

    /// A rig in Socket Mode (`mode = "socket"`), the operator allowing the
    /// fake's `ws://` listener; `cfg` for the fake, `extra` config.
    pub async fn start_socket(cfg: SlackConfig, extra: &[(&str, &str)]) -> SlackRig {
        let mut config = vec![("mode", "socket")];
        config.extend_from_slice(extra);
        let slack = FakeSlack::start(cfg).await;
        let hosts = vec![
            slack.base_url().to_string(),
            slack.socket_base().to_string(),
        ];
        Self::start_on(slack, DmPolicy::Open, &config, move |opts| {
            if let Some(s) = opts.plugins.get_mut("slack") {
                s.allowed_hosts = Some(hosts);
            }
        })
        .await
    }

    /// `http://addr/channels/slack/webhook`.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/channels/slack/webhook", self.g.addr)
    }

    /// Calls the gateway made into the plugin so far.
    pub fn plugin_calls(&self) -> u64 {
        self.g
            .gw()
            .runtime
            .plugins
            .info("slack")
            .expect("slack loaded")
            .calls
    }

    /// A fresh, started instance of the loaded plugin (in its real sandbox,
    /// with the operator's config and secrets), for calling one export.
    pub async fn instance(&self) -> Instance {
        let version = self
            .g
            .gw()
            .runtime
            .plugins
            .current("slack")
            .expect("slack loaded");
        let config: Vec<(String, String)> = version.settings.config.clone().into_iter().collect();
        let mut inst = Instance::new(version).await.expect("instantiate slack");
        inst.start(&config).await.expect("start slack");
        inst
    }

    /// An admin protocol client.
    pub async fn admin(&self) -> Client {
        Client::admin(&self.g.url()).await
    }
}
