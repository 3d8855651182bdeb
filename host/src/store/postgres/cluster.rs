//! [`ClusterStore`] on PostgreSQL: the stream log (`cluster_events`, ids
//! from the one-row `cluster_stream_head` counter, whose row lock is held
//! until commit, so ids commit in order), `cluster_nodes` heartbeats on the
//! database's clock, `chat_idempotency` (insert-or-get in one statement),
//! and `LISTEN`/`NOTIFY` wake-ups that carry only ids.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row};

use super::{PgStore, limit};
use crate::store::{
    Claim, ClusterListener, ClusterPlugin, ClusterRun, ClusterStore, NewStreamEvent, NodeRecord,
    StoreError, StreamEvent, Wake,
};

/// The channel stream commits are announced on (payload: the last id).
const EVENTS_CHANNEL: &str = "pincer_events";
/// The channel abort requests are announced on (payload: the node id).
const ABORTS_CHANNEL: &str = "pincer_aborts";
/// The channel session claim releases are announced on (payload: the
/// session key).
const SESSIONS_CHANNEL: &str = "pincer_sessions";
/// The channel inbox commits are announced on (payload: the channel key).
pub(super) const INBOX_CHANNEL: &str = "pincer_inbox";
/// The channel outbox commits are announced on (payload: the channel key).
pub(super) const OUTBOX_CHANNEL: &str = "pincer_outbox";
/// The channel webhook deliveries and settled attempts are announced on
/// (no payload).
pub(super) const WEBHOOKS_CHANNEL: &str = "pincer_webhooks";

/// The database's clock in Unix ms.
macro_rules! db_now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

