//! Answers out: a run's reply delivered into the conversation it answers,
//! the way the channel declares it can take it.
//!
//! [`stream_reply`] marks the inbound message read (channels with read
//! receipts), keeps a typing indicator up while the agent works
//! ([`typing`](super::typing)), streams the growing answer in the
//! channel's style ([`stream`](super::stream): final-only, throttled
//! edits, or native drafts in direct chats) and commits the final chunks
//! ([`chunk`](super::chunk)) to the durable outbox together with settling
//! the inbound message. What streaming sends directly is recorded on the
//! inbox row as it goes out ([`Progress`]), so a reply a restart cut short
//! resumes where it was instead of starting over. Every message goes
//! to the inbound message's thread and replies to it, as Markdown; when
//! the platform rejects the formatting (`error.formatting`) the same text
//! goes again as plain text. [`notify`] sends short notices (rate limit,
//! full queue).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::access::ChatKind;
use super::chunk::Measure;
use super::stream::{Resume, Settings, Step, Streamer, Style};
use super::typing::{self, TypingStats};
use super::{ChannelError, ChannelManager, InboxRef};
use crate::plugins::PluginError;
use crate::plugins::bindings::{
    Capabilities, ChatTarget, OutboundMessage, StreamStyle, TextFormat,
};

/// How the host counts a channel's `max-message-length`: UTF-16 code units,
/// as Telegram does. A text within N UTF-16 units is also within N
/// characters, so the same measure is safe for platforms that count
/// characters.
pub const MEASURE: Measure = Measure::Utf16;

/// Where a reply goes: the inbound message it answers.
#[derive(Debug, Clone)]
pub struct ReplyTarget {
    /// Channel plugin name.
    pub channel: String,
    /// Conversation id on the platform.
    pub conversation: String,
    /// Thread or forum topic of the inbound message.
    pub thread: Option<String>,
    /// Direct chat or group.
    pub chat: ChatKind,
    /// Platform id of the message being answered (replies reply to it;
    /// typing and read receipts name it).
    pub message_id: Option<String>,
    /// The answered message in the durable inbox: the answer's last pieces
    /// are committed to the outbox together with settling it.
    pub inbox: Option<InboxRef>,
}

impl ReplyTarget {
    fn chat_target(&self) -> ChatTarget {
        ChatTarget {
            conversation: self.conversation.clone(),
            thread: self.thread.clone(),
            message_id: self.message_id.clone(),
        }
    }

    fn message(&self, text: String, format: TextFormat) -> OutboundMessage {
        OutboundMessage {
            conversation: self.conversation.clone(),
            thread: self.thread.clone(),
            text,
            format,
            reply_to: self.message_id.clone(),
            attachments: Vec::new(),
        }
    }
}

/// Counters of the reply path, across channels.
#[derive(Debug, Default)]
pub struct ReplyStats {
    typing: Arc<TypingStats>,
    plain_resends: AtomicU64,
    fallbacks: AtomicU64,
}

impl ReplyStats {
    /// Typing calls made and failed.
    pub fn typing(&self) -> &TypingStats {
        &self.typing
    }
    /// Messages resent as plain text after `error.formatting`.
    pub fn plain_resends(&self) -> u64 {
        self.plain_resends.load(Ordering::Relaxed)
    }
    /// Replies that fell back to final-only (an edit or draft unsupported
    /// or failing for good).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

/// A final piece of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalOp {
    /// A chunk sent as a message of its own.
    Send(String),
    /// The last text of a message streamed by edits.
    Edit {
        /// Platform message id.
        id: String,
        /// Text.
        text: String,
    },
}

/// The streaming settings for a reply to `target` on a channel with `caps`.
pub fn settings_for(caps: Option<&Capabilities>, chat: ChatKind) -> Settings {
    let Some(c) = caps else {
        return Settings {
            style: Style::FinalOnly,
            interval_ms: 0,
            limit: 0,
            measure: MEASURE,
        };
    };
    let edit = if c.edit {
        Style::Edit
    } else {
        Style::FinalOnly
    };
    let style = match c.streaming {
        StreamStyle::FinalOnly => Style::FinalOnly,
        StreamStyle::Edit => edit,
        StreamStyle::Draft if chat == ChatKind::Direct => Style::Draft,
        StreamStyle::Draft => edit,
    };
    Settings {
        style,
        interval_ms: u64::from(c.min_edit_interval_ms),
        limit: c.max_message_length as usize,
        measure: MEASURE,
    }
}

