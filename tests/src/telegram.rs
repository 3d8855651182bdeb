//! The Telegram plugin in tests: installed from source with its manifest
//! widened to the fake on loopback.

use std::path::Path;

/// Install the telegram plugin built from source into `plugins`, with its
/// manifest widened to the fake's loopback address: a declared secret is
/// only filled in for the manifest's own hosts, so an operator pointing
/// `api_base` elsewhere must widen the manifest too.
pub fn install(plugins: &Path) {
    std::fs::create_dir_all(plugins).expect("plugins dir");
    let wasm = crate::built_plugin("telegram");
    std::fs::copy(&wasm, plugins.join("telegram.wasm")).expect("copy telegram.wasm");
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).expect("manifest");
    let widened = manifest.replace(
        r#"allowed_hosts = ["https://api.telegram.org"]"#,
        r#"allowed_hosts = ["https://api.telegram.org", "http://127.0.0.1:*"]"#,
    );
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join("telegram.toml"), widened).expect("write telegram.toml");
}
