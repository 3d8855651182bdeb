//! The assembled runtime: plugin registry, channel manager and health
//! monitor wired together, fed by the plugins directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::channels::ChannelManager;
use crate::events::EventBus;
use crate::health::{HealthConfig, HealthMonitor};
use crate::plugins::watcher::{self, Change};
use crate::plugins::{LoadError, PluginKind, PluginRegistry, PluginSettings, RuntimeConfig};
use crate::store::{SharedInbox, SharedKv, SharedOutbox, SharedPairing};

/// Everything the runtime needs.
pub struct RuntimeOptions {
    /// Directory watched for plugins.
    pub plugins_dir: PathBuf,
    /// Plugin runtime settings.
    pub runtime: RuntimeConfig,
    /// Health monitor settings.
    pub health: HealthConfig,
    /// Durable key-value store for plugins.
    pub kv: SharedKv,
    /// Channel sender pairing state (the access policy's approvals).
    pub pairing: SharedPairing,
    /// The durable channel inbox (received messages, platform cursors).
    pub inbox: SharedInbox,
    /// The durable channel outbox (replies and notices).
    pub outbox: SharedOutbox,
    /// Event bus.
    pub events: Arc<dyn EventBus>,
}

/// The plugin runtime.
pub struct Runtime {
    /// Loaded plugins.
    pub plugins: Arc<PluginRegistry>,
    /// Running channels.
    pub channels: Arc<ChannelManager>,
    /// The health monitor.
    pub health: Arc<HealthMonitor>,
    /// The event bus.
    pub events: Arc<dyn EventBus>,
    plugins_dir: PathBuf,
}

/// A running directory watcher; dropping it stops hot-loading.
pub struct WatchHandle {
    _watcher: watcher::Watcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`Runtime::apply_settings`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsReload {
    /// Loaded plugins reloaded with their new settings.
    pub reloaded: Vec<String>,
    /// Plugins whose settings changed but that are not loaded (they use the
    /// new settings when they load).
    pub not_loaded: Vec<String>,
    /// Plugins that failed to reload (their previous version keeps
    /// serving), with the error.
    pub failed: Vec<(String, String)>,
}

impl Runtime {
    /// Build the runtime (no plugins loaded yet).
    pub fn new(opts: RuntimeOptions) -> anyhow::Result<Arc<Self>> {
        let clock = opts.runtime.clock.clone();
        let plugins = PluginRegistry::new(opts.runtime, opts.kv, opts.events.clone())?;
        let channels = ChannelManager::new(plugins.clone(), opts.pairing, opts.inbox, opts.outbox);
        if let Some(blobs) = plugins.blobs() {
            // Files of replies waiting in the outbox outlive the blob TTL.
            let outbox = channels.outbox().clone();
            blobs.keep_in_use(Arc::new(move || {
                outbox.blobs_in_use().map_err(|e| e.to_string())
            }));
        }
        let health = HealthMonitor::new(channels.clone(), opts.health, clock, opts.events.clone());
        Ok(Arc::new(Runtime {
            plugins,
            channels,
            health,
            events: opts.events,
            plugins_dir: opts.plugins_dir,
        }))
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// Apply one change: load (and start, for channels) or unload. When two
    /// files claim one name both are refused (a running channel of that name
    /// stops); when one of them goes, the other is loaded.
    pub async fn apply(&self, change: &Change) -> Result<(), LoadError> {
        match change {
            Change::Upsert(path) => match self.plugins.load_file(path).await {
                Ok(loaded) => {
                    if loaded.version.kind == PluginKind::Channel {
                        self.channels.on_loaded(loaded.version).await;
                    }
                    Ok(())
                }
                Err(e) => {
                    if let LoadError::NameClash { name, .. } = &e {
                        self.channels.on_removed(name).await;
                    }
                    Err(e)
                }
            },
            Change::Remove(path) => {
                if let Some(name) = self.plugins.remove_file(path).await {
                    self.channels.on_removed(&name).await;
                    if let Some(other) = self.plugins.sole_claimant(&name)
                        && self.plugins.current(&name).is_none()
                    {
                        tracing::info!(plugin = %name, path = ?other, "name clash resolved; loading the remaining file");
                        let loaded = self.plugins.load_file(&other).await?;
                        if loaded.version.kind == PluginKind::Channel {
                            self.channels.on_loaded(loaded.version).await;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Load every plugin in the directory; returns the failures.
    pub async fn load_dir(&self) -> anyhow::Result<Vec<(PathBuf, LoadError)>> {
        std::fs::create_dir_all(&self.plugins_dir)?;
        let mut failures = Vec::new();
        for path in watcher::scan(&self.plugins_dir)? {
            if let Err(e) = self.apply(&Change::Upsert(path.clone())).await {
                failures.push((path, e));
            }
        }
        Ok(failures)
    }

    /// Replaces the operator's per-plugin settings (the `[plugins.*]` tables
    /// of a reloaded config file) and reloads every loaded plugin whose
    /// settings changed, from its file, as a hot reload does: a channel
    /// starts the accounts added, stops the ones removed and restarts the
    /// others with their new config, secrets and policy. A plugin that fails
    /// to reload keeps its previous version serving (the new settings apply
    /// at its next successful load); so do plugins not loaded now. Instance
    /// and storage quotas are fixed when a plugin name first loads, and a
    /// channel account's queue settings when it first starts: changing those
    /// takes a restart.
    pub async fn apply_settings(&self, new: BTreeMap<String, PluginSettings>) -> SettingsReload {
        let mut report = SettingsReload::default();
        for name in self.plugins.replace_settings(new) {
            let path = match (
                self.plugins.current(&name),
                self.plugins.sole_claimant(&name),
            ) {
                (Some(_), Some(path)) => path,
                _ => {
                    report.not_loaded.push(name);
                    continue;
                }
            };
            match self.apply(&Change::Upsert(path)).await {
                Ok(()) => report.reloaded.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        report
    }

    /// Reload one plugin by name (or all) from its file.
    pub async fn reload(&self, name: Option<&str>) -> Vec<(String, Result<(), LoadError>)> {
        let mut out = Vec::new();
        for info in self.plugins.list() {
            if name.is_some_and(|n| n != info.name) {
                continue;
            }
            let r = self.apply(&Change::Upsert(info.path.clone())).await;
            out.push((info.name, r));
        }
        out
    }

    /// Watch the plugins directory and apply changes as they settle.
    pub fn watch(self: &Arc<Self>, settle: Duration) -> anyhow::Result<WatchHandle> {
        std::fs::create_dir_all(&self.plugins_dir)?;
        let (w, mut rx) = watcher::watch(&self.plugins_dir, settle)?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                // Errors are logged and recorded by the registry.
                let _ = me.apply(&change).await;
            }
        });
        Ok(WatchHandle { _watcher: w, task })
    }
}
