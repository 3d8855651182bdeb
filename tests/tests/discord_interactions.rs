//! Discord's HTTP interactions endpoint (issue 12 section 3, optional):
//! slash commands POSTed to `/channels/discord/webhook`, signed with the
//! application's Ed25519 key and verified by the **host** (the manifest's
//! `[webhook.verify]`, the operator's `public_key`) before the plugin
//! runs. A real gateway on loopback serves the discord plugin built from
//! source beside its Gateway session on `FakeDiscord`; the test signs like
//! Discord (`ed25519-dalek`: hex signature over `X-Signature-Timestamp` +
//! raw body). The echo agent answers with the command's text, which the
//! plugin sends by the interaction's follow-up webhook (`PATCH
//! /webhooks/{app}/{token}/messages/@original`), recorded by the fake.

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use pincer::fakes::discord::{DiscordConfig, FakeDiscord};
use pincer_tests::discord::{self, CHANNEL};
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::{Value, json};

/// The application's signing key (Discord holds it; the operator gets the
/// public half).
fn app_key() -> SigningKey {
    SigningKey::from_bytes(&[21u8; 32])
}

struct Rig {
    fake: FakeDiscord,
    g: TestGateway,
    http: reqwest::Client,
}

impl Rig {
    /// A fake, and a gateway whose bot has its Gateway session (and the
    /// application's public key unless `with_key` is false).
    async fn start(with_key: bool) -> Rig {
        let public = with_key.then(|| hex::encode(app_key().verifying_key().to_bytes()));
        let (fake, g) = discord::started_with(DiscordConfig::default(), |s| {
            if let Some(k) = public {
                s.config.insert("public_key".into(), k);
            }
        })
        .await;
        Rig {
            fake,
            g,
            http: reqwest::Client::new(),
        }
    }

