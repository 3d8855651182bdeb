//! `matrix`: the Matrix client-server API as a Pincer channel.
//!
//! The access token never enters the sandbox: every request carries the
//! placeholder of the secret `access_token` in its `authorization` header
//! and the host fills it in (for the manifest's hosts only).
//!
//! Receiving is a `/sync` long poll whose `since` token is the host-owned
//! poll cursor, so a batch and the token after it commit together in the
//! durable inbox. The first sync (no cursor yet) skips history: only
//! messages sent after the channel's first sync in this store are taken
//! (the cut-off is kept in the key-value store).
//!
//! Config (`[plugins.matrix] config = {...}`):
//! - `homeserver` (required): the client-server API base URL;
//! - `user_id`: the bot's full user id (checked against `whoami`);
//! - `auto_join`: which invites to join: `direct` (default: invites the
//!   inviter marked `is_direct`), `all` (rooms too) or `none`. Joining
//!   answers no one by itself: every message in a joined room still goes
//!   through the host's access policy (`dm_policy` for direct rooms,
//!   `group_policy` and `require_mention` for the others).
//!
//! A room is direct when the bot joined it from an `is_direct` invite, when
//! the bot's `m.direct` account data lists it, or when it has exactly two
//! joined members; any other room is a group.
//!
//! Sends use the host's idempotency key (`pincer:delivery`) as the
//! transaction id, so a retry of the same outbox message never posts twice.
//! Files go to the content repository first (the host uploads the raw file
//! with the token filled in), then one `m.image`/`m.video`/`m.audio`/
//! `m.file` event each, after the text.
//! End-to-end encrypted rooms are not supported: the first encrypted
//! message in a room gets one unencrypted notice saying so.

pub mod api;
pub mod html;
pub mod sync;

use std::cell::RefCell;

use pincer_sdk::{
    AttachmentKind, Capabilities, Channel, ChatTarget, Config, DownloadRequest, Error,
    OutboundAttachment, OutboundMessage, PollBatch, ReceiveMode, StreamStyle, TextFormat, clock,
    delivery, kv, log, media, secrets,
};
use serde_json::{Value, json};

use crate::api::seg;
use crate::sync::Me;

/// How much longer than the `/sync` timeout the HTTP client waits.
const POLL_SLACK_MS: u64 = 10_000;
/// The longest `/sync` wait asked of the homeserver.
const MAX_POLL_MS: u64 = 50_000;
/// How long one typing notification shows.
const TYPING_MS: u32 = 6_000;
/// Longest text one message carries (events are capped at 64 KiB).
const MAX_MESSAGE_CHARS: u32 = 16_000;
/// Key-value key of the history cut-off (Unix ms): messages sent before
/// the channel's first sync in this store are not answered.
const HISTORY_KEY: &str = "history-before";
/// The notice an encrypted room gets, once.
pub const ENCRYPTED_NOTICE: &str = "This room is end-to-end encrypted, and this bot cannot read encrypted messages. Message it in an unencrypted room or a direct chat without encryption.";

/// Which invites the bot joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoJoin {
    /// Direct-chat invites (`is_direct`).
    Direct,
    /// Every invite.
    All,
    /// None.
    None,
}

#[derive(Debug, Clone)]
struct Settings {
    homeserver: String,
    me: Me,
    auto_join: AutoJoin,
    /// Messages older than this (Unix ms) are history at the first sync.
    started_ms: u64,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings() -> Result<Settings, Error> {
    SETTINGS
        .with(|s| s.borrow().clone())
        .ok_or_else(|| Error::config("the channel was not started"))
}

/// Parse and check the operator's config (without contacting the server):
/// homeserver, user id, auto-join.
fn parse_config(config: &Config) -> Result<(String, Option<String>, AutoJoin), Error> {
    let homeserver = config
        .require("homeserver")?
        .trim()
        .trim_end_matches('/')
        .to_string();
    if !(homeserver.starts_with("https://") || homeserver.starts_with("http://")) {
        return Err(Error::config(format!(
            "config `homeserver` must be an http(s) URL, not {homeserver:?}"
        )));
    }
    let user_id = config
        .get("user_id")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    if let Some(u) = &user_id
        && !(u.starts_with('@') && u.contains(':'))
    {
        return Err(Error::config(format!(
            "config `user_id` must be a full Matrix user id like @bot:example.org, not {u:?}"
        )));
    }
    let auto_join = match config.get_or("auto_join", "direct").trim() {
        "direct" | "" => AutoJoin::Direct,
        "all" => AutoJoin::All,
        "none" => AutoJoin::None,
        other => {
            return Err(Error::config(format!(
                "config `auto_join` must be `direct`, `all` or `none`, not {other:?}"
            )));
        }
    };
    Ok((homeserver, user_id, auto_join))
}

/// `/_matrix/client/v3/rooms/{room}/...`.
fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", seg(room))
}

