//! The cluster's background work: the writer thread (batched appends to
//! the stream log), the listener thread (wake-ups on a dedicated
//! connection, reconnecting with backoff), the tail thread (reads the log
//! after the node's cursor and fans events out) and the heartbeat task
//! (node row, live nodes, abort requests, runs of lost nodes, pruning).
//!
//! The store calls block, so the first three are plain threads; the
//! heartbeat needs the async health snapshot and calls the store through
//! its own offloading.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cluster, NODE_LOST, lock, wire};
use crate::gateway::Gateway;
use crate::gateway::hub::{Audience, Broadcast};
use crate::gateway::now_ms;
use crate::protocol::scopes;
use crate::store::{ClusterRun, NewStreamEvent, Wake};

/// Most events in one append.
const MAX_BATCH: usize = 1_000;
/// Most events read from the log at once.
const READ_BATCH: usize = 500;
/// Longest wait between retries of a failed append or listener connect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Appends retried this often after stop before the rest is given up.
const STOP_RETRIES: u32 = 5;
/// Heartbeats between prunes of the log.
const PRUNE_EVERY: u64 = 30;

/// Start the writer, listener and tail threads.
pub(super) fn spawn_threads(
    cluster: &Arc<Cluster>,
    gw: Weak<Gateway>,
    writer_rx: Receiver<NewStreamEvent>,
    wake_rx: Receiver<Wake>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| tracing::error!(thread = name, error = %e, "starting a cluster thread"))
            .ok()
    };
    let c = cluster.clone();
    threads.extend(spawn(
        "cluster-writer",
        Box::new(move || writer_loop(&c, writer_rx)),
    ));
    let c = cluster.clone();
    threads.extend(spawn("cluster-listen", Box::new(move || listen_loop(&c))));
    let c = cluster.clone();
    threads.extend(spawn(
        "cluster-tail",
        Box::new(move || tail_loop(&c, gw, wake_rx)),
    ));
    threads
}

