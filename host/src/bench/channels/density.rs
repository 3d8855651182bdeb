//! Density: many Telegram bots long-polling one fake, idle. Measures the
//! memory each polling bot adds and the CPU all of them use while nothing
//! happens, for the gateway (one `telegram` plugin serving every bot as
//! one of its accounts, at the default settings, see
//! [`super::setup::telegram_bots`]) and for the same number of bare bots
//! (one tokio task and HTTP client each) against the same fake.
//!
//! The fake runs on a runtime of its own whose threads are named
//! [`FAKE_THREADS`], so its CPU time is reported apart; its memory (a
//! parked request per bot) is in both runs' figures.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::mode_guard;
use super::procstat::{Cpu, Memory};
use super::setup;
use crate::fakes::bare_bot;
use crate::fakes::telegram::{FakeTelegram, TelegramBot, TelegramConfig};

/// Name prefix of the fake's threads.
pub(super) const FAKE_THREADS: &str = "bench-fake";

/// The long-poll `timeout` of the bare bots, in seconds (the telegram
/// plugin asks 25 s too: its manifest's `poll_wait_ms`).
const BARE_POLL_S: u64 = 25;

/// Time after every bot polls before memory and CPU are read, so start-up
/// work (first polls, commits, the compile cache) is over.
const SETTLE: Duration = Duration::from_secs(3);

/// What one density run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Density {
    /// Polling bots.
    pub(super) bots: usize,
    /// Memory added by the bots (the fake's end of their polls included).
    pub(super) added: Memory,
    /// The whole process after the bots started.
    pub(super) total: Memory,
    /// The idle window.
    pub(super) window_s: f64,
    /// CPU seconds of the process over the window, the fake's excluded.
    pub(super) cpu_s: f64,
    /// CPU seconds of the fake's threads over the window.
    pub(super) fake_cpu_s: f64,
    /// Bots still polling at the end (should be all).
    pub(super) polling: usize,
    /// Seconds from starting the gateway (or the bare bots) until every
    /// bot polled.
    pub(super) start_s: f64,
}

impl Density {
    /// Bytes per bot.
    pub(super) fn per_bot(&self, bytes: u64) -> f64 {
        bytes as f64 / self.bots.max(1) as f64
    }

    /// CPU use over the window as a share of one core.
    pub(super) fn core_share(&self) -> f64 {
        if self.window_s > 0.0 {
            self.cpu_s / self.window_s
        } else {
            0.0
        }
    }
}

/// Who serves the bots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Driver {
    /// The gateway, one channel per bot.
    Gateway,
    /// One bare long-polling loop per bot.
    Bare,
}

/// A fake on a runtime of its own, so its CPU is counted apart.
struct FakeHost {
    runtime: Option<tokio::runtime::Runtime>,
    fake: Option<FakeTelegram>,
}

impl FakeHost {
    async fn start() -> anyhow::Result<FakeHost> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(FAKE_THREADS)
            .enable_all()
            .build()
            .context("starting the fake's runtime")?;
        let cfg = TelegramConfig {
            record_calls: false,
            wait_guard: mode_guard(),
            ..Default::default()
        };
        let fake = runtime
            .spawn(FakeTelegram::start_with(cfg))
            .await
            .context("starting the Telegram fake")?;
        Ok(FakeHost {
            runtime: Some(runtime),
            fake: Some(fake),
        })
    }

    fn fake(&self) -> anyhow::Result<&FakeTelegram> {
        self.fake.as_ref().context("the fake is gone")
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        drop(self.fake.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A token for bot `i` (numeric id prefix, as Telegram's).
fn token(i: usize) -> String {
    format!("{}:AAbenchDensityToken{i:06}", 700_000_000 + i)
}

/// The environment variable holding `[sandbox]` settings (TOML) for the
/// gateway's density runs, to compare engine settings without a rebuild
/// (e.g. `pooling = false`).
pub(super) const SANDBOX_ENV: &str = "PINCER_BENCH_SANDBOX";

/// The `[sandbox]` of the density gateway: the defaults, or
/// [`SANDBOX_ENV`].
pub(super) fn sandbox_override() -> anyhow::Result<crate::plugins::SandboxConfig> {
    match std::env::var(SANDBOX_ENV) {
        Ok(toml_text) => toml::from_str(&toml_text)
            .with_context(|| format!("{SANDBOX_ENV} is not a valid [sandbox] table")),
        Err(_) => Ok(Default::default()),
    }
}

/// Wait until every bot has a `getUpdates` open.
async fn all_polling(bots: &[TelegramBot]) {
    for b in bots {
        b.wait_until("an open getUpdates", || (b.pollers() > 0).then_some(()))
            .await;
    }
}

/// How long a bot between two long polls may take to open the next one
/// before it counts as stopped (one poll cycle and then some).
const REPOLL: Duration = Duration::from_secs(60);

/// Bots with a `getUpdates` open now or within [`REPOLL`] (a bot whose
/// poll just ended is between two polls, not stopped).
async fn still_polling(bots: &[TelegramBot]) -> usize {
    let deadline = tokio::time::Instant::now() + REPOLL;
    let mut polling = 0;
    for b in bots {
        let open = b.wait_until("an open getUpdates", || (b.pollers() > 0).then_some(()));
        if tokio::time::timeout_at(deadline, open).await.is_ok() {
            polling += 1;
        }
    }
    polling
}

/// Run `bots` idle bots served by `driver` and measure them over `window`.
pub(super) async fn run(driver: Driver, n: usize, window: Duration) -> anyhow::Result<Density> {
    let host = FakeHost::start().await?;
    let fake = host.fake()?;
    let bots: Vec<TelegramBot> = (0..n)
        .map(|i| fake.add_bot(&token(i), &format!("bench_{i}_bot")))
        .collect();
    let dir = setup::DataDir::new()?;
    let before = Memory::now();
    let started = std::time::Instant::now();
    let mut running = None;
    let mut bare = Vec::new();
    match driver {
        Driver::Gateway => {
            let settings = setup::telegram_bots(fake, &bots);
            let names: Vec<String> = settings.keys().cloned().collect();
            setup::install_telegram(&dir.path().join("plugins"), &names)?;
            let mut opts = setup::options(dir.path(), 0)?;
            opts.sandbox = sandbox_override()?;
            // Every bot holds a receiver instance and may take a sender:
            // the engine's pool must hold 2 per bot beside the reserve.
            opts.sandbox.engine_instances = opts
                .sandbox
                .engine_instances
                .max((2 * n + crate::plugins::gate::ENGINE_RESERVE + 16) as u32);
            opts.plugins = settings;
            running = Some(setup::start(opts).await?);
        }
        Driver::Bare => {
            for b in &bots {
                bare.push(bare_bot::telegram(b.api_url(), BARE_POLL_S));
            }
        }
    }
    all_polling(&bots).await;
    let start_s = started.elapsed().as_secs_f64();
    // Start-up work ends; then memory and an idle window.
    tokio::time::sleep(SETTLE).await;
    let cpu0 = Cpu::now(FAKE_THREADS);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = Cpu::now(FAKE_THREADS);
    let window_s = t0.elapsed().as_secs_f64();
    let total = Memory::now();
    let polling = still_polling(&bots).await;
    let fake_cpu_s = cpu1.named - cpu0.named;
    let result = Density {
        bots: n,
        added: total.since(&before),
        total,
        window_s,
        cpu_s: (cpu1.total - cpu0.total - fake_cpu_s).max(0.0),
        fake_cpu_s,
        polling,
        start_s,
    };
    if let Some(r) = running {
        r.stop().await?;
    }
    drop(bare);
    Ok(result)
}