/// A transaction id for a send the host gave no key for (a direct API
/// send): unique through the host's atomic counter.
fn fallback_txn() -> Result<String, Error> {
    let n = kv::increment("txn-counter", 1)?;
    Ok(format!("p{}-{n}", clock::now_ms()))
}

/// `m.text` content for `text` in `format` (Markdown also as
/// `org.matrix.custom.html`).
fn text_content(text: &str, format: TextFormat) -> Value {
    let mut c = json!({"msgtype": "m.text", "body": text});
    if format == TextFormat::Markdown {
        c["format"] = json!("org.matrix.custom.html");
        c["formatted_body"] = json!(html::formatted_body(text));
    }
    c
}

/// Make `content` a reply in the thread (or to the message) `message`
/// answers.
fn relate(content: &mut Value, message: &OutboundMessage) {
    if let Some(thread) = message.thread.as_deref() {
        let reply = message.reply_to.as_deref().unwrap_or(thread);
        content["m.relates_to"] = json!({
            "rel_type": "m.thread",
            "event_id": thread,
            "is_falling_back": message.reply_to.is_none(),
            "m.in_reply_to": {"event_id": reply},
        });
    } else if let Some(reply) = message.reply_to.as_deref() {
        content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": reply}});
    }
}

/// Have the host upload `file` to the content repository (the raw file as
/// the body, the token filled in by the host); its `mxc://` URI.
fn upload(s: &Settings, file: &OutboundAttachment) -> Result<String, Error> {
    let url = format!(
        "{}/_matrix/media/v3/upload?filename={}",
        s.homeserver.trim_end_matches('/'),
        seg(&file.file_name)
    );
    let resp = media::Upload::raw(&url, file)
        .header("authorization", &api::bearer())
        .send()?;
    let v = api::answer("POST", "/_matrix/media/v3/upload", resp.status, &resp.body)?;
    v["content_uri"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::transient("the upload's answer has no content_uri"))
}

/// The `m.room.message` content of an uploaded file: `m.image`, `m.video`,
/// `m.audio` or `m.file`, its caption (else its name) as the body.
fn file_content(file: &OutboundAttachment, uri: &str) -> Value {
    let msgtype = match file.kind {
        AttachmentKind::Image | AttachmentKind::Sticker => "m.image",
        AttachmentKind::Video => "m.video",
        AttachmentKind::Audio | AttachmentKind::Voice => "m.audio",
        AttachmentKind::Document => "m.file",
    };
    let body = file
        .caption
        .clone()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| file.file_name.clone());
    json!({
        "msgtype": msgtype,
        "body": body,
        "filename": file.file_name,
        "url": uri,
        "info": {"mimetype": file.mime_type, "size": file.size},
    })
}

/// PUT one `m.room.message` with transaction id `txn`; the event id.
fn put_message(s: &Settings, room: &str, txn: &str, content: &Value) -> Result<String, Error> {
    let path = room_path(room, &format!("send/m.room.message/{}", seg(txn)));
    let v = api::call(
        &s.homeserver,
        "PUT",
        &path,
        Some(content),
        api::CALL_TIMEOUT_MS,
    )?;
    v["event_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::transient("the homeserver's answer has no event_id"))
}

/// Join `room` (an invite).
fn join(s: &Settings, room: &str) -> Result<(), Error> {
    api::call(
        &s.homeserver,
        "POST",
        &format!("/_matrix/client/v3/join/{}", seg(room)),
        Some(&json!({})),
        api::CALL_TIMEOUT_MS,
    )
    .map(drop)
}

/// What the poll looks up through the API and the key-value store.
struct Rooms<'a> {
    s: &'a Settings,
}

