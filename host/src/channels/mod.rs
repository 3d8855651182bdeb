//! Running channel plugins.
//!
//! Each loaded channel gets a [`ChannelRunner`]: a receiver task (for
//! poll-mode channels: `poll` in a loop on its own instance) and a small pool
//! of interchangeable instances for `send`, `edit` and `handle-webhook`, so a
//! send never waits behind a long poll. A channel's old receiver is always
//! stopped (and awaited) before a new one starts, so one channel never has
//! two receivers. Inbound messages are deduplicated by platform id, checked
//! against the channel's access policy ([`access`], with sender pairing in
//! [`pairing`]) and, when allowed, published to subscribers of
//! [`ChannelManager::subscribe_inbound`]. Replies and notices go out through
//! [`reply`]. Inbound files are fetched through the plugin by
//! [`attachments`]. Pushes are verified by the host ([`verify`]) before a plugin
//! sees them.

pub mod access;
pub mod attachments;
pub mod chunk;
pub mod pairing;
pub mod reply;
mod runner;
pub mod stream;
pub mod typing;
pub mod verify;

pub use access::AccessGate;
pub use runner::{ChannelRunner, ChannelState, ChannelStatus};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::plugins::bindings::{
    ChatType, InboundMessage, OutboundMessage, WebhookRequest, WebhookResponse,
};
use crate::plugins::{CallError, PluginRegistry, PluginVersion};
use crate::store::SharedPairing;

/// A message received by a channel.
#[derive(Debug, Clone, Serialize)]
pub struct Inbound {
    /// The channel it came in on.
    pub channel: String,
    /// Platform message id.
    pub id: String,
    /// Conversation id on the platform.
    pub conversation: String,
    /// Sender id.
    pub sender: String,
    /// Sender display name.
    pub sender_name: Option<String>,
    /// Direct chat or group (0.1.0 plugins: always direct). Channels
    /// (broadcast) count as groups for the access policy; replies stream by
    /// draft only in direct chats.
    pub chat: access::ChatKind,
    /// The bot was mentioned or replied to (what `require_mention` asks).
    pub mentioned: bool,
    /// Thread or forum topic inside the conversation (replies go there).
    pub thread: Option<String>,
    /// Text.
    pub text: String,
    /// Platform timestamp (Unix ms).
    pub timestamp: u64,
    /// Files that came with it (downloaded when its run starts; see
    /// [`attachments`]).
    pub attachments: Vec<attachments::InboundAttachment>,
}

impl Inbound {
    fn from_wit(channel: &str, m: InboundMessage) -> Self {
        Inbound {
            channel: channel.to_string(),
            id: m.id,
            conversation: m.conversation,
            sender: m.sender,
            sender_name: m.sender_name,
            chat: match m.chat_type {
                ChatType::Direct => access::ChatKind::Direct,
                ChatType::Group | ChatType::Channel => access::ChatKind::Group,
            },
            mentioned: m.mentioned || m.reply_to.as_ref().is_some_and(|r| r.from_bot_self),
            thread: m.thread,
            text: m.text,
            timestamp: m.timestamp,
            attachments: m
                .attachments
                .into_iter()
                .map(attachments::InboundAttachment::from_wit)
                .collect(),
        }
    }
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No such channel.
    #[error("no channel named `{0}`")]
    Unknown(String),
    /// The channel is reloading or stopped; try again later (HTTP 503).
    #[error("channel `{0}` is not running")]
    Unavailable(String),
    /// The plugin call failed.
    #[error("channel `{channel}`: {error}")]
    Call { channel: String, error: CallError },
    /// A push failed host-side verification; the plugin was not called.
    #[error("channel `{channel}`: push rejected ({}): {rejection}", rejection.reason.as_str())]
    Rejected {
        /// The channel.
        channel: String,
        /// Why.
        rejection: verify::Rejection,
    },
}

/// All channel runners.
pub struct ChannelManager {
    registry: Arc<PluginRegistry>,
    runners: Mutex<BTreeMap<String, Arc<ChannelRunner>>>,
    inbound: broadcast::Sender<Inbound>,
    access: Arc<AccessGate>,
    replies: Arc<reply::ReplyStats>,
}

