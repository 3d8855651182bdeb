//! The bundled `discord` plugin pointed at a [`FakeDiscord`]: its
//! manifest's hosts widened to loopback and the operator settings of the
//! fake's bot. The one set-up of the Discord tests and of
//! `pincer bench channels`; each adds its own tuning to the settings.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::FakeDiscord;
use crate::channels::access::{DmPolicy, GroupPolicy};
use crate::plugins::PluginSettings;
use crate::plugins::manifest::SecretSource;

/// The shipped Discord manifest's host list.
pub const MANIFEST_HOSTS: &str = r#"allowed_hosts = ["https://discord.com", "wss://gateway.discord.gg", "wss://*.discord.gg", "https://cdn.discordapp.com"]"#;

/// [`MANIFEST_HOSTS`] widened to the fakes on loopback (a secret is filled
/// in only for the manifest's own hosts, so the bot token reaches the fake
/// only with these).
pub const LOOPBACK_HOSTS: &str = r#"allowed_hosts = ["https://discord.com", "wss://gateway.discord.gg", "wss://*.discord.gg", "https://cdn.discordapp.com", "http://127.0.0.1:*", "ws://127.0.0.1:*"]"#;

/// Why the plugin could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// This build has no bundled `discord` plugin.
    #[error("plugin `discord` is not bundled in this build")]
    NotBundled,
    /// The shipped manifest's host list changed: [`MANIFEST_HOSTS`] needs
    /// the new text.
    #[error("the discord manifest no longer contains `{MANIFEST_HOSTS}`")]
    HostsMoved,
    /// Writing into the plugins directory failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// `manifest` with its host list widened to loopback
/// ([`LOOPBACK_HOSTS`]).
pub fn widen_manifest(manifest: &str) -> Result<String, InstallError> {
    if !manifest.contains(MANIFEST_HOSTS) {
        return Err(InstallError::HostsMoved);
    }
    Ok(manifest.replacen(MANIFEST_HOSTS, LOOPBACK_HOSTS, 1))
}

/// Install the bundled `discord` plugin (built from `plugins/discord` by
/// `host/build.rs`) into `plugins`, created if missing, its manifest
/// widened to loopback ([`widen_manifest`]).
pub fn install(plugins: &Path) -> Result<(), InstallError> {
    let (_, wasm, toml) = crate::bundled::BUNDLED
        .iter()
        .find(|(name, _, _)| *name == "discord")
        .ok_or(InstallError::NotBundled)?;
    let manifest = widen_manifest(toml)?;
    std::fs::create_dir_all(plugins).map_err(|source| InstallError::Write {
        path: plugins.to_path_buf(),
        source,
    })?;
    for (file, bytes) in [
        ("discord.toml", manifest.as_bytes()),
        ("discord.wasm", *wasm),
    ] {
        let path = plugins.join(file);
        crate::atomic_file::write(&path, bytes)
            .map_err(|source| InstallError::Write { path, source })?;
    }
    Ok(())
}

/// The operator settings of a bot at a fake's `api_base` and
/// `gateway_url` with `token`: the token granted by value (the plugin's
/// config never holds it), the hosts narrowed to Discord's and loopback,
/// DM and group policies `open`.
pub fn bot_settings(api_base: &str, gateway_url: &str, token: &str) -> PluginSettings {
    let config: BTreeMap<String, String> = [("api_base", api_base), ("gateway_url", gateway_url)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PluginSettings {
        allowed_hosts: Some(vec![
            "https://discord.com".into(),
            "wss://gateway.discord.gg".into(),
            "http://127.0.0.1:*".into(),
            "ws://127.0.0.1:*".into(),
        ]),
        secrets: [(
            "bot_token".to_string(),
            SecretSource::Value(token.to_string()),
        )]
        .into(),
        config,
        dm_policy: DmPolicy::Open,
        group_policy: GroupPolicy::Open,
        ..Default::default()
    }
}

impl FakeDiscord {
    /// [`bot_settings`] of this fake's bot (its addresses and token).
    pub fn bot_settings(&self) -> PluginSettings {
        bot_settings(self.api_base(), self.gateway_url(), &self.config().token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_the_bundled_plugin_widened_to_loopback_and_refuses_a_moved_host_list() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = dir.path().join("plugins");
        install(&plugins).expect("install");
        let toml = std::fs::read_to_string(plugins.join("discord.toml")).expect("manifest");
        let manifest = crate::plugins::manifest::Manifest::parse(&toml).expect("parses");
        assert!(
            manifest
                .allowed_hosts
                .iter()
                .any(|h| h == "ws://127.0.0.1:*"),
            "{:?}",
            manifest.allowed_hosts
        );
        assert!(plugins.join("discord.wasm").is_file());
        assert!(matches!(
            widen_manifest("name = \"discord\"\n"),
            Err(InstallError::HostsMoved)
        ));
    }
}
