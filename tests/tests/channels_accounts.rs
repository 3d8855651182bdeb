//! Multi-account channels (issue 9 section 1 "Accounts"): one channel
//! plugin serving several accounts, each with its own token, config,
//! runner, cursor, key-value namespace, pairing and sessions, through a
//! real gateway on loopback with the plugins built from source and the
//! platforms' fakes (`FakeTelegram` with a second bot, two `FakeWhatsApp`
//! numbers) started by each test.
//!
//! The Telegram fake knows a bot only by the token in the URL path, so a
//! call recorded on a bot proves which token the host filled in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pincer::channels::access::{DmPolicy, GroupPolicy};
use pincer::channels::{ChannelRunner, ChannelState};
use pincer::fakes::telegram::{Chat, DEFAULT_TOKEN, FakeTelegram, TelegramBot, User, UserMessage};
use pincer::fakes::whatsapp::{Contact, FakeWhatsApp, WhatsAppConfig};
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{AccountSettings, PluginSettings};
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::{Value, json};

/// The second bot's token.
const SUPPORT_TOKEN: &str = "222222:SUPPORT-bot-token-abcdefghijklmnopqr";

/// Install `name` built from source with its allowed hosts widened to any
/// loopback port (the fakes'): a secret is only filled in for the
/// manifest's hosts.
fn install(plugins: &Path, name: &str, shipped_hosts: &str) {
    std::fs::create_dir_all(plugins).unwrap();
    let wasm = pincer_tests::built_plugin(name);
    std::fs::copy(&wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).unwrap();
    let widened = manifest.replace(shipped_hosts, r#"allowed_hosts = ["http://127.0.0.1:*"]"#);
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join(format!("{name}.toml")), widened).unwrap();
}

const TELEGRAM_HOSTS: &str = r#"allowed_hosts = ["https://api.telegram.org"]"#;
const WHATSAPP_HOSTS: &str =
    r#"allowed_hosts = ["https://graph.facebook.com", "https://lookaside.fbsbx.com"]"#;

