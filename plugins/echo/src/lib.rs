//! `echo`: a channel that needs no external service.
//!
//! Inbound: POST `{"conversation": "c1", "sender": "u1", "text": "hi", "id": "m1"}`
//! to the channel's webhook route. `id` is optional (a unique one is drawn
//! from an atomic counter); so are `sender_name` and the conversation facts
//! `chat_type` (`direct`, the default, `group` or `channel`), `thread`,
//! `mentioned`, `sender_is_bot` and `reply_to` (the id of the message this one
//! answers).
//!
//! Outbound: every sent or edited message is stored under `sent/<id>` in the
//! plugin's key-value store and, when `reply_url` is configured, POSTed there
//! as JSON (`id`, `conversation`, `thread`, `text`, `format`, `reply_to`,
//! `attachments`, `edited`).

use std::cell::RefCell;

use pincer_sdk::{
    Capabilities, Channel, ChatType, Config, Error, InboundMessage, OutboundMessage, ReceiveMode,
    StreamStyle, TextFormat, WebhookRequest, WebhookResponse, http, kv,
};
use serde_json::{Value, json};

thread_local! {
    static REPLY_URL: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Echo;

impl Echo {
    /// A fresh id, unique across every instance (inbound and outbound share it).
    fn next_id() -> Result<String, Error> {
        Ok(format!("echo-{}", kv::increment("next_id", 1)?))
    }

    fn deliver(record: &Value) -> Result<(), Error> {
        let url = REPLY_URL.with(|u| u.borrow().clone());
        if let Some(url) = url {
            let resp = http::Request::post(&url).json(record)?.send()?;
            if resp.status >= 300 {
                return Err(Error::transient(format!(
                    "reply_url answered {}",
                    resp.status
                )));
            }
        }
        Ok(())
    }
}

fn format_name(format: TextFormat) -> &'static str {
    match format {
        TextFormat::Plain => "plain",
        TextFormat::Markdown => "markdown",
    }
}

fn bad_request(message: String) -> WebhookResponse {
    pincer_sdk::webhook_json(400, &json!({ "error": message }), vec![])
}

impl Channel for Echo {
    fn name() -> String {
        "echo".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            edit: true,
            max_message_length: 4096,
            streaming: StreamStyle::Edit,
            ..pincer_sdk::capabilities(ReceiveMode::Webhook)
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let url = config.get("reply_url").map(str::to_string);
        if let Some(u) = &url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(Error::config("reply_url must be an http(s) URL"));
        }
        REPLY_URL.with(|r| *r.borrow_mut() = url);
        Ok(())
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        if request.method != "POST" {
            return Ok(pincer_sdk::webhook_json(
                405,
                &json!({"error": "POST a JSON message"}),
                vec![],
            ));
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => return Ok(bad_request(format!("invalid JSON: {e}"))),
        };
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let flag = |k: &str| body.get(k).and_then(Value::as_bool).unwrap_or(false);
        let (Some(conversation), Some(text)) = (field("conversation"), field("text")) else {
            return Ok(bad_request("`conversation` and `text` are required".into()));
        };
        let chat_type = match field("chat_type").as_deref() {
            None | Some("direct") => ChatType::Direct,
            Some("group") => ChatType::Group,
            Some("channel") => ChatType::Channel,
            Some(other) => {
                return Ok(bad_request(format!(
                    "`chat_type` must be direct, group or channel, not {other:?}"
                )));
            }
        };
        let id = match field("id") {
            Some(id) => id,
            None => Self::next_id()?,
        };
        let sender = field("sender").unwrap_or_else(|| "anonymous".into());
        let message = InboundMessage {
            chat_type,
            thread: field("thread"),
            sender_name: field("sender_name"),
            sender_is_bot: flag("sender_is_bot"),
            mentioned: flag("mentioned"),
            reply_to: field("reply_to").map(|id| pincer_sdk::RepliedMessage {
                id,
                sender: None,
                text: None,
                from_bot_self: false,
            }),
            ..pincer_sdk::inbound(&id, &conversation, &sender, &text)
        };
        Ok(pincer_sdk::webhook_json(
            200,
            &json!({"ok": true, "id": id}),
            vec![message],
        ))
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let id = Self::next_id()?;
        let attachments: Vec<Value> = message
            .attachments
            .iter()
            .map(|a| json!({"file_name": a.file_name, "mime_type": a.mime_type, "size": a.size, "caption": a.caption}))
            .collect();
        let record = json!({
            "id": id,
            "conversation": message.conversation,
            "thread": message.thread,
            "text": message.text,
            "format": format_name(message.format),
            "reply_to": message.reply_to,
            "attachments": attachments,
            "edited": false,
        });
        kv::set_json(&format!("sent/{id}"), &record)?;
        Self::deliver(&record)?;
        Ok(id)
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        let key = format!("sent/{message_id}");
        if kv::get(&key)?.is_none() {
            return Err(Error::permanent(format!("no message {message_id}")));
        }
        let record = json!({
            "id": message_id,
            "conversation": conversation,
            "text": text,
            "format": format_name(format),
            "edited": true,
        });
        kv::set_json(&key, &record)?;
        Self::deliver(&record)
    }
}

pincer_sdk::export_channel!(Echo);
