//! Generated bindings for the two plugin worlds (each in a crate of its own).

pub use pincer_sdk_channel_bindings as channel;
pub use pincer_sdk_tool_bindings as tool;

pub(crate) use channel::pincer::plugin as host;
