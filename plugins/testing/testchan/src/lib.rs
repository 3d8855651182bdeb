//! `testchan`: a poll-mode channel for the host's tests, steered through its
//! key-value store (which tests write through the host's store API).
//!
//! Inbound:
//! - `inbox`: a JSON list of messages for the next poll. Each is
//!   `{id, conversation, text}` plus, optionally, `sender` (default `tester`),
//!   `sender_name`, `chat_type` (`direct`, `group`, `channel`), `thread`,
//!   `mentioned`, `sender_is_bot`, `reply_to` (an id, or
//!   `{id, sender?, text?, from_bot_self?}`), `attachments`
//!   (`[{kind, handle, mime_type?, size?, file_name?}]`, kind one of `image`,
//!   `audio`, `voice`, `video`, `document`, `sticker`), `reaction`
//!   (`{message_id, emoji}`) and `timestamp` (default: the host's clock).
//!   A poll moves the inbox into a log of numbered chunks (`log/<seq>`, at
//!   most 1,000 messages each) and returns every chunk after the cursor the
//!   host passed, with the last chunk's number as the new cursor. So a host
//!   that polls again with an old cursor gets the same messages again, and a
//!   chunk is deleted only once a poll's cursor shows the host committed it.
//! - `last_cursor`: the cursor the host passed to the latest poll (`none` for
//!   none).
//!
//! Outbound: `send` answers `t<n>` (`n` from an atomic counter) and stores the
//! text under `sent/<id, zero-padded to 6>`. Every outbound operation (`send`,
//! `edit`, `draft`, `typing`, `mark_read`) is also recorded as JSON under
//! `out/<seq, 8 digits>` in call order (`op` and its arguments).
//!
//! Steering:
//! - `caps`: JSON overriding the capabilities `describe` reports (read when
//!   the host loads the plugin): `edit`, `typing`, `read_receipts`,
//!   `attachments` (bools), `max_message_length`, `min_edit_interval_ms`,
//!   `typing_ttl_ms` (numbers), `streaming` (`final-only`, `edit`, `draft`).
//!   The default is a poll channel with nothing optional.
//! - `fail/<op>` (`op` = `poll`, `send`, `edit`, `draft`, `typing`,
//!   `mark_read`, `fetch_attachment`): a JSON list of errors the next calls
//!   return, one per call: `transient`, `permanent`, `auth`, `config`,
//!   `formatting`, `unsupported` or `rate-limited:<ms>`.
//! - `hold/send`: while this key exists, `send` (after recording
//!   `holding/send` = the number of calls held so far) waits in 20 ms steps
//!   before doing anything: a send in flight for as long as the test likes;
//! - `last_activity`: the value `last-activity` reports (else the SDK's record);
//! - `restart`: `fail` makes `restart` fail, `hang` makes it never return;
//! - `start`: `fail` makes `start` fail (so re-creating the instance fails too).
//!
//! `fetch_attachment` answers a GET of the config key `attachment_base`
//! followed by the handle (unsupported without it). Poll waits in short steps
//! for the host-given wait unless messages are pending. `name` reports
//! `testchan` plus the config key `suffix`, so tests can tell versions apart.

use std::cell::RefCell;

use pincer_sdk::{
    Attachment, AttachmentKind, Capabilities, Channel, ChatTarget, ChatType, Config,
    DownloadRequest, Error, InboundMessage, OutboundMessage, PollBatch, Reaction, ReceiveMode,
    RepliedMessage, StreamStyle, TextFormat, clock, kv,
};
use serde_json::{Value, json};

