//! `pincer bench`: measurements printed as Markdown tables (copied into
//! `BENCHMARKS.md`). Every figure is measured against a baseline in the same
//! run where one makes sense, because the machines this runs on are shared
//! and noisy.
//!
//! - [`plugins`]: the plugin runtime (compile, instantiate, call, reload);
//! - [`channels`]: Telegram and WhatsApp end to end, and many idle bots;
//! - [`gateway`]: the gateway over loopback (handshakes, requests, fan-out);
//! - [`idle`]: many idle connections, the server's memory alone;
//! - [`webhooks`]: outgoing webhook delivery;
//! - [`languages`]: Python and TypeScript plugins against Rust;
//! - [`cluster`]: run events fanned out on one node and across three
//!   nodes, SQLite against PostgreSQL; webhook deliveries the same way
//!   (`cluster_webhooks`); a polling channel's failover after kill -9
//!   (`cluster_failover`);
//! - [`attack`]: a healthy client's latency and the gateway's memory while
//!   it is attacked from the network and from plugins.
//!
//! This module holds what they share: sample sets, formatting, memory.

pub mod attack;
pub mod channels;
mod client;
pub mod cluster;
mod cluster_failover;
mod cluster_webhooks;
pub mod gateway;
pub mod idle;
pub mod languages;
pub mod pgserver;
pub mod plugins;
pub mod store;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A plugin runtime over `dir` (plugins in `dir/plugins`, a SQLite store in
/// `dir/bench.db`) with the system clock and default limits: what the
/// plugin-level benches measure in.
pub(crate) fn plugin_runtime(dir: &Path) -> anyhow::Result<Arc<crate::runtime::Runtime>> {
    let store = Arc::new(crate::store::SqliteStore::open(&dir.join("bench.db"))?);
    crate::runtime::Runtime::new(crate::runtime::RuntimeOptions {
        plugins_dir: dir.join("plugins"),
        runtime: crate::plugins::RuntimeConfig {
            data_dir: Some(dir.to_path_buf()),
            clock: crate::clock::system(),
            ..Default::default()
        },
        health: crate::health::HealthConfig::default(),
        kv: store.clone(),
        pairing: store.clone(),
        inbox: store.clone(),
        outbox: store,
        events: Arc::new(crate::events::LocalBus::default()),
    })
}

/// The median of `v` (which must not be empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A duration in microseconds, one decimal.
pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A duration in milliseconds, two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `a / b` as `1.23x`, or `n/a` when `b` is zero.
pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "n/a".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// Resident set size of this process, in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// CPU time (user and system) process `pid` (or `self`) has used, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
pub(crate) fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    // After `(comm)`: state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Latency sample set.
pub(crate) struct Lat(pub(crate) Vec<Duration>);

impl Lat {
    /// The `q` quantile (0..=1), nearest rank.
    pub(crate) fn pct(&mut self, q: f64) -> Duration {
        self.0.sort_unstable();
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i]
    }
}
