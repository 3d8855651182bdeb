//! Pincer's plugin methods: `channels.status` (the health monitor's view in
//! OpenClaw's channel-snapshot shape: each channel plugin, and each of its
//! accounts in `channelAccounts`), `channels.start/stop/restart` (with an
//! optional `accountId`),
//! `plugins.list` (Pincer's rows plus the fields OpenClaw's plugin pages
//! read), `plugins.reload`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::{Gateway, now_ms};
use crate::health::ChannelHealth;
use crate::protocol::errors::ErrorShape;

/// `{channel, accountId?}` params.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelParams {
    /// Channel plugin name.
    #[serde(alias = "name")]
    pub channel: String,
    /// The account (default: `default`).
    #[serde(default, alias = "account")]
    pub account_id: Option<String>,
}

/// The channel key of `account` of `channel`, or a clear error for an
/// account id that cannot exist.
pub fn account_key(channel: &str, account: Option<&str>) -> Result<String, ErrorShape> {
    use crate::channels::account::{self, DEFAULT_ACCOUNT};
    match account {
        None => Ok(account::key(channel, None)),
        Some(a) if a == DEFAULT_ACCOUNT || account::valid_id(a) => {
            Ok(account::key(channel, Some(a)))
        }
        Some(a) => Err(ErrorShape::invalid(format!(
            "invalid accountId {a:?} (1-64 letters, digits, `-` and `_`)"
        ))),
    }
}

/// `{name?}` params.
#[derive(Deserialize)]
pub struct ReloadParams {
    /// Plugin to reload (all when absent).
    pub name: Option<String>,
}

/// One channel in OpenClaw's snapshot shape plus Pincer's fields; times
/// never seen and the absent last error are `null`, as in OpenClaw.
pub fn channel_json(c: &ChannelHealth) -> Value {
    let v = json!({
        // False while host-side verification lacks a secret or key (pushes
        // are refused with 503; `webhook.problem` says what is missing).
        "configured": c.webhook.problem.is_none() && c.missing_secrets.is_empty(),
        "missingSecrets": c.missing_secrets,
        "lastContactAt": c.last_contact_at,
        "pollErrors": c.poll_errors,
        "inboxPending": c.inbox_pending,
        "outbox": c.outbox,
        "running": c.running,
        "connected": c.connected,
        "mode": c.mode,
        "lastInboundAt": c.last_inbound_at,
        "lastOutboundAt": c.last_outbound_at,
        "lastStartAt": c.last_start_at,
        "reconnectAttempts": c.reconnect_attempts,
        "lastError": c.last_error,
        "restarts": c.restarts,
        "restartsTotal": c.restarts_total,
        "state": c.state.as_str(),
        "healthy": c.healthy,
        "lastActivityAt": c.last_activity_at,
        "webhook": c.webhook,
    });
    v
}

/// `plugins.list`: each plugin's Pincer row plus OpenClaw's fields (`id`,
/// `enabled`, `installed`, `status`, `origin`, `channelIds`, `hasIcon`), so OpenClaw's
/// Control UI lists Pincer's plugins.
pub fn plugins_list(gw: &Gateway) -> Value {
    let rows: Vec<Value> = gw
        .runtime
        .plugins
        .list()
        .into_iter()
        .map(|p| {
            let loaded = p.state == crate::plugins::PluginState::Loaded;
            let is_channel = p.kind == Some(crate::plugins::PluginKind::Channel);
            let name = p.name.clone();
            let mut v = serde_json::to_value(&p).unwrap_or_else(|_| json!({"name": name}));
            v["id"] = json!(name);
            v["enabled"] = json!(true);
            v["status"] = json!(if loaded { "loaded" } else { "error" });
            v["origin"] = json!("workspace");
            v["channelIds"] = if is_channel { json!([name]) } else { json!([]) };
            v["hasIcon"] = json!(false);
            v["installed"] = json!(true);
            v
        })
        .collect();
    json!({"plugins": rows})
}

/// `channels.status`: `channels` has one row per channel plugin (its
/// `default` account's, or its first account's when the default is not
/// served), `channelAccounts` every account's row with its `accountId`.
pub async fn channels_status(gw: &Gateway) -> Value {
    let snap = gw.runtime.health.snapshot().await;
    let mut order: Vec<String> = Vec::new();
    let mut channels = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut accounts = serde_json::Map::new();
    let mut default_account = serde_json::Map::new();
    for c in &snap {
        let mut row = channel_json(c);
        row["accountId"] = json!(c.account_id);
        if !order.contains(&c.plugin) {
            order.push(c.plugin.clone());
            labels.insert(c.plugin.clone(), json!(c.plugin));
        }
        let is_default = c.account_id == crate::channels::account::DEFAULT_ACCOUNT;
        if is_default || !channels.contains_key(&c.plugin) {
            channels.insert(c.plugin.clone(), row.clone());
            default_account.insert(c.plugin.clone(), json!(c.account_id));
        }
        let list = accounts
            .entry(c.plugin.clone())
            .or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            if is_default {
                list.insert(0, row);
            } else {
                list.push(row);
            }
        }
    }
    json!({
        "ts": now_ms(),
        "channelOrder": order,
        "channelLabels": labels,
        "channels": channels,
        "channelAccounts": accounts,
        "channelDefaultAccountId": default_account,
    })
}

/// `channels.start` / `stop` / `restart` of `account` (`None`: default) of
/// channel `name` (and the HTTP equivalents).
pub async fn channel_action(
    gw: &Gateway,
    name: &str,
    account: Option<&str>,
    action: &str,
) -> Result<Value, ErrorShape> {
    let key = account_key(name, account)?;
    let ch = &gw.runtime.channels;
    let r = match action {
        "start" => ch.start(&key).await,
        "stop" => ch.stop(&key).await,
        "restart" => gw.runtime.health.restart_channel(&key).await.map(|_| ()),
        other => {
            return Err(ErrorShape::invalid(format!(
                "unknown channel action {other:?}"
            )));
        }
    };
    r.map_err(|e| ErrorShape::unavailable(e.to_string()))?;
    let snap = gw.runtime.health.snapshot().await;
    let row = snap.iter().find(|c| c.name == key);
    let state = row.map(channel_json);
    let account_id = row.map_or_else(
        || crate::channels::account::split(&key).1.to_string(),
        |c| c.account_id.clone(),
    );
    Ok(json!({"ok": true, "channel": name, "accountId": account_id, "status": state}))
}

/// `plugins.reload`.
pub async fn reload(gw: &Gateway, name: Option<&str>) -> Value {
    let results = gw.runtime.reload(name).await;
    json!({
        "ok": results.iter().all(|(_, r)| r.is_ok()),
        "results": results.iter().map(|(n, r)| match r {
            Ok(()) => json!({"plugin": n, "ok": true}),
            Err(e) => json!({"plugin": n, "ok": false, "error": e.to_string()}),
        }).collect::<Vec<_>>(),
    })
}
