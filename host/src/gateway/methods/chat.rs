//! `chat.send`, `chat.abort`, `chat.history`, `chat.inject`, `agent` (two
//! responses on one id) and `agent.wait`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Ctx, Reply, params};
use crate::gateway::hub::{Audience, Broadcast};
use crate::gateway::runs::{
    Origin, RunResult, RunSpec, StartOutcome, assistant_message, message_json,
};
use crate::gateway::{canonical_key, now_ms};
use crate::protocol::errors::{ErrorShape, code};
use crate::protocol::frames::Response;
use crate::protocol::scopes;
use crate::store::NewMessage;

/// Longest session key accepted.
pub const MAX_SESSION_KEY: usize = 512;
/// Longest message accepted (characters are bytes here; the frame limit
/// applies first).
pub const MAX_MESSAGE_BYTES: usize = 5_000_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendParams {
    session_key: String,
    message: String,
    idempotency_key: String,
    timeout_ms: Option<u64>,
    #[serde(default)]
    attachments: Vec<Value>,
}

fn is_stop_command(m: &str) -> bool {
    matches!(
        m.trim().to_ascii_lowercase().as_str(),
        "/stop" | "/abort" | "stop"
    )
}

fn done_payload(r: &RunResult) -> (Value, Option<ErrorShape>) {
    match r.status {
        "error" => (
            json!({"runId": r.run_id, "status": "error", "summary": r.error.clone().unwrap_or_default()}),
            Some(ErrorShape::unavailable(
                r.error.clone().unwrap_or_else(|| "run failed".into()),
            )),
        ),
        status => (
            json!({"runId": r.run_id, "status": if status == "aborted" { "aborted" } else { "ok" }}),
            None,
        ),
    }
}

/// A refusal for a message to a session whose queue is full (retryable).
fn queue_full(cap: usize) -> ErrorShape {
    ErrorShape::unavailable(format!(
        "the session is busy and {cap} messages are already waiting; retry later"
    ))
    .retry_after(1000)
    .with_details(json!({"reason": "queue_full", "queueCap": cap}))
}

