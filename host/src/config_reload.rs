//! Config reload: the configuration file read again while the gateway runs
//! (on SIGHUP, on a save, the file being watched and debounced, or on an
//! operator's `config.reload` / `POST /v1/config/reload`), and what of it
//! applies live.
//!
//! A reload reads and validates the whole file first; a file that does not
//! read, parse or validate changes nothing (the error is logged, counted
//! and shown in `/readyz` and `status`, without making the gateway
//! unready). A valid file's `[plugins.*]` tables apply at once through
//! [`Runtime::apply_settings`]: accounts added start, accounts removed
//! stop and drain, a plugin whose settings changed (config, secrets,
//! access policy, outbound budget) reloads. Everything else (listen
//! address, store, data directory, sandbox, health, webhooks, a plugin's
//! quotas and queue settings, ...) needs a restart: such changes are named
//! in a warning and in the report, and left as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::FileConfig;
use crate::runtime::{Runtime, SettingsReload};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The file is not valid TOML or not a valid configuration.
    #[error("config {path}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its place in the file.
        error: String,
    },
}

/// A configuration file read and validated: its settings and its raw table
/// (what restart-only changes are found in).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The file's text.
    pub text: String,
    /// The raw TOML table.
    pub table: toml::Table,
    /// The parsed settings.
    pub config: FileConfig,
}

/// Read `path` and validate it whole: TOML, the known keys and types, and
/// the values that must make sense on their own (address ranges, webhook
/// settings, account ids). `[gateway]` is checked at start, with the
/// command line's overrides (a token given as `--token`), and only applies
/// then.
pub fn read_checked(path: &Path) -> Result<Checked, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let invalid = |error: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        error,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let config: FileConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    crate::netguard::NetGuard::parse_cidrs(&config.allow_cidrs.join(","))
        .map_err(|e| invalid(format!("allow_cidrs: {e}")))?;
    config
        .webhooks
        .check()
        .map_err(|e| invalid(format!("[webhooks]: {e}")))?;
    for (name, settings) in &config.plugins {
        if let Some(bad) = settings
            .accounts
            .keys()
            .find(|id| !crate::channels::account::valid_id(id))
        {
            return Err(invalid(format!(
                "[plugins.{name}.accounts.{bad}]: an account id is 1-64 letters, digits, `-` and `_`"
            )));
        }
    }
    Ok(Checked {
        text,
        table,
        config,
    })
}

/// Settings in `new` that differ from `old` (the file the gateway started
/// with) and only apply at a restart, by name (`gateway.listen`, `store`,
/// `plugins.telegram.quotas`, ...), sorted.
pub fn restart_needed(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            continue;
        }
        if key == "plugins" {
            plugins_restart_needed(a, b, &mut out);
            continue;
        }
        match (a.and_then(|v| v.as_table()), b.and_then(|v| v.as_table())) {
            (Some(a), Some(b)) => {
                let sub: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                out.extend(
                    sub.into_iter()
                        .filter(|k| a.get(*k) != b.get(*k))
                        .map(|k| format!("{key}.{k}")),
                );
            }
            _ => out.push(key.clone()),
        }
    }
    out
}

/// Of the `[plugins.*]` tables, the parts fixed when a plugin first loads
/// (`quotas`) or an account first starts (`queue`), for plugins and
/// accounts present in both.
fn plugins_restart_needed(
    old: Option<&toml::Value>,
    new: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    let table = |v: Option<&toml::Value>| v.and_then(|v| v.as_table()).cloned();
    let (Some(old), Some(new)) = (table(old), table(new)) else {
        return;
    };
    let sub = |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_table()).cloned();
    for (name, a) in &old {
        let (Some(a), Some(b)) = (a.as_table(), new.get(name).and_then(|v| v.as_table())) else {
            continue;
        };
        for fixed in ["quotas", "queue"] {
            if a.get(fixed) != b.get(fixed) {
                out.push(format!("plugins.{name}.{fixed}"));
            }
        }
        let (Some(aa), Some(ba)) = (sub(a, "accounts"), sub(b, "accounts")) else {
            continue;
        };
        for (id, acc) in &aa {
            if let (Some(x), Some(y)) = (acc.as_table(), ba.get(id).and_then(|v| v.as_table()))
                && x.get("queue") != y.get("queue")
            {
                out.push(format!("plugins.{name}.accounts.{id}.queue"));
            }
        }
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The file was saved (the watcher saw it settle).
    File,
    /// An operator asked (`config.reload`, `POST /v1/config/reload`).
    Operator,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::File => "file",
            Trigger::Operator => "operator",
        }
    }
}

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// The file was valid (and applied, if anything changed).
    pub ok: bool,
    /// What started it.
    pub trigger: Trigger,
    /// Why the file was refused (nothing changed), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The file is the same as at the last reload: nothing to do.
    pub unchanged: bool,
    /// What the `[plugins.*]` tables changed.
    pub plugins: SettingsReload,
    /// Settings the file changes that take a restart (left as they are).
    pub restart_needed: Vec<String>,
}

