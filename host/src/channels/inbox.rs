//! The durable inbox's processing side: committing what a channel received
//! (with its platform cursor, in one store transaction) and, per channel, a
//! processor that takes committed messages in commit order, applies the
//! access policy and hands accepted ones to the [`InboundHandler`] (the
//! gateway, which turns them into runs). One message per conversation is in
//! flight at a time, so per-conversation order holds; at most
//! `inbox_max_in_flight` conversations are served at once and at most
//! `inbox_batch` committed messages are held in memory. A message is settled
//! in the store when it is refused, answered (its final reply committed to
//! the outbox, see [`super::outbox`]) or finished without an answer; an
//! unsettled message is processed again after a restart.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::access::Admission;
use super::pairing::DEFAULT_ACCOUNT;
use super::{AccessGate, ChannelError, ChannelRunner, Inbound};
use crate::store::{
    Fence, InboxItem, InboxSettled, NewInbound, SharedInbox, SharedLeases, StoreError,
};

/// Committed messages kept in memory per channel (default of
/// [`QueueSettings::inbox_batch`](super::QueueSettings)).
pub const DEFAULT_BATCH: usize = 256;
/// InboxSettled inbox rows are kept this long for deduplication, then pruned.
pub const DEDUPE_KEEP_MS: i64 = 7 * 24 * 3_600_000;

/// Where a committed inbound message lives in the inbox (handed along with
/// the run so its final reply can settle it as answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxRef {
    /// The inbox sequence number.
    pub seq: i64,
}

/// A committed message the access policy accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The message.
    pub message: Inbound,
    /// Where it is in the inbox.
    pub inbox: InboxRef,
}

/// How handling an accepted message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Processed (answered, or deliberately not answered): settle it.
    Done,
    /// It could not be processed now (a store failure): leave it unsettled
    /// and hand it over again later, before anything else of its
    /// conversation.
    RetryLater,
}

/// Turns accepted messages into work (the gateway's runs). The returned
/// future ends when the message's processing has ended (its run finished);
/// only then does the next message of the same conversation go out.
pub trait InboundHandler: Send + Sync + 'static {
    /// Handle one accepted message.
    fn handle(&self, accepted: Accepted) -> BoxFuture<'static, Handled>;
}

/// A handler that hands accepted messages to a bounded channel (for
/// embedders and tests without a gateway; see
/// [`ChannelManager::subscribe_inbound`](super::ChannelManager::subscribe_inbound)).
/// A full channel holds the processor back; nothing is dropped.
pub(crate) struct ChannelHandler(pub(crate) mpsc::Sender<Inbound>);

impl InboundHandler for ChannelHandler {
    fn handle(&self, accepted: Accepted) -> BoxFuture<'static, Handled> {
        let tx = self.0.clone();
        Box::pin(async move {
            let _ = tx.send(accepted.message).await;
            Handled::Done
        })
    }
}

/// The inbox of every channel: commits and the shared handler slot.
pub struct Inbox {
    store: SharedInbox,
    /// The store's leases (cluster mode), for fenced commits.
    leases: std::sync::OnceLock<SharedLeases>,
    handler: Mutex<Option<Arc<dyn InboundHandler>>>,
    handler_set: Notify,
}

impl Inbox {
    /// An inbox over `store`.
    pub fn new(store: SharedInbox) -> Arc<Self> {
        Arc::new(Inbox {
            leases: std::sync::OnceLock::new(),
            store,
            handler: Mutex::new(None),
            handler_set: Notify::new(),
        })
    }

    /// Check fenced commits through `leases` (cluster mode; the same
    /// database as the inbox). Set once; later calls are ignored.
    pub fn set_leases(&self, leases: SharedLeases) {
        let _ = self.leases.set(leases);
    }

