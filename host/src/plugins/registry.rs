//! The loaded plugins: one slot per plugin name holding the current version
//! (swapped atomically with `arc-swap`), its state and last error, and the
//! plugin list API the gateway serves.
//!
//! A new version replaces the old one only after it compiled, linked and
//! passed its smoke test; a failed load leaves the previous version serving
//! and records the error. Callers that hold the old `Arc<PluginVersion>`
//! finish on it; it is freed when the last one lets go.
//!
//! A plugin name belongs to one file: when two files' manifests claim the
//! same name, both are refused until one of them goes. Tool names are
//! unique too (a second tool naming an existing one is a load error). Each
//! name has one instance gate, key-value quota and log budget shared by its
//! versions, and tool and channel calls run on a runtime of their own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwapOption;
use ipnet::IpNet;
use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::cache::{CompileCache, Source};
use super::engine;
use super::gate::{ENGINE_RESERVE, Gate};
use super::host::{self, HostState};
use super::instance::{CallError, Instance};
use super::limits::{self, SandboxConfig};
use super::loader::{self, Describe, LoadError, PluginVersion};
use super::manifest::{Limits, PluginKind, PluginSettings};
use super::quotas::Quotas;
use crate::clock::SharedClock;

/// How long an idle blocking thread of the plugin call runtime lives.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);
use crate::events::{Event, EventBus};
use crate::netguard::NetGuard;
use crate::store::SharedKv;

/// How the plugin runtime is set up.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where plugin data directories and the compile cache live (`None`: no
    /// data directories, no cache).
    pub data_dir: Option<PathBuf>,
    /// The operator's per-plugin settings, by plugin name.
    pub settings: BTreeMap<String, PluginSettings>,
    /// Address ranges plugins may reach although they are private/reserved.
    pub allow_cidrs: Vec<IpNet>,
    /// The clock given to plugins and the health monitor.
    pub clock: SharedClock,
    /// Host-wide plugin quotas (each plugin's `quotas` settings override them).
    pub quotas: Quotas,
    /// Threads of the runtime that runs tool calls, apart from the
    /// gateway's (0: half the CPUs, at least one), so guests spinning on the
    /// CPU cannot starve the gateway's own tasks.
    pub plugin_threads: usize,
    /// Nice value of those threads (0-19, default 10): plugin work runs at
    /// lower OS priority than the gateway's own tasks, so a spinning or
    /// flooding guest yields the CPU to request handling (Linux; 0 turns it
    /// off).
    pub plugin_nice: i32,
    /// Host-wide ceilings on plugin limits and the default outbound budget.
    pub sandbox: SandboxConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: None,
            settings: BTreeMap::new(),
            allow_cidrs: Vec::new(),
            clock: crate::clock::system(),
            quotas: Quotas::default(),
            plugin_threads: 0,
            plugin_nice: DEFAULT_PLUGIN_NICE,
            sandbox: SandboxConfig::default(),
        }
    }
}

/// The default nice value of the plugin call runtime's threads.
pub const DEFAULT_PLUGIN_NICE: i32 = 10;

/// Compiled components the registry keeps in memory by source hash, so
/// plugins loaded from identical files share one (see
/// [`CompileCache::with_memory`]).
const COMPONENTS_IN_MEMORY: usize = 32;

/// A plugin's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// A version is loaded and serving.
    Loaded,
    /// No version could be loaded (see `last_error`).
    Failed,
}

/// One row of the plugin list.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub kind: Option<PluginKind>,
    pub version: Option<String>,
    pub state: PluginState,
    /// The last load error; with state `loaded` it means a newer file failed
    /// and the previous version kept serving.
    pub last_error: Option<String>,
    pub sha256: Option<String>,
    pub path: PathBuf,
    pub description: Option<String>,
    pub loaded_at_ms: Option<u64>,
    /// `true` if the compiled artifact came from the cache.
    pub cached: Option<bool>,
    pub calls: u64,
    pub failures: u64,
    /// The limits in force (after the host-wide ceilings).
    pub limits: Option<Limits>,
    /// Outbound HTTP counters of the current version.
    pub outbound: Option<host::budget::OutboundStats>,
}

