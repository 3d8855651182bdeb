//! Who may drive the agent through a channel: the access policy every
//! channel obeys, applied to each inbound message before it is published to
//! the gateway (so a refused message starts no run and never reaches a
//! transcript).
//!
//! Settings live in `[plugins.<channel>]` ([`PluginSettings`]), as in
//! OpenClaw:
//! - `dm_policy` for direct chats: `pairing` (default; unknown senders get
//!   one reply with a code an operator approves, see [`super::pairing`]),
//!   `allowlist` (only `allow_from` and senders approved earlier),
//!   `open` (anyone) or `disabled`;
//! - `allow_from`: platform sender ids always allowed (`"*"`: anyone);
//! - `group_policy` (`allowlist` default, `open`, `disabled`) and
//!   `require_mention` (default true) for groups.
//!
//! The chat type and the mention facts come from the 0.2.0 contract's
//! inbound message (`chat-type`, `mentioned`, `reply-to.from-bot-self`);
//! 0.1.0 plugins carry neither, so their conversations count as direct.
//!
//! Test channels (manifest `test_only = true`, like the bundled `echo`)
//! accept pushes only from loopback peers unless the operator sets
//! `public = true` ([`push_allowed`]).

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pairing::{Pairing, reply_text};
use super::{ChannelRunner, Inbound};
use crate::plugins::PluginSettings;
use crate::plugins::bindings::{OutboundMessage, TextFormat};
use crate::store::RequestOutcome;

/// Who may message the agent in direct chats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// Unknown senders get a pairing code; an operator approves them.
    #[default]
    Pairing,
    /// Only `allow_from` and senders approved earlier.
    Allowlist,
    /// Anyone.
    Open,
    /// No one.
    Disabled,
}

/// Who may address the agent in group chats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// Only senders in `allow_from` (pairing approvals never grant groups).
    #[default]
    Allowlist,
    /// Any member.
    Open,
    /// Groups are ignored.
    Disabled,
}

/// The kind of conversation a message came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatKind {
    /// A one-to-one chat (every 0.1.0 message).
    #[default]
    Direct,
    /// A group or channel.
    Group,
}

/// What the policy knows about a message.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Direct or group.
    pub kind: ChatKind,
    /// Platform sender id.
    pub sender: &'a str,
    /// Whether the bot was mentioned or replied to (groups).
    pub mentioned: bool,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The policy for this chat kind is `disabled`.
    Disabled,
    /// The sender is not allowed (allowlist).
    NotAllowed,
    /// A group message that does not mention the bot.
    NotMentioned,
}

impl Refusal {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::NotAllowed => "not-allowed",
            Refusal::NotMentioned => "not-mentioned",
        }
    }
}

/// The policy's verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the message to the agent.
    Allow,
    /// Unknown sender under `pairing`: offer a code, do not process.
    Pair,
    /// Drop the message.
    Refuse(Refusal),
}

/// Whether `allow_from` lists `sender` (or `*`).
pub fn listed(settings: &PluginSettings, sender: &str) -> bool {
    settings
        .allow_from
        .iter()
        .any(|a| a == "*" || a.trim() == sender)
}

/// The verdict for a message with `facts` under `settings`; `approved`
/// says whether the sender was approved by pairing (only asked for when it
/// matters).
pub fn decide(
    settings: &PluginSettings,
    facts: &Facts<'_>,
    approved: impl FnOnce() -> bool,
) -> Verdict {
    match facts.kind {
        ChatKind::Group => {
            let allowed = match settings.group_policy {
                GroupPolicy::Disabled => return Verdict::Refuse(Refusal::Disabled),
                GroupPolicy::Open => true,
                GroupPolicy::Allowlist => listed(settings, facts.sender),
            };
            if !allowed {
                Verdict::Refuse(Refusal::NotAllowed)
            } else if settings.require_mention.unwrap_or(true) && !facts.mentioned {
                Verdict::Refuse(Refusal::NotMentioned)
            } else {
                Verdict::Allow
            }
        }
        ChatKind::Direct => match settings.dm_policy {
            DmPolicy::Disabled => Verdict::Refuse(Refusal::Disabled),
            DmPolicy::Open => Verdict::Allow,
            _ if listed(settings, facts.sender) || approved() => Verdict::Allow,
            DmPolicy::Allowlist => Verdict::Refuse(Refusal::NotAllowed),
            DmPolicy::Pairing => Verdict::Pair,
        },
    }
}

