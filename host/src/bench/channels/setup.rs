//! What the channel benchmarks install and configure: the bundled
//! `telegram`, `whatsapp` and `slack` components with their manifests pointed at the
//! loopback fakes, the operator settings of each bot, and the gateway they
//! run in.
//!
//! The density run serves every Telegram bot from one `telegram` plugin,
//! one account per bot ([`telegram_bots`] writes that configuration).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::channels::access::DmPolicy;
use crate::fakes::slack::FakeSlack;
use crate::fakes::telegram::{FakeTelegram, TelegramBot};
use crate::fakes::whatsapp::FakeWhatsApp;
use crate::gateway::launch::{self, Options, Running};
use crate::plugins::manifest::SecretSource;
use crate::plugins::{HttpOverrides, PluginSettings};

/// The gateway token of every bench gateway.
pub(super) const TOKEN: &str = "bench";

/// The shipped Telegram manifest's host list.
const TG_HOSTS: &str = r#"allowed_hosts = ["https://api.telegram.org"]"#;
/// The shipped WhatsApp manifest's host list.
const WA_HOSTS: &str =
    r#"allowed_hosts = ["https://graph.facebook.com", "https://lookaside.fbsbx.com"]"#;
/// The shipped Slack manifest's host list.
const SLACK_HOSTS: &str = r#"allowed_hosts = ["https://slack.com", "https://files.slack.com", "wss://wss-primary.slack.com", "wss://wss-backup.slack.com"]"#;

/// The bundled component and manifest of plugin `name`.
pub(super) fn bundled(name: &str) -> anyhow::Result<(&'static [u8], &'static str)> {
    crate::bundled::BUNDLED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, wasm, toml)| (*wasm, *toml))
        .with_context(|| format!("plugin `{name}` is not bundled"))
}

/// Replace `from` in `manifest`, failing if the shipped text moved.
pub(super) fn rewrite(manifest: &str, from: &str, to: &str, what: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        manifest.contains(from),
        "the bundled {what} manifest no longer contains `{from}`"
    );
    Ok(manifest.replacen(from, to, 1))
}

/// Install the bundled telegram plugin into `plugins` as each of `names`
/// (the same component bytes, so the compile cache is shared), its
/// manifest's hosts widened to loopback (a secret is only filled in for the
/// manifest's own hosts).
pub(super) fn install_telegram(plugins: &Path, names: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let (wasm, toml) = bundled("telegram")?;
    let widened = rewrite(
        toml,
        TG_HOSTS,
        r#"allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]"#,
        "telegram",
    )?;
    for name in names {
        let manifest = rewrite(
            &widened,
            "name = \"telegram\"",
            &format!("name = {name:?}"),
            "telegram",
        )?;
        crate::atomic_file::write(&plugins.join(format!("{name}.toml")), manifest.as_bytes())?;
        crate::atomic_file::write(&plugins.join(format!("{name}.wasm")), wasm)?;
    }
    Ok(())
}

/// Install the bundled whatsapp plugin with its Graph hosts replaced by
/// `fake_base`.
pub(super) fn install_whatsapp(plugins: &Path, fake_base: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let (wasm, toml) = bundled("whatsapp")?;
    let manifest = rewrite(
        toml,
        WA_HOSTS,
        &format!("allowed_hosts = [{fake_base:?}]"),
        "whatsapp",
    )?;
    crate::atomic_file::write(&plugins.join("whatsapp.toml"), manifest.as_bytes())?;
    crate::atomic_file::write(&plugins.join("whatsapp.wasm"), wasm)?;
    Ok(())
}

/// Install the bundled slack plugin with its Slack hosts replaced by
/// `fake_base`.
pub(super) fn install_slack(plugins: &Path, fake_base: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let (wasm, toml) = bundled("slack")?;
    let manifest = rewrite(
        toml,
        SLACK_HOSTS,
        &format!("allowed_hosts = [{fake_base:?}]"),
        "slack",
    )?;
    crate::atomic_file::write(&plugins.join("slack.toml"), manifest.as_bytes())?;
    crate::atomic_file::write(&plugins.join("slack.wasm"), wasm)?;
    Ok(())
}

/// An outbound HTTP budget that never binds: the throughput runs measure
/// the gateway, not the default 20 requests/s per plugin.
pub(super) fn unmetered() -> Option<HttpOverrides> {
    Some(HttpOverrides {
        rate_per_sec: Some(1_000_000),
        burst: Some(1_000_000),
        max_response_bytes: None,
    })
}