thread_local! {
    static SUFFIX: RefCell<String> = const { RefCell::new(String::new()) };
    static ATTACHMENT_BASE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Most messages one log chunk holds (keeps each value well under 1 MiB).
const CHUNK: usize = 1_000;

struct TestChan;

/// The error the test queued for the next call of `op`, if any.
fn scripted_failure(op: &str) -> Result<(), Error> {
    let key = format!("fail/{op}");
    let mut popped: Option<String> = None;
    kv::update(&key, |current| {
        popped = None;
        let mut list: Vec<String> = current
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        if list.is_empty() {
            return None;
        }
        popped = Some(list.remove(0));
        (!list.is_empty()).then(|| serde_json::to_vec(&list).unwrap_or_default())
    })?;
    let Some(spec) = popped else {
        return Ok(());
    };
    let msg = format!("{op} failure requested by the test");
    Err(match spec.as_str() {
        "transient" => Error::Transient(msg),
        "permanent" => Error::Permanent(msg),
        "auth" => Error::Auth(msg),
        "config" => Error::Config(msg),
        "formatting" => Error::Formatting(msg),
        "unsupported" => Error::Unsupported(msg),
        other => match other
            .strip_prefix("rate-limited:")
            .and_then(|ms| ms.parse().ok())
        {
            Some(retry_after_ms) => Error::RateLimited {
                retry_after_ms,
                message: msg,
            },
            None => Error::Permanent(format!("testchan: unknown failure {other:?}")),
        },
    })
}

/// Move the test-written inbox into numbered log chunks (refusing it, left
/// in place, if a message is malformed). The inbox is removed only if nobody replaced it meanwhile (else the chunks are undone
/// and the fresh inbox moved instead), so no message written by a test is lost.
fn absorb_inbox() -> Result<(), Error> {
    loop {
        let Some(raw) = kv::get("inbox")? else {
            return Ok(());
        };
        let list: Vec<Value> = serde_json::from_slice(&raw)
            .map_err(|e| Error::permanent(format!("testchan: inbox is not a JSON list: {e}")))?;
        // Refuse a malformed message while it is still in the inbox, so the
        // test can fix it and nothing already logged is blocked behind it.
        for m in &list {
            message(m)?;
        }
        let mut written = Vec::new();
        for chunk in list.chunks(CHUNK) {
            let seq = kv::increment("log_seq", 1)?;
            let key = log_key(seq);
            kv::set(&key, &serde_json::to_vec(chunk)?)?;
            written.push(key);
        }
        if kv::compare_and_swap("inbox", Some(&raw), None)? {
            return Ok(());
        }
        for key in written {
            kv::delete(&key)?;
        }
    }
}

fn log_key(seq: i64) -> String {
    format!("log/{seq:010}")
}

/// Every logged message after `cursor`, and the number of the last chunk read.
fn read_after(cursor: i64) -> Result<(Vec<InboundMessage>, i64), Error> {
    let last: i64 = kv::get_string("log_seq")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    for seq in cursor + 1..=last {
        if let Some(list) = kv::get_json::<Vec<Value>>(&log_key(seq))? {
            for m in &list {
                out.push(message(m)?);
            }
        }
    }
    Ok((out, last))
}

/// Forget chunks the host has committed (those up to `cursor`).
fn prune(cursor: i64) -> Result<(), Error> {
    for key in kv::list_keys("log/")? {
        match key["log/".len()..].parse::<i64>() {
            Ok(seq) if seq <= cursor => kv::delete(&key)?,
            _ => break,
        }
    }
    Ok(())
}

fn message(m: &Value) -> Result<InboundMessage, Error> {
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    let chat_type = match s("chat_type").as_deref() {
        None | Some("direct") => ChatType::Direct,
        Some("group") => ChatType::Group,
        Some("channel") => ChatType::Channel,
        Some(other) => return Err(Error::permanent(format!("testchan: chat_type {other:?}"))),
    };
    let reply_to = match m.get("reply_to") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(RepliedMessage {
            id: id.clone(),
            sender: None,
            text: None,
            from_bot_self: false,
        }),
        Some(r) => Some(RepliedMessage {
            id: r
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            sender: r.get("sender").and_then(Value::as_str).map(Into::into),
            text: r.get("text").and_then(Value::as_str).map(Into::into),
            from_bot_self: r
                .get("from_bot_self")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
    };
    let attachments = m
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(attachment)
        .collect::<Result<Vec<_>, _>>()?;
    let reaction = m.get("reaction").map(|r| Reaction {
        message_id: r
            .get("message_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
        emoji: r
            .get("emoji")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
    });
    let base = pincer_sdk::inbound(
        &s("id").unwrap_or_default(),
        &s("conversation").unwrap_or_default(),
        &s("sender").unwrap_or_else(|| "tester".into()),
        &s("text").unwrap_or_default(),
    );
    Ok(InboundMessage {
        chat_type,
        thread: s("thread"),
        sender_name: s("sender_name"),
        sender_is_bot: flag("sender_is_bot"),
        mentioned: flag("mentioned"),
        reply_to,
        attachments,
        reaction,
        timestamp: m
            .get("timestamp")
            .and_then(Value::as_u64)
            .unwrap_or(base.timestamp),
        ..base
    })
}

fn attachment(a: &Value) -> Result<Attachment, Error> {
    let kind = match a.get("kind").and_then(Value::as_str).unwrap_or("document") {
        "image" => AttachmentKind::Image,
        "audio" => AttachmentKind::Audio,
        "voice" => AttachmentKind::Voice,
        "video" => AttachmentKind::Video,
        "document" => AttachmentKind::Document,
        "sticker" => AttachmentKind::Sticker,
        other => {
            return Err(Error::permanent(format!(
                "testchan: attachment kind {other:?}"
            )));
        }
    };
    Ok(Attachment {
        kind,
        mime_type: a.get("mime_type").and_then(Value::as_str).map(Into::into),
        size: a.get("size").and_then(Value::as_u64),
        file_name: a.get("file_name").and_then(Value::as_str).map(Into::into),
        handle: a
            .get("handle")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
    })
}

/// Record one outbound operation under `out/<seq>`.
fn record(op: &str, mut fields: Value) -> Result<(), Error> {
    fields["op"] = json!(op);
    let seq = kv::increment("out_seq", 1)?;
    kv::set_json(&format!("out/{seq:08}"), &fields)
}

fn format_name(format: TextFormat) -> &'static str {
    match format {
        TextFormat::Plain => "plain",
        TextFormat::Markdown => "markdown",
    }
}

fn target_json(target: &ChatTarget) -> Value {
    json!({
        "conversation": target.conversation,
        "thread": target.thread,
        "message_id": target.message_id,
    })
}

fn caps_override(caps: &mut Capabilities, o: &Value) {
    let flag = |k: &str, v: &mut bool| {
        if let Some(b) = o.get(k).and_then(Value::as_bool) {
            *v = b;
        }
    };
    flag("edit", &mut caps.edit);
    flag("typing", &mut caps.typing);
    flag("read_receipts", &mut caps.read_receipts);
    flag("attachments", &mut caps.attachments);
    let num = |k: &str, v: &mut u32| {
        if let Some(n) = o
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
        {
            *v = n;
        }
    };
    num("max_message_length", &mut caps.max_message_length);
    num("min_edit_interval_ms", &mut caps.min_edit_interval_ms);
    num("typing_ttl_ms", &mut caps.typing_ttl_ms);
    match o.get("streaming").and_then(Value::as_str) {
        Some("final-only") => caps.streaming = StreamStyle::FinalOnly,
        Some("edit") => caps.streaming = StreamStyle::Edit,
        Some("draft") => caps.streaming = StreamStyle::Draft,
        _ => {}
    }
}

impl Channel for TestChan {
    fn name() -> String {
        format!("testchan{}", SUFFIX.with(|s| s.borrow().clone()))
    }

    fn capabilities() -> Capabilities {
        let mut caps = pincer_sdk::capabilities(ReceiveMode::Poll);
        if let Ok(Some(o)) = kv::get_json::<Value>("caps") {
            caps_override(&mut caps, &o);
        }
        caps
    }

    fn start(config: Config) -> Result<(), Error> {
        if kv::get_string("start")?.as_deref() == Some("fail") {
            return Err(Error::Auth("start failure requested by the test".into()));
        }
        SUFFIX.with(|s| *s.borrow_mut() = config.get_or("suffix", "").to_string());
        ATTACHMENT_BASE.with(|b| *b.borrow_mut() = config.get("attachment_base").map(Into::into));
        Ok(())
    }

    fn poll(cursor: Option<String>, wait_ms: u32) -> Result<PollBatch, Error> {
        kv::set_string("last_cursor", cursor.as_deref().unwrap_or("none"))?;
        scripted_failure("poll")?;
        let after = match cursor.as_deref() {
            None => 0,
            Some(c) => c
                .parse::<i64>()
                .map_err(|_| Error::permanent(format!("testchan: cursor {c:?} is not mine")))?,
        };
        prune(after)?;
        // Wait in short steps so new inbox entries are seen promptly. (Steps
        // are counted, not timed: tests run the host clock by hand.)
        let steps = wait_ms.div_ceil(20);
        for step in 0..=steps {
            if step > 0 {
                clock::sleep_ms(20);
            }
            absorb_inbox()?;
            let (messages, last) = read_after(after)?;
            if !messages.is_empty() {
                return Ok(PollBatch {
                    messages,
                    cursor: Some(last.to_string()),
                });
            }
        }
        Ok(PollBatch {
            messages: vec![],
            cursor: None,
        })
    }

    fn send(message: OutboundMessage) -> Result<String, Error> {
        if kv::get("hold/send")?.is_some() {
            kv::increment("holding/send", 1)?;
            while kv::get("hold/send")?.is_some() {
                clock::sleep_ms(20);
            }
        }
        scripted_failure("send")?;
        let id = format!("t{}", kv::increment("sent_seq", 1)?);
        kv::set_string(&format!("sent/{id:0>6}"), &message.text)?;
        let attachments: Vec<Value> = message
            .attachments
            .iter()
            .map(|a| {
                json!({
                    "blob": a.blob, "file_name": a.file_name, "mime_type": a.mime_type,
                    "size": a.size, "caption": a.caption,
                })
            })
            .collect();
        record(
            "send",
            json!({
                "id": id,
                "conversation": message.conversation,
                "thread": message.thread,
                "text": message.text,
                "format": format_name(message.format),
                "reply_to": message.reply_to,
                "attachments": attachments,
            }),
        )?;
        Ok(id)
    }

    fn edit(
        conversation: String,
        message_id: String,
        text: String,
        format: TextFormat,
    ) -> Result<(), Error> {
        scripted_failure("edit")?;
        record(
            "edit",
            json!({
                "conversation": conversation, "message_id": message_id,
                "text": text, "format": format_name(format),
            }),
        )
    }

    fn draft(target: ChatTarget, draft_id: u64, text: String) -> Result<(), Error> {
        scripted_failure("draft")?;
        let mut fields = target_json(&target);
        fields["draft_id"] = json!(draft_id);
        fields["text"] = json!(text);
        record("draft", fields)
    }

    fn typing(target: ChatTarget) -> Result<(), Error> {
        scripted_failure("typing")?;
        record("typing", target_json(&target))
    }

    fn mark_read(target: ChatTarget) -> Result<(), Error> {
        scripted_failure("mark_read")?;
        record("mark_read", target_json(&target))
    }

    fn fetch_attachment(handle: String) -> Result<DownloadRequest, Error> {
        scripted_failure("fetch_attachment")?;
        let Some(base) = ATTACHMENT_BASE.with(|b| b.borrow().clone()) else {
            return Err(Error::unsupported(
                "fetch-attachment (no `attachment_base` configured)",
            ));
        };
        Ok(DownloadRequest {
            url: format!("{base}{handle}"),
            headers: vec![],
            mime_type: None,
            file_name: None,
        })
    }

    fn last_activity() -> u64 {
        match kv::get_string("last_activity") {
            Ok(Some(v)) => v.parse().unwrap_or(0),
            _ => pincer_sdk::last_touched(),
        }
    }

    fn restart() -> Result<(), Error> {
        match kv::get_string("restart")?.as_deref() {
            Some("fail") => Err(Error::Transient(
                "restart failure requested by the test".into(),
            )),
            Some("hang") => loop {
                clock::sleep_ms(60_000);
            },
            _ => Ok(()),
        }
    }
}

pincer_sdk::export_channel!(TestChan);
