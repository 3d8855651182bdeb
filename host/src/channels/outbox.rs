//! The durable outbox's delivery side: replies and notices are committed to
//! the store first ([`Outbox::enqueue_final`], [`Outbox::enqueue_notice`])
//! and then delivered by one worker per channel, in order per conversation,
//! at most `send_burst` at once and then one per `send_interval_ms` per
//! conversation. A send that fails is retried as the error says:
//! `rate-limited` after its retry-after, `transient` (and host-side call
//! failures) with exponential backoff and jitter up to `send_max_attempts`,
//! `formatting` at once as plain text; `permanent`, `auth`, `config` and
//! `unsupported` fail at once. A failed message stays in the store with its
//! cause, counted in the channel's health and in `/metrics`. The worker
//! sleeps until the next message falls due or a new one is committed: it
//! never loops tightly.
//!
//! Exactly once, as far as a host can: each send is marked in flight in
//! the store before the plugin is called and its result recorded right
//! after, so the only sends whose outcome is unknown after a crash are the
//! ones marked in flight ("in doubt": the platform may or may not have
//! taken them, and Telegram and WhatsApp take no idempotency key). When the
//! worker starts it settles those as `resend_in_doubt` says: sent again
//! (default; a lost answer is worse than a doubled one) or failed with a
//! clear cause. Stopping the worker ([`Drain`]) takes no new message and
//! lets the sends in flight finish within `drain_timeout_ms`. Attachments
//! travel in the row (their blobs are held while it waits, see
//! [`Outbox::blobs_in_use`]); delivery statuses the platform reports later
//! are recorded against the sent row ([`Outbox::record_statuses`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::inbox::InboxRef;
use super::pairing::DEFAULT_ACCOUNT;
use super::{ChannelError, ChannelRunner};
use crate::plugins::bindings::{
    AttachmentKind, DeliveryState as WitDeliveryState, DeliveryStatus, OutboundAttachment,
    OutboundMessage, TextFormat,
};
use crate::plugins::{CallError, PluginError};
use crate::store::{
    DeliveryState, InDoubt, InboxLink, NewOutbound, OutboxItem, OutboxStats, PairingNotice,
    SharedOutbox, StoreError,
};

/// Delivery settings of one channel (`[plugins.<name>.queue]`, see
/// [`QueueSettings`](super::QueueSettings)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryLimits {
    /// Time between two messages to one conversation once its burst is used, ms.
    pub interval_ms: u64,
    /// Messages one conversation may get at once.
    pub burst: u32,
    /// Attempts before a transiently failing message is given up.
    pub max_attempts: u32,
    /// First retry delay, ms (doubled per attempt, with jitter).
    pub retry_base_ms: u64,
    /// Longest retry delay, ms.
    pub retry_max_ms: u64,
    /// Sends in flight at once per channel (each to another conversation).
    pub concurrency: usize,
    /// What starting the worker does with sends a crash left in doubt.
    pub in_doubt: InDoubt,
    /// How long stopping waits for the sends in flight, ms.
    pub drain_timeout_ms: u64,
    /// Look at the store this often even without a local wake-up (cluster
    /// mode: other nodes commit replies of this account too); `None`:
    /// only when woken or due.
    pub recheck: Option<Duration>,
}

/// How an outbound message is kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    conversation: String,
    thread: Option<String>,
    text: String,
    markdown: bool,
    reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<StoredAttachment>,
}

/// An attachment as kept in an outbox row (the file stays in the blob store).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAttachment {
    kind: String,
    blob: String,
    file_name: String,
    mime_type: String,
    size: u64,
    caption: Option<String>,
}

impl StoredAttachment {
    fn from_wit(a: &OutboundAttachment) -> Self {
        let kind = match a.kind {
            AttachmentKind::Image => "image",
            AttachmentKind::Audio => "audio",
            AttachmentKind::Voice => "voice",
            AttachmentKind::Video => "video",
            AttachmentKind::Document => "document",
            AttachmentKind::Sticker => "sticker",
        };
        StoredAttachment {
            kind: kind.into(),
            blob: a.blob.clone(),
            file_name: a.file_name.clone(),
            mime_type: a.mime_type.clone(),
            size: a.size,
            caption: a.caption.clone(),
        }
    }

