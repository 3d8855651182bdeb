//! [`SessionStore`] on PostgreSQL: sessions, transcripts, devices and the
//! event log, with each event written (and fanned out to webhook
//! deliveries) in the transaction of the change that caused it.
//!
//! Ordering without SQLite's single writer: a transcript's next seq comes
//! from incrementing its session row's `message_count` (the row lock
//! orders concurrent appends to one session); an event takes the
//! event-log advisory lock before its per-scope seq (`MAX + 1`) and its id
//! are allocated, so events commit in id order and seqs stay contiguous.

use postgres::{GenericClient, Row, Transaction};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::conn::Db;
use super::{PgStore, limit};
use crate::store::columns::{list_json, map_json, parse};
use crate::store::prune::PRUNE_BATCH;
use crate::store::sessions::once_per_run;
use crate::store::sqlite_sessions::{
    EVENT_TEXT_CHARS, PREVIEW_CHARS, event_scope, message_text, session_data, truncate,
};
use crate::store::{
    DeviceRecord, EventRecord, NewMessage, NewSession, PairRequest, SessionEntry, SessionStore,
    StoreError, TranscriptMessage,
};

/// The advisory lock every event-log insert holds until its commit.
const EVENTS_LOCK: i64 = 0x7069_6e63_6572_0002;

/// The `sessions` columns [`session_row`] reads, in order.
macro_rules! session_cols {
    () => {
        "key, session_id, agent_id, channel, conversation, created_ms, updated_ms,
         message_count, last_preview, settings"
    };
}

impl SessionStore for PgStore {
    fn ensure_session(
        &self,
        key: &str,
        init: &NewSession,
    ) -> Result<(SessionEntry, bool), StoreError> {
        self.write(|db| ensure(db, key, init))
    }

