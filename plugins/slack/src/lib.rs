//! `slack`: Slack as a Pincer channel, through the Events API or Socket
//! Mode.
//!
//! Events API (`mode = "events"`, the default): Slack POSTs to
//! `/channels/slack/webhook`; the host checks `X-Slack-Signature` (v0,
//! secret `signing_secret`) and the 5-minute window of
//! `X-Slack-Request-Timestamp` before this plugin sees a byte, commits
//! what [`events`] hands on to the durable inbox and answers 200 at once
//! (the agent runs after). `url_verification` is answered with its
//! challenge. Slack's retries and redeliveries carry the same message, whose
//! inbox id (`{channel}:{ts}`) the host has already seen, so each is
//! answered once.
//!
//! Socket Mode (`mode = "socket"`): the host keeps a WebSocket open for
//! the account and hands its frames here; envelopes are acknowledged at
//! once and their payloads take the same path as pushes ([`socket`]).
//!
//! Replies go through the Web API ([`api`]) with the bearer
//! `{{secret:bot_token}}`, which the host fills in for Slack's hosts only:
//! `chat.postMessage` in the inbound message's thread, Markdown rendered
//! as `mrkdwn` ([`mrkdwn`]), streaming by `chat.update`, files by
//! `files.getUploadURLExternal` + upload + `files.completeUploadExternal`,
//! inbound files downloaded by the host from `url_private_download` with
//! the same bearer. Slack offers bots no typing indicator and no read
//! receipts, so neither is declared. Nothing is kept between calls except
//! the validated configuration and the bot's identity ([`settings`]).

pub mod api;
pub mod events;
pub mod mrkdwn;
pub mod settings;
pub mod socket;

use pincer_sdk::{
    Capabilities, Channel, Config, DownloadRequest, Error, OutboundAttachment, OutboundMessage,
    ReceiveMode, StreamStyle, TextFormat, WebhookRequest, WebhookResponse, kv, log, media, secrets,
};
use serde_json::{Value, json};

use settings::{Me, Mode, Settings};

/// Longest text one message carries, in characters (Slack truncates
/// `text` past 40,000 and advises staying under 4,000).
pub const MAX_TEXT: u32 = 4000;
/// Smallest gap between two `chat.update` calls on one message (the
/// method is Tier 3: about 50 a minute).
pub const MIN_EDIT_INTERVAL_MS: u32 = 1_200;

struct Slack;

/// The text of `message` as Slack should show it.
fn slack_text(text: &str, format: TextFormat) -> String {
    match format {
        TextFormat::Markdown => mrkdwn::render(text),
        TextFormat::Plain => mrkdwn::escape(text),
    }
}

/// The `ts` of a `chat.postMessage` answer. A success without one is
/// permanent, not transient: Slack posted, and a retry would post twice.
fn posted_ts(answer: &Value) -> Result<String, Error> {
    answer
        .get("ts")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::permanent(format!(
                "Slack accepted the message but answered without its ts: {answer}"
            ))
        })
}

/// Upload one file through the host (`media.upload`) to a URL from
/// `files.getUploadURLExternal`; its file id.
fn upload(s: &Settings, file: &OutboundAttachment) -> Result<String, Error> {
    let length = file.size.to_string();
    let target = api::post_form(
        &s.url("files.getUploadURLExternal"),
        &[("filename", &file.file_name), ("length", &length)],
    )?;
    let (Some(url), Some(id)) = (
        target.get("upload_url").and_then(Value::as_str),
        target.get("file_id").and_then(Value::as_str),
    ) else {
        return Err(Error::transient(format!(
            "files.getUploadURLExternal answered without upload_url/file_id: {target}"
        )));
    };
    let resp = media::Upload::new(url, "file", file).send()?;
    if !resp.is_success() {
        let detail: String = resp.text().chars().take(200).collect();
        return Err(match resp.status {
            429 | 500..=599 => Error::transient(format!(
                "file upload answered HTTP {}: {detail}",
                resp.status
            )),
            _ => Error::permanent(format!(
                "file upload answered HTTP {}: {detail}",
                resp.status
            )),
        });
    }
    Ok(id.to_string())
}

