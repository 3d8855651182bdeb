//! The behaviour every store backend must show, as one suite run against
//! each: [`CASES`] are backend-agnostic checks of every store trait (the
//! SQLite store's own unit tests, ported to [`Store`]); the SQLite run is a
//! unit test below, the PostgreSQL run is `tests/tests/store_postgres.rs`.
//!
//! A case gets an opener: each call opens the same database again (a new
//! process would), so a case can check what survives a reopen.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};

use super::{
    ApproveOutcome, Attempt, DeliveryState, DeliveryStatus, DeviceRecord, InDoubt, InboxLink,
    InboxSettled, NewInbound, NewMessage, NewOutbound, NewSession, PairRequest, PairingNotice,
    PairingRequest, RequestOutcome, Settle, SharedStore, StoreError, WebhookEndpoint,
};

/// Opens the case's database (again).
pub type Opener<'a> = &'a dyn Fn() -> anyhow::Result<SharedStore>;

/// One check: its name and body.
pub type Case = (&'static str, fn(Opener<'_>) -> anyhow::Result<()>);

/// Opens a case's database: called once per case with its name, returns
/// the case's opener.
pub type CaseOpener<'a> =
    &'a dyn Fn(&str) -> anyhow::Result<Box<dyn Fn() -> anyhow::Result<SharedStore>>>;

/// Every check, in order.
pub const CASES: &[Case] = &[
    ("kv", kv),
    ("kv_compare_and_swap", kv_compare_and_swap),
    (
        "kv_swaps_from_two_handles_lose_nothing",
        kv_swaps_from_two_handles_lose_nothing,
    ),
    ("sessions_reset_delete_patch", sessions_reset_delete_patch),
    ("events_sequenced_per_scope", events_sequenced_per_scope),
    (
        "pruning_keeps_each_scopes_newest",
        pruning_keeps_each_scopes_newest,
    ),
    (
        "concurrent_appends_contiguous",
        concurrent_appends_contiguous,
    ),
    (
        "a_runs_user_message_is_appended_once",
        a_runs_user_message_is_appended_once,
    ),
    (
        "a_runs_answer_is_appended_once",
        a_runs_answer_is_appended_once,
    ),
    ("devices_pair_requests_tokens", devices_pair_requests_tokens),
    (
        "webhooks_fan_out_attempts_replay",
        webhooks_fan_out_attempts_replay,
    ),
    ("inbox_dedupe_cursor_settle", inbox_dedupe_cursor_settle),
    ("outbox_order_and_settling", outbox_order_and_settling),
    ("outbox_in_doubt_after_reopen", outbox_in_doubt_after_reopen),
    ("outbox_statuses", outbox_statuses),
    ("pairing", pairing),
];

/// Run every case, each on the database `open_case(name)` returns an
/// opener for; all failures are reported together, named by case.
pub fn run_all(open_case: CaseOpener<'_>) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let result = open_case(name).and_then(|open| case(&*open));
        if let Err(e) = result {
            failed.push(format!("{name}: {e:#}"));
        }
    }
    ensure!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    Ok(())
}

fn user(text: &str) -> NewMessage {
    NewMessage {
        role: "user".into(),
        content: json!([{"type": "text", "text": text}]),
        event: Some("message.received"),
        ..Default::default()
    }
}

fn kv(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    s.set("p", "a/1", b"one")?;
    s.set("p", "a/2", b"two")?;
    s.set("p", "b/1", b"")?;
    s.set("q", "a/1", b"other plugin")?;
    s.set("p", "a/1", b"uno")?;
    ensure!(s.get("p", "a/1")? == Some(b"uno".to_vec()));
    ensure!(s.get("p", "b/1")? == Some(Vec::new()));
    ensure!(s.get("p", "zz")?.is_none());
    ensure!(s.list_keys("p", "a/", 10)? == ["a/1", "a/2"]);
    ensure!(s.list_keys("p", "", 2)? == ["a/1", "a/2"]);
    ensure!(s.list_keys("p", "%", 10)?.is_empty(), "no LIKE patterns");
    let u = s.usage("p")?;
    ensure!((u.keys, u.bytes) == (3, 3 + 3 + 3 + 3 + 3), "usage {u:?}");
    s.delete("p", "a/1")?;
    ensure!(s.get("p", "a/1")?.is_none());
    ensure!(matches!(
        s.set("p", &"k".repeat(2000), b"v"),
        Err(StoreError::Limit(_))
    ));
    drop(s);
    ensure!(
        open()?.get("q", "a/1")? == Some(b"other plugin".to_vec()),
        "kept"
    );
    Ok(())
}

