//! OpenClaw's per-platform channel status shape (`channels.status`), built
//! from Pincer's channel health: the channel list with its labels
//! (`channelOrder`, `channelLabels`, `channelDetailLabels`, `channelMeta`),
//! each channel's summary in the fields OpenClaw's Control UI cards read
//! for that platform (`channels.telegram.mode`, `channels.whatsapp.linked`,
//! ...) and its accounts (`channelAccounts`, `channelDefaultAccountId`).
//!
//! One function, [`channel_card`], turns a channel's accounts into its
//! summary and account rows; today every Pincer channel is one `default`
//! account, and a channel with several accounts passes them all.

use serde_json::{Map, Value, json};

use crate::health::ChannelHealth;

/// The account id of a channel's single account.
pub const DEFAULT_ACCOUNT: &str = "default";

/// One account of a channel, as the status shape shows it.
pub struct ChannelAccount<'a> {
    /// The account id (`default` for a single-account channel).
    pub account_id: &'a str,
    /// The account's health.
    pub health: &'a ChannelHealth,
}

/// A channel's summary and its account rows.
pub struct ChannelCard {
    /// `channels.<name>`: the platform's summary fields plus Pincer's own.
    pub summary: Value,
    /// `channelAccounts.<name>`: one row per account.
    pub accounts: Vec<Value>,
    /// `channelDefaultAccountId.<name>`.
    pub default_account: String,
}

/// The label OpenClaw's pages show for a channel: the platform's own name
/// for the platforms it knows, the plugin name otherwise.
pub fn channel_label(name: &str) -> String {
    match name {
        "telegram" => "Telegram".into(),
        "whatsapp" => "WhatsApp".into(),
        "discord" => "Discord".into(),
        "slack" => "Slack".into(),
        "signal" => "Signal".into(),
        other => other.to_string(),
    }
}

/// The longer label of a channel's detail page.
fn detail_label(name: &str) -> String {
    match name {
        "telegram" => "Telegram Bot API".into(),
        "whatsapp" => "WhatsApp Business Cloud API".into(),
        other => format!("{other} (Pincer plugin)"),
    }
}

/// Pincer's channel fields, shared by the summary and the account rows;
/// times never seen and the absent last error are `null`, as in OpenClaw.
pub fn pincer_fields(c: &ChannelHealth) -> Value {
    json!({
        // False while host-side verification lacks a secret or key (pushes
        // are refused with 503; `webhook.problem` says what is missing).
        "configured": configured(c),
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
    })
}

fn configured(c: &ChannelHealth) -> bool {
    c.webhook.problem.is_none() && c.missing_secrets.is_empty()
}

/// OpenClaw's mode names: Telegram's `polling`/`webhook`.
fn telegram_mode(mode: &str) -> &str {
    match mode {
        "poll" => "polling",
        other => other,
    }
}

/// Where a platform credential comes from, in OpenClaw's terms: Pincer's
/// host fills declared secrets in, so it is `config` once granted.
fn token_source(c: &ChannelHealth) -> &'static str {
    if c.missing_secrets.is_empty() {
        "config"
    } else {
        "none"
    }
}

/// The latest message either way, Unix ms.
fn last_message_at(c: &ChannelHealth) -> Option<u64> {
    c.last_inbound_at.max(c.last_outbound_at)
}

/// Set `extra`'s fields on the object `v`.
fn merge(v: &mut Value, extra: Value) {
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
}

/// One account row: OpenClaw's account snapshot fields (plus the platform's)
/// over Pincer's fields.
fn account_row(platform: &str, a: &ChannelAccount<'_>) -> Value {
    let c = a.health;
    let mut row = pincer_fields(c);
    merge(
        &mut row,
        json!({
            "accountId": a.account_id,
            "name": a.account_id,
            "enabled": true,
            "healthState": c.state.as_str(),
            "lastStopAt": Value::Null,
            "lastConnectedAt": c.last_contact_at,
            "lastTransportActivityAt": c.last_contact_at,
            "lastProbeAt": Value::Null,
        }),
    );
    match platform {
        "telegram" => merge(
            &mut row,
            json!({"mode": telegram_mode(c.mode), "tokenSource": token_source(c)}),
        ),
        "whatsapp" => merge(
            &mut row,
            json!({
                // The Cloud API binds the number by its access token: the
                // account is "linked" once that credential is granted.
                "linked": configured(c),
                "lastMessageAt": last_message_at(c),
                "authAgeMs": Value::Null,
            }),
        ),
        _ => {}
    }
    row
}

/// The channel summary (`channels.<name>`): the default account's state in
/// the fields the platform's card reads.
fn summary(platform: &str, default: &ChannelAccount<'_>) -> Value {
    let c = default.health;
    let mut s = pincer_fields(c);
    merge(
        &mut s,
        json!({
            "accountId": default.account_id,
            "lastStopAt": Value::Null,
            "lastProbeAt": Value::Null,
        }),
    );
    match platform {
        "telegram" => merge(
            &mut s,
            json!({"mode": telegram_mode(c.mode), "tokenSource": token_source(c)}),
        ),
        "whatsapp" => merge(
            &mut s,
            json!({
                "linked": configured(c),
                "lastConnectedAt": c.last_contact_at,
                "lastMessageAt": last_message_at(c),
                "authAgeMs": Value::Null,
            }),
        ),
        _ => {}
    }
    s
}

