//! Host-managed WebSocket sessions and timers (`pincer:socket@0.1.0`), for
//! channels whose platform pushes over a long-lived socket (Discord's
//! Gateway, Slack's Socket Mode).
//!
//! The host owns the socket: [`open`] returns at once, and everything that
//! happens on a session (and every [`timer`] firing) reaches the channel's
//! [`handle_webhook`](crate::Channel::handle_webhook) as a request that
//! [`SocketEvent::from_request`] turns into a [`SocketEvent`]. Messages the
//! response carries go into the durable inbox like a push's. Sessions and
//! timers belong to the account, not the instance: they survive restarts
//! and hot reloads, so opening a name that is already open with the same
//! URL is a no-op (call [`open`] from `start` freely).
//!
//! ```no_run
//! use pincer_sdk::socket::{self, SocketEvent};
//! # fn demo(request: pincer_sdk::WebhookRequest) -> Result<(), pincer_sdk::Error> {
//! socket::open("gateway", "wss://gateway.example.com/?v=10", &[])?;
//! socket::timer::set("heartbeat", 41_250, 41_250)?;
//! match SocketEvent::from_request(&request) {
//!     Some(SocketEvent::Text { session, text }) => { /* platform frame */ }
//!     Some(SocketEvent::Timer { name }) if name == "heartbeat" => {
//!         socket::send_text("gateway", r#"{"op":1,"d":null}"#)?;
//!     }
//!     Some(SocketEvent::Close { code, .. }) if code != 4004 => {
//!         socket::open("gateway", "wss://gateway.example.com/?v=10", &[])?;
//!     }
//!     _ => {}
//! }
//! # Ok(()) }
//! ```

use crate::Error;
use crate::WebhookRequest;
use crate::bindings::channel::socket::pincer::socket::{timer as wit_timer, websocket};

pub use websocket::{SessionInfo, SessionState};

/// The `verified` value of socket events.
pub const VERIFIED: &str = "socket";

/// Start connecting session `name` (1-64 of `[a-z0-9_-]`) to `url`
/// (`wss://`, a host in the plugin's allowed hosts) with extra upgrade
/// `headers`; secret placeholders in the URL path and in header values are
/// filled by the host where bound. Returns at once; [`SocketEvent::Open`]
/// or [`SocketEvent::Close`] (code 1006) follows.
pub fn open(name: &str, url: &str, headers: &[(&str, &str)]) -> Result<(), Error> {
    websocket::open(&websocket::ConnectRequest {
        name: name.to_string(),
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .map_err(Into::into)
}

/// Queue a text frame on session `name`. Secret placeholders are filled by
/// the host in JSON string fields whose key the secret is bound to
/// (`body:<field>`, e.g. Discord's Identify `token`).
/// [`Error::Transient`]: not open; [`Error::RateLimited`]: the session's
/// frame rate is spent; [`Error::Permanent`]: over the frame size limit.
pub fn send_text(name: &str, text: &str) -> Result<(), Error> {
    websocket::send_text(name, text).map_err(Into::into)
}

/// Send a close frame and end session `name`; [`SocketEvent::Close`]
/// follows. An unknown name is not an error.
pub fn close(name: &str, code: u16, reason: &str) {
    websocket::close(name, code, reason)
}

/// The state and counters of session `name`, if it exists.
pub fn info(name: &str) -> Option<SessionInfo> {
    websocket::info(name)
}

/// Timers the host fires into the channel as [`SocketEvent::Timer`].
pub mod timer {
    use super::{Error, wit_timer};

    /// Fire timer `name` after `delay_ms`, then every `repeat_ms` (0: once).
    /// Setting an existing name replaces it.
    pub fn set(name: &str, delay_ms: u64, repeat_ms: u64) -> Result<(), Error> {
        wit_timer::set(name, delay_ms, repeat_ms).map_err(Into::into)
    }

    /// Cancel timer `name` (an unknown name is not an error); a firing not
    /// yet delivered is dropped.
    pub fn cancel(name: &str) {
        wit_timer::cancel(name)
    }
}

/// What a socket event request says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEvent {
    /// Session `session` is open.
    Open {
        /// The session's name.
        session: String,
    },
    /// A text frame arrived (granted secret values replaced by placeholders).
    Text {
        /// The session's name.
        session: String,
        /// The frame.
        text: String,
    },
    /// A binary frame arrived.
    Binary {
        /// The session's name.
        session: String,
        /// The frame.
        data: Vec<u8>,
    },
    /// The session ended: the peer's or the plugin's close code, 1006 for a
    /// failed connect or a dropped connection, 1009 for an oversized frame.
    Close {
        /// The session's name.
        session: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Timer `name` fired.
    Timer {
        /// The timer's name.
        name: String,
    },
}

impl SocketEvent {
    /// The event a `handle-webhook` request carries, or `None` for a real
    /// push (anything the host did not mark `verified = "socket"`).
    pub fn from_request(request: &WebhookRequest) -> Option<SocketEvent> {
        if request.verified.as_deref() != Some(VERIFIED) {
            return None;
        }
        let session = request.path.clone();
        Some(match request.method.as_str() {
            "WS-OPEN" => SocketEvent::Open { session },
            "WS-TEXT" => SocketEvent::Text {
                session,
                text: String::from_utf8_lossy(&request.body).into_owned(),
            },
            "WS-BINARY" => SocketEvent::Binary {
                session,
                data: request.body.clone(),
            },
            "WS-CLOSE" => {
                let (code, reason) = parse_close(&request.query);
                SocketEvent::Close {
                    session,
                    code,
                    reason,
                }
            }
            "TIMER" => SocketEvent::Timer { name: session },
            _ => return None,
        })
    }
}

/// `code=NNNN&reason=...` into code and (percent-decoded) reason.
fn parse_close(query: &str) -> (u16, String) {
    let mut code = 1006;
    let mut reason = String::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("code", v)) => code = v.parse().unwrap_or(1006),
            Some(("reason", v)) => reason = percent_decode(v),
            _ => {}
        }
    }
    (code, reason)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str, verified: Option<&str>) -> WebhookRequest {
        WebhookRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![],
            body: b"hi".to_vec(),
            verified: verified.map(str::to_string),
        }
    }

    #[test]
    fn events_parse_and_pushes_are_none() {
        let e = SocketEvent::from_request(&request("WS-TEXT", "gw", "", Some("socket")));
        assert_eq!(
            e,
            Some(SocketEvent::Text {
                session: "gw".into(),
                text: "hi".into()
            })
        );
        let e = SocketEvent::from_request(&request(
            "WS-CLOSE",
            "gw",
            "code=4004&reason=Authentication+failed%21",
            Some("socket"),
        ));
        assert_eq!(
            e,
            Some(SocketEvent::Close {
                session: "gw".into(),
                code: 4004,
                reason: "Authentication failed!".into()
            })
        );
        assert_eq!(
            SocketEvent::from_request(&request("TIMER", "hb", "", Some("socket"))),
            Some(SocketEvent::Timer { name: "hb".into() })
        );
        assert_eq!(
            SocketEvent::from_request(&request("POST", "/", "", Some("hmac-sha256"))),
            None
        );
        assert_eq!(
            SocketEvent::from_request(&request("WS-TEXT", "gw", "", None)),
            None
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
