//! Replies that fit the platform, end to end: a real gateway on loopback
//! with the `testchan` channel built from source, answering through the
//! echo provider. testchan records every outbound operation (`out/<seq>`),
//! which is what these tests read; its `caps` key declares the channel's
//! capabilities and `fail/<op>` scripts errors. The gateway runs on a
//! manual clock, so throttling is asserted against clock time the test
//! controls, never against wall-clock time.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use pincer::agent::echo::EchoProvider;
use pincer::agent::{
    AgentError, AgentEvent, ModelInfo, Provider, RunOutcome, RunRequest, ToolHost,
};
use pincer::clock::ManualClock;
use pincer::gateway::launch::{ClockOverride, ProviderOverride};
use pincer_tests::gateway::TestGateway;

const T0: u64 = 1_700_000_000_000;
/// A hang guard for waits on the gateway (not a timing assertion).
const HANG: Duration = Duration::from_secs(120);

/// An agent the test steers: each run streams the pieces the test sends,
/// and ends at `None`, so the test decides what the channel has seen at
/// every step (no race between the agent and the reply task).
struct Steered {
    pieces: tokio::sync::Mutex<mpsc::UnboundedReceiver<Option<String>>>,
}

impl Provider for Steered {
    fn name(&self) -> &str {
        "steered"
    }
    fn models(&self) -> Vec<ModelInfo> {
        EchoProvider::new(0).models()
    }
    fn run<'a>(
        &'a self,
        _req: RunRequest,
        _tools: Arc<dyn ToolHost>,
        events: mpsc::UnboundedSender<AgentEvent>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<RunOutcome, AgentError>> {
        Box::pin(async move {
            let mut pieces = self.pieces.lock().await;
            let mut text = String::new();
            loop {
                let piece = tokio::select! {
                    _ = cancel.cancelled() => return Err(AgentError::Aborted),
                    p = pieces.recv() => p,
                };
                match piece {
                    Some(Some(p)) => {
                        text.push_str(&p);
                        let _ = events.send(AgentEvent::TextDelta(p));
                    }
                    _ => break,
                }
            }
            Ok(RunOutcome {
                text,
                stop_reason: Some("stop".into()),
                usage: None,
            })
        })
    }
}

struct Setup {
    g: TestGateway,
    clock: Arc<ManualClock>,
    agent: Option<mpsc::UnboundedSender<Option<String>>>,
}

