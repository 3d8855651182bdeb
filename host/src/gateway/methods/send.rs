//! `send`: an operator sends a text through a channel account over the
//! protocol (OpenClaw's method: `{channel, accountId?, to, message,
//! threadId?, replyTo?}`; `operator.write`). Files go over HTTP
//! (`POST /v1/channels/{name}/send`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::params;
use crate::channels::ChannelError;
use crate::gateway::Gateway;
use crate::plugins::bindings::{OutboundMessage, TextFormat};
use crate::protocol::errors::ErrorShape;

/// `send` params.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    /// Channel plugin name.
    pub channel: String,
    /// The account (default `default`).
    #[serde(default)]
    pub account_id: Option<String>,
    /// Conversation (chat) id on the platform.
    pub to: String,
    /// Text (Markdown).
    pub message: String,
    /// Thread or forum topic.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Platform message id to reply to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// Handle `send`.
pub async fn send(gw: &Gateway, p: &Value) -> Result<Value, ErrorShape> {
    let p: SendParams = params("send", p)?;
    if p.to.is_empty() || p.message.is_empty() {
        return Err(ErrorShape::invalid("`to` and `message` must not be empty"));
    }
    let key = super::plugins::account_key(&p.channel, p.account_id.as_deref())?;
    let message = OutboundMessage {
        conversation: p.to,
        thread: p.thread_id,
        text: p.message,
        format: TextFormat::Markdown,
        reply_to: p.reply_to,
        attachments: Vec::new(),
    };
    match gw.runtime.channels.send(&key, message).await {
        Ok(id) => Ok(json!({
            "ok": true,
            "channel": p.channel,
            "accountId": crate::channels::account::split(&key).1,
            "messageId": id,
        })),
        Err(e @ ChannelError::Unknown(_)) => Err(ErrorShape::invalid(e.to_string())),
        Err(e) => {
            tracing::warn!(channel = %key, error = %e, "operator send failed");
            Err(ErrorShape::unavailable(e.to_string()))
        }
    }
}
