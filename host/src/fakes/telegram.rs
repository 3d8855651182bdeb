//! A local fake of the Telegram Bot API (<https://core.telegram.org/bots/api>)
//! on loopback, for the Telegram channel's tests and `pincer bench channels`.
//!
//! The bot side talks to it exactly as to `api.telegram.org`:
//! `{base_url}/bot{token}/{method}` by GET or POST with query parameters,
//! JSON, `application/x-www-form-urlencoded` or `multipart/form-data`, and
//! downloads at `{base_url}/file/bot{token}/{file_path}`. Replies are
//! `{"ok":true,"result":...}` or `{"ok":false,"error_code","description",
//! "parameters"?}` with Telegram's texts. Modelled: `getMe`; `getUpdates`
//! (offset confirmation, `limit`, event-driven long poll, sticky
//! `allowed_updates`, 409 for an overtaken poller and while a webhook is
//! set); `setWebhook` / `deleteWebhook` / `getWebhookInfo` with deliveries
//! one at a time in order, the secret header, and retries with a bounded
//! backoff; `sendMessage` / `editMessageText` with `parse_mode` checks and
//! length limits; `sendChatAction`; `sendMessageDraft` (private chats);
//! `getFile`; `sendPhoto` /
//! `sendDocument` by multipart upload, `file_id` or URL.
//!
//! The test side ([`TelegramBot`], reached through [`FakeTelegram`]'s
//! `Deref` for the default bot) pushes user messages, reads every recorded
//! call and what the bot sent per chat, waits for conditions without
//! sleeping, and injects faults (429 with `retry_after`, 409, 5xx, hangs).
//!
//! Deviations, on purpose: webhook URLs may be plain `http://` on any port
//! (loopback); names and dimensions of photos are placeholders; one
//! delivery at a time whatever `max_connections` says.

mod api;
pub(crate) mod inbound;
pub(crate) mod markup;
mod messages;
mod polling;
mod state;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::WAIT_GUARD;
use super::faults::Faults;
use super::recorder::{Call, Recorder};
use super::server::Server;
use super::wait::Changes;

pub use inbound::{Chat, User, UserMessage, detect_entities};
pub use state::{ChatAction, Delivery, Draft, Upload};

/// The default bot's token.
pub const DEFAULT_TOKEN: &str = "123456789:AAHfakeTokenForPincerTests-000000000";

/// Settings of the Telegram fake.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// Wait after the first failed webhook delivery of an update (doubling
    /// per further failure). Default 50 ms.
    pub webhook_retry_initial: Duration,
    /// The longest wait between webhook delivery attempts. Default 1 s.
    pub webhook_retry_max: Duration,
    /// How long a webhook delivery waits for its answer (Telegram: 60 s).
    /// Default 10 s.
    pub webhook_timeout: Duration,
    /// Record every call (turn off for benchmarks with many idle pollers,
    /// so the record does not grow). Default true.
    pub record_calls: bool,
    /// The hang guard of the `wait_for_*` helpers. Default
    /// [`WAIT_GUARD`].
    pub wait_guard: Duration,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            webhook_retry_initial: Duration::from_millis(50),
            webhook_retry_max: Duration::from_secs(1),
            webhook_timeout: Duration::from_secs(10),
            record_calls: true,
            wait_guard: WAIT_GUARD,
        }
    }
}

/// How the next call(s) of a method fail.
#[derive(Debug, Clone, PartialEq)]
pub enum TgFault {
    /// 429 `Too Many Requests: retry after N` with
    /// `parameters.retry_after` = N (seconds).
    RetryAfter(u64),
    /// 409 `Conflict: terminated by other getUpdates request; ...`.
    Conflict,
    /// This HTTP status with Telegram's description for it (`500 Internal
    /// Server Error`, `502 Bad Gateway`, ...).
    Status(u16),
    /// Any `{ok:false}` answer.
    Error {
        /// `error_code` and HTTP status.
        code: u16,
        /// `description`.
        description: String,
    },
    /// Stop answering this call until [`TelegramBot::resume`] (then it is
    /// answered normally).
    Hang,
}

/// A file the fake serves (added by a test, or uploaded by the bot).
#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    /// `file_id`.
    pub file_id: String,
    /// `file_unique_id`.
    pub file_unique_id: String,
    /// `file_path` for the download URL.
    pub file_path: String,
    /// The original file name.
    pub file_name: String,
    /// The MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: usize,
}

/// A message pushed by a test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pushed {
    /// The update's `update_id`.
    pub update_id: i64,
    /// The message's `message_id` in its chat.
    pub message_id: i64,
}

