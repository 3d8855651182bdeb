//! Conversions between contract versions: plugins built against
//! `pincer:plugin@0.1.0` are driven through the 0.2.0 types the host uses.
//!
//! What 0.1.0 cannot express is filled with the neutral value: inbound
//! messages are direct chats with no thread, mention, reply, attachment or
//! reaction; a 0.1.0 plugin keeps its own poll cursor (the host's is always
//! `None`); outbound threads, formats and attachments are dropped (the host
//! never sends attachments to a channel whose capabilities say it has none,
//! and 0.1.0 capabilities never do); `draft`, `mark-read` and
//! `fetch-attachment` are unsupported.

use super::bindings::{self, v01};

use v01::channel::exports::pincer::plugin::channel as c1;
use v01::channel::pincer::plugin::types as t1;

impl From<t1::Error> for bindings::WitError {
    fn from(e: t1::Error) -> Self {
        use bindings::WitError as E;
        match e {
            t1::Error::Config(m) => E::Config(m),
            t1::Error::Auth(m) => E::Auth(m),
            t1::Error::Transient(m) => E::Transient(m),
            t1::Error::RateLimited(r) => E::RateLimited(bindings::RateLimit {
                retry_after_ms: r.retry_after_ms,
                message: r.message,
            }),
            t1::Error::Permanent(m) => E::Permanent(m),
            t1::Error::Unsupported(m) => E::Unsupported(m),
        }
    }
}

impl From<bindings::WitError> for t1::Error {
    fn from(e: bindings::WitError) -> Self {
        use bindings::WitError as E;
        match e {
            E::Config(m) => t1::Error::Config(m),
            E::Auth(m) => t1::Error::Auth(m),
            E::Transient(m) => t1::Error::Transient(m),
            E::RateLimited(r) => t1::Error::RateLimited(t1::RateLimit {
                retry_after_ms: r.retry_after_ms,
                message: r.message,
            }),
            E::Permanent(m) | E::Formatting(m) => t1::Error::Permanent(m),
            E::Unsupported(m) => t1::Error::Unsupported(m),
        }
    }
}

/// 0.1.0 capabilities in 0.2.0 terms: replies stream by edits if the plugin
/// can edit, typing shows once per call.
pub fn capabilities(c: c1::Capabilities) -> bindings::Capabilities {
    bindings::Capabilities {
        mode: match c.mode {
            c1::ReceiveMode::Poll => bindings::ReceiveMode::Poll,
            c1::ReceiveMode::Webhook => bindings::ReceiveMode::Webhook,
        },
        edit: c.edit,
        typing: c.typing,
        max_message_length: c.max_message_length,
        streaming: if c.edit {
            bindings::StreamStyle::Edit
        } else {
            bindings::StreamStyle::FinalOnly
        },
        min_edit_interval_ms: 0,
        typing_ttl_ms: 0,
        read_receipts: false,
        attachments: false,
    }
}

/// A 0.1.0 inbound message: a direct chat with text only.
pub fn inbound(m: c1::InboundMessage) -> bindings::InboundMessage {
    bindings::InboundMessage {
        id: m.id,
        conversation: m.conversation,
        chat_type: bindings::ChatType::Direct,
        thread: None,
        sender: m.sender,
        sender_name: m.sender_name,
        sender_is_bot: false,
        mentioned: false,
        reply_to: None,
        text: m.text,
        attachments: Vec::new(),
        reaction: None,
        timestamp: m.timestamp,
    }
}

/// A 0.2.0 outbound message as 0.1.0 carries it (text, conversation, reply).
pub fn outbound(m: &bindings::OutboundMessage) -> c1::OutboundMessage {
    c1::OutboundMessage {
        conversation: m.conversation.clone(),
        text: m.text.clone(),
        reply_to: m.reply_to.clone(),
    }
}

/// A webhook request without the verification note 0.1.0 has no field for.
pub fn webhook_request(r: &bindings::WebhookRequest) -> c1::WebhookRequest {
    c1::WebhookRequest {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
}

/// A 0.1.0 webhook response (no delivery statuses).
pub fn webhook_response(r: c1::WebhookResponse) -> bindings::WebhookResponse {
    bindings::WebhookResponse {
        status: r.status,
        headers: r.headers,
        body: r.body,
        messages: r.messages.into_iter().map(inbound).collect(),
        statuses: Vec::new(),
    }
}

/// A 0.1.0 tool description.
pub fn tool_info(t: v01::tool::exports::pincer::plugin::tool::ToolInfo) -> bindings::ToolInfo {
    bindings::ToolInfo {
        name: t.name,
        description: t.description,
        parameters_schema: t.parameters_schema,
    }
}

/// A 0.1.0 log level.
pub fn level(
    l: v01::channel::pincer::plugin::log::Level,
) -> bindings::v02::channel::pincer::plugin::log::Level {
    use bindings::v02::channel::pincer::plugin::log::Level as L2;
    use v01::channel::pincer::plugin::log::Level as L1;
    match l {
        L1::Trace => L2::Trace,
        L1::Debug => L2::Debug,
        L1::Info => L2::Info,
        L1::Warn => L2::Warn,
        L1::Error => L2::Error,
    }
}
