//! The connection hub: every live operator connection, its outgoing queue,
//! and event fan-out with scope guards, subscriptions and slow-consumer
//! handling.
//!
//! Each connection has an unbounded queue drained by its own writer task;
//! the hub accounts the queued bytes. Past `max_buffered_bytes`, droppable
//! events (chat deltas, presence, session events) are skipped and any
//! other event marks the connection a slow consumer: it is removed at once
//! and its writer closes it with 1008. A slow socket therefore never slows
//! the broadcaster or anyone else. Responses count against the same
//! budget: a response that would take a connection past it is not queued
//! and the connection is closed with 1008 at once (a client firing
//! requests without reading cannot make the gateway hold their answers).
//! The writer stamps the per-connection `seq` as it sends, so dropped
//! events never leave a gap.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::out_queue::{OutQueue, Receiver};
use crate::protocol::frames::StateVersion;
use crate::protocol::scopes;

/// Something queued for a connection's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A pre-serialized response frame.
    Response(String),
    /// An event; the writer adds `seq`.
    Event {
        /// Event name.
        name: Arc<str>,
        /// Pre-serialized payload JSON (shared across connections).
        payload: Arc<str>,
        /// State counters, for presence/health events.
        state_version: Option<StateVersion>,
        /// The cluster log id of a logged event, for a connection that
        /// asked for cursors (`event-cursor`).
        cursor: Option<i64>,
    },
    /// A WebSocket Ping carrying barrier `id` (see [`super::ping_barrier`]):
    /// sent after everything queued before it.
    Ping(u64),
}

impl Outgoing {
    /// The frame text; events take the next of the connection's `seq`.
    pub fn render(&self, seq: &mut u64) -> String {
        match self {
            Outgoing::Response(t) => t.clone(),
            Outgoing::Ping(_) => String::new(),
            Outgoing::Event {
                name,
                payload,
                state_version,
                cursor,
            } => {
                *seq += 1;
                event_text(name, payload, *seq, *state_version, *cursor)
            }
        }
    }

    fn cost(&self) -> usize {
        match self {
            Outgoing::Response(s) => s.len(),
            Outgoing::Ping(_) => 0,
            Outgoing::Event { name, payload, .. } => payload.len() + name.len() + 64,
        }
    }
}

/// Who an event goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    /// Every operator connection allowed by the scope guard.
    All,
    /// Connections that advertised the `tool-events` capability.
    ToolEvents,
    /// Connections that called `sessions.subscribe`.
    SessionSubscribers,
    /// Connections subscribed to this session's messages.
    MessageSubscribers(String),
}

/// One event to fan out.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Event name.
    pub name: &'static str,
    /// Payload.
    pub payload: Value,
    /// Scope needed to receive it.
    pub scope: Option<&'static str>,
    /// Skipped for slow consumers rather than closing them.
    pub droppable: bool,
    /// Recipients.
    pub audience: Audience,
    /// State counters to attach.
    pub state_version: Option<StateVersion>,
}

/// Outgoing-queue accounting shared by every connection (on `/metrics`).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Bytes queued and not yet written, all connections together.
    pub buffered: AtomicUsize,
    /// The most bytes any one connection has had queued.
    pub buffered_high_water: AtomicUsize,
    /// Connections closed (1008) because a response did not fit the budget.
    pub response_overflows: AtomicU64,
    /// Heavy requests in flight, all connections together.
    pub inflight: AtomicUsize,
    /// The most heavy requests any one connection has had in flight.
    pub inflight_high_water: AtomicUsize,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Outgoing bytes that may be queued (`max_buffered_bytes`).
    pub max_buffered: usize,
    /// Heavy requests that may run at once (`max_inflight_requests`).
    pub max_inflight: usize,
}

/// The writer's end of a connection's outgoing queue.
pub type ConnReceiver = Receiver<Conn>;

impl AsRef<OutQueue> for Conn {
    fn as_ref(&self) -> &OutQueue {
        &self.queue
    }
}

