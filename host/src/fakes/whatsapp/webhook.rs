//! Driving a WhatsApp receiver the way Meta does: documented webhook
//! payloads ([`Batch`]: text, image, audio, document, reaction, status
//! updates, several messages per POST, contacts with profile names),
//! `X-Hub-Signature-256` signing over the exact body bytes, and the result
//! of a push ([`PushAnswer`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{MediaRef, Shared};

/// `sha256=<hex HMAC-SHA256(app_secret, body)>`: the
/// `X-Hub-Signature-256` header value for `body`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(app_secret, body)))
}

/// Whether `header` is the valid `X-Hub-Signature-256` of `body` (constant
/// time).
pub fn verify(app_secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// How a push is signed.
#[derive(Debug, Clone, PartialEq)]
pub enum Signature {
    /// The correct `X-Hub-Signature-256`.
    Valid,
    /// No signature header.
    Missing,
    /// A well-formed signature with the wrong key.
    WrongKey,
    /// This exact header value.
    Header(String),
}

/// A WhatsApp user (a `contacts[]` entry and a message sender).
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// `wa_id` (the phone number in international format, digits only).
    pub wa_id: String,
    /// `profile.name`.
    pub name: String,
}

impl Contact {
    /// A user `wa_id` called `name`.
    pub fn new(wa_id: &str, name: &str) -> Contact {
        Contact {
            wa_id: wa_id.into(),
            name: name.into(),
        }
    }
}

/// The answer to a push.
#[derive(Debug, Clone)]
pub struct PushAnswer {
    /// HTTP status (0 if the request failed before an answer).
    pub status: u16,
    /// Body text (or the error).
    pub body: String,
    /// From sending to the answer.
    pub latency: Duration,
}

/// One webhook POST under construction: every message gets a fresh
/// `wamid` that the fake remembers as inbound (so read receipts and the
/// 24-hour window work against it).
pub struct Batch {
    shared: Arc<Shared>,
    contacts: Vec<Value>,
    messages: Vec<Value>,
    statuses: Vec<Value>,
    ids: Vec<String>,
}

/// A built push: the exact bytes (re-sent unchanged on redelivery) and the
/// ids of its messages, in order.
#[derive(Debug, Clone)]
pub struct WebhookPush {
    /// The JSON body as sent.
    pub body: Bytes,
    /// The `wamid`s of the batch's messages.
    pub message_ids: Vec<String>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Batch {
    pub(super) fn new(shared: Arc<Shared>) -> Batch {
        Batch {
            shared,
            contacts: Vec::new(),
            messages: Vec::new(),
            statuses: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn message(mut self, from: &Contact, kind: &str, body: Value, context: Option<&str>) -> Batch {
        let id = self.shared.new_inbound_id(&from.wa_id);
        if !self
            .contacts
            .iter()
            .any(|c| c["wa_id"] == from.wa_id.as_str())
        {
            self.contacts
                .push(json!({"profile": {"name": from.name}, "wa_id": from.wa_id}));
        }
        let mut m = json!({
            "from": from.wa_id,
            "id": id,
            "timestamp": now_unix().to_string(),
            "type": kind,
        });
        m[kind] = body;
        if let Some(c) = context {
            m["context"] = json!({"from": self.shared.cfg.display_phone_number, "id": c});
        }
        self.messages.push(m);
        self.ids.push(id);
        self
    }

    /// A text message.
    pub fn text(self, from: &Contact, body: &str) -> Batch {
        self.message(from, "text", json!({"body": body}), None)
    }

    /// A text message quoting message `quoted` (`context.id`).
    pub fn text_reply(self, from: &Contact, body: &str, quoted: &str) -> Batch {
        self.message(from, "text", json!({"body": body}), Some(quoted))
    }

    /// An image (media added with `add_media`), optionally captioned.
    pub fn image(self, from: &Contact, media: &MediaRef, caption: Option<&str>) -> Batch {
        let mut body = media_json(media);
        if let Some(c) = caption {
            body["caption"] = json!(c);
        }
        self.message(from, "image", body, None)
    }

    /// An audio message (`voice` = a recorded voice note).
    pub fn audio(self, from: &Contact, media: &MediaRef, voice: bool) -> Batch {
        let mut body = media_json(media);
        body["voice"] = json!(voice);
        self.message(from, "audio", body, None)
    }

    /// A document with its file name, optionally captioned.
    pub fn document(self, from: &Contact, media: &MediaRef, caption: Option<&str>) -> Batch {
        let mut body = media_json(media);
        body["filename"] = json!(media.file_name);
        if let Some(c) = caption {
            body["caption"] = json!(c);
        }
        self.message(from, "document", body, None)
    }

    /// A reaction to message `message_id` (an empty `emoji` removes it).
    pub fn reaction(self, from: &Contact, message_id: &str, emoji: &str) -> Batch {
        self.message(
            from,
            "reaction",
            json!({"message_id": message_id, "emoji": emoji}),
            None,
        )
    }

    /// Any message body of `kind` (e.g. `interactive`, `location`).
    pub fn other(self, from: &Contact, kind: &str, body: Value) -> Batch {
        self.message(from, kind, body, None)
    }

    /// A status update (`sent`, `delivered`, `read`, `failed`) of a message
    /// the business sent to `recipient`; `error_code` adds `errors[]` (for
    /// `failed`).
    pub fn status(
        mut self,
        message_id: &str,
        status: &str,
        recipient: &str,
        error_code: Option<i64>,
    ) -> Batch {
        let mut s = json!({
            "id": message_id,
            "status": status,
            "timestamp": now_unix().to_string(),
            "recipient_id": recipient,
        });
        if let Some(code) = error_code {
            let e = super::graph_error::GraphError::for_code(code);
            s["errors"] = json!([{"code": code, "title": e.message,
                "error_data": {"details": e.details.unwrap_or_default()}}]);
        }
        self.statuses.push(s);
        self
    }

    /// The payload as JSON.
    pub fn payload(&self) -> Value {
        let cfg = &self.shared.cfg;
        let mut value = json!({
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": cfg.display_phone_number,
                "phone_number_id": cfg.phone_number_id,
            },
        });
        if !self.contacts.is_empty() {
            value["contacts"] = json!(self.contacts);
        }
        if !self.messages.is_empty() {
            value["messages"] = json!(self.messages);
        }
        if !self.statuses.is_empty() {
            value["statuses"] = json!(self.statuses);
        }
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": cfg.waba_id,
                "changes": [{"field": "messages", "value": value}],
            }],
        })
    }

    /// Serialise once: the push to send (and re-send).
    pub fn build(self) -> WebhookPush {
        WebhookPush {
            body: Bytes::from(self.payload().to_string()),
            message_ids: self.ids,
        }
    }
}

fn media_json(m: &MediaRef) -> Value {
    json!({
        "id": m.id,
        "mime_type": m.mime_type,
        "sha256": base64::engine::general_purpose::STANDARD.encode(m.sha256),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_reference_vector() {
        assert_eq!(
            sign(b"secret", b"test"),
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
        );
        assert!(verify(
            b"secret",
            b"test",
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
        ));
        assert!(!verify(b"secret", b"test2", &sign(b"secret", b"test")));
        assert!(!verify(b"other", b"test", &sign(b"secret", b"test")));
        assert!(!verify(b"secret", b"test", "0329a06b"));
        assert!(!verify(b"secret", b"test", "sha256=zz"));
    }
}
