//! [`SessionStore`] on the embedded SQLite database (tables from migration 2
//! in `sqlite.rs`).
//!
//! Every mutating method runs in one `IMMEDIATE` transaction on the writer
//! ([`SqliteStore::write_tx`]), and writes its event-log row inside that
//! transaction, so the `events` table is a transactional outbox. Per-scope
//! event and transcript sequence numbers are computed as `MAX(seq) + 1`
//! inside the same transaction; the single writer (and SQLite's write lock,
//! for other processes) makes that race-free. Reads run on the reader pool
//! ([`SqliteStore::read`]).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::columns::{list_json, map_json, parse, sql_limit};
use super::prune::PRUNE_BATCH;
use super::sessions::once_per_run;
use super::{
    DeviceRecord, EventRecord, NewMessage, NewSession, PairRequest, SessionEntry, SessionStore,
    SqliteStore, StoreError, TranscriptMessage,
};

/// Characters of message text kept as a session's `last_preview`.
pub(super) const PREVIEW_CHARS: usize = 120;
/// Characters of message text carried in a message event's `text`.
pub(super) const EVENT_TEXT_CHARS: usize = 500;

/// The `sessions` columns [`session_row`] reads, in order.
macro_rules! session_cols {
    () => {
        "key, session_id, agent_id, channel, conversation, created_ms, updated_ms,
         message_count, last_preview, settings"
    };
}

impl SessionStore for SqliteStore {
    fn ensure_session(
        &self,
        key: &str,
        init: &NewSession,
    ) -> Result<(SessionEntry, bool), StoreError> {
        self.write_tx(|tx, now| ensure(tx, key, init, now))
    }

