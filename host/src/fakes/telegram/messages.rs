//! Messages in the Telegram fake: what users push (as updates) and what
//! the bot sends: `sendMessage`, `editMessageText`, `sendChatAction`,
//! `sendMessageDraft`,
//! `getFile`, `sendPhoto` / `sendDocument`, with Telegram's checks and
//! error texts.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::api::{ApiError, ApiRequest, ok};
use super::inbound::UserMessage;
use super::markup::{ParseMode, plain_text};
use super::state::{ChatAction, ChatState, Draft, Upload};
use super::{BotCore, FileRef, Pushed, Shared};

/// `text` limit of `sendMessage` / `editMessageText` (characters after
/// entity parsing).
const TEXT_LIMIT: usize = 4096;
/// `caption` limit.
const CAPTION_LIMIT: usize = 1024;
/// `getFile` download limit.
const DOWNLOAD_LIMIT: usize = 20 * 1024 * 1024;
/// Upload limit of `sendDocument` (and the other multipart methods).
const UPLOAD_LIMIT: usize = 50 * 1024 * 1024;
/// Valid `sendChatAction` actions.
const ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Queue a user's message as an update.
pub(super) fn push_user_message(bot: &BotCore, shared: &Shared, msg: UserMessage) -> Pushed {
    let entities = msg.entities();
    // File JSON first: no bot-state lock while the file table is locked.
    let photo = msg.photo.as_ref().map(|f| {
        let data = shared
            .files
            .lock()
            .get(&f.file_id)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let thumb = shared.add_file(data, "thumb.jpg", &f.mime_type);
        json!([photo_size(&thumb, 90, 90), photo_size(f, 1280, 960)])
    });
    let date = now_unix();
    let mut s = bot.state.lock();
    let chat = s
        .chats
        .entry(msg.chat.id)
        .or_insert_with(|| ChatState::new(msg.chat.to_json(), msg.chat.is_forum));
    let (message_id, kind) = match msg.edit_of {
        Some(id) => {
            assert!(
                chat.messages.contains_key(&id),
                "fake Telegram: edit of message {id}, which chat {} does not have",
                msg.chat.id
            );
            (id, "edited_message")
        }
        None => (chat.next_id(), "message"),
    };
    let mut m = json!({
        "message_id": message_id,
        "from": msg.from.to_json(),
        "chat": chat.chat.clone(),
        "date": date,
    });
    if let Some(t) = &msg.text {
        m["text"] = json!(t);
        if !entities.is_empty() {
            m["entities"] = json!(entities);
        }
    }
    if let Some(c) = &msg.caption {
        m["caption"] = json!(c);
        if !entities.is_empty() {
            m["caption_entities"] = json!(entities);
        }
    }
    if let Some(t) = msg.thread_id {
        m["message_thread_id"] = json!(t);
        if chat.is_forum {
            m["is_topic_message"] = json!(true);
        }
    }
    if let Some(r) = msg.reply_to {
        let Some(reply) = chat.reply_copy(r) else {
            panic!(
                "fake Telegram: reply to message {r}, which chat {} does not have",
                msg.chat.id
            );
        };
        m["reply_to_message"] = reply;
    }
    if let Some(p) = photo {
        m["photo"] = p;
    }
    if let Some(d) = &msg.document {
        m["document"] = document_json(d);
    }
    if msg.edit_of.is_some() {
        m["edit_date"] = json!(date);
    }
    chat.messages.insert(message_id, m.clone());
    let update_id = s.enqueue(json!({ kind: m }));
    Pushed {
        update_id,
        message_id,
    }
}

fn photo_size(f: &FileRef, width: u32, height: u32) -> Value {
    json!({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
        "file_size": f.size, "width": width, "height": height})
}

fn document_json(f: &FileRef) -> Value {
    json!({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
        "file_name": f.file_name, "mime_type": f.mime_type, "file_size": f.size})
}

fn parse_mode(req: &ApiRequest) -> Result<Option<ParseMode>, ApiError> {
    ParseMode::from_param(&req.str("parse_mode").unwrap_or_default()).map_err(ApiError::bad)
}

/// Parse `text` under the request's `parse_mode` (unless `entities` were
/// given); returns the plain text and the explicit entities.
fn parse_body(
    req: &ApiRequest,
    text: &str,
    entities_param: &str,
) -> Result<(String, Option<Value>), ApiError> {
    let entities = req.json(entities_param)?;
    if let Some(e) = &entities
        && !e.is_array()
    {
        return Err(ApiError::bad(format!(
            "can't parse {entities_param} JSON array"
        )));
    }
    let mode = if entities.is_some() {
        None
    } else {
        parse_mode(req)?
    };
    let plain =
        plain_text(text, mode).map_err(|e| ApiError::bad(format!("can't parse entities: {e}")))?;
    Ok((plain, entities))
}

