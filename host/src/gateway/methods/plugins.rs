//! Pincer's plugin methods: `channels.status` (the health monitor's view in
//! OpenClaw's per-platform shape, built by `channel_cards`, with each
//! account in `channelAccounts`), `channels.start/stop/restart` (with an
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

/// One channel in OpenClaw's snapshot shape plus Pincer's fields (see
/// [`super::channel_cards::pincer_fields`]).
pub fn channel_json(c: &ChannelHealth) -> Value {
    super::channel_cards::pincer_fields(c)
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

/// `channels.status`: OpenClaw's per-platform shape
/// ([`super::channel_cards`]) from the health monitor's snapshot.
pub async fn channels_status(gw: &Gateway) -> Value {
    let snap = gw.runtime.health.snapshot().await;
    let mut status = super::channel_cards::channels_status(&snap, now_ms());
    if let Some(c) = gw.cluster.get()
        && let Some(o) = status.as_object_mut()
    {
        o.insert("cluster".into(), c.status());
    }
    status
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
