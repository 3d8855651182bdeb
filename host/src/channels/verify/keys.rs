//! How a push finds its keys: `(channel, account) -> secret` through
//! [`WebhookKeys`], so per-account secrets plug in without touching the
//! schemes. [`VersionKeys`] serves the default account from the loaded
//! plugin version: the operator's grants (and host-generated secrets, see
//! `plugins::host::generated`) and the plugin's config.

use crate::plugins::PluginVersion;

/// Key material for verifying pushes.
pub trait WebhookKeys {
    /// The value of secret `name` for `(channel, account)` (`account`
    /// `None`: the default account), if granted.
    fn secret(&self, channel: &str, account: Option<&str>, name: &str) -> Option<String>;
    /// The plugin config entry `key` for `(channel, account)`, if set.
    fn config(&self, channel: &str, account: Option<&str>, key: &str) -> Option<String>;
}

/// The default account's keys, from the plugin version serving `channel`.
pub struct VersionKeys<'a>(pub &'a PluginVersion);

impl VersionKeys<'_> {
    fn serves(&self, channel: &str, account: Option<&str>) -> bool {
        self.0.name == channel && account.is_none_or(|a| a == "default")
    }
}

impl WebhookKeys for VersionKeys<'_> {
    fn secret(&self, channel: &str, account: Option<&str>, name: &str) -> Option<String> {
        if !self.serves(channel, account) {
            return None;
        }
        self.0.caps.secrets.value(name).map(str::to_string)
    }

    fn config(&self, channel: &str, account: Option<&str>, key: &str) -> Option<String> {
        if !self.serves(channel, account) {
            return None;
        }
        self.0.settings.config.get(key).cloned()
    }
}
