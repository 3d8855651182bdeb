//! Cluster mode (several gateways on one PostgreSQL): exactly one receiver
//! per channel account. Each account's [`keep`] task takes the account's
//! lease when nobody holds it, and only while it holds it does this node
//! run the account's receiver (the poll loop, the host-managed sockets),
//! its inbox processor (which turns messages into runs) and its outbox
//! worker (which sends the replies): so a message is processed, and its
//! reply sent, by one node. The holder renews the lease every third of
//! the lease time; a renewal that fails (taken over, or the store
//! unreachable past what the lease surely covers) or a commit the fence
//! refused makes the node give the account up at once (receiver stopped,
//! state `standby`). A graceful stop releases the lease, so another node
//! takes over without waiting for it to run out. Pushes (webhook-mode
//! channels) are served by every node; their inbox dedupe is the store's
//! unique index, shared by all.
//!
//! With one node (SQLite) there is no keeper: the account runs as it
//! always did.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::runner::Gate;
use super::{AccessGate, ChannelRunner, Outbox, QueueSettings, inbox, outbox};
use crate::store::{Fence, SharedLeases};

/// How often the holder's inbox processor and outbox worker look at the
/// store without a wake-up, by default (a safety net: other nodes' commits
/// of pushes and replies wake them through the cluster's wake-ups).
pub const DEFAULT_SAFETY_POLL_MS: u64 = 5_000;
/// Longest a standby node waits between two attempts to take a lease.
const RETRY_MAX: Duration = Duration::from_secs(3);
/// Shortest lease accepted, ms.
pub const MIN_LEASE_MS: u64 = 1_000;

/// The cluster's leases as the channel manager uses them.
#[derive(Clone)]
pub struct Leases {
    /// The store's leases.
    pub store: SharedLeases,
    /// The lease time, ms.
    pub lease_ms: u64,
    /// The safety-net period of the holder's inbox processor and outbox
    /// worker, ms (`[store] safety_poll_ms`).
    pub safety_poll_ms: u64,
}

impl Leases {
    /// Leases of `store` lasting `lease_ms` (at least [`MIN_LEASE_MS`]).
    pub fn new(store: SharedLeases, lease_ms: u64) -> Self {
        Leases {
            store,
            lease_ms: lease_ms.max(MIN_LEASE_MS),
            safety_poll_ms: DEFAULT_SAFETY_POLL_MS,
        }
    }

    /// With `ms` as the safety-net period (at least 10 ms).
    pub fn with_safety_poll(mut self, ms: u64) -> Self {
        self.safety_poll_ms = ms.max(10);
        self
    }

