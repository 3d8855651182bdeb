//! Ping barriers: proof, without a timer, that a client has read every
//! frame the gateway sent it up to a point.
//!
//! `chat.send` answers, then queues a WebSocket Ping on the same connection
//! (see [`super::hub::Conn::ping_barrier`]); the run it started executes
//! only once the matching Pong is back (bounded by
//! `pong_barrier_timeout_ms`). Every WebSocket library answers pings while
//! reading, so a Pong proves the client read the answer in an earlier read
//! than (or the same read as) the Ping, and the run's events arrive in a
//! later one. OpenClaw's TUI handles all frames of one read before its
//! `chat.send` await resumes: an instant run's `final` event in the same
//! read as the answer would otherwise be lost to it ("agent is busy").
//!
//! This module owns the bookkeeping only: ids, the Ping payload, and
//! matching Pongs to waiters. A client may answer only the latest of
//! several pings (RFC 6455 §5.5.3), so a Pong releases its barrier and every
//! earlier one.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

/// The prefix of a barrier Ping's payload (the barrier id follows, in
/// decimal). Pongs without it (unsolicited ones) release nothing.
const PREFIX: &[u8] = b"pincer-barrier:";

/// The barriers of one connection that wait for their Pong.
#[derive(Debug, Default)]
pub struct PingBarriers {
    next: AtomicU64,
    pending: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl PingBarriers {
    /// Register `done` (fired when the Pong for the returned id, or for a
    /// later barrier, arrives) and return the barrier's id. Barriers whose
    /// waiter is gone (its run went ahead on the bound, or ended) are
    /// dropped first, so a client that never answers pings does not make
    /// the list grow with every `chat.send`.
    pub fn register(&self, done: oneshot::Sender<()>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut pending = self.lock();
        pending.retain(|(_, waiter)| !waiter.is_closed());
        pending.push_back((id, done));
        id
    }

    /// The Ping payload of barrier `id`.
    pub fn payload(id: u64) -> Vec<u8> {
        let mut p = PREFIX.to_vec();
        p.extend_from_slice(id.to_string().as_bytes());
        p
    }

    /// A Pong arrived with `payload`: release its barrier and every earlier
    /// one, counting them in `released` first (so the count is there before
    /// any released run proceeds). A Pong that answers no barrier releases
    /// nothing.
    pub fn on_pong(&self, payload: &[u8], released: &AtomicU64) {
        let Some(id) = payload
            .strip_prefix(PREFIX)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u64>().ok())
        else {
            return;
        };
        let done: Vec<_> = {
            let mut pending = self.lock();
            let n = pending.iter().take_while(|(b, _)| *b <= id).count();
            pending.drain(..n).map(|(_, done)| done).collect()
        };
        released.fetch_add(done.len() as u64, Ordering::Relaxed);
        for d in done {
            let _ = d.send(());
        }
    }

    /// Drop barrier `id` unreleased (its Ping was never queued); its waiter
    /// sees the sender dropped.
    pub fn forget(&self, id: u64) {
        self.lock().retain(|(b, _)| *b != id);
    }

    /// Barriers waiting for their Pong.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pong_releases_its_barrier_and_every_earlier_one() {
        let b = PingBarriers::default();
        let (t1, mut r1) = oneshot::channel();
        let (t2, mut r2) = oneshot::channel();
        let (t3, mut r3) = oneshot::channel();
        let ids = [b.register(t1), b.register(t2), b.register(t3)];
        assert_eq!(ids, [1, 2, 3]);
        let count = AtomicU64::new(0);
        b.on_pong(b"unsolicited", &count);
        b.on_pong(b"pincer-barrier:x", &count);
        assert_eq!(count.load(Ordering::Relaxed), 0);
        b.on_pong(&PingBarriers::payload(2), &count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert!(r1.try_recv().is_ok());
        assert!(r2.try_recv().is_ok());
        assert!(r3.try_recv().is_err(), "a later barrier stays");
        assert_eq!(b.waiting(), 1);
        // A repeated Pong releases nothing more.
        b.on_pong(&PingBarriers::payload(2), &count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        b.forget(3);
        assert_eq!(b.waiting(), 0);
        assert!(matches!(
            r3.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn barriers_nobody_waits_for_are_dropped_at_the_next_register() {
        // A client that never answers pings: each run stops waiting (its
        // receiver is dropped on the bound) and its barrier goes with the
        // next registration instead of staying until the connection ends.
        let b = PingBarriers::default();
        for _ in 0..100 {
            let (t, r) = oneshot::channel();
            b.register(t);
            drop(r);
        }
        assert_eq!(b.waiting(), 1, "only the latest, not yet seen closed");
        let (t, mut r) = oneshot::channel();
        let id = b.register(t);
        assert_eq!(b.waiting(), 1);
        // The live one is still released by its Pong.
        let count = AtomicU64::new(0);
        b.on_pong(&PingBarriers::payload(id), &count);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert!(r.try_recv().is_ok());
    }
}
