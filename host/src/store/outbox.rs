//! The durable channel outbox as the store sees it: replies and notices
//! committed before any delivery attempt, each with its attempt count,
//! next attempt time and last error. Committing a message's final reply
//! also settles that message in the inbox as answered, in the same
//! transaction. Delivery lives in `crate::channels::outbox`.

use std::sync::Arc;

use super::StoreError;

/// A message to commit to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbound {
    /// The conversation it goes to (delivery order holds per conversation).
    pub conversation: String,
    /// The message, as JSON (`crate::channels::outbox::Stored`).
    pub message: String,
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

/// What the outbox of one channel holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Waiting for delivery (including retries).
    pub depth: u64,
    /// Given up on (kept for the operator, pruned with age).
    pub failed: u64,
    /// The latest failure's cause.
    pub last_error: Option<String>,
}

/// Durable outbox storage.
pub trait OutboxStore: Send + Sync + 'static {
    /// In one transaction: commit `messages` for (`channel`, `account`) and,
    /// when `answers` is an inbox seq, settle it as answered. Returns the ids.
    fn outbox_enqueue(
        &self,
        channel: &str,
        account: &str,
        answers: Option<i64>,
        messages: &[NewOutbound],
    ) -> Result<Vec<i64>, StoreError>;

    /// The oldest waiting message of each conversation of `channel` that is
    /// due at `now_ms`, oldest first, at most `limit`.
    fn outbox_due(
        &self,
        channel: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// When the next waiting message of `channel` falls due, if any waits.
    fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError>;

    /// Delivered: forget it.
    fn outbox_delivered(&self, id: i64) -> Result<(), StoreError>;

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

    /// How the outbox of `channel` stands.
    fn outbox_stats(&self, channel: &str) -> Result<OutboxStats, StoreError>;
}

/// A shared outbox store.
pub type SharedOutbox = Arc<dyn OutboxStore>;
