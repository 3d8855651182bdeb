//! Generated bindings for `pincer:plugin/tool-plugin`; the host-API imports
//! are shared with the channel bindings. Use `pincer-sdk` instead.

wit_bindgen::generate!({
    path: "../../wit",
    world: "tool-plugin",
    pub_export_macro: true,
    export_macro_name: "__export_tool_world",
    default_bindings_module: "pincer_sdk::bindings::tool",
    with: {
        "pincer:plugin/types@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::types,
        "pincer:plugin/log@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::log,
        "pincer:plugin/kv@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::kv,
        "pincer:plugin/clock@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::clock,
        "pincer:plugin/secrets@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::secrets,
        "pincer:plugin/media@0.2.0": pincer_sdk_channel_bindings::pincer::plugin::media,
    },
});
