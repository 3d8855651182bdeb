//! `pincer plugins install FILE` and `pincer plugins remove NAME`: the real
//! binary installs a component into a real running `pincer serve` (found by
//! its generated token in the data directory, as an operator on the same
//! machine would), the watcher loads it, the removal unloads it and takes
//! its file away, and every refusal is a clear error with a failing exit
//! status.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one step may take before the test fails (a hang guard,
/// not a timing assertion).
const STEP_GUARD: Duration = Duration::from_secs(120);

mod common;
use common::{Gateway, free_port, pincer};

/// A `pincer serve` child (killed on drop) and its base URL.
struct Served {
    _gw: Gateway,
    url: String,
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out: Output = pincer(args).output().expect("run pincer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start `pincer serve` on a free loopback port with `data` as its data
/// directory (no bundled plugins; a generated token) and wait for
/// `/readyz`.
async fn serve(data: &Path) -> Served {
    let port = free_port();
    let log = std::fs::File::create(data.with_extension("log")).expect("log file");
    let child = pincer(&[
        "serve",
        "--no-bundled",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("start pincer serve");
    let served = Served {
        _gw: Gateway(child),
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + STEP_GUARD;
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", served.url)).await
            && r.status().is_success()
        {
            return served;
        }
        assert!(Instant::now() < deadline, "hang guard: gateway not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plugin `name` as the gateway lists it, if it does.
async fn listed(s: &Served, token: &str, name: &str) -> Option<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/v1/plugins", s.url))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Wait until `ok(listed(name))` holds.
async fn until(
    s: &Served,
    token: &str,
    name: &str,
    what: &str,
    ok: impl Fn(Option<&Value>) -> bool,
) {
    let deadline = Instant::now() + STEP_GUARD;
    loop {
        if ok(listed(s, token, name).await.as_ref()) {
            return;
        }
        assert!(Instant::now() < deadline, "hang guard: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_then_remove_through_a_running_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8").to_string();
    let served = serve(&data).await;
    let token = std::fs::read_to_string(data.join("gateway-token"))
        .expect("the generated token")
        .trim()
        .to_string();

    // A component to install: the bundled clock tool, written elsewhere.
    let other = dir.path().join("other");
    let (ok, out, err) = run(&[
        "plugins",
        "install-bundled",
        "--data-dir",
        other.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{out}\n{err}");
    let clock = other.join("plugins").join("clock.wasm");
    let c = clock.to_str().expect("utf-8");

    // Found by the data directory's token file, as `pincer serve` made it.
    let (ok, out, err) = run(&[
        "plugins",
        "install",
        c,
        "--name",
        "ctool",
        "--data-dir",
        &d,
        "--url",
        &served.url,
    ]);
    assert!(ok, "{out}\n{err}");
    let answer: Value = serde_json::from_str(&out).expect("a JSON answer");
    assert_eq!(answer["name"], "ctool", "{answer}");
    assert_eq!(answer["replaced"], false, "{answer}");
    let sha = answer["sha256"].as_str().expect("sha256").to_string();
    until(&served, &token, "ctool", "ctool loaded", |p| {
        p.is_some_and(|p| p["state"] == "loaded" && p["sha256"] == sha.as_str())
    })
    .await;
    assert!(data.join("plugins").join("ctool.wasm").exists());

    // A wrong token is refused with the gateway's own words.
    let (ok, _, err) = run(&[
        "plugins",
        "install",
        c,
        "--name",
        "ctool",
        "--url",
        &served.url,
        "--token",
        "wrong",
    ]);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");

    // Not a component: refused, nothing written.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"#!/bin/sh\necho not wasm\n").expect("write junk");
    let (ok, _, err) = run(&[
        "plugins",
        "install",
        junk.to_str().expect("utf-8"),
        "--url",
        &served.url,
        "--token",
        &token,
    ]);
    assert!(!ok);
    assert!(err.contains("NOT_WASM"), "{err}");
    assert!(!data.join("plugins").join("junk.wasm").exists());

    // Removed: unloaded, and its file is gone.
    let (ok, out, err) = run(&[
        "plugins",
        "remove",
        "ctool",
        "--url",
        &served.url,
        "--token",
        &token,
    ]);
    assert!(ok, "{out}\n{err}");
    let answer: Value = serde_json::from_str(&out).expect("a JSON answer");
    assert_eq!(answer["removed"][0], "ctool.wasm", "{answer}");
    until(&served, &token, "ctool", "ctool unloaded", |p| p.is_none()).await;
    assert!(!data.join("plugins").join("ctool.wasm").exists());

    // Twice: there is nothing to remove.
    let (ok, _, err) = run(&[
        "plugins",
        "remove",
        "ctool",
        "--url",
        &served.url,
        "--token",
        &token,
    ]);
    assert!(!ok);
    assert!(err.contains("404") && err.contains("NOT_FOUND"), "{err}");

    // No gateway there: says so.
    let (ok, _, err) = run(&[
        "plugins",
        "remove",
        "ctool",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        &token,
    ]);
    assert!(!ok);
    assert!(err.contains("no answer from the gateway"), "{err}");
}