    fn to_wit(&self) -> OutboundAttachment {
        let kind = match self.kind.as_str() {
            "image" => AttachmentKind::Image,
            "audio" => AttachmentKind::Audio,
            "voice" => AttachmentKind::Voice,
            "video" => AttachmentKind::Video,
            "sticker" => AttachmentKind::Sticker,
            _ => AttachmentKind::Document,
        };
        OutboundAttachment {
            kind,
            blob: self.blob.clone(),
            file_name: self.file_name.clone(),
            mime_type: self.mime_type.clone(),
            size: self.size,
            caption: self.caption.clone(),
        }
    }
}

impl Stored {
    fn from_message(m: &OutboundMessage) -> Self {
        Stored {
            conversation: m.conversation.clone(),
            thread: m.thread.clone(),
            text: m.text.clone(),
            markdown: matches!(m.format, TextFormat::Markdown),
            reply_to: m.reply_to.clone(),
            attachments: m
                .attachments
                .iter()
                .map(StoredAttachment::from_wit)
                .collect(),
        }
    }

    fn to_message(&self, plain: bool) -> OutboundMessage {
        OutboundMessage {
            conversation: self.conversation.clone(),
            thread: self.thread.clone(),
            text: self.text.clone(),
            format: if self.markdown && !plain {
                TextFormat::Markdown
            } else {
                TextFormat::Plain
            },
            reply_to: self.reply_to.clone(),
            attachments: self
                .attachments
                .iter()
                .map(StoredAttachment::to_wit)
                .collect(),
        }
    }
}

/// The outbox of every channel.
pub struct Outbox {
    store: SharedOutbox,
    wakers: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
}