/// The operator settings of one Telegram bot against `fake`: its token by
/// value, `api_base` at the fake, access policy `open`, `extra` config.
pub(super) fn telegram_settings(
    fake: &FakeTelegram,
    bot: &TelegramBot,
    extra: &[(&str, &str)],
) -> PluginSettings {
    let mut config: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config.insert("api_base".into(), fake.base_url().into());
    PluginSettings {
        allowed_hosts: Some(vec![
            "https://api.telegram.org".into(),
            "http://127.0.0.1:*".into(),
        ]),
        secrets: [(
            "bot_token".to_string(),
            SecretSource::Value(bot.token().into()),
        )]
        .into(),
        config,
        dm_policy: DmPolicy::Open,
        http: unmetered(),
        ..Default::default()
    }
}

/// The plugin settings for `bots`, one polling bot each: one `telegram`
/// plugin whose `default` account is the first bot and whose
/// `accounts.bNNNNN` are the others, each with its own token (multi-account
/// channels: one plugin, one runner and one poll loop per account).
pub(super) fn telegram_bots(
    fake: &FakeTelegram,
    bots: &[TelegramBot],
) -> BTreeMap<String, PluginSettings> {
    let Some((first, rest)) = bots.split_first() else {
        return BTreeMap::new();
    };
    let mut settings = telegram_settings(fake, first, &[]);
    settings.accounts = rest
        .iter()
        .enumerate()
        .map(|(i, bot)| {
            let account = crate::plugins::AccountSettings {
                secrets: [(
                    "bot_token".to_string(),
                    SecretSource::Value(bot.token().into()),
                )]
                .into(),
                ..Default::default()
            };
            (format!("b{:05}", i + 1), account)
        })
        .collect();
    [("telegram".to_string(), settings)].into()
}

/// The operator settings of the fake's WhatsApp account (policy `open`).
pub(super) fn whatsapp_settings(wa: &FakeWhatsApp) -> PluginSettings {
    let c = wa.config();
    let secret = |v: &str| SecretSource::Value(v.to_string());
    PluginSettings {
        dm_policy: DmPolicy::Open,
        secrets: [
            ("access_token".to_string(), secret(&c.access_token)),
            ("app_secret".to_string(), secret(&c.app_secret)),
            ("verify_token".to_string(), secret(&c.verify_token)),
        ]
        .into(),
        config: [
            ("phone_number_id".to_string(), c.phone_number_id.clone()),
            ("api_version".to_string(), c.api_version.clone()),
            ("api_base".to_string(), wa.base_url().to_string()),
        ]
        .into(),
        http: unmetered(),
        ..Default::default()
    }
}

/// The operator settings of the fake's Slack app (Events API unless
/// `mode` is set, policy `open`).
pub(super) fn slack_settings(slack: &FakeSlack) -> PluginSettings {
    let c = slack.config();
    let secret = |v: &str| SecretSource::Value(v.to_string());
    PluginSettings {
        dm_policy: DmPolicy::Open,
        secrets: [
            ("bot_token".to_string(), secret(&c.bot_token)),
            ("signing_secret".to_string(), secret(&c.signing_secret)),
            ("app_token".to_string(), secret(&c.app_token)),
        ]
        .into(),
        config: [("api_base".to_string(), slack.api_url())].into(),
        http: unmetered(),
        ..Default::default()
    }
}

/// Gateway options for a data dir whose `plugins/` the caller filled: no
/// bundled plugins, the echo agent, token [`TOKEN`], loopback reachable,
/// listening on `port` (0: any).
pub(super) fn options(dir: &Path, port: u16) -> anyhow::Result<Options> {
    let mut opts = Options::new(dir);
    opts.install_bundled = false;
    opts.gateway.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    opts.gateway.token = Some(TOKEN.into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs = crate::netguard::NetGuard::parse_cidrs("127.0.0.0/8")
        .map_err(|e| anyhow::anyhow!("the loopback range: {e}"))?;
    Ok(opts)
}

/// Start the gateway.
pub(super) async fn start(opts: Options) -> anyhow::Result<Running> {
    launch::start(opts).await.context("starting the gateway")
}

/// A fresh data directory under the system's temp dir, removed when
/// dropped.
pub(super) struct DataDir(std::path::PathBuf);

impl DataDir {
    /// Create one.
    pub(super) fn new() -> anyhow::Result<DataDir> {
        let path =
            std::env::temp_dir().join(format!("pincer-bench-channels-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DataDir(path))
    }

    /// Its path.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free right now (for a webhook URL that must be known
/// before the gateway starts).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
