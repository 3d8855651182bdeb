//! A TypeScript channel built from source (`plugins/ts-webhook`, with
//! `sdk/js/build.sh`: jco guest-types, tsc, jco componentize) in a real
//! gateway: a generic signed-webhook platform. The host checks each push's
//! HMAC-SHA256 (the manifest's `[webhook.verify]`) before the plugin sees
//! it; the echo agent's reply goes out through the plugin as a JSON POST to
//! a local receiver, with the reply token filled in by the host.

use hmac::{Hmac, Mac};
use pincer::channels::access::DmPolicy;
use pincer::plugins::PluginSettings;
use pincer::plugins::manifest::SecretSource;
use pincer_tests::gateway::TestGateway;
use pincer_tests::http_server;
use pincer_tests::script_guests::install_guest;
use serde_json::{Value, json};

const SIGNING: &str = "whsec-test-signing";
const REPLY_TOKEN: &str = "reply-token-123";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_push_in_echo_reply_out_through_the_typescript_channel() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let (receiver, mut replies) = http_server(200, r#"{"id":"r-1"}"#).await;
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins.insert(
        "ts-webhook".into(),
        PluginSettings {
            dm_policy: DmPolicy::Open,
            allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
            secrets: [
                (
                    "signing_secret".to_string(),
                    SecretSource::Value(SIGNING.into()),
                ),
                (
                    "reply_token".to_string(),
                    SecretSource::Value(REPLY_TOKEN.into()),
                ),
            ]
            .into(),
            config: [(
                "reply_url".to_string(),
                format!("http://{receiver}/replies"),
            )]
            .into(),
            ..Default::default()
        },
    );
    // The receiver speaks plain http on loopback: let the token go there too.
    install_guest(&dir.path().join("plugins"), "ts-webhook", |m| {
        let widened = m.replace(
            r#"hosts = ["https://*"]"#,
            r#"hosts = ["https://*", "http://127.0.0.1:*"]"#,
        );
        assert_ne!(m, widened, "the manifest's reply_token hosts line moved");
        widened
    });
    let g = TestGateway::start_with(opts, dir).await;
    let url = format!("http://{}/channels/ts-webhook/webhook", g.addr);
    let http = reqwest::Client::new();
    let calls = || g.gw().runtime.plugins.info("ts-webhook").unwrap().calls;

    // A push with a wrong signature is refused by the host: the plugin is not called.
    let body = json!({"id": "m-1", "conversation": "c-1", "sender": "u-1", "sender_name": "Ann", "text": "hello there"})
        .to_string();
    let before = calls();
    let resp = http
        .post(&url)
        .header("X-Signature-256", "sha256=00ff")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(calls(), before, "an unverified push reached the plugin");

    // A signed push: the plugin answers the platform and hands over the message.
    let resp = http
        .post(&url)
        .header("X-Signature-256", sign(body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({"ok": true, "received": 1}));

    // The echo agent's reply goes out through the plugin's `send`.
    let reply = tokio::time::timeout(std::time::Duration::from_secs(90), replies.recv())
        .await
        .unwrap_or_else(|_| panic!("no reply: {:?}", g.gw().runtime.plugins.info("ts-webhook")))
        .expect("a reply was POSTed");
    let (head, body_out) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /replies "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("authorization: bearer {REPLY_TOKEN}")),
        "the host fills the reply token into the header: {head}"
    );
    let out: Value = serde_json::from_str(body_out).unwrap();
    assert_eq!(out["conversation"], "c-1", "{out}");
    assert!(
        out["text"].as_str().unwrap().contains("hello there"),
        "{out}"
    );

    // A push that is not JSON is a clear error for the platform; the gateway
    // keeps serving.
    let junk = b"not json".to_vec();
    let resp = http
        .post(&url)
        .header("X-Signature-256", sign(&junk))
        .body(junk)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let refused: Value = resp.json().await.unwrap();
    assert_eq!(
        refused,
        json!({"ok": false, "error": "push body is not JSON"})
    );
    // So is a message without its required fields.
    let partial = json!({"id": "m-9", "text": "no conversation"}).to_string();
    let resp = http
        .post(&url)
        .header("X-Signature-256", sign(partial.as_bytes()))
        .body(partial)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("needs string conversation")
    );
    let body2 =
        json!({"id": "m-2", "conversation": "c-2", "sender": "u-2", "text": "again"}).to_string();
    let resp = http
        .post(&url)
        .header("X-Signature-256", sign(body2.as_bytes()))
        .body(body2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let reply = tokio::time::timeout(std::time::Duration::from_secs(90), replies.recv())
        .await
        .expect("second reply in time")
        .expect("second reply");
    assert!(reply.contains("\"conversation\":\"c-2\""), "{reply}");
}
