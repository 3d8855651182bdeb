//! `MESSAGE_CREATE` dispatches turned into the contract's inbound messages:
//! DMs always, guild messages only when they mention the bot (the
//! `mentions` array or a `<@id>` in the text), never the bot's own or other
//! bots' messages; reply-to, thread and attachment facts.

use pincer_sdk::{Attachment, AttachmentKind, ChatType, InboundMessage, RepliedMessage};
use serde_json::Value;

/// Message types that carry a user's text: DEFAULT (0) and REPLY (19).
const TEXT_TYPES: &[u64] = &[0, 19];
/// Channel types that are threads (announcement, public, private thread).
const THREAD_TYPES: &[u64] = &[10, 11, 12];

/// The inbound message a `MESSAGE_CREATE` carries for a bot with user id
/// `me`, if this channel handles it.
pub fn from_message_create(d: &Value, me: Option<&str>) -> Option<InboundMessage> {
    let id = d["id"].as_str()?;
    let channel = d["channel_id"].as_str()?;
    let author = &d["author"];
    let sender = author["id"].as_str()?;
    if me == Some(sender) || author["bot"].as_bool() == Some(true) {
        return None;
    }
    if !TEXT_TYPES.contains(&d["type"].as_u64().unwrap_or(0)) {
        return None;
    }
    let in_guild = d["guild_id"].as_str().is_some();
    let mentioned = me.is_some_and(|me| mentions(d, me));
    if in_guild && !mentioned {
        return None;
    }
    let content = d["content"].as_str().unwrap_or_default();
    let text = match me {
        Some(me) => strip_mention(content, me),
        None => content.trim().to_string(),
    };
    let attachments: Vec<Attachment> = d["attachments"]
        .as_array()
        .map(|a| a.iter().filter_map(attachment).collect())
        .unwrap_or_default();
    if text.is_empty() && attachments.is_empty() {
        return None;
    }
    let reply_to = d
        .get("referenced_message")
        .filter(|r| r.is_object())
        .map_or_else(
            || {
                d["message_reference"]["message_id"]
                    .as_str()
                    .map(|id| RepliedMessage {
                        id: id.to_string(),
                        sender: None,
                        text: None,
                        from_bot_self: false,
                    })
            },
            |r| {
                Some(RepliedMessage {
                    id: r["id"].as_str().unwrap_or_default().to_string(),
                    sender: r["author"]["id"].as_str().map(str::to_string),
                    text: r["content"].as_str().map(str::to_string),
                    from_bot_self: me.is_some() && r["author"]["id"].as_str() == me,
                })
            },
        );
    // A message in a thread names the thread as its channel; the thread
    // object (when Discord includes it) says so.
    let thread = d["thread"]["id"]
        .as_str()
        .filter(|_| THREAD_TYPES.contains(&d["thread"]["type"].as_u64().unwrap_or(0)))
        .filter(|t| *t == channel)
        .map(str::to_string);
    // Every field spelt out: `pincer_sdk::inbound` reads the host's clock.
    Some(InboundMessage {
        id: id.to_string(),
        conversation: channel.to_string(),
        sender: sender.to_string(),
        sender_is_bot: false,
        text,
        reaction: None,
        chat_type: if in_guild {
            ChatType::Group
        } else {
            ChatType::Direct
        },
        thread,
        sender_name: author["global_name"]
            .as_str()
            .or_else(|| author["username"].as_str())
            .map(str::to_string),
        mentioned: mentioned || !in_guild,
        reply_to,
        attachments,
        timestamp: d["timestamp"]
            .as_str()
            .and_then(parse_timestamp)
            .unwrap_or_else(pincer_sdk::clock::now_ms),
    })
}

/// Whether the message mentions user `me` (the `mentions` array, or
/// `<@me>` / `<@!me>` in the content).
pub fn mentions(d: &Value, me: &str) -> bool {
    let listed = d["mentions"]
        .as_array()
        .is_some_and(|m| m.iter().any(|u| u["id"].as_str() == Some(me)));
    let content = d["content"].as_str().unwrap_or_default();
    listed || content.contains(&format!("<@{me}>")) || content.contains(&format!("<@!{me}>"))
}

/// The content without the bot's own mention(s), trimmed.
pub fn strip_mention(content: &str, me: &str) -> String {
    content
        .replace(&format!("<@{me}>"), "")
        .replace(&format!("<@!{me}>"), "")
        .trim()
        .to_string()
}