fn kv_compare_and_swap(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    // Absent -> value, only while absent.
    ensure!(s.compare_and_swap("p", "k", None, Some(b"1"))?);
    ensure!(!s.compare_and_swap("p", "k", None, Some(b"2"))?);
    ensure!(s.get("p", "k")? == Some(b"1".to_vec()));
    // Value -> value, only from the expected one.
    ensure!(!s.compare_and_swap("p", "k", Some(b"9"), Some(b"2"))?);
    ensure!(s.compare_and_swap("p", "k", Some(b"1"), Some(b"2"))?);
    ensure!(
        s.compare_and_swap("p", "k", Some(b"2"), Some(b"2"))?,
        "same value"
    );
    // Another plugin's key of the same name is another key.
    ensure!(!s.compare_and_swap("q", "k", Some(b"2"), None)?);
    // Value -> deleted, only from the expected one; absent stays absent.
    ensure!(!s.compare_and_swap("p", "k", Some(b"1"), None)?);
    ensure!(s.compare_and_swap("p", "k", Some(b"2"), None)?);
    ensure!(s.get("p", "k")?.is_none());
    ensure!(s.compare_and_swap("p", "k", None, None)?);
    s.set("p", "k", b"")?;
    ensure!(
        !s.compare_and_swap("p", "k", None, None)?,
        "empty is not absent"
    );
    ensure!(s.compare_and_swap("p", "k", Some(b""), Some(b"x"))?);
    ensure!(matches!(
        s.compare_and_swap("p", "k", Some(b"x"), Some(&vec![0u8; (1 << 20) + 1])),
        Err(StoreError::Limit(_))
    ));
    Ok(())
}

