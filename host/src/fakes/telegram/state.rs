//! One bot's server-side state in the Telegram fake: the update queue and
//! its confirmation, the poller and webhook bookkeeping, chats with every
//! message (the user's and the bot's), and the records tests inspect.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::markup::ParseMode;

/// Update types delivered when `allowed_updates` is unset or empty: all
/// but these, which must be asked for by name.
const OPT_IN_TYPES: &[&str] = &["chat_member", "message_reaction", "message_reaction_count"];

/// A webhook as set by `setWebhook`.
#[derive(Debug, Clone)]
pub(crate) struct WebhookCfg {
    pub(crate) url: String,
    pub(crate) secret_token: Option<String>,
    pub(crate) max_connections: i64,
}

/// One bot's mutable state.
#[derive(Debug, Default)]
pub(crate) struct BotState {
    pub(crate) next_update_id: i64,
    /// Unconfirmed updates, oldest first, each with its `update_id`.
    pub(crate) pending: VecDeque<Value>,
    /// The sticky `allowed_updates` (`None` or empty = the default set).
    pub(crate) allowed_updates: Option<Vec<String>>,
    pub(crate) webhook: Option<WebhookCfg>,
    /// Whether a webhook delivery task is running.
    pub(crate) delivering: bool,
    /// `(unix date, message)` of the last failed webhook delivery.
    pub(crate) last_error: Option<(i64, String)>,
    /// Bumped by every `getUpdates`: a waiting poll whose generation is no
    /// longer current was overtaken (409).
    pub(crate) poll_generation: u64,
    pub(crate) pollers: usize,
    pub(crate) max_pollers: usize,
    /// `getUpdates` calls that arrived while another was open (two
    /// pollers of one bot: Telegram answers the older one 409).
    pub(crate) overlapping_polls: usize,
    pub(crate) chats: HashMap<i64, ChatState>,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) actions: Vec<ChatAction>,
    pub(crate) uploads: Vec<Upload>,
    pub(crate) drafts: Vec<Draft>,
    /// The commands set with `setMyCommands`.
    pub(crate) commands: Vec<Value>,
}

/// A chat the fake knows (a user wrote in it, or a test added it).
#[derive(Debug, Clone)]
pub(crate) struct ChatState {
    pub(crate) chat: Value,
    pub(crate) is_forum: bool,
    pub(crate) next_message_id: i64,
    /// Every message by id, the user's and the bot's (current content).
    pub(crate) messages: BTreeMap<i64, Value>,
    /// The bot's messages in the order it sent them.
    pub(crate) sent: Vec<i64>,
    /// The bot's messages' `(text as given, parse mode)`, for
    /// "message is not modified".
    pub(crate) sent_source: HashMap<i64, (String, Option<ParseMode>, Value)>,
}

impl ChatState {
    pub(crate) fn new(chat: Value, is_forum: bool) -> ChatState {
        ChatState {
            chat,
            is_forum,
            next_message_id: 1,
            messages: BTreeMap::new(),
            sent: Vec::new(),
            sent_source: HashMap::new(),
        }
    }

    /// Allocate the next message id of this chat.
    pub(crate) fn next_id(&mut self) -> i64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Message `id` as a `reply_to_message` (without its own reply).
    pub(crate) fn reply_copy(&self, id: i64) -> Option<Value> {
        let mut m = self.messages.get(&id)?.clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("reply_to_message");
        }
        Some(m)
    }
}

/// One webhook delivery attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivered update's `update_id`.
    pub update_id: i64,
    /// 1 for the first attempt at this update, then 2, 3, ...
    pub attempt: u32,
    /// The URL posted to.
    pub url: String,
    /// The `X-Telegram-Bot-Api-Secret-Token` header sent, if any.
    pub secret_token: Option<String>,
    /// The answer's status, or `None` on a timeout or connection error.
    pub status: Option<u16>,
    /// The error (Telegram's `last_error_message` text) when not 2xx.
    pub error: Option<String>,
    /// From sending the request to its answer (or failure).
    pub latency: Duration,
    /// When the attempt started.
    pub at: Instant,
}

