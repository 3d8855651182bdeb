//! The guest side of `pincer:plugin@0.2.0`: plugins built from source with
//! the 0.2.0 SDK, loaded by the real host (wasmtime sandboxes, SQLite store).
//! An echo built against 0.1.0 and one built against 0.2.0 load and work side
//! by side; the 0.2.0 echo's ids come from the atomic `kv.increment`, so
//! concurrent id-less pushes never collide; the test channel hands its
//! cursor to the host and redelivers from an old one, carries conversation
//! facts, and every new channel operation and error kind crosses the contract.

use std::collections::BTreeSet;
use std::sync::Arc;

use pincer::channels::ChannelState;
use pincer::health::HealthConfig;
use pincer::plugins::bindings::{
    AttachmentKind, ChatTarget, ChatType, InboundMessage, OutboundAttachment, OutboundMessage,
    StreamStyle, TextFormat, WebhookRequest,
};
use pincer::plugins::{Instance, PluginError, PluginSettings, PluginVersion, RuntimeConfig};
use pincer_tests::{TestRuntime, install_plugin};
use serde_json::{Value, json};

fn open_to_anyone() -> PluginSettings {
    PluginSettings {
        dm_policy: pincer::channels::access::DmPolicy::Open,
        ..Default::default()
    }
}

fn runtime(open: &[&str]) -> TestRuntime {
    let settings = open
        .iter()
        .map(|name| (name.to_string(), open_to_anyone()))
        .collect();
    TestRuntime::new(
        RuntimeConfig {
            settings,
            ..Default::default()
        },
        HealthConfig::default(),
    )
}

fn push(body: Value) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: body.to_string().into_bytes(),
        verified: None,
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

fn kv_set(t: &TestRuntime, plugin: &str, key: &str, value: &str) {
    t.runtime
        .plugins
        .kv()
        .set(plugin, key, value.as_bytes())
        .expect("kv set");
}

fn kv_get(t: &TestRuntime, plugin: &str, key: &str) -> Option<String> {
    t.runtime
        .plugins
        .kv()
        .get(plugin, key)
        .expect("kv get")
        .map(|b| String::from_utf8(b).expect("utf-8"))
}

