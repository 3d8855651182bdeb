//! Executing one agent run: drive the provider, persist the transcript,
//! and turn provider events into OpenClaw `agent` and `chat` events
//! (cumulative v3 text plus v4 `deltaText`, deltas throttled and flushed
//! before tool events and the terminal event, exactly one terminal event
//! per run). Runs are keyed by `runId` (= the idempotency key); when a run
//! may execute, and that it always ends, is the
//! [`run_manager`](super::run_manager)'s job.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::hub::{Audience, Broadcast};
use super::{Gateway, now_ms};
use crate::agent::{
    AgentError, AgentEvent, ContextMessage, RunRequest, ToolCallRecord, ToolHost, ToolRound,
    ToolSpec,
};
use crate::plugins::{PluginKind, PluginRegistry};
use crate::protocol::scopes;
use crate::store::{NewMessage, TranscriptMessage};

pub use super::run_manager::{
    DEDUPE_MAX, DEDUPE_TTL, MAX_RUN_TIMEOUT, RunCounts, RunManager, StartOutcome,
};

/// Messages of context given to the provider.
pub const CONTEXT_MESSAGES: usize = 40;

/// Where a run's message came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// An operator client (`chat.send`, `agent`).
    Operator,
    /// A channel plugin; the answer goes back through it.
    Channel {
        /// Channel plugin name.
        channel: String,
        /// Conversation id.
        conversation: String,
        /// Platform id of the message being answered.
        reply_to: Option<String>,
        /// Sender id.
        sender: String,
        /// Thread or topic of the message being answered (the reply goes there).
        thread: Option<String>,
        /// Direct chat or group (decides draft streaming).
        chat: crate::channels::access::ChatKind,
        /// The message in the durable inbox (its final reply settles it).
        inbox: Option<crate::channels::InboxRef>,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Run id (the idempotency key).
    pub run_id: String,
    /// Canonical session key.
    pub session_key: String,
    /// The user's message.
    pub message: String,
    /// Where it came from.
    pub origin: Origin,
    /// Overall timeout.
    pub timeout: Option<Duration>,
    /// Attachments of a channel message, downloaded when the run starts.
    pub attachments: crate::channels::attachments::Pending,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Run id.
    pub run_id: String,
    /// Session.
    pub session_key: String,
    /// `ok`, `error` or `aborted`.
    pub status: &'static str,
    /// Start, Unix ms.
    pub started_at: i64,
    /// End, Unix ms.
    pub ended_at: i64,
    /// Error message, for `error`.
    pub error: Option<String>,
    /// The assistant's text.
    pub text: String,
}

/// Tools for the provider: the loaded tool plugins.
pub struct RegistryTools {
    registry: Arc<PluginRegistry>,
}

impl RegistryTools {
    /// Tools over `registry`.
    pub fn new(registry: Arc<PluginRegistry>) -> Self {
        RegistryTools { registry }
    }

    fn resolve(&self, name: &str) -> Option<String> {
        self.registry
            .of_kind(PluginKind::Tool)
            .into_iter()
            .find(|v| v.name == name || v.tool_info().is_some_and(|t| t.name == name))
            .map(|v| v.name.clone())
    }
}

impl ToolHost for RegistryTools {
    fn tools(&self) -> Vec<ToolSpec> {
        self.registry
            .of_kind(PluginKind::Tool)
            .into_iter()
            .filter_map(|v| {
                let t = v.tool_info()?;
                Some(ToolSpec {
                    name: t.name.clone(),
                    plugin: v.name.clone(),
                    description: t.description.clone(),
                    parameters: serde_json::from_str(&t.parameters_schema)
                        .unwrap_or_else(|_| json!({"type": "object"})),
                })
            })
            .collect()
    }

    fn invoke<'a>(&'a self, name: &'a str, args: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let Some(plugin) = self.resolve(name) else {
                return Err(format!("no tool named {name:?}"));
            };
            self.registry
                .invoke_tool(&plugin, args)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Emits a run's events with its per-run `seq`.
