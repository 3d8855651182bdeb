//! `whatsapp`: the WhatsApp Cloud API (Meta Graph) as a Pincer channel.
//!
//! Webhook mode. Meta pushes to `/channels/whatsapp/webhook`; the host
//! answers the GET `hub.challenge` handshake (secret `verify_token`) and
//! checks `X-Hub-Signature-256` over the raw body (secret `app_secret`)
//! before this plugin sees a byte ([`payload`] reads what passed). Replies
//! go to `POST /{api_version}/{phone_number_id}/messages` with the bearer
//! `{{secret:access_token}}`, which the host fills in for the Graph hosts
//! only ([`graph`]); Markdown is rendered into WhatsApp's formatting
//! ([`markdown`]). Read receipts and the typing indicator use the inbound
//! message id; media are looked up by id and downloaded by the host with
//! the same bearer; outbound files are uploaded by the host (`media.upload`)
//! and sent by the returned id. Nothing is kept between calls except the
//! validated configuration ([`settings`]).

pub mod graph;
pub mod markdown;
pub mod payload;
pub mod settings;

use pincer_sdk::{
    AttachmentKind, Capabilities, Channel, ChatTarget, Config, DownloadRequest, Error,
    OutboundAttachment, OutboundMessage, ReceiveMode, StreamStyle, TextFormat, WebhookRequest,
    WebhookResponse, log, media, secrets,
};
use serde_json::{Value, json};

use settings::Settings;

/// Longest `text.body` Graph accepts, in characters.
pub const MAX_TEXT: u32 = 4096;
/// Longest media caption Graph accepts, in characters.
pub const MAX_CAPTION: usize = 1024;
/// How long one typing indicator shows (until the reply or 25 s).
pub const TYPING_TTL_MS: u32 = 25_000;

struct WhatsApp;

fn field(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// The message id in a `messages` answer. A success without one is
/// reported as permanent, not transient: Graph accepted the request, and a
/// retry could deliver the message twice.
fn sent_id(answer: &Value) -> Result<String, Error> {
    answer
        .pointer("/messages/0/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::permanent(format!(
                "Graph accepted the message but answered without its id: {answer}"
            ))
        })
}

/// The Graph message type and whether it takes a caption.
fn media_type(kind: AttachmentKind) -> (&'static str, bool) {
    match kind {
        AttachmentKind::Image => ("image", true),
        AttachmentKind::Video => ("video", true),
        AttachmentKind::Document => ("document", true),
        AttachmentKind::Audio | AttachmentKind::Voice => ("audio", false),
        AttachmentKind::Sticker => ("sticker", false),
    }
}

fn envelope(to: &str, reply_to: Option<&str>) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
    });
    if let Some(id) = reply_to {
        body["context"] = json!({ "message_id": id });
    }
    body
}

/// Upload one file through the host (`media.upload`); the media id.
fn upload(s: &Settings, file: &OutboundAttachment) -> Result<String, Error> {
    let resp = media::Upload::new(&s.media_url(), "file", file)
        .header("authorization", &graph::bearer())
        .field("messaging_product", "whatsapp")
        .field("type", &file.mime_type)
        .send()?;
    let uploaded = graph::answer(&resp)?;
    uploaded
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::transient(format!("media upload answered without an id: {uploaded}")))
}

/// Send an uploaded file by its media id.
fn send_media(
    s: &Settings,
    to: &str,
    reply_to: Option<&str>,
    file: &OutboundAttachment,
    media_id: &str,
    caption: Option<&str>,
) -> Result<String, Error> {
    let (kind, captioned) = media_type(file.kind);
    let mut object = json!({ "id": media_id });
    if captioned && let Some(c) = caption.filter(|c| !c.is_empty()) {
        object["caption"] = json!(c.chars().take(MAX_CAPTION).collect::<String>());
    }
    if kind == "document" {
        object["filename"] = json!(file.file_name);
    }
    let mut body = envelope(to, reply_to);
    body["type"] = json!(kind);
    body[kind] = object;
    sent_id(&graph::post_json(&s.messages_url(), &body)?)
}

fn send_text(s: &Settings, to: &str, reply_to: Option<&str>, text: &str) -> Result<String, Error> {
    let mut body = envelope(to, reply_to);
    body["type"] = json!("text");
    body["text"] = json!({ "body": text, "preview_url": false });
    sent_id(&graph::post_json(&s.messages_url(), &body)?)
}

/// The read (+ typing) call on the inbound message `target` names.
fn read_receipt(target: &ChatTarget, typing: bool, what: &str) -> Result<(), Error> {
    let s = Settings::current()?;
    let Some(id) = target.message_id.as_deref().filter(|i| !i.is_empty()) else {
        return Err(Error::permanent(format!(
            "WhatsApp's {what} needs the inbound message id (chat-target.message-id)"
        )));
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": id,
    });
    if typing {
        body["typing_indicator"] = json!({ "type": "text" });
    }
    graph::post_json(&s.messages_url(), &body).map(|_| ())
}

