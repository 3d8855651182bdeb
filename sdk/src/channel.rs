//! The [`Channel`] trait a messaging channel implements, the contract's
//! channel types, and helpers that fill their many fields with defaults.

use crate::Error;

pub use crate::bindings::channel::exports::pincer::plugin::channel::{
    Attachment, AttachmentKind, Capabilities, ChatTarget, ChatType, DeliveryState, DeliveryStatus,
    DownloadRequest, InboundMessage, OutboundAttachment, OutboundMessage, PollBatch, Reaction,
    ReceiveMode, RepliedMessage, StreamStyle, TextFormat, WebhookRequest, WebhookResponse,
};

/// Capabilities with everything optional switched off: no `edit`, `typing`,
/// read receipts or attachments, no known length limit, replies sent as one
/// final message ([`StreamStyle::FinalOnly`]), at most one edit per second,
/// typing shown once. Switch on what the channel supports with struct update
/// syntax:
///
/// ```
/// use pincer_sdk::{Capabilities, ReceiveMode, StreamStyle};
///
/// let caps = Capabilities {
///     edit: true,
///     typing: true,
///     max_message_length: 4096,
///     streaming: StreamStyle::Edit,
///     typing_ttl_ms: 5_000,
///     ..pincer_sdk::capabilities(ReceiveMode::Poll)
/// };
/// assert!(!caps.read_receipts);
/// assert_eq!(caps.min_edit_interval_ms, 1_000);
/// ```
pub fn capabilities(mode: ReceiveMode) -> Capabilities {
    Capabilities {
        mode,
        edit: false,
        typing: false,
        max_message_length: 0,
        streaming: StreamStyle::FinalOnly,
        min_edit_interval_ms: 1_000,
        typing_ttl_ms: 0,
        read_receipts: false,
        attachments: false,
    }
}

/// An inbound text message with the facts of a plain direct chat: no thread,
/// no sender name, not from a bot, not a mention, no reply, attachments or
/// reaction, stamped with the host's clock. Set the rest with struct update
/// syntax:
///
/// ```no_run
/// use pincer_sdk::{ChatType, InboundMessage};
///
/// let msg = InboundMessage {
///     chat_type: ChatType::Group,
///     thread: Some("7".into()),
///     mentioned: true,
///     sender_name: Some("Ada".into()),
///     ..pincer_sdk::inbound("1001", "-100123", "42", "@bot what time is it?")
/// };
/// # let _ = msg;
/// ```
pub fn inbound(id: &str, conversation: &str, sender: &str, text: &str) -> InboundMessage {
    InboundMessage {
        id: id.to_string(),
        conversation: conversation.to_string(),
        chat_type: ChatType::Direct,
        thread: None,
        sender: sender.to_string(),
        sender_name: None,
        sender_is_bot: false,
        mentioned: false,
        reply_to: None,
        text: text.to_string(),
        attachments: Vec::new(),
        reaction: None,
        timestamp: crate::clock::now_ms(),
    }
}

/// A JSON webhook answer with `status`, carrying `messages` to the host (add
/// delivery statuses with struct update syntax: `WebhookResponse { statuses,
/// ..webhook_json(200, &body, messages) }`).
pub fn webhook_json(
    status: u16,
    body: &serde_json::Value,
    messages: Vec<InboundMessage>,
) -> WebhookResponse {
    WebhookResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        messages,
        statuses: Vec::new(),
    }
}

/// A plain-text webhook answer with `status` that carries nothing to the host.
pub fn webhook_text(status: u16, text: &str) -> WebhookResponse {
    WebhookResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: text.as_bytes().to_vec(),
        messages: Vec::new(),
        statuses: Vec::new(),
    }
}

/// The operator's configuration for one account of a channel: `key = value`
/// entries, including `account` (the account id).
#[derive(Debug, Clone, Default)]
pub struct Config(pub Vec<(String, String)>);

impl Config {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }
    /// The value of `key`, or an [`Error::Config`] naming it.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::config(format!("missing config key `{key}`")))
    }
    /// The value of `key` parsed as `T` (`None` when not set), or an
    /// [`Error::Config`] naming the key when it does not parse.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|e| Error::config(format!("config key `{key}` = {v:?}: {e}")))
            })
            .transpose()
    }
    /// The account this instance serves (the `account` entry), if the host said.
    pub fn account(&self) -> Option<&str> {
        self.get("account")
    }
}

