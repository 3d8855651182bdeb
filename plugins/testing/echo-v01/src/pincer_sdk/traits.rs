//! The traits a plugin implements, and the macros that export them.

use crate::pincer_sdk::Error;

pub use crate::pincer_sdk::bindings::exports::pincer::plugin::channel::{
    Capabilities, InboundMessage, OutboundMessage, ReceiveMode, WebhookRequest, WebhookResponse,
};

/// A JSON webhook response with `status`, carrying `messages` to the host.
pub fn webhook_json(
    status: u16,
    body: &serde_json::Value,
    messages: Vec<InboundMessage>,
) -> WebhookResponse {
    WebhookResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        messages,
    }
}

/// The operator's configuration for a channel: `key = value` entries.
#[derive(Debug, Clone, Default)]
pub struct Config(pub Vec<(String, String)>);

impl Config {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// The value of `key`, or a [`Error::Config`] naming it.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::config(format!("missing config key `{key}`")))
    }
}

/// A messaging channel.
///
/// The host may run several instances of one channel side by side (one
/// receiving, others sending), and may replace an instance at any time; keep
/// durable state in [`crate::pincer_sdk::kv`], not in memory. `start` is called on every
/// instance before any other channel call.
pub trait Channel {
    /// The channel's name (`telegram`, `echo`, ...).
    fn name() -> String;
    /// What the channel supports.
    fn capabilities() -> Capabilities;
    /// Validate the configuration and prepare the instance.
    fn start(config: Config) -> Result<(), Error>;
    /// Wait up to `wait_ms` for messages (poll-mode channels).
    fn poll(wait_ms: u32) -> Result<Vec<InboundMessage>, Error> {
        let _ = wait_ms;
        Err(Error::Unsupported("poll".into()))
    }
    /// Handle a push from the platform (webhook-mode channels).
    fn handle_webhook(request: WebhookRequest) -> Result<WebhookResponse, Error> {
        let _ = request;
        Err(Error::Unsupported("handle-webhook".into()))
    }
    /// Deliver a message; returns the platform's message id.
    fn send(message: OutboundMessage) -> Result<String, Error>;
    /// Replace the text of an earlier message.
    fn edit(conversation: String, message_id: String, text: String) -> Result<(), Error> {
        let _ = (conversation, message_id, text);
        Err(Error::Unsupported("edit".into()))
    }
    /// Show a typing indicator.
    fn typing(conversation: String) -> Result<(), Error> {
        let _ = conversation;
        Err(Error::Unsupported("typing".into()))
    }
    /// Unix ms of the last message in or out (defaults to the SDK's [`crate::pincer_sdk::touch`] record).
    fn last_activity() -> u64 {
        crate::pincer_sdk::last_touched()
    }
    /// Reset connections; the default has nothing to reset.
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

/// Export a type implementing [`Channel`] as this component's channel.
macro_rules! export_channel {
    ($ty:ident) => {
        impl $crate::pincer_sdk::bindings::exports::pincer::plugin::plugin::Guest for $ty {
            fn name() -> ::std::string::String {
                <$ty as $crate::pincer_sdk::Channel>::name()
            }
            fn last_activity() -> u64 {
                <$ty as $crate::pincer_sdk::Channel>::last_activity()
            }
            fn restart() -> ::core::result::Result<
                (),
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                <$ty as $crate::pincer_sdk::Channel>::restart()
                    .map_err($crate::pincer_sdk::__wit_err)
            }
        }
        impl $crate::pincer_sdk::bindings::exports::pincer::plugin::channel::Guest for $ty {
            fn describe() -> $crate::pincer_sdk::Capabilities {
                <$ty as $crate::pincer_sdk::Channel>::capabilities()
            }
            fn start(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<
                (),
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                <$ty as $crate::pincer_sdk::Channel>::start($crate::pincer_sdk::Config(config))
                    .map_err($crate::pincer_sdk::__wit_err)
            }
            fn poll(
                wait_ms: u32,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::pincer_sdk::InboundMessage>,
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                let out = <$ty as $crate::pincer_sdk::Channel>::poll(wait_ms)
                    .map_err($crate::pincer_sdk::__wit_err)?;
                if !out.is_empty() {
                    $crate::pincer_sdk::touch();
                }
                Ok(out)
            }
            fn handle_webhook(
                request: $crate::pincer_sdk::WebhookRequest,
            ) -> ::core::result::Result<
                $crate::pincer_sdk::WebhookResponse,
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                let out = <$ty as $crate::pincer_sdk::Channel>::handle_webhook(request)
                    .map_err($crate::pincer_sdk::__wit_err)?;
                if !out.messages.is_empty() {
                    $crate::pincer_sdk::touch();
                }
                Ok(out)
            }
            fn send(
                message: $crate::pincer_sdk::OutboundMessage,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                let id = <$ty as $crate::pincer_sdk::Channel>::send(message)
                    .map_err($crate::pincer_sdk::__wit_err)?;
                $crate::pincer_sdk::touch();
                Ok(id)
            }
            fn edit(
                conversation: ::std::string::String,
                message_id: ::std::string::String,
                text: ::std::string::String,
            ) -> ::core::result::Result<
                (),
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                <$ty as $crate::pincer_sdk::Channel>::edit(conversation, message_id, text)
                    .map_err($crate::pincer_sdk::__wit_err)
            }
            fn typing(
                conversation: ::std::string::String,
            ) -> ::core::result::Result<
                (),
                $crate::pincer_sdk::bindings::pincer::plugin::types::Error,
            > {
                <$ty as $crate::pincer_sdk::Channel>::typing(conversation)
                    .map_err($crate::pincer_sdk::__wit_err)
            }
        }
        $crate::pincer_sdk::bindings::export!($ty);
    };
}

pub(crate) use export_channel;
