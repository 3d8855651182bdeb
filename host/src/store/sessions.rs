//! Sessions, transcripts, device pairing and the durable event log.
//!
//! The gateway talks to [`SessionStore`]; [`super::SqliteStore`] implements it
//! in the same SQLite file as the plugin key-value data. Every state change
//! that webhooks report (a message received or sent, a session created or
//! deleted, ...) appends a row to the event log **in the same transaction**,
//! so the log is a transactional outbox: a kill -9 at any moment leaves
//! either both the change and its event, or neither.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::StoreError;

/// One session: a conversation with the agent (the operator's
/// `agent:main:main`, or one per channel conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEntry {
    /// Canonical key, e.g. `agent:main:main` or `agent:main:echo:direct:alice`.
    pub key: String,
    /// Current transcript id (a UUID); changes on reset.
    pub session_id: String,
    /// Agent id (`main`).
    pub agent_id: String,
    /// The channel plugin this session belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The conversation id within that channel, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change (message or patch), Unix ms.
    pub updated_ms: i64,
    /// Messages in the current transcript.
    pub message_count: u64,
    /// The first 120 characters of the last message's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_preview: Option<String>,
    /// Operator settings set by `sessions.patch` (label, model,
    /// thinkingLevel, verboseLevel, ...), keyed by their protocol names.
    pub settings: Map<String, Value>,
}

/// What a new session starts with.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// Agent id; `main` when empty.
    pub agent_id: String,
    /// The channel plugin, for channel sessions.
    pub channel: Option<String>,
    /// The conversation within the channel.
    pub conversation: Option<String>,
}

/// One transcript message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptMessage {
    /// Unique id (a UUID).
    pub id: String,
    /// Position in the transcript, from 1, contiguous.
    pub seq: u64,
    /// `user`, `assistant`, `tool` or `system`.
    pub role: String,
    /// Pi-style content: an array of `{type:"text",text}` (and tool call /
    /// result) blocks.
    pub content: Value,
    /// Unix ms.
    pub timestamp: i64,
    /// The run that produced it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Why the model stopped (assistant messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Free-form extra fields (usage, channel message id, sender, ...).
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub meta: Map<String, Value>,
}

/// A message to append.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// `user`, `assistant`, `tool` or `system`.
    pub role: String,
    /// Pi-style content array.
    pub content: Value,
    /// The producing run.
    pub run_id: Option<String>,
    /// Why the model stopped.
    pub stop_reason: Option<String>,
    /// Extra fields.
    pub meta: Map<String, Value>,
    /// The event to log with it (`message.received` for user messages,
    /// `message.sent` for assistant replies), or `None` for no event.
    pub event: Option<&'static str>,
}

/// A device that has been paired (or asked to be).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    /// Hex SHA-256 of the raw public key.
    pub device_id: String,
    /// Base64url raw Ed25519 public key.
    pub public_key: String,
    /// Roles granted.
    pub roles: Vec<String>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Client metadata (displayName, platform, deviceFamily, clientId,
    /// clientMode).
    pub meta: Map<String, Value>,
    /// When it was approved, Unix ms.
    pub approved_ms: i64,
}

/// A pending pairing request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRequest {
    /// Request id (a UUID).
    pub request_id: String,
    /// The device asking.
    pub device_id: String,
    /// Its public key.
    pub public_key: String,
    /// Role asked for.
    pub role: String,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// Client metadata and remote address.
    pub meta: Map<String, Value>,
    /// When it was asked, Unix ms.
    pub ts: i64,
}

/// One row of the durable event log (the webhook outbox source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Global, strictly increasing id.
    pub id: i64,
    /// Event type, e.g. `message.received`.
    pub kind: String,
    /// The session it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Per-session sequence number (from 1, contiguous per session key);
    /// for events with no session, per-`scope` where scope is the channel or
    /// plugin name in `data`, else a global sequence.
    pub seq: i64,
    /// Unix ms.
    pub ts: i64,
    /// Event data (identifies the session/channel/plugin).
    pub data: Value,
}

