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
//! data_mb = 16                      # asks for a /data directory of this size (the operator must grant it)
//! test_only = false                 # true: pushes only from loopback (unless the operator sets `public`)
//! secrets = ["bot_token"]           # names the operator must grant: each may be
//!                                   # filled in the URL path and `authorization`
//!                                   # header of allowed_hosts only; or, per secret:
//! # [secrets.bot_token]
//! # hosts = ["https://api.telegram.org"]  # default: allowed_hosts above
//! # in = ["path", "body:secret_token"]    # path | header:<name> | body:<json field>
//! # generate = true                       # host-generated if the operator grants none
//!
//! [webhook.verify]                  # host-side verification of pushes (see
//! scheme = "hmac-sha256"            # `crate::channels::verify::config`)
//! header = "X-Hub-Signature-256"
//! secret = "app_secret"             # must be declared under `secrets`
//! prefix = "sha256="
//!
//! [limits]                          # all optional; a request, capped by [sandbox]
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
    /// Secrets the plugin needs, with where each may be filled in. The list
    /// form `secrets = ["x"]` binds each to [`SecretBinding::default`].
    #[serde(default, deserialize_with = "secrets_list_or_table")]
    pub secrets: BTreeMap<String, SecretBinding>,
    /// Limits per call.
    #[serde(default)]
    pub limits: Limits,
    /// Config keys the plugin reads, with descriptions.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Size of the `/data` directory the plugin asks for, in MiB; it gets
    /// `/data` only if the operator grants a size too (`quotas.data_mb`).
    #[serde(default)]
    pub data_mb: Option<u64>,
    /// A channel for tests and demos (like the bundled `echo`): the host
    /// accepts its pushes only from loopback peers unless the operator sets
    /// `public = true` in `[plugins.<name>]`.
    #[serde(default)]
    pub test_only: bool,
    /// How the host verifies pushes to the channel's webhook route, and the
    /// GET handshake it answers itself (`[webhook.verify]`,
    /// `[webhook.handshake]`; default: no verification).
    #[serde(default)]
    pub webhook: crate::channels::verify::WebhookSpec,
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
            secrets: BTreeMap::new(),
            limits: Limits::default(),
            config: BTreeMap::new(),
            data_mb: None,
            test_only: false,
            webhook: Default::default(),
        }
    }

    /// Parse a manifest from TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Errors name the position, never the text (the file may be a
        // symlink to something private).
        let mut m: Manifest =
            toml::from_str(text).map_err(|e| super::files::manifest_error(text, &e))?;
        if !super::files::valid_name(&m.name) {
            return Err(
                "invalid plugin name in `name` (use 1-64 letters, digits, `-` and `_`)".into(),
            );
        }
        for h in &m.allowed_hosts {
            super::host::http::HostPattern::parse(h)?;
        }
        for (name, binding) in &m.secrets {
            binding
                .check()
                .map_err(|e| format!("secret `{name}`: {e}"))?;
            if binding.generate && !super::files::valid_name(name) {
                return Err(format!(
                    "secret `{name}`: a generated secret's name must be 1-64 letters, digits, `-` and `_`"
                ));
            }
        }
        m.webhook.check()?;
        for name in m.webhook.secret_names() {
            let Some(binding) = m.secrets.get_mut(&name) else {
                return Err(format!(
                    "[webhook]: secret `{name}` is not declared in `secrets`"
                ));
            };
            // A verification secret is filled into no request unless the
            // manifest says where (`in = [...]`).
            binding.places.get_or_insert_with(Vec::new);
        }
        Ok(m)
    }
}

/// Where a secret may be filled in: to which hosts, in which places of a
/// request. Declared by the manifest (`[secrets.NAME]`) and optionally
/// narrowed by the operator (`secrets = { NAME = { value = .., hosts = .., in = .. } }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    /// Host rules (`scheme://host[:port]`) the secret may be sent to. In a
    /// manifest, `None` means the manifest's own `allowed_hosts` (never the
    /// operator's wider list); from the operator, `None` does not narrow.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Places: `path`, `header:<name>`, `body:<json field>` or
    /// `form:<field>` (a `media.upload` form field). In a manifest,
    /// `None` means `["path", "header:authorization"]`; from the operator,
    /// `None` does not narrow.
    #[serde(default, rename = "in")]
    pub places: Option<Vec<String>>,
    /// Manifest only: when the operator grants no value, the host generates
    /// one (32 characters of `A-Za-z0-9_-`), keeps it in
    /// `<data_dir>/secrets/<plugin>/<name>` (mode 0600) and uses it like a
    /// granted one; for values a platform lets us choose (Telegram's
    /// `secret_token`). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
    /// Manifest only: the plugin works without this secret in some of its
    /// configurations (it checks `secrets.exists` itself, as Slack's
    /// `app_token` is needed only in Socket Mode): an ungranted optional
    /// secret does not leave the channel unconfigured. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl SecretBinding {
    /// Check that every host rule and place parses.
    pub fn check(&self) -> Result<(), String> {
        for h in self.hosts.iter().flatten() {
            super::host::http::HostPattern::parse(h)?;
        }
        for p in self.places.iter().flatten() {
            super::host::secrets::Place::parse(p)?;
        }
        Ok(())
    }
}