/// Whether a push to a channel may be handed to the plugin: a test channel
/// (`test_only`) takes pushes only from loopback peers unless the operator
/// made it `public`. An unknown peer counts as remote.
pub fn push_allowed(test_only: bool, public: bool, peer: Option<IpAddr>) -> bool {
    if !test_only || public {
        return true;
    }
    peer.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// Applies the policy to inbound messages and issues pairing codes.
#[derive(Clone)]
pub struct AccessGate {
    pairing: Pairing,
    /// Pairing codes go out through the durable outbox.
    outbox: std::sync::Arc<super::Outbox>,
}

impl std::fmt::Debug for AccessGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessGate")
            .field("pairing", &self.pairing)
            .finish_non_exhaustive()
    }
}

/// What [`AccessGate::admit`] decided for one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The message goes to the agent.
    Allow,
    /// The policy refuses it (settled, never answered).
    Refuse,
    /// The policy could not be read now: ask again later.
    Later,
}

impl AccessGate {
    /// A gate over `pairing`, sending codes through `outbox`.
    pub fn new(pairing: Pairing, outbox: std::sync::Arc<super::Outbox>) -> Self {
        AccessGate { pairing, outbox }
    }

    /// The pairing state (for operators' list/approve/dismiss).
    pub fn pairing(&self) -> &Pairing {
        &self.pairing
    }

    /// Whether `msg`, received by `runner`, may reach the agent. Under
    /// `pairing`, an unknown sender's first message gets one reply with a
    /// code (committed to the outbox) and is dropped. When the policy
    /// cannot be read now (no version loaded, a store failure) the answer
    /// is [`Admission::Later`]: the message waits, it is not dropped.
    pub fn admit(&self, runner: &Arc<ChannelRunner>, msg: &Inbound) -> Admission {
        let channel = msg.channel.as_str();
        let Ok(settings) = runner.settings() else {
            tracing::warn!(
                channel,
                id = %msg.id,
                "no loaded version to take the access policy from; the message waits"
            );
            return Admission::Later;
        };
        let settings = &*settings;
        let (plugin, account) = (runner.plugin(), runner.account_id());
        let facts = Facts {
            kind: msg.chat,
            sender: &msg.sender,
            mentioned: msg.mentioned,
        };
        let mut store_failed = false;
        let verdict = decide(settings, &facts, || {
            self.pairing
                .is_approved(plugin, account, &msg.sender)
                .unwrap_or_else(|e| {
                    tracing::warn!(channel, sender = %msg.sender, error = %e, "pairing lookup failed; the message waits");
                    store_failed = true;
                    false
                })
        });
        if store_failed {
            return Admission::Later;
        }
        match verdict {
            Verdict::Allow => Admission::Allow,
            Verdict::Refuse(why) => {
                metrics::counter!("pincer_channel_access_refused_total", "channel" => channel.to_string(), "reason" => why.as_str())
                    .increment(1);
                tracing::debug!(channel, sender = %msg.sender, id = %msg.id, reason = why.as_str(), "inbound message refused by the access policy");
                Admission::Refuse
            }
            Verdict::Pair => {
                metrics::counter!("pincer_channel_access_refused_total", "channel" => channel.to_string(), "reason" => "pairing")
                    .increment(1);
                self.offer_code(plugin, account, msg);
                Admission::Refuse
            }
        }
    }