/// A live connection as the hub sees it.
#[derive(Debug)]
pub struct Conn {
    /// Connection id (`hello-ok.server.connId`).
    pub id: String,
    /// Negotiated protocol.
    pub protocol: u32,
    /// `operator` or `node`.
    pub role: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Advertised `tool-events`.
    pub tool_events: bool,
    /// Presence entry (None for CLI clients, which are not shown).
    pub presence: Option<Value>,
    /// Remote address.
    pub remote: std::net::SocketAddr,
    sessions_subscribed: AtomicBool,
    message_subs: Mutex<HashSet<String>>,
    queue: OutQueue,
    buffered: AtomicUsize,
    max_buffered: usize,
    stats: Arc<QueueStats>,
    /// Permits for heavy requests (see [`ConnLimits::max_inflight`]).
    pub inflight: Arc<tokio::sync::Semaphore>,
    max_inflight: usize,
    /// Cancelled when the connection must close (slow consumer, shutdown).
    pub kill: CancellationToken,
    /// `agent` requests in flight: request id → run id (for v4 `cancel`).
    pub pending_runs: Mutex<HashMap<String, String>>,
    kill_reason: Mutex<Option<(u16, String)>>,
    /// Events sent (the writer's `seq`).
    pub seq: AtomicU64,
    /// Whether logged (cluster) events carry their `cursor` to this
    /// connection.
    cursors: AtomicBool,
    /// Ping barriers waiting for their Pong.
    barriers: super::ping_barrier::PingBarriers,
}

impl Conn {
    /// A connection and the receiving end of its queue.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        protocol: u32,
        role: String,
        scopes: Vec<String>,
        tool_events: bool,
        presence: Option<Value>,
        remote: std::net::SocketAddr,
        limits: ConnLimits,
        stats: Arc<QueueStats>,
    ) -> (Arc<Conn>, ConnReceiver) {
        let max_inflight = limits.max_inflight.max(1);
        let conn = Arc::new(Conn {
            id,
            protocol,
            role,
            scopes,
            tool_events,
            presence,
            remote,
            sessions_subscribed: AtomicBool::new(false),
            message_subs: Mutex::new(HashSet::new()),
            queue: OutQueue::default(),
            buffered: AtomicUsize::new(0),
            max_buffered: limits.max_buffered,
            stats,
            inflight: Arc::new(tokio::sync::Semaphore::new(max_inflight)),
            max_inflight,
            kill: CancellationToken::new(),
            pending_runs: Mutex::new(HashMap::new()),
            kill_reason: Mutex::new(None),
            seq: AtomicU64::new(0),
            cursors: AtomicBool::new(false),
            barriers: Default::default(),
        });
        let rx = Receiver::new(conn.clone());
        (conn, rx)
    }

    /// Queue a Ping after everything queued so far (a response just given
    /// to [`Conn::respond`], say) and fire `done` when the client's Pong to
    /// it arrives: proof that the client has read everything before it.
    /// `done` is dropped unfired when the connection closes first.
    pub fn ping_barrier(&self, done: tokio::sync::oneshot::Sender<()>) {
        let id = self.barriers.register(done);
        if !matches!(self.offer(Outgoing::Ping(id), false), Offer::Queued) {
            self.barriers.forget(id);
        }
    }

    /// A Pong arrived: release the barriers it answers, counted in
    /// `released`.
    pub fn pong(&self, payload: &[u8], released: &AtomicU64) {
        self.barriers.on_pong(payload, released)
    }

    /// Queue a response. It counts toward the buffer budget like an event;
    /// one that does not fit is not queued and the connection is closed
    /// with 1008 (`slow consumer`) at once. Returns whether it was queued.
    pub fn respond(&self, text: String) -> bool {
        match self.offer(Outgoing::Response(text), false) {
            Offer::Queued => true,
            Offer::Dropped => false,
            Offer::Slow => {
                self.stats
                    .response_overflows
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = %self.id, remote = %self.remote, buffered = self.buffered(), "closing slow consumer: responses over the buffer budget");
                self.close(1008, "slow consumer");
                false
            }
        }
    }

    /// Queue an event or response; whether it was queued, dropped or the
    /// connection is now a slow consumer.
    fn offer(&self, item: Outgoing, droppable: bool) -> Offer {
        let cost = item.cost();
        let mut current = self.buffered.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(cost);
            if next > self.max_buffered {
                return if droppable {
                    Offer::Dropped
                } else {
                    Offer::Slow
                };
            }
            match self.buffered.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.stats.buffered.fetch_add(cost, Ordering::Relaxed);
                    self.stats
                        .buffered_high_water
                        .fetch_max(next, Ordering::Relaxed);
                    break;
                }
                Err(actual) => current = actual,
            }
        }
        match self.queue.push(item) {
            Ok(()) => Offer::Queued,
            Err(_) => {
                self.release(cost);
                Offer::Dropped
            }
        }
    }

    fn release(&self, cost: usize) {
        self.buffered.fetch_sub(cost, Ordering::Relaxed);
        self.stats.buffered.fetch_sub(cost, Ordering::Relaxed);
    }

    /// The writer reports `item` written (or discarded at close).
    pub fn written(&self, item: &Outgoing) {
        self.release(item.cost());
    }

    /// Wait for a heavy-request permit (at most
    /// [`ConnLimits::max_inflight`] at once); `None` once the connection is
    /// closing.
    pub async fn heavy_permit(&self) -> Option<HeavyPermit> {
        let permit = tokio::select! {
            _ = self.kill.cancelled() => return None,
            p = self.inflight.clone().acquire_owned() => p.ok()?,
        };
        self.stats.inflight.fetch_add(1, Ordering::Relaxed);
        let in_use = self.max_inflight - self.inflight.available_permits();
        self.stats
            .inflight_high_water
            .fetch_max(in_use, Ordering::Relaxed);
        Some(HeavyPermit {
            _permit: permit,
            stats: self.stats.clone(),
        })
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Ask the writer to close with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let mut r = self.kill_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((code, reason.to_string()));
        }
        drop(r);
        self.kill.cancel();
    }

    /// Why the connection is being closed, if it is.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.kill_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Give logged (cluster) events' `cursor` to this connection (the
    /// `event-cursor` capability).
    pub fn set_cursors(&self, on: bool) {
        self.cursors.store(on, Ordering::Relaxed);
    }

    /// `sessions.subscribe` / `unsubscribe`.
    pub fn set_sessions_subscribed(&self, on: bool) {
        self.sessions_subscribed.store(on, Ordering::Relaxed);
    }

    /// `sessions.messages.subscribe` / `unsubscribe`.
    pub fn set_message_sub(&self, key: &str, on: bool) {
        let mut subs = self.message_subs.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            subs.insert(key.to_string());
        } else {
            subs.remove(key);
        }
    }

    fn wants(&self, b: &Broadcast) -> bool {
        if self.role != "operator" || !scopes::may_receive(b.scope, &self.scopes) {
            return false;
        }
        match &b.audience {
            Audience::All => true,
            Audience::ToolEvents => self.tool_events,
            Audience::SessionSubscribers => self.sessions_subscribed.load(Ordering::Relaxed),
            Audience::MessageSubscribers(key) => self
                .message_subs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key),
        }
    }
}