impl Outbox {
    /// An outbox over `store`.
    pub fn new(store: SharedOutbox) -> Arc<Self> {
        Arc::new(Outbox {
            store,
            wakers: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn waker(&self, channel: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(channel.to_string())
            .or_default()
            .clone()
    }

    /// `m` as an outbox row.
    fn row(m: &OutboundMessage) -> Result<NewOutbound, StoreError> {
        Ok(NewOutbound {
            conversation: m.conversation.clone(),
            message: serde_json::to_string(&Stored::from_message(m))
                .map_err(|e| StoreError::Corrupt(format!("encoding an outbound message: {e}")))?,
            blobs: m.attachments.iter().map(|a| a.blob.clone()).collect(),
        })
    }

    /// `message` as a notice of `channel` for the store to commit together
    /// with the state it announces (a pairing code); call [`Outbox::wake`]
    /// once committed.
    pub fn notice(
        &self,
        channel: &str,
        message: &OutboundMessage,
    ) -> Result<PairingNotice, StoreError> {
        Ok(PairingNotice {
            outbox: channel.to_string(),
            account: DEFAULT_ACCOUNT.to_string(),
            message: Self::row(message)?,
        })
    }

    /// Wake `channel`'s delivery worker (something was committed for it,
    /// here or, in a cluster, on another node).
    pub fn wake(&self, channel: &str) {
        self.waker(channel).notify_one();
    }

    fn enqueue(
        &self,
        channel: &str,
        link: InboxLink,
        messages: &[OutboundMessage],
    ) -> Result<(), ChannelError> {
        let rows: Vec<NewOutbound> = messages
            .iter()
            .map(Self::row)
            .collect::<Result<_, StoreError>>()
            .map_err(|error| ChannelError::Store {
                channel: channel.to_string(),
                error,
            })?;
        self.store
            .outbox_enqueue(channel, DEFAULT_ACCOUNT, link, &rows)
            .map_err(|error| ChannelError::Store {
                channel: channel.to_string(),
                error,
            })?;
        if !rows.is_empty() {
            self.waker(channel).notify_one();
        }
        Ok(())
    }

    /// Commit the final chunks of an answer, settling the inbound message
    /// `inbox` (if any) as answered in the same transaction; they are
    /// delivered in order by the channel's worker. An empty `messages`
    /// only settles.
    pub fn enqueue_final(
        &self,
        channel: &str,
        inbox: Option<InboxRef>,
        messages: Vec<OutboundMessage>,
    ) -> Result<(), ChannelError> {
        let link = match inbox {
            Some(r) => InboxLink::Answers(r.seq),
            None => InboxLink::None,
        };
        self.enqueue(channel, link, &messages)
    }

    /// Commit a notice (pairing code, rate-limit or queue notice).
    pub fn enqueue_notice(
        &self,
        channel: &str,
        message: OutboundMessage,
    ) -> Result<(), ChannelError> {
        self.enqueue(channel, InboxLink::None, &[message])
    }

    /// Record delivery statuses `channel`'s platform reported against the
    /// messages the outbox sent (unknown ids, such as messages streamed by
    /// edits, are counted but not kept). A `failed` status shows in the
    /// channel's health with its reason.
    pub fn record_statuses(&self, channel: &str, statuses: &[DeliveryStatus]) {
        for st in statuses {
            let state = match st.state {
                WitDeliveryState::Sent => DeliveryState::Sent,
                WitDeliveryState::Delivered => DeliveryState::Delivered,
                WitDeliveryState::Read => DeliveryState::Read,
                WitDeliveryState::Failed => DeliveryState::Failed,
            };
            metrics::counter!("pincer_channel_delivery_status_total", "channel" => channel.to_string(), "state" => state.as_str())
                .increment(1);
            if state == DeliveryState::Failed {
                metrics::counter!("pincer_channel_delivery_failed_total", "channel" => channel.to_string())
                    .increment(1);
                tracing::warn!(channel, message_id = %st.message_id, conversation = %st.conversation, detail = st.detail.as_deref().unwrap_or(""), "the platform reports a message as not delivered");
            }
            match self
                .store
                .outbox_status(channel, &st.message_id, state, st.detail.as_deref())
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(channel, message_id = %st.message_id, state = state.as_str(), "status of a message the outbox did not send");
                }
                Err(e) => {
                    tracing::warn!(channel, message_id = %st.message_id, error = %e, "recording a delivery status failed");
                }
            }
        }
    }

    /// Blob handles waiting messages reference (the blob store keeps them).
    pub fn blobs_in_use(&self) -> Result<Vec<String>, StoreError> {
        self.store.outbox_blobs_in_use()
    }

    /// How the outbox of `channel` stands.
    pub fn stats(&self, channel: &str) -> Result<OutboxStats, StoreError> {
        self.store.outbox_stats(channel)
    }
}

/// What to do after a failed send.
#[derive(Debug, PartialEq)]
enum Next {
    /// Retry after this long; whether it counts as an attempt; as plain text.
    Retry(Duration, bool, bool),
    /// Give up.
    Fail,
}

/// Decide what a failure means (pure, for tests).
fn next_step(
    error: &ChannelError,
    item: &OutboxItem,
    limits: &DeliveryLimits,
    jitter: f64,
) -> Next {
    let backoff = || {
        let exp = limits
            .retry_base_ms
            .saturating_mul(1u64 << item.attempts.min(20))
            .min(limits.retry_max_ms.max(1));
        Duration::from_millis((exp as f64 * (0.75 + 0.5 * jitter)) as u64)
    };
    let last_attempt = item.attempts + 1 >= limits.max_attempts.max(1);
    match error {
        ChannelError::Call { error, .. } => match error.plugin_error() {
            Some(PluginError::RateLimited { retry_after_ms, .. }) => Next::Retry(
                Duration::from_millis((*retry_after_ms).max(1)),
                false,
                item.plain,
            ),
            Some(PluginError::Formatting { .. }) if !item.plain => {
                Next::Retry(Duration::ZERO, false, true)
            }
            Some(
                PluginError::Permanent { .. }
                | PluginError::Auth { .. }
                | PluginError::Config { .. }
                | PluginError::Unsupported { .. }
                | PluginError::Formatting { .. },
            ) => Next::Fail,
            // At the instance cap or reloading: wait without spending an
            // attempt (a loaded machine must not use the attempts up).
            None if matches!(error, CallError::Busy { .. } | CallError::NotLoaded(_)) => {
                Next::Retry(backoff().max(Duration::from_millis(100)), false, item.plain)
            }
            // Transient, and host-side failures (trap, timeout).
            _ if last_attempt => Next::Fail,
            _ => Next::Retry(backoff(), true, item.plain),
        },
        // Not running or reloading: wait without spending an attempt.
        ChannelError::Unavailable(_) | ChannelError::Unknown(_) => {
            Next::Retry(Duration::from_secs(1).max(backoff()), false, item.plain)
        }
        _ if last_attempt => Next::Fail,
        _ => Next::Retry(backoff(), true, item.plain),
    }
}

/// Tells a delivery worker to stop: it takes no new message and ends once
/// its sends in flight are done or `drain_timeout_ms` has passed (sends
/// still in flight then stay marked, in doubt, for the next start).
#[derive(Debug, Clone, Default)]
pub struct Drain(tokio_util::sync::CancellationToken);

impl Drain {
    /// Ask the worker to stop.
    pub fn stop(&self) {
        self.0.cancel();
    }

