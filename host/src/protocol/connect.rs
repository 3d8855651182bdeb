//! `connect` parameters and the `hello-ok` payload.
//!
//! Parsing is strict about required fields and their types but ignores
//! unknown fields, so newer clients keep connecting.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::frames::StateVersion;

/// `params` of the first request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    /// Lowest protocol version the client speaks.
    pub min_protocol: u32,
    /// Highest protocol version the client speaks.
    pub max_protocol: u32,
    /// Who the client is.
    pub client: ClientInfo,
    /// Capabilities (`tool-events`, ...).
    #[serde(default)]
    pub caps: Vec<String>,
    /// `operator` (default) or `node`.
    #[serde(default)]
    pub role: Option<String>,
    /// Scopes asked for (default none).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Device identity, when the client has one.
    #[serde(default)]
    pub device: Option<DeviceIdentity>,
    /// Shared or device credentials.
    #[serde(default)]
    pub auth: Option<ConnectAuth>,
    /// Locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// User agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Pincer extension (cluster mode): resume the logged events after a
    /// cursor this client saw before reconnecting.
    #[serde(default)]
    pub resume: Option<ResumeParams>,
}

/// `resume` in connect params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeParams {
    /// The last `cursor` the client received.
    pub after: i64,
}

/// `client` in connect params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Client id (`cli`, `openclaw-control-ui`, ...).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Client version.
    pub version: String,
    /// Platform (`linux`, `darwin`, ...).
    pub platform: String,
    /// Device family.
    #[serde(default)]
    pub device_family: Option<String>,
    /// Model identifier.
    #[serde(default)]
    pub model_identifier: Option<String>,
    /// Client mode (`cli`, `ui`, `webchat`, `backend`, ...).
    pub mode: String,
    /// Per-install instance id.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// `device` in connect params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIdentity {
    /// Hex SHA-256 of the raw public key.
    pub id: String,
    /// Base64url raw Ed25519 public key.
    pub public_key: String,
    /// Base64url Ed25519 signature.
    pub signature: String,
    /// When it was signed, Unix ms.
    pub signed_at: i64,
    /// The challenge nonce.
    pub nonce: String,
}

/// `auth` in connect params.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectAuth {
    /// Shared gateway token.
    #[serde(default)]
    pub token: Option<String>,
    /// Shared password.
    #[serde(default)]
    pub password: Option<String>,
    /// A device token from an earlier `hello-ok`.
    #[serde(default)]
    pub device_token: Option<String>,
    /// A bootstrap token.
    #[serde(default)]
    pub bootstrap_token: Option<String>,
}

/// Client ids the reference accepts.
pub const CLIENT_IDS: [&str; 13] = [
    "webchat-ui",
    "openclaw-control-ui",
    "openclaw-tui",
    "webchat",
    "cli",
    "gateway-client",
    "openclaw-macos",
    "openclaw-ios",
    "openclaw-android",
    "node-host",
    "test",
    "fingerprint",
    "openclaw-probe",
];
/// Client modes the reference accepts.
pub const CLIENT_MODES: [&str; 7] = ["webchat", "cli", "ui", "backend", "node", "probe", "test"];

impl ConnectParams {
    /// Parse and validate; the error text follows `invalid connect params: …`.
    pub fn parse(params: &Value) -> Result<ConnectParams, String> {
        let p: ConnectParams = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        if p.min_protocol < 1 || p.max_protocol < 1 {
            return Err("minProtocol and maxProtocol must be >= 1".into());
        }
        if p.client.version.is_empty() || p.client.platform.is_empty() {
            return Err("client.version and client.platform must be non-empty".into());
        }
        if !CLIENT_IDS.contains(&p.client.id.as_str()) {
            return Err(format!(
                "client.id must be one of {}",
                CLIENT_IDS.join(", ")
            ));
        }
        if !CLIENT_MODES.contains(&p.client.mode.as_str()) {
            return Err(format!(
                "client.mode must be one of {}",
                CLIENT_MODES.join(", ")
            ));
        }
        if let Some(d) = &p.device
            && d.nonce.is_empty()
        {
            return Err("device.nonce must be a non-empty string".into());
        }
        Ok(p)
    }

    /// The role after defaulting.
    pub fn role(&self) -> &str {
        self.role.as_deref().unwrap_or("operator")
    }
}

/// The `hello-ok` payload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloOk {
    /// Always `hello-ok`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Negotiated protocol.
    pub protocol: u32,
    /// Server identity.
    pub server: ServerInfo,
    /// Methods and events.
    pub features: Features,
    /// Initial state.
    pub snapshot: Snapshot,
    /// What the client is allowed.
    pub auth: HelloAuth,
    /// Limits.
    pub policy: Policy,
}

/// `hello-ok.server`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// Server version.
    pub version: String,
    /// This connection's id.
    pub conn_id: String,
}

/// `hello-ok.features`.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// Implemented methods.
    pub methods: Vec<&'static str>,
    /// Events that may be sent.
    pub events: Vec<&'static str>,
}

/// `hello-ok.snapshot`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Presence entries.
    pub presence: Vec<Value>,
    /// Health summary.
    pub health: Value,
    /// State counters.
    pub state_version: StateVersion,
    /// Uptime.
    pub uptime_ms: u64,
    /// Session defaults.
    pub session_defaults: Value,
    /// Auth mode (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<&'static str>,
}

/// `hello-ok.auth`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAuth {
    /// Granted role.
    pub role: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// A device token for next time (device clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    /// When it was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<i64>,
}

/// `hello-ok.policy`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Largest frame after the handshake.
    pub max_payload: usize,
    /// Queued bytes before slow-consumer handling.
    pub max_buffered_bytes: usize,
    /// Tick interval.
    pub tick_interval_ms: u64,
}

/// Client metadata recorded with presence and pairing.
pub fn client_meta(p: &ConnectParams) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.clone()));
        }
    };
    put("displayName", p.client.display_name.as_ref());
    put("platform", Some(&p.client.platform));
    put("deviceFamily", p.client.device_family.as_ref());
    put("clientId", Some(&p.client.id));
    put("clientMode", Some(&p.client.mode));
    put("version", Some(&p.client.version));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_cli_connect() {
        let p = ConnectParams::parse(&json!({"minProtocol":4,"maxProtocol":4,"client":{"id":"cli","version":"2026.9.6","platform":"linux","deviceFamily":"Linux","mode":"cli","instanceId":"u"},"caps":[],"auth":{"token":"T"},"role":"operator","scopes":["operator.read"],"futureField":1})).unwrap();
        assert_eq!(p.role(), "operator");
        assert_eq!(p.auth.unwrap().token.as_deref(), Some("T"));
    }

    #[test]
    fn rejects_missing_and_unknown_enum_values() {
        assert!(ConnectParams::parse(&json!({"minProtocol":3})).is_err());
        let bad_mode = json!({"minProtocol":3,"maxProtocol":3,"client":{"id":"cli","version":"1","platform":"x","mode":"operator"}});
        assert!(
            ConnectParams::parse(&bad_mode)
                .unwrap_err()
                .contains("client.mode")
        );
    }
}
