//! Agent runs: one task per run drives the provider, persists the
//! transcript, and turns provider events into OpenClaw `agent` and `chat`
//! events (cumulative v3 text plus v4 `deltaText`, deltas throttled and
//! flushed before tool events and the terminal event, exactly one terminal
//! event per run). Runs are keyed by `runId` (= the idempotency key);
//! finished results are kept 5 minutes for idempotent retries and
//! `agent.wait`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::hub::{Audience, Broadcast};
use super::{Gateway, now_ms};
use crate::agent::{
    AgentError, AgentEvent, ContextMessage, RunRequest, ToolCallRecord, ToolHost, ToolRound,
    ToolSpec,
};
use crate::plugins::{PluginKind, PluginRegistry};
use crate::protocol::scopes;
use crate::store::{NewMessage, TranscriptMessage};

/// Finished runs are remembered this long.
pub const DEDUPE_TTL: Duration = Duration::from_secs(300);
/// At most this many finished runs are remembered.
pub const DEDUPE_MAX: usize = 1000;
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

/// What `start` did.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// A new run started.
    Started,
    /// A run with this id is still going.
    InFlight,
    /// A run with this id finished recently.
    Done(RunResult),
}

struct Active {
    session_key: String,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    done: watch::Receiver<Option<RunResult>>,
}

/// Finished runs by id, and their ids oldest first (for the size cap).
type Finished = (HashMap<String, (RunResult, Instant)>, VecDeque<String>);

/// All runs.
pub struct RunManager {
    active: Mutex<HashMap<String, Active>>,
    finished: Mutex<Finished>,
    idle: Notify,
    default_timeout: Duration,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("active", &self.active_count())
            .finish()
    }
}

