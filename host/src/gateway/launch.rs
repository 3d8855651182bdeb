//! Assembling and starting a whole gateway (store, plugin runtime, watcher,
//! health monitor, provider, listener): used by `pincer serve`, the tests
//! and `pincer bench gateway`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::token_file::{self, GatewayToken};
use super::{AuthMode, Gateway, GatewayConfig, fdlimit, logbuf::LogBuffer, server};
use crate::agent::{AgentConfig, build_provider};
use crate::events::LocalBus;
use crate::health::HealthConfig;
use crate::netguard::NetGuard;
use crate::plugins::{PluginSettings, RuntimeConfig};
use crate::runtime::{Runtime, RuntimeOptions, WatchHandle};
use crate::store::{SharedStore, StoreConfig};
use crate::webhooks::ssrf::SsrfGuard;
use crate::webhooks::{Dispatcher, WebhookConfig, Webhooks, bridge};

/// Everything needed to start a gateway.
/// A provider given directly (see [`Options::provider`]).
#[derive(Clone)]
pub struct ProviderOverride(pub Arc<dyn crate::agent::Provider>);

impl std::fmt::Debug for ProviderOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProviderOverride({})", self.0.name())
    }
}

/// A clock given directly (see [`Options::clock`]).
#[derive(Clone)]
pub struct ClockOverride(pub crate::clock::SharedClock);

impl std::fmt::Debug for ClockOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockOverride")
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory (database, compile cache, plugin data).
    pub data_dir: PathBuf,
    /// Plugins directory (watched).
    pub plugins_dir: PathBuf,
    /// Install the bundled plugins when the plugins directory is missing.
    pub install_bundled: bool,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// Agent settings.
    pub agent: AgentConfig,
    /// A provider to use instead of the one `agent` describes (embedding
    /// programs and tests).
    pub provider: Option<ProviderOverride>,
    /// Outgoing webhooks (`allow_cidrs` is extended by
    /// `PINCER_WEBHOOK_ALLOW_CIDRS` at start).
    pub webhooks: WebhookConfig,
    /// Health monitor settings.
    pub health: HealthConfig,
    /// Per-plugin settings.
    pub plugins: std::collections::BTreeMap<String, PluginSettings>,
    /// Private ranges plugins may reach.
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Host-wide plugin quotas (instances, key-value, `/data`, log bytes).
    pub plugin_quotas: crate::plugins::Quotas,
    /// Threads running tool calls (0: half the CPUs).
    pub plugin_threads: usize,
    /// Nice value of those threads (default 10; 0: off).
    pub plugin_nice: i32,
    /// Host-wide ceilings on plugin limits and the default outbound budget.
    pub sandbox: crate::plugins::SandboxConfig,
    /// Log capture for `logs.tail`.
    pub logs: Option<Arc<LogBuffer>>,
    /// Debounce for the plugins directory watcher.
    pub watch_settle: Duration,
    /// The store: SQLite in the data directory (reader connections, size
    /// limit), or PostgreSQL when `store.url` is a `postgres://` URL.
    pub store: StoreConfig,
    /// The clock of plugins, channels (pairing code expiry) and the health
    /// monitor, instead of the system clock (tests).
    pub clock: Option<ClockOverride>,
    /// With no token, no password and no `gateway.no_auth`, use (creating
    /// it on first start) the token in `<data_dir>/gateway-token` instead
    /// of running open. `pincer serve` sets it; [`Options::new`] leaves it
    /// off, so embedders and tests that set no secret get an open gateway
    /// (loopback only, as before).
    pub token_file: bool,
    /// The configuration file these options came from: reloaded on
    /// `config.reload` (and SIGHUP in `pincer serve`), and when saved
    /// unless `gateway.config_watch` is off; its `[plugins.*]` tables
    /// apply live (see [`crate::config_reload`]). `None`: no reload.
    pub config_file: Option<PathBuf>,
}

impl Options {
    /// Defaults for `data_dir` (plugins in `<data_dir>/plugins`).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Options {
            plugins_dir: data_dir.join("plugins"),
            data_dir,
            install_bundled: true,
            gateway: GatewayConfig::default(),
            agent: AgentConfig::default(),
            provider: None,
            webhooks: WebhookConfig::default(),
            health: HealthConfig::default(),
            plugins: Default::default(),
            allow_cidrs: Vec::new(),
            plugin_quotas: Default::default(),
            plugin_threads: 0,
            plugin_nice: crate::plugins::registry::DEFAULT_PLUGIN_NICE,
            sandbox: Default::default(),
            logs: None,
            watch_settle: Duration::from_millis(300),
            store: StoreConfig::default(),
            clock: None,
            token_file: false,
            config_file: None,
        }
    }
}

