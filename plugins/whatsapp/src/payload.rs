//! Reading Meta's webhook payload: `entry[].changes[].value` with
//! `metadata`, `contacts`, `messages`, `statuses` and `errors`, for the
//! one phone number this account serves. Pure functions of the JSON, so
//! they are tested without a host.

use std::collections::HashMap;

use pincer_sdk::{
    Attachment, AttachmentKind, ChatType, DeliveryState, DeliveryStatus, InboundMessage, Reaction,
    RepliedMessage,
};
use serde_json::Value;

/// What one push carried for our number.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Messages, in payload order.
    pub messages: Vec<InboundMessage>,
    /// Delivery statuses of messages we sent.
    pub statuses: Vec<DeliveryStatus>,
    /// Changes for other phone numbers (ignored).
    pub other_numbers: usize,
    /// Messages of types we cannot hand on (`unsupported`, `system`, ...),
    /// as `(wamid, type)`.
    pub skipped: Vec<(String, String)>,
    /// `value.errors[]`, as text.
    pub errors: Vec<String>,
}

/// Why a push is not a WhatsApp payload.
#[derive(Debug, PartialEq, Eq)]
pub enum NotWhatsApp {
    /// The body is not JSON.
    Json(String),
    /// `object` is not `whatsapp_business_account`.
    Object(String),
}