/// `chat.send`: answers at once with `{runId, status:"started"}`, plus
/// `queued: true, position` when the run waits behind the session's
/// current run (its events stream when it starts).
pub fn send(ctx: &Ctx, req_id: &str, p: &Value) -> Reply {
    let p: SendParams = match params("chat.send", p) {
        Ok(p) => p,
        Err(e) => return Reply::Err(e),
    };
    if p.session_key.is_empty() || p.session_key.chars().count() > MAX_SESSION_KEY {
        return Reply::Err(ErrorShape::bad_params(
            "chat.send",
            "sessionKey must be 1..512 characters",
        ));
    }
    if p.idempotency_key.is_empty() {
        return Reply::Err(ErrorShape::bad_params(
            "chat.send",
            "idempotencyKey must be non-empty",
        ));
    }
    if p.message.trim().is_empty() && p.attachments.is_empty() {
        return Reply::Err(ErrorShape::invalid("message or attachment required"));
    }
    if p.message.len() > MAX_MESSAGE_BYTES {
        return Reply::Err(ErrorShape::invalid("message too large"));
    }
    let key = canonical_key(&p.session_key);
    let gw = &ctx.gw;
    if gw.shutting_down() {
        return Reply::Err(ErrorShape::unavailable("gateway is shutting down").retry_after(1000));
    }
    if is_stop_command(&p.message) {
        let mut ids = gw.runs.abort_session(&key, "stop");
        if let Some(c) = gw.cluster.get() {
            match c.abort_remote(&key, None, "stop") {
                Ok(runs) => merge_ids(&mut ids, runs.into_iter().map(|r| r.run_id)),
                Err(e) => tracing::warn!(session = %key, error = %e, "asking other nodes to stop"),
            }
        }
        return Reply::Ok(json!({"ok": true, "aborted": !ids.is_empty(), "runIds": ids}));
    }
    // In a cluster the key is claimed cluster-wide first: one run per key
    // whichever node gets it.
    let cluster = gw.cluster.get();
    if let Some(c) = cluster {
        match c.claim(&p.idempotency_key, &key) {
            Ok(None) => {}
            Ok(Some(run)) => return cluster_duplicate(&run),
            Err(e) => {
                tracing::warn!(run_id = %p.idempotency_key, error = %e, "claiming a run cluster-wide");
                return Reply::Err(
                    ErrorShape::unavailable("the cluster store is unavailable; retry")
                        .retry_after(1000),
                );
            }
        }
    }
    let spec = RunSpec {
        run_id: p.idempotency_key.clone(),
        session_key: key,
        message: p.message,
        origin: Origin::Operator,
        timeout: p.timeout_ms.filter(|t| *t > 0).map(Duration::from_millis),
        attachments: Default::default(),
    };
    // The run executes once the client has read this answer: a Ping
    // follows it, and the run waits for the Pong (bounded; see
    // `gateway::ping_barrier`). A client that handles frames read together
    // in one go (OpenClaw's TUI) would otherwise see a fast run's events
    // in the same read as its `chat.send` answer and stay "busy" after the
    // final event. The user's turn is in the transcript before the answer
    // says `started` (a run aborted before it executes keeps it there).
    let (ponged, after) = tokio::sync::oneshot::channel();
    let answered = |payload: Value| {
        ctx.conn
            .respond(crate::protocol::frames::Response::ok(req_id, payload).to_text());
        ctx.conn.ping_barrier(ponged);
        Reply::Done
    };
    match gw.runs.start_after(gw, spec, Some(after)) {
        StartOutcome::Started => answered(json!({"runId": p.idempotency_key, "status": "started"})),
        StartOutcome::Queued { position } => answered(json!({
            "runId": p.idempotency_key, "status": "started", "queued": true, "position": position,
        })),
        StartOutcome::QueueFull { cap } => {
            if let Some(c) = cluster {
                c.release(&p.idempotency_key);
            }
            Reply::Err(queue_full(cap))
        }
        StartOutcome::InFlight => {
            Reply::Ok(json!({"runId": p.idempotency_key, "status": "in_flight"}))
        }
        StartOutcome::Done(r) => match done_payload(&r) {
            (v, None) => Reply::Ok(v),
            (v, Some(e)) => Reply::ErrWith(e, v),
        },
    }
}

/// The answer to a `chat.send` whose key another node (or this one)
/// already runs or ran: `in_flight` while it runs, else its result, as for
/// a local duplicate.
fn cluster_duplicate(run: &crate::store::ClusterRun) -> Reply {
    let Some(r) = crate::gateway::cluster::run_result(run) else {
        return Reply::Ok(json!({"runId": run.run_id, "status": "in_flight"}));
    };
    match done_payload(&r) {
        (v, None) => Reply::Ok(v),
        (v, Some(e)) => Reply::ErrWith(e, v),
    }
}

