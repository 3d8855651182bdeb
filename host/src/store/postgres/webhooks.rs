//! [`WebhookStore`] on PostgreSQL, and the fan-out that turns an event-log
//! row into one delivery per subscribed endpoint inside the event's own
//! transaction (as `store/sqlite_webhooks.rs` does for SQLite).

use std::sync::Arc;

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::conn::Db;
use super::{PgStore, limit};
use crate::store::columns::{list_json, parse};
use crate::store::prune::PRUNE_BATCH;
use crate::store::sqlite_webhooks::webhook_body;
use crate::store::{
    Attempt, AttemptClaim, Delivery, DeliveryStatus, DueDelivery, EventRecord, Settle, Settled,
    StoreError, WebhookEndpoint, WebhookStore,
};

/// How long a claim made through [`WebhookStore::begin_attempt`] (no
/// claim length given) holds before another node may take the delivery
/// over, ms.
const DEFAULT_CLAIM_MS: u64 = 60_000;

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

/// Queue `event` for every enabled endpoint whose filter matches (exact
/// name, `prefix.*` or `*`), in the caller's transaction.
pub(super) fn fan_out(
    db: &mut Db<'_, Transaction<'_>>,
    event: &EventRecord,
) -> Result<(), StoreError> {
    let any: bool = db
        .one(
            "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled)",
            &[],
        )?
        .try_get(0)?;
    if !any {
        return Ok(());
    }
    let msg_id = format!("msg_{}", Uuid::new_v4().simple());
    let n = db.exec(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, msg_id, kind, body, status,
         next_attempt_ms, created_ms, updated_ms)
         SELECT e.id, $1, $2, $3::text, $4, 'pending', $5, $5, $5 FROM webhook_endpoints e
         WHERE e.enabled AND EXISTS (
             SELECT 1 FROM jsonb_array_elements_text(e.events::jsonb) f(v)
             WHERE f.v = '*' OR f.v = $3::text
                OR (f.v LIKE '%.*'
                    AND left($3::text, length(f.v) - 1) = left(f.v, length(f.v) - 1)))",
        &[
            &event.id,
            &msg_id,
            &event.kind,
            &webhook_body(event),
            &event.ts,
        ],
    )?;
    if n > 0 {
        db.deliveries = true;
        // Every node's dispatcher wakes at commit (no payload).
        db.exec(
            "SELECT pg_notify($1, '')",
            &[&super::cluster::WEBHOOKS_CHANNEL],
        )?;
    }
    Ok(())
}

/// Claim delivery `$1` for an attempt at `$2` by node `$3` until `$4`:
/// a pending delivery, or one whose claim ran out (the attempt number still
/// goes up, so none is reused); the delivery as claimed, if it was.
const CLAIM_ATTEMPT: &str = concat!(
    "UPDATE webhook_deliveries SET status = 'in_flight', attempts = attempts + 1,
     updated_ms = $2, claimed_by = $3, claim_expires_ms = $4
     WHERE id = $1 AND (status = 'pending'
        OR (status = 'in_flight' AND claim_expires_ms < $2))
     RETURNING ",
    delivery_cols!()
);

