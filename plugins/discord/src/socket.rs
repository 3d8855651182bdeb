//! Socket events (`pincer_sdk::socket`, `pincer:socket@0.1.0`) as the
//! gateway state machine's [`Event`]s.

use pincer_sdk::WebhookRequest;
use pincer_sdk::socket::SocketEvent;

use crate::gateway::Event;

/// The session (or timer) name and the event a `handle-webhook` request
/// carries, or `None` for an ordinary HTTP push or a binary frame (the
/// gateway is asked for JSON text).
pub fn event_of(request: &WebhookRequest) -> Option<(String, Event)> {
    Some(match SocketEvent::from_request(request)? {
        SocketEvent::Open { session } => (session, Event::Open),
        SocketEvent::Text { session, text } => (session, Event::Text(text)),
        SocketEvent::Binary { .. } => return None,
        SocketEvent::Close {
            session,
            code,
            reason,
        } => (session, Event::Close { code, reason }),
        SocketEvent::Timer { name } => (name.clone(), Event::Timer(name)),
    })
}