    fn get_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        self.read(|db| load_session(db, key))
    }

    fn list_sessions(&self, max: usize) -> Result<Vec<SessionEntry>, StoreError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    session_cols!(),
                    " FROM sessions ORDER BY updated_ms DESC, key LIMIT $1"
                ),
                &[&limit(max)],
            )?
            .iter()
            .map(session_row)
            .collect()
        })
    }

    fn count_sessions(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let n: i64 = db.one("SELECT count(*) FROM sessions", &[])?.try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn patch_session(
        &self,
        key: &str,
        patch: &Map<String, Value>,
    ) -> Result<Option<SessionEntry>, StoreError> {
        self.write(|db| {
            let Some(mut session) = lock_session(db, key)? else {
                return Ok(None);
            };
            for (name, value) in patch {
                if value.is_null() {
                    session.settings.remove(name);
                } else {
                    session.settings.insert(name.clone(), value.clone());
                }
            }
            session.updated_ms = db.now;
            db.exec(
                "UPDATE sessions SET settings = $2, updated_ms = $3 WHERE key = $1",
                &[&key, &map_json(&session.settings), &session.updated_ms],
            )?;
            Ok(Some(session))
        })
    }

    fn reset_session(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        self.write(|db| {
            let Some(mut session) = lock_session(db, key)? else {
                return Ok(None);
            };
            session.session_id = Uuid::new_v4().to_string();
            session.message_count = 0;
            session.last_preview = None;
            session.updated_ms = db.now;
            db.exec(
                "UPDATE sessions SET session_id = $2, message_count = 0, last_preview = NULL,
                 updated_ms = $3 WHERE key = $1",
                &[&key, &session.session_id, &session.updated_ms],
            )?;
            Ok(Some(session))
        })
    }

    fn delete_session(&self, key: &str, delete_transcript: bool) -> Result<bool, StoreError> {
        self.write(|db| {
            let Some(row) = db.opt(
                concat!(
                    "DELETE FROM sessions WHERE key = $1 RETURNING ",
                    session_cols!()
                ),
                &[&key],
            )?
            else {
                return Ok(false);
            };
            let session = session_row(&row)?;
            if delete_transcript {
                // Every transcript the key ever had, not just the current one.
                db.exec("DELETE FROM messages WHERE session_key = $1", &[&key])?;
            }
            let mut data = session_data(&session);
            data.insert("transcriptDeleted".into(), delete_transcript.into());
            insert_event(db, "session.deleted", Some(key), Value::Object(data))?;
            Ok(true)
        })
    }

    fn append_message(&self, key: &str, msg: NewMessage) -> Result<TranscriptMessage, StoreError> {
        self.write(|db| {
            let now = db.now;
            let (session, _) = ensure(db, key, &NewSession::default())?;
            if let Some(run_id) = msg.run_id.as_deref().filter(|_| once_per_run(&msg.role)) {
                // A run executed again (after a restart) has its message
                // (and, killed after answering, its answer) in the
                // transcript already.
                let existing = db.query(
                    "SELECT id, seq, role, content, ts, run_id, stop_reason, meta FROM messages
                     WHERE session_id = $1 AND run_id = $2 AND role = $3
                     ORDER BY seq LIMIT 1",
                    &[&session.session_id, &run_id, &msg.role],
                )?;
                if let Some(row) = existing.first() {
                    return message_row(row);
                }
            }
            let text = message_text(&msg.content);
            let preview = (!text.is_empty()).then(|| truncate(&text, PREVIEW_CHARS));
            // The row lock orders concurrent appends; seqs are contiguous
            // from 1, so the new count is the new seq.
            let seq: i64 = db
                .one(
                    "UPDATE sessions SET message_count = message_count + 1, updated_ms = $2,
                     last_preview = $3 WHERE key = $1 RETURNING message_count",
                    &[&key, &now, &preview],
                )?
                .try_get(0)?;
            let message = TranscriptMessage {
                id: Uuid::new_v4().to_string(),
                seq: seq.max(0) as u64,
                role: msg.role.clone(),
                content: msg.content.clone(),
                timestamp: now,
                run_id: msg.run_id.clone(),
                stop_reason: msg.stop_reason.clone(),
                meta: msg.meta.clone(),
            };
            db.exec(
                "INSERT INTO messages (session_id, seq, session_key, id, role, content, ts,
                 run_id, stop_reason, meta) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &session.session_id,
                    &seq,
                    &key,
                    &message.id,
                    &message.role,
                    &message.content.to_string(),
                    &now,
                    &message.run_id,
                    &message.stop_reason,
                    &map_json(&message.meta),
                ],
            )?;
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
                insert_event(db, kind, Some(key), Value::Object(data))?;
            }
            Ok(message)
        })
    }

    fn history(&self, key: &str, max: usize) -> Result<Vec<TranscriptMessage>, StoreError> {
        let mut rows = self.read(|db| {
            db.query(
                "SELECT id, seq, role, content, ts, run_id, stop_reason, meta FROM messages
                 WHERE session_id = (SELECT session_id FROM sessions WHERE key = $1)
                 ORDER BY seq DESC LIMIT $2",
                &[&key, &limit(max)],
            )?
            .iter()
            .map(message_row)
            .collect::<Result<Vec<_>, _>>()
        })?;
        rows.reverse();
        Ok(rows)
    }

    fn put_device(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO devices (device_id, public_key, roles, scopes, meta, approved_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key,
                   roles = excluded.roles, scopes = excluded.scopes, meta = excluded.meta,
                   approved_ms = excluded.approved_ms",
                &[
                    &device.device_id,
                    &device.public_key,
                    &list_json(&device.roles),
                    &list_json(&device.scopes),
                    &map_json(&device.meta),
                    &device.approved_ms,
                ],
            )?;
            Ok(())
        })
    }

    fn get_device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT device_id, public_key, approved_ms, roles, scopes, meta FROM devices
                 WHERE device_id = $1",
                &[&device_id],
            )?
            .as_ref()
            .map(device_row)
            .transpose()
        })
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT device_id, public_key, approved_ms, roles, scopes, meta FROM devices
                 ORDER BY approved_ms, device_id",
                &[],
            )?
            .iter()
            .map(device_row)
            .collect()
        })
    }

    fn remove_device(&self, device_id: &str) -> Result<bool, StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM device_tokens WHERE device_id = $1",
                &[&device_id],
            )?;
            Ok(db.exec("DELETE FROM devices WHERE device_id = $1", &[&device_id])? > 0)
        })
    }

    fn put_pair_request(&self, req: &PairRequest) -> Result<(), StoreError> {
        // Like SQLite's INSERT OR REPLACE: drop any row that conflicts on
        // the request id or the device, so a device has one pending request.
        self.write(|db| {
            db.exec(
                "DELETE FROM pair_requests WHERE request_id = $1 OR device_id = $2",
                &[&req.request_id, &req.device_id],
            )?;
            db.exec(
                "INSERT INTO pair_requests (request_id, device_id, public_key, role, ts, scopes, meta)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &req.request_id,
                    &req.device_id,
                    &req.public_key,
                    &req.role,
                    &req.ts,
                    &list_json(&req.scopes),
                    &map_json(&req.meta),
                ],
            )?;
            Ok(())
        })
    }

    fn list_pair_requests(&self) -> Result<Vec<PairRequest>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT request_id, device_id, public_key, role, ts, scopes, meta
                 FROM pair_requests ORDER BY ts, request_id",
                &[],
            )?
            .iter()
            .map(pair_row)
            .collect()
        })
    }

    fn take_pair_request(&self, request_id: &str) -> Result<Option<PairRequest>, StoreError> {
        self.write(|db| {
            db.opt(
                "DELETE FROM pair_requests WHERE request_id = $1
                 RETURNING request_id, device_id, public_key, role, ts, scopes, meta",
                &[&request_id],
            )?
            .as_ref()
            .map(pair_row)
            .transpose()
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
        self.write(|db| {
            db.exec(
                "INSERT INTO device_tokens (device_id, role, token_sha256, scopes, issued_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (device_id, role) DO UPDATE SET token_sha256 = excluded.token_sha256,
                   scopes = excluded.scopes, issued_ms = excluded.issued_ms",
                &[
                    &device_id,
                    &role,
                    &token_sha256,
                    &list_json(scopes),
                    &issued_ms,
                ],
            )?;
            Ok(())
        })
    }

    fn check_device_token(
        &self,
        device_id: &str,
        role: &str,
        token_sha256: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row: Option<(String, String)> = self.read(|db| {
            db.opt(
                "SELECT token_sha256, scopes FROM device_tokens WHERE device_id = $1 AND role = $2",
                &[&device_id, &role],
            )?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
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
        self.write(|db| insert_event(db, kind, session_key, data.clone()))
    }

    fn events_after(&self, after: i64, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT id, kind, session_key, seq, ts, data FROM events WHERE id > $1
                 ORDER BY id LIMIT $2",
                &[&after, &limit(max)],
            )?
            .iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let data: String = r.try_get(5)?;
                Ok(EventRecord {
                    id,
                    kind: r.try_get(1)?,
                    session_key: r.try_get(2)?,
                    seq: r.try_get(3)?,
                    ts: r.try_get(4)?,
                    data: parse(&data, || format!("events.data of event {id}"))?,
                })
            })
            .collect()
        })
    }

    fn prune_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.prune_events_in_batches(before_ms, PRUNE_BATCH)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        PgStore::check_writable(self)
    }
}

