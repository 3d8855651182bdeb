//! The Telegram channel (`plugins/telegram`, issue 9 sections 3 and 6)
//! through a real gateway on loopback, with the plugin built from source
//! and `pincer::fakes::telegram::FakeTelegram` standing in for
//! `api.telegram.org`. The echo agent answers with the user's text, so an
//! answer in the fake's chat proves the whole path: poll or push, access
//! policy, run, reply, `sendMessage`.
//!
//! The fake knows the bot only by its token in the URL path, so every
//! answered call shows the host filled the token in; the plugin's config
//! never holds it and its key-value store is checked for it.

use std::time::Duration;

use pincer::channels::access::{DmPolicy, GroupPolicy};
use pincer::fakes::telegram::{
    Chat, DEFAULT_TOKEN, FakeTelegram, TelegramBot, TgFault, User, UserMessage,
};
use pincer::plugins::PluginSettings;
use pincer::plugins::bindings::{OutboundMessage, TextFormat};
use pincer::plugins::manifest::SecretSource;
use pincer_tests::gateway::{Client, TestGateway};
use serde_json::json;

/// Operator settings for the fake: the token granted by value, `api_base`
/// at the fake, `config` extra entries.
fn settings(fake: &FakeTelegram, config: &[(&str, &str)]) -> PluginSettings {
    pincer_tests::telegram::settings(fake.base_url(), config)
}

/// A gateway (token `secret`) serving the telegram channel with `settings`,
/// on `port` (0: any).
async fn gateway(settings: PluginSettings, port: u16) -> TestGateway {
    pincer_tests::telegram::gateway(settings, |o| {
        o.gateway.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    })
    .await
}

/// A loopback port free right now (for a webhook URL that must be known
/// before the gateway starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until the bot's messages in `chat_id` (edits applied) read
/// `texts`: streamed answers settle by edits, so the first message seen may
/// be a partial one.
async fn wait_texts(fake: &FakeTelegram, chat_id: i64, texts: &[&str]) {
    fake.wait_until(&format!("texts {texts:?} in chat {chat_id}"), || {
        (fake.sent_texts(chat_id) == texts).then_some(())
    })
    .await
}

fn alice() -> (Chat, User) {
    (
        Chat::private(4242, "Alice"),
        User::new(4242, "Alice").username("alice_a"),
    )
}

