//! Roles, scopes and which scope each method needs (the reference's §7).
//! `health` is always allowed; `operator.admin` allows everything; a
//! method needing `operator.read` is also allowed with `operator.write`;
//! a method not in the table needs `operator.admin` (default-deny).

/// Read-only operator access.
pub const READ: &str = "operator.read";
/// Operator writes (chat, agent runs).
pub const WRITE: &str = "operator.write";
/// Everything.
pub const ADMIN: &str = "operator.admin";
/// Device and node pairing.
pub const PAIRING: &str = "operator.pairing";
/// Agent questions to the operator (`question.*`, OpenClaw 2026.7+).
pub const QUESTIONS: &str = "operator.questions";
/// Exec and plugin approvals.
pub const APPROVALS: &str = "operator.approvals";

/// Every operator scope a client may ask for.
pub const ALL_OPERATOR_SCOPES: [&str; 6] = [
    ADMIN,
    READ,
    WRITE,
    APPROVALS,
    PAIRING,
    "operator.talk.secrets",
];

/// The scope `method` needs, or `None` when it is always allowed.
pub fn required_scope(method: &str) -> Option<&'static str> {
    match method {
        "health" => None,
        "status"
        | "logs.tail"
        | "channels.status"
        | "models.list"
        | "tools.catalog"
        | "agents.list"
        | "agent.identity.get"
        | "sessions.list"
        | "sessions.subscribe"
        | "sessions.unsubscribe"
        | "sessions.messages.subscribe"
        | "sessions.messages.unsubscribe"
        | "system-presence"
        | "last-heartbeat"
        | "node.list"
        | "chat.history"
        | "plugins.list"
        | "chat.startup"
        | "chat.metadata"
        | "sessions.describe"
        | "models.authStatus"
        | "cron.list"
        | "cron.status"
        | "tasks.list"
        | "config.get"
        | "talk.catalog"
        | "progressCard.get"
        | "sessions.branches.list"
        | "sessions.companion.state"
        | "sessions.observer.visibility"
        | "plugins.catalog.browse"
        | "diagnostics.lanes"
        | "skills.library.list"
        | "skills.search"
        | "skills.status"
        | "themes.list"
        | "usage.status"
        | "sessions.usage"
        | "environments.list"
        | "system.info" => Some(READ),
        "agent" | "agent.wait" | "chat.send" | "chat.abort" | "sessions.abort" | "send" => {
            Some(WRITE)
        }
        "device.pair.list"
        | "device.pair.approve"
        | "device.pair.reject"
        | "device.pair.remove"
        | "channels.pairing.list"
        | "channels.pairing.approve"
        | "channels.pairing.dismiss" => Some(PAIRING),
        "exec.approval.list" | "plugin.approval.list" | "openclaw.approval.list" => Some(APPROVALS),
        // OpenClaw's CLI asks for exactly this scope (readers may too: the
        // answer is always the empty list).
        "question.list" => Some(QUESTIONS),
        // Everything else, including `update.status`, `exec.approvals.get`
        // (admin in OpenClaw's table) and
        // every `webhooks.*` method (endpoint
        // URLs and delivery bodies are sensitive), needs admin.
        _ => Some(ADMIN),
    }
}

/// `sessions.patch` fields a writer may set (OpenClaw's
/// `SESSIONS_PATCH_WRITE_SCOPE_MUTATIONS` plus its envelope fields); any
/// other field needs admin.
const PATCH_WRITE_FIELDS: &[&str] = &[
    "key",
    "agentId",
    "expectedSessionId",
    "expectedLifecycleRevision",
    "expectedPermissionMode",
    "expectedMarkedUnreadAt",
    "label",
    "autoLabel",
    "icon",
    "color",
    "category",
    "boardFace",
    "boardPresentation",
    "pinned",
    "archived",
    "unread",
    "model",
    "agentRuntime",
    "thinkingLevel",
    "fastMode",
    "permissionMode",
];

/// The scope a request needs given its params: as [`required_scope`],
/// except that a `sessions.patch` touching only cosmetic and run-setting
/// fields needs `operator.write`, as in OpenClaw (whose CLI asks for
/// exactly that scope).
pub fn required_scope_for(method: &str, params: &serde_json::Value) -> Option<&'static str> {
    if method == "sessions.patch"
        && let Some(p) = params.as_object()
        && p.get("permissionMode").and_then(|m| m.as_str()) != Some("full")
        && p.keys().all(|k| PATCH_WRITE_FIELDS.contains(&k.as_str()))
    {
        return Some(WRITE);
    }
    required_scope(method)
}

