//! Channel messages in, answers out: every inbound message from a channel
//! plugin is deduplicated by its platform id (durably, so a redelivered
//! update is never answered twice, even across restarts), routed to the
//! session of its conversation, answered by the agent, and the answer is
//! streamed back through the same channel (`send`, then `edit` while it
//! grows when the channel can edit; one final `send` otherwise). A sender
//! over its rate (see [`sender_rate`](super::sender_rate)) starts nothing
//! and is told to slow down once; a message to a session whose queue is
//! full is not answered, and its sender is told.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use super::Gateway;
use super::runs::{Origin, RunSpec, StartOutcome};
use super::sender_rate::Verdict;
use crate::channels::Inbound;
use crate::plugins::bindings::OutboundMessage;
use crate::store::NewSession;

/// Minimum time between edits of a streamed channel reply.
pub const EDIT_INTERVAL: Duration = Duration::from_millis(1000);

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
                gw,
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
        },
        timeout: None,
    };
    if let StartOutcome::QueueFull { cap } = gw.runs.start(gw, spec) {
        warn!(channel = %msg.channel, sender = %msg.sender, id = %msg.id, cap, "session queue full; message not answered");
        notify(
            gw,
            &msg.channel,
            &msg.conversation,
            Some(msg.id.clone()),
            super::run_manager::QUEUE_FULL_NOTICE.into(),
        );
    }
}

/// Send a short notice into a channel conversation, in the background
/// (failures are logged).
pub fn notify(
    gw: &Arc<Gateway>,
    channel: &str,
    conversation: &str,
    reply_to: Option<String>,
    text: String,
) {
    let gw = gw.clone();
    let channel = channel.to_string();
    let msg = OutboundMessage {
        conversation: conversation.to_string(),
        text,
        reply_to,
    };
    tokio::spawn(async move {
        if let Err(e) = gw.runtime.channels.send(&channel, msg).await {
            warn!(%channel, error = %e, "sending a notice");
        }
    });
}

fn chunks(text: &str, max: usize) -> Vec<String> {
    if max == 0 || text.chars().count() <= max {
        return vec![text.to_string()];
    }
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

/// Stream a reply into a channel from `(text so far, done)` updates.
pub async fn stream_reply(
    gw: Arc<Gateway>,
    channel: String,
    conversation: String,
    reply_to: Option<String>,
    mut rx: watch::Receiver<(String, bool)>,
) {
    let caps = gw
        .runtime
        .channels
        .get(&channel)
        .and_then(|r| r.version().ok())
        .and_then(|v| v.channel_capabilities().cloned());
    let can_edit = caps.as_ref().is_some_and(|c| c.edit);
    let max = caps.as_ref().map_or(0, |c| c.max_message_length as usize);
    let mut sent: Option<(String, String)> = None; // (message id, text)
    let send = |text: String| {
        let gw = gw.clone();
        let channel = channel.clone();
        let msg = OutboundMessage {
            conversation: conversation.clone(),
            text,
            reply_to: reply_to.clone(),
        };
        async move { gw.runtime.channels.send(&channel, msg).await }
    };
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let (text, done) = rx.borrow_and_update().clone();
        if !done {
            if !can_edit || text.trim().is_empty() {
                continue;
            }
            let first = chunks(&text, max).swap_remove(0);
            match &sent {
                None => match send(first.clone()).await {
                    Ok(id) => sent = Some((id, first)),
                    Err(e) => warn!(%channel, error = %e, "sending reply"),
                },
                Some((id, old)) if *old != first => {
                    if let Err(e) = gw
                        .runtime
                        .channels
                        .edit(&channel, &conversation, id, &first)
                        .await
                    {
                        warn!(%channel, error = %e, "editing reply");
                    }
                    sent = Some((id.clone(), first));
                }
                Some(_) => {}
            }
            // Platforms rate-limit edits; coalesce updates in between.
            tokio::time::sleep(EDIT_INTERVAL).await;
            continue;
        }
        if text.trim().is_empty() {
            return;
        }
        let mut parts = chunks(&text, max).into_iter();
        if let (Some((id, old)), Some(first)) = (&sent, parts.next()) {
            if *old != first
                && let Err(e) = gw
                    .runtime
                    .channels
                    .edit(&channel, &conversation, id, &first)
                    .await
            {
                warn!(%channel, error = %e, "editing reply");
            }
        } else if let Some(first) = chunks(&text, max).into_iter().next() {
            parts = chunks(&text, max).into_iter();
            parts.next();
            if let Err(e) = send(first).await {
                warn!(%channel, error = %e, "sending reply");
            }
        }
        for part in parts {
            if let Err(e) = send(part).await {
                warn!(%channel, error = %e, "sending reply");
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking() {
        assert_eq!(chunks("abc", 0), vec!["abc"]);
        assert_eq!(chunks("abcde", 2), vec!["ab", "cd", "e"]);
        assert_eq!(chunks("héllo", 10), vec!["héllo"]);
    }
}
