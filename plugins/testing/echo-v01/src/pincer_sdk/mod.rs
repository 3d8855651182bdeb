//! The parts of `pincer-sdk` 0.1.0 (git `main~1:sdk/src`) that the 0.1.0
//! echo channel uses, vendored unchanged except for paths, so this fixture is
//! built against `wit/v0.1` (`pincer:plugin@0.1.0`) however the current SDK
//! moves on. Dropped: the tool half (`Tool`, `tool_info`, `export_tool!`).

// Vendored as it was: helpers echo does not call stay, unused.
#![allow(dead_code)]

/// Bindings for `pincer:plugin/channel-plugin@0.1.0`, generated here rather
/// than taken from the SDK's bindings crate.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1",
        world: "channel-plugin",
        default_bindings_module: "crate::pincer_sdk::bindings",
    });

    pub(crate) use pincer::plugin as host;
}

pub mod clock;
mod error;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
mod traits;

pub use error::Error;
pub(crate) use traits::export_channel;
pub use traits::{
    Capabilities, Channel, Config, InboundMessage, OutboundMessage, ReceiveMode, WebhookRequest,
    WebhookResponse, webhook_json,
};

/// Milliseconds since the Unix epoch of the last activity recorded with [`touch`].
static LAST_ACTIVITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record that a message was just received or sent (feeds `last-activity`).
pub fn touch() {
    LAST_ACTIVITY.store(clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// The last time [`touch`] was called, in Unix ms (0 for never).
pub fn last_touched() -> u64 {
    LAST_ACTIVITY.load(std::sync::atomic::Ordering::Relaxed)
}

#[doc(hidden)]
pub fn __wit_err(e: Error) -> bindings::pincer::plugin::types::Error {
    e.into()
}
