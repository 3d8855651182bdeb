//! Debugging a trap, as the language guides describe it: a plugin that
//! traps reports ``` `invoke` trapped: ... ``` with wasmtime's wasm
//! backtrace, whose frames carry the function names from the component's
//! name section. A C tool scaffolded by `pincer plugin new`, edited to trap
//! in a function of its own when asked, is built by `pincer plugin build`'s
//! builder and loaded into the real host: the error names that function,
//! and the next call is served by a fresh instance.

use pincer::health::HealthConfig;
use pincer::plugin_dev::{Lang, scaffold};
use pincer::plugins::{CallError, PluginKind, RuntimeConfig};
use pincer_tests::TestRuntime;
use pincer_tests::guests::{build, install_built};

const CRASH_FN: &str = "pincer_demo_crash_here";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_names_the_guest_functions_from_the_name_section() {
    let built = tokio::task::spawn_blocking(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = scaffold::new_project(tmp.path(), Lang::C, PluginKind::Tool, "c-trap")
            .expect("scaffold");
        let src = dir.join("plugin.c");
        let text = std::fs::read_to_string(&src).expect("plugin.c");
        let anchor = "bool exports_pincer_plugin_tool_invoke(";
        assert!(text.contains(anchor), "the scaffold's invoke moved");
        let crash = format!(
            "__attribute__((noinline)) void {CRASH_FN}(void) {{ __builtin_trap(); }}\n\n{anchor}"
        );
        let mut edited = text.replacen(anchor, &crash, 1);
        // Any arguments but `{}` trap.
        let body = "pincer_error_t *err) {\n";
        let at = edited.find(anchor).expect("invoke");
        let open = at + edited[at..].find(body).expect("invoke body") + body.len();
        edited.insert_str(open, &format!("  if (arguments->len > 2) {CRASH_FN}();\n"));
        std::fs::write(&src, edited).expect("write plugin.c");
        let built = build(&dir);
        (tmp, built)
    })
    .await
    .expect("build task");
    let (_tmp, built) = built;
    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    install_built(&built, &t.plugins_dir());
    let failed = t.runtime.load_dir().await.expect("load dir");
    assert!(failed.is_empty(), "{failed:?}");

    let e = t
        .runtime
        .plugins
        .invoke_tool("c-trap", r#"{"crash": true}"#)
        .await
        .expect_err("it traps");
    let CallError::Trap { call, message } = &e else {
        panic!("not a trap: {e}");
    };
    assert_eq!(*call, "invoke");
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("wasm backtrace"), "{message}");
    assert!(
        message.contains(CRASH_FN),
        "the frame is named from the name section: {message}"
    );
    assert!(
        message.contains("exports_pincer_plugin_tool_invoke"),
        "the caller's frame too: {message}"
    );
    // The trapped instance is gone; a fresh one answers.
    let out = t
        .runtime
        .plugins
        .invoke_tool("c-trap", "{}")
        .await
        .expect("the next call works");
    assert!(out.contains("Hello from c-trap!"), "{out}");
}
