//! The runtime's plugin and channel events (the [`EventBus`]) forwarded to
//! protocol clients as gateway events of the same dotted name
//! (`plugin.loaded`, `plugin.failed`, `plugin.unloaded`, `channel.state`,
//! `channel.unhealthy`, `channel.recovered`, `channel.gave_up`,
//! `channel.restarted`), for operators with `operator.read`; a channel
//! event also refreshes the `health` event, so a client's channel view
//! follows restarts and state changes at once rather than at the next
//! periodic health refresh.
//!
//! [`EventBus`]: crate::events::EventBus

use std::sync::{Arc, Weak};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::hub::{Audience, Broadcast};
use super::{Gateway, now_ms};
use crate::events::Event;
use crate::protocol::scopes;

/// Event names this module sends (also listed in `methods::EVENTS`).
pub const EVENTS: &[&str] = &[
    "plugin.loaded",
    "plugin.failed",
    "plugin.unloaded",
    "channel.state",
    "channel.unhealthy",
    "channel.recovered",
    "channel.gave_up",
    "channel.restarted",
];

/// The gateway event for a bus event: its name and payload (the event's
/// fields, as webhooks carry them, plus `ts` in Unix ms).
pub fn gateway_event(event: &Event) -> (&'static str, Value) {
    let mut payload = match serde_json::to_value(event) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    payload.remove("type");
    payload.insert("ts".into(), now_ms().into());
    (event.name(), Value::Object(payload))
}

/// Forward the runtime's events to the gateway's clients until the bus
/// closes or the gateway is dropped. Subscribed before returning, so no
/// event published after the call is missed.
pub fn spawn(gw: &Arc<Gateway>) -> JoinHandle<()> {
    let mut rx = gw.runtime.events.subscribe();
    let weak: Weak<Gateway> = Arc::downgrade(gw);
    tokio::spawn(async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "runtime event forwarding fell behind; events not sent to clients"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Some(gw) = weak.upgrade() else { return };
            let (name, payload) = gateway_event(&event);
            gw.broadcast(&Broadcast {
                name,
                payload,
                scope: Some(scopes::READ),
                droppable: true,
                audience: Audience::All,
                state_version: None,
            });
            if matches!(
                event,
                Event::ChannelState { .. } | Event::ChannelRestarted { .. }
            ) {
                gw.health_changed().await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_fields_and_a_time() {
        let (name, p) = gateway_event(&Event::ChannelRestarted {
            channel: "echo".into(),
            reason: "operator".into(),
            manual: true,
        });
        assert_eq!(name, "channel.restarted");
        assert_eq!(p["channel"], "echo");
        assert_eq!(p["manual"], true);
        assert!(p.get("type").is_none());
        assert!(p["ts"].as_u64().is_some_and(|t| t > 0));
        // Every event sent is advertised in `hello-ok.features.events`.
        for n in EVENTS {
            assert!(crate::gateway::methods::EVENTS.contains(n), "{n}");
        }
    }
}