pub(super) struct Emitter<'a> {
    pub(super) gw: &'a Gateway,
    pub(super) run_id: &'a str,
    pub(super) session_key: &'a str,
    /// The last `seq` used (shared with the run's guard, which may have to
    /// publish the end).
    pub(super) seq: &'a AtomicU64,
}

impl Emitter<'_> {
    pub(super) fn agent(&mut self, stream: &str, data: Value, droppable: bool) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let tool = stream == "tool";
        let payload = json!({
            "runId": self.run_id,
            "seq": seq,
            "stream": stream,
            "ts": now_ms(),
            "data": data,
            "sessionKey": self.session_key,
        });
        if tool {
            self.gw.broadcast(&Broadcast {
                name: "session.tool",
                payload: payload.clone(),
                scope: Some(scopes::READ),
                droppable: true,
                audience: Audience::SessionSubscribers,
                state_version: None,
            });
        }
        self.gw.broadcast(&Broadcast {
            name: "agent",
            payload,
            scope: Some(scopes::READ),
            droppable,
            audience: if tool {
                Audience::ToolEvents
            } else {
                Audience::All
            },
            state_version: None,
        });
    }

    pub(super) fn chat(&self, mut payload: Map<String, Value>, droppable: bool) {
        payload.insert("runId".into(), json!(self.run_id));
        payload.insert("sessionKey".into(), json!(self.session_key));
        payload.insert("seq".into(), json!(self.seq.load(Ordering::Relaxed)));
        self.gw.broadcast(&Broadcast {
            name: "chat",
            payload: Value::Object(payload),
            scope: Some(scopes::READ),
            droppable,
            audience: Audience::All,
            state_version: None,
        });
    }
}

/// An assistant message object as chat events carry it.
pub fn assistant_message(text: &str, ts: i64) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": ts})
}

/// A transcript message as `chat.history` and `session.message` show it.
pub fn message_json(m: &TranscriptMessage) -> Value {
    let mut v = json!({
        "role": m.role,
        "content": m.content,
        "timestamp": m.timestamp,
        "__openclaw": {"id": m.id, "seq": m.seq},
    });
    if let Some(s) = &m.stop_reason {
        v["stopReason"] = json!(s);
    }
    if let Some(u) = m.meta.get("usage") {
        v["usage"] = u.clone();
    }
    if let Some(r) = &m.run_id {
        v["runId"] = json!(r);
        // A run's user message carries the key the client sent it with
        // (`runId` is `chat.send`'s idempotency key): clients match their
        // sent message in history by it.
        if m.role == "user" {
            v["idempotencyKey"] = json!(r);
        }
    }
    v
}

/// Text of a Pi-style content value.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn session_changed(gw: &Gateway, key: &str, reason: &str, run_id: &str, run_ended: bool) {
    let entry = gw.sessions.get_session(key).ok().flatten();
    super::methods::sessions::changed(gw, key, reason, entry.as_ref(), Some(run_id), run_ended);
}

/// Appends the run's user message to its session's transcript (with the
/// channel facts of a channel message) and tells the session's subscribers.
/// Called when `chat.send` accepts a run that has its session at once,
/// else when the run starts, and for a run aborted before it started
/// (`aborted`: marked so in its meta), so a message a client sent is in the
/// history either way. Appending is once per run (the store's rule), and
/// each caller saves only when no earlier step did.
pub(super) fn save_user_message(
    gw: &Gateway,
    spec: &RunSpec,
    aborted: bool,
) -> Result<(), crate::store::StoreError> {
    let key = spec.session_key.as_str();
    let mut meta = Map::new();
    if let Origin::Channel {
        channel,
        conversation,
        sender,
        reply_to,
        ..
    } = &spec.origin
    {
        meta.insert("channel".into(), json!(channel));
        meta.insert("conversation".into(), json!(conversation));
        meta.insert("sender".into(), json!(sender));
        if let Some(r) = reply_to {
            meta.insert("channelMessageId".into(), json!(r));
        }
    }
    if aborted {
        meta.insert("aborted".into(), json!(true));
    }
    let m = gw.sessions.append_message(
        key,
        NewMessage {
            role: "user".into(),
            content: json!([{"type": "text", "text": spec.message}]),
            run_id: Some(spec.run_id.clone()),
            stop_reason: None,
            meta,
            event: Some("message.received"),
        },
    )?;
    message_event(gw, key, &m);
    Ok(())
}