/// Sessions, transcripts, devices and the event log. All methods are
/// synchronous; implementations that block (SQLite on a local file) move
/// the work off the async worker threads themselves, so callers on async
/// tasks use them directly.
pub trait SessionStore: Send + Sync + 'static {
    /// The session `key`, creating it with `init` if absent. Returns the
    /// entry and whether it was created (a `session.created` event is
    /// logged in the same transaction when it was).
    fn ensure_session(
        &self,
        key: &str,
        init: &NewSession,
    ) -> Result<(SessionEntry, bool), StoreError>;
    /// The session `key`, if it exists.
    fn get_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError>;
    /// Sessions, most recently updated first, at most `limit`.
    fn list_sessions(&self, limit: usize) -> Result<Vec<SessionEntry>, StoreError>;
    /// Number of sessions.
    fn count_sessions(&self) -> Result<u64, StoreError>;
    /// Merge `patch` into the session's settings (a `null` value removes the
    /// key). `None` if the session does not exist.
    fn patch_session(
        &self,
        key: &str,
        patch: &Map<String, Value>,
    ) -> Result<Option<SessionEntry>, StoreError>;
    /// Start a fresh transcript (new session id; the old transcript is kept
    /// under the old id). `None` if the session does not exist.
    fn reset_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError>;
    /// Delete the session (logging `session.deleted`); with
    /// `delete_transcript` its messages go too. Returns whether it existed.
    fn delete_session(&self, key: &str, delete_transcript: bool) -> Result<bool, StoreError>;
    /// Append a message to the session's current transcript (creating the
    /// session with defaults if absent), updating `updated_ms`,
    /// `message_count` and `last_preview`, and logging `msg.event` if set,
    /// all in one transaction. A `user` or `assistant` message whose run
    /// already has its message of that role in the session (the run
    /// executed again after a restart, perhaps after it had answered) is
    /// not appended: the one there is returned, and no event is logged.
    fn append_message(&self, key: &str, msg: NewMessage) -> Result<TranscriptMessage, StoreError>;
    /// The last `limit` messages of the session's current transcript, oldest
    /// first. Empty if the session does not exist.
    fn history(&self, key: &str, limit: usize) -> Result<Vec<TranscriptMessage>, StoreError>;

    /// Insert or replace a paired device.
    fn put_device(&self, device: &DeviceRecord) -> Result<(), StoreError>;
    /// A paired device.
    fn get_device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// All paired devices.
    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Remove a paired device and its tokens; whether it existed.
    fn remove_device(&self, device_id: &str) -> Result<bool, StoreError>;
    /// Add a pending pairing request (replacing any pending one for the
    /// same device).
    fn put_pair_request(&self, req: &PairRequest) -> Result<(), StoreError>;
    /// Pending pairing requests, oldest first.
    fn list_pair_requests(&self) -> Result<Vec<PairRequest>, StoreError>;
    /// Remove and return a pending request.
    fn take_pair_request(&self, request_id: &str) -> Result<Option<PairRequest>, StoreError>;
    /// Store a device token for (device, role). Only `token_sha256` (hex)
    /// is stored, never the token.
    fn put_device_token(
        &self,
        device_id: &str,
        role: &str,
        token_sha256: &str,
        scopes: &[String],
        issued_ms: i64,
    ) -> Result<(), StoreError>;
    /// The scopes of the token for (device, role) if its hash matches.
    fn check_device_token(
        &self,
        device_id: &str,
        role: &str,
        token_sha256: &str,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// Append an event that is not tied to a session change (agent.*,
    /// tool.*, channel.*, plugin.*), in its own transaction.
    fn append_event(
        &self,
        kind: &str,
        session_key: Option<&str>,
        data: Value,
    ) -> Result<EventRecord, StoreError>;
    /// Events with `id > after`, oldest first, at most `limit`.
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Delete events older than `before_ms`, except the newest of each
    /// sequence scope (so sequence numbers carry on). Returns how many.
    /// Implementations delete in bounded batches, so other writers get in
    /// between.
    fn prune_events(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// `Ok` if the store can take writes now (for `/readyz`); the error
    /// says why not (disk full, read-only, ...).
    fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A shared session store.
pub type SharedSessions = std::sync::Arc<dyn SessionStore>;

/// Whether a run's message of `role` is appended at most once per run (the
/// run's prompt and its answer; a re-executed run finds them there).
pub(crate) fn once_per_run(role: &str) -> bool {
    matches!(role, "user" | "assistant")
}
