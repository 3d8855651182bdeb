//! The event bus: plugin and channel health events published by the runtime
//! and forwarded by the gateway (WebSocket events, outgoing webhooks).
//!
//! It sits behind [`EventBus`] so a cluster mode can put it on an external
//! engine; [`LocalBus`] (a tokio broadcast channel) is the default.

use serde::Serialize;
use tokio::sync::broadcast;

/// Something that happened in the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A plugin version was loaded (first load or replacement).
    PluginLoaded {
        plugin: String,
        kind: String,
        version: String,
        hash: String,
        replaced: bool,
    },
    /// A plugin file failed to load; any previous version keeps serving.
    PluginFailed { plugin: String, error: String },
    /// A plugin was removed and drained.
    PluginUnloaded { plugin: String },
    /// A channel's health state changed.
    ChannelState {
        channel: String,
        from: String,
        to: String,
        reason: String,
    },
    /// A channel was restarted (by the monitor or an operator).
    ChannelRestarted {
        channel: String,
        reason: String,
        manual: bool,
    },
}

impl Event {
    /// The event's dotted name (`plugin.loaded`, `channel.restarted`, ...),
    /// as used by webhooks and the gateway.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PluginLoaded { .. } => "plugin.loaded",
            Event::PluginFailed { .. } => "plugin.failed",
            Event::PluginUnloaded { .. } => "plugin.unloaded",
            Event::ChannelState { to, .. } => match to.as_str() {
                "unhealthy" | "failed" => "channel.unhealthy",
                "gave-up" => "channel.gave_up",
                "running" => "channel.recovered",
                _ => "channel.state",
            },
            Event::ChannelRestarted { .. } => "channel.restarted",
        }
    }
}

/// Publish/subscribe for [`Event`]s.
pub trait EventBus: Send + Sync + 'static {
    /// Publish an event to every current subscriber (never blocks).
    fn publish(&self, event: Event);
    /// Subscribe to events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// The in-process bus.
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<Event>,
}

impl LocalBus {
    /// A bus keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        LocalBus {
            tx: broadcast::channel(capacity).0,
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: Event) {
        tracing::debug!(event = event.name(), ?event, "event");
        // No subscribers is fine.
        let _ = self.tx.send(event);
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
