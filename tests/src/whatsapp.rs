//! A gateway serving the `whatsapp` channel plugin (built from source)
//! against a [`FakeWhatsApp`] on loopback, for the WhatsApp tests.
//!
//! The plugin's manifest is installed as it ships, except that its Graph
//! hosts (`https://graph.facebook.com`, `https://lookaside.fbsbx.com`) are
//! replaced by the fake's address: the access token is bound to the
//! manifest's hosts, so this is the only way the fake can receive it. The
//! operator's settings are the ones issue 9 section 5 shows, with
//! `api_base` pointing at the fake.

use std::path::Path;

use pincer::channels::access::DmPolicy;
use pincer::fakes::whatsapp::{FakeWhatsApp, WhatsAppConfig};
use pincer::gateway::launch::Options;
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{Instance, PluginSettings};
use serde_json::{Value, json};

use crate::gateway::{Client, TestGateway};

/// The gateway token the rig uses.
pub const TOKEN: &str = "secret";

/// The shipped manifest's host list, which [`install`] replaces.
const SHIPPED_HOSTS: &str =
    r#"allowed_hosts = ["https://graph.facebook.com", "https://lookaside.fbsbx.com"]"#;

/// Install the built `whatsapp` plugin into `plugins` with its Graph hosts
/// replaced by `fake_base` (`http://127.0.0.1:PORT`).
pub fn install(plugins: &Path, fake_base: &str) {
    std::fs::create_dir_all(plugins).expect("plugins dir");
    let wasm = crate::built_plugin("whatsapp");
    std::fs::copy(&wasm, plugins.join("whatsapp.wasm")).expect("copy whatsapp.wasm");
    let shipped = std::fs::read_to_string(wasm.with_extension("toml")).expect("whatsapp.toml");
    assert!(
        shipped.contains(SHIPPED_HOSTS),
        "the shipped manifest's hosts changed: {shipped}"
    );
    let manifest = shipped.replace(SHIPPED_HOSTS, &format!("allowed_hosts = [{fake_base:?}]"));
    std::fs::write(plugins.join("whatsapp.toml"), manifest).expect("write whatsapp.toml");
}

/// The operator's settings for the fake's account under `policy`.
pub fn settings(wa: &FakeWhatsApp, policy: DmPolicy) -> PluginSettings {
    let c = wa.config();
    let secret = |v: &str| SecretSource::Value(v.to_string());
    PluginSettings {
        dm_policy: policy,
        secrets: [
            ("access_token".to_string(), secret(&c.access_token)),
            ("app_secret".to_string(), secret(&c.app_secret)),
            ("verify_token".to_string(), secret(&c.verify_token)),
        ]
        .into(),
        config: [
            ("phone_number_id".to_string(), c.phone_number_id.clone()),
            ("api_version".to_string(), c.api_version.clone()),
            ("api_base".to_string(), wa.base_url().to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

/// A gateway with the WhatsApp channel and its fake.
pub struct WaRig {
    /// The gateway.
    pub g: TestGateway,
    /// The fake Graph API.
    pub wa: FakeWhatsApp,
}

impl WaRig {
    /// A rig with the default fake and the channel under `policy`.
    pub async fn start(policy: DmPolicy) -> WaRig {
        Self::start_with(WhatsAppConfig::default(), policy, |_| {}).await
    }

    /// A rig with fake settings `cfg`, the channel under `policy`, and
    /// `adjust` applied to the gateway options last.
    pub async fn start_with(
        cfg: WhatsAppConfig,
        policy: DmPolicy,
        adjust: impl FnOnce(&mut Options),
    ) -> WaRig {
        Self::start_inner(cfg, policy, true, adjust).await
    }

    /// As [`WaRig::start_with`] with the default fake, but with the
    /// manifest exactly as shipped (the token bound to Meta's hosts only).
    pub async fn start_with_shipped_manifest(
        policy: DmPolicy,
        adjust: impl FnOnce(&mut Options),
    ) -> WaRig {
        Self::start_inner(WhatsAppConfig::default(), policy, false, adjust).await
    }

    async fn start_inner(
        cfg: WhatsAppConfig,
        policy: DmPolicy,
        rewrite_hosts: bool,
        adjust: impl FnOnce(&mut Options),
    ) -> WaRig {
        let wa = FakeWhatsApp::start(cfg).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        if rewrite_hosts {
            install(&plugins, wa.base_url());
        } else {
            std::fs::create_dir_all(&plugins).expect("plugins dir");
            crate::install_plugin(&plugins, "whatsapp", "whatsapp");
        }
        let mut opts = Options::new(dir.path());
        opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
        opts.gateway.token = Some(TOKEN.into());
        opts.watch_settle = std::time::Duration::from_millis(100);
        // The fake is on loopback, which the address guard refuses by default.
        opts.allow_cidrs =
            pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").expect("loopback range");
        opts.plugins
            .insert("whatsapp".into(), settings(&wa, policy));
        adjust(&mut opts);
        let g = TestGateway::start_with(opts, dir).await;
        WaRig { g, wa }
    }

    /// `http://addr/channels/whatsapp/webhook`.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/channels/whatsapp/webhook", self.g.addr)
    }

    /// Calls the gateway made into the plugin so far.
    pub fn plugin_calls(&self) -> u64 {
        self.g
            .gw()
            .runtime
            .plugins
            .info("whatsapp")
            .expect("whatsapp loaded")
            .calls
    }

    /// A fresh, started instance of the loaded plugin (in its real sandbox,
    /// with the operator's config and secrets), for calling one export.
    pub async fn instance(&self) -> Instance {
        let version = self
            .g
            .gw()
            .runtime
            .plugins
            .current("whatsapp")
            .expect("whatsapp loaded");
        let config: Vec<(String, String)> = version.settings.config.clone().into_iter().collect();
        let mut inst = Instance::new(version).await.expect("instantiate whatsapp");
        inst.start(&config).await.expect("start whatsapp");
        inst
    }

    /// An admin protocol client.
    pub async fn admin(&self) -> Client {
        Client::admin(&self.g.url()).await
    }
}

/// The session key of a WhatsApp user's conversation.
pub fn session_key(wa_id: &str) -> String {
    format!("agent:main:whatsapp:direct:{wa_id}")
}

/// Every session key that exists.
pub async fn session_keys(admin: &mut Client) -> Vec<String> {
    let l = admin.call("sessions.list", json!({})).await;
    l["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["key"].as_str().map(str::to_string))
        .collect()
}

/// A signed push body as Meta would send it for phone number `phone`
/// (used for numbers the fake does not play).
pub fn foreign_push(phone: &str, from: &str, wamid: &str, text: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone},
            "contacts": [{"profile": {"name": "Other"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": "1700000000",
                "type": "text", "text": {"body": text}}],
        }}]}],
    })
}
