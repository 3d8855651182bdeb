//! One channel account: its receiver task, its sender pool and its status.

mod ops;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::account::{Account, Bound};
use super::inbox::Inbox;
use super::verify::{self, VerifyStats, WebhookStatus};
use super::{ChannelError, Inbound};
use crate::plugins::bindings::{
    OutboundMessage, ReceiveMode, TextFormat, WebhookRequest, WebhookResponse,
};
use crate::plugins::{
    CallError, Instance, PluginError, PluginRegistry, PluginSettings, PluginVersion,
};
use crate::store::Fence;

/// Most idle sender instances kept per channel. Idle instances hold places
/// in the plugin's instance cap, so the pool keeps at most the cap minus
/// two (one for a poll receiver, one for a call in flight).
const POOL_SIZE: usize = 4;
/// An empty poll that returned sooner than this is followed by a pause
/// of the rest, so a platform answering an empty long poll at once never
/// becomes a busy loop.
const MIN_EMPTY_POLL: Duration = Duration::from_millis(250);
/// An idle sender instance unused this long is dropped by the next
/// [`ChannelRunner::trim_idle`] (the health monitor's check), so a quiet
/// account holds no warm instance (with a thousand accounts, each would
/// hold its own sandbox's memory).
pub const POOL_IDLE_MS: u64 = 120_000;

/// A channel's state, as the health monitor and operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    /// Starting (instantiating and calling `start`).
    Starting,
    /// Running normally.
    Running,
    /// Judged stale or failing, not yet restarted.
    Unhealthy,
    /// Being restarted.
    Restarting,
    /// Start or restart failed; the monitor will try again after its cooldown.
    Failed,
    /// The monitor stopped trying (hourly cap); an operator restart clears it.
    GaveUp,
    /// Stopped by an operator (or not auto-started).
    Stopped,
    /// Secrets the manifest declares are not granted: neither started nor
    /// restarted until they are (config reload or restart).
    Unconfigured,
    /// Cluster mode: another node holds the account's lease and runs its
    /// receiver; this node serves pushes and sends, and takes the lease
    /// over when it runs out.
    Standby,
}

impl ChannelState {
    /// The kebab-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelState::Starting => "starting",
            ChannelState::Running => "running",
            ChannelState::Unhealthy => "unhealthy",
            ChannelState::Restarting => "restarting",
            ChannelState::Failed => "failed",
            ChannelState::GaveUp => "gave-up",
            ChannelState::Stopped => "stopped",
            ChannelState::Unconfigured => "unconfigured",
            ChannelState::Standby => "standby",
        }
    }
}

/// Mutable status of one channel.
#[derive(Debug, Clone)]
pub struct ChannelStatus {
    pub state: ChannelState,
    pub last_error: Option<String>,
    /// Unix ms of the last successful (re)start.
    pub last_start_at: Option<u64>,
    /// Unix ms of recent restarts (for the hourly cap).
    pub restart_times: VecDeque<u64>,
    /// Restarts since the gateway started.
    pub restarts_total: u64,
    /// Consecutive failed polls/starts (reconnect attempts).
    pub reconnect_attempts: u64,
    /// Consecutive checks that found the channel stale or failed.
    pub bad_checks: u32,
    /// Consecutive failed polls (reset by a poll that returns).
    pub poll_errors: u64,
    /// Secrets the manifest declares that are not granted (state `unconfigured`).
    pub missing_secrets: Vec<String>,
}

/// One channel account (the plugin's `default` account, or one of its
/// `accounts`; see [`super::account`]).
pub struct ChannelRunner {
    /// The channel key: the plugin name for `default`, `plugin:account`
    /// otherwise.
    name: String,
    account: Account,
    registry: Arc<PluginRegistry>,
    inbox: Arc<Inbox>,
    /// Wakes this channel's inbox processor after a commit.
    inbox_wake: Arc<Notify>,
    /// Idle sender instances, each with the time it was checked in (ms).
    pool: Mutex<Vec<(Instance, u64)>>,
    receiver: tokio::sync::Mutex<Option<Receiver>>,
    status: Mutex<ChannelStatus>,
    pub(crate) last_inbound_at: AtomicU64,
    pub(crate) last_outbound_at: AtomicU64,
    /// Last contact with the platform (a poll that returned, even empty; a
    /// verified push), Unix ms: the channel's liveness.
    pub(crate) last_contact_at: AtomicU64,
    /// Serializes start/stop/restart so two restart owners never interleave.
    lifecycle: tokio::sync::Mutex<()>,
    /// Pushes refused by host-side verification.
    verify_stats: VerifyStats,
    /// The receive mode the started channel declared (see [`Self::mode`]).
    live_mode: Mutex<Option<ReceiveMode>>,
    /// The account's host-managed sockets and timers.
    sockets: Arc<super::socket::AccountSockets>,
    /// Whether this node may run the account's receiver (cluster leases).
    gate: Mutex<Gate>,
    /// Notified when a fenced write was refused (the lease keeper then
    /// gives the account up at once).
    lease_lost: Notify,
    /// Writes refused by the fence since the process started.
    fenced: AtomicU64,
    /// The cluster's lease time, ms (0 with one node).
    lease_ms: AtomicU64,
}

