//! `health`, `status`, `models.list`, `agents.list`, `agent.identity.get`,
//! `logs.tail`, `tools.catalog`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::params;
use crate::agent::ToolHost;
use crate::gateway::runs::RegistryTools;
use crate::gateway::{Gateway, now_ms};
use crate::plugins::{PluginKind, PluginState};
use crate::protocol::errors::ErrorShape;

/// The agent's display name.
pub const AGENT_NAME: &str = "Pincer";
/// The agent's emoji.
pub const AGENT_EMOJI: &str = "🦀";

fn recent_sessions(gw: &Gateway, limit: usize) -> (u64, Vec<Value>) {
    let count = gw.sessions.count_sessions().unwrap_or(0);
    let now = now_ms();
    let recent = gw
        .sessions
        .list_sessions(limit)
        .unwrap_or_default()
        .into_iter()
        .map(|s| json!({"key": s.key, "updatedAt": s.updated_ms, "age": now - s.updated_ms}))
        .collect();
    (count, recent)
}

/// `HealthSummary` (also the `health` event and `snapshot.health`).
pub async fn health_summary(gw: &Gateway) -> Value {
    let started = std::time::Instant::now();
    let plugins = gw.runtime.plugins.list();
    let loaded = plugins
        .iter()
        .filter(|p| p.state == PluginState::Loaded)
        .count();
    let errors: Vec<Value> = plugins
        .iter()
        .filter_map(|p| Some(json!({"plugin": p.name, "error": p.last_error.clone()?})))
        .collect();
    let channels = gw.runtime.health.snapshot().await;
    let mut map = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut order = Vec::new();
    for ch in &channels {
        order.push(json!(ch.name));
        labels.insert(ch.name.clone(), json!(ch.name));
        map.insert(ch.name.clone(), super::plugins::channel_json(ch));
    }
    let (count, recent) = recent_sessions(gw, 10);
    let sessions = json!({"path": gw.store_path, "count": count, "recent": recent});
    // `ok` is the readiness `/readyz` reports, so the Control UI and a
    // load balancer agree.
    let ready = super::super::readiness::check(gw);
    json!({
        "ok": ready.ready,
        "ready": ready.to_json(),
        "ts": now_ms(),
        "durationMs": started.elapsed().as_millis() as u64,
        "plugins": {"loaded": loaded, "errors": errors, "unavailable": plugins.len() - loaded},
        "channels": map,
        "channelOrder": order,
        "channelLabels": labels,
        "heartbeatSeconds": 0,
        "defaultAgentId": "main",
        "agents": [{
            "agentId": "main",
            "name": AGENT_NAME,
            "isDefault": true,
            "heartbeat": {"enabled": false, "everySeconds": 0},
            "sessions": sessions,
        }],
        "sessions": sessions,
    })
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `StatusSummary`.
pub async fn status(gw: &Gateway) -> Value {
    let channels = gw.runtime.health.snapshot().await;
    let summary: Vec<String> = channels
        .iter()
        .map(|c| format!("{}: {}", c.name, c.state.as_str()))
        .collect();
    let (count, recent) = recent_sessions(gw, 10);
    let model = gw.provider.models().first().map(|m| m.id.clone());
    let runs = gw.runs.counts();
    json!({
        "runtimeVersion": crate::gateway::VERSION,
        "heartbeat": {"defaultAgentId": "main", "agents": []},
        "channelSummary": summary,
        "queuedSystemEvents": [],
        "tasks": {
            "active": gw.runs.active_count(),
            "running": runs.running,
            "waiting": runs.waiting,
            "queued": runs.queued,
        },
        "taskAudit": {},
        "sessions": {
            "paths": [gw.store_path],
            "count": count,
            "defaults": {"model": model, "contextTokens": null},
            "recent": recent,
            "byAgent": [{"agentId": "main", "count": count}],
        },
        "connections": gw.hub.len(),
        "ready": super::super::readiness::check(gw).to_json(),
        "uptimeMs": gw.uptime_ms(),
        "processMemory": {"rssBytes": rss_bytes()},
        "provider": gw.provider.name(),
    })
}

/// `models.list`.
pub fn models(gw: &Gateway) -> Value {
    json!({"models": gw.provider.models()})
}

/// `agents.list`. The agent's `model.primary` is the provider's first
/// model as `provider/model`: clients that find no model refuse to send.
pub fn agents(gw: &Gateway) -> Value {
    let mut agent = json!({"id": "main", "name": AGENT_NAME, "identity": {"name": AGENT_NAME, "emoji": AGENT_EMOJI}});
    if let Some(m) = gw.provider.models().first() {
        agent["model"] = json!({"primary": format!("{}/{}", m.provider, m.id), "fallbacks": []});
    }
    json!({
        "defaultId": "main",
        "mainKey": "main",
        "scope": "per-sender",
        "agents": [agent],
    })
}

/// `agent.identity.get`.
pub fn identity() -> Value {
    json!({"agentId": "main", "name": AGENT_NAME, "emoji": AGENT_EMOJI})
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TailParams {
    cursor: Option<u64>,
    limit: Option<usize>,
    max_bytes: Option<usize>,
}

/// `logs.tail`.
pub fn logs_tail(gw: &Gateway, p: &Value) -> Result<Value, ErrorShape> {
    let p: TailParams = params("logs.tail", p)?;
    let limit = p.limit.unwrap_or(500).clamp(1, 5000);
    let max_bytes = p.max_bytes.unwrap_or(250_000).clamp(1, 1_000_000);
    let Some(buf) = &gw.logs else {
        return Ok(json!({"file": "memory", "cursor": 0, "size": 0, "lines": []}));
    };
    let (lines, cursor, reset, truncated) = buf.tail(p.cursor, limit, max_bytes);
    let mut v = json!({"file": "memory", "cursor": cursor, "size": cursor, "lines": lines});
    if reset {
        v["reset"] = json!(true);
    }
    if truncated {
        v["truncated"] = json!(true);
    }
    Ok(v)
}

/// `tools.catalog`: the tool plugins.
pub fn tools_catalog(gw: &Gateway) -> Value {
    let tools = RegistryTools::new(gw.runtime.plugins.clone()).tools();
    let n = gw.runtime.plugins.of_kind(PluginKind::Tool).len();
    json!({
        "agentId": "main",
        "count": n,
        "groups": [{
            "id": "plugins",
            "label": "Plugins",
            "tools": tools.iter().map(|t| json!({
                "id": t.name, "name": t.name, "label": t.name, "description": t.description,
                "source": "plugin", "pluginId": t.plugin, "parameters": t.parameters,
            })).collect::<Vec<_>>(),
        }],
    })
}
