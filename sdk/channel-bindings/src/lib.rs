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