    fn get_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        self.read(|conn| load_session(conn, key))
    }

    fn list_sessions(&self, limit: usize) -> Result<Vec<SessionEntry>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                session_cols!(),
                " FROM sessions ORDER BY updated_ms DESC, key LIMIT ?1"
            ))?;
            Ok(stmt
                .query_map([sql_limit(limit)], session_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(session_done).collect()
    }

    fn count_sessions(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM sessions")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn patch_session(
        &self,
        key: &str,
        patch: &Map<String, Value>,
    ) -> Result<Option<SessionEntry>, StoreError> {
        self.write_tx(|tx, now| {
            let Some(mut session) = load_session(tx, key)? else {
                return Ok(None);
            };
            for (name, value) in patch {
                if value.is_null() {
                    session.settings.remove(name);
                } else {
                    session.settings.insert(name.clone(), value.clone());
                }
            }
            session.updated_ms = now;
            tx.prepare_cached("UPDATE sessions SET settings = ?2, updated_ms = ?3 WHERE key = ?1")?
                .execute(params![key, map_json(&session.settings), now])?;
            Ok(Some(session))
        })
    }

    fn reset_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        self.write_tx(|tx, now| {
            let Some(mut session) = load_session(tx, key)? else {
                return Ok(None);
            };
            session.session_id = Uuid::new_v4().to_string();
            session.message_count = 0;
            session.last_preview = None;
            session.updated_ms = now;
            tx.prepare_cached(
                "UPDATE sessions SET session_id = ?2, message_count = 0, last_preview = NULL,
                 updated_ms = ?3 WHERE key = ?1",
            )?
            .execute(params![key, session.session_id, now])?;
            Ok(Some(session))
        })
    }

    fn delete_session(&self, key: &str, delete_transcript: bool) -> Result<bool, StoreError> {
        self.write_tx(|tx, now| {
            let Some(session) = load_session(tx, key)? else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM sessions WHERE key = ?1")?
                .execute([key])?;
            if delete_transcript {
                // Every transcript the key ever had, not just the current one.
                tx.prepare_cached("DELETE FROM messages WHERE session_key = ?1")?
                    .execute([key])?;
            }
            let mut data = session_data(&session);
            data.insert("transcriptDeleted".into(), delete_transcript.into());
            insert_event(tx, "session.deleted", Some(key), Value::Object(data), now)?;
            Ok(true)
        })
    }

    fn append_message(&self, key: &str, msg: NewMessage) -> Result<TranscriptMessage, StoreError> {
        self.write_tx(|tx, now| {
            let (session, _) = ensure(tx, key, &NewSession::default(), now)?;
            if let Some(run_id) = msg.run_id.as_deref().filter(|_| once_per_run(&msg.role)) {
                // A run executed again (after a restart) has its message
                // (and, killed after answering, its answer) in the
                // transcript already.
                let existing = tx
                    .prepare_cached(
                        "SELECT id, seq, role, content, ts, run_id, stop_reason, meta FROM messages
                         WHERE session_id = ?1 AND run_id = ?2 AND role = ?3
                         ORDER BY seq LIMIT 1",
                    )?
                    .query_row(params![session.session_id, run_id, msg.role], message_row)
                    .optional()?;
                if let Some(row) = existing {
                    return message_done(row);
                }
            }
            let seq: u64 = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?1",
                )?
                .query_row([&session.session_id], |r| r.get(0))?;
            let message = TranscriptMessage {
                id: Uuid::new_v4().to_string(),
                seq,
                role: msg.role,
                content: msg.content,
                timestamp: now,
                run_id: msg.run_id,
                stop_reason: msg.stop_reason,
                meta: msg.meta,
            };
            tx.prepare_cached(
                "INSERT INTO messages (session_id, seq, session_key, id, role, content, ts,
                 run_id, stop_reason, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                session.session_id,
                seq,
                key,
                message.id,
                message.role,
                message.content.to_string(),
                now,
                message.run_id,
                message.stop_reason,
                map_json(&message.meta),
            ])?;
            let text = message_text(&message.content);
            let preview = (!text.is_empty()).then(|| truncate(&text, PREVIEW_CHARS));
            // Seqs are contiguous from 1, so the new seq is the message count.
            tx.prepare_cached(
                "UPDATE sessions SET updated_ms = ?2, message_count = ?3, last_preview = ?4
                 WHERE key = ?1",
            )?
            .execute(params![key, now, seq, preview])?;
            if let Some(kind) = msg.event {
                let mut data = session_data(&session);
                data.insert("messageId".into(), message.id.clone().into());
                data.insert("role".into(), message.role.clone().into());
                data.insert("messageSeq".into(), seq.into());
                if let Some(run_id) = &message.run_id {
                    data.insert("runId".into(), run_id.clone().into());
                }
                if let Some(reason) = &message.stop_reason {
                    data.insert("stopReason".into(), reason.clone().into());
                }
                data.insert("text".into(), truncate(&text, EVENT_TEXT_CHARS).into());
                insert_event(tx, kind, Some(key), Value::Object(data), now)?;
            }
            Ok(message)
        })
    }

    fn history(&self, key: &str, limit: usize) -> Result<Vec<TranscriptMessage>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, seq, role, content, ts, run_id, stop_reason, meta FROM messages
                 WHERE session_id = (SELECT session_id FROM sessions WHERE key = ?1)
                 ORDER BY seq DESC LIMIT ?2",
            )?;
            Ok(stmt
                .query_map(params![key, sql_limit(limit)], message_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().rev().map(message_done).collect()
    }

    fn put_device(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached(
                "INSERT INTO devices (device_id, public_key, roles, scopes, meta, approved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key,
                   roles = excluded.roles, scopes = excluded.scopes, meta = excluded.meta,
                   approved_ms = excluded.approved_ms",
            )?
            .execute(params![
                device.device_id,
                device.public_key,
                list_json(&device.roles),
                list_json(&device.scopes),
                map_json(&device.meta),
                device.approved_ms,
            ])?;
            Ok(())
        })
    }

    fn get_device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT device_id, public_key, approved_ms, roles, scopes, meta FROM devices
                     WHERE device_id = ?1",
                )?
                .query_row([device_id], device_row)
                .optional()?)
        })?
        .map(device_done)
        .transpose()
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT device_id, public_key, approved_ms, roles, scopes, meta FROM devices
                 ORDER BY approved_ms, device_id",
            )?;
            Ok(stmt
                .query_map([], device_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(device_done).collect()
    }

    fn remove_device(&self, device_id: &str) -> Result<bool, StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached("DELETE FROM device_tokens WHERE device_id = ?1")?
                .execute([device_id])?;
            let removed = tx
                .prepare_cached("DELETE FROM devices WHERE device_id = ?1")?
                .execute([device_id])?;
            Ok(removed > 0)
        })
    }

    fn put_pair_request(&self, req: &PairRequest) -> Result<(), StoreError> {
        // REPLACE drops any row that conflicts on request_id or on the
        // UNIQUE device_id, so a device has at most one pending request.
        self.write_tx(|tx, _| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO pair_requests
                 (request_id, device_id, public_key, role, ts, scopes, meta)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                req.request_id,
                req.device_id,
                req.public_key,
                req.role,
                req.ts,
                list_json(&req.scopes),
                map_json(&req.meta),
            ])?;
            Ok(())
        })
    }

    fn list_pair_requests(&self) -> Result<Vec<PairRequest>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT request_id, device_id, public_key, role, ts, scopes, meta
                 FROM pair_requests ORDER BY ts, request_id",
            )?;
            Ok(stmt
                .query_map([], pair_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(pair_done).collect()
    }

    fn take_pair_request(&self, request_id: &str) -> Result<Option<PairRequest>, StoreError> {
        self.write_tx(|tx, _| {
            let row = tx
                .prepare_cached(
                    "SELECT request_id, device_id, public_key, role, ts, scopes, meta
                     FROM pair_requests WHERE request_id = ?1",
                )?
                .query_row([request_id], pair_row)
                .optional()?;
            if row.is_some() {
                tx.prepare_cached("DELETE FROM pair_requests WHERE request_id = ?1")?
                    .execute([request_id])?;
            }
            row.map(pair_done).transpose()
        })
    }

    fn put_device_token(
        &self,
        device_id: &str,
        role: &str,
        token_sha256: &str,
        scopes: &[String],
        issued_ms: i64,
    ) -> Result<(), StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached(
                "INSERT INTO device_tokens (device_id, role, token_sha256, scopes, issued_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (device_id, role) DO UPDATE SET token_sha256 = excluded.token_sha256,
                   scopes = excluded.scopes, issued_ms = excluded.issued_ms",
            )?
            .execute(params![
                device_id,
                role,
                token_sha256,
                list_json(scopes),
                issued_ms
            ])?;
            Ok(())
        })
    }

    fn check_device_token(
        &self,
        device_id: &str,
        role: &str,
        token_sha256: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row: Option<(String, String)> = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT token_sha256, scopes FROM device_tokens
                     WHERE device_id = ?1 AND role = ?2",
                )?
                .query_row([device_id, role], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        match row {
            Some((stored, scopes))
                if bool::from(stored.as_bytes().ct_eq(token_sha256.as_bytes())) =>
            {
                parse(&scopes, || {
                    format!("device_tokens.scopes of {device_id}/{role}")
                })
                .map(Some)
            }
            _ => Ok(None),
        }
    }

    fn append_event(
        &self,
        kind: &str,
        session_key: Option<&str>,
        data: Value,
    ) -> Result<EventRecord, StoreError> {
        self.write_tx(|tx, now| insert_event(tx, kind, session_key, data, now))
    }

    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, kind, session_key, seq, ts, data FROM events WHERE id > ?1
                 ORDER BY id LIMIT ?2",
            )?;
            Ok(stmt
                .query_map(params![after, sql_limit(limit)], |r| {
                    let data: String = r.get(5)?;
                    Ok((
                        EventRecord {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            session_key: r.get(2)?,
                            seq: r.get(3)?,
                            ts: r.get(4)?,
                            data: Value::Null,
                        },
                        data,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(mut event, data)| {
                event.data = parse(&data, || format!("events.data of event {}", event.id))?;
                Ok(event)
            })
            .collect()
    }

    fn prune_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.prune_events_in_batches(before_ms, PRUNE_BATCH, |_| {})
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        SqliteStore::check_writable(self)
    }
}

/// The session `key`, creating it (and logging `session.created`) if absent.
fn ensure(
    conn: &Connection,
    key: &str,
    init: &NewSession,
    now: i64,
) -> Result<(SessionEntry, bool), StoreError> {
    if let Some(session) = load_session(conn, key)? {
        return Ok((session, false));
    }
    let session = SessionEntry {
        key: key.to_owned(),
        session_id: Uuid::new_v4().to_string(),
        agent_id: if init.agent_id.is_empty() {
            "main".to_owned()
        } else {
            init.agent_id.clone()
        },
        channel: init.channel.clone(),
        conversation: init.conversation.clone(),
        created_ms: now,
        updated_ms: now,
        message_count: 0,
        last_preview: None,
        settings: Map::new(),
    };
    conn.prepare_cached(
        "INSERT INTO sessions (key, session_id, agent_id, channel, conversation, created_ms,
         updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![
        session.key,
        session.session_id,
        session.agent_id,
        session.channel,
        session.conversation,
        now,
    ])?;
    let data = Value::Object(session_data(&session));
    insert_event(conn, "session.created", Some(key), data, now)?;
    Ok((session, true))
}

fn load_session(conn: &Connection, key: &str) -> Result<Option<SessionEntry>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        session_cols!(),
        " FROM sessions WHERE key = ?1"
    ))?
    .query_row([key], session_row)
    .optional()?
    .map(session_done)
    .transpose()
}