/// Append queued events in batches until the queue is closed and drained.
fn writer_loop(cluster: &Cluster, rx: Receiver<NewStreamEvent>) {
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0u32;
        loop {
            match cluster.store.append_stream(&batch) {
                Ok(last) => {
                    cluster.written_upto.fetch_max(last, Ordering::Release);
                    cluster.stats.batches.fetch_add(1, Ordering::Relaxed);
                    cluster
                        .stats
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    // The local tail need not wait for the NOTIFY round trip.
                    let _ = lock(&cluster.wake).send(Wake::Events(last));
                    break;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, events = batch.len(), "writing cluster events failed; retrying");
                    }
                    if cluster.stopping() && failures >= STOP_RETRIES {
                        tracing::error!(error = %e, events = batch.len(), "cluster events not written at shutdown");
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        cluster.pending.fetch_sub(batch.len(), Ordering::Relaxed);
        let n = batch.len() as u64;
        cluster.written.send_modify(|w| *w += n);
    }
}

/// Keep a listener connection and forward its wake-ups to the tail.
fn listen_loop(cluster: &Cluster) {
    let mut backoff = Duration::from_millis(100);
    let mut down = false;
    while !cluster.stopping() {
        let mut listener = match cluster.store.listen() {
            Ok(l) => l,
            Err(e) => {
                if !down {
                    tracing::warn!(error = %e, "cluster wake-ups unavailable; polling the log meanwhile");
                    down = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if down {
            tracing::info!("cluster wake-ups restored");
            down = false;
        }
        backoff = Duration::from_millis(100);
        // Anything committed while no listener was up is read now.
        if lock(&cluster.wake).send(Wake::Connected).is_err() {
            return;
        }
        while !cluster.stopping() {
            match listener.next(Duration::from_millis(500)) {
                Ok(Some(w)) => {
                    if lock(&cluster.wake).send(w).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener lost; reconnecting");
                    down = true;
                    break;
                }
            }
        }
    }
}

/// Read the log after the cursor whenever woken (or every `poll_ms`), and
/// fan the events out; act on abort requests for this node.
fn tail_loop(cluster: &Cluster, gw: Weak<Gateway>, wakes: Receiver<Wake>) {
    while !cluster.stopping() {
        let wake = wakes.recv_timeout(cluster.poll());
        let Some(gw) = gw.upgrade() else { return };
        match wake {
            Ok(Wake::Abort(node)) if node == cluster.node_id => abort_requested(cluster, &gw),
            Ok(Wake::Abort(_)) => {}
            Ok(Wake::Session(_)) => cluster.session_freed.notify_waiters(),
            Ok(Wake::Inbox(channel)) => gw.runtime.channels.wake_inbox(&channel),
            Ok(Wake::Outbox(channel)) => gw.runtime.channels.outbox().wake(&channel),
            Ok(Wake::Webhooks) => wake_webhooks(cluster),
            Ok(Wake::Events(id)) if id <= *lock(&cluster.delivered) => {}
            Ok(Wake::Connected) => {
                // Anything may have been missed while no listener was up.
                cluster.session_freed.notify_waiters();
                gw.runtime.channels.wake_all();
                wake_webhooks(cluster);
                catch_up(cluster, &gw);
            }
            Ok(Wake::Events(_)) | Err(RecvTimeoutError::Timeout) => catch_up(cluster, &gw),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Wake this node's webhook dispatcher.
fn wake_webhooks(cluster: &Cluster) {
    if let Some(signal) = cluster.webhook_signal.get() {
        signal.notify_one();
    }
}

/// Whether `b` is a run's terminal `chat` event.
fn is_run_end(b: &Broadcast) -> bool {
    b.name == "chat"
        && b.payload
            .get("state")
            .and_then(Value::as_str)
            .is_some_and(|s| s != "delta")
}

/// Fan out every logged event after the cursor.
pub(super) fn catch_up(cluster: &Cluster, gw: &Gateway) {
    loop {
        let from = *lock(&cluster.delivered);
        let rows = match cluster.store.stream_after(from, READ_BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "reading the cluster log");
                return;
            }
        };
        let n = rows.len();
        {
            let mut delivered = lock(&cluster.delivered);
            for r in rows {
                if r.id <= *delivered {
                    continue;
                }
                if let Some(b) = wire::from_row(&r.event) {
                    gw.deliver(&b, Some(r.id));
                    cluster.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if is_run_end(&b) {
                        cluster.run_ended.notify_waiters();
                    }
                } else {
                    tracing::debug!(id = r.id, event = %r.event.name, "skipping an unknown cluster event");
                }
                *delivered = r.id;
            }
        }
        if n < READ_BATCH {
            return;
        }
    }
}

/// Abort this node's runs that another node asked to abort.
fn abort_requested(cluster: &Cluster, gw: &Gateway) {
    match cluster.store.abort_requests(&cluster.node_id) {
        Ok(runs) => {
            for (run_id, reason) in runs {
                if gw.runs.abort(&run_id, &reason) {
                    tracing::info!(run_id = %run_id, reason = %reason, "run aborted from another node");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading abort requests"),
    }
}

/// Refresh the node row and what the node knows of the cluster, every
/// `heartbeat_ms`.
pub(super) async fn heartbeat_loop(cluster: Arc<Cluster>, gw: Weak<Gateway>) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(cluster.config.heartbeat_ms.max(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    loop {
        tick.tick().await;
        if cluster.stopping() {
            return;
        }
        let Some(gw) = gw.upgrade() else { return };
        beat(&cluster, &gw).await;
        beats += 1;
        if beats.is_multiple_of(PRUNE_EVERY) {
            let before = now_ms() - cluster.config.event_retention_ms as i64;
            match cluster.store.prune_stream(before) {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "pruned the cluster log"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "pruning the cluster log"),
            }
        }
    }
}

async fn beat(cluster: &Cluster, gw: &Gateway) {
    let channels: Vec<Value> = gw
        .runtime
        .health
        .snapshot()
        .await
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "plugin": c.plugin, "accountId": c.account_id,
                "state": c.state.as_str(), "healthy": c.healthy, "running": c.running,
            })
        })
        .collect();
    let store = &cluster.store;
    let timeout = cluster.config.node_timeout_ms as i64;
    if let Err(e) = store.heartbeat(&cluster.record(channels)) {
        tracing::warn!(error = %e, "cluster heartbeat failed");
        return;
    }
    match store.live_nodes(timeout) {
        Ok(nodes) => {
            let ids = |n: &[crate::store::NodeRecord]| {
                n.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>()
            };
            let changed = {
                let mut known = lock(&cluster.nodes);
                let changed = ids(&known) != ids(&nodes);
                *known = nodes;
                changed
            };
            if changed {
                gw.presence_changed();
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading cluster nodes"),
    }
    abort_requested(cluster, gw);
    // Claims read before the store's list: one taken meanwhile is not
    // mistaken for lost.
    let held = cluster.held_sessions();
    if !held.is_empty() {
        match store.session_claims_of(&cluster.node_id) {
            Ok(in_store) => cluster.claims_lost(gw, held, &in_store),
            Err(e) => tracing::debug!(error = %e, "reading this node's session claims"),
        }
    }
    super::plugins::sync(cluster, gw);
    let result = json!({"status": "error", "error": NODE_LOST, "text": ""}).to_string();
    match store.take_orphans(timeout, &result) {
        Ok(runs) => {
            for run in runs {
                end_orphan(cluster, &run);
            }
        }
        Err(e) => tracing::debug!(error = %e, "checking for runs of lost nodes"),
    }
}

/// End a run whose node is gone: an `agent` lifecycle error and a `chat`
/// error, after its last logged event.
fn end_orphan(cluster: &Cluster, run: &ClusterRun) {
    let seq = cluster.store.last_run_seq(&run.run_id).unwrap_or(0) + 1;
    tracing::warn!(run_id = %run.run_id, node = %run.node_id, "ending a run of a lost node");
    let now = now_ms();
    let lifecycle = Broadcast {
        name: "agent",
        payload: json!({
            "runId": run.run_id, "seq": seq, "stream": "lifecycle", "ts": now,
            "data": {"phase": "error", "endedAt": now, "error": NODE_LOST},
            "sessionKey": run.session_key,
        }),
        scope: Some(scopes::READ),
        droppable: false,
        audience: Audience::All,
        state_version: None,
    };
    let chat = Broadcast {
        name: "chat",
        payload: json!({
            "runId": run.run_id, "sessionKey": run.session_key, "seq": seq,
            "state": "error", "errorMessage": NODE_LOST, "errorKind": "unknown",
        }),
        ..lifecycle.clone()
    };
    cluster.publish(&lifecycle);
    cluster.publish(&chat);
}