/// Whether this node may run an account's receiver.
#[derive(Debug, Clone)]
pub(crate) enum Gate {
    /// One node (SQLite): always.
    Single,
    /// This node holds the lease under `fence`, surely until `deadline`
    /// (the local time the last successful acquisition or renewal was
    /// asked plus the lease time).
    Held {
        /// The lease's fence, checked by every commit.
        fence: Fence,
        /// Until when the lease surely holds.
        deadline: tokio::time::Instant,
    },
    /// Another node holds the lease (or may).
    Standby,
}

/// A poll under a lease is cut to end a fifth of the lease time before
/// the lease could run out, so no poll outlives its lease (a paused
/// node's poll is answered before another node can take over).
const LEASE_MARGIN_DIVISOR: u32 = 5;
/// Shortest poll worth starting under a lease; with less lease left the
/// receiver waits for the renewal.
const MIN_LEASED_POLL: Duration = Duration::from_millis(200);

struct Receiver {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ChannelRunner {
    pub(crate) fn new(
        account: Account,
        sockets: Arc<super::socket::AccountSockets>,
        registry: Arc<PluginRegistry>,
        inbox: Arc<Inbox>,
        inbox_wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(ChannelRunner {
            name: account.key().to_string(),
            account,
            registry,
            inbox,
            inbox_wake,
            pool: Mutex::new(Vec::new()),
            receiver: tokio::sync::Mutex::new(None),
            status: Mutex::new(ChannelStatus {
                state: ChannelState::Stopped,
                last_error: None,
                last_start_at: None,
                restart_times: VecDeque::new(),
                restarts_total: 0,
                reconnect_attempts: 0,
                bad_checks: 0,
                poll_errors: 0,
                missing_secrets: Vec::new(),
            }),
            last_inbound_at: AtomicU64::new(0),
            last_outbound_at: AtomicU64::new(0),
            last_contact_at: AtomicU64::new(0),
            lifecycle: tokio::sync::Mutex::new(()),
            verify_stats: VerifyStats::default(),
            live_mode: Mutex::new(None),
            sockets,
            gate: Mutex::new(Gate::Single),
            lease_lost: Notify::new(),
            fenced: AtomicU64::new(0),
            lease_ms: AtomicU64::new(0),
        })
    }

    /// Set whether this node may run the receiver (cluster leases); the
    /// account's sockets may be opened only while it may.
    pub(crate) fn set_gate(&self, gate: Gate) {
        self.sockets.set_may_open(!matches!(gate, Gate::Standby));
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = gate;
    }

    fn gate(&self) -> Gate {
        self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether another node holds the account's lease (cluster mode).
    pub fn is_standby(&self) -> bool {
        matches!(self.gate(), Gate::Standby)
    }

    /// Whether a start must wait for the account's lease: another node
    /// holds it (cluster mode) and the plugin is a socket channel, whose
    /// `start` opens sessions only the lease holder may open. Polling
    /// and webhook channels start on standby nodes too (pushes are served
    /// by every node; a poller runs no receiver there).
    fn waits_for_lease(&self) -> bool {
        self.is_standby() && self.version().is_ok_and(|v| v.uses_sockets())
    }

    /// The lease this node holds for the account (cluster mode), if any.
    pub fn fence(&self) -> Option<Fence> {
        match self.gate() {
            Gate::Held { fence, .. } => Some(fence),
            _ => None,
        }
    }

    /// Writes of this account refused by the lease's fence (a node that
    /// lost its lease while paused or partitioned) since the start.
    pub fn fenced_writes(&self) -> u64 {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Resolves when a fenced write of this account was refused.
    pub(crate) async fn lease_lost(&self) {
        self.lease_lost.notified().await;
    }

    /// Stop receiving for the account because another node holds its
    /// lease: the receiver is stopped (and awaited), sockets closed, and
    /// the state becomes `standby`.
    pub(crate) async fn standby(&self) {
        let _life = self.lifecycle.lock().await;
        self.set_gate(Gate::Standby);
        self.stop_receiver().await;
        self.sockets.end().await;
        self.set_state(ChannelState::Standby, None);
    }

    /// How long the next poll may wait for `wanted`: cut so it ends before
    /// the lease could run out (`None`: too little lease left to poll,
    /// wait for the renewal).
    fn leased_wait(&self, wanted: Duration) -> Option<Duration> {
        match self.gate() {
            Gate::Single => Some(wanted),
            Gate::Standby => None,
            Gate::Held { deadline, .. } => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let lease = self.lease_ms();
                let margin = Duration::from_millis(lease) / LEASE_MARGIN_DIVISOR;
                let room = left.saturating_sub(margin);
                (room >= MIN_LEASED_POLL).then(|| wanted.min(room))
            }
        }
    }

    fn lease_ms(&self) -> u64 {
        self.lease_ms.load(Ordering::Relaxed)
    }

    /// The lease time (cluster mode), for the poll bound.
    pub(crate) fn set_lease_ms(&self, ms: u64) {
        self.lease_ms.store(ms, Ordering::Relaxed);
    }

    /// The account's host-managed sockets and timers.
    pub fn sockets(&self) -> &Arc<super::socket::AccountSockets> {
        &self.sockets
    }

    /// The channel key (the plugin name for the `default` account; see
    /// [`super::account::key`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin serving this account.
    pub fn plugin(&self) -> &str {
        self.account.plugin()
    }

    /// The account id (`default` for the plugin table).
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    /// The account bound to the plugin's current version (settings,
    /// capabilities), or `Unavailable`.
    pub fn bound(&self) -> Result<Arc<Bound>, ChannelError> {
        self.account.bind(&self.registry)
    }

    /// The account's effective settings under the current version.
    pub fn settings(&self) -> Result<Arc<PluginSettings>, ChannelError> {
        Ok(self.bound()?.settings.clone())
    }

    /// A copy of the status.
    pub fn status(&self) -> ChannelStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut ChannelStatus) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Set the state; returns the previous one.
    pub(crate) fn set_state(&self, state: ChannelState, error: Option<String>) -> ChannelState {
        self.update(|s| {
            let prev = s.state;
            s.state = state;
            if error.is_some() {
                s.last_error = error;
            }
            prev
        })
    }

