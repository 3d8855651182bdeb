//! The README's first command as a new user meets it: `pincer serve` with
//! no config file installs and loads every bundled plugin, runs `echo`,
//! shows the platform channels as `unconfigured` with the secrets they
//! wait for, and says all that without a single warning or error line
//! (issue 9: "bundled and quiet until configured").

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Gateway, free_port};

/// `GET path` as JSON, once the gateway answers it.
async fn get(client: &reqwest::Client, port: u16, path: &str) -> Option<serde_json::Value> {
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth("secret")
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The bundled plugins, as `host/build.rs` bundles them.
const BUNDLED: [&str; 8] = [
    "clock",
    "discord",
    "echo",
    "http-fetch",
    "matrix",
    "slack",
    "telegram",
    "whatsapp",
];

/// Every bundled plugin loaded and every channel settled (running or
/// unconfigured), as `(plugins, channels)`.
async fn settled(
    client: &reqwest::Client,
    port: u16,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let plugins = get(client, port, "/v1/plugins").await?;
    let loaded = plugins["plugins"]
        .as_array()?
        .iter()
        .filter(|p| p["state"] == "loaded")
        .count();
    if loaded < BUNDLED.len() {
        return None;
    }
    let channels = get(client, port, "/v1/channels").await?;
    let states = channels["channels"].as_object()?;
    let all_settled = states.len() == 6
        && states
            .values()
            .all(|c| c["state"] == "running" || c["state"] == "unconfigured");
    all_settled.then_some((plugins, channels))
}

#[tokio::test]
async fn a_first_serve_loads_the_bundled_plugins_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("pincer.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pincer"))
        .args(["serve", "--token", "secret", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .env_remove("PINCER_STORE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn pincer");
    let mut gw = Gateway(child);
    let client = reqwest::Client::new();

    // Loading is seen from outside the process only by asking.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (plugins, channels) = loop {
        if let Some(status) = gw.0.try_wait().expect("try_wait") {
            panic!(
                "the gateway exited: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Some(found) = settled(&client, port).await {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the bundled plugins never all loaded:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut names: Vec<&str> = plugins["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, BUNDLED);

    let ch = &channels["channels"];
    assert_eq!(ch["echo"]["state"], "running", "{ch}");
    for (name, missing) in [
        ("telegram", vec!["bot_token"]),
        (
            "whatsapp",
            vec!["access_token", "app_secret", "verify_token"],
        ),
        ("slack", vec!["bot_token"]),
        ("discord", vec!["bot_token"]),
        ("matrix", vec!["access_token"]),
    ] {
        assert_eq!(ch[name]["state"], "unconfigured", "{name}: {}", ch[name]);
        assert_eq!(
            ch[name]["missingSecrets"],
            serde_json::json!(missing),
            "{name}: {}",
            ch[name]
        );
    }
    let ready = get(&client, port, "/readyz").await.expect("readyz");
    assert_eq!(ready["ready"], true, "{ready}");

    drop(gw);
    let text = std::fs::read_to_string(&log).expect("log");
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "a first start with nothing configured logged warnings or errors:\n{}",
        loud.join("\n")
    );
    assert!(text.contains("gateway listening"), "{text}");
}
