//! The Discord channel's test rig: a real gateway on loopback serving the
//! bundled `discord` plugin (built from source) against
//! `pincer::fakes::discord::FakeDiscord`, its manifest widened to the fake
//! and its bot configured by `pincer::fakes::discord::plugin` (the set-up
//! `pincer bench channels` uses too), with quick reconnects.

use std::path::Path;
use std::time::Duration;

use pincer::fakes::discord::plugin::{self, bot_settings};
use pincer::fakes::discord::{DiscordConfig, FakeDiscord, SentMessage};
use pincer::gateway::launch::Options;
use pincer::plugins::PluginSettings;

use crate::gateway::TestGateway;

/// The channel's plugin name.
pub const CHANNEL: &str = "discord";

/// Install the bundled discord plugin into `plugins`, its manifest widened
/// to the fake's loopback addresses.
pub fn install(plugins: &Path) {
    plugin::install(plugins).expect("install the discord plugin");
}

/// The bot's settings at a fake's `api_base` and `gateway_url` with
/// `token` ([`bot_settings`]), reconnecting after 100 ms instead of
/// seconds.
pub fn settings_for(api_base: &str, gateway_url: &str, token: &str) -> PluginSettings {
    let mut s = bot_settings(api_base, gateway_url, token);
    s.config.insert("reconnect_base_ms".into(), "100".into());
    s
}

/// [`settings_for`] the fake's own bot.
pub fn settings(fake: &FakeDiscord) -> PluginSettings {
    settings_for(fake.api_base(), fake.gateway_url(), &fake.config().token)
}

/// A gateway (token `secret`, loopback allowed) serving the discord
/// channel with `settings`.
pub async fn gateway(settings: PluginSettings) -> TestGateway {
    gateway_with(settings, |_| {}).await
}

/// [`gateway`], with `tune` adjusting the options before the start.
pub async fn gateway_with(
    settings: PluginSettings,
    tune: impl FnOnce(&mut Options),
) -> TestGateway {
    let dir = tempfile::tempdir().expect("temp dir");
    install(&dir.path().join("plugins"));
    let mut opts = Options::new(dir.path());
    opts.gateway.listen = "127.0.0.1:0".parse().expect("listen address");
    opts.gateway.token = Some("secret".into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs =
        pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback CIDR");
    opts.plugins.insert(CHANNEL.into(), settings);
    tune(&mut opts);
    TestGateway::start_with(opts, dir).await
}

/// A fake with `cfg` and a gateway whose bot has established its first
/// Gateway session.
pub async fn started(cfg: DiscordConfig) -> (FakeDiscord, TestGateway) {
    started_with(cfg, |_| {}).await
}

/// [`started`], with `tune` adjusting the bot's [`settings`].
pub async fn started_with(
    cfg: DiscordConfig,
    tune: impl FnOnce(&mut PluginSettings),
) -> (FakeDiscord, TestGateway) {
    let fake = FakeDiscord::start(cfg).await;
    let mut s = settings(&fake);
    tune(&mut s);
    let g = gateway(s).await;
    fake.wait_established(1).await;
    (fake, g)
}

/// The bot's messages in `channel`, in order.
pub fn texts_in(sent: &[SentMessage], channel: &str) -> Vec<String> {
    sent.iter()
        .filter(|m| m.channel_id == channel)
        .map(|m| m.content.clone())
        .collect()
}

/// Wait until the bot's messages in `channel` read `texts`.
pub async fn wait_texts(fake: &FakeDiscord, channel: &str, texts: &[&str]) -> Vec<SentMessage> {
    fake.wait_sent(&format!("texts {texts:?} in channel {channel}"), |s| {
        texts_in(s, channel) == texts
    })
    .await
}