/// A new bot message in `chat`: id, sender, date, topic and reply
/// (`reply_parameters` or the legacy `reply_to_message_id`).
fn new_bot_message(
    bot: &BotCore,
    chat: &mut ChatState,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    let thread = req.int("message_thread_id")?;
    if chat.is_forum && thread == Some(1) {
        return Err(ApiError::bad("message thread not found"));
    }
    let reply_params = req.json("reply_parameters")?;
    let (reply_to, allow_without) = match &reply_params {
        Some(p) => (
            p["message_id"].as_i64(),
            p["allow_sending_without_reply"].as_bool().unwrap_or(false),
        ),
        None => (
            req.int("reply_to_message_id")?,
            req.flag("allow_sending_without_reply"),
        ),
    };
    if reply_params.is_some() && reply_to.is_none() {
        return Err(ApiError::bad("message to be replied not found"));
    }
    let reply = match reply_to {
        Some(id) => match chat.reply_copy(id) {
            Some(r) => Some(r),
            None if allow_without => None,
            None => return Err(ApiError::bad("message to be replied not found")),
        },
        None => None,
    };
    let id = chat.next_id();
    let mut m = json!({
        "message_id": id,
        "from": bot.user_json(),
        "chat": chat.chat.clone(),
        "date": now_unix(),
    });
    if let Some(t) = thread
        && chat.is_forum
    {
        m["message_thread_id"] = json!(t);
        m["is_topic_message"] = json!(true);
    }
    if let Some(r) = reply {
        m["reply_to_message"] = r;
    }
    Ok(m)
}

/// `sendMessage`.
pub(super) fn send_message(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let text = req.str("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    let (plain, entities) = parse_body(req, &text, "entities")?;
    if plain.trim().is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    if plain.chars().count() > TEXT_LIMIT {
        return Err(ApiError::bad("message is too long"));
    }
    let link_preview = req.json("link_preview_options")?;
    let reply_markup = req.json("reply_markup")?;
    let mode = if entities.is_some() {
        None
    } else {
        parse_mode(req)?
    };
    let m = {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        let mut m = new_bot_message(bot, chat, req)?;
        m["text"] = json!(plain);
        if let Some(e) = &entities {
            m["entities"] = e.clone();
        }
        if let Some(l) = link_preview {
            m["link_preview_options"] = l;
        }
        if let Some(r) = &reply_markup {
            m["reply_markup"] = r.clone();
        }
        let id = m["message_id"].as_i64().unwrap_or(0);
        chat.messages.insert(id, m.clone());
        chat.sent.push(id);
        chat.sent_source
            .insert(id, (text, mode, json!([entities, reply_markup])));
        m
    };
    bot.changes.bump();
    Ok(ok(m))
}

/// `editMessageText`.
pub(super) fn edit_message_text(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    if req.str("inline_message_id").is_some() && req.str("chat_id").is_none() {
        return Err(ApiError::bad("message to edit not found"));
    }
    let chat_id = req.chat_id()?;
    let Some(message_id) = req.int("message_id")? else {
        return Err(ApiError::bad("message identifier is not specified"));
    };
    let text = req.str("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    let (plain, entities) = parse_body(req, &text, "entities")?;
    if plain.trim().is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    if plain.chars().count() > TEXT_LIMIT {
        return Err(ApiError::bad("message is too long"));
    }
    let reply_markup = req.json("reply_markup")?;
    let mode = if entities.is_some() {
        None
    } else {
        parse_mode(req)?
    };
    let m = {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        let Some(current) = chat.messages.get(&message_id) else {
            return Err(ApiError::bad("message to edit not found"));
        };
        if !chat.sent.contains(&message_id) {
            return Err(ApiError::bad("message can't be edited"));
        }
        if current.get("text").is_none() {
            return Err(ApiError::bad("there is no text in the message to edit"));
        }
        let extras = json!([entities, reply_markup]);
        let unchanged = chat
            .sent_source
            .get(&message_id)
            .is_some_and(|(t, md, ex)| {
                current["text"].as_str() == Some(plain.as_str())
                    && (t == &text && *md == mode || md.is_none() && mode.is_none())
                    && *ex == extras
            });
        if unchanged {
            return Err(ApiError::bad(
                "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            ));
        }
        let mut m = current.clone();
        m["text"] = json!(plain);
        m["edit_date"] = json!(now_unix());
        match &entities {
            Some(e) => m["entities"] = e.clone(),
            None => {
                if let Some(o) = m.as_object_mut() {
                    o.remove("entities");
                }
            }
        }
        if let Some(r) = &reply_markup {
            m["reply_markup"] = r.clone();
        }
        chat.messages.insert(message_id, m.clone());
        chat.sent_source.insert(message_id, (text, mode, extras));
        m
    };
    bot.changes.bump();
    Ok(ok(m))
}

/// `sendChatAction`.
pub(super) fn send_chat_action(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let action = req.str("action").unwrap_or_default();
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad("wrong parameter action in request"));
    }
    let thread_id = req.int("message_thread_id")?;
    {
        let mut s = bot.state.lock();
        if !s.chats.contains_key(&chat_id) {
            return Err(ApiError::bad("chat not found"));
        }
        s.actions.push(ChatAction {
            chat_id,
            action,
            thread_id,
        });
    }
    bot.changes.bump();
    Ok(ok(json!(true)))
}

/// `sendMessageDraft`: a live draft, private chats only, `draft_id` non-zero,
/// text up to 4096 characters (empty allowed: a "thinking" placeholder).
pub(super) fn send_message_draft(bot: &Arc<BotCore>, req: &ApiRequest) -> Result<Value, ApiError> {
    let chat_id = req.chat_id()?;
    let draft_id = req.int("draft_id")?.unwrap_or(0);
    if draft_id == 0 {
        return Err(ApiError::bad("draft_id must be non-zero"));
    }
    let text = req.str("text").unwrap_or_default();
    if text.chars().count() > 4096 {
        return Err(ApiError::bad("message is too long"));
    }
    let thread_id = req.int("message_thread_id")?;
    {
        let mut s = bot.state.lock();
        let Some(chat) = s.chats.get(&chat_id) else {
            return Err(ApiError::bad("chat not found"));
        };
        if chat.chat["type"] != "private" {
            return Err(ApiError::bad("drafts can be sent only to private chats"));
        }
        s.drafts.push(Draft {
            chat_id,
            draft_id,
            text,
            thread_id,
        });
    }
    bot.changes.bump();
    Ok(ok(json!(true)))
}

/// `getFile`.
pub(super) fn get_file(shared: &Arc<Shared>, req: &ApiRequest) -> Result<Value, ApiError> {
    let Some(file_id) = req.str("file_id").filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad("file_id is empty"));
    };
    let f = shared
        .file(&file_id)
        .ok_or_else(|| ApiError::bad("invalid file_id"))?;
    if f.size > DOWNLOAD_LIMIT {
        return Err(ApiError::bad("file is too big"));
    }
    Ok(ok(
        json!({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
        "file_size": f.size, "file_path": f.file_path}),
    ))
}