fn secrets_list_or_table<'de, D>(d: D) -> Result<BTreeMap<String, SecretBinding>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Table(BTreeMap<String, SecretBinding>),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(names) => names
            .into_iter()
            .map(|n| (n, SecretBinding::default()))
            .collect(),
        Form::Table(t) => t,
    })
}

/// Where a granted secret's value comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a secret value, \"env:VAR\", or { value = \"...\", hosts = [...], in = [...] }"
)]
pub enum SecretSource {
    /// `"env:NAME"` reads the gateway's environment variable; anything else is the value.
    Value(String),
    /// `{ value = "env:NAME", hosts = [..], in = [..] }`: the value, and a
    /// binding that narrows where the plugin may have it filled in.
    Bound(BoundSecret),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print inline values; `env:` references are not secret.
        let shown = |v: &str| {
            if v.starts_with("env:") {
                v.to_string()
            } else {
                "<redacted>".to_string()
            }
        };
        match self {
            SecretSource::Value(v) => f.debug_tuple("Value").field(&shown(v)).finish(),
            SecretSource::Bound(b) => f
                .debug_struct("Bound")
                .field("value", &shown(&b.value))
                .field("hosts", &b.hosts)
                .field("in", &b.places)
                .finish(),
        }
    }
}

/// The operator's table form of a secret grant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundSecret {
    /// The value, or `env:VAR`.
    pub value: String,
    /// Hosts it may be sent to (narrows the manifest's binding).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Places it may be filled in (narrows the manifest's binding).
    #[serde(default, rename = "in")]
    pub places: Option<Vec<String>>,
}

impl SecretSource {
    /// The operator's narrowing binding, if given.
    pub fn binding(&self) -> Option<SecretBinding> {
        match self {
            SecretSource::Value(_) => None,
            SecretSource::Bound(b) => Some(SecretBinding {
                hosts: b.hosts.clone(),
                places: b.places.clone(),
                generate: false,
                optional: false,
            }),
        }
    }

    /// Resolve the secret's value.
    pub fn resolve(&self) -> Option<String> {
        let v = match self {
            SecretSource::Value(v) => v,
            SecretSource::Bound(b) => &b.value,
        };
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
    /// Secrets granted: name → value or `env:VAR`, or
    /// `{ value = .., hosts = [..], in = [..] }` to narrow where it may go.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Overrides the manifest's limits (each still capped by `[sandbox]`).
    pub limits: Option<Limits>,
    /// Outbound HTTP budget (rate, burst, response size) for this plugin.
    pub http: Option<super::limits::HttpOverrides>,
    /// Host-managed WebSocket limits for this plugin's accounts (see
    /// [`super::limits::SocketLimits`]; unset fields keep `[sandbox.socket]`).
    pub socket: Option<super::limits::SocketOverrides>,
    /// Set to false to keep a channel loaded but stopped.
    pub autostart: Option<bool>,
    /// Tools: keep one instance between calls instead of a fresh one per
    /// call (default false). Its memory persists from call to call; a trap
    /// or a limit drops it. Saves the first-call warm-up of big guests (a
    /// JavaScript tool's engine: milliseconds per call).
    pub warm_instance: bool,
    /// Overrides of the host-wide plugin quotas (instances, key-value, `/data`, logs).
    pub quotas: super::quotas::QuotaSettings,
    /// Channels: who may message the agent in direct chats (default
    /// `pairing`; see `crate::channels::access`).
    pub dm_policy: crate::channels::access::DmPolicy,
    /// Channels: platform sender ids always allowed (`"*"`: anyone).
    pub allow_from: Vec<String>,
    /// Channels: who may address the agent in groups (default `allowlist`).
    pub group_policy: crate::channels::access::GroupPolicy,
    /// Channels: in groups, answer only when mentioned or replied to
    /// (default true).
    pub require_mention: Option<bool>,
    /// Test channels (manifest `test_only = true`): accept pushes from any
    /// address, not only loopback (default false).
    pub public: bool,
    /// Channels: the durable inbox and outbox (`[plugins.<name>.queue]`:
    /// per-conversation send rate, retries, in-flight limits).
    pub queue: crate::channels::QueueSettings,
    /// Channels: further accounts of the plugin (`[plugins.<name>.accounts.<id>]`),
    /// each merged over this table (see [`PluginSettings::for_account`]);
    /// the table itself is the `default` account.
    #[serde(deserialize_with = "crate::channels::account::accounts_map")]
    pub accounts: BTreeMap<String, AccountSettings>,
}

/// One further account of a channel plugin
/// (`[plugins.<name>.accounts.<id>]`): `config` and `secrets` are merged
/// over the plugin table's (the account's keys win); every other field set
/// here replaces the plugin table's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Config entries merged over the plugin table's.
    pub config: BTreeMap<String, String>,
    /// Secrets merged over the plugin table's.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Replaces the plugin table's `dm_policy`.
    pub dm_policy: Option<crate::channels::access::DmPolicy>,
    /// Replaces the plugin table's `allow_from`.
    pub allow_from: Option<Vec<String>>,
    /// Replaces the plugin table's `group_policy`.
    pub group_policy: Option<crate::channels::access::GroupPolicy>,
    /// Replaces the plugin table's `require_mention`.
    pub require_mention: Option<bool>,
    /// Replaces the plugin table's `autostart`.
    pub autostart: Option<bool>,
    /// Replaces the plugin table's `queue`.
    pub queue: Option<crate::channels::QueueSettings>,
}

