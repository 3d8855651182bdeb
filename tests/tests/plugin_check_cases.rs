//! `pincer plugin check` on the cases not covered by `plugin_check.rs`:
//! a component built from source in Python (componentize-py links CPython's
//! WASI sockets and filesystem imports) loads, with a warning and a fix for
//! each of those imports; and a component that exports nothing is refused
//! with the missing exports named, each with a fix.

use pincer::plugin_dev::check::{self, Severity};
use pincer::plugins::PluginKind;
use pincer_tests::script_guests::built_guest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_filesystem_imports_are_warnings_with_a_fix() {
    let wasm = tokio::task::spawn_blocking(|| built_guest("py-relay"))
        .await
        .expect("build task");
    let report = check::check(&wasm);
    assert!(report.loads(), "{}", report.render());
    assert_eq!(report.kind, Some(PluginKind::Channel));
    assert_eq!(
        report.world.as_deref(),
        Some("pincer:plugin/channel-plugin@0.2.0")
    );
    let warning = |prefix: &str| {
        report
            .findings
            .iter()
            .find(|f| f.item.starts_with(prefix))
            .unwrap_or_else(|| panic!("no finding for {prefix}: {}", report.render()))
    };
    let sockets = warning("wasi:sockets/");
    assert_eq!(sockets.severity, Severity::Warning);
    assert!(
        sockets.problem.contains("no network sockets"),
        "{sockets:?}"
    );
    assert!(sockets.fix.contains("wasi:http"), "{sockets:?}");
    let fs = warning("wasi:filesystem/");
    assert_eq!(fs.severity, Severity::Warning);
    assert!(fs.problem.contains("/data"), "{fs:?}");
    assert!(fs.fix.contains("key-value"), "{fs:?}");
    let text = report.render();
    assert!(text.contains("wasi:sockets"), "{text}");
}

#[test]
fn a_component_without_the_plugin_exports_is_refused_with_a_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The smallest valid component: the preamble alone (no imports, no
    // exports).
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").expect("write");
    let report = check::check(&empty);
    assert!(!report.loads(), "{}", report.render());
    assert_eq!(report.kind, None);
    let errors: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(
        errors
            .iter()
            .any(|f| f.problem.contains("exports neither") && f.fix.contains("tool-plugin")),
        "{}",
        report.render()
    );
    assert!(
        errors
            .iter()
            .any(|f| f.problem.contains("missing export") && f.item.contains("plugin")),
        "{}",
        report.render()
    );
}
