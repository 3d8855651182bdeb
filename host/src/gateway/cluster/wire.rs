//! Which gateway events are cluster-wide, and how a [`Broadcast`] becomes
//! a stream-log row and back.
//!
//! Cluster-wide: the chat and agent events of runs (`chat`, `agent`,
//! `session.tool`), session changes (`sessions.changed`,
//! `session.message`). Node-local: connection presence, health, ticks,
//! shutdown, plugin and channel events of the node's own runtime (each
//! node loads the same plugins; the cluster's channels are shown from the
//! heartbeat rows instead).

use serde_json::Value;

use crate::gateway::hub::{Audience, Broadcast};
use crate::protocol::scopes;
use crate::store::NewStreamEvent;

/// The event names that go through the cluster's stream log.
const CLUSTER_WIDE: &[&str] = &[
    "chat",
    "agent",
    "session.tool",
    "session.message",
    "sessions.changed",
];

/// Whether the event `name` is delivered cluster-wide.
pub fn is_cluster_wide(name: &str) -> bool {
    CLUSTER_WIDE.contains(&name)
}

/// `b` as a row of the stream log, published by `node_id` at `ts`.
pub fn to_row(node_id: &str, b: &Broadcast, ts: i64) -> NewStreamEvent {
    let run = |k: &str| b.payload.get(k);
    NewStreamEvent {
        node_id: node_id.to_owned(),
        name: b.name.to_owned(),
        payload: b.payload.to_string(),
        scope: b.scope.map(str::to_owned),
        audience: audience_text(&b.audience),
        droppable: b.droppable,
        run_id: matches!(b.name, "chat" | "agent")
            .then(|| run("runId").and_then(Value::as_str).map(str::to_owned))
            .flatten(),
        run_seq: matches!(b.name, "chat" | "agent")
            .then(|| run("seq").and_then(Value::as_i64))
            .flatten(),
        ts,
    }
}

/// The broadcast a stream-log row describes; `None` for an event this
/// build does not know (a newer node's), which is skipped.
pub fn from_row(e: &NewStreamEvent) -> Option<Broadcast> {
    let name = CLUSTER_WIDE.iter().copied().find(|n| *n == e.name)?;
    let scope = match e.scope.as_deref() {
        None => None,
        Some(s) => Some(scopes::ALL_OPERATOR_SCOPES.into_iter().find(|k| *k == s)?),
    };
    let audience = match e.audience.as_str() {
        "all" => Audience::All,
        "tool" => Audience::ToolEvents,
        "sessions" => Audience::SessionSubscribers,
        other => Audience::MessageSubscribers(other.strip_prefix("messages:")?.to_owned()),
    };
    Some(Broadcast {
        name,
        payload: serde_json::from_str(&e.payload).ok()?,
        scope,
        droppable: e.droppable,
        audience,
        state_version: None,
    })
}

fn audience_text(a: &Audience) -> String {
    match a {
        Audience::All => "all".into(),
        Audience::ToolEvents => "tool".into(),
        Audience::SessionSubscribers => "sessions".into(),
        Audience::MessageSubscribers(key) => format!("messages:{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_broadcast_survives_the_log() {
        for audience in [
            Audience::All,
            Audience::ToolEvents,
            Audience::SessionSubscribers,
            Audience::MessageSubscribers("agent:main:main".into()),
        ] {
            let b = Broadcast {
                name: "agent",
                payload: json!({"runId": "r1", "seq": 7, "stream": "assistant"}),
                scope: Some(scopes::READ),
                droppable: true,
                audience,
                state_version: None,
            };
            let row = to_row("n1", &b, 5);
            assert_eq!(row.run_id.as_deref(), Some("r1"));
            assert_eq!(row.run_seq, Some(7));
            let back = from_row(&row).expect("known event");
            assert_eq!(back.name, b.name);
            assert_eq!(back.payload, b.payload);
            assert_eq!(back.scope, b.scope);
            assert_eq!(back.audience, b.audience);
            assert!(back.droppable);
        }
        let unknown = NewStreamEvent {
            name: "from.the.future".into(),
            ..to_row(
                "n1",
                &Broadcast {
                    name: "chat",
                    payload: json!({}),
                    scope: None,
                    droppable: false,
                    audience: Audience::All,
                    state_version: None,
                },
                1,
            )
        };
        assert!(from_row(&unknown).is_none());
        assert!(!is_cluster_wide("presence") && !is_cluster_wide("tick"));
    }
}