impl RunManager {
    /// A manager whose runs time out after `default_timeout`.
    pub fn new(default_timeout: Duration) -> Self {
        RunManager {
            active: Mutex::new(HashMap::new()),
            finished: Mutex::new((HashMap::new(), VecDeque::new())),
            idle: Notify::new(),
            default_timeout,
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs in progress.
    pub fn active_count(&self) -> usize {
        self.active().len()
    }

    /// Run ids in progress in `session_key`.
    pub fn active_in(&self, session_key: &str) -> Vec<String> {
        self.active()
            .iter()
            .filter(|(_, a)| a.session_key == session_key)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The session of an active run.
    pub fn session_of(&self, run_id: &str) -> Option<String> {
        self.active().get(run_id).map(|a| a.session_key.clone())
    }

    /// A recently finished run.
    pub fn finished(&self, run_id: &str) -> Option<RunResult> {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        match f.0.get(run_id) {
            Some((r, at)) if at.elapsed() < DEDUPE_TTL => Some(r.clone()),
            Some(_) => {
                f.0.remove(run_id);
                None
            }
            None => None,
        }
    }

    fn record(&self, result: RunResult) {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *f;
        if map
            .insert(result.run_id.clone(), (result.clone(), Instant::now()))
            .is_none()
        {
            order.push_back(result.run_id.clone());
        }
        while order.len() > DEDUPE_MAX {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Abort run `run_id` with `reason` (`rpc`, `stop`, `shutdown`, ...);
    /// whether it was running.
    pub fn abort(&self, run_id: &str, reason: &str) -> bool {
        match self.active().get(run_id) {
            Some(a) => {
                a.reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| reason.to_string());
                a.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Abort every run in `session_key`; the aborted ids.
    pub fn abort_session(&self, session_key: &str, reason: &str) -> Vec<String> {
        let ids = self.active_in(session_key);
        for id in &ids {
            self.abort(id, reason);
        }
        ids
    }

    /// Abort everything.
    pub fn abort_all(&self, reason: &str) {
        let ids: Vec<String> = self.active().keys().cloned().collect();
        for id in ids {
            self.abort(&id, reason);
        }
    }

    /// Wait until no run is active.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Wait for run `run_id` to finish, at most `timeout`. `None` if the
    /// run is unknown; `Some(None)` on timeout.
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Option<Option<RunResult>> {
        if let Some(r) = self.finished(run_id) {
            return Some(Some(r));
        }
        let mut rx = match self.active().get(run_id) {
            Some(a) => a.done.clone(),
            None => return self.finished(run_id).map(Some),
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| r.is_some())).await;
        match waited {
            Ok(Ok(r)) => Some(r.clone()),
            Ok(Err(_)) => Some(self.finished(run_id)),
            Err(_) => Some(None),
        }
    }

    /// Start a run unless one with this id is running or recently finished.
    pub fn start(&self, gw: &Arc<Gateway>, spec: RunSpec) -> StartOutcome {
        if let Some(r) = self.finished(&spec.run_id) {
            return StartOutcome::Done(r);
        }
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let (done_tx, done_rx) = watch::channel(None);
        {
            let mut active = self.active();
            if active.contains_key(&spec.run_id) {
                return StartOutcome::InFlight;
            }
            active.insert(
                spec.run_id.clone(),
                Active {
                    session_key: spec.session_key.clone(),
                    cancel: cancel.clone(),
                    reason: reason.clone(),
                    done: done_rx,
                },
            );
        }
        let gw = gw.clone();
        let timeout = spec.timeout.unwrap_or(self.default_timeout);
        let span = info_span!("run", run_id = %spec.run_id, session = %spec.session_key);
        tokio::spawn(
            async move {
                let result = execute(&gw, &spec, cancel, reason, timeout).await;
                info!(status = result.status, "run finished");
                gw.runs.record(result.clone());
                gw.runs.active().remove(&spec.run_id);
                let _ = done_tx.send(Some(result));
                gw.runs.idle.notify_waiters();
            }
            .instrument(span),
        );
        StartOutcome::Started
    }
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
struct Emitter<'a> {
    gw: &'a Gateway,
    run_id: &'a str,
    session_key: &'a str,
    seq: u64,
}

impl Emitter<'_> {
    fn agent(&mut self, stream: &str, data: Value, droppable: bool) {
        self.seq += 1;
        let tool = stream == "tool";
        let payload = json!({
            "runId": self.run_id,
            "seq": self.seq,
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

    fn chat(&self, mut payload: Map<String, Value>, droppable: bool) {
        payload.insert("runId".into(), json!(self.run_id));
        payload.insert("sessionKey".into(), json!(self.session_key));
        payload.insert("seq".into(), json!(self.seq));
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

fn session_changed(gw: &Gateway, key: &str, reason: &str, run_id: &str) {
    let entry = gw.sessions.get_session(key).ok().flatten();
    super::methods::sessions::changed(gw, key, reason, entry.as_ref(), Some(run_id));
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

async fn execute(
    gw: &Arc<Gateway>,
    spec: &RunSpec,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    timeout: Duration,
) -> RunResult {
    let key = spec.session_key.as_str();
    let run_id = spec.run_id.as_str();
    let started_at = now_ms();
    let mut em = Emitter {
        gw,
        run_id,
        session_key: key,
        seq: 0,
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

    // The user's message is durable before anything else happens.
    let mut meta = Map::new();
    if let Origin::Channel {
        channel,
        conversation,
        sender,
        reply_to,
    } = &spec.origin
    {
        meta.insert("channel".into(), json!(channel));
        meta.insert("conversation".into(), json!(conversation));
        meta.insert("sender".into(), json!(sender));
        if let Some(r) = reply_to {
            meta.insert("channelMessageId".into(), json!(r));
        }
    }
    let history = gw
        .sessions
        .history(key, CONTEXT_MESSAGES)
        .unwrap_or_default()
        .into_iter()
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
    match gw.sessions.append_message(
        key,
        NewMessage {
            role: "user".into(),
            content: json!([{"type": "text", "text": spec.message}]),
            run_id: Some(run_id.to_string()),
            stop_reason: None,
            meta,
            event: Some("message.received"),
        },
    ) {
        Ok(m) => message_event(gw, key, &m),
        Err(e) => {
            warn!(error = %e, "persisting user message");
            em.agent(
                "lifecycle",
                json!({"phase": "error", "error": e.to_string()}),
                false,
            );
            let mut p = Map::new();
            p.insert("state".into(), json!("error"));
            p.insert("errorMessage".into(), json!(format!("store: {e}")));
            p.insert("errorKind".into(), json!("unknown"));
            em.chat(p, false);
            result.status = "error";
            result.error = Some(e.to_string());
            result.ended_at = now_ms();
            return result;
        }
    }
    session_changed(gw, key, "send", run_id);
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
            ..
        } => {
            let (tx, rx) = watch::channel((String::new(), false));
            let task = tokio::spawn(super::inbound::stream_reply(
                gw.clone(),
                channel.clone(),
                conversation.clone(),
                reply_to.clone(),
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
    let req = RunRequest {
        session_key: key.to_string(),
        history,
        message: spec.message.clone(),
        model,
    };
    let provider = gw.provider.clone();
    let mut run = provider.run(req, tools, tx, cancel.clone());
    let deadline = tokio::time::Instant::now() + timeout;
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
            r = &mut run => break r,
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
            em.agent(
                "lifecycle",
                json!({"phase": "end", "endedAt": ended_at}),
                false,
            );
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
            em.agent(
                "lifecycle",
                json!({"phase": "end", "endedAt": ended_at, "aborted": true}),
                false,
            );
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
            em.agent(
                "lifecycle",
                json!({"phase": "error", "endedAt": ended_at, "error": msg}),
                false,
            );
            p.insert("state".into(), json!("error"));
            p.insert("errorMessage".into(), json!(msg));
            p.insert("errorKind".into(), json!(e.kind()));
            result.status = "error";
            result.error = Some(msg);
        }
    }
    em.chat(p, false);
    session_changed(gw, key, "send", run_id);
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
    result
}
