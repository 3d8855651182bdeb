//! Logging factor: `pincer:plugin/log`. Records go to `tracing` tagged with the
//! plugin name; long records are truncated, and a per-plugin token bucket
//! counted in bytes (shared by all its instances and versions) drops floods
//! and counts what it dropped.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use crate::plugins::bindings::v02::channel::pincer::plugin::log::{Host, Level};

/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Most fields kept per record.
pub const MAX_FIELDS: usize = 16;
/// Longest field value kept, in bytes.
pub const MAX_FIELD_BYTES: usize = 256;

/// What each record costs on top of its text, so floods of empty records
/// are bounded too.
pub const RECORD_OVERHEAD_BYTES: usize = 64;

/// A per-plugin token bucket for log output, in bytes.
#[derive(Debug)]
pub struct LogLimiter {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl LogLimiter {
    /// Allow `rate_per_sec` bytes per second with bursts of `burst` bytes.
    pub fn new(rate_per_sec: f64, burst: f64) -> Arc<Self> {
        Arc::new(LogLimiter {
            rate_per_sec,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                dropped: 0,
            }),
        })
    }

    /// Take `cost` bytes: `Ok(dropped_before)` if the record may be written
    /// (with the count of records dropped since the last written one),
    /// `Err(())` if not.
    fn admit(&self, cost: usize) -> Result<u64, ()> {
        let cost = cost as f64;
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * self.rate_per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            Ok(std::mem::take(&mut b.dropped))
        } else {
            b.dropped += 1;
            Err(())
        }
    }

    /// Records dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        let q = crate::plugins::quotas::Quotas::default();
        LogLimiter {
            rate_per_sec: q.log_bytes_per_sec as f64,
            burst: q.log_burst_bytes as f64,
            state: Mutex::new(Bucket {
                tokens: q.log_burst_bytes as f64,
                last: Instant::now(),
                dropped: 0,
            }),
        }
    }
}

/// Per-instance logging state.
#[derive(Debug, Clone)]
pub struct PluginLog {
    plugin: Arc<str>,
    limiter: Arc<LogLimiter>,
}

impl PluginLog {
    /// The plugin this log belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Logging for `plugin`, limited by `limiter`.
    pub fn new(plugin: Arc<str>, limiter: Arc<LogLimiter>) -> Self {
        PluginLog { plugin, limiter }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host for super::HostState {
    async fn write(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let message = truncate(&message, MAX_MESSAGE_BYTES);
        let fields: String = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| format!("{}={} ", truncate(k, 64), truncate(v, MAX_FIELD_BYTES)))
            .collect();
        let fields = fields.trim_end();
        let cost = message.len() + fields.len() + RECORD_OVERHEAD_BYTES;
        let Ok(dropped) = self.log.limiter.admit(cost) else {
            return;
        };
        let plugin = &*self.log.plugin;
        if dropped > 0 {
            tracing::warn!(
                plugin,
                dropped,
                "plugin log budget exceeded: records dropped"
            );
        }
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, fields, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, fields, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, fields, "{message}"),
        }
    }
}