/// The reload history, as `/readyz` and `status` show it (`config`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// The configuration file.
    pub path: String,
    /// Reloads applied (valid files).
    pub reloads: u64,
    /// Files refused.
    pub failures: u64,
    /// When the last valid file was applied (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload_ms: Option<i64>,
    /// Why the latest reload was refused; cleared by the next valid file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When that was (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
    /// Settings changed in the file since the gateway started that wait
    /// for a restart.
    pub restart_needed: Vec<String>,
}

/// Reloads one configuration file into a running runtime.
pub struct ConfigReloader {
    path: PathBuf,
    runtime: Arc<Runtime>,
    /// The file the gateway started with.
    startup: toml::Table,
    /// The text last applied by a reload (`None` before the first: the
    /// first always applies, as the file may have changed while the
    /// gateway started); held across a reload, so reloads run one at a
    /// time.
    applied: tokio::sync::Mutex<Option<String>>,
    status: std::sync::Mutex<ReloadStatus>,
}

impl std::fmt::Debug for ConfigReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConfigReloader {
    /// A reloader of `path` into `runtime`, which runs the file as it is
    /// now (read here as the baseline of restart-only settings; create it
    /// before the gateway serves).
    pub fn new(path: &Path, runtime: Arc<Runtime>) -> Result<Arc<Self>, ConfigError> {
        let start = read_checked(path)?;
        Ok(Arc::new(ConfigReloader {
            path: path.to_path_buf(),
            runtime,
            startup: start.table,
            applied: tokio::sync::Mutex::new(None),
            status: std::sync::Mutex::new(ReloadStatus {
                path: path.display().to_string(),
                ..Default::default()
            }),
        }))
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The reload history now.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read the file again and apply what can change live (see the module
    /// comment). An invalid file changes nothing.
    pub async fn reload(&self, trigger: Trigger) -> ReloadReport {
        let mut applied = self.applied.lock().await;
        let path = self.path.clone();
        let checked = tokio::task::spawn_blocking(move || read_checked(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Invalid {
                    path: self.path.clone(),
                    error: format!("the reading task failed: {e}"),
                })
            });
        let checked = match checked {
            Ok(c) => c,
            Err(e) => return self.refused(trigger, e),
        };
        let restart_needed = restart_needed(&self.startup, &checked.table);
        if applied.as_deref() == Some(checked.text.as_str()) {
            tracing::debug!(path = %self.path.display(), trigger = trigger.as_str(), "config file unchanged; nothing to reload");
            self.update(|s| {
                s.last_error = None;
                s.last_error_ms = None;
            });
            return ReloadReport {
                ok: true,
                trigger,
                error: None,
                unchanged: true,
                plugins: SettingsReload::default(),
                restart_needed,
            };
        }
        if !restart_needed.is_empty() {
            tracing::warn!(
                path = %self.path.display(),
                settings = ?restart_needed,
                "config reload: these settings changed but take a restart; they stay as they are until then"
            );
        }
        let plugins = self.runtime.apply_settings(checked.config.plugins).await;
        *applied = Some(checked.text);
        for (plugin, error) in &plugins.failed {
            tracing::error!(plugin = %plugin, error = %error, "plugin kept its previous version: reload with the new settings failed");
        }
        tracing::info!(
            path = %self.path.display(),
            trigger = trigger.as_str(),
            reloaded = ?plugins.reloaded,
            not_loaded = ?plugins.not_loaded,
            failed = plugins.failed.len(),
            "config reloaded"
        );
        metrics::counter!("pincer_config_reloads_total", "result" => "applied").increment(1);
        let now = crate::gateway::now_ms();
        self.update(|s| {
            s.reloads += 1;
            s.last_reload_ms = Some(now);
            s.last_error = None;
            s.last_error_ms = None;
            s.restart_needed = restart_needed.clone();
        });
        ReloadReport {
            ok: true,
            trigger,
            error: None,
            unchanged: false,
            plugins,
            restart_needed,
        }
    }

    fn refused(&self, trigger: Trigger, e: ConfigError) -> ReloadReport {
        let error = e.to_string();
        tracing::error!(path = %self.path.display(), trigger = trigger.as_str(), error = %error, "config reload refused: the running configuration stays");
        metrics::counter!("pincer_config_reloads_total", "result" => "refused").increment(1);
        let now = crate::gateway::now_ms();
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(error.clone());
            s.last_error_ms = Some(now);
        });
        ReloadReport {
            ok: false,
            trigger,
            error: Some(error),
            unchanged: false,
            plugins: SettingsReload::default(),
            restart_needed: Vec::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReloadStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Reload whenever the file is saved (its directory is watched, so
    /// editors that write a new file and rename it over the old one are
    /// seen), once the writes have settled for `settle`.
    pub fn watch(self: &Arc<Self>, settle: Duration) -> anyhow::Result<ConfigWatch> {
        use notify::RecursiveMode;
        use notify_debouncer_full::{DebounceEventResult, new_debouncer};
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("config path {} names no file", self.path.display()))?
            .to_os_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut debouncer = new_debouncer(settle, None, move |result: DebounceEventResult| {
            let events = match result {
                Ok(events) => events,
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "config file watch error");
                    }
                    return;
                }
            };
            let ours = events.iter().any(|e| {
                crate::plugins::watcher::changes_content(&e.kind)
                    && e.paths
                        .iter()
                        .any(|p| p.file_name() == Some(name.as_os_str()))
            });
            if ours {
                let _ = tx.send(());
            }
        })?;
        debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Saves that settled while this reload ran are one more.
                while rx.try_recv().is_ok() {}
                me.reload(Trigger::File).await;
            }
        });
        Ok(ConfigWatch {
            _debouncer: Box::new(debouncer),
            task,
        })
    }
}