impl PluginSettings {
    /// The effective settings of account `id`: `None` for an account the
    /// table does not name; the table itself (without its `accounts`) for
    /// `default`.
    pub fn for_account(&self, id: &str) -> Option<PluginSettings> {
        let mut out = PluginSettings {
            accounts: BTreeMap::new(),
            ..self.clone()
        };
        if id == crate::channels::account::DEFAULT_ACCOUNT {
            return Some(out);
        }
        let a = self.accounts.get(id)?;
        out.config
            .extend(a.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.secrets
            .extend(a.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(v) = a.dm_policy {
            out.dm_policy = v;
        }
        if let Some(v) = &a.allow_from {
            out.allow_from = v.clone();
        }
        if let Some(v) = a.group_policy {
            out.group_policy = v;
        }
        if a.require_mention.is_some() {
            out.require_mention = a.require_mention;
        }
        if a.autostart.is_some() {
            out.autostart = a.autostart;
        }
        if let Some(q) = a.queue {
            out.queue = q;
        }
        Some(out)
    }
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
        assert_eq!(m.secrets["bot_token"], SecretBinding::default());
        let m = Manifest::parse(
            r#"name = "t"
[secrets.hook]
hosts = ["https://api.telegram.org"]
in = ["body:secret_token", "header:X-Token"]"#,
        )
        .unwrap();
        assert_eq!(m.secrets["hook"].places.as_ref().unwrap().len(), 2);
        assert!(Manifest::parse("name = \"t\"\n[secrets.x]\nin = [\"query\"]").is_err());
        assert!(Manifest::parse("name = \"t\"\n[secrets.x]\nhosts = [\"ftp://x\"]").is_err());
        assert!(Manifest::parse("name = \"t\"\n[secrets.x]\nwhere = 1").is_err());
        assert!(Manifest::parse("name = \"a b\"").is_err());
        assert!(Manifest::parse("name = \"a\"\nbogus = 1").is_err());
        assert!(Manifest::parse("name = \"a\"\nallowed_hosts = [\"ftp://x\"]").is_err());
    }

    #[test]
    fn secrets_are_required_unless_declared_optional() {
        let m = Manifest::parse(
            "name = \"s\"\n[secrets.bot_token]\n[secrets.app_token]\noptional = true",
        )
        .unwrap();
        assert!(!m.secrets["bot_token"].optional);
        assert!(m.secrets["app_token"].optional);
    }

    #[test]
    fn webhook_section_names_declared_secrets_that_go_nowhere_by_default() {
        let m = Manifest::parse(
            r#"name = "wa"
secrets = ["app_secret", "verify_token", "access_token"]
[webhook.verify]
scheme = "hmac-sha256"
header = "X-Hub-Signature-256"
secret = "app_secret"
prefix = "sha256="
[webhook.handshake]
scheme = "hub-challenge"
secret = "verify_token""#,
        )
        .unwrap();
        assert_eq!(
            m.webhook.scheme().name(),
            crate::channels::verify::SchemeName::HmacSha256
        );
        // Verification secrets are filled into no request; others keep the default.
        assert_eq!(m.secrets["app_secret"].places, Some(vec![]));
        assert_eq!(m.secrets["verify_token"].places, Some(vec![]));
        assert_eq!(m.secrets["access_token"].places, None);
        let m = Manifest::parse(
            r#"name = "tg"
[secrets.webhook_secret]
generate = true
in = ["body:secret_token"]
[webhook.verify]
scheme = "shared-header"
header = "X-Telegram-Bot-Api-Secret-Token"
secret = "webhook_secret""#,
        )
        .unwrap();
        assert!(m.secrets["webhook_secret"].generate);
        assert_eq!(
            m.secrets["webhook_secret"].places,
            Some(vec!["body:secret_token".to_string()])
        );
        let e = Manifest::parse(
            "name = \"x\"\n[webhook.verify]\nscheme = \"shared-header\"\nheader = \"X-T\"\nsecret = \"s\"",
        )
        .unwrap_err();
        assert!(e.contains("secret `s` is not declared"), "{e}");
        let e = Manifest::parse("name = \"x\"\n[secrets.\"../k\"]\ngenerate = true").unwrap_err();
        assert!(e.contains("generated secret's name"), "{e}");
        let e = Manifest::parse("name = \"x\"\n[webhook.verify]\nscheme = \"hmac-sha256\"")
            .unwrap_err();
        assert!(e.contains("[webhook.verify]"), "{e}");
    }
}