/// State shared by every bot of one fake.
struct Shared {
    cfg: TelegramConfig,
    base_url: String,
    bots: Mutex<HashMap<String, Arc<BotCore>>>,
    /// Files by `file_id`, with their bytes.
    files: Mutex<HashMap<String, (FileRef, Bytes)>>,
    next_file: Mutex<u64>,
    http: reqwest::Client,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Shared {
    fn bot(&self, token: &str) -> Option<Arc<BotCore>> {
        self.bots.lock().get(token).cloned()
    }

    /// Store `data` as a new file.
    fn add_file(&self, data: Bytes, file_name: &str, mime_type: &str) -> FileRef {
        let n = {
            let mut n = self.next_file.lock();
            *n += 1;
            *n
        };
        let dir = if mime_type.starts_with("image/") {
            "photos"
        } else {
            "documents"
        };
        let ext = file_name.rsplit_once('.').map(|(_, e)| e).unwrap_or("bin");
        let f = FileRef {
            file_id: format!("AgACAgFake{n:06}"),
            file_unique_id: format!("AQADFake{n:06}"),
            file_path: format!("{dir}/file_{n}.{ext}"),
            file_name: file_name.into(),
            mime_type: mime_type.into(),
            size: data.len(),
        };
        self.files
            .lock()
            .insert(f.file_id.clone(), (f.clone(), data));
        f
    }

    fn file(&self, file_id: &str) -> Option<FileRef> {
        self.files.lock().get(file_id).map(|(f, _)| f.clone())
    }
}

/// One bot account of the fake.
struct BotCore {
    token: String,
    id: i64,
    username: String,
    first_name: String,
    state: Mutex<state::BotState>,
    changes: Changes,
    recorder: Recorder,
    faults: Faults<TgFault>,
}

impl BotCore {
    fn user_json(&self) -> Value {
        json!({"id": self.id, "is_bot": true, "first_name": self.first_name,
            "username": self.username})
    }
}

/// The running fake; dropping it stops the server, every open request and
/// every webhook delivery. Dereferences to its default bot
/// ([`DEFAULT_TOKEN`]).
pub struct FakeTelegram {
    shared: Arc<Shared>,
    default_bot: TelegramBot,
    _server: Server,
}

impl FakeTelegram {
    /// Start a fake with the default settings and one bot
    /// ([`DEFAULT_TOKEN`], username `pincer_test_bot`).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> FakeTelegram {
        FakeTelegram::start_with(TelegramConfig::default()).await
    }

    /// Start a fake with `cfg`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_with(cfg: TelegramConfig) -> FakeTelegram {
        let listener = Server::bind()
            .await
            .expect("bind the Telegram fake on 127.0.0.1");
        let addr = listener.local_addr().expect("the Telegram fake's address");
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            cfg,
            bots: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            next_file: Mutex::new(0),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
            tasks: Mutex::new(Vec::new()),
        });
        let server = Server::serve(listener, api::router(shared.clone()), "telegram");
        let default_bot = add_bot(&shared, DEFAULT_TOKEN, "pincer_test_bot");
        FakeTelegram {
            shared,
            default_bot,
            _server: server,
        }
    }

    /// `http://127.0.0.1:{port}`: what replaces `https://api.telegram.org`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Add a bot with `token` and `username` (for several accounts or the
    /// density benchmark). Adding an existing token returns that bot.
    pub fn add_bot(&self, token: &str, username: &str) -> TelegramBot {
        add_bot(&self.shared, token, username)
    }

    /// The bot with `token`, if added.
    pub fn bot(&self, token: &str) -> Option<TelegramBot> {
        self.shared.bot(token).map(|core| TelegramBot {
            core,
            shared: self.shared.clone(),
        })
    }

    /// Make `data` downloadable (for photos and documents users send);
    /// returns its `file_id` and path.
    pub fn add_file(&self, data: &[u8], file_name: &str, mime_type: &str) -> FileRef {
        self.shared
            .add_file(Bytes::copy_from_slice(data), file_name, mime_type)
    }
}

impl Deref for FakeTelegram {
    type Target = TelegramBot;
    fn deref(&self) -> &TelegramBot {
        &self.default_bot
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        for t in self.shared.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

fn add_bot(shared: &Arc<Shared>, token: &str, username: &str) -> TelegramBot {
    let mut bots = shared.bots.lock();
    let core = bots
        .entry(token.to_string())
        .or_insert_with(|| {
            let id = token
                .split_once(':')
                .and_then(|(id, _)| id.parse().ok())
                .unwrap_or(1000 + bots_len_hint(token));
            Arc::new(BotCore {
                token: token.into(),
                id,
                username: username.trim_start_matches('@').into(),
                first_name: "Pincer Test Bot".into(),
                state: Mutex::new(state::BotState {
                    next_update_id: 700_000_001,
                    ..Default::default()
                }),
                changes: Changes::default(),
                recorder: Recorder::default(),
                faults: Faults::default(),
            })
        })
        .clone();
    TelegramBot {
        core,
        shared: shared.clone(),
    }
}

/// A stable numeric id for a token without a numeric prefix.
fn bots_len_hint(token: &str) -> i64 {
    token
        .bytes()
        .fold(0i64, |h, b| (h.wrapping_mul(31) + b as i64) & 0xffff_ffff)
}

/// The test-side handle of one bot account: push what users send, inspect
/// what the bot did, wait, inject faults.
#[derive(Clone)]
pub struct TelegramBot {
    core: Arc<BotCore>,
    shared: Arc<Shared>,
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

    /// Forget recorded calls, deliveries, actions and uploads.
    pub fn clear_records(&self) {
        self.core.recorder.clear();
        let mut s = self.core.state.lock();
        s.deliveries.clear();
        s.actions.clear();
        s.drafts.clear();
        s.uploads.clear();
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
        let seen = || {
            let calls: Vec<String> = self
                .calls()
                .iter()
                .rev()
                .take(8)
                .map(|c| format!("{}->{:?}", c.method, c.status))
                .collect();
            format!("last calls (newest first) {calls:?}")
        };
        self.core
            .changes
            .until(self.wait_guard(), what, seen, check)
            .await
    }

    /// Wait until `check` returns `Some` (checked again on every change the
    /// fake sees: a call, an answer, a push); returns its value.
    ///
    /// # Panics
    /// After the hang guard, saying `what` was awaited.
    pub async fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.until(|| what.to_string(), check).await
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
            || {
                let s = self.sent(chat_id);
                (s.len() >= n).then_some(s)
            },
        )
        .await
    }

    /// Wait until `n` calls of `method` have been answered; returns every
    /// call of it.
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
                let d = self.deliveries();
                (d.len() >= n).then_some(d)
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
            || (!self.pending_updates().contains(&update_id)).then_some(()),
        )
        .await
    }
}
