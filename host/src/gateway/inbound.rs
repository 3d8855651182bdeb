//! Channel messages in: the gateway's [`InboundHandler`]. The channel's
//! inbox processor (`crate::channels::inbox`) hands over each committed,
//! deduplicated message the access policy accepted; this module only turns
//! it into a run on the session of its conversation (the answer goes back
//! through `crate::channels::reply` and the durable outbox) and reports
//! when the run has finished. A sender over its rate (see
//! [`sender_rate`](super::sender_rate)) starts nothing and is told to slow
//! down once; a message to a session whose queue is full is not answered,
//! and its sender is told.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::{info, warn};

use super::Gateway;
use super::runs::{Origin, RunSpec, StartOutcome};
use super::sender_rate::Verdict;
use crate::channels::reply::notify;
use crate::channels::{Accepted, Handled, InboundHandler};
use crate::store::NewSession;

/// What a sender over the rate limit is told (once per stretch).
pub const SLOW_DOWN_NOTICE: &str =
    "⚠️ You are sending messages too fast, so this one was not answered. Please slow down.";

/// The session key of a channel conversation: `channel` is the channel
/// key (the plugin name for a `default` account, so its keys are as they
/// always were; `plugin:account` for others), and a forum topic (`thread`)
/// gets its own session (`...:topic:<thread>`, as OpenClaw's).
pub fn channel_session_key(channel: &str, conversation: &str, thread: Option<&str>) -> String {
    match thread.filter(|t| !t.is_empty()) {
        None => format!("agent:main:{channel}:direct:{conversation}"),
        Some(t) => format!("agent:main:{channel}:direct:{conversation}:topic:{t}"),
    }
}

/// The gateway as the channels' inbound handler (holds the gateway weakly:
/// the channel manager it is installed in belongs to the gateway).
pub struct Handler(Weak<Gateway>);

impl InboundHandler for Handler {
    fn handle(&self, accepted: Accepted) -> BoxFuture<'static, Handled> {
        let gw = self.0.clone();
        Box::pin(async move {
            let Some(gw) = gw.upgrade() else {
                // Shutting down: leave the message unsettled for the next start.
                return std::future::pending().await;
            };
            if gw.shutting_down() {
                // Not settled: answered after the restart.
                return std::future::pending().await;
            }
            let run_id = match route(&gw, accepted) {
                Route::Run(id) => id,
                Route::NotAnswered => return Handled::Done,
                Route::Retry => return Handled::RetryLater,
            };
            // The processor sends this conversation's next message only
            // after this run (and with it its final reply) is done.
            while let Some(None) = gw.runs.wait(&run_id, Duration::from_secs(3600)).await {}
            if gw.shutting_down() {
                // Ended by the shutdown: unless its final reply was
                // committed, the message is answered after the restart.
                std::future::pending::<()>().await;
            }
            Handled::Done
        })
    }
}

/// Install the gateway as the channels' inbound handler; committed
/// messages start flowing into runs.
pub fn install(gw: &Arc<Gateway>) {
    gw.runtime
        .channels
        .set_inbound_handler(Arc::new(Handler(Arc::downgrade(gw))));
}

/// What became of an accepted message.
enum Route {
    /// A run answers it.
    Run(String),
    /// Deliberately not answered (sender over its rate, queue full): the
    /// message is settled as done.
    NotAnswered,
    /// Nothing could be started now (a store failure): the message stays
    /// unsettled and is handed over again.
    Retry,
}

/// Start the run answering one accepted message.
fn route(gw: &Arc<Gateway>, accepted: Accepted) -> Route {
    let msg = accepted.message;
    if let Verdict::Refuse { warn } = gw.runs.admit_sender(&msg.channel, &msg.sender) {
        info!(channel = %msg.channel, sender = %msg.sender, id = %msg.id, "sender over the rate limit; message not answered");
        if warn {
            notify(
                &gw.runtime.channels,
                &msg.channel,
                &msg.conversation,
                Some(msg.id.clone()),
                SLOW_DOWN_NOTICE.into(),
            );
        }
        return Route::NotAnswered;
    }
    let key = channel_session_key(&msg.channel, &msg.conversation, msg.thread.as_deref());
    let init = NewSession {
        agent_id: "main".into(),
        channel: Some(msg.channel.clone()),
        conversation: Some(msg.conversation.clone()),
    };
    if let Err(e) = gw.sessions.ensure_session(&key, &init) {
        warn!(channel = %msg.channel, error = %e, "creating channel session failed; the message is handed over again");
        return Route::Retry;
    }
    // The platform id names the run; a message without one takes its
    // inbox position.
    let run_id = if msg.id.is_empty() {
        format!("{}:inbox-{}", msg.channel, accepted.inbox.seq)
    } else {
        format!("{}:{}", msg.channel, msg.id)
    };
    let spec = RunSpec {
        run_id: run_id.clone(),
        session_key: key,
        message: msg.text.clone(),
        origin: Origin::Channel {
            channel: msg.channel.clone(),
            conversation: msg.conversation.clone(),
            reply_to: (!msg.id.is_empty()).then(|| msg.id.clone()),
            sender: msg.sender.clone(),
            thread: msg.thread.clone(),
            chat: msg.chat,
            inbox: Some(accepted.inbox),
        },
        timeout: None,
        attachments: crate::channels::attachments::pending(&msg),
    };
    match gw.runs.start(gw, spec) {
        StartOutcome::QueueFull { cap } => {
            warn!(channel = %msg.channel, sender = %msg.sender, id = %msg.id, cap, "session queue full; message not answered");
            notify(
                &gw.runtime.channels,
                &msg.channel,
                &msg.conversation,
                Some(msg.id.clone()),
                super::run_manager::QUEUE_FULL_NOTICE.into(),
            );
            Route::NotAnswered
        }
        _ => Route::Run(run_id),
    }
}