fn message_event(gw: &Gateway, key: &str, m: &TranscriptMessage) {
    gw.broadcast(&Broadcast {
        name: "session.message",
        payload: json!({"sessionKey": key, "message": message_json(m), "messageId": m.id, "messageSeq": m.seq}),
        scope: Some(scopes::READ),
        droppable: true,
        audience: Audience::MessageSubscribers(key.to_string()),
        state_version: None,
    });
}

fn log_event(gw: &Gateway, kind: &str, key: &str, data: Value) {
    if let Err(e) = gw.sessions.append_event(kind, Some(key), data) {
        warn!(kind, error = %e, "recording event");
    }
}

/// A run's streamed output: the text so far, throttled `chat` deltas, the
/// channel reply and the tool rounds. Every provider event goes through
/// [`RunStream::on_event`], during the run and after it returns.
#[derive(Default)]
struct RunStream {
    text: String,
    /// How much of `text` went out in `chat` deltas.
    sent_len: usize,
    last_delta: Option<tokio::time::Instant>,
    /// When the held-back text is due (throttled deltas).
    flush_at: Option<tokio::time::Instant>,
    throttle: Duration,
    tools: ToolLog,
    /// The channel reply being streamed, for channel runs.
    reply: Option<watch::Sender<(String, bool)>>,
}

impl RunStream {
    fn on_event(&mut self, gw: &Arc<Gateway>, em: &mut Emitter<'_>, ev: AgentEvent) {
        match ev {
            AgentEvent::TextDelta(d) => {
                self.text.push_str(&d);
                em.agent("assistant", json!({"text": self.text, "delta": d}), true);
                if let Some(tx) = &self.reply {
                    let _ = tx.send((self.text.clone(), false));
                }
                match self.last_delta {
                    Some(t) if t.elapsed() < self.throttle => {
                        self.flush_at.get_or_insert(t + self.throttle);
                    }
                    _ => self.flush(em),
                }
            }
            tool => {
                // Text before a tool call goes out first.
                self.flush(em);
                self.tools.record(&self.text, &tool);
                tool_event(gw, em, tool);
            }
        }
    }

    /// Send the text not yet sent as a `chat` delta (v3 cumulative text and
    /// v4 `deltaText`).
    fn flush(&mut self, em: &mut Emitter<'_>) {
        self.flush_at = None;
        if self.text.len() > self.sent_len {
            let mut p = Map::new();
            p.insert("state".into(), json!("delta"));
            p.insert("message".into(), assistant_message(&self.text, now_ms()));
            p.insert("deltaText".into(), json!(&self.text[self.sent_len..]));
            em.chat(p, true);
            self.sent_len = self.text.len();
            self.last_delta = Some(tokio::time::Instant::now());
        }
    }
}

/// The run's tool rounds, stored with its assistant message so a later
/// turn can give the model the calls and results again.
#[derive(Default)]
struct ToolLog {
    rounds: Vec<ToolRound>,
    /// How much of the run's text the rounds already hold.
    consumed: usize,
}

impl ToolLog {
    /// Note a tool event; `text` is the run's text so far.
    fn record(&mut self, text: &str, ev: &AgentEvent) {
        match ev {
            AgentEvent::ToolStart {
                call_id,
                name,
                args,
            } => {
                // New text since the last call means a new round (calls with
                // no text between them share one).
                if self.rounds.is_empty() || text.len() > self.consumed {
                    self.rounds.push(ToolRound {
                        text: text.get(self.consumed..).unwrap_or_default().to_owned(),
                        calls: Vec::new(),
                    });
                    self.consumed = text.len();
                }
                if let Some(round) = self.rounds.last_mut() {
                    round.calls.push(ToolCallRecord {
                        id: call_id.clone(),
                        name: name.clone(),
                        arguments: as_text(args),
                        ..ToolCallRecord::default()
                    });
                }
            }
            AgentEvent::ToolResult {
                call_id,
                result,
                is_error,
                ..
            } => {
                if let Some(call) = self
                    .rounds
                    .iter_mut()
                    .rev()
                    .flat_map(|r| r.calls.iter_mut())
                    .find(|c| &c.id == call_id)
                {
                    call.result = as_text(result);
                    call.is_error = *is_error;
                }
            }
            AgentEvent::TextDelta(_) => {}
        }
    }
}

