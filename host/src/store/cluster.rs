//! What cluster mode needs from a shared store ([`ClusterStore`]): the
//! cluster-wide stream log (chat and agent events of runs, session changes,
//! each with a cluster-wide strictly increasing id given at commit), node
//! heartbeats, the idempotency/ownership row of every operator run, abort
//! requests, and a wake-up listener. Only PostgreSQL implements it; the
//! embedded SQLite store is single-node and has none.
//!
//! The log is the source of truth: a wake-up ([`Wake`]) carries only ids,
//! and a node that misses one catches up by reading the log after its
//! cursor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// A stream event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStreamEvent {
    /// The node that published it.
    pub node_id: String,
    /// Event name (`chat`, `agent`, `sessions.changed`, ...).
    pub name: String,
    /// Payload JSON text.
    pub payload: String,
    /// Scope needed to receive it (`operator.read`, ...), if any.
    pub scope: Option<String>,
    /// Who receives it (`all`, `tool`, `sessions`, `messages:<key>`).
    pub audience: String,
    /// Whether slow consumers may skip it.
    pub droppable: bool,
    /// The run it belongs to, if any.
    pub run_id: Option<String>,
    /// The run's event seq (`payload.seq`), if any.
    pub run_seq: Option<i64>,
    /// Unix ms.
    pub ts: i64,
}

/// A committed stream event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Cluster-wide id: strictly increasing in commit order, no gaps.
    pub id: i64,
    /// The event.
    pub event: NewStreamEvent,
}

/// A node's heartbeat row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Node id (a UUID per process start).
    pub node_id: String,
    /// Operator-given name (default: the host name).
    pub name: String,
    /// Where its gateway listens.
    pub address: String,
    /// Process start, Unix ms.
    pub started_ms: i64,
    /// Last heartbeat, Unix ms (the database's clock).
    pub last_seen_ms: i64,
    /// Its channels' states (JSON array text).
    pub channels: String,
}

/// An operator run registered cluster-wide (its idempotency row).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRun {
    /// Run id (= the idempotency key).
    pub run_id: String,
    /// Session.
    pub session_key: String,
    /// The node executing it.
    pub node_id: String,
    /// `running`, `ok`, `error` or `aborted`.
    pub state: String,
    /// The finished run's result JSON (`status`, `error`, `text`,
    /// `startedAt`, `endedAt`), once finished.
    pub result: Option<String>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key was free: this node owns the run.
    Claimed,
    /// Another (or this) node already has a run with this key.
    Existing(ClusterRun),
}

/// A wake-up from another node (ids only, never payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Stream events up to this id were committed.
    Events(i64),
    /// An abort was requested for a run on the node with this id.
    Abort(String),
    /// The cluster-wide claim of this session was released.
    Session(String),
    /// Inbound messages of this channel (key) were committed to the inbox.
    Inbox(String),
    /// Replies of this channel (key) were committed to the outbox.
    Outbox(String),
    /// Webhook deliveries were queued, or an attempt settled.
    Webhooks,
    /// The listener (re)connected: anything may have been missed.
    Connected,
}

/// Waits for [`Wake`]s on a dedicated connection.
pub trait ClusterListener: Send {
    /// The next wake-up, or `None` after `timeout` without one. An error
    /// means the connection is gone (open a new listener).
    fn next(&mut self, timeout: Duration) -> Result<Option<Wake>, StoreError>;
}

