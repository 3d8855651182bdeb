//! The durable channel outbox as the store sees it: replies and notices
//! committed before any delivery attempt, each with its attempt count,
//! next attempt time and last error. Committing a message's final reply
//! also settles that message in the inbox as answered, in the same
//! transaction. A send is marked in flight before the plugin is called and
//! its result recorded after, so a crash leaves exactly the sends whose
//! outcome is unknown marked ("in doubt"). Delivered messages stay (without
//! their text) with the platform's message id, so delivery statuses the
//! platform reports later are recorded against them. Delivery lives in
//! `crate::channels::outbox`.

use std::sync::Arc;

use super::StoreError;

/// A message to commit to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbound {
    /// The conversation it goes to (delivery order holds per conversation).
    pub conversation: String,
    /// The message, as JSON (`crate::channels::outbox::Stored`).
    pub message: String,
    /// Blob handles its attachments reference (kept while it waits).
    pub blobs: Vec<String>,
}

/// What committing to the outbox does to the inbox in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxLink {
    /// Nothing (a notice).
    None,
    /// The messages are the final reply to inbox message `seq`: settle it
    /// as answered.
    Answers(i64),
}

/// A committed message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Commit order (the outbox id).
    pub id: i64,
    /// The conversation.
    pub conversation: String,
    /// The message, as JSON.
    pub message: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Resend as plain text (the platform rejected the formatting).
    pub plain: bool,
}

/// An undelivered outbox row with its whole state (diagnostics and the
/// operator's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The outbox id.
    pub id: i64,
    /// The conversation.
    pub conversation: String,
    /// `pending` or `failed`.
    pub status: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (Unix ms).
    pub next_attempt_ms: i64,
    /// Since when a send is in flight (Unix ms), if one is.
    pub sending_since_ms: Option<i64>,
    /// The latest failure's cause.
    pub last_error: Option<String>,
    /// The message, as JSON.
    pub message: String,
}

/// A delivery status the platform reported for a message it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Accepted by the platform.
    Sent,
    /// Delivered to the recipient's device.
    Delivered,
    /// Read by the recipient.
    Read,
    /// The platform could not deliver it.
    Failed,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }

    /// How far along it is (a later status never goes back to an earlier
    /// one; `failed` always wins).
    pub fn rank(self) -> u8 {
        match self {
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Read => 3,
            DeliveryState::Failed => 4,
        }
    }
}

/// What the outbox of one channel holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Waiting for delivery (including retries and sends in flight).
    pub depth: u64,
    /// Sends in flight now.
    pub in_flight: u64,
    /// Given up on (kept for the operator, pruned with age).
    pub failed: u64,
    /// The latest failure's cause.
    pub last_error: Option<String>,
    /// Sent messages the platform later reported as not delivered.
    pub delivery_failed: u64,
    /// The latest such report's reason.
    pub last_delivery_failure: Option<String>,
}

/// What [`OutboxStore::outbox_recover`] does with sends left in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDoubt {
    /// Send them again (at least once: the platform may show them twice).
    Resend,
    /// Fail them with a clear cause (at most once: the answer may be lost).
    Fail,
}

/// Durable outbox storage.
pub trait OutboxStore: Send + Sync + 'static {
    /// In one transaction: commit `messages` for (`channel`, `account`) and
    /// apply `link` to the inbox. Returns the ids.
    fn outbox_enqueue(
        &self,
        channel: &str,
        account: &str,
        link: InboxLink,
        messages: &[NewOutbound],
    ) -> Result<Vec<i64>, StoreError>;

    /// The oldest waiting message of each conversation of `channel` that is
    /// due at `now_ms` and not in flight, oldest first, at most `limit`.
    fn outbox_due(
        &self,
        channel: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// When the next waiting message of `channel` falls due, if any waits.
    fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError>;

    /// Mark message `id` in flight (committed before the plugin is called);
    /// `false` if it is not waiting (delivered, failed or in flight).
    fn outbox_begin(&self, id: i64) -> Result<bool, StoreError>;

    /// Delivered as platform message `platform_id`: keep only its delivery
    /// record.
    fn outbox_delivered(&self, id: i64, platform_id: &str) -> Result<(), StoreError>;

    /// Try again at `next_ms` after `attempts` failures, `plain` or not.
    fn outbox_retry(
        &self,
        id: i64,
        next_ms: i64,
        attempts: u32,
        plain: bool,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Given up: keep it as failed with `error`.
    fn outbox_failed(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError>;

    /// Messages of `channel` marked in flight (after a crash: in doubt).
    fn outbox_in_doubt(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError>;

    /// Settle the sends of `channel` left in flight by an earlier process
    /// as `how` says; returns them.
    fn outbox_recover(&self, channel: &str, how: InDoubt) -> Result<Vec<OutboxItem>, StoreError>;

    /// Record the platform's status of sent message `platform_id` of
    /// `channel`; `false` if no sent message has that id.
    fn outbox_status(
        &self,
        channel: &str,
        platform_id: &str,
        state: DeliveryState,
        detail: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// The blob handles waiting messages reference (not to be collected).
    fn outbox_blobs_in_use(&self) -> Result<Vec<String>, StoreError>;

    /// Undelivered rows of `channel` (waiting and failed), oldest first, at
    /// most `limit`.
    fn outbox_rows(&self, channel: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;

    /// Forget delivered and failed messages last changed before
    /// `before_ms`, at most `limit`; returns how many.
    fn outbox_prune(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError>;

    /// How the outbox of `channel` stands.
    fn outbox_stats(&self, channel: &str) -> Result<OutboxStats, StoreError>;
}

/// A shared outbox store.
pub type SharedOutbox = Arc<dyn OutboxStore>;
