//! Generated bindings for the two plugin worlds of `pincer:plugin@0.2.0`
//! (each in a crate of its own; see `sdk/channel-bindings`).

pub use pincer_sdk_channel_bindings as channel;
pub use pincer_sdk_tool_bindings as tool;

pub(crate) use channel::pincer::plugin as host;
