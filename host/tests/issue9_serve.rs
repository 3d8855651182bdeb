//! Issue 9 through the real `pincer` binary, as an operator runs it:
//! `pincer serve --config` with the issue's section-5 TOML exactly as
//! written (the `env:` secrets unset, then set), and `pincer pairing
//! list|approve CHANNEL CODE` against a running gateway's data directory
//! (the bundled `echo` channel under the default `pairing` policy).
//!
//! Nothing here reaches a platform: WhatsApp is webhook-only (its
//! handshake and signature checks are the host's), and Telegram's state is
//! only read, never driven.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The issue's section 5, verbatim.
const SECTION_5: &str = r#"[plugins.telegram]
allowed_hosts = ["https://api.telegram.org"]
secrets = { bot_token = "env:TELEGRAM_BOT_TOKEN" }
dm_policy = "pairing"                 # pairing | allowlist | open | disabled
allow_from = []                       # platform user ids
config = { mode = "poll" }            # poll | webhook; api_base (default https://api.telegram.org), webhook_url

[plugins.whatsapp]
allowed_hosts = ["https://graph.facebook.com"]
secrets = { access_token = "env:WA_TOKEN", app_secret = "env:WA_APP_SECRET", verify_token = "env:WA_VERIFY_TOKEN" }
dm_policy = "pairing"
config = { phone_number_id = "...", api_version = "v21.0" }   # api_base (default https://graph.facebook.com)
"#;

/// The environment variables section 5 reads.
const SECRET_VARS: [&str; 4] = [
    "TELEGRAM_BOT_TOKEN",
    "WA_TOKEN",
    "WA_APP_SECRET",
    "WA_VERIFY_TOKEN",
];

/// How long any one step may take before the test fails (a hang guard,
/// not a timing assertion).
const STEP_GUARD: Duration = Duration::from_secs(120);

/// A `pincer serve` child (killed on drop) and its base URL.
struct Served {
    gw: Gateway,
    base: String,
}

/// [`common::pincer`], without the secrets' variables either.
fn pincer(args: &[&str]) -> Command {
    let mut cmd = common::pincer(args);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    cmd
}

mod common;
use common::{Gateway, free_port};

/// `pincer serve` (token `secret`) on a free loopback port with `data` as
/// its data directory, `config` as its config file and `env` set; returns
/// once `/readyz` answers.
async fn serve(data: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Served {
    let port = free_port();
    let mut cmd = pincer(&["serve", "--token", "secret", "--listen"]);
    cmd.arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut served = Served {
        gw: Gateway(cmd.spawn().expect("spawn pincer serve")),
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + STEP_GUARD;
    loop {
        if let Some(status) = served.gw.0.try_wait().expect("try_wait") {
            panic!("pincer serve exited: {status}");
        }
        let ready = http
            .get(format!("{}/readyz", served.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return served;
        }
        assert!(Instant::now() < deadline, "pincer serve never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /v1/channels` (authenticated).
async fn channels(s: &Served) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/channels", s.base))
        .bearer_auth("secret")
        .send()
        .await
        .expect("GET /v1/channels")
        .json()
        .await
        .expect("channels JSON")
}

/// Poll `what` until it gives a value (a child process's state: there is
/// no event to await from outside it), within the step guard.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_GUARD;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of channel `name` once it has left `starting`.
async fn settled(s: &Served, name: &str) -> Value {
    until(&format!("{name} listed and settled"), || async {
        let c = channels(s).await["channels"][name].clone();
        let state = c["state"].as_str()?;
        (state != "starting").then_some(c)
    })
    .await
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `X-Hub-Signature-256` as Meta computes it.
fn meta_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_section_5_config_runs_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pincer.toml");
    std::fs::write(&config, SECTION_5).expect("config");
    let data = dir.path().join("data");
    let http = reqwest::Client::new();

    // 1. As written, with none of its variables set: the gateway serves,
    // and both channels say what is missing instead of starting.
    {
        let s = serve(&data, Some(&config), &[]).await;
        let tg = settled(&s, "telegram").await;
        assert_eq!(tg["state"], "unconfigured", "{tg}");
        assert_eq!(strings(&tg["missingSecrets"]), ["bot_token"], "{tg}");
        let wa = settled(&s, "whatsapp").await;
        assert_eq!(wa["state"], "unconfigured", "{wa}");
        assert_eq!(
            strings(&wa["missingSecrets"]),
            ["access_token", "app_secret", "verify_token"],
            "{wa}"
        );
        // With no app secret, no push gets in.
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let r = http
            .post(format!("{}/channels/whatsapp/webhook", s.base))
            .header("x-hub-signature-256", meta_signature("", body))
            .body(body.to_vec())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), 503);
    }

    // 2. The same file with the phone number id filled in (the one edit
    // section 5 leaves to the operator) and the variables set: the secrets
    // come from the environment.
    let filled = SECTION_5.replace(
        r#"phone_number_id = "...""#,
        r#"phone_number_id = "106540352242922""#,
    );
    assert_ne!(filled, SECTION_5);
    std::fs::write(&config, filled).expect("config");
    let env = [
        (
            "TELEGRAM_BOT_TOKEN",
            "123456789:AAHfakeTokenForPincerTests-000000000",
        ),
        ("WA_TOKEN", "EAAG-test-token"),
        ("WA_APP_SECRET", "wa-app-secret-from-env"),
        ("WA_VERIFY_TOKEN", "wa-verify-token-from-env"),
    ];
    let s = serve(&data, Some(&config), &env).await;
    let wa = until("whatsapp running", || async {
        let c = channels(&s).await["channels"]["whatsapp"].clone();
        (c["state"] == "running").then_some(c)
    })
    .await;
    assert!(strings(&wa["missingSecrets"]).is_empty(), "{wa}");
    let tg = settled(&s, "telegram").await;
    assert_ne!(tg["state"], "unconfigured", "{tg}");
    assert!(strings(&tg["missingSecrets"]).is_empty(), "{tg}");

    // Meta's GET handshake: answered by the host with WA_VERIFY_TOKEN.
    let hook = format!("{}/channels/whatsapp/webhook", s.base);
    let r = http
        .get(&hook)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "wa-verify-token-from-env"),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await
        .expect("handshake");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "1158201444");
    let r = http
        .get(&hook)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "env:WA_VERIFY_TOKEN"),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await
        .expect("handshake");
    assert_eq!(r.status(), 403);

    // A push signed with WA_APP_SECRET gets in; one signed otherwise, or
    // not at all, does not.
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    for (secret, status) in [
        (Some("wa-app-secret-from-env"), 200),
        (Some("wrong"), 403),
        (None, 401),
    ] {
        let mut r = http
            .post(&hook)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = secret {
            r = r.header("x-hub-signature-256", meta_signature(secret, body));
        }
        let r = r.send().await.expect("push");
        assert_eq!(r.status(), status, "signed with {secret:?}");
    }
}

