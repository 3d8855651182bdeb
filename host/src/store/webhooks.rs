//! The webhook registry and delivery outbox as the store sees them: endpoint
//! records, one delivery row per (event, endpoint), and the attempt log.
//!
//! Deliveries are created by the store itself, inside the transaction that
//! writes the event (see `insert_event` in `sqlite_sessions.rs`), so an event
//! and its deliveries commit or vanish together: a kill -9 at any moment
//! loses nothing. The dispatcher (`crate::webhooks`) claims due deliveries
//! with [`WebhookStore::begin_attempt`] (which counts the attempt *before*
//! the request is sent, so an attempt number is never reused, even across a
//! crash) and settles them with [`WebhookStore::finish_attempt`].

use std::sync::Arc;

use serde::Serialize;

use super::StoreError;
use crate::secret::Secret;

/// A subscriber's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// `ep_` + 32 hex digits.
    pub id: String,
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Operator's free-form description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event types delivered: exact names, `prefix.*`, or `*` for all.
    pub events: Vec<String>,
    /// Whether new events are delivered.
    pub enabled: bool,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change, Unix ms.
    pub updated_ms: i64,
    /// The signing secret (`whsec_...`). Never serialized: it is shown once,
    /// when created or rotated.
    #[serde(skip)]
    pub secret: Secret,
    /// The secret before the last rotation, still signing until
    /// `previous_secret_expires_ms`.
    #[serde(skip)]
    pub previous_secret: Option<Secret>,
    /// When the previous secret stops signing, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_ms: Option<i64>,
    /// Start of the current run of failed attempts (cleared by a success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// Why it was disabled (by the operator, a 410, or failing too long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is being made.
    InFlight,
    /// A 2xx was received.
    Delivered,
    /// Given up (schedule exhausted, endpoint gone or disabled); replayable.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "in_flight" => DeliveryStatus::InFlight,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event to be delivered to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event-log row it came from.
    pub event_id: i64,
    /// The `webhook-id` header: stable across retries and replays, shared by
    /// every endpoint receiving the same event.
    pub msg_id: String,
    /// The event type.
    pub kind: String,
    /// The exact body sent (serialized once, when the event was written).
    #[serde(skip)]
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts started so far (the number of the latest attempt).
    pub attempts: u32,
    /// When the next attempt is due, Unix ms.
    pub next_attempt_ms: i64,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// HTTP status of the last attempt, if it got one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Error of the last attempt, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One attempt to deliver, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: i64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When it started, Unix ms.
    pub ts_ms: i64,
    /// HTTP status, if a response came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time to the response (or the failure), ms.
    pub latency_ms: u64,
    /// What went wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A delivery that is due, as the dispatcher picks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The delivery.
    pub id: i64,
    /// Its endpoint.
    pub endpoint_id: String,
}

/// How an attempt settles its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Delivered: clears the endpoint's failing streak.
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Give up on this delivery.
    Failed,
}

/// What [`WebhookStore::finish_attempt`] reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The endpoint's failing streak start after this attempt (`None` after
    /// a success, or if the endpoint was deleted meanwhile).
    pub failing_since_ms: Option<i64>,
}