/// Listens for SIGHUP from now on; install it before the gateway serves,
/// so a signal sent once it answers never takes the default action (exit).
/// `None` (logged) when the signal cannot be listened for.
#[cfg(unix)]
pub fn listen_for_sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with config.reload or by saving the file");
            None
        }
    }
}

/// On every SIGHUP, reload the configuration file (see
/// [`ConfigReloader::reload`]), until the signal stream ends.
#[cfg(unix)]
pub async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, reloader: Arc<ConfigReloader>) {
    while hup.recv().await.is_some() {
        reloader.reload(Trigger::Signal).await;
    }
}

/// A running watch of the configuration file; dropping it stops it.
pub struct ConfigWatch {
    _debouncer: Box<dyn std::any::Any + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn restart_only_changes_are_named() {
        let old = table(
            r#"data_dir = "a"
[gateway]
listen = "127.0.0.1:1"
console = true
[plugins.telegram]
dm_policy = "open"
quotas = { max_instances = 4 }
[plugins.telegram.accounts.support]
queue = { max_attempts = 3 }
"#,
        );
        let new = table(
            r#"data_dir = "b"
[gateway]
listen = "127.0.0.1:2"
console = true
[store]
readers = 2
[plugins.telegram]
dm_policy = "pairing"
allow_from = ["1"]
quotas = { max_instances = 8 }
[plugins.telegram.accounts.support]
queue = { max_attempts = 5 }
[plugins.telegram.accounts.other]
queue = { max_attempts = 9 }
[plugins.whatsapp]
quotas = { max_instances = 2 }
"#,
        );
        assert_eq!(
            restart_needed(&old, &new),
            [
                "data_dir",
                "gateway.listen",
                "plugins.telegram.quotas",
                "plugins.telegram.accounts.support.queue",
                "store",
            ]
        );
        assert!(restart_needed(&old, &old).is_empty());
    }

    #[test]
    fn an_invalid_file_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pincer.toml");
        std::fs::write(&path, "[plugins.telegram]\ndm_policy = \"everyone\"\n").unwrap();
        let e = read_checked(&path).unwrap_err().to_string();
        assert!(e.contains("dm_policy") || e.contains("everyone"), "{e}");
        std::fs::write(&path, "allow_cidrs = [\"not a range\"]\n").unwrap();
        let e = read_checked(&path).unwrap_err().to_string();
        assert!(e.contains("allow_cidrs"), "{e}");
        std::fs::write(&path, "[plugins.telegram.accounts.\"a b\"]\n").unwrap();
        let e = read_checked(&path).unwrap_err().to_string();
        assert!(e.contains("account id"), "{e}");
        std::fs::write(&path, "[plugins.telegram]\ndm_policy = \"open\"\n").unwrap();
        assert!(read_checked(&path).is_ok());
        assert!(matches!(
            read_checked(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
