//! Hot-load from a watched directory: add, replace (new version answers),
//! corrupt replacement (old version keeps answering, error reported), remove.

use std::time::Duration;

use pincer::events::Event;
use pincer::health::HealthConfig;
use pincer::plugins::{CallError, PluginState, RuntimeConfig};
use pincer_tests::{TestRuntime, built_plugin, wait_event};
use sha2::{Digest, Sha256};

/// Writes a manifest and a component, each atomically, and returns the
/// component's sha256. The two writes are separate, so the watcher may load
/// an intermediate pairing (new manifest, old component); tests wait for the
/// event carrying both the version and the hash they wrote.
fn write_plugin(dir: &std::path::Path, from: &str, name: &str, version: &str) -> String {
    let manifest = format!("name = \"{name}\"\nkind = \"tool\"\nversion = \"{version}\"\n");
    pincer::atomic_file::write(&dir.join(format!("{name}.toml")), manifest.as_bytes()).unwrap();
    let bytes = std::fs::read(built_plugin(from)).unwrap();
    pincer::atomic_file::write(&dir.join(format!("{name}.wasm")), &bytes).unwrap();
    hex::encode(Sha256::digest(&bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_replace_corrupt_remove() {
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    let dir = t.plugins_dir();
    let _watch = t.runtime.watch(Duration::from_millis(150)).unwrap();
    let mut events = t.subscribe();

    // Add.
    let h1 = write_plugin(&dir, "clock", "swap", "1.0.0");
    wait_event(&mut events, |e| matches!(e, Event::PluginLoaded { plugin, version, hash, .. } if plugin == "swap" && version == "1.0.0" && *hash == h1)).await;
    let v1 = t.runtime.plugins.current("swap").unwrap();
    assert_eq!(v1.tool_info().unwrap().name, "clock");
    assert!(
        t.runtime
            .plugins
            .invoke_tool("swap", "{}")
            .await
            .unwrap()
            .contains("unix_ms")
    );

    // Replace with a different component: the new version answers.
    let h2 = write_plugin(&dir, "http-fetch", "swap", "2.0.0");
    wait_event(&mut events, |e| matches!(e, Event::PluginLoaded { plugin, version, hash, replaced: true, .. } if plugin == "swap" && version == "2.0.0" && *hash == h2)).await;
    let v2 = t.runtime.plugins.current("swap").unwrap();
    assert_ne!(v1.sha256, v2.sha256);
    assert_eq!(v2.tool_info().unwrap().name, "http_fetch");
    let err = t
        .runtime
        .plugins
        .invoke_tool("swap", r#"{"url":"http://example.com/"}"#)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("host not allowed"),
        "v2 should be http-fetch: {err}"
    );
    // The old version is still usable by whoever holds it (in-flight calls).
    assert_eq!(v1.tool_info().unwrap().name, "clock");

    // Corrupt replacement: v2 keeps serving and the error is reported.
    pincer::atomic_file::write(
        &dir.join("swap.wasm"),
        b"\0asm garbage that is not a component",
    )
    .unwrap();
    let failed = wait_event(
        &mut events,
        |e| matches!(e, Event::PluginFailed { plugin, .. } if plugin == "swap"),
    )
    .await;
    let Event::PluginFailed { error, .. } = failed else {
        unreachable!()
    };
    assert!(error.contains("compiling"), "{error}");
    let info = t.runtime.plugins.info("swap").unwrap();
    assert_eq!(info.state, PluginState::Loaded);
    assert_eq!(info.version.as_deref(), Some("2.0.0"));
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("compiling")
    );
    assert_eq!(t.runtime.plugins.current("swap").unwrap().sha256, v2.sha256);

    // A truncated file (a copy caught half-way) is refused the same way.
    let full = std::fs::read(built_plugin("clock")).unwrap();
    std::fs::write(dir.join("swap.wasm"), &full[..full.len() / 2]).unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, Event::PluginFailed { plugin, .. } if plugin == "swap"),
    )
    .await;
    assert_eq!(t.runtime.plugins.current("swap").unwrap().sha256, v2.sha256);

    // Remove: unloaded, calls fail with a clear error.
    std::fs::remove_file(dir.join("swap.wasm")).unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, Event::PluginUnloaded { plugin } if plugin == "swap"),
    )
    .await;
    let err = t
        .runtime
        .plugins
        .invoke_tool("swap", "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::NotLoaded(_)), "{err}");
    assert!(t.runtime.plugins.info("swap").is_none());
}

/// A component that is not a Pincer plugin, or a manifest that lies about
/// its kind, is refused with an error that says why; others keep loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_kind_is_reported_and_others_load() {
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    let dir = t.plugins_dir();
    std::fs::copy(built_plugin("clock"), dir.join("liar.wasm")).unwrap();
    std::fs::write(
        dir.join("liar.toml"),
        "name = \"liar\"\nkind = \"channel\"\n",
    )
    .unwrap();
    pincer_tests::install_plugin(&dir, "clock", "clock");
    let failures = t.runtime.load_dir().await.unwrap();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]
            .1
            .to_string()
            .contains("manifest says kind `channel` but the component is a tool"),
        "{}",
        failures[0].1
    );
    assert!(t.runtime.plugins.invoke_tool("clock", "{}").await.is_ok());
    let liar = t.runtime.plugins.info("liar").unwrap();
    assert_eq!(liar.state, PluginState::Failed);
}