/// A running gateway.
pub struct Running {
    /// The bound address.
    pub addr: std::net::SocketAddr,
    /// Shared state.
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _watch: WatchHandle,
    _config_watch: Option<crate::config_reload::ConfigWatch>,
    monitor: tokio::task::JoinHandle<()>,
    /// The webhook dispatcher and the bus-to-event-log bridge.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The webhook dispatcher (tests drive it, benches read it).
    pub dispatcher: Arc<Dispatcher>,
    /// The token from `<data_dir>/gateway-token`, when
    /// [`Options::token_file`] supplied the gateway's token.
    pub token_file: Option<GatewayToken>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Shut down (the `shutdown` event, runs finished or persisted, sockets
    /// closed with 1012, channels stopped) and wait for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = (&mut self.task).await.context("gateway task")?;
        // Queued cluster events are written and the node leaves presence.
        if let Some(c) = self.gateway.cluster.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        self.monitor.abort();
        for task in &self.background {
            task.abort();
        }
        for ch in self.gateway.runtime.channels.all() {
            ch.stop().await;
        }
        r
    }

    /// Wait until the server ends (after `shutdown` resolves elsewhere).
    pub async fn wait(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            r = &mut self.task => return r.context("gateway task")?,
            _ = shutdown => {}
        }
        self.stop().await
    }
}

