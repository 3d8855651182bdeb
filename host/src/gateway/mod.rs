//! The gateway: the OpenClaw WebSocket protocol server and the HTTP API on
//! one port, on top of the plugin [`Runtime`](crate::runtime::Runtime).
//!
//! - [`server`]: the listener, HTTP routes and WebSocket upgrade;
//! - [`conn`]: one WebSocket connection: handshake, auth, request loop,
//!   writer;
//! - [`hub`]: live connections and event fan-out;
//! - [`methods`]: the protocol methods;
//! - [`runs`]: executing an agent run (chat streaming, transcript);
//! - [`run_manager`]: which runs exist and when each executes (abort,
//!   idempotency, the guaranteed end); [`run_queue`]: the per-session
//!   queues and their settings; [`sender_rate`]: per-sender rate limits;
//! - [`inbound`]: channel messages routed to sessions and answered;
//! - [`http_api`]: `/healthz`, `/readyz`, `/metrics`, `/v1/*`, channel
//!   webhooks;
//! - [`auth`]: shared token/password and device tokens;
//! - [`auth_limit`]: per-IP auth-failure limits with backoff;
//! - [`preauth`]: counting and capping sockets still handshaking;
//! - [`frame_guard`]: the 64 KiB pre-auth frame limit below tungstenite;
//! - [`logbuf`]: recent log lines for `logs.tail`;
//! - [`launch`]: assembling and starting the whole gateway;
//! - [`listener`]: the HTTP accept loop (timeouts, socket cap);
//! - [`http_guard`]: `Host`, `Origin` and content-type checks;
//! - [`fdlimit`]: the descriptor limit and the socket cap it allows;
//! - [`token_file`]: the token generated on first start;
//! - [`public_error`]: short outward errors with a log reference;
//! - [`control_ui`]: a browser Control UI build served at `/`;
//! - [`control_ui_config`]: `/control-ui-config.json` for that UI;
//! - [`console`]: Pincer's own operator console at `/console`;
//! - [`http_plugins`]: plugin uploads (`PUT /v1/plugins/{name}`);
//! - [`runtime_events`]: plugin and channel events forwarded to clients.
//! - [`readiness`]: one readiness answer for `/readyz`, `health` and
//!   `status`;
//! - [`cluster`]: cluster mode on a shared store (events, runs and
//!   presence across nodes).

pub mod auth;
pub mod auth_limit;
pub mod cluster;
pub mod conn;
pub mod console;
pub mod control_ui;
pub mod control_ui_config;
pub mod fdlimit;
pub mod frame_guard;
pub mod handover;
pub mod http_api;
pub mod http_guard;
pub mod http_pairing;
pub mod http_plugins;
pub mod http_send;
pub mod http_webhooks;
pub mod hub;
pub mod inbound;
pub mod launch;
pub mod listener;
pub mod logbuf;
pub mod methods;
pub mod out_queue;
pub mod ping_barrier;
pub mod preauth;
pub mod public_error;
pub mod readiness;
pub mod run_manager;
pub mod run_queue;
pub mod runs;
pub mod runtime_events;
pub mod sender_rate;
pub mod server;
pub mod token_file;
pub mod ws_stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::Provider;
use crate::protocol::frames::StateVersion;
use crate::runtime::Runtime;
use crate::secret::Secret;
use crate::store::SharedSessions;

pub use auth::AuthMode;

