//! Self-test of the platform fakes (`pincer::fakes`): each is driven over
//! real loopback HTTP with reqwest, the way a plugin's requests reach it,
//! and checked against the platforms' documented behaviour. The channel
//! tests and `pincer bench channels` rely on exactly these behaviours.

use std::time::Duration;

use pincer::fakes::multipart::Form;
use pincer::fakes::telegram::{Chat, FakeTelegram, TelegramConfig, TgFault, User, UserMessage};
use pincer::fakes::whatsapp::{Contact, FakeWhatsApp, Signature, WaFault, WhatsAppConfig};
use pincer::fakes::{bare_bot, whatsapp};
use pincer_tests::webhook_receiver::{Receiver, Reply};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// POST `body` as JSON to method `m` of the fake's default bot; returns
/// (status, JSON body).
async fn tg(fake: &FakeTelegram, m: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/{m}", fake.api_url()))
        .json(&body)
        .send()
        .await
        .expect("request to the Telegram fake");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}

fn alice() -> (Chat, User) {
    (
        Chat::private(4242, "Alice"),
        User::new(4242, "Alice").username("alice_a"),
    )
}

#[tokio::test]
async fn telegram_unknown_token_and_method_get_the_documented_errors() {
    let fake = FakeTelegram::start().await;
    let r = client()
        .get(format!("{}/bot1:wrong/getMe", fake.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    let (status, me) = tg(&fake, "getme", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(me["result"]["username"], fake.username());
    assert_eq!(me["result"]["is_bot"], true);
    let (status, body) = tg(&fake, "noSuchMethod", json!({})).await;
    assert_eq!((status, body["error_code"].clone()), (404, json!(404)));
}

#[tokio::test]
async fn telegram_long_poll_wakes_on_a_pushed_update() {
    let fake = FakeTelegram::start().await;
    let url = format!("{}/getUpdates?timeout=50", fake.api_url());
    // A long poll with nothing queued: it must stay open...
    let poll = tokio::spawn(async move { client().get(url).send().await?.json::<Value>().await });
    fake.wait_for_pollers(1).await;
    // ...and return as soon as the update is queued (a poll that only
    // returned at its timeout would answer `[]`).
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(
        &chat,
        &user,
        "/start hello @pincer_test_bot",
    ));
    let body = poll.await.expect("join").expect("poll answer");
    let updates = body["result"].as_array().expect("result array");
    assert_eq!(updates.len(), 1);
    let m = &updates[0]["message"];
    assert_eq!(updates[0]["update_id"], pushed.update_id);
    assert_eq!(m["message_id"], pushed.message_id);
    assert_eq!(m["text"], "/start hello @pincer_test_bot");
    assert_eq!(
        m["chat"],
        json!({"id": 4242, "type": "private", "first_name": "Alice"})
    );
    assert_eq!(m["from"]["username"], "alice_a");
    let kinds: Vec<_> = m["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, ["bot_command", "mention"]);
    fake.wait_for_pollers(0).await;
}

#[tokio::test]
async fn telegram_offset_confirms_limit_caps_and_a_short_poll_returns_empty() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            fake.push(UserMessage::text(&chat, &user, &format!("m{i}")))
                .update_id
        })
        .collect();
    let (_, b) = tg(&fake, "getUpdates", json!({"limit": 2})).await;
    assert_eq!(b["result"].as_array().map(Vec::len), Some(2));
    // Unconfirmed updates come again.
    let (_, b) = tg(&fake, "getUpdates", json!({})).await;
    assert_eq!(b["result"].as_array().map(Vec::len), Some(3));
    // Offset = last seen + 1 confirms everything before it.
    let (_, b) = tg(&fake, "getUpdates", json!({"offset": ids[1] + 1})).await;
    assert_eq!(b["result"][0]["update_id"], ids[2]);
    assert_eq!(fake.pending_updates(), vec![ids[2]]);
    let (_, b) = tg(
        &fake,
        "getUpdates",
        json!({"offset": ids[2] + 1, "timeout": 0}),
    )
    .await;
    assert_eq!(b, json!({"ok": true, "result": []}));
    assert!(fake.pending_updates().is_empty());
    // allowed_updates is sticky: a reaction is delivered only once named.
    fake.push_update(json!({"message_reaction": {"chat": {"id": 4242}}}));
    let (_, b) = tg(&fake, "getUpdates", json!({"offset": ids[2] + 1})).await;
    assert_eq!(b["result"], json!([]));
    let (_, b) = tg(
        &fake,
        "getUpdates",
        json!({"allowed_updates": ["message_reaction"]}),
    )
    .await;
    assert_eq!(b["result"].as_array().map(Vec::len), Some(1));
    let (_, b) = tg(&fake, "getUpdates", json!({})).await;
    assert_eq!(b["result"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        fake.allowed_updates(),
        Some(vec!["message_reaction".into()])
    );
}

#[tokio::test]
async fn telegram_two_pollers_the_older_gets_409() {
    let fake = FakeTelegram::start().await;
    let url = format!("{}/getUpdates?timeout=50", fake.api_url());
    let older = tokio::spawn(async move {
        let r = client().get(url).send().await?;
        Ok::<_, reqwest::Error>((r.status().as_u16(), r.json::<Value>().await?))
    });
    fake.wait_for_pollers(1).await;
    let (status, body) = tg(&fake, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!((status, body["ok"].clone()), (200, json!(true)));
    let (status, body) = older.await.expect("join").expect("older poll answer");
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 409, "description":
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
    );
    assert_eq!(fake.max_pollers(), 2);
}

#[tokio::test]
async fn telegram_webhook_blocks_polling_carries_the_secret_and_is_retried() {
    let fake = FakeTelegram::start_with(TelegramConfig {
        webhook_retry_initial: Duration::from_millis(10),
        ..TelegramConfig::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(200)]);
    // setWebhook as a form, the way the secret is usually sent.
    let r = client()
        .post(format!("{}/setWebhook", fake.api_url()))
        .form(&[
            ("url", receiver.url().as_str()),
            ("secret_token", "s3cr3t_TOKEN-1"),
        ])
        .send()
        .await
        .expect("setWebhook");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["description"], "Webhook was set");
    let (status, body) = tg(&fake, "getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    );
    assert_eq!(fake.max_pollers(), 0, "a refused getUpdates is no poller");
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "via webhook"));
    let deliveries = fake.wait_for_deliveries(2).await;
    assert_eq!(
        deliveries
            .iter()
            .map(|d| (d.update_id, d.attempt, d.status))
            .collect::<Vec<_>>(),
        vec![
            (pushed.update_id, 1, Some(500)),
            (pushed.update_id, 2, Some(200))
        ]
    );
    fake.wait_for_confirmed(pushed.update_id).await;
    let got = receiver.wait_for(2).await;
    for g in &got {
        assert_eq!(
            g.headers
                .get("x-telegram-bot-api-secret-token")
                .and_then(|v| v.to_str().ok()),
            Some("s3cr3t_TOKEN-1")
        );
        assert_eq!(g.json()["message"]["text"], "via webhook");
    }
    let (_, info) = tg(&fake, "getWebhookInfo", json!({})).await;
    assert_eq!(info["result"]["url"], receiver.url());
    assert_eq!(info["result"]["pending_update_count"], 0);
    assert!(
        info["result"]["last_error_message"]
            .as_str()
            .is_some_and(|m| m.contains("500")),
        "{info}"
    );
    let (_, b) = tg(
        &fake,
        "setWebhook",
        json!({"url": "x", "secret_token": "bad token!"}),
    )
    .await;
    assert_eq!(b["error_code"], 400);
    let (_, b) = tg(&fake, "deleteWebhook", json!({})).await;
    assert_eq!(b["description"], "Webhook was deleted");
    let (status, _) = tg(&fake, "getUpdates", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn telegram_send_message_checks_length_markup_chat_and_reply() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "hi"));
    let (status, b) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": 4242, "text": "<b>bold</b> &amp; plain", "parse_mode": "HTML",
            "reply_parameters": {"message_id": pushed.message_id}}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    let first = b["result"]["message_id"].as_i64().expect("message_id");
    assert!(first > pushed.message_id);
    assert_eq!(b["result"]["text"], "bold & plain");
    assert_eq!(b["result"]["reply_to_message"]["text"], "hi");
    assert_eq!(b["result"]["from"]["is_bot"], true);
    // The legacy reply field, as a form.
    let r = client()
        .post(format!("{}/sendMessage", fake.api_url()))
        .form(&[
            ("chat_id", "4242"),
            ("text", "second"),
            ("reply_to_message_id", &pushed.message_id.to_string()),
        ])
        .send()
        .await
        .expect("form send");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["result"]["message_id"], first + 1);
    assert_eq!(
        b["result"]["reply_to_message"]["message_id"],
        pushed.message_id
    );
    let cases = [
        (
            json!({"chat_id": 4242, "text": "x".repeat(4097)}),
            "Bad Request: message is too long",
        ),
        (
            json!({"chat_id": 4242, "text": ""}),
            "Bad Request: message text is empty",
        ),
        (
            json!({"chat_id": 999, "text": "x"}),
            "Bad Request: chat not found",
        ),
        (
            json!({"chat_id": 4242, "text": "a<br>b", "parse_mode": "HTML"}),
            "Bad Request: can't parse entities: Unsupported start tag \"br\" at byte offset 1",
        ),
        (
            json!({"chat_id": 4242, "text": "Done.", "parse_mode": "MarkdownV2"}),
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
        ),
        (
            json!({"chat_id": 4242, "text": "x", "reply_parameters": {"message_id": 9999}}),
            "Bad Request: message to be replied not found",
        ),
    ];
    for (body, want) in cases {
        let (status, b) = tg(&fake, "sendMessage", body.clone()).await;
        assert_eq!(
            (status, b["description"].as_str()),
            (400, Some(want)),
            "{body}"
        );
    }
    // 4096 characters (multi-byte ones) is still fine.
    let (status, _) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": 4242, "text": "é".repeat(4096)}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fake.sent(4242).len(), 3);
    assert_eq!(fake.wait_for_sent(4242, 3).await[1]["text"], "second");
    let (status, _) = tg(
        &fake,
        "sendChatAction",
        json!({"chat_id": 4242, "action": "typing"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = tg(
        &fake,
        "sendChatAction",
        json!({"chat_id": 4242, "action": "dancing"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fake.chat_actions().len(), 1);
}

#[tokio::test]
async fn telegram_edit_not_modified_and_not_found() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "hi"));
    let (_, b) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": 4242, "text": "draft"}),
    )
    .await;
    let id = b["result"]["message_id"].clone();
    let (status, b) = tg(
        &fake,
        "editMessageText",
        json!({"chat_id": 4242, "message_id": id, "text": "final"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b["result"]["text"], "final");
    assert!(b["result"]["edit_date"].is_i64());
    let (status, b) = tg(
        &fake,
        "editMessageText",
        json!({"chat_id": 4242, "message_id": id, "text": "final"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        b["description"],
        "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
    );
    let (_, b) = tg(
        &fake,
        "editMessageText",
        json!({"chat_id": 4242, "message_id": 777, "text": "x"}),
    )
    .await;
    assert_eq!(b["description"], "Bad Request: message to edit not found");
    let (_, b) = tg(
        &fake,
        "editMessageText",
        json!({"chat_id": 4242, "message_id": pushed.message_id, "text": "x"}),
    )
    .await;
    assert_eq!(b["description"], "Bad Request: message can't be edited");
    assert_eq!(fake.sent_texts(4242), ["final"]);
}

#[tokio::test]
async fn telegram_files_both_ways() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    // Inbound: a user's photo the bot downloads with getFile.
    let photo = fake.add_file(b"\x89PNG fake image", "cat.png", "image/png");
    fake.push(UserMessage::photo(&chat, &user, &photo, Some("a cat")));
    let (_, b) = tg(&fake, "getUpdates", json!({})).await;
    let sizes = b["result"][0]["message"]["photo"]
        .as_array()
        .expect("photo[]")
        .clone();
    assert_eq!(sizes.len(), 2);
    assert_eq!(b["result"][0]["message"]["caption"], "a cat");
    let largest = sizes.last().expect("a size")["file_id"].clone();
    let (_, f) = tg(&fake, "getFile", json!({"file_id": largest})).await;
    let path = f["result"]["file_path"]
        .as_str()
        .expect("file_path")
        .to_string();
    let url = format!("{}/file/bot{}/{path}", fake.base_url(), fake.token());
    let bytes = client()
        .get(&url)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..], b"\x89PNG fake image");
    let wrong = format!("{}/file/bot1:nope/{path}", fake.base_url());
    assert_eq!(
        client()
            .get(wrong)
            .send()
            .await
            .expect("download")
            .status()
            .as_u16(),
        401
    );
    let downloads = fake.calls_of("file");
    assert_eq!(
        downloads.len(),
        1,
        "the wrong token's download is not this bot's"
    );
    assert_eq!(
        (
            downloads[0].status,
            downloads[0].params["file_path"].as_str()
        ),
        (Some(200), Some(path.as_str()))
    );
    let (_, b) = tg(&fake, "getFile", json!({"file_id": "nope"})).await;
    assert_eq!(b["description"], "Bad Request: invalid file_id");

    // Outbound: a multipart document upload, recorded with its bytes.
    let (ct, body) = Form::new()
        .text("chat_id", "4242")
        .text("caption", "<i>report</i>")
        .text("parse_mode", "HTML")
        .file(
            "document",
            "report.pdf",
            "application/pdf",
            b"%PDF-1.7 fake",
        )
        .finish();
    let r = client()
        .post(format!("{}/sendDocument", fake.api_url()))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("sendDocument");
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["result"]["document"]["file_name"], "report.pdf");
    assert_eq!(b["result"]["caption"], "report");
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1);
    let u = &uploads[0];
    assert_eq!(
        (
            u.method.as_str(),
            u.chat_id,
            u.source,
            u.file_name.as_deref(),
            u.mime_type.as_deref()
        ),
        (
            "sendDocument",
            4242,
            "upload",
            Some("report.pdf"),
            Some("application/pdf")
        )
    );
    assert_eq!(&u.data[..], b"%PDF-1.7 fake");
    assert_eq!(u.caption.as_deref(), Some("<i>report</i>"));
    let call = fake.calls_of("sendDocument").pop().expect("recorded call");
    assert_eq!(call.params["chat_id"], "4242");
    assert_eq!(
        call.part("document")
            .and_then(|p| p.file_name.clone())
            .as_deref(),
        Some("report.pdf")
    );
    // Re-sent by file_id, and a bad file id.
    let (status, _) = tg(
        &fake,
        "sendPhoto",
        json!({"chat_id": 4242, "photo": photo.file_id}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, b) = tg(
        &fake,
        "sendPhoto",
        json!({"chat_id": 4242, "photo": "garbage"}),
    )
    .await;
    assert_eq!(
        b["description"],
        "Bad Request: wrong file identifier/HTTP URL specified"
    );
}