/// Build everything and start listening.
pub async fn start(mut opts: Options) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let token_file = if opts.token_file
        && !opts.gateway.no_auth
        && matches!(opts.gateway.auth_mode(), AuthMode::None)
    {
        let t = token_file::load_or_create(&opts.data_dir).context("the gateway token file")?;
        opts.gateway.token = Some(t.token.clone());
        Some(t)
    } else {
        None
    };
    opts.gateway.check()?;
    let fd_limit = fdlimit::raise();
    tracing::debug!(fd_limit, "open-file limit");
    if opts.install_bundled && !opts.plugins_dir.exists() {
        let written = crate::bundled::install(&opts.plugins_dir, false).with_context(|| {
            format!(
                "installing bundled plugins into {}",
                opts.plugins_dir.display()
            )
        })?;
        tracing::info!(dir = %opts.plugins_dir.display(), plugins = ?written, "installed bundled plugins");
    }
    std::fs::create_dir_all(&opts.plugins_dir)
        .with_context(|| format!("creating plugins dir {}", opts.plugins_dir.display()))?;
    opts.webhooks.check().map_err(|e| anyhow::anyhow!(e))?;
    if crate::store::is_postgres_url(opts.store.url.as_deref().unwrap_or(""))
        && opts.store.node_id.is_none()
    {
        opts.store.node_id = Some(
            crate::store::node_id::load_or_create(&opts.data_dir).context("the node id file")?,
        );
    }
    let store = crate::store::open(&opts.data_dir, &opts.store).context("opening the store")?;
    let location = store.location();
    tracing::info!(store = %location, "store open");
    let runtime = Runtime::new(RuntimeOptions {
        plugins_dir: opts.plugins_dir.clone(),
        runtime: RuntimeConfig {
            data_dir: Some(opts.data_dir.clone()),
            settings: opts.plugins.clone(),
            allow_cidrs: opts.allow_cidrs.clone(),
            clock: opts
                .clock
                .as_ref()
                .map_or_else(crate::clock::system, |c| c.0.clone()),
            quotas: opts.plugin_quotas,
            plugin_threads: opts.plugin_threads,
            plugin_nice: opts.plugin_nice,
            sandbox: opts.sandbox,
        },
        health: opts.health,
        kv: store.clone(),
        pairing: store.clone(),
        inbox: store.clone(),
        outbox: store.clone(),
        events: Arc::new(LocalBus::default()),
    })?;
    // Cluster mode (a shared store): each channel account runs where its
    // lease is held. Set before any channel loads.
    if let Some(leases) = store.clone().leases() {
        tracing::info!(node = %leases.node_id(), lease_ms = opts.store.lease_ms, "cluster mode: channel accounts run where their lease is held");
        runtime.channels.set_leases(
            crate::channels::lease::Leases::new(leases, opts.store.lease_ms)
                .with_safety_poll(opts.store.safety_poll_ms),
        );
    }
    // Plugin and health events go into the event log (and so to webhooks)
    // from before the first plugin loads.
    let bridge = bridge::spawn(&*runtime.events, store.clone());
    let (webhooks, dispatcher) = webhooks(&opts.webhooks, store.clone())?;
    let provider = match &opts.provider {
        Some(p) => p.0.clone(),
        None => build_provider(&opts.agent).map_err(|e| anyhow::anyhow!(e))?,
    };
    let listener = TcpListener::bind(opts.gateway.listen)
        .await
        .with_context(|| format!("listening on {}", opts.gateway.listen))?;
    let addr = listener.local_addr()?;
    let mut config = opts.gateway.clone();
    config.listen = addr;
    let cluster_store = store.clone().cluster();
    let webhook_signal = store.outbox_signal();
    let gateway = Gateway::new(
        config,
        runtime.clone(),
        store,
        webhooks,
        provider,
        opts.logs.clone(),
        location,
    );
    gateway
        .runs
        .set_default_timeout(Duration::from_millis(opts.agent.run_timeout_ms));
    // The configuration file's reloader, before anything is served: its
    // baseline (what needs a restart) is the file these options came from,
    // and a save from now on is seen (a reload while plugins still load
    // leaves their new settings for that load).
    let config_watch = match &opts.config_file {
        Some(path) => {
            let reloader = crate::config_reload::ConfigReloader::new(path, runtime.clone())
                .context("the configuration file")?;
            let _ = gateway.config_reload.set(reloader.clone());
            if opts.gateway.config_watch {
                Some(
                    reloader
                        .watch(opts.watch_settle)
                        .with_context(|| format!("watching {}", path.display()))?,
                )
            } else {
                None
            }
        }
        None => None,
    };
    // A shared store makes this gateway a node of a cluster, joined before
    // the first connection is served.
    let mut background = Vec::new();
    if let Some(cs) = cluster_store {
        let (c, beat) = super::cluster::Cluster::start(&gateway, cs, opts.gateway.cluster.clone())
            .context("joining the cluster")?;
        // Deliveries queued on other nodes wake this node's dispatcher;
        // its idle poll is only a safety net.
        c.set_webhook_signal(webhook_signal);
        dispatcher.set_safety_poll(Duration::from_millis(opts.store.safety_poll_ms));
        let _ = gateway.cluster.set(c);
        background.push(beat);
    }
    // Subscribe to channel messages before any channel starts.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(gateway.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    for (path, e) in runtime.load_dir().await? {
        tracing::error!(path = %path.display(), error = %e, "plugin not loaded");
    }
    let watch = runtime.watch(opts.watch_settle)?;
    let monitor = runtime.health.spawn();
    background.extend([bridge, dispatcher.spawn()]);
    gateway.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        addr,
        gateway,
        stop: Some(stop_tx),
        task,
        _watch: watch,
        _config_watch: config_watch,
        monitor,
        background,
        dispatcher,
        token_file,
    })
}

/// The webhook registry and dispatcher, with the SSRF guard's allow-list
/// from the config plus `PINCER_WEBHOOK_ALLOW_CIDRS`.
fn webhooks(
    config: &WebhookConfig,
    store: SharedStore,
) -> anyhow::Result<(Arc<Webhooks>, Arc<Dispatcher>)> {
    let mut cidrs = config.allow_cidrs.join(",");
    if let Ok(env) = std::env::var("PINCER_WEBHOOK_ALLOW_CIDRS") {
        cidrs.push(',');
        cidrs.push_str(&env);
    }
    let allow = NetGuard::parse_cidrs(&cidrs).map_err(|e| {
        anyhow::anyhow!("webhook allow-list (config or PINCER_WEBHOOK_ALLOW_CIDRS): {e}")
    })?;
    if !allow.is_empty() {
        tracing::info!(cidrs = ?allow, "webhooks may reach these otherwise blocked ranges");
    }
    let guard = SsrfGuard::system(NetGuard::new(allow));
    let clock = crate::clock::system();
    let registry = Webhooks::new(
        store.clone(),
        guard.clone(),
        clock.clone(),
        config.rotation_grace(),
    );
    let dispatcher = Dispatcher::new(store.clone(), store, config.clone(), clock, guard)
        .context("building the webhook HTTP client")?;
    Ok((registry, dispatcher))
}