/// `[gateway]` settings; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Listen address (default `127.0.0.1:18789`).
    pub listen: SocketAddr,
    /// Shared token (or env `PINCER_GATEWAY_TOKEN`).
    pub token: Option<Secret>,
    /// Shared password (or env `PINCER_GATEWAY_PASSWORD`).
    pub password: Option<Secret>,
    /// Run without a token or password (loopback only). Without it,
    /// `pincer serve` generates a token on first start and keeps it in
    /// `<data_dir>/gateway-token` (default false).
    pub no_auth: bool,
    /// Browser origins allowed besides the gateway's own host.
    pub allowed_origins: Vec<String>,
    /// Names (`host` or `host:port`) the gateway answers to in `Host`,
    /// besides its listen address (and, on loopback, `localhost`,
    /// `127.0.0.1` and `[::1]` with its port). Anything else is refused
    /// with 421, which defeats DNS rebinding. Default empty.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a request's headers, ms, from its first byte (and
    /// for a new connection's first request) (default 10 000).
    pub http_header_timeout_ms: u64,
    /// Longest time to receive a request body, ms (default 30 000).
    pub http_body_timeout_ms: u64,
    /// An HTTP keep-alive connection with no request for this long is
    /// closed, ms (default 60 000).
    pub http_idle_timeout_ms: u64,
    /// Most open client sockets (HTTP and WebSocket together); default:
    /// the descriptor limit (raised to its hard maximum at start) less
    /// `reserved_fds`. Over the cap a new connection gets a 503 at once.
    pub max_sockets: Option<usize>,
    /// Descriptors kept free for the plugins directory, the store,
    /// outbound requests and reloads (default 256).
    pub reserved_fds: usize,
    /// Most simultaneous WebSocket connections (default 10 000).
    pub max_connections: usize,
    /// New connections per IP per minute (default 600; loopback exempt
    /// unless `limit_loopback`).
    pub connections_per_minute: u32,
    /// Apply the per-IP rate limit to loopback too (tests).
    pub limit_loopback: bool,
    /// Handshake deadline, ms, from the upgrade to `hello-ok`; absolute
    /// (pings and other frames do not extend it) (default 10 000).
    pub handshake_timeout_ms: u64,
    /// Most sockets still handshaking at once, all IPs together; they also
    /// count toward `max_connections` (default 1 024).
    pub max_preauth: usize,
    /// Most sockets still handshaking from one IP, loopback included
    /// (default 128).
    pub max_preauth_per_ip: usize,
    /// Most heavy requests (`health`, `status`, `agent.wait`, reloads, ...)
    /// one connection may have in flight; further requests wait, and the
    /// connection's reading pauses meanwhile (default 16).
    pub max_inflight_requests: usize,
    /// Auth failures (wrong or missing token/password, on WebSocket
    /// `connect` or HTTP bearer auth) from one IP before it is blocked
    /// (default 10).
    pub auth_failures_burst: u32,
    /// First block after `auth_failures_burst` failures, ms; doubles with
    /// each further failure (default 1 000).
    pub auth_backoff_base_ms: u64,
    /// Longest block, ms (default 300 000).
    pub auth_backoff_max_ms: u64,
    /// An IP's failures are forgotten after this long without one, ms
    /// (default 900 000); also pre-auth violations.
    pub auth_failure_forget_ms: u64,
    /// Pre-auth protocol violations (a frame over the 64 KiB pre-auth
    /// limit, a broken frame, a handshake timeout) from one IP before it is
    /// blocked; a blocked IP's new sockets are refused at accept with 429,
    /// before anything is read (default 2; loopback exempt unless
    /// `limit_loopback`).
    pub preauth_violations_burst: u32,
    /// First block after `preauth_violations_burst` violations, ms; doubles
    /// with each further violation (default 10 000: a client that twice
    /// broke the handshake is broken or hostile).
    pub preauth_backoff_base_ms: u64,
    /// Longest block for pre-auth violations, ms (default 300 000).
    pub preauth_backoff_max_ms: u64,
    /// `tick` interval, ms (default 30 000).
    pub tick_interval_ms: u64,
    /// `policy.maxPayload` (default 25 MiB).
    pub max_payload: usize,
    /// `policy.maxBufferedBytes` (default 50 MiB).
    pub max_buffered_bytes: usize,
    /// Chat delta throttle per run, ms (default 150).
    pub delta_throttle_ms: u64,
    /// How long a run started by `chat.send` waits for the Pong to the Ping
    /// sent after its answer, ms (default 2 000). The Pong proves the client
    /// read the answer before the run's events; a client that never answers
    /// pings gets its run after this bound (counted in
    /// `pincer_pong_barrier_timeouts_total`).
    pub pong_barrier_timeout_ms: u64,
    /// How long shutdown waits for in-flight runs, ms (default 5 000).
    pub shutdown_grace_ms: u64,
    /// Threads of the edge runtime, which serves HTTP requests and
    /// WebSocket handshakes (everything before `hello-ok`) apart from the
    /// authenticated connections (default 1).
    pub edge_threads: usize,
    /// Nice value of those threads (0-19, default 10): a flood of
    /// unauthenticated sockets or webhook pushes runs at lower OS priority
    /// than the operators' connections (Linux; 0 turns it off).
    pub edge_nice: i32,
    /// `[gateway.runs]`: run ordering and bounds (per-session queue, global
    /// cap, per-sender rate).
    pub runs: run_queue::RunLimits,
    /// A Control UI build (such as OpenClaw's `dist/control-ui`) served at
    /// `/` on this port, with `index.html` for its app routes (default
    /// none: `/` is 404).
    pub control_ui: Option<std::path::PathBuf>,
    /// Serve Pincer's operator console at `/console` (default `true`; the
    /// page itself holds no data: everything it shows needs the token).
    pub console: bool,
    /// Largest plugin file `PUT /v1/plugins/{name}` accepts, in bytes
    /// (default 32 MiB).
    pub plugin_upload_max_bytes: usize,
    /// `[gateway.cluster]`: node identity and timings, used when the store
    /// is shared (PostgreSQL).
    pub cluster: cluster::ClusterConfig,
    /// Reload the configuration file when it is saved (default `true`;
    /// SIGHUP and `config.reload` reload it either way). Only with a
    /// configuration file (`pincer serve --config`).
    pub config_watch: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 18789)),
            token: None,
            password: None,
            no_auth: false,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_idle_timeout_ms: 60_000,
            max_sockets: None,
            reserved_fds: 256,
            max_connections: 10_000,
            connections_per_minute: 600,
            limit_loopback: false,
            handshake_timeout_ms: 10_000,
            max_preauth: 1_024,
            max_preauth_per_ip: 128,
            max_inflight_requests: 16,
            auth_failures_burst: 10,
            auth_backoff_base_ms: 1_000,
            auth_backoff_max_ms: 300_000,
            auth_failure_forget_ms: 900_000,
            preauth_violations_burst: 2,
            preauth_backoff_base_ms: 10_000,
            preauth_backoff_max_ms: 300_000,
            tick_interval_ms: crate::protocol::TICK_INTERVAL_MS,
            max_payload: crate::protocol::MAX_PAYLOAD,
            max_buffered_bytes: crate::protocol::MAX_BUFFERED_BYTES,
            delta_throttle_ms: 150,
            pong_barrier_timeout_ms: 2_000,
            shutdown_grace_ms: 5_000,
            edge_threads: 1,
            edge_nice: 10,
            runs: run_queue::RunLimits::default(),
            control_ui: None,
            console: true,
            plugin_upload_max_bytes: 32 << 20,
            cluster: cluster::ClusterConfig::default(),
            config_watch: true,
        }
    }
}

