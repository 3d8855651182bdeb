//! Cluster mode: several gateways on one shared store (PostgreSQL) act as
//! one. This module owns the node's identity and the cluster-wide side of
//! the gateway:
//!
//! - events: cluster-wide events ([`wire`]) are not fanned out locally but
//!   appended to the store's stream log by one writer thread (group
//!   commit: whatever queued while the previous batch was being written
//!   goes in the next multi-row insert); every node, the publisher
//!   included, reads the log after its cursor and fans each event out to
//!   its own connections. A wake-up (`LISTEN/NOTIFY`, ids only) makes that
//!   prompt; a poll every `poll_ms` catches up after a missed one;
//! - resume: a client that connects with `resume: {after: <cursor>}` gets
//!   the logged events after its cursor, then the live ones, with nothing
//!   missed or repeated (the cursor rides on every logged event for
//!   clients that ask for it with the `event-cursor` capability);
//! - runs: `chat.send` and `agent` claim their idempotency key
//!   cluster-wide before a run starts, and `agent.wait` waits for a run
//!   wherever it executes; a run executes only while it holds its
//!   session's cluster-wide claim ([`sessions`]); `chat.abort` reaches runs on other nodes through an abort
//!   request their node acts on; a node whose heartbeat stops has its
//!   unfinished runs ended with an error by the others;
//! - presence: each node heartbeats its row (id, name, address, start,
//!   last seen, channel states); `system-presence`, `presence` and
//!   `channels.status` show every live node;
//! - plugins ([`plugins`]): an uploaded plugin is stored once and written
//!   into every node's plugins directory, where the watcher loads it;
//! - wake-ups: commits to the channel inbox and outbox and new webhook
//!   deliveries wake the node that serves them (the channel's lease
//!   holder, every dispatcher) through the same listener.
//!
//! With the default single-node store (SQLite) none of this runs: the
//! gateway fans events out in process as before.

mod plugins;
pub mod sessions;
mod tasks;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::hub::{Broadcast, Conn};
use super::runs::RunResult;
use super::{Gateway, now_ms};
use crate::store::{Claim, ClusterRun, ClusterStore, NewStreamEvent, NodeRecord, StoreError};

/// `[gateway.cluster]` settings (used only with a shared store).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in presence and `channels.status` (default: the
    /// host name; `--node-name`).
    pub node_name: Option<String>,
    /// How often the node refreshes its row, ms (default 2 000).
    pub heartbeat_ms: u64,
    /// A node not seen for this long is gone: it drops out of presence and
    /// its unfinished runs end with an error, ms (default 10 000).
    pub node_timeout_ms: u64,
    /// How often the node reads the log when no wake-up came (catch-up
    /// after a missed `NOTIFY`), ms (default 1 000).
    pub poll_ms: u64,
    /// Logged cluster events older than this are deleted, ms (default
    /// 3 600 000); a client resuming from an older cursor misses them.
    pub event_retention_ms: u64,
    /// Events waiting to be written (the store slow or down) beyond which
    /// droppable ones (deltas) are skipped (default 100 000).
    pub max_pending_events: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: None,
            heartbeat_ms: 2_000,
            node_timeout_ms: 10_000,
            poll_ms: 1_000,
            event_retention_ms: 3_600_000,
            max_pending_events: 100_000,
        }
    }
}

