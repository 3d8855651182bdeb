//! Channel sender pairing as the store sees it: pending pairing requests
//! (one per unknown sender, each with its code and expiry) and the senders
//! an operator approved, per channel and account. The policy that uses them
//! lives in `crate::channels::access` and `crate::channels::pairing`.

use std::sync::Arc;

use serde::Serialize;

use super::{NewOutbound, StoreError};

/// A pending request: an unknown sender who was given a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    /// Channel plugin name.
    pub channel: String,
    /// Channel account (`default` for single-account channels).
    pub account_id: String,
    /// The code the sender was given (8 characters, A-Z and 2-9 without
    /// ambiguous characters).
    pub code: String,
    /// Platform sender id.
    pub sender: String,
    /// Sender display name, when the platform gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// The conversation the request came from.
    pub conversation: String,
    /// When the code was issued, Unix ms.
    pub created_ms: i64,
    /// When the code stops being accepted, Unix ms.
    pub expires_ms: i64,
}

/// A sender an operator approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedSender {
    /// Channel plugin name.
    pub channel: String,
    /// Channel account.
    pub account_id: String,
    /// Platform sender id.
    pub sender: String,
    /// Sender display name at approval time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// When approved, Unix ms.
    pub approved_ms: i64,
}

/// What asking for a pairing code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request was stored with this code: tell the sender.
    Created(PairingRequest),
    /// The sender already has an unexpired request: say nothing again.
    AlreadyPending,
    /// The account already has the most pending requests allowed: no code.
    Full,
    /// The sender is approved already (a race with an approval).
    Approved,
}

/// The reply that gives a sender their new code, committed to the outbox
/// in the transaction that stores the code: a code is never stored without
/// its notice (a kill between the two would leave a code nobody was sent),
/// and no notice goes out for a code that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingNotice {
    /// The outbox queue it goes to (the channel runner's key, as
    /// [`super::OutboxStore::outbox_enqueue`] takes it).
    pub outbox: String,
    /// The outbox row's account.
    pub account: String,
    /// The message (its text carries the request's code).
    pub message: NewOutbound,
}

/// Why approving a code failed (besides the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// Approved: the sender may talk to the agent from now on.
    Approved(ApprovedSender),
    /// No pending request has this code.
    Unknown,
    /// The code existed but expired (the request is removed).
    Expired,
}

/// Durable pairing state.
pub trait PairingStore: Send + Sync + 'static {
    /// Whether `sender` is approved on (`channel`, `account`).
    fn is_approved(&self, channel: &str, account: &str, sender: &str) -> Result<bool, StoreError>;

    /// Atomically: drop expired requests of the account; if `sender` is
    /// approved or already has an unexpired request, say so; if the account
    /// has `max_pending` unexpired requests, refuse; else store `request`
    /// and commit `notice` to the outbox, in the same transaction.
    fn request_pairing(
        &self,
        request: &PairingRequest,
        notice: &PairingNotice,
        now_ms: i64,
        max_pending: usize,
    ) -> Result<RequestOutcome, StoreError>;

    /// Unexpired pending requests of `channel` (all accounts when `account`
    /// is `None`), oldest first.
    fn pending_pairings(
        &self,
        channel: &str,
        account: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<PairingRequest>, StoreError>;

    /// Approved senders of `channel` (all accounts when `account` is `None`).
    fn approved_senders(
        &self,
        channel: &str,
        account: Option<&str>,
    ) -> Result<Vec<ApprovedSender>, StoreError>;

    /// Atomically take the request with `code` and approve its sender.
    fn approve_pairing(
        &self,
        channel: &str,
        account: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<ApproveOutcome, StoreError>;

    /// Remove the request with `code` without approving; returns it.
    fn dismiss_pairing(
        &self,
        channel: &str,
        account: &str,
        code: &str,
    ) -> Result<Option<PairingRequest>, StoreError>;
}

/// A shared pairing store.
pub type SharedPairing = Arc<dyn PairingStore>;