    fn safety_poll(&self) -> Duration {
        Duration::from_millis(self.safety_poll_ms)
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// What one account's keeper runs while it holds the lease.
pub(crate) struct Account {
    pub runner: Arc<ChannelRunner>,
    pub inbox: Arc<inbox::Inbox>,
    pub outbox: Arc<Outbox>,
    pub access: Arc<AccessGate>,
    /// The processor's wake-up (the runner notifies it on commits).
    pub wake: Arc<Notify>,
    pub queue: QueueSettings,
    /// Start the receiver when the lease is won (`autostart`).
    pub autostart: bool,
}

/// The inbox processor and outbox worker of a held account.
struct Held {
    processor: JoinHandle<()>,
    deliverer: JoinHandle<()>,
    drain: outbox::Drain,
}

impl Held {
    fn spawn(a: &Account, safety_net: Duration) -> Held {
        let mut processing = a.queue.processing();
        processing.safety_net = safety_net;
        let mut delivery = a.queue.delivery();
        delivery.recheck = Some(safety_net);
        let drain = outbox::Drain::default();
        Held {
            processor: tokio::spawn(inbox::process(
                a.inbox.clone(),
                a.access.clone(),
                a.runner.clone(),
                a.wake.clone(),
                processing,
            )),
            deliverer: tokio::spawn(outbox::deliver(
                a.outbox.clone(),
                a.runner.clone(),
                delivery,
                drain.clone(),
            )),
            drain,
        }
    }

    /// Stop both (the outbox worker after its sends in flight, within
    /// its drain timeout).
    async fn stop(mut self) {
        self.processor.abort();
        self.drain.stop();
        let _ = (&mut self.deliverer).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.processor.abort();
        self.deliverer.abort();
    }
}

/// Why a held lease ended.
enum Ended {
    /// Stopping (graceful): release it.
    Stopping,
    /// Taken over, refused by the fence, or not renewable in time.
    Lost(String),
}

/// Keep account `a`'s lease until `stop` is cancelled: take it when free,
/// run the account while held, give it up when lost, release it when
/// stopping.
pub(crate) async fn keep(a: Account, leases: Leases, stop: CancellationToken) {
    let key = a.runner.name().to_string();
    let lease = leases.lease();
    // How often a standby node tries to take the lease: a fifth of it,
    // at most RETRY_MAX (a released lease is taken over that soon).
    let retry = (lease / 5).min(RETRY_MAX);
    let node = leases.store.node_id().to_string();
    loop {
        let asked = Instant::now();
        // (The store keeps its blocking work off the async workers.)
        let fence = match leases.store.lease_acquire(&key, leases.lease_ms) {
            Ok(Some(fence)) => fence,
            Ok(None) => {
                if wait_or_stop(&stop, retry).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(channel = %key, error = %e, "taking the account's lease failed; retrying");
                if wait_or_stop(&stop, retry).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(channel = %key, node = %node, token = fence.token, "lease taken: this node receives for the account");
        metrics::counter!("pincer_channel_lease_acquired_total", "channel" => key.clone())
            .increment(1);
        // A refusal noted under an earlier lease is not this one's.
        let _ = futures::FutureExt::now_or_never(a.runner.lease_lost());
        a.runner.set_gate(Gate::Held {
            fence: fence.clone(),
            deadline: asked + lease,
        });
        let held = Held::spawn(&a, leases.safety_poll());
        if a.autostart
            && let Err(e) = a.runner.start_unless_running().await
        {
            super::log_start_error(&key, &e);
        }
        let ended = hold(&a.runner, &leases, fence.clone(), asked + lease, &stop).await;
        a.runner.standby().await;
        held.stop().await;
        match ended {
            Ended::Stopping => {
                match leases.store.lease_release(&fence) {
                    Ok(()) => tracing::info!(channel = %key, "lease released"),
                    Err(e) => {
                        tracing::warn!(channel = %key, error = %e, "releasing the lease failed; it runs out by itself")
                    }
                }
                return;
            }
            Ended::Lost(why) => {
                metrics::counter!("pincer_channel_lease_lost_total", "channel" => key.clone())
                    .increment(1);
                tracing::warn!(channel = %key, node = %node, token = fence.token, reason = %why, "lease lost: this node no longer receives for the account");
                if wait_or_stop(&stop, retry).await {
                    return;
                }
            }
        }
    }
}

/// Renew the lease every third of its time until it is lost or `stop`
/// is cancelled.
async fn hold(
    runner: &Arc<ChannelRunner>,
    leases: &Leases,
    fence: Fence,
    mut deadline: Instant,
    stop: &CancellationToken,
) -> Ended {
    let lease = leases.lease();
    let every = lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopping,
            _ = runner.lease_lost() => return Ended::Lost("a commit was refused by the fence".into()),
            _ = tokio::time::sleep(every) => {}
        }
        let asked = Instant::now();
        match leases.store.lease_renew(&fence, leases.lease_ms) {
            Ok(true) => {
                deadline = asked + lease;
                runner.set_gate(Gate::Held {
                    fence: fence.clone(),
                    deadline,
                });
            }
            Ok(false) => {
                runner.count_fenced("lease renewal", "the lease's token moved on");
                return Ended::Lost("another node took the lease over".into());
            }
            Err(e) => {
                if Instant::now() + every >= deadline {
                    return Ended::Lost(format!("the lease could not be renewed in time: {e}"));
                }
                tracing::warn!(channel = %fence.channel, error = %e, "renewing the lease failed; retrying");
            }
        }
    }
}

/// Wait `d` unless `stop` is cancelled first; true if it was.
async fn wait_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => stop.is_cancelled(),
    }
}