    /// The token [`stop`](Self::stop) cancels (for other tasks that stop
    /// with the worker).
    pub(crate) fn token(&self) -> tokio_util::sync::CancellationToken {
        self.0.clone()
    }
}

/// What one send task ended with.
enum Sent {
    /// The plugin answered.
    Called(Result<String, ChannelError>),
    /// The row was not waiting any more (nothing was sent).
    Skipped,
    /// Marking the row in flight failed (nothing was sent).
    NotMarked(StoreError),
}

/// Settle the sends an earlier process left in flight, as `how` says.
fn recover(outbox: &Outbox, channel: &str, how: InDoubt) {
    match outbox.store.outbox_recover(channel, how) {
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            metrics::counter!("pincer_channel_outbox_in_doubt_total", "channel" => channel.to_string())
                .increment(rows.len() as u64);
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            tracing::warn!(
                channel,
                ?ids,
                resend = how == InDoubt::Resend,
                "sends in flight when the gateway stopped: the platform may or may not have them"
            );
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "reading the sends left in flight failed");
        }
    }
}

/// Run the delivery worker of `runner`'s channel until `drain` stops it
/// (or the task is aborted).
pub(crate) async fn deliver(
    outbox: Arc<Outbox>,
    runner: Arc<ChannelRunner>,
    limits: DeliveryLimits,
    drain: Drain,
) {
    let channel = runner.name().to_string();
    let wake = outbox.waker(&channel);
    recover(&outbox, &channel, limits.in_doubt);
    // Per conversation: when its bucket is next full enough to send, and
    // the tokens left (a token bucket of `burst`, one per `interval`).
    let mut buckets: HashMap<String, (Instant, f64)> = HashMap::new();
    let mut in_flight: JoinSet<(OutboxItem, Sent)> = JoinSet::new();
    let mut flying: std::collections::HashSet<String> = std::collections::HashSet::new();
    let interval = Duration::from_millis(limits.interval_ms.max(1));
    let burst = f64::from(limits.burst.max(1));
    let mut store_backoff = Duration::from_millis(100);
    let mut last_prune = 0i64;
    publish_stats(&outbox, &channel);
    loop {
        if drain.0.is_cancelled() {
            finish_draining(&outbox, &channel, &runner, &limits, in_flight).await;
            return;
        }
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = Instant::now();
        let now_ms = unix_ms();
        let mut wait: Option<Instant> = None;
        if now_ms - last_prune > 3_600_000 {
            last_prune = now_ms;
            if let Err(e) = outbox
                .store
                .outbox_prune(now_ms - super::inbox::DEDUPE_KEEP_MS, 1000)
            {
                tracing::warn!(channel = %channel, error = %e, "pruning the outbox failed");
            }
        }
        let room = limits.concurrency.max(1).saturating_sub(in_flight.len());
        if room > 0 {
            match outbox.store.outbox_due(&channel, now_ms, 256) {
                Ok(due) => {
                    store_backoff = Duration::from_millis(100);
                    for item in due {
                        if in_flight.len() >= limits.concurrency.max(1) {
                            break;
                        }
                        if flying.contains(&item.conversation) {
                            continue;
                        }
                        // Refill the conversation's bucket.
                        let (at, tokens) = buckets
                            .entry(item.conversation.clone())
                            .or_insert((now, burst));
                        let refill = now.saturating_duration_since(*at).as_secs_f64()
                            / interval.as_secs_f64();
                        *tokens = (*tokens + refill).min(burst);
                        *at = now;
                        if *tokens < 1.0 {
                            let ready = now + interval.mul_f64(1.0 - *tokens);
                            wait = Some(wait.map_or(ready, |w| w.min(ready)));
                            continue;
                        }
                        *tokens -= 1.0;
                        flying.insert(item.conversation.clone());
                        let runner = runner.clone();
                        let store = outbox.store.clone();
                        in_flight.spawn(async move {
                            let sent = send_one(&store, &runner, &item).await;
                            (item, sent)
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "reading the outbox failed; retrying");
                    wait = Some(now + store_backoff);
                    store_backoff = (store_backoff * 2).min(Duration::from_secs(10));
                }
            }
            if buckets.len() > 10_000 {
                buckets.retain(|_, (at, _)| now.saturating_duration_since(*at) < interval * 60);
            }
            // The next retry that falls due (rows not yet due).
            match outbox.store.outbox_next_due(&channel) {
                Ok(Some(next)) if next > now_ms => {
                    let at = now + Duration::from_millis((next - now_ms) as u64);
                    wait = Some(wait.map_or(at, |w| w.min(at)));
                }
                Ok(Some(_)) if in_flight.is_empty() && wait.is_none() => {
                    // Due, yet nothing was taken (never expected): look
                    // again soon rather than sleep until the next commit.
                    wait = Some(now + Duration::from_millis(100));
                }
                _ => {}
            }
        }
        if let Some(every) = limits.recheck {
            let at = now + every;
            wait = Some(wait.map_or(at, |w| w.min(at)));
        }
        let sleep = async {
            match wait {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Some(Ok((item, sent))) => {
                        flying.remove(&item.conversation);
                        settle(&outbox, &channel, &runner, &limits, item, sent);
                        publish_stats(&outbox, &channel);
                    }
                    Some(Err(e)) => {
                        // Never expected (send tasks catch panics); forget
                        // every conversation so none is blocked for good.
                        tracing::error!(channel = %channel, error = %e, "an outbox send task ended abnormally");
                        flying.clear();
                    }
                    None => {}
                }
            }
            _ = &mut woken => {}
            _ = sleep => {}
            _ = drain.0.cancelled() => {}
        }
    }
}

/// Mark `item` in flight, then send it (the mark is committed before the
/// plugin is called, so a crash leaves it in doubt, never unknown).
async fn send_one(store: &SharedOutbox, runner: &ChannelRunner, item: &OutboxItem) -> Sent {
    match store.outbox_begin(item.id) {
        Ok(true) => {}
        Ok(false) => return Sent::Skipped,
        Err(e) => return Sent::NotMarked(e),
    }
    let call = async {
        match serde_json::from_str::<Stored>(&item.message) {
            Ok(stored) => {
                // The same key on every attempt at this row (a retry or a
                // resend after a crash), so the platform can drop doubles.
                let key = crate::plugins::host::delivery::outbox_key(item.id);
                runner
                    .send_keyed(&stored.to_message(item.plain), Some(key))
                    .await
            }
            Err(e) => Err(ChannelError::Store {
                channel: runner.name().to_string(),
                error: StoreError::Corrupt(format!("outbox message: {e}")),
            }),
        }
    };
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(r) => Sent::Called(r),
        Err(_) => Sent::Called(Err(ChannelError::Store {
            channel: runner.name().to_string(),
            error: StoreError::Corrupt("the send panicked".into()),
        })),
    }
}