/// Append one event row; its scope and per-scope seq are derived here.
fn insert_event(
    conn: &Connection,
    kind: &str,
    session_key: Option<&str>,
    data: Value,
    now: i64,
) -> Result<EventRecord, StoreError> {
    let scope = event_scope(session_key, &data);
    let seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE scope = ?1")?
        .query_row([&scope], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO events (kind, session_key, scope, seq, ts, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        kind,
        session_key,
        scope,
        seq,
        now,
        data.to_string()
    ])?;
    let event = EventRecord {
        id: conn.last_insert_rowid(),
        kind: kind.to_owned(),
        session_key: session_key.map(str::to_owned),
        seq,
        ts: now,
        data,
    };
    super::sqlite_webhooks::fan_out(conn, &event)?;
    Ok(event)
}

/// The sequence an event is numbered in: its session, else the channel or
/// plugin named in its data (one namespace: a channel is named by its
/// plugin), else `global`. Prefixed so a session key can never collide with
/// a plugin name.
pub(super) fn event_scope(session_key: Option<&str>, data: &Value) -> String {
    if let Some(key) = session_key {
        return format!("session:{key}");
    }
    let name = |field| data.get(field).and_then(Value::as_str);
    match name("channel").or_else(|| name("plugin")) {
        Some(name) => format!("plugin:{name}"),
        None => "global".to_owned(),
    }
}

