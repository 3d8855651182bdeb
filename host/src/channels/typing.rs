//! The typing indicator while the agent works: one `typing` call at once,
//! repeated before the channel's `typing-ttl-ms` lapses (once when it is
//! 0), until the answer is sent. The schedule runs on the gateway's clock
//! ([`crate::clock`]), checked at least every [`MAX_CHECK`] of real time, so
//! tests drive it with a manual clock. A failing call never fails the
//! reply: it is logged at debug and counted ([`TypingStats`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;

/// Longest real-time wait between two looks at the clock.
pub const MAX_CHECK: Duration = Duration::from_millis(250);

/// How often to repeat `typing` for a channel whose indicator lasts
/// `ttl_ms`: a fifth before it lapses (`None`: show it once).
pub fn repeat_every(ttl_ms: u64) -> Option<u64> {
    (ttl_ms > 0).then(|| (ttl_ms - ttl_ms / 5).max(1))
}

/// Typing calls made and failed, across channels.
#[derive(Debug, Default)]
pub struct TypingStats {
    sent: AtomicU64,
    failed: AtomicU64,
}

impl TypingStats {
    /// Successful `typing` calls.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Failed `typing` calls (the replies went on).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Stops the indicator when dropped or told to.
#[derive(Debug)]
pub struct TypingGuard {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TypingGuard {
    /// Stop repeating.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop and wait until no typing call is in flight (so none lands
    /// after the answer).
    pub async fn finish(mut self) {
        self.stop();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for TypingGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keep a typing indicator up by calling `call` now and every
/// [`repeat_every`]`(ttl_ms)` on `clock`, until the guard is stopped.
/// `channel` names the channel in logs.
pub fn keep_typing<F, Fut, E>(
    channel: String,
    ttl_ms: u64,
    clock: SharedClock,
    stats: std::sync::Arc<TypingStats>,
    call: F,
) -> TypingGuard
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let (tx, mut stop) = watch::channel(false);
    let every = repeat_every(ttl_ms);
    let task = tokio::spawn(async move {
        let mut next = clock.now_ms();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = clock.now_ms();
            if now >= next {
                match call().await {
                    Ok(()) => {
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%channel, error = %e, "typing indicator failed; the reply goes on");
                    }
                }
                match every {
                    Some(ms) => next = now.saturating_add(ms),
                    None => return,
                }
                continue;
            }
            let wait = Duration::from_millis(next - now).min(MAX_CHECK);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    TypingGuard {
        stop: tx,
        task: Some(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn repeats_before_the_ttl_lapses() {
        assert_eq!(repeat_every(0), None);
        assert_eq!(repeat_every(5_000), Some(4_000));
        assert_eq!(repeat_every(1), Some(1));
    }

    async fn wait_for(stats: &TypingStats, total: u64) {
        while stats.sent() + stats.failed() < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn repeats_on_the_clock_counts_failures_and_stops() {
        let clock = ManualClock::new(1_000);
        let stats = Arc::new(TypingStats::default());
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let guard = keep_typing("t".into(), 5_000, clock.clone(), stats.clone(), move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move { if n == 1 { Err("down") } else { Ok(()) } }
        });
        wait_for(&stats, 1).await;
        clock.advance(4_000);
        wait_for(&stats, 2).await;
        assert_eq!(stats.failed(), 1, "the second call failed and was counted");
        clock.advance(4_000);
        wait_for(&stats, 3).await;
        guard.finish().await;
        clock.advance(40_000);
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "no call after finish");
    }

    #[tokio::test]
    async fn ttl_zero_types_once() {
        let clock = ManualClock::new(0);
        let stats = Arc::new(TypingStats::default());
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let _g = keep_typing("t".into(), 0, clock.clone(), stats.clone(), move || {
            let _ = done_tx.send(());
            async { Ok::<(), String>(()) }
        });
        done.recv().await;
        clock.advance(100_000);
        // The task ended after one call: the sender side is gone.
        assert!(done.recv().await.is_none());
        assert_eq!(stats.sent(), 1);
    }
}