/// The worker was told to stop: let the sends in flight finish within the
/// drain timeout and record their results.
async fn finish_draining(
    outbox: &Outbox,
    channel: &str,
    runner: &ChannelRunner,
    limits: &DeliveryLimits,
    mut in_flight: JoinSet<(OutboxItem, Sent)>,
) {
    if in_flight.is_empty() {
        return;
    }
    tracing::info!(
        channel,
        sends = in_flight.len(),
        "stopping: letting the sends in flight finish"
    );
    let deadline = Instant::now() + Duration::from_millis(limits.drain_timeout_ms);
    loop {
        match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            Ok(Some(Ok((item, sent)))) => settle(outbox, channel, runner, limits, item, sent),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    channel,
                    sends = in_flight.len(),
                    "drain timeout: sends still in flight stay in doubt for the next start"
                );
                in_flight.abort_all();
                break;
            }
        }
    }
    publish_stats(outbox, channel);
}

fn settle(
    outbox: &Outbox,
    channel: &str,
    runner: &ChannelRunner,
    limits: &DeliveryLimits,
    item: OutboxItem,
    sent: Sent,
) {
    let result = match sent {
        Sent::Called(r) => r,
        Sent::Skipped => return,
        Sent::NotMarked(e) => {
            // Nothing was sent; the row is due again at once.
            tracing::warn!(channel, id = item.id, error = %e, "marking an outbox send failed");
            return;
        }
    };
    let stored = match result {
        Ok(platform_id) => {
            metrics::counter!("pincer_channel_outbox_sent_total", "channel" => channel.to_string())
                .increment(1);
            tracing::debug!(channel, id = item.id, %platform_id, "outbox message delivered");
            outbox.store.outbox_delivered(item.id, &platform_id)
        }
        Err(e) => {
            let cause = e.to_string();
            runner.update(|s| s.last_error = Some(format!("send: {cause}")));
            match next_step(&e, &item, limits, rand::random::<f64>()) {
                Next::Retry(after, counts, plain) => {
                    let attempts = item.attempts + u32::from(counts);
                    metrics::counter!("pincer_channel_outbox_retries_total", "channel" => channel.to_string())
                        .increment(1);
                    tracing::info!(channel, id = item.id, attempts, retry_in_ms = after.as_millis() as u64, plain, error = %cause, "outbox send failed; will retry");
                    let next = unix_ms()
                        .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                    outbox
                        .store
                        .outbox_retry(item.id, next, attempts, plain, &cause)
                }
                Next::Fail => {
                    metrics::counter!("pincer_channel_outbox_failed_total", "channel" => channel.to_string())
                        .increment(1);
                    tracing::warn!(channel, id = item.id, attempts = item.attempts + 1, error = %cause, "outbox message failed; giving up");
                    outbox
                        .store
                        .outbox_failed(item.id, item.attempts + 1, &cause)
                }
            }
        }
    };
    if let Err(e) = stored {
        // The row stays marked in flight: settled as in doubt at the next
        // start (at least once by default).
        tracing::warn!(channel, id = item.id, error = %e, "recording an outbox result failed");
    }
}

