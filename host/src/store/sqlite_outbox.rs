//! [`OutboxStore`] on the embedded SQLite database (table from migration 7
//! in `sqlite.rs`). Delivered rows are deleted; failed ones stay for the
//! operator until pruned with age.

use rusqlite::{OptionalExtension, params};

use super::columns::sql_limit;
use super::sqlite_inbox::settle;
use super::{
    InboxSettled, NewOutbound, OutboxItem, OutboxStats, OutboxStore, SqliteStore, StoreError,
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

impl OutboxStore for SqliteStore {
    fn outbox_enqueue(
        &self,
        channel: &str,
        account: &str,
        answers: Option<i64>,
        messages: &[NewOutbound],
    ) -> Result<Vec<i64>, StoreError> {
        self.write_tx(|tx, now| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO channel_outbox (channel, account, conversation, message, inbox_seq,
                     status, next_attempt_ms, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)",
            )?;
            let mut ids = Vec::with_capacity(messages.len());
            for m in messages {
                insert.execute(params![
                    channel,
                    account,
                    m.conversation,
                    m.message,
                    answers,
                    now
                ])?;
                ids.push(tx.last_insert_rowid());
            }
            if let Some(seq) = answers {
                settle(tx, seq, InboxSettled::Answered, now)?;
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
                 WHERE o.next_attempt_ms <= ?2
                 ORDER BY o.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![channel, now_ms, sql_limit(limit)], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    conversation: r.get(1)?,
                    message: r.get(2)?,
                    attempts: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                    plain: r.get::<_, i64>(4)? != 0,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_attempt_ms) FROM channel_outbox
                     WHERE channel = ?1 AND status = 'pending'",
                )?
                .query_row(params![channel], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten())
        })
    }

    fn outbox_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.write_tx(|tx, _| {
            tx.prepare_cached("DELETE FROM channel_outbox WHERE id = ?1")?
                .execute(params![id])?;
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
                     last_error = ?5, updated_ms = ?6
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
                     updated_ms = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, attempts, error, now])?;
            Ok(())
        })
    }

    fn outbox_stats(&self, channel: &str) -> Result<OutboxStats, StoreError> {
        self.read(|conn| {
            let (depth, failed): (i64, i64) = conn
                .prepare_cached(
                    "SELECT coalesce(sum(status = 'pending'), 0), coalesce(sum(status = 'failed'), 0)
                     FROM channel_outbox WHERE channel = ?1",
                )?
                .query_row(params![channel], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let last_error = conn
                .prepare_cached(
                    "SELECT last_error FROM channel_outbox
                     WHERE channel = ?1 AND last_error IS NOT NULL
                     ORDER BY updated_ms DESC, id DESC LIMIT 1",
                )?
                .query_row(params![channel], |r| r.get(0))
                .optional()?;
            Ok(OutboxStats {
                depth: depth.max(0) as u64,
                failed: failed.max(0) as u64,
                last_error,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InboxStore, NewInbound};

    fn out(conv: &str, text: &str) -> NewOutbound {
        NewOutbound {
            conversation: conv.into(),
            message: text.into(),
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
        let ids = s.outbox_enqueue("c", "default", Some(seq), &[out("a", "1"), out("a", "2")])?;
        s.outbox_enqueue("c", "default", None, &[out("b", "3")])?;
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
        s.outbox_delivered(ids[1])?;
        let st = s.outbox_stats("c")?;
        assert_eq!((st.depth, st.failed), (1, 1));
        assert_eq!(st.last_error.as_deref(), Some("permanent: no"));
        Ok(())
    }
}