fn secret(v: &str) -> SecretSource {
    SecretSource::Value(v.to_string())
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A loopback port free right now (for webhook URLs known before start).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The telegram plugin table as an operator writes it: the default bot
/// polling, account `support` (the fake's second bot) on its own webhook
/// route, both under `policy`.
fn telegram_settings(fake: &FakeTelegram, port: u16, policy: DmPolicy) -> PluginSettings {
    let hook = format!("http://127.0.0.1:{port}/channels/telegram/support/webhook");
    PluginSettings {
        secrets: [("bot_token".to_string(), secret(DEFAULT_TOKEN))].into(),
        config: map(&[("mode", "poll"), ("api_base", fake.base_url())]),
        dm_policy: policy,
        accounts: [(
            "support".to_string(),
            AccountSettings {
                secrets: [("bot_token".to_string(), secret(SUPPORT_TOKEN))].into(),
                config: map(&[("mode", "webhook"), ("webhook_url", &hook)]),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// A gateway (token `secret`) on `port` with `plugins`' settings and the
/// plugins `install` put in place.
async fn gateway(
    port: u16,
    plugins: Vec<(&str, PluginSettings)>,
    install: impl FnOnce(&Path),
) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("plugins"));
    let mut opts = pincer::gateway::launch::Options::new(dir.path());
    opts.gateway.listen = format!("127.0.0.1:{port}").parse().unwrap();
    opts.gateway.token = Some("secret".into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    for (name, s) in plugins {
        opts.plugins.insert(name.into(), s);
    }
    TestGateway::start_with(opts, dir).await
}

/// A gateway with the two Telegram bots of [`telegram_settings`].
async fn telegram_gateway(fake: &FakeTelegram, policy: DmPolicy) -> TestGateway {
    let port = free_port();
    let s = telegram_settings(fake, port, policy);
    gateway(port, vec![("telegram", s)], |p| {
        install(p, "telegram", TELEGRAM_HOSTS)
    })
    .await
}

async fn wait_texts(bot: &TelegramBot, chat_id: i64, texts: &[&str]) {
    bot.wait_until(&format!("texts {texts:?} in chat {chat_id}"), || {
        (bot.sent_texts(chat_id) == texts).then_some(())
    })
    .await
}

fn runner(g: &TestGateway, key: &str) -> std::sync::Arc<ChannelRunner> {
    g.gw()
        .runtime
        .channels
        .get(key)
        .unwrap_or_else(|| panic!("no runner {key}"))
}

/// Every call's parameters and headers, as text.
fn call_text(bot: &TelegramBot) -> String {
    bot.calls()
        .iter()
        .map(|c| format!("{} {:?} {}", c.method, c.headers, c.params))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `channelAccounts[channel]` of `channels.status`, by account id.
async fn accounts(admin: &mut Client, channel: &str) -> BTreeMap<String, Value> {
    let st = admin.call("channels.status", json!({})).await;
    st["channelAccounts"][channel]
        .as_array()
        .unwrap_or_else(|| panic!("no accounts for {channel}: {st}"))
        .iter()
        .map(|a| (a["accountId"].as_str().unwrap().to_string(), a.clone()))
        .collect()
}

fn session_keys(v: &Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["key"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_telegram_bots_answer_their_own_users_with_their_own_tokens() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let g = telegram_gateway(&fake, DmPolicy::Open).await;

    // The support account registered its own webhook route with its own
    // token; the default bot polls.
    let set = support.wait_for_calls("setWebhook", 1).await.remove(0);
    let url = set.params["url"].as_str().unwrap_or_default().to_string();
    assert!(url.ends_with("/channels/telegram/support/webhook"), "{url}");
    // Each account's generated webhook secret is its own.
    let default_secret = g.dir.path().join("secrets/telegram/webhook_secret");
    let support_secret =
        std::fs::read_to_string(g.dir.path().join("secrets/telegram:support/webhook_secret"))
            .unwrap();
    assert_eq!(set.params["secret_token"], support_secret.trim());
    if let Ok(d) = std::fs::read_to_string(&default_secret) {
        assert_ne!(d.trim(), support_secret.trim());
    }

    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "to the main bot"));
    support.push(UserMessage::text(&bob.0, &bob.1, "to support"));
    wait_texts(&fake, alice.0.id, &["to the main bot"]).await;
    wait_texts(&support, bob.0.id, &["to support"]).await;
    assert!(support.sent(alice.0.id).is_empty());
    assert!(fake.sent(bob.0.id).is_empty());
    assert_eq!(support.wait_for_deliveries(1).await.len(), 1);

    // Which token made which call: the poller only ever used the default
    // token, the webhook account only its own; neither token appears in
    // the other bot's calls.
    assert!(support.calls_of("getUpdates").is_empty());
    assert!(fake.calls_of("setWebhook").is_empty());
    assert!(!call_text(&fake).contains(SUPPORT_TOKEN));
    assert!(!call_text(&support).contains(DEFAULT_TOKEN));
    assert!(fake.calls().iter().all(|c| c.status != Some(401)));
    assert!(support.calls().iter().all(|c| c.status != Some(401)));

    // Each account's conversations have their own sessions; the default
    // account keeps the keys it always had.
    let mut admin = Client::admin(&g.url()).await;
    let keys = session_keys(&admin.call("sessions.list", json!({})).await);
    assert!(
        keys.contains(&"agent:main:telegram:direct:4242".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"agent:main:telegram:support:direct:5151".to_string()),
        "{keys:?}"
    );

    // `channels.status` shows both accounts with their state and mode;
    // the channel row is the default account's.
    let acc = accounts(&mut admin, "telegram").await;
    assert_eq!(acc.len(), 2, "{acc:?}");
    assert_eq!(acc["default"]["state"], "running");
    assert_eq!(acc["support"]["state"], "running");
    let st = admin.call("channels.status", json!({})).await;
    assert_eq!(st["channels"]["telegram"]["accountId"], "default");
    assert_eq!(st["channelDefaultAccountId"]["telegram"], "default");
    assert_eq!(st["channelOrder"], json!(["telegram"]), "{st}");

    // Stopping one account leaves the other answering.
    let stopped = admin
        .call(
            "channels.stop",
            json!({"channel": "telegram", "accountId": "support"}),
        )
        .await;
    assert_eq!(stopped["accountId"], "support");
    assert_eq!(stopped["status"]["state"], "stopped");
    let acc = accounts(&mut admin, "telegram").await;
    assert_eq!(acc["support"]["state"], "stopped");
    assert_eq!(acc["default"]["state"], "running");
    fake.push(UserMessage::text(&alice.0, &alice.1, "still here?"));
    wait_texts(&fake, alice.0.id, &["to the main bot", "still here?"]).await;
    // A push to the stopped account is refused, not lost: the fake keeps it
    // and delivers it again once the account runs.
    support.push(UserMessage::text(&bob.0, &bob.1, "while stopped"));
    support.wait_for_deliveries(2).await;
    assert_eq!(support.sent_count(bob.0.id), 1);

    // Restarting it (HTTP, `?accountId=`) brings it back; the default
    // account was never restarted.
    let restarts_before = runner(&g, "telegram").status().restarts_total;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/channels/telegram/start?accountId=support",
            g.url().replace("ws://", "http://").trim_end_matches('/')
        ))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        runner(&g, "telegram:support").status().state,
        ChannelState::Running
    );
    support.push(UserMessage::text(&bob.0, &bob.1, "back again"));
    support
        .wait_until("both support messages answered", || {
            let texts = support.sent_texts(bob.0.id);
            (texts.contains(&"while stopped".to_string())
                && texts.contains(&"back again".to_string()))
            .then_some(())
        })
        .await;
    assert_eq!(
        runner(&g, "telegram").status().restarts_total,
        restarts_before
    );
    assert_eq!(runner(&g, "telegram").status().state, ChannelState::Running);

    // An account that does not exist is a clear error.
    let r = admin
        .request(
            "channels.restart",
            json!({"channel": "telegram", "accountId": "nope"}),
        )
        .await;
    assert_eq!(r["ok"], false, "{r}");
    let r = admin
        .request(
            "channels.stop",
            json!({"channel": "telegram", "accountId": "bad id!"}),
        )
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r.to_string().contains("invalid accountId"), "{r}");
}

/// The first `[A-Z2-9]{8}` word of `text`.
fn pairing_code(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| {
            w.len() == 8
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='9').contains(&c))
        })
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_approved_on_one_account_does_not_admit_the_sender_on_the_other() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let g = telegram_gateway(&fake, DmPolicy::Pairing).await;
    // The same person writes to both bots: each account issues its own code.
    let (chat, user) = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    fake.push(UserMessage::text(&chat, &user, "hi main"));
    support.push(UserMessage::text(&chat, &user, "hi support"));
    let main_notice = fake.wait_for_sent(chat.id, 1).await[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let support_notice = support.wait_for_sent(chat.id, 1).await[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let main_code = pairing_code(&main_notice).unwrap();
    let support_code = pairing_code(&support_notice).unwrap();
    assert_ne!(main_code, support_code);
    // The notice names the account the operator must approve on.
    assert!(
        support_notice.contains(&format!(
            "pincer pairing approve telegram {support_code} --account support"
        )),
        "{support_notice}"
    );
    assert!(!main_notice.contains("--account"), "{main_notice}");

    let mut admin = Client::admin(&g.url()).await;
    // A code is only valid on its own account.
    let wrong = admin
        .request(
            "channels.pairing.approve",
            json!({"channel": "telegram", "code": support_code}),
        )
        .await;
    assert_eq!(wrong["ok"], false, "{wrong}");
    let listed = admin
        .call(
            "channels.pairing.list",
            json!({"channel": "telegram", "accountId": "support"}),
        )
        .await;
    assert_eq!(listed["pending"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["pending"][0]["code"], support_code.as_str());
    let all = admin.call("channels.pairing.list", json!({})).await;
    // Each entry also carries the labels OpenClaw's Control UI sorts by.
    let accounts: Vec<(&Value, &Value)> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (&a["channel"], &a["accountId"]))
        .collect();
    assert!(
        accounts.contains(&(&json!("telegram"), &json!("support")))
            && accounts.contains(&(&json!("telegram"), &json!("default"))),
        "{all}"
    );
    let ok = admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "telegram", "accountId": "support", "code": support_code}),
        )
        .await;
    assert_eq!(ok["approved"]["sender"], "4242", "{ok}");
    let unknown = admin
        .request(
            "channels.pairing.list",
            json!({"channel": "telegram", "accountId": "nope"}),
        )
        .await;
    assert_eq!(unknown["ok"], false, "{unknown}");

    // Approved on support: answered there. On the main bot the sender is
    // still unknown (their code pending): the message goes unanswered,
    // while the support bot answers the message sent after it.
    fake.push(UserMessage::text(&chat, &user, "main again"));
    support.push(UserMessage::text(&chat, &user, "support again"));
    wait_texts(
        &support,
        chat.id,
        &[support_notice.as_str(), "support again"],
    )
    .await;
    let main = g
        .gw()
        .runtime
        .channels
        .pairing()
        .list("telegram", Some("default"))
        .unwrap();
    assert_eq!(main.pending.len(), 1);
    assert!(main.approved.is_empty());
    // Approving on the main bot admits them there too.
    admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "telegram", "code": main_code}),
        )
        .await;
    fake.push(UserMessage::text(&chat, &user, "main third"));
    wait_texts(&fake, chat.id, &[main_notice.as_str(), "main third"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forum_topic_gets_its_own_session_and_replies_go_to_the_topic() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let port = free_port();
    let mut s = telegram_settings(&fake, port, DmPolicy::Open);
    if let Some(a) = s.accounts.get_mut("support") {
        a.group_policy = Some(GroupPolicy::Open);
        a.require_mention = Some(false);
    }
    let g = gateway(port, vec![("telegram", s)], |p| {
        install(p, "telegram", TELEGRAM_HOSTS)
    })
    .await;
    let forum = Chat::forum(-100_777, "Help desk");
    let carol = User::new(99, "Carol");
    support.push(UserMessage::text(&forum, &carol, "in topic seven").in_topic(7));
    support.push(UserMessage::text(&forum, &carol, "in topic nine").in_topic(9));
    support.push(UserMessage::text(&forum, &carol, "in general"));
    support
        .wait_until("three answers in the forum", || {
            (support.sent(forum.id).len() == 3).then_some(())
        })
        .await;
    for m in support.sent(forum.id) {
        let want = match m["text"].as_str().unwrap() {
            "in topic seven" => Some(7),
            "in topic nine" => Some(9),
            "in general" => None,
            other => panic!("unexpected answer {other:?}"),
        };
        assert_eq!(m["message_thread_id"].as_i64(), want, "{m}");
    }
    let mut admin = Client::admin(&g.url()).await;
    let keys = session_keys(&admin.call("sessions.list", json!({})).await);
    for k in [
        "agent:main:telegram:support:direct:-100777:topic:7",
        "agent:main:telegram:support:direct:-100777:topic:9",
        "agent:main:telegram:support:direct:-100777",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
    }
    // The groups of the default account stay closed (its own policy).
    assert!(fake.sent(forum.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reload_restarts_every_account_on_the_new_version() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let g = telegram_gateway(&fake, DmPolicy::Open).await;
    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "before"));
    support.push(UserMessage::text(&bob.0, &bob.1, "before"));
    wait_texts(&fake, alice.0.id, &["before"]).await;
    wait_texts(&support, bob.0.id, &["before"]).await;
    let old = runner(&g, "telegram:support").version().unwrap();

    let mut admin = Client::admin(&g.url()).await;
    let r = admin
        .call("plugins.reload", json!({"name": "telegram"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    for key in ["telegram", "telegram:support"] {
        let v = runner(&g, key).version().unwrap();
        assert!(
            !std::sync::Arc::ptr_eq(&v, &old),
            "{key} kept the old version"
        );
    }
    fake.push(UserMessage::text(&alice.0, &alice.1, "after"));
    support.push(UserMessage::text(&bob.0, &bob.1, "after"));
    wait_texts(&fake, alice.0.id, &["before", "after"]).await;
    wait_texts(&support, bob.0.id, &["before", "after"]).await;
    // The webhook account never polled; each bot was only ever called
    // with its own token.
    assert!(support.calls_of("getUpdates").is_empty());
    assert!(!call_text(&fake).contains(SUPPORT_TOKEN));
    assert!(!call_text(&support).contains(DEFAULT_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_default_is_neither_listed_nor_started_when_accounts_exist() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let port = free_port();
    let mut s = telegram_settings(&fake, port, DmPolicy::Open);
    s.secrets.clear();
    let g = gateway(port, vec![("telegram", s)], |p| {
        install(p, "telegram", TELEGRAM_HOSTS)
    })
    .await;
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    support.push(UserMessage::text(&bob.0, &bob.1, "only me"));
    wait_texts(&support, bob.0.id, &["only me"]).await;
    assert!(g.gw().runtime.channels.get("telegram").is_none());
    let mut admin = Client::admin(&g.url()).await;
    let acc = accounts(&mut admin, "telegram").await;
    assert_eq!(acc.keys().collect::<Vec<_>>(), vec!["support"], "{acc:?}");
    let st = admin.call("channels.status", json!({})).await;
    assert_eq!(st["channels"]["telegram"]["accountId"], "support", "{st}");
    assert_eq!(st["channelDefaultAccountId"]["telegram"], "support", "{st}");
    // The default bot was never called (no token to call it with).
    assert!(fake.calls().is_empty());
}

/// The account settings of a WhatsApp number on `wa`.
fn whatsapp_account(
    wa: &FakeWhatsApp,
) -> (BTreeMap<String, SecretSource>, BTreeMap<String, String>) {
    let c = wa.config();
    (
        [
            ("access_token".to_string(), secret(&c.access_token)),
            ("app_secret".to_string(), secret(&c.app_secret)),
            ("verify_token".to_string(), secret(&c.verify_token)),
        ]
        .into(),
        map(&[
            ("phone_number_id", &c.phone_number_id),
            ("api_version", &c.api_version),
            ("api_base", wa.base_url()),
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_whatsapp_numbers_verify_pushes_with_their_own_app_secrets() {
    let a = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let b = FakeWhatsApp::start(WhatsAppConfig {
        access_token: "EAAB-second-number-token".into(),
        app_secret: "second-app-secret".into(),
        verify_token: "second-verify".into(),
        phone_number_id: "200000000000002".into(),
        display_phone_number: "15550000002".into(),
        ..WhatsAppConfig::default()
    })
    .await;
    assert_ne!(a.config().app_secret, b.config().app_secret);
    let (secrets_a, config_a) = whatsapp_account(&a);
    let (secrets_b, config_b) = whatsapp_account(&b);
    let s = PluginSettings {
        secrets: secrets_a,
        config: config_a,
        dm_policy: DmPolicy::Open,
        accounts: [(
            "second".to_string(),
            AccountSettings {
                secrets: secrets_b,
                config: config_b,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let g = gateway(0, vec![("whatsapp", s)], |p| {
        install(p, "whatsapp", WHATSAPP_HOSTS)
    })
    .await;
    let base = g.url().replace("ws://", "http://");
    let base = base.trim_end_matches('/');
    let url_a = format!("{base}/channels/whatsapp/webhook");
    let url_b = format!("{base}/channels/whatsapp/second/webhook");

    // Each number's handshake answers with its own verify token only.
    let ok = b
        .verify_handshake(&url_b, "subscribe", "second-verify", "77")
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "77"));
    let cross = b
        .verify_handshake(&url_b, "subscribe", &a.config().verify_token, "78")
        .await;
    assert_eq!(cross.status, 403, "{}", cross.body);

    // A push signed with A's secret to B's route is refused, and the other
    // way round; nothing is processed.
    let ada = Contact::new("4915112345678", "Ada");
    let spoof = b.batch().text(&ada, "signed by A").build();
    let refused = a.push(&url_b, &spoof).await;
    assert!(
        refused.status == 401 || refused.status == 403,
        "{} {}",
        refused.status,
        refused.body
    );
    let spoof = a.batch().text(&ada, "signed by B").build();
    let refused = b.push(&url_a, &spoof).await;
    assert!(
        refused.status == 401 || refused.status == 403,
        "{}",
        refused.status
    );
    // Unknown account routes are 404.
    let unknown = b
        .push(&format!("{base}/channels/whatsapp/third/webhook"), &spoof)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // Correctly signed pushes are answered by their own number, with their
    // own access token (each fake refuses any other).
    let answered_a = a
        .push(&url_a, &a.batch().text(&ada, "hello A").build())
        .await;
    assert_eq!(answered_a.status, 200, "{}", answered_a.body);
    let answered_b = b
        .push(&url_b, &b.batch().text(&ada, "hello B").build())
        .await;
    assert_eq!(answered_b.status, 200, "{}", answered_b.body);
    let sent_a = a.wait_for_sent(&ada.wa_id, 1).await;
    let sent_b = b.wait_for_sent(&ada.wa_id, 1).await;
    assert_eq!(sent_a[0].text(), Some("hello A"));
    assert_eq!(sent_b[0].text(), Some("hello B"));
    assert_eq!(a.sent_count(&ada.wa_id), 1, "the spoofed push was answered");
    assert_eq!(b.sent_count(&ada.wa_id), 1, "the spoofed push was answered");
    for c in a.calls() {
        assert!(!format!("{:?}", c.headers).contains("EAAB-second-number-token"));
    }
    let mut admin = Client::admin(&g.url()).await;
    let keys = session_keys(&admin.call("sessions.list", json!({})).await);
    assert!(
        keys.contains(&format!("agent:main:whatsapp:direct:{}", ada.wa_id)),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("agent:main:whatsapp:second:direct:{}", ada.wa_id)),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_has_its_own_key_value_namespace_and_send_takes_an_account() {
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.plugins.insert(
        "echo".into(),
        PluginSettings {
            dm_policy: DmPolicy::Open,
            accounts: [("b".to_string(), AccountSettings::default())].into(),
            ..Default::default()
        },
    );
    let g = TestGateway::start_with(opts, dir).await;
    let mut admin = Client::admin(&g.url()).await;
    let send = |account: Option<&str>, text: &str| {
        let mut p = json!({"channel": "echo", "to": "carol", "message": text});
        if let Some(a) = account {
            p["accountId"] = json!(a);
        }
        p
    };
    let one = admin.call("send", send(None, "one")).await;
    let two = admin.call("send", send(None, "two")).await;
    let b1 = admin.call("send", send(Some("b"), "b one")).await;
    // The echo plugin numbers messages with a key-value counter: each
    // account counts on its own.
    assert_eq!(one["messageId"], "echo-1", "{one}");
    assert_eq!(two["messageId"], "echo-2", "{two}");
    assert_eq!(b1["messageId"], "echo-1", "{b1}");
    assert_eq!(b1["accountId"], "b");
    let kv = g.gw().runtime.plugins.kv();
    let get = |ns: &str, k: &str| {
        kv.get(ns, k)
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert_eq!(get("echo", "next_id").as_deref(), Some("2"));
    assert_eq!(get("echo:b", "next_id").as_deref(), Some("1"));
    assert!(get("echo:b", "sent/echo-1").unwrap().contains("b one"));
    assert!(get("echo", "sent/echo-1").unwrap().contains("one"));
    assert!(!get("echo", "sent/echo-1").unwrap().contains("b one"));
    assert!(get("echo:b", "sent/echo-2").is_none());
    // Unknown accounts are refused with a clear error.
    let r = admin.request("send", send(Some("c"), "x")).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r.to_string().contains("echo:c"), "{r}");
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// A gateway whose telegram plugin polls `n` bots of `fake` (the default
/// account and `n - 1` more), all long-polling once they are up.
async fn polling_accounts(fake: &FakeTelegram, n: usize) -> (TestGateway, Vec<TelegramBot>) {
    let mut bots = vec![fake.add_bot(DEFAULT_TOKEN, "pincer_test_bot")];
    let mut s = PluginSettings {
        secrets: [("bot_token".to_string(), secret(DEFAULT_TOKEN))].into(),
        config: map(&[("mode", "poll"), ("api_base", fake.base_url())]),
        dm_policy: DmPolicy::Open,
        ..Default::default()
    };
    // No `max_instances`: the plugin's cap grows with its accounts.
    for i in 1..n {
        let token = format!("{}:density-{i:05}", 500_000 + i);
        bots.push(fake.add_bot(&token, &format!("density_{i}_bot")));
        s.accounts.insert(
            format!("a{i}"),
            AccountSettings {
                secrets: [("bot_token".to_string(), secret(&token))].into(),
                ..Default::default()
            },
        );
    }
    let g = gateway(0, vec![("telegram", s)], |p| {
        install(p, "telegram", TELEGRAM_HOSTS)
    })
    .await;
    for b in &bots {
        b.wait_for_pollers(1).await;
    }
    (g, bots)
}

/// The per-account figure for the report (run by hand:
/// `cargo test -p pincer-tests --test channels_accounts -- --ignored --nocapture`):
/// RSS per polling Telegram account (a gateway with one account, then one
/// with `N` in the same process: the second's growth beyond the first's
/// is the accounts' cost) and CPU while all of them idle in long polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: prints RSS per polling account"]
async fn measure_rss_per_polling_account() {
    const N: usize = 200;
    let fake = FakeTelegram::start().await;
    let start = rss_kib();
    let (one, _b1) = polling_accounts(&fake, 1).await;
    let with_one = rss_kib();
    let fake_n = FakeTelegram::start().await;
    let (many, bots) = polling_accounts(&fake_n, N).await;
    let with_n = rss_kib();
    let gateway_base = with_one.saturating_sub(start);
    let accounts = with_n.saturating_sub(with_one).saturating_sub(gateway_base);
    let per = accounts as f64 / (N - 1) as f64;
    // Idle: every account in its long poll, nothing to do for 10 s.
    let t0 = cpu_ticks();
    let wall = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks = cpu_ticks() - t0;
    let hz = 100.0;
    let cpu_pct = ticks as f64 / hz / wall.elapsed().as_secs_f64() * 100.0;
    let idle: usize = many
        .gw()
        .runtime
        .channels
        .all()
        .iter()
        .map(|r| r.idle_instances())
        .sum();
    println!(
        "accounts={N} rss_start={start}KiB one_account_gateway=+{gateway_base}KiB \
         {N}_accounts_gateway=+{}KiB per_account={per:.0}KiB idle_cpu={cpu_pct:.1}% \
         (process, incl. the fakes) idle_sender_instances={idle}",
        with_n - with_one
    );
    assert_eq!(bots.len(), N);
    drop((one, many));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sender_instances_are_dropped_by_the_monitor_and_made_again_on_demand() {
    let clock = pincer::clock::ManualClock::new(1_700_000_000_000);
    let (mut opts, dir) = TestGateway::options();
    opts.gateway.token = Some("secret".into());
    opts.clock = Some(pincer::gateway::launch::ClockOverride(clock.clone()));
    if let Some(echo) = opts.plugins.get_mut("echo") {
        echo.accounts.insert("b".into(), AccountSettings::default());
    }
    let g = TestGateway::start_with(opts, dir).await;
    let b = runner(&g, "echo:b");
    let mut admin = Client::admin(&g.url()).await;
    let sent = admin
        .call(
            "send",
            json!({"channel": "echo", "accountId": "b", "to": "dave", "message": "one"}),
        )
        .await;
    assert_eq!(sent["messageId"], "echo-1");
    // The send left its instance warm in the account's pool.
    assert!(b.idle_instances() >= 1);
    let health = &g.gw().runtime.health;
    health.check_once().await;
    assert!(b.idle_instances() >= 1, "dropped before it was idle long");
    clock.advance(pincer::channels::POOL_IDLE_MS + 1);
    health.check_once().await;
    assert_eq!(b.idle_instances(), 0);
    assert_eq!(runner(&g, "echo").idle_instances(), 0);
    // The next send makes a fresh instance of the account: same namespace.
    let sent = admin
        .call(
            "send",
            json!({"channel": "echo", "accountId": "b", "to": "dave", "message": "two"}),
        )
        .await;
    assert_eq!(sent["messageId"], "echo-2");
}