    fn now(&self) -> u64 {
        self.registry.config().clock.now_ms()
    }

    /// The current version, or `Unavailable`.
    pub fn version(&self) -> Result<Arc<PluginVersion>, ChannelError> {
        Ok(self.bound()?.version.clone())
    }

    /// Receive mode: as the started channel declared it (after seeing its
    /// config), else as the current version declared it at load.
    pub fn mode(&self) -> Option<ReceiveMode> {
        if let Some(m) = *self.live_mode.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(m);
        }
        self.registry
            .current(self.plugin())
            .and_then(|v| v.channel_capabilities().map(|c| c.mode))
    }

    fn call_err(&self, error: CallError) -> ChannelError {
        ChannelError::Call {
            channel: self.name.clone(),
            error,
        }
    }

    /// A started instance of the current version (from the pool or new),
    /// waiting in line while the plugin is at its instance cap.
    pub(crate) async fn checkout(&self) -> Result<Instance, ChannelError> {
        self.checkout_within(None).await
    }

    /// As [`checkout`](Self::checkout), giving up as busy after `max_wait`.
    async fn checkout_within(&self, max_wait: Option<Duration>) -> Result<Instance, ChannelError> {
        let bound = self.bound()?;
        let version = bound.version.clone();
        loop {
            let Some((inst, _)) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                break;
            };
            if Arc::ptr_eq(inst.version(), &version) {
                return Ok(inst);
            }
        }
        let config: Vec<(String, String)> = bound.settings.config.clone().into_iter().collect();
        let inst = match (&bound.caps, max_wait) {
            (Some(caps), wait) => Instance::new_with_caps(version, caps.clone(), wait).await,
            (None, None) => Instance::new(version).await,
            (None, Some(wait)) => Instance::new_within(version, wait).await,
        };
        let mut inst = inst.map_err(|e| self.call_err(e))?;
        inst.start(&config).await.map_err(|e| self.call_err(e))?;
        Ok(inst)
    }

    /// Return an instance to the pool if it is healthy and current.
    pub(crate) fn checkin(&self, inst: Instance) {
        if inst.is_poisoned() {
            return;
        }
        let current = self.registry.current(self.plugin());
        if current.is_some_and(|v| Arc::ptr_eq(&v, inst.version())) {
            let keep = POOL_SIZE.min(inst.version().gate.cap().saturating_sub(2));
            let now = self.now();
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < keep {
                pool.push((inst, now));
                drop(pool);
                // A socket account drops it again once quiet (a send's
                // instance too, not only a socket event's).
                self.sockets.nudge();
            }
        }
    }

    /// Drop idle sender instances unused for [`POOL_IDLE_MS`] as of `now`
    /// (ms); returns how many were dropped.
    pub fn trim_idle(&self, now: u64) -> usize {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let before = pool.len();
        pool.retain(|(_, at)| now.saturating_sub(*at) < POOL_IDLE_MS);
        let dropped = before - pool.len();
        if pool.is_empty() {
            // An emptied pool gives its buffer back too (a few instance
            // records per account: about 1.5 KiB for each of 1,000 quiet
            // socket accounts).
            *pool = Vec::new();
        }
        dropped
    }

    /// Idle sender instances held now.
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How long this account keeps its instance after a socket event
    /// (`[sandbox.socket] idle_instance_ms`, or the plugin's `socket`
    /// override); `None` when the account is not bound to a version.
    pub(crate) fn keep_instance(&self) -> Option<Duration> {
        let bound = self.bound().ok()?;
        Some(Duration::from_millis(
            bound.caps().socket.limits.idle_instance_ms,
        ))
    }

    /// Drop every idle instance now (a socket account went quiet: the
    /// host holds its sockets and timers, and the next event gets a fresh
    /// instance); returns how many were dropped.
    pub fn release_idle(&self) -> usize {
        let idle = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()));
        // Dropped outside the lock, buffer and all (see `trim_idle`).
        idle.len()
    }

    fn clear_pool(&self) {
        drop(std::mem::take(
            &mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()),
        ));
    }

    fn accepting(&self) -> Result<(), ChannelError> {
        match self.status().state {
            ChannelState::Stopped | ChannelState::Unconfigured => {
                Err(ChannelError::Unavailable(self.name.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Send a message.
    pub async fn send(&self, message: &OutboundMessage) -> Result<String, ChannelError> {
        self.send_keyed(message, None).await
    }

    /// Send a message with `key` as the call's idempotency key
    /// (`pincer:delivery`; the outbox row, or the streamed piece).
    pub async fn send_keyed(
        &self,
        message: &OutboundMessage,
        key: Option<String>,
    ) -> Result<String, ChannelError> {
        self.accepting()?;
        let inst = self.checkout().await?;
        let message = message.clone();
        let (inst, r) = self
            .registry
            .run_call("send", async move {
                let mut inst = inst;
                let r = inst.send_keyed(&message, key).await;
                (inst, r)
            })
            .await
            .map_err(|e| self.call_err(e))?;
        self.after_call(inst, &r);
        let id = r.map_err(|e| self.call_err(e))?;
        self.last_outbound_at.store(self.now(), Ordering::Relaxed);
        Ok(id)
    }

    /// Edit a message.
    pub async fn edit(
        &self,
        conversation: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.accepting()?;
        let inst = self.checkout().await?;
        let (conversation, message_id, text) = (
            conversation.to_string(),
            message_id.to_string(),
            text.to_string(),
        );
        let (inst, r) = self
            .registry
            .run_call("edit", async move {
                let mut inst = inst;
                let r = inst
                    .edit(&conversation, &message_id, &text, TextFormat::Markdown)
                    .await;
                (inst, r)
            })
            .await
            .map_err(|e| self.call_err(e))?;
        self.after_call(inst, &r);
        r.map_err(|e| self.call_err(e))?;
        self.last_outbound_at.store(self.now(), Ordering::Relaxed);
        Ok(())
    }

    /// Handle a webhook push. A push waits for a free instance at most one
    /// call timeout, then is refused as busy (HTTP 503, the platform retries).
    ///
    /// The push is verified first, as the manifest declares
    /// ([`verify`]): a declared handshake is answered here, and a refused
    /// push (counted, logged with `remote`) never reaches the plugin.
    pub async fn webhook(
        self: &Arc<Self>,
        request: &WebhookRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<WebhookResponse, ChannelError> {
        // An unconfigured channel still verifies (and counts) the push,
        // then refuses it as unavailable.
        let unconfigured = self.status().state == ChannelState::Unconfigured;
        if !unconfigured {
            self.accepting()?;
        }
        let bound = self.bound()?;
        let version = bound.version.clone();
        let push = verify::Push {
            method: &request.method,
            query: &request.query,
            headers: &request.headers,
            body: &request.body,
        };
        let keys: &Bound = &bound;
        let checked = verify::check(
            &version.manifest.webhook,
            keys,
            &self.name,
            None,
            &push,
            self.now(),
        );
        // The scheme is handed to the guest with the push (0.2.0 `verified`).
        let verified = match checked {
            Ok(verify::Outcome::Pass(v)) => v,
            Ok(verify::Outcome::Answer(a)) => {
                tracing::info!(channel = %self.name, remote = ?remote, "webhook handshake answered by the host");
                self.last_inbound_at.store(self.now(), Ordering::Relaxed);
                self.last_contact_at.store(self.now(), Ordering::Relaxed);
                return Ok(WebhookResponse {
                    status: a.status,
                    headers: vec![
                        ("content-type".into(), "text/plain; charset=utf-8".into()),
                        ("x-content-type-options".into(), "nosniff".into()),
                    ],
                    body: a.body.into_bytes(),
                    messages: vec![],
                    statuses: vec![],
                });
            }
            Err(rejection) => {
                self.verify_stats.record(rejection.reason);
                if let Some(unlogged) = self.verify_stats.log_now(rejection.reason, self.now()) {
                    tracing::warn!(
                        channel = %self.name,
                        reason = rejection.reason.as_str(),
                        detail = %rejection.detail,
                        remote = ?remote,
                        unlogged,
                        "webhook push rejected"
                    );
                }
                return Err(ChannelError::Rejected {
                    channel: self.name.clone(),
                    rejection,
                });
            }
        };
        if unconfigured {
            return Err(ChannelError::Unavailable(self.name.clone()));
        }
        self.last_contact_at.store(self.now(), Ordering::Relaxed);
        let wait = Duration::from_millis(version.limits.call_timeout_ms);
        let mut request = request.clone();
        request.verified = (verified.scheme != verify::SchemeName::None)
            .then(|| verified.scheme.as_str().to_string());
        verify::redact(&version.manifest.webhook, &mut request.headers);
        drop((version, bound));
        self.handle_push(request, wait, false).await
    }

    /// Hand a host-managed socket's event (`WS-OPEN`, `WS-TEXT`, ...,
    /// `TIMER`; see [`super::socket`]) to the plugin exactly as a verified
    /// push: its messages are committed to the durable inbox before this
    /// returns. The caller records the response's statuses.
    pub(crate) async fn socket_event(
        self: &Arc<Self>,
        mut request: WebhookRequest,
    ) -> Result<WebhookResponse, ChannelError> {
        self.accepting()?;
        let wait = Duration::from_millis(self.version()?.limits.call_timeout_ms);
        request.verified = Some(super::socket::VERIFIED.to_string());
        self.handle_push(request, wait, true).await
    }

    /// The plugin's `handle-webhook` for a push that passed its checks, on
    /// an instance waited for at most `wait`; what it carries is committed
    /// to the inbox before the response is returned. With `spare`, the
    /// instance is kept only if the account has no idle one (socket events
    /// of many accounts must not fill the plugin's instance cap with idle
    /// instances).
    async fn handle_push(
        self: &Arc<Self>,
        request: WebhookRequest,
        wait: Duration,
        spare: bool,
    ) -> Result<WebhookResponse, ChannelError> {
        let inst = self.checkout_within(Some(wait)).await?;
        let (inst, r) = self
            .registry
            .run_call("handle-webhook", async move {
                let mut inst = inst;
                let r = inst.handle_webhook(&request).await;
                (inst, r)
            })
            .await
            .map_err(|e| self.call_err(e))?;
        if spare {
            self.after_call_with(inst, &r, true);
        } else {
            self.after_call(inst, &r);
        }
        self.note_config_error(&r);
        let mut response = r.map_err(|e| self.call_err(e))?;
        let messages: Vec<Inbound> = std::mem::take(&mut response.messages)
            .into_iter()
            .filter_map(|m| Inbound::for_agent(&self.name, m))
            .collect();
        // Committed before the platform gets its answer: a failed commit
        // answers 503 and the platform delivers the push again.
        self.commit(&messages, None, spare)?;
        Ok(response)
    }

    /// Host-side push verification as the status shows it: the declared
    /// scheme, what keeps it from working (e.g. "webhook secret
    /// `app_secret` not granted"), and pushes refused by reason.
    pub fn webhook_status(&self) -> WebhookStatus {
        let Ok(bound) = self.bound() else {
            return WebhookStatus::new("none", None, None, &self.verify_stats);
        };
        let spec = &bound.version.manifest.webhook;
        WebhookStatus::new(
            spec.scheme().name().as_str(),
            spec.handshake.as_ref().map(|h| h.scheme.as_str()),
            verify::problem(spec, &*bound, &self.name, None),
            &self.verify_stats,
        )
    }

    /// Pushes refused by host-side verification, per reason.
    pub fn verify_stats(&self) -> &VerifyStats {
        &self.verify_stats
    }

    /// A `config` or `auth` error from `handle-webhook` (a socket channel
    /// told by its platform that retrying is wrong, such as Discord's close
    /// 4004) becomes the channel's `lastError`, so `channels.status` shows
    /// it while the channel keeps running.
    fn note_config_error<T>(&self, r: &Result<T, CallError>) {
        if let Err(CallError::Plugin {
            error: error @ (PluginError::Config { .. } | PluginError::Auth { .. }),
            ..
        }) = r
        {
            let error = error.to_string();
            tracing::error!(channel = %self.name, %error, "the channel reported a configuration error");
            self.update(|s| s.last_error = Some(error));
        }
    }

    fn after_call<T>(&self, inst: Instance, r: &Result<T, CallError>) {
        self.after_call_with(inst, r, false);
    }

    /// Record the call and check the instance in (with `spare`, only if
    /// the pool is empty; see [`Self::checkin_spare`]).
    fn after_call_with<T>(&self, inst: Instance, r: &Result<T, CallError>, spare: bool) {
        let failed = r.as_ref().is_err_and(CallError::poisons_instance);
        self.registry.record_call(self.plugin(), failed);
        if let Err(e) = r {
            tracing::warn!(channel = %self.name, error = %e, "channel call failed");
        }
        if spare {
            self.checkin_spare(inst);
        } else {
            self.checkin(inst);
        }
    }

    /// Keep `inst` only if the account has no idle instance: a socket
    /// channel's events come one at a time, so one warm instance serves
    /// them, and a thousand socket accounts hold a thousand instances, not
    /// up to four thousand.
    pub(crate) fn checkin_spare(&self, inst: Instance) {
        if self.idle_instances() == 0 {
            self.checkin(inst);
        }
    }

    /// Commit received messages (and the new platform cursor) to the
    /// durable inbox and wake the channel's processor. With `fenced`
    /// (what this node's receiver got: a poll, a socket event), the commit
    /// is checked against the account's lease in its transaction: refused
    /// (counted, logged, and the lease keeper told) once another node took
    /// the lease over. Pushes (`fenced` false) are served by any node.
    fn commit(
        &self,
        messages: &[Inbound],
        cursor: Option<&str>,
        fenced: bool,
    ) -> Result<(), ChannelError> {
        if messages.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let fence = match (fenced, self.gate()) {
            (true, Gate::Held { fence, .. }) => Some(fence),
            (true, Gate::Standby) => {
                return Err(self.refused(crate::store::StoreError::Fenced(format!(
                    "`{}`: this node does not hold the account's lease",
                    self.name
                ))));
            }
            _ => None,
        };
        let committed = match &fence {
            Some(f) => self.inbox.commit_fenced(&self.name, messages, cursor, f),
            None => self.inbox.commit(&self.name, messages, cursor),
        };
        if let Err(ChannelError::Store {
            error: e @ crate::store::StoreError::Fenced(_),
            ..
        }) = committed
        {
            return Err(self.refused(e));
        }
        committed?;
        if !messages.is_empty() {
            self.last_inbound_at.store(self.now(), Ordering::Relaxed);
            self.inbox_wake.notify_one();
        }
        Ok(())
    }

    /// Wake this channel's inbox processor (another node committed to its
    /// inbox).
    pub fn wake_inbox(&self) {
        self.inbox_wake.notify_one();
    }

    /// Count and log a commit the fence refused, tell the lease keeper,
    /// and return the error.
    fn refused(&self, error: crate::store::StoreError) -> ChannelError {
        self.count_fenced("commit", &error.to_string());
        self.lease_lost.notify_one();
        ChannelError::Store {
            channel: self.name.clone(),
            error,
        }
    }

    /// Count and log a fenced write (`what`: a commit, a lease renewal)
    /// refused because another node took the account's lease over.
    pub(crate) fn count_fenced(&self, what: &str, why: &str) {
        self.fenced.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pincer_channel_lease_fenced_total", "channel" => self.name.clone())
            .increment(1);
        tracing::error!(
            channel = %self.name,
            write = what,
            reason = why,
            "write refused by the lease fence: another node took this account over; stopping its receiver here"
        );
    }

    /// The manifest-declared secrets of the current version the operator
    /// has not granted (host-generated ones count as granted; optional
    /// ones are never missing).
    pub fn missing_secrets(&self) -> Vec<String> {
        let Ok(bound) = self.bound() else {
            return Vec::new();
        };
        bound
            .version
            .manifest
            .secrets
            .iter()
            .filter(|(name, b)| !b.optional && !bound.caps().secrets.contains(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Start (or restart from scratch): stop any receiver, then start a fresh
    /// instance; poll-mode channels get a new receiver task.
    pub async fn start(self: &Arc<Self>) -> Result<(), ChannelError> {
        let _life = self.lifecycle.lock().await;
        self.start_locked(None).await
    }

    /// Start the channel unless it is already running: what the lease
    /// keeper does once it wins the account's lease. The channel's own
    /// start at load can come after the lease was won (it then runs the
    /// receiver already); starting again would restart that receiver, and
    /// its next poll would not wait for a `retry_after` the platform had
    /// just asked for.
    pub async fn start_unless_running(self: &Arc<Self>) -> Result<(), ChannelError> {
        let _life = self.lifecycle.lock().await;
        if self.status().state == ChannelState::Running {
            return Ok(());
        }
        self.start_locked(None).await
    }

    async fn start_locked(self: &Arc<Self>, inst: Option<Instance>) -> Result<(), ChannelError> {
        self.stop_receiver().await;
        let missing = self.missing_secrets();
        if !missing.is_empty() {
            self.clear_pool();
            let why = format!("unconfigured: secrets not granted: {}", missing.join(", "));
            tracing::info!(channel = %self.name, missing = ?missing, "channel not started until its secrets are granted");
            self.update(|s| {
                s.state = ChannelState::Unconfigured;
                s.last_error = Some(why);
                s.missing_secrets = missing.clone();
            });
            return Err(ChannelError::Unconfigured {
                channel: self.name.clone(),
                missing,
            });
        }
        self.update(|s| s.missing_secrets.clear());
        if self.waits_for_lease() {
            // A socket channel's `start` opens its sessions, which only
            // the lease holder may: on a standby node it is not started
            // at all (no instance) until the lease keeper wins the lease
            // and starts it.
            drop(inst);
            self.clear_pool();
            self.set_state(ChannelState::Standby, None);
            tracing::debug!(channel = %self.name, "socket channel on standby: started once this node holds the account's lease");
            return Ok(());
        }
        self.set_state(ChannelState::Starting, None);
        let inst = match inst {
            Some(i) => i,
            None => {
                self.clear_pool();
                // Bounded: an account that finds the plugin at its
                // instance cap fails (and is retried by the monitor)
                // instead of holding up every start after it.
                let wait = self
                    .version()
                    .ok()
                    .map(|v| Duration::from_millis(v.limits.call_timeout_ms));
                match self.checkout_within(wait).await {
                    Ok(i) => i,
                    Err(e) if e.is_config_error() => {
                        // The plugin refused its configuration (a missing
                        // `phone_number_id`, say): restarting cannot help, so
                        // it waits, like missing secrets, for a config or
                        // plugin reload instead of being restarted until the
                        // monitor gives up.
                        tracing::warn!(channel = %self.name, error = %e, "channel not started: the plugin refused its configuration");
                        self.clear_pool();
                        self.set_state(
                            ChannelState::Unconfigured,
                            Some(format!("unconfigured: {e}")),
                        );
                        return Err(e);
                    }
                    Err(e) => {
                        self.update(|s| s.reconnect_attempts += 1);
                        self.set_state(ChannelState::Failed, Some(e.to_string()));
                        return Err(e);
                    }
                }
            }
        };
        let declared = inst
            .version()
            .channel_capabilities()
            .map(|c| c.mode)
            .unwrap_or(ReceiveMode::Webhook);
        // `describe` at load time cannot see the config; asked again now
        // that the instance is started with it, a channel can declare the
        // mode its config chose (Telegram's `mode = "webhook"`).
        let mut inst = inst;
        let mode = match inst.describe_channel().await {
            Ok(c) => c.mode,
            Err(e) => {
                tracing::debug!(channel = %self.name, error = %e, "describe after start failed; using the declared mode");
                declared
            }
        };
        *self.live_mode.lock().unwrap_or_else(|p| p.into_inner()) = Some(mode);
        let standby = self.is_standby();
        match mode {
            ReceiveMode::Poll if standby => self.checkin(inst),
            ReceiveMode::Poll => self.spawn_receiver(inst).await,
            // A socket channel keeps one idle instance (see `checkin_spare`).
            ReceiveMode::Webhook if self.sockets.totals().sessions > 0 => self.checkin_spare(inst),
            ReceiveMode::Webhook => self.checkin(inst),
        }
        let now = self.now();
        self.update(|s| {
            s.state = if standby {
                ChannelState::Standby
            } else {
                ChannelState::Running
            };
            s.last_start_at = Some(now);
            s.reconnect_attempts = 0;
            s.poll_errors = 0;
            s.bad_checks = 0;
        });
        tracing::info!(channel = %self.name, ?mode, "channel running");
        if let Some(problem) = self.webhook_status().problem {
            tracing::warn!(channel = %self.name, %problem, "pushes to this channel are refused (503) until this is fixed");
        }
        Ok(())
    }

    /// Stop the channel (operator action): receiver stopped, sockets
    /// closed (1001) and timers cancelled, pool dropped.
    pub async fn stop(&self) {
        let _life = self.lifecycle.lock().await;
        self.stop_receiver().await;
        self.sockets.end().await;
        self.clear_pool();
        self.set_state(ChannelState::Stopped, None);
    }

    /// Restart: stop the receiver, call the plugin's `restart` within
    /// `timeout`; if that fails, traps or times out, drop the instance and
    /// create a fresh one. Ends `Running` or `Failed` (with the error).
    pub async fn restart(self: &Arc<Self>, timeout: Duration) -> Result<(), ChannelError> {
        let _life = self.lifecycle.lock().await;
        if self.waits_for_lease() {
            // Nothing runs here to restart (see `start_locked`).
            return self.start_locked(None).await;
        }
        self.stop_receiver().await;
        self.set_state(ChannelState::Restarting, None);
        let now = self.now();
        self.update(|s| {
            s.restart_times.push_back(now);
            s.restarts_total += 1;
        });
        let reused = match self.checkout().await {
            Ok(mut inst) => match inst.restart(timeout).await {
                Ok(()) => Some(inst),
                Err(e) => {
                    tracing::warn!(channel = %self.name, error = %e, "plugin restart failed; re-creating the instance");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(channel = %self.name, error = %e, "no instance to restart; re-creating");
                None
            }
        };
        if reused.is_none() {
            self.clear_pool();
        }
        self.start_locked(reused).await
    }

    async fn stop_receiver(&self) {
        let receiver = self.receiver.lock().await.take();
        if let Some(r) = receiver {
            let _ = r.stop.send(true);
            // Wait until the old receiver is gone: never two receivers.
            let _ = r.task.await;
        }
    }

    /// Whether the receiver task (poll mode) is alive.
    pub async fn receiver_alive(&self) -> bool {
        self.receiver
            .lock()
            .await
            .as_ref()
            .is_some_and(|r| !r.task.is_finished())
    }

    async fn spawn_receiver(self: &Arc<Self>, inst: Instance) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let me = self.clone();
        // On the plugin call runtime, so a guest spinning in `poll` cannot
        // hold up the gateway's own tasks.
        let task = self
            .registry
            .spawn_call(async move { me.receive_loop(inst, stop_rx).await });
        *self.receiver.lock().await = Some(Receiver {
            stop: stop_tx,
            task,
        });
    }

    async fn receive_loop(self: Arc<Self>, first: Instance, mut stop: watch::Receiver<bool>) {
        let mut inst = Some(first);
        let mut backoff = Duration::from_millis(500);
        // The platform cursor of 0.2.0 plugins (0.1.0 plugins keep their
        // own), as committed with the messages it covers.
        let mut cursor: Option<String> = loop {
            match self.inbox.cursor(&self.name) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(channel = %self.name, error = %e, "reading the committed cursor failed; retrying");
                    self.update(|s| s.last_error = Some(format!("inbox: {e}")));
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        };
        backoff = Duration::from_millis(500);
        loop {
            if *stop.borrow() {
                return;
            }
            let mut current = match inst.take() {
                Some(i) if !i.is_poisoned() => i,
                _ => match self.checkout().await {
                    Ok(i) => i,
                    Err(e) => {
                        self.update(|s| {
                            s.reconnect_attempts += 1;
                            s.last_error = Some(e.to_string());
                        });
                        if sleep_or_stop(&mut stop, backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            };
            let wanted = Duration::from_millis(current.version().limits.poll_wait_ms);
            // Under a lease, a poll never outlives it: a node paused or cut
            // off mid-poll has its poll answered before another node can
            // take over, so the platform never sees two pollers.
            let Some(wait) = self.leased_wait(wanted) else {
                inst = Some(current);
                if sleep_or_stop(&mut stop, MIN_LEASED_POLL).await {
                    return;
                }
                continue;
            };
            let wait = wait.as_millis().min(u128::from(u32::MAX)) as u32;
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = stop.changed() => return,
                r = current.poll(cursor.as_deref(), wait) => r,
            };
            let delay = match result {
                Ok(batch) => {
                    self.last_contact_at.store(self.now(), Ordering::Relaxed);
                    self.update(|s| {
                        s.reconnect_attempts = 0;
                        s.poll_errors = 0;
                    });
                    let empty = batch.messages.is_empty();
                    let messages: Vec<Inbound> = batch
                        .messages
                        .into_iter()
                        .filter_map(|m| Inbound::for_agent(&self.name, m))
                        .collect();
                    // Committed with the new cursor before the next poll;
                    // until then the cursor stays where it was.
                    let mut commit_backoff = Duration::from_millis(100);
                    loop {
                        match self.commit(&messages, batch.cursor.as_deref(), true) {
                            Ok(()) => break,
                            Err(ChannelError::Store {
                                error: crate::store::StoreError::Fenced(_),
                                ..
                            }) => {
                                // Another node owns the account now: what
                                // this poll got is its to commit.
                                self.update(|s| {
                                    s.last_error = Some(
                                        "lease lost: another node took this account over".into(),
                                    )
                                });
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(channel = %self.name, error = %e, "committing polled messages failed; retrying");
                                self.update(|s| s.last_error = Some(e.to_string()));
                                if sleep_or_stop(&mut stop, commit_backoff).await {
                                    return;
                                }
                                commit_backoff = (commit_backoff * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                    if batch.cursor.is_some() {
                        cursor = batch.cursor;
                    }
                    backoff = Duration::from_millis(500);
                    let elapsed = started.elapsed();
                    (empty && elapsed < MIN_EMPTY_POLL).then(|| MIN_EMPTY_POLL - elapsed)
                }
                Err(e) => {
                    self.registry
                        .record_call(self.plugin(), e.poisons_instance());
                    tracing::warn!(channel = %self.name, error = %e, "poll failed");
                    self.update(|s| {
                        s.reconnect_attempts += 1;
                        s.poll_errors += 1;
                        s.last_error = Some(format!("poll: {e}"));
                    });
                    let d = match e.plugin_error() {
                        Some(PluginError::RateLimited { retry_after_ms, .. }) => {
                            Duration::from_millis(*retry_after_ms)
                        }
                        _ => backoff,
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    Some(d)
                }
            };
            if !current.is_poisoned() {
                inst = Some(current);
            }
            if let Some(d) = delay
                && sleep_or_stop(&mut stop, d).await
            {
                return;
            }
        }
    }
}

/// Sleep for `d` unless stopped first; returns true if stopped.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(d) => *stop.borrow(),
    }
}
