//! Per-channel verification state: pushes refused, by reason (for
//! `pincer_channel_webhook_rejected_total{channel,reason}` and the
//! channel's status), and the status view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::Reason;

/// Least time between two `warn` lines for one channel and reason, in ms;
/// rejections in between are counted and named in the next line, so a
/// flood of forged pushes cannot flood the log.
pub const LOG_EVERY_MS: u64 = 1_000;

/// Rejected pushes of one channel, by reason (kept across plugin reloads).
#[derive(Debug, Default)]
pub struct VerifyStats {
    counts: [AtomicU64; Reason::ALL.len()],
    /// Host time (ms) of the last `warn` line per reason.
    logged_at: [AtomicU64; Reason::ALL.len()],
    /// Rejections not logged since that line.
    unlogged: [AtomicU64; Reason::ALL.len()],
}

impl VerifyStats {
    fn slot(reason: Reason) -> usize {
        Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default()
    }

    /// Count one rejection.
    pub fn record(&self, reason: Reason) {
        self.counts[Self::slot(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a rejection for `reason` at host time `now_ms` gets a `warn`
    /// line: `Some(n)` with the `n` rejections left unlogged before it, or
    /// `None` within [`LOG_EVERY_MS`] of the last line.
    pub fn log_now(&self, reason: Reason, now_ms: u64) -> Option<u64> {
        let i = Self::slot(reason);
        let last = self.logged_at[i].load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= LOG_EVERY_MS;
        if due
            && self.logged_at[i]
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.unlogged[i].swap(0, Ordering::Relaxed))
        } else {
            self.unlogged[i].fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Rejections for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.counts[Self::slot(reason)].load(Ordering::Relaxed)
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// A channel's verification, as `channels.status` and `/v1/channels` show it
/// (`webhook` object).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The declared scheme (`none`, `shared-header`, `hmac-sha256`, `ed25519`).
    pub scheme: &'static str,
    /// The declared handshake (`hub-challenge`), if any.
    pub handshake: Option<&'static str>,
    /// Why pushes are refused with 503, e.g. "webhook secret `app_secret`
    /// not granted"; `None` when verification is ready.
    pub problem: Option<String>,
    /// Pushes refused since the gateway started.
    pub rejected: u64,
    /// The same by reason (`missing`, `invalid`, `stale`, `handshake`, `not-granted`).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
}

impl WebhookStatus {
    /// The view of `stats` for a channel declaring `scheme` (and
    /// `handshake`), with `problem`.
    pub fn new(
        scheme: &'static str,
        handshake: Option<&'static str>,
        problem: Option<String>,
        stats: &VerifyStats,
    ) -> Self {
        WebhookStatus {
            scheme,
            handshake,
            problem,
            rejected: stats.total(),
            rejected_by_reason: Reason::ALL
                .iter()
                .map(|r| (r.as_str(), stats.get(*r)))
                .collect(),
        }
    }
}