    fn offer_code(&self, plugin: &str, account: &str, msg: &Inbound) {
        let channel = msg.channel.as_str();
        let outcome = self.pairing.request(
            plugin,
            account,
            &msg.sender,
            msg.sender_name.as_deref(),
            &msg.conversation,
            |request| {
                let reply = OutboundMessage {
                    conversation: msg.conversation.clone(),
                    thread: None,
                    text: reply_text(plugin, account, &msg.sender, &request.code),
                    format: TextFormat::Plain,
                    reply_to: (!msg.id.is_empty()).then(|| msg.id.clone()),
                    attachments: Vec::new(),
                };
                self.outbox.notice(channel, &reply)
            },
        );
        match outcome {
            Ok(RequestOutcome::Created(_)) => {
                tracing::info!(channel, sender = %msg.sender, conversation = %msg.conversation, "pairing code issued to an unknown sender");
                self.outbox.wake(channel);
            }
            Ok(RequestOutcome::AlreadyPending) => {
                tracing::debug!(channel, sender = %msg.sender, "sender already has a pairing code; message dropped");
            }
            Ok(RequestOutcome::Full) => {
                tracing::info!(channel, sender = %msg.sender, "pairing requests full for this account; no code issued");
            }
            Ok(RequestOutcome::Approved) => {
                // Approved between the check and the request: the next
                // message is answered; this one was already refused.
            }
            Err(e) => {
                tracing::warn!(channel, sender = %msg.sender, error = %e, "storing a pairing code and its notice failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dm: DmPolicy, allow: &[&str]) -> PluginSettings {
        PluginSettings {
            dm_policy: dm,
            allow_from: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn direct(sender: &str) -> Facts<'_> {
        Facts {
            kind: ChatKind::Direct,
            sender,
            mentioned: false,
        }
    }

    #[test]
    fn direct_policies() {
        let s = settings(DmPolicy::default(), &["alice"]);
        assert_eq!(decide(&s, &direct("alice"), || false), Verdict::Allow);
        assert_eq!(decide(&s, &direct("bob"), || false), Verdict::Pair);
        assert_eq!(decide(&s, &direct("bob"), || true), Verdict::Allow);
        let s = settings(DmPolicy::Allowlist, &["alice"]);
        assert_eq!(decide(&s, &direct("alice"), || false), Verdict::Allow);
        assert_eq!(
            decide(&s, &direct("bob"), || false),
            Verdict::Refuse(Refusal::NotAllowed)
        );
        assert_eq!(decide(&s, &direct("bob"), || true), Verdict::Allow);
        let s = settings(DmPolicy::Allowlist, &["*"]);
        assert_eq!(decide(&s, &direct("anyone"), || false), Verdict::Allow);
        let s = settings(DmPolicy::Open, &[]);
        assert_eq!(decide(&s, &direct("anyone"), || false), Verdict::Allow);
        let s = settings(DmPolicy::Disabled, &["alice"]);
        assert_eq!(
            decide(&s, &direct("alice"), || true),
            Verdict::Refuse(Refusal::Disabled)
        );
    }

    #[test]
    fn group_policies() {
        let group = |sender, mentioned| Facts {
            kind: ChatKind::Group,
            sender,
            mentioned,
        };
        let s = settings(DmPolicy::Open, &["alice"]);
        assert_eq!(decide(&s, &group("alice", true), || false), Verdict::Allow);
        assert_eq!(
            decide(&s, &group("alice", false), || false),
            Verdict::Refuse(Refusal::NotMentioned)
        );
        // Pairing approvals never grant group access.
        assert_eq!(
            decide(&s, &group("bob", true), || true),
            Verdict::Refuse(Refusal::NotAllowed)
        );
        let s = PluginSettings {
            group_policy: GroupPolicy::Open,
            require_mention: Some(false),
            ..Default::default()
        };
        assert_eq!(decide(&s, &group("bob", false), || false), Verdict::Allow);
        let s = PluginSettings {
            group_policy: GroupPolicy::Disabled,
            ..Default::default()
        };
        assert_eq!(
            decide(&s, &group("bob", true), || false),
            Verdict::Refuse(Refusal::Disabled)
        );
    }

    #[test]
    fn settings_parse_from_the_config_file_with_safe_defaults() {
        let d: PluginSettings = toml::from_str("").unwrap();
        assert_eq!(d.dm_policy, DmPolicy::Pairing);
        assert_eq!(d.group_policy, GroupPolicy::Allowlist);
        assert!(d.allow_from.is_empty() && d.require_mention.is_none() && !d.public);
        let s: PluginSettings = toml::from_str(
            r#"dm_policy = "allowlist"
allow_from = ["123", "456"]
group_policy = "open"
require_mention = false
public = true"#,
        )
        .unwrap();
        assert_eq!(s.dm_policy, DmPolicy::Allowlist);
        assert_eq!(s.allow_from, ["123", "456"]);
        assert_eq!(s.group_policy, GroupPolicy::Open);
        assert_eq!(s.require_mention, Some(false));
        assert!(s.public);
        assert!(toml::from_str::<PluginSettings>(r#"dm_policy = "everyone""#).is_err());
    }

    #[test]
    fn test_channels_take_pushes_from_loopback_only_unless_public() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo2: IpAddr = "127.3.4.5".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let remote_mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        for ip in [lo, lo2, lo6, mapped] {
            assert!(push_allowed(true, false, Some(ip)), "{ip}");
        }
        for ip in [remote, remote_mapped] {
            assert!(!push_allowed(true, false, Some(ip)), "{ip}");
            assert!(push_allowed(true, true, Some(ip)), "{ip}");
            assert!(push_allowed(false, false, Some(ip)), "{ip}");
        }
        assert!(!push_allowed(true, false, None));
    }
}
