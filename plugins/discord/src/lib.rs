//! `discord`: a Discord bot as a Pincer channel.
//!
//! Messages arrive over Discord's Gateway, a WebSocket the host keeps open
//! for the plugin (`pincer:socket`, see `wit/socket/socket.wit`): every
//! frame, close and timer reaches [`Channel::handle_webhook`] as a socket
//! event, [`gateway::step`] decides what to do, and the `MESSAGE_CREATE`
//! dispatches it keeps become inbound messages the host commits to the
//! durable inbox. The gateway session (`session_id`, `seq`,
//! `resume_gateway_url`, heartbeat ACK tracking) lives in kv, never in the
//! instance, so an instance restart, a hot reload or a gateway restart
//! resumes it, and the host may drop a quiet bot's instance between
//! heartbeats (`idle_instance_ms`) and start a fresh one for the next
//! event. Replies go out by REST
//! (`POST /channels/{id}/messages` with `message_reference`), stream by
//! editing in place (`PATCH`), and honour Discord's rate-limit buckets.
//!
//! The bot token never enters the sandbox: `{{secret:bot_token}}` stands
//! for it in the `Authorization` header and in the Identify/Resume frames,
//! and the host fills it in.
//!
//! Config (`[plugins.discord] config = {...}`):
//! - `api_base`: default `https://discord.com/api/v10`;
//! - `gateway_url`: default `wss://gateway.discord.gg` (a fake in tests);
//! - `reconnect_base_ms`: first reconnect backoff, default 1000 (doubles
//!   per failed attempt up to 60 s, with jitter).

pub mod gateway;
pub mod inbound;
pub mod interactions;
pub mod rest;
pub mod socket;

use std::cell::{Cell, RefCell};

use pincer_sdk::{
    Capabilities, Channel, ChatTarget, Config, DownloadRequest, Error, InboundMessage,
    OutboundAttachment, OutboundMessage, ReceiveMode, StreamStyle, TextFormat, WebhookRequest,
    WebhookResponse, clock, kv, log, media, secrets,
};
use serde_json::{Value, json};

use crate::gateway::{Action, Ctx, Event, Session};
use pincer_sdk::socket::{self as websocket, timer};

/// Default REST base.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// Default gateway URL.
pub const DEFAULT_GATEWAY_URL: &str = "wss://gateway.discord.gg";
/// Default first reconnect delay, ms.
pub const DEFAULT_RECONNECT_BASE_MS: u64 = 1_000;
/// Discord's message length limit, in characters.
pub const MAX_MESSAGE_LENGTH: u32 = 2_000;
/// kv key of the gateway session.
const SESSION_KEY: &str = "gateway";
/// kv key of the bot's user id.
const ME_KEY: &str = "me";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    api_base: String,
    gateway_url: String,
    reconnect_base_ms: u64,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
    static RANDOM: Cell<u64> = const { Cell::new(0) };
}

fn settings() -> Result<Settings, Error> {
    SETTINGS
        .with(|s| s.borrow().clone())
        .ok_or_else(|| Error::config("the channel was not started"))
}

/// Parse and check the operator's config (without contacting Discord).
fn parse_config(config: &Config) -> Result<Settings, Error> {
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
    let gateway_url = config
        .get_or("gateway_url", DEFAULT_GATEWAY_URL)
        .trim()
        .to_string();
    if !(gateway_url.starts_with("wss://") || gateway_url.starts_with("ws://")) {
        return Err(Error::config(format!(
            "config `gateway_url` must be a wss:// URL, not {gateway_url:?}"
        )));
    }
    let reconnect_base_ms = config
        .parse::<u64>("reconnect_base_ms")?
        .unwrap_or(DEFAULT_RECONNECT_BASE_MS)
        .max(gateway::MIN_TIMER_MS);
    Ok(Settings {
        api_base,
        gateway_url,
        reconnect_base_ms,
    })
}

