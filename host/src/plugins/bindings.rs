//! Host-side bindings generated from the plugin contract, for every contract
//! version the host links: [`v02`] from `wit/pincer.wit` (`pincer:plugin@0.2.0`,
//! the current one, whose types the rest of the host uses) and [`v01`] from
//! `wit/v0.1/pincer.wit` (`pincer:plugin@0.1.0`, still loaded; converted by
//! [`super::compat`]). In each version the tool world reuses the channel
//! world's import interfaces so the host implements them once per version.

/// `pincer:plugin@0.2.0`.
pub mod v02 {
    /// `pincer:plugin/channel-plugin@0.2.0`.
    pub mod channel {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "channel-plugin",
            imports: { default: async },
            exports: { default: async },
        });
    }

    /// `pincer:plugin/tool-plugin@0.2.0`.
    pub mod tool {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "tool-plugin",
            imports: { default: async },
            exports: { default: async },
            with: {
                "pincer:plugin/types": super::channel::pincer::plugin::types,
                "pincer:plugin/log": super::channel::pincer::plugin::log,
                "pincer:plugin/kv": super::channel::pincer::plugin::kv,
                "pincer:plugin/clock": super::channel::pincer::plugin::clock,
                "pincer:plugin/secrets": super::channel::pincer::plugin::secrets,
                "pincer:plugin/media": super::channel::pincer::plugin::media,
            },
        });
    }
}

/// `pincer:socket@0.1.0` (`wit/socket/socket.wit`), an extension package of
/// `pincer:plugin@0.2.0`: host-managed WebSocket sessions and timers. Its
/// imports are linked for every plugin (a tool's calls are refused); the
/// types it uses are [`v02`]'s.
pub mod socket {
    wasmtime::component::bindgen!({
        path: ["../wit", "../wit/socket"],
        world: "pincer:socket/imports",
        with: {
            "pincer:plugin/types": super::v02::channel::pincer::plugin::types,
        },
    });
}

/// `pincer:plugin@0.1.0`, frozen.
pub mod v01 {
    /// `pincer:plugin/channel-plugin@0.1.0`.
    pub mod channel {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "channel-plugin",
            imports: { default: async },
            exports: { default: async },
        });
    }

    /// `pincer:plugin/tool-plugin@0.1.0`.
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
}

pub use v02::channel::exports::pincer::plugin::channel::{
    Attachment, AttachmentKind, Capabilities, ChatTarget, ChatType, DeliveryState, DeliveryStatus,
    DownloadRequest, InboundMessage, OutboundAttachment, OutboundMessage, PollBatch, Reaction,
    ReceiveMode, RepliedMessage, StreamStyle, TextFormat, WebhookRequest, WebhookResponse,
};
pub use v02::channel::pincer::plugin::types::{Error as WitError, RateLimit};
pub use v02::tool::exports::pincer::plugin::tool::ToolInfo;

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "pincer:plugin";
/// Versions of [`WIT_PACKAGE`] this host can load (semver-compatible with
/// these), newest first.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// The contract track a plugin was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum WitTrack {
    /// `pincer:plugin@0.1.x`.
    #[serde(rename = "0.1")]
    V01,
    /// `pincer:plugin@0.2.x`.
    #[serde(rename = "0.2")]
    V02,
}

impl WitTrack {
    /// The track of a `MAJOR.MINOR.PATCH` version, if the host links it.
    pub fn of(version: &str) -> Option<Self> {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("1")) => Some(WitTrack::V01),
            (Some("0"), Some("2")) => Some(WitTrack::V02),
            _ => None,
        }
    }

    /// `0.1` or `0.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            WitTrack::V01 => "0.1",
            WitTrack::V02 => "0.2",
        }
    }
}

impl OutboundMessage {
    /// A plain-text message to `conversation`, with no thread, reply or
    /// attachments.
    pub fn plain(conversation: impl Into<String>, text: impl Into<String>) -> Self {
        OutboundMessage {
            conversation: conversation.into(),
            thread: None,
            text: text.into(),
            format: TextFormat::Plain,
            reply_to: None,
            attachments: Vec::new(),
        }
    }
}
