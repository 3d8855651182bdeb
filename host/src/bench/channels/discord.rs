//! Discord end to end: the fake dispatches a user's DM on the Gateway
//! WebSocket the host holds for the bundled `discord` plugin, the gateway
//! (socket event, durable inbox, echo agent, outbox) answers it, and the
//! fake records the answer (`POST /channels/{id}/messages`). The same fake
//! driven by a bare bot ([`crate::fakes::discord::bare_bot`]) is the
//! baseline. Every message comes from its own DM channel.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::Sizes;
use super::setup;
use super::throughput::{Measured, flow, receipts};
use crate::fakes::discord::{DiscordConfig, FakeDiscord, bare_bot};
use crate::fakes::recorder::Call;
use crate::plugins::PluginSettings;

/// Install the bundled discord plugin with its hosts widened to loopback.
pub(super) fn install(plugins: &Path) -> anyhow::Result<()> {
    crate::fakes::discord::plugin::install(plugins)
        .with_context(|| format!("installing discord into {}", plugins.display()))
}

/// The operator settings of the fake's bot (policy `open`), unmetered.
pub(super) fn settings(fake: &FakeDiscord) -> PluginSettings {
    PluginSettings {
        http: setup::unmetered(),
        ..fake.bot_settings()
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
