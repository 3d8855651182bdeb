//! The loaded plugins: one slot per plugin name holding the current version
//! (swapped atomically with `arc-swap`), its state and last error, and the
//! plugin list API the gateway serves.
//!
//! A new version replaces the old one only after it compiled, linked and
//! passed its smoke test; a failed load leaves the previous version serving
//! and records the error. Callers that hold the old `Arc<PluginVersion>`
//! finish on it; it is freed when the last one lets go.

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
use super::host::{self, HostState};
use super::instance::{CallError, Instance};
use super::limits::{self, SandboxConfig};
use super::loader::{self, Describe, LoadError, PluginVersion};
use super::manifest::{Limits, PluginKind, PluginSettings};
use crate::clock::SharedClock;
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
            sandbox: SandboxConfig::default(),
        }
    }
}

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

/// The loaded plugins.
pub struct PluginRegistry {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    config: RuntimeConfig,
    kv: SharedKv,
    events: Arc<dyn EventBus>,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Which file provides which plugin name.
    files: Mutex<HashMap<PathBuf, String>>,
    /// Loads are serialized so two events for one file never race.
    load_lock: tokio::sync::Mutex<()>,
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
        let engine = engine::build_engine()?;
        let linker = engine::build_linker(&engine)?;
        let cache = CompileCache::new(config.data_dir.as_ref().map(|d| d.join("cache")));
        Ok(Arc::new(PluginRegistry {
            engine,
            linker,
            cache,
            config,
            kv,
            events,
            slots: RwLock::new(BTreeMap::new()),
            files: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
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
            let name = self.name_for_path(path).unwrap_or_else(|| {
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("?")
                    .to_string()
            });
            tracing::error!(plugin = %name, path = %path.display(), error = %e, "plugin failed to load");
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

    async fn load_inner(&self, path: &Path) -> Result<Loaded, LoadError> {
        let (engine, linker, cache, p) = (
            self.engine.clone(),
            self.linker.clone(),
            self.cache.clone(),
            path.to_path_buf(),
        );
        let (manifest, component, pre, kind, sha256, source, compile_time) =
            tokio::task::spawn_blocking(move || loader::prepare(&engine, &linker, &cache, &p))
                .await
                .map_err(|e| LoadError::Compile {
                    path: path.to_path_buf(),
                    message: format!("compile task failed: {e}"),
                })??;
        let name = manifest.name.clone();
        if let Some(other) = self
            .files()
            .iter()
            .find(|(f, n)| **n == name && f.as_path() != path)
            .map(|(f, _)| f.clone())
        {
            return Err(LoadError::Manifest {
                path: path.to_path_buf(),
                message: format!(
                    "plugin name `{name}` is already provided by {}",
                    other.display()
                ),
            });
        }
        let settings = self.config.settings.get(&name).cloned().unwrap_or_default();
        let caps = self.capabilities(&name, &manifest, &settings)?;
        let placeholder = match kind {
            PluginKind::Channel => Describe::Channel(super::bindings::Capabilities {
                mode: super::bindings::ReceiveMode::Poll,
                edit: false,
                typing: false,
                max_message_length: 0,
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
            placeholder,
            String::new(),
        );
        // Smoke test: one instance, `name` and `describe`.
        let (reported_name, describe) = {
            let mut inst = Instance::new(draft.clone())
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
            st.last_error = None;
            st.loaded_at_ms = Some(self.config.clock.now_ms());
            old.is_some()
        };
        self.files().insert(path.to_path_buf(), name.clone());
        tracing::info!(
            plugin = %name,
            kind = %kind,
            version = %version.manifest.version,
            cached = version.source == Source::Cached,
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
        manifest: &super::Manifest,
        settings: &PluginSettings,
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
        let granted = &settings.secrets;
        let secrets = host::secrets::SecretValues::from_grants(name, manifest, granted).map_err(
            |message| LoadError::Manifest {
                path: PathBuf::from(format!("[plugins.{name}]")),
                message,
            },
        )?;
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
        Ok(host::Capabilities {
            plugin: plugin.clone(),
            data_dir: self
                .config
                .data_dir
                .as_ref()
                .map(|d| host::data_dir(&d.join("plugin-data"), name)),
            http: Arc::new(host::http::HttpPolicy::with_limits(
                allowed,
                NetGuard::new(self.config.allow_cidrs.clone()),
                http_limits,
            )),
            log: host::log::LogLimiter::new(50.0, 200.0),
            kv: host::kv::PluginKv::new(plugin, self.kv.clone()),
            clock: self.config.clock.clone(),
            secrets: Arc::new(secrets),
            memory_bytes: (limits.memory_mb as usize).saturating_mul(1 << 20),
            limits,
        })
    }

    /// Unload the plugin that `path` provided. Returns its name.
    pub async fn remove_file(&self, path: &Path) -> Option<String> {
        let _serial = self.load_lock.lock().await;
        let name = self.files().remove(path)?;
        self.slots_write().remove(&name);
        tracing::info!(plugin = %name, path = %path.display(), "plugin unloaded");
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
                    cached: v.as_ref().map(|v| v.source == Source::Cached),
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

    /// Run tool `name` with JSON `arguments` in a fresh instance.
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
        let result = async {
            let mut inst = Instance::new(version).await?;
            inst.invoke(arguments).await
        }
        .await;
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