/// Two handles on one database (two cluster nodes, or a process and the
/// operator's CLI) each add to one counter by compare-and-swap: no update
/// is lost, which an in-process lock alone cannot promise.
fn kv_swaps_from_two_handles_lose_nothing(open: Opener<'_>) -> anyhow::Result<()> {
    let handles = [open()?, open()?];
    let threads: Vec<_> = handles
        .iter()
        .map(|s| {
            let s = Arc::clone(s);
            std::thread::spawn(move || -> Result<u32, StoreError> {
                let mut retries = 0;
                for _ in 0..50 {
                    loop {
                        let old = s.get("p", "n")?;
                        let n: u64 = old
                            .as_deref()
                            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                            .unwrap_or(0);
                        let new = (n + 1).to_string();
                        if s.compare_and_swap("p", "n", old.as_deref(), Some(new.as_bytes()))? {
                            break;
                        }
                        retries += 1;
                    }
                }
                Ok(retries)
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))??;
    }
    ensure!(
        handles[0].get("p", "n")? == Some(b"100".to_vec()),
        "lost updates: {:?}",
        handles[0].get("p", "n")?.map(String::from_utf8)
    );
    Ok(())
}

fn sessions_reset_delete_patch(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    s.append_message("k", user("old one"))?;
    s.append_message("k", user("old two"))?;
    let before = s.get_session("k")?.context("missing")?;
    ensure!(before.message_count == 2);
    ensure!(before.last_preview.as_deref() == Some("old two"));
    let reset = s.reset_session("k")?.context("missing")?;
    ensure!(reset.session_id != before.session_id);
    ensure!(reset.message_count == 0 && reset.last_preview.is_none());
    ensure!(s.history("k", 10)?.is_empty());
    let fresh = s.append_message("k", user("new"))?;
    ensure!(fresh.seq == 1);
    ensure!(s.history("k", 10)? == vec![fresh]);
    ensure!(s.reset_session("nope")?.is_none());

    let patch = |v: Value| v.as_object().cloned().context("not an object");
    ensure!(s.patch_session("nope", &patch(json!({"a": 1}))?)?.is_none());
    s.patch_session("k", &patch(json!({"label": "x", "model": "m1"}))?)?;
    let p = s
        .patch_session(
            "k",
            &patch(json!({"model": null, "thinkingLevel": "high"}))?,
        )?
        .context("missing")?;
    ensure!(p.settings == patch(json!({"label": "x", "thinkingLevel": "high"}))?);

    let (_, created) = s.ensure_session("k2", &NewSession::default())?;
    ensure!(created);
    let (_, created) = s.ensure_session("k2", &NewSession::default())?;
    ensure!(!created);
    ensure!(s.count_sessions()? == 2);
    let listed: Vec<_> = s.list_sessions(10)?.into_iter().map(|e| e.key).collect();
    ensure!(listed.len() == 2 && listed.contains(&"k".to_owned()));
    ensure!(s.delete_session("k", true)?);
    ensure!(!s.delete_session("k", true)?);
    ensure!(s.get_session("k")?.is_none());
    // A recreated key starts empty.
    ensure!(s.history("k", 10)?.is_empty());
    let deleted: Vec<_> = s
        .events_after(0, 100)?
        .into_iter()
        .filter(|e| e.kind == "session.deleted")
        .map(|e| e.data["transcriptDeleted"].clone())
        .collect();
    ensure!(deleted == [json!(true)]);
    drop(s);
    let s = open()?;
    ensure!(s.get_session("k2")?.is_some(), "kept across a reopen");
    Ok(())
}

fn events_sequenced_per_scope(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let init = NewSession {
        channel: Some("echo".into()),
        conversation: Some("bob".into()),
        ..Default::default()
    };
    let (k1, _) = s.ensure_session("k1", &init)?;
    let m1 = s.append_message(
        "k1",
        NewMessage {
            run_id: Some("run-9".into()),
            ..user("hi there")
        },
    )?;
    s.append_message(
        "k1",
        NewMessage {
            role: "assistant".into(),
            event: None,
            ..user("silent")
        },
    )?;
    s.append_message("k2", user("other session"))?;
    let plugin = |data: Value| s.append_event("channel.status", None, data);
    ensure!(plugin(json!({"channel": "echo"}))?.seq == 1);
    ensure!(plugin(json!({"channel": "echo"}))?.seq == 2);
    ensure!(plugin(json!({"plugin": "echo"}))?.seq == 3);
    ensure!(plugin(json!({"plugin": "other"}))?.seq == 1);
    ensure!(plugin(json!({"unrelated": true}))?.seq == 1);
    ensure!(plugin(json!(null))?.seq == 2);
    let run = s.append_event("agent.run.start", Some("k1"), json!({"runId": "run-9"}))?;
    ensure!(run.seq == 3);
    let events = s.events_after(0, 100)?;
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.session_key.as_deref(), e.seq))
        .collect();
    ensure!(
        summary
            == [
                ("session.created", Some("k1"), 1),
                ("message.received", Some("k1"), 2),
                ("session.created", Some("k2"), 1),
                ("message.received", Some("k2"), 2),
                ("channel.status", None, 1),
                ("channel.status", None, 2),
                ("channel.status", None, 3),
                ("channel.status", None, 1),
                ("channel.status", None, 1),
                ("channel.status", None, 2),
                ("agent.run.start", Some("k1"), 3),
            ],
        "{summary:?}"
    );
    ensure!(events.windows(2).all(|w| w[0].id < w[1].id));
    ensure!(events[10] == run);
    ensure!(
        events[1].data
            == json!({"sessionKey": "k1", "sessionId": k1.session_id, "agentId": "main",
                   "channel": "echo", "conversation": "bob", "messageId": m1.id,
                   "role": "user", "messageSeq": 1, "runId": "run-9", "text": "hi there"})
    );
    // Paging with a cursor visits every event exactly once.
    let mut cursor = 0;
    let mut paged = Vec::new();
    loop {
        let page = s.events_after(cursor, 3)?;
        ensure!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = last.id;
        paged.extend(page);
    }
    ensure!(paged == events);
    Ok(())
}

fn pruning_keeps_each_scopes_newest(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    for _ in 0..3 {
        s.append_event("plugin.loaded", None, json!({"plugin": "a"}))?;
        s.append_event("plugin.loaded", None, json!({"plugin": "b"}))?;
    }
    ensure!(s.prune_events(i64::MAX)? == 4);
    let left: Vec<_> = s.events_after(0, 100)?.iter().map(|e| e.seq).collect();
    ensure!(left == [3, 3], "{left:?}");
    ensure!(
        s.append_event("plugin.loaded", None, json!({"plugin": "a"}))?
            .seq
            == 4
    );
    ensure!(s.prune_events(0)? == 0);
    Ok(())
}

fn concurrent_appends_contiguous(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || -> Result<Vec<u64>, StoreError> {
                (0..25)
                    .map(|i| Ok(s.append_message("k", user(&format!("{t}-{i}")))?.seq))
                    .collect()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for thread in threads {
        seqs.extend(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))??,
        );
    }
    seqs.sort_unstable();
    ensure!(seqs == (1..=100).collect::<Vec<_>>());
    let history = s.history("k", 1000)?;
    ensure!(history.iter().map(|m| m.seq).eq(1..=100));
    let ids: HashSet<_> = history.iter().map(|m| &m.id).collect();
    ensure!(ids.len() == 100);
    ensure!(s.get_session("k")?.context("missing")?.message_count == 100);
    let event_seqs: Vec<_> = s.events_after(0, 1000)?.iter().map(|e| e.seq).collect();
    ensure!(
        event_seqs == (1..=101).collect::<Vec<_>>(),
        "{event_seqs:?}"
    );
    Ok(())
}