impl PgStore {
    /// Delete events older than `before_ms` except the newest of each
    /// sequence scope, examining at most `batch` old events per
    /// transaction (in `(ts, id)` order). Returns how many were deleted.
    pub fn prune_events_in_batches(&self, before_ms: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = limit(batch.max(1));
        let mut cursor = (i64::MIN, i64::MIN);
        let mut total = 0;
        loop {
            let (deleted, examined, last) = self.write(|db| {
                let keys = db.query(
                    "SELECT ts, id FROM events WHERE ts < $1 AND (ts, id) > ($2, $3)
                     ORDER BY ts, id LIMIT $4",
                    &[&before_ms, &cursor.0, &cursor.1, &batch],
                )?;
                let Some(last) = keys.last() else {
                    return Ok((0, 0, None));
                };
                let last: (i64, i64) = (last.try_get(0)?, last.try_get(1)?);
                let deleted = db.exec(
                    "DELETE FROM events e
                     WHERE e.ts < $1 AND (e.ts, e.id) > ($2, $3) AND (e.ts, e.id) <= ($4, $5)
                       AND EXISTS (SELECT 1 FROM events n WHERE n.scope = e.scope AND n.seq > e.seq)",
                    &[&before_ms, &cursor.0, &cursor.1, &last.0, &last.1],
                )?;
                Ok((deleted, keys.len() as i64, Some(last)))
            })?;
            total += deleted;
            match last {
                Some(last) if examined == batch => cursor = last,
                _ => return Ok(total),
            }
        }
    }
}

/// The session `key`, creating it (and logging `session.created`) if absent.
fn ensure(
    db: &mut Db<'_, Transaction<'_>>,
    key: &str,
    init: &NewSession,
) -> Result<(SessionEntry, bool), StoreError> {
    if let Some(session) = load_session(db, key)? {
        return Ok((session, false));
    }
    let now = db.now;
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
    // A concurrent creator wins the race: this insert then waits for its
    // commit, does nothing, and the row it wrote is read back.
    let inserted = db.exec(
        "INSERT INTO sessions (key, session_id, agent_id, channel, conversation, created_ms,
         updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (key) DO NOTHING",
        &[
            &session.key,
            &session.session_id,
            &session.agent_id,
            &session.channel,
            &session.conversation,
            &now,
        ],
    )?;
    if inserted == 0 {
        let existing = load_session(db, key)?
            .ok_or_else(|| StoreError::Corrupt(format!("session {key} vanished while created")))?;
        return Ok((existing, false));
    }
    let data = Value::Object(session_data(&session));
    insert_event(db, "session.created", Some(key), data)?;
    Ok((session, true))
}

