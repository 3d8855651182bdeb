//! `telegram`: the Telegram Bot API as a Pincer channel.
//!
//! The bot token never enters the sandbox: every request carries the
//! placeholder of the secret `bot_token` in its URL path and the host fills
//! it in (for the manifest's hosts only). In webhook mode the host generates
//! `webhook_secret`, fills it into `setWebhook`'s `secret_token` and checks
//! Telegram's `X-Telegram-Bot-Api-Secret-Token` header on every push before
//! this plugin sees a byte of it.
//!
//! Config (`[plugins.telegram] config = {...}`):
//! - `mode`: `poll` (default; `getUpdates` long polls from the host-owned
//!   cursor) or `webhook` (`setWebhook` on start; pushes to
//!   `/channels/telegram/webhook`);
//! - `api_base`: default `https://api.telegram.org` (a fake or a
//!   self-hosted Bot API server; the operator must allow that host);
//! - `webhook_url`: the public URL Telegram pushes to (webhook mode).
//!
//! `describe` before `start` (when the host loads the plugin) cannot see
//! the config and declares poll mode; the host asks again after `start`,
//! and a channel started in webhook mode then declares webhook mode, so the
//! host runs no poll loop for it. (`poll` in webhook mode, should a host
//! call it anyway, is a watch: it waits, then checks `getWebhookInfo` and
//! sets the webhook again if it went missing, and returns no messages.)

pub mod api;
pub mod inbound;

use std::cell::RefCell;

use pincer_sdk::{
    Capabilities, Channel, ChatTarget, Config, DownloadRequest, Error, OutboundAttachment,
    OutboundMessage, PollBatch, ReceiveMode, StreamStyle, TextFormat, WebhookRequest,
    WebhookResponse, clock, log, media, secrets,
};
use serde_json::{Value, json};

use crate::inbound::Me;

/// Update types this channel asks for (`allowed_updates` is sticky on
/// Telegram's side, so it is always sent explicitly).
pub const ALLOWED_UPDATES: &[&str] = &["message"];
/// Default API base.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// The longest long poll asked of Telegram, in seconds.
const MAX_POLL_S: u64 = 50;
/// How much longer than the poll timeout the HTTP client waits.
const POLL_SLACK_MS: u64 = 10_000;
/// Largest photo `sendPhoto` takes; larger images go as documents.
const PHOTO_MAX_BYTES: u64 = 10 << 20;

/// How the channel receives updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `getUpdates` long polls.
    Poll,
    /// `setWebhook`; updates arrive as pushes.
    Webhook,
}

