//! The WhatsApp Cloud API channel (issue 9, sections 4-6) through the real
//! `pincer` gateway on loopback: the `whatsapp` plugin built from source in
//! its wasmtime sandbox, against `pincer::fakes::whatsapp::FakeWhatsApp`
//! playing Meta (signed pushes, the Graph messages endpoint with its
//! documented errors, read receipts, media).
//!
//! "Nothing processed" is shown without sleeping: after the pushes that must
//! do nothing, a good push is answered, and the fake's record then holds
//! exactly that one answer. Some tests also call the plugin's exports
//! directly in its sandbox (typed errors, typing and read receipts), so
//! the plugin's half is checked apart from the host's.

use pincer::channels::ChannelError;
use pincer::channels::access::DmPolicy;
use pincer::fakes::whatsapp::{Contact, Signature, WaFault, WebhookPush, WhatsAppConfig};
use pincer::plugins::bindings::{
    AttachmentKind, ChatTarget, DeliveryState, OutboundAttachment, OutboundMessage, TextFormat,
    WebhookRequest,
};
use pincer::plugins::{CallError, PluginError};
use pincer_tests::whatsapp::{WaRig, foreign_push, session_key, session_keys};
use serde_json::json;

fn ada() -> Contact {
    Contact::new("4915112345678", "Ada Lovelace")
}

fn bob() -> Contact {
    Contact::new("4915187654321", "Bob")
}

/// The plugin's typed error inside a failed channel call.
fn plugin_error(e: &ChannelError) -> &PluginError {
    match e {
        ChannelError::Call { error, .. } => error
            .plugin_error()
            .unwrap_or_else(|| panic!("not a plugin error: {e}")),
        other => panic!("not a plugin call error: {other}"),
    }
}

fn call_plugin_error(e: &CallError) -> &PluginError {
    e.plugin_error()
        .unwrap_or_else(|| panic!("not a plugin error: {e}"))
}

