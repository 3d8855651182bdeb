//! [`WebhookStore`] on the embedded SQLite database (tables from migration 3
//! in `sqlite.rs`), and the fan-out that turns an event-log row into one
//! delivery per subscribed endpoint inside the event's own transaction.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::columns::{list_json, parse, sql_limit};
use super::prune::PRUNE_BATCH;
use super::{
    Attempt, Delivery, DeliveryStatus, DueDelivery, EventRecord, Settle, Settled, SqliteStore,
    StoreError, WebhookEndpoint, WebhookStore,
};

/// The `webhook_endpoints` columns [`endpoint_row`] reads, in order.
macro_rules! endpoint_cols {
    () => {
        "id, url, description, events, enabled, secret, previous_secret,
         previous_secret_expires_ms, failing_since_ms, disabled_reason, created_ms, updated_ms"
    };
}

/// The `webhook_deliveries` columns [`delivery_row`] reads, in order.
macro_rules! delivery_cols {
    () => {
        "id, endpoint_id, event_id, msg_id, kind, body, status, attempts, next_attempt_ms,
         created_ms, last_status, last_error"
    };
}

/// The Standard Webhooks body for `event`: `{type, timestamp, data}` where
/// `data` is the event's data plus `seq` (its per-session, per-channel or
/// per-plugin sequence number) and `sessionKey` for session events.
pub fn webhook_body(event: &EventRecord) -> String {
    let mut data = match &event.data {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_owned(), other.clone())]),
    };
    if let Some(key) = &event.session_key {
        data.entry("sessionKey")
            .or_insert_with(|| Value::from(key.as_str()));
    }
    data.insert("seq".into(), event.seq.into());
    json!({
        "type": event.kind,
        "timestamp": crate::webhooks::rfc3339(event.ts),
        "data": data,
    })
    .to_string()
}

/// Queue `event` for every enabled endpoint whose filter matches, on the
/// caller's connection (inside the transaction that wrote the event).
pub(super) fn fan_out(conn: &Connection, event: &EventRecord) -> Result<(), StoreError> {
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled = 1)")?
        .query_row([], |r| r.get(0))?;
    if !any {
        return Ok(());
    }
    let msg_id = format!("msg_{}", Uuid::new_v4().simple());
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, msg_id, kind, body, status,
         next_attempt_ms, created_ms, updated_ms)
         SELECT e.id, ?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5 FROM webhook_endpoints e
         WHERE e.enabled = 1 AND EXISTS (
             SELECT 1 FROM json_each(e.events) f
             WHERE f.value = '*' OR f.value = ?3
                OR (f.value LIKE '%.*'
                    AND substr(?3, 1, length(f.value) - 1) = substr(f.value, 1, length(f.value) - 1)))",
    )?
    .execute(params![
        event.id,
        msg_id,
        event.kind,
        webhook_body(event),
        event.ts
    ])?;
    Ok(())
}

