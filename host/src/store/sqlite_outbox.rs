//! [`OutboxStore`] on the embedded SQLite database (table from migrations 7
//! and 8 in `sqlite.rs`). A row is `pending` (with `sending_since_ms` set
//! while a send is in flight), `sent` (delivered: the text is dropped, the
//! platform id and its latest delivery status kept) or `failed`; sent and
//! failed rows are pruned with age.

use rusqlite::{OptionalExtension, params};

use super::columns::sql_limit;
use super::sqlite_inbox::settle;
use super::{
    DeliveryState, InDoubt, InboxLink, InboxSettled, NewOutbound, OutboxItem, OutboxRow,
    OutboxStats, OutboxStore, SqliteStore, StoreError,
};

/// Migration 7: the channel outbox.
pub(super) const MIGRATION: &str = "CREATE TABLE channel_outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        channel         TEXT NOT NULL,
        account         TEXT NOT NULL,
        conversation    TEXT NOT NULL,
        message         TEXT NOT NULL,
        inbox_seq       INTEGER,
        status          TEXT NOT NULL, -- pending, failed
        plain           INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,
        last_error      TEXT
    );
    CREATE INDEX channel_outbox_heads ON channel_outbox (channel, status, conversation, id);
    CREATE INDEX channel_outbox_failed ON channel_outbox (channel, status, updated_ms);";

/// Migration 8: exactly once on the channel path. Sends are marked in
/// flight; delivered rows stay as `sent` with the platform id and delivery
/// status; rows name the blobs their attachments use; inbox rows carry the
/// progress of a reply being streamed; the unused `inbound_seen` goes.
pub(super) const MIGRATION_EXACTLY_ONCE: &str = "DROP TABLE IF EXISTS inbound_seen;
    ALTER TABLE channel_outbox ADD COLUMN sending_since_ms INTEGER;
    ALTER TABLE channel_outbox ADD COLUMN blobs TEXT NOT NULL DEFAULT '';
    ALTER TABLE channel_outbox ADD COLUMN platform_id TEXT;
    ALTER TABLE channel_outbox ADD COLUMN delivery TEXT;
    ALTER TABLE channel_outbox ADD COLUMN delivery_detail TEXT;
    CREATE INDEX channel_outbox_platform ON channel_outbox (channel, platform_id)
        WHERE platform_id IS NOT NULL;
    CREATE INDEX channel_outbox_blobs ON channel_outbox (status) WHERE blobs != '';
    CREATE INDEX channel_outbox_done ON channel_outbox (updated_ms) WHERE status != 'pending';
    ALTER TABLE channel_inbox ADD COLUMN progress TEXT;";

fn item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        conversation: r.get(1)?,
        message: r.get(2)?,
        attempts: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
        plain: r.get::<_, i64>(4)? != 0,
    })
}

/// Insert one waiting message (inside the caller's transaction); returns
/// its id.
pub(super) fn insert_outbound(
    tx: &rusqlite::Connection,
    channel: &str,
    account: &str,
    inbox_seq: Option<i64>,
    m: &NewOutbound,
    now: i64,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO channel_outbox (channel, account, conversation, message, inbox_seq,
             status, next_attempt_ms, created_ms, updated_ms, blobs)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6, ?7)",
    )?
    .execute(params![
        channel,
        account,
        m.conversation,
        m.message,
        inbox_seq,
        now,
        m.blobs.join(" ")
    ])?;
    Ok(tx.last_insert_rowid())
}

impl OutboxStore for SqliteStore {
    fn outbox_enqueue(
        &self,
        channel: &str,
        account: &str,
        link: InboxLink,
        messages: &[NewOutbound],
    ) -> Result<Vec<i64>, StoreError> {
        self.write_tx(|tx, now| {
            let seq = match link {
                InboxLink::None => None,
                InboxLink::Answers(seq) => Some(seq),
            };
            let mut ids = Vec::with_capacity(messages.len());
            for m in messages {
                ids.push(insert_outbound(tx, channel, account, seq, m, now)?);
            }
            match link {
                InboxLink::None => {}
                InboxLink::Answers(seq) => {
                    settle(tx, seq, InboxSettled::Answered, now)?;
                }
            }
            Ok(ids)
        })
    }