impl WebhookStore for PgStore {
    fn add_endpoint(&self, ep: &WebhookEndpoint) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                concat!(
                    "INSERT INTO webhook_endpoints (",
                    endpoint_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &ep.id,
                    &ep.url,
                    &ep.description,
                    &list_json(&ep.events),
                    &ep.enabled,
                    &ep.secret.expose(),
                    &ep.previous_secret.as_ref().map(|s| s.expose()),
                    &ep.previous_secret_expires_ms,
                    &ep.failing_since_ms,
                    &ep.disabled_reason,
                    &ep.created_ms,
                    &ep.updated_ms,
                ],
            )?;
            Ok(())
        })
    }

    fn get_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.read(|db| load_endpoint(db, id))
    }

    fn list_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    endpoint_cols!(),
                    " FROM webhook_endpoints ORDER BY created_ms, id"
                ),
                &[],
            )?
            .iter()
            .map(endpoint_row)
            .collect()
        })
    }

    fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        // Deliveries and attempts go with it (ON DELETE CASCADE).
        self.write(|db| Ok(db.exec("DELETE FROM webhook_endpoints WHERE id = $1", &[&id])? > 0))
    }

    fn set_endpoint_enabled(
        &self,
        id: &str,
        enabled: Option<bool>,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let out = self.write(|db| {
            // `None` flips, decided by the row-locking update itself.
            let Some(row) = db.opt(
                "UPDATE webhook_endpoints SET enabled = COALESCE($2, NOT enabled),
                 updated_ms = $3 WHERE id = $1 RETURNING enabled",
                &[&id, &enabled, &now_ms],
            )?
            else {
                return Ok(None);
            };
            let now_enabled: bool = row.try_get(0)?;
            db.exec(
                "UPDATE webhook_endpoints SET
                 disabled_reason = CASE WHEN $2 THEN NULL ELSE $3::text END,
                 failing_since_ms = CASE WHEN $2 THEN NULL ELSE failing_since_ms END
                 WHERE id = $1",
                &[&id, &now_enabled, &reason],
            )?;
            if !now_enabled {
                let error = format!("endpoint disabled: {}", reason.unwrap_or("by the operator"));
                db.exec(
                    "UPDATE webhook_deliveries SET status = 'failed', last_error = $2,
                     updated_ms = $3 WHERE endpoint_id = $1 AND status = 'pending'",
                    &[&id, &error, &now_ms],
                )?;
            }
            load_endpoint(db, id)
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
        self.write(|db| {
            let changed = db.exec(
                "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,
                 previous_secret_expires_ms = $3, updated_ms = $4 WHERE id = $1",
                &[&id, &new_secret, &grace_until_ms, &now_ms],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            load_endpoint(db, id)
        })
    }

    fn due_deliveries(
        &self,
        now_ms: i64,
        max: usize,
        exclude_endpoints: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT id, endpoint_id FROM webhook_deliveries
                 WHERE ((status = 'pending' AND next_attempt_ms <= $1)
                        OR (status = 'in_flight' AND claim_expires_ms < $1))
                   AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled)
                   AND NOT (endpoint_id = ANY ($2::text[]))
                 ORDER BY next_attempt_ms LIMIT $3",
                &[&now_ms, &exclude_endpoints, &limit(max)],
            )?
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    endpoint_id: r.try_get(1)?,
                })
            })
            .collect()
        })
    }

    fn due_deliveries_of(
        &self,
        endpoint_id: &str,
        now_ms: i64,
    ) -> Result<Option<DueDelivery>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT d.id FROM webhook_deliveries d
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
                 WHERE d.endpoint_id = $1
                   AND ((d.status = 'pending' AND d.next_attempt_ms <= $2)
                        OR (d.status = 'in_flight' AND d.claim_expires_ms < $2))
                 ORDER BY d.next_attempt_ms LIMIT 1",
                &[&endpoint_id, &now_ms],
            )?
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    endpoint_id: endpoint_id.to_owned(),
                })
            })
            .transpose()
        })
    }

    fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|db| {
            Ok(db
                .one(
                    "SELECT MIN(next_attempt_ms) FROM webhook_deliveries
                     WHERE status = 'pending'
                       AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled)",
                    &[],
                )?
                .try_get(0)?)
        })
    }

    fn begin_attempt(&self, delivery_id: i64, now_ms: i64) -> Result<Option<Delivery>, StoreError> {
        self.begin_attempt_claimed(delivery_id, now_ms, DEFAULT_CLAIM_MS)
    }

    fn begin_attempt_claimed(
        &self,
        delivery_id: i64,
        now_ms: i64,
        claim_ms: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        // Claimed and counted (committed) before the caller sends anything:
        // a pending delivery, or one whose claim ran out (its node died or
        // stalled; the attempt number still goes up, so none is reused).
        let until = now_ms.saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX));
        let node = self.node.as_str();
        self.write(|db| {
            db.opt(CLAIM_ATTEMPT, &[&delivery_id, &now_ms, &node, &until])?
                .as_ref()
                .map(delivery_row)
                .transpose()
        })
    }

    fn begin_attempt_capped(
        &self,
        delivery_id: i64,
        now_ms: i64,
        claim_ms: u64,
        per_endpoint: usize,
    ) -> Result<AttemptClaim, StoreError> {
        let until = now_ms.saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX));
        let cap = i64::try_from(per_endpoint.max(1)).unwrap_or(i64::MAX);
        let node = self.node.as_str();
        self.write(|db| {
            let Some(endpoint) = db
                .opt(
                    "SELECT endpoint_id FROM webhook_deliveries WHERE id = $1",
                    &[&delivery_id],
                )?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?
            else {
                return Ok(AttemptClaim::Gone);
            };
            // One claimer per endpoint at a time, on every node: the count
            // below then sees every committed claim. (An advisory lock, not
            // the endpoint's row: settling an attempt updates that row
            // while holding its delivery's, and the update below takes a
            // delivery row after this lock: no cycle.)
            let lock = format!("pincer:webhook-endpoint:{endpoint}");
            db.exec(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&lock],
            )?;
            let in_flight: i64 = db
                .one(
                    "SELECT count(*)::bigint FROM webhook_deliveries
                     WHERE endpoint_id = $1 AND status = 'in_flight'
                       AND claim_expires_ms >= $2 AND id != $3",
                    &[&endpoint, &now_ms, &delivery_id],
                )?
                .try_get(0)?;
            if in_flight >= cap {
                let claimable: bool = db
                    .one(
                        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1
                           AND (status = 'pending'
                             OR (status = 'in_flight' AND claim_expires_ms < $2)))",
                        &[&delivery_id, &now_ms],
                    )?
                    .try_get(0)?;
                return Ok(if claimable {
                    AttemptClaim::EndpointBusy
                } else {
                    AttemptClaim::Gone
                });
            }
            Ok(db
                .opt(CLAIM_ATTEMPT, &[&delivery_id, &now_ms, &node, &until])?
                .as_ref()
                .map(delivery_row)
                .transpose()?
                .map_or(AttemptClaim::Gone, AttemptClaim::Claimed))
        })
    }

    fn finish_attempt(&self, attempt: &Attempt, settle: Settle) -> Result<Settled, StoreError> {
        self.write(|db| {
            // A slot of the endpoint frees up: every node's dispatcher
            // wakes at commit (no payload).
            db.exec(
                "SELECT pg_notify($1, '')",
                &[&super::cluster::WEBHOOKS_CHANNEL],
            )?;
            let latency = i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX);
            let now = attempt.ts_ms.saturating_add(latency);
            let status = attempt.status.map(i64::from);
            db.exec(
                "INSERT INTO webhook_attempts (delivery_id, attempt, ts_ms, status, latency_ms, error)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (delivery_id, attempt) DO UPDATE SET ts_ms = excluded.ts_ms,
                   status = excluded.status, latency_ms = excluded.latency_ms,
                   error = excluded.error",
                &[
                    &attempt.delivery_id,
                    &i64::from(attempt.attempt),
                    &attempt.ts_ms,
                    &status,
                    &latency,
                    &attempt.error,
                ],
            )?;
            let (state, next) = match settle {
                Settle::Delivered => ("delivered", None),
                Settle::RetryAt(at) => ("pending", Some(at)),
                Settle::Failed => ("failed", None),
            };
            // Only an in-flight delivery is settled, and only by the attempt
            // that claimed it: a replay or a disable that happened
            // meanwhile wins, and so does a node that claimed it again
            // after this attempt's claim ran out (the attempt count moved).
            db.exec(
                "UPDATE webhook_deliveries SET status = $2,
                 next_attempt_ms = COALESCE($3, next_attempt_ms),
                 last_status = $4, last_error = $5, updated_ms = $6, claim_expires_ms = NULL
                 WHERE id = $1 AND status = 'in_flight' AND attempts = $7",
                &[
                    &attempt.delivery_id,
                    &state,
                    &next,
                    &status,
                    &attempt.error,
                    &now,
                    &i64::from(attempt.attempt),
                ],
            )?;
            let failing_since_ms = db
                .opt(
                    "UPDATE webhook_endpoints SET failing_since_ms =
                     CASE WHEN $3 THEN NULL ELSE COALESCE(failing_since_ms, $2) END
                     WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = $1)
                     RETURNING failing_since_ms",
                    &[
                        &attempt.delivery_id,
                        &attempt.ts_ms,
                        &(settle == Settle::Delivered),
                    ],
                )?
                .map(|r| r.try_get::<_, Option<i64>>(0))
                .transpose()?
                .flatten();
            Ok(Settled { failing_since_ms })
        })
    }

    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self.write(|db| {
            db.exec(
                // This node's claims (its previous process died with them:
                // the node id is kept in the data directory) and claims
                // that ran out; in a cluster, other nodes' attempts in
                // flight are still theirs.
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = $1,
                 updated_ms = $1, claim_expires_ms = NULL
                 WHERE status = 'in_flight'
                   AND (claimed_by IS NULL OR claimed_by = $2 OR claim_expires_ms < $1)",
                &[&now_ms, &self.node],
            )
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
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    delivery_cols!(),
                    " FROM webhook_deliveries
                     WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2::text) AND id < $3
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &endpoint_id,
                    &status.map(DeliveryStatus::as_str),
                    &before.unwrap_or(i64::MAX),
                    &limit(max),
                ],
            )?
            .iter()
            .map(delivery_row)
            .collect()
        })
    }

    fn get_delivery(&self, delivery_id: i64) -> Result<Option<Delivery>, StoreError> {
        self.read(|db| {
            db.opt(
                concat!(
                    "SELECT ",
                    delivery_cols!(),
                    " FROM webhook_deliveries WHERE id = $1"
                ),
                &[&delivery_id],
            )?
            .as_ref()
            .map(delivery_row)
            .transpose()
        })
    }

    fn list_attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT delivery_id, attempt, ts_ms, status, latency_ms, error
                 FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
                &[&delivery_id],
            )?
            .iter()
            .map(|r| {
                Ok(Attempt {
                    delivery_id: r.try_get(0)?,
                    attempt: clamp_u32(r.try_get(1)?),
                    ts_ms: r.try_get(2)?,
                    status: r
                        .try_get::<_, Option<i64>>(3)?
                        .and_then(|s| u16::try_from(s).ok()),
                    latency_ms: u64::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
                    error: r.try_get(5)?,
                })
            })
            .collect()
        })
    }

    fn replay_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let queued = self.write(|db| {
            Ok(db.exec(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = $3,
                 updated_ms = $3 WHERE id = $2 AND endpoint_id = $1 AND status != 'in_flight'",
                &[&endpoint_id, &delivery_id, &now_ms],
            )? > 0)
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
        let n = self.write(|db| {
            db.exec(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = $3,
                 updated_ms = $3
                 WHERE endpoint_id = $1 AND status = 'failed' AND created_ms >= $2",
                &[&endpoint_id, &since_ms, &now_ms],
            )
        })?;
        if n > 0 {
            self.outbox.notify_one();
        }
        Ok(n)
    }

    fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let batch = limit(PRUNE_BATCH);
        let mut after = 0i64;
        let mut total = 0;
        loop {
            // Attempts go with their delivery (ON DELETE CASCADE).
            let ids = self.write(|db| {
                db.query(
                    "DELETE FROM webhook_deliveries WHERE id IN (
                         SELECT id FROM webhook_deliveries
                         WHERE id > $2 AND status IN ('delivered', 'failed') AND created_ms < $1
                         ORDER BY id LIMIT $3)
                     RETURNING id",
                    &[&before_ms, &after, &batch],
                )?
                .iter()
                .map(|r| r.try_get::<_, i64>(0).map_err(Into::into))
                .collect::<Result<Vec<_>, StoreError>>()
            })?;
            total += ids.len() as u64;
            match ids.iter().max() {
                Some(&last) if ids.len() as i64 == batch => after = last,
                _ => return Ok(total),
            }
        }
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }
}

