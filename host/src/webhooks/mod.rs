//! Outgoing webhooks: operators subscribe HTTP endpoints to gateway events
//! and Pincer delivers them signed (Standard Webhooks), durably (an outbox
//! written in the same transaction as the event), retried on a schedule, and
//! never into the operator's private network (an SSRF guard at registration
//! and at connect time).
//!
//! - [`signing`]: `whsec_` secrets and `webhook-signature` values.
//! - [`ssrf`]: URL rules and the resolve-then-check guard.
//! - [`config`]: the `[webhooks]` settings and the retry schedule.
//! - [`registry`]: add, list, toggle, rotate, deliveries, replay.
//! - [`dispatcher`]: claims due deliveries and makes the attempts.
//! - [`bridge`]: writes plugin and channel health events into the event log.
//!
//! The outbox itself lives in the store (`crate::store::WebhookStore`).

pub mod bridge;
pub mod config;
pub mod dispatcher;
pub mod registry;
pub mod signing;
pub mod ssrf;

pub use config::WebhookConfig;
pub use dispatcher::Dispatcher;
pub use registry::{EVENT_TYPES, NewWebhook, WebhookError, Webhooks, WithSecret};

use std::time::{Duration, UNIX_EPOCH};

/// Unix ms as RFC 3339 with milliseconds (`2026-11-22T10:00:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