/// A pseudo-random number for jitter (xorshift seeded by the clock).
fn random() -> u64 {
    RANDOM.with(|r| {
        let mut x = r.get() ^ clock::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

fn load_session() -> Result<Session, Error> {
    Ok(kv::get_json::<Session>(SESSION_KEY)?.unwrap_or_default())
}

fn save_session(s: &Session) -> Result<(), Error> {
    kv::set_json(SESSION_KEY, s)
}

/// The bot's user id (READY's `user.id`, or `/users/@me` at start).
fn me() -> Option<String> {
    kv::get_string(ME_KEY).ok().flatten()
}

/// Open the gateway session unless it is open, falling back from the
/// resume URL to the configured one if the host refuses the former (an
/// operator who allowed only `wss://gateway.discord.gg`).
fn open(url: &str, s: &Settings) {
    if websocket::info(gateway::SESSION).is_some() {
        return;
    }
    log::info("connecting to the Discord gateway", &[("url", url)]);
    if let Err(e) = websocket::open(gateway::SESSION, url, &[]) {
        let fallback = gateway::with_query(&s.gateway_url);
        log::warn(
            "opening the gateway session failed",
            &[("url", url), ("error", &e.to_string())],
        );
        if fallback != url
            && let Err(e) = websocket::open(gateway::SESSION, &fallback, &[])
        {
            log::error(
                "opening the gateway session failed",
                &[("url", &fallback), ("error", &e.to_string())],
            );
        }
    }
}

/// Run the actions of one step; the inbound messages and the fatal error
/// they produced.
fn perform(actions: Vec<Action>, s: &Settings) -> (Vec<InboundMessage>, Option<gateway::Fatal>) {
    let mut messages = Vec::new();
    let mut fatal = None;
    for action in actions {
        match action {
            Action::Open(url) => open(&url, s),
            Action::Send(frame) => {
                if let Err(e) = websocket::send_text(gateway::SESSION, &frame.to_string()) {
                    log::warn(
                        "sending a gateway frame failed",
                        &[("op", &frame["op"].to_string()), ("error", &e.to_string())],
                    );
                }
            }
            Action::Close(code, reason) => {
                log::info(
                    "closing the gateway connection to resume",
                    &[("code", &code.to_string()), ("reason", &reason)],
                );
                websocket::close(gateway::SESSION, code, &reason);
            }
            Action::SetTimer(name, delay, repeat) => {
                if let Err(e) = timer::set(name, delay, repeat) {
                    log::error(
                        "setting a timer failed",
                        &[("timer", name), ("error", &e.to_string())],
                    );
                }
            }
            Action::CancelTimer(name) => timer::cancel(name),
            Action::Dispatch(name, d) => match name.as_str() {
                "MESSAGE_CREATE" => {
                    if let Some(m) = inbound::from_message_create(&d, me().as_deref()) {
                        messages.push(m);
                    }
                }
                "READY" => {
                    if let Some(id) = d["user"]["id"].as_str()
                        && let Err(e) = kv::set_string(ME_KEY, id)
                    {
                        log::warn("storing the bot id failed", &[("error", &e.to_string())]);
                    }
                    log::info(
                        "gateway session ready",
                        &[("session_id", d["session_id"].as_str().unwrap_or_default())],
                    );
                }
                "RESUMED" => log::info("gateway session resumed", &[]),
                _ => {}
            },
            Action::Fatal(f) => {
                log::error(
                    "Discord refused the gateway session; not reconnecting",
                    &[("code", &f.code.to_string()), ("error", &f.message)],
                );
                fatal = Some(f);
            }
        }
    }
    (messages, fatal)
}

/// Handle one socket event: step the persisted session and act.
fn on_socket_event(name: &str, event: Event) -> Result<WebhookResponse, Error> {
    let s = settings()?;
    let ours = match &event {
        Event::Timer(t) => t == gateway::HEARTBEAT_TIMER || t == gateway::RECONNECT_TIMER,
        _ => name == gateway::SESSION,
    };
    if !ours {
        return Ok(pincer_sdk::webhook_json(200, &json!({}), Vec::new()));
    }
    let mut session = load_session()?;
    let token = secrets::placeholder(rest::TOKEN_SECRET);
    let ctx = Ctx {
        gateway_url: &s.gateway_url,
        token: &token,
        backoff_base_ms: s.reconnect_base_ms,
        random: random(),
    };
    let actions = gateway::step(&mut session, event, &ctx);
    // Saved before acting: the next event (which an action may cause)
    // must see this state.
    save_session(&session)?;
    let (messages, fatal) = perform(actions, &s);
    if let Some(f) = fatal {
        return Err(if f.auth {
            Error::auth(f.message)
        } else {
            Error::config(f.message)
        });
    }
    Ok(pincer_sdk::webhook_json(200, &json!({}), messages))
}

/// Connect unless a session is open or reconnecting was stopped.
fn connect(s: &Settings) -> Result<(), Error> {
    let session = load_session()?;
    if let Some(f) = &session.fatal {
        log::error(
            "not connecting: Discord refused this bot's gateway session earlier (restart the channel once fixed)",
            &[("code", &f.code.to_string()), ("error", &f.message)],
        );
        return Ok(());
    }
    let token = secrets::placeholder(rest::TOKEN_SECRET);
    let ctx = Ctx {
        gateway_url: &s.gateway_url,
        token: &token,
        backoff_base_ms: s.reconnect_base_ms,
        random: 0,
    };
    open(&gateway::connect_url(&session, &ctx), s);
    Ok(())
}

/// Discord's longest `nonce`.
const NONCE_MAX: usize = 25;

/// The nonce of this send: the host's idempotency key of the outbox
/// message (`pincer:delivery`), cut to Discord's 25 characters, so a retry
/// after a timeout or a crash is answered with the message already posted
/// (`enforce_nonce`). `None` for a direct send the host has no key for:
/// never a random nonce, which would change per retry.
fn nonce() -> Option<String> {
    pincer_sdk::delivery::idempotency_key().map(|k| nonce_of(&k))
}

fn nonce_of(key: &str) -> String {
    key.chars().take(NONCE_MAX).collect()
}

/// Add `nonce` and `enforce_nonce` to a message body.
fn with_nonce(body: &mut Value, nonce: Option<&str>) {
    if let Some(n) = nonce {
        body["nonce"] = json!(n);
        body["enforce_nonce"] = json!(true);
    }
}

/// `message_reference` for a reply to message `id`.
fn reference(id: &str) -> Value {
    json!({"message_id": id, "fail_if_not_exists": false})
}

/// Mentions an agent's text may ping: none but the replied-to user.
fn allowed_mentions() -> Value {
    json!({"parse": [], "replied_user": true})
}

/// Post one file (multipart `files[0]` plus `payload_json`) through the host.
fn send_file(
    s: &Settings,
    message: &OutboundMessage,
    file: &OutboundAttachment,
    suffix: &str,
) -> Result<String, Error> {
    let mut payload = json!({
        "allowed_mentions": allowed_mentions(),
        "attachments": [{"id": 0, "filename": file.file_name}],
    });
    if let Some(c) = file.caption.as_deref().filter(|c| !c.is_empty()) {
        payload["content"] = json!(c);
    }
    if let Some(id) = message.reply_to.as_deref() {
        payload["message_reference"] = reference(id);
    }
    // One key per outbox message: the first file gets it when there is no
    // text, later files their own suffix.
    let key = nonce().map(|k| nonce_of(&format!("{}{}", &k[..k.len().min(NONCE_MAX - 3)], suffix)));
    with_nonce(&mut payload, key.as_deref());
    let path = format!("/channels/{}/messages", message.conversation.trim());
    let resp = media::Upload::new(&format!("{}{path}", s.api_base), "files[0]", file)
        .header("Authorization", &rest::authorization())
        .field("payload_json", &payload.to_string())
        .send()?;
    let v = rest::answer(&rest::route_key("POST", &path), resp)?;
    message_id(&v)
}

fn message_id(v: &Value) -> Result<String, Error> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::transient("Discord's answer has no message id"))
}

struct Discord;

impl Channel for Discord {
    fn name() -> String {
        "discord".into()
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            edit: true,
            typing: true,
            max_message_length: MAX_MESSAGE_LENGTH,
            streaming: StreamStyle::Edit,
            min_edit_interval_ms: 1_000,
            // A typing indicator lasts 10 s (or until the bot posts).
            typing_ttl_ms: 10_000,
            attachments: true,
            ..pincer_sdk::capabilities(ReceiveMode::Webhook)
        }
    }

    fn start(config: Config) -> Result<(), Error> {
        let s = parse_config(&config)?;
        if !secrets::exists(rest::TOKEN_SECRET) {
            return Err(Error::config(
                "grant the secret `bot_token` (Bot > Token in the Discord developer portal): secrets = { bot_token = \"env:DISCORD_BOT_TOKEN\" }",
            ));
        }
        // A fresh instance of a live account skips the credentials check:
        // the host drops a quiet socket account's instance and starts a
        // new one for its next event (a heartbeat every 41 s), and the
        // open gateway session proves the token already (a refused token
        // closes it with 4004). Anything else checks it.
        let live = websocket::info(gateway::SESSION).is_some() && me().is_some();
        if !live {
            let user = rest::call(&s.api_base, "GET", "/users/@me", None)?;
            if let Some(id) = user["id"].as_str() {
                kv::set_string(ME_KEY, id)?;
            }
        }
        SETTINGS.with(|cell| *cell.borrow_mut() = Some(s.clone()));
        connect(&s)
    }

    fn restart() -> Result<(), Error> {
        // An operator's (or the monitor's) restart retries even after a
        // close code that stopped reconnecting.
        let s = settings()?;
        let mut session = load_session()?;
        if session.fatal.take().is_some() {
            session.attempts = 0;
            save_session(&session)?;
            log::info("retrying the gateway after a restart", &[]);
        }
        connect(&s)
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        match socket::event_of(&request) {
            Some((name, event)) => on_socket_event(&name, event),
            // Only a push the host verified with the application's public
            // key (`[webhook.verify]`) gets here as an interaction.
            None if request.verified.as_deref() == Some(interactions::VERIFIED) => {
                interactions::handle(&request)
            }
            None => Ok(pincer_sdk::webhook_text(
                404,
                "this Discord channel takes events from the gateway and interactions signed with the application's key",
            )),
        }
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        let s = settings()?;
        let mut message = message;
        // The answer to a slash command goes by the interaction's webhook
        // while its token is valid (15 minutes), else to the channel.
        let interaction = match message.reply_to.as_deref().and_then(interactions::target) {
            Some(t) => {
                let id = t.id.to_string();
                message.reply_to = None;
                interactions::load(&id)?.map(|stored| (id, stored))
            }
            None => None,
        };
        let mut first: Option<String> = None;
        if let Some((id, stored)) = interaction
            && !message.text.trim().is_empty()
        {
            let body = json!({
                "content": message.text,
                "allowed_mentions": allowed_mentions(),
            });
            first = Some(interactions::send(&s.api_base, &id, stored, &body)?);
        } else if !message.text.trim().is_empty() {
            let mut body = json!({
                "content": message.text,
                "allowed_mentions": allowed_mentions(),
            });
            if let Some(id) = message.reply_to.as_deref() {
                body["message_reference"] = reference(id);
            }
            with_nonce(&mut body, nonce().as_deref());
            let path = format!("/channels/{}/messages", message.conversation.trim());
            let v = rest::call(&s.api_base, "POST", &path, Some(&body))?;
            first = Some(message_id(&v)?);
        }
        for (i, file) in message.attachments.iter().enumerate() {
            let id = send_file(&s, &message, file, &format!("f{i}"))?;
            first.get_or_insert(id);
        }
        first.ok_or_else(|| Error::permanent("nothing to send: no text and no attachment"))
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        _format: TextFormat,
    ) -> Result<(), Error> {
        let s = settings()?;
        if let Some(t) = interactions::target(&message_id) {
            return interactions::edit(&s.api_base, &t, &text);
        }
        let path = format!(
            "/channels/{}/messages/{}",
            conversation.trim(),
            message_id.trim()
        );
        rest::call(&s.api_base, "PATCH", &path, Some(&json!({"content": text}))).map(|_| ())
    }

    fn typing(target: ChatTarget) -> Result<(), Error> {
        let s = settings()?;
        // A deferred interaction shows "thinking..." already.
        if target
            .message_id
            .as_deref()
            .is_some_and(|m| interactions::target(m).is_some())
        {
            return Ok(());
        }
        let path = format!("/channels/{}/typing", target.conversation.trim());
        rest::call(&s.api_base, "POST", &path, None).map(|_| ())
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        if !handle.starts_with("https://") && !handle.starts_with("http://") {
            return Err(Error::permanent(format!(
                "{handle:?} is not a Discord attachment URL"
            )));
        }
        Ok(DownloadRequest {
            url: handle,
            headers: Vec::new(),
            mime_type: None,
            file_name: None,
        })
    }
}

