//! Host-side bindings generated from `wit/pincer.wit`. The tool world reuses
//! the channel world's import interfaces so the host implements them once.

/// `pincer:plugin/channel-plugin`.
pub mod channel {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "channel-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `pincer:plugin/tool-plugin`.
pub mod tool {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "tool-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "pincer:plugin/types": super::channel::pincer::plugin::types,
            "pincer:plugin/log": super::channel::pincer::plugin::log,
            "pincer:plugin/kv": super::channel::pincer::plugin::kv,
            "pincer:plugin/clock": super::channel::pincer::plugin::clock,
            "pincer:plugin/secrets": super::channel::pincer::plugin::secrets,
        },
    });
}

pub use channel::exports::pincer::plugin::channel::{
    Capabilities, InboundMessage, OutboundMessage, ReceiveMode, WebhookRequest, WebhookResponse,
};
pub use channel::pincer::plugin::types::{Error as WitError, RateLimit};
pub use tool::exports::pincer::plugin::tool::ToolInfo;

/// The WIT package version this host implements.
pub const WIT_PACKAGE: &str = "pincer:plugin";
/// Versions of [`WIT_PACKAGE`] this host can load (semver-compatible with these).
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.1.0"];
