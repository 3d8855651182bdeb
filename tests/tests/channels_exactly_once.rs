//! The durable channel path without loose ends, through the real gateway
//! with `testchan` (and WhatsApp with its fake) built from source: a reply
//! streamed by edits that kill -9 cuts short resumes without a second
//! message; stopping the gateway lets a send in flight finish (and one the
//! drain timeout cuts is in doubt, settled as `resend_in_doubt` says);
//! replies with files survive retries and a restart with their blobs kept;
//! delivery statuses are recorded against the sent message and a failure
//! shows in the channel's health.

use std::path::Path;
use std::time::Duration;

use pincer::channels::QueueSettings;
use pincer::channels::access::DmPolicy;
use pincer::gateway::launch::Options;
use pincer::plugins::bindings::{AttachmentKind, OutboundAttachment, OutboundMessage, TextFormat};
use pincer::plugins::{Limits, PluginSettings};
use pincer::store::{KvStore, SharedStore, Store};
use pincer_tests::exactly_once::{self, CHANNEL, answers, diagnose, inbox, token, until};
use pincer_tests::gateway::TestGateway;
use pincer_tests::install_plugin;

fn settings() -> PluginSettings {
    PluginSettings {
        dm_policy: DmPolicy::Open,
        limits: Some(Limits {
            poll_wait_ms: 200,
            ..Default::default()
        }),
        queue: QueueSettings {
            send_interval_ms: 1,
            send_burst: 1000,
            retry_base_ms: 20,
            retry_max_ms: 200,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn options(dir: &Path, settings: PluginSettings) -> Options {
    let mut opts = Options::new(dir);
    opts.gateway.listen = "127.0.0.1:0".parse().expect("addr");
    opts.watch_settle = Duration::from_millis(100);
    opts.plugins.insert(CHANNEL.into(), settings);
    opts.gateway.runs.sender_per_minute = u32::MAX;
    opts.gateway.runs.sender_burst = u32::MAX;
    opts
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    install_plugin(&plugins, "testchan", "testchan");
    dir
}

/// The store of a data directory, opened beside the gateway's.
fn store_of(dir: &Path) -> SharedStore {
    pincer_tests::test_store::open(dir)
}

/// Env var naming the data directory of [`streaming_child`].
const STREAM_DIR: &str = "PINCER_EXACTLY_ONCE_STREAM_DIR";

/// Not a test: the gateway the streaming kill test starts and kills. The
/// channel streams by edits and the echo agent writes word by word, so
/// kills land between the first message, its edits and the final commit.
#[test]
#[ignore]
fn streaming_child() {
    let Ok(dir) = std::env::var(STREAM_DIR) else {
        return;
    };
    let rt = pincer_tests::gateway::child_runtime();
    rt.block_on(async move {
        let mut s = settings();
        // One send at a time: a kill can cut at most one outbox send.
        s.queue.send_concurrency = 1;
        let mut opts = options(Path::new(&dir), s);
        opts.agent.echo_word_delay_ms = 5;
        let running = pincer_tests::gateway::start(opts).await.expect("starts");
        println!("LISTENING {}", running.addr);
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_replies_stream_by_edits_sends_each_first_message_once() {
    let dir = data_dir();
    // Edit streaming, read by `describe` when the child loads the plugin.
    store_of(dir.path())
        .set(
            CHANNEL,
            "caps",
            br#"{"edit": true, "streaming": "edit", "min_edit_interval_ms": 1}"#,
        )
        .expect("caps");
    let report = exactly_once::kill_run(
        "streaming_child",
        STREAM_DIR,
        dir.path(),
        120,
        " one two three four five six",
        4,
    )
    .await;
    // The streamed message of an answer is sent once: a restarted reply
    // edits the message it opened before the kill (recorded on its inbox
    // row) instead of opening another; only a send the kill cut in flight
    // is in doubt and sent again.
    report.assert_exactly_once_but_in_doubt(120);
    // Every answer's message ends with its whole text (edits are
    // idempotent and the last one lands).
    let store = store_of(dir.path());
    let edits = finals_by_token(&*store);
    for i in 0..120 {
        let tok = token(i);
        let text = edits.get(&tok).map(String::as_str).unwrap_or("");
        assert_eq!(
            text,
            format!("{tok} one two three four five six"),
            "the final text of {tok}"
        );
    }
}

/// The text each token's message shows in the end (its last send or edit).
fn finals_by_token(kv: &dyn KvStore) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for key in kv.list_keys(CHANNEL, "out/", 1_000_000).expect("out") {
        let Some(v) = kv.get(CHANNEL, &key).expect("get") else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<serde_json::Value>(&v) else {
            continue;
        };
        if r["op"] != "send" && r["op"] != "edit" {
            continue;
        }
        let text = r["text"].as_str().unwrap_or_default();
        if let Some(tok) = exactly_once::token_in(text) {
            out.insert(tok, text.to_string());
        }
    }
    out
}

/// Hold testchan's sends until [`release`]; returns once `n` are held.
async fn held(store: &dyn Store, n: i64) {
    until(store, "a send held in the plugin", || {
        store
            .get(CHANNEL, "holding/send")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok())
            .is_some_and(|h| h >= n)
    })
    .await;
}

fn release(store: &dyn Store) {
    store.delete(CHANNEL, "hold/send").expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_lets_a_send_in_flight_finish_and_nothing_is_sent_again() {
    let dir = data_dir();
    let store = store_of(dir.path());
    store.set(CHANNEL, "hold/send", b"1").expect("hold");
    let mut t = TestGateway::start_with(
        options(dir.path(), settings()),
        tempfile::tempdir().expect("spare"),
    )
    .await;
    store
        .set(CHANNEL, "inbox", inbox(0..1, "s", "").as_bytes())
        .expect("inbox");
    held(&*store, 1).await;
    assert_eq!(store.outbox_stats(CHANNEL).expect("stats").in_flight, 1);
    // Stop while the send is in the plugin; release it once the stop has
    // begun (the drain waits for it).
    let gw = t.gw().clone();
    let stop = tokio::spawn(async move {
        t.stop().await;
        t
    });
    until(&*store, "the shutdown to begin", || gw.shutting_down()).await;
    release(&*store);
    let _t = stop.await.expect("stopped");
    assert_eq!(answers(&*store).get(&token(0)), Some(&1));
    let st = store.outbox_stats(CHANNEL).expect("stats");
    assert_eq!(
        (st.depth, st.in_flight),
        (0, 0),
        "delivered and recorded before the process ended\n{}",
        diagnose(&*store)
    );
    assert!(store.outbox_in_doubt(CHANNEL).expect("doubt").is_empty());
    drop(gw);

    // The next start sends nothing again, and answers what comes next.
    let mut t = TestGateway::start_with(
        options(dir.path(), settings()),
        tempfile::tempdir().expect("spare"),
    )
    .await;
    store
        .set(CHANNEL, "inbox", inbox(1..2, "s", "").as_bytes())
        .expect("inbox");
    until(&*store, "the next answer", || {
        answers(&*store).contains_key(&token(1))
    })
    .await;
    assert_eq!(answers(&*store).get(&token(0)), Some(&1), "not sent again");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_drain_timeout_cuts_is_in_doubt_and_failed_when_resending_is_off() {
    let dir = data_dir();
    let store = store_of(dir.path());
    store.set(CHANNEL, "hold/send", b"1").expect("hold");
    let mut s = settings();
    s.queue.drain_timeout_ms = 100;
    s.queue.resend_in_doubt = false;
    let mut t = TestGateway::start_with(
        options(dir.path(), s.clone()),
        tempfile::tempdir().expect("spare"),
    )
    .await;
    store
        .set(CHANNEL, "inbox", inbox(0..1, "d", "").as_bytes())
        .expect("inbox");
    held(&*store, 1).await;
    // Never released: the drain gives up and the send stays in doubt.
    t.stop().await;
    let doubt = store.outbox_in_doubt(CHANNEL).expect("doubt");
    assert_eq!(doubt.len(), 1, "{}", diagnose(&*store));
    assert!(!answers(&*store).contains_key(&token(0)));

    // At the next start the send in doubt is failed, not sent again, and
    // the channel's health says why.
    let mut t =
        TestGateway::start_with(options(dir.path(), s), tempfile::tempdir().expect("spare")).await;
    until(&*store, "the send in doubt settled", || {
        store
            .outbox_stats(CHANNEL)
            .is_ok_and(|s| s.failed == 1 && s.depth == 0)
    })
    .await;
    let health = t.gw().runtime.health.snapshot().await;
    let h = health.iter().find(|h| h.name == CHANNEL).expect("testchan");
    assert_eq!(h.outbox.failed, 1);
    let why = h.outbox.last_error.clone().unwrap_or_default();
    assert!(why.contains("in doubt"), "{why}");
    t.stop().await;
}

fn attachment(blob: &str) -> OutboundAttachment {
    OutboundAttachment {
        kind: AttachmentKind::Document,
        blob: blob.into(),
        file_name: "report.pdf".into(),
        mime_type: "application/pdf".into(),
        size: 7,
        caption: Some("the report".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_a_file_survives_retries_and_a_restart_and_its_blob_is_kept() {
    let dir = data_dir();
    let store = store_of(dir.path());
    // First gateway: the channel is stopped, so the reply waits.
    let mut s = settings();
    s.autostart = Some(false);
    let mut t =
        TestGateway::start_with(options(dir.path(), s), tempfile::tempdir().expect("spare")).await;
    let blobs = t.gw().runtime.plugins.blobs().expect("blobs").clone();
    let kept = blobs
        .put(b"%PDF-1.", "application/pdf", Some("report.pdf"))
        .await
        .expect("blob");
    let loose = blobs
        .put(b"nobody", "text/plain", None)
        .await
        .expect("blob");
    t.gw()
        .runtime
        .channels
        .outbox()
        .enqueue_notice(
            CHANNEL,
            OutboundMessage {
                conversation: "c1".into(),
                thread: None,
                text: "here it is".into(),
                format: TextFormat::Plain,
                reply_to: None,
                attachments: vec![attachment(&kept.handle)],
            },
        )
        .expect("enqueue");
    until(
        &*store,
        "a failed attempt while the channel is stopped",
        || {
            store
                .outbox_rows(CHANNEL, 10)
                .is_ok_and(|r| r.len() == 1 && r[0].last_error.is_some())
        },
    )
    .await;
    t.stop().await;
    drop(blobs);

    // Second gateway: every blob is past its time to live; the one the
    // waiting reply uses is kept, the other collected. The first send
    // fails transiently and is retried.
    store
        .set(CHANNEL, "fail/send", br#"["transient"]"#)
        .expect("fail");
    let mut opts = options(dir.path(), settings());
    opts.sandbox.media.blob_ttl_secs = 0;
    let mut t = TestGateway::start_with(opts, tempfile::tempdir().expect("spare")).await;
    until(&*store, "the reply with its file delivered", || {
        store.outbox_stats(CHANNEL).is_ok_and(|s| s.depth == 0)
    })
    .await;
    let sends: Vec<serde_json::Value> = store
        .list_keys(CHANNEL, "out/", 100)
        .expect("out")
        .iter()
        .filter_map(|k| store.get(CHANNEL, k).expect("get"))
        .filter_map(|v| serde_json::from_slice(&v).ok())
        .filter(|r: &serde_json::Value| r["op"] == "send")
        .collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0]["text"], "here it is");
    assert_eq!(sends[0]["attachments"][0]["blob"], kept.handle.as_str());
    assert_eq!(sends[0]["attachments"][0]["file_name"], "report.pdf");
    assert_eq!(sends[0]["attachments"][0]["caption"], "the report");
    assert!(
        store.get(CHANNEL, "fail/send").expect("get").is_none(),
        "the transient failure was used: retried"
    );
    let blobs = t.gw().runtime.plugins.blobs().expect("blobs").clone();
    assert_eq!(
        blobs.read(&kept.handle).await.expect("kept"),
        b"%PDF-1.".to_vec()
    );
    assert!(
        blobs.info(&loose.handle).is_err(),
        "the unused blob expired"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_delivery_statuses_are_recorded_and_a_failure_shows_in_health() {
    use pincer::fakes::whatsapp::Contact;
    use pincer_tests::whatsapp::WaRig;

    let r = WaRig::start(DmPolicy::Open).await;
    let ada = Contact::new("4915112345678", "Ada Lovelace");
    let push = r.wa.batch().text(&ada, "status please").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada.wa_id, 1).await;
    let wamid = sent[0].id.clone();
    let gw = r.g.gw().clone();
    // The reply's outbox row is recorded as sent with the platform id.
    let deadline = tokio::time::Instant::now() + exactly_once::HANG_GUARD;
    loop {
        let st = gw
            .runtime
            .channels
            .outbox()
            .stats("whatsapp")
            .expect("stats");
        if st.depth == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // delivered, read, then failed (re-engagement, 131047).
    let statuses =
        r.wa.batch()
            .status(&wamid, "delivered", &ada.wa_id, None)
            .status(&wamid, "read", &ada.wa_id, None)
            .build();
    assert_eq!(r.wa.push(&r.webhook_url(), &statuses).await.status, 200);
    let h = health_of(&gw, "whatsapp").await;
    assert_eq!(h.outbox.delivery_failed, 0);
    let failed =
        r.wa.batch()
            .status(&wamid, "failed", &ada.wa_id, Some(131047))
            .build();
    assert_eq!(r.wa.push(&r.webhook_url(), &failed).await.status, 200);
    let h = health_of(&gw, "whatsapp").await;
    assert_eq!(h.outbox.delivery_failed, 1, "{:?}", h.outbox);
    let why = h.outbox.last_delivery_failure.clone().unwrap_or_default();
    assert!(!why.is_empty(), "{:?}", h.outbox);
    let last = h.last_error.clone().unwrap_or_default();
    assert!(
        last.contains("delivery failed") && last.contains(&wamid),
        "{last}"
    );
    // A status of a message the outbox never sent is counted, not kept.
    let stray =
        r.wa.batch()
            .status("wamid.unknown", "failed", &ada.wa_id, Some(131047))
            .build();
    assert_eq!(r.wa.push(&r.webhook_url(), &stray).await.status, 200);
    assert_eq!(health_of(&gw, "whatsapp").await.outbox.delivery_failed, 1);
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", r.g.addr))
        .bearer_auth(pincer_tests::whatsapp::TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("pincer_channel_delivery_failed_total") && l.contains("whatsapp")
        ),
        "{metrics}"
    );
}

async fn health_of(
    gw: &std::sync::Arc<pincer::gateway::Gateway>,
    name: &str,
) -> pincer::health::ChannelHealth {
    gw.runtime
        .health
        .snapshot()
        .await
        .into_iter()
        .find(|h| h.name == name)
        .expect("channel")
}

/// A reply waiting behind its conversation's first reply, which waits for
/// a rate limit, goes out once the first did: the worker wakes for the
/// first one's retry (it once took the waiting reply's older time as "due
/// now", found nothing due and slept until the next commit: the kill -9
/// test's 600 s hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_behind_a_rate_limited_one_goes_out_after_it() {
    let dir = data_dir();
    let store = store_of(dir.path());
    store
        .set(CHANNEL, "fail/send", br#"["rate-limited:1500"]"#)
        .expect("fail");
    let mut t = TestGateway::start_with(
        options(dir.path(), settings()),
        tempfile::tempdir().expect("spare"),
    )
    .await;
    // Two messages of one conversation (c0): 0 and 40.
    let list = serde_json::json!([
        {"id": "r0", "conversation": "c0", "text": token(0)},
        {"id": "r40", "conversation": "c0", "text": token(40)},
    ]);
    store
        .set(CHANNEL, "inbox", list.to_string().as_bytes())
        .expect("inbox");
    until(&*store, "both answers", || answers(&*store).len() == 2).await;
    let sends: Vec<String> = store
        .list_keys(CHANNEL, "sent/", 10)
        .expect("sent")
        .iter()
        .filter_map(|k| store.get(CHANNEL, k).expect("get"))
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect();
    assert_eq!(sends, [token(0), token(40)], "in conversation order");
    t.stop().await;
}