fn kv_keys(t: &TestRuntime, plugin: &str, prefix: &str) -> Vec<String> {
    t.runtime
        .plugins
        .kv()
        .list_keys(plugin, prefix, 1000)
        .expect("kv keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_built_against_0_1_0_and_0_2_0_both_load_and_work() {
    let t = runtime(&["echo", "echo-v01"]);
    install_plugin(&t.plugins_dir(), "echo", "echo");
    install_plugin(&t.plugins_dir(), "echo-v01", "echo-v01");
    let failures = t.runtime.load_dir().await.expect("load");
    assert!(failures.is_empty(), "{failures:?}");
    let mut inbound = t.runtime.channels.subscribe_inbound();
    for name in ["echo", "echo-v01"] {
        let runner = t.runtime.channels.get(name).expect("runner");
        assert_eq!(runner.status().state, ChannelState::Running, "{name}");
        let caps = t.runtime.plugins.current(name).expect("loaded");
        let caps = caps.channel_capabilities().expect("a channel");
        assert!(caps.edit, "{name}: {caps:?}");
        assert_eq!(caps.max_message_length, 4096, "{name}");

        // A push becomes an inbound message.
        let resp = t
            .runtime
            .channels
            .webhook(
                name,
                push(json!({"conversation": "c1", "sender": "u1", "text": format!("hi {name}"), "id": format!("{name}-m1")})),
            )
            .await
            .expect("webhook");
        assert_eq!(resp.status, 200, "{name}");
        let m = inbound.recv().await.expect("inbound");
        assert_eq!(
            (m.channel.as_str(), m.id.as_str(), m.text.as_str()),
            (
                name,
                format!("{name}-m1").as_str(),
                format!("hi {name}").as_str()
            )
        );

        // A send is stored under the id it returned; an edit replaces it.
        let id = t
            .runtime
            .channels
            .send(name, OutboundMessage::plain("c1", "hi back"))
            .await
            .expect("send");
        let key = format!("sent/{id}");
        let stored: Value = json_of(kv_get(&t, name, &key).expect("stored").as_bytes());
        assert_eq!(
            (stored["text"].clone(), stored["edited"].clone()),
            (json!("hi back"), json!(false))
        );
        t.runtime
            .channels
            .edit(name, "c1", &id, "edited")
            .await
            .expect("edit");
        let stored: Value = json_of(kv_get(&t, name, &key).expect("stored").as_bytes());
        assert_eq!(
            (stored["text"].clone(), stored["edited"].clone()),
            (json!("edited"), json!(true))
        );
    }

    // Each runs its own contract: only the 0.2.0 echo knows chat types, so
    // only it refuses a bad one.
    let bad = json!({"conversation": "c2", "text": "x", "chat_type": "bogus"});
    let new = t
        .runtime
        .channels
        .webhook("echo", push(bad.clone()))
        .await
        .expect("webhook");
    assert_eq!(new.status, 400, "{}", String::from_utf8_lossy(&new.body));
    let old = t
        .runtime
        .channels
        .webhook("echo-v01", push(bad))
        .await
        .expect("webhook");
    assert_eq!(old.status, 200, "{}", String::from_utf8_lossy(&old.body));
}

/// Issue 9: the 0.1.0 echo drew ids with a read-then-write, and 933 of 2,000
/// concurrent id-less pushes got an id already taken (then dropped as
/// duplicates). The 0.2.0 echo draws them with `kv.increment`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_id_less_pushes_to_echo_all_get_distinct_ids() {
    const PUSHES: usize = 2_000;
    let t = runtime(&["echo"]);
    install_plugin(&t.plugins_dir(), "echo", "echo");
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let mut inbound = t.runtime.channels.subscribe_inbound();
    let pushes: Vec<_> = (0..PUSHES)
        .map(|i| {
            let rt = t.runtime.clone();
            tokio::spawn(async move {
                // As a platform does: a push answered "busy" (503 with
                // Retry-After: every instance in use) is sent again.
                let resp = loop {
                    match rt
                        .channels
                        .webhook(
                            "echo",
                            push(
                                json!({"conversation": format!("c{}", i % 7), "text": format!("m{i}")}),
                            ),
                        )
                        .await
                    {
                        Err(pincer::channels::ChannelError::Call {
                            error: pincer::plugins::CallError::Busy { retry_after_ms, .. },
                            ..
                        }) => {
                            tokio::time::sleep(std::time::Duration::from_millis(retry_after_ms))
                                .await
                        }
                        other => break other.expect("webhook"),
                    }
                };
                assert_eq!(resp.status, 200);
                json_of(&resp.body)["id"]
                    .as_str()
                    .expect("an id")
                    .to_string()
            })
        })
        .collect();
    let mut answered = BTreeSet::new();
    for p in pushes {
        answered.insert(p.await.expect("task"));
    }
    assert_eq!(answered.len(), PUSHES, "every push got its own id");
    let mut arrived = BTreeSet::new();
    while arrived.len() < PUSHES {
        let m = inbound.recv().await.expect("no inbound message lost");
        assert!(answered.contains(&m.id), "{m:?}");
        assert!(arrived.insert(m.id.clone()), "delivered twice: {m:?}");
    }
    assert_eq!(
        kv_get(&t, "echo", "next_id").as_deref(),
        Some(PUSHES.to_string().as_str()),
        "the counter is plain decimal text"
    );
}

/// Load `name` (already installed) without starting its channel runner and
/// return a started instance, so the test alone calls into it.
async fn bare_instance(
    t: &TestRuntime,
    name: &str,
    config: &[(&str, &str)],
) -> (Arc<PluginVersion>, Instance) {
    t.runtime
        .plugins
        .load_file(&t.plugins_dir().join(format!("{name}.wasm")))
        .await
        .expect("load");
    let version = t.runtime.plugins.current(name).expect("loaded");
    let mut instance = Instance::new(version.clone()).await.expect("instance");
    let config: Vec<(String, String)> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    instance.start(&config).await.expect("start");
    (version, instance)
}

