//! Per-IP authentication-failure limits with exponential backoff, shared by
//! WebSocket `connect` and HTTP bearer auth (a guess is a guess).
//!
//! Each IP may fail `auth_failures_burst` times; every failure after that
//! blocks the IP for `auth_backoff_base_ms`, doubling per further failure
//! up to `auth_backoff_max_ms`. While blocked the secret is not even
//! checked (no oracle), the right one included; blocks always end, and an
//! IP's failure count is forgotten after `auth_failure_forget_ms` without
//! failures. A success never resets anyone's count (an attacker sharing an
//! IP with a real client, e.g. a web page on loopback, gains nothing from
//! the client's logins). Applies to loopback too.
//!
//! A second limiter of the same kind counts pre-auth protocol violations
//! (an oversize frame before `hello-ok`, a handshake timeout, a broken
//! frame): a blocked address is refused at accept, before its socket is
//! read (see [`super::Gateway::accept_refusal`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings (from [`super::GatewayConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct AuthLimitConfig {
    /// Failures allowed before the first block.
    pub burst: u32,
    /// First block length.
    pub backoff_base: Duration,
    /// Longest block.
    pub backoff_max: Duration,
    /// Quiet time after which an IP's failures are forgotten.
    pub forget_after: Duration,
}

/// The IP is blocked; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Time left in the block.
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for a `Retry-After` header (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }

    /// Milliseconds for `retryAfterMs` (at least 1).
    pub fn retry_after_ms(&self) -> u64 {
        (self.retry_after.as_millis() as u64).max(1)
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// Most IPs tracked; past this, forgotten and expired entries are swept.
const MAX_TRACKED: usize = 100_000;

/// The limiter.
#[derive(Debug)]
pub struct AuthLimiter {
    config: AuthLimitConfig,
    ips: Mutex<HashMap<IpAddr, Entry>>,
    /// Failed authentications (wrong or missing secret).
    pub failures: AtomicU64,
    /// Attempts refused because the IP was blocked.
    pub limited: AtomicU64,
}

impl AuthLimiter {
    /// A limiter with `config`.
    pub fn new(config: AuthLimitConfig) -> Self {
        AuthLimiter {
            config,
            ips: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// Before checking a secret from `ip`: `Err` while the IP is blocked
    /// (counted, not a failure, and the block is not extended).
    pub fn check(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = Instant::now();
        let ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = ips.get(&ip).and_then(|e| e.blocked_until)
            && until > now
        {
            self.limited.fetch_add(1, Ordering::Relaxed);
            return Err(Limited {
                retry_after: until - now,
            });
        }
        Ok(())
    }

    /// [`Self::failed`] plus the warning every failure gets (`via` names
    /// the path: `ws-connect`, `http-bearer`).
    pub fn record_failure(&self, ip: IpAddr, via: &'static str) -> Option<Limited> {
        let (failures, block) = self.failed(ip);
        match &block {
            Some(b) => tracing::warn!(
                remote_ip = %ip,
                via,
                failures,
                blocked_ms = b.retry_after.as_millis() as u64,
                "authentication failed; address blocked"
            ),
            None => tracing::warn!(remote_ip = %ip, via, failures, "authentication failed"),
        }
        block
    }

    /// [`Self::failed`] for a pre-auth protocol violation (`what`: `oversize
    /// frame`, `handshake timeout`, ...): a warning when the address is
    /// first blocked, debug lines otherwise (a flood must not buy a log
    /// line per socket).
    pub fn record_violation(&self, ip: IpAddr, what: &'static str) -> Option<Limited> {
        let (violations, block) = self.failed(ip);
        match &block {
            Some(b) if violations == self.config.burst => tracing::warn!(
                remote_ip = %ip,
                what,
                violations,
                blocked_ms = b.retry_after.as_millis() as u64,
                "pre-auth protocol violations; address blocked"
            ),
            _ => tracing::debug!(remote_ip = %ip, what, violations, "pre-auth protocol violation"),
        }
        block
    }

    /// A wrong or missing secret from `ip`: count it; returns the IP's
    /// failure count and the block it now has, if any.
    pub fn failed(&self, ip: IpAddr) -> (u32, Option<Limited>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        if ips.len() >= MAX_TRACKED {
            let forget = self.config.forget_after;
            ips.retain(|_, e| {
                now.duration_since(e.last_failure) < forget
                    || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        let e = ips.entry(ip).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.duration_since(e.last_failure) >= self.config.forget_after
            && e.blocked_until.is_none_or(|u| u <= now)
        {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let block = if e.failures >= self.config.burst {
            let doublings = (e.failures - self.config.burst).min(20);
            let d = self
                .config
                .backoff_base
                .saturating_mul(1u32 << doublings)
                .min(self.config.backoff_max);
            e.blocked_until = Some(now + d);
            Some(Limited { retry_after: d })
        } else {
            None
        };
        (e.failures, block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> AuthLimiter {
        AuthLimiter::new(AuthLimitConfig {
            burst: 3,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(25),
            forget_after: Duration::from_secs(600),
        })
    }

    #[test]
    fn burst_then_doubling_blocks_per_ip() {
        let l = limiter();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(l.failed(a), (1, None));
        assert_eq!(l.failed(a).1, None);
        assert!(l.check(a).is_ok());
        let (n, block) = l.failed(a);
        assert_eq!(n, 3);
        assert_eq!(block.unwrap().retry_after, Duration::from_secs(10));
        assert!(l.check(a).is_err());
        assert!(l.check(b).is_ok(), "other IPs are not affected");
        assert_eq!(l.failed(a).1.unwrap().retry_after, Duration::from_secs(20));
        assert_eq!(
            l.failed(a).1.unwrap().retry_after,
            Duration::from_secs(25),
            "capped"
        );
        assert_eq!(l.limited.load(Ordering::Relaxed), 1);
        assert_eq!(l.failures.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = Limited {
            retry_after: Duration::from_millis(1001),
        };
        assert_eq!(l.retry_after_secs(), 2);
        assert_eq!(l.retry_after_ms(), 1001);
    }
}
