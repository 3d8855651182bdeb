//! OpenClaw features Pincer does not have (scheduled jobs, the task ledger,
//! agent questions, Talk voice, approvals, progress cards, transcript
//! branches, the session companion and observer, self-update, OpenClaw's
//! config file, a plugin marketplace), answered
//! truthfully: an empty list or an explicit "not available" state, in the
//! shape OpenClaw's clients read (checked against the Control UI 2026.9.6
//! client code). A client that calls them gets a usable answer instead of
//! "unknown method", and can show its empty state.

use serde_json::{Value, json};

use super::super::now_ms;

/// The methods this module answers.
pub const METHODS: &[&str] = &[
    "cron.list",
    "cron.status",
    "tasks.list",
    "question.list",
    "talk.catalog",
    "exec.approval.list",
    "plugin.approval.list",
    "openclaw.approval.list",
    "progressCard.get",
    "sessions.branches.list",
    "sessions.companion.state",
    "sessions.observer.visibility",
    "update.status",
    "config.get",
    "plugins.catalog.browse",
];

/// The answer to `method` (one of [`METHODS`]), given its params.
pub fn answer(method: &str, p: &Value) -> Option<Value> {
    let session_key = p
        .get("sessionKey")
        .and_then(Value::as_str)
        .map(super::super::canonical_key);
    Some(match method {
        // No scheduler: no jobs, nothing will wake.
        "cron.list" => json!({
            "jobs": [], "total": 0, "offset": 0, "limit": 0, "hasMore": false, "nextOffset": null,
        }),
        "cron.status" => json!({"enabled": false, "jobs": 0, "nextWakeAtMs": null}),
        // No task ledger.
        "tasks.list" => json!({"tasks": []}),
        // No agent questions pending.
        "question.list" => json!({"questions": []}),
        // No speech, transcription or realtime voice providers.
        "talk.catalog" => {
            let none = json!({"ready": false, "activeProvider": null, "providers": []});
            json!({"speech": none, "transcription": none, "realtime": none})
        }
        // Nothing ever waits for approval (bare arrays, as OpenClaw answers).
        "exec.approval.list" | "plugin.approval.list" | "openclaw.approval.list" => json!([]),
        // No progress card for any session.
        "progressCard.get" => json!({"card": null}),
        // Transcripts are linear: no branches.
        "sessions.branches.list" => json!({
            "sessionKey": session_key, "branches": [], "activeLeafEntryId": null,
        }),
        // No companion thread.
        "sessions.companion.state" => json!({
            "sessionKey": session_key, "messages": [], "busy": false,
        }),
        // There is no observer HUD to show or hide; the preference is
        // accepted and changes nothing.
        "sessions.observer.visibility" => json!({
            "ok": true,
            "visible": p.get("visible").and_then(Value::as_bool).unwrap_or(false),
        }),
        // Pincer does not update itself: no pending restart sentinel.
        "update.status" => json!({
            "sentinel": null,
            "currentVersion": env!("CARGO_PKG_VERSION"),
            "checkedAt": now_ms(),
        }),
        // Pincer's settings live in its own TOML file, in a different
        // schema, and are not edited over the protocol: an empty, valid
        // OpenClaw config with no file behind it.
        "config.get" => json!({
            "path": null,
            "exists": false,
            "raw": null,
            "config": {},
            "hash": "pincer",
            "valid": true,
            "issues": [],
        }),
        // No plugin marketplace: plugins are component files put in the
        // plugins directory (`plugins.list` shows them).
        "plugins.catalog.browse" => json!({"items": [], "categories": []}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_an_answer() {
        for m in METHODS {
            assert!(answer(m, &json!({})).is_some(), "{m}");
        }
        assert!(answer("no.such", &json!({})).is_none());
        let a = answer("sessions.branches.list", &json!({"sessionKey": "main"})).unwrap();
        assert_eq!(a["sessionKey"], "agent:main:main");
    }
}