impl GatewayConfig {
    /// The auth mode these settings give.
    pub fn auth_mode(&self) -> AuthMode {
        match (&self.token, &self.password) {
            (Some(t), _) if !t.is_empty() => AuthMode::Token(t.clone()),
            (_, Some(p)) if !p.is_empty() => AuthMode::Password(p.clone()),
            _ => AuthMode::None,
        }
    }

    /// The auth-failure limiter settings.
    pub fn auth_limit(&self) -> auth_limit::AuthLimitConfig {
        auth_limit::AuthLimitConfig {
            burst: self.auth_failures_burst.max(1),
            backoff_base: Duration::from_millis(self.auth_backoff_base_ms),
            backoff_max: Duration::from_millis(
                self.auth_backoff_max_ms.max(self.auth_backoff_base_ms),
            ),
            forget_after: Duration::from_millis(self.auth_failure_forget_ms),
        }
    }

    /// The pre-auth violation limiter settings.
    pub fn preauth_limit(&self) -> auth_limit::AuthLimitConfig {
        auth_limit::AuthLimitConfig {
            burst: self.preauth_violations_burst.max(1),
            backoff_base: Duration::from_millis(self.preauth_backoff_base_ms),
            backoff_max: Duration::from_millis(
                self.preauth_backoff_max_ms
                    .max(self.preauth_backoff_base_ms),
            ),
            forget_after: Duration::from_millis(self.auth_failure_forget_ms),
        }
    }

    /// Refuse to expose an unauthenticated gateway beyond loopback, and
    /// `allowed_hosts` entries that are not `host[:port]` (or `*`).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(bad) = self
            .allowed_hosts
            .iter()
            .find(|h| h.as_str() != "*" && http_guard::split_host(h).is_none())
        {
            anyhow::bail!(
                "gateway.allowed_hosts: {bad:?} is not a host name with an optional port \
                 (for example \"chat.example.com\" or \"chat.example.com:8443\")"
            );
        }
        if !self.listen.ip().is_loopback() && matches!(self.auth_mode(), AuthMode::None) {
            anyhow::bail!(
                "refusing to listen on {} without authentication: set --token (or \
                 PINCER_GATEWAY_TOKEN) or a password, or listen on 127.0.0.1",
                self.listen
            );
        }
        Ok(())
    }
}