    /// POST `body` with these signature headers; the status, content type
    /// and body.
    async fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut req = self
            .http
            .post(format!("http://{}/channels/{CHANNEL}/webhook", self.g.addr))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ct, resp.text().await.unwrap())
    }

    /// POST `interaction` signed by `key` at `ts` as Discord does.
    async fn signed(&self, interaction: &Value, key: &SigningKey, ts: u64) -> (u16, String) {
        let body = interaction.to_string().into_bytes();
        let ts = ts.to_string();
        let sig = sign(key, &ts, &body);
        let (status, _, text) = self
            .post(
                &body,
                &[
                    ("X-Signature-Ed25519", sig.as_str()),
                    ("X-Signature-Timestamp", ts.as_str()),
                ],
            )
            .await;
        (status, text)
    }

    async fn channel_status(&self) -> Value {
        let mut admin = Client::admin(&self.g.url()).await;
        let status = admin.call("channels.status", json!({})).await;
        status["channels"][CHANNEL].clone()
    }

    /// The plugin's kv keys starting with `prefix`.
    fn kv_keys(&self, prefix: &str) -> Vec<String> {
        self.g
            .gw()
            .runtime
            .plugins
            .kv()
            .list_keys(CHANNEL, prefix, 10_000)
            .unwrap()
    }

    /// Wait until the bot has replaced the deferred response of
    /// interaction `id` with `text` (polled, with a hang guard).
    async fn wait_original(&self, id: &str, text: &str) -> pincer::fakes::discord::Interaction {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let i = self.fake.interaction(id).expect("the fake made it");
            if i.original.as_deref() == Some(text) {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "interaction {id} not answered with {text:?}: {i:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sign(key: &SigningKey, ts: &str, body: &[u8]) -> String {
    let mut msg = ts.as_bytes().to_vec();
    msg.extend_from_slice(body);
    hex::encode(key.sign(&msg).to_bytes())
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_and_forged_pushes_never_reach_the_plugin() {
    let r = Rig::start(true).await;
    // Discord's PING when the endpoint URL is saved: `{"type":1}`.
    let ping = r.fake.ping_interaction();
    let (status, ct, body) = {
        let bytes = ping.to_string().into_bytes();
        let ts = now_s().to_string();
        let sig = sign(&app_key(), &ts, &bytes);
        r.post(
            &bytes,
            &[
                ("X-Signature-Ed25519", sig.as_str()),
                ("X-Signature-Timestamp", ts.as_str()),
            ],
        )
        .await
    };
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"type": 1})
    );

    // A slash command signed by another key, signed too long ago, and not
    // signed at all: refused by the host, and the plugin never saw them
    // (it would have kept the interaction's token and answered it).
    let cmd = r
        .fake
        .slash_command(Some("1"), "800", "42", "ask", Some("forged?"));
    let id = cmd["id"].as_str().unwrap().to_string();
    let forger = SigningKey::from_bytes(&[22u8; 32]);
    assert_eq!(r.signed(&cmd, &forger, now_s()).await.0, 403);
    assert_eq!(r.signed(&cmd, &app_key(), now_s() - 3_600).await.0, 403);
    // The signature of another body does not carry over.
    let mut tampered = cmd.clone();
    tampered["data"]["options"][0]["value"] = json!("tampered");
    let ts = now_s().to_string();
    let sig = sign(&app_key(), &ts, cmd.to_string().as_bytes());
    let (status, _, _) = r
        .post(
            tampered.to_string().as_bytes(),
            &[
                ("X-Signature-Ed25519", sig.as_str()),
                ("X-Signature-Timestamp", ts.as_str()),
            ],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = r.post(cmd.to_string().as_bytes(), &[]).await;
    assert_eq!(status, 401);
    let st = r.channel_status().await;
    assert_eq!(st["webhook"]["scheme"], "ed25519");
    assert_eq!(st["webhook"]["rejected"], 4, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["invalid"], 2, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["stale"], 1, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["missing"], 1, "{st}");
    assert!(r.kv_keys("ix:").is_empty(), "{:?}", r.kv_keys("ix:"));
    assert_eq!(r.fake.interaction(&id).unwrap().original, None);

    // The same command signed by the application goes through.
    let (status, body) = r.signed(&cmd, &app_key(), now_s()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"type":5}"#));
    r.wait_original(&id, "forged?").await;
    // The gateway session carried on beside the endpoint.
    assert!(r.fake.gateway_stats().attached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_command_is_deferred_then_answered_by_the_follow_up_webhook() {
    let r = Rig::start(true).await;
    // In a guild channel: deferred at once (type 5), the agent's answer
    // replaces the deferred response.
    let cmd = r
        .fake
        .slash_command(Some("1"), "800", "42", "ask", Some("what time is it?"));
    let id = cmd["id"].as_str().unwrap().to_string();
    let (status, body) = r.signed(&cmd, &app_key(), now_s()).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"type": 5})
    );
    let answered = r.wait_original(&id, "what time is it?").await;
    assert!(answered.followups.is_empty());
    // By the interaction's webhook, authorised by its token alone: the bot
    // token was not sent there, and nothing went to the channel itself.
    let calls = r.fake.calls_of("edit_original");
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(c.status, Some(200), "{c:?}");
        assert!(
            !c.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization")),
            "the bot token went to the interaction webhook: {c:?}"
        );
    }
    assert!(r.fake.calls_of("create_message").is_empty());
    assert!(r.fake.calls_of("typing").is_empty());

    // In a DM, a command whose answer is longer than Discord's 2,000
    // characters: the first piece replaces the deferred response, the
    // rest is a follow-up message.
    let long = format!("{} {}", "a".repeat(1_990), "b".repeat(600));
    let dm = r.fake.slash_command(None, "900", "43", "ask", Some(&long));
    let dm_id = dm["id"].as_str().unwrap().to_string();
    let (status, body) = r.signed(&dm, &app_key(), now_s()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"type":5}"#));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let i = loop {
        let i = r.fake.interaction(&dm_id).unwrap();
        let total: usize = i.original.as_deref().map_or(0, str::len)
            + i.followups.iter().map(|(_, t)| t.len()).sum::<usize>();
        if !i.followups.is_empty() && total >= long.len() - 2 {
            break i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long answer did not arrive: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let original = i.original.unwrap();
    assert!(original.chars().count() <= 2_000);
    assert!(original.starts_with("aaaa"));
    assert!(i.followups.iter().all(|(_, t)| t.chars().count() <= 2_000));
    let all: String = std::iter::once(original.as_str())
        .chain(i.followups.iter().map(|(_, t)| t.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        all.split_whitespace().collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );
    // The tokens are kept for Discord's 15 minutes, no longer.
    assert_eq!(r.kv_keys("ix:").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_key_the_endpoint_is_refused_and_the_bot_still_works() {
    let r = Rig::start(false).await;
    let cmd = r
        .fake
        .slash_command(Some("1"), "800", "42", "ask", Some("hello"));
    let (status, body) = r.signed(&cmd, &app_key(), now_s()).await;
    assert_eq!(status, 503, "{body}");
    assert!(r.kv_keys("ix:").is_empty());
    // The endpoint is optional: the channel is configured without it.
    let st = r.channel_status().await;
    assert_eq!(st["configured"], true, "{st}");
    assert_eq!(st["webhook"]["problem"], Value::Null, "{st}");
    assert_eq!(st["webhook"]["rejectedByReason"]["not-granted"], 1, "{st}");
    // The Gateway bot answers as before.
    r.fake.dm("700", "42", "still here");
    r.fake
        .wait_sent("the DM answered", |s| {
            s.iter()
                .any(|m| m.channel_id == "700" && m.content == "still here")
        })
        .await;
}
