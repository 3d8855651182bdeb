//! `sessions.*`: list, (message) subscriptions, patch, reset, delete, abort.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Ctx, Reply, params};
use crate::gateway::hub::{Audience, Broadcast};
use crate::gateway::{Gateway, canonical_key, now_ms};
use crate::protocol::errors::ErrorShape;
use crate::protocol::scopes;
use crate::store::{NewSession, SessionEntry};

/// A session as `sessions.list` rows show it.
pub fn session_row(s: &SessionEntry) -> Value {
    let mut row = json!({
        "key": s.key,
        "kind": if s.key == "global" { "global" } else { "direct" },
        "updatedAt": s.updated_ms,
        "sessionId": s.session_id,
        "messageCount": s.message_count,
        "agentId": s.agent_id,
    });
    if let Some(p) = &s.last_preview {
        row["lastMessagePreview"] = json!(p);
    }
    if let Some(c) = &s.channel {
        row["channel"] = json!(c);
        row["displayName"] = json!(format!(
            "{c}: {}",
            s.conversation.clone().unwrap_or_default()
        ));
    }
    for (k, v) in &s.settings {
        row[k] = v.clone();
    }
    row
}

fn store_err(e: impl std::fmt::Display) -> ErrorShape {
    ErrorShape::unavailable(format!("store: {e}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    limit: Option<usize>,
    search: Option<String>,
}

/// `sessions.list`.
pub fn list(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: ListParams = params("sessions.list", p)?;
    let limit = p.limit.unwrap_or(200).clamp(1, 5000);
    let gw = &ctx.gw;
    let mut sessions = gw.sessions.list_sessions(limit).map_err(store_err)?;
    if let Some(q) = p.search.as_deref().filter(|q| !q.is_empty()) {
        let q = q.to_lowercase();
        sessions.retain(|s| {
            s.key.to_lowercase().contains(&q)
                || s.settings
                    .get("label")
                    .and_then(Value::as_str)
                    .is_some_and(|l| l.to_lowercase().contains(&q))
        });
    }
    let model = gw.provider.models().first().map(|m| m.id.clone());
    Ok(json!({
        "ts": now_ms(),
        "path": gw.store_path,
        "count": sessions.len(),
        "defaults": {"modelProvider": gw.provider.name(), "model": model, "contextTokens": null},
        "sessions": sessions
            .iter()
            .map(|s| {
                let mut row = session_row(s);
                let (busy, active) = activity(gw, &s.key, None);
                row["hasActiveRun"] = json!(busy);
                row["activeRunIds"] = json!(active);
                row
            })
            .collect::<Vec<_>>(),
    }))
}

/// `sessions.subscribe` / `unsubscribe`.
pub fn subscribe(ctx: &Ctx, on: bool) -> Reply {
    ctx.conn.set_sessions_subscribed(on);
    Reply::Ok(json!({"subscribed": on}))
}

#[derive(Deserialize)]
struct KeyParams {
    key: String,
}

/// `sessions.messages.subscribe` / `unsubscribe`.
pub fn messages_subscribe(ctx: &Ctx, p: &Value, on: bool) -> Result<Value, ErrorShape> {
    let method = if on {
        "sessions.messages.subscribe"
    } else {
        "sessions.messages.unsubscribe"
    };
    let p: KeyParams = params(method, p)?;
    let key = canonical_key(&p.key);
    ctx.conn.set_message_sub(&key, on);
    Ok(json!({"subscribed": on, "key": key}))
}

/// Whether session `key` has runs, as session rows carry it:
/// `hasActiveRun` and `activeRunIds`, the complete set of its unfinished
/// runs, less `ending` (a run that is reporting its end). Clients that
/// saw a run in `activeRunIds` consider it running until a row without it
/// arrives.
pub fn activity(gw: &Gateway, key: &str, ending: Option<&str>) -> (bool, Vec<String>) {
    let mut active = gw.runs.active_in(key);
    if let Some(r) = ending {
        active.retain(|a| a != r);
    }
    active.sort();
    (!active.is_empty(), active)
}

/// Tell `sessions.subscribe`d connections that session `key` changed,
/// with its row when it still exists, the run that changed it, if any,
/// and its runs (`run_ended`: that run is ending and no longer counts).
pub fn changed(
    gw: &Gateway,
    key: &str,
    reason: &str,
    entry: Option<&SessionEntry>,
    run_id: Option<&str>,
    run_ended: bool,
) {
    let mut payload = json!({"sessionKey": key, "reason": reason, "ts": now_ms()});
    if let Some(r) = run_id {
        payload["runId"] = json!(r);
    }
    let (busy, active) = activity(gw, key, run_id.filter(|_| run_ended));
    payload["hasActiveRun"] = json!(busy);
    payload["activeRunIds"] = json!(active);
    if let Some(Value::Object(row)) = entry.map(session_row)
        && let Value::Object(p) = &mut payload
    {
        for (k, v) in row {
            p.entry(k).or_insert(v);
        }
    }
    gw.broadcast(&Broadcast {
        name: "sessions.changed",
        payload,
        scope: Some(scopes::READ),
        droppable: true,
        audience: Audience::SessionSubscribers,
        state_version: None,
    });
}

/// Settings `sessions.patch` accepts.
pub const PATCHABLE: &[&str] = &[
    "label",
    "thinkingLevel",
    "fastMode",
    "verboseLevel",
    "reasoningLevel",
    "model",
    "sendPolicy",
    "elevatedLevel",
    "responseUsage",
    "groupActivation",
];

/// `sessions.patch`.
pub fn patch(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let Some(obj) = p.as_object() else {
        return Err(ErrorShape::bad_params(
            "sessions.patch",
            "params must be an object",
        ));
    };
    let Some(key) = obj.get("key").and_then(Value::as_str) else {
        return Err(ErrorShape::bad_params(
            "sessions.patch",
            "missing required property 'key'",
        ));
    };
    let key = canonical_key(key);
    let mut patch = Map::new();
    for (k, v) in obj {
        if k == "key" {
            continue;
        }
        if !PATCHABLE.contains(&k.as_str()) {
            return Err(ErrorShape::bad_params(
                "sessions.patch",
                format!("unknown property {k:?}"),
            ));
        }
        if let Some(s) = v.as_str()
            && k == "label"
            && s.chars().count() > 100
        {
            return Err(ErrorShape::bad_params(
                "sessions.patch",
                "label is longer than 100 characters",
            ));
        }
        patch.insert(k.clone(), v.clone());
    }
    let gw = &ctx.gw;
    ensure_operator_session(gw, &key)?;
    let entry = gw
        .sessions
        .patch_session(&key, &patch)
        .map_err(store_err)?
        .ok_or_else(|| ErrorShape::invalid(format!("session not found: {key}")))?;
    changed(gw, &key, "patch", Some(&entry), None, false);
    let mut resolved = json!({"modelProvider": gw.provider.name()});
    if let Some(m) = entry.settings.get("model") {
        resolved["model"] = m.clone();
    }
    Ok(
        json!({"ok": true, "path": gw.store_path, "key": key, "entry": session_row(&entry), "resolved": resolved}),
    )
}

/// Create the operator session `key` if it does not exist yet.
fn ensure_operator_session(gw: &Gateway, key: &str) -> Result<(), ErrorShape> {
    gw.sessions
        .ensure_session(
            key,
            &NewSession {
                agent_id: "main".into(),
                ..Default::default()
            },
        )
        .map(|_| ())
        .map_err(store_err)
}

/// `sessions.reset`.
pub fn reset(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: KeyParams = params("sessions.reset", p)?;
    let key = canonical_key(&p.key);
    let gw = &ctx.gw;
    gw.runs.abort_session(&key, "reset");
    ensure_operator_session(gw, &key)?;
    let entry = gw
        .sessions
        .reset_session(&key)
        .map_err(store_err)?
        .ok_or_else(|| ErrorShape::invalid(format!("session not found: {key}")))?;
    changed(gw, &key, "reset", Some(&entry), None, false);
    Ok(json!({"ok": true, "key": key, "entry": session_row(&entry)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteParams {
    key: String,
    delete_transcript: Option<bool>,
}

/// `sessions.delete`.
pub fn delete(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: DeleteParams = params("sessions.delete", p)?;
    let key = canonical_key(&p.key);
    let gw = &ctx.gw;
    gw.runs.abort_session(&key, "delete");
    let delete_transcript = p.delete_transcript.unwrap_or(true);
    let deleted = gw
        .sessions
        .delete_session(&key, delete_transcript)
        .map_err(store_err)?;
    if deleted {
        changed(gw, &key, "delete", None, None, false);
    }
    Ok(
        json!({"ok": true, "key": key, "deleted": deleted, "archived": deleted && !delete_transcript}),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AbortParams {
    key: String,
    run_id: Option<String>,
}

/// `sessions.abort`.
pub fn abort(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let p: AbortParams = params("sessions.abort", p)?;
    let key = canonical_key(&p.key);
    let runs = &ctx.gw.runs;
    let aborted = match &p.run_id {
        Some(id)
            if runs.session_of(id).as_deref() == Some(key.as_str()) && runs.abort(id, "rpc") =>
        {
            Some(id.clone())
        }
        Some(_) => None,
        None => runs.abort_session(&key, "rpc").into_iter().next(),
    };
    Ok(json!({
        "ok": true,
        "abortedRunId": aborted,
        "status": if aborted.is_some() { "aborted" } else { "no-active-run" },
    }))
}
