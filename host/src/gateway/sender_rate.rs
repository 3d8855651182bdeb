//! Per-sender rate limits for channel messages: a token bucket per
//! (channel, sender). A message over the rate starts no run; the sender is
//! told to slow down once per limited stretch (the warning is re-armed by
//! the next message that gets through).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle (full) ones are pruned.
const PRUNE_AT: usize = 10_000;

/// What to do with a sender's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: run it.
    Allow,
    /// Over the rate: run nothing; `warn` is true the first time in a row,
    /// when the sender should get a "slow down" reply.
    Refuse {
        /// Send the sender a short notice (once per limited stretch).
        warn: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    warned: bool,
}

/// Token buckets by (channel, sender). Keys are kept as keyed 64-bit
/// hashes, so a sender id of any length costs a few bytes.
#[derive(Debug)]
pub struct SenderLimiter {
    per_sec: f64,
    burst: f64,
    keys: RandomState,
    buckets: Mutex<(HashMap<u64, Bucket>, usize)>,
}

impl SenderLimiter {
    /// `per_minute` messages per minute with bursts of `burst` (at least 1);
    /// `per_minute == 0` allows everything.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        SenderLimiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            keys: RandomState::new(),
            buckets: Mutex::new((HashMap::new(), PRUNE_AT)),
        }
    }

    /// Take a token for a message from `sender` on `channel` at `now`.
    pub fn check(&self, channel: &str, sender: &str, now: Instant) -> Verdict {
        if self.per_sec == 0.0 {
            return Verdict::Allow;
        }
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (buckets, prune_at) = &mut *guard;
        if buckets.len() >= *prune_at {
            // Forget senders whose buckets have refilled: they start full
            // again anyway.
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
            *prune_at = (buckets.len() * 2).max(PRUNE_AT);
        }
        let b = buckets
            .entry(self.keys.hash_one((channel, sender)))
            .or_insert(Bucket {
                tokens: self.burst,
                at: now,
                warned: false,
            });
        b.tokens = self.refilled(b, now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.warned = false;
            Verdict::Allow
        } else {
            let warn = !b.warned;
            b.warned = true;
            Verdict::Refuse { warn }
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_sec).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refused_warned_once_then_refilled() {
        let l = SenderLimiter::new(6, 2); // one token per 10 s
        let t0 = Instant::now();
        assert_eq!(l.check("c", "a", t0), Verdict::Allow);
        assert_eq!(l.check("c", "a", t0), Verdict::Allow);
        assert_eq!(l.check("c", "a", t0), Verdict::Refuse { warn: true });
        assert_eq!(l.check("c", "a", t0), Verdict::Refuse { warn: false });
        // Others are not affected.
        assert_eq!(l.check("c", "b", t0), Verdict::Allow);
        assert_eq!(l.check("d", "a", t0), Verdict::Allow);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(l.check("c", "a", t1), Verdict::Refuse { warn: false });
        let t2 = t0 + Duration::from_secs(11);
        assert_eq!(l.check("c", "a", t2), Verdict::Allow);
        // A new stretch over the limit warns again.
        assert_eq!(l.check("c", "a", t2), Verdict::Refuse { warn: true });
    }

    #[test]
    fn zero_rate_is_unlimited_and_idle_buckets_are_pruned() {
        let off = SenderLimiter::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(off.check("c", "a", t0), Verdict::Allow);
        }
        let l = SenderLimiter::new(60, 1);
        for i in 0..PRUNE_AT {
            l.check("c", &i.to_string(), t0);
        }
        let later = t0 + Duration::from_secs(2);
        l.check("c", "new", later);
        let n = l.buckets.lock().unwrap().0.len();
        assert_eq!(n, 1, "refilled buckets are forgotten");
    }
}
