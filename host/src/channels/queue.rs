//! The operator's settings for a channel's durable inbox and outbox
//! (`[plugins.<name>.queue]`), with safe defaults.

use serde::{Deserialize, Serialize};

use super::inbox::{DEFAULT_BATCH, ProcessorLimits};
use super::outbox::DeliveryLimits;
use crate::store::InDoubt;

/// Inbox processing and outbox delivery settings of one channel.
///
/// ```toml
/// [plugins.telegram.queue]
/// send_interval_ms = 1000    # one message per second per conversation ...
/// send_burst = 3             # ... after a burst of 3
/// send_max_attempts = 8      # transient failures before a reply is failed
/// retry_base_ms = 1000       # first retry delay (doubled, with jitter)
/// retry_max_ms = 300000      # longest retry delay
/// send_concurrency = 8       # sends in flight (to different conversations)
/// inbox_batch = 256          # committed messages held in memory
/// inbox_max_in_flight = 32   # conversations answered at once
/// resend_in_doubt = true     # a send a crash interrupted is sent again
/// drain_timeout_ms = 5000    # stopping waits this long for sends in flight
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Time between two messages to one conversation once its burst is
    /// used, ms (default 1000: Telegram allows about one per second per chat).
    pub send_interval_ms: u64,
    /// Messages one conversation may get at once (default 3).
    pub send_burst: u32,
    /// Attempts before a transiently failing message is failed (default 8).
    pub send_max_attempts: u32,
    /// First retry delay, ms (default 1000; doubled per attempt, ±25% jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, ms (default 300000).
    pub retry_max_ms: u64,
    /// Sends in flight at once, each to another conversation (default 8).
    pub send_concurrency: usize,
    /// Committed inbound messages held in memory per channel (default 256).
    pub inbox_batch: usize,
    /// Conversations being answered at once per channel (default 32).
    pub inbox_max_in_flight: usize,
    /// A send the gateway was in the middle of when it died (the platform
    /// may or may not have taken it: Telegram and WhatsApp take no
    /// idempotency key) is sent again at the next start (default `true`:
    /// at least once, a rare doubled message rather than a lost answer);
    /// `false` fails it instead, with the cause in the channel's health.
    pub resend_in_doubt: bool,
    /// How long stopping the gateway or unloading the channel waits for the
    /// sends in flight to finish, ms (default 5000).
    pub drain_timeout_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            send_interval_ms: 1000,
            send_burst: 3,
            send_max_attempts: 8,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            send_concurrency: 8,
            inbox_batch: DEFAULT_BATCH,
            inbox_max_in_flight: 32,
            resend_in_doubt: true,
            drain_timeout_ms: 5000,
        }
    }
}

impl QueueSettings {
    pub(crate) fn delivery(&self) -> DeliveryLimits {
        DeliveryLimits {
            interval_ms: self.send_interval_ms,
            burst: self.send_burst,
            max_attempts: self.send_max_attempts,
            retry_base_ms: self.retry_base_ms,
            retry_max_ms: self.retry_max_ms,
            concurrency: self.send_concurrency,
            in_doubt: if self.resend_in_doubt {
                InDoubt::Resend
            } else {
                InDoubt::Fail
            },
            drain_timeout_ms: self.drain_timeout_ms,
            recheck: None,
        }
    }

    pub(crate) fn processing(&self) -> ProcessorLimits {
        ProcessorLimits {
            batch: self.inbox_batch,
            max_in_flight: self.inbox_max_in_flight,
            safety_net: super::inbox::SWEEP_EVERY,
        }
    }
}