fn a_runs_user_message_is_appended_once(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let of_run = |role: &str, text: &str| NewMessage {
        role: role.into(),
        run_id: Some("run-1".into()),
        ..user(text)
    };
    let first = s.append_message("k", of_run("user", "hello"))?;
    // The run executes again after a restart (another process), before it
    // had answered.
    let s = open()?;
    let again = s.append_message("k", of_run("user", "hello"))?;
    ensure!(again.id == first.id && again.seq == first.seq, "{again:?}");
    s.append_message("k", of_run("assistant", "whole"))?;
    // Another run's message, and one without a run, are appended.
    let other = s.append_message(
        "k",
        NewMessage {
            run_id: Some("run-2".into()),
            ..user("hello")
        },
    )?;
    s.append_message("k", user("no run"))?;
    let roles: Vec<String> = s.history("k", 100)?.into_iter().map(|m| m.role).collect();
    ensure!(roles == ["user", "assistant", "user", "user"], "{roles:?}");
    ensure!(other.seq == 3);
    ensure!(s.get_session("k")?.context("missing")?.message_count == 4);
    let received = s
        .events_after(0, 100)?
        .iter()
        .filter(|e| e.kind == "message.received")
        .count();
    // Four appended (the helper logs one for each), none for the repeat.
    ensure!(received == 4, "{received} message.received events");
    Ok(())
}

fn a_runs_answer_is_appended_once(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let of_run = |run: &str, role: &str, text: &str, event| NewMessage {
        role: role.into(),
        run_id: Some(run.into()),
        event: Some(event),
        ..user(text)
    };
    s.append_message("k", of_run("run-1", "user", "hello", "message.received"))?;
    let answer = s.append_message("k", of_run("run-1", "assistant", "hi!", "message.sent"))?;
    // Killed after the answer was appended but before its reply was
    // committed: the run executes again in another process and appends
    // its (possibly different) answer again.
    let s = open()?;
    s.append_message("k", of_run("run-1", "user", "hello", "message.received"))?;
    let again = s.append_message(
        "k",
        of_run("run-1", "assistant", "hi again", "message.sent"),
    )?;
    ensure!(
        again.id == answer.id && again.seq == answer.seq,
        "{again:?}"
    );
    ensure!(
        again.content == answer.content,
        "the first answer stays: {again:?}"
    );
    // Tool messages of a run are not deduplicated; the next run's answer
    // is appended.
    s.append_message("k", of_run("run-1", "tool", "{}", "message.sent"))?;
    s.append_message("k", of_run("run-1", "tool", "{}", "message.sent"))?;
    s.append_message("k", of_run("run-2", "user", "more", "message.received"))?;
    s.append_message("k", of_run("run-2", "assistant", "sure", "message.sent"))?;
    let history = s.history("k", 100)?;
    let roles: Vec<&str> = history.iter().map(|m| m.role.as_str()).collect();
    ensure!(
        roles == ["user", "assistant", "tool", "tool", "user", "assistant"],
        "{roles:?}"
    );
    ensure!(s.get_session("k")?.context("missing")?.message_count == 6);
    let sent = s
        .events_after(0, 100)?
        .iter()
        .filter(|e| e.kind == "message.sent")
        .count();
    // One per appended assistant or tool message, none for the repeat.
    ensure!(sent == 4, "{sent} message.sent events");
    Ok(())
}

