//! Guest plugins in other languages, built from source by the test itself
//! with `pincer plugin build`'s own code (so a missing toolchain fails the
//! test with the message a user would see, naming the tool and how to
//! install it).

use std::path::{Path, PathBuf};

use pincer::plugin_dev::builder::{self, Built};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Copy the project in `src` (files and folders, without `build/`) into a
/// fresh temporary directory, so builds never write into the repository.
pub fn copy_project(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let name = src.file_name().expect("project dir name");
    let dst = tmp.path().join(name);
    copy_dir(src, &dst);
    (tmp, dst)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read project dir").flatten() {
        let name = entry.file_name();
        if name == "build" || name == "target" || name == ".zig-cache" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &dst.join(&name));
        } else {
            std::fs::copy(&path, dst.join(&name)).expect("copy file");
        }
    }
}

/// Build the project in `dir` (blocking; run it with `spawn_blocking` in
/// async tests) and fail with the builder's own message.
pub fn build(dir: &Path) -> Built {
    match builder::build(dir) {
        Ok(b) => b,
        Err(e) => panic!("building {}: {e}", dir.display()),
    }
}

/// Build the repository plugin `plugins/<name>` in a temporary copy.
pub async fn build_repo_plugin(name: &str) -> (tempfile::TempDir, Built) {
    let src = repo_root().join("plugins").join(name);
    tokio::task::spawn_blocking(move || {
        let (tmp, dir) = copy_project(&src);
        let built = build(&dir);
        (tmp, built)
    })
    .await
    .expect("build task")
}

/// Copy a built plugin and its manifest into `plugins_dir`.
pub fn install_built(built: &Built, plugins_dir: &Path) {
    std::fs::create_dir_all(plugins_dir).expect("plugins dir");
    std::fs::copy(
        &built.wasm,
        plugins_dir.join(format!("{}.wasm", built.name)),
    )
    .expect("copy wasm");
    std::fs::copy(
        &built.manifest,
        plugins_dir.join(format!("{}.toml", built.name)),
    )
    .expect("copy manifest");
}

/// Start a gateway (token `secret`, the echo provider) with `built` in its
/// plugins directory, call `/tool <name> <args>` through the agent as an
/// operator, and return the tool result the run reports (`isError`, `result`).
pub async fn call_through_agent(built: &Built, args: &str) -> serde_json::Value {
    use crate::gateway::{Client, TestGateway};
    use serde_json::json;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    install_built(built, &opts.plugins_dir);
    let g = TestGateway::start_with(opts, dir).await;
    let mut c = Client::admin(&g.url()).await;
    c.call("sessions.subscribe", json!({})).await;
    c.call(
        "chat.send",
        json!({
            "sessionKey": "main",
            "message": format!("/tool {} {args}", built.name),
            "idempotencyKey": "guest-1",
        }),
    )
    .await;
    let result = c
        .event(|e| {
            e["event"] == "agent"
                && e["payload"]["stream"] == "tool"
                && e["payload"]["data"]["phase"] == "result"
        })
        .await;
    let events = c.chat_run("guest-1").await;
    assert_eq!(
        events.last().expect("run events")["state"],
        "final",
        "{events:?}"
    );
    result["payload"]["data"].clone()
}
