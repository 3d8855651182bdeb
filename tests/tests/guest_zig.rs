//! A Zig plugin (`plugins/zig-textstats`, using the C SDK through `zig
//! translate-c`), built from source in the test with `pincer plugin build`'s
//! code (Zig from the `ziglang` wheel; a missing toolchain fails the test),
//! checked, loaded into the real host and called directly and through the
//! agent. Its counts are compared with counts computed here.

use pincer::health::HealthConfig;
use pincer::plugin_dev::{Lang, check};
use pincer::plugins::{PluginKind, RuntimeConfig};
use pincer_tests::TestRuntime;
use pincer_tests::guests::{build_repo_plugin, call_through_agent, install_built};
use serde_json::{Value, json};

async fn invoke(t: &TestRuntime, args: Value) -> Result<Value, String> {
    t.runtime
        .plugins
        .invoke_tool("zig-textstats", &args.to_string())
        .await
        .map(|s| serde_json::from_str(&s).expect("the tool answers JSON"))
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_textstats_is_built_from_source_checked_loaded_and_counts() {
    let (_src, built) = build_repo_plugin("zig-textstats").await;
    assert_eq!(built.lang, Lang::Zig);
    let report = check::check(&built.wasm);
    assert!(report.loads(), "{}", report.render());
    assert_eq!(report.kind, Some(PluginKind::Tool));
    assert_eq!(
        report.world.as_deref(),
        Some("pincer:plugin/tool-plugin@0.2.0")
    );

    let t = TestRuntime::new(RuntimeConfig::default(), HealthConfig::default());
    install_built(&built, &t.plugins_dir());
    let failed = t.runtime.load_dir().await.expect("load dir");
    assert!(failed.is_empty(), "{failed:?}");
    let v = t.runtime.plugins.current("zig-textstats").expect("loaded");
    assert_eq!(v.reported_name, "zig-textstats");

    let text = "the quick brown fox\njumps over the \"lazy\" dog\n\u{e9}t\u{e9} extraordinarily";
    let a = invoke(&t, json!({"text": text, "ignored": 1}))
        .await
        .expect("counts");
    assert_eq!(a["words"], text.split_whitespace().count());
    assert_eq!(a["lines"], 3);
    assert_eq!(a["chars"], text.chars().count());
    assert_eq!(a["bytes"], text.len());
    assert_eq!(a["longest_word"], "extraordinarily");
    assert_eq!(a["calls"], 1);
    assert_eq!(a["words_total"], 11);

    let b = invoke(&t, json!({"text": "say \"hello\"\tto"}))
        .await
        .expect("quotes");
    assert_eq!(b["words"], 3);
    assert_eq!(
        b["longest_word"], "\"hello\"",
        "the word is escaped back into JSON"
    );
    assert_eq!(b["calls"], 2);
    assert_eq!(b["words_total"], 14, "the running total is in key-value");

    let e = invoke(&t, json!({"words": 3})).await.expect_err("no text");
    assert!(e.contains("string `text`"), "{e}");
    let c = invoke(&t, json!({"text": ""}))
        .await
        .expect("still serving");
    assert_eq!(c["words"], 0);
    assert_eq!(c["lines"], 0);
    assert_eq!(c["calls"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_textstats_is_called_by_the_agent() {
    let (_src, built) = build_repo_plugin("zig-textstats").await;
    let result = call_through_agent(&built, r#"{"text":"one two three"}"#).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["result"]["words"], 3, "{result}");
}
