//! Running channel plugins.
//!
//! Each loaded channel gets a [`ChannelRunner`]: a receiver task (for
//! poll-mode channels: `poll` in a loop on its own instance) and a small pool
//! of interchangeable instances for `send`, `edit` and `handle-webhook`, so a
//! send never waits behind a long poll. A channel's old receiver is always
//! stopped (and awaited) before a new one starts, so one channel never has
//! two receivers. What a channel receives is committed to the durable
//! [`inbox`] (with the platform cursor, before the next poll or the push's
//! 2xx), deduplicated there by platform id, checked by a per-channel
//! processor against the access policy ([`access`], with sender pairing in
//! [`pairing`]) and, when allowed, handed to the [`InboundHandler`] (the
//! gateway). Replies ([`reply`]) and notices are committed to the durable
//! [`outbox`] and delivered by a per-channel worker with retries and a
//! per-conversation rate ([`queue`] holds the settings). Pushes are verified
//! by the host ([`verify`]) before a plugin sees them; inbound files are
//! fetched through the plugin by [`attachments`]. A channel whose
//! declared secrets are not granted stays `unconfigured`. One plugin may
//! serve several [`account`]s, each with its own runner, keyed by its
//! channel key (the plugin name for the `default` account). Socket channels'
//! host-managed WebSocket sessions and timers ([`socket`]) belong to the
//! account and reach the plugin through the same push path. In cluster
//! mode (a shared PostgreSQL store) an account's receiver, inbox processor
//! and outbox worker run only on the node holding its [`lease`].

pub mod access;
pub mod account;
pub mod attachments;
pub mod chunk;
pub mod inbox;
pub mod lease;
pub mod outbox;
pub mod pairing;
pub mod queue;
pub mod reply;
mod runner;
pub mod socket;
pub mod stream;
pub mod typing;
pub mod verify;

pub use access::AccessGate;
pub use inbox::{Accepted, Handled, InboundHandler, InboxRef};
pub use outbox::Outbox;
pub use queue::QueueSettings;
pub use runner::{ChannelRunner, ChannelState, ChannelStatus, POOL_IDLE_MS};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::plugins::bindings::{
    ChatType, InboundMessage, OutboundMessage, ReceiveMode, WebhookRequest, WebhookResponse,
};
use crate::plugins::{CallError, PluginError, PluginRegistry, PluginVersion};
use crate::store::{SharedInbox, SharedOutbox, SharedPairing};

/// Accounts of one plugin version started at once when it loads (see
/// [`ChannelManager::on_loaded`]).
const STARTS_AT_ONCE: usize = 16;

/// A message received by a channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inbound {
    /// The channel it came in on.
    pub channel: String,
    /// Platform message id.
    pub id: String,
    /// Conversation id on the platform.
    pub conversation: String,
    /// Sender id.
    pub sender: String,
    /// Sender display name.
    pub sender_name: Option<String>,
    /// Direct chat or group (0.1.0 plugins: always direct). Channels
    /// (broadcast) count as groups for the access policy; replies stream by
    /// draft only in direct chats.
    #[serde(default)]
    pub chat: access::ChatKind,
    /// The bot was mentioned or replied to (what `require_mention` asks).
    #[serde(default)]
    pub mentioned: bool,
    /// Thread or forum topic inside the conversation (replies go there).
    #[serde(default)]
    pub thread: Option<String>,
    /// Text.
    pub text: String,
    /// Platform timestamp (Unix ms).
    pub timestamp: u64,
    /// Files that came with it (downloaded when its run starts; see
    /// [`attachments`]).
    #[serde(default)]
    pub attachments: Vec<attachments::InboundAttachment>,
}

impl Inbound {
    /// The message as the agent will see it, or `None` for what is not
    /// for the agent: messages from bots (the bot's own and other bots':
    /// answering them loops) and bare reactions (a reaction with no text
    /// or file starts no run).
    fn for_agent(channel: &str, m: InboundMessage) -> Option<Self> {
        if m.sender_is_bot {
            tracing::debug!(channel, id = %m.id, "a bot's message is not for the agent");
            return None;
        }
        if m.reaction.is_some() && m.text.trim().is_empty() && m.attachments.is_empty() {
            tracing::debug!(channel, id = %m.id, "a reaction is not for the agent");
            return None;
        }
        Some(Self::from_wit(channel, m))
    }

