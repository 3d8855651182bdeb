//! The Slack channel (issue 12 section 2) through the real `pincer`
//! gateway on loopback: the `slack` plugin built from source in its
//! wasmtime sandbox, against `pincer::fakes::slack::FakeSlack` playing
//! Slack (signed Events API pushes, the Web API with its `ok: false`
//! errors and 429s, file uploads and downloads).
//!
//! "Nothing processed" is shown without sleeping: after the pushes that
//! must do nothing, a good push is answered, and the fake's record then
//! holds exactly that one answer (the conversation's messages are handled
//! in order). "Refused before the plugin runs" is shown by the plugin's
//! call counter.

use std::time::Duration;

use pincer::channels::access::DmPolicy;
use pincer::fakes::slack::{FakeSlack, Signing, SlackConfig, SlackFault, dm_channel};
use pincer::plugins::PluginError;
use pincer::plugins::bindings::{AttachmentKind, OutboundAttachment, OutboundMessage, TextFormat};
use pincer_tests::fake_slack::SlackRig;

const ADA: &str = "U0ADA0001";
const BOB: &str = "U0BOB0002";
const GENERAL: &str = "C0GENERAL1";

fn text_to(channel: &str, thread: Option<&str>, text: &str) -> OutboundMessage {
    OutboundMessage {
        conversation: channel.into(),
        thread: thread.map(str::to_string),
        text: text.into(),
        format: TextFormat::Plain,
        reply_to: None,
        attachments: Vec::new(),
    }
}

