//! `echo-v01`: the bundled echo channel exactly as it was built against
//! `pincer:plugin@0.1.0` (git `main~1:plugins/echo`), kept as a fixture so the
//! host's tests load a real old-contract component next to the 0.2.0 echo.
//! It links `wit/v0.1` through the vendored 0.1.0 SDK pieces in
//! `pincer_sdk/`, never the current SDK. Do not port it. The original
//! module comment follows.
//!
//! `echo`: a channel that needs no external service.
//!
//! Inbound: POST `{"conversation": "c1", "sender": "u1", "text": "hi", "id": "m1"}`
//! (`id` optional) to the channel's webhook route. Outbound: every sent or edited
//! message is stored under `sent/<id>` in the plugin's key-value store and, when
//! `reply_url` is configured, POSTed there as JSON.

// Added to the original: the vendored 0.1.0 SDK, and leave its code as it was.
#![allow(clippy::collapsible_if)]
mod pincer_sdk;

use std::cell::RefCell;

use pincer_sdk::{
    Capabilities, Channel, Config, Error, InboundMessage, OutboundMessage, ReceiveMode,
    WebhookRequest, WebhookResponse, clock, http, kv,
};
use serde_json::{Value, json};

thread_local! {
    static REPLY_URL: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Echo;

impl Echo {
    fn next_id() -> Result<String, Error> {
        let n = kv::get_string("next_id")?
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1);
        kv::set_string("next_id", &(n + 1).to_string())?;
        Ok(format!("echo-{n}"))
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

impl Channel for Echo {
    fn name() -> String {
        "echo".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            mode: ReceiveMode::Webhook,
            edit: true,
            typing: false,
            max_message_length: 4096,
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let url = config.get("reply_url").map(str::to_string);
        if let Some(u) = &url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::config("reply_url must be an http(s) URL"));
            }
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
            Err(e) => {
                return Ok(pincer_sdk::webhook_json(
                    400,
                    &json!({"error": format!("invalid JSON: {e}")}),
                    vec![],
                ));
            }
        };
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(conversation), Some(text)) = (field("conversation"), field("text")) else {
            return Ok(pincer_sdk::webhook_json(
                400,
                &json!({"error": "`conversation` and `text` are required"}),
                vec![],
            ));
        };
        let id = match field("id") {
            Some(id) => id,
            None => Self::next_id()?,
        };
        let message = InboundMessage {
            id: id.clone(),
            conversation,
            sender: field("sender").unwrap_or_else(|| "anonymous".into()),
            sender_name: field("sender_name"),
            text,
            timestamp: clock::now_ms(),
        };
        Ok(pincer_sdk::webhook_json(
            200,
            &json!({"ok": true, "id": id}),
            vec![message],
        ))
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let id = Self::next_id()?;
        let record = json!({
            "id": id,
            "conversation": message.conversation,
            "text": message.text,
            "reply_to": message.reply_to,
            "edited": false,
        });
        kv::set_json(&format!("sent/{id}"), &record)?;
        Self::deliver(&record)?;
        Ok(id)
    }

    fn edit(conversation: String, message_id: String, text: String) -> Result<(), Error> {
        let key = format!("sent/{message_id}");
        if kv::get(&key)?.is_none() {
            return Err(Error::permanent(format!("no message {message_id}")));
        }
        let record = json!({
            "id": message_id,
            "conversation": conversation,
            "text": text,
            "edited": true,
        });
        kv::set_json(&key, &record)?;
        Self::deliver(&record)
    }
}

pincer_sdk::export_channel!(Echo);
