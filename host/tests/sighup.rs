//! `pincer serve --config FILE` applies an edited `[plugins.*]` table on
//! SIGHUP, without a restart: the real binary, its real config file and a
//! real signal. (What a reload applies is tested in depth in
//! `tests/tests/config_reload.rs`.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Gateway, free_port};

/// The `echo` channel's state in `/v1/channels`, once the gateway answers.
async fn echo_state(client: &reqwest::Client, port: u16) -> Option<String> {
    let r = client
        .get(format!("http://127.0.0.1:{port}/v1/channels"))
        .bearer_auth("secret")
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["channels"]["echo"]["state"].as_str().map(str::to_string)
}

/// Waits until the echo channel is in `state` (the gateway starting up or
/// applying a reload: there is no event to await from outside the process).
async fn until_echo(client: &reqwest::Client, port: u16, gw: &mut Gateway, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = gw.0.try_wait().expect("try_wait") {
            panic!("the gateway exited: {status}");
        }
        let got = echo_state(client, port).await;
        if got.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "echo never became {state} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The config file, not watched: only the signal reloads it.
fn write_config(path: &Path, autostart: bool) {
    std::fs::write(
        path,
        format!("[gateway]\nconfig_watch = false\n\n[plugins.echo]\nautostart = {autostart}\n"),
    )
    .expect("config");
}

#[tokio::test]
async fn sighup_applies_an_edited_plugin_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pincer.toml");
    write_config(&config, false);
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pincer"))
        .args(["serve", "--token", "secret", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pincer");
    let pid = child.id();
    let mut gw = Gateway(child);
    let client = reqwest::Client::new();
    until_echo(&client, port, &mut gw, "stopped").await;

    write_config(&config, true);
    let kill = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(kill.success());
    until_echo(&client, port, &mut gw, "running").await;

    // A file that no longer parses changes nothing; the gateway keeps going.
    std::fs::write(&config, "[plugins.echo\nautostart = ").expect("config");
    let kill = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(kill.success());
    write_config(&config, false);
    let kill = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(kill.success());
    until_echo(&client, port, &mut gw, "stopped").await;
}
