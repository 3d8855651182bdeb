//! # pincer-sdk: write Pincer plugins in Rust
//!
//! A Pincer plugin is a WebAssembly component built for `wasm32-wasip2`
//! against the contract in `wit/pincer.wit`. This crate hides the bindings:
//! implement [`Channel`] or [`Tool`] on a type and register it with
//! [`export_channel!`] or [`export_tool!`].
//!
//! ```ignore
//! use pincer_sdk::{Tool, ToolInfo, Error};
//!
//! struct Clock;
//! impl Tool for Clock {
//!     fn name() -> String { "clock".into() }
//!     fn describe() -> ToolInfo { pincer_sdk::tool_info("clock", "Current time", r#"{"type":"object"}"#) }
//!     fn invoke(_args: serde_json::Value) -> Result<serde_json::Value, Error> {
//!         Ok(serde_json::json!({ "unix_ms": pincer_sdk::clock::now_ms() }))
//!     }
//! }
//! pincer_sdk::export_tool!(Clock);
//! ```
//!
//! Helpers: [`log`] (structured logging), [`kv`] (durable per-plugin storage),
//! [`clock`], [`secrets`] and [`http`] (outbound requests through `wasi:http`,
//! limited by the host to the plugin's allowed hosts).

#[doc(hidden)]
pub mod bindings;

pub mod clock;
mod error;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
mod traits;

pub use error::Error;
pub use traits::{
    Capabilities, Channel, Config, InboundMessage, OutboundMessage, ReceiveMode, Tool, ToolInfo,
    WebhookRequest, WebhookResponse, tool_info, webhook_json,
};

#[doc(hidden)]
pub use serde_json as __serde_json;

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
pub fn __wit_err(e: Error) -> bindings::channel::pincer::plugin::types::Error {
    e.into()
}