fn is_formatting(e: &ChannelError) -> bool {
    matches!(
        e,
        ChannelError::Call { error, .. }
            if matches!(error.plugin_error(), Some(PluginError::Formatting { .. }))
    )
}

/// An error after which streaming stops for this answer (the rest goes
/// out when it is complete): the call is unsupported, or can never work
/// (for example the message to edit was deleted).
fn ends_streaming(e: &ChannelError) -> bool {
    matches!(
        e,
        ChannelError::Call { error, .. }
            if matches!(
                error.plugin_error(),
                Some(PluginError::Unsupported { .. } | PluginError::Permanent { .. })
            )
    )
}

/// Send `text` to `target` as Markdown, again as plain text if the
/// platform rejects the formatting.
async fn send_text(
    channels: &ChannelManager,
    target: &ReplyTarget,
    text: &str,
    key: Option<String>,
) -> Result<String, ChannelError> {
    let runner = channels.runner(&target.channel)?;
    let md = target.message(text.to_string(), TextFormat::Markdown);
    match runner.send_keyed(&md, key.clone()).await {
        Err(e) if is_formatting(&e) => {
            channels
                .replies
                .plain_resends
                .fetch_add(1, Ordering::Relaxed);
            debug!(channel = %target.channel, error = %e, "formatting rejected; sending as plain text");
            let plain = target.message(text.to_string(), TextFormat::Plain);
            runner.send_keyed(&plain, key).await
        }
        r => r,
    }
}

/// The idempotency key of a piece streamed directly (not through the
/// outbox): the answered inbox row, where the reply stands (bytes already
/// finished), which send of the batch and (for finished pieces) its text.
/// A resumed reply that sends the same piece again gets the same key.
/// `None` without an inbox row.
fn stream_key(target: &ReplyTarget, consumed: usize, which: &str, text: &str) -> Option<String> {
    let seq = target.inbox?.seq.to_string();
    let consumed = consumed.to_string();
    Some(crate::plugins::host::delivery::derived_key(
        's',
        &[&target.channel, &seq, &consumed, which, text],
    ))
}

/// Edit message `id` to `text` as Markdown, again as plain text if the
/// platform rejects the formatting.
async fn edit_text(
    channels: &ChannelManager,
    target: &ReplyTarget,
    id: &str,
    text: &str,
) -> Result<(), ChannelError> {
    let runner = channels.runner(&target.channel)?;
    let conv = &target.conversation;
    match runner.edit_as(conv, id, text, TextFormat::Markdown).await {
        Err(e) if is_formatting(&e) => {
            channels
                .replies
                .plain_resends
                .fetch_add(1, Ordering::Relaxed);
            debug!(channel = %target.channel, error = %e, "formatting rejected; editing as plain text");
            runner.edit_as(conv, id, text, TextFormat::Plain).await
        }
        r => r,
    }
}

/// How often the edit that finishes a streamed message is tried after
/// failures that are not rate limits, before its text goes out as a
/// message of its own.
const FINISH_EDIT_ATTEMPTS: u32 = 6;

/// The longest pause between two tries of a finishing edit, ms.
const FINISH_EDIT_MAX_PAUSE_MS: u64 = 5_000;

/// How long a finishing edit waits out rate limits in all, ms.
const FINISH_EDIT_RATE_LIMITED_MS: u64 = 120_000;

/// Edit message `id` to its final `text`, trying again after a failure that
/// passes: a rate limit (after the delay it names, for up to
/// [`FINISH_EDIT_RATE_LIMITED_MS`] in all), or a transient failure or
/// timeout (with a growing pause, up to [`FINISH_EDIT_ATTEMPTS`]). The
/// alternative, posting the text as a new message, leaves the streamed
/// message beside it: the answer shown twice. An error that cannot pass
/// (unsupported, permanent) returns at once. The inbound message is not
/// settled while this waits, so a restart in between finishes the edit.
async fn edit_text_retrying(
    channels: &ChannelManager,
    target: &ReplyTarget,
    id: &str,
    text: &str,
) -> Result<(), ChannelError> {
    let mut pause_ms = 200;
    let mut failures = 0;
    let mut limited_ms = 0;
    loop {
        let e = match edit_text(channels, target, id, text).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if ends_streaming(&e) {
            return Err(e);
        }
        let limited = match &e {
            ChannelError::Call { error, .. } => match error.plugin_error() {
                Some(PluginError::RateLimited { retry_after_ms, .. }) => Some(*retry_after_ms),
                _ => None,
            },
            _ => None,
        };
        let wait = match limited {
            Some(ms) if limited_ms < FINISH_EDIT_RATE_LIMITED_MS => {
                let ms = ms.clamp(1, FINISH_EDIT_MAX_PAUSE_MS);
                limited_ms += ms;
                ms
            }
            Some(_) => return Err(e),
            None => {
                failures += 1;
                if failures >= FINISH_EDIT_ATTEMPTS {
                    return Err(e);
                }
                let ms = pause_ms;
                pause_ms = (pause_ms * 2).min(FINISH_EDIT_MAX_PAUSE_MS);
                ms
            }
        };
        debug!(channel = %target.channel, failures, wait_ms = wait, error = %e, "finishing edit failed; trying again");
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
}

/// What of a reply has reached the platform, kept on its inbox row while
/// it is streamed (see [`Resume`]). Direct sends while streaming (the
/// message edits go to, finished chunks) are bracketed: `sending` is
/// committed before the call and the new state after it, so after a
/// crash the reply resumes from what is known to be out, and only a send
/// whose HTTP round trip the crash cut is in doubt (sent again, as the
/// outbox does by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What is known to be out.
    pub done: Resume,
    /// A direct send was in flight when this was recorded.
    #[serde(default)]
    pub sending: bool,
}

