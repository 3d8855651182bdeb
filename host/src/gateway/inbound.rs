//! Channel messages in: every inbound message from a channel
//! plugin is deduplicated by its platform id (durably, so a redelivered
//! update is never answered twice, even across restarts), routed to the
//! session of its conversation and answered by the agent (the answer is
//! streamed back by [`channels::reply`](crate::channels::reply)). A sender
//! over its rate (see [`sender_rate`](super::sender_rate)) starts nothing
//! and is told to slow down once; a message to a session whose queue is
//! full is not answered, and its sender is told.

use std::sync::Arc;

use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::Gateway;
use super::runs::{Origin, RunSpec, StartOutcome};
use super::sender_rate::Verdict;
use crate::channels::Inbound;
use crate::channels::reply::notify;
use crate::store::NewSession;

/// What a sender over the rate limit is told (once per stretch).
pub const SLOW_DOWN_NOTICE: &str =
    "⚠️ You are sending messages too fast, so this one was not answered. Please slow down.";

/// The session key of a channel conversation.
pub fn channel_session_key(channel: &str, conversation: &str) -> String {
    format!("agent:main:{channel}:direct:{conversation}")
}

/// Route channel messages to runs until the gateway stops.
pub fn spawn(gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let mut rx = gw.runtime.channels.subscribe_inbound();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(msg) => route(&gw, msg),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "inbound router lagged; messages were skipped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// Route one inbound message.
pub fn route(gw: &Arc<Gateway>, msg: Inbound) {
    if gw.shutting_down() {
        return;
    }
    match gw
        .sessions
        .mark_inbound(&msg.channel, &msg.id, super::now_ms())
    {
        Ok(true) => {}
        Ok(false) => {
            debug!(channel = %msg.channel, id = %msg.id, "duplicate inbound message ignored");
            return;
        }
        Err(e) => {
            warn!(channel = %msg.channel, error = %e, "inbound dedupe failed; handling anyway");
        }
    }
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
        return;
    }
    let key = channel_session_key(&msg.channel, &msg.conversation);
    let init = NewSession {
        agent_id: "main".into(),
        channel: Some(msg.channel.clone()),
        conversation: Some(msg.conversation.clone()),
    };
    if let Err(e) = gw.sessions.ensure_session(&key, &init) {
        warn!(channel = %msg.channel, error = %e, "creating channel session");
        return;
    }
    let spec = RunSpec {
        run_id: format!("{}:{}", msg.channel, msg.id),
        session_key: key,
        message: msg.text.clone(),
        origin: Origin::Channel {
            channel: msg.channel.clone(),
            conversation: msg.conversation.clone(),
            reply_to: Some(msg.id.clone()),
            sender: msg.sender.clone(),
            thread: msg.thread.clone(),
            chat: msg.chat,
        },
        timeout: None,
        attachments: crate::channels::attachments::pending(&msg),
    };
    if let StartOutcome::QueueFull { cap } = gw.runs.start(gw, spec) {
        warn!(channel = %msg.channel, sender = %msg.sender, id = %msg.id, cap, "session queue full; message not answered");
        notify(
            &gw.runtime.channels,
            &msg.channel,
            &msg.conversation,
            Some(msg.id.clone()),
            super::run_manager::QUEUE_FULL_NOTICE.into(),
        );
    }
}