/// Whether a connection holding `scopes` may send request `method` with
/// `params`; `Err` names the missing scope.
pub fn authorize_request(
    method: &str,
    params: &serde_json::Value,
    scopes: &[String],
) -> Result<(), &'static str> {
    match required_scope_for(method, params) {
        None => Ok(()),
        Some(needed) => check(needed, scopes),
    }
}

/// Whether a connection holding `scopes` may call `method`; `Err` names the
/// missing scope.
pub fn authorize(method: &str, scopes: &[String]) -> Result<(), &'static str> {
    match required_scope(method) {
        None => Ok(()),
        Some(needed) => check(needed, scopes),
    }
}

fn check(needed: &'static str, scopes: &[String]) -> Result<(), &'static str> {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    let reader = has(READ) || has(WRITE);
    if has(ADMIN)
        || has(needed)
        || (needed == READ && has(WRITE))
        || (needed == QUESTIONS && reader)
    {
        Ok(())
    } else {
        Err(needed)
    }
}

/// Whether a connection holding `scopes` receives an event guarded by
/// `scope` (read-guarded events also go to writers and admins).
pub fn may_receive(scope: Option<&str>, scopes: &[String]) -> bool {
    match scope {
        None => true,
        Some(s) => authorize_scope(s, scopes),
    }
}

fn authorize_scope(needed: &str, scopes: &[String]) -> bool {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    has(ADMIN) || has(needed) || (needed == READ && has(WRITE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn table() {
        assert!(authorize("health", &[]).is_ok());
        assert_eq!(authorize("status", &[]), Err(READ));
        assert!(authorize("status", &s(&[READ])).is_ok());
        assert!(authorize("status", &s(&[WRITE])).is_ok());
        assert_eq!(authorize("chat.send", &s(&[READ])), Err(WRITE));
        assert_eq!(authorize("sessions.delete", &s(&[READ, WRITE])), Err(ADMIN));
        assert!(authorize("sessions.delete", &s(&[ADMIN])).is_ok());
        assert_eq!(authorize("no.such.method", &s(&[READ])), Err(ADMIN));
        assert_eq!(authorize("device.pair.list", &s(&[READ])), Err(PAIRING));
        assert_eq!(
            authorize("channels.pairing.approve", &s(&[READ, WRITE])),
            Err(PAIRING)
        );
        assert!(authorize("channels.pairing.approve", &s(&[PAIRING])).is_ok());
        assert!(authorize("chat.startup", &s(&[READ])).is_ok());
        assert!(authorize("models.authStatus", &s(&[WRITE])).is_ok());
        assert_eq!(authorize("exec.approval.list", &s(&[READ])), Err(APPROVALS));
        // As in OpenClaw's method table: `config.get` is a read (Pincer's
        // answer is an empty config), `question.list` its own scope.
        assert!(authorize("config.get", &s(&[READ])).is_ok());
        assert!(authorize("question.list", &s(&[QUESTIONS])).is_ok());
        assert!(authorize("question.list", &s(&[READ])).is_ok());
        assert_eq!(authorize("question.list", &s(&[PAIRING])), Err(QUESTIONS));
        let label = serde_json::json!({"key": "k", "label": "x"});
        assert!(authorize_request("sessions.patch", &label, &s(&[WRITE])).is_ok());
        let full = serde_json::json!({"key": "k", "permissionMode": "full"});
        assert_eq!(
            authorize_request("sessions.patch", &full, &s(&[WRITE])),
            Err(ADMIN)
        );
        let other = serde_json::json!({"key": "k", "sendPolicy": "deny"});
        assert_eq!(
            authorize_request("sessions.patch", &other, &s(&[WRITE])),
            Err(ADMIN)
        );
        assert_eq!(authorize("update.status", &s(&[READ])), Err(ADMIN));
        assert!(authorize("system.info", &s(&[READ])).is_ok());
        assert!(authorize("sessions.usage", &s(&[READ])).is_ok());
        assert_eq!(authorize("exec.approvals.get", &s(&[READ])), Err(ADMIN));
    }
}