    fn from_wit(channel: &str, m: InboundMessage) -> Self {
        Inbound {
            channel: channel.to_string(),
            id: m.id,
            conversation: m.conversation,
            sender: m.sender,
            sender_name: m.sender_name,
            chat: match m.chat_type {
                ChatType::Direct => access::ChatKind::Direct,
                ChatType::Group | ChatType::Channel => access::ChatKind::Group,
            },
            mentioned: m.mentioned || m.reply_to.as_ref().is_some_and(|r| r.from_bot_self),
            thread: m.thread,
            text: m.text,
            timestamp: m.timestamp,
            attachments: m
                .attachments
                .into_iter()
                .map(attachments::InboundAttachment::from_wit)
                .collect(),
        }
    }
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No such channel.
    #[error("no channel named `{0}`")]
    Unknown(String),
    /// The channel is reloading or stopped; try again later (HTTP 503).
    #[error("channel `{0}` is not running")]
    Unavailable(String),
    /// The plugin call failed.
    #[error("channel `{channel}`: {error}")]
    Call { channel: String, error: CallError },
    /// A push failed host-side verification; the plugin was not called.
    #[error("channel `{channel}`: push rejected ({}): {rejection}", rejection.reason.as_str())]
    Rejected {
        /// The channel.
        channel: String,
        /// Why.
        rejection: verify::Rejection,
    },
    /// The durable inbox or outbox could not be written or read.
    #[error("channel `{channel}`: store: {error}")]
    Store {
        /// The channel.
        channel: String,
        /// The store's error.
        error: crate::store::StoreError,
    },
    /// The channel's declared secrets are not granted.
    #[error("channel `{channel}` is unconfigured: secrets not granted: {}", missing.join(", "))]
    Unconfigured {
        /// The channel.
        channel: String,
        /// The secrets the operator must grant.
        missing: Vec<String>,
    },
}

impl ChannelError {
    /// The plugin refused its configuration (`error.config` from its
    /// `start`): only the operator can fix that, so nothing retries it.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            ChannelError::Call {
                error: CallError::Plugin {
                    error: PluginError::Config { .. },
                    ..
                },
                ..
            }
        )
    }
}

/// Log a channel that did not start. An unconfigured one is not an error:
/// its runner already said, at info, which secrets it waits for, and a
/// bundled channel nobody has set up must not fill the log with errors.
fn log_start_error(key: &str, e: &ChannelError) {
    match e {
        ChannelError::Unconfigured { .. } => {
            tracing::debug!(channel = %key, error = %e, "channel not started")
        }
        // Logged, with its reason, where the runner marks it unconfigured.
        e if e.is_config_error() => {
            tracing::debug!(channel = %key, error = %e, "channel not started")
        }
        _ => tracing::error!(channel = %key, error = %e, "channel failed to start"),
    }
}

/// The inbox processor and outbox worker of one channel (cluster mode:
/// its lease keeper, which runs them while it holds the lease).
struct Workers {
    processor: JoinHandle<()>,
    deliverer: JoinHandle<()>,
    drain: outbox::Drain,
    /// The lease keeper (cluster mode), stopped by `drain`.
    keeper: Option<JoinHandle<()>>,
}

impl Workers {
    /// Stop both: the processor at once (unsettled messages are processed
    /// after the next start), the outbox worker after its sends in flight
    /// (bounded by its drain timeout); a lease keeper stops its own and
    /// releases the lease.
    async fn stop(mut self) {
        self.processor.abort();
        self.drain.stop();
        let _ = (&mut self.deliverer).await;
        if let Some(keeper) = self.keeper.as_mut() {
            let _ = keeper.await;
        }
    }