/// The reply's [`Progress`], in memory and on its inbox row.
struct Tracker {
    inbox: Option<InboxRef>,
    done: Resume,
    /// The earlier attempt's last direct send is in doubt (see [`live_step`]).
    open_in_doubt: bool,
}

impl Tracker {
    /// Load the progress an earlier attempt at this reply recorded.
    fn load(channels: &ChannelManager, target: &ReplyTarget) -> (Self, Option<Progress>) {
        let earlier = target.inbox.and_then(|r| {
            match channels.inbox().progress(r.seq) {
                Ok(Some(text)) => match serde_json::from_str::<Progress>(&text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        warn!(channel = %target.channel, seq = r.seq, error = %e, "unreadable reply progress; starting over");
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    warn!(channel = %target.channel, seq = r.seq, error = %e, "reading reply progress failed; starting over");
                    None
                }
            }
        });
        let t = Tracker {
            inbox: target.inbox,
            done: earlier.as_ref().map(|p| p.done.clone()).unwrap_or_default(),
            open_in_doubt: earlier.as_ref().is_some_and(|p| p.sending),
        };
        (t, earlier)
    }

    fn encode(&self, sending: bool) -> String {
        serde_json::to_string(&Progress {
            done: self.done.clone(),
            sending,
        })
        .unwrap_or_default()
    }

    /// Record on the inbox row (a failure is logged: the reply then resumes
    /// from an older state after a crash, at least once).
    fn save(&self, channels: &ChannelManager, target: &ReplyTarget, sending: bool) {
        if let Some(r) = self.inbox
            && let Err(e) = channels.inbox().set_progress(r.seq, &self.encode(sending))
        {
            warn!(channel = %target.channel, seq = r.seq, error = %e, "recording reply progress failed");
        }
    }
}

/// The answer's last pieces: edits of the streamed message go out now
/// (an edit is idempotent; one that fails becomes a message of its own);
/// new messages are committed to the durable outbox (which retries them)
/// in one transaction with settling the inbound message as answered, so a
/// restart neither loses nor repeats the answer.
async fn commit_final(channels: &ChannelManager, target: &ReplyTarget, ops: Vec<FinalOp>) {
    let mut sends = Vec::new();
    for op in ops {
        match op {
            FinalOp::Send(text) => sends.push(target.message(text, TextFormat::Markdown)),
            FinalOp::Edit { id, text } => {
                if let Err(e) = edit_text_retrying(channels, target, &id, &text).await {
                    // The streamed message cannot take its final text (edits
                    // unsupported, the message gone, the platform down): send
                    // it as a message of its own rather than leave it partial.
                    debug!(channel = %target.channel, error = %e, "final edit failed; sending the text instead");
                    sends.push(target.message(text, TextFormat::Markdown));
                }
            }
        }
    }
    if let Err(e) = channels.enqueue_final(&target.channel, target.inbox, sends) {
        warn!(channel = %target.channel, conversation = %target.conversation, error = %e, "committing the reply failed");
    }
}

