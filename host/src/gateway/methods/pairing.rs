//! `channels.pairing.list/approve/dismiss`: operators decide which unknown
//! channel senders may talk to the agent (the `operator.pairing` scope).
//! The HTTP API (`/v1/channels/{name}/pairing…`) calls the same functions.
//! `channels.pairing.list` without `channel` answers for every channel in
//! OpenClaw's shape (`accounts` using sender pairing, pending `requests`),
//! which OpenClaw's Control UI shows on its channels page.

use serde::Deserialize;
use serde_json::{Value, json};

use super::channel_cards::channel_label;
use super::params;
use crate::channels::pairing::PairingError;
use crate::gateway::Gateway;
use crate::plugins::PluginKind;
use crate::protocol::errors::ErrorShape;

/// `{channel, accountId?, code?}` params.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairingParams {
    /// Channel plugin name.
    #[serde(alias = "name")]
    pub channel: String,
    /// Channel account (default `default`).
    #[serde(default)]
    pub account_id: Option<String>,
    /// Pairing code (approve, dismiss).
    #[serde(default)]
    pub code: Option<String>,
}

/// Why a pairing action failed.
#[derive(Debug, thiserror::Error)]
pub enum PairingFailure {
    /// No channel plugin of that name is loaded.
    #[error("no channel named {0:?}")]
    NoChannel(String),
    /// The channel has no such account.
    #[error("channel {channel:?} has no account {account:?}")]
    NoAccount {
        /// The channel.
        channel: String,
        /// The account asked for.
        account: String,
    },
    /// `code` was missing.
    #[error("`code` is required")]
    MissingCode,
    /// The pairing operation failed.
    #[error(transparent)]
    Pairing(#[from] PairingError),
}

impl From<PairingFailure> for ErrorShape {
    fn from(e: PairingFailure) -> Self {
        match e {
            PairingFailure::Pairing(PairingError::Store(_)) => {
                tracing::warn!(error = %e, "pairing store failed");
                ErrorShape::unavailable("pairing store unavailable")
            }
            other => ErrorShape::invalid(other.to_string()),
        }
    }
}

/// The channel must be a loaded channel plugin and the account (other
/// than `default`) one it serves.
fn channel_known(gw: &Gateway, p: &PairingParams) -> Result<(), PairingFailure> {
    match gw.runtime.plugins.info(&p.channel) {
        Some(info) if info.kind == Some(PluginKind::Channel) => {}
        _ => return Err(PairingFailure::NoChannel(p.channel.clone())),
    }
    match p.account_id.as_deref() {
        Some(a)
            if a != crate::channels::account::DEFAULT_ACCOUNT
                && gw
                    .runtime
                    .channels
                    .get_account(&p.channel, Some(a))
                    .is_none() =>
        {
            Err(PairingFailure::NoAccount {
                channel: p.channel.clone(),
                account: a.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Pending requests and approved senders of a channel.
pub fn list(gw: &Gateway, p: &PairingParams) -> Result<Value, PairingFailure> {
    channel_known(gw, p)?;
    let list = gw
        .runtime
        .channels
        .pairing()
        .list(&p.channel, p.account_id.as_deref())?;
    Ok(serde_json::to_value(list).unwrap_or(Value::Null))
}

/// Approve the sender holding `code`.
pub fn approve(gw: &Gateway, p: &PairingParams) -> Result<Value, PairingFailure> {
    channel_known(gw, p)?;
    let code = p.code.as_deref().ok_or(PairingFailure::MissingCode)?;
    let approved =
        gw.runtime
            .channels
            .pairing()
            .approve(&p.channel, p.account_id.as_deref(), code)?;
    Ok(json!({"ok": true, "approved": approved}))
}

/// Drop the request holding `code` without approving it.
pub fn dismiss(gw: &Gateway, p: &PairingParams) -> Result<Value, PairingFailure> {
    channel_known(gw, p)?;
    let code = p.code.as_deref().ok_or(PairingFailure::MissingCode)?;
    let dismissed =
        gw.runtime
            .channels
            .pairing()
            .dismiss(&p.channel, p.account_id.as_deref(), code)?;
    Ok(json!({"ok": true, "dismissed": dismissed}))
}

/// Every channel's pairing state: `accounts` (the channel accounts whose
/// DM policy is pairing, with the labels OpenClaw's page sorts and shows), `requests` (pending, oldest first, each with a
/// `requestId`), `channels` (each channel's own list) and `limits` (pending
/// requests per account, code lifetime).
pub fn list_all(gw: &Gateway) -> Result<Value, PairingFailure> {
    let settings = gw.runtime.plugins.all_settings();
    let mut accounts = Vec::new();
    let mut requests = Vec::new();
    let mut channels = Vec::new();
    for info in gw.runtime.plugins.list() {
        if info.kind != Some(PluginKind::Channel) {
            continue;
        }
        // The accounts served (with their effective policy); a plugin
        // with no runner yet counts as its `default` account.
        let runners = gw.runtime.channels.accounts_of(&info.name);
        let served: Vec<(String, crate::channels::access::DmPolicy)> = if runners.is_empty() {
            let policy = settings
                .get(&info.name)
                .map(|s| s.dm_policy)
                .unwrap_or_default();
            vec![("default".to_string(), policy)]
        } else {
            runners
                .iter()
                .map(|r| {
                    let policy = r.settings().map(|s| s.dm_policy).unwrap_or_default();
                    (r.account_id().to_string(), policy)
                })
                .collect()
        };
        for (account, policy) in served {
            if policy == crate::channels::access::DmPolicy::Pairing {
                accounts.push(json!({
                    "channel": info.name,
                    "channelLabel": channel_label(&info.name),
                    "accountId": account,
                    "accountLabel": account,
                }));
            }
        }
        let list = gw.runtime.channels.pairing().list(&info.name, None)?;
        for r in &list.pending {
            requests.push(json!({
                "requestId": format!("{}:{}:{}", r.channel, r.account_id, r.code),
                "channel": r.channel,
                "channelLabel": channel_label(&r.channel),
                "accountId": r.account_id,
                "accountLabel": r.account_id,
                "senderId": r.sender,
                "code": r.code,
                "sender": r.sender,
                "senderName": r.sender_name,
                "conversation": r.conversation,
                "createdAt": r.created_ms,
                "expiresAt": r.expires_ms,
            }));
        }
        channels.push(serde_json::to_value(list).unwrap_or(Value::Null));
    }
    use crate::channels::pairing::{CODE_TTL_MS, MAX_PENDING};
    Ok(json!({
        "accounts": accounts,
        "requests": requests,
        "channels": channels,
        "limits": {"pendingPerAccount": MAX_PENDING, "ttlMs": CODE_TTL_MS},
    }))
}

/// Dispatch `channels.pairing.*` over the protocol.
pub fn handle(gw: &Gateway, method: &str, p: &Value) -> Result<Value, ErrorShape> {
    if method == "channels.pairing.list" && p.get("channel").is_none() && p.get("name").is_none() {
        return list_all(gw).map_err(ErrorShape::from);
    }
    let p: PairingParams = params(method, p)?;
    let r = match method {
        "channels.pairing.list" => list(gw, &p),
        "channels.pairing.approve" => approve(gw, &p),
        "channels.pairing.dismiss" => dismiss(gw, &p),
        other => return Err(ErrorShape::unknown_method(other)),
    };
    r.map_err(ErrorShape::from)
}
