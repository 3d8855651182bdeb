//! Config reload: a changed `[plugins.<name>]` table applies to a running
//! gateway without a restart, whether the operator saves the file (it is
//! watched), sends SIGHUP (a child gateway process) or calls
//! `POST /v1/config/reload` / `config.reload`; `Runtime::apply_settings`
//! underneath. Accounts added start, accounts removed stop, and a changed
//! policy applies from then on; plugins whose settings did not change are
//! not reloaded; an invalid file changes nothing and shows in `/readyz`;
//! settings that need a restart are named. Against the Telegram plugin
//! built from source and its fake on loopback.

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

// ---- The configuration file itself: saved, signalled, or reloaded by an
// operator.

/// A config file for the Telegram plugin on `fake`: the default account
/// (and `support` when asked), `dm_policy` and `allow_from` as given, and
/// `extra` (top-level tables) before it.
fn config_text(fake: &FakeTelegram, support: bool, policy: &str, extra: &str) -> String {
    let mut t = format!(
        "allow_cidrs = [\"127.0.0.0/8\"]\n{extra}\n[plugins.telegram]\n{policy}\n\
         secrets = {{ bot_token = \"{DEFAULT_TOKEN}\" }}\n\
         config = {{ mode = \"poll\", api_base = \"{}\" }}\n",
        fake.base_url()
    );
    if support {
        t.push_str(&format!(
            "[plugins.telegram.accounts.support]\nsecrets = {{ bot_token = \"{SUPPORT_TOKEN}\" }}\n"
        ));
    }
    t
}

const OPEN: &str = "dm_policy = \"open\"";

/// Writes `text` as a careful editor does: a temporary file renamed over
/// the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A gateway running from the config file `text` (written into its data
/// directory), with the Telegram plugin installed.
async fn from_file(text: &str) -> (TestGateway, std::path::PathBuf) {
    let (mut opts, dir) = TestGateway::options();
    install(&dir.path().join("plugins"));
    let path = dir.path().join("pincer.toml");
    std::fs::write(&path, text).unwrap();
    let file = pincer::config::FileConfig::load(&path).unwrap();
    opts.plugins = file.plugins;
    opts.gateway.config_watch = file.gateway.config_watch;
    opts.gateway.token = Some("secret".into());
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.config_file = Some(path.clone());
    (TestGateway::start_with(opts, dir).await, path)
}

/// `/readyz` now (its status and body).
async fn readyz(base: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits until `/readyz` reports `n` applied reloads (there is no event
/// for a reload the file watcher or a signal started).
async fn until_reloads(base: &str, field: &str, n: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = readyz(base).await;
        if body["config"][field].as_u64() == Some(n) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "config.{field} never reached {n}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_the_file_adds_and_removes_an_account_and_tightens_allow_from() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let (g, path) = from_file(&config_text(&fake, false, OPEN, "")).await;
    let base = format!("http://{}", g.addr);
    let mut admin = Client::admin(&g.url()).await;
    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "before"));
    wait_texts(&fake, alice.0.id, &["before"]).await;

    // 1. Saved with a second account: no signal, no request; it answers.
    save(&path, &config_text(&fake, true, OPEN, ""));
    support.push(UserMessage::text(&bob.0, &bob.1, "to support"));
    wait_texts(&support, bob.0.id, &["to support"]).await;
    until_reloads(&base, "reloads", 1).await;
    assert_eq!(account_ids(&mut admin).await, ["default", "support"]);

    // 2. Saved without it, and the default account narrowed to Alice: the
    // support bot is no longer polled, and Bob is refused while Alice is
    // still answered.
    save(
        &path,
        &config_text(
            &fake,
            false,
            "dm_policy = \"allowlist\"\nallow_from = [\"4242\"]",
            "",
        ),
    );
    until_reloads(&base, "reloads", 2).await;
    assert_eq!(account_ids(&mut admin).await, ["default"]);
    assert!(g.gw().runtime.channels.get("telegram:support").is_none());
    let polls = support.calls_of("getUpdates").len();
    support.push(UserMessage::text(&bob.0, &bob.1, "anyone there?"));
    fake.push(UserMessage::text(&bob.0, &bob.1, "let me in"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "still me"));
    wait_texts(&fake, alice.0.id, &["before", "still me"]).await;
    let inbox = g.gw().runtime.channels.inbox().clone();
    fake.wait_until("Bob's message settled", || {
        (inbox.pending("telegram").ok() == Some(0)).then_some(())
    })
    .await;
    assert!(
        fake.sent_texts(bob.0.id).is_empty(),
        "a stranger was answered"
    );
    assert_eq!(support.calls_of("getUpdates").len(), polls);
    assert_eq!(support.sent_texts(bob.0.id), ["to support"]);
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["failures"], 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_the_operator_endpoint_answers_what_changed() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let unwatched = "[gateway]\nconfig_watch = false\n";
    let (g, path) = from_file(&config_text(&fake, false, OPEN, unwatched)).await;
    let base = format!("http://{}", g.addr);
    let http = reqwest::Client::new();
    let reload = || {
        http.post(format!("{base}/v1/config/reload"))
            .bearer_auth("secret")
            .send()
    };
    let mut admin = Client::admin(&g.url()).await;
    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    let first = g.gw().runtime.plugins.current("telegram").unwrap();

    // An invalid file (an unknown policy, and an account added with it):
    // refused whole, with the reason; nothing changes, the gateway stays
    // ready and says so.
    save(
        &path,
        &config_text(&fake, true, "dm_policy = \"everyone\"", unwatched),
    );
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("everyone"), "{body}");
    let refused = admin.request("config.reload", json!({})).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
    assert!(std::sync::Arc::ptr_eq(
        &first,
        &g.gw().runtime.plugins.current("telegram").unwrap()
    ));
    assert_eq!(account_ids(&mut admin).await, ["default"]);
    let (status, ready) = readyz(&base).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["config"]["failures"], 2, "{ready}");
    assert_eq!(ready["config"]["reloads"], 0, "{ready}");
    assert!(
        ready["config"]["lastError"]
            .as_str()
            .unwrap()
            .contains("everyone"),
        "{ready}"
    );
    fake.push(UserMessage::text(&alice.0, &alice.1, "still open"));
    wait_texts(&fake, alice.0.id, &["still open"]).await;

    // Fixed, with the account and a new listen address: the account
    // applies, the address is named as needing a restart.
    let moved = "[gateway]\nconfig_watch = false\nlisten = \"127.0.0.1:1\"\n";
    save(&path, &config_text(&fake, true, OPEN, moved));
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["trigger"], "operator", "{report}");
    assert_eq!(
        report["plugins"]["reloaded"],
        json!(["telegram"]),
        "{report}"
    );
    assert_eq!(
        report["restartNeeded"],
        json!(["gateway.listen"]),
        "{report}"
    );
    support.push(UserMessage::text(&bob.0, &bob.1, "to support"));
    wait_texts(&support, bob.0.id, &["to support"]).await;
    assert_eq!(account_ids(&mut admin).await, ["default", "support"]);
    let (_, ready) = readyz(&base).await;
    assert_eq!(ready["config"]["reloads"], 1, "{ready}");
    assert!(ready["config"].get("lastError").is_none(), "{ready}");
    assert_eq!(ready["config"]["restartNeeded"], json!(["gateway.listen"]));
    // The same file again: nothing to do.
    let again = admin.call("config.reload", json!({})).await;
    assert_eq!(again["unchanged"], true, "{again}");
    assert_eq!(again["plugins"]["reloaded"], json!([]), "{again}");
}