/// A string as itself, any other JSON value as JSON text.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A tool start or result: logged (`tool.called` / `tool.completed`, for
/// webhooks) and sent as an `agent` tool event.
fn tool_event(gw: &Arc<Gateway>, em: &mut Emitter<'_>, ev: AgentEvent) {
    let (key, run_id) = (em.session_key, em.run_id);
    match ev {
        AgentEvent::ToolStart {
            call_id,
            name,
            args,
        } => {
            log_event(
                gw,
                "tool.called",
                key,
                json!({"runId": run_id, "sessionKey": key, "tool": name, "toolCallId": call_id}),
            );
            em.agent(
                "tool",
                json!({"phase": "start", "name": name, "toolCallId": call_id, "args": args}),
                false,
            );
        }
        AgentEvent::ToolResult {
            call_id,
            name,
            result,
            is_error,
        } => {
            log_event(
                gw,
                "tool.completed",
                key,
                json!({"runId": run_id, "sessionKey": key, "tool": name, "toolCallId": call_id, "isError": is_error}),
            );
            em.agent(
                "tool",
                json!({"phase": "result", "name": name, "toolCallId": call_id, "isError": is_error, "result": result}),
                false,
            );
        }
        AgentEvent::TextDelta(_) => {}
    }
}

/// A run's end events, published by the run manager once the run has
/// left the in-flight set (so a client that sees the final event and sends
/// again is never told the session is still running that run).
pub(super) struct RunEnd {
    /// The `agent` lifecycle `end`/`error` data, when the run started.
    pub lifecycle: Option<Value>,
    /// The `chat` `final`/`aborted`/`error` payload.
    pub chat: Map<String, Value>,
    /// Whether a `sessions.changed` (run ended) follows.
    pub session_changed: bool,
}

impl RunEnd {
    /// Publish the events of run `run_id` through `em`.
    pub(super) fn publish(self, em: &mut Emitter<'_>) {
        if let Some(data) = self.lifecycle {
            em.agent("lifecycle", data, false);
        }
        em.chat(self.chat, false);
        if self.session_changed {
            session_changed(em.gw, em.session_key, "send", em.run_id, true);
        }
    }
}

