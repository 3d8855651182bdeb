//! Discord end to end: the fake dispatches a user's DM on the Gateway
//! WebSocket the host holds for the bundled `discord` plugin, the gateway
//! (socket event, durable inbox, echo agent, outbox) answers it, and the
//! fake records the answer (`POST /channels/{id}/messages`). The same fake
//! driven by a bare bot ([`crate::fakes::discord::bare_bot`]) is the
//! baseline. Every message comes from its own DM channel.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::Sizes;
use super::setup;
use super::throughput::{Measured, flow, receipts};
use crate::channels::access::DmPolicy;
use crate::fakes::discord::{DiscordConfig, FakeDiscord, bare_bot};
use crate::fakes::recorder::Call;
use crate::plugins::PluginSettings;
use crate::plugins::manifest::SecretSource;

/// The shipped Discord manifest's host list.
const DISCORD_HOSTS: &str = r#"allowed_hosts = ["https://discord.com", "wss://gateway.discord.gg", "wss://*.discord.gg", "https://cdn.discordapp.com"]"#;

/// Install the bundled discord plugin with its hosts widened to loopback.
pub(super) fn install(plugins: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let (wasm, toml) = setup::bundled("discord")?;
    let manifest = setup::rewrite(
        toml,
        DISCORD_HOSTS,
        r#"allowed_hosts = ["https://discord.com", "http://127.0.0.1:*", "ws://127.0.0.1:*"]"#,
        "discord",
    )?;
    crate::atomic_file::write(&plugins.join("discord.toml"), manifest.as_bytes())?;
    crate::atomic_file::write(&plugins.join("discord.wasm"), wasm)?;
    Ok(())
}

/// The operator settings of the fake's bot (policy `open`).
pub(super) fn settings(fake: &FakeDiscord) -> PluginSettings {
    let config: BTreeMap<String, String> = [
        ("api_base", fake.api_base()),
        ("gateway_url", fake.gateway_url()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    PluginSettings {
        allowed_hosts: Some(vec![
            "https://discord.com".into(),
            "http://127.0.0.1:*".into(),
            "ws://127.0.0.1:*".into(),
        ]),
        secrets: [(
            "bot_token".to_string(),
            SecretSource::Value(fake.config().token.clone()),
        )]
        .into(),
        config,
        dm_policy: DmPolicy::Open,
        http: setup::unmetered(),
        ..Default::default()
    }
}

fn text(c: &Call) -> Option<&str> {
    c.params["content"].as_str()
}

/// Every `create_message` call so far, once each has its answer recorded.
async fn all_answered(fake: &FakeDiscord) -> Vec<Call> {
    let n = fake.calls_of("create_message").len();
    fake.wait_for_calls("create_message", n).await
}

/// A warm-up DM, the burst, then the sequential phase; every message
/// comes from its own user in its own DM channel (fresh ids from `next`).
async fn drive(fake: &FakeDiscord, sizes: &Sizes, next: &mut u64) -> anyhow::Result<Measured> {
    let mut channel = || {
        *next += 1;
        next.to_string()
    };
    let c = channel();
    fake.dm(&c, &c, "warm");
    fake.wait_for_sent(1).await;
    fake.clear();

    let mut created = Vec::with_capacity(sizes.messages);
    for i in 0..sizes.messages {
        let text = format!("b{i}");
        created.push((text.clone(), Instant::now()));
        let c = channel();
        fake.dm(&c, &c, &text);
    }
    fake.wait_for_sent(sizes.messages).await;
    let burst = flow(&created, &receipts(&all_answered(fake).await, text))?;
    fake.clear();

    let mut created = Vec::with_capacity(sizes.sequential);
    for i in 0..sizes.sequential {
        let text = format!("s{i}");
        created.push((text.clone(), Instant::now()));
        let c = channel();
        fake.dm(&c, &c, &text);
        fake.wait_for_sent(i + 1).await;
    }
    let sequential = flow(&created, &receipts(&all_answered(fake).await, text))?;
    fake.clear();
    Ok(Measured { burst, sequential })
}

fn fake_config() -> DiscordConfig {
    DiscordConfig::default()
}

/// Discord through the gateway.
pub(super) async fn gateway(sizes: &Sizes) -> anyhow::Result<Measured> {
    let fake = FakeDiscord::start(fake_config()).await;
    let dir = setup::DataDir::new()?;
    install(&dir.path().join("plugins"))?;
    let mut opts = setup::options(dir.path(), 0)?;
    opts.plugins.insert("discord".into(), settings(&fake));
    let running = setup::start(opts).await?;
    fake.wait_established(1).await;
    let mut next = 1_000_000;
    let r = drive(&fake, sizes, &mut next).await;
    running.stop().await?;
    r
}

/// The bare Discord bot against the same fake.
pub(super) async fn bare(sizes: &Sizes) -> anyhow::Result<Measured> {
    let fake = FakeDiscord::start(fake_config()).await;
    let _bot = bare_bot(
        fake.api_base().to_string(),
        fake.gateway_url().to_string(),
        fake.config().token.clone(),
    );
    fake.wait_established(1).await;
    let mut next = 2_000_000;
    drive(&fake, sizes, &mut next).await
}