impl Setup {
    /// A gateway on a manual clock with testchan declaring `caps`,
    /// answering with the echo provider, or with a [`Steered`] agent.
    async fn start(caps: Value, steered: bool) -> Setup {
        let (mut opts, dir) = TestGateway::options();
        let clock = ManualClock::new(T0);
        opts.clock = Some(ClockOverride(clock.clone()));
        let mut agent = None;
        if steered {
            let (tx, rx) = mpsc::unbounded_channel();
            agent = Some(tx);
            opts.provider = Some(ProviderOverride(Arc::new(Steered {
                pieces: tokio::sync::Mutex::new(rx),
            })));
        }
        opts.plugins.insert(
            "testchan".into(),
            pincer::plugins::PluginSettings {
                dm_policy: pincer::channels::access::DmPolicy::Open,
                // The group case is about streaming, not access: any member.
                group_policy: pincer::channels::access::GroupPolicy::Open,
                // Streaming is under test, not the per-conversation send rate.
                queue: pincer::channels::queue::QueueSettings {
                    send_burst: 1_000,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        std::fs::create_dir_all(&opts.plugins_dir).expect("plugins dir");
        pincer_tests::install_plugin(&opts.plugins_dir, "testchan", "testchan");
        let g = TestGateway::start_with(opts, dir).await;
        let s = Setup { g, clock, agent };
        s.kv_set("caps", &caps.to_string());
        // `describe` is read per loaded version: reload to apply the caps.
        for (name, r) in s.g.gw().runtime.reload(Some("testchan")).await {
            r.unwrap_or_else(|e| panic!("reloading {name}: {e}"));
        }
        s
    }

    fn kv_set(&self, key: &str, value: &str) {
        self.g
            .gw()
            .runtime
            .plugins
            .kv()
            .set("testchan", key, value.as_bytes())
            .expect("kv set");
    }

    /// Every outbound operation testchan recorded, in call order.
    fn out(&self) -> Vec<Value> {
        let kv = self.g.gw().runtime.plugins.kv();
        kv.list_keys("testchan", "out/", 100_000)
            .expect("list")
            .into_iter()
            .map(|k| {
                let v = kv.get("testchan", &k).expect("get").expect("present");
                serde_json::from_slice(&v).expect("json")
            })
            .collect()
    }

    /// The steered agent streams `piece` (`None`: the answer is complete).
    fn say(&self, piece: Option<&str>) {
        self.agent
            .as_ref()
            .expect("a steered agent")
            .send(piece.map(str::to_string))
            .expect("agent listening");
    }

    /// Put `messages` in testchan's inbox.
    fn inbound(&self, messages: Value) {
        self.kv_set("inbox", &messages.to_string());
    }

    /// Wait until the run answering inbound message `id` has finished
    /// (its reply delivered).
    async fn answered(&self, id: &str) {
        let run_id = format!("testchan:{id}");
        let done = async {
            loop {
                match self.g.gw().runs.wait(&run_id, Duration::from_secs(5)).await {
                    Some(Some(r)) => {
                        assert_eq!(r.status, "ok", "{r:?}");
                        return;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        tokio::time::timeout(HANG, done)
            .await
            .unwrap_or_else(|_| panic!("run {run_id} never finished"));
        // The answer's last pieces go through the durable outbox: wait
        // until its worker has delivered them.
        let outbox = self.g.gw().runtime.channels.outbox().clone();
        let drained = async {
            while outbox.stats("testchan").map(|s| s.depth).unwrap_or(1) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG, drained)
            .await
            .unwrap_or_else(|_| panic!("the outbox of testchan never drained"));
    }

    /// Wait until testchan recorded an operation matching `pred`.
    async fn wait_out(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let done = async {
            while !pred(&self.out()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG, done)
            .await
            .unwrap_or_else(|_| panic!("never saw {what}: {:#?}", self.out()));
    }
}

fn ops<'a>(out: &'a [Value], op: &str) -> Vec<&'a Value> {
    out.iter().filter(|v| v["op"] == op).collect()
}

fn text(v: &Value) -> &str {
    v["text"].as_str().expect("text")
}

/// A Markdown answer of about 10,000 characters with a code block, a
/// non-BMP emoji per paragraph (2 UTF-16 units each) and no spaces lost.
fn long_answer() -> (String, String) {
    let code: String = (0..12)
        .map(|i| format!("let value_{i} = compute({i});\n"))
        .collect();
    let block = format!("```rust\n{code}```");
    let mut s = String::new();
    let mut n = 0;
    while s.chars().count() < 10_000 {
        n += 1;
        s.push_str(&format!(
            "Paragraph {n} 🦀 explains one more thing. It has a second sentence, too.\n\n"
        ));
        if n == 60 {
            s.push_str(&block);
            s.push_str("\n\n");
        }
    }
    (s.trim_end().to_string(), block)
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_arrives_in_order_in_chunks_within_the_limit_with_its_code_block_intact() {
    let limit = 1_000;
    let s = Setup::start(
        json!({"max_message_length": limit, "streaming": "final-only"}),
        false,
    )
    .await;
    let (answer, block) = long_answer();
    assert!(answer.chars().count() >= 10_000);
    s.inbound(json!([{"id": "m1", "conversation": "c1", "thread": "topic-9", "text": answer}]));
    s.answered("m1").await;
    let out = s.out();
    let sends = ops(&out, "send");
    assert!(sends.len() >= 10, "{} chunks", sends.len());
    assert_eq!(ops(&out, "edit").len(), 0, "final-only never edits");
    for v in &sends {
        let t = text(v);
        assert!(
            t.encode_utf16().count() <= limit,
            "{} UTF-16 units",
            t.encode_utf16().count()
        );
        assert_eq!(v["reply_to"], "m1");
        assert_eq!(v["thread"], "topic-9");
        assert_eq!(v["conversation"], "c1");
        assert_eq!(v["format"], "markdown");
    }
    // In order, nothing lost or doubled.
    let joined: Vec<String> = sends.iter().map(|v| text(v).to_string()).collect();
    assert_eq!(words(&joined.join("\n")), words(&answer));
    // The code block is in one chunk, whole.
    assert_eq!(sends.iter().filter(|v| text(v).contains(&block)).count(), 1);
    // Every chunk ends at a paragraph or the code block.
    for t in &joined {
        assert!(
            t.ends_with('.') || t.ends_with("```"),
            "{:?}",
            &t[t.len().saturating_sub(30)..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_streaming_is_throttled_by_the_declared_interval_and_the_last_state_lands() {
    let interval = 1_000;
    let s = Setup::start(
        json!({"edit": true, "streaming": "edit", "min_edit_interval_ms": interval}),
        true,
    )
    .await;
    let word = |i: usize| format!("word{i} ");

    // A frozen clock: the first words open the message; 100 more updates
    // within one interval give no edit until the answer is complete.
    s.inbound(json!([{"id": "a1", "conversation": "c", "text": "go"}]));
    s.say(Some(&word(0)));
    s.wait_out("the first message", |o| !ops(o, "send").is_empty())
        .await;
    let mut answer = word(0);
    for i in 1..=100 {
        answer.push_str(&word(i));
        s.say(Some(&word(i)));
    }
    s.say(None);
    s.answered("a1").await;
    let out = s.out();
    assert_eq!(ops(&out, "send").len(), 1, "{out:#?}");
    assert_eq!(text(ops(&out, "send")[0]), "word0");
    let edits = ops(&out, "edit");
    assert_eq!(edits.len(), 1, "only the final edit: {edits:#?}");
    assert_eq!(text(edits[0]), answer.trim_end(), "the last state lands");
    assert_eq!(edits[0]["message_id"], out[0]["id"]);

    // A moving clock: 10 words per 250 ms of clock time. An edit lands
    // once an interval has passed since the last one, never more often.
    let before = s.out().len();
    s.inbound(json!([{"id": "a2", "conversation": "c", "text": "go"}]));
    let mut answer = String::new();
    let mut advanced = 0;
    for i in 0..200 {
        answer.push_str(&word(i));
        s.say(Some(&word(i)));
        if i == 0 {
            s.wait_out("the first message", |o| {
                ops(&o[before..], "send").len() == 1
            })
            .await;
        }
        if i % 10 == 9 {
            s.clock.advance(250);
            advanced += 250;
        }
        if i % 40 == 39 {
            // A whole interval of clock time passed: one more edit shows.
            let k = (i + 1) / 40;
            s.wait_out("a throttled edit", |o| ops(&o[before..], "edit").len() >= k)
                .await;
        }
    }
    s.say(None);
    s.answered("a2").await;
    let out = s.out();
    let new = &out[before..];
    let edits = ops(new, "edit");
    let bound = (advanced / interval) as usize + 1;
    assert!(
        edits.len() >= 5 && edits.len() <= bound,
        "{} edits while the clock moved {advanced} ms (at most {bound})",
        edits.len()
    );
    assert_eq!(ops(new, "send").len(), 1);
    assert_eq!(text(edits.last().expect("a final edit")), answer.trim_end());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_stream_in_direct_chats_and_edits_in_groups() {
    let s = Setup::start(
        json!({"edit": true, "streaming": "draft", "min_edit_interval_ms": 1000}),
        true,
    )
    .await;
    s.inbound(json!([{"id": "d1", "conversation": "dm", "chat_type": "direct", "text": "go"}]));
    s.say(Some("hello there "));
    s.wait_out("a draft", |o| !ops(o, "draft").is_empty()).await;
    s.clock.advance(1_000);
    s.say(Some("direct chat"));
    s.wait_out("a second draft", |o| ops(o, "draft").len() == 2)
        .await;
    s.say(None);
    s.answered("d1").await;
    let out = s.out();
    let drafts = ops(&out, "draft");
    assert_eq!(drafts.len(), 2, "{out:#?}");
    assert_eq!(
        drafts[0]["draft_id"], drafts[1]["draft_id"],
        "one stable draft id"
    );
    assert_eq!(text(drafts[1]), "hello there direct chat");
    assert_eq!(drafts[0]["message_id"], "d1");
    assert_eq!(drafts[0]["conversation"], "dm");
    assert_eq!(ops(&out, "edit").len(), 0);
    let sends = ops(&out, "send");
    assert_eq!(sends.len(), 1, "finished with one send: {out:#?}");
    assert_eq!(text(sends[0]), "hello there direct chat");
    assert_eq!(sends[0]["reply_to"], "d1");
    assert_eq!(out.last().expect("ops")["op"], "send");

    let before = out.len();
    s.inbound(json!([{"id": "g1", "conversation": "grp", "chat_type": "group", "mentioned": true, "thread": "t7", "text": "go"}]));
    s.say(Some("hello there "));
    s.wait_out("the group message", |o| {
        ops(&o[before..], "send").len() == 1
    })
    .await;
    s.say(Some("group chat"));
    s.say(None);
    s.answered("g1").await;
    let out = s.out();
    let new = &out[before..];
    assert_eq!(ops(new, "draft").len(), 0, "no drafts in groups: {new:#?}");
    let sends = ops(new, "send");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["thread"], "t7");
    assert_eq!(sends[0]["reply_to"], "g1");
    let edits = ops(new, "edit");
    assert_eq!(edits.len(), 1);
    assert_eq!(text(edits[0]), "hello there group chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_names_the_message_repeats_and_its_failure_leaves_the_reply_intact() {
    let s = Setup::start(
        json!({"typing": true, "typing_ttl_ms": 5000, "read_receipts": true, "streaming": "final-only"}),
        true,
    )
    .await;
    // The first typing call fails (testchan records only calls that work).
    s.kv_set("fail/typing", r#"["transient"]"#);
    s.inbound(json!([{"id": "w1", "conversation": "wa", "thread": "th", "text": "go"}]));
    s.wait_out("the read receipt", |o| !ops(o, "mark_read").is_empty())
        .await;
    let stats = s.g.gw().runtime.channels.reply_stats().clone();
    let first = async {
        while stats.typing().failed() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG, first)
        .await
        .expect("the first typing call");
    // Repeated before the 5 s indicator lapses: every 4 s of clock time.
    for n in 1..=3 {
        s.clock.advance(4_000);
        s.wait_out("a repeated typing call", |o| ops(o, "typing").len() >= n)
            .await;
    }
    s.say(Some("the answer"));
    s.say(None);
    s.answered("w1").await;
    let out = s.out();
    let reads = ops(&out, "mark_read");
    assert_eq!(reads.len(), 1, "read once");
    assert_eq!(reads[0]["message_id"], "w1");
    assert_eq!(out[0]["op"], "mark_read", "read when processing starts");
    let typing = ops(&out, "typing");
    assert_eq!(typing.len(), 3, "{out:#?}");
    for t in &typing {
        assert_eq!(t["message_id"], "w1");
        assert_eq!(t["conversation"], "wa");
        assert_eq!(t["thread"], "th");
    }
    let last = out.last().expect("ops");
    assert_eq!(last["op"], "send", "no typing after the answer");
    assert_eq!(text(last), "the answer", "the reply is intact");
    let typing = stats.typing();
    assert_eq!((typing.sent(), typing.failed()), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formatting_error_resends_as_plain_and_unsupported_edits_fall_back() {
    let s = Setup::start(
        json!({"edit": true, "streaming": "edit", "min_edit_interval_ms": 1000}),
        true,
    )
    .await;
    s.kv_set("fail/send", r#"["formatting"]"#);
    s.kv_set("fail/edit", r#"["formatting"]"#);
    s.inbound(json!([{"id": "f1", "conversation": "c", "text": "go"}]));
    s.say(Some("some *bold* "));
    s.wait_out("the first message", |o| !ops(o, "send").is_empty())
        .await;
    s.say(Some("text"));
    s.say(None);
    s.answered("f1").await;
    let out = s.out();
    let sends = ops(&out, "send");
    assert_eq!(sends.len(), 1, "{out:#?}");
    assert_eq!(sends[0]["format"], "plain");
    assert_eq!(text(sends[0]), "some *bold*");
    let edits = ops(&out, "edit");
    assert_eq!(edits.len(), 1, "{out:#?}");
    assert_eq!(edits[0]["format"], "plain");
    assert_eq!(text(edits[0]), "some *bold* text");
    assert_eq!(s.g.gw().runtime.channels.reply_stats().plain_resends(), 2);

    // An edit the channel cannot do: the rest of the answer comes when it
    // is complete, as a message of its own.
    let before = out.len();
    s.kv_set("fail/edit", r#"["unsupported"]"#);
    s.inbound(json!([{"id": "f2", "conversation": "c", "text": "go"}]));
    s.say(Some("plain "));
    s.wait_out("the first message", |o| {
        ops(&o[before..], "send").len() == 1
    })
    .await;
    s.say(Some("words here"));
    s.say(None);
    s.answered("f2").await;
    let out = s.out();
    let new = &out[before..];
    assert_eq!(ops(new, "edit").len(), 0, "{new:#?}");
    let sends = ops(new, "send");
    assert_eq!(sends.len(), 2, "{new:#?}");
    assert_eq!(text(sends[1]), "plain words here");
    assert_eq!(sends[1]["format"], "markdown");
}

/// The edit that finishes a streamed message fails in ways that pass (rate
/// limited twice, then transient): it is tried again until it lands, and
/// the answer stays one message. Posting the text anew instead would show
/// the answer twice (the streamed message beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finishing_edit_that_fails_for_now_is_retried_not_posted_again() {
    let s = Setup::start(
        json!({"edit": true, "streaming": "edit", "min_edit_interval_ms": 1000}),
        true,
    )
    .await;
    s.inbound(json!([{"id": "r1", "conversation": "c", "text": "go"}]));
    s.say(Some("first "));
    s.wait_out("the first message", |o| !ops(o, "send").is_empty())
        .await;
    s.kv_set(
        "fail/edit",
        r#"["rate-limited:30", "rate-limited:30", "transient"]"#,
    );
    s.say(Some("and last"));
    s.say(None);
    s.answered("r1").await;
    // The edit lands, or (the failure) the text goes out anew.
    s.wait_out("the final text", |o| {
        ops(o, "edit").len() + ops(o, "send").len() > 1
    })
    .await;
    let out = s.out();
    assert_eq!(ops(&out, "send").len(), 1, "{out:#?}");
    let edits = ops(&out, "edit");
    assert_eq!(edits.len(), 1, "{out:#?}");
    assert_eq!(text(edits[0]), "first and last");
    assert_eq!(s.g.gw().runtime.channels.reply_stats().fallbacks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_reply_that_outgrows_the_limit_continues_in_a_new_message() {
    let limit = 60;
    let s = Setup::start(
        json!({"edit": true, "streaming": "edit", "min_edit_interval_ms": 1000, "max_message_length": limit}),
        true,
    )
    .await;
    s.inbound(json!([{"id": "o1", "conversation": "c", "text": "go"}]));
    let mut answer = String::new();
    for i in 0..40 {
        let piece = format!("Sentence {i} ends. ");
        answer.push_str(&piece);
        s.say(Some(&piece));
        if i == 0 {
            s.wait_out("the first message", |o| !ops(o, "send").is_empty())
                .await;
        }
        if i % 5 == 4 {
            // An interval of clock time per 5 sentences: the text so far
            // shows (by an edit, or in a new message).
            let before = s.out().len();
            s.clock.advance(1_000);
            s.wait_out("the text so far", |o| o.len() > before).await;
        }
    }
    s.say(None);
    s.answered("o1").await;
    let out = s.out();
    // Each message's last text, in the order the messages were sent.
    let mut messages: Vec<(String, String)> = Vec::new();
    for v in &out {
        match v["op"].as_str() {
            Some("send") => messages.push((v["id"].as_str().expect("id").into(), text(v).into())),
            Some("edit") => {
                let id = v["message_id"].as_str().expect("id");
                let m = messages
                    .iter_mut()
                    .find(|(i, _)| i == id)
                    .expect("edits a sent message");
                m.1 = text(v).into();
            }
            _ => {}
        }
    }
    assert!(messages.len() >= 10, "{} messages", messages.len());
    for (_, t) in &messages {
        assert!(t.encode_utf16().count() <= limit, "{t:?}");
        assert!(t.ends_with("ends."), "cut at a sentence: {t:?}");
    }
    let joined: Vec<String> = messages.into_iter().map(|m| m.1).collect();
    assert_eq!(words(&joined.join(" ")), words(&answer));
}
