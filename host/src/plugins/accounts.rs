//! The sandbox capabilities of a channel account other than `default`: the
//! plugin version's capabilities with the account's own secrets (operator
//! grants merged over the plugin table's, host-generated ones kept under the
//! account's key), its own key-value namespace and its own outbound HTTP
//! budget (rate, burst, counters, connections: each account is a platform
//! client of its own). Everything else (hosts, limits, logs, `/data`) is
//! the plugin's.

use std::sync::Arc;

use super::host::{self, Capabilities};
use super::{LoadError, PluginRegistry, PluginSettings, PluginVersion, Quotas};

impl PluginRegistry {
    /// The capabilities of the account keyed `key` (its secrets, key-value
    /// namespace and generated-secret directory are named by it) of
    /// `version`, with the account's effective `settings` and its own
    /// key-value quota `kv_quota` (shared by every version the account
    /// runs).
    pub fn account_capabilities(
        &self,
        version: &PluginVersion,
        key: &str,
        settings: &PluginSettings,
        kv_quota: Arc<host::kv::KvQuota>,
    ) -> Result<Capabilities, LoadError> {
        let manifest = &version.manifest;
        let mut secrets =
            host::secrets::SecretValues::from_grants(key, manifest, &settings.secrets).map_err(
                |message| LoadError::Manifest {
                    path: format!("[plugins.{}.accounts]", version.name).into(),
                    message,
                },
            )?;
        host::generated::grant_missing(
            &mut secrets,
            key,
            manifest,
            &settings.secrets,
            self.config().data_dir.as_deref(),
        );
        let mut caps = version.caps.clone();
        caps.secrets = Arc::new(secrets);
        caps.http = Arc::new(caps.http.fresh_budget());
        caps.kv = host::kv::PluginKv::new(Arc::from(key), self.kv().clone(), kv_quota);
        caps.socket.control = self.socket_control(key, super::PluginKind::Channel);
        Ok(caps)
    }

    /// The quotas of a plugin with `settings`: the host-wide ones with the
    /// plugin's overrides, and, unless the operator set `max_instances`,
    /// one more instance per further channel account (a polling account
    /// holds one for good). Past the engine's pool the plugin is refused
    /// at load with a clear error.
    pub(crate) fn plugin_quotas(&self, settings: &PluginSettings) -> Quotas {
        let mut q = self.config().quotas.with(&settings.quotas);
        if settings.quotas.max_instances.is_none() {
            q.max_instances += settings.accounts.len();
        }
        q
    }

    /// A fresh key-value quota for one account of plugin `name` (the
    /// plugin's quotas: each account has its own budget).
    pub fn account_kv_quota(&self, name: &str) -> Arc<host::kv::KvQuota> {
        let q = self.quotas(name);
        host::kv::KvQuota::new(q.kv_max_bytes, q.kv_max_keys)
    }
}