/// Carry out streaming steps. Finished pieces and the message to edit go
/// out directly (in order with the edits), bracketed by progress records;
/// the last batch goes through [`commit_final`].
async fn run_steps(
    channels: &ChannelManager,
    target: &ReplyTarget,
    streamer: &mut Streamer,
    tracker: &mut Tracker,
    steps: Vec<Step>,
    last: bool,
) {
    if last {
        let finals = steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Post { text } => Some(FinalOp::Send(text)),
                Step::Edit { id, text, .. } => Some(FinalOp::Edit { id, text }),
                _ => None,
            })
            .collect();
        commit_final(channels, target, finals).await;
        return;
    }
    let sends = steps
        .iter()
        .any(|s| matches!(s, Step::Post { .. } | Step::Open { .. }));
    if sends {
        tracker.save(channels, target, true);
    }
    let consumed = streamer.snapshot().consumed;
    for (i, step) in steps.into_iter().enumerate() {
        let ok = match step {
            Step::Post { text } => match send_text(
                channels,
                target,
                &text,
                stream_key(target, consumed, &format!("post-{i}"), &text),
            )
            .await
            {
                Ok(_) => true,
                Err(e) => {
                    warn!(channel = %target.channel, conversation = %target.conversation, error = %e, "delivering a finished piece failed; the rest goes out at the end");
                    false
                }
            },
            Step::Edit {
                id,
                text,
                last: true,
            } => {
                if let Err(e) = edit_text_retrying(channels, target, &id, &text).await {
                    debug!(channel = %target.channel, error = %e, "finishing a streamed message failed; the rest goes out at the end");
                    false
                } else {
                    true
                }
            }
            other => {
                live_step(
                    channels,
                    target,
                    streamer,
                    &mut tracker.open_in_doubt,
                    other,
                )
                .await;
                true
            }
        };
        if !ok {
            // Step back to what is known to be out and deliver the rest
            // when the answer is complete.
            streamer.resume(tracker.done.clone());
            streamer.unsupported();
            channels.replies.fallbacks.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    if sends {
        tracker.done = streamer.snapshot();
        tracker.save(channels, target, false);
    } else if streamer.snapshot().live != tracker.done.live {
        // Edits change what the live message shows: kept in memory only
        // (a stale record costs one more, idempotent, edit).
        tracker.done.live = streamer.snapshot().live;
    }
}

/// One in-progress step (open, edit, draft). `open_in_doubt`: a restart
/// cut this reply's last direct send, so the next open may be answered
/// with the message that send posted (same key) showing older text; it is
/// edited to the text at once.
async fn live_step(
    channels: &ChannelManager,
    target: &ReplyTarget,
    streamer: &mut Streamer,
    open_in_doubt: &mut bool,
    step: Step,
) {
    let channel = &target.channel;
    let r = match &step {
        Step::Open { text } => {
            // The same key whatever the text: an open is the message of
            // its place in the reply.
            let key = stream_key(target, streamer.snapshot().consumed, "open", "");
            let r = send_text(channels, target, text, key).await;
            // What the opened message shows: `text`, unless the open found
            // the message an earlier attempt posted (same key, older text)
            // and bringing it up to date failed. Then it is unknown, and
            // recorded as such so that a later edit, at the latest the
            // finishing one, sends the text even when it equals `text`.
            let mut shown = text.clone();
            if std::mem::take(open_in_doubt)
                && let Ok(id) = &r
                && let Err(e) = edit_text(channels, target, id, text).await
            {
                debug!(%channel, error = %e, "updating a message opened in doubt failed; the next edit brings it up to date");
                shown = String::new();
            }
            let id = r.as_ref().ok().cloned();
            streamer.opened(id, shown);
            r.map(drop)
        }
        Step::Edit { id, text, .. } => edit_text(channels, target, id, text).await,
        Step::Draft { draft_id, text } => match channels.runner(channel) {
            Ok(r) => r.draft(&target.chat_target(), *draft_id, text).await,
            Err(e) => Err(e),
        },
        Step::Post { .. } => Ok(()),
    };
    match r {
        Ok(()) => {}
        Err(e) if ends_streaming(&e) => {
            channels.replies.fallbacks.fetch_add(1, Ordering::Relaxed);
            debug!(%channel, error = %e, "streaming stopped; the answer goes out when complete");
            streamer.unsupported();
        }
        Err(e) => {
            // The message keeps what it showed before; the next edit (at
            // the latest the finishing one) sends the text again.
            streamer.step_failed(&step);
            warn!(%channel, error = %e, "streaming reply")
        }
    }
}

/// Deliver a run's reply to `target` from `(text so far, done)` updates:
/// read receipt and typing first, then streaming, then the final chunks.
pub async fn stream_reply(
    channels: Arc<ChannelManager>,
    target: ReplyTarget,
    mut rx: watch::Receiver<(String, bool)>,
) {
    let runner = channels.get(&target.channel);
    let caps = runner
        .as_ref()
        .and_then(|r| r.version().ok())
        .and_then(|v| v.channel_capabilities().cloned());
    let clock = channels.registry().config().clock.clone();
    let chat_target = target.chat_target();
    if let (Some(c), Some(r)) = (&caps, &runner)
        && c.read_receipts
        && target.message_id.is_some()
        && let Err(e) = r.mark_read(&chat_target).await
    {
        debug!(channel = %target.channel, error = %e, "marking the message read failed");
    }
    let mut typing_guard = match (&caps, &runner) {
        (Some(c), Some(r)) if c.typing => {
            let r = r.clone();
            let t = chat_target.clone();
            Some(typing::keep_typing(
                target.channel.clone(),
                u64::from(c.typing_ttl_ms),
                clock.clone(),
                channels.replies.typing.clone(),
                move || {
                    let r = r.clone();
                    let t = t.clone();
                    async move { r.typing(&t).await }
                },
            ))
        }
        _ => None,
    };
    let settings = settings_for(caps.as_ref(), target.chat);
    let mut streamer = Streamer::new(settings, clock.now_ms().max(1));
    let (mut tracker, earlier) = Tracker::load(&channels, &target);
    if let Some(p) = earlier {
        // A restart cut this reply short: what went out stays out.
        if p.sending {
            metrics::counter!("pincer_channel_reply_in_doubt_total", "channel" => target.channel.clone())
                .increment(1);
        }
        debug!(channel = %target.channel, consumed = p.done.consumed, live = p.done.live.is_some(), in_doubt = p.sending, "resuming a reply an earlier run started");
        streamer.resume(p.done);
    }
    loop {
        let wait = streamer
            .due_at()
            .map(|due| due.saturating_sub(clock.now_ms()))
            .map(|ms| std::time::Duration::from_millis(ms).min(typing::MAX_CHECK));
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let (text, done) = rx.borrow_and_update().clone();
                if done {
                    // No typing after the answer.
                    if let Some(g) = typing_guard.take() {
                        g.finish().await;
                    }
                    if tracker.open_in_doubt {
                        // An earlier attempt's open may be out, and this
                        // attempt saw the answer only complete (a loaded
                        // machine skips watch updates): open by the same
                        // key first, which finds that message (Matrix's
                        // transaction id, Discord's nonce) and edits it to
                        // the text, instead of posting a second one
                        // through the outbox.
                        let steps = streamer.update(&text, clock.now_ms());
                        run_steps(&channels, &target, &mut streamer, &mut tracker, steps, false).await;
                    }
                    let steps = streamer.finish(&text);
                    run_steps(&channels, &target, &mut streamer, &mut tracker, steps, true).await;
                    return;
                }
                let steps = streamer.update(&text, clock.now_ms());
                run_steps(&channels, &target, &mut streamer, &mut tracker, steps, false).await;
            }
            _ = async { if let Some(w) = wait { tokio::time::sleep(w).await } }, if wait.is_some() => {
                let steps = streamer.tick(clock.now_ms());
                run_steps(&channels, &target, &mut streamer, &mut tracker, steps, false).await;
            }
        }
    }
}