    fn outbox_due(
        &self,
        channel: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT o.id, o.conversation, o.message, o.attempts, o.plain
                 FROM (SELECT min(id) AS id FROM channel_outbox
                       WHERE channel = ?1 AND status = 'pending' GROUP BY conversation) h
                 JOIN channel_outbox o ON o.id = h.id
                 WHERE o.next_attempt_ms <= ?2 AND o.sending_since_ms IS NULL
                 ORDER BY o.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![channel, now_ms, sql_limit(limit)], item)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            Ok(conn
                // Heads only: a message behind its conversation's head
                // waits for the head, however old it is itself.
                .prepare_cached(
                    "SELECT min(o.next_attempt_ms)
                     FROM (SELECT min(id) AS id FROM channel_outbox
                           WHERE channel = ?1 AND status = 'pending' GROUP BY conversation) h
                     JOIN channel_outbox o ON o.id = h.id
                     WHERE o.sending_since_ms IS NULL",
                )?
                .query_row(params![channel], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten())
        })
    }

    fn outbox_begin(&self, id: i64) -> Result<bool, StoreError> {
        self.write_tx(|tx, now| {
            Ok(tx
                .prepare_cached(
                    "UPDATE channel_outbox SET sending_since_ms = ?2, updated_ms = ?2
                     WHERE id = ?1 AND status = 'pending' AND sending_since_ms IS NULL",
                )?
                .execute(params![id, now])?
                == 1)
        })
    }

    fn outbox_delivered(&self, id: i64, platform_id: &str) -> Result<(), StoreError> {
        self.write_tx(|tx, now| {
            tx.prepare_cached(
                "UPDATE channel_outbox SET status = 'sent', message = '', blobs = '',
                     sending_since_ms = NULL, platform_id = ?2, delivery = 'sent',
                     updated_ms = ?3
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                (!platform_id.is_empty()).then_some(platform_id),
                now
            ])?;
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
        self.write_tx(|tx, now| {
            tx.prepare_cached(
                "UPDATE channel_outbox SET next_attempt_ms = ?2, attempts = ?3, plain = ?4,
                     last_error = ?5, updated_ms = ?6, sending_since_ms = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, next_ms, attempts, plain, error, now])?;
            Ok(())
        })
    }

    fn outbox_failed(&self, id: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        self.write_tx(|tx, now| {
            tx.prepare_cached(
                "UPDATE channel_outbox SET status = 'failed', attempts = ?2, last_error = ?3,
                     updated_ms = ?4, sending_since_ms = NULL, blobs = ''
                 WHERE id = ?1",
            )?
            .execute(params![id, attempts, error, now])?;
            Ok(())
        })
    }

    fn outbox_in_doubt(&self, channel: &str) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(|conn| in_doubt(conn, channel))
    }

    fn outbox_recover(&self, channel: &str, how: InDoubt) -> Result<Vec<OutboxItem>, StoreError> {
        self.write_tx(|tx, now| {
            let rows = in_doubt(tx, channel)?;
            let sql = match how {
                InDoubt::Resend => {
                    "UPDATE channel_outbox SET sending_since_ms = NULL, updated_ms = ?2,
                         last_error = 'in doubt: the gateway stopped during the send; sent again'
                     WHERE id = ?1"
                }
                InDoubt::Fail => {
                    "UPDATE channel_outbox SET sending_since_ms = NULL, updated_ms = ?2,
                         status = 'failed', blobs = '',
                         last_error = 'in doubt: the gateway stopped during the send; not sent again'
                     WHERE id = ?1"
                }
            };
            let mut stmt = tx.prepare_cached(sql)?;
            for r in &rows {
                stmt.execute(params![r.id, now])?;
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
        self.write_tx(|tx, now| {
            let current: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT delivery FROM channel_outbox
                     WHERE channel = ?1 AND platform_id = ?2 AND status = 'sent'
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![channel, platform_id], |r| r.get(0))
                .optional()?;
            let Some(current) = current else {
                return Ok(false);
            };
            let rank = |s: Option<&str>| match s {
                Some("sent") => 1,
                Some("delivered") => 2,
                Some("read") => 3,
                Some("failed") => 4,
                _ => 0,
            };
            if rank(current.as_deref()) < state.rank() {
                tx.prepare_cached(
                    "UPDATE channel_outbox SET delivery = ?3, delivery_detail = ?4, updated_ms = ?5
                     WHERE channel = ?1 AND platform_id = ?2 AND status = 'sent'",
                )?
                .execute(params![
                    channel,
                    platform_id,
                    state.as_str(),
                    detail,
                    now
                ])?;
            }
            Ok(true)
        })
    }

    fn outbox_blobs_in_use(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT blobs FROM channel_outbox WHERE status = 'pending' AND blobs != ''",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.extend(r?.split_whitespace().map(str::to_string));
            }
            Ok(out)
        })
    }

    fn outbox_rows(&self, channel: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, conversation, status, attempts, next_attempt_ms, sending_since_ms,
                     last_error, message
                 FROM channel_outbox WHERE channel = ?1 AND status IN ('pending', 'failed')
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![channel, sql_limit(limit)], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    conversation: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                    next_attempt_ms: r.get(4)?,
                    sending_since_ms: r.get(5)?,
                    last_error: r.get(6)?,
                    message: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn outbox_prune(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(
                    "DELETE FROM channel_outbox WHERE id IN (
                        SELECT id FROM channel_outbox
                        WHERE status != 'pending' AND updated_ms < ?1 LIMIT ?2)",
                )?
                .execute(params![before_ms, sql_limit(limit)])?)
        })
    }

    fn outbox_stats(&self, channel: &str) -> Result<OutboxStats, StoreError> {
        self.read(|conn| {
            let (depth, in_flight, failed, delivery_failed): (i64, i64, i64, i64) = conn
                .prepare_cached(
                    "SELECT coalesce(sum(status = 'pending'), 0),
                         coalesce(sum(status = 'pending' AND sending_since_ms IS NOT NULL), 0),
                         coalesce(sum(status = 'failed'), 0),
                         coalesce(sum(status = 'sent' AND delivery = 'failed'), 0)
                     FROM channel_outbox WHERE channel = ?1",
                )?
                .query_row(params![channel], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            let last_error = conn
                .prepare_cached(
                    "SELECT last_error FROM channel_outbox
                     WHERE channel = ?1 AND last_error IS NOT NULL
                     ORDER BY updated_ms DESC, id DESC LIMIT 1",
                )?
                .query_row(params![channel], |r| r.get(0))
                .optional()?;
            let last_delivery_failure = conn
                .prepare_cached(
                    "SELECT coalesce(delivery_detail, 'failed') FROM channel_outbox
                     WHERE channel = ?1 AND status = 'sent' AND delivery = 'failed'
                     ORDER BY updated_ms DESC, id DESC LIMIT 1",
                )?
                .query_row(params![channel], |r| r.get(0))
                .optional()?;
            Ok(OutboxStats {
                depth: depth.max(0) as u64,
                in_flight: in_flight.max(0) as u64,
                failed: failed.max(0) as u64,
                last_error,
                delivery_failed: delivery_failed.max(0) as u64,
                last_delivery_failure,
            })
        })
    }
}