impl sync::Lookup for Rooms<'_> {
    fn is_direct(&mut self, room: &str) -> bool {
        if kv::get_string(&format!("dm:{room}"))
            .ok()
            .flatten()
            .is_some()
        {
            return true;
        }
        let key = format!("members:{room}");
        if let Ok(Some(n)) = kv::get_string(&key)
            && let Ok(n) = n.parse::<u64>()
        {
            return n == 2;
        }
        let path = room_path(room, "joined_members");
        match api::call(&self.s.homeserver, "GET", &path, None, api::CALL_TIMEOUT_MS) {
            Ok(v) => {
                let n = v["joined"].as_object().map_or(0, |m| m.len() as u64);
                let _ = kv::set_string(&key, &n.to_string());
                n == 2
            }
            Err(e) => {
                log::warn(
                    "reading a room's members failed; taking it as a group",
                    &[("room", room), ("error", &e.to_string())],
                );
                false
            }
        }
    }

    fn sender_of(&mut self, room: &str, event: &str) -> Option<String> {
        let path = room_path(room, &format!("event/{}", seg(event)));
        api::call(&self.s.homeserver, "GET", &path, None, api::CALL_TIMEOUT_MS)
            .ok()
            .and_then(|v| v["sender"].as_str().map(str::to_string))
    }
}

/// Join the invites `auto_join` allows (a failed join is logged: the
/// inviter can invite again).
fn handle_invites(s: &Settings, invites: &[sync::Invite]) {
    for i in invites {
        let wanted = match s.auto_join {
            AutoJoin::All => true,
            AutoJoin::Direct => i.is_direct,
            AutoJoin::None => false,
        };
        if !wanted {
            log::info(
                "invite not joined (auto_join)",
                &[("room", &i.room), ("inviter", &i.inviter)],
            );
            continue;
        }
        match join(s, &i.room) {
            Ok(()) => {
                if i.is_direct {
                    let _ = kv::set_string(&format!("dm:{}", i.room), &i.inviter);
                }
                log::info(
                    "joined on invite",
                    &[("room", &i.room), ("inviter", &i.inviter)],
                );
            }
            Err(e) => log::warn(
                "joining on invite failed",
                &[("room", &i.room), ("error", &e.to_string())],
            ),
        }
    }
}

/// Tell an encrypted room, once, that the bot cannot read it (an
/// unencrypted notice every member can read; the transaction id is derived
/// from the room, so even a repeat is dropped by the homeserver).
fn handle_encrypted(s: &Settings, rooms: &[String]) {
    for room in rooms {
        let key = format!("e2ee:{room}");
        if kv::get_string(&key).ok().flatten().is_some() {
            continue;
        }
        log::warn(
            "an end-to-end encrypted message cannot be read; telling the room",
            &[("room", room)],
        );
        let txn = format!("e2ee-{:016x}", fnv1a(room.as_bytes()));
        let content = json!({"msgtype": "m.notice", "body": ENCRYPTED_NOTICE});
        match put_message(s, room, &txn, &content) {
            Ok(_) => {
                let _ = kv::set_string(&key, "1");
            }
            Err(e) => log::warn(
                "the encrypted-room notice failed",
                &[("room", room), ("error", &e.to_string())],
            ),
        }
    }
}

/// FNV-1a, 64 bits (a stable, short name for a room in a transaction id).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Remember what a sync said about rooms (member counts, `m.direct`).
fn remember_rooms(batch: &sync::Batch) {
    for (room, n) in &batch.member_counts {
        let _ = kv::set_string(&format!("members:{room}"), &n.to_string());
    }
    for room in &batch.direct_rooms {
        let _ = kv::set_string(&format!("dm:{room}"), "m.direct");
    }
}

struct Matrix;

