//! # pincer-sdk: write Pincer plugins in Rust
//!
//! A Pincer plugin is a WebAssembly component built for `wasm32-wasip2`
//! against the contract in `wit/pincer.wit` (`pincer:plugin@0.2.0`). This
//! crate hides the bindings: implement [`Channel`] or [`Tool`] on a type and
//! register it with [`export_channel!`] or [`export_tool!`].
//!
//! ```no_run
//! use pincer_sdk::{Error, Tool, ToolInfo};
//!
//! struct Clock;
//!
//! impl Tool for Clock {
//!     fn name() -> String {
//!         "clock".into()
//!     }
//!     fn describe() -> ToolInfo {
//!         pincer_sdk::tool_info("clock", "Current time", r#"{"type":"object"}"#)
//!     }
//!     fn invoke(_args: serde_json::Value) -> Result<serde_json::Value, Error> {
//!         Ok(serde_json::json!({ "unix_ms": pincer_sdk::clock::now_ms() }))
//!     }
//! }
//!
//! pincer_sdk::export_tool!(Clock);
//! # fn main() {}
//! ```
//!
//! A channel starts from [`capabilities`] and [`inbound`], which fill the
//! contract's records with defaults; see [`Channel`] for a whole one.
//!
//! Helpers: [`log`] (structured logging), [`kv`] (durable per-plugin storage
//! with atomic [`kv::increment`] and [`kv::compare_and_swap`]), [`clock`],
//! [`secrets`] (placeholders the host fills in), [`http`] (outbound requests
//! through `wasi:http`, limited by the host to the plugin's allowed hosts) and
//! [`media`] (multipart uploads of files the host holds); [`delivery`] gives
//! a send its idempotency key (`pincer:delivery`). Socket channels use
//! [`socket`]: host-managed WebSocket sessions and timers
//! (`pincer:socket@0.1.0`).

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings;

mod channel;
pub mod clock;
pub mod delivery;
mod error;
mod export;
pub mod html;
pub mod http;
pub mod kv;
pub mod log;
pub mod media;
pub mod secrets;
pub mod socket;
mod tool;

pub use channel::{
    Attachment, AttachmentKind, Capabilities, Channel, ChatTarget, ChatType, Config, DeliveryState,
    DeliveryStatus, DownloadRequest, InboundMessage, OutboundAttachment, OutboundMessage,
    PollBatch, Reaction, ReceiveMode, RepliedMessage, StreamStyle, TextFormat, WebhookRequest,
    WebhookResponse, capabilities, inbound, webhook_json, webhook_text,
};
pub use error::Error;
pub use tool::{Tool, ToolInfo, tool_info};

/// Milliseconds since the Unix epoch of the last activity recorded with [`touch`].
static LAST_ACTIVITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record contact with the platform now (feeds `last-activity`). The export
/// macros call it for you; call it yourself for contact they cannot see.
pub fn touch() {
    LAST_ACTIVITY.store(clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// The last time [`touch`] was called, in Unix ms (0 for never).
pub fn last_touched() -> u64 {
    LAST_ACTIVITY.load(std::sync::atomic::Ordering::Relaxed)
}

/// What the export macros need; not part of the SDK's API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::channel::exports::pincer::plugin::channel::Guest as ChannelGuest;
    pub use crate::bindings::channel::exports::pincer::plugin::plugin::Guest as PluginGuest;
    pub use crate::bindings::channel::pincer::plugin::types::Error as WitError;
    pub use crate::bindings::tool::exports::pincer::plugin::plugin::Guest as ToolPluginGuest;
    pub use crate::bindings::tool::exports::pincer::plugin::tool::Guest as ToolGuest;
    pub use serde_json;

    /// Convert the result for the contract, recording contact on success.
    pub fn touched<T>(result: Result<T, crate::Error>) -> Result<T, WitError> {
        let out = result?;
        crate::touch();
        Ok(out)
    }
}