/// Gateway counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// WebSocket connections accepted.
    pub connections_total: AtomicU64,
    /// Connections refused (limit, rate, origin).
    pub connections_refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes failed.
    pub handshake_failures: AtomicU64,
    /// Authenticated connections whose socket moved from the edge runtime
    /// to the control runtime ([`handover`]).
    pub handovers: AtomicU64,
    /// Authenticated connections whose socket could not move (it stays
    /// registered with the edge runtime).
    pub handovers_skipped: AtomicU64,
    /// Handshakes that ran out of time (the absolute deadline).
    pub handshake_timeouts: AtomicU64,
    /// Sockets closed for a frame over the limit (1009).
    pub frames_too_large: AtomicU64,
    /// Sockets closed for invalid UTF-8 text (1007).
    pub frames_invalid_utf8: AtomicU64,
    /// Bytes WebSocket connections hold in frame buffers right now (a frame
    /// being read or written); 0 while every connection is idle.
    pub ws_frame_buffers: Arc<std::sync::atomic::AtomicUsize>,
    /// Ping barriers released by their Pong (`chat.send` runs held until
    /// the client has read the answer).
    pub pong_barriers: AtomicU64,
    /// Ping barriers whose Pong did not come within
    /// `pong_barrier_timeout_ms` (the run went ahead anyway).
    pub pong_barrier_timeouts: AtomicU64,
}

/// Shared gateway state.
pub struct Gateway {
    /// Settings.
    pub config: GatewayConfig,
    /// Plugins, channels and health.
    pub runtime: Arc<Runtime>,
    /// Sessions, transcripts, devices.
    pub sessions: SharedSessions,
    /// The outgoing-webhook registry.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The model provider.
    pub provider: Arc<dyn Provider>,
    /// Live connections.
    pub hub: hub::Hub,
    /// Agent runs.
    pub runs: runs::RunManager,
    /// Recent log lines, when captured.
    pub logs: Option<Arc<logbuf::LogBuffer>>,
    /// Counters.
    pub counters: Counters,
    /// Where the database lives (reported in `health`).
    pub store_path: String,
    /// This node's cluster membership, when the store is shared.
    pub cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    /// The configuration file's reloader, when the gateway runs from one.
    pub config_reload: std::sync::OnceLock<Arc<crate::config_reload::ConfigReloader>>,
    /// Set once the plugins directory has been loaded (`/readyz`).
    pub ready: AtomicBool,
    started: Instant,
    presence_version: AtomicU64,
    health_version: AtomicU64,
    shutting_down: AtomicBool,
    ip_rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Sockets still handshaking.
    pub preauth: Arc<preauth::Preauth>,
    /// Per-IP auth-failure limits.
    pub auth_limiter: auth_limit::AuthLimiter,
    /// Per-IP pre-auth protocol violations (enforced at accept).
    pub violations: auth_limit::AuthLimiter,
    /// The runtime authenticated connections run on (the one `serve` was
    /// called on; accepting, HTTP requests and handshakes run on the edge
    /// runtime).
    pub control: std::sync::OnceLock<tokio::runtime::Handle>,
    /// The health summary last put in a `hello-ok` snapshot, with its time
    /// and the health state version it was built at.
    snapshot_health: Mutex<Option<(Instant, u64, Value)>>,
}

/// How long a `hello-ok` may reuse a health summary (when the health state
/// version has not moved): a reconnect storm then costs no database reads.
const SNAPSHOT_HEALTH_TTL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

