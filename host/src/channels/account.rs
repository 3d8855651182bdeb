//! Channel accounts: one channel plugin serving several accounts (two
//! Telegram bots, two WhatsApp numbers). The plugin table
//! `[plugins.<name>]` is the [`DEFAULT_ACCOUNT`]; each
//! `[plugins.<name>.accounts.<id>]` adds one, merged over it (see
//! `PluginSettings::for_account`).
//!
//! An account is known everywhere by its *channel key* ([`key`]): the
//! plugin name for `default` (so rows written before accounts existed stay
//! valid: inbox, cursor, outbox lane, health, key-value namespace, session
//! keys) and `<plugin>:<account>` for the others (`:` appears in neither a
//! plugin name nor an account id). Pairing rows keep plugin and account
//! apart, as the pairing store always did.
//!
//! This module owns the ids, the keys and [`Account`]: what one runner
//! serves, with its effective settings and sandbox capabilities resolved
//! per loaded plugin version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::ChannelError;
use crate::plugins::host::Capabilities;
use crate::plugins::host::kv::KvQuota;
use crate::plugins::{AccountSettings, CallError, PluginRegistry, PluginSettings, PluginVersion};

pub use super::pairing::DEFAULT_ACCOUNT;

/// Separates plugin and account in a channel key.
pub const KEY_SEPARATOR: char = ':';

/// Account ids that cannot be used: `default` (the plugin table is that
/// one) and `webhook` (`/channels/{name}/webhook/...` is the default
/// account's push route).
pub const RESERVED_IDS: [&str; 2] = [DEFAULT_ACCOUNT, "webhook"];

/// Whether `id` can name an account: 1-64 of `A-Za-z0-9_-`, not one of
/// [`RESERVED_IDS`].
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !RESERVED_IDS.contains(&id)
}

/// Deserialize `accounts` tables, refusing a bad account id with a clear
/// message (the config file's error then names the place).
pub fn accounts_map<'de, D>(d: D) -> Result<BTreeMap<String, AccountSettings>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let map = BTreeMap::<String, AccountSettings>::deserialize(d)?;
    for id in map.keys() {
        if id == DEFAULT_ACCOUNT {
            return Err(serde::de::Error::custom(
                "account id `default` is reserved: the plugin table itself is the default account",
            ));
        }
        if RESERVED_IDS.contains(&id.as_str()) {
            return Err(serde::de::Error::custom(format!(
                "account id `{id}` is reserved (it would clash with the push route)"
            )));
        }
        if !valid_id(id) {
            return Err(serde::de::Error::custom(format!(
                "invalid account id {id:?} (use 1-64 letters, digits, `-` and `_`)"
            )));
        }
    }
    Ok(map)
}

/// The channel key of `account` (`None`: default) of plugin `plugin`.
pub fn key(plugin: &str, account: Option<&str>) -> String {
    match account {
        None => plugin.to_string(),
        Some(a) if a == DEFAULT_ACCOUNT => plugin.to_string(),
        Some(a) => format!("{plugin}{KEY_SEPARATOR}{a}"),
    }
}

/// Plugin and account of a channel key.
pub fn split(key: &str) -> (&str, &str) {
    key.split_once(KEY_SEPARATOR)
        .unwrap_or((key, DEFAULT_ACCOUNT))
}

/// The accounts `version` serves, `default` first when it is served: the
/// plugin table's `default` is left out when further accounts exist and it
/// is unconfigured itself (the manifest's secrets not all granted), so an
/// unconfigured default neither clutters the status nor starts.
pub fn served(version: &PluginVersion) -> Vec<String> {
    let settings = &version.settings;
    let default_configured = version
        .manifest
        .secrets
        .keys()
        .all(|s| version.caps.secrets.contains(s));
    let mut out = Vec::with_capacity(settings.accounts.len() + 1);
    if settings.accounts.is_empty() || default_configured {
        out.push(DEFAULT_ACCOUNT.to_string());
    }
    out.extend(settings.accounts.keys().cloned());
    out
}

/// One plugin version as an account runs it: the account's effective
/// settings and, for accounts other than `default`, its own capabilities.
pub struct Bound {
    /// The plugin version.
    pub version: Arc<PluginVersion>,
    /// The account's effective settings (the plugin table's for `default`).
    pub settings: Arc<PluginSettings>,
    /// The account's own capabilities (`None`: the version's, for `default`).
    pub caps: Option<Arc<Capabilities>>,
}

impl Bound {
    /// The capabilities instances of this account get.
    pub fn caps(&self) -> &Capabilities {
        self.caps.as_deref().unwrap_or(&self.version.caps)
    }
}

/// A bound account verifies pushes to its own route with its own secrets
/// and config (the channel and account asked for are the runner's own).
impl super::verify::WebhookKeys for Bound {
    fn secret(&self, _channel: &str, _account: Option<&str>, name: &str) -> Option<String> {
        self.caps().secrets.value(name).map(str::to_string)
    }

    fn config(&self, _channel: &str, _account: Option<&str>, key: &str) -> Option<String> {
        self.settings.config.get(key).cloned()
    }
}

