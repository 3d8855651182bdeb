//! What the host knows about the delivery the current call is part of
//! (`pincer:delivery@0.1.0`, an extension package the host links for every
//! 0.2 plugin): [`idempotency_key`] makes platform sends idempotent.

mod generated {
    wit_bindgen::generate!({
        path: "../wit/delivery",
        world: "pincer:delivery/imports",
    });
}

/// The key of the outbound message the current `send`, `edit` or `draft`
/// call delivers: the same on every attempt at the same message (retries,
/// restarts), different for every other one; at most 32 characters of
/// `[a-z0-9-]`. Use it as the platform's transaction id or nonce (Matrix
/// `PUT .../send/m.room.message/{txnId}`, Discord `nonce`) so a retry never
/// posts twice. `None` outside those calls, or for a send that did not come
/// from the host's outbox or reply streamer (a direct API send).
pub fn idempotency_key() -> Option<String> {
    generated::pincer::delivery::send_context::idempotency_key()
}
