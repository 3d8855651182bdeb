//! The durable channel inbox as the store sees it: what a channel's `poll`
//! or `handle-webhook` returned, committed with the platform cursor in one
//! transaction, deduplicated by (channel, account, platform id), and settled
//! once processed (answered, refused or finished without an answer). The
//! processing lives in `crate::channels::inbox`.

use std::sync::Arc;

use super::StoreError;

/// A message to commit to the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInbound {
    /// The platform's message id (empty: not deduplicated).
    pub platform_id: String,
    /// The conversation it belongs to (processing order holds per conversation).
    pub conversation: String,
    /// The message, as JSON (`crate::channels::Inbound`).
    pub payload: String,
}

/// A committed message not yet settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// Commit order within the database (the inbox reference).
    pub seq: i64,
    /// Channel plugin name.
    pub channel: String,
    /// Channel account.
    pub account: String,
    /// The conversation.
    pub conversation: String,
    /// The message, as JSON.
    pub payload: String,
}

/// How a committed message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxSettled {
    /// Its final reply was committed to the outbox.
    Answered,
    /// The access policy (or a rate limit) refused it.
    Refused,
    /// Processed without an answer (an empty reply, no consumer).
    Done,
}

impl InboxSettled {
    /// The stored state name.
    pub fn as_str(self) -> &'static str {
        match self {
            InboxSettled::Answered => "answered",
            InboxSettled::Refused => "refused",
            InboxSettled::Done => "done",
        }
    }
}

/// What the inbox of one channel holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Committed, not yet settled.
    pub pending: u64,
}

/// Durable inbox storage.
pub trait InboxStore: Send + Sync + 'static {
    /// In one transaction: insert `messages` of (`channel`, `account`) that
    /// were not committed before (by platform id) and, if `cursor` is set,
    /// store it as the account's platform cursor. Returns how many were new.
    fn commit_inbound(
        &self,
        channel: &str,
        account: &str,
        messages: &[NewInbound],
        cursor: Option<&str>,
    ) -> Result<usize, StoreError>;

    /// The committed platform cursor of (`channel`, `account`).
    fn inbox_cursor(&self, channel: &str, account: &str) -> Result<Option<String>, StoreError>;

    /// Unsettled messages of `channel` with `seq > after`, oldest first, at
    /// most `limit`.
    fn inbox_pending(
        &self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// Settle message `seq` (no effect if it is settled already).
    fn inbox_settle(&self, seq: i64, how: InboxSettled) -> Result<(), StoreError>;

    /// The progress of the reply to unsettled message `seq` (what of it has
    /// reached the platform already, as JSON; see
    /// `crate::channels::reply::Progress`), if any was recorded.
    fn inbox_progress(&self, seq: i64) -> Result<Option<String>, StoreError>;

    /// Record the progress of the reply to unsettled message `seq` (no
    /// effect once it is settled).
    fn inbox_set_progress(&self, seq: i64, progress: &str) -> Result<(), StoreError>;

    /// How the inbox of `channel` stands.
    fn inbox_stats(&self, channel: &str) -> Result<InboxStats, StoreError>;

    /// Forget settled messages settled before `before_ms` (their dedupe
    /// record goes with them), at most `limit`; returns how many.
    fn inbox_prune(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError>;
}

/// A shared inbox store.
pub type SharedInbox = Arc<dyn InboxStore>;
