//! Host-managed WebSocket sessions and timers of socket channels
//! (`pincer:socket@0.1.0`, `wit/socket/socket.wit`).
//!
//! Sessions and timers belong to a channel **account** ([`AccountSockets`],
//! one per channel key, kept by the [`Hub`] for the life of the process),
//! not to a plugin instance: they survive an instance restart and a hot
//! reload, and end (close 1001) when the account is stopped or removed and
//! at shutdown. The policy checks of `open`/`set` run in the guest's call
//! (`crate::plugins::host::socket`); this module owns the sockets
//! ([`session`]), the timers ([`timers`]) and the delivery of what they
//! observe: one task per account takes the events of all its sessions and
//! timers in order and hands each, one at a time, to the plugin's
//! `handle-webhook` through the same path as a verified push ([`EventSink`],
//! the channel manager), so returned messages are committed to the durable
//! inbox before the next event is delivered.

mod session;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::plugins::bindings::{WebhookRequest, WitError};
use crate::plugins::host::socket::{Dial, SessionInfo, SocketControl, SocketHub};

pub use session::SessionStatus;
use session::{Command, Session};

/// The `verified` value of every socket event (see the WIT header).
pub const VERIFIED: &str = "socket";
/// Events waiting for delivery per account before session readers wait.
const QUEUE: usize = 256;
/// Longest wait for a session to finish its closing handshake when the
/// account ends.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What became of one event handed to the [`EventSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handled (or refused by the guest: logged, not retried).
    Done,
    /// Could not be handled now (store error, plugin busy or reloading):
    /// try again.
    Retry,
    /// The guest ran out of time (wall clock or CPU) on it, which a loaded
    /// machine can cause, or answered `transient`/`rate-limited`: try again
    /// a few times
    /// ([`TIMEOUT_RETRIES`]) before giving up on the event. Dropping it at
    /// once would lose its messages for good, since the plugin has already
    /// seen the event (Discord's resume point moves past it).
    RetryTimedOut,
    /// The account does not take events (stopped, gone): drop it.
    Drop,
}

/// How often an event the guest ran out of time on is handed over again.
pub const TIMEOUT_RETRIES: u32 = 5;

/// Where socket events go: the channel manager hands them to the
/// account's plugin like a verified push.
pub trait EventSink: Send + Sync {
    /// Deliver `request` to channel key `key`.
    fn deliver<'a>(&'a self, key: &'a str, request: WebhookRequest) -> BoxFuture<'a, Delivery>;
    /// How long account `key` keeps its plugin instance after an event
    /// (`SocketLimits::idle_instance_ms`; `None`: it keeps it).
    fn keep_instance(&self, key: &str) -> Option<Duration>;
    /// Account `key` had no event for [`keep_instance`](Self::keep_instance)
    /// after its last one: drop its idle instances (the next event gets a
    /// fresh one).
    fn quiet(&self, key: &str);
}

/// What to do with an event whose delivery failed with `error`: a guest
/// error or trap is done with (logged by the caller), a stopped channel
/// drops it, anything that may pass later (store, busy, reloading) is
/// retried, and a timeout or a guest's temporary error is retried a few
/// times.
pub fn classify(runner: &super::ChannelRunner, error: &super::ChannelError) -> Delivery {
    use super::{ChannelError, ChannelState};
    use crate::plugins::{CallError, PluginError};
    match error {
        ChannelError::Call { error, .. } => match error {
            CallError::Busy { .. } | CallError::NotLoaded(_) | CallError::Instantiate(_) => {
                Delivery::Retry
            }
            // Out of time (a loaded machine), or a failure the guest itself
            // calls temporary: a few more tries (see `RetryTimedOut`).
            CallError::Timeout { .. }
            | CallError::CpuLimit { .. }
            | CallError::Plugin {
                error: PluginError::Transient { .. } | PluginError::RateLimited { .. },
                ..
            } => Delivery::RetryTimedOut,
            _ => Delivery::Done,
        },
        ChannelError::Store { .. } => Delivery::Retry,
        ChannelError::Unavailable(_) | ChannelError::Unknown(_) => match runner.status().state {
            ChannelState::Stopped | ChannelState::Unconfigured => Delivery::Drop,
            _ => Delivery::Retry,
        },
        ChannelError::Rejected { .. } | ChannelError::Unconfigured { .. } => Delivery::Drop,
    }
}

/// Process-wide counters for `/metrics`.
#[derive(Default)]
struct Stats {
    /// Closes by code.
    closes: Mutex<BTreeMap<u16, u64>>,
}

struct Shared {
    sink: OnceLock<Weak<dyn EventSink>>,
    clock: SharedClock,
    stats: Stats,
}

