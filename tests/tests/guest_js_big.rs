//! A big JavaScript guest (the TypeScript channel `plugins/ts-webhook`,
//! about 14 MB, built from source by `sdk/js/build.sh`) starts fast the
//! second time and never holds up the others (issue 11, "big guests start
//! fast"): a second runtime over the same compile cache loads it without
//! compiling, and a new version compiling in the background leaves another
//! plugin answering and the old version serving until it is swapped in.
//! (`guest_python.rs` proves the same for Python.)

use std::path::Path;
use std::time::Duration;

use pincer::health::HealthConfig;
use pincer::plugins::RuntimeConfig;
use pincer_tests::script_guests::{built_guest, install_guest, with_custom_section};
use pincer_tests::{TestRuntime, install_plugin};

const NAME: &str = "ts-webhook";

fn runtime() -> TestRuntime {
    TestRuntime::new(RuntimeConfig::default(), HealthConfig::default())
}

/// Copy the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_start_loads_the_typescript_channel_from_the_compile_cache() {
    let first = runtime();
    install_guest(&first.plugins_dir(), NAME, |m| m);
    let path = first.plugins_dir().join(format!("{NAME}.wasm"));
    first
        .runtime
        .plugins
        .load_file(&path)
        .await
        .expect("first load");
    let info = first.runtime.plugins.info(NAME).expect("loaded");
    assert_eq!(info.cached, Some(false), "first start compiles: {info:?}");

    // A second gateway start: another runtime over the same data (its
    // compile cache copied over), the same file.
    let second = runtime();
    install_guest(&second.plugins_dir(), NAME, |m| m);
    copy_tree(
        &first.dir.path().join("cache"),
        &second.dir.path().join("cache"),
    );
    let path = second.plugins_dir().join(format!("{NAME}.wasm"));
    second
        .runtime
        .plugins
        .load_file(&path)
        .await
        .expect("second load");
    let again = second.runtime.plugins.info(NAME).expect("loaded");
    assert_eq!(
        again.cached,
        Some(true),
        "second start loads from the cache: {again:?}"
    );
    assert_eq!(again.sha256, info.sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_typescript_version_compiles_while_other_plugins_answer() {
    let t = runtime();
    let dir = t.plugins_dir();
    install_plugin(&dir, "clock", "clock");
    install_guest(&dir, NAME, |m| m);
    let plugins = t.runtime.plugins.clone();
    plugins
        .load_file(&dir.join("clock.wasm"))
        .await
        .expect("clock loads");
    let path = dir.join(format!("{NAME}.wasm"));
    plugins.load_file(&path).await.expect("v1 loads");
    let v1 = plugins.current(NAME).expect("v1").sha256.clone();

    // Version 2: other bytes, so nothing in the compile cache.
    let bytes = std::fs::read(built_guest(NAME)).expect("built");
    pincer::atomic_file::write(&path, &with_custom_section(&bytes, "v2")).expect("write v2");
    let loader = {
        let plugins = plugins.clone();
        let path = path.clone();
        tokio::spawn(async move { plugins.load_file(&path).await })
    };
    // While it compiles, the clock keeps answering and v1 stays current
    // (v2 is swapped in only once compiled and smoke-tested).
    let mut answered_during_load = 0;
    while !loader.is_finished() {
        let out = tokio::time::timeout(Duration::from_secs(60), plugins.invoke_tool("clock", "{}"))
            .await
            .expect("clock answers")
            .expect("clock works");
        assert!(out.contains("unix_ms"), "{out}");
        if plugins.current(NAME).expect("current").sha256 == v1 {
            answered_during_load += 1;
        }
    }
    loader.await.expect("join").expect("v2 loads");
    assert!(
        answered_during_load > 0,
        "no call completed while v2 compiled"
    );
    let info = plugins.info(NAME).expect("info");
    assert_eq!(info.cached, Some(false), "v2 was compiled: {info:?}");
    assert_ne!(info.sha256.as_deref(), Some(v1.as_str()));
}