fn devices_pair_requests_tokens(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let device = |id: &str, approved_ms| DeviceRecord {
        device_id: id.into(),
        public_key: format!("pk-{id}"),
        roles: vec!["operator".into()],
        scopes: vec!["operator.admin".into()],
        meta: Map::from_iter([("displayName".to_owned(), json!(id))]),
        approved_ms,
    };
    s.put_device(&device("d1", 1))?;
    s.put_device(&device("d2", 2))?;
    let mut updated = device("d1", 3);
    updated.scopes = vec!["operator.read".into()];
    s.put_device(&updated)?;
    ensure!(s.get_device("d1")? == Some(updated.clone()));
    ensure!(s.get_device("nope")?.is_none());
    ensure!(s.list_devices()? == vec![device("d2", 2), updated]);
    let scopes = vec!["operator.read".to_owned()];
    s.put_device_token("d1", "operator", "aa11", &scopes, 10)?;
    ensure!(s.check_device_token("d1", "operator", "aa11")? == Some(scopes));
    ensure!(s.check_device_token("d1", "operator", "aa12")?.is_none());
    ensure!(s.check_device_token("d1", "node", "aa11")?.is_none());
    s.put_device_token("d1", "operator", "bb22", &[], 11)?;
    ensure!(s.check_device_token("d1", "operator", "aa11")?.is_none());
    ensure!(s.check_device_token("d1", "operator", "bb22")? == Some(vec![]));
    ensure!(s.remove_device("d1")?);
    ensure!(!s.remove_device("d1")?);
    ensure!(s.check_device_token("d1", "operator", "bb22")?.is_none());

    let request = |id: &str, device_id: &str, ts| PairRequest {
        request_id: id.into(),
        device_id: device_id.into(),
        public_key: format!("pk-{device_id}"),
        role: "operator".into(),
        scopes: vec!["operator.read".into()],
        meta: Map::from_iter([("remoteAddr".to_owned(), json!("127.0.0.1"))]),
        ts,
    };
    s.put_pair_request(&request("r1", "d3", 100))?;
    s.put_pair_request(&request("r2", "d4", 50))?;
    s.put_pair_request(&request("r3", "d3", 200))?;
    ensure!(s.list_pair_requests()? == vec![request("r2", "d4", 50), request("r3", "d3", 200)]);
    ensure!(s.take_pair_request("r1")?.is_none());
    ensure!(s.take_pair_request("r3")? == Some(request("r3", "d3", 200)));
    ensure!(s.take_pair_request("r3")?.is_none());
    Ok(())
}

fn endpoint(id: &str, events: &[&str], created_ms: i64) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        description: Some(format!("endpoint {id}")),
        events: events.iter().map(|e| e.to_string()).collect(),
        enabled: true,
        created_ms,
        updated_ms: created_ms,
        secret: "whsec_one".into(),
        previous_secret: None,
        previous_secret_expires_ms: None,
        failing_since_ms: None,
        disabled_reason: None,
    }
}

fn webhooks_fan_out_attempts_replay(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    s.add_endpoint(&endpoint("ep_all", &["*"], 1))?;
    s.add_endpoint(&endpoint("ep_msg", &["message.*"], 2))?;
    s.add_endpoint(&endpoint("ep_exact", &["session.created"], 3))?;
    s.add_endpoint(&endpoint("ep_none", &["messages.*", "session"], 4))?;
    ensure!(
        s.list_endpoints()?
            .iter()
            .map(|e| e.id.as_str())
            .eq(["ep_all", "ep_msg", "ep_exact", "ep_none"])
    );
    let signal = s.outbox_signal();
    let notified = signal.notified();
    s.append_message("k", user("hello"))?;
    // The commit woke the dispatcher (a stored permit).
    futures::executor::block_on(notified);
    let of = |ep: &str| -> anyhow::Result<Vec<String>> {
        Ok(s.list_deliveries(ep, None, None, 10)?
            .into_iter()
            .map(|d| d.kind)
            .collect())
    };
    ensure!(of("ep_all")? == ["message.received", "session.created"]);
    ensure!(of("ep_msg")? == ["message.received"]);
    ensure!(of("ep_exact")? == ["session.created"]);
    ensure!(of("ep_none")?.is_empty());
    let due = s.due_deliveries(i64::MAX, 10, &["ep_all".to_owned()])?;
    ensure!(due.len() == 2, "{due:?}");
    ensure!(s.next_due_ms()?.is_some());
    let first = s
        .due_deliveries_of("ep_msg", i64::MAX)?
        .context("nothing due")?;
    let d = s.begin_attempt(first.id, 100)?.context("not claimed")?;
    ensure!(d.status == DeliveryStatus::InFlight && d.attempts == 1);
    ensure!(
        d.body.contains("\"type\":\"message.received\""),
        "{}",
        d.body
    );
    ensure!(s.begin_attempt(first.id, 100)?.is_none(), "claimed once");
    let attempt = |n, status| Attempt {
        delivery_id: d.id,
        attempt: n,
        ts_ms: 100,
        status,
        latency_ms: 5,
        error: status.is_none().then(|| "connection refused".to_owned()),
    };
    let settled = s.finish_attempt(&attempt(1, None), Settle::RetryAt(200))?;
    ensure!(settled.failing_since_ms == Some(100));
    ensure!(s.get_delivery(d.id)?.context("gone")?.status == DeliveryStatus::Pending);
    s.begin_attempt(d.id, 200)?.context("not claimed")?;
    // A crash with the attempt in flight: it is pending again on start.
    ensure!(s.recover_in_flight(300)? == 1);
    let d2 = s.begin_attempt(d.id, 300)?.context("not claimed")?;
    ensure!(d2.attempts == 3, "attempt numbers are never reused");
    let settled = s.finish_attempt(&attempt(3, Some(200)), Settle::Delivered)?;
    ensure!(settled.failing_since_ms.is_none());
    let attempts: Vec<_> = s
        .list_attempts(d.id)?
        .iter()
        .map(|a| (a.attempt, a.status))
        .collect();
    ensure!(attempts == [(1, None), (3, Some(200))], "{attempts:?}");
    ensure!(s.get_delivery(d.id)?.context("gone")?.last_status == Some(200));
    ensure!(s.replay_delivery("ep_msg", d.id, 400)?);
    ensure!(!s.replay_delivery("ep_all", d.id, 400)?, "not its endpoint");

    let off = s
        .set_endpoint_enabled("ep_all", Some(false), Some("too many failures"), 500)?
        .context("gone")?;
    ensure!(!off.enabled && off.disabled_reason.as_deref() == Some("too many failures"));
    ensure!(
        s.list_deliveries("ep_all", Some(DeliveryStatus::Failed), None, 10)?
            .len()
            == 2
    );
    let on = s
        .set_endpoint_enabled("ep_all", None, None, 600)?
        .context("gone")?;
    ensure!(on.enabled && on.disabled_reason.is_none());
    ensure!(s.replay_failed_since("ep_all", 0, 700)? == 2);
    let rotated = s
        .rotate_secret("ep_all", "whsec_two", 900, 800)?
        .context("gone")?;
    ensure!(rotated.secret.expose() == "whsec_two");
    ensure!(rotated.previous_secret.as_ref().map(|p| p.expose()) == Some("whsec_one"));
    ensure!(s.rotate_secret("nope", "x", 0, 0)?.is_none());
    // Only settled deliveries are pruned.
    ensure!(s.prune_deliveries(i64::MAX)? == 0);
    let d3 = s.begin_attempt(d.id, 1000)?.context("not claimed")?;
    s.finish_attempt(&attempt(d3.attempts, Some(204)), Settle::Delivered)?;
    ensure!(s.prune_deliveries(i64::MAX)? == 1);
    ensure!(s.get_delivery(d.id)?.is_none());
    ensure!(s.delete_endpoint("ep_all")?);
    ensure!(!s.delete_endpoint("ep_all")?);
    ensure!(s.list_deliveries("ep_all", None, None, 10)?.is_empty());
    ensure!(s.get_endpoint("ep_msg")?.is_some());
    Ok(())
}

