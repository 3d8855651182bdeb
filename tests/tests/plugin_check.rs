//! `pincer plugin check` and contract versions in practice. A plugin built
//! from source against a copy of the contract at an unknown version (0.3.0)
//! fails to load with a message naming the interface, the version it needs
//! and the versions the host supports, and `check` says the same; a plugin
//! importing an interface the host does not provide is refused by both; a
//! core module and a non-wasm file get a plain fix. The built plugins of
//! both linked versions (0.1.0, 0.2.0) pass.

use std::path::{Path, PathBuf};

use pincer::health::HealthConfig;
use pincer::plugin_dev::check::{self, Severity};
use pincer::plugin_dev::{Lang, scaffold};
use pincer::plugins::{LoadError, PluginKind, RuntimeConfig};
use pincer_tests::guests::{build, repo_root};
use pincer_tests::{TestRuntime, built_plugin};

/// A Rust tool scaffold whose wit/pincer.wit is edited by `edit` and whose
/// src/lib.rs by `edit_src`, built.
async fn build_edited_rust_tool(
    name: &str,
    edit: impl Fn(String) -> String + Send + 'static,
    edit_src: impl Fn(String) -> String + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = scaffold::new_project(tmp.path(), Lang::Rust, PluginKind::Tool, &name)
            .expect("scaffold");
        let target = repo_root().join("target").join("scaffold-rust");
        std::fs::create_dir_all(dir.join(".cargo")).expect("mkdir");
        std::fs::write(
            dir.join(".cargo/config.toml"),
            format!("[build]\ntarget-dir = {:?}\n", target.display().to_string()),
        )
        .expect("cargo config");
        let wit = dir.join("wit/pincer.wit");
        let text = std::fs::read_to_string(&wit).expect("wit");
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed the contract");
        std::fs::write(&wit, edited).expect("write wit");
        let lib = dir.join("src/lib.rs");
        let src = std::fs::read_to_string(&lib).expect("lib.rs");
        std::fs::write(&lib, edit_src(src)).expect("write lib.rs");
        let built = build(&dir);
        (tmp, built.wasm)
    })
    .await
    .expect("build task")
}

async fn load_error(wasm: &Path) -> LoadError {
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    let name = wasm
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(wasm, t.plugins_dir().join(format!("{name}.wasm"))).expect("copy");
    t.runtime
        .plugins
        .load_file(&t.plugins_dir().join(format!("{name}.wasm")))
        .await
        .expect_err("the host refuses it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_an_unknown_contract_version_is_refused_by_name() {
    let (_tmp, wasm) = build_edited_rust_tool(
        "future-tool",
        |wit| {
            wit.replace(
                "package pincer:plugin@0.2.0;",
                "package pincer:plugin@0.3.0;",
            )
        },
        |src| src,
    )
    .await;
    let err = load_error(&wasm).await;
    let message = err.to_string();
    assert!(
        matches!(&err, LoadError::WitVersion { found, .. } if found == "0.3.0"),
        "{err:?}"
    );
    assert!(
        message.contains("pincer:plugin/"),
        "names the interface: {message}"
    );
    assert!(
        message.contains("@0.3.0"),
        "names the version it needs: {message}"
    );
    assert!(
        message.contains("pincer:plugin@0.2.0, 0.1.0"),
        "names the versions the host supports: {message}"
    );

    let report = check::check(&wasm);
    assert!(!report.loads(), "{}", report.render());
    assert_eq!(report.contract_version.as_deref(), Some("0.3.0"));
    let text = report.render();
    assert!(text.contains("pincer:plugin@0.3.0"), "{text}");
    assert!(text.contains("0.2.0, 0.1.0"), "{text}");
    assert!(text.contains("REFUSED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_import_is_refused_by_check_and_by_the_loader() {
    let (_tmp, wasm) = build_edited_rust_tool(
        "weather-tool",
        |wit| {
            wit.replace(
                "world tool-plugin {",
                "interface weather {\n    today: func() -> string;\n}\n\nworld tool-plugin {\n    import weather;",
            )
        },
        |src| {
            src.replace(
                "log::write(",
                "let _ = pincer::plugin::weather::today();\n        log::write(",
            )
        },
    )
    .await;
    let err = load_error(&wasm).await;
    assert!(
        err.to_string().contains("pincer:plugin/weather@0.2.0"),
        "{err}"
    );
    let report = check::check(&wasm);
    assert!(!report.loads(), "{}", report.render());
    let finding = report
        .findings
        .iter()
        .find(|f| f.item == "pincer:plugin/weather@0.2.0")
        .unwrap_or_else(|| panic!("no finding for the import: {}", report.render()));
    assert_eq!(finding.severity, Severity::Error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_linked_contract_versions_pass_and_junk_gets_a_fix() {
    for (name, version) in [("echo", "0.2.0"), ("echo-v01", "0.1.0"), ("clock", "0.2.0")] {
        let report = check::check(&built_plugin(name));
        assert!(report.loads(), "{}", report.render());
        assert_eq!(report.contract_version.as_deref(), Some(version), "{name}");
    }
    let report = check::check(&built_plugin("echo"));
    assert_eq!(
        report.world.as_deref(),
        Some("pincer:plugin/channel-plugin@0.2.0")
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").expect("write");
    let report = check::check(&junk);
    assert!(!report.loads());
    assert_eq!(report.findings[0].item, "file");

    // A core module (what clang writes before componentizing).
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let report = check::check(&core);
    assert!(!report.loads());
    assert!(
        report.findings[0]
            .problem
            .contains("core WebAssembly module"),
        "{}",
        report.render()
    );
    assert!(report.findings[0].fix.contains("pincer plugin build"));
}