#[derive(Debug, Clone)]
struct Settings {
    api_base: String,
    mode: Mode,
    webhook_url: Option<String>,
    me: Me,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings() -> Result<Settings, Error> {
    SETTINGS
        .with(|s| s.borrow().clone())
        .ok_or_else(|| Error::config("the channel was not started"))
}

/// Parse and check the operator's config (without contacting Telegram).
fn parse_config(config: &Config) -> Result<(String, Mode, Option<String>), Error> {
    let mode = match config.get_or("mode", "poll").trim() {
        "poll" | "" => Mode::Poll,
        "webhook" => Mode::Webhook,
        other => {
            return Err(Error::config(format!(
                "config `mode` must be `poll` or `webhook`, not {other:?}"
            )));
        }
    };
    let api_base = config
        .get_or("api_base", DEFAULT_API_BASE)
        .trim()
        .trim_end_matches('/')
        .to_string();
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        return Err(Error::config(format!(
            "config `api_base` must be an http(s) URL, not {api_base:?}"
        )));
    }
    let webhook_url = config
        .get("webhook_url")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    if mode == Mode::Webhook {
        match &webhook_url {
            None => {
                return Err(Error::config(
                    "mode = \"webhook\" needs config `webhook_url` (the public https URL of /channels/telegram/webhook)",
                ));
            }
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                return Err(Error::config(format!(
                    "config `webhook_url` must be an https URL, not {u:?}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok((api_base, mode, webhook_url))
}

/// `chat_id` as Telegram wants it: a number, or `@channelusername`.
fn chat_id(conversation: &str) -> Value {
    conversation
        .trim()
        .parse::<i64>()
        .map_or_else(|_| json!(conversation), |n| json!(n))
}

/// A thread id to send into: General (1) is rejected by `sendMessage`, so omitted.
fn send_thread(thread: Option<&str>) -> Option<i64> {
    thread
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|&t| t != 1)
}

/// The text and `parse_mode` to send for `text` in `format`.
fn rendered(text: &str, format: TextFormat) -> (String, Option<&'static str>) {
    match format {
        TextFormat::Plain => (text.to_string(), None),
        TextFormat::Markdown => (pincer_sdk::html::render(text), Some("HTML")),
    }
}

fn set_webhook(s: &Settings) -> Result<(), Error> {
    let url = s.webhook_url.as_deref().unwrap_or_default();
    if !secrets::exists(api::WEBHOOK_SECRET) {
        return Err(Error::config(
            "secret `webhook_secret` is missing (the host generates it unless the operator grants one)",
        ));
    }
    api::call(
        &s.api_base,
        "setWebhook",
        &json!({
            "url": url,
            "secret_token": secrets::placeholder(api::WEBHOOK_SECRET),
            "allowed_updates": ALLOWED_UPDATES,
        }),
        api::CALL_TIMEOUT_MS,
    )?;
    log::info("webhook set", &[("url", url)]);
    Ok(())
}

/// Delete a webhook if one is set (a bot cannot poll while it has one).
fn delete_webhook_if_set(api_base: &str) -> Result<(), Error> {
    let info = api::call(api_base, "getWebhookInfo", &json!({}), api::CALL_TIMEOUT_MS)?;
    if info["url"].as_str().is_some_and(|u| !u.is_empty()) {
        api::call(
            api_base,
            "deleteWebhook",
            &json!({"drop_pending_updates": false}),
            api::CALL_TIMEOUT_MS,
        )?;
        log::info("webhook deleted to poll with getUpdates", &[]);
    }
    Ok(())
}

/// The `{chat}:{message_id}` key of a sent message in `result`.
fn sent_id(conversation: &str, result: &Value) -> Result<String, Error> {
    let id = result
        .get("message_id")
        .ok_or_else(|| Error::transient("Telegram's answer has no message_id"))?;
    Ok(inbound::message_key(&json!(conversation), id))
}

/// Upload one attachment with `sendPhoto` or `sendDocument` (multipart, by
/// the host); returns the sent message's key.
fn send_file(
    s: &Settings,
    message: &OutboundMessage,
    file: &OutboundAttachment,
) -> Result<String, Error> {
    let photo = matches!(file.kind, pincer_sdk::AttachmentKind::Image)
        && matches!(
            file.mime_type.as_str(),
            "image/jpeg" | "image/png" | "image/webp"
        )
        && file.size <= PHOTO_MAX_BYTES;
    let (method, field) = if photo {
        ("sendPhoto", "photo")
    } else {
        ("sendDocument", "document")
    };
    let mut upload = media::Upload::new(&api::method_url(&s.api_base, method), field, file)
        .field("chat_id", message.conversation.trim());
    if let Some(caption) = file.caption.as_deref().filter(|c| !c.is_empty()) {
        upload = upload.field("caption", caption);
    }
    if let Some(t) = send_thread(message.thread.as_deref()) {
        upload = upload.field("message_thread_id", &t.to_string());
    }
    if let Some(id) = message.reply_to.as_deref().and_then(inbound::message_id_of) {
        let reply = json!({"message_id": id, "allow_sending_without_reply": true}).to_string();
        upload = upload.field("reply_parameters", &reply);
    }
    let resp = upload.send()?;
    let result = api::answer(method, resp.status, &resp.body)?;
    sent_id(&message.conversation, &result)
}

struct Telegram;

/// Check the webhook with `getWebhookInfo`; set it again if it went
/// missing or points elsewhere.
fn ensure_webhook(s: &Settings) -> Result<(), Error> {
    let info = api::call(
        &s.api_base,
        "getWebhookInfo",
        &json!({}),
        api::CALL_TIMEOUT_MS,
    )?;
    if info["url"].as_str() != s.webhook_url.as_deref() {
        log::warn(
            "the webhook went missing or points elsewhere; setting it again",
            &[("was", info["url"].as_str().unwrap_or_default())],
        );
        set_webhook(s)?;
    } else if let Some(e) = info["last_error_message"].as_str() {
        log::debug("Telegram reports a webhook delivery error", &[("error", e)]);
    }
    Ok(())
}

/// The receive mode to declare: webhook once started in webhook mode.
fn receive_mode() -> ReceiveMode {
    SETTINGS.with(|cell| match cell.borrow().as_ref() {
        Some(s) if s.mode == Mode::Webhook => ReceiveMode::Webhook,
        _ => ReceiveMode::Poll,
    })
}

impl Channel for Telegram {
    fn name() -> String {
        "telegram".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            edit: true,
            typing: true,
            max_message_length: 4096,
            streaming: StreamStyle::Draft,
            min_edit_interval_ms: 1_000,
            typing_ttl_ms: 5_000,
            attachments: true,
            ..pincer_sdk::capabilities(receive_mode())
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let (api_base, mode, webhook_url) = parse_config(&config)?;
        if !secrets::exists(api::TOKEN_SECRET) {
            return Err(Error::config(
                "grant the secret `bot_token` (the token from @BotFather): secrets = { bot_token = \"env:TELEGRAM_BOT_TOKEN\" }",
            ));
        }
        let me = api::call(&api_base, "getMe", &json!({}), api::CALL_TIMEOUT_MS)?;
        let me = Me {
            id: me["id"].as_i64().unwrap_or(0),
            username: me["username"].as_str().unwrap_or_default().to_string(),
        };
        let s = Settings {
            api_base,
            mode,
            webhook_url,
            me,
        };
        match s.mode {
            Mode::Poll => delete_webhook_if_set(&s.api_base)?,
            Mode::Webhook => set_webhook(&s)?,
        }
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(s));
        Ok(())
    }

    fn restart() -> Result<(), Error> {
        // Webhook mode has no poll loop watching the webhook: a restart (by
        // the operator or the health monitor) checks it and sets it again.
        let s = settings()?;
        if s.mode == Mode::Webhook {
            ensure_webhook(&s)?;
        }
        Ok(())
    }

    fn poll(cursor: Option<String>, wait_ms: u32) -> Result<PollBatch, Error> {
        let s = settings()?;
        if s.mode == Mode::Webhook {
            // Pushes bring the messages; this is a watch on the webhook.
            clock::sleep_ms(u64::from(wait_ms).max(1_000));
            ensure_webhook(&s)?;
            return Ok(PollBatch {
                messages: Vec::new(),
                cursor: None,
            });
        }
        let offset = match cursor.as_deref() {
            Some(c) => Some(c.trim().parse::<i64>().map_err(|_| {
                Error::permanent(format!("cursor {c:?} is not a getUpdates offset"))
            })?),
            None => None,
        };
        let timeout_s = (u64::from(wait_ms) / 1_000).clamp(1, MAX_POLL_S);
        let mut body = json!({"timeout": timeout_s, "allowed_updates": ALLOWED_UPDATES});
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let updates = match api::call(
            &s.api_base,
            "getUpdates",
            &body,
            timeout_s * 1_000 + POLL_SLACK_MS,
        ) {
            Ok(u) => u,
            Err(Error::Transient(m)) if m.contains("webhook is set") => {
                // Someone set a webhook meanwhile: remove it, and let the
                // host back off before the next poll.
                if let Err(e) = delete_webhook_if_set(&s.api_base) {
                    log::warn("deleting the webhook failed", &[("error", &e.to_string())]);
                }
                return Err(Error::Transient(m));
            }
            Err(e) => return Err(e),
        };
        let updates = updates.as_array().cloned().unwrap_or_default();
        let mut next = offset;
        let mut messages = Vec::new();
        for u in &updates {
            let Some(id) = u["update_id"].as_i64() else {
                continue;
            };
            next = Some(next.map_or(id + 1, |n: i64| n.max(id + 1)));
            if let Some(m) = inbound::from_update(u, &s.me) {
                messages.push(m);
            }
        }
        Ok(PollBatch {
            messages,
            cursor: next.filter(|n| Some(*n) != offset).map(|n| n.to_string()),
        })
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        if request.method != "POST" {
            return Ok(pincer_sdk::webhook_text(405, "POST updates here"));
        }
        let s = settings()?;
        let update: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(pincer_sdk::webhook_text(
                    400,
                    &format!("not a Telegram update: {e}"),
                ));
            }
        };
        let messages = inbound::from_update(&update, &s.me).into_iter().collect();
        Ok(pincer_sdk::webhook_json(200, &json!({}), messages))
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let s = settings()?;
        let mut first: Option<String> = None;
        if !message.text.trim().is_empty() {
            let (text, parse_mode) = rendered(&message.text, message.format);
            let mut body = json!({
                "chat_id": chat_id(&message.conversation),
                "text": text,
            });
            if let Some(mode) = parse_mode {
                body["parse_mode"] = json!(mode);
            }
            if let Some(t) = send_thread(message.thread.as_deref()) {
                body["message_thread_id"] = json!(t);
            }
            if let Some(id) = message.reply_to.as_deref().and_then(inbound::message_id_of) {
                body["reply_parameters"] =
                    json!({"message_id": id, "allow_sending_without_reply": true});
            }
            let result = api::call(&s.api_base, "sendMessage", &body, api::CALL_TIMEOUT_MS)?;
            first = Some(sent_id(&message.conversation, &result)?);
        }
        for file in &message.attachments {
            let id = send_file(&s, &message, file)?;
            first.get_or_insert(id);
        }
        first.ok_or_else(|| Error::permanent("nothing to send: no text and no attachment"))
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        let s = settings()?;
        let id = inbound::message_id_of(&message_id).ok_or_else(|| {
            Error::permanent(format!("{message_id:?} is not a Telegram message id"))
        })?;
        let (text, parse_mode) = rendered(&text, format);
        let mut body = json!({"chat_id": chat_id(&conversation), "message_id": id, "text": text});
        if let Some(mode) = parse_mode {
            body["parse_mode"] = json!(mode);
        }
        match api::call(&s.api_base, "editMessageText", &body, api::CALL_TIMEOUT_MS) {
            Err(e) if api::is_not_modified(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn draft(target: ChatTarget, draft_id: u64, text: String) -> Result<(), Error> {
        let s = settings()?;
        let mut body = json!({
            "chat_id": chat_id(&target.conversation),
            "draft_id": draft_id.max(1),
            "text": text,
        });
        if let Some(t) = send_thread(target.thread.as_deref()) {
            body["message_thread_id"] = json!(t);
        }
        api::call(&s.api_base, "sendMessageDraft", &body, api::CALL_TIMEOUT_MS).map(|_| ())
    }

    fn typing(target: ChatTarget) -> Result<(), Error> {
        let s = settings()?;
        let mut body = json!({"chat_id": chat_id(&target.conversation), "action": "typing"});
        // Typing takes the General topic too.
        if let Some(t) = target
            .thread
            .as_deref()
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            body["message_thread_id"] = json!(t);
        }
        api::call(&s.api_base, "sendChatAction", &body, api::CALL_TIMEOUT_MS).map(|_| ())
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        let s = settings()?;
        let file = api::call(
            &s.api_base,
            "getFile",
            &json!({"file_id": handle}),
            api::CALL_TIMEOUT_MS,
        )?;
        let path = file["file_path"].as_str().ok_or_else(|| {
            Error::permanent("getFile gave no file_path (files over 20 MB cannot be downloaded from the Bot API)")
        })?;
        Ok(DownloadRequest {
            url: api::file_url(&s.api_base, path),
            headers: Vec::new(),
            mime_type: mime_from_path(path).map(str::to_string),
            file_name: None,
        })
    }
}

/// A MIME type guessed from a `file_path`'s extension.
fn mime_from_path(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "oga" | "ogg" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

pincer_sdk::export_channel!(Telegram);

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
        let (base, mode, hook) = parse_config(&cfg(&[])).unwrap();
        assert_eq!(
            (base.as_str(), mode, hook),
            (DEFAULT_API_BASE, Mode::Poll, None)
        );
        assert!(
            matches!(parse_config(&cfg(&[("mode", "push")])), Err(Error::Config(m)) if m.contains("`mode`"))
        );
        assert!(
            matches!(parse_config(&cfg(&[("mode", "webhook")])), Err(Error::Config(m)) if m.contains("webhook_url"))
        );
        assert!(parse_config(&cfg(&[("api_base", "ftp://x")])).is_err());
        let (base, mode, hook) = parse_config(&cfg(&[
            ("mode", "webhook"),
            ("api_base", "http://127.0.0.1:9/"),
            (
                "webhook_url",
                "https://bot.example.com/channels/telegram/webhook",
            ),
        ]))
        .unwrap();
        assert_eq!(base, "http://127.0.0.1:9");
        assert_eq!(mode, Mode::Webhook);
        assert!(hook.is_some());
    }

    #[test]
    fn threads_chat_ids_and_mime() {
        assert_eq!(send_thread(Some("1")), None);
        assert_eq!(send_thread(Some("77")), Some(77));
        assert_eq!(chat_id("-100123"), json!(-100123));
        assert_eq!(chat_id("@chan"), json!("@chan"));
        assert_eq!(mime_from_path("photos/file_1.jpg"), Some("image/jpeg"));
        assert_eq!(mime_from_path("documents/x"), None);
    }
}