    /// Install the handler accepted messages go to (replacing any other).
    /// Until one is installed, committed messages wait in the store.
    pub fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        *self.handler.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
        self.handler_set.notify_waiters();
    }

    /// Install `handler` unless one is installed already; whether it was.
    pub(crate) fn set_handler_if_none(&self, handler: Arc<dyn InboundHandler>) -> bool {
        let mut h = self.handler.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_some() {
            return false;
        }
        *h = Some(handler);
        drop(h);
        self.handler_set.notify_waiters();
        true
    }

    fn handler(&self) -> Option<Arc<dyn InboundHandler>> {
        self.handler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The committed platform cursor of `channel` (default account).
    pub fn cursor(&self, channel: &str) -> Result<Option<String>, StoreError> {
        self.store.inbox_cursor(channel, DEFAULT_ACCOUNT)
    }

    /// Commit `messages` of `channel` with `cursor` in one transaction;
    /// returns how many were new (the rest were duplicates).
    pub fn commit(
        &self,
        channel: &str,
        messages: &[Inbound],
        cursor: Option<&str>,
    ) -> Result<usize, ChannelError> {
        self.commit_with(channel, messages, cursor, None)
    }

    /// As [`commit`](Self::commit), checked against the account's lease
    /// `fence` in the same transaction (cluster mode): refused with
    /// [`StoreError::Fenced`], committing nothing, once another node took
    /// the lease over.
    pub fn commit_fenced(
        &self,
        channel: &str,
        messages: &[Inbound],
        cursor: Option<&str>,
        fence: &Fence,
    ) -> Result<usize, ChannelError> {
        self.commit_with(channel, messages, cursor, Some(fence))
    }

    fn commit_with(
        &self,
        channel: &str,
        messages: &[Inbound],
        cursor: Option<&str>,
        fence: Option<&Fence>,
    ) -> Result<usize, ChannelError> {
        let rows: Vec<NewInbound> = messages
            .iter()
            .map(|m| {
                Ok(NewInbound {
                    platform_id: m.id.clone(),
                    conversation: m.conversation.clone(),
                    payload: serde_json::to_string(m)?,
                })
            })
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| ChannelError::Store {
                channel: channel.to_string(),
                error: StoreError::Corrupt(format!("encoding an inbound message: {e}")),
            })?;
        let committed = match (fence, self.leases.get()) {
            (Some(fence), Some(leases)) => {
                leases.commit_inbound_fenced(channel, DEFAULT_ACCOUNT, &rows, cursor, fence)
            }
            (Some(_), None) => Err(StoreError::Fenced(format!(
                "`{channel}`: a fenced commit on a store without leases"
            ))),
            (None, _) => self
                .store
                .commit_inbound(channel, DEFAULT_ACCOUNT, &rows, cursor),
        };
        let new = committed.map_err(|error| ChannelError::Store {
            channel: channel.to_string(),
            error,
        })?;
        metrics::counter!("pincer_channel_inbox_committed_total", "channel" => channel.to_string())
            .increment(new as u64);
        let dup = rows.len() - new;
        if dup > 0 {
            metrics::counter!("pincer_channel_inbox_duplicates_total", "channel" => channel.to_string())
                .increment(dup as u64);
            tracing::debug!(
                channel,
                duplicates = dup,
                "redelivered inbound messages ignored"
            );
        }
        Ok(new)
    }

    /// Settle message `seq`, logging a store failure (it is processed
    /// again after a restart then; the answer is not doubled because an
    /// answered message is settled with its reply).
    fn settle(&self, channel: &str, seq: i64, how: InboxSettled) {
        if let Err(e) = self.store.inbox_settle(seq, how) {
            tracing::warn!(channel, seq, error = %e, "settling an inbox message failed");
        }
    }

    /// The reply progress recorded on unsettled message `seq`.
    pub fn progress(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.store.inbox_progress(seq)
    }

    /// Record the reply progress of unsettled message `seq`.
    pub fn set_progress(&self, seq: i64, progress: &str) -> Result<(), StoreError> {
        self.store.inbox_set_progress(seq, progress)
    }

    /// Unsettled messages of `channel`.
    pub fn pending(&self, channel: &str) -> Result<u64, StoreError> {
        Ok(self.store.inbox_stats(channel)?.pending)
    }
}

/// Processing limits of one channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessorLimits {
    pub batch: usize,
    pub max_in_flight: usize,
    /// The one timer: this often the processor reads the inbox and sweeps
    /// it for rows it missed, even without a wake-up (a safety net: a
    /// commit wakes it, on another node through the cluster's wake-ups).
    /// [`SWEEP_EVERY`] on one node; `[store] safety_poll_ms` in cluster
    /// mode.
    pub safety_net: Duration,
}