struct Slot {
    current: ArcSwapOption<PluginVersion>,
    status: Mutex<SlotStatus>,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl Slot {
    /// An empty slot for the plugin in `path`.
    fn new(path: &Path) -> Arc<Self> {
        Arc::new(Slot {
            current: ArcSwapOption::empty(),
            status: Mutex::new(SlotStatus {
                path: path.to_path_buf(),
                last_error: None,
                loaded_at_ms: None,
            }),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }
}

struct SlotStatus {
    path: PathBuf,
    last_error: Option<String>,
    loaded_at_ms: Option<u64>,
}

/// What all versions of one plugin name share: the instance gate, the
/// key-value quota, the log budget and a tool's warm instance.
struct Shared {
    gate: Arc<Gate>,
    kv_quota: Arc<host::kv::KvQuota>,
    log: Arc<host::log::LogLimiter>,
    /// A tool's instance kept between calls (`warm_instance = true`).
    warm: Mutex<Option<Instance>>,
}

/// The loaded plugins.
pub struct PluginRegistry {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    config: RuntimeConfig,
    /// The operator's per-plugin settings now: `config.settings` at start,
    /// replaced by a config reload ([`PluginRegistry::apply_settings`]).
    settings: arc_swap::ArcSwap<BTreeMap<String, PluginSettings>>,
    kv: SharedKv,
    events: Arc<dyn EventBus>,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Which file provides which plugin name.
    files: Mutex<HashMap<PathBuf, String>>,
    /// Which plugin name each file's manifest claims (loaded or refused):
    /// a name claimed by two files is refused for both.
    claims: Mutex<BTreeMap<PathBuf, String>>,
    /// Per-name state shared by versions.
    shared: Mutex<HashMap<String, Arc<Shared>>>,
    /// Loads are serialized so two events for one file never race.
    load_lock: tokio::sync::Mutex<()>,
    /// The runtime tool calls run on (shut down with the registry).
    calls: Option<tokio::runtime::Runtime>,
    /// Files held for channels and agents (`<data_dir>/blobs`; none
    /// without a data directory).
    blobs: Option<Arc<crate::blobs::BlobStore>>,
    /// Where channel accounts' host-managed sockets live (installed by the
    /// channel manager; without one, socket calls are refused).
    sockets: std::sync::OnceLock<Arc<dyn host::socket::SocketHub>>,
}

impl Drop for PluginRegistry {
    fn drop(&mut self) {
        if let Some(rt) = self.calls.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts a spawned call when the caller stops waiting for it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What loading a file did.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The new version.
    pub version: Arc<PluginVersion>,
    /// Whether it replaced an earlier version.
    pub replaced: bool,
}

impl PluginRegistry {
    /// A registry with its own engine and linker.
    pub fn new(
        config: RuntimeConfig,
        kv: SharedKv,
        events: Arc<dyn EventBus>,
    ) -> anyhow::Result<Arc<Self>> {
        let engine = engine::build_engine(&config.sandbox)?;
        let linker = engine::build_linker(&engine)?;
        let cache = CompileCache::new(config.data_dir.as_ref().map(|d| d.join("cache")))
            .with_memory(COMPONENTS_IN_MEMORY);
        let threads = match config.plugin_threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() / 2)
                .unwrap_or(1)
                .max(1),
            n => n,
        };
        let nice = config.plugin_nice;
        let calls = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("pincer-plugin")
            .on_thread_start(move || super::nice::lower_current_thread_or_warn(nice))
            // Idle blocking threads (a plugin's key-value calls run there)
            // exit after 1 s, as on the main runtime: with tokio's 10 s,
            // 1,000 socket accounts heartbeating kept about 50 extra
            // threads alive, each with its stack and malloc arena touched.
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("starting the plugin call runtime: {e}"))?;
        let blobs = match &config.data_dir {
            Some(dir) => Some(Arc::new(
                crate::blobs::BlobStore::open(&dir.join("blobs"), config.sandbox.media)
                    .map_err(|e| anyhow::anyhow!("opening the blob store: {e}"))?,
            )),
            None => None,
        };
        Ok(Arc::new(PluginRegistry {
            engine,
            linker,
            cache,
            settings: arc_swap::ArcSwap::from_pointee(config.settings.clone()),
            config,
            kv,
            events,
            slots: RwLock::new(BTreeMap::new()),
            files: Mutex::new(HashMap::new()),
            claims: Mutex::new(BTreeMap::new()),
            shared: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            calls: Some(calls),
            blobs,
            sockets: std::sync::OnceLock::new(),
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The blob store (attachments, uploads), if the host has a data directory.
    pub fn blobs(&self) -> Option<&Arc<crate::blobs::BlobStore>> {
        self.blobs.as_ref()
    }

    /// Install the hub channel accounts' sockets live in (once; the
    /// channel manager does, before any plugin is loaded).
    pub fn set_socket_hub(&self, hub: Arc<dyn host::socket::SocketHub>) {
        if self.sockets.set(hub).is_err() {
            tracing::warn!("a socket hub was installed already; keeping the first");
        }
    }

    /// The sockets of channel key `key` of a plugin of `kind` (tools and a
    /// registry without a hub have none).
    pub(crate) fn socket_control(
        &self,
        key: &str,
        kind: PluginKind,
    ) -> Option<Arc<dyn host::socket::SocketControl>> {
        (kind == PluginKind::Channel)
            .then(|| self.sockets.get().map(|h| h.account(key)))
            .flatten()
    }

    /// The runtime configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The event bus.
    pub fn events(&self) -> &Arc<dyn EventBus> {
        &self.events
    }

    /// The shared key-value store (plugins' durable data).
    pub fn kv(&self) -> &SharedKv {
        &self.kv
    }

    fn slots_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn slots_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, String>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, String>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shared_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Shared>>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-name shared state of `name`, created on first use. Refused if
    /// its instance cap does not fit beside the other plugins' caps in the
    /// engine's instance pool.
    fn shared_for(&self, name: &str, quotas: &Quotas) -> Result<Arc<Shared>, LoadError> {
        let mut map = self.shared_map();
        if let Some(s) = map.get(name) {
            return Ok(s.clone());
        }
        let reserved: usize = map.values().map(|s| s.gate.cap()).sum();
        let budget = (self.config.sandbox.engine_instances as usize).saturating_sub(ENGINE_RESERVE);
        if reserved + quotas.max_instances > budget {
            return Err(LoadError::Capacity(format!(
                "plugin `{name}` asks for {} instances but only {} of the engine's {budget} are unreserved; lower `max_instances`",
                quotas.max_instances,
                budget.saturating_sub(reserved)
            )));
        }
        let s = Arc::new(Shared {
            gate: Gate::new(name, quotas.max_instances),
            kv_quota: host::kv::KvQuota::new(quotas.kv_max_bytes, quotas.kv_max_keys),
            log: host::log::LogLimiter::new(
                quotas.log_bytes_per_sec as f64,
                quotas.log_burst_bytes as f64,
            ),
            warm: Mutex::new(None),
        });
        map.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// The quotas in force for plugin `name`.
    /// The operator's settings for plugin `name` now (defaults if none).
    pub fn settings(&self, name: &str) -> PluginSettings {
        self.settings.load().get(name).cloned().unwrap_or_default()
    }

    /// Every plugin's settings now, by name.
    pub fn all_settings(&self) -> Arc<BTreeMap<String, PluginSettings>> {
        self.settings.load_full()
    }

    /// Replaces the operator's per-plugin settings (the `[plugins.*]` tables
    /// of a reloaded config file) and returns the names whose settings
    /// changed, in order. Nothing is reloaded here: loads from now on use the
    /// new settings; `Runtime::apply_settings` reloads the plugins affected.
    pub fn replace_settings(&self, new: BTreeMap<String, PluginSettings>) -> Vec<String> {
        let new = Arc::new(new);
        let old = self.settings.swap(new.clone());
        let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        names
            .into_iter()
            .filter(|n| old.get(*n) != new.get(*n))
            .cloned()
            .collect()
    }

    pub fn quotas(&self, name: &str) -> Quotas {
        let settings = self.settings(name);
        self.plugin_quotas(&settings)
    }

    /// Instances of plugin `name` alive now, and its cap.
    pub fn instances(&self, name: &str) -> Option<(usize, usize)> {
        let map = self.shared_map();
        let g = &map.get(name)?.gate;
        Some((g.in_use(), g.cap()))
    }

    /// The one file that claims plugin `name`, if exactly one does (after a
    /// clash, once all but one of the claiming files are gone).
    pub fn sole_claimant(&self, name: &str) -> Option<PathBuf> {
        let claims = self.claims();
        let mut it = claims.iter().filter(|(_, n)| *n == name).map(|(p, _)| p);
        let first = it.next()?.clone();
        it.next().is_none().then_some(first)
    }

    /// The current version of plugin `name`.
    pub fn current(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.slots_read().get(name)?.current.load_full()
    }

    /// The plugin name a file provides, if loaded from it.
    pub fn name_for_path(&self, path: &Path) -> Option<String> {
        self.files().get(path).cloned()
    }

    /// Load (or reload) the plugin in `path`. On failure the previous version
    /// of the same plugin, if any, keeps serving and the error is recorded.
    pub async fn load_file(&self, path: &Path) -> Result<Loaded, LoadError> {
        let _serial = self.load_lock.lock().await;
        let result = self.load_inner(path).await;
        if let Err(e) = &result {
            let name = self
                .claims()
                .get(path)
                .cloned()
                .or_else(|| self.name_for_path(path))
                .unwrap_or_else(|| {
                    super::files::printable(
                        &path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    )
                });
            tracing::error!(plugin = %name, path = ?path, error = %e, "plugin failed to load");
            {
                let mut slots = self.slots_write();
                let slot = slots.entry(name.clone()).or_insert_with(|| Slot::new(path));
                slot.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some(e.to_string());
            }
            self.events.publish(Event::PluginFailed {
                plugin: name,
                error: e.to_string(),
            });
        }
        result
    }

    /// Record that `path` claims `name`; refuse (both) if another file
    /// claims it too. A file that claimed another name before gives it up.
    fn claim(&self, path: &Path, name: &str) -> Result<(), LoadError> {
        let previous = self.claims().insert(path.to_path_buf(), name.to_string());
        let renamed = previous.filter(|p| p != name);
        let provided = renamed.is_some() && self.files().get(path) == renamed.as_ref();
        if let (true, Some(prev)) = (provided, renamed) {
            // The file was renamed inside its manifest: its old name goes.
            self.files().remove(path);
            self.slots_write().remove(&prev);
            self.events.publish(Event::PluginUnloaded { plugin: prev });
        }
        let mut paths: Vec<PathBuf> = self
            .claims()
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(p, _)| p.clone())
            .collect();
        if paths.len() < 2 {
            return Ok(());
        }
        paths.sort();
        // Refuse both: whichever was serving stops, so neither file gets the
        // name's secrets, hosts or data.
        self.files().retain(|_, n| n != name);
        if let Some(slot) = self.slots_read().get(name) {
            slot.current.store(None);
        }
        Err(LoadError::NameClash {
            name: name.to_string(),
            paths,
        })
    }

    /// Whether `describe`'s tool name clashes with another loaded tool.
    fn check_tool_name(&self, name: &str, path: &Path, tool: &str) -> Result<(), LoadError> {
        for other in self.of_kind(PluginKind::Tool) {
            if other.name == name {
                continue;
            }
            let other_tool = other.tool_info().map(|t| t.name.as_str()).unwrap_or("");
            let clash = [tool, name]
                .into_iter()
                .find(|n| !n.is_empty() && (*n == other.name || *n == other_tool));
            if let Some(t) = clash {
                return Err(LoadError::ToolClash {
                    tool: t.to_string(),
                    path: path.to_path_buf(),
                    owner: other.name.clone(),
                    owner_path: other.path.clone(),
                });
            }
        }
        Ok(())
    }

    async fn load_inner(&self, path: &Path) -> Result<Loaded, LoadError> {
        let p = path.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || loader::read_manifest(&p))
            .await
            .map_err(|e| LoadError::Io {
                path: path.to_path_buf(),
                message: format!("manifest task failed: {e}"),
            })??;
        let name = manifest.name.clone();
        self.claim(path, &name)?;
        let fallback = self.current(&name).is_none();
        let (engine, linker, cache, p) = (
            self.engine.clone(),
            self.linker.clone(),
            self.cache.clone(),
            path.to_path_buf(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            loader::prepare(&engine, &linker, &cache, &p, manifest, fallback)
        })
        .await
        .map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: format!("compile task failed: {e}"),
        })??;
        let loader::Prepared {
            manifest,
            component,
            pre,
            kind,
            sha256,
            source,
            compile_time,
            fallback_from,
        } = prepared;
        let settings = self.settings(&name);
        let quotas = self.plugin_quotas(&settings);
        if kind == PluginKind::Channel && quotas.max_instances < 2 {
            // One instance may be a poll receiver for good; sends need another.
            return Err(LoadError::Capacity(format!(
                "channel `{name}` needs max_instances of at least 2 (a receiver and a sender)"
            )));
        }
        let shared = self.shared_for(&name, &quotas)?;
        let caps = self.capabilities(&name, kind, &manifest, &settings, &quotas, &shared)?;
        let placeholder = match kind {
            PluginKind::Channel => Describe::Channel(super::bindings::Capabilities {
                mode: super::bindings::ReceiveMode::Poll,
                edit: false,
                typing: false,
                max_message_length: 0,
                streaming: super::bindings::StreamStyle::FinalOnly,
                min_edit_interval_ms: 0,
                typing_ttl_ms: 0,
                read_receipts: false,
                attachments: false,
            }),
            PluginKind::Tool => Describe::Tool(super::bindings::ToolInfo {
                name: String::new(),
                description: String::new(),
                parameters_schema: String::new(),
            }),
        };
        let draft = loader::finish(
            name.clone(),
            manifest,
            component,
            pre,
            kind,
            sha256,
            source,
            compile_time,
            path.to_path_buf(),
            settings,
            caps,
            shared.gate.clone(),
            placeholder,
            String::new(),
        );
        // Smoke test: one instance, `name` and `describe`.
        let (reported_name, describe) = {
            let mut inst = Instance::new_unmetered(draft.clone())
                .await
                .map_err(|e| LoadError::Smoke(e.to_string()))?;
            let reported = inst
                .name()
                .await
                .map_err(|e| LoadError::Smoke(e.to_string()))?;
            let describe = match kind {
                PluginKind::Channel => Describe::Channel(
                    inst.describe_channel()
                        .await
                        .map_err(|e| LoadError::Smoke(e.to_string()))?,
                ),
                PluginKind::Tool => Describe::Tool(
                    inst.describe_tool()
                        .await
                        .map_err(|e| LoadError::Smoke(e.to_string()))?,
                ),
            };
            (reported, describe)
        };
        if let Describe::Tool(t) = &describe {
            self.check_tool_name(&name, path, &t.name)?;
        }
        let mut version = Arc::try_unwrap(draft)
            .map_err(|_| LoadError::Smoke("plugin version still in use after smoke test".into()))?;
        version.describe = describe;
        version.reported_name = reported_name;
        let version = Arc::new(version);

        let replaced = {
            let mut slots = self.slots_write();
            let slot = slots.entry(name.clone()).or_insert_with(|| Slot::new(path));
            let old = slot.current.swap(Some(version.clone()));
            let mut st = slot.status.lock().unwrap_or_else(|p| p.into_inner());
            st.path = path.to_path_buf();
            st.last_error = fallback_from.as_ref().map(|e| {
                format!(
                    "{e}; serving the last good version ({}) until a new file loads",
                    version.sha256
                )
            });
            st.loaded_at_ms = Some(self.config.clock.now_ms());
            old.is_some()
        };
        self.files().insert(path.to_path_buf(), name.clone());
        if fallback_from.is_none() {
            self.cache.remember_good(&name, &version.sha256);
        }
        tracing::info!(
            plugin = %name,
            kind = %kind,
            version = %version.manifest.version,
            cached = version.source != Source::Compiled,
            last_good = version.source == Source::LastGood,
            load_ms = version.compile_time.as_secs_f64() * 1000.0,
            replaced,
            "plugin loaded"
        );
        self.events.publish(Event::PluginLoaded {
            plugin: name,
            kind: kind.to_string(),
            version: version.manifest.version.clone(),
            hash: version.sha256.clone(),
            replaced,
        });
        Ok(Loaded { version, replaced })
    }

    fn capabilities(
        &self,
        name: &str,
        kind: PluginKind,
        manifest: &super::Manifest,
        settings: &PluginSettings,
        quotas: &Quotas,
        shared: &Shared,
    ) -> Result<host::Capabilities, LoadError> {
        let hosts = settings
            .allowed_hosts
            .as_ref()
            .unwrap_or(&manifest.allowed_hosts);
        let allowed = hosts
            .iter()
            .map(|h| host::http::HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| LoadError::Manifest {
                path: PathBuf::from(format!("[plugins.{name}]")),
                message,
            })?;
        let allowed_for_sockets = allowed.clone();
        let granted = &settings.secrets;
        let mut secrets = host::secrets::SecretValues::from_grants(name, manifest, granted)
            .map_err(|message| LoadError::Manifest {
                path: PathBuf::from(format!("[plugins.{name}]")),
                message,
            })?;
        host::generated::grant_missing(
            &mut secrets,
            name,
            manifest,
            granted,
            self.config.data_dir.as_deref(),
        );
        let limits = limits::effective(
            name,
            &manifest.limits,
            settings.limits.as_ref(),
            &self.config.sandbox,
        );
        let http_limits = settings.http.map_or(self.config.sandbox.http, |o| {
            o.apply(self.config.sandbox.http)
        });
        let plugin: Arc<str> = Arc::from(name);
        let data = match (&self.config.data_dir, quotas.data_bytes(manifest.data_mb)) {
            (Some(root), Some(max)) => Some(
                host::data::DataBudget::new(host::data_dir(&root.join("plugin-data"), name), max)
                    .map_err(|e| LoadError::Io {
                    path: root.join("plugin-data"),
                    message: format!("creating the plugin's data directory: {e}"),
                })?,
            ),
            _ => {
                if manifest.data_mb.is_some() {
                    tracing::warn!(
                        plugin = name,
                        "plugin asks for /data but the operator has not granted it (quotas.data_mb)"
                    );
                }
                None
            }
        };
        Ok(host::Capabilities {
            plugin: plugin.clone(),
            data,
            http: Arc::new(host::http::HttpPolicy::with_limits(
                allowed,
                NetGuard::new(self.config.allow_cidrs.clone()),
                http_limits,
            )),
            log: shared.log.clone(),
            kv: host::kv::PluginKv::new(plugin, self.kv.clone(), shared.kv_quota.clone()),
            clock: self.config.clock.clone(),
            secrets: Arc::new(secrets),
            blobs: self.blobs.clone(),
            memory_bytes: (limits.memory_mb as usize).saturating_mul(1 << 20),
            limits,
            socket: host::socket::SocketCaps {
                hosts: host::socket::SocketCaps::hosts_from(
                    &allowed_for_sockets,
                    settings.allowed_hosts.is_some(),
                ),
                limits: settings.socket.map_or(self.config.sandbox.socket, |o| {
                    o.apply(self.config.sandbox.socket)
                }),
                control: self.socket_control(name, kind),
            },
        })
    }

    /// Unload the plugin that `path` provided. Returns its name.
    /// A name still claimed by other files stays (as failed) until those
    /// are resolved; see [`PluginRegistry::sole_claimant`].
    pub async fn remove_file(&self, path: &Path) -> Option<String> {
        let _serial = self.load_lock.lock().await;
        let claimed = self.claims().remove(path);
        let name = self.files().remove(path).or(claimed)?;
        let others = self.claims().values().any(|n| *n == name);
        if !others {
            self.slots_write().remove(&name);
            self.shared_map().remove(&name);
        }
        tracing::info!(plugin = %name, path = ?path, "plugin unloaded");
        self.events.publish(Event::PluginUnloaded {
            plugin: name.clone(),
        });
        Some(name)
    }

    /// Every plugin, loaded or failed, by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.slots_read()
            .iter()
            .map(|(name, slot)| {
                let v = slot.current.load_full();
                let st = slot.status.lock().unwrap_or_else(|p| p.into_inner());
                PluginInfo {
                    name: name.clone(),
                    kind: v.as_ref().map(|v| v.kind),
                    version: v.as_ref().map(|v| v.manifest.version.clone()),
                    state: if v.is_some() {
                        PluginState::Loaded
                    } else {
                        PluginState::Failed
                    },
                    last_error: st.last_error.clone(),
                    sha256: v.as_ref().map(|v| v.sha256.clone()),
                    path: st.path.clone(),
                    description: v.as_ref().map(|v| v.manifest.description.clone()),
                    loaded_at_ms: st.loaded_at_ms,
                    cached: v.as_ref().map(|v| v.source != Source::Compiled),
                    calls: slot.calls.load(Ordering::Relaxed),
                    failures: slot.failures.load(Ordering::Relaxed),
                    limits: v.as_ref().map(|v| v.limits),
                    outbound: v.as_ref().map(|v| v.caps.http.stats()),
                }
            })
            .collect()
    }

    /// One plugin's row.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        self.list().into_iter().find(|p| p.name == name)
    }