#[tokio::test]
async fn telegram_fault_injection_answers_429_5xx_and_hangs_until_resumed() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    fake.push(UserMessage::text(&chat, &user, "hi"));
    fake.fail_next("sendMessage", 1, TgFault::RetryAfter(3));
    fake.fail_next("sendMessage", 1, TgFault::Status(502));
    let send = json!({"chat_id": 4242, "text": "x"});
    let (status, b) = tg(&fake, "sendMessage", send.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(
        b,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3}})
    );
    let (status, b) = tg(&fake, "sendMessage", send.clone()).await;
    assert_eq!(
        (status, b["description"].as_str()),
        (502, Some("Bad Gateway"))
    );
    fake.hold();
    let api = fake.api_url();
    let body = send.clone();
    let held = tokio::spawn(async move {
        client()
            .post(format!("{api}/sendMessage"))
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    fake.wait_for_hanging(1).await;
    assert!(
        fake.sent(4242).is_empty(),
        "a held call must not be processed"
    );
    fake.resume();
    assert_eq!(held.await.expect("join").expect("answer"), 200);
    assert_eq!(fake.wait_for_sent(4242, 1).await.len(), 1);
    let statuses: Vec<_> = fake
        .calls_of("sendMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [Some(429), Some(502), Some(200)]);
}

#[tokio::test]
async fn telegram_groups_topics_and_replies_are_shaped_as_documented() {
    let fake = FakeTelegram::start().await;
    let forum = Chat::forum(-100_123, "Team");
    let bob = User::new(7, "Bob").username("bob_the_user");
    let first = fake.push(UserMessage::text(&forum, &bob, "hello all").in_topic(5));
    fake.push(
        UserMessage::text(&forum, &bob, "@pincer_test_bot look")
            .in_topic(5)
            .reply_to(first.message_id),
    );
    let (_, b) = tg(&fake, "getUpdates", json!({})).await;
    let m = &b["result"][1]["message"];
    assert_eq!(m["chat"]["type"], "supergroup");
    assert_eq!(m["chat"]["is_forum"], true);
    assert_eq!(m["message_thread_id"], 5);
    assert_eq!(m["is_topic_message"], true);
    assert_eq!(m["reply_to_message"]["text"], "hello all");
    assert_eq!(
        m["entities"][0],
        json!({"type": "mention", "offset": 0, "length": 16})
    );
    let (_, b) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": -100_123, "text": "ok", "message_thread_id": 5}),
    )
    .await;
    assert_eq!(b["result"]["message_thread_id"], 5);
    let (_, b) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": -100_123, "text": "ok", "message_thread_id": 1}),
    )
    .await;
    assert_eq!(b["description"], "Bad Request: message thread not found");
}

