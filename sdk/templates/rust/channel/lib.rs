//! `{{name}}`: a Pincer channel. Text POSTed to its webhook
//! (`/channels/{{name}}/webhook?conversation=c1&sender=u1`) comes in as a
//! message; every reply the gateway sends is logged and kept in the plugin's
//! key-value store under `sent/<id>`. Edit `handle_webhook` and `send` to talk
//! to a real platform.

wit_bindgen::generate!({ path: "wit", world: "channel-plugin" });

use exports::pincer::plugin::channel::{
    Capabilities, ChatTarget, ChatType, DownloadRequest, Guest as Channel, InboundMessage,
    OutboundMessage, PollBatch, ReceiveMode, StreamStyle, TextFormat, WebhookRequest,
    WebhookResponse,
};
use exports::pincer::plugin::plugin::Guest as Plugin;
use pincer::plugin::types::Error;
use pincer::plugin::{clock, kv, log};

struct Component;

/// The value of `key` in a query string (no percent-decoding).
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(format!("{{name}} does not support {what}"))
}

impl Plugin for Component {
    fn name() -> String {
        "{{name}}".into()
    }
    fn last_activity() -> u64 {
        clock::now_ms()
    }
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

impl Channel for Component {
    fn describe() -> Capabilities {
        Capabilities {
            mode: ReceiveMode::Webhook,
            edit: false,
            typing: false,
            max_message_length: 4096,
            streaming: StreamStyle::FinalOnly,
            min_edit_interval_ms: 0,
            typing_ttl_ms: 0,
            read_receipts: false,
            attachments: false,
        }
    }

    fn start(_config: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }

    fn poll(_cursor: Option<String>, _wait_ms: u32) -> Result<PollBatch, Error> {
        Err(unsupported("polling (it receives by webhook)"))
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        let text = String::from_utf8(request.body)
            .map_err(|_| Error::Permanent("the body must be UTF-8 text".into()))?;
        let id = kv::increment("next_id", 1)?;
        let message = InboundMessage {
            id: format!("in-{id}"),
            conversation: query_param(&request.query, "conversation").unwrap_or("default".into()),
            chat_type: ChatType::Direct,
            thread: None,
            sender: query_param(&request.query, "sender").unwrap_or("user".into()),
            sender_name: None,
            sender_is_bot: false,
            mentioned: false,
            reply_to: None,
            text,
            attachments: vec![],
            reaction: None,
            timestamp: clock::now_ms(),
        };
        Ok(WebhookResponse {
            status: 200,
            headers: vec![],
            body: b"ok".to_vec(),
            messages: vec![message],
            statuses: vec![],
        })
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let id = format!("out-{}", kv::increment("next_id", 1)?);
        log::write(
            log::Level::Info,
            "reply",
            &[
                ("conversation".into(), message.conversation.clone()),
                ("text".into(), message.text.clone()),
            ],
        );
        kv::set(&format!("sent/{id}"), message.text.as_bytes())?;
        Ok(id)
    }

    fn edit(_c: String, _m: String, _t: String, _f: TextFormat) -> Result<(), Error> {
        Err(unsupported("editing"))
    }
    fn draft(_t: ChatTarget, _d: u64, _text: String) -> Result<(), Error> {
        Err(unsupported("drafts"))
    }
    fn typing(_t: ChatTarget) -> Result<(), Error> {
        Err(unsupported("typing indicators"))
    }
    fn mark_read(_t: ChatTarget) -> Result<(), Error> {
        Err(unsupported("read receipts"))
    }
    fn fetch_attachment(_handle: String) -> Result<DownloadRequest, Error> {
        Err(unsupported("attachments"))
    }
}

export!(Component);
