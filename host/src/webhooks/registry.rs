//! The endpoint registry as operators use it (through the `webhooks.*`
//! protocol methods and `/v1/webhooks`): validation, secrets shown once,
//! rotation, the delivery log and replay.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::signing::Secret;
use super::ssrf::{SsrfError, SsrfGuard, parse_endpoint_url};
use crate::clock::SharedClock;
use crate::store::{
    Attempt, Delivery, DeliveryStatus, SharedWebhooks, StoreError, WebhookEndpoint,
};

/// Every event type a webhook can subscribe to. A filter entry is one of
/// these, a `prefix.*` over them (`message.*`), or `*` for all.
pub const EVENT_TYPES: &[&str] = &[
    "message.received",
    "message.sent",
    "agent.started",
    "agent.completed",
    "agent.error",
    "tool.called",
    "tool.completed",
    "session.created",
    "session.deleted",
    "channel.unhealthy",
    "channel.restarted",
    "channel.gave_up",
    "channel.recovered",
    "plugin.loaded",
    "plugin.failed",
    "plugin.unloaded",
    "webhook.disabled",
];

/// Longest description kept.
const MAX_DESCRIPTION: usize = 1024;
/// Longest the previous secret may keep signing after a rotation.
const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest a registration waits for DNS.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// Most filter entries per endpoint.
const MAX_FILTERS: usize = 64;

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is malformed, not http(s), or points somewhere forbidden.
    #[error(transparent)]
    Url(#[from] SsrfError),
    /// An event filter names no known event type.
    #[error("unknown event type `{0}`; known types: {known}", known = EVENT_TYPES.join(", "))]
    UnknownEvent(String),
    /// Some other parameter is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No endpoint (or delivery) with that id.
    #[error("{0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `webhooks.add` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhook {
    /// Where to POST (http or https).
    pub url: String,
    /// Event filter; all events (`*`) when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
    /// Start disabled with `false`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An endpoint with its secret, as shown once (after add and rotate).
#[derive(Debug, Clone)]
pub struct WithSecret {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// Its current `whsec_` secret (`Debug` redacts it).
    pub secret: crate::secret::Secret,
}

impl WithSecret {
    /// The endpoint's JSON plus `secret`.
    pub fn to_json(&self) -> Value {
        let mut v = endpoint_json(&self.endpoint);
        v["secret"] = self.secret.expose().into();
        v
    }
}

/// The registry.
#[derive(Clone)]
pub struct Webhooks {
    store: SharedWebhooks,
    guard: SsrfGuard,
    clock: SharedClock,
    rotation_grace: Duration,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A registry over `store`, checking URLs with `guard`.
    pub fn new(
        store: SharedWebhooks,
        guard: SsrfGuard,
        clock: SharedClock,
        rotation_grace: Duration,
    ) -> Arc<Self> {
        Arc::new(Webhooks {
            store,
            guard,
            clock,
            rotation_grace,
        })
    }

    /// Register an endpoint. The URL must parse, be http(s), and resolve
    /// only to allowed addresses now (it is checked again at every
    /// delivery).
    pub async fn add(&self, req: NewWebhook) -> Result<WithSecret, WebhookError> {
        let events = check_filters(req.events.unwrap_or_else(|| vec!["*".into()]))?;
        let url = parse_endpoint_url(req.url.trim())?;
        // The system resolver has its own (long) timeout; an operator
        // waiting on an API call gets a clear answer sooner.
        tokio::time::timeout(DNS_TIMEOUT, self.guard.check_url(&url))
            .await
            .map_err(|_| {
                WebhookError::Invalid(format!(
                    "resolving {} took longer than {}s",
                    url.host_str().unwrap_or("the host"),
                    DNS_TIMEOUT.as_secs()
                ))
            })??;
        if let Some(d) = &req.description
            && d.chars().count() > MAX_DESCRIPTION
        {
            return Err(WebhookError::Invalid(format!(
                "description longer than {MAX_DESCRIPTION} characters"
            )));
        }
        let now = self.now();
        let secret = crate::secret::Secret::from(Secret::generate().to_whsec());
        let endpoint = WebhookEndpoint {
            id: format!("ep_{}", Uuid::new_v4().simple()),
            url: url.to_string(),
            description: req.description.filter(|d| !d.is_empty()),
            events,
            enabled: req.enabled.unwrap_or(true),
            created_ms: now,
            updated_ms: now,
            secret: secret.clone(),
            previous_secret: None,
            previous_secret_expires_ms: None,
            failing_since_ms: None,
            disabled_reason: None,
        };
        self.store.add_endpoint(&endpoint)?;
        tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, events = ?endpoint.events, "webhook added");
        Ok(WithSecret { endpoint, secret })
    }

    /// All endpoints.
    pub fn list(&self) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        Ok(self.store.list_endpoints()?)
    }

    /// One endpoint.
    pub fn get(&self, id: &str) -> Result<WebhookEndpoint, WebhookError> {
        self.store.get_endpoint(id)?.ok_or_else(|| not_found(id))
    }

    /// Remove an endpoint, its pending deliveries and its log.
    pub fn delete(&self, id: &str) -> Result<(), WebhookError> {
        if !self.store.delete_endpoint(id)? {
            return Err(not_found(id));
        }
        tracing::info!(endpoint = %id, "webhook deleted");
        Ok(())
    }

    /// Enable or disable (`None` flips). Disabling fails pending deliveries
    /// (replayable); enabling clears the failure streak.
    pub fn toggle(&self, id: &str, enabled: Option<bool>) -> Result<WebhookEndpoint, WebhookError> {
        let ep = self
            .store
            .set_endpoint_enabled(id, enabled, Some("disabled by the operator"), self.now())?
            .ok_or_else(|| not_found(id))?;
        tracing::info!(endpoint = %id, enabled = ep.enabled, "webhook toggled");
        Ok(ep)
    }

    /// A new secret; the old one keeps signing (next to the new one) for
    /// `grace`, or the configured default.
    pub fn rotate(&self, id: &str, grace: Option<Duration>) -> Result<WithSecret, WebhookError> {
        let now = self.now();
        let grace = grace.unwrap_or(self.rotation_grace);
        if grace > MAX_ROTATION_GRACE {
            return Err(WebhookError::Invalid(format!(
                "graceSeconds must be at most {} (30 days)",
                MAX_ROTATION_GRACE.as_secs()
            )));
        }
        let secret = crate::secret::Secret::from(Secret::generate().to_whsec());
        let endpoint = self
            .store
            .rotate_secret(id, &secret, now + grace.as_millis() as i64, now)?
            .ok_or_else(|| not_found(id))?;
        tracing::info!(endpoint = %id, grace_secs = grace.as_secs(), "webhook secret rotated");
        Ok(WithSecret { endpoint, secret })
    }

    /// An endpoint's deliveries, newest first, each with its attempts.
    pub fn deliveries(
        &self,
        id: &str,
        status: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, WebhookError> {
        self.get(id)?;
        let status = status
            .map(|s| {
                DeliveryStatus::parse(s).ok_or_else(|| {
                    WebhookError::Invalid(format!(
                        "unknown status `{s}` (pending, in_flight, delivered, failed)"
                    ))
                })
            })
            .transpose()?;
        let list = self
            .store
            .list_deliveries(id, status, before, limit.clamp(1, 500))?;
        list.into_iter()
            .map(|d| {
                let attempts = self.store.list_attempts(d.id)?;
                Ok((d, attempts))
            })
            .collect()
    }

    /// Queue one delivery again (`delivery`), or every failed one created
    /// since `since_ms`. Returns how many were queued.
    pub fn replay(
        &self,
        id: &str,
        delivery: Option<i64>,
        since_ms: Option<i64>,
    ) -> Result<u64, WebhookError> {
        let ep = self.get(id)?;
        if !ep.enabled {
            return Err(WebhookError::Invalid(format!(
                "webhook {id} is disabled; enable it before replaying"
            )));
        }
        let now = self.now();
        match (delivery, since_ms) {
            (Some(d), None) => {
                if self.store.replay_delivery(id, d, now)? {
                    Ok(1)
                } else {
                    Err(WebhookError::NotFound(format!(
                        "delivery {d} of webhook {id} (or it is in flight)"
                    )))
                }
            }
            (None, Some(since)) => Ok(self.store.replay_failed_since(id, since, now)?),
            _ => Err(WebhookError::Invalid(
                "give exactly one of deliveryId and since".into(),
            )),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms() as i64
    }
}

fn not_found(id: &str) -> WebhookError {
    WebhookError::NotFound(format!("webhook {id}"))
}

/// Validate an event filter: known types, `prefix.*` over known prefixes,
/// or `*`. Duplicates are dropped; an empty filter is refused.
pub fn check_filters(filters: Vec<String>) -> Result<Vec<String>, WebhookError> {
    if filters.is_empty() {
        return Err(WebhookError::Invalid(
            "events must name at least one event type (or `*`)".into(),
        ));
    }
    if filters.len() > MAX_FILTERS {
        return Err(WebhookError::Invalid(format!(
            "at most {MAX_FILTERS} event filters"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for f in filters {
        let f = f.trim().to_owned();
        let known = f == "*"
            || EVENT_TYPES.contains(&f.as_str())
            || f.strip_suffix(".*").is_some_and(|prefix| {
                EVENT_TYPES
                    .iter()
                    .any(|t| t.split_once('.').is_some_and(|(p, _)| p == prefix))
            });
        if !known {
            return Err(WebhookError::UnknownEvent(f));
        }
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

/// An endpoint as the APIs show it (never with a secret).
pub fn endpoint_json(ep: &WebhookEndpoint) -> Value {
    let mut v = serde_json::to_value(ep).unwrap_or(Value::Null);
    if let Some(since) = ep.failing_since_ms {
        v["failingSince"] = super::rfc3339(since).into();
    }
    v
}

/// A delivery and its attempts as the APIs show them.
pub fn delivery_json(d: &Delivery, attempts: &[Attempt]) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    v["attempts"] = json!(attempts);
    v["attemptCount"] = d.attempts.into();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(
            check_filters(vec![
                "message.*".into(),
                "tool.called".into(),
                "message.*".into()
            ])
            .unwrap(),
            vec!["message.*", "tool.called"]
        );
        assert!(check_filters(vec!["*".into()]).is_ok());
        for bad in ["message.nope", "nope.*", "", "message", "*.received"] {
            let e = check_filters(vec![bad.into()]).unwrap_err();
            assert!(matches!(e, WebhookError::UnknownEvent(_)), "{bad}: {e}");
            assert!(e.to_string().contains("known types"), "{e}");
        }
        assert!(check_filters(vec![]).is_err());
    }
}
