//! The gateway's configuration file (TOML). Every key is optional. While
//! the gateway runs, the file is reloaded on SIGHUP, on a save and on
//! `config.reload`: `[plugins.*]` apply live, the rest at the next start
//! (see `crate::config_reload`).
//!
//! ```toml
//! data_dir = ".pincer"                 # database, compile cache, plugin data
//! plugins_dir = ".pincer/plugins"      # watched for <name>.wasm + <name>.toml
//! allow_cidrs = ["127.0.0.0/8"]        # private ranges plugins may reach
//! plugin_threads = 0                   # threads running tool calls (0: half the CPUs)
//! plugin_nice = 10                     # their nice value: lower OS priority than the gateway (0: off)
//!
//! [plugin_quotas]                      # see plugins::Quotas (defaults shown)
//! max_instances = 16                   # per plugin; tool calls over it are refused as busy
//! kv_max_bytes = 67108864              # key-value bytes per plugin
//! kv_max_keys = 100000                 # key-value keys per plugin
//! data_mb = 0                          # /data granted to plugins that ask (manifest data_mb)
//! log_bytes_per_sec = 16384            # plugin log budget
//! log_burst_bytes = 65536
//!
//! [health]                             # see health::HealthConfig
//! check_interval_ms = 60000
//!
//! [gateway]                            # see gateway::GatewayConfig
//! listen = "127.0.0.1:18789"
//! allowed_origins = ["https://control.example.com"]
//! control_ui = "/opt/openclaw/dist/control-ui"  # a Control UI build served at / (default none)
//! console = true                       # Pincer's operator console at /console (default true)
//! plugin_upload_max_bytes = 33554432   # cap of PUT /v1/plugins/{name} (default 32 MiB)
//! config_watch = true                  # reload this file when it is saved (SIGHUP and config.reload always do)
//!
//! [store]                              # see store::StoreConfig (url = "postgres://...")
//! readers = 4                          # read connections beside the writer
//! max_db_mb = 0                        # database size cap in MiB (0: none)
//!
//! [webhooks]                           # see webhooks::WebhookConfig
//! retry_schedule_secs = [5, 300, 1800, 7200, 18000, 36000, 36000]
//! allow_cidrs = ["10.1.0.0/16"]        # also PINCER_WEBHOOK_ALLOW_CIDRS
//!
//! [agent]                              # see agent::AgentConfig
//! provider = "openai"                  # or "echo" (default)
//! openai = { base_url = "http://127.0.0.1:11434/v1", model = "llama3.2" }
//!
//! [sandbox]                            # see plugins::SandboxConfig: ceilings
//! memory_mb = 128                      # no plugin gets more, whatever it asks
//! engine_instances = 1000              # instances for all plugins (raise for many bots)
//! http = { rate_per_sec = 20, burst = 40, max_response_bytes = 10485760 }
//! media = { max_attachment_mb = 20, max_total_mb = 1024, blob_ttl_secs = 86400, download_timeout_secs = 120 }
//!
//! [plugins.telegram]                   # see plugins::PluginSettings
//! allowed_hosts = ["https://api.telegram.org"]
//! secrets = { bot_token = "env:TELEGRAM_BOT_TOKEN" }
//! config = { mode = "poll" }
//! quotas = { data_mb = 16, kv_max_keys = 1000 }   # per-plugin overrides of [plugin_quotas]
//! dm_policy = "pairing"                # pairing (default) | allowlist | open | disabled
//! allow_from = ["123456789"]           # platform sender ids always allowed ("*": anyone)
//!
//! [plugins.echo]                       # a test channel (manifest `test_only`)
//! public = true                        # accept pushes from non-loopback peers too
//! http = { rate_per_sec = 30 }         # this plugin's outbound budget
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::agent::AgentConfig;
use crate::gateway::GatewayConfig;
use crate::health::HealthConfig;
use crate::plugins::{PluginSettings, SandboxConfig};
use crate::store::StoreConfig;
use crate::webhooks::WebhookConfig;

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Plugins directory.
    pub plugins_dir: Option<PathBuf>,
    /// Address ranges plugins may reach although private or reserved.
    pub allow_cidrs: Vec<String>,
    /// Threads of the runtime that runs tool calls (0: half the CPUs).
    pub plugin_threads: usize,
    /// Nice value of those threads (0-19; default 10, 0 turns it off).
    pub plugin_nice: Option<i32>,
    /// Host-wide plugin quotas.
    pub plugin_quotas: crate::plugins::Quotas,
    /// Health monitor settings.
    pub health: HealthConfig,
    /// Per-plugin settings.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Host-wide ceilings on plugin limits and the default outbound budget.
    pub sandbox: SandboxConfig,
    /// Gateway (listener, auth, limits).
    pub gateway: GatewayConfig,
    /// Agent (provider, model).
    pub agent: AgentConfig,
    /// Outgoing webhooks.
    pub webhooks: WebhookConfig,
    /// The store: the embedded SQLite database (default) or PostgreSQL
    /// (`store = "postgres://..."`, or `url` in the `[store]` table).
    #[serde(deserialize_with = "crate::store::deserialize_store_config")]
    pub store: StoreConfig,
}

impl FileConfig {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }
}
