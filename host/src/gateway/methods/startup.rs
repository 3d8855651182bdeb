//! What a chat client reads when it opens a conversation, beyond
//! `chat.history`: `chat.startup` (the first history page together with
//! the session's row), `chat.metadata` (the models and slash commands the
//! composer offers), `sessions.describe` (one session row) and
//! `models.authStatus` (whether each model provider can be used). Shapes
//! follow OpenClaw's Control UI 2026.9.6 client code.

use serde::Deserialize;
use serde_json::{Value, json};

use super::sessions::session_row;
use super::{Ctx, params};
use crate::gateway::{Gateway, canonical_key, now_ms};
use crate::protocol::errors::ErrorShape;

/// The methods this module answers.
pub const METHODS: &[&str] = &[
    "chat.startup",
    "chat.metadata",
    "sessions.describe",
    "models.authStatus",
];

/// The first history page a chat opens with when the client asks for no
/// limit (OpenClaw's Control UI asks for 80).
const STARTUP_LIMIT: usize = 80;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartupParams {
    session_key: Option<String>,
    limit: Option<usize>,
    max_chars: Option<usize>,
}

/// The session row for `key`, or a row for a session that does not exist
/// yet (a new chat has no row until its first message).
fn row_or_new(gw: &Gateway, key: &str) -> Result<Value, ErrorShape> {
    let entry = gw
        .sessions
        .get_session(key)
        .map_err(|e| ErrorShape::unavailable(format!("store: {e}")))?;
    let mut row = match entry {
        Some(e) => session_row(&e),
        None => json!({
            "key": key,
            "kind": if key == "global" { "global" } else { "direct" },
            "updatedAt": null,
            "messageCount": 0,
        }),
    };
    row["agentId"] = json!("main");
    row["snapshotAt"] = json!(now_ms());
    let (busy, active) = super::sessions::activity(gw, key, None);
    row["hasActiveRun"] = json!(busy);
    row["activeRunIds"] = json!(active);
    if row.get("model").is_none()
        && let Some(m) = gw.provider.models().first()
    {
        row["model"] = json!(m.id);
        row["modelProvider"] = json!(m.provider);
    }
    Ok(row)
}

/// `chat.startup`: `chat.history`'s answer plus `sessionInfo`, the
/// session's row.
pub fn chat_startup(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let sp: StartupParams = params("chat.startup", p)?;
    let key = canonical_key(sp.session_key.as_deref().unwrap_or("main"));
    let mut hp = json!({
        "sessionKey": key,
        "limit": sp.limit.unwrap_or(STARTUP_LIMIT).clamp(1, 1000),
    });
    if let Some(m) = sp.max_chars {
        hp["maxChars"] = json!(m);
    }
    let mut out = super::chat::history(ctx, &hp)?;
    out["sessionInfo"] = row_or_new(&ctx.gw, &key)?;
    Ok(out)
}

#[derive(Deserialize)]
struct DescribeParams {
    key: String,
}

/// `sessions.describe`: `{session}` with the row for exactly `key`
/// (`session: null` when no such session exists).
pub fn sessions_describe(ctx: &Ctx, p: &Value) -> Result<Value, ErrorShape> {
    let dp: DescribeParams = params("sessions.describe", p)?;
    let key = canonical_key(&dp.key);
    let exists = ctx
        .gw
        .sessions
        .get_session(&key)
        .map_err(|e| ErrorShape::unavailable(format!("store: {e}")))?
        .is_some();
    let session = if exists {
        row_or_new(&ctx.gw, &key)?
    } else {
        Value::Null
    };
    Ok(json!({"session": session}))
}

/// The models, in the shape of `models.list` entries.
fn models(gw: &Gateway) -> Vec<Value> {
    gw.provider
        .models()
        .into_iter()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect()
}

/// `chat.metadata`: the composer's models and slash commands. Pincer's
/// commands are the echo provider's `/tool`, which only operators use.
pub fn chat_metadata(gw: &Gateway) -> Value {
    let commands = if gw.provider.name() == "echo" {
        json!([{
            "name": "tool",
            "description": "Call a tool plugin: /tool NAME {json}",
            "source": "builtin",
            "acceptsArgs": true,
        }])
    } else {
        json!([])
    };
    json!({
        "ts": now_ms(),
        "agentId": "main",
        "models": models(gw),
        "commands": commands,
    })
}

/// `models.authStatus`: the configured provider and whether it can be
/// used. The echo provider needs no credential (`static`); another
/// provider is `ok` once configured (a provider without its key is refused
/// when the gateway builds it).
pub fn models_auth_status(gw: &Gateway) -> Value {
    let provider = gw.provider.name().to_string();
    json!({
        "ts": now_ms(),
        "providers": [{
            "provider": provider,
            "displayName": provider,
            "status": if provider == "echo" { "static" } else { "ok" },
            "profiles": [],
        }],
    })
}