impl Channel for WhatsApp {
    fn name() -> String {
        "whatsapp".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            typing: true,
            read_receipts: true,
            attachments: true,
            max_message_length: MAX_TEXT,
            streaming: StreamStyle::FinalOnly,
            typing_ttl_ms: TYPING_TTL_MS,
            ..pincer_sdk::capabilities(ReceiveMode::Webhook)
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let s = Settings::from_config(&config)?;
        if !secrets::exists("access_token") {
            return Err(Error::config(
                "grant the secret `access_token` (a WhatsApp system-user or temporary access token)",
            ));
        }
        s.install();
        Ok(())
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        if request.method != "POST" {
            return Ok(pincer_sdk::webhook_text(
                405,
                "POST WhatsApp webhook payloads here",
            ));
        }
        let s = Settings::current()?;
        let parsed = match payload::parse(
            &request.body,
            &s.phone_number_id,
            pincer_sdk::clock::now_ms(),
        ) {
            Ok(p) => p,
            Err(payload::NotWhatsApp::Json(e)) => {
                return Ok(pincer_sdk::webhook_json(
                    400,
                    &json!({ "error": format!("invalid JSON: {e}") }),
                    vec![],
                ));
            }
            Err(payload::NotWhatsApp::Object(o)) => {
                // Signed by Meta but not for this channel (another product
                // subscribed to the same app): acknowledge, or Meta retries.
                log::info("push for another Graph object ignored", &[("object", &o)]);
                return Ok(pincer_sdk::webhook_json(
                    200,
                    &json!({"ignored": true}),
                    vec![],
                ));
            }
        };
        if parsed.other_numbers > 0 {
            log::debug(
                "changes for other phone numbers ignored",
                &[("count", &parsed.other_numbers.to_string())],
            );
        }
        for (id, kind) in &parsed.skipped {
            log::warn(
                "message type not handed to the agent",
                &[("id", id), ("type", kind)],
            );
        }
        for e in &parsed.errors {
            log::warn("WhatsApp reported an error", &[("error", e)]);
        }
        let body = json!({
            "ok": true,
            "messages": parsed.messages.len(),
            "statuses": parsed.statuses.len(),
        });
        Ok(WebhookResponse {
            statuses: parsed.statuses,
            ..pincer_sdk::webhook_json(200, &body, parsed.messages)
        })
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let s = Settings::current()?;
        let to = message.conversation.trim();
        if to.is_empty() {
            return Err(Error::permanent("no recipient (empty conversation)"));
        }
        let reply_to = message.reply_to.as_deref();
        let text = match message.format {
            TextFormat::Markdown => markdown::render(&message.text),
            TextFormat::Plain => message.text.clone(),
        };
        if text.chars().count() > MAX_TEXT as usize {
            return Err(Error::permanent(format!(
                "text of {} characters is over WhatsApp's limit of {MAX_TEXT}",
                text.chars().count()
            )));
        }
        if message.attachments.is_empty() {
            if text.trim().is_empty() {
                return Err(Error::permanent("nothing to send (empty text, no files)"));
            }
            return send_text(&s, to, reply_to, &text);
        }
        // The text rides as the caption of a single captionable file that
        // has none and when it fits; otherwise it goes first on its own.
        let files = &message.attachments;
        let text_as_caption = files.len() == 1
            && media_type(files[0].kind).1
            && files[0].caption.is_none()
            && text.chars().count() <= MAX_CAPTION;
        // Every file is uploaded before anything is sent, so a failed
        // upload sends nothing (and the host's retry sends no duplicate).
        let media_ids = files
            .iter()
            .map(|f| upload(&s, f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut first = None;
        if !text.trim().is_empty() && !text_as_caption {
            first = Some(send_text(&s, to, reply_to, &text)?);
        }
        for (file, media_id) in files.iter().zip(&media_ids) {
            let caption = if text_as_caption {
                Some(text.as_str())
            } else {
                file.caption.as_deref()
            };
            let id = send_media(&s, to, reply_to, file, media_id, caption)?;
            first.get_or_insert(id);
        }
        first.ok_or_else(|| Error::permanent("nothing was sent"))
    }

    fn typing(target: ChatTarget) -> Result<(), Error> {
        read_receipt(&target, true, "typing indicator")
    }

    fn mark_read(target: ChatTarget) -> Result<(), Error> {
        read_receipt(&target, false, "read receipt")
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        let s = Settings::current()?;
        if handle.is_empty()
            || !handle
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::permanent(format!(
                "not a WhatsApp media id: {handle:?}"
            )));
        }
        let found = graph::get_json(&s.url(&handle))?;
        let Some(url) = found.get("url").and_then(Value::as_str) else {
            return Err(Error::transient(format!(
                "media lookup answered without a url: {found}"
            )));
        };
        Ok(DownloadRequest {
            url: url.to_string(),
            headers: vec![field("authorization", graph::bearer())],
            mime_type: found
                .get("mime_type")
                .and_then(Value::as_str)
                .map(str::to_string),
            file_name: None,
        })
    }
}

pincer_sdk::export_channel!(WhatsApp);
