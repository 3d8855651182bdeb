//! Generated bindings for `pincer:plugin/channel-plugin`, including the
//! host-API imports every plugin shares. Use `pincer-sdk` instead.
//! (A crate of its own because wit-bindgen's public export macros of two
//! worlds that both export `pincer:plugin/plugin` cannot share one crate.)

wit_bindgen::generate!({
    path: "../../wit",
    world: "channel-plugin",
    pub_export_macro: true,
    export_macro_name: "__export_channel_world",
    default_bindings_module: "pincer_sdk::bindings::channel",
});

/// Imports of the `pincer:socket@0.1.0` extension package
/// (`wit/socket/socket.wit`): host-managed WebSocket sessions and timers.
/// A plugin that never calls them does not import them.
pub mod socket {
    wit_bindgen::generate!({
        path: ["../../wit", "../../wit/socket"],
        world: "pincer:socket/imports",
        with: {
            "pincer:plugin/types@0.2.0": crate::pincer::plugin::types,
        },
    });
}
