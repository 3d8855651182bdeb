//! The traits a plugin implements, and the macros that export them.

use crate::Error;

pub use crate::bindings::channel::exports::pincer::plugin::channel::{
    Capabilities, InboundMessage, OutboundMessage, ReceiveMode, WebhookRequest, WebhookResponse,
};
pub use crate::bindings::tool::exports::pincer::plugin::tool::ToolInfo;

/// Describe a tool: its name, what it does, and the JSON Schema of its arguments.
pub fn tool_info(name: &str, description: &str, parameters_schema: &str) -> ToolInfo {
    ToolInfo {
        name: name.to_string(),
        description: description.to_string(),
        parameters_schema: parameters_schema.to_string(),
    }
}

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
/// durable state in [`crate::kv`], not in memory. `start` is called on every
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
    /// Unix ms of the last message in or out (defaults to the SDK's [`crate::touch`] record).
    fn last_activity() -> u64 {
        crate::last_touched()
    }
    /// Reset connections; the default has nothing to reset.
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

/// An agent tool.
pub trait Tool {
    /// The plugin's name.
    fn name() -> String;
    /// How the model sees the tool.
    fn describe() -> ToolInfo;
    /// Run the tool with parsed JSON arguments.
    fn invoke(arguments: serde_json::Value) -> Result<serde_json::Value, Error>;
    /// Unix ms of the last call (defaults to the SDK's record).
    fn last_activity() -> u64 {
        crate::last_touched()
    }
    /// Reset state; the default has nothing to reset.
    fn restart() -> Result<(), Error> {
        Ok(())
    }
}

/// Export a type implementing [`Channel`] as this component's channel.
#[macro_export]
macro_rules! export_channel {
    ($ty:ident) => {
        impl $crate::bindings::channel::exports::pincer::plugin::plugin::Guest for $ty {
            fn name() -> ::std::string::String {
                <$ty as $crate::Channel>::name()
            }
            fn last_activity() -> u64 {
                <$ty as $crate::Channel>::last_activity()
            }
            fn restart()
            -> ::core::result::Result<(), $crate::bindings::channel::pincer::plugin::types::Error>
            {
                <$ty as $crate::Channel>::restart().map_err($crate::__wit_err)
            }
        }
        impl $crate::bindings::channel::exports::pincer::plugin::channel::Guest for $ty {
            fn describe() -> $crate::Capabilities {
                <$ty as $crate::Channel>::capabilities()
            }
            fn start(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<(), $crate::bindings::channel::pincer::plugin::types::Error>
            {
                <$ty as $crate::Channel>::start($crate::Config(config)).map_err($crate::__wit_err)
            }
            fn poll(
                wait_ms: u32,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::InboundMessage>,
                $crate::bindings::channel::pincer::plugin::types::Error,
            > {
                let out = <$ty as $crate::Channel>::poll(wait_ms).map_err($crate::__wit_err)?;
                if !out.is_empty() {
                    $crate::touch();
                }
                Ok(out)
            }
            fn handle_webhook(
                request: $crate::WebhookRequest,
            ) -> ::core::result::Result<
                $crate::WebhookResponse,
                $crate::bindings::channel::pincer::plugin::types::Error,
            > {
                let out =
                    <$ty as $crate::Channel>::handle_webhook(request).map_err($crate::__wit_err)?;
                if !out.messages.is_empty() {
                    $crate::touch();
                }
                Ok(out)
            }
            fn send(
                message: $crate::OutboundMessage,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::channel::pincer::plugin::types::Error,
            > {
                let id = <$ty as $crate::Channel>::send(message).map_err($crate::__wit_err)?;
                $crate::touch();
                Ok(id)
            }
            fn edit(
                conversation: ::std::string::String,
                message_id: ::std::string::String,
                text: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::bindings::channel::pincer::plugin::types::Error>
            {
                <$ty as $crate::Channel>::edit(conversation, message_id, text)
                    .map_err($crate::__wit_err)
            }
            fn typing(
                conversation: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::bindings::channel::pincer::plugin::types::Error>
            {
                <$ty as $crate::Channel>::typing(conversation).map_err($crate::__wit_err)
            }
        }
        $crate::bindings::channel::__export_channel_world!($ty);
    };
}

/// Export a type implementing [`Tool`] as this component's tool.
#[macro_export]
macro_rules! export_tool {
    ($ty:ident) => {
        impl $crate::bindings::tool::exports::pincer::plugin::plugin::Guest for $ty {
            fn name() -> ::std::string::String {
                <$ty as $crate::Tool>::name()
            }
            fn last_activity() -> u64 {
                <$ty as $crate::Tool>::last_activity()
            }
            fn restart()
            -> ::core::result::Result<(), $crate::bindings::channel::pincer::plugin::types::Error>
            {
                <$ty as $crate::Tool>::restart().map_err($crate::__wit_err)
            }
        }
        impl $crate::bindings::tool::exports::pincer::plugin::tool::Guest for $ty {
            fn describe() -> $crate::ToolInfo {
                <$ty as $crate::Tool>::describe()
            }
            fn invoke(
                arguments: ::std::string::String,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::channel::pincer::plugin::types::Error,
            > {
                $crate::touch();
                let args: $crate::__serde_json::Value = $crate::__serde_json::from_str(&arguments)
                    .map_err(|e| {
                        $crate::Error::Permanent(format!("arguments are not JSON: {e}"))
                    })?;
                let out = <$ty as $crate::Tool>::invoke(args)?;
                Ok(out.to_string())
            }
        }
        $crate::bindings::tool::__export_tool_world!($ty);
    };
}