    /// Loaded plugins of `kind`.
    pub fn of_kind(&self, kind: PluginKind) -> Vec<Arc<PluginVersion>> {
        self.slots_read()
            .values()
            .filter_map(|s| s.current.load_full())
            .filter(|v| v.kind == kind)
            .collect()
    }

    /// Count a call and whether it failed (for the plugin list and metrics).
    pub fn record_call(&self, name: &str, failed: bool) {
        if let Some(slot) = self.slots_read().get(name) {
            slot.calls.fetch_add(1, Ordering::Relaxed);
            if failed {
                slot.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Spawn `fut` (a plugin call or a channel's receive loop) on the plugin
    /// call runtime, apart from the gateway's own tasks.
    pub fn spawn_call<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.calls {
            Some(rt) => rt.spawn(fut),
            None => tokio::spawn(fut),
        }
    }

    /// Run `fut` on the plugin call runtime and wait for it; it is aborted
    /// if the caller stops waiting.
    pub async fn run_call<T: Send + 'static>(
        &self,
        call: &'static str,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, CallError> {
        let mut task = AbortOnDrop(self.spawn_call(fut));
        (&mut task.0).await.map_err(|e| CallError::Trap {
            call,
            message: format!("call task failed: {e}"),
        })
    }

    /// Tool `name`'s warm instance of `version`, if one is kept.
    fn take_warm(&self, name: &str, version: &Arc<PluginVersion>) -> Option<Instance> {
        let shared = self.shared_map().get(name).cloned()?;
        let inst = shared
            .warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Arc::ptr_eq(inst.version(), version).then_some(inst)
    }

    /// Keep `inst` as tool `name`'s warm instance, unless a failure made it
    /// unusable or another version is current now.
    fn keep_warm(&self, name: &str, inst: Instance) {
        let current = self
            .current(name)
            .is_some_and(|v| Arc::ptr_eq(&v, inst.version()));
        if inst.is_poisoned() || !current {
            return;
        }
        if let Some(shared) = self.shared_map().get(name).cloned() {
            *shared.warm.lock().unwrap_or_else(|p| p.into_inner()) = Some(inst);
        }
    }

    /// Run tool `name` with JSON `arguments` in a fresh instance (or, with
    /// `warm_instance = true` in its settings, the instance kept from its
    /// last call), on the plugin call runtime. Refused with
    /// [`CallError::Busy`] when the plugin is at its instance cap.
    pub async fn invoke_tool(&self, name: &str, arguments: &str) -> Result<String, CallError> {
        let version = self
            .current(name)
            .ok_or_else(|| CallError::NotLoaded(name.to_string()))?;
        if version.kind != PluginKind::Tool {
            return Err(CallError::WrongKind {
                name: name.to_string(),
                actual: version.kind,
                wanted: PluginKind::Tool,
            });
        }
        let arguments = arguments.to_string();
        let warm = self.settings(name).warm_instance;
        // Taken either way: with `warm_instance` turned off since, a kept
        // instance is dropped here.
        let kept = self.take_warm(name, &version).filter(|_| warm);
        let outcome = self
            .run_call("invoke", async move {
                let mut inst = match kept {
                    Some(inst) => inst,
                    None => Instance::try_new(version).await?,
                };
                let r = inst.invoke(&arguments).await;
                Ok::<_, CallError>((r, inst))
            })
            .await
            .and_then(|r| r);
        let result = match outcome {
            Ok((r, inst)) => {
                if warm {
                    self.keep_warm(name, inst);
                }
                r
            }
            Err(e) => Err(e),
        };
        self.record_call(
            name,
            result.as_ref().is_err_and(CallError::poisons_instance),
        );
        if let Err(e) = &result {
            tracing::warn!(plugin = name, error = %e, "tool call failed");
        }
        result
    }
}
