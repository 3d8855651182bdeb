//! [`OutboxStore`] on PostgreSQL (`channel_outbox`): rows are `pending`
//! (with `sending_since_ms` while a send is in flight), `sent` (text
//! dropped, platform id and delivery status kept) or `failed`, as in
//! `store/sqlite_outbox.rs`. Committing a final reply settles its inbox
//! message in the same transaction.

use postgres::{GenericClient, Row};

use super::conn::Db;
use super::inbox::settle;
use super::{PgStore, limit};
use crate::store::{
    DeliveryState, InDoubt, InboxLink, InboxSettled, NewOutbound, OutboxItem, OutboxRow,
    OutboxStats, OutboxStore, StoreError,
};

fn clamp_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

fn item(r: &Row) -> Result<OutboxItem, StoreError> {
    Ok(OutboxItem {
        id: r.try_get(0)?,
        conversation: r.try_get(1)?,
        message: r.try_get(2)?,
        attempts: clamp_u32(r.try_get(3)?),
        plain: r.try_get(4)?,
    })
}

/// Insert one waiting message (inside the caller's transaction); returns
/// its id.
pub(super) fn insert_outbound<C: GenericClient>(
    db: &mut Db<'_, C>,
    channel: &str,
    account: &str,
    inbox_seq: Option<i64>,
    m: &NewOutbound,
) -> Result<i64, StoreError> {
    let now = db.now;
    Ok(db
        .one(
            "INSERT INTO channel_outbox (channel, account, conversation, message,
                 inbox_seq, status, next_attempt_ms, created_ms, updated_ms, blobs)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6, $7) RETURNING id",
            &[
                &channel,
                &account,
                &m.conversation,
                &m.message,
                &inbox_seq,
                &now,
                &m.blobs.join(" "),
            ],
        )?
        .try_get(0)?)
}

impl OutboxStore for PgStore {
    fn outbox_enqueue(
        &self,
        channel: &str,
        account: &str,
        link: InboxLink,
        messages: &[NewOutbound],
    ) -> Result<Vec<i64>, StoreError> {
        self.write(|db| {
            let seq = match link {
                InboxLink::None => None,
                InboxLink::Answers(seq) => Some(seq),
            };
            if let Some(seq) = seq {
                // In a cluster, a node that lost an account's lease mid-run
                // (paused, partitioned) may finish the run after the new
                // holder answered the message again: its answer is
                // dropped, never sent twice.
                let state: Option<String> = db
                    .opt(
                        "SELECT state FROM channel_inbox WHERE seq = $1 FOR UPDATE",
                        &[&seq],
                    )?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if state.as_deref().is_some_and(|s| s != "pending") {
                    tracing::warn!(
                        channel,
                        seq,
                        "the message was answered already (by another node): this answer is dropped"
                    );
                    return Ok(Vec::new());
                }
            }
            let mut ids = Vec::with_capacity(messages.len());
            for m in messages {
                ids.push(insert_outbound(db, channel, account, seq, m)?);
            }
            if let Some(seq) = seq {
                settle(db, seq, InboxSettled::Answered)?;
            }
            if !ids.is_empty() {
                // The lease holder's outbox worker wakes at commit.
                db.exec(
                    "SELECT pg_notify($1, $2)",
                    &[&super::cluster::OUTBOX_CHANNEL, &channel],
                )?;
            }
            Ok(ids)
        })
    }