impl WebhookStore for SqliteStore {
    fn add_endpoint(&self, ep: &WebhookEndpoint) -> Result<(), StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached(concat!(
                "INSERT INTO webhook_endpoints (",
                endpoint_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                ep.id,
                ep.url,
                ep.description,
                list_json(&ep.events),
                ep.enabled,
                ep.secret,
                ep.previous_secret,
                ep.previous_secret_expires_ms,
                ep.failing_since_ms,
                ep.disabled_reason,
                ep.created_ms,
                ep.updated_ms,
            ])?;
            Ok(())
        })
    }

    fn get_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.read(|conn| load_endpoint(conn, id))
    }

    fn list_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                endpoint_cols!(),
                " FROM webhook_endpoints ORDER BY created_ms, id"
            ))?;
            Ok(stmt
                .query_map([], endpoint_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(endpoint_done).collect()
    }

    fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        // Deliveries and attempts go with it (ON DELETE CASCADE).
        self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
    }

    fn set_endpoint_enabled(
        &self,
        id: &str,
        enabled: Option<bool>,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let out = self.write_tx(|tx, _| {
            // `None` flips, decided inside the transaction so two
            // concurrent flips cannot both read the same state.
            let Some(now_enabled) = tx
                .prepare_cached(
                    "UPDATE webhook_endpoints SET enabled = COALESCE(?2, NOT enabled),
                     updated_ms = ?3 WHERE id = ?1 RETURNING enabled",
                )?
                .query_row(params![id, enabled, now_ms], |r| r.get::<_, bool>(0))
                .optional()?
            else {
                return Ok(None);
            };
            tx.prepare_cached(
                "UPDATE webhook_endpoints SET
                 disabled_reason = CASE WHEN ?2 THEN NULL ELSE ?3 END,
                 failing_since_ms = CASE WHEN ?2 THEN NULL ELSE failing_since_ms END
                 WHERE id = ?1",
            )?
            .execute(params![id, now_enabled, reason])?;
            if !now_enabled {
                let error = format!("endpoint disabled: {}", reason.unwrap_or("by the operator"));
                tx.prepare_cached(
                    "UPDATE webhook_deliveries SET status = 'failed', last_error = ?2,
                     updated_ms = ?3 WHERE endpoint_id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, error, now_ms])?;
            }
            load_endpoint(tx, id)
        })?;
        if out.as_ref().is_some_and(|ep| ep.enabled) {
            self.outbox.notify_one();
        }
        Ok(out)
    }

    fn rotate_secret(
        &self,
        id: &str,
        new_secret: &str,
        grace_until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.write_tx(|tx, _| {
            let changed = tx
                .prepare_cached(
                    "UPDATE webhook_endpoints SET previous_secret = secret, secret = ?2,
                     previous_secret_expires_ms = ?3, updated_ms = ?4 WHERE id = ?1",
                )?
                .execute(params![id, new_secret, grace_until_ms, now_ms])?;
            if changed == 0 {
                return Ok(None);
            }
            load_endpoint(tx, id)
        })
    }

    fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
        exclude_endpoints: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, endpoint_id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_ms <= ?1
                   AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = 1)
                   AND endpoint_id NOT IN (SELECT value FROM json_each(?2))
                 ORDER BY next_attempt_ms LIMIT ?3",
            )?;
            Ok(stmt
                .query_map(
                    params![now_ms, list_json(exclude_endpoints), sql_limit(limit)],
                    |r| {
                        Ok(DueDelivery {
                            id: r.get(0)?,
                            endpoint_id: r.get(1)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn due_deliveries_of(
        &self,
        endpoint_id: &str,
        now_ms: i64,
    ) -> Result<Option<DueDelivery>, StoreError> {
        Ok(self
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT d.id FROM webhook_deliveries d
                         JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled = 1
                         WHERE d.endpoint_id = ?1 AND d.status = 'pending'
                           AND d.next_attempt_ms <= ?2
                         ORDER BY d.next_attempt_ms LIMIT 1",
                    )?
                    .query_row(params![endpoint_id, now_ms], |r| r.get(0))
                    .optional()?)
            })?
            .map(|id| DueDelivery {
                id,
                endpoint_id: endpoint_id.to_owned(),
            }))
    }

    fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM webhook_deliveries
                     WHERE status = 'pending'
                       AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = 1)",
                )?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn begin_attempt(&self, delivery_id: i64, now_ms: i64) -> Result<Option<Delivery>, StoreError> {
        // Claimed and counted (committed) before the caller sends anything.
        self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(concat!(
                    "UPDATE webhook_deliveries SET status = 'in_flight', attempts = attempts + 1,
                     updated_ms = ?2 WHERE id = ?1 AND status = 'pending' RETURNING ",
                    delivery_cols!()
                ))?
                .query_row(params![delivery_id, now_ms], delivery_row)
                .optional()?)
        })?
        .map(delivery_done)
        .transpose()
    }

    fn finish_attempt(&self, attempt: &Attempt, settle: Settle) -> Result<Settled, StoreError> {
        self.write_tx(|tx, _| {
            let now = attempt.ts_ms + i64::try_from(attempt.latency_ms).unwrap_or(0);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO webhook_attempts
                 (delivery_id, attempt, ts_ms, status, latency_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                attempt.delivery_id,
                attempt.attempt,
                attempt.ts_ms,
                attempt.status,
                i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
                attempt.error,
            ])?;
            let (status, next) = match settle {
                Settle::Delivered => ("delivered", None),
                Settle::RetryAt(at) => ("pending", Some(at)),
                Settle::Failed => ("failed", None),
            };
            // Only an in-flight delivery is settled: a replay or a disable
            // that happened meanwhile wins.
            tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = ?2,
                 next_attempt_ms = COALESCE(?3, next_attempt_ms),
                 last_status = ?4, last_error = ?5, updated_ms = ?6
                 WHERE id = ?1 AND status = 'in_flight'",
            )?
            .execute(params![
                attempt.delivery_id,
                status,
                next,
                attempt.status,
                attempt.error,
                now
            ])?;
            // The endpoint's failing streak; no row when the endpoint (and
            // with it the delivery) was deleted meanwhile.
            let failing_since_ms = tx
                .prepare_cached(
                    "UPDATE webhook_endpoints SET failing_since_ms =
                     CASE WHEN ?3 THEN NULL ELSE COALESCE(failing_since_ms, ?2) END
                     WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = ?1)
                     RETURNING failing_since_ms",
                )?
                .query_row(
                    params![
                        attempt.delivery_id,
                        attempt.ts_ms,
                        settle == Settle::Delivered
                    ],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten();
            Ok(Settled { failing_since_ms })
        })
    }

    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = ?1,
                     updated_ms = ?1 WHERE status = 'in_flight'",
                )?
                .execute([now_ms])? as u64)
        })?;
        if n > 0 {
            self.outbox.notify_one();
        }
        Ok(n)
    }

    fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM webhook_deliveries
                 WHERE endpoint_id = ?1 AND (?2 IS NULL OR status = ?2) AND id < ?3
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            Ok(stmt
                .query_map(
                    params![
                        endpoint_id,
                        status.map(DeliveryStatus::as_str),
                        before.unwrap_or(i64::MAX),
                        sql_limit(limit)
                    ],
                    delivery_row,
                )?
                .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter().map(delivery_done).collect()
    }

    fn get_delivery(&self, delivery_id: i64) -> Result<Option<Delivery>, StoreError> {
        self.read(|conn| load_delivery(conn, delivery_id))
    }

    fn list_attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT delivery_id, attempt, ts_ms, status, latency_ms, error
                 FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt",
            )?;
            let rows = stmt.query_map([delivery_id], |r| {
                Ok(Attempt {
                    delivery_id: r.get(0)?,
                    attempt: r.get(1)?,
                    ts_ms: r.get(2)?,
                    status: r.get(3)?,
                    latency_ms: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    error: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn replay_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let queued = self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = ?3,
                     updated_ms = ?3 WHERE id = ?2 AND endpoint_id = ?1 AND status != 'in_flight'",
                )?
                .execute(params![endpoint_id, delivery_id, now_ms])?
                > 0)
        })?;
        if queued {
            self.outbox.notify_one();
        }
        Ok(queued)
    }

    fn replay_failed_since(
        &self,
        endpoint_id: &str,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let n = self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = ?3,
                     updated_ms = ?3
                     WHERE endpoint_id = ?1 AND status = 'failed' AND created_ms >= ?2",
                )?
                .execute(params![endpoint_id, since_ms, now_ms])? as u64)
        })?;
        if n > 0 {
            self.outbox.notify_one();
        }
        Ok(n)
    }

    fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.prune_deliveries_in_batches(before_ms, PRUNE_BATCH, |_| {})
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }
}

