//! Sockets that have not finished the handshake: how many there are in
//! all and per remote IP, so upgrades past `max_preauth_per_ip` are refused
//! before any WebSocket state exists. A [`PreauthSlot`] is held from the
//! upgrade until the connection joins the hub (or goes away).
//!
//! When all `max_preauth` slots are taken, a new upgrade evicts the oldest
//! handshaking socket instead of being refused: a flood of silent sockets
//! from many addresses would otherwise lock operators out until the flood's
//! handshakes time out, while an operator's handshake takes milliseconds
//! and so is almost never the oldest. Evicted sockets close at once; until
//! they have, up to an eighth of `max_preauth` more may be admitted, and
//! beyond that upgrades are refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Why a pre-auth slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreauthFull {
    /// `max_preauth` sockets are handshaking and those already evicted
    /// have not closed yet.
    #[error("too many unauthenticated connections")]
    Total,
    /// This IP already has `max_preauth_per_ip` handshaking sockets.
    #[error("too many unauthenticated connections from this address")]
    PerIp,
}

/// Pre-auth socket counts.
#[derive(Debug, Default)]
pub struct Preauth {
    total: AtomicUsize,
    evicted: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    per_ip: HashMap<IpAddr, usize>,
    /// Slots that may still be evicted, oldest first.
    live: BTreeMap<u64, Arc<Notify>>,
    next: u64,
}

impl Preauth {
    /// Sockets currently handshaking (evicted ones until they close).
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Handshaking sockets evicted to make room for newer ones, ever.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Take a slot for `ip` if its per-IP cap allows it; when `max_total`
    /// are taken, the oldest handshaking socket is told to close
    /// ([`PreauthSlot::evicted`]) to make room.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<PreauthSlot, PreauthFull> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= max_per_ip {
            return Err(PreauthFull::PerIp);
        }
        let total = self.total.load(Ordering::Relaxed);
        if total >= max_total {
            let headroom = max_total.max(8) / 8;
            if total >= max_total.saturating_add(headroom) {
                return Err(PreauthFull::Total);
            }
            let Some((_, oldest)) = state.live.pop_first() else {
                return Err(PreauthFull::Total);
            };
            // A permit is stored if its socket is not waiting right now.
            oldest.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        *state.per_ip.entry(ip).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        let seq = state.next;
        state.next += 1;
        let evict = Arc::new(Notify::new());
        state.live.insert(seq, evict.clone());
        Ok(PreauthSlot {
            owner: self.clone(),
            ip,
            seq,
            evict,
        })
    }

    fn release(&self, ip: IpAddr, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.live.remove(&seq);
        if let Some(n) = state.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One handshaking socket; released on drop.
#[derive(Debug)]
pub struct PreauthSlot {
    owner: Arc<Preauth>,
    ip: IpAddr,
    seq: u64,
    evict: Arc<Notify>,
}

impl PreauthSlot {
    /// Resolves when this socket was evicted to make room for a newer one
    /// (it should close at once); never resolves otherwise.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        self.owner.release(self.ip, self.seq);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_ip_cap_and_release() {
        let p = Arc::new(Preauth::default());
        let s1 = p.try_acquire(ip("10.0.0.1"), 8, 2).expect("first");
        let _s2 = p.try_acquire(ip("10.0.0.1"), 8, 2).expect("second");
        assert_eq!(
            p.try_acquire(ip("10.0.0.1"), 8, 2).unwrap_err(),
            PreauthFull::PerIp
        );
        drop(s1);
        assert_eq!(p.count(), 1);
        let _s3 = p.try_acquire(ip("10.0.0.1"), 8, 2).expect("after release");
        assert_eq!(p.evicted(), 0);
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_oldest_and_bounds_what_has_not_closed() {
        let p = Arc::new(Preauth::default());
        let oldest = p.try_acquire(ip("10.0.0.1"), 8, 2).expect("1");
        let mut others: Vec<_> = (2..=8)
            .map(|i| {
                p.try_acquire(ip(&format!("10.0.0.{i}")), 8, 2)
                    .expect("fill")
            })
            .collect();
        // Full: the next one gets in and the oldest is told to go.
        let newer = p.try_acquire(ip("10.0.1.1"), 8, 2).expect("evicting");
        tokio::time::timeout(Duration::from_secs(10), oldest.evicted())
            .await
            .expect("the oldest was evicted");
        assert_eq!(p.evicted(), 1);
        // The second oldest was not told.
        let second = others.remove(0);
        assert!(second.evicted().now_or_never().is_none());
        // The evicted socket has not closed yet: one more over the cap is
        // the headroom (8 / 8 = 1); the next is refused.
        assert_eq!(p.count(), 9);
        assert_eq!(
            p.try_acquire(ip("10.0.1.2"), 8, 2).unwrap_err(),
            PreauthFull::Total
        );
        // Once it closes there is room (by evicting the next oldest).
        drop(oldest);
        let _n2 = p.try_acquire(ip("10.0.1.2"), 8, 2).expect("after close");
        second.evicted().await;
        assert_eq!(p.evicted(), 2);
        drop(newer);
    }
}