/// `pincer pairing ARGS --data-dir DATA`: (success, stdout JSON, stderr).
fn pairing(data: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = pincer(&["pairing"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run pincer pairing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The transcript of the echo conversation `c1`, as text.
async fn transcript(s: &Served) -> String {
    reqwest::Client::new()
        .get(format!(
            "{}/v1/sessions/agent:main:echo:direct:c1/messages",
            s.base
        ))
        .bearer_auth("secret")
        .send()
        .await
        .expect("GET messages")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn pincer_pairing_list_and_approve_admit_an_echo_sender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // No config: the bundled echo channel under the default policy.
    let s = serve(&data, None, &[]).await;
    until("echo running", || async {
        (channels(&s).await["channels"]["echo"]["state"] == "running").then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let push = |id: &str, text: &str| {
        http.post(format!("{}/channels/echo/webhook", s.base))
            .json(&json!({"conversation": "c1", "sender": "u1", "text": text, "id": id}))
            .send()
    };
    assert_eq!(push("m1", "first hello").await.expect("push").status(), 200);

    // The stranger got a code; the agent did not run.
    let code = until("a pending code", || async {
        let (ok, v, err) = pairing(&data, &["list", "echo"]);
        assert!(ok, "pincer pairing list: {err}");
        let pending = v["pending"].as_array()?.first()?.clone();
        Some(pending)
    })
    .await;
    assert_eq!(code["sender"], "u1", "{code}");
    let code = code["code"].as_str().expect("code").to_string();
    assert_eq!(code.len(), 8, "{code}");
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)),
        "{code}"
    );
    assert!(
        !transcript(&s).await.contains("first hello"),
        "an unpaired sender drove the agent"
    );

    // Approved from the command line, beside the running gateway.
    let (ok, v, err) = pairing(&data, &["approve", "echo", &code]);
    assert!(ok, "pincer pairing approve: {err}");
    assert_eq!(v["sender"], "u1", "{v}");
    assert!(err.contains("approved u1 on echo"), "{err}");
    let (ok, v, err) = pairing(&data, &["list", "echo"]);
    assert!(ok, "{err}");
    assert_eq!(v["pending"], json!([]), "{v}");
    assert_eq!(v["approved"][0]["sender"], "u1", "{v}");
    // A spent code and a channel that does not exist are clear failures.
    let (ok, _, err) = pairing(&data, &["approve", "echo", &code]);
    assert!(!ok && !err.is_empty(), "a spent code was approved again");
    let (ok, _, err) = pairing(&data, &["approve", "echo", "NOTACOD1"]);
    assert!(!ok && !err.is_empty(), "a malformed code was accepted");

    // The running gateway answers the approved sender now.
    assert_eq!(
        push("m2", "second hello").await.expect("push").status(),
        200
    );
    until("the approved sender answered", || async {
        transcript(&s).await.contains("second hello").then_some(())
    })
    .await;
}