fn load_endpoint(conn: &Connection, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        endpoint_cols!(),
        " FROM webhook_endpoints WHERE id = ?1"
    ))?
    .query_row([id], endpoint_row)
    .optional()?
    .map(endpoint_done)
    .transpose()
}

fn endpoint_row(r: &Row<'_>) -> rusqlite::Result<(WebhookEndpoint, String)> {
    Ok((
        WebhookEndpoint {
            id: r.get(0)?,
            url: r.get(1)?,
            description: r.get(2)?,
            events: Vec::new(),
            enabled: r.get(4)?,
            secret: r.get(5)?,
            previous_secret: r.get(6)?,
            previous_secret_expires_ms: r.get(7)?,
            failing_since_ms: r.get(8)?,
            disabled_reason: r.get(9)?,
            created_ms: r.get(10)?,
            updated_ms: r.get(11)?,
        },
        r.get(3)?,
    ))
}

fn endpoint_done(
    (mut ep, events): (WebhookEndpoint, String),
) -> Result<WebhookEndpoint, StoreError> {
    ep.events = parse(&events, || format!("webhook_endpoints.events of {}", ep.id))?;
    Ok(ep)
}

fn load_delivery(conn: &Connection, id: i64) -> Result<Option<Delivery>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        delivery_cols!(),
        " FROM webhook_deliveries WHERE id = ?1"
    ))?
    .query_row([id], delivery_row)
    .optional()?
    .map(delivery_done)
    .transpose()
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<(Delivery, String)> {
    Ok((
        Delivery {
            id: r.get(0)?,
            endpoint_id: r.get(1)?,
            event_id: r.get(2)?,
            msg_id: r.get(3)?,
            kind: r.get(4)?,
            body: r.get(5)?,
            status: DeliveryStatus::Pending,
            attempts: r.get(7)?,
            next_attempt_ms: r.get(8)?,
            created_ms: r.get(9)?,
            last_status: r.get(10)?,
            last_error: r.get(11)?,
        },
        r.get(6)?,
    ))
}

fn delivery_done((mut d, status): (Delivery, String)) -> Result<Delivery, StoreError> {
    d.status = DeliveryStatus::parse(&status).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "webhook_deliveries.status of {}: unknown `{status}`",
            d.id
        ))
    })?;
    Ok(d)
}
