//! Sockets that have not finished the handshake: how many there are in
//! all and per remote IP, so upgrades past `max_preauth` (or
//! `max_preauth_per_ip`) are refused before any WebSocket state exists.
//! A [`PreauthSlot`] is held from the upgrade until the connection joins
//! the hub (or goes away).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a pre-auth slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreauthFull {
    /// `max_preauth` sockets are already handshaking.
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
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Preauth {
    /// Sockets currently handshaking.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Take a slot for `ip` if both caps allow it.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<PreauthSlot, PreauthFull> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= max_total {
            return Err(PreauthFull::Total);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(PreauthFull::PerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(PreauthSlot {
            owner: self.clone(),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
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
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        self.owner.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let p = Arc::new(Preauth::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.try_acquire(a, 3, 2).unwrap();
        let _s2 = p.try_acquire(a, 3, 2).unwrap();
        assert_eq!(p.try_acquire(a, 3, 2).unwrap_err(), PreauthFull::PerIp);
        let _s3 = p.try_acquire(b, 3, 2).unwrap();
        assert_eq!(p.try_acquire(b, 3, 2).unwrap_err(), PreauthFull::Total);
        drop(s1);
        assert_eq!(p.count(), 2);
        let _s4 = p.try_acquire(a, 3, 2).unwrap();
    }
}