    fn outbox_due(
        &self,
        channel: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT o.id, o.conversation, o.message, o.attempts, o.plain
                 FROM (SELECT min(id) AS id FROM channel_outbox
                       WHERE channel = $1 AND status = 'pending' GROUP BY conversation) h
                 JOIN channel_outbox o ON o.id = h.id
                 WHERE o.next_attempt_ms <= $2 AND o.sending_since_ms IS NULL
                 ORDER BY o.id LIMIT $3",
                &[&channel, &now_ms, &limit(max)],
            )?
            .iter()
            .map(item)
            .collect()
        })
    }

    fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        self.read(|db| {
            // Heads only: a message behind its conversation's head waits
            // for the head, however old it is itself.
            Ok(db
                .one(
                    "SELECT min(o.next_attempt_ms)
                     FROM (SELECT min(id) AS id FROM channel_outbox
                           WHERE channel = $1 AND status = 'pending' GROUP BY conversation) h
                     JOIN channel_outbox o ON o.id = h.id
                     WHERE o.sending_since_ms IS NULL",
                    &[&channel],
                )?
                .try_get(0)?)
        })
    }

    fn outbox_begin(&self, id: i64) -> Result<bool, StoreError> {
        self.write(|db| {
            let now = db.now;
            Ok(db.exec(
                "UPDATE channel_outbox SET sending_since_ms = $2, updated_ms = $2
                 WHERE id = $1 AND status = 'pending' AND sending_since_ms IS NULL",
                &[&id, &now],
            )? == 1)
        })
    }

    fn outbox_delivered(&self, id: i64, platform_id: &str) -> Result<(), StoreError> {
        let platform_id = (!platform_id.is_empty()).then_some(platform_id);
        self.write(|db| {
            let now = db.now;
            db.exec(
                "UPDATE channel_outbox SET status = 'sent', message = '', blobs = '',
                     sending_since_ms = NULL, platform_id = $2, delivery = 'sent',
                     updated_ms = $3
                 WHERE id = $1",
                &[&id, &platform_id, &now],
            )?;
            Ok(())
        })
    }

    fn outbox_retry(
        &self,
        id: i64,
        next_ms: i64,
        attempts: u32,
        plain: bool,
        error: &str,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            let now = db.now;
            db.exec(
                "UPDATE channel_outbox SET next_attempt_ms = $2, attempts = $3, plain = $4,
                     last_error = $5, updated_ms = $6, sending_since_ms = NULL
                 WHERE id = $1",
                &[&id, &next_ms, &i64::from(attempts), &plain, &error, &now],
            )?;
            Ok(())
        })
    }

    fn outbox_failed(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        self.write(|db| {
            let now = db.now;
            db.exec(
                "UPDATE channel_outbox SET status = 'failed', attempts = $2, last_error = $3,
                     updated_ms = $4, sending_since_ms = NULL, blobs = ''
                 WHERE id = $1",
                &[&id, &i64::from(attempts), &error, &now],
            )?;
            Ok(())
        })
    }

    fn outbox_in_doubt(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(|db| in_doubt(db, channel))
    }

    fn outbox_recover(&self, channel: &str, how: InDoubt) -> Result<Vec<OutboxItem>, StoreError> {
        self.write(|db| {
            let now = db.now;
            let rows = in_doubt(db, channel)?;
            for r in &rows {
                match how {
                    InDoubt::Resend => db.exec(
                        "UPDATE channel_outbox SET sending_since_ms = NULL, updated_ms = $2,
                             last_error = 'in doubt: the gateway stopped during the send; sent again'
                         WHERE id = $1",
                        &[&r.id, &now],
                    )?,
                    InDoubt::Fail => db.exec(
                        "UPDATE channel_outbox SET sending_since_ms = NULL, updated_ms = $2,
                             status = 'failed', blobs = '',
                             last_error = 'in doubt: the gateway stopped during the send; not sent again'
                         WHERE id = $1",
                        &[&r.id, &now],
                    )?,
                };
            }
            Ok(rows)
        })
    }

    fn outbox_status(
        &self,
        channel: &str,
        platform_id: &str,
        state: DeliveryState,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write(|db| {
            let now = db.now;
            let Some(row) = db.opt(
                "SELECT delivery FROM channel_outbox
                 WHERE channel = $1 AND platform_id = $2 AND status = 'sent'
                 ORDER BY id DESC LIMIT 1 FOR UPDATE",
                &[&channel, &platform_id],
            )?
            else {
                return Ok(false);
            };
            let current: Option<String> = row.try_get(0)?;
            let rank = |s: Option<&str>| match s {
                Some("sent") => 1,
                Some("delivered") => 2,
                Some("read") => 3,
                Some("failed") => 4,
                _ => 0,
            };
            if rank(current.as_deref()) < state.rank() {
                db.exec(
                    "UPDATE channel_outbox SET delivery = $3, delivery_detail = $4, updated_ms = $5
                     WHERE channel = $1 AND platform_id = $2 AND status = 'sent'",
                    &[&channel, &platform_id, &state.as_str(), &detail, &now],
                )?;
            }
            Ok(true)
        })
    }

    fn outbox_blobs_in_use(&self) -> Result<Vec<String>, StoreError> {
        self.read(|db| {
            let mut out = Vec::new();
            for r in db.query(
                "SELECT blobs FROM channel_outbox WHERE status = 'pending' AND blobs != ''",
                &[],
            )? {
                let blobs: String = r.try_get(0)?;
                out.extend(blobs.split_whitespace().map(str::to_string));
            }
            Ok(out)
        })
    }

    fn outbox_rows(&self, channel: &str, max: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT id, conversation, status, attempts, next_attempt_ms, sending_since_ms,
                     last_error, message
                 FROM channel_outbox WHERE channel = $1 AND status IN ('pending', 'failed')
                 ORDER BY id LIMIT $2",
                &[&channel, &limit(max)],
            )?
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get(0)?,
                    conversation: r.try_get(1)?,
                    status: r.try_get(2)?,
                    attempts: clamp_u32(r.try_get(3)?),
                    next_attempt_ms: r.try_get(4)?,
                    sending_since_ms: r.try_get(5)?,
                    last_error: r.try_get(6)?,
                    message: r.try_get(7)?,
                })
            })
            .collect()
        })
    }

    fn outbox_prune(&self, before_ms: i64, max: usize) -> Result<usize, StoreError> {
        self.write(|db| {
            Ok(db.exec(
                "DELETE FROM channel_outbox WHERE id IN (
                    SELECT id FROM channel_outbox
                    WHERE status != 'pending' AND updated_ms < $1 LIMIT $2)",
                &[&before_ms, &limit(max)],
            )? as usize)
        })
    }

    fn outbox_stats(&self, channel: &str) -> Result<OutboxStats, StoreError> {
        self.read(|db| {
            let r = db.one(
                "SELECT count(*) FILTER (WHERE status = 'pending'),
                     count(*) FILTER (WHERE status = 'pending' AND sending_since_ms IS NOT NULL),
                     count(*) FILTER (WHERE status = 'failed'),
                     count(*) FILTER (WHERE status = 'sent' AND delivery = 'failed')
                 FROM channel_outbox WHERE channel = $1",
                &[&channel],
            )?;
            let n =
                |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
            let (depth, in_flight, failed, delivery_failed) = (n(0)?, n(1)?, n(2)?, n(3)?);
            let last_error = db
                .opt(
                    "SELECT last_error FROM channel_outbox
                     WHERE channel = $1 AND last_error IS NOT NULL
                     ORDER BY updated_ms DESC, id DESC LIMIT 1",
                    &[&channel],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            let last_delivery_failure = db
                .opt(
                    "SELECT COALESCE(delivery_detail, 'failed') FROM channel_outbox
                     WHERE channel = $1 AND status = 'sent' AND delivery = 'failed'
                     ORDER BY updated_ms DESC, id DESC LIMIT 1",
                    &[&channel],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            Ok(OutboxStats {
                depth,
                in_flight,
                failed,
                last_error,
                delivery_failed,
                last_delivery_failure,
            })
        })
    }
}

fn in_doubt<C: GenericClient>(
    db: &mut Db<'_, C>,
    channel: &str,
) -> Result<Vec<OutboxItem>, StoreError> {
    db.query(
        "SELECT id, conversation, message, attempts, plain FROM channel_outbox
         WHERE channel = $1 AND status = 'pending' AND sending_since_ms IS NOT NULL
         ORDER BY id",
        &[&channel],
    )?
    .iter()
    .map(item)
    .collect()
}
