//! Config reload (SIGHUP in `pincer`; `Runtime::apply_settings`
//! underneath): a changed `[plugins.<name>]` table applies to a running
//! gateway without a restart. Accounts added start, accounts removed stop,
//! and a changed policy applies from then on; plugins whose settings did
//! not change are not reloaded. Against the Telegram plugin built from
//! source and its fake on loopback.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::fakes::telegram::{Chat, DEFAULT_TOKEN, FakeTelegram, TelegramBot, User, UserMessage};
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{AccountSettings, PluginSettings};
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::json;

const SUPPORT_TOKEN: &str = "222222:SUPPORT-bot-token-abcdefghijklmnopqr";
const TELEGRAM_HOSTS: &str = r#"allowed_hosts = ["https://api.telegram.org"]"#;

fn install(plugins: &Path) {
    std::fs::create_dir_all(plugins).unwrap();
    let wasm = pincer_tests::built_plugin("telegram");
    std::fs::copy(&wasm, plugins.join("telegram.wasm")).unwrap();
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).unwrap();
    let widened = manifest.replace(TELEGRAM_HOSTS, r#"allowed_hosts = ["http://127.0.0.1:*"]"#);
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join("telegram.toml"), widened).unwrap();
}

fn polling(fake: &FakeTelegram, token: &str) -> PluginSettings {
    PluginSettings {
        secrets: [("bot_token".to_string(), SecretSource::Value(token.into()))].into(),
        config: [
            ("mode".to_string(), "poll".to_string()),
            ("api_base".to_string(), fake.base_url().to_string()),
        ]
        .into(),
        dm_policy: DmPolicy::Open,
        ..Default::default()
    }
}

fn with_support(mut s: PluginSettings) -> PluginSettings {
    s.accounts.insert(
        "support".into(),
        AccountSettings {
            secrets: [(
                "bot_token".to_string(),
                SecretSource::Value(SUPPORT_TOKEN.into()),
            )]
            .into(),
            ..Default::default()
        },
    );
    s
}

async fn wait_texts(bot: &TelegramBot, chat_id: i64, texts: &[&str]) {
    bot.wait_until(&format!("texts {texts:?} in chat {chat_id}"), || {
        (bot.sent_texts(chat_id) == texts).then_some(())
    })
    .await
}

async fn account_ids(admin: &mut Client) -> Vec<String> {
    let st = admin.call("channels.status", json!({})).await;
    let mut ids: Vec<String> = st["channelAccounts"]["telegram"]
        .as_array()
        .unwrap_or_else(|| panic!("no telegram accounts: {st}"))
        .iter()
        .map(|a| a["accountId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_adds_and_removes_accounts_and_changes_a_policy_without_a_restart() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("plugins"));
    let mut opts = pincer::gateway::launch::Options::new(dir.path());
    opts.gateway.token = Some("secret".into());
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.plugins
        .insert("telegram".into(), polling(&fake, DEFAULT_TOKEN));
    let g = TestGateway::start_with(opts, dir).await;
    let mut admin = Client::admin(&g.url()).await;
    let plugins = &g.gw().runtime.plugins;

    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "before"));
    wait_texts(&fake, alice.0.id, &["before"]).await;
    assert_eq!(account_ids(&mut admin).await, ["default"]);
    let first = plugins.current("telegram").unwrap();

    // 1. An account added: it starts and answers with its own token.
    let mut settings = BTreeMap::new();
    settings.insert(
        "telegram".to_string(),
        with_support(polling(&fake, DEFAULT_TOKEN)),
    );
    let report = g.gw().runtime.apply_settings(settings.clone()).await;
    assert_eq!(report.reloaded, ["telegram"], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!std::sync::Arc::ptr_eq(
        &first,
        &plugins.current("telegram").unwrap()
    ));
    support.push(UserMessage::text(&bob.0, &bob.1, "to support"));
    wait_texts(&support, bob.0.id, &["to support"]).await;
    assert_eq!(account_ids(&mut admin).await, ["default", "support"]);

    // The same settings again: nothing changed, nothing reloaded.
    let same = plugins.current("telegram").unwrap();
    let report = g.gw().runtime.apply_settings(settings).await;
    assert!(report.reloaded.is_empty(), "{report:?}");
    assert!(std::sync::Arc::ptr_eq(
        &same,
        &plugins.current("telegram").unwrap()
    ));

    // 2. The account removed and the default account's DM policy turned
    // to pairing: the support runner is gone, and a new sender now gets a
    // pairing code instead of an answer.
    let mut settings = BTreeMap::new();
    let mut pairing = polling(&fake, DEFAULT_TOKEN);
    pairing.dm_policy = DmPolicy::Pairing;
    settings.insert("telegram".to_string(), pairing);
    let report = g.gw().runtime.apply_settings(settings).await;
    assert_eq!(report.reloaded, ["telegram"], "{report:?}");
    assert!(g.gw().runtime.channels.get("telegram:support").is_none());
    assert_eq!(account_ids(&mut admin).await, ["default"]);
    assert_eq!(plugins.settings("telegram").dm_policy, DmPolicy::Pairing);
    let carol = (Chat::private(6161, "Carol"), User::new(6161, "Carol"));
    fake.push(UserMessage::text(&carol.0, &carol.1, "hello?"));
    let notice = fake
        .wait_until("a pairing notice for Carol", || {
            fake.sent_texts(carol.0.id).into_iter().next()
        })
        .await;
    assert!(notice.contains("Pairing code:"), "{notice}");
    // The bot that was removed is no longer polled for.
    let polls = support.calls_of("getUpdates").len();
    support.push(UserMessage::text(&bob.0, &bob.1, "anyone?"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "still open?"));
    fake.wait_until("Alice's pairing notice", || {
        (fake.sent_texts(alice.0.id).len() == 2).then_some(())
    })
    .await;
    assert_eq!(support.calls_of("getUpdates").len(), polls);
    assert_eq!(support.sent_texts(bob.0.id), ["to support"]);
}