/// Run the processor of `runner`'s channel until the task is aborted.
/// `wake` is notified on every commit.
pub(crate) async fn process(
    inbox: Arc<Inbox>,
    access: Arc<AccessGate>,
    runner: Arc<ChannelRunner>,
    wake: Arc<Notify>,
    limits: ProcessorLimits,
) {
    let channel = runner.name().to_string();
    let batch = limits.batch.max(1);
    let max_in_flight = limits.max_in_flight.max(1);
    let mut buffer: VecDeque<InboxItem> = VecDeque::new();
    let mut loaded_to = 0i64;
    let mut busy: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<(InboxItem, Handled)> = JoinSet::new();
    // Messages to hand over again (their conversation stays busy), when,
    // and how often they were retried.
    let mut delayed: Vec<(tokio::time::Instant, InboxItem)> = Vec::new();
    let mut retries: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
    let mut backoff = Duration::from_millis(100);
    let mut last_prune = 0i64;
    let mut exhausted = false;
    // Seqs buffered, in flight or waiting to be handed over again: what the
    // sweep must not hand over a second time.
    let mut known: HashSet<i64> = HashSet::new();
    let safety_net = limits.safety_net.max(Duration::from_millis(10));
    let mut sweep_at = tokio::time::Instant::now() + safety_net;
    loop {
        let Some(handler) = inbox.handler() else {
            let set = inbox.handler_set.notified();
            tokio::pin!(set);
            set.as_mut().enable();
            if inbox.handler().is_none() {
                set.await;
            }
            continue;
        };
        // Arm the wake-up before reading, so a commit racing the read is
        // never missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if !exhausted && buffer.len() < batch / 2 + 1 {
            let want = batch - buffer.len();
            match inbox.store.inbox_pending(&channel, loaded_to, want) {
                Ok(items) => {
                    backoff = Duration::from_millis(100);
                    exhausted = items.len() < want;
                    if let Some(last) = items.last() {
                        loaded_to = last.seq;
                    }
                    known.extend(items.iter().map(|i| i.seq));
                    buffer.extend(items);
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "reading the inbox failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        // Messages whose handler asked for a retry, when due (their
        // conversation is still busy, so they go before its next one).
        let now_i = tokio::time::Instant::now();
        let mut due_again = Vec::new();
        delayed.retain(|(at, item)| {
            if *at <= now_i {
                due_again.push(item.clone());
                false
            } else {
                true
            }
        });
        // Dispatch in commit order, skipping conversations in flight.
        let mut i = 0;
        while (!due_again.is_empty() || i < buffer.len()) && tasks.len() < max_in_flight {
            let item = if let Some(item) = due_again.pop() {
                item
            } else {
                if busy.contains(&buffer[i].conversation) {
                    i += 1;
                    continue;
                }
                let Some(item) = buffer.remove(i) else { break };
                item
            };
            let message: Inbound = match serde_json::from_str(&item.payload) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(channel = %channel, seq = item.seq, error = %e, "unreadable inbox message; settled without an answer");
                    busy.remove(&item.conversation);
                    known.remove(&item.seq);
                    inbox.settle(&channel, item.seq, InboxSettled::Done);
                    continue;
                }
            };
            match access.admit(&runner, &message) {
                Admission::Allow => {}
                Admission::Refuse => {
                    // A message due again kept its conversation busy.
                    busy.remove(&item.conversation);
                    known.remove(&item.seq);
                    retries.remove(&item.seq);
                    inbox.settle(&channel, item.seq, InboxSettled::Refused);
                    continue;
                }
                Admission::Later => {
                    // Its conversation waits with it (order holds).
                    busy.insert(item.conversation.clone());
                    let n = retries.entry(item.seq).or_insert(0);
                    *n += 1;
                    let wait =
                        Duration::from_millis(200u64 << (*n).min(8)).min(Duration::from_secs(30));
                    delayed.push((tokio::time::Instant::now() + wait, item));
                    continue;
                }
            }
            busy.insert(item.conversation.clone());
            let handler = handler.clone();
            let accepted = Accepted {
                message,
                inbox: InboxRef { seq: item.seq },
            };
            tasks.spawn(async move {
                // A panicking handler ends this message like any other end.
                let handled = match AssertUnwindSafe(handler.handle(accepted))
                    .catch_unwind()
                    .await
                {
                    Ok(h) => h,
                    Err(_) => {
                        tracing::error!(seq = item.seq, "inbound handler panicked");
                        Handled::Done
                    }
                };
                (item, handled)
            });
        }
        // Whatever was due again and found no room waits for the next turn.
        let soon = tokio::time::Instant::now();
        delayed.extend(due_again.into_iter().map(|item| (soon, item)));
        let now = unix_ms();
        if now - last_prune > 3_600_000 {
            last_prune = now;
            if let Err(e) = inbox.store.inbox_prune(now - DEDUPE_KEEP_MS, 1000) {
                tracing::warn!(channel = %channel, error = %e, "pruning the inbox failed");
            }
        }
        let can_read = !exhausted && buffer.len() < batch / 2 + 1;
        if can_read && tasks.len() < max_in_flight {
            continue;
        }
        // (With no room, the next handler to end makes room first.)
        let next_retry = if tasks.len() < max_in_flight {
            delayed.iter().map(|(at, _)| *at).min()
        } else {
            None
        };
        let retry_sleep = async {
            match next_retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Some(Ok((item, Handled::Done))) => {
                        busy.remove(&item.conversation);
                        retries.remove(&item.seq);
                        known.remove(&item.seq);
                        inbox.settle(&channel, item.seq, InboxSettled::Done);
                    }
                    Some(Ok((item, Handled::RetryLater))) => {
                        let n = retries.entry(item.seq).or_insert(0);
                        *n += 1;
                        let wait = Duration::from_millis(200u64 << (*n).min(8)).min(Duration::from_secs(30));
                        tracing::warn!(channel = %channel, seq = item.seq, retries = *n, retry_in_ms = wait.as_millis() as u64, "inbound message not processed; handing it over again later");
                        delayed.push((tokio::time::Instant::now() + wait, item));
                    }
                    Some(Err(e)) => {
                        // Never expected (handlers' panics are caught): no
                        // conversation may stay blocked for good.
                        tracing::error!(channel = %channel, error = %e, "inbound handler task ended abnormally");
                        busy.clear();
                    }
                    None => {}
                }
            }
            _ = &mut woken => exhausted = false,
            _ = retry_sleep => {}
            _ = tokio::time::sleep_until(sweep_at) => {
                sweep_at = tokio::time::Instant::now() + safety_net;
                // Rows above what was read come through the next read.
                exhausted = false;
                if tasks.is_empty() && delayed.is_empty() && buffer.is_empty() {
                    // Idle: no task can have lost track of a row.
                    known.clear();
                }
                let missed = sweep(&inbox, &channel, loaded_to, &known);
                if !missed.is_empty() {
                    tracing::warn!(
                        channel = %channel,
                        seqs = ?missed.iter().map(|i| i.seq).collect::<Vec<_>>(),
                        "pending inbox messages missed by their wake-up were found by the sweep"
                    );
                    metrics::counter!("pincer_channel_inbox_swept_total", "channel" => channel.clone())
                        .increment(missed.len() as u64);
                    known.extend(missed.iter().map(|i| i.seq));
                    // Older than anything buffered: they go first.
                    for item in missed.into_iter().rev() {
                        buffer.push_front(item);
                    }
                }
            }
        }
    }
}

/// How often a single node's processor reads the inbox and looks for
/// pending messages at or below what it has read (a safety net: a message
/// is found by its commit's wake-up; one found by the sweep is logged and
/// counted, `pincer_channel_inbox_swept_total`).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Pending messages of `channel` at or below `loaded_to` that the
/// processor does not hold (`known`), oldest first.
fn sweep(inbox: &Inbox, channel: &str, loaded_to: i64, known: &HashSet<i64>) -> Vec<InboxItem> {
    match inbox.store.inbox_pending(channel, 0, SWEEP_LIMIT) {
        Ok(items) => items
            .into_iter()
            .filter(|i| i.seq <= loaded_to && !known.contains(&i.seq))
            .collect(),
        Err(e) => {
            tracing::warn!(channel, error = %e, "sweeping the inbox failed");
            Vec::new()
        }
    }
}

/// Rows one sweep reads.
const SWEEP_LIMIT: usize = 1_000;

/// Unix ms now (prune ages; stored times come from the store itself).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