/// A `sendMessageDraft` the bot made.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// `chat_id`.
    pub chat_id: i64,
    /// `draft_id`.
    pub draft_id: i64,
    /// The draft's plain text (after `parse_mode`).
    pub text: String,
    /// `message_thread_id`, if given.
    pub thread_id: Option<i64>,
}

/// A `sendChatAction` the bot made.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAction {
    /// `chat_id`.
    pub chat_id: i64,
    /// `action` (`typing`, ...).
    pub action: String,
    /// `message_thread_id`, if given.
    pub thread_id: Option<i64>,
}

/// A file the bot sent with `sendPhoto` / `sendDocument`.
#[derive(Debug, Clone)]
pub struct Upload {
    /// `sendPhoto` or `sendDocument`.
    pub method: String,
    /// `chat_id`.
    pub chat_id: i64,
    /// The file's bytes (empty when sent by URL).
    pub data: bytes::Bytes,
    /// The multipart part's file name, if uploaded.
    pub file_name: Option<String>,
    /// The multipart part's `Content-Type`, if uploaded.
    pub mime_type: Option<String>,
    /// `caption` as given (before parsing).
    pub caption: Option<String>,
    /// How the file was given: `upload` (a multipart part), `file_id`, or
    /// `url`.
    pub source: &'static str,
    /// The file id the message carries.
    pub file_id: String,
    /// The `message_id` of the sent message.
    pub message_id: i64,
}

/// The type of an update (its one key besides `update_id`).
pub(crate) fn update_type(update: &Value) -> &str {
    update
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "update_id"))
        .map(String::as_str)
        .unwrap_or("")
}

impl BotState {
    /// Whether `update` passes the sticky `allowed_updates`.
    pub(crate) fn allowed(&self, update: &Value) -> bool {
        let t = update_type(update);
        match &self.allowed_updates {
            Some(list) if !list.is_empty() => list.iter().any(|a| a == t),
            _ => !OPT_IN_TYPES.contains(&t),
        }
    }

    /// Queue `update` (given without `update_id`); returns its id.
    pub(crate) fn enqueue(&mut self, mut update: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        if let Some(o) = update.as_object_mut() {
            o.insert("update_id".into(), Value::from(id));
        }
        self.pending.push_back(update);
        id
    }

    /// Apply a `getUpdates` `offset`: a positive one confirms (drops) every
    /// earlier update; a negative one keeps only the last `-offset`.
    pub(crate) fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            self.pending
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while self.pending.len() > keep {
                self.pending.pop_front();
            }
        }
    }

    /// Up to `limit` allowed pending updates, oldest first.
    pub(crate) fn batch(&self, limit: usize) -> Vec<Value> {
        self.pending
            .iter()
            .filter(|u| self.allowed(u))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets_confirm_earlier_updates_and_negative_offsets_keep_the_last() {
        let mut s = BotState {
            next_update_id: 10,
            ..BotState::default()
        };
        for _ in 0..5 {
            s.enqueue(json!({"message": {}}));
        }
        assert_eq!(s.batch(2).len(), 2);
        s.confirm(12);
        assert_eq!(
            s.pending.front().map(|u| u["update_id"].clone()),
            Some(json!(12))
        );
        s.confirm(-1);
        assert_eq!(s.pending.len(), 1);
        assert_eq!(s.pending[0]["update_id"], 14);
    }

    #[test]
    fn opt_in_update_types_need_naming() {
        let mut s = BotState::default();
        let reaction = json!({"update_id": 1, "message_reaction": {}});
        let msg = json!({"update_id": 2, "message": {}});
        assert!(!s.allowed(&reaction));
        assert!(s.allowed(&msg));
        s.allowed_updates = Some(vec!["message_reaction".into()]);
        assert!(s.allowed(&reaction));
        assert!(!s.allowed(&msg));
        s.allowed_updates = Some(vec![]);
        assert!(s.allowed(&msg));
    }
}