fn msg(id: &str, conv: &str) -> NewInbound {
    NewInbound {
        platform_id: id.into(),
        conversation: conv.into(),
        payload: format!("{{\"id\":\"{id}\"}}"),
    }
}

fn inbox_dedupe_cursor_settle(open: Opener<'_>) -> anyhow::Result<()> {
    {
        let s = open()?;
        ensure!(s.commit_inbound("c", "default", &[msg("1", "a"), msg("2", "b")], Some("7"))? == 2);
        ensure!(
            s.commit_inbound(
                "c",
                "default",
                &[msg("1", "a"), msg("", "a"), msg("", "a")],
                None
            )? == 2
        );
        ensure!(s.commit_inbound("c", "other", &[msg("1", "a")], Some("x"))? == 1);
    }
    let s = open()?;
    ensure!(s.inbox_cursor("c", "default")?.as_deref() == Some("7"));
    ensure!(s.inbox_cursor("c", "other")?.as_deref() == Some("x"));
    ensure!(s.inbox_cursor("c", "none")?.is_none());
    let p = s.inbox_pending("c", 0, 10)?;
    ensure!(p.len() == 5);
    ensure!(s.inbox_pending("c", p[1].seq, 2)?.len() == 2);
    s.inbox_set_progress(p[0].seq, "{\"consumed\":3}")?;
    ensure!(s.inbox_progress(p[0].seq)?.as_deref() == Some("{\"consumed\":3}"));
    s.inbox_settle(p[0].seq, InboxSettled::Answered)?;
    ensure!(
        s.inbox_progress(p[0].seq)?.is_none(),
        "settled: progress gone"
    );
    ensure!(s.inbox_stats("c")?.pending == 4);
    ensure!(s.commit_inbound("c", "default", &[msg("1", "a")], None)? == 0);
    ensure!(s.inbox_prune(i64::MAX, 100)? == 1);
    ensure!(s.commit_inbound("c", "default", &[msg("1", "a")], None)? == 1);
    Ok(())
}

