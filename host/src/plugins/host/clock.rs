//! Clock factor: `pincer:plugin/clock`, the host's (possibly test-controlled) clock.

use crate::clock::SharedClock;
use crate::plugins::bindings::v02::channel::pincer::plugin::clock::Host;

/// Per-instance clock handle.
#[derive(Clone)]
pub struct PluginClock(pub SharedClock);

impl Host for super::HostState {
    async fn now_ms(&mut self) -> u64 {
        self.clock.0.now_ms()
    }
}