/// The result of a finished cluster run (`None` while it runs).
pub fn run_result(run: &ClusterRun) -> Option<RunResult> {
    if run.state == "running" {
        return None;
    }
    let result: Value = run
        .result
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    Some(RunResult {
        run_id: run.run_id.clone(),
        session_key: run.session_key.clone(),
        status: match run.state.as_str() {
            "ok" => "ok",
            "aborted" => "aborted",
            _ => "error",
        },
        started_at: result["startedAt"].as_i64().unwrap_or(0),
        ended_at: result["endedAt"].as_i64().unwrap_or(0),
        error: result["error"].as_str().map(str::to_owned),
        text: result["text"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The error a run gets when its node stopped heartbeating.
pub const NODE_LOST: &str = "the gateway node running this run stopped responding";

/// Cluster counters (on `/metrics` and in benchmarks).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Events handed to the writer.
    pub published: AtomicU64,
    /// Droppable events skipped because too many were waiting.
    pub dropped: AtomicU64,
    /// Batches written (one transaction each).
    pub batches: AtomicU64,
    /// Events written.
    pub written: AtomicU64,
    /// Logged events fanned out to this node's connections.
    pub delivered: AtomicU64,
}

/// This node's membership in a cluster.
pub struct Cluster {
    /// Node id: a UUID per process start.
    pub node_id: String,
    /// Node name (config, else the host name).
    pub node_name: String,
    address: String,
    started_ms: i64,
    config: ClusterConfig,
    store: Arc<dyn ClusterStore>,
    /// To the writer thread; `None` once stopping.
    writer: Mutex<Option<std::sync::mpsc::Sender<NewStreamEvent>>>,
    pending: AtomicUsize,
    /// The log id of the last event this node's writer appended.
    written_upto: std::sync::atomic::AtomicI64,
    /// To the tail thread.
    wake: Mutex<std::sync::mpsc::Sender<crate::store::Wake>>,
    /// The last log id fanned out here; held while fanning out (and while
    /// a resuming connection joins).
    delivered: Mutex<i64>,
    /// Operator runs this node claimed and still runs.
    claimed: Mutex<HashSet<String>>,
    /// Live nodes as of the last heartbeat.
    nodes: Mutex<Vec<NodeRecord>>,
    /// Session claims this node's runs hold, by session key.
    sessions: Mutex<HashMap<String, sessions::Held>>,
    /// Woken when a session claim is released anywhere.
    session_freed: tokio::sync::Notify,
    /// Woken when any run's terminal `chat` event reaches this node.
    run_ended: tokio::sync::Notify,
    /// Events written (or given up) by the writer, in publish order.
    written: tokio::sync::watch::Sender<u64>,
    /// The webhook dispatcher's wake-up (new deliveries on another node).
    webhook_signal: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// Plugin name → the cluster version (hex SHA-256) this node has
    /// written or found in its plugins directory.
    plugins: Mutex<HashMap<String, String>>,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Counters.
    pub stats: ClusterStats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host name, or `pincer` when it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "pincer".to_owned(),
    }
}

impl Cluster {
    /// Join the cluster on `store` as a new node of `gw`: write its first
    /// heartbeat, start reading the log at its current head (earlier
    /// events are not replayed to live connections), and start the writer,
    /// tail, listener and heartbeat. Returns the heartbeat task.
    pub fn start(
        gw: &Arc<Gateway>,
        store: Arc<dyn ClusterStore>,
        config: ClusterConfig,
    ) -> Result<(Arc<Cluster>, tokio::task::JoinHandle<()>), StoreError> {
        let node_id = uuid::Uuid::new_v4().to_string();
        let node_name = config
            .node_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(host_name);
        let head = store.stream_head()?;
        let (writer_tx, writer_rx) = std::sync::mpsc::channel();
        let (wake_tx, wake_rx) = std::sync::mpsc::channel();
        let cluster = Arc::new(Cluster {
            node_id,
            node_name,
            address: gw.config.listen.to_string(),
            started_ms: now_ms(),
            config,
            store,
            writer: Mutex::new(Some(writer_tx)),
            pending: AtomicUsize::new(0),
            written_upto: std::sync::atomic::AtomicI64::new(0),
            wake: Mutex::new(wake_tx),
            delivered: Mutex::new(head),
            claimed: Mutex::new(HashSet::new()),
            nodes: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            session_freed: tokio::sync::Notify::new(),
            run_ended: tokio::sync::Notify::new(),
            written: tokio::sync::watch::Sender::new(0),
            webhook_signal: std::sync::OnceLock::new(),
            plugins: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stats: ClusterStats::default(),
        });
        cluster.store.heartbeat(&cluster.record(Vec::new()))?;
        *lock(&cluster.nodes) = cluster
            .store
            .live_nodes(cluster.config.node_timeout_ms as i64)?;
        tracing::info!(node_id = %cluster.node_id, node_name = %cluster.node_name, address = %cluster.address, cursor = head, "joined the cluster");
        let threads = tasks::spawn_threads(&cluster, Arc::downgrade(gw), writer_rx, wake_rx);
        *lock(&cluster.threads) = threads;
        let beat = tokio::spawn(tasks::heartbeat_loop(cluster.clone(), Arc::downgrade(gw)));
        Ok((cluster, beat))
    }

    /// This node's heartbeat row with `channels`.
    fn record(&self, channels: Vec<Value>) -> NodeRecord {
        NodeRecord {
            node_id: self.node_id.clone(),
            name: self.node_name.clone(),
            address: self.address.clone(),
            started_ms: self.started_ms,
            last_seen_ms: 0,
            channels: Value::Array(channels).to_string(),
        }
    }

    /// Queue `b` for the log (it reaches every node's connections, this
    /// one's included, from there). Past `max_pending_events` a droppable
    /// event is skipped.
    pub fn publish(&self, b: &Broadcast) {
        self.publish_row(wire::to_row(&self.node_id, b, now_ms()), b.droppable);
    }

    fn publish_row(&self, row: NewStreamEvent, droppable: bool) {
        if droppable && self.pending.load(Ordering::Relaxed) >= self.config.max_pending_events {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let writer = lock(&self.writer);
        let Some(tx) = writer.as_ref() else {
            tracing::debug!(event = %row.name, "cluster stopped: event not published");
            return;
        };
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if tx.send(row).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Events queued and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Events handed to the writer so far.
    fn published_total(&self) -> u64 {
        self.stats.published.load(Ordering::SeqCst)
    }

    /// Wait until the writer has written (or given up) the first `upto`
    /// published events, or the node is stopping.
    async fn wait_written(&self, upto: u64) {
        let mut rx = self.written.subscribe();
        let _ = rx.wait_for(|w| *w >= upto || self.stopping()).await;
    }

    /// Wake `signal` (the webhook dispatcher's) when another node queues
    /// deliveries or settles an attempt. Set once.
    pub fn set_webhook_signal(&self, signal: Arc<tokio::sync::Notify>) {
        let _ = self.webhook_signal.set(signal);
    }

    /// Wait for run `run_id` wherever it executes, at most `timeout`:
    /// `Ok(None)` if the cluster knows no run with this id,
    /// `Ok(Some(None))` on timeout, else its result. Woken by the run's
    /// terminal event reaching this node (and every `poll_ms`).
    pub async fn wait_run(
        &self,
        run_id: &str,
        timeout: Duration,
    ) -> Result<Option<Option<RunResult>>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ended = self.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let Some(run) = self.store.cluster_run(run_id)? else {
                return Ok(None);
            };
            if let Some(r) = run_result(&run) {
                return Ok(Some(Some(r)));
            }
            tokio::select! {
                _ = &mut ended => {}
                _ = tokio::time::sleep(self.poll()) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Some(None)),
            }
        }
    }

    /// Wait (at most `bound`) until every event this node published so
    /// far is written to the log and fanned out to this node's own
    /// connections; whether it was. The shutdown calls it before closing
    /// the sockets, so a client sees the events of the runs the shutdown
    /// ended (as a single node does) instead of a close before them.
    pub async fn fanned_out(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // `written_upto` is set before `pending` drops for a batch.
            if self.pending() == 0
                && *lock(&self.delivered) >= self.written_upto.load(Ordering::Acquire)
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Add `conn` to the hub; with `resume_after`, first queue it the
    /// logged events after that cursor up to what this node has fanned
    /// out, under the fan-out lock, so the connection then gets every
    /// later event live: nothing is missed or repeated. A failed read of
    /// the log is logged and the connection joins live only.
    pub fn join(&self, gw: &Gateway, conn: Arc<Conn>, resume_after: Option<i64>) {
        let delivered = lock(&self.delivered);
        if let Some(after) = resume_after {
            let upto = *delivered;
            let mut from = after;
            let mut replayed = 0usize;
            'read: while from < upto {
                let rows = match self.store.stream_after(from, 1000) {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(conn = %conn.id, after, error = %e, "reading the cluster log to resume");
                        break;
                    }
                };
                if rows.is_empty() {
                    break;
                }
                for r in rows {
                    if r.id > upto {
                        break 'read;
                    }
                    from = r.id;
                    if let Some(b) = wire::from_row(&r.event) {
                        gw.hub.replay(&conn, &b, r.id);
                        replayed += 1;
                    }
                }
            }
            tracing::debug!(conn = %conn.id, after, upto, replayed, "connection resumed");
        }
        gw.hub.add(conn);
        drop(delivered);
    }

    /// Claim run `run_id` cluster-wide before starting it: `Ok(None)` if
    /// this node now owns it, else the run that has the key.
    pub fn claim(&self, run_id: &str, session_key: &str) -> Result<Option<ClusterRun>, StoreError> {
        match self.store.claim_run(run_id, session_key, &self.node_id)? {
            Claim::Claimed => {
                lock(&self.claimed).insert(run_id.to_owned());
                Ok(None)
            }
            Claim::Existing(run) => Ok(Some(run)),
        }
    }

    /// Give a claim back (its run never started).
    pub fn release(&self, run_id: &str) {
        lock(&self.claimed).remove(run_id);
        if let Err(e) = self.store.release_run(run_id, &self.node_id) {
            tracing::warn!(run_id, error = %e, "releasing a run claim");
        }
    }

    /// A run ended here: if it was claimed cluster-wide, record its result
    /// (before its end events go out, so a client that saw the final event
    /// and repeats the key gets the result, not `in_flight`). `false` when
    /// the other nodes already ended it (this node was cut off past the
    /// node timeout): its end events must not go out a second time.
    pub fn run_finished(&self, r: &RunResult) -> bool {
        if !lock(&self.claimed).remove(&r.run_id) {
            return true;
        }
        let result = json!({
            "status": r.status, "error": r.error, "text": r.text,
            "startedAt": r.started_at, "endedAt": r.ended_at,
        })
        .to_string();
        match self
            .store
            .finish_run(&r.run_id, &self.node_id, r.status, &result)
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(run_id = %r.run_id, "the cluster already ended this run as lost; its end is not published again");
                false
            }
            Err(e) => {
                tracing::warn!(run_id = %r.run_id, error = %e, "recording a run's end cluster-wide");
                true
            }
        }
    }

    /// Ask the nodes running runs of `session_key` (only `run_id` if
    /// given) to abort them; the runs asked (a `run_id` of another session
    /// comes back with that session, for the caller to refuse).
    pub fn abort_remote(
        &self,
        session_key: &str,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Vec<ClusterRun>, StoreError> {
        self.store.request_abort(session_key, run_id, reason)
    }

    /// Presence entries of the live nodes (as of the last heartbeat).
    pub fn presence(&self) -> Vec<Value> {
        lock(&self.nodes)
            .iter()
            .map(|n| {
                json!({
                    "host": n.name,
                    "ip": n.address,
                    "version": super::VERSION,
                    "mode": "gateway",
                    "reason": "cluster",
                    "instanceId": n.node_id,
                    "text": format!("gateway node {} ({})", n.name, n.node_id),
                    "ts": n.last_seen_ms,
                })
            })
            .collect()
    }

    /// The cluster as `channels.status` shows it: this node and every live
    /// node with its channels' states.
    pub fn status(&self) -> Value {
        let nodes: Vec<Value> = lock(&self.nodes)
            .iter()
            .map(|n| {
                json!({
                    "nodeId": n.node_id,
                    "name": n.name,
                    "address": n.address,
                    "startedAt": n.started_ms,
                    "lastSeenAt": n.last_seen_ms,
                    "self": n.node_id == self.node_id,
                    "channels": serde_json::from_str::<Value>(&n.channels).unwrap_or(Value::Null),
                })
            })
            .collect();
        json!({"nodeId": self.node_id, "nodeName": self.node_name, "nodes": nodes})
    }

    /// Stop: publish nothing more, write what is queued (bounded), leave
    /// the cluster (the row goes, so presence drops this node at once),
    /// and end the threads. Blocks; call it off the async workers.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // The writer drains what is queued, then ends.
        drop(lock(&self.writer).take());
        self.written.send_modify(|_| {});
        let _ = lock(&self.wake).send(crate::store::Wake::Connected);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        if let Err(e) = self.store.remove_node(&self.node_id) {
            tracing::warn!(error = %e, "leaving the cluster");
        }
        tracing::info!(node_id = %self.node_id, "left the cluster");
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.config.poll_ms.max(10))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;

    #[test]
    fn cluster_settings_have_safe_defaults_and_live_under_gateway() -> anyhow::Result<()> {
        let none: FileConfig = toml::from_str("")?;
        let c = &none.gateway.cluster;
        assert_eq!(c.node_name, None);
        assert_eq!(
            (c.heartbeat_ms, c.node_timeout_ms, c.poll_ms),
            (2_000, 10_000, 1_000)
        );
        assert!(c.node_timeout_ms > 2 * c.heartbeat_ms);
        let set: FileConfig =
            toml::from_str("[gateway.cluster]\nnode_name = \"east-1\"\nnode_timeout_ms = 30000")?;
        assert_eq!(set.gateway.cluster.node_name.as_deref(), Some("east-1"));
        assert_eq!(set.gateway.cluster.node_timeout_ms, 30_000);
        let bad = toml::from_str::<FileConfig>("[gateway.cluster]\nnode_nam = \"x\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("node_nam"), "{bad}");
        assert!(!super::host_name().is_empty());
        Ok(())
    }
}