fn out(conv: &str, text: &str) -> NewOutbound {
    NewOutbound {
        conversation: conv.into(),
        message: text.into(),
        blobs: Vec::new(),
    }
}

fn outbox_order_and_settling(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    s.commit_inbound("c", "default", &[msg("1", "a")], None)?;
    let seq = s.inbox_pending("c", 0, 1)?[0].seq;
    let ids = s.outbox_enqueue(
        "c",
        "default",
        InboxLink::Answers(seq),
        &[out("a", "1"), out("a", "2")],
    )?;
    s.outbox_enqueue("c", "default", InboxLink::None, &[out("b", "3")])?;
    ensure!(s.inbox_pending("c", 0, 10)?.is_empty(), "answered");
    let texts = |due: Vec<crate::store::OutboxItem>| -> Vec<String> {
        due.into_iter().map(|d| d.message).collect()
    };
    ensure!(texts(s.outbox_due("c", i64::MAX, 10)?) == ["1", "3"]);
    s.outbox_retry(ids[0], i64::MAX - 1, 1, true, "transient")?;
    ensure!(s.outbox_due("c", 0, 10)?.is_empty());
    ensure!(s.outbox_next_due("c")?.is_some_and(|t| t < i64::MAX - 1));
    let head = s.outbox_due("c", i64::MAX, 10)?;
    ensure!(head[0].plain && head[0].attempts == 1);
    s.outbox_failed(ids[0], 2, "permanent: no")?;
    ensure!(texts(s.outbox_due("c", i64::MAX, 10)?) == ["2", "3"]);
    s.outbox_delivered(ids[1], "p2")?;
    let st = s.outbox_stats("c")?;
    ensure!((st.depth, st.failed) == (1, 1), "{st:?}");
    ensure!(st.last_error.as_deref() == Some("permanent: no"));
    let rows = s.outbox_rows("c", 10)?;
    ensure!(
        rows.iter()
            .map(|r| r.status.as_str())
            .eq(["failed", "pending"])
    );
    Ok(())
}

fn outbox_in_doubt_after_reopen(open: Opener<'_>) -> anyhow::Result<()> {
    let ids = {
        let s = open()?;
        let ids = s.outbox_enqueue(
            "c",
            "default",
            InboxLink::None,
            &[out("a", "1"), out("b", "2"), out("c", "3")],
        )?;
        ensure!(s.outbox_begin(ids[0])?);
        ensure!(!s.outbox_begin(ids[0])?, "in flight already");
        ensure!(s.outbox_begin(ids[1])?);
        let due = s.outbox_due("c", i64::MAX, 10)?;
        ensure!(due.iter().map(|d| d.id).eq([ids[2]]));
        ensure!(s.outbox_stats("c")?.in_flight == 2);
        ids
    };
    let s = open()?;
    let doubt = s.outbox_in_doubt("c")?;
    ensure!(doubt.iter().map(|d| d.id).eq(ids[..2].iter().copied()));
    ensure!(s.outbox_recover("c", InDoubt::Resend)?.len() == 2);
    ensure!(s.outbox_in_doubt("c")?.is_empty());
    ensure!(s.outbox_due("c", i64::MAX, 10)?.len() == 3);
    ensure!(s.outbox_begin(ids[2])?);
    ensure!(s.outbox_recover("c", InDoubt::Fail)?.len() == 1);
    let st = s.outbox_stats("c")?;
    ensure!((st.depth, st.failed, st.in_flight) == (2, 1, 0));
    ensure!(st.last_error.unwrap_or_default().starts_with("in doubt"));
    Ok(())
}

fn outbox_statuses(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let mut with_blob = out("a", "1");
    with_blob.blobs = vec!["b1".into(), "b2".into()];
    let ids = s.outbox_enqueue("c", "default", InboxLink::None, &[with_blob, out("a", "2")])?;
    ensure!(s.outbox_blobs_in_use()? == ["b1", "b2"]);
    ensure!(
        !s.outbox_status("c", "w1", DeliveryState::Read, None)?,
        "not sent yet"
    );
    s.outbox_delivered(ids[0], "w1")?;
    ensure!(s.outbox_blobs_in_use()?.is_empty());
    ensure!(s.outbox_status("c", "w1", DeliveryState::Read, None)?);
    ensure!(s.outbox_status("c", "w1", DeliveryState::Delivered, None)?);
    ensure!(s.outbox_stats("c")?.delivery_failed == 0);
    ensure!(s.outbox_status(
        "c",
        "w1",
        DeliveryState::Failed,
        Some("131047: re-engagement")
    )?);
    let st = s.outbox_stats("c")?;
    ensure!(st.delivery_failed == 1);
    ensure!(st.last_delivery_failure.as_deref() == Some("131047: re-engagement"));
    ensure!(
        s.outbox_rows("c", 10)?.len() == 1,
        "sent rows are not listed"
    );
    ensure!(s.outbox_prune(i64::MAX, 10)? == 1, "the sent row is pruned");
    Ok(())
}

