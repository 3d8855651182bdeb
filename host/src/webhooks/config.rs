//! Webhook delivery settings (the `[webhooks]` section of the config file)
//! and the retry schedule they define.

use std::time::Duration;

use serde::Deserialize;

/// How deliveries are made and retried. Every key is optional:
///
/// ```toml
/// [webhooks]
/// retry_schedule_secs = [5, 300, 1800, 7200, 18000, 36000, 36000]  # Svix's
/// jitter = 0.1                  # +-10% on every retry delay
/// request_timeout_ms = 15000
/// concurrency_per_endpoint = 4  # attempts in flight to one endpoint
/// max_in_flight = 64            # attempts in flight overall
/// disable_after_secs = 432000   # failing this long (5 days) disables
/// max_retry_after_secs = 86400  # longest Retry-After honoured
/// rotation_grace_secs = 86400   # old secret keeps signing after a rotate
/// retention_days = 30           # settled deliveries and events kept this long
/// allow_cidrs = ["10.1.0.0/16"] # private ranges endpoints may be in
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Delay before each retry, in seconds: attempt 1 is immediate, attempt
    /// `n + 1` follows `retry_schedule_secs[n - 1]` after attempt `n`; when
    /// the list is used up the delivery fails.
    pub retry_schedule_secs: Vec<u64>,
    /// Random spread on each retry delay, as a fraction (0.1 = +-10%).
    pub jitter: f64,
    /// Per-attempt timeout (connect, send, response head and body).
    pub request_timeout_ms: u64,
    /// Attempts in flight to one endpoint.
    pub concurrency_per_endpoint: usize,
    /// Attempts in flight overall.
    pub max_in_flight: usize,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after_secs: u64,
    /// The longest `Retry-After` honoured (longer ones are capped).
    pub max_retry_after_secs: u64,
    /// How long the previous secret keeps signing after a rotation, unless
    /// the rotate call says otherwise.
    pub rotation_grace_secs: u64,
    /// Delivered and failed deliveries (and their attempt log), and the
    /// event log, are kept this many days.
    pub retention_days: u64,
    /// CIDRs endpoints may resolve to even though they are private or
    /// reserved (also `PINCER_WEBHOOK_ALLOW_CIDRS`, comma-separated).
    pub allow_cidrs: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18000, 36000, 36000],
            jitter: 0.1,
            request_timeout_ms: 15_000,
            concurrency_per_endpoint: 4,
            max_in_flight: 64,
            disable_after_secs: 5 * 24 * 3600,
            max_retry_after_secs: 24 * 3600,
            rotation_grace_secs: 24 * 3600,
            retention_days: 30,
            allow_cidrs: Vec::new(),
        }
    }
}

impl WebhookConfig {
    /// The per-attempt timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// How long failing disables an endpoint.
    pub fn disable_after(&self) -> Duration {
        Duration::from_secs(self.disable_after_secs)
    }

    /// How long settled deliveries are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(24 * 3600))
    }

    /// The default rotation grace period.
    pub fn rotation_grace(&self) -> Duration {
        Duration::from_secs(self.rotation_grace_secs)
    }

    /// The delay before the attempt after attempt number `attempts` (from
    /// 1), or `None` when the schedule is used up. A `Retry-After` from the
    /// receiver replaces the scheduled delay (capped); otherwise the
    /// scheduled delay gets the configured jitter.
    pub fn retry_delay(&self, attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = *self
            .retry_schedule_secs
            .get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
        if let Some(asked) = retry_after {
            return Some(asked.min(Duration::from_secs(self.max_retry_after_secs)));
        }
        let base = Duration::from_secs(step);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return Some(base);
        }
        let factor = 1.0 + rand::random_range(-jitter..=jitter);
        Some(base.mul_f64(factor))
    }

    /// Check the values (a schedule of zero-length steps, or a jitter
    /// outside 0..=1, would hammer receivers).
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "webhooks.jitter must be within 0..=1, got {}",
                self.jitter
            ));
        }
        if self.concurrency_per_endpoint == 0 || self.max_in_flight == 0 {
            return Err(
                "webhooks.concurrency_per_endpoint and max_in_flight must be at least 1".into(),
            );
        }
        crate::netguard::NetGuard::parse_cidrs(&self.allow_cidrs.join(","))
            .map(|_| ())
            .map_err(|e| format!("webhooks.allow_cidrs: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_svix_with_jitter_and_retry_after() {
        let c = WebhookConfig::default();
        for (attempt, secs) in [(1, 5u64), (2, 300), (3, 1800), (7, 36000)] {
            for _ in 0..50 {
                let d = c.retry_delay(attempt, None).unwrap().as_secs_f64();
                let base = secs as f64;
                assert!(
                    d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9,
                    "{attempt}: {d}"
                );
            }
        }
        // Eight attempts in all: the seventh retry is the last.
        assert_eq!(c.retry_delay(8, None), None);
        assert_eq!(c.retry_delay(0, None), None);
        assert_eq!(
            c.retry_delay(1, Some(Duration::from_secs(42))),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            c.retry_delay(1, Some(Duration::from_secs(10 * 86400))),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(c.retry_delay(8, Some(Duration::from_secs(1))), None);
        let exact = WebhookConfig {
            jitter: 0.0,
            ..WebhookConfig::default()
        };
        assert_eq!(exact.retry_delay(2, None), Some(Duration::from_secs(300)));
    }

    #[test]
    fn check_rejects_nonsense() {
        assert!(WebhookConfig::default().check().is_ok());
        let bad = WebhookConfig {
            jitter: 2.0,
            ..WebhookConfig::default()
        };
        assert!(bad.check().is_err());
        let bad = WebhookConfig {
            allow_cidrs: vec!["not a cidr".into()],
            ..WebhookConfig::default()
        };
        assert!(bad.check().unwrap_err().contains("not a cidr"));
    }
}
