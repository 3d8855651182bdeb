//! The plugin manifest (`<plugin>.toml` beside `<plugin>.wasm`) and the
//! operator's per-plugin settings that grant secrets and adjust hosts/limits.
//!
//! ```toml
//! name = "telegram"                 # registry name (required; without a manifest: the file stem)
//! kind = "channel"                  # channel | tool (must match the exports)
//! version = "0.3.1"
//! wit = "pincer:plugin@0.1.0"       # contract version built against
//! description = "Telegram Bot API"
//! allowed_hosts = ["https://api.telegram.org"]   # scheme://host[:port], `*` wildcards
//! secrets = ["bot_token"]           # names the operator must grant
//!
//! [limits]                          # all optional
//! memory_mb = 64                    # linear memory per instance
//! call_timeout_ms = 10000           # wall clock per call (includes host calls)
//! cpu_ms = 5000                     # CPU time per call (epoch ticks)
//! poll_wait_ms = 25000              # how long one `poll` may wait for messages
//!
//! [config]                          # keys the plugin reads, with descriptions
//! webhook_secret = "secret used to verify pushes"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// A messaging channel (`pincer:plugin/channel`).
    Channel,
    /// An agent tool (`pincer:plugin/tool`).
    Tool,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Channel => "channel",
            PluginKind::Tool => "tool",
        })
    }
}

/// Resource limits for every call into a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory per instance, in MiB.
    pub memory_mb: u64,
    /// Wall-clock limit per call, in ms (covers time blocked in host calls).
    pub call_timeout_ms: u64,
    /// CPU limit per call, in ms, enforced by epoch interruption.
    pub cpu_ms: u64,
    /// Longest wait the host gives one `poll` call, in ms.
    pub poll_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            call_timeout_ms: 10_000,
            cpu_ms: 5_000,
            poll_wait_ms: 25_000,
        }
    }
}

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Registry name.
    pub name: String,
    /// Channel or tool.
    pub kind: Option<PluginKind>,
    /// The plugin's own version.
    #[serde(default = "default_version")]
    pub version: String,
    /// WIT package version built against (informational; the component's
    /// exports are what is checked).
    #[serde(default)]
    pub wit: Option<String>,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
    /// Hosts outbound `wasi:http` may reach.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Secret names the plugin needs.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Limits per call.
    #[serde(default)]
    pub limits: Limits,
    /// Config keys the plugin reads, with descriptions.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_version() -> String {
    "0.0.0".into()
}

impl Manifest {
    /// The manifest of a plugin that ships none: no hosts, no secrets, default limits.
    pub fn implicit(name: &str) -> Self {
        Manifest {
            name: name.to_string(),
            kind: None,
            version: default_version(),
            wit: None,
            description: String::new(),
            allowed_hosts: vec![],
            secrets: vec![],
            limits: Limits::default(),
            config: BTreeMap::new(),
        }
    }

    /// Parse a manifest from TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "invalid plugin name `{}` (use letters, digits, `-` and `_`)",
                m.name
            ));
        }
        for h in &m.allowed_hosts {
            super::host::http::HostPattern::parse(h)?;
        }
        Ok(m)
    }
}

/// Where a granted secret's value comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// `"env:NAME"` reads the gateway's environment variable; anything else is the value.
    Value(String),
}

/// `env:NAME` references are shown (they are not secret); inline values
/// never are.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let SecretSource::Value(v) = self;
        match v.strip_prefix("env:") {
            Some(_) => f.debug_tuple("Value").field(v).finish(),
            None => f.write_str("Value([redacted])"),
        }
    }
}

impl SecretSource {
    /// Resolve the secret's value.
    pub fn resolve(&self) -> Option<String> {
        let SecretSource::Value(v) = self;
        match v.strip_prefix("env:") {
            Some(var) => std::env::var(var).ok(),
            None => Some(v.clone()),
        }
    }
}

/// The operator's settings for one plugin (`[plugins.<name>]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Config entries passed to a channel's `start`.
    pub config: BTreeMap<String, String>,
    /// Replaces the manifest's allowed hosts (narrow or widen).
    pub allowed_hosts: Option<Vec<String>>,
    /// Secrets granted: name → value or `env:VAR`.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Overrides the manifest's limits.
    pub limits: Option<Limits>,
    /// Set to false to keep a channel loaded but stopped.
    pub autostart: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest_and_rejects_bad_ones() {
        let m = Manifest::parse(
            r#"name = "telegram"
kind = "channel"
version = "1.2.3"
allowed_hosts = ["https://api.telegram.org"]
secrets = ["bot_token"]
[limits]
memory_mb = 32
[config]
x = "y""#,
        )
        .unwrap();
        assert_eq!(m.kind, Some(PluginKind::Channel));
        assert_eq!(m.limits.memory_mb, 32);
        assert_eq!(m.limits.call_timeout_ms, Limits::default().call_timeout_ms);
        assert!(Manifest::parse("name = \"a b\"").is_err());
        assert!(Manifest::parse("name = \"a\"\nbogus = 1").is_err());
        assert!(Manifest::parse("name = \"a\"\nallowed_hosts = [\"ftp://x\"]").is_err());
    }
}