/// The child of `sighup_adds_an_account`: a gateway run from the config
/// file `CONFIG_RELOAD_DIR/pincer.toml`, as `pincer serve` runs one
/// (SIGHUP listened for before it serves).
#[test]
#[ignore = "run by sighup_adds_an_account in a child process"]
fn sighup_child() {
    let Some(dir) = std::env::var_os("CONFIG_RELOAD_DIR") else {
        return;
    };
    pincer_tests::gateway::child_logging();
    pincer_tests::gateway::child_runtime().block_on(async move {
        let dir = std::path::PathBuf::from(dir);
        let path = dir.join("pincer.toml");
        let file = pincer::config::FileConfig::load(&path).unwrap();
        let mut opts = pincer::gateway::launch::Options::new(dir.join("data"));
        opts.plugins_dir = dir.join("plugins");
        opts.gateway = file.gateway.clone();
        opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
        opts.gateway.token = Some("secret".into());
        opts.plugins = file.plugins;
        opts.allow_cidrs =
            pincer::netguard::NetGuard::parse_cidrs(&file.allow_cidrs.join(",")).unwrap();
        opts.config_file = Some(path);
        let hup = pincer::config_reload::listen_for_sighup().unwrap();
        let running = pincer::gateway::launch::start(opts).await.unwrap();
        let reloader = running.gateway.config_reload.get().unwrap().clone();
        tokio::spawn(pincer::config_reload::reload_on_sighup(hup, reloader));
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

fn hup(child: &pincer_tests::gateway::ChildGateway) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_an_account() {
    let fake = FakeTelegram::start().await;
    let support = fake.add_bot(SUPPORT_TOKEN, "support_bot");
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("plugins"));
    let path = dir.path().join("pincer.toml");
    // Not watched: only the signal reloads.
    let unwatched = "[gateway]\nconfig_watch = false\n";
    std::fs::write(&path, config_text(&fake, false, OPEN, unwatched)).unwrap();
    let dir_env = dir.path().display().to_string();
    let child = pincer_tests::gateway::ChildGateway::spawn(
        "sighup_child",
        &[("CONFIG_RELOAD_DIR", dir_env.as_str())],
    );
    let base = format!("http://{}", child.addr);
    let alice = (Chat::private(4242, "Alice"), User::new(4242, "Alice"));
    let bob = (Chat::private(5151, "Bob"), User::new(5151, "Bob"));
    fake.push(UserMessage::text(&alice.0, &alice.1, "before"));
    wait_texts(&fake, alice.0.id, &["before"]).await;

    save(&path, &config_text(&fake, true, OPEN, unwatched));
    hup(&child);
    support.push(UserMessage::text(&bob.0, &bob.1, "to support"));
    wait_texts(&support, bob.0.id, &["to support"]).await;
    let ready = until_reloads(&base, "reloads", 1).await;
    assert_eq!(ready["config"]["failures"], 0, "{ready}");

    // A broken file and a signal: refused, counted, nothing changes.
    save(&path, "[plugins.telegram\n");
    hup(&child);
    let ready = until_reloads(&base, "failures", 1).await;
    assert_eq!(ready["ready"], true, "{ready}");
    fake.push(UserMessage::text(&alice.0, &alice.1, "after"));
    wait_texts(&fake, alice.0.id, &["before", "after"]).await;
    support.push(UserMessage::text(&bob.0, &bob.1, "still there?"));
    wait_texts(&support, bob.0.id, &["to support", "still there?"]).await;
}