impl ClusterStore for PgStore {
    fn append_stream(&self, events: &[NewStreamEvent]) -> Result<i64, StoreError> {
        if events.is_empty() {
            return self.stream_head();
        }
        let n = events.len() as i64;
        let mut node = Vec::with_capacity(events.len());
        let mut name = Vec::with_capacity(events.len());
        let mut payload = Vec::with_capacity(events.len());
        let mut scope = Vec::with_capacity(events.len());
        let mut audience = Vec::with_capacity(events.len());
        let mut droppable = Vec::with_capacity(events.len());
        let mut run_id = Vec::with_capacity(events.len());
        let mut run_seq = Vec::with_capacity(events.len());
        let mut ts = Vec::with_capacity(events.len());
        for e in events {
            node.push(e.node_id.as_str());
            name.push(e.name.as_str());
            payload.push(e.payload.as_str());
            scope.push(e.scope.as_deref());
            audience.push(e.audience.as_str());
            droppable.push(e.droppable);
            run_id.push(e.run_id.as_deref());
            run_seq.push(e.run_seq);
            ts.push(e.ts);
        }
        self.write(|db| {
            // The row lock orders writers until commit: ids commit in order.
            let last: i64 = db
                .one(
                    "UPDATE cluster_stream_head SET last_id = last_id + $1 RETURNING last_id",
                    &[&n],
                )?
                .try_get(0)?;
            let ids: Vec<i64> = (last - n + 1..=last).collect();
            db.exec(
                "INSERT INTO cluster_events (id, node_id, name, payload, scope, audience,
                 droppable, run_id, run_seq, ts)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[],
                   $5::text[], $6::text[], $7::boolean[], $8::text[], $9::bigint[], $10::bigint[])",
                &[
                    &ids, &node, &name, &payload, &scope, &audience, &droppable, &run_id, &run_seq,
                    &ts,
                ],
            )?;
            // Delivered at commit; only the id, never the payload.
            db.exec(
                "SELECT pg_notify('pincer_events', $1::text)",
                &[&last.to_string()],
            )?;
            Ok(last)
        })
    }

    fn stream_after(&self, after: i64, max: usize) -> Result<Vec<StreamEvent>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT id, node_id, name, payload, scope, audience, droppable, run_id, run_seq, ts
                 FROM cluster_events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit(max)],
            )?
            .iter()
            .map(stream_row)
            .collect()
        })
    }

    fn stream_head(&self) -> Result<i64, StoreError> {
        self.read(|db| {
            Ok(db
                .one("SELECT last_id FROM cluster_stream_head", &[])?
                .try_get(0)?)
        })
    }

    fn prune_stream(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM chat_idempotency WHERE state != 'running' AND ended_ms < $1",
                &[&before_ms],
            )?;
            db.exec("DELETE FROM cluster_events WHERE ts < $1", &[&before_ms])
        })
    }

    fn last_run_seq(&self, run_id: &str) -> Result<i64, StoreError> {
        self.read(|db| {
            Ok(db
                .one(
                    "SELECT COALESCE(MAX(run_seq), 0)::bigint FROM cluster_events WHERE run_id = $1",
                    &[&run_id],
                )?
                .try_get(0)?)
        })
    }

    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                concat!(
                    "INSERT INTO cluster_nodes (node_id, name, address, started_ms, last_seen_ms,
                     channels) VALUES ($1, $2, $3, $4, ",
                    db_now!(),
                    ", $5) ON CONFLICT (node_id) DO UPDATE SET name = excluded.name,
                     address = excluded.address, last_seen_ms = excluded.last_seen_ms,
                     channels = excluded.channels"
                ),
                &[
                    &node.node_id,
                    &node.name,
                    &node.address,
                    &node.started_ms,
                    &node.channels,
                ],
            )?;
            Ok(())
        })
    }

    fn remove_node(&self, node_id: &str) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec("DELETE FROM cluster_nodes WHERE node_id = $1", &[&node_id])?;
            Ok(())
        })
    }

    fn publish_plugin(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
        node_id: &str,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                concat!(
                    "INSERT INTO cluster_plugins (name, sha256, bytes, node_id, updated_ms)
                     VALUES ($1, $2, $3, $4, ",
                    db_now!(),
                    ") ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256,
                     bytes = excluded.bytes, node_id = excluded.node_id,
                     updated_ms = excluded.updated_ms"
                ),
                &[&name, &sha256, &bytes, &node_id],
            )?;
            Ok(())
        })
    }

    fn withdraw_plugin(&self, name: &str, node_id: &str) -> Result<bool, StoreError> {
        self.write(|db| {
            let held = db
                .opt(
                    "SELECT sha256 FROM cluster_plugins WHERE name = $1 FOR UPDATE",
                    &[&name],
                )?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?
                .is_some_and(|sha| !sha.is_empty());
            let empty: &[u8] = &[];
            db.exec(
                concat!(
                    "INSERT INTO cluster_plugins (name, sha256, bytes, node_id, updated_ms)
                     VALUES ($1, '', $2, $3, ",
                    db_now!(),
                    ") ON CONFLICT (name) DO UPDATE SET sha256 = '', bytes = excluded.bytes,
                     node_id = excluded.node_id, updated_ms = excluded.updated_ms"
                ),
                &[&name, &empty, &node_id],
            )?;
            Ok(held)
        })
    }

    fn cluster_plugins(&self) -> Result<Vec<ClusterPlugin>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT name, sha256, node_id, updated_ms FROM cluster_plugins ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ClusterPlugin {
                    name: r.try_get(0)?,
                    sha256: r.try_get(1)?,
                    node_id: r.try_get(2)?,
                    updated_ms: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn cluster_plugin_bytes(
        &self,
        name: &str,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|db| {
            Ok(db
                .opt(
                    "SELECT bytes FROM cluster_plugins WHERE name = $1 AND sha256 = $2",
                    &[&name, &sha256],
                )?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn live_nodes(&self, timeout_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT node_id, name, address, started_ms, last_seen_ms, channels
                     FROM cluster_nodes WHERE last_seen_ms >= ",
                    db_now!(),
                    " - $1 ORDER BY started_ms, node_id"
                ),
                &[&timeout_ms],
            )?
            .iter()
            .map(|r| {
                Ok(NodeRecord {
                    node_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    address: r.try_get(2)?,
                    started_ms: r.try_get(3)?,
                    last_seen_ms: r.try_get(4)?,
                    channels: r.try_get(5)?,
                })
            })
            .collect()
        })
    }

    fn claim_run(
        &self,
        run_id: &str,
        session_key: &str,
        node_id: &str,
    ) -> Result<Claim, StoreError> {
        self.write(|db| {
            // Insert-or-get in one statement: the insert's row, or (after
            // waiting for a concurrent inserter's commit) the existing one.
            let now = db.now;
            let row = db.one(
                "WITH ins AS (
                   INSERT INTO chat_idempotency (run_id, session_key, node_id, state, created_ms)
                   VALUES ($1, $2, $3, 'running', $4) ON CONFLICT (run_id) DO NOTHING
                   RETURNING run_id)
                 SELECT (SELECT count(*) FROM ins)::bigint, c.run_id, c.session_key, c.node_id,
                        c.state, c.result
                 FROM (SELECT 1) one LEFT JOIN chat_idempotency c ON c.run_id = $1",
                &[&run_id, &session_key, &node_id, &now],
            )?;
            let inserted: i64 = row.try_get(0)?;
            if inserted == 1 {
                return Ok(Claim::Claimed);
            }
            // The CTE's snapshot may predate a concurrent insert: read the
            // row again with a fresh statement.
            let existing = match row.try_get::<_, Option<String>>(1)? {
                Some(_) => run_row(&row, 1)?,
                None => {
                    let r = db.one(
                        "SELECT run_id, session_key, node_id, state, result
                         FROM chat_idempotency WHERE run_id = $1",
                        &[&run_id],
                    )?;
                    run_row(&r, 0)?
                }
            };
            Ok(Claim::Existing(existing))
        })
    }

    fn cluster_run(&self, run_id: &str) -> Result<Option<ClusterRun>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT run_id, session_key, node_id, state, result
                 FROM chat_idempotency WHERE run_id = $1",
                &[&run_id],
            )?
            .map(|r| run_row(&r, 0))
            .transpose()
        })
    }

    fn release_run(&self, run_id: &str, node_id: &str) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM chat_idempotency WHERE run_id = $1 AND node_id = $2",
                &[&run_id, &node_id],
            )?;
            Ok(())
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        node_id: &str,
        state: &str,
        result: &str,
    ) -> Result<bool, StoreError> {
        self.write(|db| {
            let now = db.now;
            let updated = db.exec(
                "UPDATE chat_idempotency SET state = $3, result = $4, ended_ms = $5
                 WHERE run_id = $1 AND node_id = $2 AND state = 'running'",
                &[&run_id, &node_id, &state, &result, &now],
            )?;
            Ok(updated == 1)
        })
    }

    fn request_abort(
        &self,
        session_key: &str,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Vec<ClusterRun>, StoreError> {
        self.write(|db| {
            if let Some(id) = run_id {
                let other = db.opt(
                    "SELECT run_id, session_key, node_id, state, result FROM chat_idempotency
                     WHERE run_id = $1 AND session_key != $2",
                    &[&id, &session_key],
                )?;
                if let Some(r) = other {
                    return Ok(vec![run_row(&r, 0)?]);
                }
            }
            let runs = db
                .query(
                    "UPDATE chat_idempotency SET abort_reason = COALESCE(abort_reason, $3)
                     WHERE state = 'running' AND session_key = $1
                       AND ($2::text IS NULL OR run_id = $2::text)
                     RETURNING run_id, session_key, node_id, state, result",
                    &[&session_key, &run_id, &reason],
                )?
                .iter()
                .map(|r| run_row(r, 0))
                .collect::<Result<Vec<_>, _>>()?;
            let mut nodes: Vec<&str> = runs.iter().map(|r| r.node_id.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            for node in nodes {
                db.exec("SELECT pg_notify('pincer_aborts', $1::text)", &[&node])?;
            }
            Ok(runs)
        })
    }

    fn abort_requests(&self, node_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT run_id, abort_reason FROM chat_idempotency
                 WHERE node_id = $1 AND state = 'running' AND abort_reason IS NOT NULL",
                &[&node_id],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn take_orphans(&self, timeout_ms: i64, result: &str) -> Result<Vec<ClusterRun>, StoreError> {
        self.write(|db| {
            let now = db.now;
            db.query(
                concat!(
                    "UPDATE chat_idempotency SET state = 'error', result = $2, ended_ms = $3
                     WHERE state = 'running' AND node_id NOT IN (
                       SELECT node_id FROM cluster_nodes WHERE last_seen_ms >= ",
                    db_now!(),
                    " - $1)
                     RETURNING run_id, session_key, node_id, state, result"
                ),
                &[&timeout_ms, &result, &now],
            )?
            .iter()
            .map(|r| run_row(r, 0))
            .collect()
        })
    }

    fn listen(&self) -> Result<Box<dyn ClusterListener>, StoreError> {
        let mut client = self.connect_to.connect().map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {} to listen: {e}",
                self.target
            ))
        })?;
        client.batch_execute(&format!(
            "LISTEN {EVENTS_CHANNEL}; LISTEN {ABORTS_CHANNEL}; LISTEN {SESSIONS_CHANNEL};
             LISTEN {INBOX_CHANNEL}; LISTEN {OUTBOX_CHANNEL}; LISTEN {WEBHOOKS_CHANNEL}"
        ))?;
        Ok(Box::new(PgListener { client }))
    }

    fn claim_session(
        &self,
        session_key: &str,
        run_id: &str,
        node_id: &str,
        timeout_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.write(|db| {
            let now = db.now;
            // Insert, or take over a claim of this node or of a node not
            // seen within the timeout; the row lock of a concurrent taker
            // orders the two (the second sees the first's row).
            let token = db
                .opt(
                    concat!(
                        "INSERT INTO session_claims (session_key, run_id, node_id, token, claimed_ms)
                         VALUES ($1, $2, $3, nextval('session_claim_tokens'), $4)
                         ON CONFLICT (session_key) DO UPDATE SET run_id = excluded.run_id,
                           node_id = excluded.node_id, token = excluded.token,
                           claimed_ms = excluded.claimed_ms
                         WHERE session_claims.node_id = excluded.node_id
                            OR session_claims.node_id NOT IN (
                              SELECT node_id FROM cluster_nodes WHERE last_seen_ms >= ",
                        db_now!(),
                        " - $5)
                         RETURNING token"
                    ),
                    &[&session_key, &run_id, &node_id, &now, &timeout_ms],
                )?
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?;
            Ok(token)
        })
    }

    fn release_session(&self, session_key: &str, token: i64) -> Result<(), StoreError> {
        self.write(|db| {
            let n = db.exec(
                "DELETE FROM session_claims WHERE session_key = $1 AND token = $2",
                &[&session_key, &token],
            )?;
            if n > 0 {
                // The session key only, never a payload.
                db.exec(
                    "SELECT pg_notify($1, $2)",
                    &[&SESSIONS_CHANNEL, &session_key],
                )?;
            }
            Ok(())
        })
    }

    fn session_claimed_elsewhere(
        &self,
        session_key: &str,
        node_id: &str,
        timeout_ms: i64,
    ) -> Result<bool, StoreError> {
        self.read(|db| {
            let row = db.one(
                concat!(
                    "SELECT EXISTS (SELECT 1 FROM session_claims c
                       JOIN cluster_nodes n ON n.node_id = c.node_id
                      WHERE c.session_key = $1 AND c.node_id <> $2
                        AND n.last_seen_ms >= ",
                    db_now!(),
                    " - $3)"
                ),
                &[&session_key, &node_id, &timeout_ms],
            )?;
            Ok(row.try_get(0)?)
        })
    }

    fn session_claims_of(&self, node_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT session_key, token FROM session_claims WHERE node_id = $1",
                &[&node_id],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }
}