/// A heavy request's slot; released on drop.
#[derive(Debug)]
pub struct HeavyPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: Arc<QueueStats>,
}

impl Drop for HeavyPermit {
    fn drop(&mut self) {
        self.stats.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whatever is still queued is freed with the queue.
        let left = self.buffered.load(Ordering::Relaxed);
        self.stats.buffered.fetch_sub(left, Ordering::Relaxed);
    }
}

enum Offer {
    Queued,
    Dropped,
    Slow,
}

/// All live connections.
#[derive(Debug, Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// Events dropped for slow consumers.
    pub dropped: AtomicU64,
    /// Connections closed as slow consumers.
    pub slow_closed: AtomicU64,
    /// Outgoing-queue accounting (shared with every [`Conn`]).
    pub queues: Arc<QueueStats>,
}

impl Hub {
    /// Register a connection.
    pub fn add(&self, conn: Arc<Conn>) {
        self.lock().insert(conn.id.clone(), conn);
    }

    /// Remove a connection; whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A snapshot of the connections.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.lock().values().cloned().collect()
    }

    /// Presence entries of the live connections.
    pub fn presence(&self) -> Vec<Value> {
        self.lock()
            .values()
            .filter_map(|c| c.presence.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fan `b` out; returns the connections that became slow consumers
    /// (already removed and told to close).
    pub fn broadcast(&self, b: &Broadcast) -> Vec<Arc<Conn>> {
        self.broadcast_at(b, None)
    }

    /// Queue the logged event `b` (log id `cursor`) to `conn` alone, if it
    /// wants it (a resuming connection's missed events).
    pub fn replay(&self, conn: &Arc<Conn>, b: &Broadcast, cursor: i64) {
        if !conn.wants(b) {
            return;
        }
        let item = Outgoing::Event {
            name: Arc::from(b.name),
            payload: Arc::from(serde_json::to_string(&b.payload).unwrap_or_default()),
            state_version: b.state_version,
            cursor: conn.cursors.load(Ordering::Relaxed).then_some(cursor),
        };
        match conn.offer(item, b.droppable) {
            Offer::Queued => {}
            Offer::Dropped => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Offer::Slow => {
                self.slow_closed.fetch_add(1, Ordering::Relaxed);
                conn.close(1008, "slow consumer");
            }
        }
    }

    /// [`Hub::broadcast`] of an event from the cluster log, whose id
    /// (`cursor`) goes to connections that asked for it.
    pub fn broadcast_at(&self, b: &Broadcast, cursor: Option<i64>) -> Vec<Arc<Conn>> {
        let targets: Vec<Arc<Conn>> = self
            .lock()
            .values()
            .filter(|c| c.wants(b))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let payload: Arc<str> = Arc::from(serde_json::to_string(&b.payload).unwrap_or_default());
        let name: Arc<str> = Arc::from(b.name);
        let mut slow = Vec::new();
        for c in targets {
            let item = Outgoing::Event {
                name: name.clone(),
                payload: payload.clone(),
                state_version: b.state_version,
                cursor: cursor.filter(|_| c.cursors.load(Ordering::Relaxed)),
            };
            match c.offer(item, b.droppable) {
                Offer::Queued => {}
                Offer::Dropped => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Offer::Slow => {
                    self.slow_closed.fetch_add(1, Ordering::Relaxed);
                    self.remove(&c.id);
                    c.close(1008, "slow consumer");
                    slow.push(c);
                }
            }
        }
        slow
    }

    /// Send `name` to one connection (targeted, still seq-stamped).
    pub fn send_to(&self, conn: &Conn, name: &'static str, payload: &Value) {
        let item = Outgoing::Event {
            name: Arc::from(name),
            payload: Arc::from(serde_json::to_string(payload).unwrap_or_default()),
            state_version: None,
            cursor: None,
        };
        if let Offer::Slow = conn.offer(item, false) {
            self.remove(&conn.id);
            conn.close(1008, "slow consumer");
        }
    }
}

/// Serialize an event frame from its parts without re-serializing the
/// payload (fan-out to many connections shares one payload string); a
/// logged event's `cursor` (cluster log id) goes in the envelope.
pub fn event_text(
    name: &str,
    payload: &str,
    seq: u64,
    state_version: Option<StateVersion>,
    cursor: Option<i64>,
) -> String {
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"invalid\"".into());
    let mut s = String::with_capacity(payload.len() + name.len() + 80);
    s.push_str(r#"{"type":"event","event":"#);
    s.push_str(&name);
    s.push_str(r#","payload":"#);
    s.push_str(if payload.is_empty() { "null" } else { payload });
    s.push_str(r#","seq":"#);
    s.push_str(&seq.to_string());
    if let Some(c) = cursor {
        s.push_str(r#","cursor":"#);
        s.push_str(&c.to_string());
    }
    if let Some(sv) = state_version {
        s.push_str(&format!(
            r#","stateVersion":{{"presence":{},"health":{}}}"#,
            sv.presence, sv.health
        ));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_text_is_a_valid_envelope() {
        let t = event_text(
            "tick",
            r#"{"ts":1}"#,
            5,
            Some(StateVersion {
                presence: 1,
                health: 2,
            }),
            None,
        );
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(
            v,
            json!({"type":"event","event":"tick","payload":{"ts":1},"seq":5,"stateVersion":{"presence":1,"health":2}})
        );
    }

    #[test]
    fn responses_count_against_the_budget() {
        let hub = Hub::default();
        let addr = "127.0.0.1:1".parse().unwrap();
        let (c, mut rx) = Conn::new(
            "c".into(),
            4,
            "operator".into(),
            vec![scopes::ADMIN.into()],
            false,
            None,
            addr,
            ConnLimits {
                max_buffered: 1000,
                max_inflight: 1,
            },
            hub.queues.clone(),
        );
        assert!(c.respond("r".repeat(600)));
        assert_eq!(hub.queues.buffered.load(Ordering::Relaxed), 600);
        assert!(!c.respond("r".repeat(600)), "over the budget");
        assert_eq!(c.close_reason(), Some((1008, "slow consumer".into())));
        assert_eq!(hub.queues.response_overflows.load(Ordering::Relaxed), 1);
        assert_eq!(hub.queues.buffered_high_water.load(Ordering::Relaxed), 600);
        let item = rx.try_recv().unwrap();
        c.written(&item);
        assert_eq!(hub.queues.buffered.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn slow_consumer_drops_then_closes() {
        let hub = Hub::default();
        let addr = "127.0.0.1:1".parse().unwrap();
        let (c, _rx) = Conn::new(
            "c".into(),
            4,
            "operator".into(),
            vec![scopes::ADMIN.into()],
            false,
            None,
            addr,
            ConnLimits {
                max_buffered: 1000,
                max_inflight: 2,
            },
            hub.queues.clone(),
        );
        hub.add(c.clone());
        let big = Broadcast {
            name: "chat",
            payload: json!("x".repeat(600)),
            scope: None,
            droppable: true,
            audience: Audience::All,
            state_version: None,
        };
        assert!(hub.broadcast(&big).is_empty());
        assert!(hub.broadcast(&big).is_empty()); // dropped: over budget
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        let must = Broadcast {
            droppable: false,
            ..big
        };
        assert_eq!(hub.broadcast(&must).len(), 1);
        assert_eq!(c.close_reason(), Some((1008, "slow consumer".into())));
        assert!(hub.is_empty());
    }
}
