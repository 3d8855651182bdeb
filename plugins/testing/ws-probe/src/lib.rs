//! `ws-probe`: a socket channel for the host's tests (`pincer:socket@0.1.0`).
//!
//! On `start` it opens session `session` (default `probe`) to config `url`
//! (with an `authorization` header from config `auth_header`, placeholders
//! allowed) and, with config `tick_ms`, sets the repeating timer `tick`.
//! `start` fails with the host's error if `open` is refused. With config
//! `sessions = N` it also opens `<session>-1` .. `<session>-(N-1)` to the
//! same URL (those only count frames: benchmarks).
//!
//! Frames from the server are JSON:
//! - `{"type":"message","id","text","conversation"?,"sender"?}`: an inbound
//!   message (conversation default `ws`, sender default `user`; its text is
//!   also kept under key-value `last_text`), and the frame
//!   `{"type":"seen","id","build"}` back;
//! - `{"type":"cancel-timer"}`: cancels `tick`, sets the one-shot `after`
//!   (three ticks later) and answers `{"type":"cancelled"}`;
//! - `{"type":"close","code"}`: closes the session with that code.
//!
//! A close is kept under key-value `last_close` (`<code> <reason>`) and,
//! with config `reconnect = "true"`, the session is opened again.
//!
//! Frames to the server: `{"type":"hello","build","last_close"}` on open (and with config
//! `identify = "true"`, `{"type":"identify","token":"{{secret:token}}"}`),
//! `{"type":"tick","n","build"}` per `tick`, `{"type":"after"}`, and
//! `{"type":"reply","conversation","text"}` per `send`. A close becomes the
//! inbound message `close <code> <reason>` in conversation `events` (id
//! `close-<n>`). `build` is the package name, so a test can tell this crate
//! from its `ws-probe-v2` twin after a hot reload.

use std::cell::RefCell;

use pincer_sdk::socket::{self, SocketEvent};
use pincer_sdk::{
    Capabilities, Channel, Config, Error, OutboundMessage, ReceiveMode, WebhookRequest,
    WebhookResponse, inbound, kv, webhook_text,
};
use serde_json::{Value, json};

const BUILD: &str = env!("CARGO_PKG_NAME");

thread_local! {
    static SESSION: RefCell<String> = RefCell::new("probe".to_string());
    static URL: RefCell<String> = const { RefCell::new(String::new()) };
    static AUTH: RefCell<Option<String>> = const { RefCell::new(None) };
    static RECONNECT: RefCell<bool> = const { RefCell::new(false) };
    static TICK_MS: RefCell<u64> = const { RefCell::new(0) };
    static IDENTIFY: RefCell<bool> = const { RefCell::new(false) };
}

fn session() -> String {
    SESSION.with(|s| s.borrow().clone())
}

fn send(frame: Value) -> Result<(), Error> {
    socket::send_text(&session(), &frame.to_string())
}

/// Open (or keep) the session as configured.
fn open() -> Result<(), Error> {
    let url = URL.with(|u| u.borrow().clone());
    let auth = AUTH.with(|a| a.borrow().clone());
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|v| vec![("authorization", v)])
        .unwrap_or_default();
    socket::open(&session(), &url, &headers)
}

struct Probe;

impl Channel for Probe {
    fn name() -> String {
        "ws-probe".into()
    }

    fn capabilities() -> Capabilities {
        pincer_sdk::capabilities(ReceiveMode::Webhook)
    }

    fn start(config: Config) -> Result<(), Error> {
        let url = config.require("url")?.to_string();
        let name = config.get_or("session", "probe").to_string();
        SESSION.with(|s| *s.borrow_mut() = name.clone());
        IDENTIFY.with(|i| *i.borrow_mut() = config.get("identify") == Some("true"));
        let tick = config.parse::<u64>("tick_ms")?.unwrap_or(0);
        TICK_MS.with(|t| *t.borrow_mut() = tick);
        URL.with(|u| *u.borrow_mut() = url);
        AUTH.with(|a| *a.borrow_mut() = config.get("auth_header").map(str::to_string));
        RECONNECT.with(|r| *r.borrow_mut() = config.get("reconnect") == Some("true"));
        open()?;
        // Extra sessions `<session>-1` .. (benchmarks: many sessions on one account).
        for i in 1..config.parse::<u32>("sessions")?.unwrap_or(1) {
            let url = URL.with(|u| u.borrow().clone());
            socket::open(&format!("{name}-{i}"), &url, &[])?;
        }
        if tick > 0 {
            socket::timer::set("tick", tick, tick)?;
        }
        Ok(())
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        let mut response = webhook_text(200, "");
        let Some(event) = SocketEvent::from_request(&request) else {
            return Ok(webhook_text(404, "ws-probe takes no pushes"));
        };
        match event {
            SocketEvent::Open { .. } => {
                let last_close = kv::get_string("last_close")?;
                send(json!({"type": "hello", "build": BUILD, "last_close": last_close}))?;
                if IDENTIFY.with(|i| *i.borrow()) {
                    send(json!({"type": "identify", "token": "{{secret:token}}"}))?;
                }
            }
            SocketEvent::Text { text, .. } => {
                let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match frame["type"].as_str() {
                    Some("message") => {
                        let id = frame["id"].as_str().unwrap_or_default();
                        let m = inbound(
                            id,
                            frame["conversation"].as_str().unwrap_or("ws"),
                            frame["sender"].as_str().unwrap_or("user"),
                            frame["text"].as_str().unwrap_or_default(),
                        );
                        kv::set_string("last_text", &m.text)?;
                        response.messages.push(m);
                        send(json!({"type": "seen", "id": id, "build": BUILD}))?;
                    }
                    Some("cancel-timer") => {
                        socket::timer::cancel("tick");
                        let tick = TICK_MS.with(|t| *t.borrow()).max(100);
                        socket::timer::set("after", tick * 3, 0)?;
                        send(json!({"type": "cancelled"}))?;
                    }
                    Some("close") => {
                        let code = frame["code"].as_u64().unwrap_or(1000) as u16;
                        socket::close(&session(), code, "asked to");
                    }
                    _ => {}
                }
            }
            SocketEvent::Binary { .. } => {}
            SocketEvent::Close { code, reason, .. } => {
                kv::set_string("last_close", &format!("{code} {reason}"))?;
                if RECONNECT.with(|r| *r.borrow()) {
                    open()?;
                }
                let n = kv::increment("closes", 1)?;
                response.messages.push(inbound(
                    &format!("close-{n}"),
                    "events",
                    "probe",
                    &format!("close {code} {reason}"),
                ));
            }
            SocketEvent::Timer { name } => match name.as_str() {
                "tick" => {
                    let n = kv::increment("ticks", 1)?;
                    send(json!({"type": "tick", "n": n, "build": BUILD}))?;
                }
                "after" => send(json!({"type": "after"}))?,
                _ => {}
            },
        }
        Ok(response)
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        send(json!({
            "type": "reply",
            "conversation": message.conversation,
            "text": message.text,
        }))?;
        let n = kv::increment("sent", 1)?;
        Ok(format!("r{n}"))
    }
}

pincer_sdk::export_channel!(Probe);