/// A messaging channel. Register it with [`crate::export_channel!`].
///
/// One instance serves one account; the host may run several instances of it
/// side by side (one receiving, others sending or handling pushes) and may
/// replace any of them at any time, so keep durable state in [`crate::kv`]
/// (with its atomic operations), not in memory. `start` is called on every
/// instance before any other channel call.
///
/// Only `name`, `capabilities`, `start` and `send` are required. A poll
/// channel implements [`poll`](Channel::poll), a push channel
/// [`handle_webhook`](Channel::handle_webhook); every other operation answers
/// [`Error::Unsupported`] by default, and the host only calls what
/// [`capabilities`](Channel::capabilities) says works.
///
/// ```no_run
/// use pincer_sdk::{Capabilities, Channel, Config, Error, OutboundMessage, PollBatch, ReceiveMode};
///
/// struct Loopback;
///
/// impl Channel for Loopback {
///     fn name() -> String {
///         "loopback".into()
///     }
///     fn capabilities() -> Capabilities {
///         pincer_sdk::capabilities(ReceiveMode::Poll)
///     }
///     fn start(_config: Config) -> Result<(), Error> {
///         Ok(())
///     }
///     fn poll(cursor: Option<String>, _wait_ms: u32) -> Result<PollBatch, Error> {
///         // Nothing new: keep the cursor the host passed.
///         let _ = cursor;
///         Ok(PollBatch { messages: vec![], cursor: None })
///     }
///     fn send(message: OutboundMessage) -> Result<String, Error> {
///         Ok(format!("out-{}", pincer_sdk::kv::increment("sent", 1)?))
///     }
/// }
///
/// pincer_sdk::export_channel!(Loopback);
/// # fn main() {}
/// ```
pub trait Channel {
    /// The channel's name (`telegram`, `echo`, ...).
    fn name() -> String;
    /// What the channel supports; called once per loaded version. Start from
    /// [`capabilities`](crate::capabilities) for sensible defaults.
    fn capabilities() -> Capabilities;
    /// Validate the account's configuration and prepare the instance (check
    /// credentials, register a webhook). Return [`Error::Config`] or
    /// [`Error::Auth`] when the operator has to fix something.
    fn start(config: Config) -> Result<(), Error>;
    /// Poll mode: wait up to `wait_ms` for messages after `cursor` (`None` the
    /// first time) and return them with the cursor to pass next time (`None`
    /// keeps the current one); an empty batch on timeout. The host commits the
    /// batch and its cursor together, so never store the cursor yourself.
    fn poll(cursor: Option<String>, wait_ms: u32) -> Result<PollBatch, Error> {
        let _ = (cursor, wait_ms);
        Err(Error::unsupported("poll"))
    }
    /// Webhook mode: handle one push the host has already verified as the
    /// manifest's `[webhook.verify]` asks (`request.verified` names the
    /// scheme). Return what to answer the platform and what the push carried.
    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        let _ = request;
        Err(Error::unsupported("handle-webhook"))
    }
    /// Deliver one message (already split to `max_message_length`); returns
    /// the platform's message id. For [`TextFormat::Markdown`], render it as
    /// the platform shows it, or return [`Error::Formatting`] when the
    /// platform rejects the result so the host resends it as plain text.
    fn send(message: OutboundMessage) -> Result<String, Error>;
    /// Replace the text of a message sent earlier (streaming replies). Treat
    /// the platform's "not modified" answer as success.
    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        let _ = (conversation, message_id, text, format);
        Err(Error::unsupported("edit"))
    }
    /// Show or update native draft `draft_id` in a direct chat
    /// ([`StreamStyle::Draft`]); the host finishes it with `send`.
    fn draft(target: ChatTarget, draft_id: u64, text: String) -> Result<(), Error> {
        let _ = (target, draft_id, text);
        Err(Error::unsupported("draft"))
    }
    /// Show a typing indicator in the target's conversation.
    fn typing(target: ChatTarget) -> Result<(), Error> {
        let _ = target;
        Err(Error::unsupported("typing"))
    }
    /// Mark the target's inbound message (and earlier ones) read.
    fn mark_read(target: ChatTarget) -> Result<(), Error> {
        let _ = target;
        Err(Error::unsupported("mark-read"))
    }
    /// Turn an inbound attachment's handle into a download request (Telegram
    /// `getFile`, WhatsApp's media-id lookup); the host downloads the file
    /// itself, with secrets filled in and a size cap.
    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        let _ = handle;
        Err(Error::unsupported("fetch-attachment"))
    }
    /// Unix ms of the last contact with the platform, 0 for never. The
    /// default is the SDK's [`crate::touch`] record, which the export macro
    /// updates after every successful poll (even an empty one), push, send,
    /// edit, draft, typing and read receipt.
    fn last_activity() -> u64 {
        crate::last_touched()
    }
    /// Reset connections and state (called by the health monitor on a stale
    /// channel); the default has nothing to reset.
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_parses_and_names_missing_keys() {
        let c = Config(vec![
            ("account".into(), "bot2".into()),
            ("wait".into(), "30".into()),
            ("bad".into(), "x".into()),
        ]);
        assert_eq!(c.account(), Some("bot2"));
        assert_eq!(c.get_or("mode", "poll"), "poll");
        assert_eq!(c.parse::<u32>("wait").unwrap(), Some(30));
        assert_eq!(c.parse::<u32>("absent").unwrap(), None);
        assert!(matches!(c.parse::<u32>("bad"), Err(Error::Config(m)) if m.contains("`bad`")));
        assert!(matches!(c.require("token"), Err(Error::Config(m)) if m.contains("`token`")));
    }

    #[test]
    fn webhook_helpers_set_content_type_and_carry_nothing_extra() {
        let r = webhook_json(200, &serde_json::json!({"ok": true}), vec![]);
        assert_eq!(r.body, br#"{"ok":true}"#);
        assert!(r.statuses.is_empty());
        let t = webhook_text(403, "no");
        assert_eq!(t.headers[0].1, "text/plain; charset=utf-8");
        assert!(t.messages.is_empty());
    }
}
