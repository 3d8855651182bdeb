//! The test side of one bot account of the Telegram fake
//! ([`TelegramBot`]): push what users send, inspect what the bot did
//! (calls, messages per chat, actions, uploads, drafts, deliveries), wait
//! for conditions without sleeping, and inject faults.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::super::recorder::Call;
use super::state::{self, ChatAction, Delivery, Draft, Upload};
use super::{BotCore, Chat, FileRef, Pushed, Shared, TgFault, UserMessage, messages};

/// The test-side handle of one bot account: push what users send, inspect
/// what the bot did, wait, inject faults.
#[derive(Clone)]
pub struct TelegramBot {
    pub(super) core: Arc<BotCore>,
    pub(super) shared: Arc<Shared>,
}

impl TelegramBot {
    /// The bot's token.
    pub fn token(&self) -> &str {
        &self.core.token
    }

    /// The bot's user id (`getMe.id`).
    pub fn id(&self) -> i64 {
        self.core.id
    }

    /// The bot's username without `@` (`getMe.username`).
    pub fn username(&self) -> &str {
        &self.core.username
    }

    /// `{base_url}/bot{token}`: the prefix of every method URL.
    pub fn api_url(&self) -> String {
        format!("{}/bot{}", self.shared.base_url, self.core.token)
    }

    fn wait_guard(&self) -> Duration {
        self.shared.cfg.wait_guard
    }

    /// Register `chat` without a message (so the bot may send to it first).
    pub fn add_chat(&self, chat: &Chat) {
        self.core
            .state
            .lock()
            .chats
            .entry(chat.id)
            .or_insert_with(|| state::ChatState::new(chat.to_json(), chat.is_forum));
        self.core.changes.bump();
    }

    /// Queue `msg` as a `message` (or `edited_message`) update.
    ///
    /// # Panics
    /// If `msg` replies to or edits a message the chat does not have: the
    /// test is wrong.
    pub fn push(&self, msg: UserMessage) -> Pushed {
        let pushed = messages::push_user_message(&self.core, &self.shared, msg);
        self.core.changes.bump();
        pushed
    }

    /// Queue a raw update (any type, e.g. `callback_query`,
    /// `message_reaction`); the fake assigns its `update_id`.
    pub fn push_update(&self, update: Value) -> i64 {
        let id = self.core.state.lock().enqueue(update);
        self.core.changes.bump();
        id
    }

    /// Make `data` downloadable; see [`FakeTelegram::add_file`].
    pub fn add_file(&self, data: &[u8], file_name: &str, mime_type: &str) -> FileRef {
        self.shared
            .add_file(Bytes::copy_from_slice(data), file_name, mime_type)
    }

    /// The bytes of file `file_id` (added or uploaded).
    pub fn file_bytes(&self, file_id: &str) -> Option<Bytes> {
        self.shared
            .files
            .lock()
            .get(file_id)
            .map(|(_, b)| b.clone())
    }

