//! Reading a `/sync` answer: room messages as inbound messages, invites to
//! decide on, rooms that turned out encrypted. No I/O: the caller looks up
//! what it must (direct rooms, replied-to senders) through [`Lookup`].

use pincer_sdk::{Attachment, AttachmentKind, ChatType, InboundMessage, RepliedMessage};
use serde_json::Value;

/// The filter every `/sync` uses: room timelines and the state needed to
/// know the room, nothing else (no presence, no ephemeral events, no
/// account data but `m.direct`).
pub const FILTER: &str = r#"{"presence":{"types":[]},"account_data":{"types":["m.direct"]},"room":{"ephemeral":{"types":[]},"account_data":{"types":[]},"state":{"lazy_load_members":true},"timeline":{"limit":50}}}"#;

/// Who the bot is.
#[derive(Debug, Clone, Default)]
pub struct Me {
    /// Full user id (`@bot:example.org`).
    pub user_id: String,
    /// Display name, if it has one (a mention by name counts).
    pub display_name: Option<String>,
}

/// What reading a message needs to know beyond the event.
pub trait Lookup {
    /// Whether `room` is a direct chat.
    fn is_direct(&mut self, room: &str) -> bool;
    /// The sender of event `event` in `room`, if it can be found.
    fn sender_of(&mut self, room: &str, event: &str) -> Option<String>;
}

/// An invite for the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The room.
    pub room: String,
    /// Who invited the bot.
    pub inviter: String,
    /// The inviter marked it a direct chat (`is_direct`).
    pub is_direct: bool,
}

/// Everything of interest in one `/sync` answer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages for the host.
    pub messages: Vec<InboundMessage>,
    /// Invites the bot received.
    pub invites: Vec<Invite>,
    /// Rooms with end-to-end encrypted messages for the bot (deduplicated).
    pub encrypted_rooms: Vec<String>,
    /// Joined rooms whose summary gave a joined member count.
    pub member_counts: Vec<(String, u64)>,
    /// Direct rooms listed in the bot's `m.direct` account data.
    pub direct_rooms: Vec<String>,
    /// `next_batch`: the cursor after this answer.
    pub next_batch: Option<String>,
}

/// Read `sync`. Messages older than `not_before_ms` (history at the
/// first sync) are skipped; so are the bot's own, notices (by Matrix
/// convention what bots send: answering them loops) and edits.
pub fn read(sync: &Value, me: &Me, not_before_ms: u64, lookup: &mut dyn Lookup) -> Batch {
    let mut batch = Batch {
        next_batch: sync["next_batch"].as_str().map(str::to_string),
        ..Batch::default()
    };
    for ev in sync["account_data"]["events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if ev["type"] == "m.direct"
            && let Some(map) = ev["content"].as_object()
        {
            for rooms in map.values() {
                for r in rooms.as_array().into_iter().flatten() {
                    if let Some(r) = r.as_str() {
                        batch.direct_rooms.push(r.to_string());
                    }
                }
            }
        }
    }
    if let Some(invites) = sync["rooms"]["invite"].as_object() {
        for (room, data) in invites {
            if let Some(i) = invite(room, data, me) {
                batch.invites.push(i);
            }
        }
    }
    let Some(joined) = sync["rooms"]["join"].as_object() else {
        return batch;
    };
    for (room, data) in joined {
        if let Some(n) = data["summary"]["m.joined_member_count"].as_u64() {
            batch.member_counts.push((room.clone(), n));
        }
    }
    for (room, data) in joined {
        for ev in data["timeline"]["events"].as_array().into_iter().flatten() {
            let sender = ev["sender"].as_str().unwrap_or_default();
            if sender.is_empty() || sender == me.user_id {
                continue;
            }
            if ev["origin_server_ts"].as_u64().unwrap_or(0) < not_before_ms {
                continue;
            }
            match ev["type"].as_str() {
                Some("m.room.encrypted") => {
                    if !batch.encrypted_rooms.contains(room) {
                        batch.encrypted_rooms.push(room.clone());
                    }
                }
                Some("m.room.message") => {
                    if let Some(m) = message(room, ev, me, lookup) {
                        batch.messages.push(m);
                    }
                }
                _ => {}
            }
        }
    }
    batch
}

/// The invite in `data` (`rooms.invite[room]`), if it is the bot's.
fn invite(room: &str, data: &Value, me: &Me) -> Option<Invite> {
    let events = data["invite_state"]["events"].as_array()?;
    let ev = events.iter().find(|e| {
        e["type"] == "m.room.member"
            && e["state_key"] == me.user_id.as_str()
            && e["content"]["membership"] == "invite"
    })?;
    Some(Invite {
        room: room.to_string(),
        inviter: ev["sender"].as_str().unwrap_or_default().to_string(),
        is_direct: ev["content"]["is_direct"].as_bool().unwrap_or(false),
    })
}

