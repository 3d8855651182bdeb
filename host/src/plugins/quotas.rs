//! What one plugin may use of the host: its instance cap, key-value bytes
//! and keys, its `/data` grant and its log budget. Host-wide defaults live
//! in [`Quotas`] (`[plugin_quotas]` in the config file); the operator can
//! override each one per plugin with [`QuotaSettings`]
//! (`[plugins.<name>.quotas]`). A plugin's manifest cannot raise any of them.

use serde::{Deserialize, Serialize};

use super::gate::DEFAULT_MAX_INSTANCES;

/// Host-wide defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Instances of one plugin at once (live calls plus idle pooled ones).
    /// Tool calls over it are refused as busy; channel traffic queues.
    pub max_instances: usize,
    /// Key-value bytes (keys plus values) one plugin may store.
    pub kv_max_bytes: u64,
    /// Key-value keys one plugin may store.
    pub kv_max_keys: u64,
    /// `/data` granted to a plugin whose manifest asks for it (`data_mb`),
    /// in MiB; 0 grants none. The plugin gets the smaller of ask and grant.
    pub data_mb: u64,
    /// Log bytes per second one plugin may write (message plus fields).
    pub log_bytes_per_sec: u64,
    /// Log bytes one plugin may write in a burst.
    pub log_burst_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_instances: DEFAULT_MAX_INSTANCES,
            kv_max_bytes: 64 << 20,
            kv_max_keys: 100_000,
            data_mb: 0,
            log_bytes_per_sec: 16 << 10,
            log_burst_bytes: 64 << 10,
        }
    }
}

/// The operator's per-plugin overrides of [`Quotas`] (each optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Overrides [`Quotas::max_instances`].
    pub max_instances: Option<usize>,
    /// Overrides [`Quotas::kv_max_bytes`].
    pub kv_max_bytes: Option<u64>,
    /// Overrides [`Quotas::kv_max_keys`].
    pub kv_max_keys: Option<u64>,
    /// Overrides [`Quotas::data_mb`] (the `/data` grant).
    pub data_mb: Option<u64>,
    /// Overrides [`Quotas::log_bytes_per_sec`].
    pub log_bytes_per_sec: Option<u64>,
    /// Overrides [`Quotas::log_burst_bytes`].
    pub log_burst_bytes: Option<u64>,
}

impl Quotas {
    /// These defaults with `o`'s overrides applied.
    pub fn with(&self, o: &QuotaSettings) -> Quotas {
        Quotas {
            max_instances: o.max_instances.unwrap_or(self.max_instances).max(1),
            kv_max_bytes: o.kv_max_bytes.unwrap_or(self.kv_max_bytes),
            kv_max_keys: o.kv_max_keys.unwrap_or(self.kv_max_keys),
            data_mb: o.data_mb.unwrap_or(self.data_mb),
            log_bytes_per_sec: o.log_bytes_per_sec.unwrap_or(self.log_bytes_per_sec),
            log_burst_bytes: o.log_burst_bytes.unwrap_or(self.log_burst_bytes),
        }
    }

    /// The `/data` size in bytes for a manifest that asks for `ask_mb`:
    /// `None` (no `/data` at all) unless both the ask and the grant are set.
    pub fn data_bytes(&self, ask_mb: Option<u64>) -> Option<u64> {
        let mb = ask_mb?.min(self.data_mb);
        (mb > 0).then(|| mb.saturating_mul(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_data_grant() {
        let q = Quotas::default().with(&QuotaSettings {
            kv_max_keys: Some(5),
            data_mb: Some(2),
            ..Default::default()
        });
        assert_eq!(q.kv_max_keys, 5);
        assert_eq!(q.kv_max_bytes, 64 << 20);
        assert_eq!(q.data_bytes(None), None);
        assert_eq!(q.data_bytes(Some(1)), Some(1 << 20));
        assert_eq!(q.data_bytes(Some(100)), Some(2 << 20));
        assert_eq!(Quotas::default().data_bytes(Some(10)), None);
    }

    #[test]
    fn config_file_keys() {
        let c: crate::config::FileConfig = toml::from_str(
            "plugin_threads = 2\n[plugin_quotas]\nkv_max_keys = 5\n[plugins.x.quotas]\ndata_mb = 3\n",
        )
        .unwrap();
        assert_eq!(c.plugin_threads, 2);
        assert_eq!(c.plugin_quotas.kv_max_keys, 5);
        assert_eq!(c.plugin_quotas.kv_max_bytes, Quotas::default().kv_max_bytes);
        assert_eq!(c.plugins["x"].quotas.data_mb, Some(3));
        assert!(toml::from_str::<crate::config::FileConfig>("[plugin_quotas]\nbogus = 1").is_err());
    }
}
