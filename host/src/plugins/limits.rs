//! What a plugin may spend: host-wide ceilings for the per-call limits, the
//! default outbound HTTP budget, and how a plugin's effective limits are
//! resolved from its manifest (a request), the operator's settings and the
//! ceilings (which decide).
//!
//! ```toml
//! [sandbox]                      # host-wide ceilings (config file)
//! memory_mb = 128
//! call_timeout_ms = 60000
//! cpu_ms = 30000
//! poll_wait_ms = 60000
//! engine_instances = 1000        # the engine's instance pool (all plugins)
//! pooling = true                 # pooling allocator (false: on-demand)
//! keep_resident_kb = 0           # per freed pool slot, for faster reuse
//! [sandbox.http]                 # default outbound budget of every plugin
//! rate_per_sec = 20
//! burst = 40
//! max_response_bytes = 10485760
//! [sandbox.socket]               # host-managed WebSocket sessions, per account
//! max_frame_bytes = 1048576      # bigger inbound frame: close 1009
//! frames_per_window = 120        # outgoing frames per session per window
//! window_ms = 60000
//! max_sessions = 4
//! max_timers = 16
//! min_timer_ms = 100
//! idle_instance_ms = 250         # a quiet socket account's instance is dropped after this
//! ```

use serde::{Deserialize, Serialize};

use super::manifest::Limits;

/// Host-wide ceilings and defaults for every plugin (`[sandbox]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Most linear memory any instance may get, in MiB.
    pub memory_mb: u64,
    /// Longest wall-clock time of one call, in ms.
    pub call_timeout_ms: u64,
    /// Most CPU time of one call, in ms.
    pub cpu_ms: u64,
    /// Longest wait of one `poll`, in ms.
    pub poll_wait_ms: u64,
    /// Outbound HTTP budget of a plugin the operator did not configure.
    pub http: HttpLimits,
    /// Attachment and blob limits (`[sandbox.media]`).
    pub media: crate::blobs::MediaLimits,
    /// Host-managed WebSocket sessions and timers of socket channels
    /// (`[sandbox.socket]`; a plugin's `socket = {..}` overrides them).
    pub socket: SocketLimits,
    /// Component instances the engine provides to all plugins together
    /// (the pooling allocator's size; also the budget every plugin's
    /// `max_instances` is reserved from). Each polling channel holds one
    /// instance for its receiver, so a gateway with many bots raises this.
    /// Default 1000.
    pub engine_instances: u32,
    /// Use wasmtime's pooling allocator (address space reserved up front,
    /// instances recycled). `false` allocates each instance on demand.
    /// Default true; the host falls back to on-demand when the pool cannot
    /// be reserved.
    pub pooling: bool,
    /// KiB of a freed pooled instance's linear memory and of each of its
    /// tables kept resident (zeroed in place instead of returned to the
    /// kernel), so the next instance in that slot starts faster. Every slot
    /// ever used keeps this much, so many channels raise the process's
    /// memory by up to twice this per slot: socket accounts drop their
    /// instance whenever they are quiet, and the instances alive at once
    /// at start-up leave hundreds of slots used. Default 0 (it was 64:
    /// 64 KiB of table resident in every slot ever used).
    pub keep_resident_kb: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: 128,
            call_timeout_ms: 60_000,
            cpu_ms: 30_000,
            poll_wait_ms: 60_000,
            http: HttpLimits::default(),
            media: crate::blobs::MediaLimits::default(),
            socket: SocketLimits::default(),
            engine_instances: crate::plugins::gate::ENGINE_INSTANCES as u32,
            pooling: true,
            keep_resident_kb: 0,
        }
    }
}

/// A plugin's outbound HTTP budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Requests per second the token bucket refills (0: only the burst, ever).
    pub rate_per_sec: u32,
    /// Requests that may be made at once after a quiet period.
    pub burst: u32,
    /// Largest response body handed to the plugin, in bytes.
    pub max_response_bytes: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            rate_per_sec: 20,
            burst: 40,
            max_response_bytes: 10 << 20,
        }
    }
}

/// The operator's per-plugin outbound budget (`[plugins.X] http = {..}`);
/// each field left out keeps the host-wide default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpOverrides {
    /// See [`HttpLimits::rate_per_sec`].
    pub rate_per_sec: Option<u32>,
    /// See [`HttpLimits::burst`].
    pub burst: Option<u32>,
    /// See [`HttpLimits::max_response_bytes`].
    pub max_response_bytes: Option<u64>,
}

impl HttpOverrides {
    /// `defaults` with these overrides applied.
    pub fn apply(&self, defaults: HttpLimits) -> HttpLimits {
        HttpLimits {
            rate_per_sec: self.rate_per_sec.unwrap_or(defaults.rate_per_sec),
            burst: self.burst.unwrap_or(defaults.burst),
            max_response_bytes: self
                .max_response_bytes
                .unwrap_or(defaults.max_response_bytes),
        }
    }
}

