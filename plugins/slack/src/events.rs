//! Reading what Slack delivers: an Events API push body (or the `payload`
//! of a Socket Mode `events_api` envelope, which is the same JSON). Pure
//! functions of the JSON, so they are tested without a host.
//!
//! Handed on: direct messages (`message` with `channel_type: im`, plain or
//! `file_share`/`thread_broadcast`) and `app_mention` in channels. Ignored:
//! the bot's own messages, every other bot's (`bot_id`, `bot_message`),
//! edits, deletions, joins and the other subtypes, and channel `message`
//! events (a mention there also arrives as `app_mention`, with the same
//! message id, so it is handed on once).

use pincer_sdk::{Attachment, AttachmentKind, ChatType, InboundMessage, RepliedMessage};
use serde_json::Value;

use crate::settings::Me;

/// Message subtypes that are a user's new message.
const USER_SUBTYPES: &[&str] = &["file_share", "thread_broadcast"];

/// What one delivery is.
#[derive(Debug)]
pub enum Push {
    /// `url_verification`: answer with the challenge.
    UrlVerification(String),
    /// `event_callback`.
    Event {
        /// `event_id` (the same on Slack's retries).
        event_id: String,
        /// `event.type`.
        kind: String,
        /// The message to hand on, or why nothing is.
        outcome: Result<InboundMessage, String>,
    },
    /// Another envelope type (`app_rate_limited`, ...).
    Other(String),
}

/// Why a body is not a Slack delivery.
#[derive(Debug, PartialEq, Eq)]
pub struct NotSlack(pub String);