    /// Every call this bot's token made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.core.recorder.all()
    }

    /// Calls of `method` (canonical name, e.g. `sendMessage`), in order.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.core.recorder.of(method)
    }

    /// Forget recorded calls, deliveries, actions, uploads and drafts, and
    /// restart the [`TelegramBot::max_pollers`] count from now.
    pub fn clear_records(&self) {
        self.core.recorder.clear();
        let mut s = self.core.state.lock();
        s.deliveries.clear();
        s.actions.clear();
        s.uploads.clear();
        s.drafts.clear();
        s.max_pollers = s.pollers;
    }

    /// The messages the bot sent to `chat_id` (any method), in the order
    /// sent, with edits applied.
    pub fn sent(&self, chat_id: i64) -> Vec<Value> {
        let s = self.core.state.lock();
        s.chats
            .get(&chat_id)
            .map(|c| {
                c.sent
                    .iter()
                    .filter_map(|id| c.messages.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many messages the bot sent to `chat_id` (cheap).
    pub fn sent_count(&self, chat_id: i64) -> usize {
        let s = self.core.state.lock();
        s.chats.get(&chat_id).map(|c| c.sent.len()).unwrap_or(0)
    }

    /// The texts (or captions) of [`TelegramBot::sent`].
    pub fn sent_texts(&self, chat_id: i64) -> Vec<String> {
        self.sent(chat_id)
            .iter()
            .map(|m| {
                m.get("text")
                    .or_else(|| m.get("caption"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Message `message_id` of `chat_id` (user's or bot's), current state.
    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        let s = self.core.state.lock();
        s.chats.get(&chat_id)?.messages.get(&message_id).cloned()
    }

    /// Every `sendChatAction`, in order.
    pub fn chat_actions(&self) -> Vec<ChatAction> {
        self.core.state.lock().actions.clone()
    }

    /// Every `sendMessageDraft`, in order.
    pub fn drafts(&self) -> Vec<Draft> {
        self.core.state.lock().drafts.clone()
    }

    /// The commands set with `setMyCommands`.
    pub fn commands(&self) -> Vec<Value> {
        self.core.state.lock().commands.clone()
    }

    /// Every file the bot sent (`sendPhoto`, `sendDocument`), in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.core.state.lock().uploads.clone()
    }

    /// Every webhook delivery attempt, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.core.state.lock().deliveries.clone()
    }

    /// Update ids queued and not yet confirmed (by offset or delivery).
    pub fn pending_updates(&self) -> Vec<i64> {
        self.core
            .state
            .lock()
            .pending
            .iter()
            .filter_map(|u| u["update_id"].as_i64())
            .collect()
    }

    /// The webhook URL set, if any.
    pub fn webhook_url(&self) -> Option<String> {
        self.core
            .state
            .lock()
            .webhook
            .as_ref()
            .map(|w| w.url.clone())
    }

    /// The sticky `allowed_updates` (`None` = never set).
    pub fn allowed_updates(&self) -> Option<Vec<String>> {
        self.core.state.lock().allowed_updates.clone()
    }

    /// `getUpdates` calls open right now.
    pub fn pollers(&self) -> usize {
        self.core.state.lock().pollers
    }

    /// The most `getUpdates` calls ever open at once.
    pub fn max_pollers(&self) -> usize {
        self.core.state.lock().max_pollers
    }

    /// `getUpdates` calls that arrived while another one of this bot was
    /// still open (overlapping long polls: two receivers of one bot).
    pub fn overlapping_polls(&self) -> usize {
        self.core.state.lock().overlapping_polls
    }

    /// The next `n` calls of `method` (canonical name) fail with `fault`.
    pub fn fail_next(&self, method: &str, n: usize, fault: TgFault) {
        self.core.faults.push(method, n, fault);
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        self.core.faults.clear();
    }

    /// Stop answering: every call from now on hangs until
    /// [`TelegramBot::resume`] (the platform is down but accepts
    /// connections).
    pub fn hold(&self) {
        self.core.faults.hold();
    }

    /// Answer again: hanging calls proceed normally.
    pub fn resume(&self) {
        self.core.faults.resume();
        self.core.changes.bump();
    }

    /// Calls hanging right now (held or by [`TgFault::Hang`]).
    pub fn hanging(&self) -> usize {
        self.core.faults.hanging()
    }

    async fn until<T>(&self, what: impl Fn() -> String, check: impl FnMut() -> Option<T>) -> T {
        let seen = || crate::fakes::recorder::recent(&self.calls(), 8);
        self.core
            .changes
            .until(self.wait_guard(), what, seen, check)
            .await
    }

    /// Wait until the bot has sent at least `n` messages to `chat_id`;
    /// returns them (see [`TelegramBot::sent`]).
    ///
    /// # Panics
    /// After the hang guard, saying what was sent.
    pub async fn wait_for_sent(&self, chat_id: i64, n: usize) -> Vec<Value> {
        self.until(
            || {
                format!(
                    "{n} messages sent to chat {chat_id} (have {:?})",
                    self.sent_texts(chat_id)
                )
            },
            || (self.sent_count(chat_id) >= n).then(|| self.sent(chat_id)),
        )
        .await
    }

    /// Wait until `n` calls of `method` have been answered; returns every
    /// call of it.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.until(|| what.to_string(), check).await
    }

    /// Wait until `n` calls of `method` were answered; returns them all.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_calls(&self, method: &str, n: usize) -> Vec<Call> {
        self.until(
            || format!("{n} answered {method} calls"),
            || (self.core.recorder.answered(method) >= n).then(|| self.calls_of(method)),
        )
        .await
    }

    /// Wait until `n` webhook deliveries were attempted; returns them all.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_deliveries(&self, n: usize) -> Vec<Delivery> {
        self.until(
            || format!("{n} webhook deliveries (have {:?})", self.deliveries()),
            || {
                let have = self.core.state.lock().deliveries.len();
                (have >= n).then(|| self.deliveries())
            },
        )
        .await
    }

    /// Wait until exactly `n` `getUpdates` calls are open.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_pollers(&self, n: usize) {
        self.until(
            || format!("{n} open getUpdates (have {})", self.pollers()),
            || (self.pollers() == n).then_some(()),
        )
        .await
    }

    /// Wait until `n` calls are hanging.
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_hanging(&self, n: usize) {
        self.until(
            || format!("{n} hanging calls (have {})", self.hanging()),
            || (self.hanging() >= n).then_some(()),
        )
        .await
    }

    /// Wait until update `update_id` is confirmed (a later `offset` or an
    /// accepted webhook delivery removed it from the queue).
    ///
    /// # Panics
    /// After the hang guard.
    pub async fn wait_for_confirmed(&self, update_id: i64) {
        self.until(
            || {
                format!(
                    "update {update_id} confirmed (pending {:?})",
                    self.pending_updates()
                )
            },
            || {
                let s = self.core.state.lock();
                let pending = s
                    .pending
                    .iter()
                    .any(|u| u["update_id"].as_i64() == Some(update_id));
                (!pending).then_some(())
            },
        )
        .await
    }
}