    /// Workers that run nothing.
    fn idle() -> Workers {
        Workers {
            processor: tokio::spawn(async {}),
            deliverer: tokio::spawn(async {}),
            drain: outbox::Drain::default(),
            keeper: None,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.processor.abort();
        self.deliverer.abort();
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// All channel runners.
pub struct ChannelManager {
    registry: Arc<PluginRegistry>,
    runners: Mutex<BTreeMap<String, (Arc<ChannelRunner>, Workers)>>,
    inbox: Arc<inbox::Inbox>,
    outbox: Arc<Outbox>,
    access: Arc<AccessGate>,
    replies: Arc<reply::ReplyStats>,
    sockets: Arc<socket::Hub>,
    /// Cluster mode: accounts run where their lease is held.
    leases: std::sync::OnceLock<lease::Leases>,
}

impl ChannelManager {
    /// A manager for the channels in `registry`, with pairing state in
    /// `pairing` (dated by the registry's clock) and the durable inbox and
    /// outbox in `inbox` and `outbox`.
    pub fn new(
        registry: Arc<PluginRegistry>,
        pairing: SharedPairing,
        inbox: SharedInbox,
        outbox: SharedOutbox,
    ) -> Arc<Self> {
        let clock = registry.config().clock.clone();
        let outbox = Outbox::new(outbox);
        let sockets = socket::Hub::new(clock.clone());
        registry.set_socket_hub(sockets.clone());
        let manager = Arc::new(ChannelManager {
            sockets,
            registry,
            runners: Mutex::new(BTreeMap::new()),
            inbox: inbox::Inbox::new(inbox),
            access: Arc::new(AccessGate::new(
                pairing::Pairing::new(pairing, clock),
                outbox.clone(),
            )),
            outbox,
            replies: Arc::default(),
            leases: std::sync::OnceLock::new(),
        });
        let sink: std::sync::Weak<dyn socket::EventSink> = Arc::downgrade(&manager) as _;
        manager.sockets.set_sink(sink);
        manager
    }

    /// Cluster mode: from now on, each account's receiver, inbox
    /// processor and outbox worker run only on the node holding its lease
    /// (see [`lease`]). Call before the first channel loads; set once.
    pub fn set_leases(&self, leases: lease::Leases) {
        self.inbox.set_leases(leases.store.clone());
        if self.leases.set(leases).is_err() {
            tracing::warn!("channel leases were set already; keeping the first");
        }
    }

    /// The cluster's leases, if the store is shared.
    pub fn leases(&self) -> Option<&lease::Leases> {
        self.leases.get()
    }

    /// The host-managed sockets of every account.
    pub fn sockets(&self) -> &Arc<socket::Hub> {
        &self.sockets
    }

    /// Counters of the reply path (typing calls, plain resends, fallbacks).
    pub fn reply_stats(&self) -> &Arc<reply::ReplyStats> {
        &self.replies
    }

    /// The durable inbox (commits, the handler slot, pending counts).
    pub fn inbox(&self) -> &Arc<inbox::Inbox> {
        &self.inbox
    }

    /// The durable outbox: replies and notices go through it.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Hand every accepted inbound message to `handler` from now on (the
    /// gateway installs itself here). Messages committed before wait in the
    /// inbox until a handler is installed.
    pub fn set_inbound_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.inbox.set_handler(handler);
    }

    /// Commit the final chunks of an answer to the outbox of `channel`,
    /// settling `inbox` (the message answered) in the same transaction.
    pub fn enqueue_final(
        &self,
        channel: &str,
        inbox: Option<InboxRef>,
        messages: Vec<OutboundMessage>,
    ) -> Result<(), ChannelError> {
        self.outbox.enqueue_final(channel, inbox, messages)
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    /// Sender pairing (list, approve, dismiss) for operators.
    pub fn pairing(&self) -> &pairing::Pairing {
        self.access.pairing()
    }

    /// For embedders and tests without a gateway: unless a handler is
    /// installed, install one that hands every accepted inbound message to
    /// the returned receiver (in order; a slow reader holds the processor
    /// back, nothing is dropped). With a handler already installed the
    /// receiver gets nothing.
    pub fn subscribe_inbound(&self) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(1024);
        if !self
            .inbox
            .set_handler_if_none(Arc::new(inbox::ChannelHandler(tx)))
        {
            tracing::warn!(
                "subscribe_inbound: a handler is installed already; the receiver gets nothing"
            );
        }
        rx
    }

    fn runners(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Arc<ChannelRunner>, Workers)>> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runner of channel key `name` (a plugin name: its `default`
    /// account; `plugin:account`: another account, see [`account::key`]).
    pub fn get(&self, name: &str) -> Option<Arc<ChannelRunner>> {
        self.runners().get(name).map(|(r, _)| r.clone())
    }

    /// Wake the inbox processor of channel key `name` (another node
    /// committed to its inbox); nothing if it is not loaded here.
    pub fn wake_inbox(&self, name: &str) {
        if let Some((runner, _)) = self.runners().get(name) {
            runner.wake_inbox();
        }
    }

    /// Wake every channel's inbox processor and outbox worker (wake-ups
    /// may have been missed).
    pub fn wake_all(&self) {
        for (name, (runner, _)) in self.runners().iter() {
            runner.wake_inbox();
            self.outbox.wake(name);
        }
    }

    /// The runner of `account` (`None`: default) of plugin `plugin`.
    pub fn get_account(&self, plugin: &str, account: Option<&str>) -> Option<Arc<ChannelRunner>> {
        self.get(&account::key(plugin, account))
    }

    /// The runners of plugin `plugin`'s accounts, `default` first.
    pub fn accounts_of(&self, plugin: &str) -> Vec<Arc<ChannelRunner>> {
        self.runners()
            .values()
            .map(|(r, _)| r.clone())
            .filter(|r| r.plugin() == plugin)
            .collect()
    }

    /// Every runner, by name.
    pub fn all(&self) -> Vec<Arc<ChannelRunner>> {
        self.runners().values().map(|(r, _)| r.clone()).collect()
    }

    /// A version of channel `version.name` was loaded: (re)start each
    /// account it serves on that version (the old receivers are stopped
    /// first); accounts no longer in its settings are stopped and forgotten.
    pub async fn on_loaded(&self, version: Arc<PluginVersion>) {
        let served = account::served(&version);
        let gone: Vec<String> = self
            .accounts_of(&version.name)
            .iter()
            .filter(|r| !served.iter().any(|a| a == r.account_id()))
            .map(|r| r.name().to_string())
            .collect();
        for key in gone {
            tracing::info!(channel = %key, "account no longer configured; stopping it");
            self.on_removed_key(&key).await;
        }
        let cap = version.gate.cap();
        if served.len() + 2 > cap
            && version.channel_capabilities().map(|c| c.mode) == Some(ReceiveMode::Poll)
        {
            tracing::warn!(
                plugin = %version.name,
                accounts = served.len(),
                max_instances = cap,
                "each polling account holds one instance; raise [plugins.<name>.quotas] max_instances"
            );
        }
        // A few at a time: each start instantiates the plugin and calls
        // its `start`; a thousand at once only time out against each
        // other, and every instance alive at once leaves its pool slot's
        // memory behind.
        let places = tokio::sync::Semaphore::new(STARTS_AT_ONCE);
        let starts = served
            .iter()
            .map(|id| self.load_account_within(&places, &version, id));
        futures::future::join_all(starts).await;
    }

    /// [`Self::load_account`] once `places` has room.
    async fn load_account_within(
        &self,
        places: &tokio::sync::Semaphore,
        version: &Arc<PluginVersion>,
        id: &str,
    ) {
        // The semaphore is never closed; a failed acquire starts anyway.
        let _place = places.acquire().await.ok();
        self.load_account(version, id).await;
    }

    /// (Re)start account `id` of `version` (created on first load).
    async fn load_account(&self, version: &Arc<PluginVersion>, id: &str) {
        let key = account::key(&version.name, Some(id));
        // The runner and its workers live until the account is removed
        // (queue settings apply from its first load): stopping a processor
        // with answers in flight would answer them twice.
        let settings = version.settings.for_account(id).unwrap_or_default();
        // Whether this load created the account under a lease keeper.
        let mut leased_new = false;
        let runner = {
            let mut runners = self.runners();
            runners
                .entry(key.clone())
                .or_insert_with(|| {
                    let wake = Arc::new(Notify::new());
                    let runner = ChannelRunner::new(
                        account::Account::new(&self.registry, &version.name, id),
                        self.sockets.get(&key),
                        self.registry.clone(),
                        self.inbox.clone(),
                        wake.clone(),
                    );
                    let queue = settings.queue;
                    let drain = outbox::Drain::default();
                    if let Some(leases) = self.leases.get() {
                        // Standby until the keeper wins the lease: the
                        // start below then runs no receiver (and if the
                        // keeper won first and started the channel, the
                        // start below leaves it running).
                        leased_new = true;
                        runner.set_lease_ms(leases.lease_ms);
                        runner.set_gate(runner::Gate::Standby);
                        let keeper = tokio::spawn(lease::keep(
                            lease::Account {
                                runner: runner.clone(),
                                inbox: self.inbox.clone(),
                                outbox: self.outbox.clone(),
                                access: self.access.clone(),
                                wake,
                                queue,
                                autostart: settings.autostart != Some(false),
                            },
                            leases.clone(),
                            drain.token(),
                        ));
                        let mut workers = Workers::idle();
                        workers.drain = drain;
                        workers.keeper = Some(keeper);
                        return (runner, workers);
                    }
                    let workers = Workers {
                        processor: tokio::spawn(inbox::process(
                            self.inbox.clone(),
                            self.access.clone(),
                            runner.clone(),
                            wake,
                            queue.processing(),
                        )),
                        deliverer: tokio::spawn(outbox::deliver(
                            self.outbox.clone(),
                            runner.clone(),
                            queue.delivery(),
                            drain.clone(),
                        )),
                        drain,
                        keeper: None,
                    };
                    (runner, workers)
                })
                .0
                .clone()
        };
        if settings.autostart == Some(false) {
            runner.stop().await;
            return;
        }
        // A new leased account is started once, by whichever of this load
        // and its lease keeper comes second finding it not yet running; a
        // reload restarts it with the new version.
        let started = if leased_new {
            runner.start_unless_running().await
        } else {
            runner.start().await
        };
        if let Err(e) = started {
            log_start_error(&key, &e);
        }
    }

    /// Channel plugin `name` was unloaded: stop and forget all its accounts
    /// (their sends in flight finish first, within each account's drain
    /// timeout).
    pub async fn on_removed(&self, name: &str) {
        let keys: Vec<String> = self
            .accounts_of(name)
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        for key in keys {
            self.on_removed_key(&key).await;
        }
    }

    async fn on_removed_key(&self, key: &str) {
        let runner = self.runners().remove(key);
        if let Some((r, workers)) = runner {
            workers.stop().await;
            // Stopping the runner ends its sockets (1001).
            r.stop().await;
        }
    }

    /// The gateway is stopping: stop taking messages from every inbox and
    /// outbox, and let the sends in flight finish (each channel within its
    /// `drain_timeout_ms`). What is not sent stays committed for the next
    /// start.
    pub async fn drain(&self) {
        let workers: Vec<Workers> = {
            let mut runners = self.runners();
            runners
                .values_mut()
                .map(|(_, w)| {
                    // A stopped pair takes their place (dropping it aborts
                    // nothing that still runs).
                    std::mem::replace(w, Workers::idle())
                })
                .collect()
        };
        futures::future::join_all(workers.into_iter().map(Workers::stop)).await;
        self.sockets.shutdown().await;
    }

    fn runner(&self, name: &str) -> Result<Arc<ChannelRunner>, ChannelError> {
        self.get(name)
            .ok_or_else(|| ChannelError::Unknown(name.to_string()))
    }

    /// Send a message through channel `name`; returns the platform message id.
    pub async fn send(&self, name: &str, message: OutboundMessage) -> Result<String, ChannelError> {
        self.runner(name)?.send(&message).await
    }

    /// Edit a message sent earlier through channel `name`.
    pub async fn edit(
        &self,
        name: &str,
        conversation: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.runner(name)?
            .edit(conversation, message_id, text)
            .await
    }

    /// Hand a webhook request to channel `name`; inbound messages it carries
    /// are committed to the inbox, delivery statuses recorded against the
    /// outbox, and the plugin's response is returned for the platform.
    pub async fn webhook(
        &self,
        name: &str,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, ChannelError> {
        self.webhook_from(name, request, None).await
    }

    /// As [`webhook`](Self::webhook), for a push from `remote` (named in
    /// the log when verification refuses it).
    pub async fn webhook_from(
        &self,
        name: &str,
        request: WebhookRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<WebhookResponse, ChannelError> {
        let runner = self.runner(name)?;
        let response = runner.webhook(&request, remote).await?;
        Ok(self.record_statuses(name, &runner, response))
    }

    /// Record the delivery statuses a push (or socket event) carried
    /// against the outbox; a `failed` one becomes the channel's last error.
    fn record_statuses(
        &self,
        name: &str,
        runner: &ChannelRunner,
        mut response: WebhookResponse,
    ) -> WebhookResponse {
        let statuses = std::mem::take(&mut response.statuses);
        if !statuses.is_empty() {
            self.outbox.record_statuses(name, &statuses);
            if let Some(failed) = statuses
                .iter()
                .rev()
                .find(|s| matches!(s.state, crate::plugins::bindings::DeliveryState::Failed))
            {
                let why = failed.detail.as_deref().unwrap_or("no reason given");
                runner.update(|s| {
                    s.last_error = Some(format!(
                        "delivery failed: message {} to {}: {why}",
                        failed.message_id, failed.conversation
                    ))
                });
            }
        }
        response
    }

    /// Whether a push to channel `name` from `peer` may reach the plugin
    /// (see [`access::push_allowed`]); unknown channels are left to the
    /// caller's 404.
    pub fn push_allowed(&self, name: &str, peer: Option<std::net::IpAddr>) -> bool {
        match self.registry.current(name) {
            Some(v) => access::push_allowed(v.manifest.test_only, v.settings.public, peer),
            None => true,
        }
    }

    /// Start channel `name` (operator action).
    pub async fn start(&self, name: &str) -> Result<(), ChannelError> {
        self.runner(name)?.start().await
    }

    /// Stop channel `name` (operator action; the monitor leaves it stopped).
    pub async fn stop(&self, name: &str) -> Result<(), ChannelError> {
        self.runner(name)?.stop().await;
        Ok(())
    }
}

/// Socket events reach the plugin like verified pushes: messages into the
/// durable inbox (committed before the next event), statuses recorded.
impl socket::EventSink for ChannelManager {
    fn deliver<'a>(
        &'a self,
        key: &'a str,
        request: WebhookRequest,
    ) -> futures::future::BoxFuture<'a, socket::Delivery> {
        Box::pin(async move {
            let Some(runner) = self.get(key) else {
                return socket::Delivery::Drop;
            };
            let (method, session) = (request.method.clone(), request.path.clone());
            match runner.socket_event(request).await {
                Ok(response) => {
                    self.record_statuses(key, &runner, response);
                    socket::Delivery::Done
                }
                Err(e) => {
                    let delivery = socket::classify(&runner, &e);
                    match delivery {
                        socket::Delivery::Done => tracing::warn!(
                            channel = key,
                            plugin = runner.plugin(),
                            account = runner.account_id(),
                            session = %session,
                            %method,
                            error = %e,
                            "socket event failed in the plugin; the session goes on"
                        ),
                        socket::Delivery::RetryTimedOut => tracing::debug!(
                            channel = key,
                            session = %session,
                            %method,
                            error = %e,
                            "the plugin ran out of time on a socket event"
                        ),
                        socket::Delivery::Retry => tracing::debug!(
                            channel = key,
                            session = %session,
                            %method,
                            error = %e,
                            "socket event not delivered yet; retrying"
                        ),
                        socket::Delivery::Drop => tracing::debug!(
                            channel = key,
                            session = %session,
                            %method,
                            "socket event dropped: the channel is stopped"
                        ),
                    }
                    delivery
                }
            }
        })
    }

    fn keep_instance(&self, key: &str) -> Option<std::time::Duration> {
        self.get(key)?.keep_instance()
    }

    fn quiet(&self, key: &str) {
        if let Some(runner) = self.get(key) {
            let dropped = runner.release_idle();
            if dropped > 0 {
                tracing::debug!(
                    channel = key,
                    dropped,
                    "socket account quiet: idle instance dropped"
                );
            }
        }
    }
}
