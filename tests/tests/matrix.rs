//! The Matrix channel (`plugins/matrix`, issue 12 section 4) against a real
//! Synapse homeserver (`pincer_tests::synapse`, no fake): the plugin built
//! from source, a real gateway on loopback, the echo agent answering with
//! the user's text. DMs and rooms, invites joined per `auto_join`, mentions
//! in rooms, streaming by `m.replace` edits, encrypted rooms, inbound
//! media, and sends that are retried (by the outbox or after kill -9) never
//! posting twice thanks to `pincer:delivery`'s idempotency key as the
//! transaction id.

use std::path::Path;
use std::time::Duration;

use pincer::channels::QueueSettings;
use pincer::channels::access::{DmPolicy, GroupPolicy};
use pincer::gateway::launch::Options;
use pincer::plugins::bindings::{OutboundMessage, TextFormat};
use pincer::plugins::manifest::SecretSource;
use pincer::plugins::{Limits, PluginSettings};
use pincer_tests::gateway::{ChildGateway, TestGateway};
use pincer_tests::synapse::{MatrixUser, Synapse};
use serde_json::json;

/// Install the matrix plugin built from source into `plugins`, its
/// manifest's hosts widened to loopback (a secret is only filled in for the
/// manifest's own hosts).
fn install(plugins: &Path) {
    std::fs::create_dir_all(plugins).unwrap();
    let wasm = pincer_tests::built_plugin("matrix");
    std::fs::copy(&wasm, plugins.join("matrix.wasm")).unwrap();
    let manifest = std::fs::read_to_string(wasm.with_extension("toml")).unwrap();
    let widened = manifest.replace(
        r#"allowed_hosts = ["https://matrix.example.org"]"#,
        r#"allowed_hosts = ["http://127.0.0.1:*"]"#,
    );
    assert_ne!(manifest, widened, "the manifest's allowed_hosts line moved");
    std::fs::write(plugins.join("matrix.toml"), widened).unwrap();
}