/// A channel's card from its accounts (the first is the default unless
/// one is named `default`). `None` for a channel with no account.
pub fn channel_card(platform: &str, accounts: &[ChannelAccount<'_>]) -> Option<ChannelCard> {
    let default = accounts
        .iter()
        .find(|a| a.account_id == DEFAULT_ACCOUNT)
        .or_else(|| accounts.first())?;
    Some(ChannelCard {
        summary: summary(platform, default),
        accounts: accounts.iter().map(|a| account_row(platform, a)).collect(),
        default_account: default.account_id.to_string(),
    })
}

/// The whole `channels.status` answer for `channels` (the health monitor's
/// rows: one per account, grouped here by channel plugin in their order),
/// stamped `ts`.
pub fn channels_status(channels: &[ChannelHealth], ts: i64) -> Value {
    let mut order: Vec<&str> = Vec::new();
    for c in channels {
        if !order.contains(&c.plugin.as_str()) {
            order.push(&c.plugin);
        }
    }
    let mut summaries = Map::new();
    let mut accounts = Map::new();
    let mut defaults = Map::new();
    let mut labels = Map::new();
    let mut details = Map::new();
    let mut meta = Vec::new();
    for plugin in &order {
        let label = channel_label(plugin);
        let detail = detail_label(plugin);
        let mut of_plugin: Vec<ChannelAccount<'_>> = channels
            .iter()
            .filter(|c| c.plugin == *plugin)
            .map(|c| ChannelAccount {
                account_id: &c.account_id,
                health: c,
            })
            .collect();
        // The default account first, as OpenClaw lists it.
        of_plugin.sort_by_key(|a| a.account_id != DEFAULT_ACCOUNT);
        if let Some(card) = channel_card(plugin, &of_plugin) {
            summaries.insert(plugin.to_string(), card.summary);
            accounts.insert(plugin.to_string(), Value::Array(card.accounts));
            defaults.insert(plugin.to_string(), json!(card.default_account));
        }
        meta.push(json!({"id": plugin, "label": label, "detailLabel": detail}));
        labels.insert(plugin.to_string(), json!(label));
        details.insert(plugin.to_string(), json!(detail));
    }
    json!({
        "ts": ts,
        "channelOrder": order,
        "channelLabels": labels,
        "channelDetailLabels": details,
        "channelMeta": meta,
        "channels": summaries,
        "channelAccounts": accounts,
        "channelDefaultAccountId": defaults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelState;

    fn health(name: &str, state: ChannelState, missing: &[&str]) -> ChannelHealth {
        ChannelHealth {
            name: name.into(),
            plugin: name.into(),
            account_id: DEFAULT_ACCOUNT.into(),
            state,
            healthy: state == ChannelState::Running,
            running: state == ChannelState::Running,
            connected: state == ChannelState::Running,
            mode: "poll",
            last_activity_at: None,
            last_inbound_at: Some(5),
            last_outbound_at: Some(9),
            last_start_at: Some(1),
            reconnect_attempts: 0,
            restarts: 0,
            restarts_total: 0,
            last_error: None,
            last_contact_at: Some(7),
            poll_errors: 0,
            missing_secrets: missing.iter().map(|s| s.to_string()).collect(),
            inbox_pending: 0,
            outbox: Default::default(),
            webhook: Default::default(),
            sockets: Vec::new(),
        }
    }

    #[test]
    fn a_card_takes_every_account_and_picks_the_default() {
        let work = health("telegram", ChannelState::Running, &[]);
        let home = health("telegram", ChannelState::Unconfigured, &["bot_token"]);
        let accounts = [
            ChannelAccount {
                account_id: "work",
                health: &work,
            },
            ChannelAccount {
                account_id: DEFAULT_ACCOUNT,
                health: &home,
            },
        ];
        let card = channel_card("telegram", &accounts).expect("a card");
        assert_eq!(card.default_account, "default");
        assert_eq!(card.accounts.len(), 2);
        assert_eq!(card.accounts[0]["accountId"], "work");
        assert_eq!(card.accounts[0]["running"], true);
        assert_eq!(card.accounts[0]["mode"], "polling");
        assert_eq!(card.accounts[1]["configured"], false);
        // The summary is the default account's.
        assert_eq!(card.summary["configured"], false);
        assert_eq!(card.summary["tokenSource"], "none");
        assert!(channel_card("telegram", &[]).is_none());
    }

    #[test]
    fn whatsapp_and_generic_channels_get_their_fields_and_labels() {
        let wa = health("whatsapp", ChannelState::Running, &[]);
        let echo = health("echo", ChannelState::Running, &[]);
        let v = channels_status(&[wa, echo], 42);
        assert_eq!(v["channelOrder"], json!(["whatsapp", "echo"]));
        assert_eq!(v["channelLabels"]["whatsapp"], "WhatsApp");
        assert_eq!(v["channelMeta"][1]["label"], "echo");
        assert_eq!(v["channels"]["whatsapp"]["linked"], true);
        assert_eq!(v["channels"]["whatsapp"]["lastMessageAt"], 9);
        assert!(v["channels"]["echo"].get("linked").is_none());
        assert_eq!(v["channelDefaultAccountId"]["echo"], "default");
        assert_eq!(v["channelAccounts"]["echo"][0]["healthState"], "running");
    }
}