fn text_to(to: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        conversation: to.into(),
        thread: None,
        text: text.into(),
        format: TextFormat::Plain,
        reply_to: None,
        attachments: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_answers_the_verification_handshake_with_the_right_token_only() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let token = r.wa.config().verify_token.clone();
    let before = r.plugin_calls();

    let ok =
        r.wa.verify_handshake(&url, "subscribe", &token, "1158201444")
            .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "1158201444"));

    let wrong =
        r.wa.verify_handshake(&url, "subscribe", "not-the-token", "42")
            .await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert!(!wrong.body.contains("42"), "{}", wrong.body);
    let mode =
        r.wa.verify_handshake(&url, "unsubscribe", &token, "43")
            .await;
    assert_eq!(mode.status, 403, "{}", mode.body);

    // The host answered all three: the plugin was never called.
    assert_eq!(r.plugin_calls(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_text_is_answered_with_the_bearer_filled_in_and_the_reply_context() {
    let r = WaRig::start(DmPolicy::Open).await;
    let push =
        r.wa.batch()
            .text(&ada(), "hello **world**, see [docs](https://x.dev)")
            .build();
    let answer = r.wa.push(&r.webhook_url(), &push).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let sent = r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let reply = &sent[0];
    assert_eq!(reply.kind, "text");
    // The echo agent answers with the message; the host asks for Markdown
    // and the plugin renders it as WhatsApp shows it.
    assert_eq!(
        reply.text(),
        Some("hello *world*, see docs (https://x.dev)")
    );
    assert_eq!(reply.reply_to(), Some(push.message_ids[0].as_str()));
    assert_eq!(reply.body["messaging_product"], "whatsapp");
    assert_eq!(reply.body["recipient_type"], "individual");

    // The host filled in the access token on the way out: the fake checks
    // the bearer (a wrong one is a 401 with code 190) and recorded it.
    // The fake records a call when it arrives and its answer after: wait
    // for the answer.
    let calls = r.wa.wait_for_calls("messages", 1).await;
    assert_eq!(calls.len(), 1);
    let want = format!("Bearer {}", r.wa.config().access_token);
    assert_eq!(calls[0].header("authorization"), Some(want.as_str()));
    assert_eq!(calls[0].status, Some(200));

    // The conversation is the sender's wa_id, and it has a session.
    let mut admin = r.admin().await;
    assert!(
        session_keys(&mut admin)
            .await
            .contains(&session_key(&ada().wa_id))
    );
    // The plugin's store holds nothing (no token, no state).
    let kv = r.g.gw().runtime.plugins.kv();
    assert!(kv.list_keys("whatsapp", "", 100).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_are_refused_and_nothing_is_processed() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let before = r.plugin_calls();
    let forged = r.wa.batch().text(&bob(), "forged").build();
    let mut tampered_body = forged.body.to_vec();
    let at = tampered_body.len() - 5;
    tampered_body[at] ^= 0x01;
    let tampered = WebhookPush {
        body: tampered_body.into(),
        message_ids: forged.message_ids.clone(),
    };
    let good_header = r.wa.signature_of(&forged.body);
    for (push, sig) in [
        (&forged, Signature::Missing),
        (&forged, Signature::WrongKey),
        (&forged, Signature::Header("sha256=zz".into())),
        (
            &forged,
            Signature::Header(good_header.trim_start_matches("sha256=").into()),
        ),
        // The right signature over other bytes.
        (&tampered, Signature::Header(good_header.clone())),
    ] {
        let a = r.wa.push_with(&url, push, sig.clone()).await;
        assert!(
            a.status == 401 || a.status == 403,
            "{sig:?} answered {} {}",
            a.status,
            a.body
        );
    }
    assert_eq!(r.plugin_calls(), before, "the plugin saw a refused push");

    // A good push afterwards is answered; the forged ones never were.
    let good = r.wa.batch().text(&ada(), "real").build();
    assert_eq!(r.wa.push(&url, &good).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert!(r.wa.sent(&bob().wa_id).is_empty());
    assert_eq!(r.wa.sent_all().len(), 1, "{:?}", r.wa.sent_all());
    let mut admin = r.admin().await;
    assert!(
        !session_keys(&mut admin)
            .await
            .contains(&session_key(&bob().wa_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_redelivery_is_answered_once() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let push = r.wa.batch().text(&ada(), "once please").build();
    // Meta retries with identical bytes and signature.
    for _ in 0..3 {
        assert_eq!(r.wa.push(&url, &push).await.status, 200);
    }
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    // A later message is answered too, and only it.
    let next = r.wa.batch().text(&ada(), "and then").build();
    assert_eq!(r.wa.push(&url, &next).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada().wa_id, 2).await;
    let replies: Vec<_> = sent.iter().map(|m| m.reply_to().unwrap_or("")).collect();
    assert_eq!(
        replies,
        [push.message_ids[0].as_str(), next.message_ids[0].as_str()]
    );
    // Redelivering the first again after its answer still answers nothing.
    assert_eq!(r.wa.push(&url, &push).await.status, 200);
    let last = r.wa.batch().text(&ada(), "third").build();
    assert_eq!(r.wa.push(&url, &last).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada().wa_id, 3).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2].reply_to(), Some(last.message_ids[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_carries_several_messages_and_other_numbers_are_ignored() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let first =
        r.wa.batch()
            .text(&ada(), "one")
            .text(&bob(), "two")
            .text(&ada(), "three")
            .build();
    assert_eq!(r.wa.push(&url, &first).await.status, 200);
    let to_ada = r.wa.wait_for_sent(&ada().wa_id, 2).await;
    let to_bob = r.wa.wait_for_sent(&bob().wa_id, 1).await;
    let mut texts: Vec<_> = to_ada.iter().map(|m| m.text().unwrap_or("")).collect();
    texts.sort();
    assert_eq!(texts, ["one", "three"]);
    assert_eq!(to_bob[0].text(), Some("two"));
    assert_eq!(to_bob[0].reply_to(), Some(first.message_ids[1].as_str()));

    // A correctly signed push for another phone number of the same app.
    let other = foreign_push("999000111", "4930123456", "wamid.other", "not for us");
    let body = other.to_string();
    let signed = WebhookPush {
        body: body.clone().into(),
        message_ids: vec!["wamid.other".into()],
    };
    assert_eq!(r.wa.push(&url, &signed).await.status, 200);
    let last = r.wa.batch().text(&bob(), "sync").build();
    assert_eq!(r.wa.push(&url, &last).await.status, 200);
    r.wa.wait_for_sent(&bob().wa_id, 2).await;
    assert!(r.wa.sent("4930123456").is_empty());
    assert_eq!(r.wa.sent_all().len(), 4, "{:?}", r.wa.sent_all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_parsed_and_start_no_run() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let statuses =
        r.wa.batch()
            .status("wamid.out1", "sent", &bob().wa_id, None)
            .status("wamid.out1", "delivered", &bob().wa_id, None)
            .status("wamid.out1", "read", &bob().wa_id, None)
            .status("wamid.out2", "failed", &bob().wa_id, Some(131047))
            .build();

    // What the plugin makes of them, called in its sandbox.
    let mut inst = r.instance().await;
    let parsed = inst
        .handle_webhook(&WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: statuses.body.to_vec(),
            verified: Some("hmac-sha256".into()),
        })
        .await
        .expect("statuses parse");
    assert_eq!(parsed.status, 200);
    assert!(parsed.messages.is_empty());
    let states: Vec<_> = parsed.statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            DeliveryState::Sent,
            DeliveryState::Delivered,
            DeliveryState::Read,
            DeliveryState::Failed
        ]
    );
    assert!(
        parsed
            .statuses
            .iter()
            .all(|s| s.conversation == bob().wa_id)
    );
    let failed = parsed.statuses[3]
        .detail
        .as_deref()
        .expect("failure detail");
    assert!(
        failed.contains("131047") && failed.contains("Re-engagement message"),
        "{failed}"
    );
    assert!(parsed.statuses[0].timestamp > 0);
    drop(inst);

    // Through the gateway: accepted, and no run or session for them.
    assert_eq!(r.wa.push(&url, &statuses).await.status, 200);
    let sync = r.wa.batch().text(&ada(), "after statuses").build();
    assert_eq!(r.wa.push(&url, &sync).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert_eq!(r.wa.sent_all().len(), 1);
    let mut admin = r.admin().await;
    let keys = session_keys(&mut admin).await;
    assert!(!keys.contains(&session_key(&bob().wa_id)), "{keys:?}");
    assert!(keys.contains(&session_key(&ada().wa_id)), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_24_hour_window_is_a_clear_permanent_failure_that_is_not_retried() {
    let r = WaRig::start(DmPolicy::Open).await;
    let channels = &r.g.gw().runtime.channels;

    // Nobody with this number ever wrote: the fake answers 131047.
    let err = channels
        .send("whatsapp", text_to("4917600000000", "hello?"))
        .await
        .expect_err("outside the window");
    match plugin_error(&err) {
        PluginError::Permanent { message } => {
            assert!(
                message.contains("outside the 24-hour window")
                    && message.contains("template message is required")
                    && message.contains("131047"),
                "{message}"
            );
        }
        other => panic!("expected a permanent error, got {other}"),
    }
    assert!(r.wa.sent_all().is_empty());

    // An agent reply that meets the same error is not sent again.
    let url = r.webhook_url();
    r.wa.fail_next("messages", 1, WaFault::Code(131047));
    let first = r.wa.batch().text(&ada(), "late").build();
    assert_eq!(r.wa.push(&url, &first).await.status, 200);
    r.wa.wait_for_calls("messages", 2).await;
    let next = r.wa.batch().text(&ada(), "next").build();
    assert_eq!(r.wa.push(&url, &next).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert_eq!(sent[0].reply_to(), Some(next.message_ids[0].as_str()));
    let calls = r.wa.calls_of("messages");
    let codes: Vec<_> = calls
        .iter()
        .map(|c| c.response["error"]["code"].as_i64().unwrap_or(0))
        .collect();
    // The window probe, the refused reply, the next reply; no retry.
    assert_eq!(codes, [131047, 131047, 0], "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_error_codes_become_typed_errors_with_a_retry_delay() {
    let r = WaRig::start(DmPolicy::Open).await;
    // Open Ada's window.
    let push = r.wa.batch().text(&ada(), "hi").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;

    let mut inst = r.instance().await;
    let cases = [
        (130429, "rate-limited"),
        (131056, "rate-limited"),
        (4, "rate-limited"),
        (80007, "rate-limited"),
        (190, "auth"),
        (131026, "permanent"),
        (131048, "permanent"),
    ];
    for (code, want) in cases {
        r.wa.fail_next("messages", 1, WaFault::Code(code));
        let e = inst
            .send(&text_to(&ada().wa_id, "x"))
            .await
            .expect_err("fault");
        let got = match call_plugin_error(&e) {
            PluginError::RateLimited { retry_after_ms, .. } => {
                assert!(*retry_after_ms >= 1_000, "{code}: {e}");
                "rate-limited"
            }
            PluginError::Auth { .. } => "auth",
            PluginError::Permanent { .. } => "permanent",
            other => panic!("{code}: unexpected {other}"),
        };
        assert_eq!(got, want, "code {code}: {e}");
        assert!(e.to_string().contains(&code.to_string()), "{e}");
    }
    for fault in [WaFault::Status(500), WaFault::Status(503)] {
        r.wa.fail_next("messages", 1, fault.clone());
        let e = inst
            .send(&text_to(&ada().wa_id, "x"))
            .await
            .expect_err("fault");
        assert!(
            matches!(call_plugin_error(&e), PluginError::Transient { .. }),
            "{fault:?}: {e}"
        );
    }
    // And the next send goes through on the same instance.
    let id = inst
        .send(&text_to(&ada().wa_id, "recovered"))
        .await
        .unwrap();
    let sent = r.wa.sent(&ada().wa_id);
    assert_eq!(sent.last().map(|m| m.id.as_str()), Some(id.as_str()));
    assert_eq!(sent.last().and_then(|m| m.text()), Some("recovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_rate_limited_with_130429_is_retried() {
    let r = WaRig::start(DmPolicy::Open).await;
    r.wa.fail_next("messages", 1, WaFault::Code(130429));
    let push = r.wa.batch().text(&ada(), "busy?").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].reply_to(), Some(push.message_ids[0].as_str()));
    let codes: Vec<_> =
        r.wa.calls_of("messages")
            .iter()
            .map(|c| c.response["error"]["code"].as_i64().unwrap_or(0))
            .collect();
    assert_eq!(codes, [130429, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_read_receipts_carry_the_inbound_message_id() {
    let r = WaRig::start(DmPolicy::Open).await;
    let push = r.wa.batch().text(&ada(), "are you there?").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    let before = r.wa.reads().len();
    let wamid = push.message_ids[0].clone();
    let target = |message_id: Option<String>| ChatTarget {
        conversation: ada().wa_id,
        thread: None,
        message_id,
    };

    let mut inst = r.instance().await;
    inst.typing(&target(Some(wamid.clone()))).await.unwrap();
    inst.mark_read(&target(Some(wamid.clone()))).await.unwrap();
    let reads = r.wa.wait_for_reads(before + 2).await;
    assert_eq!(reads[before].message_id, wamid);
    assert!(reads[before].typing);
    assert_eq!(reads[before + 1].message_id, wamid);
    assert!(!reads[before + 1].typing);
    let call = r.wa.calls_of("messages").pop().expect("read call");
    let want = format!("Bearer {}", r.wa.config().access_token);
    assert_eq!(call.header("authorization"), Some(want.as_str()));

    // Without the inbound message id WhatsApp cannot show typing: a clear
    // error, and no call.
    let calls = r.wa.calls_of("messages").len();
    let e = inst.typing(&target(None)).await.expect_err("no message id");
    match call_plugin_error(&e) {
        PluginError::Permanent { message } => {
            assert!(message.contains("inbound message id"), "{message}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(r.wa.calls_of("messages").len(), calls);
    let caps =
        r.g.gw()
            .runtime
            .plugins
            .current("whatsapp")
            .unwrap()
            .channel_capabilities()
            .cloned()
            .unwrap();
    assert!(caps.typing && caps.read_receipts && caps.attachments && !caps.edit);
    assert_eq!(caps.typing_ttl_ms, 25_000);
    assert_eq!(caps.max_message_length, 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_marks_an_inbound_message_read_and_shows_typing_with_its_id() {
    // The echo model pauses between words, so the agent is still working
    // when the typing indicator goes out (an instant answer needs none).
    let r = WaRig::start_with(WhatsAppConfig::default(), DmPolicy::Open, |o| {
        o.agent.echo_word_delay_ms = 200;
    })
    .await;
    let push = r.wa.batch().text(&ada(), "typing? yes please").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    let reads = r.wa.wait_for_reads(2).await;
    assert!(reads.iter().all(|r| r.message_id == push.message_ids[0]));
    assert!(reads.iter().any(|r| !r.typing), "marked read: {reads:?}");
    assert!(reads.iter().any(|r| r.typing), "typing shown: {reads:?}");
}

/// The pairing code in a notice.
fn code_in(text: &str) -> String {
    let at = text
        .find("Pairing code: ")
        .unwrap_or_else(|| panic!("no pairing code in {text:?}"));
    text[at + "Pairing code: ".len()..]
        .chars()
        .take(8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sender_is_paired_and_then_answered() {
    // The default policy: pairing.
    let r = WaRig::start(DmPolicy::default()).await;
    let url = r.webhook_url();
    let first = r.wa.batch().text(&bob(), "let me in").build();
    assert_eq!(r.wa.push(&url, &first).await.status, 200);
    let notice = r.wa.wait_for_sent(&bob().wa_id, 1).await;
    let text = notice[0].text().expect("text").to_string();
    assert!(text.contains("pincer pairing approve whatsapp"), "{text}");
    assert_eq!(notice[0].reply_to(), Some(first.message_ids[0].as_str()));
    let code = code_in(&text);

    // Not processed until approved: a second message gets no answer and
    // no second code.
    let second = r.wa.batch().text(&bob(), "hello?").build();
    assert_eq!(r.wa.push(&url, &second).await.status, 200);
    let mut admin = r.admin().await;
    let list = admin
        .call("channels.pairing.list", json!({"channel": "whatsapp"}))
        .await;
    let pending = list["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["code"], code.as_str());
    assert_eq!(pending[0]["sender"], bob().wa_id.as_str());
    assert!(
        !session_keys(&mut admin)
            .await
            .contains(&session_key(&bob().wa_id))
    );

    admin
        .call(
            "channels.pairing.approve",
            json!({"channel": "whatsapp", "code": code}),
        )
        .await;
    let third = r.wa.batch().text(&bob(), "approved?").build();
    assert_eq!(r.wa.push(&url, &third).await.status, 200);
    let sent = r.wa.wait_for_sent(&bob().wa_id, 2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].text(), Some("approved?"));
    assert_eq!(sent[1].reply_to(), Some(third.message_ids[0].as_str()));
    assert!(
        session_keys(&mut admin)
            .await
            .contains(&session_key(&bob().wa_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_id_is_looked_up_with_the_bearer_and_downloaded_with_it() {
    let r = WaRig::start(DmPolicy::Open).await;
    let media =
        r.wa.add_media(b"%PDF-1.7 fake", "application/pdf", "report.pdf");
    let mut inst = r.instance().await;
    let req = inst.fetch_attachment(&media.id).await.unwrap();
    // Step 1 happened: the lookup by id, with the real token.
    let lookups = r.wa.wait_for_calls("media", 1).await;
    let want = format!("Bearer {}", r.wa.config().access_token);
    assert_eq!(lookups[0].header("authorization"), Some(want.as_str()));
    assert_eq!(lookups[0].status, Some(200));
    // Step 2 is the host's: the lookaside URL with the same bearer as a
    // placeholder (the plugin never held the token).
    assert!(
        req.url.starts_with(r.wa.base_url()) && req.url.contains(&media.id),
        "{}",
        req.url
    );
    assert_eq!(
        req.headers,
        [(
            "authorization".to_string(),
            "Bearer {{secret:access_token}}".to_string()
        )]
    );
    assert_eq!(req.mime_type.as_deref(), Some("application/pdf"));

    // Bad handles are refused before any call.
    let e = inst.fetch_attachment("../1/messages").await.unwrap_err();
    assert!(
        matches!(call_plugin_error(&e), PluginError::Permanent { .. }),
        "{e}"
    );
    r.wa.fail_next("media", 1, WaFault::Code(131026));
    let e = inst.fetch_attachment(&media.id).await.unwrap_err();
    assert!(
        matches!(call_plugin_error(&e), PluginError::Permanent { .. }),
        "{e}"
    );
    assert_eq!(r.wa.calls_of("media").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_media_messages_carry_attachments_and_captions() {
    let r = WaRig::start(DmPolicy::Open).await;
    let img = r.wa.add_media(b"\x89PNG fake", "image/png", "cat.png");
    let voice = r.wa.add_media(b"OggS fake", "audio/ogg", "voice.ogg");
    let doc = r.wa.add_media(b"%PDF fake", "application/pdf", "a.pdf");
    let push = r
        .wa
        .batch()
        .image(&ada(), &img, Some("look at this"))
        .audio(&ada(), &voice, true)
        .document(&ada(), &doc, None)
        .reaction(&ada(), "wamid.out", "👍")
        .other(
            &ada(),
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}}),
        )
        .text_reply(&ada(), "quoting", "wamid.quoted")
        .build();
    let mut inst = r.instance().await;
    let parsed = inst
        .handle_webhook(&WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: push.body.to_vec(),
            verified: Some("hmac-sha256".into()),
        })
        .await
        .unwrap();
    let m = &parsed.messages;
    assert_eq!(m.len(), 6);
    let ids: Vec<_> = m.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, push.message_ids);
    assert!(
        m.iter()
            .all(|m| m.sender_name.as_deref() == Some("Ada Lovelace"))
    );
    assert_eq!(m[0].text, "look at this");
    assert_eq!(m[0].attachments[0].kind, AttachmentKind::Image);
    assert_eq!(m[0].attachments[0].handle, img.id);
    assert_eq!(m[0].attachments[0].mime_type.as_deref(), Some("image/png"));
    assert_eq!(m[1].attachments[0].kind, AttachmentKind::Voice);
    assert_eq!(m[2].attachments[0].kind, AttachmentKind::Document);
    assert_eq!(m[2].attachments[0].file_name.as_deref(), Some("a.pdf"));
    let reaction = m[3].reaction.as_ref().expect("reaction");
    assert_eq!(
        (reaction.message_id.as_str(), reaction.emoji.as_str()),
        ("wamid.out", "👍")
    );
    assert_eq!(m[4].text, "Yes please");
    let quoted = m[5].reply_to.as_ref().expect("context");
    assert_eq!(quoted.id, "wamid.quoted");
    // The fake quotes with the business number: a reply to the bot.
    assert!(quoted.from_bot_self);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_file_that_cannot_be_uploaded_sends_nothing() {
    let r = WaRig::start(DmPolicy::Open).await;
    let push = r.wa.batch().text(&ada(), "send me the file").build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    let sent_before = r.wa.sent_all().len();
    let msg = OutboundMessage {
        attachments: vec![OutboundAttachment {
            kind: AttachmentKind::Document,
            blob: "no-such-blob".into(),
            file_name: "report.pdf".into(),
            mime_type: "application/pdf".into(),
            size: 10,
            caption: None,
        }],
        ..text_to(&ada().wa_id, "here it is")
    };
    let err =
        r.g.gw()
            .runtime
            .channels
            .send("whatsapp", msg)
            .await
            .expect_err("no such blob");
    assert!(
        !matches!(plugin_error(&err), PluginError::Transient { .. }),
        "{err}"
    );
    // Uploads come first, so neither the text nor a file message went out.
    assert_eq!(r.wa.sent_all().len(), sent_before);
    assert!(r.wa.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_settings_the_channel_says_what_is_missing() {
    let r = WaRig::start_with(Default::default(), DmPolicy::Open, |opts| {
        let s = opts.plugins.get_mut("whatsapp").unwrap();
        s.config.remove("phone_number_id");
    })
    .await;
    let status =
        r.g.gw()
            .runtime
            .channels
            .get("whatsapp")
            .expect("runner")
            .status();
    let text = format!("{status:?}");
    assert!(text.contains("phone_number_id"), "{text}");
    // A push is refused by the channel, not answered as if handled.
    let push = r.wa.batch().text(&ada(), "anyone?").build();
    let a = r.wa.push(&r.webhook_url(), &push).await;
    assert!(a.status >= 400, "{} {}", a.status, a.body);
    assert!(r.wa.sent_all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_only_to_the_graph_hosts_of_the_shipped_manifest() {
    // An operator points api_base elsewhere and allows that host: the
    // plugin may call it, but the host refuses to fill the token in there.
    let r = WaRig::start_with_shipped_manifest(DmPolicy::Open, |opts| {
        let s = opts.plugins.get_mut("whatsapp").unwrap();
        let base = s.config["api_base"].clone();
        s.allowed_hosts = Some(vec![base]);
    })
    .await;
    let err =
        r.g.gw()
            .runtime
            .channels
            .send("whatsapp", text_to(&ada().wa_id, "hi"))
            .await
            .expect_err("token refused for this host");
    match plugin_error(&err) {
        PluginError::Permanent { message } => assert!(
            message.contains("access_token") && message.contains("may not be sent"),
            "{message}"
        ),
        other => panic!("{other}"),
    }
    // Nothing reached the other host.
    assert!(r.wa.calls().is_empty(), "{:?}", r.wa.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_that_is_not_a_whatsapp_payload_gets_a_clear_answer() {
    let r = WaRig::start(DmPolicy::Open).await;
    let url = r.webhook_url();
    let garbage = WebhookPush {
        body: "{not json".into(),
        message_ids: vec![],
    };
    let a = r.wa.push(&url, &garbage).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("invalid JSON"), "{}", a.body);
    // Another app product on the same webhook: acknowledged, ignored.
    let page = WebhookPush {
        body: r#"{"object":"page","entry":[]}"#.into(),
        message_ids: vec![],
    };
    assert_eq!(r.wa.push(&url, &page).await.status, 200);
    // The channel keeps serving.
    let ok = r.wa.batch().text(&ada(), "still there?").build();
    assert_eq!(r.wa.push(&url, &ok).await.status, 200);
    r.wa.wait_for_sent(&ada().wa_id, 1).await;
    assert_eq!(r.wa.sent_all().len(), 1);
}