fn load_session<C: GenericClient>(
    db: &mut Db<'_, C>,
    key: &str,
) -> Result<Option<SessionEntry>, StoreError> {
    db.opt(
        concat!("SELECT ", session_cols!(), " FROM sessions WHERE key = $1"),
        &[&key],
    )?
    .as_ref()
    .map(session_row)
    .transpose()
}

/// The session `key`, locked until the transaction ends.
fn lock_session(
    db: &mut Db<'_, Transaction<'_>>,
    key: &str,
) -> Result<Option<SessionEntry>, StoreError> {
    db.opt(
        concat!(
            "SELECT ",
            session_cols!(),
            " FROM sessions WHERE key = $1 FOR UPDATE"
        ),
        &[&key],
    )?
    .as_ref()
    .map(session_row)
    .transpose()
}

/// Append one event row (its scope and per-scope seq derived here) and its
/// webhook deliveries, in the caller's transaction.
pub(super) fn insert_event(
    db: &mut Db<'_, Transaction<'_>>,
    kind: &str,
    session_key: Option<&str>,
    data: Value,
) -> Result<EventRecord, StoreError> {
    let now = db.now;
    let scope = event_scope(session_key, &data);
    // Held until commit: events commit in id order, one scope's seqs
    // cannot collide.
    db.exec("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])?;
    let row = db.one(
        "INSERT INTO events (kind, session_key, scope, seq, ts, data)
         SELECT $1, $2, $3::text, COALESCE(MAX(seq), 0) + 1, $4, $5 FROM events WHERE scope = $3::text
         RETURNING id, seq",
        &[&kind, &session_key, &scope, &now, &data.to_string()],
    )?;
    let event = EventRecord {
        id: row.try_get(0)?,
        kind: kind.to_owned(),
        session_key: session_key.map(str::to_owned),
        seq: row.try_get(1)?,
        ts: now,
        data,
    };
    super::webhooks::fan_out(db, &event)?;
    Ok(event)
}

fn session_row(r: &Row) -> Result<SessionEntry, StoreError> {
    let key: String = r.try_get(0)?;
    let settings: String = r.try_get(9)?;
    let count: i64 = r.try_get(7)?;
    Ok(SessionEntry {
        settings: parse(&settings, || format!("sessions.settings of {key}"))?,
        key,
        session_id: r.try_get(1)?,
        agent_id: r.try_get(2)?,
        channel: r.try_get(3)?,
        conversation: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        updated_ms: r.try_get(6)?,
        message_count: count.max(0) as u64,
        last_preview: r.try_get(8)?,
    })
}

fn message_row(r: &Row) -> Result<TranscriptMessage, StoreError> {
    let id: String = r.try_get(0)?;
    let seq: i64 = r.try_get(1)?;
    let content: String = r.try_get(3)?;
    let meta: String = r.try_get(7)?;
    Ok(TranscriptMessage {
        content: parse(&content, || format!("messages.content of {id}"))?,
        meta: parse(&meta, || format!("messages.meta of {id}"))?,
        id,
        seq: seq.max(0) as u64,
        role: r.try_get(2)?,
        timestamp: r.try_get(4)?,
        run_id: r.try_get(5)?,
        stop_reason: r.try_get(6)?,
    })
}

fn device_row(r: &Row) -> Result<DeviceRecord, StoreError> {
    let device_id: String = r.try_get(0)?;
    let what = |column: &str| format!("devices.{column} of {device_id}");
    let roles: String = r.try_get(3)?;
    let scopes: String = r.try_get(4)?;
    let meta: String = r.try_get(5)?;
    Ok(DeviceRecord {
        roles: parse(&roles, || what("roles"))?,
        scopes: parse(&scopes, || what("scopes"))?,
        meta: parse(&meta, || what("meta"))?,
        public_key: r.try_get(1)?,
        approved_ms: r.try_get(2)?,
        device_id,
    })
}

fn pair_row(r: &Row) -> Result<PairRequest, StoreError> {
    let request_id: String = r.try_get(0)?;
    let scopes: String = r.try_get(5)?;
    let meta: String = r.try_get(6)?;
    Ok(PairRequest {
        scopes: parse(&scopes, || format!("pair_requests.scopes of {request_id}"))?,
        meta: parse(&meta, || format!("pair_requests.meta of {request_id}"))?,
        device_id: r.try_get(1)?,
        public_key: r.try_get(2)?,
        role: r.try_get(3)?,
        ts: r.try_get(4)?,
        request_id,
    })
}