pincer_sdk::export_channel!(Discord);

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
    fn nonces_fit_discord() {
        assert_eq!(nonce_of("o42"), "o42");
        let long = format!("s{}", "a".repeat(31));
        assert_eq!(nonce_of(&long).len(), 25);
        let mut body = json!({});
        with_nonce(&mut body, None);
        assert_eq!(body, json!({}), "no key: no nonce");
        with_nonce(&mut body, Some("o42"));
        assert_eq!(body, json!({"nonce": "o42", "enforce_nonce": true}));
    }

    #[test]
    fn config_defaults_and_errors() {
        let s = parse_config(&cfg(&[])).unwrap();
        assert_eq!(s.api_base, DEFAULT_API_BASE);
        assert_eq!(s.gateway_url, DEFAULT_GATEWAY_URL);
        assert_eq!(s.reconnect_base_ms, DEFAULT_RECONNECT_BASE_MS);
        assert!(matches!(
            parse_config(&cfg(&[("api_base", "ftp://x")])),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            parse_config(&cfg(&[("gateway_url", "https://x")])),
            Err(Error::Config(m)) if m.contains("gateway_url")
        ));
        let s = parse_config(&cfg(&[
            ("api_base", "http://127.0.0.1:9/api/v10/"),
            ("gateway_url", "ws://127.0.0.1:9"),
            ("reconnect_base_ms", "5"),
        ]))
        .unwrap();
        assert_eq!(s.api_base, "http://127.0.0.1:9/api/v10");
        assert_eq!(s.reconnect_base_ms, gateway::MIN_TIMER_MS);
        assert!(parse_config(&cfg(&[("reconnect_base_ms", "soon")])).is_err());
    }
}