/// Every value in the plugin's key-value store, as text.
fn kv_values(g: &TestGateway) -> Vec<String> {
    let kv = g.gw().runtime.plugins.kv();
    kv.list_keys("telegram", "", 10_000)
        .unwrap()
        .iter()
        .filter_map(|k| kv.get("telegram", k).unwrap())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_answers_a_dm_and_the_token_stays_in_the_host() {
    let fake = FakeTelegram::start().await;
    // A webhook left over from earlier: poll mode must delete it first.
    let r = reqwest::Client::new()
        .post(format!("{}/setWebhook", fake.api_url()))
        .json(&json!({"url": "https://old.example.com/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let settings = settings(&fake, &[]);
    assert!(
        settings.config.values().all(|v| !v.contains(DEFAULT_TOKEN)),
        "the plugin's config holds the token"
    );
    let g = gateway(settings, 0).await;
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "hello *there* <b>"));
    wait_texts(&fake, chat.id, &["hello there <b>"]).await;
    assert_eq!(fake.webhook_url(), None, "the old webhook was not deleted");
    assert_eq!(fake.calls_of("deleteWebhook").len(), 1);
    // Markdown rendered to Telegram HTML, the rest escaped, threaded to the
    // user's message (the answer may stream: a send, then edits).
    let call = fake.calls_of("sendMessage").remove(0);
    assert_eq!(call.params["parse_mode"], "HTML");
    assert_eq!(
        call.params["reply_parameters"]["message_id"],
        pushed.message_id
    );
    let mut texts = fake.calls_of("sendMessage");
    texts.extend(fake.calls_of("editMessageText"));
    assert!(
        texts
            .iter()
            .any(|c| c.params["text"] == "hello <i>there</i> &lt;b&gt;"
                && c.params["parse_mode"] == "HTML"),
        "no call carried the rendered text"
    );
    // Long polls ask for message updates explicitly, with a real timeout,
    // from the offset after the last update.
    let polls = fake.wait_for_calls("getUpdates", 2).await;
    for p in &polls {
        assert_eq!(
            p.params["allowed_updates"],
            json!(["message"]),
            "{:?}",
            p.params
        );
        assert!(p.params["timeout"].as_i64().unwrap() >= 1, "{:?}", p.params);
    }
    assert_eq!(polls[1].params["offset"], pushed.update_id + 1);
    fake.wait_for_confirmed(pushed.update_id).await;
    // Every call reached the fake with the token in its path (the fake
    // answers unknown tokens 401); the plugin never stored it.
    assert!(fake.calls().iter().all(|c| c.status != Some(401)));
    assert!(
        kv_values(&g).iter().all(|v| !v.contains(DEFAULT_TOKEN)),
        "the plugin's kv holds the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_echoed_by_the_platform_reaches_the_plugin_only_as_a_placeholder() {
    let fake = FakeTelegram::start().await;
    let g = gateway(settings(&fake, &[]), 0).await;
    let mut admin = Client::admin(&g.url()).await;
    admin.call("sessions.subscribe", json!({})).await;
    let (chat, user) = alice();
    fake.push(UserMessage::text(
        &chat,
        &user,
        &format!("leaked {DEFAULT_TOKEN} here"),
    ));
    // The agent sees what the plugin saw: the host scrubbed the token from
    // the getUpdates answer before the guest read it.
    let key = format!("agent:main:telegram:direct:{}", chat.id);
    let e = admin
        .event(move |e| {
            e["event"] == "chat"
                && e["payload"]["sessionKey"] == key.as_str()
                && e["payload"]["state"] == "final"
        })
        .await;
    let text = e["payload"]["message"]["content"].to_string();
    assert!(!text.contains(DEFAULT_TOKEN), "{text}");
    assert!(text.contains("{{secret:bot_token}}"), "{text}");
    assert!(kv_values(&g).iter().all(|v| !v.contains(DEFAULT_TOKEN)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_answers_a_dm_and_refuses_pushes_without_the_secret() {
    let fake = FakeTelegram::start().await;
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/channels/telegram/webhook");
    let g = gateway(
        settings(&fake, &[("mode", "webhook"), ("webhook_url", &hook)]),
        port,
    )
    .await;
    let set = fake.wait_for_calls("setWebhook", 1).await.remove(0);
    assert_eq!(set.params["url"], hook.as_str());
    assert_eq!(set.params["allowed_updates"], json!(["message"]));
    // The host generated the secret and filled it into the body field.
    let secret =
        std::fs::read_to_string(g.dir.path().join("secrets/telegram/webhook_secret")).unwrap();
    let secret = secret.trim();
    assert_eq!(set.params["secret_token"], secret);
    assert!(!secret.contains("{{"));

    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "via webhook"));
    wait_texts(&fake, chat.id, &["via webhook"]).await;
    let delivery = &fake.wait_for_deliveries(1).await[0];
    assert_eq!(delivery.update_id, pushed.update_id);
    assert_eq!(fake.calls_of("getUpdates").len(), 0);

    // Spoofed pushes: missing header 401, wrong header 403, never processed.
    let spoof = json!({"update_id": 5, "message": {"message_id": 1, "date": 1,
        "chat": {"id": 666, "type": "private", "first_name": "M"},
        "from": {"id": 666, "is_bot": false, "first_name": "M"}, "text": "spoofed"}});
    let http = reqwest::Client::new();
    let post = |header: Option<&str>| {
        let mut r = http.post(&hook).json(&spoof);
        if let Some(h) = header {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", h);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong-secret")).await.unwrap().status(), 403);
    // A later genuine message is answered; the spoofed ones never were.
    fake.push(UserMessage::text(&chat, &user, "second"));
    wait_texts(&fake, chat.id, &["via webhook", "second"]).await;
    assert!(fake.sent(666).is_empty());
    let mut admin = Client::admin(&g.url()).await;
    let sessions = admin.call("sessions.list", json!({})).await;
    assert!(
        !sessions.to_string().contains("telegram:direct:666"),
        "a session exists for the spoofed chat: {sessions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_completes_while_a_long_get_updates_is_open() {
    let fake = FakeTelegram::start().await;
    // The first long poll hangs until the test lets it go.
    fake.fail_next("getUpdates", 1, TgFault::Hang);
    let g = gateway(settings(&fake, &[]), 0).await;
    fake.wait_for_hanging(1).await;
    let (chat, _) = alice();
    fake.add_chat(&chat);
    let id = g
        .gw()
        .runtime
        .channels
        .send(
            "telegram",
            OutboundMessage {
                conversation: chat.id.to_string(),
                thread: None,
                text: "while polling".into(),
                format: TextFormat::Plain,
                reply_to: None,
                attachments: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert!(id.starts_with("4242:"), "{id}");
    assert_eq!(fake.sent_texts(chat.id), ["while polling"]);
    // The poll was still open the whole time.
    assert_eq!(fake.hanging(), 1);
    assert_eq!(fake.calls_of("getUpdates").len(), 1);
    fake.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_polls_wait_retry_after() {
    let fake = FakeTelegram::start().await;
    fake.fail_next("getUpdates", 1, TgFault::RetryAfter(2));
    let _g = gateway(settings(&fake, &[]), 0).await;
    let calls = fake.wait_for_calls("getUpdates", 1).await;
    assert_eq!(calls[0].status, Some(429));
    fake.wait_for_pollers(1).await;
    let calls = fake.calls_of("getUpdates");
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "polled again after {gap:?}, before retry_after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_back_off_and_say_which_conflict() {
    let fake = FakeTelegram::start().await;
    fake.fail_next("getUpdates", 3, TgFault::Conflict);
    let g = gateway(settings(&fake, &[]), 0).await;
    fake.wait_for_calls("getUpdates", 3).await;
    fake.wait_for_pollers(1).await;
    // Three conflicts and one open poll: no retries inside the plugin, no
    // tight loop in the host (each retry waited for the backoff).
    let calls = fake.calls_of("getUpdates");
    assert_eq!(calls.len(), 4);
    for pair in calls.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(500));
    }
    let status = g.gw().runtime.channels.get("telegram").unwrap().status();
    let err = format!("{status:?}");
    assert!(err.contains("another getUpdates poller"), "{err}");
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
async fn pairing_an_unknown_sender_through_telegram() {
    let fake = FakeTelegram::start().await;
    let g = gateway(
        PluginSettings {
            dm_policy: DmPolicy::Pairing,
            ..settings(&fake, &[])
        },
        0,
    )
    .await;
    let (chat, user) = alice();
    fake.push(UserMessage::text(&chat, &user, "let me in"));
    let sent = fake.wait_for_sent(chat.id, 1).await;
    let notice = sent[0]["text"].as_str().unwrap().to_string();
    let code = pairing_code(&notice).unwrap_or_else(|| panic!("no code in {notice:?}"));
    let mut admin = Client::admin(&g.url()).await;
    let ok = admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "telegram", "code": code}),
        )
        .await;
    assert_eq!(ok["approved"]["sender"], "4242", "{ok}");
    fake.push(UserMessage::text(&chat, &user, "thanks"));
    wait_texts(&fake, chat.id, &[notice.as_str(), "thanks"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_the_agent_answers_only_when_addressed() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(
        PluginSettings {
            group_policy: GroupPolicy::Open,
            ..settings(&fake, &[])
        },
        0,
    )
    .await;
    let group = Chat::supergroup(-100_555, "Team");
    let bob = User::new(77, "Bob");
    // Pushed in order and delivered in order: by the time the mention is
    // answered, the other messages were already judged.
    fake.push(UserMessage::text(&group, &bob, "just chatting"));
    fake.push(UserMessage::text(&group, &bob, "/start@other_bot"));
    fake.push(UserMessage::text(&group, &bob, "@someone_else hi"));
    fake.push(UserMessage::text(
        &group,
        &bob,
        &format!("@{} what now", fake.username()),
    ));
    let mention = format!("@{} what now", fake.username());
    wait_texts(&fake, group.id, &[mention.as_str()]).await;
    let answer_id = fake.sent(group.id)[0]["message_id"].as_i64().unwrap();
    // A reply to the bot's message counts as addressing it.
    fake.push(UserMessage::text(&group, &bob, "and then?").reply_to(answer_id));
    wait_texts(&fake, group.id, &[mention.as_str(), "and then?"]).await;
    let command = format!("/help@{}", fake.username());
    fake.push(UserMessage::text(&group, &bob, &command));
    wait_texts(
        &fake,
        group.id,
        &[mention.as_str(), "and then?", command.as_str()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lands_in_its_forum_topic() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(
        PluginSettings {
            group_policy: GroupPolicy::Open,
            ..settings(&fake, &[])
        },
        0,
    )
    .await;
    let forum = Chat::forum(-100_777, "Forum");
    let bob = User::new(77, "Bob");
    fake.push(
        UserMessage::text(&forum, &bob, &format!("@{} in topic", fake.username())).in_topic(42),
    );
    let sent = fake.wait_for_sent(forum.id, 1).await;
    assert_eq!(sent[0]["message_thread_id"], 42, "{}", sent[0]);
    let call = fake.calls_of("sendMessage").remove(0);
    assert_eq!(call.params["message_thread_id"], 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_character_answer_arrives_in_order_within_the_limit() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(settings(&fake, &[]), 0).await;
    let (chat, user) = alice();
    let words: Vec<String> = (0..1_700).map(|i| format!("w{i:04}")).collect();
    let text: String = words.join(" ");
    assert!(text.chars().count() >= 10_000);
    fake.push(UserMessage::text(&chat, &user, &text));
    // Wait until the whole answer is there (streamed edits settle into it).
    let want: String = text.split_whitespace().collect();
    let parts = fake
        .wait_until("the whole answer", || {
            let texts = fake.sent_texts(chat.id);
            let joined: String = texts.concat().split_whitespace().collect();
            (joined.len() >= want.len()).then_some(texts)
        })
        .await;
    assert!(parts.len() >= 3, "{} chunks", parts.len());
    for p in &parts {
        assert!(
            p.chars().count() <= 4096,
            "a chunk of {}",
            p.chars().count()
        );
    }
    let joined: String = parts.concat().split_whitespace().collect();
    assert_eq!(joined, want, "chunks out of order or lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_photo_reaches_the_agent() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(settings(&fake, &[]), 0).await;
    let (chat, user) = alice();
    let png = b"\x89PNG\r\n\x1a\nfake image bytes";
    let file = fake.add_file(png, "cat.png", "image/png");
    fake.push(UserMessage::photo(
        &chat,
        &user,
        &file,
        Some("what is this?"),
    ));
    fake.wait_for_calls("getFile", 1).await;
    // The echo model describes the files it was given: the host fetched the
    // photo through getFile and the file URL, with the token it holds.
    let answer = fake
        .wait_until("an answer describing the photo", || {
            fake.sent_texts(chat.id)
                .into_iter()
                .find(|t| t.contains("image"))
        })
        .await;
    assert!(
        answer.contains("cat.png") || answer.contains("image/"),
        "{answer}"
    );
    let downloads = fake.calls_of("file");
    assert_eq!(downloads.len(), 1, "one download of the photo");
}

/// The calls the host makes less often (or not yet): attachment lookup,
/// typing, and the typed errors of `send` and `edit`, on one instance of
/// the plugin started against the fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_typing_and_typed_errors_through_the_contract() {
    use pincer::plugins::bindings::ChatTarget;
    use pincer::plugins::{Instance, PluginError};

    let fake = FakeTelegram::start().await;
    let g = gateway(settings(&fake, &[]), 0).await;
    let png = b"\x89PNG\r\n\x1a\nfake image bytes".to_vec();
    let file = fake.add_file(&png, "cat.png", "image/png");
    let forum = Chat::forum(-100_777, "Forum");
    fake.add_chat(&forum);
    fake.add_chat(&alice().0);
    let version = g.gw().runtime.plugins.current("telegram").unwrap();
    let config = vec![("api_base".to_string(), fake.base_url().to_string())];
    let fake2 = TelegramBot::clone(&fake);
    let file_id = file.file_id.clone();
    let (download, errors) = g
        .gw()
        .runtime
        .plugins
        .run_call("test", async move {
            let mut inst = Instance::try_new(version).await.unwrap();
            inst.start(&config).await.unwrap();
            let download = inst.fetch_attachment(&file_id).await.unwrap();
            // A live draft in the private chat (stream style `draft`).
            let alice = ChatTarget {
                conversation: "4242".into(),
                thread: None,
                message_id: None,
            };
            inst.draft(&alice, 7, "Thinking *hard*").await.unwrap();
            inst.typing(&ChatTarget {
                conversation: "-100777".into(),
                thread: Some("1".into()),
                message_id: None,
            })
            .await
            .unwrap();
            let msg = |text: &str| OutboundMessage {
                conversation: "-100777".into(),
                thread: Some("1".into()),
                text: text.into(),
                format: TextFormat::Markdown,
                reply_to: None,
                attachments: Vec::new(),
            };
            let mut errors = Vec::new();
            fake2.fail_next(
                "sendMessage",
                1,
                TgFault::Error {
                    code: 400,
                    description: "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0".into(),
                },
            );
            errors.push(inst.send(&msg("a")).await.unwrap_err().plugin_error().cloned());
            fake2.fail_next("sendMessage", 1, TgFault::RetryAfter(3));
            errors.push(inst.send(&msg("b")).await.unwrap_err().plugin_error().cloned());
            let id = inst.send(&msg("**same**")).await.unwrap();
            // The same text again: Telegram says "message is not modified".
            inst.edit("-100777", &id, "**same**", TextFormat::Markdown)
                .await
                .unwrap();
            (download, errors)
        })
        .await
        .unwrap();
    // The download URL carries the placeholder; the host fills it in.
    assert_eq!(
        download.url,
        format!(
            "{}/file/bot{{{{secret:bot_token}}}}/{}",
            fake.base_url(),
            file.file_path
        )
    );
    assert_eq!(download.mime_type.as_deref(), Some("image/png"));
    let bytes = reqwest::get(download.url.replace("{{secret:bot_token}}", DEFAULT_TOKEN))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), png.as_slice());
    let drafts = fake.drafts();
    assert_eq!(drafts.len(), 1);
    assert_eq!((drafts[0].chat_id, drafts[0].draft_id), (4242, 7));
    assert_eq!(drafts[0].text, "Thinking *hard*");
    let typing = fake.calls_of("sendChatAction").remove(0);
    assert_eq!(typing.params["action"], "typing");
    assert_eq!(typing.params["message_thread_id"], 1);
    assert!(
        matches!(errors[0], Some(PluginError::Formatting { .. })),
        "{errors:?}"
    );
    assert!(
        matches!(
            errors[1],
            Some(PluginError::RateLimited {
                retry_after_ms: 3_000,
                ..
            })
        ),
        "{errors:?}"
    );
    // General (thread 1) is omitted when sending.
    let sent = fake.calls_of("sendMessage");
    assert!(
        sent.iter()
            .all(|c| c.params.get("message_thread_id").is_none())
    );
    assert_eq!(fake.sent_texts(forum.id), ["same"]);
    let edit = fake.calls_of("editMessageText").remove(0);
    assert_eq!(edit.status, Some(400));
}

/// A webhook set behind the poller's back (another deployment, a script):
/// getUpdates answers 409, the plugin deletes the webhook, and after the
/// host's backoff polling resumes and messages are answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_set_while_polling_is_deleted_and_polling_resumes() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(settings(&fake, &[]), 0).await;
    fake.wait_for_pollers(1).await;
    let r = reqwest::Client::new()
        .post(format!("{}/setWebhook", fake.api_url()))
        .json(&json!({"url": "https://elsewhere.example.com/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    fake.wait_for_calls("deleteWebhook", 1).await;
    let conflicts = fake
        .calls_of("getUpdates")
        .iter()
        .filter(|c| c.status == Some(409))
        .count();
    assert!(conflicts >= 1, "no 409 seen");
    let (chat, user) = alice();
    fake.push(UserMessage::text(&chat, &user, "still here?"));
    wait_texts(&fake, chat.id, &["still here?"]).await;
    assert_eq!(fake.webhook_url(), None);
}

/// Webhook mode is declared to the host once the channel is started with
/// its config: no poll loop runs (no `getUpdates`, no watch), the health
/// shows `webhook`, and a restart sets a lost webhook again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_is_declared_runs_no_poll_loop_and_a_restart_sets_a_lost_webhook_again() {
    let fake = FakeTelegram::start().await;
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/channels/telegram/webhook");
    let g = gateway(
        settings(&fake, &[("mode", "webhook"), ("webhook_url", &hook)]),
        port,
    )
    .await;
    fake.wait_for_calls("setWebhook", 1).await;
    let runner = g.gw().runtime.channels.get("telegram").unwrap();
    assert_eq!(
        runner.mode(),
        Some(pincer::plugins::bindings::ReceiveMode::Webhook)
    );
    assert!(
        !runner.receiver_alive().await,
        "no poll loop in webhook mode"
    );
    let (chat, user) = alice();
    fake.push(UserMessage::text(&chat, &user, "pushed"));
    wait_texts(&fake, chat.id, &["pushed"]).await;
    let health = g.gw().runtime.health.snapshot().await;
    let h = health.iter().find(|h| h.name == "telegram").unwrap();
    assert_eq!(h.mode, "webhook");
    assert!(fake.calls_of("getUpdates").is_empty());
    assert!(fake.calls_of("getWebhookInfo").is_empty(), "nothing polls");
    // Someone deletes the webhook; a restart sets it again.
    let r = reqwest::Client::new()
        .post(format!("{}/deleteWebhook", fake.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.webhook_url(), None);
    g.gw()
        .runtime
        .health
        .restart_channel("telegram")
        .await
        .unwrap();
    assert_eq!(fake.webhook_url().as_deref(), Some(hook.as_str()));
    assert!(!runner.receiver_alive().await);
    fake.push(UserMessage::text(&chat, &user, "back"));
    wait_texts(&fake, chat.id, &["pushed", "back"]).await;
    assert!(fake.calls_of("getUpdates").is_empty());
}

/// A token Telegram rejects makes `start` fail with an auth error that
/// says which secret to fix; nothing is polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_an_auth_error_naming_the_secret() {
    use pincer::plugins::{Instance, PluginError};

    let fake = FakeTelegram::start().await;
    let mut s = settings(&fake, &[]);
    s.secrets.insert(
        "bot_token".into(),
        SecretSource::Value("999:not-a-known-token".into()),
    );
    let g = gateway(s, 0).await;
    let version = g.gw().runtime.plugins.current("telegram").unwrap();
    let config = vec![("api_base".to_string(), fake.base_url().to_string())];
    let err = g
        .gw()
        .runtime
        .plugins
        .run_call("test", async move {
            let mut inst = Instance::try_new(version).await.unwrap();
            inst.start(&config).await.unwrap_err()
        })
        .await
        .unwrap();
    match err.plugin_error() {
        Some(PluginError::Auth { message }) => assert!(message.contains("bot_token"), "{message}"),
        other => panic!("expected an auth error, got {other:?} ({err})"),
    }
    assert!(fake.calls_of("getUpdates").is_empty());
    // The gateway itself keeps serving.
    let mut admin = Client::admin(&g.url()).await;
    let status = admin.call("channels.status", json!({})).await;
    assert!(status["channels"]["telegram"].is_object(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_bots_start_no_run() {
    let fake = FakeTelegram::start().await;
    let _g = gateway(settings(&fake, &[]), 0).await;
    let (chat, user) = alice();
    // Another bot writes first (answering bots loops); then a person. The
    // poll delivers both in order, so once the person is answered the bot's
    // message has been seen and passed over.
    let bot = User::new(777, "Robo").username("robo_bot").bot();
    fake.push(UserMessage::text(&chat, &bot, "beep from a bot"));
    fake.push(UserMessage::text(&chat, &user, "hello from a person"));
    // Per conversation, messages are handled in order: had the bot's been
    // answered, its echo would come first and this wait would fail.
    wait_texts(&fake, chat.id, &["hello from a person"]).await;
}