fn clamp_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

fn load_endpoint<C: GenericClient>(
    db: &mut Db<'_, C>,
    id: &str,
) -> Result<Option<WebhookEndpoint>, StoreError> {
    db.opt(
        concat!(
            "SELECT ",
            endpoint_cols!(),
            " FROM webhook_endpoints WHERE id = $1"
        ),
        &[&id],
    )?
    .as_ref()
    .map(endpoint_row)
    .transpose()
}

fn endpoint_row(r: &Row) -> Result<WebhookEndpoint, StoreError> {
    let id: String = r.try_get(0)?;
    let events: String = r.try_get(3)?;
    Ok(WebhookEndpoint {
        events: parse(&events, || format!("webhook_endpoints.events of {id}"))?,
        id,
        url: r.try_get(1)?,
        description: r.try_get(2)?,
        enabled: r.try_get(4)?,
        secret: r.try_get::<_, String>(5)?.into(),
        previous_secret: r.try_get::<_, Option<String>>(6)?.map(Into::into),
        previous_secret_expires_ms: r.try_get(7)?,
        failing_since_ms: r.try_get(8)?,
        disabled_reason: r.try_get(9)?,
        created_ms: r.try_get(10)?,
        updated_ms: r.try_get(11)?,
    })
}

fn delivery_row(r: &Row) -> Result<Delivery, StoreError> {
    let id: i64 = r.try_get(0)?;
    let status: String = r.try_get(6)?;
    Ok(Delivery {
        status: DeliveryStatus::parse(&status).ok_or_else(|| {
            StoreError::Corrupt(format!("webhook_deliveries.status of {id}: {status:?}"))
        })?,
        id,
        endpoint_id: r.try_get(1)?,
        event_id: r.try_get(2)?,
        msg_id: r.try_get(3)?,
        kind: r.try_get(4)?,
        body: r.try_get(5)?,
        attempts: clamp_u32(r.try_get(7)?),
        next_attempt_ms: r.try_get(8)?,
        created_ms: r.try_get(9)?,
        last_status: r
            .try_get::<_, Option<i64>>(10)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get(11)?,
    })
}