fn bearer(slack: &FakeSlack) -> String {
    format!("Bearer {}", slack.config().bot_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_is_answered_end_to_end_in_mrkdwn_with_the_bot_token_filled_in() {
    let r = SlackRig::start().await;
    let push = r
        .slack
        .dm(ADA, "hello **world** & see [docs](https://x.dev)");
    let answer = r.slack.push(&r.webhook_url(), &push).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let dm = dm_channel(ADA);
    let posted = r.slack.wait_for_posted(&dm, 1).await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    // The echo agent answers with the message; the host asks for Markdown
    // and the plugin renders Slack's mrkdwn (escaping `&`).
    let want = "hello *world* &amp; see <https://x.dev|docs>";
    let reply = r.slack.wait_for_text(&dm, want).await;
    // A DM outside a thread is answered in the DM itself.
    assert_eq!(reply.thread_ts, None, "{:?}", reply.body);
    assert_eq!(reply.body["mrkdwn"], true);

    // start's auth.test and the post carried the real token, filled in by
    // the host (the guest only ever held a placeholder).
    let calls = r.slack.wait_for_calls("chat.postMessage", 1).await;
    assert_eq!(
        calls[0].header("authorization"),
        Some(bearer(&r.slack).as_str())
    );
    assert_eq!(calls[0].status, Some(200));
    assert!(!r.slack.calls_of("auth.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_mention_is_answered_in_its_thread_and_a_reply_in_the_thread_stays_there() {
    let r = SlackRig::start().await;
    let push = r.slack.mention(GENERAL, ADA, "what time is it?", None);
    assert_eq!(r.slack.push(&r.webhook_url(), &push).await.status, 200);
    let posted = r.slack.wait_for_posted(GENERAL, 1).await;
    // The mention starts a thread under the user's message; the mention
    // itself is not part of the text the agent saw.
    assert_eq!(posted[0].thread_ts.as_deref(), Some(push.ts.as_str()));
    let reply = r.slack.wait_for_text(GENERAL, "what time is it?").await;
    assert_eq!(reply.thread_ts.as_deref(), Some(push.ts.as_str()));

    // A later mention inside that thread is answered in the same thread.
    let again = r
        .slack
        .mention(GENERAL, BOB, "and tomorrow?", Some(&push.ts));
    assert_eq!(r.slack.push(&r.webhook_url(), &again).await.status, 200);
    let reply = r.slack.wait_for_text(GENERAL, "and tomorrow?").await;
    assert_eq!(reply.thread_ts.as_deref(), Some(push.ts.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_answered_with_the_challenge() {
    let r = SlackRig::start().await;
    let body = r
        .slack
        .url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    let answer = r
        .slack
        .push_raw(&r.webhook_url(), &body, Signing::Valid, None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON answer");
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // Nothing was posted.
    assert!(r.slack.calls_of("chat.postMessage").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_stale_pushes_are_refused_before_the_plugin_runs() {
    let r = SlackRig::start().await;
    let url = r.webhook_url();
    let before = r.plugin_calls();
    let forged = r.slack.dm(ADA, "forged");
    // The host's verification answers a missing signature 401 and a
    // wrong or stale one 403.
    for (signing, status) in [
        (Signing::WrongSecret, 403),
        (Signing::Missing, 401),
        // Six minutes old: outside Slack's five-minute window.
        (Signing::Stale(360), 403),
    ] {
        let a = r
            .slack
            .push_raw(&url, &forged.body, signing.clone(), None)
            .await;
        assert_eq!(a.status, status, "{signing:?}: {}", a.body);
    }
    // A url_verification with a bad signature gets no challenge either.
    let challenge = r.slack.url_verification("leak-me-not");
    let a = r
        .slack
        .push_raw(&url, &challenge, Signing::WrongSecret, None)
        .await;
    assert_eq!(a.status, 403);
    assert!(!a.body.contains("leak-me-not"), "{}", a.body);
    // The host refused all of them: the plugin was never called.
    assert_eq!(r.plugin_calls(), before);

    // A good push after them is the only thing answered in the DM.
    let good = r.slack.dm(ADA, "genuine");
    assert_eq!(r.slack.push(&url, &good).await.status, 200);
    r.slack.wait_for_text(&dm_channel(ADA), "genuine").await;
    let texts: Vec<String> = r
        .slack
        .posted(&dm_channel(ADA))
        .into_iter()
        .map(|m| m.current)
        .collect();
    assert_eq!(texts, vec!["genuine".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_is_acknowledged_before_the_reply_is_made() {
    let r = SlackRig::start().await;
    // The reply's chat.postMessage hangs until released: the push is
    // answered anyway (the host committed it to the inbox first).
    r.slack.fail_next("chat.postMessage", 1, SlackFault::Hang);
    let push = r.slack.dm(ADA, "quick ack please");
    let answer = r.slack.push(&r.webhook_url(), &push).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    r.slack.wait_for_hanging(1).await;
    assert_eq!(r.slack.posted_count(&dm_channel(ADA)), 0);
    r.slack.resume();
    r.slack
        .wait_for_text(&dm_channel(ADA), "quick ack please")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_or_redelivered_event_is_answered_once() {
    let r = SlackRig::start().await;
    let url = r.webhook_url();
    let dm = dm_channel(ADA);
    let push = r.slack.dm(ADA, "only once");
    assert_eq!(r.slack.push(&url, &push).await.status, 200);
    // Slack retries (it did not see the answer in time): the same bytes,
    // signed again, with X-Slack-Retry-Num 1 and 2.
    for n in 1..=2 {
        let a = r
            .slack
            .push_raw(&url, &push.body, Signing::Valid, Some(n))
            .await;
        assert_eq!(a.status, 200, "retry {n}: {}", a.body);
    }
    // And the same message as another event (Slack sends `message.im` and
    // may redeliver with a new event_id): the message id is the same.
    let mut again = serde_json::from_slice::<serde_json::Value>(&push.body).expect("json");
    again["event_id"] = "Ev0REDELIVERED".into();
    let again = again.to_string().into_bytes();
    assert_eq!(
        r.slack
            .push_raw(&url, &again, Signing::Valid, None)
            .await
            .status,
        200
    );

    // A later message in the same DM is answered after it; by then any
    // duplicate would have been answered too.
    let next = r.slack.dm(ADA, "and then this");
    assert_eq!(r.slack.push(&url, &next).await.status, 200);
    r.slack.wait_for_text(&dm, "and then this").await;
    let texts: Vec<String> = r.slack.posted(&dm).into_iter().map(|m| m.current).collect();
    assert_eq!(
        texts,
        vec!["only once".to_string(), "and then this".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_messages_the_bots_own_and_edits_are_ignored() {
    let r = SlackRig::start().await;
    let url = r.webhook_url();
    let dm = dm_channel(ADA);
    let own = r.slack.config().bot_id.clone();
    for push in [
        // Another bot's message (subtype bot_message).
        r.slack.bot_dm(ADA, "B0OTHERBOT", "beep", true),
        // The bot's own message, echoed back by Slack.
        r.slack.bot_dm(ADA, &own, "my own answer", false),
        // An edit of the user's message.
        r.slack.event(serde_json::json!({"type": "message", "subtype": "message_changed",
            "channel": dm, "channel_type": "im", "ts": "1700000000.000001", "hidden": true,
            "message": {"type": "message", "user": ADA, "text": "edited", "ts": "1699999999.000001"}})),
        // A join in a channel.
        r.slack.event(serde_json::json!({"type": "message", "subtype": "channel_join",
            "channel": GENERAL, "channel_type": "channel", "user": ADA, "text": "<@U0ADA0001> has joined",
            "ts": "1700000000.000002"})),
        // Channel chatter without a mention.
        r.slack.event(serde_json::json!({"type": "message", "channel": GENERAL,
            "channel_type": "channel", "user": ADA, "text": "lunch?", "ts": "1700000000.000003"})),
    ] {
        let a = r.slack.push(&url, &push).await;
        assert_eq!(a.status, 200, "ignored events are acknowledged: {}", a.body);
    }
    let good = r.slack.dm(ADA, "a human");
    assert_eq!(r.slack.push(&url, &good).await.status, 200);
    r.slack.wait_for_text(&dm, "a human").await;
    let all: Vec<String> = r
        .slack
        .posted_all()
        .into_iter()
        .map(|m| m.current)
        .collect();
    assert_eq!(all, vec!["a human".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_edited_by_chat_update_into_the_full_text() {
    let r = SlackRig::start_with(SlackConfig::default(), DmPolicy::Open, &[], |opts| {
        // Word by word, so the answer is still being written when its
        // first message goes out.
        opts.agent.echo_word_delay_ms = 100;
    })
    .await;
    let words: Vec<String> = (0..30).map(|i| format!("w{i:02}")).collect();
    let text = words.join(" ");
    let dm = dm_channel(ADA);
    let push = r.slack.dm(ADA, &text);
    assert_eq!(r.slack.push(&r.webhook_url(), &push).await.status, 200);
    let done = r.slack.wait_for_text(&dm, &text).await;
    // One message, opened with the beginning and edited into the whole.
    assert_eq!(r.slack.posted(&dm).len(), 1);
    assert_ne!(done.text, text, "the first post already had everything");
    assert!(done.updates >= 1);
    let updates = r.slack.calls_of("chat.update");
    assert!(!updates.is_empty());
    for u in &updates {
        assert_eq!(u.params["channel"], dm.as_str());
        assert_eq!(u.params["ts"], done.ts.as_str());
        assert_eq!(u.header("authorization"), Some(bearer(&r.slack).as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_and_the_reply_goes_out_after_retry_after() {
    let r = SlackRig::start().await;
    // Two 429s: the streamed reply's opening post (a live step, which
    // the host drops in favour of the final send) and the final send from
    // the durable outbox, which must wait Retry-After before its retry.
    r.slack
        .fail_next("chat.postMessage", 2, SlackFault::RateLimited(1));
    let push = r.slack.dm(ADA, "after the limit");
    assert_eq!(r.slack.push(&r.webhook_url(), &push).await.status, 200);
    r.slack
        .wait_for_text(&dm_channel(ADA), "after the limit")
        .await;
    let calls = r.slack.calls_of("chat.postMessage");
    let statuses: Vec<Option<u16>> = calls.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [Some(429), Some(429), Some(200)],
        "two refused, then one accepted"
    );
    assert_eq!(calls[1].response["error"], "ratelimited");
    // The outbox waited at least the Retry-After (1 s) before trying again.
    let gap = calls[2].at.duration_since(calls[1].at);
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert_eq!(r.slack.posted(&dm_channel(ADA)).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_errors_become_typed_errors() {
    let r = SlackRig::start().await;
    let mut inst = r.instance().await;
    let cases: [(SlackFault, &str); 6] = [
        (SlackFault::RateLimited(7), "rate-limited 7000"),
        (SlackFault::Error("ratelimited".into()), "rate-limited 1000"),
        (SlackFault::Error("invalid_auth".into()), "auth"),
        (SlackFault::Error("not_authed".into()), "auth"),
        (SlackFault::Error("channel_not_found".into()), "permanent"),
        (SlackFault::Status(503), "transient"),
    ];
    for (fault, want) in cases {
        r.slack.fail_next("chat.postMessage", 1, fault.clone());
        let e = inst
            .send(&text_to(GENERAL, None, "x"))
            .await
            .expect_err("fault");
        let got = match e.plugin_error() {
            Some(PluginError::RateLimited { retry_after_ms, .. }) => {
                format!("rate-limited {retry_after_ms}")
            }
            Some(PluginError::Auth { .. }) => "auth".into(),
            Some(PluginError::Permanent { .. }) => "permanent".into(),
            Some(PluginError::Transient { .. }) => "transient".into(),
            other => panic!("{fault:?}: unexpected {other:?}"),
        };
        assert_eq!(got, want, "{fault:?}: {e}");
    }
    // chat.update's errors are typed the same way.
    r.slack.fail_next(
        "chat.update",
        1,
        SlackFault::Error("message_not_found".into()),
    );
    let e = inst
        .edit(GENERAL, "1.000001", "x", TextFormat::Plain)
        .await
        .expect_err("fault");
    assert!(
        matches!(e.plugin_error(), Some(PluginError::Permanent { .. })),
        "{e}"
    );
    // And the same instance sends again afterwards, in the thread asked.
    let ts = inst
        .send(&text_to(GENERAL, Some("1.000009"), "recovered"))
        .await
        .expect("send");
    let last = r.slack.posted(GENERAL).pop().expect("posted");
    assert_eq!(
        (last.ts.as_str(), last.current.as_str()),
        (ts.as_str(), "recovered")
    );
    assert_eq!(last.thread_ts.as_deref(), Some("1.000009"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_file_is_downloaded_by_the_host_with_the_bot_token() {
    let r = SlackRig::start().await;
    let png = b"\x89PNG\r\n\x1a\nfake slack cat";
    let file = r.slack.add_user_file(png, "image/png", "cat.png");
    let push = r.slack.dm_with_files(ADA, "look at this", &[file]);
    assert_eq!(r.slack.push(&r.webhook_url(), &push).await.status, 200);
    // The echo agent describes the file the host fetched.
    let want = format!(
        "look at this\n[image: cat.png, image/png, {} bytes]",
        png.len()
    );
    let dm = dm_channel(ADA);
    r.slack.wait_for_posted(&dm, 1).await;
    let got = r.slack.wait_for_text(&dm, &crate_escape(&want)).await;
    assert!(got.current.contains("cat.png"));
    let downloads = r.slack.calls_of("file_download");
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert_eq!(downloads[0].status, Some(200));
    assert_eq!(
        downloads[0].header("authorization"),
        Some(bearer(&r.slack).as_str())
    );
}

/// The mrkdwn escaping the plugin applies to `text`.
fn crate_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_file_is_uploaded_and_shared_in_the_thread_with_the_text() {
    let r = SlackRig::start().await;
    let blobs =
        r.g.gw()
            .runtime
            .plugins
            .blobs()
            .expect("a blob store")
            .clone();
    let pdf: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
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
        ..text_to(GENERAL, Some("1700000000.000100"), "here it is")
    };
    r.g.gw()
        .runtime
        .channels
        .send("slack", msg)
        .await
        .expect("sent");
    let shares = r.slack.wait_for_shares(1).await;
    let s = &shares[0];
    assert_eq!(s.channel, GENERAL);
    assert_eq!(s.thread_ts.as_deref(), Some("1700000000.000100"));
    assert_eq!(s.initial_comment.as_deref(), Some("here it is"));
    assert_eq!(s.files.len(), 1);
    let (_, title, name, data) = &s.files[0];
    assert_eq!((title.as_str(), name.as_str()), ("Q3 report", "report.pdf"));
    assert_eq!(data.as_ref(), pdf.as_slice(), "the bytes arrived intact");
    // The URL request and the completion carried the bot token; the
    // upload URL is pre-signed and got none.
    for m in ["files.getUploadURLExternal", "files.completeUploadExternal"] {
        let c = r.slack.calls_of(m);
        assert_eq!(c.len(), 1, "{m}");
        assert_eq!(
            c[0].header("authorization"),
            Some(bearer(&r.slack).as_str()),
            "{m}"
        );
    }
    let up = r.slack.calls_of("file_upload");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].header("authorization"), None);
    // The text rode on the share: no separate post.
    assert!(r.slack.calls_of("chat.postMessage").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_file_that_cannot_be_uploaded_shares_nothing() {
    let r = SlackRig::start().await;
    let msg = OutboundMessage {
        attachments: vec![OutboundAttachment {
            kind: AttachmentKind::Document,
            blob: "no-such-blob".into(),
            file_name: "report.pdf".into(),
            mime_type: "application/pdf".into(),
            size: 10,
            caption: None,
        }],
        ..text_to(GENERAL, None, "here it is")
    };
    r.g.gw()
        .runtime
        .channels
        .send("slack", msg)
        .await
        .expect_err("no such blob");
    assert!(r.slack.calls_of("files.completeUploadExternal").is_empty());
    assert!(r.slack.calls_of("chat.postMessage").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bot_token_is_a_clear_auth_error_at_start() {
    let slack_cfg = SlackConfig::default();
    let r = SlackRig::start_with(slack_cfg, DmPolicy::Open, &[], |opts| {
        if let Some(s) = opts.plugins.get_mut("slack") {
            s.secrets.insert(
                "bot_token".into(),
                pincer::plugins::manifest::SecretSource::Value("xoxb-wrong".into()),
            );
        }
    })
    .await;
    let version = r.g.gw().runtime.plugins.current("slack").expect("loaded");
    let config: Vec<(String, String)> = version.settings.config.clone().into_iter().collect();
    let mut inst = pincer::plugins::Instance::new(version)
        .await
        .expect("instance");
    let e = inst.start(&config).await.expect_err("auth.test refused");
    assert!(
        matches!(e.plugin_error(), Some(PluginError::Auth { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("invalid_auth"), "{e}");
}

/// Env vars of [`slack_kill_child`]: its data directory and the fake's
/// Web API URL.
const KILL_DIR: &str = "PINCER_SLACK_KILL_DIR";
const KILL_API: &str = "PINCER_SLACK_KILL_API";
/// Set to the fake's `ws://` base to run the child in Socket Mode.
const KILL_WS: &str = "PINCER_SLACK_KILL_WS";

/// Not a test: the gateway the kill -9 test starts and kills, serving the
/// Slack channel (Events API) from the data directory in `KILL_DIR`
/// against the fake at `KILL_API`. Replies stream by `chat.update` (the
/// echo agent writes word by word), so kills land between pushes, posts,
/// edits and the final commits.
#[test]
#[ignore]
fn slack_kill_child() {
    let (Ok(dir), Ok(api)) = (std::env::var(KILL_DIR), std::env::var(KILL_API)) else {
        return;
    };
    if let Ok(f) = std::fs::File::create(std::path::Path::new(&dir).join("child.log")) {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .try_init();
    }
    let ws = std::env::var(KILL_WS).ok();
    let mode: &[(&str, &str)] = if ws.is_some() {
        &[("mode", "socket")]
    } else {
        &[]
    };
    let mut settings =
        pincer_tests::fake_slack::settings_for(&SlackConfig::default(), &api, DmPolicy::Open, mode);
    if let Some(ws) = ws {
        let base = api.trim_end_matches("/api").to_string();
        settings.allowed_hosts = Some(vec![base, ws]);
        settings.socket = Some(pincer::plugins::SocketOverrides {
            frames_per_window: Some(1_000_000),
            ..Default::default()
        });
    }
    pincer_tests::exactly_once::unpaced(&mut settings);
    pincer_tests::exactly_once::serve_kill_child(std::path::Path::new(&dir), "slack", settings);
}

/// The DM channels whose reply had a send in flight in the store (after a
/// kill: in doubt, Slack may or may not have taken it).
fn in_doubt(store: &pincer::store::SharedStore) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> = store
        .outbox_in_doubt("slack")
        .expect("outbox in doubt")
        .into_iter()
        .map(|i| i.conversation)
        .collect();
    for item in store.inbox_pending("slack", 0, 100_000).expect("inbox") {
        let sending = store
            .inbox_progress(item.seq)
            .expect("progress")
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .is_some_and(|p| p["sending"] == true);
        if sending {
            out.insert(item.conversation);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_traffic_loses_nothing_and_doubles_only_sends_cut_in_flight() {
    use pincer_tests::gateway::ChildGateway;

    const N: usize = 60;
    let slack = FakeSlack::start(SlackConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    pincer_tests::fake_slack::install(&dir.path().join("plugins"), slack.base_url());
    let api = slack.api_url();
    let env = [
        (KILL_DIR, dir.path().to_str().expect("utf-8")),
        (KILL_API, api.as_str()),
    ];
    let hook = |gw: &ChildGateway| format!("http://{}/channels/slack/webhook", gw.addr);
    let user = |i: usize| format!("U0KILL{i:04}");
    let text = |i: usize| format!("m{i:03} one two three four five");
    let pushes: Vec<_> = (0..N).map(|i| slack.dm(&user(i), &text(i))).collect();
    let store = pincer_tests::test_store::open(dir.path());
    let mut gw = ChildGateway::spawn("slack_kill_child", &env);
    let mut doubt: std::collections::BTreeMap<String, usize> = Default::default();
    let mut unacked: Vec<usize> = Vec::new();

    // The first half, acknowledged before any kill.
    for (i, p) in pushes.iter().enumerate().take(N / 2) {
        let a = slack.push(&hook(&gw), p).await;
        if a.status != 200 {
            let log = std::fs::read_to_string(dir.path().join("child.log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!("push {i}: {} {}\n{}", a.status, a.body, tail.join("\n"));
        }
    }
    let answered = |slack: &FakeSlack| {
        slack
            .posted_all()
            .iter()
            .filter(|m| m.current.ends_with("five"))
            .count()
    };
    let mut next = N / 2;
    for kill_at in [8, 30] {
        // Wait for some answers, then kill -9 while the second half is
        // still being pushed.
        while next < N && answered(&slack) < kill_at {
            let a = slack.push(&hook(&gw), &pushes[next]).await;
            assert_eq!(a.status, 200, "push {next}: {}", a.body);
            next += 1;
        }
        slack
            .wait_until(&format!("{kill_at} answers"), || {
                (answered(&slack) >= kill_at).then_some(())
            })
            .await;
        let url = hook(&gw);
        let in_flight = next.min(N);
        let burst: Vec<_> = (in_flight..(in_flight + 5).min(N)).collect();
        let pushing = {
            let bodies: Vec<_> = burst.iter().map(|&i| pushes[i].body.clone()).collect();
            let client = reqwest::Client::new();
            let secret = slack.config().signing_secret.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for b in bodies {
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    let status = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-slack-request-timestamp", ts.to_string())
                        .header(
                            "x-slack-signature",
                            pincer::fakes::slack::sign(secret.as_bytes(), ts, &b),
                        )
                        .body(b.to_vec())
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    out.push(status);
                }
                out
            })
        };
        gw.kill();
        for c in in_doubt(&store) {
            *doubt.entry(c).or_insert(0) += 1;
        }
        let statuses = pushing.await.expect("pusher");
        for (&i, status) in burst.iter().zip(statuses) {
            if status != 200 {
                unacked.push(i);
            }
        }
        next = (in_flight + 5).min(N);
        gw = ChildGateway::spawn("slack_kill_child", &env);
        // Slack retries what was not acknowledged, and here also
        // redelivers everything acknowledged so far: all deduplicated.
        for i in (0..next).filter(|i| !unacked.contains(i)) {
            let a = slack
                .push_raw(&hook(&gw), &pushes[i].body, Signing::Valid, Some(1))
                .await;
            assert_eq!(a.status, 200, "redelivery {i}: {}", a.body);
        }
        for i in std::mem::take(&mut unacked) {
            let a = slack
                .push_raw(&hook(&gw), &pushes[i].body, Signing::Valid, Some(1))
                .await;
            assert_eq!(a.status, 200, "retry {i}: {}", a.body);
        }
    }
    for (i, p) in pushes.iter().enumerate().skip(next) {
        let a = slack.push(&hook(&gw), p).await;
        assert_eq!(a.status, 200, "push {i}: {}", a.body);
    }
    // Every DM ends with exactly its answer.
    for i in 0..N {
        slack.wait_for_text(&dm_channel(&user(i)), &text(i)).await;
    }
    pincer_tests::exactly_once::until(&*store, "the inbox settled and the outbox drained", || {
        store.inbox_stats("slack").map(|s| s.pending).unwrap_or(1) == 0
            && store.outbox_stats("slack").map(|s| s.depth).unwrap_or(1) == 0
    })
    .await;
    gw.kill();
    for i in 0..N {
        let dm = dm_channel(&user(i));
        let posts = slack.posted(&dm);
        let allowed = 1 + doubt.get(&dm).copied().unwrap_or(0);
        assert!(
            !posts.is_empty() && posts.len() <= allowed,
            "{dm}: {} posts (in doubt at {} kills): {:?}",
            posts.len(),
            allowed - 1,
            posts.iter().map(|p| &p.current).collect::<Vec<_>>()
        );
        assert!(posts.iter().any(|p| p.current == text(i)), "{dm}");
    }
    let doubled = (0..N)
        .filter(|&i| slack.posted(&dm_channel(&user(i))).len() > 1)
        .count();
    eprintln!(
        "kill -9 x2: {N} DMs answered, {} in doubt at a kill, {doubled} sent twice",
        doubt.len()
    );
}

/// The rig's settings without the secret `name`.
fn without_secret(name: &'static str) -> impl FnOnce(&mut pincer::gateway::launch::Options) {
    move |opts| {
        if let Some(s) = opts.plugins.get_mut("slack") {
            s.secrets.remove(name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_mode_needs_no_app_token() {
    let r = SlackRig::start_with(
        SlackConfig::default(),
        DmPolicy::Open,
        &[("mode", "events")],
        without_secret("app_token"),
    )
    .await;
    let push = r.slack.dm(ADA, "no socket here");
    assert_eq!(r.slack.push(&r.webhook_url(), &push).await.status, 200);
    r.slack
        .wait_for_text(&dm_channel(ADA), "no socket here")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_for_the_mode_is_a_clear_config_error() {
    for (mode, missing) in [("socket", "app_token"), ("events", "signing_secret")] {
        let r = SlackRig::start_with(
            SlackConfig::default(),
            DmPolicy::Open,
            &[("mode", mode)],
            without_secret(missing),
        )
        .await;
        let version = r.g.gw().runtime.plugins.current("slack").expect("loaded");
        let config: Vec<(String, String)> = version.settings.config.clone().into_iter().collect();
        let mut inst = pincer::plugins::Instance::new(version)
            .await
            .expect("instance");
        let e = inst.start(&config).await.expect_err("refused");
        assert!(
            matches!(e.plugin_error(), Some(PluginError::Config { .. })),
            "{mode}: {e}"
        );
        assert!(e.to_string().contains(missing), "{mode}: {e}");
    }
}

// ---- Socket Mode ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_answers_a_dm_and_acknowledges_every_envelope_once() {
    let r = SlackRig::start_socket(SlackConfig::default(), &[]).await;
    let conn = r.slack.wait_for_open(1).await[0];
    // The connection URL came from apps.connections.open with the app
    // token, filled in by the host.
    let opens = r.slack.wait_for_calls("apps.connections.open", 1).await;
    let app = format!("Bearer {}", r.slack.config().app_token);
    assert_eq!(opens[0].header("authorization"), Some(app.as_str()));

    let push = r.slack.dm(ADA, "over the **socket**");
    let env = r.slack.envelope(conn, &push, 0);
    r.slack.wait_for_ack(&env.envelope_id).await;
    r.slack
        .wait_for_text(&dm_channel(ADA), "over the *socket*")
        .await;
    // Envelopes that carry nothing for the agent are acknowledged too (at
    // once; one with a message once the host committed it).
    let others = [
        r.slack.envelope(conn, &r.slack.bot_dm(ADA, "B0OTHERBOT", "beep", true), 0),
        r.slack.envelope(
            conn,
            &r.slack.event(serde_json::json!({"type": "reaction_added", "user": ADA,
                "reaction": "thumbsup", "item": {"type": "message", "channel": GENERAL, "ts": "1.0"},
                "event_ts": "1.1"})),
            0,
        ),
    ];
    for e in &others {
        r.slack.wait_for_ack(&e.envelope_id).await;
    }
    let next = r.slack.dm(ADA, "and again");
    let env2 = r.slack.envelope(conn, &next, 0);
    r.slack.wait_for_text(&dm_channel(ADA), "and again").await;
    for e in [&env, &others[0], &others[1], &env2] {
        r.slack.wait_for_ack(&e.envelope_id).await;
        assert_eq!(r.slack.acks(&e.envelope_id), 1, "{}", e.envelope_id);
    }
    assert!(
        r.slack.stray_frames().is_empty(),
        "{:?}",
        r.slack.stray_frames()
    );
    let texts: Vec<String> = r
        .slack
        .posted_all()
        .into_iter()
        .map(|m| m.current)
        .collect();
    assert_eq!(texts, ["over the *socket*", "and again"]);
    // One connection all along, and no Events API push was needed.
    assert_eq!(r.slack.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_disconnect_refresh_is_make_before_break_and_loses_or_doubles_nothing() {
    let r = SlackRig::start_socket(SlackConfig::default(), &[]).await;
    let first = r.slack.wait_for_open(1).await[0];
    let dm = dm_channel(ADA);
    let a = r.slack.dm(ADA, "before the refresh");
    let env_a = r.slack.envelope(first, &a, 0);
    r.slack.wait_for_ack(&env_a.envelope_id).await;

    assert!(r.slack.disconnect(first, "refresh_requested"));
    // Slack may still deliver on the old connection until it is closed.
    let b = r.slack.dm(ADA, "during the refresh");
    let env_b = r.slack.envelope(first, &b, 0);
    // A second connection opens, then the first is closed.
    let second = r
        .slack
        .wait_socket("the first closed and a second open", || {
            let open = r.slack.open_connections();
            (open.len() == 1 && open[0] != first).then_some(open[0])
        })
        .await;
    let conns = r.slack.connections();
    let (c1, c2) = (&conns[0], &conns[1]);
    let closed = c1.closed_at.expect("the first is closed");
    assert!(
        c2.opened_at < closed,
        "the second opened before the first closed"
    );
    assert_eq!(conns.len(), 2, "{conns:?}");

    // Slack redelivers what it may not have seen acknowledged, on the new
    // connection, and new events arrive there.
    let env_b2 = r.slack.envelope(second, &b, 1);
    let c = r.slack.dm(ADA, "after the refresh");
    let env_c = r.slack.envelope(second, &c, 0);
    r.slack.wait_for_text(&dm, "after the refresh").await;
    for e in [&env_a, &env_b2, &env_c] {
        r.slack.wait_for_ack(&e.envelope_id).await;
        assert_eq!(r.slack.acks(&e.envelope_id), 1, "{}", e.envelope_id);
    }
    // Each message answered exactly once, in order.
    let texts: Vec<String> = r.slack.posted(&dm).into_iter().map(|m| m.current).collect();
    assert_eq!(
        texts,
        [
            "before the refresh",
            "during the refresh",
            "after the refresh"
        ]
    );
    // The envelope sent on the old connection was either acknowledged
    // there or redelivered: never lost.
    assert!(r.slack.acks(&env_b.envelope_id) <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_replaces_a_session_that_went_silent() {
    let cfg = SlackConfig {
        ping_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let r = SlackRig::start_socket(cfg, &[("socket_idle_s", "3")]).await;
    let first = r.slack.wait_for_open(1).await[0];
    // The link dies without a close: no frames, no pings.
    r.slack.silence(first);
    let newest = r
        .slack
        .wait_socket("the silent connection replaced", || {
            let conns = r.slack.connections();
            let first_closed = conns[0].closed_at.is_some();
            let open = r.slack.open_connections();
            (first_closed && open.iter().any(|&c| c != first)).then(|| *open.last().unwrap_or(&0))
        })
        .await;
    let push = r.slack.dm(BOB, "still there?");
    let env = r.slack.envelope(newest, &push, 0);
    r.slack.wait_for_ack(&env.envelope_id).await;
    r.slack
        .wait_for_text(&dm_channel(BOB), "still there?")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_reconnects_after_the_connection_drops() {
    let r = SlackRig::start_socket(SlackConfig::default(), &[]).await;
    let first = r.slack.wait_for_open(1).await[0];
    r.slack.drop_connection(first);
    let second = r
        .slack
        .wait_socket("a new connection", || {
            r.slack.open_connections().into_iter().find(|&c| c != first)
        })
        .await;
    let push = r.slack.dm(ADA, "reconnected");
    let env = r.slack.envelope(second, &push, 0);
    r.slack.wait_for_ack(&env.envelope_id).await;
    r.slack.wait_for_text(&dm_channel(ADA), "reconnected").await;
    assert_eq!(r.slack.calls_of("apps.connections.open").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_kill_9_during_traffic_loses_nothing_and_doubles_only_sends_cut_in_flight() {
    use pincer_tests::gateway::ChildGateway;

    const N: usize = 40;
    let slack = FakeSlack::start(SlackConfig {
        ping_interval: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    pincer_tests::fake_slack::install(&dir.path().join("plugins"), slack.base_url());
    let api = slack.api_url();
    let env = [
        (KILL_DIR, dir.path().to_str().expect("utf-8")),
        (KILL_API, api.as_str()),
        (KILL_WS, slack.socket_base()),
    ];
    let user = |i: usize| format!("U0SOCK{i:04}");
    let text = |i: usize| format!("s{i:03} one two three four five");
    let pushes: Vec<_> = (0..N).map(|i| slack.dm(&user(i), &text(i))).collect();
    let mut gw = ChildGateway::spawn("slack_kill_child", &env);
    let store = pincer_tests::test_store::open(dir.path());
    let answered = |slack: &FakeSlack| {
        slack
            .posted_all()
            .iter()
            .filter(|m| m.current.ends_with("five"))
            .count()
    };
    let mut conn = slack.wait_for_open(1).await[0];
    // The envelope last sent for each message, to redeliver unacknowledged
    // ones as Slack does.
    let mut last: Vec<Option<String>> = vec![None; N];
    let mut doubt: std::collections::BTreeMap<String, usize> = Default::default();
    let mut next = 0;
    for kill_at in [6, 20] {
        while next < N && answered(&slack) < kill_at {
            last[next] = Some(slack.envelope(conn, &pushes[next], 0).envelope_id);
            next += 1;
            // A few in flight at once.
            if next % 4 == 0 {
                tokio::task::yield_now().await;
            }
        }
        slack
            .wait_until(&format!("{kill_at} answers"), || {
                (answered(&slack) >= kill_at).then_some(())
            })
            .await;
        gw.kill();
        for c in in_doubt(&store) {
            *doubt.entry(c).or_insert(0) += 1;
        }
        let old = conn;
        gw = ChildGateway::spawn("slack_kill_child", &env);
        conn = slack
            .wait_socket("the restarted gateway's connection", || {
                slack.open_connections().into_iter().find(|&c| c > old)
            })
            .await;
        // Slack redelivers what it saw no acknowledgement for.
        for i in 0..next {
            let unacked = last[i].as_deref().is_some_and(|e| slack.acks(e) == 0);
            if unacked {
                last[i] = Some(slack.envelope(conn, &pushes[i], 1).envelope_id);
            }
        }
    }
    for i in next..N {
        last[i] = Some(slack.envelope(conn, &pushes[i], 0).envelope_id);
    }
    for i in 0..N {
        slack.wait_for_text(&dm_channel(&user(i)), &text(i)).await;
    }
    for e in last.iter().flatten() {
        slack.wait_for_ack(e).await;
    }
    // One session serves the account (no orphan left by racing starts).
    slack.wait_for_open(1).await;
    pincer_tests::exactly_once::until(&*store, "the inbox settled and the outbox drained", || {
        store.inbox_stats("slack").map(|s| s.pending).unwrap_or(1) == 0
            && store.outbox_stats("slack").map(|s| s.depth).unwrap_or(1) == 0
    })
    .await;
    gw.kill();
    for i in 0..N {
        let dm = dm_channel(&user(i));
        let posts = slack.posted(&dm);
        let allowed = 1 + doubt.get(&dm).copied().unwrap_or(0);
        assert!(
            !posts.is_empty() && posts.len() <= allowed,
            "{dm}: {} posts (in doubt at {} kills)",
            posts.len(),
            allowed - 1
        );
    }
    eprintln!(
        "socket mode kill -9 x2: {N} DMs answered over {} connections, {} in doubt at a kill",
        slack.connections().len(),
        doubt.len(),
    );
}