/// What the host-managed WebSocket sessions and timers of one channel
/// account may do (`pincer:socket@0.1.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketLimits {
    /// Largest frame either way, in bytes: a bigger inbound frame closes
    /// the session with 1009, a bigger outgoing one is refused. Default 1 MiB.
    pub max_frame_bytes: u64,
    /// Frames a session may send per [`window_ms`](Self::window_ms)
    /// (default 120 per 60 s, Discord's Gateway limit); past it
    /// `send-text` is `rate-limited` with the wait.
    pub frames_per_window: u32,
    /// The window of [`frames_per_window`](Self::frames_per_window), in ms.
    pub window_ms: u64,
    /// Sessions open or connecting at once per account. Default 4.
    pub max_sessions: u32,
    /// Timers set at once per account. Default 16.
    pub max_timers: u32,
    /// Shortest timer delay and repeat interval, in ms. Default 100.
    pub min_timer_ms: u64,
    /// How long a socket account keeps its plugin instance after its last
    /// socket event (frame, close, timer), in ms; then the instance is
    /// dropped and the next event gets a fresh one. The host holds the
    /// sockets and timers meanwhile, so an idle bot costs no sandbox.
    /// Default [`DEFAULT_IDLE_INSTANCE_MS`] (a heartbeat and its ACK, one
    /// round trip later, share one instance); 0 drops it as soon as the
    /// account's event queue is empty.
    pub idle_instance_ms: u64,
}

/// How long a quiet socket account keeps its instance by default, ms:
/// long enough for a Discord heartbeat's ACK (a round trip, tens of ms)
/// to reach the instance that sent the heartbeat, short enough that 1,000
/// bots heartbeating every 41 s keep about 5 instances alive rather than 25
/// (about 12 KiB less per bot in release: 54.9 instead of 66.8 KiB).
pub const DEFAULT_IDLE_INSTANCE_MS: u64 = 250;

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_frame_bytes: 1 << 20,
            frames_per_window: 120,
            window_ms: 60_000,
            max_sessions: 4,
            max_timers: 16,
            min_timer_ms: 100,
            idle_instance_ms: DEFAULT_IDLE_INSTANCE_MS,
        }
    }
}

/// The operator's per-plugin socket limits (`[plugins.X] socket = {..}`);
/// each field left out keeps the host-wide `[sandbox.socket]` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketOverrides {
    /// See [`SocketLimits::max_frame_bytes`].
    pub max_frame_bytes: Option<u64>,
    /// See [`SocketLimits::frames_per_window`].
    pub frames_per_window: Option<u32>,
    /// See [`SocketLimits::window_ms`].
    pub window_ms: Option<u64>,
    /// See [`SocketLimits::max_sessions`].
    pub max_sessions: Option<u32>,
    /// See [`SocketLimits::max_timers`].
    pub max_timers: Option<u32>,
    /// See [`SocketLimits::min_timer_ms`].
    pub min_timer_ms: Option<u64>,
    /// See [`SocketLimits::idle_instance_ms`].
    pub idle_instance_ms: Option<u64>,
}

impl SocketOverrides {
    /// `defaults` with these overrides applied.
    pub fn apply(&self, d: SocketLimits) -> SocketLimits {
        SocketLimits {
            max_frame_bytes: self.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            frames_per_window: self.frames_per_window.unwrap_or(d.frames_per_window),
            window_ms: self.window_ms.unwrap_or(d.window_ms).max(1),
            max_sessions: self.max_sessions.unwrap_or(d.max_sessions),
            max_timers: self.max_timers.unwrap_or(d.max_timers),
            min_timer_ms: self.min_timer_ms.unwrap_or(d.min_timer_ms),
            idle_instance_ms: self.idle_instance_ms.unwrap_or(d.idle_instance_ms),
        }
    }
}