fn in_doubt(conn: &rusqlite::Connection, channel: &str) -> Result<Vec<OutboxItem>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, conversation, message, attempts, plain FROM channel_outbox
         WHERE channel = ?1 AND status = 'pending' AND sending_since_ms IS NOT NULL
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![channel], item)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InboxStore, NewInbound};

    fn out(conv: &str, text: &str) -> NewOutbound {
        NewOutbound {
            conversation: conv.into(),
            message: text.into(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn final_reply_settles_the_inbox_and_heads_keep_conversation_order() -> Result<(), StoreError> {
        let s = SqliteStore::in_memory()?;
        let m = NewInbound {
            platform_id: "1".into(),
            conversation: "a".into(),
            payload: "{}".into(),
        };
        s.commit_inbound("c", "default", &[m], None)?;
        let seq = s.inbox_pending("c", 0, 1)?[0].seq;
        let ids = s.outbox_enqueue(
            "c",
            "default",
            InboxLink::Answers(seq),
            &[out("a", "1"), out("a", "2")],
        )?;
        s.outbox_enqueue("c", "default", InboxLink::None, &[out("b", "3")])?;
        assert!(s.inbox_pending("c", 0, 10)?.is_empty(), "answered");
        let due = s.outbox_due("c", i64::MAX, 10)?;
        assert_eq!(
            due.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(),
            ["1", "3"]
        );
        s.outbox_retry(ids[0], i64::MAX - 1, 1, true, "transient")?;
        assert_eq!(s.outbox_due("c", 0, 10)?.len(), 0);
        assert!(s.outbox_next_due("c")?.is_some_and(|t| t < i64::MAX - 1));
        s.outbox_failed(ids[0], 2, "permanent: no")?;
        // The failed head no longer blocks its conversation.
        let due = s.outbox_due("c", i64::MAX, 10)?;
        assert_eq!(
            due.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(),
            ["2", "3"]
        );
        s.outbox_delivered(ids[1], "p2")?;
        let st = s.outbox_stats("c")?;
        assert_eq!((st.depth, st.failed), (1, 1));
        assert_eq!(st.last_error.as_deref(), Some("permanent: no"));
        Ok(())
    }

    #[test]
    fn the_next_due_time_is_a_heads_not_a_message_waiting_behind_it() -> Result<(), StoreError> {
        let s = SqliteStore::in_memory()?;
        let ids = s.outbox_enqueue(
            "c",
            "default",
            InboxLink::None,
            &[out("a", "1"), out("a", "2")],
        )?;
        s.outbox_retry(ids[0], i64::MAX - 1, 1, false, "not running")?;
        // The message behind the head is older than the head's retry: a
        // worker that took its time would see "due now", find nothing due
        // and never wake up (the 600 s hang of the kill -9 test).
        assert!(s.outbox_due("c", i64::MAX - 2, 10)?.is_empty());
        assert_eq!(s.outbox_next_due("c")?, Some(i64::MAX - 1));
        Ok(())
    }

    #[test]
    fn sends_in_flight_are_in_doubt_after_a_crash_and_recovered_as_asked() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Limit(e.to_string()))?;
        let path = dir.path().join("db");
        let ids = {
            let s = SqliteStore::open(&path)?;
            let ids = s.outbox_enqueue(
                "c",
                "default",
                InboxLink::None,
                &[out("a", "1"), out("b", "2"), out("c", "3")],
            )?;
            assert!(s.outbox_begin(ids[0])?);
            assert!(!s.outbox_begin(ids[0])?, "in flight already");
            assert!(s.outbox_begin(ids[1])?);
            // In flight: neither due nor counted as due.
            let due = s.outbox_due("c", i64::MAX, 10)?;
            assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);
            assert_eq!(s.outbox_stats("c")?.in_flight, 2);
            ids
            // The process dies here.
        };
        let s = SqliteStore::open(&path)?;
        let doubt = s.outbox_in_doubt("c")?;
        assert_eq!(doubt.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..2]);
        assert_eq!(s.outbox_recover("c", InDoubt::Resend)?.len(), 2);
        assert!(s.outbox_in_doubt("c")?.is_empty());
        assert_eq!(s.outbox_due("c", i64::MAX, 10)?.len(), 3);
        assert!(s.outbox_begin(ids[2])?);
        assert_eq!(s.outbox_recover("c", InDoubt::Fail)?.len(), 1);
        let st = s.outbox_stats("c")?;
        assert_eq!((st.depth, st.failed, st.in_flight), (2, 1, 0));
        assert!(st.last_error.unwrap_or_default().starts_with("in doubt"));
        Ok(())
    }

    #[test]
    fn statuses_are_recorded_against_sent_messages_and_never_go_back() -> Result<(), StoreError> {
        let s = SqliteStore::in_memory()?;
        let mut with_blob = out("a", "1");
        with_blob.blobs = vec!["b1".into(), "b2".into()];
        let ids = s.outbox_enqueue("c", "default", InboxLink::None, &[with_blob, out("a", "2")])?;
        assert_eq!(s.outbox_blobs_in_use()?, ["b1", "b2"]);
        assert!(
            !s.outbox_status("c", "w1", DeliveryState::Read, None)?,
            "not sent yet"
        );
        s.outbox_delivered(ids[0], "w1")?;
        assert!(
            s.outbox_blobs_in_use()?.is_empty(),
            "delivered: no longer held"
        );
        assert!(s.outbox_status("c", "w1", DeliveryState::Read, None)?);
        assert!(s.outbox_status("c", "w1", DeliveryState::Delivered, None)?);
        assert_eq!(s.outbox_stats("c")?.delivery_failed, 0);
        assert!(s.outbox_status(
            "c",
            "w1",
            DeliveryState::Failed,
            Some("131047: re-engagement")
        )?);
        let st = s.outbox_stats("c")?;
        assert_eq!(st.delivery_failed, 1);
        assert_eq!(
            st.last_delivery_failure.as_deref(),
            Some("131047: re-engagement")
        );
        assert_eq!(st.depth, 1);
        assert_eq!(s.outbox_rows("c", 10)?.len(), 1, "sent rows are not listed");
        assert_eq!(s.outbox_prune(i64::MAX, 10)?, 1, "the sent row is pruned");
        Ok(())
    }
}