fn pairing(open: Opener<'_>) -> anyhow::Result<()> {
    let s = open()?;
    let req = |code: &str, sender: &str, expires_ms| PairingRequest {
        channel: "tg".into(),
        account_id: "default".into(),
        code: code.into(),
        sender: sender.into(),
        sender_name: Some(format!("name of {sender}")),
        conversation: format!("dm-{sender}"),
        created_ms: 10,
        expires_ms,
    };
    let notice = |code: &str| PairingNotice {
        outbox: "tg".into(),
        account: "default".into(),
        message: NewOutbound {
            conversation: "dm".into(),
            message: format!("{{\"text\":\"Pairing code: {code}\"}}"),
            blobs: Vec::new(),
        },
    };
    ensure!(matches!(
        s.request_pairing(&req("AAAA2222", "alice", 1000), &notice("AAAA2222"), 10, 2)?,
        RequestOutcome::Created(_)
    ));
    ensure!(
        s.request_pairing(&req("BBBB3333", "alice", 1000), &notice("BBBB3333"), 11, 2)?
            == RequestOutcome::AlreadyPending
    );
    ensure!(matches!(
        s.request_pairing(&req("CCCC4444", "bob", 100), &notice("CCCC4444"), 12, 2)?,
        RequestOutcome::Created(_)
    ));
    ensure!(
        s.request_pairing(&req("DDDD5555", "carol", 1000), &notice("DDDD5555"), 13, 2)?
            == RequestOutcome::Full
    );
    // Bob's code expired at 100: his slot is freed for carol.
    ensure!(matches!(
        s.request_pairing(&req("DDDD5555", "carol", 1000), &notice("DDDD5555"), 200, 2)?,
        RequestOutcome::Created(_)
    ));
    ensure!(
        s.pending_pairings("tg", None, 200)?
            .iter()
            .map(|r| r.sender.as_str())
            .eq(["alice", "carol"])
    );
    ensure!(s.pending_pairings("tg", Some("other"), 200)?.is_empty());
    ensure!(s.approve_pairing("tg", "default", "ZZZZ9999", 300)? == ApproveOutcome::Unknown);
    ensure!(matches!(
        s.approve_pairing("tg", "default", "AAAA2222", 300)?,
        ApproveOutcome::Approved(_)
    ));
    ensure!(s.is_approved("tg", "default", "alice")?);
    ensure!(!s.is_approved("tg", "other", "alice")?);
    ensure!(
        s.request_pairing(&req("EEEE6666", "alice", 5000), &notice("EEEE6666"), 301, 2)?
            == RequestOutcome::Approved
    );
    ensure!(
        s.approved_senders("tg", Some("default"))?
            .iter()
            .map(|a| a.sender.as_str())
            .eq(["alice"])
    );
    ensure!(s.approve_pairing("tg", "default", "DDDD5555", 5000)? == ApproveOutcome::Expired);
    ensure!(
        s.request_pairing(&req("FFFF7777", "dave", 9000), &notice("FFFF7777"), 5000, 2)
            .is_ok()
    );
    ensure!(
        s.dismiss_pairing("tg", "default", "FFFF7777")?
            .map(|r| r.sender)
            == Some("dave".to_owned())
    );
    ensure!(s.dismiss_pairing("tg", "default", "FFFF7777")?.is_none());
    // Each code that was stored has its notice in the outbox, committed with
    // it; refused and repeated requests left none.
    let notices: Vec<String> = s
        .outbox_rows("tg", 100)?
        .into_iter()
        .map(|r| r.message)
        .collect();
    let codes: Vec<&str> = notices
        .iter()
        .filter_map(|m| m.split("Pairing code: ").nth(1))
        .map(|c| c.trim_end_matches("\"}"))
        .collect();
    ensure!(
        codes == ["AAAA2222", "CCCC4444", "DDDD5555", "FFFF7777"],
        "{codes:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_passes_the_store_suite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        run_all(&|name| {
            let path = root.join(format!("{name}.db"));
            Ok(Box::new(move || {
                let config = crate::store::StoreConfig {
                    url: Some(path.display().to_string().into()),
                    ..Default::default()
                };
                Ok(crate::store::open(&path, &config)?)
            }))
        })
    }
}