/// The limits plugin `plugin` runs with: the operator's limits if set, else
/// the manifest's request, each field capped at the host-wide ceiling. Every
/// capped field is logged.
pub fn effective(
    plugin: &str,
    manifest: &Limits,
    operator: Option<&Limits>,
    ceilings: &SandboxConfig,
) -> Limits {
    let (asked, source) = match operator {
        Some(l) => (l, "operator"),
        None => (manifest, "manifest"),
    };
    let cap = |limit: &'static str, asked: u64, ceiling: u64| {
        if asked > ceiling {
            tracing::warn!(
                plugin,
                limit,
                asked,
                ceiling,
                source,
                "plugin limit above the host-wide ceiling; clamped"
            );
            ceiling
        } else {
            asked
        }
    };
    Limits {
        memory_mb: cap("memory_mb", asked.memory_mb, ceilings.memory_mb),
        call_timeout_ms: cap(
            "call_timeout_ms",
            asked.call_timeout_ms,
            ceilings.call_timeout_ms,
        ),
        cpu_ms: cap("cpu_ms", asked.cpu_ms, ceilings.cpu_ms),
        poll_wait_ms: cap("poll_wait_ms", asked.poll_wait_ms, ceilings.poll_wait_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_limits_come_from_the_sandbox_and_the_plugin_table() {
        let c: crate::config::FileConfig = toml::from_str(
            "[sandbox.socket]\nmax_frame_bytes = 65536\nmax_sessions = 2\n\
             [plugins.discord]\nsocket = { frames_per_window = 60, idle_instance_ms = 0 }\n",
        )
        .unwrap();
        assert_eq!(c.sandbox.socket.max_frame_bytes, 65536);
        assert_eq!(c.sandbox.socket.max_sessions, 2);
        assert_eq!(c.sandbox.socket.max_timers, 16);
        let effective = c.plugins["discord"].socket.unwrap().apply(c.sandbox.socket);
        assert_eq!(effective.frames_per_window, 60);
        assert_eq!(effective.idle_instance_ms, 0);
        assert_eq!(c.sandbox.socket.idle_instance_ms, 250, "the default");
        assert_eq!(effective.max_sessions, 2);
        assert_eq!(SocketLimits::default().window_ms, 60_000);
        assert!(
            toml::from_str::<crate::config::FileConfig>("[sandbox.socket]\nbogus = 1\n").is_err()
        );
    }

    #[test]
    fn manifest_asks_operator_raises_ceiling_decides() {
        let ceilings = SandboxConfig::default();
        let greedy = Limits {
            memory_mb: 1024,
            call_timeout_ms: 3_600_000,
            cpu_ms: 3_600_000,
            poll_wait_ms: 3_600_000,
        };
        let got = effective("p", &greedy, None, &ceilings);
        assert_eq!(
            got,
            Limits {
                memory_mb: 128,
                call_timeout_ms: 60_000,
                cpu_ms: 30_000,
                poll_wait_ms: 60_000
            }
        );
        // A modest request is kept.
        let modest = Limits::default();
        assert_eq!(effective("p", &modest, None, &ceilings), modest);
        // The operator may raise up to the ceiling, not past it.
        let raised = Limits {
            memory_mb: 100,
            ..modest
        };
        assert_eq!(
            effective("p", &modest, Some(&raised), &ceilings).memory_mb,
            100
        );
        let past = Limits {
            memory_mb: 4096,
            ..modest
        };
        assert_eq!(
            effective("p", &modest, Some(&past), &ceilings).memory_mb,
            128
        );
    }

    #[test]
    fn config_file_sections_parse() {
        let file: crate::config::FileConfig = toml::from_str(
            r#"
[sandbox]
memory_mb = 64
[sandbox.http]
burst = 10
[plugins.telegram]
secrets = { bot_token = "env:TOKEN", hook = { value = "inline-s3cret", in = ["body:secret_token"] } }
http = { rate_per_sec = 5 }
"#,
        )
        .unwrap();
        assert_eq!(file.sandbox.memory_mb, 64);
        assert_eq!(file.sandbox.call_timeout_ms, 60_000);
        assert_eq!(file.sandbox.http.burst, 10);
        assert_eq!(file.sandbox.http.rate_per_sec, 20);
        let tg = &file.plugins["telegram"];
        assert_eq!(tg.http.unwrap().rate_per_sec, Some(5));
        let hook = &tg.secrets["hook"];
        assert_eq!(hook.resolve().as_deref(), Some("inline-s3cret"));
        assert_eq!(
            hook.binding().unwrap().places,
            Some(vec!["body:secret_token".to_string()])
        );
        // Inline values never reach `Debug` output.
        let shown = format!("{tg:?}");
        assert!(
            !shown.contains("inline-s3cret") && shown.contains("env:TOKEN"),
            "{shown}"
        );
        assert!(
            toml::from_str::<crate::config::FileConfig>("[sandbox]\nmemory = 1").is_err(),
            "unknown keys are errors"
        );
        let e = toml::from_str::<crate::config::FileConfig>(
            "[plugins.x]\nsecrets = { t = { valu = \"v\" } }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("env:VAR"), "{e}");
    }

    #[test]
    fn http_overrides_keep_unset_defaults() {
        let o = HttpOverrides {
            rate_per_sec: Some(1),
            ..Default::default()
        };
        let got = o.apply(HttpLimits::default());
        assert_eq!(got.rate_per_sec, 1);
        assert_eq!(got.burst, 40);
        assert_eq!(got.max_response_bytes, 10 << 20);
    }
}