fn publish_stats(outbox: &Outbox, channel: &str) {
    if let Ok(s) = outbox.store.outbox_stats(channel) {
        metrics::gauge!("pincer_channel_outbox_depth", "channel" => channel.to_string())
            .set(s.depth as f64);
        metrics::gauge!("pincer_channel_outbox_failed", "channel" => channel.to_string())
            .set(s.failed as f64);
    }
}

/// Unix ms now (the store's retry times are wall-clock).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DeliveryLimits {
        DeliveryLimits {
            interval_ms: 1000,
            burst: 3,
            max_attempts: 3,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            concurrency: 4,
            in_doubt: InDoubt::Resend,
            recheck: None,
            drain_timeout_ms: 1000,
        }
    }

    fn item(attempts: u32, plain: bool) -> OutboxItem {
        OutboxItem {
            id: 1,
            conversation: "c".into(),
            message: String::new(),
            attempts,
            plain,
        }
    }

    fn err(e: PluginError) -> ChannelError {
        ChannelError::Call {
            channel: "t".into(),
            error: CallError::Plugin {
                call: "send",
                error: e,
            },
        }
    }

    #[test]
    fn failures_map_to_retries_or_give_up() {
        let l = limits();
        let transient = err(PluginError::Transient {
            message: "x".into(),
        });
        assert_eq!(
            next_step(&transient, &item(0, false), &l, 0.5),
            Next::Retry(Duration::from_millis(1000), true, false)
        );
        assert_eq!(
            next_step(&transient, &item(1, false), &l, 0.5),
            Next::Retry(Duration::from_millis(2000), true, false)
        );
        assert_eq!(next_step(&transient, &item(2, false), &l, 0.5), Next::Fail);
        let limited = err(PluginError::RateLimited {
            retry_after_ms: 1500,
            message: "x".into(),
        });
        assert_eq!(
            next_step(&limited, &item(2, false), &l, 0.0),
            Next::Retry(Duration::from_millis(1500), false, false)
        );
        let fmt = err(PluginError::Formatting {
            message: "x".into(),
        });
        assert_eq!(
            next_step(&fmt, &item(0, false), &l, 0.0),
            Next::Retry(Duration::ZERO, false, true)
        );
        assert_eq!(next_step(&fmt, &item(0, true), &l, 0.0), Next::Fail);
        for e in [
            PluginError::Permanent {
                message: "x".into(),
            },
            PluginError::Auth {
                message: "x".into(),
            },
            PluginError::Config {
                message: "x".into(),
            },
        ] {
            assert_eq!(next_step(&err(e), &item(0, false), &l, 0.0), Next::Fail);
        }
    }
}
