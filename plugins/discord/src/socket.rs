//! The host-managed WebSocket session and timers (`pincer:socket@0.1.0`,
//! `wit/socket/socket.wit`): generated import bindings, and the reading of
//! a `handle-webhook` request as a socket [`Event`].

use pincer_sdk::WebhookRequest;

use crate::gateway::Event;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: ["../../wit", "../../wit/socket"],
        world: "pincer:socket/imports",
        with: {
            "pincer:plugin/types@0.2.0": pincer_sdk::bindings::channel::pincer::plugin::types,
        },
        generate_all,
    });
}

pub use bindings::pincer::socket::{timer, websocket};

/// The socket event a `handle-webhook` request carries (`verified` is
/// `socket`), or `None` for an ordinary push.
pub fn event_of(request: &WebhookRequest) -> Option<(String, Event)> {
    if request.verified.as_deref() != Some("socket") {
        return None;
    }
    let name = request.path.trim_start_matches('/').to_string();
    let event = match request.method.as_str() {
        "WS-OPEN" => Event::Open,
        "WS-TEXT" => Event::Text(String::from_utf8_lossy(&request.body).into_owned()),
        "WS-CLOSE" => {
            let mut code = 1006;
            let mut reason = String::new();
            for pair in request.query.split('&') {
                match pair.split_once('=') {
                    Some(("code", c)) => code = c.parse().unwrap_or(1006),
                    Some(("reason", r)) => reason = percent_decode(r),
                    _ => {}
                }
            }
            Event::Close { code, reason }
        }
        "TIMER" => Event::Timer(name.clone()),
        _ => return None,
    };
    Some((name, event))
}

/// Decode `%XX` escapes and `+` of a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: &str, body: &str) -> WebhookRequest {
        WebhookRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            verified: Some("socket".into()),
        }
    }

    #[test]
    fn socket_events_are_read_from_requests() {
        assert_eq!(
            event_of(&req(
                "WS-CLOSE",
                "gateway",
                "code=4004&reason=Authentication%20failed.",
                ""
            )),
            Some((
                "gateway".into(),
                Event::Close {
                    code: 4004,
                    reason: "Authentication failed.".into()
                }
            ))
        );
        assert_eq!(
            event_of(&req("WS-TEXT", "/gateway", "", "{}")),
            Some(("gateway".into(), Event::Text("{}".into())))
        );
        assert_eq!(
            event_of(&req("TIMER", "heartbeat", "", "")),
            Some(("heartbeat".into(), Event::Timer("heartbeat".into())))
        );
        let mut push = req("POST", "/", "", "{}");
        push.verified = None;
        assert_eq!(event_of(&push), None);
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
