//! The Telegram plugin in tests: installed from source with its manifest
//! widened to the fake on loopback, the operator's settings for the fake's
//! bot, and a gateway serving it.

use std::path::Path;
use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::fakes::telegram::DEFAULT_TOKEN;
use pincer::gateway::launch::Options;
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::SecretSource;

use crate::gateway::TestGateway;

/// Install the telegram plugin built from source into `plugins`, with its
/// manifest widened to the fake's loopback address: a declared secret is
/// only filled in for the manifest's own hosts, so an operator pointing
/// `api_base` elsewhere must widen the manifest too.
pub fn install(plugins: &Path) {
    std::fs::create_dir_all(plugins).expect("plugins dir");
    let wasm = crate::built_plugin("telegram");
    std::fs::copy(&wasm, plugins.join("telegram.wasm")).expect("copy telegram.wasm");
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).expect("manifest");
    let widened = manifest.replace(
        r#"allowed_hosts = ["https://api.telegram.org"]"#,
        r#"allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]"#,
    );
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join("telegram.toml"), widened).expect("write telegram.toml");
}

/// Operator settings for the fake's bot: its token granted by value,
/// `api_base` at `api_base`, `config` extra entries, anyone may write.
pub fn settings(api_base: &str, config: &[(&str, &str)]) -> PluginSettings {
    let mut cfg: std::collections::BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cfg.insert("api_base".into(), api_base.into());
    PluginSettings {
        allowed_hosts: Some(vec![
            "https://api.telegram.org".into(),
            "http://127.0.0.1:*".into(),
        ]),
        secrets: [(
            "bot_token".to_string(),
            SecretSource::Value(DEFAULT_TOKEN.into()),
        )]
        .into(),
        config: cfg,
        dm_policy: DmPolicy::Open,
        ..Default::default()
    }
}

/// A gateway (token `secret`, loopback allowed) serving the telegram
/// channel with `settings`; `tune` adjusts the options last.
pub async fn gateway(settings: PluginSettings, tune: impl FnOnce(&mut Options)) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    install(&dir.path().join("plugins"));
    let mut opts = Options::new(dir.path());
    opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    opts.gateway.token = Some("secret".into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs =
        pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback CIDR");
    opts.plugins.insert("telegram".into(), settings);
    tune(&mut opts);
    TestGateway::start_with(opts, dir).await
}
