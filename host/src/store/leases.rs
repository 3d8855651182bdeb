//! Channel account leases as the store sees them (cluster mode, issue 13):
//! one row per channel key naming the node that may run the account's
//! receiver, until when, and a fencing token that goes up on every
//! takeover. A holder's cursor and inbox commits carry its [`Fence`] and
//! are checked against the row in the same transaction, so a node that
//! lost its lease (paused, partitioned) can never commit after the new
//! owner took over. Only a shared store (PostgreSQL) has leases; with
//! SQLite there is one node and the lease is trivially held.

use std::sync::Arc;

use super::{NewInbound, StoreError};

/// A held lease: what a fenced write proves it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The channel key the lease is for.
    pub channel: String,
    /// The node holding it.
    pub owner: String,
    /// The fencing token (higher on every takeover).
    pub token: i64,
}

/// A lease row as stored (status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The channel key.
    pub channel: String,
    /// The node holding it (or that held it last).
    pub owner: String,
    /// The fencing token.
    pub token: i64,
    /// When it runs out, in the store's clock (Unix ms; 0: released).
    pub expires_ms: i64,
}

/// Lease storage (a shared store only).
pub trait LeaseStore: Send + Sync + 'static {
    /// This process's node id (the owner its leases carry).
    fn node_id(&self) -> &str;

    /// Take the lease of `channel` for `lease_ms` if nobody holds it (no
    /// row, released, or run out by the store's clock); the token goes up
    /// on every acquisition. `None` while another node holds it.
    fn lease_acquire(&self, channel: &str, lease_ms: u64) -> Result<Option<Fence>, StoreError>;

    /// Extend `fence`'s lease by `lease_ms` from now; `false` if it was
    /// taken over (the token moved on).
    fn lease_renew(&self, fence: &Fence, lease_ms: u64) -> Result<bool, StoreError>;

    /// Give the lease up at once (a graceful stop): another node may take
    /// it over without waiting for it to run out.
    fn lease_release(&self, fence: &Fence) -> Result<(), StoreError>;

    /// The lease row of `channel`, if any.
    fn lease_row(&self, channel: &str) -> Result<Option<LeaseRow>, StoreError>;

    /// [`InboxStore::commit_inbound`](super::InboxStore::commit_inbound)
    /// checked against `fence` in the same transaction: fails with
    /// [`StoreError::Fenced`] (committing nothing) unless the fence's token
    /// is still the lease's.
    fn commit_inbound_fenced(
        &self,
        channel: &str,
        account: &str,
        messages: &[NewInbound],
        cursor: Option<&str>,
        fence: &Fence,
    ) -> Result<usize, StoreError>;
}

/// A shared lease store.
pub type SharedLeases = Arc<dyn LeaseStore>;
