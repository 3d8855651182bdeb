//! Sockets: memory per idle host-managed WebSocket session
//! (`pincer:socket`). The gateway serves `N` accounts of the `ws-probe`
//! socket channel (built from source with the host; one session each to
//! one local WebSocket server: a bot per session, as Discord bots), and
//! one account holding all `N` sessions (the session's own cost), beside
//! `N` plain tokio-tungstenite client sockets to the same server in a
//! process of their own (the bare loop). The gateway runs take `[sandbox]`
//! from `PINCER_BENCH_SANDBOX` as the density runs do.
//!
//! Idle means the steady state of a quiet account: its sender instance is
//! dropped once unused for `POOL_IDLE_MS` (what the health monitor does
//! after two minutes); the run drops them at once instead of waiting. The
//! server runs on a runtime of its own ([`super::density::FAKE_THREADS`]);
//! its end of every connection is in both figures. The server and the bare
//! clients use the sessions' tungstenite configuration (a 4 KiB read
//! buffer, `crate::plugins::host::socket::session_config`), so the ratio
//! compares like with like.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::density::FAKE_THREADS;
use super::mode_guard;
use super::procstat::{Cpu, Memory};
use super::setup;
use crate::plugins::{AccountSettings, PluginSettings};

/// The socket plugin the gateway run uses (a test plugin built with the host).
const PLUGIN: &str = "ws-probe";
/// Time after every session is open before memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// The sessions' configuration, for the server and the bare clients too.
fn config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    crate::plugins::host::socket::session_config(1 << 20)
}

/// What one sockets run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Sockets {
    /// Sessions open.
    pub(super) sessions: usize,
    /// Memory added by them (the server's end included).
    pub(super) added: Memory,
    /// The whole process at the end.
    pub(super) total: Memory,
    /// Seconds until every session was open.
    pub(super) start_s: f64,
    /// Discord bots: what the idle window saw.
    #[serde(default)]
    pub(super) idle: Option<Idle>,
    /// Where the process's memory was at the reading (gateway runs).
    #[serde(default)]
    pub(super) parts: Option<Parts>,
}

/// The process at the memory reading, split: the allocator's live and
/// free bytes, threads, and what `malloc_trim` gives back at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Parts {
    /// Heap handed out and not given back (`mallinfo2` `uordblks + hblkhd`).
    pub(super) heap_live: u64,
    /// Free bytes kept inside malloc's arenas (`fordblks`).
    pub(super) heap_free: u64,
    /// Threads of the process (tokio workers, blocking pool, fake).
    pub(super) threads: u64,
    /// RSS right after `malloc_trim(0)`: the reading minus freed heap the
    /// allocator held.
    pub(super) rss_trimmed: u64,
}

impl Parts {
    /// Read them now; trims the heap (call after the memory reading).
    fn now() -> Parts {
        let (heap_live, heap_free) = heap_split();
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        crate::plugins::heap::release();
        Parts {
            heap_live,
            heap_free,
            threads,
            rss_trimmed: Memory::now().rss,
        }
    }
}

/// Live and free heap bytes (glibc's `mallinfo2`; zeros elsewhere).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_split() -> (u64, u64) {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, m.fordblks as u64)
}

/// Not available off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_split() -> (u64, u64) {
    (0, 0)
}

/// The idle window of a Discord run: every bot heartbeating on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Idle {
    /// The window, seconds.
    pub(super) window_s: f64,
    /// CPU seconds the whole process (gateway and fake) used in it.
    pub(super) cpu_s: f64,
    /// Heartbeats the fake received in it.
    pub(super) heartbeats: usize,
    /// Plugin instances alive at the memory reading (all accounts).
    pub(super) live_instances: usize,
    /// Connections the fake accepted after the first `n` (reconnects).
    pub(super) reconnects: usize,
    /// Heap in use (malloc's live bytes) at the memory reading, and before
    /// the gateway started (0 where unknown): RSS minus this growth is
    /// pool slots, stacks, code and freed heap not returned.
    #[serde(default)]
    pub(super) heap: (u64, u64),
}

/// Bytes malloc has handed out and not had back (glibc's `mallinfo2`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> u64 {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// Not available off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> u64 {
    0
}