/// The fields every session event carries.
pub(super) fn session_data(session: &SessionEntry) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("sessionKey".into(), session.key.clone().into());
    data.insert("sessionId".into(), session.session_id.clone().into());
    data.insert("agentId".into(), session.agent_id.clone().into());
    if let Some(channel) = &session.channel {
        data.insert("channel".into(), channel.clone().into());
    }
    if let Some(conversation) = &session.conversation {
        data.insert("conversation".into(), conversation.clone().into());
    }
    data
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<(SessionEntry, String)> {
    let session = SessionEntry {
        key: r.get(0)?,
        session_id: r.get(1)?,
        agent_id: r.get(2)?,
        channel: r.get(3)?,
        conversation: r.get(4)?,
        created_ms: r.get(5)?,
        updated_ms: r.get(6)?,
        message_count: r.get(7)?,
        last_preview: r.get(8)?,
        settings: Map::new(),
    };
    Ok((session, r.get(9)?))
}

fn session_done(
    (mut session, settings): (SessionEntry, String),
) -> Result<SessionEntry, StoreError> {
    session.settings = parse(&settings, || {
        format!("sessions.settings of {}", session.key)
    })?;
    Ok(session)
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<(TranscriptMessage, String, String)> {
    let message = TranscriptMessage {
        id: r.get(0)?,
        seq: r.get(1)?,
        role: r.get(2)?,
        content: Value::Null,
        timestamp: r.get(4)?,
        run_id: r.get(5)?,
        stop_reason: r.get(6)?,
        meta: Map::new(),
    };
    Ok((message, r.get(3)?, r.get(7)?))
}

fn message_done(
    (mut message, content, meta): (TranscriptMessage, String, String),
) -> Result<TranscriptMessage, StoreError> {
    message.content = parse(&content, || format!("messages.content of {}", message.id))?;
    message.meta = parse(&meta, || format!("messages.meta of {}", message.id))?;
    Ok(message)
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<(DeviceRecord, [String; 3])> {
    let device = DeviceRecord {
        device_id: r.get(0)?,
        public_key: r.get(1)?,
        approved_ms: r.get(2)?,
        roles: Vec::new(),
        scopes: Vec::new(),
        meta: Map::new(),
    };
    Ok((device, [r.get(3)?, r.get(4)?, r.get(5)?]))
}

fn device_done(
    (mut device, [roles, scopes, meta]): (DeviceRecord, [String; 3]),
) -> Result<DeviceRecord, StoreError> {
    let what = |column: &str| format!("devices.{column} of {}", device.device_id);
    device.roles = parse(&roles, || what("roles"))?;
    device.scopes = parse(&scopes, || what("scopes"))?;
    device.meta = parse(&meta, || what("meta"))?;
    Ok(device)
}

fn pair_row(r: &Row<'_>) -> rusqlite::Result<(PairRequest, String, String)> {
    let req = PairRequest {
        request_id: r.get(0)?,
        device_id: r.get(1)?,
        public_key: r.get(2)?,
        role: r.get(3)?,
        ts: r.get(4)?,
        scopes: Vec::new(),
        meta: Map::new(),
    };
    Ok((req, r.get(5)?, r.get(6)?))
}

fn pair_done(
    (mut req, scopes, meta): (PairRequest, String, String),
) -> Result<PairRequest, StoreError> {
    req.scopes = parse(&scopes, || {
        format!("pair_requests.scopes of {}", req.request_id)
    })?;
    req.meta = parse(&meta, || {
        format!("pair_requests.meta of {}", req.request_id)
    })?;
    Ok(req)
}

/// The text blocks of Pi-style `content` joined by newlines (a bare string
/// is its own text).
pub(super) fn message_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| match block {
                Value::String(text) => Some(text.as_str()),
                _ if block.get("type").and_then(Value::as_str) == Some("text") => {
                    block.get("text").and_then(Value::as_str)
                }
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The first `chars` characters of `text`.
pub(super) fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use serde_json::json;
    use tempfile::TempDir;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn db(dir: &TempDir) -> std::path::PathBuf {
        dir.path().join("pincer.db")
    }

    fn open(dir: &TempDir) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&db(dir))
    }

    /// A second connection to the same file, to inspect or sabotage it.
    fn raw(dir: &TempDir) -> rusqlite::Result<Connection> {
        Connection::open(db(dir))
    }

    fn count(conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
        conn.query_row(sql, [], |r| r.get(0))
    }

    fn msg(role: &str, text: &str, event: Option<&'static str>) -> NewMessage {
        NewMessage {
            role: role.into(),
            content: json!([{"type": "text", "text": text}]),
            event,
            ..Default::default()
        }
    }

    fn user(text: &str) -> NewMessage {
        msg("user", text, Some("message.received"))
    }

    fn all_events(store: &SqliteStore) -> Result<Vec<EventRecord>, StoreError> {
        store.events_after(0, usize::MAX)
    }

    #[test]
    fn append_and_history_round_trip() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        let key = "agent:main:echo:direct:alice";
        let init = NewSession {
            agent_id: String::new(),
            channel: Some("echo".into()),
            conversation: Some("alice".into()),
        };
        let (created, was_new) = store.ensure_session(key, &init)?;
        assert!(was_new);
        assert_eq!(created.agent_id, "main");
        assert_eq!(created.channel.as_deref(), Some("echo"));
        let (again, was_new) = store.ensure_session(key, &NewSession::default())?;
        assert!(!was_new);
        assert_eq!(again, created);

        let first = store.append_message(key, user("hello"))?;
        let mut meta = Map::new();
        meta.insert("usage".into(), json!({"input": 3}));
        let reply = store.append_message(
            key,
            NewMessage {
                role: "assistant".into(),
                content: json!([
                    {"type": "text", "text": "part one"},
                    {"type": "toolCall", "name": "x"},
                    {"type": "text", "text": "part two"}
                ]),
                run_id: Some("run-1".into()),
                stop_reason: Some("stop".into()),
                meta,
                event: Some("message.sent"),
            },
        )?;
        let long: String = "é".repeat(200);
        let bare = store.append_message(
            key,
            NewMessage {
                role: "user".into(),
                content: Value::String(long.clone()),
                ..Default::default()
            },
        )?;
        assert_eq!((first.seq, reply.seq, bare.seq), (1, 2, 3));
        let ids: HashSet<_> = [&first.id, &reply.id, &bare.id].into_iter().collect();
        assert_eq!(ids.len(), 3);

        let history = store.history(key, 10)?;
        assert_eq!(history, vec![first, reply.clone(), bare.clone()]);
        assert_eq!(store.history(key, 2)?, vec![reply, bare]);
        assert!(store.history("agent:main:nobody", 10)?.is_empty());

        let session = store.get_session(key)?.ok_or("session missing")?;
        assert_eq!(session.message_count, 3);
        assert_eq!(session.last_preview, Some("é".repeat(120)));
        assert!(session.updated_ms >= session.created_ms);
        assert_eq!(session.session_id, created.session_id);

        // A message without text clears the preview (it is the last message's).
        store.append_message(
            key,
            NewMessage {
                role: "tool".into(),
                content: json!([{"type": "toolResult", "value": 1}]),
                ..Default::default()
            },
        )?;
        assert_eq!(store.get_session(key)?.ok_or("missing")?.last_preview, None);
        Ok(())
    }

    #[test]
    fn list_and_count_sessions_by_recency() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        for key in ["a", "b", "c"] {
            store.ensure_session(key, &NewSession::default())?;
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        store.append_message("a", user("bump"))?;
        assert_eq!(store.count_sessions()?, 3);
        let keys: Vec<_> = store
            .list_sessions(10)?
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(keys, ["a", "c", "b"]);
        assert_eq!(store.list_sessions(1)?.len(), 1);
        Ok(())
    }

    #[test]
    fn everything_survives_reopen() -> TestResult {
        let dir = TempDir::new()?;
        let device = DeviceRecord {
            device_id: "dev1".into(),
            public_key: "pk1".into(),
            roles: vec!["operator".into()],
            scopes: vec!["operator.read".into()],
            meta: Map::from_iter([("platform".to_owned(), json!("linux"))]),
            approved_ms: 5,
        };
        let (session, history, events) = {
            let store = open(&dir)?;
            store.append_message("k", user("one"))?;
            store.append_message("k", msg("assistant", "two", Some("message.sent")))?;
            let mut patch = Map::new();
            patch.insert("label".into(), json!("work"));
            store.patch_session("k", &patch)?;
            store.put_device(&device)?;
            store.put_device_token("dev1", "operator", "abc123", &device.scopes, 7)?;
            store.append_event("plugin.loaded", None, json!({"plugin": "echo"}))?;
            (
                store.get_session("k")?,
                store.history("k", 10)?,
                all_events(&store)?,
            )
        };
        let store = open(&dir)?;
        assert_eq!(store.get_session("k")?, session);
        assert_eq!(session.ok_or("missing")?.settings["label"], json!("work"));
        assert_eq!(store.history("k", 10)?, history);
        assert_eq!(history.len(), 2);
        assert_eq!(store.get_device("dev1")?, Some(device.clone()));
        assert_eq!(
            store.check_device_token("dev1", "operator", "abc123")?,
            Some(device.scopes)
        );
        assert_eq!(all_events(&store)?, events);
        assert_eq!(events.len(), 4);
        // Sequences continue where they left off.
        assert_eq!(store.append_message("k", user("three"))?.seq, 3);
        let next = store.append_event("plugin.loaded", None, json!({"plugin": "echo"}))?;
        assert_eq!(next.seq, 2);
        assert!(next.id > events[3].id);
        Ok(())
    }

    #[test]
    fn reset_keeps_old_transcript_out_of_history() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        store.append_message("k", user("old one"))?;
        store.append_message("k", user("old two"))?;
        let before = store.get_session("k")?.ok_or("missing")?;
        let reset = store.reset_session("k")?.ok_or("missing")?;
        assert_ne!(reset.session_id, before.session_id);
        assert_eq!(
            (reset.message_count, reset.last_preview.as_deref()),
            (0, None)
        );
        assert_eq!(store.get_session("k")?, Some(reset.clone()));
        assert!(store.history("k", 10)?.is_empty());

        let fresh = store.append_message("k", user("new"))?;
        assert_eq!(fresh.seq, 1);
        assert_eq!(store.history("k", 10)?, vec![fresh]);
        assert_eq!(store.get_session("k")?.ok_or("missing")?.message_count, 1);
        let conn = raw(&dir)?;
        let archived: i64 = conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE session_id = ?1",
            [&before.session_id],
            |r| r.get(0),
        )?;
        assert_eq!(archived, 2);
        assert_eq!(store.reset_session("nope")?, None);
        Ok(())
    }

    #[test]
    fn delete_with_and_without_transcript() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        for key in ["keep", "drop"] {
            store.append_message(key, user("first transcript"))?;
            store.reset_session(key)?;
            store.append_message(key, user("second transcript"))?;
        }
        let conn = raw(&dir)?;
        let messages_of = |key: &str| -> rusqlite::Result<i64> {
            conn.query_row(
                "SELECT COUNT(*) FROM messages WHERE session_key = ?1",
                [key],
                |r| r.get(0),
            )
        };

        assert!(store.delete_session("keep", false)?);
        assert_eq!(store.get_session("keep")?, None);
        assert_eq!(messages_of("keep")?, 2);
        assert!(!store.delete_session("keep", false)?);

        assert!(store.delete_session("drop", true)?);
        assert_eq!(store.get_session("drop")?, None);
        assert_eq!(messages_of("drop")?, 0);
        assert_eq!(store.count_sessions()?, 0);

        // A recreated key starts empty; deleting it with its transcript
        // also removes what its earlier incarnation left behind.
        let (_, created) = store.ensure_session("keep", &NewSession::default())?;
        assert!(created);
        assert!(store.history("keep", 10)?.is_empty());
        assert!(store.delete_session("keep", true)?);
        assert_eq!(messages_of("keep")?, 0);

        let deleted: Vec<_> = all_events(&store)?
            .into_iter()
            .filter(|e| e.kind == "session.deleted")
            .map(|e| (e.session_key, e.data["transcriptDeleted"].clone()))
            .collect();
        assert_eq!(
            deleted,
            [
                (Some("keep".to_owned()), json!(false)),
                (Some("drop".to_owned()), json!(true)),
                (Some("keep".to_owned()), json!(true)),
            ]
        );
        Ok(())
    }

    #[test]
    fn patch_merges_and_null_removes() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        let patch = |v: Value| v.as_object().cloned().ok_or("not an object");
        assert_eq!(store.patch_session("k", &patch(json!({"a": 1}))?)?, None);
        let (created, _) = store.ensure_session("k", &NewSession::default())?;
        std::thread::sleep(std::time::Duration::from_millis(3));
        let s = store
            .patch_session("k", &patch(json!({"label": "x", "model": "m1"}))?)?
            .ok_or("missing")?;
        assert!(s.updated_ms > created.updated_ms);
        let s = store
            .patch_session(
                "k",
                &patch(json!({"model": null, "thinkingLevel": "high"}))?,
            )?
            .ok_or("missing")?;
        let expected = patch(json!({"label": "x", "thinkingLevel": "high"}))?;
        assert_eq!(s.settings, expected);
        assert_eq!(store.get_session("k")?.ok_or("missing")?.settings, expected);
        Ok(())
    }

    #[test]
    fn pruning_keeps_each_scopes_newest_event_so_seqs_carry_on() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        for _ in 0..3 {
            store.append_event("plugin.loaded", None, json!({"plugin": "a"}))?;
            store.append_event("plugin.loaded", None, json!({"plugin": "b"}))?;
        }
        let pruned = store.prune_events(i64::MAX)?;
        assert_eq!(pruned, 4);
        let left: Vec<_> = all_events(&store)?.iter().map(|e| e.seq).collect();
        assert_eq!(left, [3, 3]);
        let next = store.append_event("plugin.loaded", None, json!({"plugin": "a"}))?;
        assert_eq!(next.seq, 4);
        // Nothing newer than the cut-off is touched.
        assert_eq!(store.prune_events(0)?, 0);
        Ok(())
    }

    #[test]
    fn events_are_sequenced_per_session_and_scope() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        let init = NewSession {
            channel: Some("echo".into()),
            conversation: Some("bob".into()),
            ..Default::default()
        };
        let (k1, _) = store.ensure_session("k1", &init)?;
        let m1 = store.append_message(
            "k1",
            NewMessage {
                run_id: Some("run-9".into()),
                ..user("hi there")
            },
        )?;
        store.append_message("k1", msg("assistant", "silent", None))?;
        store.append_message("k2", user("other session"))?;
        let plugin = |data: Value| store.append_event("channel.status", None, data);
        assert_eq!(plugin(json!({"channel": "echo"}))?.seq, 1);
        assert_eq!(plugin(json!({"channel": "echo"}))?.seq, 2);
        assert_eq!(plugin(json!({"plugin": "echo"}))?.seq, 3);
        assert_eq!(plugin(json!({"plugin": "other"}))?.seq, 1);
        assert_eq!(plugin(json!({"unrelated": true}))?.seq, 1);
        assert_eq!(plugin(json!(null))?.seq, 2);
        let run = store.append_event("agent.run.start", Some("k1"), json!({"runId": "run-9"}))?;
        assert_eq!(run.seq, 3);

        let events = all_events(&store)?;
        let summary: Vec<_> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.session_key.as_deref(), e.seq))
            .collect();
        assert_eq!(
            summary,
            [
                ("session.created", Some("k1"), 1),
                ("message.received", Some("k1"), 2),
                ("session.created", Some("k2"), 1),
                ("message.received", Some("k2"), 2),
                ("channel.status", None, 1),
                ("channel.status", None, 2),
                ("channel.status", None, 3),
                ("channel.status", None, 1),
                ("channel.status", None, 1),
                ("channel.status", None, 2),
                ("agent.run.start", Some("k1"), 3),
            ]
        );
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(events[10], run);
        assert_eq!(
            events[0].data,
            json!({"sessionKey": "k1", "sessionId": k1.session_id, "agentId": "main",
                   "channel": "echo", "conversation": "bob"})
        );
        assert_eq!(
            events[1].data,
            json!({"sessionKey": "k1", "sessionId": k1.session_id, "agentId": "main",
                   "channel": "echo", "conversation": "bob", "messageId": m1.id,
                   "role": "user", "messageSeq": 1, "runId": "run-9", "text": "hi there"})
        );

        // Paging with a cursor visits every event exactly once.
        let mut cursor = 0;
        let mut paged = Vec::new();
        loop {
            let page = store.events_after(cursor, 3)?;
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            cursor = last.id;
            paged.extend(page);
        }
        assert_eq!(paged, events);
        assert!(store.events_after(cursor, 10)?.is_empty());
        Ok(())
    }

    #[test]
    fn a_failed_mutation_leaves_neither_change_nor_event() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        store.append_message("k", user("ok"))?;
        let conn = raw(&dir)?;
        conn.execute_batch(
            "CREATE TRIGGER fail_sent BEFORE INSERT ON events WHEN NEW.kind = 'message.sent'
             BEGIN SELECT RAISE(ABORT, 'sabotaged'); END;
             CREATE TRIGGER fail_k2 BEFORE INSERT ON messages WHEN NEW.session_key = 'k2'
             BEGIN SELECT RAISE(ABORT, 'sabotaged'); END;",
        )?;
        let totals = |conn: &Connection| -> rusqlite::Result<(i64, i64, i64)> {
            Ok((
                count(conn, "SELECT COUNT(*) FROM messages")?,
                count(conn, "SELECT COUNT(*) FROM events")?,
                count(conn, "SELECT COUNT(*) FROM sessions")?,
            ))
        };
        assert_eq!(totals(&conn)?, (1, 2, 1));
        let before = store.get_session("k")?;

        // The event insert fails after the message and session update ran.
        assert!(
            store
                .append_message("k", msg("assistant", "no", Some("message.sent")))
                .is_err()
        );
        // The message insert fails after the session and session.created ran.
        assert!(store.append_message("k2", user("no")).is_err());

        assert_eq!(totals(&conn)?, (1, 2, 1));
        assert_eq!(store.get_session("k")?, before);
        assert_eq!(store.get_session("k2")?, None);
        conn.execute_batch("DROP TRIGGER fail_sent; DROP TRIGGER fail_k2;")?;
        // Nothing half-written is left to trip over: seqs continue cleanly.
        assert_eq!(store.append_message("k", user("again"))?.seq, 2);
        assert_eq!(store.append_message("k2", user("again"))?.seq, 1);
        assert_eq!(totals(&conn)?, (3, 5, 2));
        Ok(())
    }

    #[test]
    fn corrupt_json_is_reported() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        store.ensure_session("k", &NewSession::default())?;
        raw(&dir)?.execute("UPDATE sessions SET settings = 'not json'", [])?;
        match store.get_session("k") {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("sessions.settings of k"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            store.list_sessions(5),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn devices_pair_requests_and_tokens() -> TestResult {
        let dir = TempDir::new()?;
        let store = open(&dir)?;
        let device = |id: &str, approved_ms| DeviceRecord {
            device_id: id.into(),
            public_key: format!("pk-{id}"),
            roles: vec!["operator".into()],
            scopes: vec!["operator.admin".into()],
            meta: Map::from_iter([("displayName".to_owned(), json!(id))]),
            approved_ms,
        };
        store.put_device(&device("d1", 1))?;
        store.put_device(&device("d2", 2))?;
        let mut updated = device("d1", 3);
        updated.scopes = vec!["operator.read".into()];
        store.put_device(&updated)?;
        assert_eq!(store.get_device("d1")?, Some(updated.clone()));
        assert_eq!(store.get_device("nope")?, None);
        assert_eq!(store.list_devices()?, vec![device("d2", 2), updated]);

        let scopes = vec!["operator.read".to_owned(), "operator.write".to_owned()];
        store.put_device_token("d1", "operator", "aa11", &scopes, 10)?;
        assert_eq!(
            store.check_device_token("d1", "operator", "aa11")?,
            Some(scopes)
        );
        assert_eq!(store.check_device_token("d1", "operator", "aa12")?, None);
        assert_eq!(store.check_device_token("d1", "operator", "aa1")?, None);
        assert_eq!(store.check_device_token("d1", "node", "aa11")?, None);
        // Re-issuing replaces the old token.
        store.put_device_token("d1", "operator", "bb22", &[], 11)?;
        assert_eq!(store.check_device_token("d1", "operator", "aa11")?, None);
        assert_eq!(
            store.check_device_token("d1", "operator", "bb22")?,
            Some(vec![])
        );

        assert!(store.remove_device("d1")?);
        assert!(!store.remove_device("d1")?);
        assert_eq!(store.get_device("d1")?, None);
        assert_eq!(store.check_device_token("d1", "operator", "bb22")?, None);
        assert_eq!(count(&raw(&dir)?, "SELECT COUNT(*) FROM device_tokens")?, 0);

        let request = |id: &str, device_id: &str, ts| PairRequest {
            request_id: id.into(),
            device_id: device_id.into(),
            public_key: format!("pk-{device_id}"),
            role: "operator".into(),
            scopes: vec!["operator.read".into()],
            meta: Map::from_iter([("remoteAddr".to_owned(), json!("127.0.0.1"))]),
            ts,
        };
        store.put_pair_request(&request("r1", "d3", 100))?;
        store.put_pair_request(&request("r2", "d4", 50))?;
        store.put_pair_request(&request("r3", "d3", 200))?;
        assert_eq!(
            store.list_pair_requests()?,
            vec![request("r2", "d4", 50), request("r3", "d3", 200)]
        );
        assert_eq!(store.take_pair_request("r1")?, None);
        assert_eq!(
            store.take_pair_request("r3")?,
            Some(request("r3", "d3", 200))
        );
        assert_eq!(store.take_pair_request("r3")?, None);
        assert_eq!(store.list_pair_requests()?, vec![request("r2", "d4", 50)]);
        Ok(())
    }

    #[test]
    fn concurrent_appends_get_contiguous_seqs() -> TestResult {
        let dir = TempDir::new()?;
        let store = Arc::new(open(&dir)?);
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || -> Result<Vec<u64>, StoreError> {
                    (0..50)
                        .map(|i| Ok(store.append_message("k", user(&format!("{t}-{i}")))?.seq))
                        .collect()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for thread in threads {
            seqs.extend(thread.join().map_err(|_| "thread panicked")??);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());

        let history = store.history("k", 1000)?;
        assert_eq!(
            history.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        let ids: HashSet<_> = history.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), 100);
        assert_eq!(store.get_session("k")?.ok_or("missing")?.message_count, 100);
        let event_seqs: Vec<_> = all_events(&store)?.iter().map(|e| e.seq).collect();
        assert_eq!(event_seqs, (1..=101).collect::<Vec<_>>());
        Ok(())
    }
}
