//! Writes the runtime's plugin and channel health events (published on the
//! [`EventBus`]) into the durable event log, so they reach webhooks like
//! session events do: `plugin.loaded`, `plugin.failed`, `plugin.unloaded`,
//! `channel.unhealthy`, `channel.recovered`, `channel.gave_up`,
//! `channel.restarted`.

use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::events::{Event, EventBus};
use crate::store::SharedSessions;

/// The log entry for a bus event: its type and data, or `None` for events
/// webhooks do not carry (a channel's first start is not a recovery).
pub fn log_entry(event: &Event) -> Option<(&'static str, Value)> {
    let name = event.name();
    if let Event::ChannelState { from, .. } = event
        && name == "channel.recovered"
        && !matches!(
            from.as_str(),
            "unhealthy" | "failed" | "gave-up" | "restarting"
        )
    {
        return None;
    }
    if name == "channel.state" {
        return None;
    }
    let mut data = match serde_json::to_value(event) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    data.remove("type");
    Some((name, Value::Object(data)))
}

/// Forward `bus` events into `log` until the bus closes. A lagging
/// subscriber logs how many events it missed (the bus is in-process and
/// large, so this means the store is stalled).
pub fn spawn(bus: &dyn EventBus, log: SharedSessions) -> JoinHandle<()> {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let Some((name, data)) = log_entry(&event) else {
                        continue;
                    };
                    if let Err(e) = log.append_event(name, None, data) {
                        tracing::error!(event = name, error = %e, "event not logged");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "event log bridge fell behind; events lost");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let state = |from: &str, to: &str| Event::ChannelState {
            channel: "echo".into(),
            from: from.into(),
            to: to.into(),
            reason: "r".into(),
        };
        assert_eq!(log_entry(&state("starting", "running")), None);
        assert_eq!(log_entry(&state("running", "stopped")), None);
        let (name, data) = log_entry(&state("unhealthy", "running")).unwrap();
        assert_eq!(name, "channel.recovered");
        assert_eq!(data["channel"], "echo");
        assert!(data.get("type").is_none());
        assert_eq!(
            log_entry(&state("running", "unhealthy")).unwrap().0,
            "channel.unhealthy"
        );
        assert_eq!(
            log_entry(&state("restarting", "gave-up")).unwrap().0,
            "channel.gave_up"
        );
        let loaded = Event::PluginLoaded {
            plugin: "echo".into(),
            kind: "channel".into(),
            version: "1.0.0".into(),
            hash: "ab".into(),
            replaced: false,
        };
        let (name, data) = log_entry(&loaded).unwrap();
        assert_eq!(name, "plugin.loaded");
        assert_eq!(data["version"], "1.0.0");
    }
}