/// Post a text message; its `ts`.
fn post_text(s: &Settings, message: &OutboundMessage, text: &str) -> Result<String, Error> {
    let mut body = json!({
        "channel": message.conversation,
        "text": text,
        "mrkdwn": matches!(message.format, TextFormat::Markdown),
    });
    if let Some(t) = message.thread.as_deref().filter(|t| !t.is_empty()) {
        body["thread_ts"] = json!(t);
    }
    posted_ts(&api::post_json(
        &s.url("chat.postMessage"),
        api::BOT_TOKEN,
        &body,
    )?)
}

/// How long an `auth.test` answer is reused by new instances of the
/// account (each instance starts with it; Slack need not hear it each time).
pub const IDENTITY_TTL_MS: u64 = 10 * 60 * 1000;

/// The bot's identity as cached in the account's key-value store.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedMe {
    api_base: String,
    at_ms: u64,
    me: Me,
}

/// Who the bot is: a recent `auth.test` answer of this account, or a new
/// one (which also checks the token).
fn identity(api_base: &str) -> Result<Me, Error> {
    const KEY: &str = "auth/me";
    let now = pincer_sdk::clock::now_ms();
    if let Ok(Some(c)) = kv::get_json::<CachedMe>(KEY)
        && c.api_base == api_base
        && now.saturating_sub(c.at_ms) < IDENTITY_TTL_MS
    {
        return Ok(c.me);
    }
    let me = auth_test(api_base)?;
    let cached = CachedMe {
        api_base: api_base.to_string(),
        at_ms: now,
        me: me.clone(),
    };
    if let Err(e) = kv::set_json(KEY, &cached) {
        log::warn(
            "caching the bot identity failed",
            &[("error", &e.to_string())],
        );
    }
    Ok(me)
}

/// Learn who the bot is; an auth error when the token is refused.
fn auth_test(api_base: &str) -> Result<Me, Error> {
    let me = api::post_json(&format!("{api_base}/auth.test"), api::BOT_TOKEN, &json!({}))?;
    let get = |k: &str| me.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Me {
        user_id: get("user_id"),
        bot_id: get("bot_id"),
        team_id: get("team_id"),
    })
}

