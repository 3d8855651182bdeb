//! Plain JavaScript (no TypeScript) from `pincer plugin new --lang js`: the
//! scaffolded tool and channel are written by the same code the CLI runs
//! (`plugin_dev::scaffold`), built by `pincer plugin build`'s builder (jco
//! componentize from the toolchain `sdk/install-toolchains.sh` installs; a
//! missing tool fails the test with the builder's message), checked, loaded
//! into a real gateway and driven: the tool called with `{}` through the
//! agent answers with its greeting and the host clock's time, and a text
//! POSTed to the channel's webhook reaches the echo agent, whose reply goes
//! out through the channel's `send` (kept in its key-value store).

use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::plugin_dev::{Lang, check, scaffold};
use pincer::plugins::{PluginKind, PluginSettings};
use pincer_tests::gateway::TestGateway;
use pincer_tests::guests::{build, call_through_agent, install_built};

/// `pincer plugin new --lang js --kind KIND NAME` then `pincer plugin build`
/// in a temporary directory; the project stays alive with the returned dir.
async fn scaffold_js(
    kind: PluginKind,
    name: &str,
) -> (tempfile::TempDir, pincer::plugin_dev::builder::Built) {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = scaffold::new_project(tmp.path(), Lang::Js, kind, &name).expect("scaffold");
        // Plain JavaScript: a plugin.js, no TypeScript anywhere.
        assert!(dir.join("plugin.js").is_file(), "no plugin.js");
        assert!(!dir.join("plugin.ts").exists());
        assert!(!dir.join("tsconfig.json").exists());
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
        assert!(readme.contains("pincer plugin build"), "{readme}");
        let built = build(&dir);
        assert_eq!(built.lang, Lang::Js);
        assert_eq!(built.name, name);
        let report = check::check(&built.wasm);
        assert!(report.loads(), "{}", report.render());
        assert_eq!(report.kind, Some(kind));
        (tmp, built)
    })
    .await
    .expect("build task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_plain_js_tool_builds_loads_and_answers_through_the_agent() {
    let (_project, built) = scaffold_js(PluginKind::Tool, "hello-js").await;
    let before = pincer::gateway::now_ms();
    let out = call_through_agent(&built, "{}").await;
    assert_eq!(out["isError"], false, "{out}");
    let result = &out["result"];
    assert_eq!(result["greeting"], "Hello from hello-js!", "{out}");
    assert_eq!(result["calls"], 1, "one call, counted in key-value: {out}");
    let now = result["now_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("now_ms: {out}"));
    assert!(now >= before, "the host clock's time ({now} < {before})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_plain_js_channel_takes_a_push_and_sends_the_agents_reply() {
    let (_project, built) = scaffold_js(PluginKind::Channel, "chan-js").await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.plugins.insert(
        "chan-js".into(),
        PluginSettings {
            dm_policy: DmPolicy::Open,
            ..Default::default()
        },
    );
    install_built(&built, &opts.plugins_dir);
    let g = TestGateway::start_with(opts, dir).await;
    let info = g.gw().runtime.plugins.info("chan-js").expect("loaded");
    assert_eq!(info.kind, Some(PluginKind::Channel), "{info:?}");

    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/channels/chan-js/webhook?conversation=c1&sender=u1",
            g.addr
        ))
        .body("hello from plain js")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // The message is `in-1`; the echo agent's reply goes out through `send`,
    // which numbers it `out-2` and keeps its text in key-value. Nothing
    // signals a channel's send to a test, so look for the record (bounded).
    let kv = g.gw().runtime.plugins.kv();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let sent = loop {
        if let Some(v) = kv.get("chan-js", "sent/out-2").expect("kv") {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply was sent: {:?}",
            g.gw().runtime.plugins.info("chan-js")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let text = String::from_utf8(sent).expect("UTF-8");
    assert!(text.contains("hello from plain js"), "{text}");
    let keys = kv.list_keys("chan-js", "sent/", 10).expect("kv keys");
    assert_eq!(keys, ["sent/out-2"], "exactly one reply");
}