/// Send a short notice into a channel conversation, in the background
/// (failures are logged).
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
    use crate::plugins::bindings::ReceiveMode;

    fn caps(streaming: StreamStyle, edit: bool) -> Capabilities {
        Capabilities {
            mode: ReceiveMode::Poll,
            edit,
            typing: false,
            max_message_length: 4096,
            streaming,
            min_edit_interval_ms: 0,
            typing_ttl_ms: 0,
            read_receipts: false,
            attachments: false,
        }
    }

    #[test]
    fn draft_only_in_direct_chats_and_edit_only_when_it_works() {
        let d = caps(StreamStyle::Draft, true);
        assert_eq!(settings_for(Some(&d), ChatKind::Direct).style, Style::Draft);
        assert_eq!(settings_for(Some(&d), ChatKind::Group).style, Style::Edit);
        let d = caps(StreamStyle::Draft, false);
        assert_eq!(
            settings_for(Some(&d), ChatKind::Group).style,
            Style::FinalOnly
        );
        let e = caps(StreamStyle::Edit, false);
        assert_eq!(
            settings_for(Some(&e), ChatKind::Direct).style,
            Style::FinalOnly
        );
        let f = caps(StreamStyle::FinalOnly, true);
        assert_eq!(
            settings_for(Some(&f), ChatKind::Direct).style,
            Style::FinalOnly
        );
        assert_eq!(settings_for(None, ChatKind::Direct).limit, 0);
        assert_eq!(settings_for(Some(&f), ChatKind::Direct).limit, 4096);
    }
}