/// The server version reported in `hello-ok`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Gateway {
    /// Assemble a gateway.
    pub fn new(
        config: GatewayConfig,
        runtime: Arc<Runtime>,
        sessions: SharedSessions,
        webhooks: Arc<crate::webhooks::Webhooks>,
        provider: Arc<dyn Provider>,
        logs: Option<Arc<logbuf::LogBuffer>>,
        store_path: String,
    ) -> Arc<Self> {
        let run_timeout = Duration::from_secs(600);
        let auth_limiter = auth_limit::AuthLimiter::new(config.auth_limit());
        let violations = auth_limit::AuthLimiter::new(config.preauth_limit());
        Arc::new(Gateway {
            runs: runs::RunManager::new(run_timeout, config.runs.clone()),
            config,
            runtime,
            sessions,
            webhooks,
            provider,
            hub: hub::Hub::default(),
            logs,
            counters: Counters::default(),
            store_path,
            cluster: std::sync::OnceLock::new(),
            config_reload: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            presence_version: AtomicU64::new(1),
            health_version: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            ip_rate: Mutex::new(HashMap::new()),
            preauth: Arc::new(preauth::Preauth::default()),
            auth_limiter,
            violations,
            control: std::sync::OnceLock::new(),
            snapshot_health: Mutex::new(None),
        })
    }

    /// The health summary for a `hello-ok` snapshot: built at most once a
    /// second unless the health state version moved (the `health` method
    /// always builds a fresh one).
    pub async fn snapshot_health(&self) -> Value {
        let version = self.health_version.load(Ordering::Relaxed);
        {
            let cached = self
                .snapshot_health
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((at, v, summary)) = &*cached
                && *v == version
                && at.elapsed() < SNAPSHOT_HEALTH_TTL
            {
                return summary.clone();
            }
        }
        let summary = methods::system::health_summary(self).await;
        *self
            .snapshot_health
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), version, summary.clone()));
        summary
    }

    /// Milliseconds since start.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Current state counters.
    pub fn state_version(&self) -> StateVersion {
        StateVersion {
            presence: self.presence_version.load(Ordering::Relaxed),
            health: self.health_version.load(Ordering::Relaxed),
        }
    }

    /// Presence changed: bump the counter and tell everyone (droppable).
    pub fn presence_changed(&self) {
        self.presence_version.fetch_add(1, Ordering::Relaxed);
        let b = hub::Broadcast {
            name: "presence",
            payload: json!({ "presence": self.presence() }),
            scope: None,
            droppable: true,
            audience: hub::Audience::All,
            state_version: Some(self.state_version()),
        };
        self.broadcast(&b);
    }

    /// Health refreshed: bump the counter and send the summary.
    pub async fn health_changed(&self) {
        self.health_version.fetch_add(1, Ordering::Relaxed);
        let summary = methods::system::health_summary(self).await;
        let b = hub::Broadcast {
            name: "health",
            payload: summary,
            scope: None,
            droppable: true,
            audience: hub::Audience::All,
            state_version: Some(self.state_version()),
        };
        self.broadcast(&b);
    }

    /// Presence entries: the live connections, and in a cluster every
    /// live node.
    pub fn presence(&self) -> Vec<Value> {
        let mut p = self.hub.presence();
        if let Some(c) = self.cluster.get() {
            p.extend(c.presence());
        }
        p
    }

    /// Fan out, then announce presence if slow consumers were cut off. In
    /// a cluster, cluster-wide events (chat, agent, session changes) go
    /// through the shared log and reach every node's connections from
    /// there.
    pub fn broadcast(&self, b: &hub::Broadcast) {
        if let Some(c) = self.cluster.get()
            && cluster::wire::is_cluster_wide(b.name)
        {
            c.publish(b);
            return;
        }
        self.deliver(b, None);
    }

    /// Fan `b` out to this node's connections (`cursor`: its cluster log
    /// id), then announce presence if slow consumers were cut off.
    pub fn deliver(&self, b: &hub::Broadcast, cursor: Option<i64>) {
        let slow = self.hub.broadcast_at(b, cursor);
        if !slow.is_empty() {
            for c in &slow {
                tracing::warn!(conn = %c.id, remote = %c.remote, "closing slow consumer");
            }
            if b.name != "presence" {
                self.presence_changed();
            }
        }
    }

    /// Add an authenticated connection to the hub; in a cluster, with
    /// `resume_after`, after queueing it the logged events it missed.
    pub fn join(&self, conn: Arc<hub::Conn>, resume_after: Option<i64>) {
        match self.cluster.get() {
            Some(c) => c.join(self, conn, resume_after),
            None => self.hub.add(conn),
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Admission control for a new connection from `ip`: the slot it
    /// holds while handshaking, or why not. Handshaking sockets count
    /// toward `max_connections` and are capped by `max_preauth` and
    /// `max_preauth_per_ip`.
    pub fn admit(&self, ip: IpAddr) -> Result<preauth::PreauthSlot, &'static str> {
        if self.shutting_down() {
            return Err("shutting down");
        }
        if self.hub.len() + self.preauth.count() >= self.config.max_connections {
            return Err("too many connections");
        }
        self.check_rate(ip)?;
        self.preauth
            .try_acquire(ip, self.config.max_preauth, self.config.max_preauth_per_ip)
            .map_err(|e| match e {
                preauth::PreauthFull::Total => "too many unauthenticated connections",
                preauth::PreauthFull::PerIp => {
                    "too many unauthenticated connections from this address"
                }
            })
    }

    /// Whether per-IP limits apply to `ip` (loopback is exempt unless
    /// `limit_loopback`).
    fn limited_ip(&self, ip: IpAddr) -> bool {
        !ip.is_loopback() || self.config.limit_loopback
    }

    /// Checked at accept, before a byte of the socket is read: `Some(wait)`
    /// refuses a new socket from `ip` because the address is blocked for
    /// pre-auth protocol violations or is over its connection rate (the
    /// upgrades that went over it were counted by [`Self::admit`]). Counts
    /// nothing itself, so a refused socket costs an accept and a close.
    pub fn accept_refusal(&self, ip: IpAddr) -> Option<Duration> {
        if !self.limited_ip(ip) {
            return None;
        }
        if let Err(limited) = self.violations.check(ip) {
            return Some(limited.retry_after);
        }
        let rates = self.ip_rate.lock().unwrap_or_else(|p| p.into_inner());
        let (since, n) = rates.get(&ip)?;
        let left = Duration::from_secs(60).checked_sub(since.elapsed())?;
        (*n > self.config.connections_per_minute).then_some(left)
    }

    /// A pre-auth socket from `ip` broke the protocol (`what`): counted
    /// toward the address's block (loopback exempt unless
    /// `limit_loopback`); whether the address is now blocked.
    pub fn record_violation(&self, ip: IpAddr, what: &'static str) -> bool {
        self.limited_ip(ip) && self.violations.record_violation(ip, what).is_some()
    }

    /// The per-IP connection rate (loopback exempt unless
    /// `limit_loopback`).
    fn check_rate(&self, ip: IpAddr) -> Result<(), &'static str> {
        if !self.limited_ip(ip) {
            return Ok(());
        }
        let mut rates = self.ip_rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if rates.len() > 10_000 {
            rates.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let entry = rates.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > self.config.connections_per_minute {
            return Err("connection rate limit exceeded");
        }
        Ok(())
    }

    /// Start shutdown: announce it, let runs finish for the grace period,
    /// abort the rest (their partial answers are persisted), let channel
    /// sends in flight finish, then close every socket with 1012.
    pub async fn shutdown(&self, reason: &str) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(reason, "gateway shutting down");
        self.broadcast(&hub::Broadcast {
            name: "shutdown",
            payload: json!({ "reason": reason }),
            scope: None,
            droppable: false,
            audience: hub::Audience::All,
            state_version: None,
        });
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.runs.wait_idle())
            .await
            .is_err()
        {
            self.runs.abort_all("shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), self.runs.wait_idle()).await;
        }
        // Channel sends in flight finish (bounded per channel) rather than
        // being cut mid-call and sent again after the restart.
        self.runtime.channels.drain().await;
        // In a cluster, this node's events (the runs' ends, `shutdown`)
        // reach its clients through the shared log: let them arrive
        // before the sockets close (bounded).
        if let Some(cluster) = self.cluster.get()
            && !cluster.fanned_out(Duration::from_secs(2)).await
        {
            tracing::warn!("cluster events not fanned out before closing the connections");
        }
        for c in self.hub.all() {
            c.close(1012, "service restart");
        }
    }

    /// Default session defaults for `hello-ok` and the UIs.
    pub fn session_defaults(&self) -> Value {
        json!({
            "defaultAgentId": "main",
            "mainKey": "main",
            "mainSessionKey": MAIN_SESSION,
            "scope": "per-sender",
        })
    }
}

/// The operator's main session.
pub const MAIN_SESSION: &str = "agent:main:main";

/// Canonical session key: `main` → `agent:main:main`; `agent:…` and
/// `global` unchanged; anything else → `agent:main:<key>`.
pub fn canonical_key(key: &str) -> String {
    let key = key.trim();
    if key.is_empty() || key == "main" {
        MAIN_SESSION.to_string()
    } else if key.starts_with("agent:") || key == "global" {
        key.to_string()
    } else {
        format!("agent:main:{key}")
    }
}

/// Unix time, ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
