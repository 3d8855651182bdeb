//! A plugin's outbound request budget: a token bucket (rate and burst), and
//! the counters the plugin list shows (requests sent, refused by the rate
//! limit or for a misplaced secret, responses over the size cap,
//! connections opened and reused).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A token bucket: `burst` requests at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Take one token, or say how long until one is due (`None` if never:
    /// a zero rate after the burst is spent).
    pub fn take(&self) -> Result<(), Option<Duration>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(None);
        }
        Err(Some(Duration::from_secs_f64((1.0 - st.0) / self.rate)))
    }
}

/// Counters of one plugin version's outbound HTTP.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) secrets_refused: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) reused: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A snapshot for the plugin list.
    pub fn snapshot(&self) -> OutboundStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OutboundStats {
            requests: get(&self.sent),
            rate_limited: get(&self.rate_limited),
            secrets_refused: get(&self.secrets_refused),
            responses_too_large: get(&self.too_large),
            connections_opened: get(&self.connections),
            connections_reused: get(&self.reused),
        }
    }
}

/// Outbound HTTP of one plugin since its current version loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboundStats {
    /// Requests a server answered (the response head arrived).
    pub requests: u64,
    /// Requests refused by the rate limit.
    pub rate_limited: u64,
    /// Requests refused because a secret's placeholder was outside its binding.
    pub secrets_refused: u64,
    /// Responses refused for a body over the size cap.
    pub responses_too_large: u64,
    /// New connections opened.
    pub connections_opened: u64,
    /// Requests that reused a pooled connection.
    pub connections_reused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let b = TokenBucket::new(1, 3);
        for _ in 0..3 {
            assert!(b.take().is_ok());
        }
        let wait = b.take().unwrap_err().expect("rate > 0");
        assert!(wait <= Duration::from_secs(1));
        let none = TokenBucket::new(0, 1);
        assert!(none.take().is_ok());
        assert_eq!(none.take(), Err(None));
    }
}
