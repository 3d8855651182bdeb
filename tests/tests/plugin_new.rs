//! `pincer plugin new` scaffolds build and work as they are: for Rust, C and
//! Zig, a tool and a channel are generated, built with `pincer plugin build`'s
//! code, checked, loaded into the real host and driven. The scaffolded tool
//! called with `{}` greets and reports the host clock's time (a manual clock
//! here, so the value is exact); the scaffolded channel turns a webhook POST
//! into a message and keeps each reply in key-value.
//!
//! Python, JavaScript and TypeScript scaffolds are generated and built too,
//! with the toolchains `sdk/install-toolchains.sh` installs (a missing one
//! fails the test with the build's own message).

use pincer::clock::ManualClock;
use pincer::health::HealthConfig;
use pincer::plugin_dev::{Lang, check, scaffold};
use pincer::plugins::bindings::{OutboundMessage, WebhookRequest};
use pincer::plugins::{Instance, PluginKind, RuntimeConfig};
use pincer_tests::TestRuntime;
use pincer_tests::guests::{build, install_built, repo_root};
use serde_json::Value;

const NOW: u64 = 1_764_000_000_123;

/// Scaffold `lang`/`kind` as `name` in a temp dir, build it, check it, load it.
async fn scaffold_and_load(lang: Lang, kind: PluginKind, name: &str) -> TestRuntime {
    let name = name.to_string();
    let built = tokio::task::spawn_blocking(move || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = scaffold::new_project(tmp.path(), lang, kind, &name).expect("scaffold");
        assert!(dir.join("README.md").is_file());
        assert!(dir.join("pincer.toml").is_file());
        if lang == Lang::Rust {
            // Share one target dir between runs (the wit-bindgen build is the slow part).
            let target = repo_root().join("target").join("scaffold-rust");
            std::fs::create_dir_all(dir.join(".cargo")).expect("mkdir");
            std::fs::write(
                dir.join(".cargo/config.toml"),
                format!("[build]\ntarget-dir = {:?}\n", target.display().to_string()),
            )
            .expect("cargo config");
        }
        // A second `new` into the same place is refused, not merged.
        let again = scaffold::new_project(tmp.path(), lang, kind, &name).expect_err("exists");
        assert!(again.to_string().contains("already exists"), "{again}");
        let built = build(&dir);
        assert_eq!(built.lang, lang);
        let report = check::check(&built.wasm);
        assert!(report.loads(), "{}", report.render());
        assert_eq!(report.kind, Some(kind));
        (tmp, built)
    })
    .await
    .expect("build task");
    let (_tmp, built) = built;
    let clock = ManualClock::new(NOW);
    let t = TestRuntime::new(
        RuntimeConfig {
            clock,
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_built(&built, &t.plugins_dir());
    let failed = t.runtime.load_dir().await.expect("load dir");
    assert!(failed.is_empty(), "{failed:?}");
    t
}

async fn tool_answers(lang: Lang, name: &str) {
    let t = scaffold_and_load(lang, PluginKind::Tool, name).await;
    for calls in 1..=2 {
        let out = t
            .runtime
            .plugins
            .invoke_tool(name, "{}")
            .await
            .expect("invoke");
        let v: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["greeting"], format!("Hello from {name}!"), "{v}");
        assert_eq!(v["now_ms"], NOW, "the host clock's time: {v}");
        assert_eq!(v["calls"], calls, "{v}");
    }
}

async fn channel_echoes(lang: Lang, name: &str) {
    let t = scaffold_and_load(lang, PluginKind::Channel, name).await;
    let version = t.runtime.plugins.current(name).expect("loaded");
    assert_eq!(version.kind, PluginKind::Channel);
    let mut chan = Instance::new(version).await.expect("instance");
    chan.start(&[]).await.expect("start");
    let response = chan
        .handle_webhook(&WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: "conversation=c9&sender=u7".into(),
            headers: vec![],
            body: "hello there".into(),
            verified: None,
        })
        .await
        .expect("webhook");
    assert_eq!(response.status, 200);
    assert_eq!(response.messages.len(), 1);
    let m = &response.messages[0];
    assert_eq!(
        (m.conversation.as_str(), m.sender.as_str(), m.text.as_str()),
        ("c9", "u7", "hello there")
    );
    assert_eq!(m.timestamp, NOW);
    let id = chan
        .send(&OutboundMessage::plain("c9", "hello there"))
        .await
        .expect("send");
    let kept = t
        .runtime
        .plugins
        .kv()
        .get(name, &format!("sent/{id}"))
        .expect("kv");
    assert_eq!(kept.as_deref(), Some(&b"hello there"[..]));
    assert_ne!(id, m.id, "ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_tool_scaffold_builds_and_answers() {
    tool_answers(Lang::Rust, "rust-hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_channel_scaffold_builds_and_echoes() {
    channel_echoes(Lang::Rust, "rust-chan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_tool_scaffold_builds_and_answers() {
    tool_answers(Lang::C, "c-hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_channel_scaffold_builds_and_echoes() {
    channel_echoes(Lang::C, "c-chan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_tool_scaffold_builds_and_answers() {
    tool_answers(Lang::Zig, "zig-hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zig_channel_scaffold_builds_and_echoes() {
    channel_echoes(Lang::Zig, "zig-chan").await;
}

/// Python/JS/TS: their toolchains come from `sdk/install-toolchains.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_scaffolds_build_and_work() {
    tool_answers(Lang::Python, "py-hello").await;
    channel_echoes(Lang::Python, "py-chan").await;
    tool_answers(Lang::Js, "js-hello").await;
    channel_echoes(Lang::Js, "js-chan").await;
    tool_answers(Lang::Ts, "ts-hello").await;
    channel_echoes(Lang::Ts, "ts-chan").await;
}