/// Execute `spec` to its end, publishing its events up to the last ones,
/// which it returns for the caller to publish once the run has left the
/// in-flight set; `timeout` is already clamped (the deadline is computed
/// with checked arithmetic anyway).
pub(super) async fn execute(
    gw: &Arc<Gateway>,
    spec: &RunSpec,
    user_saved: bool,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    timeout: Duration,
    seq: &AtomicU64,
) -> (RunResult, RunEnd) {
    let key = spec.session_key.as_str();
    let run_id = spec.run_id.as_str();
    let started_at = now_ms();
    let mut em = Emitter {
        gw,
        run_id,
        session_key: key,
        seq,
    };
    let mut result = RunResult {
        run_id: run_id.to_string(),
        session_key: key.to_string(),
        status: "ok",
        started_at,
        ended_at: started_at,
        error: None,
        text: String::new(),
    };

    let history = gw
        .sessions
        .history(key, CONTEXT_MESSAGES)
        .unwrap_or_default()
        .into_iter()
        // The run's own message (already saved when `chat.send` accepted
        // it, or by an earlier execution of this run) goes last, once.
        .filter(|m| m.run_id.as_deref() != Some(run_id))
        .map(|m| ContextMessage {
            role: m.role.clone(),
            text: content_text(&m.content),
            // Unreadable rounds (an older format) only lose the replay.
            tool_rounds: m
                .meta
                .get("toolRounds")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default(),
        })
        .collect();
    // The user's message is durable before anything else happens.
    let saved = if user_saved {
        Ok(())
    } else {
        save_user_message(gw, spec, false)
    };
    match saved {
        Ok(()) => {}
        Err(e) => {
            // Clients see a short message with a reference; the store's
            // detail (paths, SQL) stays in the log.
            let reference = super::public_error::new_ref();
            let msg = format!("could not store the message (ref {reference})");
            warn!(run_id, session = key, reference = %reference, error = %e, "persisting user message");
            let lifecycle = json!({"phase": "error", "error": msg});
            let mut p = Map::new();
            p.insert("state".into(), json!("error"));
            p.insert("errorMessage".into(), json!(msg));
            p.insert("errorKind".into(), json!("unknown"));
            result.status = "error";
            result.error = Some(msg);
            result.ended_at = now_ms();
            let end = RunEnd {
                lifecycle: Some(lifecycle),
                chat: p,
                session_changed: false,
            };
            return (result, end);
        }
    }
    session_changed(gw, key, "send", run_id, false);
    log_event(
        gw,
        "agent.started",
        key,
        json!({"runId": run_id, "sessionKey": key}),
    );
    em.agent(
        "lifecycle",
        json!({"phase": "start", "startedAt": started_at}),
        false,
    );

    // Channel replies stream through their own task so a slow platform
    // never holds up the protocol events.
    let (reply_tx, reply_task) = match &spec.origin {
        Origin::Channel {
            channel,
            conversation,
            reply_to,
            thread,
            chat,
            inbox,
            ..
        } => {
            let (tx, rx) = watch::channel((String::new(), false));
            let target = crate::channels::reply::ReplyTarget {
                channel: channel.clone(),
                conversation: conversation.clone(),
                thread: thread.clone(),
                chat: *chat,
                message_id: reply_to.clone(),
                inbox: *inbox,
            };
            let task = tokio::spawn(crate::channels::reply::stream_reply(
                gw.runtime.channels.clone(),
                target,
                rx,
            ));
            (Some(tx), Some(task))
        }
        Origin::Operator => (None, None),
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    let tools: Arc<dyn ToolHost> = Arc::new(RegistryTools::new(gw.runtime.plugins.clone()));
    let model = gw.sessions.get_session(key).ok().flatten().and_then(|s| {
        s.settings
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let resolved = if spec.attachments.attachments.is_empty() {
        crate::channels::attachments::Resolved::default()
    } else {
        crate::channels::attachments::resolve(&gw.runtime.channels, &spec.attachments).await
    };
    let req = RunRequest {
        session_key: key.to_string(),
        history,
        message: resolved.message_with_notes(&spec.message),
        files: resolved.files,
        model,
        operator: spec.origin == Origin::Operator,
    };
    let provider = gw.provider.clone();
    // A panic inside the provider ends the run with an error like any
    // other failure (the guard in `run_manager` covers the rest).
    let mut run = AssertUnwindSafe(provider.run(req, tools, tx, cancel.clone())).catch_unwind();
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(timeout)
        .or_else(|| now.checked_add(MAX_RUN_TIMEOUT))
        .unwrap_or(now);
    let mut out = RunStream {
        throttle: Duration::from_millis(gw.config.delta_throttle_ms),
        reply: reply_tx,
        ..RunStream::default()
    };
    let outcome = loop {
        tokio::select! {
            biased;
            ev = rx.recv() => {
                let Some(ev) = ev else { continue };
                out.on_event(gw, &mut em, ev);
            }
            r = &mut run => break r.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                warn!(provider = gw.provider.name(), panic = %what, "provider panicked");
                Err(AgentError::Internal)
            }),
            _ = async { if let Some(t) = out.flush_at { tokio::time::sleep_until(t).await } }, if out.flush_at.is_some() => {
                out.flush(&mut em);
            }
            _ = tokio::time::sleep_until(deadline) => {
                cancel.cancel();
                break Err(AgentError::Timeout);
            }
        }
    };
    // Events sent in the provider's last poll (a whole tool round can run
    // without yielding when the response is already buffered).
    while let Ok(ev) = rx.try_recv() {
        out.on_event(gw, &mut em, ev);
    }
    out.flush(&mut em);
    let RunStream {
        mut text,
        tools: tools_log,
        reply: reply_tx,
        ..
    } = out;
    let ended_at = now_ms();
    result.ended_at = ended_at;

    let persist = |text: &str, stop: &str, usage: Option<Value>| {
        let mut meta = Map::new();
        if let Some(u) = usage {
            meta.insert("usage".into(), u);
        }
        if !tools_log.rounds.is_empty() {
            meta.insert("toolRounds".into(), json!(tools_log.rounds));
        }
        match gw.sessions.append_message(
            key,
            NewMessage {
                role: "assistant".into(),
                content: json!([{"type": "text", "text": text}]),
                run_id: Some(run_id.to_string()),
                stop_reason: Some(stop.to_string()),
                meta,
                event: Some("message.sent"),
            },
        ) {
            Ok(m) => message_event(gw, key, &m),
            Err(e) => warn!(error = %e, "persisting assistant message"),
        }
    };

    let mut p = Map::new();
    let lifecycle;
    match outcome {
        Ok(out) => {
            if text.is_empty() {
                text = out.text.clone();
            }
            let usage = out
                .usage
                .as_ref()
                .map(|u| json!({"input": u.input_tokens, "output": u.output_tokens}));
            let stop = out.stop_reason.clone().unwrap_or_else(|| "stop".into());
            persist(&text, &stop, usage.clone());
            log_event(
                gw,
                "agent.completed",
                key,
                json!({"runId": run_id, "sessionKey": key, "status": "ok"}),
            );
            lifecycle = json!({"phase": "end", "endedAt": ended_at});
            p.insert("state".into(), json!("final"));
            if !text.is_empty() {
                p.insert("message".into(), assistant_message(&text, ended_at));
            }
            p.insert("stopReason".into(), json!(stop));
            if let Some(u) = usage {
                p.insert("usage".into(), u);
            }
        }
        Err(AgentError::Aborted) => {
            let why = reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "rpc".into());
            if !text.is_empty() {
                persist(&text, "aborted", None);
            }
            log_event(
                gw,
                "agent.completed",
                key,
                json!({"runId": run_id, "sessionKey": key, "status": "aborted", "reason": why}),
            );
            lifecycle = json!({"phase": "end", "endedAt": ended_at, "aborted": true});
            p.insert("state".into(), json!("aborted"));
            p.insert("stopReason".into(), json!(why));
            if !text.is_empty() {
                p.insert("message".into(), assistant_message(&text, ended_at));
            }
            result.status = "aborted";
        }
        Err(e) => {
            // Chats, channel senders and the event log get a short message
            // with a reference; the provider's detail stays in the log.
            let reference = super::public_error::new_ref();
            let msg = super::public_error::run_failure(&e, &reference);
            warn!(run_id, session = key, reference = %reference, error = %e, "run failed");
            if !text.is_empty() {
                persist(&text, "error", None);
            }
            log_event(
                gw,
                "agent.error",
                key,
                json!({"runId": run_id, "sessionKey": key, "error": msg}),
            );
            lifecycle = json!({"phase": "error", "endedAt": ended_at, "error": msg});
            p.insert("state".into(), json!("error"));
            p.insert("errorMessage".into(), json!(msg));
            p.insert("errorKind".into(), json!(e.kind()));
            result.status = "error";
            result.error = Some(msg);
        }
    }
    if let Some(tx) = reply_tx {
        let final_text = if result.status == "error" {
            format!("⚠️ {}", result.error.clone().unwrap_or_default())
        } else {
            text.clone()
        };
        let _ = tx.send((final_text, true));
    }
    if let Some(t) = reply_task {
        let _ = t.await;
    }
    result.text = text;
    let end = RunEnd {
        lifecycle: Some(lifecycle),
        chat: p,
        session_changed: true,
    };
    (result, end)
}
