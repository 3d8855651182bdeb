//! Event-driven waiting on a fake's state: every state change bumps a
//! `watch` counter, and a waiter re-checks its condition on each bump, up to
//! the hang guard ([`super::WAIT_GUARD`]).

use std::time::Duration;

use tokio::sync::watch;

/// A counter bumped on every change of a fake's state.
#[derive(Debug)]
pub(crate) struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Changes(watch::channel(0).0)
    }
}

impl Changes {
    /// Record that something changed (wakes every waiter).
    pub(crate) fn bump(&self) {
        self.0.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees changes from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// Wait until `check` returns `Some`, re-checking after every change.
    ///
    /// # Panics
    /// After `guard` without success, with `what` and `seen()` in the
    /// message: the test is stuck and says on what.
    pub(crate) async fn until<T>(
        &self,
        guard: Duration,
        what: impl Fn() -> String,
        seen: impl Fn() -> String,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + guard;
        loop {
            // Subscribe before checking, so a change between the check
            // and the await is not missed.
            let mut rx = self.subscribe();
            if let Some(v) = check() {
                return v;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives as long as `self`; a closed channel
                // cannot happen, but re-checking is harmless.
                Ok(Err(_)) => tokio::task::yield_now().await,
                Err(_) => panic!("fake: waited {guard:?} for {}; saw {}", what(), seen()),
            }
        }
    }
}