impl Sockets {
    /// Bytes per session.
    pub(super) fn per_session(&self, bytes: u64) -> f64 {
        bytes as f64 / self.sessions.max(1) as f64
    }
}

/// Who holds the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holder {
    /// The gateway: one `ws-probe` account per session.
    Gateway,
    /// The gateway: one `ws-probe` account holding every session.
    OneAccount,
    /// One plain tokio-tungstenite client per session.
    Bare,
    /// The gateway: one account of the bundled `discord` plugin per
    /// session (a bot each), all on one fake Discord gateway, heartbeating
    /// at Discord's interval; nothing is trimmed by hand.
    Discord,
}

/// A WebSocket server on a runtime of its own that accepts and holds
/// every connection, reading (and dropping) what it is sent.
struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(FAKE_THREADS)
            .enable_all()
            .build()
            .context("starting the server's runtime")?;
        let listener = runtime
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await
            .context("binding the server")??;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) =
                        tokio_tungstenite::accept_async_with_config(tcp, Some(config())).await
                    else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        Ok(Server {
            runtime: Some(runtime),
            addr,
            accepted,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}/socket", self.addr)
    }

    /// Wait until `n` connections were upgraded.
    async fn wait_for(&self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + mode_guard();
        while self.accepted.load(Ordering::SeqCst) < n {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} sessions opened",
                self.accepted.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `ws-probe` opening `n` sessions to `url`: with `one_account`, all from
/// the plugin table's account; else one from each of `n` accounts (the
/// plugin table's `default` and `n - 1` more).
fn settings(url: &str, port: u16, n: usize, one_account: bool) -> PluginSettings {
    let mut s = PluginSettings {
        allowed_hosts: Some(vec![format!("ws://127.0.0.1:{port}")]),
        ..Default::default()
    };
    s.config.insert("url".into(), url.to_string());
    if one_account {
        s.config.insert("sessions".into(), n.to_string());
        s.socket = Some(crate::plugins::SocketOverrides {
            max_sessions: Some(n as u32),
            ..Default::default()
        });
    } else {
        for i in 1..n {
            s.accounts
                .insert(format!("bot{i:05}"), AccountSettings::default());
        }
    }
    s
}

/// Install the `ws-probe` component built with this host.
fn install(plugins: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins)?;
    let built = std::path::Path::new(crate::bundled::BUILD_PLUGIN_DIR);
    for ext in ["wasm", "toml"] {
        let from = built.join(format!("{PLUGIN}.{ext}"));
        std::fs::copy(&from, plugins.join(format!("{PLUGIN}.{ext}"))).with_context(|| {
            format!(
                "{}: the sockets bench needs the `ws-probe` test plugin of a build tree",
                from.display()
            )
        })?;
    }
    Ok(())
}