/// The webhook registry and outbox. Synchronous, like
/// [`super::SessionStore`] (implementations keep blocking work off the async
/// worker threads).
pub trait WebhookStore: Send + Sync + 'static {
    /// Register an endpoint.
    fn add_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;
    /// One endpoint.
    fn get_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// All endpoints, oldest first.
    fn list_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;
    /// Remove an endpoint with its deliveries and attempt log; whether it
    /// existed.
    fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError>;
    /// Enable or disable (`None` flips, atomically). Disabling fails the
    /// endpoint's pending deliveries with `reason` (they can be replayed
    /// after re-enabling); enabling clears the failing streak. `None` if the
    /// endpoint does not exist.
    fn set_endpoint_enabled(
        &self,
        id: &str,
        enabled: Option<bool>,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;
    /// Replace the secret; the old one keeps signing until `grace_until_ms`.
    fn rotate_secret(
        &self,
        id: &str,
        new_secret: &str,
        grace_until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Pending deliveries due at `now_ms` to enabled endpoints, oldest due
    /// first, at most `limit`, skipping `exclude_endpoints` (those at their
    /// concurrency limit). Only ids: [`WebhookStore::begin_attempt`] loads
    /// the one it claims.
    fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
        exclude_endpoints: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// The oldest pending delivery of `endpoint_id` due at `now_ms`, if the
    /// endpoint is enabled.
    fn due_deliveries_of(
        &self,
        endpoint_id: &str,
        now_ms: i64,
    ) -> Result<Option<DueDelivery>, StoreError>;
    /// When the earliest pending delivery to an enabled endpoint is due.
    fn next_due_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Claim a pending delivery for an attempt: it becomes in-flight and its
    /// attempt count goes up, committed before any request is sent. `None`
    /// if it is no longer pending (claimed elsewhere, replayed, deleted).
    fn begin_attempt(&self, delivery_id: i64, now_ms: i64) -> Result<Option<Delivery>, StoreError>;

    /// [`begin_attempt`](Self::begin_attempt) with a claim of `claim_ms`:
    /// on a shared store (several nodes), a delivery whose claim ran out
    /// (its node died or stalled) is due again and may be claimed by any
    /// node, as a new attempt number; a settle by the attempt that lost its
    /// claim is then ignored. A single-node store ignores the length (its
    /// claims are queued again at the next start).
    fn begin_attempt_claimed(
        &self,
        delivery_id: i64,
        now_ms: i64,
        claim_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        let _ = claim_ms;
        self.begin_attempt(delivery_id, now_ms)
    }

    /// [`begin_attempt_claimed`](Self::begin_attempt_claimed) only while
    /// fewer than `per_endpoint` attempts to the delivery's endpoint are in
    /// flight on every node together (claims not yet run out), checked and
    /// claimed under one per-endpoint lock. A single-node store leaves the
    /// limit to the dispatcher (it is the only one sending).
    fn begin_attempt_capped(
        &self,
        delivery_id: i64,
        now_ms: i64,
        claim_ms: u64,
        per_endpoint: usize,
    ) -> Result<AttemptClaim, StoreError> {
        let _ = per_endpoint;
        Ok(
            match self.begin_attempt_claimed(delivery_id, now_ms, claim_ms)? {
                Some(d) => AttemptClaim::Claimed(d),
                None => AttemptClaim::Gone,
            },
        )
    }
    /// Log an attempt and settle its delivery; failures start (or continue)
    /// the endpoint's failing streak, a success ends it.
    fn finish_attempt(&self, attempt: &Attempt, settle: Settle) -> Result<Settled, StoreError>;
    /// Put every in-flight delivery back to pending, due at `now_ms` (after a
    /// crash, on start). Returns how many.
    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// An endpoint's deliveries, newest first, at most `limit`, optionally
    /// only those with `status` and with `id < before`.
    fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// One delivery.
    fn get_delivery(&self, delivery_id: i64) -> Result<Option<Delivery>, StoreError>;
    /// A delivery's attempts, oldest first.
    fn list_attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>, StoreError>;
    /// Queue one delivery of `endpoint_id` again, due at `now_ms` (unless it
    /// is in flight). Whether it was queued.
    fn replay_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Queue again every failed delivery of `endpoint_id` created at or after
    /// `since_ms`. Returns how many.
    fn replay_failed_since(
        &self,
        endpoint_id: &str,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Delete settled (delivered or failed) deliveries created before
    /// `before_ms`, with their attempts, in bounded batches. Returns how
    /// many.
    fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Notified whenever deliveries are written, so the dispatcher wakes at
    /// once instead of polling.
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify>;
}

/// What [`WebhookStore::begin_attempt_capped`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptClaim {
    /// Claimed: the attempt may be sent.
    Claimed(Delivery),
    /// No longer pending (claimed elsewhere, replayed, deleted).
    Gone,
    /// Still pending, but its endpoint has its limit of attempts in flight
    /// across the cluster: try again when one settles.
    EndpointBusy,
}

/// A shared webhook store.
pub type SharedWebhooks = Arc<dyn WebhookStore>;