/// Parse a push for phone number `phone_number_id`; `now_ms` stamps
/// messages whose `timestamp` is missing or malformed.
pub fn parse(body: &[u8], phone_number_id: &str, now_ms: u64) -> Result<Parsed, NotWhatsApp> {
    let root: Value = serde_json::from_slice(body).map_err(|e| NotWhatsApp::Json(e.to_string()))?;
    let object = root.get("object").and_then(Value::as_str).unwrap_or("");
    if object != "whatsapp_business_account" {
        return Err(NotWhatsApp::Object(object.to_string()));
    }
    let mut out = Parsed::default();
    let entries = root.get("entry").and_then(Value::as_array);
    for change in entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten()
    {
        if change.get("field").and_then(Value::as_str) != Some("messages") {
            continue;
        }
        let Some(value) = change.get("value") else {
            continue;
        };
        let metadata = value.get("metadata");
        let number = metadata
            .and_then(|m| m.get("phone_number_id"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if number != phone_number_id {
            out.other_numbers += 1;
            continue;
        }
        let display = metadata
            .and_then(|m| m.get("display_phone_number"))
            .and_then(Value::as_str)
            .map(digits)
            .unwrap_or_default();
        let names: HashMap<&str, &str> = array(value, "contacts")
            .filter_map(|c| {
                Some((
                    c.get("wa_id")?.as_str()?,
                    c.pointer("/profile/name")?.as_str()?,
                ))
            })
            .collect();
        for m in array(value, "messages") {
            match message(m, &names, &display, now_ms) {
                Ok(msg) => out.messages.push(msg),
                Err(kind) => out.skipped.push((text(m, "id").to_string(), kind)),
            }
        }
        out.statuses
            .extend(array(value, "statuses").filter_map(|s| status(s, now_ms)));
        out.errors.extend(array(value, "errors").map(error_text));
    }
    Ok(out)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Unix seconds as a string (Graph's form) to Unix ms.
fn timestamp(v: &Value, now_ms: u64) -> u64 {
    match v.get("timestamp") {
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .map_or(now_ms, |s| s.saturating_mul(1000))
}

/// One message, or the type name when it cannot be handed on.
fn message(
    m: &Value,
    names: &HashMap<&str, &str>,
    display: &str,
    now_ms: u64,
) -> Result<InboundMessage, String> {
    let kind = text(m, "type");
    let id = text(m, "id");
    let from = text(m, "from");
    if id.is_empty() || from.is_empty() {
        return Err(format!("{kind} without id or from"));
    }
    let body = m.get(kind).unwrap_or(&Value::Null);
    let mut attachments = Vec::new();
    let mut reaction = None;
    let text_of = |k: &str| text(body, k).to_string();
    let text = match kind {
        "text" => text_of("body"),
        "image" | "video" | "sticker" | "audio" | "document" => {
            let handle = text(body, "id");
            if handle.is_empty() {
                return Err(format!("{kind} without media id"));
            }
            let kind_of = match kind {
                "image" => AttachmentKind::Image,
                "video" => AttachmentKind::Video,
                "sticker" => AttachmentKind::Sticker,
                "document" => AttachmentKind::Document,
                _ if body.get("voice").and_then(Value::as_bool) == Some(true) => {
                    AttachmentKind::Voice
                }
                _ => AttachmentKind::Audio,
            };
            attachments.push(Attachment {
                kind: kind_of,
                mime_type: body
                    .get("mime_type")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                size: body.get("file_size").and_then(Value::as_u64),
                file_name: body
                    .get("filename")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                handle: handle.to_string(),
            });
            text_of("caption")
        }
        "reaction" => {
            reaction = Some(Reaction {
                message_id: text_of("message_id"),
                emoji: text_of("emoji"),
            });
            String::new()
        }
        // Button and list replies reach the agent as the chosen title.
        "interactive" => {
            let reply = ["button_reply", "list_reply"]
                .iter()
                .find_map(|k| body.get(*k))
                .ok_or_else(|| format!("interactive {}", text(body, "type")))?;
            text(reply, "title").to_string()
        }
        // A template's quick-reply button.
        "button" => text_of("text"),
        "location" => {
            let coords = format!(
                "{}, {}",
                body.get("latitude").unwrap_or(&Value::Null),
                body.get("longitude").unwrap_or(&Value::Null)
            );
            let place: Vec<&str> = [text(body, "name"), text(body, "address")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            if place.is_empty() {
                format!("📍 location {coords}")
            } else {
                format!("📍 {} ({coords})", place.join(", "))
            }
        }
        "contacts" => {
            let shared: Vec<&str> = body
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.pointer("/name/formatted_name").and_then(Value::as_str))
                .collect();
            format!("shared contact: {}", shared.join(", "))
        }
        other => return Err(other.to_string()),
    };
    let reply_to = m.get("context").and_then(|c| {
        let id = c.get("id").and_then(Value::as_str)?;
        let sender = c.get("from").and_then(Value::as_str).map(str::to_string);
        Some(RepliedMessage {
            id: id.to_string(),
            from_bot_self: !display.is_empty()
                && sender.as_deref().map(digits).as_deref() == Some(display),
            sender,
            text: None,
        })
    });
    Ok(InboundMessage {
        id: id.to_string(),
        conversation: from.to_string(),
        chat_type: ChatType::Direct,
        thread: None,
        sender: from.to_string(),
        sender_name: names.get(from).map(|n| n.to_string()),
        sender_is_bot: false,
        mentioned: false,
        reply_to,
        text,
        attachments,
        reaction,
        timestamp: timestamp(m, now_ms),
    })
}

fn status(s: &Value, now_ms: u64) -> Option<DeliveryStatus> {
    let state = match text(s, "status") {
        "sent" => DeliveryState::Sent,
        "delivered" => DeliveryState::Delivered,
        "read" => DeliveryState::Read,
        "failed" => DeliveryState::Failed,
        _ => return None,
    };
    let message_id = text(s, "id");
    if message_id.is_empty() {
        return None;
    }
    let errors: Vec<String> = array(s, "errors").map(error_text).collect();
    Some(DeliveryStatus {
        message_id: message_id.to_string(),
        conversation: text(s, "recipient_id").to_string(),
        state,
        detail: (!errors.is_empty()).then(|| errors.join("; ")),
        timestamp: timestamp(s, now_ms),
    })
}

/// `title (code N): details` of one Graph error object.
fn error_text(e: &Value) -> String {
    let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
    let title = e
        .get("title")
        .or_else(|| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    let mut out = format!("{title} (code {code})");
    if let Some(d) = e.pointer("/error_data/details").and_then(Value::as_str) {
        out.push_str(": ");
        out.push_str(d);
    }
    if code == 131047 {
        out.push_str(" - ");
        out.push_str(crate::graph::WINDOW_CLOSED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PHONE: &str = "106540352242922";

    fn push(values: Vec<Value>) -> Vec<u8> {
        let changes: Vec<Value> = values
            .into_iter()
            .map(|v| json!({"field": "messages", "value": v}))
            .collect();
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": changes}]})
            .to_string()
            .into_bytes()
    }

    fn value(phone: &str, messages: Value, statuses: Value) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone},
            "contacts": [{"profile": {"name": "Ada"}, "wa_id": "4915112345678"}],
            "messages": messages,
            "statuses": statuses,
        })
    }

    #[test]
    fn every_documented_message_type() {
        let from = "4915112345678";
        let msgs = json!([
            {"from": from, "id": "w1", "timestamp": "1700000000", "type": "text", "text": {"body": "hi"},
             "context": {"from": "15550783881", "id": "wout"}},
            {"from": from, "id": "w2", "timestamp": "1700000001", "type": "image",
             "image": {"id": "m1", "mime_type": "image/jpeg", "sha256": "x", "caption": "look"}},
            {"from": from, "id": "w3", "type": "audio", "audio": {"id": "m2", "mime_type": "audio/ogg", "voice": true}},
            {"from": from, "id": "w4", "type": "document",
             "document": {"id": "m3", "filename": "a.pdf", "mime_type": "application/pdf"}},
            {"from": from, "id": "w5", "type": "reaction", "reaction": {"message_id": "wout", "emoji": "👍"}},
            {"from": from, "id": "w6", "type": "interactive",
             "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Tomorrow"}}},
            {"from": from, "id": "w7", "type": "unsupported", "errors": [{"code": 131051}]},
            {"from": from, "id": "w8", "type": "button", "button": {"text": "Stop", "payload": "p"}},
        ]);
        let p = parse(&push(vec![value(PHONE, msgs, json!([]))]), PHONE, 5).unwrap();
        assert_eq!(p.messages.len(), 7);
        let m = &p.messages;
        assert_eq!(m[0].text, "hi");
        assert_eq!(m[0].timestamp, 1_700_000_000_000);
        assert_eq!(m[0].sender_name.as_deref(), Some("Ada"));
        assert_eq!(m[0].conversation, from);
        let r = m[0].reply_to.as_ref().unwrap();
        assert!(r.id == "wout" && r.from_bot_self);
        assert_eq!(m[1].text, "look");
        assert_eq!(m[1].attachments[0].handle, "m1");
        assert_eq!(m[1].attachments[0].kind, AttachmentKind::Image);
        assert_eq!(m[2].attachments[0].kind, AttachmentKind::Voice);
        assert_eq!(m[2].timestamp, 5);
        assert_eq!(m[3].attachments[0].file_name.as_deref(), Some("a.pdf"));
        assert_eq!(m[4].reaction.as_ref().unwrap().emoji, "👍");
        assert_eq!(m[5].text, "Tomorrow");
        assert_eq!(m[6].text, "Stop");
        assert_eq!(
            p.skipped,
            vec![("w7".to_string(), "unsupported".to_string())]
        );
    }

    #[test]
    fn statuses_other_numbers_and_foreign_objects() {
        let statuses = json!([
            {"id": "s1", "status": "delivered", "timestamp": "1700000000", "recipient_id": "49"},
            {"id": "s2", "status": "failed", "timestamp": "1700000000", "recipient_id": "49",
             "errors": [{"code": 131047, "title": "Re-engagement message"}]},
            {"id": "s3", "status": "deleted"},
        ]);
        let body = push(vec![
            value(PHONE, json!([]), statuses),
            value(
                "999",
                json!([{"from": "1", "id": "x", "type": "text", "text": {"body": "no"}}]),
                json!([]),
            ),
        ]);
        let p = parse(&body, PHONE, 0).unwrap();
        assert!(p.messages.is_empty());
        assert_eq!(p.other_numbers, 1);
        assert_eq!(p.statuses.len(), 2);
        assert_eq!(p.statuses[0].state, DeliveryState::Delivered);
        assert_eq!(p.statuses[1].state, DeliveryState::Failed);
        let detail = p.statuses[1].detail.as_deref().unwrap();
        assert!(
            detail.contains("131047") && detail.contains("template"),
            "{detail}"
        );
        assert!(matches!(parse(b"{", PHONE, 0), Err(NotWhatsApp::Json(_))));
        assert_eq!(
            parse(br#"{"object":"page"}"#, PHONE, 0).unwrap_err(),
            NotWhatsApp::Object("page".into())
        );
    }
}