/// One account of a channel plugin.
pub struct Account {
    plugin: String,
    id: String,
    key: String,
    /// The account's key-value quota (`None` for `default`: the plugin's).
    kv_quota: Option<Arc<KvQuota>>,
    /// The latest binding, remade when the plugin's version changes.
    bound: Mutex<Option<Arc<Bound>>>,
}

impl Account {
    /// Account `id` of plugin `plugin`.
    pub fn new(registry: &PluginRegistry, plugin: &str, id: &str) -> Self {
        let default = id == DEFAULT_ACCOUNT;
        Account {
            plugin: plugin.to_string(),
            id: id.to_string(),
            key: key(plugin, Some(id)),
            kv_quota: (!default).then(|| registry.account_kv_quota(plugin)),
            bound: Mutex::new(None),
        }
    }

    /// The plugin name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The account id (`default` for the plugin table).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The channel key (see [`key`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this is the plugin table's own account.
    pub fn is_default(&self) -> bool {
        self.kv_quota.is_none()
    }

    /// The account bound to the current version of its plugin, or
    /// `Unavailable` (no version loaded, or the account is no longer in
    /// its settings).
    pub fn bind(&self, registry: &PluginRegistry) -> Result<Arc<Bound>, ChannelError> {
        let unavailable = || ChannelError::Unavailable(self.key.clone());
        let version = registry.current(&self.plugin).ok_or_else(unavailable)?;
        let mut slot = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = slot.as_ref()
            && Arc::ptr_eq(&b.version, &version)
        {
            return Ok(b.clone());
        }
        let settings = version
            .settings
            .for_account(&self.id)
            .ok_or_else(unavailable)?;
        let caps = match &self.kv_quota {
            None => None,
            Some(quota) => Some(Arc::new(
                registry
                    .account_capabilities(&version, &self.key, &settings, quota.clone())
                    .map_err(|e| ChannelError::Call {
                        channel: self.key.clone(),
                        error: CallError::Instantiate(e.to_string()),
                    })?,
            )),
        };
        let b = Arc::new(Bound {
            version,
            settings: Arc::new(settings),
            caps,
        });
        *slot = Some(b.clone());
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        assert!(valid_id("support"));
        assert!(valid_id("bot_2-b"));
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id(""));
        assert!(!valid_id("default"));
        assert!(!valid_id("webhook"));
        assert!(!valid_id("a:b"));
        assert!(!valid_id("a/b"));
        assert_eq!(key("telegram", None), "telegram");
        assert_eq!(key("telegram", Some("default")), "telegram");
        assert_eq!(key("telegram", Some("support")), "telegram:support");
        assert_eq!(split("telegram"), ("telegram", "default"));
        assert_eq!(split("telegram:support"), ("telegram", "support"));
    }

    #[test]
    fn account_tables_merge_over_the_plugin_table() {
        let s: PluginSettings = toml::from_str(
            r#"
secrets = { bot_token = "a", other = "o" }
config = { mode = "poll", api_base = "http://x" }
allow_from = ["1"]
[accounts.support]
secrets = { bot_token = "b" }
config = { mode = "webhook" }
dm_policy = "open"
"#,
        )
        .unwrap();
        let d = s.for_account("default").unwrap();
        assert_eq!(d.config["mode"], "poll");
        assert!(d.accounts.is_empty());
        let a = s.for_account("support").unwrap();
        assert_eq!(a.config["mode"], "webhook");
        assert_eq!(a.config["api_base"], "http://x");
        assert_eq!(a.secrets["bot_token"].resolve().as_deref(), Some("b"));
        assert_eq!(a.secrets["other"].resolve().as_deref(), Some("o"));
        assert_eq!(a.dm_policy, crate::channels::access::DmPolicy::Open);
        assert_eq!(a.allow_from, vec!["1".to_string()]);
        assert!(s.for_account("nope").is_none());
        // In the config file, the error names the table.
        let e = toml::from_str::<crate::config::FileConfig>(
            "[plugins.telegram.accounts.\"two bots\"]\nsecrets = { bot_token = \"x\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid account id \"two bots\""), "{e}");
        let ok: crate::config::FileConfig = toml::from_str(
            "[plugins.telegram]\nsecrets = { bot_token = \"a\" }\n\
             [plugins.telegram.accounts.support]\nsecrets = { bot_token = \"b\" }\ndm_policy = \"open\"\n",
        )
        .unwrap();
        let t = &ok.plugins["telegram"];
        assert_eq!(t.accounts.len(), 1);
        assert_eq!(
            t.for_account("support").unwrap().dm_policy,
            crate::channels::access::DmPolicy::Open
        );
        assert_eq!(
            t.for_account("default").unwrap().dm_policy,
            crate::channels::access::DmPolicy::Pairing
        );
        for bad in ["default", "webhook", "a b", "x:y", ""] {
            let e = toml::from_str::<PluginSettings>(&format!("[accounts.\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("account id"), "{bad}: {e}");
        }
    }
}