/// `sendPhoto` / `sendDocument`: the file as a multipart part (directly,
/// or referenced as `attach://name`), a known `file_id`, or an HTTP URL.
pub(super) fn send_file(
    shared: &Arc<Shared>,
    bot: &Arc<BotCore>,
    method: &str,
    req: &ApiRequest,
) -> Result<Value, ApiError> {
    let field = if method == "sendPhoto" {
        "photo"
    } else {
        "document"
    };
    let chat_id = req.chat_id()?;
    let given = req.str(field);
    let part = match given.as_deref() {
        Some(v) if v.starts_with("attach://") => req.part(&v["attach://".len()..]),
        _ => req.part(field).filter(|p| p.is_file()),
    };
    let (file, data, source, file_name, mime) = if let Some(p) = part {
        if p.data.is_empty() {
            return Err(ApiError::bad("file must be non-empty"));
        }
        if p.data.len() > UPLOAD_LIMIT {
            return Err(ApiError {
                code: 413,
                description: "Request Entity Too Large".into(),
                parameters: None,
            });
        }
        let default_mime = if field == "photo" {
            "image/jpeg"
        } else {
            "application/octet-stream"
        };
        let name = p.file_name.clone().unwrap_or_else(|| "file".into());
        let mime = p
            .content_type
            .clone()
            .unwrap_or_else(|| default_mime.into());
        let f = shared.add_file(p.data.clone(), &name, &mime);
        (
            f,
            p.data.clone(),
            "upload",
            p.file_name.clone(),
            p.content_type.clone(),
        )
    } else {
        match given {
            None => return Err(ApiError::bad(format!("there is no {field} in the request"))),
            Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                let name = v.rsplit('/').next().unwrap_or("file").to_string();
                let f = shared.add_file(Bytes::new(), &name, "application/octet-stream");
                (f, Bytes::new(), "url", None, None)
            }
            Some(v) => match shared.file(&v) {
                Some(f) => (f, Bytes::new(), "file_id", None, None),
                None => {
                    return Err(ApiError::bad("wrong file identifier/HTTP URL specified"));
                }
            },
        }
    };
    let caption = req.str("caption").filter(|c| !c.is_empty());
    let plain_caption = match &caption {
        Some(c) => {
            let (plain, _) = parse_body(req, c, "caption_entities")?;
            if plain.chars().count() > CAPTION_LIMIT {
                return Err(ApiError::bad("message caption is too long"));
            }
            Some(plain)
        }
        None => None,
    };
    let m = {
        let mut s = bot.state.lock();
        let chat = s
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiError::bad("chat not found"))?;
        let mut m = new_bot_message(bot, chat, req)?;
        if field == "photo" {
            m["photo"] = json!([photo_size(&file, 1280, 960)]);
        } else {
            m["document"] = document_json(&file);
        }
        if let Some(c) = &plain_caption {
            m["caption"] = json!(c);
        }
        let id = m["message_id"].as_i64().unwrap_or(0);
        chat.messages.insert(id, m.clone());
        chat.sent.push(id);
        s.uploads.push(Upload {
            method: method.into(),
            chat_id,
            data,
            file_name,
            mime_type: mime,
            caption,
            source,
            file_id: file.file_id.clone(),
            message_id: id,
        });
        m
    };
    bot.changes.bump();
    Ok(ok(m))
}