/// Add the ids of `more` not already in `ids`.
fn merge_ids(ids: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for id in more {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AbortParams {
    session_key: String,
    run_id: Option<String>,
}

/// `chat.abort`.
pub fn abort(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: AbortParams = params("chat.abort", p)?;
    let key = canonical_key(&p.session_key);
    let runs = &ctx.gw.runs;
    let ids = match &p.run_id {
        Some(id) => match runs.session_of(id) {
            Some(s) if s != key => {
                return Err(ErrorShape::invalid("runId does not match sessionKey"));
            }
            Some(_) => {
                runs.abort(id, "rpc");
                vec![id.clone()]
            }
            None => vec![],
        },
        None => runs.abort_session(&key, "rpc"),
    };
    let mut ids = ids;
    // In a cluster the run may execute on another node: its node aborts it
    // on request (and the run's `aborted` end reaches every node).
    if let Some(c) = ctx.gw.cluster.get() {
        match c.abort_remote(&key, p.run_id.as_deref(), "rpc") {
            Ok(found) => {
                if found.iter().any(|r| r.session_key != key) {
                    return Err(ErrorShape::invalid("runId does not match sessionKey"));
                }
                merge_ids(&mut ids, found.into_iter().map(|r| r.run_id));
            }
            Err(e) if ids.is_empty() => {
                tracing::warn!(session = %key, error = %e, "asking other nodes to abort");
                return Err(
                    ErrorShape::unavailable("the cluster store is unavailable; retry")
                        .retry_after(1000),
                );
            }
            Err(e) => tracing::warn!(session = %key, error = %e, "asking other nodes to abort"),
        }
    }
    Ok(json!({"ok": true, "aborted": !ids.is_empty(), "runIds": ids}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryParams {
    session_key: String,
    limit: Option<usize>,
    max_chars: Option<usize>,
    /// Runs whose input the client sent and wants news of
    /// (`inputReceipts`).
    #[serde(default)]
    input_run_ids: Vec<String>,
}

/// Largest `chat.history` response.
pub const MAX_HISTORY_BYTES: usize = 6 * 1024 * 1024;
/// Messages bigger than this are replaced by a placeholder in history.
pub const MAX_HISTORY_MESSAGE_BYTES: usize = 128 * 1024;

/// `chat.history`.
pub fn history(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: HistoryParams = params("chat.history", p)?;
    let limit = p.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ErrorShape::bad_params(
            "chat.history",
            "limit must be 1..1000",
        ));
    }
    let key = canonical_key(&p.session_key);
    let gw = &ctx.gw;
    let entry = gw
        .sessions
        .get_session(&key)
        .map_err(|e| ErrorShape::unavailable(e.to_string()))?;
    let msgs = gw
        .sessions
        .history(&key, limit)
        .map_err(|e| ErrorShape::unavailable(e.to_string()))?;
    let mut out = Vec::with_capacity(msgs.len());
    let mut total = 0;
    for m in msgs.iter().rev() {
        let mut v = message_json(m);
        let size = v.to_string().len();
        if size > MAX_HISTORY_MESSAGE_BYTES {
            v["content"] =
                json!([{"type": "text", "text": format!("[message omitted: {size} bytes]")}]);
        } else if let Some(max) = p.max_chars
            && let Some(Value::Array(blocks)) = v.get_mut("content")
        {
            for b in blocks {
                if let Some(Value::String(t)) = b.get_mut("text")
                    && t.chars().count() > max
                {
                    *t = t.chars().take(max).collect();
                }
            }
        }
        total += v.to_string().len();
        if total > MAX_HISTORY_BYTES {
            break;
        }
        out.push(v);
    }
    let receipts = input_receipts(gw, &key, &p.input_run_ids, &msgs);
    out.reverse();
    let mut result = json!({"sessionKey": key, "messages": out});
    if !p.input_run_ids.is_empty() {
        result["inputReceipts"] = json!(receipts);
    }
    if let Some(e) = entry {
        result["sessionId"] = json!(e.session_id);
        for k in ["thinkingLevel", "fastMode", "verboseLevel"] {
            if let Some(v) = e.settings.get(k) {
                result[k] = v.clone();
            }
        }
    }
    Ok(result)
}

/// Most input receipts one `chat.history` answers.
const MAX_INPUT_RECEIPTS: usize = 50;

/// What became of each run's input, as OpenClaw's `inputReceipts`: a run
/// whose user message is in the transcript was `consumed` by that message;
/// an unfinished run's input is `pending`; other ids are left out.
fn input_receipts(
    gw: &crate::gateway::Gateway,
    key: &str,
    run_ids: &[String],
    recent: &[crate::store::TranscriptMessage],
) -> Vec<Value> {
    let active = gw.runs.active_in(key);
    run_ids
        .iter()
        .take(MAX_INPUT_RECEIPTS)
        .filter_map(|r| {
            let consumed = recent
                .iter()
                .find(|m| m.role == "user" && m.run_id.as_deref() == Some(r.as_str()));
            match consumed {
                Some(m) => {
                    Some(json!({"runId": r, "state": "consumed", "consumedByEventId": m.id}))
                }
                None if active.contains(r) => Some(json!({"runId": r, "state": "pending"})),
                None => None,
            }
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InjectParams {
    session_key: String,
    message: String,
    label: Option<String>,
}

/// `chat.inject`: add an assistant message to the transcript without a run.
pub fn inject(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: InjectParams = params("chat.inject", p)?;
    if p.label.as_ref().is_some_and(|l| l.chars().count() > 100) {
        return Err(ErrorShape::bad_params(
            "chat.inject",
            "label is longer than 100 characters",
        ));
    }
    let key = canonical_key(&p.session_key);
    let gw = &ctx.gw;
    let mut meta = Map::new();
    if let Some(l) = &p.label {
        meta.insert("label".into(), json!(l));
    }
    let m = gw
        .sessions
        .append_message(
            &key,
            NewMessage {
                role: "assistant".into(),
                content: json!([{"type": "text", "text": p.message}]),
                run_id: None,
                stop_reason: Some("injected".into()),
                meta,
                event: Some("message.sent"),
            },
        )
        .map_err(|e| ErrorShape::unavailable(e.to_string()))?;
    gw.broadcast(&Broadcast {
        name: "chat",
        payload: json!({
            "runId": format!("inject-{}", m.id),
            "sessionKey": key,
            "seq": 0,
            "state": "final",
            "message": assistant_message(&p.message, m.timestamp),
        }),
        scope: Some(scopes::READ),
        droppable: false,
        audience: Audience::All,
        state_version: None,
    });
    Ok(json!({"ok": true, "messageId": m.id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentParams {
    message: String,
    idempotency_key: String,
    session_key: Option<String>,
    timeout: Option<u64>,
}

/// `agent`: `{status:"accepted"}` now, and a second response with the same
/// id when the run ends.
pub fn agent(ctx: &Ctx, req_id: &str, p: &Value) -> Reply {
    let p: AgentParams = match params("agent", p) {
        Ok(p) => p,
        Err(e) => return Reply::Err(e),
    };
    if p.idempotency_key.is_empty() {
        return Reply::Err(ErrorShape::bad_params(
            "agent",
            "idempotencyKey must be non-empty",
        ));
    }
    let gw = ctx.gw.clone();
    if gw.shutting_down() {
        return Reply::Err(ErrorShape::unavailable("gateway is shutting down").retry_after(1000));
    }
    let key = canonical_key(p.session_key.as_deref().unwrap_or("main"));
    let run_id = p.idempotency_key.clone();
    // In a cluster the key is claimed cluster-wide first (as for
    // `chat.send`): a run with this key on another node is waited for
    // there, not started again here.
    let cluster = gw.cluster.get().cloned();
    if let Some(c) = &cluster {
        match c.claim(&run_id, &key) {
            Ok(None) => {}
            Ok(Some(run)) => {
                if let Some(r) = crate::gateway::cluster::run_result(&run) {
                    return final_reply(&r, req_id, &ctx.conn);
                }
                return accept_and_wait(ctx, req_id, run_id);
            }
            Err(e) => {
                tracing::warn!(run_id = %run_id, error = %e, "claiming a run cluster-wide");
                return Reply::Err(
                    ErrorShape::unavailable("the cluster store is unavailable; retry")
                        .retry_after(1000),
                );
            }
        }
    }
    let spec = RunSpec {
        run_id: run_id.clone(),
        session_key: key,
        message: p.message,
        origin: Origin::Operator,
        // `timeout` is in seconds in the CLI's agent params.
        timeout: p.timeout.filter(|t| *t > 0).map(Duration::from_secs),
        attachments: Default::default(),
    };
    match gw.runs.start(&gw, spec) {
        StartOutcome::Done(r) => return final_reply(&r, req_id, &ctx.conn),
        StartOutcome::QueueFull { cap } => {
            if let Some(c) = &cluster {
                c.release(&run_id);
            }
            return Reply::Err(queue_full(cap));
        }
        StartOutcome::Started | StartOutcome::Queued { .. } | StartOutcome::InFlight => {}
    }
    accept_and_wait(ctx, req_id, run_id)
}

/// Answer `agent` with `accepted`, then with the run's result once it
/// ends (on this node or, in a cluster, wherever it runs).
fn accept_and_wait(ctx: &Ctx, req_id: &str, run_id: String) -> Reply {
    let gw = ctx.gw.clone();
    let accepted = json!({"runId": run_id, "status": "accepted", "acceptedAt": now_ms()});
    ctx.conn.respond(Response::ok(req_id, accepted).to_text());
    ctx.conn
        .pending_runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(req_id.to_string(), run_id.clone());
    let conn = ctx.conn.clone();
    let req_id = req_id.to_string();
    tokio::spawn(async move {
        let result = wait_anywhere(&gw, &run_id, Duration::from_secs(24 * 3600)).await;
        conn.pending_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req_id);
        if let Some(Some(r)) = result {
            final_reply(&r, &req_id, &conn);
        }
    });
    Reply::Done
}

fn final_reply(r: &RunResult, req_id: &str, conn: &crate::gateway::hub::Conn) -> Reply {
    let resp = match r.status {
        "ok" => Response::ok(
            req_id,
            json!({"runId": r.run_id, "status": "ok", "summary": "completed",
                   "result": {"payloads": [{"text": r.text}], "text": r.text}}),
        ),
        "aborted" => Response::ok(
            req_id,
            json!({"runId": r.run_id, "status": "aborted", "summary": "aborted", "result": {"payloads": [{"text": r.text}], "text": r.text}}),
        ),
        _ => Response::err_with(
            req_id,
            ErrorShape::unavailable(r.error.clone().unwrap_or_else(|| "run failed".into())),
            json!({"runId": r.run_id, "status": "error", "summary": r.error.clone().unwrap_or_default()}),
        ),
    };
    conn.respond(resp.to_text());
    Reply::Done
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitParams {
    run_id: String,
    timeout_ms: Option<u64>,
}

/// `agent.wait`.
pub async fn wait(ctx: &Ctx, p: &Value) -> Reply {
    let p: WaitParams = match params("agent.wait", p) {
        Ok(p) => p,
        Err(e) => return Reply::Err(e),
    };
    let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(30_000).min(3_600_000));
    match wait_anywhere(&ctx.gw, &p.run_id, timeout).await {
        None => Reply::Err(
            ErrorShape::new(
                "AGENT_RESULT_NOT_FOUND",
                format!("unknown runId: {}", p.run_id),
            )
            .with_details(json!({"runId": p.run_id})),
        ),
        Some(None) => Reply::Ok(json!({"runId": p.run_id, "status": "timeout"})),
        Some(Some(r)) => {
            let mut v = json!({
                "runId": r.run_id,
                "status": if r.status == "error" { "error" } else { "ok" },
                "startedAt": r.started_at,
                "endedAt": r.ended_at,
            });
            if r.status == "aborted" {
                v["aborted"] = json!(true);
            }
            if let Some(e) = &r.error {
                v["error"] = json!(e);
            }
            Reply::Ok(v)
        }
    }
}

/// Wait for run `run_id` at most `timeout`: on this node if it runs or
/// ran here, else (in a cluster) wherever it runs. `None` if no node knows
/// it; `Some(None)` on timeout. A store failure is logged and the run
/// taken as unknown.
async fn wait_anywhere(
    gw: &crate::gateway::Gateway,
    run_id: &str,
    timeout: Duration,
) -> Option<Option<RunResult>> {
    if gw.runs.session_of(run_id).is_some() || gw.runs.finished(run_id).is_some() {
        return gw.runs.wait(run_id, timeout).await;
    }
    let Some(c) = gw.cluster.get() else {
        return gw.runs.wait(run_id, timeout).await;
    };
    match c.wait_run(run_id, timeout).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(run_id, error = %e, "waiting for a run cluster-wide");
            None
        }
    }
}

#[allow(dead_code)]
const _: &str = code::AGENT_TIMEOUT;