impl Channel for Matrix {
    fn name() -> String {
        "matrix".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            edit: true,
            typing: true,
            max_message_length: MAX_MESSAGE_CHARS,
            streaming: StreamStyle::Edit,
            min_edit_interval_ms: 1_000,
            typing_ttl_ms: TYPING_MS - 1_000,
            read_receipts: true,
            attachments: true,
            ..pincer_sdk::capabilities(ReceiveMode::Poll)
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let (homeserver, user_id, auto_join) = parse_config(&config)?;
        if !secrets::exists(api::TOKEN_SECRET) {
            return Err(Error::config(
                "grant the secret `access_token` (the bot's access token): secrets = { access_token = \"env:MATRIX_ACCESS_TOKEN\" }",
            ));
        }
        let who = api::call(
            &homeserver,
            "GET",
            "/_matrix/client/v3/account/whoami",
            None,
            api::CALL_TIMEOUT_MS,
        )?;
        let actual = who["user_id"].as_str().unwrap_or_default().to_string();
        if let Some(u) = &user_id
            && *u != actual
        {
            return Err(Error::config(format!(
                "config `user_id` is {u} but the access token belongs to {actual}"
            )));
        }
        let display_name = api::call(
            &homeserver,
            "GET",
            &format!("/_matrix/client/v3/profile/{}/displayname", seg(&actual)),
            None,
            api::CALL_TIMEOUT_MS,
        )
        .ok()
        .and_then(|v| v["displayname"].as_str().map(str::to_string));
        let s = Settings {
            homeserver,
            me: Me {
                user_id: actual,
                display_name,
            },
            auto_join,
            started_ms: clock::now_ms(),
        };
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(s));
        Ok(())
    }

    fn poll(cursor: Option<String>, wait_ms: u32) -> Result<PollBatch, Error> {
        let s = settings()?;
        let filter = seg(sync::FILTER);
        // The first sync (no cursor) returns at once, with history; later
        // ones wait for news. History is what was sent before the first
        // sync of this store: the cut-off is kept, because the homeserver
        // may answer a first sync from its response cache with an older
        // token (Synapse does, for two minutes), whose next syncs then
        // bring history too.
        let (path, timeout) = match cursor.as_deref() {
            None => {
                kv::set_string(HISTORY_KEY, &s.started_ms.to_string())?;
                (
                    format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
                    0,
                )
            }
            Some(since) => {
                let wait = u64::from(wait_ms).min(MAX_POLL_MS);
                (
                    format!(
                        "/_matrix/client/v3/sync?timeout={wait}&filter={filter}&since={}",
                        seg(since)
                    ),
                    wait,
                )
            }
        };
        let not_before = kv::get_string(HISTORY_KEY)?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let answer = api::call(&s.homeserver, "GET", &path, None, timeout + POLL_SLACK_MS)?;
        let batch = sync::read(&answer, &s.me, not_before, &mut Rooms { s: &s });
        remember_rooms(&batch);
        handle_invites(&s, &batch.invites);
        handle_encrypted(&s, &batch.encrypted_rooms);
        let next = batch
            .next_batch
            .ok_or_else(|| Error::transient("the /sync answer has no next_batch"))?;
        Ok(PollBatch {
            messages: batch.messages,
            cursor: (cursor.as_deref() != Some(next.as_str())).then_some(next),
        })
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let s = settings()?;
        if message.text.trim().is_empty() && message.attachments.is_empty() {
            return Err(Error::permanent("nothing to send (empty text, no files)"));
        }
        let key = match delivery::idempotency_key() {
            Some(k) => k,
            None => fallback_txn()?,
        };
        // Every file is uploaded before anything is posted, so a failed
        // upload posts nothing (the host's retry then posts no duplicate).
        let files = message
            .attachments
            .iter()
            .map(|f| upload(&s, f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut first = None;
        if !message.text.trim().is_empty() {
            let mut content = text_content(&message.text, message.format);
            relate(&mut content, &message);
            first = Some(put_message(&s, &message.conversation, &key, &content)?);
        }
        // One event per file, each with its own transaction id derived
        // from the message's (a retry posts none of them twice).
        for (i, (file, uri)) in message.attachments.iter().zip(&files).enumerate() {
            let mut content = file_content(file, uri);
            relate(&mut content, &message);
            let id = put_message(&s, &message.conversation, &format!("{key}-f{i}"), &content)?;
            first.get_or_insert(id);
        }
        first.ok_or_else(|| Error::permanent("nothing was sent"))
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        let s = settings()?;
        let new = text_content(&text, format);
        let mut content = text_content(&format!("* {text}"), TextFormat::Plain);
        if let Some(html) = new.get("formatted_body").and_then(Value::as_str) {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(format!("* {html}"));
        }
        content["m.new_content"] = new;
        content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": message_id});
        let txn = match delivery::idempotency_key() {
            Some(k) => k,
            None => fallback_txn()?,
        };
        put_message(&s, &conversation, &txn, &content).map(drop)
    }

    fn typing(target: ChatTarget) -> Result<(), Error> {
        let s = settings()?;
        let path = room_path(
            &target.conversation,
            &format!("typing/{}", seg(&s.me.user_id)),
        );
        api::call(
            &s.homeserver,
            "PUT",
            &path,
            Some(&json!({"typing": true, "timeout": TYPING_MS})),
            api::CALL_TIMEOUT_MS,
        )
        .map(drop)
    }

    fn mark_read(target: ChatTarget) -> Result<(), Error> {
        let s = settings()?;
        let event = target
            .message_id
            .as_deref()
            .ok_or_else(|| Error::permanent("a read receipt needs the message's event id"))?;
        let path = room_path(
            &target.conversation,
            &format!("receipt/m.read/{}", seg(event)),
        );
        api::call(
            &s.homeserver,
            "POST",
            &path,
            Some(&json!({})),
            api::CALL_TIMEOUT_MS,
        )
        .map(drop)
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        let s = settings()?;
        let (server, media) = handle
            .strip_prefix("mxc://")
            .and_then(|r| r.split_once('/'))
            .filter(|(srv, id)| !srv.is_empty() && !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| Error::permanent(format!("{handle:?} is not an mxc:// URI")))?;
        Ok(DownloadRequest {
            url: format!(
                "{}/_matrix/client/v1/media/download/{}/{}",
                s.homeserver,
                seg(server),
                seg(media)
            ),
            headers: vec![("authorization".into(), api::bearer())],
            mime_type: None,
            file_name: None,
        })
    }
}

pincer_sdk::export_channel!(Matrix);

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, &str)]) -> Config {
        Config(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn config_defaults_and_errors() {
        let (hs, user, join) =
            parse_config(&cfg(&[("homeserver", "http://127.0.0.1:8008/")])).unwrap();
        assert_eq!(
            (hs.as_str(), user, join),
            ("http://127.0.0.1:8008", None, AutoJoin::Direct)
        );
        assert!(
            matches!(parse_config(&cfg(&[])), Err(Error::Config(m)) if m.contains("homeserver"))
        );
        assert!(parse_config(&cfg(&[("homeserver", "matrix.org")])).is_err());
        assert!(
            matches!(parse_config(&cfg(&[("homeserver", "https://m.org"), ("user_id", "bot")])), Err(Error::Config(m)) if m.contains("user_id"))
        );
        assert!(
            matches!(parse_config(&cfg(&[("homeserver", "https://m.org"), ("auto_join", "some")])), Err(Error::Config(m)) if m.contains("auto_join"))
        );
        let (_, user, join) = parse_config(&cfg(&[
            ("homeserver", "https://m.org"),
            ("user_id", "@bot:m.org"),
            ("auto_join", "all"),
        ]))
        .unwrap();
        assert_eq!((user.as_deref(), join), (Some("@bot:m.org"), AutoJoin::All));
    }

    #[test]
    fn markdown_becomes_custom_html() {
        let c = text_content("**hi**\nthere", TextFormat::Markdown);
        assert_eq!(c["body"], "**hi**\nthere");
        assert_eq!(c["format"], "org.matrix.custom.html");
        assert_eq!(c["formatted_body"], "<b>hi</b><br>\nthere");
        assert!(text_content("x", TextFormat::Plain).get("format").is_none());
    }
}