/// A dedicated connection `LISTEN`ing on both channels.
struct PgListener {
    client: Client,
}

impl ClusterListener for PgListener {
    fn next(&mut self, timeout: Duration) -> Result<Option<Wake>, StoreError> {
        let note = self.client.notifications().timeout_iter(timeout).next()?;
        let Some(note) = note else {
            if self.client.is_closed() {
                return Err(StoreError::Unavailable(
                    "the PostgreSQL listener connection closed".into(),
                ));
            }
            return Ok(None);
        };
        let payload = note.payload().to_owned();
        Ok(Some(match note.channel() {
            ABORTS_CHANNEL => Wake::Abort(payload),
            SESSIONS_CHANNEL => Wake::Session(payload),
            INBOX_CHANNEL => Wake::Inbox(payload),
            OUTBOX_CHANNEL => Wake::Outbox(payload),
            WEBHOOKS_CHANNEL => Wake::Webhooks,
            _ => Wake::Events(payload.parse().unwrap_or(0)),
        }))
    }
}

fn stream_row(r: &Row) -> Result<StreamEvent, StoreError> {
    Ok(StreamEvent {
        id: r.try_get(0)?,
        event: NewStreamEvent {
            node_id: r.try_get(1)?,
            name: r.try_get(2)?,
            payload: r.try_get(3)?,
            scope: r.try_get(4)?,
            audience: r.try_get(5)?,
            droppable: r.try_get(6)?,
            run_id: r.try_get(7)?,
            run_seq: r.try_get(8)?,
            ts: r.try_get(9)?,
        },
    })
}

/// A `chat_idempotency` row from columns `at..at + 5` (run_id,
/// session_key, node_id, state, result).
fn run_row(r: &Row, at: usize) -> Result<ClusterRun, StoreError> {
    Ok(ClusterRun {
        run_id: r.try_get(at)?,
        session_key: r.try_get(at + 1)?,
        node_id: r.try_get(at + 2)?,
        state: r.try_get(at + 3)?,
        result: r.try_get(at + 4)?,
    })
}
