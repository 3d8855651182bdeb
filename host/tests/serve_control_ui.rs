//! `pincer serve --control-ui DIR`, the real binary: the build in DIR is
//! served at `/` on the gateway's own port (its `index.html` also for the
//! app's routes, its files as they are), beside the gateway's own
//! endpoints; a DIR without `index.html` is refused at start with a clear
//! error. (OpenClaw's real Control UI against the gateway is tested in
//! `tests/tests/control_ui.rs`, configured through `[gateway] control_ui`.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Gateway, free_port};

/// `pincer serve --control-ui ui`, its data in `data` and an empty plugins
/// directory (no bundled plugins to compile).
fn serve(data: &std::path::Path, port: u16, ui: &std::path::Path) -> Command {
    std::fs::create_dir_all(data.join("no-plugins")).expect("plugins dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pincer"));
    cmd.args(["serve", "--token", "secret", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .arg("--plugins-dir")
        .arg(data.join("no-plugins"))
        .arg("--control-ui")
        .arg(ui);
    cmd
}

/// `GET path`: status and body, once the gateway answers (it is starting:
/// there is no event to await from outside the process).
async fn get(gw: &mut Gateway, port: u16, path: &str) -> (u16, String) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = gw.0.try_wait().expect("try_wait") {
            panic!("the gateway exited: {status}");
        }
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
        {
            let status = r.status().as_u16();
            return (status, r.text().await.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "the gateway never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_control_ui_serves_the_build_on_the_gateway_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ui = dir.path().join("control-ui");
    std::fs::create_dir_all(ui.join("assets")).expect("ui dir");
    std::fs::write(
        ui.join("index.html"),
        "<!doctype html><title>A Control UI</title>",
    )
    .expect("index.html");
    std::fs::write(ui.join("assets/app.js"), "console.log('app');").expect("app.js");
    let port = free_port();
    let child = serve(&dir.path().join("data"), port, &ui)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pincer serve");
    let mut gw = Gateway(child);

    let (status, body) = get(&mut gw, port, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("A Control UI"), "{body}");
    // An app route gets the shell; a file is served as it is.
    let (status, body) = get(&mut gw, port, "/chat").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("A Control UI"), "{body}");
    let (status, body) = get(&mut gw, port, "/assets/app.js").await;
    assert_eq!((status, body.as_str()), (200, "console.log('app');"));
    // The gateway's own endpoints stay where they are.
    let (status, body) = get(&mut gw, port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn serve_control_ui_without_index_html_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("not-a-build");
    std::fs::create_dir_all(&empty).expect("dir");
    let out = serve(&dir.path().join("data"), free_port(), &empty)
        .output()
        .expect("running pincer serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--control-ui") && stderr.contains("no index.html"),
        "{stderr}"
    );
}
