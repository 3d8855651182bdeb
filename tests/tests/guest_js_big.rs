//! A big JavaScript guest (the TypeScript channel `plugins/ts-webhook`,
//! about 14 MB, built from source by `sdk/js/build.sh`) starts fast the
//! second time and never holds up the others (issue 11, "big guests start
//! fast"): a second runtime over the same compile cache loads it without
//! compiling, and a new version compiling in the background leaves another
//! plugin answering and the old version serving until it is swapped in.
//! (`guest_python.rs` proves the same for Python.)

use std::path::Path;

use pincer::health::HealthConfig;
use pincer::plugins::RuntimeConfig;
use pincer_tests::TestRuntime;
use pincer_tests::script_guests::{assert_new_version_compiles_while_others_answer, install_guest};

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
    assert_new_version_compiles_while_others_answer(&runtime(), NAME).await;
}