/// The kind of attachment a `msgtype` carries, if any.
fn attachment_kind(msgtype: &str) -> Option<AttachmentKind> {
    Some(match msgtype {
        "m.image" => AttachmentKind::Image,
        "m.audio" => AttachmentKind::Audio,
        "m.video" => AttachmentKind::Video,
        "m.file" => AttachmentKind::Document,
        _ => return None,
    })
}

/// Whether `content` mentions the bot: `m.mentions.user_ids`, a
/// matrix.to pill in the HTML, or the user id or display name in the text.
pub fn mentions(content: &Value, me: &Me) -> bool {
    let listed = content["m.mentions"]["user_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|u| u.as_str() == Some(me.user_id.as_str()));
    if listed {
        return true;
    }
    let body = content["body"].as_str().unwrap_or_default();
    let html = content["formatted_body"].as_str().unwrap_or_default();
    if body.contains(&me.user_id) || html.contains(&format!("matrix.to/#/{}", me.user_id)) {
        return true;
    }
    me.display_name
        .as_deref()
        .filter(|n| n.chars().count() >= 2)
        .is_some_and(|n| contains_word(&body.to_lowercase(), &n.to_lowercase()))
}

/// `needle` in `hay` not inside a longer word.
fn contains_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The body without a reply fallback (`> <@user> quoted` lines and the
/// blank line after them, as older clients still send).
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// An `m.room.message` event as an inbound message (`None` for notices,
/// edits and events without a body).
fn message(room: &str, ev: &Value, me: &Me, lookup: &mut dyn Lookup) -> Option<InboundMessage> {
    let content = &ev["content"];
    let msgtype = content["msgtype"].as_str()?;
    if msgtype == "m.notice" {
        return None;
    }
    let rel = &content["m.relates_to"];
    if rel["rel_type"] == "m.replace" {
        // An edit of an earlier message: the agent answered the original.
        return None;
    }
    let id = ev["event_id"].as_str()?;
    let sender = ev["sender"].as_str()?;
    let body = content["body"].as_str().unwrap_or_default();
    let thread = (rel["rel_type"] == "m.thread")
        .then(|| rel["event_id"].as_str().map(str::to_string))
        .flatten();
    // In a thread, `m.in_reply_to` of a fallback (`is_falling_back`) is
    // not a real reply.
    let reply_id = rel["m.in_reply_to"]["event_id"]
        .as_str()
        .filter(|_| !(thread.is_some() && rel["is_falling_back"] == true));
    let reply_to = reply_id.map(|rid| {
        let from = lookup.sender_of(room, rid);
        RepliedMessage {
            id: rid.to_string(),
            from_bot_self: from.as_deref() == Some(me.user_id.as_str()),
            sender: from,
            text: None,
        }
    });
    let mut attachments = Vec::new();
    let text = match attachment_kind(msgtype) {
        Some(kind) => {
            let handle = content["url"]
                .as_str()
                .filter(|u| u.starts_with("mxc://"))?;
            let info = &content["info"];
            let file_name = content["filename"]
                .as_str()
                .or_else(|| content["body"].as_str())
                .map(str::to_string);
            attachments.push(Attachment {
                kind,
                mime_type: info["mimetype"].as_str().map(str::to_string),
                size: info["size"].as_u64(),
                file_name: file_name.clone(),
                handle: handle.to_string(),
            });
            // A caption is a body that differs from the file name.
            match content["filename"].as_str() {
                Some(f) if f != body => body.to_string(),
                _ => String::new(),
            }
        }
        None => strip_reply_fallback(body).to_string(),
    };
    let chat_type = if lookup.is_direct(room) {
        ChatType::Direct
    } else {
        ChatType::Group
    };
    Some(InboundMessage {
        id: id.to_string(),
        conversation: room.to_string(),
        chat_type,
        thread,
        sender: sender.to_string(),
        sender_name: None,
        sender_is_bot: false,
        mentioned: mentions(content, me),
        reply_to,
        text,
        attachments,
        reaction: None,
        timestamp: ev["origin_server_ts"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed {
        direct: Vec<&'static str>,
    }
    impl Lookup for Fixed {
        fn is_direct(&mut self, room: &str) -> bool {
            self.direct.contains(&room)
        }
        fn sender_of(&mut self, _room: &str, event: &str) -> Option<String> {
            (event == "$bots").then(|| "@bot:hs".to_string())
        }
    }

    fn me() -> Me {
        Me {
            user_id: "@bot:hs".into(),
            display_name: Some("Pincer".into()),
        }
    }

    fn ev(id: &str, sender: &str, ts: u64, content: Value) -> Value {
        json!({"type": "m.room.message", "event_id": id, "sender": sender, "origin_server_ts": ts, "content": content})
    }

    #[test]
    fn reads_messages_invites_and_encrypted_rooms() {
        let sync = json!({
            "next_batch": "s2",
            "rooms": {
                "invite": {"!dm:hs": {"invite_state": {"events": [
                    {"type": "m.room.member", "state_key": "@bot:hs", "sender": "@alice:hs", "content": {"membership": "invite", "is_direct": true}}
                ]}}},
                "join": {
                    "!dm2:hs": {"timeline": {"events": [
                        ev("$old", "@alice:hs", 5, json!({"msgtype": "m.text", "body": "history"})),
                        ev("$1", "@alice:hs", 20, json!({"msgtype": "m.text", "body": "hi"})),
                        ev("$2", "@bot:hs", 21, json!({"msgtype": "m.text", "body": "own"})),
                        ev("$3", "@other:hs", 22, json!({"msgtype": "m.notice", "body": "a bot"})),
                        ev("$4", "@alice:hs", 23, json!({"msgtype": "m.text", "body": "* fix", "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}})),
                    ]}},
                    "!grp:hs": {"summary": {"m.joined_member_count": 3}, "timeline": {"events": [
                        ev("$5", "@alice:hs", 30, json!({"msgtype": "m.text", "body": "hey pincer, ok?", "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}}})),
                        ev("$6", "@alice:hs", 31, json!({"msgtype": "m.text", "body": "> <@bot:hs> earlier\n\nyes", "m.relates_to": {"m.in_reply_to": {"event_id": "$bots"}}})),
                        ev("$7", "@alice:hs", 32, json!({"msgtype": "m.image", "body": "cat.png", "filename": "cat.png", "url": "mxc://hs/abc", "info": {"mimetype": "image/png", "size": 3}})),
                        {"type": "m.room.encrypted", "event_id": "$8", "sender": "@alice:hs", "origin_server_ts": 33, "content": {}},
                    ]}}
                }
            }
        });
        let b = read(
            &sync,
            &me(),
            10,
            &mut Fixed {
                direct: vec!["!dm2:hs"],
            },
        );
        assert_eq!(b.next_batch.as_deref(), Some("s2"));
        assert_eq!(
            b.invites,
            vec![Invite {
                room: "!dm:hs".into(),
                inviter: "@alice:hs".into(),
                is_direct: true
            }]
        );
        assert_eq!(b.encrypted_rooms, vec!["!grp:hs".to_string()]);
        assert_eq!(b.member_counts, vec![("!grp:hs".to_string(), 3)]);
        let ids: Vec<_> = b.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["$1", "$5", "$6", "$7"]);
        let dm = &b.messages[0];
        assert!(matches!(dm.chat_type, ChatType::Direct));
        assert!(!dm.mentioned);
        let thread = &b.messages[1];
        assert!(matches!(thread.chat_type, ChatType::Group));
        assert_eq!(thread.thread.as_deref(), Some("$root"));
        assert!(thread.reply_to.is_none(), "a thread fallback is no reply");
        assert!(thread.mentioned, "the display name is a mention");
        let reply = &b.messages[2];
        assert_eq!(reply.text, "yes");
        assert!(reply.reply_to.as_ref().is_some_and(|r| r.from_bot_self));
        let img = &b.messages[3];
        assert_eq!(img.text, "");
        assert_eq!(img.attachments[0].handle, "mxc://hs/abc");
        assert_eq!(img.attachments[0].size, Some(3));
    }

    #[test]
    fn mentions_by_list_pill_id_or_name() {
        let m = me();
        assert!(mentions(
            &json!({"body": "x", "m.mentions": {"user_ids": ["@bot:hs"]}}),
            &m
        ));
        assert!(mentions(&json!({"body": "ping @bot:hs"}), &m));
        assert!(mentions(
            &json!({"body": "Pincer", "formatted_body": "<a href=\"https://matrix.to/#/@bot:hs\">P</a>"}),
            &m
        ));
        assert!(mentions(&json!({"body": "PINCER: hi"}), &m));
        assert!(!mentions(&json!({"body": "pincers are claws"}), &m));
        assert!(!mentions(
            &json!({"body": "hello", "m.mentions": {"user_ids": ["@x:hs"]}}),
            &m
        ));
    }
}
