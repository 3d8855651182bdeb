//! Updates and messages from the Bot API turned into the contract's
//! inbound messages: chat type, forum topic, sender, mentions of this bot
//! (by `entities`, in UTF-16 units), replies to it, and attachments.

use pincer_sdk::{Attachment, AttachmentKind, ChatType, InboundMessage, RepliedMessage};
use serde_json::Value;

/// Who this bot is (`getMe`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    /// The bot's user id.
    pub id: i64,
    /// The bot's username, without `@`.
    pub username: String,
}

/// The inbound message an update carries, if it carries one this channel
/// handles (`message`; edits and other update types are skipped).
pub fn from_update(update: &Value, me: &Me) -> Option<InboundMessage> {
    from_message(update.get("message")?, me)
}

/// A message id unique within the bot: `{chat_id}:{message_id}` (Telegram
/// numbers messages per chat).
pub fn message_key(chat: &Value, message_id: &Value) -> String {
    format!("{}:{}", id_text(chat), id_text(message_id))
}

/// The platform message id inside a key made by [`message_key`] (or a bare id).
pub fn message_id_of(key: &str) -> Option<i64> {
    key.rsplit(':').next()?.trim().parse().ok()
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A sender's display name: first and last name, else `@username`.
fn display_name(user: &Value) -> Option<String> {
    let first = user["first_name"].as_str().unwrap_or_default();
    let last = user["last_name"].as_str().unwrap_or_default();
    let name = format!("{first} {last}").trim().to_string();
    if !name.is_empty() {
        return Some(name);
    }
    if let Some(title) = user["title"].as_str() {
        return Some(title.to_string());
    }
    user["username"].as_str().map(|u| format!("@{u}"))
}

/// The text covered by an entity (`offset`/`length` in UTF-16 code units).
fn entity_text(text: &str, entity: &Value) -> Option<String> {
    let offset = usize::try_from(entity["offset"].as_u64()?).ok()?;
    let length = usize::try_from(entity["length"].as_u64()?).ok()?;
    let units: Vec<u16> = text.encode_utf16().collect();
    let slice = units.get(offset..offset.checked_add(length)?)?;
    String::from_utf16(slice).ok()
}

/// Whether the message's entities address this bot: `@username`, a
/// `text_mention` of it, or a `/command@username` (an unaddressed
/// `/command` only in private chats).
pub fn mentions_me(text: &str, entities: &Value, me: &Me, private: bool) -> bool {
    let Some(entities) = entities.as_array() else {
        return false;
    };
    entities.iter().any(|e| match e["type"].as_str() {
        Some("mention") => entity_text(text, e).is_some_and(|t| {
            !me.username.is_empty() && t.trim_start_matches('@').eq_ignore_ascii_case(&me.username)
        }),
        Some("text_mention") => e["user"]["id"].as_i64() == Some(me.id),
        Some("bot_command") => entity_text(text, e).is_some_and(|t| match t.split_once('@') {
            Some((_, bot)) => !me.username.is_empty() && bot.eq_ignore_ascii_case(&me.username),
            None => private,
        }),
        _ => false,
    })
}

fn attachment(kind: AttachmentKind, v: &Value, mime: Option<&str>) -> Option<Attachment> {
    Some(Attachment {
        kind,
        mime_type: v["mime_type"].as_str().or(mime).map(str::to_string),
        size: v["file_size"].as_u64(),
        file_name: v["file_name"].as_str().map(str::to_string),
        handle: v["file_id"].as_str()?.to_string(),
    })
}

/// The attachments of a message: the largest photo size, documents,
/// voice notes, audio, video and stickers.
pub fn attachments(m: &Value) -> Vec<Attachment> {
    let mut out = Vec::new();
    if let Some(sizes) = m["photo"].as_array() {
        // Sizes come smallest first; take the largest (by area, else last).
        let best = sizes
            .iter()
            .max_by_key(|s| s["width"].as_u64().unwrap_or(0) * s["height"].as_u64().unwrap_or(0));
        if let Some(a) = best.and_then(|p| attachment(AttachmentKind::Image, p, Some("image/jpeg")))
        {
            out.push(a);
        }
    }
    let kinds = [
        ("document", AttachmentKind::Document, None),
        ("voice", AttachmentKind::Voice, Some("audio/ogg")),
        ("audio", AttachmentKind::Audio, None),
        ("video", AttachmentKind::Video, None),
        ("sticker", AttachmentKind::Sticker, Some("image/webp")),
    ];
    for (field, kind, mime) in kinds {
        if let Some(a) = m.get(field).and_then(|v| attachment(kind, v, mime)) {
            out.push(a);
        }
    }
    out
}

/// A message as an inbound message; `None` for service messages (members
/// joining, pins, ...) that carry neither text nor a file.
pub fn from_message(m: &Value, me: &Me) -> Option<InboundMessage> {
    let chat = m.get("chat")?;
    let chat_id = chat.get("id")?;
    let message_id = m.get("message_id")?;
    let chat_kind = chat["type"].as_str().unwrap_or("private");
    let chat_type = match chat_kind {
        "private" => ChatType::Direct,
        "channel" => ChatType::Channel,
        _ => ChatType::Group,
    };
    let (text, entities) = match m["text"].as_str() {
        Some(t) => (t.to_string(), &m["entities"]),
        None => (
            m["caption"].as_str().unwrap_or_default().to_string(),
            &m["caption_entities"],
        ),
    };
    let attachments = attachments(m);
    if text.is_empty() && attachments.is_empty() {
        return None;
    }
    // Anonymous admins and channels post as `sender_chat`.
    let from = m
        .get("from")
        .filter(|f| f.get("id").is_some())
        .or_else(|| m.get("sender_chat"));
    let sender = from
        .map(|f| id_text(&f["id"]))
        .unwrap_or_else(|| id_text(chat_id));
    let sender_name = from.and_then(display_name);
    let sender_is_bot = from.is_some_and(|f| f["is_bot"].as_bool() == Some(true));
    // Forum topics: the thread is the topic (General has none).
    let thread = if chat["is_forum"].as_bool() == Some(true)
        || m["is_topic_message"].as_bool() == Some(true)
    {
        m["message_thread_id"].as_i64().map(|t| t.to_string())
    } else {
        None
    };
    let reply_to = m.get("reply_to_message").and_then(|r| {
        // In forums every topic message "replies" to the topic's creation
        // message; that is not a reply.
        if r["forum_topic_created"].is_object() {
            return None;
        }
        let from = r.get("from");
        Some(RepliedMessage {
            id: message_key(chat_id, r.get("message_id")?),
            sender: from.map(|f| id_text(&f["id"])),
            text: r["text"]
                .as_str()
                .or_else(|| r["caption"].as_str())
                .map(str::to_string),
            from_bot_self: from.and_then(|f| f["id"].as_i64()) == Some(me.id) && me.id != 0,
        })
    });
    let mentioned = mentions_me(&text, entities, me, chat_type == ChatType::Direct);
    let timestamp = m["date"].as_u64().map_or(0, |s| s.saturating_mul(1_000));
    Some(InboundMessage {
        id: message_key(chat_id, message_id),
        conversation: id_text(chat_id),
        chat_type,
        thread,
        sender,
        sender_name,
        sender_is_bot,
        mentioned,
        reply_to,
        text,
        attachments,
        reaction: None,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me {
            id: 777,
            username: "pincer_bot".into(),
        }
    }

    fn group_msg(text: &str, entities: Value) -> Value {
        json!({"message_id": 5, "date": 1700000000,
            "chat": {"id": -100123, "type": "supergroup", "title": "G"},
            "from": {"id": 42, "is_bot": false, "first_name": "Ada", "last_name": "L"},
            "text": text, "entities": entities})
    }

    #[test]
    fn direct_text_message() {
        let m = from_update(
            &json!({"update_id": 1, "message": {"message_id": 9, "date": 1700000000,
                "chat": {"id": 42, "type": "private", "first_name": "Ada"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ada", "username": "ada"},
                "text": "hi"}}),
            &me(),
        )
        .unwrap();
        assert_eq!(
            (m.id.as_str(), m.conversation.as_str(), m.sender.as_str()),
            ("42:9", "42", "42")
        );
        assert_eq!(m.chat_type, ChatType::Direct);
        assert_eq!(m.sender_name.as_deref(), Some("Ada"));
        assert_eq!(m.timestamp, 1_700_000_000_000);
        assert!(!m.mentioned && m.thread.is_none() && m.reply_to.is_none());
    }

    #[test]
    fn mentions_by_entities_in_utf16_units() {
        // "🙂 " is 3 UTF-16 units: the mention starts at offset 3.
        let text = "🙂 @Pincer_Bot hello";
        let m = from_message(
            &group_msg(
                text,
                json!([{"type": "mention", "offset": 3, "length": 11}]),
            ),
            &me(),
        )
        .unwrap();
        assert!(m.mentioned);
        assert_eq!(m.chat_type, ChatType::Group);
        assert_eq!(m.sender_name.as_deref(), Some("Ada L"));
        let other = from_message(
            &group_msg(
                "@other_bot hi",
                json!([{"type": "mention", "offset": 0, "length": 10}]),
            ),
            &me(),
        )
        .unwrap();
        assert!(!other.mentioned);
        let tm = from_message(
            &group_msg(
                "bot hi",
                json!([{"type": "text_mention", "offset": 0, "length": 3, "user": {"id": 777}}]),
            ),
            &me(),
        )
        .unwrap();
        assert!(tm.mentioned);
        let cmd = |t: &str, len: u64| {
            from_message(
                &group_msg(
                    t,
                    json!([{"type": "bot_command", "offset": 0, "length": len}]),
                ),
                &me(),
            )
            .unwrap()
            .mentioned
        };
        assert!(cmd("/start@pincer_bot", 17));
        assert!(!cmd("/start@other_bot", 16));
        // Unaddressed commands count only in private chats.
        assert!(!cmd("/start", 6));
        assert!(mentions_me(
            "/start",
            &json!([{"type": "bot_command", "offset": 0, "length": 6}]),
            &me(),
            true
        ));
    }

    #[test]
    fn forum_topic_reply_to_bot_and_attachments() {
        let m = from_message(
            &json!({"message_id": 11, "date": 1,
                "chat": {"id": -1009, "type": "supergroup", "title": "F", "is_forum": true},
                "from": {"id": 42, "is_bot": false, "first_name": "Ada"},
                "message_thread_id": 77, "is_topic_message": true,
                "reply_to_message": {"message_id": 10, "date": 1, "chat": {"id": -1009},
                    "from": {"id": 777, "is_bot": true, "first_name": "Bot"}, "text": "earlier"},
                "caption": "look",
                "photo": [{"file_id": "small", "width": 90, "height": 90, "file_size": 10},
                          {"file_id": "big", "width": 1280, "height": 960, "file_size": 9000}],
                "document": {"file_id": "doc1", "file_name": "a.pdf", "mime_type": "application/pdf", "file_size": 5}}),
            &me(),
        )
        .unwrap();
        assert_eq!(m.thread.as_deref(), Some("77"));
        assert_eq!(m.text, "look");
        let r = m.reply_to.unwrap();
        assert!(r.from_bot_self);
        assert_eq!(r.id, "-1009:10");
        assert_eq!(m.attachments.len(), 2);
        assert_eq!(m.attachments[0].handle, "big");
        assert_eq!(m.attachments[0].kind, AttachmentKind::Image);
        assert_eq!(m.attachments[1].file_name.as_deref(), Some("a.pdf"));
        assert_eq!(
            m.attachments[1].mime_type.as_deref(),
            Some("application/pdf")
        );
    }

    #[test]
    fn service_messages_and_other_updates_are_skipped() {
        assert!(from_update(&json!({"update_id": 1, "edited_message": {}}), &me()).is_none());
        assert!(from_message(
            &json!({"message_id": 1, "chat": {"id": 1, "type": "group"}, "new_chat_members": []}),
            &me()
        )
        .is_none());
        assert_eq!(message_id_of("-100:55"), Some(55));
        assert_eq!(message_id_of("55"), Some(55));
    }
}
