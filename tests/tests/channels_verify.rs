//! Host-side verification of channel pushes (issue 9, section 1): a channel
//! plugin's manifest declares how its platform signs pushes, the operator
//! grants the secret by name, and the gateway checks every push to
//! `/channels/{name}/webhook` on the exact raw bytes before the plugin is
//! instantiated or called.
//!
//! Everything runs through a real gateway on loopback with the `echo`
//! channel built from source, installed under another name with a manifest
//! written by each test. Pushes are signed here with the `hmac` and
//! `ed25519-dalek` crates, not with the host's verifier. "Nothing processed"
//! is shown three ways: the plugin's call count is unchanged, the id
//! counter echo bumps in its key-value store for every id-less push is
//! unset, and no session exists for the conversation.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use pincer::channels::access::DmPolicy;
use pincer::gateway::launch::Options;
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::SecretSource;
use pincer_tests::gateway::{Client, TestGateway};
use pincer_tests::webhook_receiver::Receiver;
use serde_json::{Value, json};

const TOKEN: &str = "secret";

/// Install the echo channel as `name` with a manifest of its usual keys
/// plus `extra` (top-level keys and tables).
fn install(plugins: &Path, name: &str, extra: &str) {
    std::fs::create_dir_all(plugins).unwrap();
    let wasm = pincer_tests::built_plugin("echo");
    std::fs::copy(&wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    let manifest = format!(
        "name = \"{name}\"\nkind = \"channel\"\nversion = \"0.1.0\"\nwit = \"pincer:plugin@0.1.0\"\ntest_only = true\n{extra}\n"
    );
    std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
}

fn settings(secrets: &[(&str, &str)], config: &[(&str, &str)]) -> PluginSettings {
    PluginSettings {
        dm_policy: DmPolicy::Open,
        secrets: secrets
            .iter()
            .map(|(k, v)| (k.to_string(), SecretSource::Value(v.to_string())))
            .collect(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn options_at(dir: &Path) -> Options {
    let mut opts = Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
    opts.gateway.token = Some(TOKEN.into());
    opts.watch_settle = std::time::Duration::from_millis(100);
    opts
}

/// A gateway serving channel `name` (manifest `extra`, operator `settings`).
async fn gateway(name: &str, extra: &str, settings: PluginSettings) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("plugins"), name, extra);
    let mut opts = options_at(dir.path());
    opts.plugins.insert(name.into(), settings);
    TestGateway::start_with(opts, dir).await
}

struct Rig {
    g: TestGateway,
    name: String,
    http: reqwest::Client,
}

impl Rig {
    async fn new(name: &str, extra: &str, settings: PluginSettings) -> Rig {
        Rig {
            g: gateway(name, extra, settings).await,
            name: name.into(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/channels/{}/webhook", self.g.addr, self.name)
    }

    /// POST `body` with `headers`; the status and body text.
    async fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.http.post(self.url()).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn get(&self, query: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}?{query}", self.url()))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    fn calls(&self) -> u64 {
        self.g.gw().runtime.plugins.info(&self.name).unwrap().calls
    }

    /// Echo's id counter, bumped by every id-less push it handles.
    fn id_counter(&self) -> Option<String> {
        let kv = self.g.gw().runtime.plugins.kv();
        kv.get(&self.name, "next_id")
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    async fn admin(&self) -> Client {
        let mut c = Client::admin(&self.g.url()).await;
        c.call("sessions.subscribe", json!({})).await;
        c
    }

    fn session_key(&self, conversation: &str) -> String {
        format!("agent:main:{}:direct:{conversation}", self.name)
    }

    /// This channel's entry in `channels.status`.
    async fn status(&self, admin: &mut Client) -> Value {
        let s = admin.call("channels.status", json!({})).await;
        s["channels"][&self.name].clone()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.g.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Assert that a refused push left no trace: no plugin call, no id
    /// taken, no session.
    async fn assert_untouched(&self, calls_before: u64, admin: &mut Client, conversation: &str) {
        assert_eq!(self.calls(), calls_before, "the plugin was called");
        assert_eq!(self.id_counter(), None, "the plugin handled a push");
        let l = admin.call("sessions.list", json!({})).await;
        let key = self.session_key(conversation);
        assert!(
            !l["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["key"] == key.as_str()),
            "a session exists for {key}"
        );
    }
}

/// The text of the next final chat answer in session `key`.
async fn final_text(c: &mut Client, key: &str) -> String {
    let key = key.to_string();
    let e = c
        .event(move |e| {
            e["event"] == "chat"
                && e["payload"]["sessionKey"] == key.as_str()
                && e["payload"]["state"] == "final"
        })
        .await;
    e["payload"]["message"]["content"]
        .as_array()
        .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default()
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An id-less echo push (echo takes an id from its counter for it).
fn push_body(conversation: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"conversation": conversation, "sender": conversation, "text": text}))
        .unwrap()
}

/// Forged pushes sent at once.
const FORGED: u64 = 200;

const META: &str = r#"secrets = ["app_secret"]
[webhook.verify]
scheme = "hmac-sha256"
header = "X-Hub-Signature-256"
secret = "app_secret"
prefix = "sha256="
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signed_push_is_processed_and_bad_or_missing_signatures_never_reach_the_plugin() {
    let logs = pincer_tests::http_surface::logs();
    let r = Rig::new("meta", META, settings(&[("app_secret", "app-s3cret")], &[])).await;
    let mut admin = r.admin().await;
    let calls = r.calls();

    // Refused: no signature (401); a wrong one, one over other bytes, one
    // without the prefix, one with the right value in the query string
    // only (403 / 401). Short constant bodies.
    let body = push_body("c-bad", "spoofed");
    let good = format!("sha256={}", hmac_hex(b"app-s3cret", &[&body]));
    let wrong = format!("sha256={}", hmac_hex(b"not-the-secret", &[&body]));
    let other = format!("sha256={}", hmac_hex(b"app-s3cret", &[b"{}"]));
    assert_eq!(r.post(&body, &[]).await.0, 401);
    for sig in [&wrong, &other, &good[7..].to_string()] {
        let (status, text) = r.post(&body, &[("X-Hub-Signature-256", sig)]).await;
        assert_eq!(status, 403, "{sig}");
        assert_eq!(text, r#"{"error":{"message":"forbidden"}}"#);
    }
    // A signature over these bytes does not cover one byte more.
    let mut longer = body.clone();
    longer.push(b' ');
    assert_eq!(
        r.post(&longer, &[("X-Hub-Signature-256", &good)]).await.0,
        403
    );
    let resp = r
        .http
        .post(format!("{}?X-Hub-Signature-256={good}", r.url()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    r.assert_untouched(calls, &mut admin, "c-bad").await;

    // A burst of forged pushes: every one refused, none reaching the
    // plugin (no instance is taken for them).
    let forged: Vec<_> = (0..FORGED)
        .map(|i| {
            let r = &r;
            let body = push_body("c-bad", &format!("forged {i}"));
            let sig = format!("sha256={}", hmac_hex(b"guess", &[&body]));
            async move { r.post(&body, &[("X-Hub-Signature-256", &sig)]).await.0 }
        })
        .collect();
    let started = std::time::Instant::now();
    let statuses = futures::future::join_all(forged).await;
    eprintln!(
        "{FORGED} concurrent forged pushes refused in {:?}",
        started.elapsed()
    );
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    r.assert_untouched(calls, &mut admin, "c-bad").await;

    // Counted per reason in the status and the metrics; logged with the
    // channel, reason and remote address.
    let st = r.status(&mut admin).await;
    assert_eq!(st["configured"], true, "{st}");
    assert_eq!(st["webhook"]["scheme"], "hmac-sha256", "{st}");
    assert_eq!(st["webhook"]["rejected"], 6 + FORGED, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["missing"], 2, "{st}");
    assert_eq!(
        st["webhook"]["rejectedByReason"]["invalid"],
        4 + FORGED,
        "{st}"
    );
    let m = r.metrics().await;
    assert!(
        m.contains(&format!(
            r#"pincer_channel_webhook_rejected_total{{channel="meta",reason="invalid"}} {}"#,
            4 + FORGED
        )),
        "{m}"
    );
    assert!(
        m.contains(r#"pincer_channel_webhook_rejected_total{channel="meta",reason="missing"} 2"#),
        "{m}"
    );
    let lines = logs.tail(None, usize::MAX, usize::MAX).0;
    assert!(
        lines.iter().any(|l| l.contains("webhook push rejected")
            && l.contains("meta")
            && l.contains("invalid")
            && l.contains("127.0.0.1")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("app-s3cret")),
        "the secret reached the log"
    );

    // The right signature over the exact bytes: handled and answered.
    let body = push_body("c-good", "signed hello");
    let sig = format!("sha256={}", hmac_hex(b"app-s3cret", &[&body]));
    let (status, text) = r.post(&body, &[("X-Hub-Signature-256", &sig)]).await;
    assert_eq!(status, 200, "{text}");
    // `handle-webhook` is counted before the answer (the reply's `send`
    // may follow at any time).
    assert!(r.calls() > calls);
    assert!(r.id_counter().is_some());
    assert_eq!(
        final_text(&mut admin, &r.session_key("c-good")).await,
        "signed hello"
    );
    // The signature covers the bytes as sent: JSON with odd spacing and key
    // order verifies (nothing is re-serialised before the check).
    let raw = "{ \"text\" :\"as sent\",\n  \"sender\":\"c-raw\", \"conversation\" : \"c-raw\" }";
    let sig = format!("sha256={}", hmac_hex(b"app-s3cret", &[raw.as_bytes()]));
    let (status, text) = r
        .post(raw.as_bytes(), &[("X-Hub-Signature-256", &sig)])
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        final_text(&mut admin, &r.session_key("c-raw")).await,
        "as sent"
    );
    assert_eq!(
        r.status(&mut admin).await["webhook"]["rejected"],
        6 + FORGED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_style_signature_refuses_stale_and_future_timestamps() {
    let extra = r#"secrets = ["signing_secret"]
[webhook.verify]
scheme = "hmac-sha256"
header = "X-Slack-Signature"
secret = "signing_secret"
prefix = "v0="
signed = "v0:{timestamp}:{body}"
timestamp_header = "X-Slack-Request-Timestamp"
tolerance_s = 300
"#;
    let key = b"8f742231b10e8888abcd99yyyzzz85a5";
    let r = Rig::new(
        "slackish",
        extra,
        settings(
            &[("signing_secret", "8f742231b10e8888abcd99yyyzzz85a5")],
            &[],
        ),
    )
    .await;
    let mut admin = r.admin().await;
    let calls = r.calls();
    let sign = |ts: u64, body: &[u8]| {
        let ts = ts.to_string();
        let sig = format!("v0={}", hmac_hex(key, &[b"v0:", ts.as_bytes(), b":", body]));
        (ts, sig)
    };
    let body = push_body("c-old", "replayed");
    // Correctly signed, but an hour old or an hour ahead: 403.
    for ts in [now_s() - 3600, now_s() + 3600] {
        let (ts, sig) = sign(ts, &body);
        let headers = [
            ("X-Slack-Signature", sig.as_str()),
            ("X-Slack-Request-Timestamp", ts.as_str()),
        ];
        assert_eq!(r.post(&body, &headers).await.0, 403, "{ts}");
    }
    // A fresh signature replayed with another timestamp: 403; without one: 401.
    let now = now_s();
    let (_, sig) = sign(now, &body);
    let other = (now - 1).to_string();
    let headers = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", other.as_str()),
    ];
    assert_eq!(r.post(&body, &headers).await.0, 403);
    assert_eq!(r.post(&body, &[("X-Slack-Signature", &sig)]).await.0, 401);
    r.assert_untouched(calls, &mut admin, "c-old").await;
    let st = r.status(&mut admin).await;
    assert_eq!(st["webhook"]["rejectedByReason"]["stale"], 2, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["invalid"], 1, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["missing"], 1, "{st}");

    let body = push_body("c-fresh", "fresh");
    let (ts, sig) = sign(now_s(), &body);
    let headers = [
        ("X-Slack-Signature", sig.as_str()),
        ("X-Slack-Request-Timestamp", ts.as_str()),
    ];
    assert_eq!(r.post(&body, &headers).await.0, 200);
    assert_eq!(
        final_text(&mut admin, &r.session_key("c-fresh")).await,
        "fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_style_ed25519_push() {
    use ed25519_dalek::{Signer, SigningKey};
    let extra = r#"[webhook.verify]
scheme = "ed25519"
header = "X-Signature-Ed25519"
public_key = "config:public_key"
timestamp_header = "X-Signature-Timestamp"
"#;
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let r = Rig::new(
        "discordish",
        extra,
        settings(&[], &[("public_key", &public)]),
    )
    .await;
    let mut admin = r.admin().await;
    let calls = r.calls();
    let body = push_body("c-ed", "signed by ed25519");
    let ts = now_s().to_string();
    let sign = |k: &SigningKey| {
        let mut msg = ts.as_bytes().to_vec();
        msg.extend_from_slice(&body);
        hex::encode(k.sign(&msg).to_bytes())
    };
    let forged = sign(&SigningKey::from_bytes(&[8u8; 32]));
    let headers = [
        ("X-Signature-Ed25519", forged.as_str()),
        ("X-Signature-Timestamp", ts.as_str()),
    ];
    assert_eq!(r.post(&body, &headers).await.0, 403);
    assert_eq!(r.calls(), calls);
    let good = sign(&key);
    let headers = [
        ("X-Signature-Ed25519", good.as_str()),
        ("X-Signature-Timestamp", ts.as_str()),
    ];
    assert_eq!(r.post(&body, &headers).await.0, 200);
    assert_eq!(
        final_text(&mut admin, &r.session_key("c-ed")).await,
        "signed by ed25519"
    );
}

const TELEGRAM: &str = r#"[secrets.webhook_secret]
generate = true
hosts = ["http://127.0.0.1:*"]
# Test only: lets the echo reply carry the placeholder to the receiver, as
# Telegram's plugin puts it in setWebhook's `secret_token`.
in = ["body:text"]
[webhook.verify]
scheme = "shared-header"
header = "X-Telegram-Bot-Api-Secret-Token"
secret = "webhook_secret"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_header_token_from_the_operator() {
    let r = Rig::new(
        "tg",
        TELEGRAM,
        settings(&[("webhook_secret", "operator_Chosen-token")], &[]),
    )
    .await;
    let mut admin = r.admin().await;
    let calls = r.calls();
    let body = push_body("c-tg-bad", "spoofed");
    const H: &str = "X-Telegram-Bot-Api-Secret-Token";
    assert_eq!(r.post(&body, &[(H, "operator_Chosen-tokeN")]).await.0, 403);
    assert_eq!(r.post(&body, &[(H, "operator_Chosen-toke")]).await.0, 403);
    assert_eq!(r.post(&body, &[]).await.0, 401);
    // Never from the query string.
    let resp = r
        .http
        .post(format!(
            "{}?secret=operator_Chosen-token&{H}=operator_Chosen-token",
            r.url()
        ))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    r.assert_untouched(calls, &mut admin, "c-tg-bad").await;
    // The operator's grant wins: nothing was generated.
    let file = r.g.dir.path().join("secrets/tg/webhook_secret");
    assert!(!file.exists());

    let body = push_body("c-tg", "token ok");
    assert_eq!(r.post(&body, &[(H, "operator_Chosen-token")]).await.0, 200);
    assert_eq!(
        final_text(&mut admin, &r.session_key("c-tg")).await,
        "token ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_challenge_is_answered_by_the_host() {
    let extra = format!(
        "{}\n[webhook.handshake]\nscheme = \"hub-challenge\"\nsecret = \"verify_token\"\n",
        META.replace(
            "secrets = [\"app_secret\"]",
            "secrets = [\"app_secret\", \"verify_token\"]"
        )
    );
    let r = Rig::new(
        "wa",
        &extra,
        settings(
            &[("app_secret", "a"), ("verify_token", "my verify token")],
            &[],
        ),
    )
    .await;
    let mut admin = r.admin().await;
    let calls = r.calls();
    let (status, body) = r
        .get("hub.mode=subscribe&hub.verify_token=my+verify+token&hub.challenge=1158201444")
        .await;
    assert_eq!((status, body.as_str()), (200, "1158201444"));
    for q in [
        "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=my+verify+token&hub.challenge=1",
    ] {
        let (status, body) = r.get(q).await;
        assert_eq!(status, 403, "{q}");
        assert_eq!(body, r#"{"error":{"message":"forbidden"}}"#);
    }
    // Echo answers any GET itself with 405: it was never asked.
    assert_eq!(r.calls(), calls, "the plugin saw a handshake");
    let st = r.status(&mut admin).await;
    assert_eq!(st["webhook"]["handshake"], "hub-challenge", "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["handshake"], 3, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_secret_refuses_every_push_with_503_and_says_why() {
    let r = Rig::new("meta-unset", META, settings(&[], &[])).await;
    let mut admin = r.admin().await;
    let calls = r.calls();
    let body = push_body("c-unset", "hello");
    let sig = format!("sha256={}", hmac_hex(b"", &[&body]));
    for headers in [vec![], vec![("X-Hub-Signature-256", sig.as_str())]] {
        let resp = r
            .http
            .post(r.url())
            .body(body.clone())
            .headers(
                headers
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                    .collect(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let text = resp.text().await.unwrap();
        assert!(!text.contains("app_secret"), "detail leaked: {text}");
    }
    r.assert_untouched(calls, &mut admin, "c-unset").await;
    let st = r.status(&mut admin).await;
    assert_eq!(st["configured"], false, "{st}");
    assert_eq!(
        st["webhook"]["problem"], "webhook secret `app_secret` not granted",
        "{st}"
    );
    assert_eq!(st["webhook"]["rejectedByReason"]["not-granted"], 2, "{st}");
    // The same over HTTP.
    let v: Value = r
        .http
        .get(format!("http://{}/v1/channels", r.g.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["channels"]["meta-unset"]["webhook"]["problem"],
        "webhook secret `app_secret` not granted",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_secret_fills_placeholders_verifies_pushes_and_survives_a_restart() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(
        &plugins,
        "tg",
        &format!("allowed_hosts = [\"http://127.0.0.1:*\"]\n{TELEGRAM}"),
    );
    let tg_settings = || PluginSettings {
        allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
        ..settings(&[], &[("reply_url", &rx.url())])
    };
    let start = |dir: tempfile::TempDir| {
        let mut opts = options_at(dir.path());
        opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
        opts.plugins.insert("tg".into(), tg_settings());
        TestGateway::start_with(opts, dir)
    };
    let mut r = Rig {
        g: start(dir).await,
        name: "tg".into(),
        http: reqwest::Client::new(),
    };
    let file = r.g.dir.path().join("secrets/tg/webhook_secret");
    let generated = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(generated.len(), 32);
    assert!(
        generated
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{generated}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    const H: &str = "X-Telegram-Bot-Api-Secret-Token";
    let mut admin = r.admin().await;
    assert_eq!(r.status(&mut admin).await["configured"], true);
    assert_eq!(r.post(&push_body("c1", "x"), &[(H, "guess")]).await.0, 403);

    // The plugin asks for the secret by placeholder; the host fills in the
    // generated value on the way out (the guest never holds it) and checks
    // pushes against the same value.
    let body = push_body("c1", "{{secret:webhook_secret}}");
    assert_eq!(r.post(&body, &[(H, &generated)]).await.0, 200);
    let sent = rx.wait_for(1).await;
    assert_eq!(sent[0].json()["text"], generated.as_str());
    let kv = r.g.gw().runtime.plugins.kv();
    let stored = kv.get("tg", "sent/echo-2").unwrap().unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(&generated),
        "the guest's store holds the secret"
    );

    // A restart keeps the value: the same header is accepted again.
    drop(admin);
    r.g.stop().await;
    let dir = std::mem::replace(&mut r.g.dir, tempfile::tempdir().unwrap());
    r.g = start(dir).await;
    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(after.trim(), generated);
    let mut admin = r.admin().await;
    assert_eq!(
        r.post(&push_body("c2", "again"), &[(H, &generated)])
            .await
            .0,
        200
    );
    assert_eq!(final_text(&mut admin, &r.session_key("c2")).await, "again");
    assert_eq!(r.post(&push_body("c2", "x"), &[]).await.0, 401);
}