/// HMAC-SHA256 written out from RFC 2104 over `sha2`: an oracle
/// independent of the `hmac` crate the fake signs with.
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[test]
fn hmac_oracle_matches_the_reference_vector() {
    assert_eq!(
        hmac_sha256_hex(b"secret", b"test"),
        "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    );
}

#[tokio::test]
async fn whatsapp_pushes_are_signed_documented_and_redelivered_identically() {
    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let receiver = Receiver::start().await;
    let alice = Contact::new("15551234567", "Alice");
    let bob = Contact::new("15557654321", "Bob");
    let doc = wa.add_media(b"%PDF fake", "application/pdf", "a.pdf");
    let push = wa
        .batch()
        .text(&alice, "hello")
        .document(&bob, &doc, Some("see"))
        .reaction(&alice, "wamid.X", "👍")
        .status("wamid.OUT", "failed", &alice.wa_id, Some(131047))
        .build();
    assert_eq!(push.message_ids.len(), 3);
    assert_eq!(wa.push(&receiver.url(), &push).await.status, 200);
    assert_eq!(wa.push(&receiver.url(), &push).await.status, 200);
    wa.push_with(&receiver.url(), &push, Signature::Missing)
        .await;
    wa.push_with(&receiver.url(), &push, Signature::WrongKey)
        .await;
    let got = receiver.wait_for(4).await;
    let want = format!("sha256={}", hmac_sha256_hex(b"fake-app-secret", &push.body));
    let sig = |i: usize| {
        got[i]
            .headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(sig(0).as_deref(), Some(want.as_str()));
    // Redelivery: the same bytes, the same signature.
    assert_eq!(got[1].body, got[0].body);
    assert_eq!(sig(1), sig(0));
    assert_eq!(sig(2), None);
    assert!(sig(3).is_some_and(|s| s != want));
    let v = got[0].json();
    assert_eq!(v["object"], "whatsapp_business_account");
    let value = &v["entry"][0]["changes"][0]["value"];
    assert_eq!(v["entry"][0]["changes"][0]["field"], "messages");
    assert_eq!(
        value["metadata"]["phone_number_id"],
        wa.config().phone_number_id
    );
    assert_eq!(
        value["contacts"][0],
        json!({"profile": {"name": "Alice"}, "wa_id": "15551234567"})
    );
    assert_eq!(value["contacts"].as_array().map(Vec::len), Some(2));
    let msgs = value["messages"].as_array().expect("messages");
    assert_eq!(msgs[0]["text"]["body"], "hello");
    assert_eq!(msgs[0]["id"], push.message_ids[0].as_str());
    assert!(msgs[0]["timestamp"].is_string());
    assert_eq!(msgs[1]["document"]["id"], doc.id.as_str());
    assert_eq!(msgs[1]["document"]["filename"], "a.pdf");
    assert_eq!(msgs[2]["reaction"]["emoji"], "👍");
    assert_eq!(value["statuses"][0]["errors"][0]["code"], 131047);
}

#[tokio::test]
async fn whatsapp_verification_handshake_sends_the_hub_parameters() {
    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::get(|q: axum::extract::RawQuery| async move { q.0.unwrap_or_default() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let a = wa
        .verify_handshake(
            &format!("http://{addr}/hook"),
            "subscribe",
            "tok",
            "1158201444",
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        "hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1158201444"
    );
    server.abort();
}

async fn graph(wa: &FakeWhatsApp, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(wa.messages_url())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("messages call");
    (r.status().as_u16(), r.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn whatsapp_messages_endpoint_window_errors_reads_and_faults() {
    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let token = wa.config().access_token.clone();
    let text = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
        "to": "+1 555 123 4567", "type": "text", "text": {"body": "hi"}});
    // No inbound message yet: outside the 24-hour window.
    let (status, b) = graph(&wa, &token, text.clone()).await;
    assert_eq!((status, b["error"]["code"].clone()), (400, json!(131047)));
    let alice = Contact::new("15551234567", "Alice");
    let push = wa.batch().text(&alice, "hello").build();
    let (status, b) = graph(&wa, &token, text.clone()).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["messaging_product"], "whatsapp");
    assert_eq!(
        b["contacts"][0],
        json!({"input": "+1 555 123 4567", "wa_id": "15551234567"})
    );
    assert!(
        b["messages"][0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wamid."))
    );
    let (status, b) = graph(&wa, "wrong", text.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(b["error"]["code"], 190);
    assert_eq!(b["error"]["type"], "OAuthException");
    assert!(b["error"]["message"].is_string() && b["error"]["fbtrace_id"].is_string());
    let mut long = text.clone();
    long["text"]["body"] = json!("x".repeat(4097));
    let (status, b) = graph(&wa, &token, long).await;
    assert_eq!((status, b["error"]["code"].clone()), (400, json!(100)));
    // Read + typing takes an inbound message id.
    let read = json!({"messaging_product": "whatsapp", "status": "read",
        "message_id": push.message_ids[0], "typing_indicator": {"type": "text"}});
    let (status, b) = graph(&wa, &token, read).await;
    assert_eq!((status, b), (200, json!({"success": true})));
    let (status, _) = graph(
        &wa,
        &token,
        json!({"messaging_product": "whatsapp", "status": "read",
        "message_id": "wamid.unknown"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(wa.wait_for_reads(1).await[0].typing);
    // Injected errors, by code, with their documented statuses.
    for (code, status) in [
        (130429, 400),
        (131056, 400),
        (131026, 400),
        (4, 400),
        (80007, 400),
        (190, 401),
    ] {
        wa.fail_next("messages", 1, WaFault::Code(code));
        let (s, b) = graph(&wa, &token, text.clone()).await;
        assert_eq!(
            (s, b["error"]["code"].as_i64()),
            (status, Some(code)),
            "{b}"
        );
    }
    wa.fail_next("messages", 1, WaFault::Status(503));
    assert_eq!(graph(&wa, &token, text.clone()).await.0, 503);
    wa.fail_next("messages", 1, WaFault::Hang);
    let url = wa.messages_url();
    let body = text.clone();
    let tok = token.clone();
    let hung = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(tok)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wa.wait_for_hanging(1).await;
    wa.resume();
    assert_eq!(hung.await.expect("join").expect("answer"), 200);
    let sent = wa.wait_for_sent("15551234567", 2).await;
    assert_eq!(sent[0].text(), Some("hi"));
}

#[tokio::test]
async fn whatsapp_media_upload_lookup_and_bearer_download() {
    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let token = wa.config().access_token.clone();
    let v = &wa.config().api_version;
    let (ct, body) = Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", "image/jpeg")
        .file("file", "cat.jpg", "image/jpeg", b"\xff\xd8 jpeg bytes")
        .finish();
    let r = client()
        .post(format!(
            "{}/{v}/{}/media",
            wa.base_url(),
            wa.config().phone_number_id
        ))
        .bearer_auth(&token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status().as_u16(), 200);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("media id")
        .to_string();
    let up = wa.uploads();
    assert_eq!(up.len(), 1);
    assert_eq!(
        (up[0].file_name.as_deref(), &up[0].data[..]),
        (Some("cat.jpg"), &b"\xff\xd8 jpeg bytes"[..])
    );
    // Step 1: the media object; step 2: its URL, with the same bearer.
    let info: Value = client()
        .get(format!("{}/{v}/{id}", wa.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    assert_eq!(info["mime_type"], "image/jpeg");
    assert_eq!(info["file_size"], 13);
    assert_eq!(
        info["sha256"],
        hex::encode(Sha256::digest(b"\xff\xd8 jpeg bytes"))
    );
    let url = info["url"].as_str().expect("url");
    let anon = client().get(url).send().await.expect("download");
    assert_eq!(anon.status().as_u16(), 401);
    let bytes = client()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&bytes[..], b"\xff\xd8 jpeg bytes");
    // Sent as an image by id (inside the window).
    let alice = Contact::new("15551234567", "Alice");
    let _ = wa.batch().text(&alice, "send me a cat").build();
    let (status, _) = graph(
        &wa,
        &token,
        json!({"messaging_product": "whatsapp", "to": alice.wa_id,
        "type": "image", "image": {"id": id, "caption": "cat"}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, b) = graph(
        &wa,
        &token,
        json!({"messaging_product": "whatsapp", "to": alice.wa_id,
        "type": "image", "image": {"id": "123"}}),
    )
    .await;
    assert_eq!((status, b["error"]["code"].clone()), (400, json!(100)));
    assert_eq!(wa.sent(&alice.wa_id)[0].text(), Some("cat"));
    let unknown = client()
        .get(format!("{}/{v}/999", wa.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("lookup");
    assert_eq!(unknown.status().as_u16(), 400);
}

#[tokio::test]
async fn bare_bots_answer_through_the_fakes() {
    let tg_fake = FakeTelegram::start().await;
    let _bot = bare_bot::telegram(tg_fake.api_url(), 30);
    let (chat, user) = alice();
    tg_fake.push(UserMessage::text(&chat, &user, "ping"));
    assert_eq!(tg_fake.wait_for_sent(4242, 1).await[0]["text"], "ping");

    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let cfg = wa.config().clone();
    let bot = bare_bot::whatsapp(wa.messages_url(), cfg.access_token, cfg.app_secret).await;
    let alice = Contact::new("15551234567", "Alice");
    let push = wa.batch().text(&alice, "ping").build();
    assert_eq!(wa.push(bot.url(), &push).await.status, 200);
    assert_eq!(
        wa.push_with(bot.url(), &push, Signature::WrongKey)
            .await
            .status,
        401
    );
    assert_eq!(
        wa.wait_for_sent(&alice.wa_id, 1).await[0].text(),
        Some("ping")
    );
    assert!(whatsapp::verify(
        b"secret",
        b"test",
        &whatsapp::sign(b"secret", b"test")
    ));
}

#[tokio::test]
async fn telegram_a_dropped_fake_ends_its_open_long_polls() {
    let fake = FakeTelegram::start().await;
    let url = format!("{}/getUpdates?timeout=50", fake.api_url());
    let poll = tokio::spawn(async move { client().get(url).send().await });
    fake.wait_for_pollers(1).await;
    drop(fake);
    // The connection is closed, not left open until the poll's timeout.
    assert!(poll.await.expect("join").is_err());
}

#[tokio::test]
async fn telegram_webhook_timeouts_are_recorded_and_retried() {
    let fake = FakeTelegram::start_with(TelegramConfig {
        webhook_timeout: Duration::from_millis(200),
        webhook_retry_initial: Duration::from_millis(10),
        ..TelegramConfig::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // The first delivery is never answered; the second is.
    receiver.script([Reply::Hold, Reply::Status(200)]);
    let (_, b) = tg(&fake, "setWebhook", json!({"url": receiver.url()})).await;
    assert_eq!(b["result"], true);
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "slow"));
    let d = fake.wait_for_deliveries(2).await;
    assert_eq!(
        (d[0].status, d[0].error.as_deref()),
        (None, Some("Read timeout expired"))
    );
    assert_eq!(
        (d[1].update_id, d[1].attempt, d[1].status),
        (pushed.update_id, 2, Some(200))
    );
    assert_eq!(d[1].secret_token, None);
    receiver.release();
}

#[tokio::test]
async fn whatsapp_templates_need_no_window() {
    let wa = FakeWhatsApp::start(WhatsAppConfig::default()).await;
    let token = wa.config().access_token.clone();
    let (status, b) = graph(
        &wa,
        &token,
        json!({"messaging_product": "whatsapp", "to": "15550001111", "type": "template",
            "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["messages"][0]["message_status"], "accepted");
    let (status, b) = graph(
        &wa,
        &token,
        json!({"messaging_product": "whatsapp", "to": "15550001111", "type": "template",
            "template": {"name": "hello_world"}}),
    )
    .await;
    assert_eq!((status, b["error"]["code"].clone()), (400, json!(100)));
    let call = wa.calls_of("messages").pop().expect("recorded");
    assert_eq!(
        call.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

#[tokio::test]
async fn telegram_drafts_deletes_reactions_and_commands() {
    let fake = FakeTelegram::start().await;
    let (chat, user) = alice();
    let pushed = fake.push(UserMessage::text(&chat, &user, "hi"));
    let (status, _) = tg(
        &fake,
        "sendMessageDraft",
        json!({"chat_id": 4242, "draft_id": 7, "text": ""}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = tg(
        &fake,
        "sendMessageDraft",
        json!({"chat_id": 4242, "draft_id": 7, "text": "<b>Think</b>ing", "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, b) = tg(
        &fake,
        "sendMessageDraft",
        json!({"chat_id": 4242, "draft_id": 0, "text": "x"}),
    )
    .await;
    assert_eq!(b["error_code"], 400);
    let group = Chat::group(-5, "G");
    fake.add_chat(&group);
    let (_, b) = tg(
        &fake,
        "sendMessageDraft",
        json!({"chat_id": -5, "draft_id": 1, "text": "x"}),
    )
    .await;
    assert_eq!(b["error_code"], 400, "drafts are for private chats");
    let texts: Vec<_> = fake
        .drafts()
        .into_iter()
        .map(|d| (d.draft_id, d.text))
        .collect();
    assert_eq!(texts, [(7, String::new()), (7, "Thinking".to_string())]);

    let (status, _) = tg(
        &fake,
        "setMessageReaction",
        json!({"chat_id": 4242, "message_id": pushed.message_id, "reaction": [{"type": "emoji", "emoji": "👀"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, b) = tg(
        &fake,
        "sendMessage",
        json!({"chat_id": 4242, "text": "bye"}),
    )
    .await;
    let id = b["result"]["message_id"].clone();
    let (_, b) = tg(
        &fake,
        "deleteMessage",
        json!({"chat_id": 4242, "message_id": pushed.message_id}),
    )
    .await;
    assert_eq!(
        b["description"], "Bad Request: message to delete not found",
        "a user's DM message"
    );
    let (status, _) = tg(
        &fake,
        "deleteMessage",
        json!({"chat_id": 4242, "message_id": id}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(fake.sent(4242).is_empty());

    let commands = json!([{"command": "start", "description": "Start"}]);
    let (status, _) = tg(&fake, "setMyCommands", json!({"commands": commands})).await;
    assert_eq!(status, 200);
    let (_, b) = tg(&fake, "getMyCommands", json!({})).await;
    assert_eq!(b["result"], commands);
    let (_, b) = tg(
        &fake,
        "setMyCommands",
        json!({"commands": [{"command": "Bad-Name", "description": "x"}]}),
    )
    .await;
    assert_eq!(b["error_code"], 400);
}