fn ids(messages: &[InboundMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testchan_hands_its_cursor_to_the_host_and_redelivers_from_an_old_one() {
    let t = runtime(&[]);
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    let (_, mut chan) = bare_instance(&t, "testchan", &[]).await;

    kv_set(
        &t,
        "testchan",
        "inbox",
        r#"[{"id":"a","conversation":"c","text":"1"},{"id":"b","conversation":"c","text":"2"}]"#,
    );
    let first = chan.poll(None, 0).await.expect("poll");
    assert_eq!(ids(&first.messages), ["a", "b"]);
    let c1 = first.cursor.expect("a cursor with the batch");
    assert_eq!(
        kv_get(&t, "testchan", "last_cursor").as_deref(),
        Some("none")
    );
    assert!(
        kv_get(&t, "testchan", "inbox").is_none(),
        "the inbox was taken"
    );

    // Nothing new: an empty batch that keeps the cursor.
    let idle = chan.poll(Some(&c1), 0).await.expect("poll");
    assert!(
        idle.messages.is_empty() && idle.cursor.is_none(),
        "{idle:?}"
    );

    kv_set(
        &t,
        "testchan",
        "inbox",
        r#"[{"id":"c","conversation":"c","text":"3"}]"#,
    );
    let second = chan.poll(Some(&c1), 0).await.expect("poll");
    assert_eq!(
        ids(&second.messages),
        ["c"],
        "only what came after the cursor"
    );
    let c2 = second.cursor.expect("a cursor");
    assert_ne!(c1, c2);
    assert_eq!(kv_get(&t, "testchan", "last_cursor"), Some(c1.clone()));

    // A host that did not commit c2 polls with c1 again: the same batch again.
    let again = chan.poll(Some(&c1), 0).await.expect("poll");
    assert_eq!(ids(&again.messages), ["c"]);
    assert_eq!(again.cursor, Some(c2.clone()));

    // Committed: the batches up to c2 are forgotten, nothing comes back.
    let done = chan.poll(Some(&c2), 0).await.expect("poll");
    assert!(done.messages.is_empty(), "{done:?}");
    assert!(
        kv_keys(&t, "testchan", "log/").is_empty(),
        "committed chunks are pruned"
    );

    // A cursor the channel never gave is refused, not guessed at.
    let err = chan.poll(Some("not-mine"), 0).await.expect_err("refused");
    assert!(
        matches!(err.plugin_error(), Some(PluginError::Permanent { .. })),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testchan_carries_conversation_facts_attachments_and_reactions() {
    let t = runtime(&[]);
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    let (_, mut chan) = bare_instance(&t, "testchan", &[]).await;
    kv_set(
        &t,
        "testchan",
        "inbox",
        &json!([
            {
                "id": "g1", "conversation": "group-7", "text": "@bot look", "sender": "u9",
                "sender_name": "Ada", "chat_type": "group", "thread": "topic-3", "mentioned": true,
                "reply_to": {"id": "b5", "sender": "bot", "text": "earlier", "from_bot_self": true},
                "attachments": [{"kind": "image", "handle": "file-1", "mime_type": "image/png", "size": 1234, "file_name": "a.png"}],
                "timestamp": 1_700_000_000_000u64
            },
            {"id": "r1", "conversation": "d1", "text": "", "sender_is_bot": true, "chat_type": "channel",
             "reply_to": "g1", "reaction": {"message_id": "g1", "emoji": "👍"}},
            {"id": "p1", "conversation": "d1", "text": "plain"}
        ])
        .to_string(),
    );
    let batch = chan.poll(None, 0).await.expect("poll");
    let [g, r, p] = &batch.messages[..] else {
        panic!("three messages: {batch:?}")
    };
    assert_eq!(
        (g.chat_type, g.thread.as_deref(), g.mentioned),
        (ChatType::Group, Some("topic-3"), true)
    );
    assert_eq!(
        (g.sender.as_str(), g.sender_name.as_deref(), g.sender_is_bot),
        ("u9", Some("Ada"), false)
    );
    let reply = g.reply_to.as_ref().expect("a reply");
    assert_eq!(
        (
            reply.id.as_str(),
            reply.sender.as_deref(),
            reply.text.as_deref(),
            reply.from_bot_self
        ),
        ("b5", Some("bot"), Some("earlier"), true)
    );
    let [a] = &g.attachments[..] else {
        panic!("one attachment: {g:?}")
    };
    assert_eq!(a.kind, AttachmentKind::Image);
    assert_eq!(
        (
            a.handle.as_str(),
            a.mime_type.as_deref(),
            a.size,
            a.file_name.as_deref()
        ),
        ("file-1", Some("image/png"), Some(1234), Some("a.png"))
    );
    assert_eq!(g.timestamp, 1_700_000_000_000);
    assert!(g.reaction.is_none());

    assert_eq!(
        (r.chat_type, r.sender_is_bot, r.mentioned),
        (ChatType::Channel, true, false)
    );
    assert_eq!(r.reply_to.as_ref().map(|x| x.id.as_str()), Some("g1"));
    let reaction = r.reaction.as_ref().expect("a reaction");
    assert_eq!(
        (reaction.message_id.as_str(), reaction.emoji.as_str()),
        ("g1", "👍")
    );

    // Without facts: a plain direct chat from `tester`.
    assert_eq!(
        (p.chat_type, p.sender.as_str()),
        (ChatType::Direct, "tester")
    );
    assert!(p.thread.is_none() && p.reply_to.is_none() && p.attachments.is_empty() && !p.mentioned);

    // A malformed message is a typed error, and the inbox is kept for a fix.
    kv_set(
        &t,
        "testchan",
        "inbox",
        r#"[{"id":"x","conversation":"c","text":"t","chat_type":"bogus"}]"#,
    );
    let cursor = batch.cursor.expect("a cursor");
    let err = chan.poll(Some(&cursor), 0).await.expect_err("refused");
    assert!(
        matches!(err.plugin_error(), Some(PluginError::Permanent { message }) if message.contains("bogus")),
        "{err}"
    );
    assert!(
        kv_get(&t, "testchan", "inbox").is_some(),
        "the bad inbox is left in place"
    );
    kv_set(
        &t,
        "testchan",
        "inbox",
        r#"[{"id":"x","conversation":"c","text":"t","chat_type":"group"}]"#,
    );
    let fixed = chan.poll(Some(&cursor), 0).await.expect("poll");
    assert_eq!(ids(&fixed.messages), ["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testchan_operations_and_every_error_kind_cross_the_contract() {
    let t = runtime(&[]);
    install_plugin(&t.plugins_dir(), "testchan", "testchan");
    kv_set(
        &t,
        "testchan",
        "caps",
        r#"{"edit":true,"typing":true,"read_receipts":true,"attachments":true,"max_message_length":4096,"streaming":"draft","min_edit_interval_ms":1500,"typing_ttl_ms":5000}"#,
    );
    let (version, mut chan) = bare_instance(
        &t,
        "testchan",
        &[("attachment_base", "https://files.example/get/")],
    )
    .await;
    let caps = version.channel_capabilities().expect("a channel");
    assert!(
        caps.edit && caps.typing && caps.read_receipts && caps.attachments,
        "{caps:?}"
    );
    assert_eq!(caps.streaming, StreamStyle::Draft);
    assert_eq!(
        (
            caps.max_message_length,
            caps.min_edit_interval_ms,
            caps.typing_ttl_ms
        ),
        (4096, 1500, 5000)
    );

    let id = chan
        .send(&OutboundMessage {
            thread: Some("topic-3".into()),
            format: TextFormat::Markdown,
            reply_to: Some("g1".into()),
            attachments: vec![OutboundAttachment {
                kind: AttachmentKind::Document,
                blob: "blob-1".into(),
                file_name: "report.pdf".into(),
                mime_type: "application/pdf".into(),
                size: 2048,
                caption: Some("the report".into()),
            }],
            ..OutboundMessage::plain("group-7", "**done**")
        })
        .await
        .expect("send");
    assert_eq!(id, "t1");
    chan.edit("group-7", &id, "**done!**", TextFormat::Markdown)
        .await
        .expect("edit");
    let target = ChatTarget {
        conversation: "d1".into(),
        thread: None,
        message_id: Some("p1".into()),
    };
    chan.draft(&target, 9, "thinking").await.expect("draft");
    chan.typing(&target).await.expect("typing");
    chan.mark_read(&target).await.expect("mark-read");
    let download = chan
        .fetch_attachment("file-1")
        .await
        .expect("fetch-attachment");
    assert_eq!(download.url, "https://files.example/get/file-1");

    let out: Vec<Value> = kv_keys(&t, "testchan", "out/")
        .iter()
        .map(|k| json_of(kv_get(&t, "testchan", k).expect("record").as_bytes()))
        .collect();
    let ops: Vec<&str> = out.iter().map(|o| o["op"].as_str().expect("op")).collect();
    assert_eq!(ops, ["send", "edit", "draft", "typing", "mark_read"]);
    let sent = &out[0];
    assert_eq!(
        (
            sent["thread"].clone(),
            sent["format"].clone(),
            sent["reply_to"].clone()
        ),
        (json!("topic-3"), json!("markdown"), json!("g1"))
    );
    assert_eq!(sent["attachments"][0]["blob"], "blob-1");
    assert_eq!(sent["attachments"][0]["caption"], "the report");
    assert_eq!(out[1]["format"], "markdown");
    assert_eq!(
        (out[2]["draft_id"].clone(), out[2]["text"].clone()),
        (json!(9), json!("thinking"))
    );
    assert_eq!(out[4]["message_id"], "p1");

    // Scripted failures come back as the typed errors the host acts on, one
    // per call, and then the operation works again.
    kv_set(
        &t,
        "testchan",
        "fail/send",
        r#"["formatting","rate-limited:1500","transient","permanent","auth","config","unsupported"]"#,
    );
    let mut kinds = Vec::new();
    for _ in 0..7 {
        let err = chan
            .send(&OutboundMessage::plain("c", "x"))
            .await
            .expect_err("scripted failure");
        kinds.push(match err.plugin_error().expect("a typed error") {
            PluginError::Formatting { .. } => "formatting".to_string(),
            PluginError::RateLimited { retry_after_ms, .. } => {
                format!("rate-limited:{retry_after_ms}")
            }
            PluginError::Transient { .. } => "transient".into(),
            PluginError::Permanent { .. } => "permanent".into(),
            PluginError::Auth { .. } => "auth".into(),
            PluginError::Config { .. } => "config".into(),
            PluginError::Unsupported { .. } => "unsupported".into(),
        });
    }
    assert_eq!(
        kinds,
        [
            "formatting",
            "rate-limited:1500",
            "transient",
            "permanent",
            "auth",
            "config",
            "unsupported"
        ]
    );
    assert!(
        kv_get(&t, "testchan", "fail/send").is_none(),
        "the script is used up"
    );
    assert_eq!(
        chan.send(&OutboundMessage::plain("c", "x"))
            .await
            .expect("send"),
        "t2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_operations_a_channel_leaves_out_are_unsupported() {
    let t = runtime(&[]);
    install_plugin(&t.plugins_dir(), "echo", "echo");
    let (_, mut echo) = bare_instance(&t, "echo", &[]).await;
    let target = ChatTarget {
        conversation: "c".into(),
        thread: None,
        message_id: None,
    };
    let unsupported = |r: Result<(), pincer::plugins::CallError>| {
        let err = r.expect_err("unsupported");
        assert!(
            matches!(err.plugin_error(), Some(PluginError::Unsupported { .. })),
            "{err}"
        );
    };
    unsupported(echo.typing(&target).await);
    unsupported(echo.mark_read(&target).await);
    unsupported(echo.draft(&target, 1, "x").await);
    unsupported(echo.fetch_attachment("h").await.map(|_| ()));
    unsupported(echo.poll(None, 0).await.map(|_| ()));
    // The echo is still usable after each refusal (a typed error is not a trap).
    let id = echo
        .send(&OutboundMessage::plain("c", "still here"))
        .await
        .expect("send");
    assert!(id.starts_with("echo-"), "{id}");
}

/// `kv.increment` and the SDK's compare-and-swap loop (`kv::update`) on one
/// counter from many tool instances at once: every call gets its own value
/// and no count is lost. (A loser of a swap retries; it can lose at most once
/// per other caller, within `kv::update`'s 64 attempts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_increment_and_update_from_concurrent_instances_never_lose_a_count() {
    const CALLS: usize = 32;
    let settings = [(
        "hostile".to_string(),
        PluginSettings {
            quotas: pincer::plugins::QuotaSettings {
                max_instances: Some(CALLS),
                ..Default::default()
            },
            ..Default::default()
        },
    )]
    .into();
    let t = TestRuntime::new(
        RuntimeConfig {
            settings,
            ..Default::default()
        },
        HealthConfig::default(),
    );
    install_plugin(&t.plugins_dir(), "hostile", "hostile");
    assert!(t.runtime.load_dir().await.expect("load").is_empty());
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let rt = t.runtime.clone();
            let mode = if i % 2 == 0 {
                "kvincrement"
            } else {
                "kvupdate"
            };
            tokio::spawn(async move {
                let out = rt
                    .plugins
                    .invoke_tool("hostile", &json!({"mode": mode}).to_string())
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: {e}"));
                json_of(out.as_bytes())["value"].as_i64().expect("a value")
            })
        })
        .collect();
    let mut values = BTreeSet::new();
    for c in calls {
        assert!(
            values.insert(c.await.expect("task")),
            "a value handed out twice"
        );
    }
    assert_eq!(values, (1..=CALLS as i64).collect::<BTreeSet<_>>());
    assert_eq!(
        kv_get(&t, "hostile", "counter"),
        Some(CALLS.to_string()),
        "no count lost"
    );
}