/// The idle window of a Discord run, seconds (`PINCER_BENCH_IDLE_S`;
/// default 65: every bot's 41.25 s heartbeat and the health monitor's
/// minutely check fall in it).
fn idle_window() -> Duration {
    let s = std::env::var("PINCER_BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(65);
    Duration::from_secs(s)
}

/// `n` Discord bots (the plugin table's `default` and `n - 1` accounts)
/// on one fake gateway: once all are established and settled, CPU and
/// heartbeats over [`idle_window`], then memory.
async fn discord(n: usize) -> anyhow::Result<Sockets> {
    use crate::fakes::discord::{DiscordConfig, FakeDiscord};
    // Not recording REST calls: the fake's end should cost what a plain
    // server's does (the `ws-probe` runs' server records nothing).
    let fake = FakeDiscord::start(DiscordConfig {
        record_calls: false,
        ..DiscordConfig::default()
    })
    .await;
    let dir = setup::DataDir::new()?;
    let before = Memory::now();
    let heap_before = heap_in_use();
    let started = std::time::Instant::now();
    super::discord::install(&dir.path().join("plugins"))?;
    let mut opts = setup::options(dir.path(), 0)?;
    opts.sandbox = super::density::sandbox_override()?;
    opts.sandbox.engine_instances = opts
        .sandbox
        .engine_instances
        .max((2 * n + crate::plugins::gate::ENGINE_RESERVE + 16) as u32);
    let mut settings = super::discord::settings(&fake);
    for i in 1..n {
        settings
            .accounts
            .insert(format!("bot{i:05}"), AccountSettings::default());
    }
    opts.plugins.insert("discord".into(), settings);
    let running = setup::start(opts).await?;
    let deadline = tokio::time::Instant::now() + mode_guard();
    loop {
        let st = fake.gateway_stats();
        if st.established >= n {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} Discord sessions established",
            st.established
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    // Memory is read at the end of the idle window: the steady idle state
    // (start-up's REST connections expired, every bot heartbeated).
    let window = idle_window();
    let (beats, cpu) = (fake.gateway_stats().heartbeats, Cpu::now(""));
    tokio::time::sleep(window).await;
    let (beats_after, cpu_after) = (fake.gateway_stats(), Cpu::now(""));
    let runners = running.gateway.runtime.channels.all();
    let live_instances = runners.iter().map(|c| c.idle_instances()).sum();
    let total = Memory::now();
    let heap = (heap_in_use(), heap_before);
    let parts = Parts::now();
    let open: usize = runners.iter().map(|c| c.sockets().sessions().len()).sum();
    anyhow::ensure!(
        open == n,
        "{open} of {n} sessions open after the idle window"
    );
    let result = Sockets {
        sessions: n,
        added: total.since(&before),
        total,
        start_s,
        idle: Some(Idle {
            window_s: window.as_secs_f64(),
            cpu_s: cpu_after.total - cpu.total,
            heartbeats: beats_after.heartbeats.saturating_sub(beats),
            live_instances,
            reconnects: beats_after.connections.saturating_sub(n),
            heap,
        }),
        parts: Some(parts),
    };
    drop(runners);
    running.stop().await?;
    Ok(result)
}

/// Open `n` idle sessions held by `holder` and measure them.
pub(super) async fn run(holder: Holder, n: usize) -> anyhow::Result<Sockets> {
    if holder == Holder::Discord {
        return discord(n).await;
    }
    let server = Server::start().await?;
    let dir = setup::DataDir::new()?;
    let before = Memory::now();
    let started = std::time::Instant::now();
    let mut running = None;
    let mut bare = Vec::new();
    match holder {
        Holder::Discord => unreachable!("measured by `discord`"),
        Holder::Gateway | Holder::OneAccount => {
            install(&dir.path().join("plugins"))?;
            let mut opts = setup::options(dir.path(), 0)?;
            opts.sandbox = super::density::sandbox_override()?;
            opts.sandbox.engine_instances = opts
                .sandbox
                .engine_instances
                .max((2 * n + crate::plugins::gate::ENGINE_RESERVE + 16) as u32);
            opts.plugins.insert(
                PLUGIN.into(),
                settings(
                    &server.url(),
                    server.addr.port(),
                    n,
                    holder == Holder::OneAccount,
                ),
            );
            running = Some(setup::start(opts).await?);
        }
        Holder::Bare => {
            for _ in 0..n {
                let (ws, _) = tokio_tungstenite::connect_async_with_config(
                    server.url(),
                    Some(config()),
                    true,
                )
                .await
                .context("a bare client connecting")?;
                bare.push(tokio::spawn(async move {
                    let mut ws = ws;
                    while let Some(Ok(_)) = ws.next().await {}
                }));
            }
        }
    }
    server.wait_for(n).await?;
    let start_s = started.elapsed().as_secs_f64();
    if let Some(r) = &running {
        // The steady idle state: no account keeps a warm instance.
        for runner in r.gateway.runtime.channels.all() {
            runner.trim_idle(u64::MAX);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let total = Memory::now();
    let parts = running.is_some().then(Parts::now);
    if let Some(r) = &running {
        let open: usize = r
            .gateway
            .runtime
            .channels
            .all()
            .iter()
            .map(|c| c.sockets().sessions().len())
            .sum();
        anyhow::ensure!(open == n, "{open} of {n} sessions open at the end");
    }
    let result = Sockets {
        sessions: n,
        added: total.since(&before),
        total,
        start_s,
        idle: None,
        parts,
    };
    if let Some(r) = running {
        r.stop().await?;
    }
    for task in bare {
        task.abort();
    }
    Ok(result)
}