impl Shared {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Every account's sockets.
pub struct Hub {
    shared: Arc<Shared>,
    accounts: Mutex<HashMap<String, Arc<AccountSockets>>>,
}

impl Hub {
    /// A hub dating frames by `clock`.
    pub fn new(clock: SharedClock) -> Arc<Self> {
        Arc::new(Hub {
            shared: Arc::new(Shared {
                sink: OnceLock::new(),
                clock,
                stats: Stats::default(),
            }),
            accounts: Mutex::new(HashMap::new()),
        })
    }

    /// Deliver events to `sink` from now on (once).
    pub fn set_sink(&self, sink: Weak<dyn EventSink>) {
        let _ = self.shared.sink.set(sink);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AccountSockets>>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sockets of channel key `key` (created on first use).
    pub fn get(&self, key: &str) -> Arc<AccountSockets> {
        self.lock()
            .entry(key.to_string())
            .or_insert_with(|| AccountSockets::new(key, self.shared.clone()))
            .clone()
    }

    /// Close every session of every account (1001) and cancel every
    /// timer: the gateway is shutting down.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<AccountSockets>> = self.lock().values().cloned().collect();
        futures::future::join_all(all.iter().map(|a| a.end())).await;
    }

    /// Closes so far, by code (for `/metrics`).
    pub fn closes_by_code(&self) -> BTreeMap<u16, u64> {
        self.shared
            .stats
            .closes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl SocketHub for Hub {
    fn account(&self, key: &str) -> Arc<dyn SocketControl> {
        self.get(key)
    }
}

/// One event for the account's delivery task.
struct Event {
    /// The account generation it was produced in (events of an ended
    /// generation are dropped).
    generation: u64,
    /// The timer that fired (name, id, one-shot): a firing of a timer
    /// cancelled or replaced since is dropped; a one-shot one is forgotten
    /// once delivered.
    timer: Option<(String, u64, bool)>,
    /// What to hand the plugin (`None`: a nudge, see
    /// [`AccountSockets::nudge`]). Boxed: the queue's blocks hold 32
    /// events each, a few KiB per account less.
    request: Option<Box<WebhookRequest>>,
}

struct Inner {
    sessions: HashMap<String, Arc<Session>>,
    timers: HashMap<String, timers::Timer>,
    /// How often each session name was opened (reconnects = opens - 1).
    opens: HashMap<String, u64>,
    /// Bumped when the account ends: older events are dropped.
    generation: u64,
    next_id: u64,
    delivery: Option<JoinHandle<()>>,
    receiver: Option<mpsc::Receiver<Event>>,
}

/// The sessions and timers of one channel account.
pub struct AccountSockets {
    key: Arc<str>,
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
    events: mpsc::Sender<Event>,
    /// Unix ms of the last frame any session of the account received.
    last_frame_at: AtomicU64,
    /// Itself, for the tasks it spawns.
    me: Weak<AccountSockets>,
    /// Frames received and sent by all its sessions ever (for `/metrics`).
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    /// Whether this node may open sessions for the account (cluster mode:
    /// only the holder of its lease; always with one node).
    may_open: std::sync::atomic::AtomicBool,
}

impl AccountSockets {
    fn new(key: &str, shared: Arc<Shared>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        Arc::new_cyclic(|me| AccountSockets {
            me: me.clone(),
            key: Arc::from(key),
            shared,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                timers: HashMap::new(),
                opens: HashMap::new(),
                generation: 0,
                next_id: 0,
                delivery: None,
                receiver: Some(rx),
            }),
            events: tx,
            last_frame_at: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            may_open: std::sync::atomic::AtomicBool::new(true),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Let the account open sessions (this node holds its lease) or
    /// refuse every `open` (another node is the account's receiver; its
    /// plugin's opens fail with a clear error until the lease is won).
    pub fn set_may_open(&self, may: bool) {
        self.may_open.store(may, Ordering::Relaxed);
    }

    /// The channel key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Unix ms of the last frame any of the account's sessions received
    /// (pings and heartbeat ACKs included; 0: none yet): part of the
    /// channel's liveness.
    pub fn last_frame_at(&self) -> u64 {
        self.last_frame_at.load(Ordering::Relaxed)
    }

    fn saw_frame(&self, at: u64) {
        self.last_frame_at.fetch_max(at, Ordering::Relaxed);
    }

    /// The account's sessions now, by name.
    pub fn sessions(&self) -> Vec<SessionStatus> {
        let inner = self.lock();
        let mut out: Vec<SessionStatus> = inner
            .sessions
            .values()
            .map(|s| {
                let opens = inner.opens.get(&s.name).copied().unwrap_or(1);
                s.status(opens.saturating_sub(1))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Timers set now.
    pub fn timer_count(&self) -> usize {
        self.lock().timers.len()
    }

    /// Close every session (1001 "going away") and cancel every timer;
    /// events not yet delivered are dropped. Waits (bounded) for the
    /// closing handshakes.
    pub async fn end(&self) {
        let (sessions, timers) = {
            let mut inner = self.lock();
            inner.generation += 1;
            (
                inner.sessions.drain().map(|(_, s)| s).collect::<Vec<_>>(),
                inner.timers.drain().map(|(_, t)| t).collect::<Vec<_>>(),
            )
        };
        drop(timers);
        if sessions.is_empty() {
            return;
        }
        tracing::info!(channel = %self.key, sessions = sessions.len(), "closing the account's sockets (1001 going away)");
        for s in &sessions {
            s.command(Command::Close(1001, "going away".into()));
        }
        for s in sessions {
            s.join(CLOSE_WAIT).await;
        }
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Queue a session's event for delivery (waits while the queue is full).
    async fn emit(&self, generation: u64, request: WebhookRequest) {
        self.queue(Event {
            generation,
            timer: None,
            request: Some(Box::new(request)),
        })
        .await
    }

    /// A call outside the account's event order (a send, an edit, typing)
    /// used an instance, which the account then keeps: count its quiet
    /// period (`idle_instance_ms`) from now, so that instance is dropped
    /// too once the account is quiet. Only for an account with a delivery
    /// task (one that opened a session or set a timer); never waits.
    pub fn nudge(&self) {
        if self.lock().delivery.is_none() {
            return;
        }
        // A full queue has events that count the quiet period anyway.
        let _ = self.events.try_send(Event {
            generation: 0,
            timer: None,
            request: None,
        });
    }

    async fn queue(&self, event: Event) {
        if self.events.send(event).await.is_err() {
            tracing::warn!(channel = %self.key, "socket event dropped: the delivery queue is gone");
        }
    }

    fn record_close(&self, code: u16) {
        *self
            .shared
            .stats
            .closes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Start the delivery task if it is not running.
    fn ensure_delivery(self: &Arc<Self>, inner: &mut Inner) {
        if inner.delivery.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Some(rx) = inner.receiver.take() else {
            return;
        };
        inner.delivery = Some(tokio::spawn(deliver(Arc::downgrade(self), rx)));
    }

    /// Forget session `id` named `name` (it ended).
    fn remove_session(&self, name: &str, id: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(name).is_some_and(|s| s.id == id) {
            inner.sessions.remove(name);
        }
    }

    /// Whether timer `id` named `name` is still set.
    fn timer_live(&self, name: &str, id: u64) -> bool {
        self.lock().timers.get(name).is_some_and(|t| t.id == id)
    }

    /// Forget one-shot timer `id` named `name` (it fired).
    fn remove_timer(&self, name: &str, id: u64) {
        let mut inner = self.lock();
        if inner.timers.get(name).is_some_and(|t| t.id == id)
            && let Some(timer) = inner.timers.remove(name)
        {
            timer.detach();
        }
    }
}

fn permanent(message: String) -> WitError {
    WitError::Permanent(message)
}

/// The account's [`SocketControl`]; `self` must be reached through its
/// `Arc` (sessions and timers hold one).
impl SocketControl for AccountSockets {
    fn open(&self, dial: Dial) -> Result<(), WitError> {
        if !self.may_open.load(Ordering::Relaxed) {
            return Err(WitError::Transient(format!(
                "session `{}`: another node of the cluster holds this account's lease",
                dial.name
            )));
        }
        let me = self.arc();
        let mut inner = self.lock();
        if let Some(existing) = inner.sessions.get(&dial.name) {
            if existing.url == dial.url {
                return Ok(());
            }
            return Err(permanent(format!(
                "session `{}` is open with another URL; close it first (or open a second name)",
                dial.name
            )));
        }
        let max = dial.frames.limits.max_sessions as usize;
        if inner.sessions.len() >= max {
            return Err(permanent(format!(
                "session `{}`: the account has {max} sessions already (the most allowed)",
                dial.name
            )));
        }
        me.ensure_delivery(&mut inner);
        inner.next_id += 1;
        let id = inner.next_id;
        *inner.opens.entry(dial.name.clone()).or_default() += 1;
        let generation = inner.generation;
        let session = Session::spawn(me.clone(), id, generation, dial);
        inner.sessions.insert(session.name.clone(), session);
        Ok(())
    }

    fn send_text(&self, name: &str, text: String) -> Result<(), WitError> {
        let session = self.lock().sessions.get(name).cloned();
        match session {
            Some(s) => s.send_text(text),
            None => Err(WitError::Transient(format!("session `{name}` is not open"))),
        }
    }

    fn close(&self, name: &str, code: u16, reason: String) {
        if let Some(s) = self.lock().sessions.get(name) {
            s.command(Command::Close(code, reason));
        }
    }

    fn info(&self, name: &str) -> Option<SessionInfo> {
        self.lock().sessions.get(name).map(|s| s.info())
    }

    fn set_timer(&self, name: &str, delay: Duration, repeat: Option<Duration>) {
        let me = self.arc();
        let mut inner = self.lock();
        me.ensure_delivery(&mut inner);
        inner.next_id += 1;
        let id = inner.next_id;
        let generation = inner.generation;
        let timer =
            timers::Timer::spawn(me.clone(), name.to_string(), id, generation, delay, repeat);
        // Replacing drops (and so cancels) the old one.
        inner.timers.insert(name.to_string(), timer);
    }

    fn cancel_timer(&self, name: &str) {
        self.lock().timers.remove(name);
    }

    fn timers(&self) -> usize {
        self.lock().timers.len()
    }

    fn has_timer(&self, name: &str) -> bool {
        self.lock().timers.contains_key(name)
    }
}

impl AccountSockets {
    /// This account's `Arc` (every account is made by [`Hub::get`] and kept
    /// in its map, so one exists while `&self` does).
    fn arc(&self) -> Arc<AccountSockets> {
        match self.me.upgrade() {
            Some(me) => me,
            // Unreachable: `&self` borrows from a live `Arc`.
            None => unreachable!("an account is always reached through its Arc"),
        }
    }
}

/// The account's delivery task: events in order, one at a time; a failed
/// delivery that may succeed later is retried with backoff (until the
/// account ends), a guest error is logged and skipped. Once no event came
/// for the account's `idle_instance_ms` after the last one, the sink is
/// told the account is quiet (it drops the idle instance).
async fn deliver(account: Weak<AccountSockets>, mut rx: mpsc::Receiver<Event>) {
    // Set after a delivery: how long to wait for the next event before
    // the account counts as quiet.
    let mut quiet_after: Option<Duration> = None;
    loop {
        let next = match quiet_after.take() {
            None => rx.recv().await,
            Some(wait) => match tokio::time::timeout(wait, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let Some(acct) = account.upgrade() else {
                        return;
                    };
                    if let Some(sink) = acct.shared.sink.get().and_then(Weak::upgrade) {
                        sink.quiet(&acct.key);
                    }
                    continue;
                }
            },
        };
        let Some(event) = next else {
            return;
        };
        let Some(acct) = account.upgrade() else {
            return;
        };
        if let Some(sink) = acct.shared.sink.get().and_then(Weak::upgrade) {
            quiet_after = sink.keep_instance(&acct.key);
        }
        let Some(request) = event.request else {
            // A nudge: only the quiet period starts again.
            continue;
        };
        let mut backoff = Duration::from_millis(50);
        let mut timeouts = 0u32;
        loop {
            if event.generation != acct.generation() {
                break;
            }
            if let Some((name, id, _)) = &event.timer
                && !acct.timer_live(name, *id)
            {
                break;
            }
            let Some(sink) = acct.shared.sink.get().and_then(Weak::upgrade) else {
                break;
            };
            match sink.deliver(&acct.key, (*request).clone()).await {
                Delivery::Done | Delivery::Drop => {
                    if let Some((name, id, true)) = &event.timer {
                        acct.remove_timer(name, *id);
                    }
                    break;
                }
                Delivery::Retry => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Delivery::RetryTimedOut if timeouts < TIMEOUT_RETRIES => {
                    timeouts += 1;
                    tracing::warn!(channel = %acct.key, method = %request.method, attempt = timeouts, "the plugin ran out of time on a socket event; handing it over again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Delivery::RetryTimedOut => {
                    tracing::error!(channel = %acct.key, method = %request.method, attempts = timeouts + 1, "the plugin ran out of time on a socket event every time; event dropped");
                    if let Some((name, id, true)) = &event.timer {
                        acct.remove_timer(name, *id);
                    }
                    break;
                }
            }
        }
    }
}

/// Socket metrics of one account, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SocketTotals {
    /// Sessions connecting, open or closing now.
    pub sessions: u64,
    /// Frames its sessions received, ever.
    pub frames_in: u64,
    /// Frames its sessions sent, ever.
    pub frames_out: u64,
}

impl AccountSockets {
    /// Sessions now and frames ever.
    pub fn totals(&self) -> SocketTotals {
        SocketTotals {
            sessions: self.lock().sessions.len() as u64,
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
        }
    }
}