impl ChannelManager {
    /// A manager for the channels in `registry`, with pairing state in
    /// `pairing` (dated by the registry's clock).
    pub fn new(registry: Arc<PluginRegistry>, pairing: SharedPairing) -> Arc<Self> {
        let clock = registry.config().clock.clone();
        Arc::new(ChannelManager {
            registry,
            runners: Mutex::new(BTreeMap::new()),
            inbound: broadcast::channel(4096).0,
            access: Arc::new(AccessGate::new(pairing::Pairing::new(pairing, clock))),
            replies: Arc::default(),
        })
    }

    /// Counters of the reply path (typing calls, plain resends, fallbacks).
    pub fn reply_stats(&self) -> &Arc<reply::ReplyStats> {
        &self.replies
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    /// Sender pairing (list, approve, dismiss) for operators.
    pub fn pairing(&self) -> &pairing::Pairing {
        self.access.pairing()
    }

    /// Receive every inbound message the access policy allowed, from now on.
    pub fn subscribe_inbound(&self) -> broadcast::Receiver<Inbound> {
        self.inbound.subscribe()
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<ChannelRunner>>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runner of channel `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ChannelRunner>> {
        self.runners().get(name).cloned()
    }

    /// Every runner, by name.
    pub fn all(&self) -> Vec<Arc<ChannelRunner>> {
        self.runners().values().cloned().collect()
    }

    /// A version of channel `version.name` was loaded: (re)start it on that
    /// version. The old receiver is stopped first.
    pub async fn on_loaded(&self, version: Arc<PluginVersion>) {
        let runner = {
            let mut runners = self.runners();
            runners
                .entry(version.name.clone())
                .or_insert_with(|| {
                    ChannelRunner::new(
                        version.name.clone(),
                        self.registry.clone(),
                        self.inbound.clone(),
                        self.access.clone(),
                    )
                })
                .clone()
        };
        if version.settings.autostart == Some(false) {
            runner.stop().await;
            return;
        }
        if let Err(e) = runner.start().await {
            tracing::error!(channel = %version.name, error = %e, "channel failed to start");
        }
    }

    /// Channel `name` was unloaded: stop and forget it.
    pub async fn on_removed(&self, name: &str) {
        let runner = self.runners().remove(name);
        if let Some(r) = runner {
            r.stop().await;
        }
    }

    fn runner(&self, name: &str) -> Result<Arc<ChannelRunner>, ChannelError> {
        self.get(name)
            .ok_or_else(|| ChannelError::Unknown(name.to_string()))
    }

    /// Send a message through channel `name`; returns the platform message id.
    pub async fn send(&self, name: &str, message: OutboundMessage) -> Result<String, ChannelError> {
        self.runner(name)?.send(&message).await
    }

    /// Edit a message sent earlier through channel `name`.
    pub async fn edit(
        &self,
        name: &str,
        conversation: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.runner(name)?
            .edit(conversation, message_id, text)
            .await
    }

    /// Hand a webhook request to channel `name`; inbound messages it carries
    /// are published, and the plugin's response is returned for the platform.
    pub async fn webhook(
        &self,
        name: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, ChannelError> {
        self.webhook_from(name, request, None).await
    }

    /// As [`webhook`](Self::webhook), for a push from `remote` (named in
    /// the log when verification refuses it).
    pub async fn webhook_from(
        &self,
        name: &str,
        request: WebhookRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<WebhookResponse, ChannelError> {
        self.runner(name)?.webhook(&request, remote).await
    }

    /// Whether a push to channel `name` from `peer` may reach the plugin
    /// (see [`access::push_allowed`]); unknown channels are left to the
    /// caller's 404.
    pub fn push_allowed(&self, name: &str, peer: Option<std::net::IpAddr>) -> bool {
        match self.registry.current(name) {
            Some(v) => access::push_allowed(v.manifest.test_only, v.settings.public, peer),
            None => true,
        }
    }

    /// Start channel `name` (operator action).
    pub async fn start(&self, name: &str) -> Result<(), ChannelError> {
        self.runner(name)?.start().await
    }

    /// Stop channel `name` (operator action; the monitor leaves it stopped).
    pub async fn stop(&self, name: &str) -> Result<(), ChannelError> {
        self.runner(name)?.stop().await;
        Ok(())
    }
}