/// Parse a delivery for the bot `me`; `now_ms` stamps messages without a
/// usable `ts`.
pub fn parse(body: &[u8], me: &Me, now_ms: u64) -> Result<Push, NotSlack> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| NotSlack(format!("invalid JSON: {e}")))?;
    let kind = str_at(&root, "type");
    match kind {
        "url_verification" => Ok(Push::UrlVerification(
            str_at(&root, "challenge").to_string(),
        )),
        "event_callback" => {
            let event = root
                .get("event")
                .filter(|e| e.is_object())
                .ok_or_else(|| NotSlack("event_callback without an `event` object".into()))?;
            Ok(Push::Event {
                event_id: str_at(&root, "event_id").to_string(),
                kind: str_at(event, "type").to_string(),
                outcome: message(event, me, now_ms),
            })
        }
        "" => Err(NotSlack("no `type`: not a Slack Events API payload".into())),
        other => Ok(Push::Other(other.to_string())),
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The inbound message an event is, or why it is ignored.
pub fn message(ev: &Value, me: &Me, now_ms: u64) -> Result<InboundMessage, String> {
    let kind = str_at(ev, "type");
    let channel_type = str_at(ev, "channel_type");
    match kind {
        "message" if channel_type == "im" => {}
        "message" => return Err(format!("a {channel_type} message without a mention")),
        "app_mention" => {}
        other => return Err(format!("event type `{other}`")),
    }
    let subtype = str_at(ev, "subtype");
    if subtype == "bot_message" || ev.get("bot_id").is_some_and(|b| !b.is_null()) {
        return Err("a bot's message".into());
    }
    if !subtype.is_empty() && !USER_SUBTYPES.contains(&subtype) {
        return Err(format!("message subtype `{subtype}`"));
    }
    let user = str_at(ev, "user");
    if user.is_empty() {
        return Err("no sender".into());
    }
    if user == me.user_id {
        return Err("the bot's own message".into());
    }
    let channel = str_at(ev, "channel");
    let ts = str_at(ev, "ts");
    if channel.is_empty() || ts.is_empty() {
        return Err("no channel or ts".into());
    }
    let direct = channel_type == "im" || (channel_type.is_empty() && channel.starts_with('D'));
    let thread_ts = ev
        .get("thread_ts")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    // Answers go to the message's thread; in a channel a mention outside
    // a thread starts one under it.
    let thread = match (thread_ts, direct) {
        (Some(t), _) => Some(t.to_string()),
        (None, false) => Some(ts.to_string()),
        (None, true) => None,
    };
    let mention = format!("<@{}>", me.user_id);
    let raw = str_at(ev, "text");
    let mentioned = kind == "app_mention" || (!me.user_id.is_empty() && raw.contains(&mention));
    let text = if me.user_id.is_empty() {
        raw.to_string()
    } else {
        raw.replace(&mention, " ")
    };
    let profile = ev.get("user_profile");
    let sender_name = ["display_name", "real_name", "name"]
        .iter()
        .filter_map(|k| profile.and_then(|p| p.get(*k)).and_then(Value::as_str))
        .find(|n| !n.is_empty())
        .map(str::to_string);
    let reply_to = thread_ts.filter(|t| *t != ts).map(|t| {
        let parent = ev.get("parent_user_id").and_then(Value::as_str);
        RepliedMessage {
            id: message_id(channel, t),
            sender: parent.map(str::to_string),
            text: None,
            from_bot_self: parent.is_some_and(|p| p == me.user_id),
        }
    });
    Ok(InboundMessage {
        id: message_id(channel, ts),
        conversation: channel.to_string(),
        chat_type: if direct {
            ChatType::Direct
        } else {
            ChatType::Group
        },
        thread,
        sender: user.to_string(),
        sender_name,
        sender_is_bot: false,
        mentioned,
        reply_to,
        text: unescape(text.trim()),
        attachments: files(ev),
        reaction: None,
        timestamp: ts_ms(ts).unwrap_or(now_ms),
    })
}

/// The inbox id of message `ts` in `channel` (a `ts` is unique per
/// channel): the same for a retry, a redelivery, and the `message` and
/// `app_mention` events of one message.
pub fn message_id(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}

/// Slack's `ts` (`"1700000000.000100"`) in Unix milliseconds.
pub fn ts_ms(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let secs: u64 = secs.parse().ok()?;
    let millis: u64 = format!("{:0<3}", frac.get(..3).unwrap_or(frac))
        .parse()
        .unwrap_or(0);
    Some(secs.saturating_mul(1000).saturating_add(millis))
}

/// Slack's entities back into text.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The files of a message, each fetched later through its
/// `url_private_download` (the attachment's handle).
fn files(ev: &Value) -> Vec<Attachment> {
    ev.get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let url = f
                .get("url_private_download")
                .or_else(|| f.get("url_private"))
                .and_then(Value::as_str)?;
            let mime = f.get("mimetype").and_then(Value::as_str);
            let kind = match mime.and_then(|m| m.split('/').next()) {
                Some("image") => AttachmentKind::Image,
                Some("audio") => AttachmentKind::Audio,
                Some("video") => AttachmentKind::Video,
                _ => AttachmentKind::Document,
            };
            Some(Attachment {
                kind,
                mime_type: mime.map(str::to_string),
                size: f.get("size").and_then(Value::as_u64),
                file_name: f.get("name").and_then(Value::as_str).map(str::to_string),
                handle: url.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me {
            user_id: "UBOT".into(),
            bot_id: "BBOT".into(),
            team_id: "T1".into(),
        }
    }

    fn push(event: Value) -> Push {
        let body = json!({"type": "event_callback", "event_id": "Ev1", "event": event});
        parse(body.to_string().as_bytes(), &me(), 5).unwrap()
    }

    fn outcome(event: Value) -> Result<InboundMessage, String> {
        match push(event) {
            Push::Event { outcome, .. } => outcome,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dm_is_direct_without_thread() {
        let m = outcome(
            json!({"type": "message", "channel_type": "im", "channel": "D1",
            "user": "U1", "text": "hi &lt;3 &amp; more", "ts": "1700000000.000100",
            "user_profile": {"display_name": "", "real_name": "Ada"}}),
        )
        .unwrap();
        assert_eq!(m.id, "D1:1700000000.000100");
        assert_eq!((m.conversation.as_str(), m.thread.as_deref()), ("D1", None));
        assert!(matches!(m.chat_type, ChatType::Direct));
        assert_eq!(m.text, "hi <3 & more");
        assert_eq!(m.sender_name.as_deref(), Some("Ada"));
        assert_eq!(m.timestamp, 1_700_000_000_000);
        assert!(!m.mentioned);
    }

    #[test]
    fn a_mention_is_answered_in_its_thread() {
        let m = outcome(json!({"type": "app_mention", "channel": "C1", "user": "U1",
            "text": "<@UBOT> what time is it?", "ts": "1700000001.000200"}))
        .unwrap();
        assert!(matches!(m.chat_type, ChatType::Group));
        assert!(m.mentioned);
        assert_eq!(m.text, "what time is it?");
        assert_eq!(m.thread.as_deref(), Some("1700000001.000200"));
        let m = outcome(json!({"type": "app_mention", "channel": "C1", "user": "U1",
            "text": "<@UBOT> more", "ts": "1700000003.000000", "thread_ts": "1700000001.000200",
            "parent_user_id": "UBOT"}))
        .unwrap();
        assert_eq!(m.thread.as_deref(), Some("1700000001.000200"));
        let r = m.reply_to.unwrap();
        assert_eq!(r.id, "C1:1700000001.000200");
        assert!(r.from_bot_self);
    }

    #[test]
    fn bots_edits_and_channel_chatter_are_ignored() {
        for ev in [
            json!({"type": "message", "channel_type": "im", "channel": "D1", "user": "UBOT", "text": "mine", "ts": "1.0"}),
            json!({"type": "message", "channel_type": "im", "channel": "D1", "bot_id": "B2", "user": "U2", "text": "bot", "ts": "1.0"}),
            json!({"type": "message", "subtype": "bot_message", "channel_type": "im", "channel": "D1", "text": "bot", "ts": "1.0"}),
            json!({"type": "message", "subtype": "message_changed", "channel_type": "im", "channel": "D1", "ts": "1.0"}),
            json!({"type": "message", "subtype": "channel_join", "channel_type": "channel", "channel": "C1", "user": "U1", "ts": "1.0"}),
            json!({"type": "message", "channel_type": "channel", "channel": "C1", "user": "U1", "text": "chatter", "ts": "1.0"}),
            json!({"type": "reaction_added", "user": "U1"}),
        ] {
            assert!(outcome(ev.clone()).is_err(), "{ev}");
        }
    }

    #[test]
    fn files_carry_their_download_url() {
        let m = outcome(json!({"type": "message", "subtype": "file_share", "channel_type": "im",
            "channel": "D1", "user": "U1", "text": "", "ts": "2.5",
            "files": [{"id": "F1", "name": "cat.png", "mimetype": "image/png", "size": 3,
                "url_private_download": "https://files.slack.com/files-pri/T1-F1/download/cat.png"}]}))
        .unwrap();
        assert_eq!(m.attachments.len(), 1);
        let a = &m.attachments[0];
        assert!(matches!(a.kind, AttachmentKind::Image));
        assert_eq!(
            a.handle,
            "https://files.slack.com/files-pri/T1-F1/download/cat.png"
        );
        assert_eq!(a.size, Some(3));
        assert_eq!(m.timestamp, 2_500);
    }

    #[test]
    fn url_verification_and_junk() {
        let body = br#"{"type":"url_verification","token":"x","challenge":"abc"}"#;
        assert!(matches!(parse(body, &me(), 0), Ok(Push::UrlVerification(c)) if c == "abc"));
        assert!(parse(b"not json", &me(), 0).is_err());
        assert!(parse(b"{}", &me(), 0).is_err());
        assert!(matches!(
            parse(br#"{"type":"app_rate_limited"}"#, &me(), 0),
            Ok(Push::Other(_))
        ));
    }
}