/// Operator settings for `bot` on `homeserver`: open DMs and groups
/// (`require_mention` stays on), `auto_join` as given.
fn settings(homeserver: &str, bot: &str, token: &str, auto_join: &str) -> PluginSettings {
    PluginSettings {
        allowed_hosts: Some(vec!["http://127.0.0.1:*".into()]),
        secrets: [(
            "access_token".to_string(),
            SecretSource::Value(token.into()),
        )]
        .into(),
        config: [
            ("homeserver".to_string(), homeserver.to_string()),
            ("user_id".to_string(), bot.to_string()),
            ("auto_join".to_string(), auto_join.to_string()),
        ]
        .into(),
        dm_policy: DmPolicy::Open,
        group_policy: GroupPolicy::Open,
        limits: Some(Limits {
            poll_wait_ms: 5_000,
            ..Default::default()
        }),
        queue: QueueSettings {
            send_interval_ms: 1,
            send_burst: 1000,
            retry_base_ms: 20,
            retry_max_ms: 500,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn options(dir: &Path, settings: PluginSettings) -> Options {
    install(&dir.join("plugins"));
    let mut opts = Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().unwrap();
    opts.watch_settle = Duration::from_millis(100);
    opts.allow_cidrs = pincer::netguard::NetGuard::parse_cidrs("127.0.0.0/8").unwrap();
    opts.gateway.runs.sender_per_minute = u32::MAX;
    opts.gateway.runs.sender_burst = u32::MAX;
    opts.plugins.insert("matrix".into(), settings);
    opts
}

/// A homeserver with a bot (display name `Pincer`) and a user `alice`.
async fn homeserver() -> (Synapse, MatrixUser, MatrixUser) {
    let hs = Synapse::start().await;
    eprintln!("synapse answered {:?} after spawning", hs.started_in);
    let bot = hs.register("pincerbot").await;
    bot.set_display_name("Pincer").await;
    let alice = hs.register("alice").await;
    (hs, bot, alice)
}

/// A gateway serving the matrix channel for `bot`.
async fn gateway(hs: &Synapse, bot: &MatrixUser, auto_join: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(
        dir.path(),
        settings(&hs.base, &bot.user_id, &bot.token, auto_join),
    );
    TestGateway::start_with(opts, dir).await
}

/// Wait until `user` is joined to `room` (seen by `watcher`).
async fn wait_joined(watcher: &MatrixUser, room: &str, user: &str) {
    watcher
        .wait_until(&format!("{user} joined {room}"), || async {
            (watcher.membership(room, user).await.as_deref() == Some("join")).then_some(())
        })
        .await
}

/// Wait until `bot` shows `n` messages in `room` whose latest text
/// satisfies `done`; returns them.
async fn wait_bot_messages(
    watcher: &MatrixUser,
    room: &str,
    bot: &str,
    what: &str,
    done: impl Fn(&[pincer_tests::synapse::Shown]) -> bool,
) -> Vec<pincer_tests::synapse::Shown> {
    watcher
        .wait_until(what, || async {
            let shown = watcher.shown_messages(room, bot).await;
            done(&shown).then_some(shown)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_invite_is_joined_and_the_dm_answered_as_a_formatted_reply() {
    let (hs, bot, alice) = homeserver().await;
    let g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let asked = alice.send_text(&room, "hello **there**").await;
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "the answer", |s| {
        s.len() == 1 && s[0].body() == "hello **there**"
    })
    .await;
    let answer = &shown[0];
    // Markdown as org.matrix.custom.html, in reply to the question.
    assert_eq!(answer.content["format"], "org.matrix.custom.html");
    assert_eq!(answer.content["formatted_body"], "hello <b>there</b>");
    assert_eq!(
        answer.original["m.relates_to"]["m.in_reply_to"]["event_id"],
        asked.as_str()
    );
    // A read receipt on the question (the room's receipts in a fresh sync).
    let filter = pincer_tests::synapse::seg(
        &json!({"room": {"rooms": [room], "timeline": {"limit": 1}}}).to_string(),
    );
    alice
        .wait_until("the bot's read receipt on the question", || async {
            let v = alice
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
                    None,
                )
                .await;
            let events = v["rooms"]["join"][&room]["ephemeral"]["events"].clone();
            events
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["type"] == "m.receipt"
                        && e["content"][&asked]["m.read"][&bot.user_id].is_object()
                })
                .then_some(())
        })
        .await;
    // The inbound message was committed with the room as a direct chat,
    // and the token never reached the plugin's storage.
    let kv = g.gw().runtime.plugins.kv();
    for k in kv.list_keys("matrix", "", 10_000).unwrap() {
        let v = kv.get("matrix", &k).unwrap().unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&v).contains(&bot.token),
            "the access token is in the plugin's kv ({k})"
        );
    }
    assert_eq!(
        kv.get("matrix", &format!("dm:{room}")).unwrap().as_deref(),
        Some(alice.user_id.as_bytes()),
        "the direct invite was not remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_member_room_is_a_direct_chat() {
    let (hs, bot, alice) = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    // Groups closed (allowlist, nobody listed): only a direct chat answers.
    let mut s = settings(&hs.base, &bot.user_id, &bot.token, "all");
    s.group_policy = GroupPolicy::Allowlist;
    let _g = TestGateway::start_with(options(dir.path(), s), dir).await;
    // Not marked direct, but only alice and the bot are in it.
    let room = alice.create_room(&[&bot.user_id], false, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    alice.send_text(&room, "just us two").await;
    wait_bot_messages(&alice, &room, &bot.user_id, "the answer", |s| {
        s.iter().any(|m| m.body() == "just us two")
    })
    .await;
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
async fn a_dm_under_pairing_is_answered_after_approval() {
    let (hs, bot, alice) = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&hs.base, &bot.user_id, &bot.token, "direct");
    s.dm_policy = DmPolicy::Pairing;
    let mut opts = options(dir.path(), s);
    opts.gateway.token = Some("secret".into());
    let g = TestGateway::start_with(opts, dir).await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    alice.send_text(&room, "let me in").await;
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "the pairing code", |s| {
        !s.is_empty()
    })
    .await;
    let notice = shown[0].body().to_string();
    let code = pairing_code(&notice).unwrap_or_else(|| panic!("no code in {notice:?}"));
    let mut admin = pincer_tests::gateway::Client::admin(&g.url()).await;
    let ok = admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "matrix", "code": code}),
        )
        .await;
    assert_eq!(ok["approved"]["sender"], alice.user_id.as_str(), "{ok}");
    alice.send_text(&room, "thanks").await;
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "the answer", |s| {
        s.iter().any(|m| m.body() == "thanks")
    })
    .await;
    assert_eq!(shown.len(), 2, "{shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_skips_history() {
    let (hs, bot, alice) = homeserver().await;
    let mut g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    g.stop().await;
    alice.send_text(&room, "sent while no gateway ran").await;
    // A gateway with a fresh store (no cursor): what was sent before it
    // started is history. A new invite joined proves its poll loop runs.
    let _g = gateway(&hs, &bot, "direct").await;
    let probe = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &probe, &bot.user_id).await;
    alice.send_text(&room, "sent after the start").await;
    let shown = wait_bot_messages(
        &alice,
        &room,
        &bot.user_id,
        "the new message answered",
        |s| s.iter().any(|m| m.body() == "sent after the start"),
    )
    .await;
    assert_eq!(shown.len(), 1, "history was answered: {shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_answer_mentions_only_and_invites_follow_auto_join() {
    let (hs, bot, alice) = homeserver().await;
    let carol = hs.register("carol").await;
    let mut g = gateway(&hs, &bot, "direct").await;
    // A room invite is not joined under auto_join = "direct"; a direct one
    // made after it is (and is seen in the same or a later sync).
    let group = alice
        .create_room(&[&bot.user_id, &carol.user_id], false, false)
        .await;
    let dm = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &dm, &bot.user_id).await;
    assert_eq!(
        alice.membership(&group, &bot.user_id).await.as_deref(),
        Some("invite"),
        "a group invite was joined under auto_join = direct"
    );
    g.stop().await;

    // auto_join = "all": the next gateway's first sync finds the invite
    // still pending and joins it; with three members the room is a group,
    // where only the message that mentions the bot is answered.
    let _g = gateway(&hs, &bot, "all").await;
    carol.join(&group).await;
    wait_joined(&alice, &group, &bot.user_id).await;
    let g2_room = group;
    alice.send_text(&g2_room, "nobody is asked here").await;
    let mentioned = alice
        .send(
            &g2_room,
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "Pincer: are you there",
                "m.mentions": {"user_ids": [bot.user_id]},
            }),
        )
        .await;
    let shown = wait_bot_messages(
        &alice,
        &g2_room,
        &bot.user_id,
        "the mention answered",
        |s| s.iter().any(|m| m.body().contains("are you there")),
    )
    .await;
    assert_eq!(shown.len(), 1, "only the mention is answered: {shown:?}");
    assert_eq!(
        shown[0].original["m.relates_to"]["m.in_reply_to"]["event_id"],
        mentioned.as_str()
    );
    // A thread: the answer goes into it.
    let thread_msg = alice
        .send(
            &g2_room,
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "@pincerbot:localhost in a thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": mentioned, "is_falling_back": true, "m.in_reply_to": {"event_id": mentioned}},
            }),
        )
        .await;
    let shown = wait_bot_messages(&alice, &g2_room, &bot.user_id, "the thread answered", |s| {
        s.iter().any(|m| m.body().contains("in a thread"))
    })
    .await;
    let in_thread = shown
        .iter()
        .find(|m| m.body().contains("in a thread"))
        .unwrap();
    assert_eq!(in_thread.original["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(
        in_thread.original["m.relates_to"]["event_id"],
        mentioned.as_str()
    );
    assert_eq!(
        in_thread.original["m.relates_to"]["m.in_reply_to"]["event_id"],
        thread_msg.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_one_message_whose_last_edit_is_complete() {
    let (hs, bot, alice) = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(
        dir.path(),
        settings(&hs.base, &bot.user_id, &bot.token, "direct"),
    );
    // Word by word, long enough to be edited at least once.
    opts.agent.echo_word_delay_ms = 40;
    let _g = TestGateway::start_with(opts, dir).await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let text: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
    let text = text.join(" ");
    alice.send_text(&room, &text).await;
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "the complete answer", |s| {
        s.iter().any(|m| m.body() == text)
    })
    .await;
    assert_eq!(shown.len(), 1, "one message, edited: {shown:?}");
    assert!(shown[0].edits >= 1, "the answer was not streamed by edits");
    assert!(
        shown[0].original["body"].as_str().unwrap().len() < text.len(),
        "the first state was already complete"
    );
    eprintln!("streamed with {} edits", shown[0].edits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_gets_one_notice_and_plain_messages_still_work() {
    let (hs, bot, alice) = homeserver().await;
    let _g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, true).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let encrypted = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnA...",
        "device_id": "ALICEDEV",
        "sender_key": "abc",
        "session_id": "def",
    });
    alice
        .send(&room, "m.room.encrypted", encrypted.clone())
        .await;
    alice.send(&room, "m.room.encrypted", encrypted).await;
    // A plain message after them: once it is answered, both encrypted
    // ones were read.
    alice.send_text(&room, "plain after").await;
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "the plain answer", |s| {
        s.iter().any(|m| m.body() == "plain after")
    })
    .await;
    let notices: Vec<_> = shown
        .iter()
        .filter(|m| m.original["msgtype"] == "m.notice")
        .collect();
    assert_eq!(notices.len(), 1, "one notice per room: {shown:?}");
    assert!(notices[0].body().contains("end-to-end encrypted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_with_its_key_posts_once() {
    let (hs, bot, alice) = homeserver().await;
    let g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let runner = g
        .gw()
        .runtime
        .channels
        .get("matrix")
        .expect("matrix channel");
    let msg = OutboundMessage {
        format: TextFormat::Plain,
        ..OutboundMessage::plain(room.clone(), "only once")
    };
    // The same outbox key twice (a retry after a lost answer): the
    // homeserver takes the transaction once and answers the same event.
    let first = runner.send_keyed(&msg, Some("o4242".into())).await.unwrap();
    let again = runner.send_keyed(&msg, Some("o4242".into())).await.unwrap();
    assert_eq!(first, again);
    // Another key is another message; no key (a direct API send) too.
    let other = runner.send_keyed(&msg, Some("o4243".into())).await.unwrap();
    assert_ne!(first, other);
    let direct = runner.send(&msg).await.unwrap();
    assert_ne!(direct, other);
    let shown = wait_bot_messages(&alice, &room, &bot.user_id, "three messages", |s| {
        s.len() >= 3
    })
    .await;
    let ids: Vec<_> = shown.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), other.as_str(), direct.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_media_is_fetched_through_the_authenticated_endpoint() {
    let (hs, bot, alice) = homeserver().await;
    let g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let bytes = b"%PDF-1.4 pincer test file".to_vec();
    let up: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=doc.pdf",
            hs.base
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "application/pdf")
        .body(bytes.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mxc = up["content_uri"].as_str().expect("content_uri").to_string();
    alice
        .send(
            &room,
            "m.room.message",
            json!({
                "msgtype": "m.file",
                "body": "doc.pdf",
                "filename": "doc.pdf",
                "url": mxc,
                "info": {"mimetype": "application/pdf", "size": bytes.len()},
            }),
        )
        .await;
    // The host asked the plugin for the download (the authenticated media
    // endpoint, the token as a placeholder it filled in), fetched the file
    // and the echo agent describes what it got.
    let want = format!(
        "[document: doc.pdf, application/pdf, {} bytes]",
        bytes.len()
    );
    wait_bot_messages(&alice, &room, &bot.user_id, "the file described", |s| {
        s.iter().any(|m| m.body().contains(&want))
    })
    .await;
    let blobs = g
        .gw()
        .runtime
        .plugins
        .blobs()
        .expect("a blob store")
        .clone();
    assert_eq!(blobs.used_bytes(), bytes.len() as u64);
}

/// Env vars of [`matrix_child`]: data dir, homeserver, bot id, token.
const CHILD_ENV: [&str; 4] = [
    "PINCER_MATRIX_DIR",
    "PINCER_MATRIX_HS",
    "PINCER_MATRIX_BOT",
    "PINCER_MATRIX_TOKEN",
];

/// Not a test: the gateway the kill -9 test starts and kills.
#[test]
#[ignore]
fn matrix_child() {
    let vars: Vec<String> = CHILD_ENV
        .iter()
        .map(|k| std::env::var(k).unwrap_or_default())
        .collect();
    if vars.iter().any(String::is_empty) {
        return;
    }
    pincer_tests::gateway::child_logging();
    let rt = pincer_tests::gateway::child_runtime();
    rt.block_on(async move {
        let mut s = settings(&vars[1], &vars[2], &vars[3], "direct");
        s.queue.send_concurrency = 2;
        let mut opts = options(Path::new(&vars[0]), s);
        opts.agent.echo_word_delay_ms = std::env::var("PINCER_MATRIX_WORD_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let running = pincer_tests::gateway::start(opts).await.unwrap();
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_traffic_loses_and_doubles_nothing() {
    let (hs, bot, alice) = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = CHILD_ENV
        .iter()
        .copied()
        .zip([
            d.as_str(),
            hs.base.as_str(),
            bot.user_id.as_str(),
            bot.token.as_str(),
        ])
        .collect();
    let mut gw = ChildGateway::spawn("matrix_child", &env);
    let mut rooms = Vec::new();
    for _ in 0..4 {
        rooms.push(alice.create_room(&[&bot.user_id], true, false).await);
    }
    for r in &rooms {
        wait_joined(&alice, r, &bot.user_id).await;
    }
    let n = 40;
    let token = |i: usize| format!("q{i:04}");
    for i in 0..n {
        alice
            .send_text(
                &rooms[i % rooms.len()],
                &format!("{} one two three", token(i)),
            )
            .await;
    }
    // Answers per token, counting the bot's messages (an edit is not one).
    let count = || async {
        let mut per = std::collections::BTreeMap::<String, usize>::new();
        for r in &rooms {
            for m in alice.shown_messages(r, &bot.user_id).await {
                let body = m.original["body"].as_str().unwrap_or_default().to_string();
                if let Some(t) = body.split_whitespace().next() {
                    *per.entry(t.to_string()).or_default() += 1;
                }
            }
        }
        per
    };
    let mut kills = 0;
    for point in [n / 4, n / 2] {
        alice
            .wait_until("answers before the kill point", || async {
                (count().await.len() >= point).then_some(())
            })
            .await;
        gw.kill();
        kills += 1;
        let store = pincer_tests::test_store::open(dir.path());
        let doubt = pincer::store::OutboxStore::outbox_in_doubt(&*store, "matrix").unwrap();
        eprintln!("kill {kills}: {} outbox sends in doubt", doubt.len());
        gw = ChildGateway::spawn("matrix_child", &env);
    }
    let per = alice
        .wait_until("every message answered", || async {
            let per = count().await;
            (per.len() >= n).then_some(per)
        })
        .await;
    gw.kill();
    let doubled: Vec<_> = per.iter().filter(|(_, c)| **c > 1).collect();
    assert!(doubled.is_empty(), "answered twice: {doubled:?}");
    for i in 0..n {
        assert_eq!(
            per.get(&token(i)),
            Some(&1),
            "{} answered {:?}",
            token(i),
            per.get(&token(i))
        );
    }
    // Streamed answers end complete.
    for r in &rooms {
        for m in alice.shown_messages(r, &bot.user_id).await {
            assert!(
                m.body().ends_with("one two three"),
                "incomplete: {:?}",
                m.body()
            );
        }
    }
}

/// A kill -9 can cut the send that opens a streamed answer after Synapse
/// took it but before the gateway recorded it. The answer's next attempt
/// must find that message by its transaction id and edit it, never post a
/// second one, whether it sees the answer grow or only complete. The cut
/// is recreated exactly: the open is recorded, the gateway killed, and the
/// record put back to "open in flight" before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_cut_by_a_kill_is_found_by_its_key_not_posted_twice() {
    let (hs, bot, alice) = homeserver().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let env = |delay: &'static str| -> Vec<(&str, String)> {
        CHILD_ENV
            .iter()
            .copied()
            .zip([
                d.clone(),
                hs.base.clone(),
                bot.user_id.clone(),
                bot.token.clone(),
            ])
            .chain([("PINCER_MATRIX_WORD_DELAY_MS", delay.to_string())])
            .collect()
    };
    let spawn = |delay: &'static str| {
        let e = env(delay);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ChildGateway::spawn("matrix_child", &e)
    };
    // Slow words: the answer opens with its first word and stays open.
    let mut gw = spawn("600000");
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    alice.send_text(&room, "k1 alpha beta").await;
    alice
        .wait_until("the answer opened", || async {
            (!alice.shown_messages(&room, &bot.user_id).await.is_empty()).then_some(())
        })
        .await;
    let store = pincer_tests::test_store::open(dir.path());
    let seq = alice
        .wait_until("the open recorded", || async {
            let row = store
                .inbox_pending("matrix", 0, 10)
                .ok()?
                .into_iter()
                .next()?;
            let p: serde_json::Value =
                serde_json::from_str(&store.inbox_progress(row.seq).ok()??).ok()?;
            (p["sending"] == false && !p["done"]["live"].is_null()).then_some(row.seq)
        })
        .await;
    gw.kill();
    // Back to the moment before the open was recorded: in flight.
    let mut p: serde_json::Value =
        serde_json::from_str(&store.inbox_progress(seq).unwrap().unwrap()).unwrap();
    p["done"]["live"] = serde_json::Value::Null;
    p["sending"] = serde_json::Value::Bool(true);
    store.inbox_set_progress(seq, &p.to_string()).unwrap();
    drop(store);
    // The next attempt answers at once.
    let mut gw = spawn("0");
    let shown = alice
        .wait_until("the answer complete", || async {
            let shown = alice.shown_messages(&room, &bot.user_id).await;
            shown
                .iter()
                .any(|m| m.body().ends_with("alpha beta"))
                .then_some(shown)
        })
        .await;
    let store = pincer_tests::test_store::open(dir.path());
    alice
        .wait_until("the message settled", || async {
            store
                .inbox_pending("matrix", 0, 10)
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await;
    gw.kill();
    let shown = {
        let now = alice.shown_messages(&room, &bot.user_id).await;
        if now.len() >= shown.len() { now } else { shown }
    };
    let bodies: Vec<&str> = shown.iter().map(|m| m.body()).collect();
    assert_eq!(bodies.len(), 1, "one message, edited: {bodies:?}");
    assert!(bodies[0].ends_with("k1 alpha beta"), "{bodies:?}");
}

/// A reply with a file: the host uploads the raw file to the content
/// repository with the token filled in, the plugin posts the text and then
/// an `m.file` event pointing at it, both in the answered message's thread,
/// and the bytes alice downloads are the bytes sent. The same outbox key
/// again (a retry) posts nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_file_is_uploaded_raw_and_posted_after_the_text_once() {
    use pincer::plugins::bindings::{AttachmentKind, OutboundAttachment};
    let (hs, bot, alice) = homeserver().await;
    let g = gateway(&hs, &bot, "direct").await;
    let room = alice.create_room(&[&bot.user_id], true, false).await;
    wait_joined(&alice, &room, &bot.user_id).await;
    let blobs = g
        .gw()
        .runtime
        .plugins
        .blobs()
        .expect("a blob store")
        .clone();
    let pdf: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let blob = blobs
        .put(&pdf, "application/pdf", Some("report.pdf"))
        .await
        .expect("blob");
    let msg = OutboundMessage {
        attachments: vec![OutboundAttachment {
            kind: AttachmentKind::Document,
            blob: blob.handle.clone(),
            file_name: "report.pdf".into(),
            mime_type: "application/pdf".into(),
            size: pdf.len() as u64,
            caption: Some("Q3 report".into()),
        }],
        format: TextFormat::Plain,
        ..OutboundMessage::plain(room.clone(), "here it is")
    };
    let runner = g
        .gw()
        .runtime
        .channels
        .get("matrix")
        .expect("matrix channel");
    let first = runner
        .send_keyed(&msg, Some("o7001".into()))
        .await
        .expect("sent");
    let again = runner
        .send_keyed(&msg, Some("o7001".into()))
        .await
        .expect("sent again");
    assert_eq!(first, again, "a retry answers the same event");
    let events = alice
        .wait_until("the text and the file", || async {
            let mine: Vec<serde_json::Value> = alice
                .messages(&room)
                .await
                .into_iter()
                .filter(|e| e["sender"] == bot.user_id.as_str())
                .collect();
            (mine.len() >= 2).then_some(mine)
        })
        .await;
    assert_eq!(events.len(), 2, "posted once: {events:#?}");
    assert_eq!(events[0]["content"]["body"], "here it is");
    let file = &events[1]["content"];
    assert_eq!(file["msgtype"], "m.file");
    assert_eq!(file["body"], "Q3 report");
    assert_eq!(file["filename"], "report.pdf");
    assert_eq!(file["info"]["mimetype"], "application/pdf");
    let mxc = file["url"].as_str().expect("an mxc url");
    let (server, media) = mxc
        .strip_prefix("mxc://")
        .and_then(|r| r.split_once('/'))
        .expect("mxc://server/id");
    let got = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media}",
            hs.base
        ))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), 200);
    let ctype = got
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("application/pdf"), "{ctype}");
    assert_eq!(got.bytes().await.expect("body").as_ref(), pdf.as_slice());
}