impl Channel for Slack {
    fn name() -> String {
        "slack".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            edit: true,
            // Slack has no typing indicator or read receipts for bots.
            typing: false,
            read_receipts: false,
            attachments: true,
            max_message_length: MAX_TEXT,
            streaming: StreamStyle::Edit,
            min_edit_interval_ms: MIN_EDIT_INTERVAL_MS,
            ..pincer_sdk::capabilities(ReceiveMode::Webhook)
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let (mode, api_base) = settings::parse(&config)?;
        if !secrets::exists(api::BOT_TOKEN) {
            return Err(Error::config(
                "grant the secret `bot_token` (the app's Bot User OAuth Token, xoxb-...): secrets = { bot_token = \"env:SLACK_BOT_TOKEN\" }",
            ));
        }
        if mode == Mode::Socket && !secrets::exists(api::APP_TOKEN) {
            return Err(Error::config(
                "mode = \"socket\" needs the secret `app_token` (an app-level token, xapp-..., with connections:write)",
            ));
        }
        if mode == Mode::Events && !secrets::exists("signing_secret") {
            return Err(Error::config(
                "mode = \"events\" needs the secret `signing_secret` (Basic Information > Signing Secret) to verify pushes",
            ));
        }
        let idle_ms = settings::idle_ms(&config)?;
        let me = identity(&api_base)?;
        let s = Settings {
            mode,
            api_base,
            me,
            idle_ms,
        };
        s.clone().install();
        if mode == Mode::Socket {
            socket::ensure(&s)?;
        }
        Ok(())
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        if let Some(event) = pincer_sdk::socket::SocketEvent::from_request(&request) {
            return socket::handle(&Settings::current()?, event);
        }
        if request.method != "POST" {
            return Ok(pincer_sdk::webhook_text(
                405,
                "POST Slack Events API payloads here",
            ));
        }
        let s = Settings::current()?;
        let retry = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-slack-retry-num"))
            .map(|(_, v)| v.clone());
        deliver(&s, &request.body, retry.as_deref())
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let s = Settings::current()?;
        if message.conversation.trim().is_empty() {
            return Err(Error::permanent("no channel (empty conversation)"));
        }
        let text = slack_text(&message.text, message.format);
        if message.attachments.is_empty() {
            if text.trim().is_empty() {
                return Err(Error::permanent("nothing to send (empty text, no files)"));
            }
            return post_text(&s, &message, &text);
        }
        // Every file is uploaded before anything is shared, so a failed
        // upload posts nothing (and the host's retry posts no duplicate);
        // the text rides as the share's comment, in the same call.
        let ids = message
            .attachments
            .iter()
            .map(|f| upload(&s, f))
            .collect::<Result<Vec<_>, _>>()?;
        let files: Vec<Value> = message
            .attachments
            .iter()
            .zip(&ids)
            .map(|(f, id)| {
                let title = f.caption.clone().unwrap_or_else(|| f.file_name.clone());
                json!({ "id": id, "title": title })
            })
            .collect();
        let mut body = json!({ "files": files, "channel_id": message.conversation });
        if let Some(t) = message.thread.as_deref().filter(|t| !t.is_empty()) {
            body["thread_ts"] = json!(t);
        }
        if !text.trim().is_empty() {
            body["initial_comment"] = json!(text);
        }
        api::post_json(
            &s.url("files.completeUploadExternal"),
            api::BOT_TOKEN,
            &body,
        )?;
        Ok(ids.join(","))
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        let s = Settings::current()?;
        let body = json!({
            "channel": conversation,
            "ts": message_id,
            "text": slack_text(&text, format),
        });
        api::post_json(&s.url("chat.update"), api::BOT_TOKEN, &body).map(|_| ())
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        if !(handle.starts_with("https://") || handle.starts_with("http://")) {
            return Err(Error::permanent(format!(
                "not a Slack file URL (url_private_download): {handle:?}"
            )));
        }
        Ok(DownloadRequest {
            url: handle,
            headers: vec![("authorization".into(), api::bearer(api::BOT_TOKEN))],
            mime_type: None,
            file_name: None,
        })
    }
}

/// Handle one Events API payload (a push body, or a Socket Mode
/// `events_api` envelope's payload): what to answer and what to hand on.
pub fn deliver(s: &Settings, body: &[u8], retry: Option<&str>) -> Result<WebhookResponse, Error> {
    let parsed = match events::parse(body, &s.me, pincer_sdk::clock::now_ms()) {
        Ok(p) => p,
        Err(events::NotSlack(e)) => {
            return Ok(pincer_sdk::webhook_json(
                400,
                &json!({ "error": e }),
                vec![],
            ));
        }
    };
    match parsed {
        events::Push::UrlVerification(challenge) => Ok(pincer_sdk::webhook_json(
            200,
            &json!({ "challenge": challenge }),
            vec![],
        )),
        events::Push::Event {
            event_id,
            kind,
            outcome,
        } => {
            if let Some(n) = retry {
                log::info(
                    "Slack retried an event",
                    &[("event_id", &event_id), ("retry", n)],
                );
            }
            match outcome {
                Ok(m) => Ok(pincer_sdk::webhook_json(
                    200,
                    &json!({ "ok": true }),
                    vec![m],
                )),
                Err(why) => {
                    log::debug(
                        "event not handed to the agent",
                        &[("event_id", &event_id), ("type", &kind), ("why", &why)],
                    );
                    Ok(pincer_sdk::webhook_json(
                        200,
                        &json!({ "ok": true, "ignored": why }),
                        vec![],
                    ))
                }
            }
        }
        events::Push::Other(kind) => {
            log::info("Slack envelope ignored", &[("type", &kind)]);
            Ok(pincer_sdk::webhook_json(
                200,
                &json!({ "ok": true, "ignored": kind }),
                vec![],
            ))
        }
    }
}

pincer_sdk::export_channel!(Slack);