/// The shared state of a cluster of gateways. All methods block (call them
/// off the async workers or through a store that offloads itself).
pub trait ClusterStore: Send + Sync + 'static {
    /// Append `events` in order in one transaction; ids are allocated under
    /// a lock held until commit, so they commit in id order and a reader
    /// paging by id never skips one. Wakes every listener. Returns the
    /// last id.
    fn append_stream(&self, events: &[NewStreamEvent]) -> Result<i64, StoreError>;
    /// Stream events with `id > after`, oldest first, at most `limit`.
    fn stream_after(&self, after: i64, limit: usize) -> Result<Vec<StreamEvent>, StoreError>;
    /// The last committed stream id (0 when empty).
    fn stream_head(&self) -> Result<i64, StoreError>;
    /// Delete stream events older than `before_ms`, and the idempotency
    /// rows of runs that ended before it; how many events.
    fn prune_stream(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// The highest `run_seq` logged for `run_id` (0 if none).
    fn last_run_seq(&self, run_id: &str) -> Result<i64, StoreError>;

    /// Insert or refresh this node's row (`last_seen_ms` from the
    /// database's clock, so nodes' clocks need not agree).
    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Remove a node's row (clean shutdown).
    fn remove_node(&self, node_id: &str) -> Result<(), StoreError>;
    /// Nodes seen within `timeout_ms` (by the database's clock), oldest
    /// start first.
    fn live_nodes(&self, timeout_ms: i64) -> Result<Vec<NodeRecord>, StoreError>;

    /// Insert-or-get the run `run_id` in one statement: `Claimed` if this
    /// call inserted it (owned by `node_id`), else the existing row.
    fn claim_run(
        &self,
        run_id: &str,
        session_key: &str,
        node_id: &str,
    ) -> Result<Claim, StoreError>;
    /// The run `run_id` as the cluster knows it (its idempotency row).
    fn cluster_run(&self, run_id: &str) -> Result<Option<ClusterRun>, StoreError>;
    /// Give up a claim whose run never started (its key may be used again).
    fn release_run(&self, run_id: &str, node_id: &str) -> Result<(), StoreError>;
    /// Record the end of `node_id`'s run `run_id` (`state`: `ok`, `error`,
    /// `aborted`; `result`: JSON text). `false` if the run was no longer
    /// running: the other nodes took it for lost and already ended it.
    fn finish_run(
        &self,
        run_id: &str,
        node_id: &str,
        state: &str,
        result: &str,
    ) -> Result<bool, StoreError>;
    /// Ask for the unfinished runs of `session_key` (only `run_id` if
    /// given) to be aborted with `reason`, and wake their nodes; the runs
    /// asked. A `run_id` of another session is returned without being
    /// marked (the caller refuses it).
    fn request_abort(
        &self,
        session_key: &str,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Vec<ClusterRun>, StoreError>;
    /// Unfinished runs of `node_id` with an abort request: (run id,
    /// reason).
    fn abort_requests(&self, node_id: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Mark `error` every unfinished run whose node has not been seen
    /// within `timeout_ms` (or is gone), returning them: exactly one
    /// caller gets each.
    fn take_orphans(&self, timeout_ms: i64, result: &str) -> Result<Vec<ClusterRun>, StoreError>;
    /// A listener on a dedicated connection.
    fn listen(&self) -> Result<Box<dyn ClusterListener>, StoreError>;

    /// Take session `session_key`'s claim for run `run_id` of node
    /// `node_id` (one run at a time per session, cluster-wide): if nobody
    /// holds it, if `node_id` holds it (its own runs are one at a time
    /// already; a claim left behind by a failed release is taken back),
    /// or if its holder has not been seen within `timeout_ms` (a dead
    /// node's claims expire with its heartbeat). The claim's fencing
    /// token (new on every take), or `None` while another live node holds
    /// it.
    fn claim_session(
        &self,
        session_key: &str,
        run_id: &str,
        node_id: &str,
        timeout_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Release session `session_key`'s claim if it still has `token`, and
    /// wake the nodes waiting for it.
    fn release_session(&self, session_key: &str, token: i64) -> Result<(), StoreError>;
    /// The claims `node_id` holds: (session key, token).
    fn session_claims_of(&self, node_id: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// Whether session `session_key`'s claim is held by a node other than
    /// `node_id` that was seen within `timeout_ms` (a run of this session
    /// executes, or is about to, on another live node: a new run of it
    /// waits).
    fn session_claimed_elsewhere(
        &self,
        session_key: &str,
        node_id: &str,
        timeout_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Store plugin `name`'s component file (`bytes`, hex SHA-256
    /// `sha256`) as the cluster's current version of it, replacing any
    /// older one; `node_id` uploaded it.
    fn publish_plugin(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        node_id: &str,
    ) -> Result<(), StoreError>;
    /// Record that plugin `name` was removed (`node_id` removed it): it is
    /// listed from now on with an empty `sha256`, so every node removes its
    /// copy. Answers whether the cluster held a version of it.
    fn withdraw_plugin(&self, name: &str, node_id: &str) -> Result<bool, StoreError>;
    /// The cluster's current plugin files, without their bytes (a removed
    /// plugin has an empty `sha256`).
    fn cluster_plugins(&self) -> Result<Vec<ClusterPlugin>, StoreError>;
    /// The bytes of plugin `name` if its current version is `sha256`.
    fn cluster_plugin_bytes(&self, name: &str, sha256: &str)
    -> Result<Option<Vec<u8>>, StoreError>;
}

/// A plugin file the cluster holds (see [`ClusterStore::publish_plugin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlugin {
    /// Plugin name (the file is `<name>.wasm` in each node's plugins directory).
    pub name: String,
    /// Hex SHA-256 of the file; empty when the plugin was removed.
    pub sha256: String,
    /// The node that uploaded it.
    pub node_id: String,
    /// When it was stored (Unix ms, the database's clock).
    pub updated_ms: i64,
}
