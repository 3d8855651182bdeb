//! The macros that export a [`crate::Channel`] or [`crate::Tool`] as the
//! component's implementation of the contract.

/// Export a type implementing [`Channel`](crate::Channel) as this component's
/// channel (world `pincer:plugin/channel-plugin@0.2.0`). Use it once per crate.
///
/// Besides forwarding each call, it records contact with the platform for
/// [`last_touched`](crate::last_touched) after every successful poll (even an
/// empty one), push, send, edit, draft, typing and read receipt.
#[macro_export]
macro_rules! export_channel {
    ($ty:ident) => {
        impl $crate::__private::PluginGuest for $ty {
            fn name() -> ::std::string::String {
                <$ty as $crate::Channel>::name()
            }
            fn last_activity() -> u64 {
                <$ty as $crate::Channel>::last_activity()
            }
            fn restart() -> ::core::result::Result<(), $crate::__private::WitError> {
                <$ty as $crate::Channel>::restart().map_err(::core::convert::Into::into)
            }
        }
        impl $crate::__private::ChannelGuest for $ty {
            fn describe() -> $crate::Capabilities {
                <$ty as $crate::Channel>::capabilities()
            }
            fn start(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                <$ty as $crate::Channel>::start($crate::Config(config))
                    .map_err(::core::convert::Into::into)
            }
            fn poll(
                cursor: ::core::option::Option<::std::string::String>,
                wait_ms: u32,
            ) -> ::core::result::Result<$crate::PollBatch, $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::poll(cursor, wait_ms))
            }
            fn handle_webhook(
                request: $crate::WebhookRequest,
            ) -> ::core::result::Result<$crate::WebhookResponse, $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::handle_webhook(request))
            }
            fn send(
                message: $crate::OutboundMessage,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::send(message))
            }
            fn edit(
                conversation: ::std::string::String,
                message_id: ::std::string::String,
                text: ::std::string::String,
                format: $crate::TextFormat,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::edit(
                    conversation,
                    message_id,
                    text,
                    format,
                ))
            }
            fn draft(
                target: $crate::ChatTarget,
                draft_id: u64,
                text: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::draft(target, draft_id, text))
            }
            fn typing(
                target: $crate::ChatTarget,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::typing(target))
            }
            fn mark_read(
                target: $crate::ChatTarget,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::touched(<$ty as $crate::Channel>::mark_read(target))
            }
            fn fetch_attachment(
                handle: ::std::string::String,
            ) -> ::core::result::Result<$crate::DownloadRequest, $crate::__private::WitError> {
                <$ty as $crate::Channel>::fetch_attachment(handle)
                    .map_err(::core::convert::Into::into)
            }
        }
        $crate::bindings::channel::__export_channel_world!($ty);
    };
}

/// Export a type implementing [`Tool`](crate::Tool) as this component's tool
/// (world `pincer:plugin/tool-plugin@0.2.0`). Use it once per crate.
///
/// Arguments that are not JSON are refused with [`Error::Permanent`](crate::Error)
/// before the tool sees them.
#[macro_export]
macro_rules! export_tool {
    ($ty:ident) => {
        impl $crate::__private::ToolPluginGuest for $ty {
            fn name() -> ::std::string::String {
                <$ty as $crate::Tool>::name()
            }
            fn last_activity() -> u64 {
                <$ty as $crate::Tool>::last_activity()
            }
            fn restart() -> ::core::result::Result<(), $crate::__private::WitError> {
                <$ty as $crate::Tool>::restart().map_err(::core::convert::Into::into)
            }
        }
        impl $crate::__private::ToolGuest for $ty {
            fn describe() -> $crate::ToolInfo {
                <$ty as $crate::Tool>::describe()
            }
            fn invoke(
                arguments: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::__private::WitError> {
                $crate::touch();
                let args: $crate::__private::serde_json::Value =
                    $crate::__private::serde_json::from_str(&arguments).map_err(|e| {
                        $crate::Error::Permanent(::std::format!("arguments are not JSON: {e}"))
                    })?;
                let out = <$ty as $crate::Tool>::invoke(args)?;
                Ok(out.to_string())
            }
        }
        $crate::bindings::tool::__export_tool_world!($ty);
    };
}