/// An attachment record from Discord's attachment object; the handle is
/// the CDN URL (signed, so it is fetched as is).
fn attachment(a: &Value) -> Option<Attachment> {
    let url = a["url"].as_str()?;
    let mime = a["content_type"].as_str().map(str::to_string);
    let kind = match mime.as_deref().and_then(|m| m.split('/').next()) {
        Some("image") => AttachmentKind::Image,
        Some("audio") if a["duration_secs"].is_number() => AttachmentKind::Voice,
        Some("audio") => AttachmentKind::Audio,
        Some("video") => AttachmentKind::Video,
        _ => AttachmentKind::Document,
    };
    Some(Attachment {
        kind,
        mime_type: mime,
        size: a["size"].as_u64(),
        file_name: a["filename"].as_str().map(str::to_string),
        handle: url.to_string(),
    })
}

/// Unix ms of an ISO 8601 timestamp (`2024-01-02T03:04:05.678000+00:00`).
pub fn parse_timestamp(ts: &str) -> Option<u64> {
    let (date, rest) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = rest.get(..8)?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let frac = rest[8..]
        .strip_prefix('.')
        .map(|f| {
            let digits: String = f.chars().take_while(char::is_ascii_digit).collect();
            format!("{digits:0<3}")[..3].parse::<i64>().unwrap_or(0)
        })
        .unwrap_or(0);
    let offset = rest
        .rfind(['+', '-'])
        .filter(|&i| i >= 8)
        .and_then(|i| {
            let sign = if rest.as_bytes()[i] == b'-' { -1 } else { 1 };
            let (oh, om) = rest[i + 1..].split_once(':')?;
            Some(sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
        })
        .unwrap_or(0);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs * 1000 + frac).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(extra: Value) -> Value {
        let mut m = json!({
            "id": "1001", "channel_id": "500", "type": 0,
            "author": {"id": "7", "username": "ada", "global_name": "Ada"},
            "content": "hello", "mentions": [], "attachments": [],
            "timestamp": "2024-01-02T03:04:05.678000+00:00"
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    }

    #[test]
    fn dms_are_taken_with_their_facts() {
        let m = from_message_create(&msg(json!({})), Some("99")).unwrap();
        assert_eq!(
            (
                m.id.as_str(),
                m.conversation.as_str(),
                m.sender.as_str(),
                m.text.as_str()
            ),
            ("1001", "500", "7", "hello")
        );
        assert_eq!(m.chat_type, ChatType::Direct);
        assert_eq!(m.sender_name.as_deref(), Some("Ada"));
        assert_eq!(m.timestamp, 1_704_164_645_678);
    }

    #[test]
    fn guild_messages_need_a_mention_and_lose_it() {
        let g = json!({"guild_id": "3"});
        assert!(from_message_create(&msg(g.clone()), Some("99")).is_none());
        let m = from_message_create(
            &msg(json!({"guild_id": "3", "content": "<@99> what time is it?",
                "mentions": [{"id": "99"}]})),
            Some("99"),
        )
        .unwrap();
        assert_eq!(m.chat_type, ChatType::Group);
        assert!(m.mentioned);
        assert_eq!(m.text, "what time is it?");
        let m = from_message_create(
            &msg(json!({"guild_id": "3", "content": "hey <@!99>"})),
            Some("99"),
        )
        .unwrap();
        assert_eq!(m.text, "hey");
    }

    #[test]
    fn own_and_bot_messages_and_system_messages_are_ignored() {
        assert!(
            from_message_create(
                &msg(json!({"author": {"id": "99", "username": "me"}})),
                Some("99")
            )
            .is_none()
        );
        assert!(
            from_message_create(
                &msg(json!({"author": {"id": "8", "username": "b", "bot": true}})),
                Some("99")
            )
            .is_none()
        );
        assert!(from_message_create(&msg(json!({"type": 7})), Some("99")).is_none());
    }

    #[test]
    fn replies_threads_and_attachments() {
        let m = from_message_create(
            &msg(json!({
                "type": 19,
                "referenced_message": {"id": "900", "content": "earlier", "author": {"id": "99"}},
                "attachments": [{"id": "1", "filename": "a.png", "content_type": "image/png",
                    "size": 12, "url": "https://cdn.discordapp.com/attachments/1/2/a.png?ex=1"}],
                "thread": {"id": "500", "type": 11}
            })),
            Some("99"),
        )
        .unwrap();
        let r = m.reply_to.unwrap();
        assert_eq!(
            (r.id.as_str(), r.text.as_deref(), r.from_bot_self),
            ("900", Some("earlier"), true)
        );
        assert_eq!(m.thread.as_deref(), Some("500"));
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].kind, AttachmentKind::Image);
        assert!(
            m.attachments[0]
                .handle
                .starts_with("https://cdn.discordapp.com/")
        );
    }

    #[test]
    fn timestamps_parse_with_offsets() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01+00:00"), Some(1000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:01+01:00"), Some(1000));
        assert_eq!(parse_timestamp("nonsense"), None);
    }
}
