//! Answers out: a run's reply streamed into the channel it came from
//! (`send`, then `edit` while it grows when the channel can edit; one final
//! `send` otherwise; split at the channel's message length), and short
//! notices to a sender (rate limit, full queue). The final chunks and the
//! notices go through the durable outbox ([`super::outbox`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::{ChannelManager, InboxRef};
use crate::plugins::bindings::{OutboundMessage, TextFormat};

/// Minimum time between edits of a streamed channel reply.
pub const EDIT_INTERVAL: Duration = Duration::from_millis(1000);

fn chunks(text: &str, max: usize) -> Vec<String> {
    if max == 0 || text.chars().count() <= max {
        return vec![text.to_string()];
    }
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

/// Stream a reply into a channel from `(text so far, done)` updates. The
/// final chunks are committed to the outbox, settling `inbox` (the message
/// answered) as answered in the same transaction.
pub async fn stream_reply(
    channels: Arc<ChannelManager>,
    channel: String,
    conversation: String,
    reply_to: Option<String>,
    inbox: Option<InboxRef>,
    mut rx: watch::Receiver<(String, bool)>,
) {
    let caps = channels
        .get(&channel)
        .and_then(|r| r.version().ok())
        .and_then(|v| v.channel_capabilities().cloned());
    let can_edit = caps.as_ref().is_some_and(|c| c.edit);
    let max = caps.as_ref().map_or(0, |c| c.max_message_length as usize);
    let mut sent: Option<(String, String)> = None; // (message id, text)
    let message = |text: String| OutboundMessage {
        conversation: conversation.clone(),
        thread: None,
        text,
        format: TextFormat::Markdown,
        reply_to: reply_to.clone(),
        attachments: Vec::new(),
    };
    let send = |text: String| {
        let channels = channels.clone();
        let channel = channel.clone();
        let msg = message(text);
        async move { channels.send(&channel, msg).await }
    };
    // The final chunks: committed, then delivered by the outbox worker.
    let finish = |parts: Vec<String>| {
        let msgs = parts.into_iter().map(message).collect();
        if let Err(e) = channels.enqueue_final(&channel, inbox, msgs) {
            warn!(%channel, error = %e, "committing the reply failed");
        }
    };
    loop {
        if rx.changed().await.is_err() {
            // No final text: the inbox processor settles the message when
            // its run has ended (unless the gateway is shutting down).
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
                    if let Err(e) = channels.edit(&channel, &conversation, id, &first).await {
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
                && let Err(e) = channels.edit(&channel, &conversation, id, &first).await
            {
                warn!(%channel, error = %e, "editing reply");
            }
            finish(parts.collect());
        } else {
            finish(chunks(&text, max));
        }
        return;
    }
}

/// Commit a short notice to a channel conversation's outbox (failures to
/// commit are logged).
pub fn notify(
    channels: &Arc<ChannelManager>,
    channel: &str,
    conversation: &str,
    reply_to: Option<String>,
    text: String,
) {
    let msg = OutboundMessage {
        conversation: conversation.to_string(),
        thread: None,
        text,
        format: TextFormat::Plain,
        reply_to,
        attachments: Vec::new(),
    };
    if let Err(e) = channels.outbox().enqueue_notice(channel, msg) {
        warn!(%channel, error = %e, "committing a notice");
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
