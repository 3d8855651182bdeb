//! [`InboxStore`] on the embedded SQLite database (tables from migration 6
//! in `sqlite.rs`, and the reply progress column from migration 8). A poll's messages and its new cursor are written in one
//! `IMMEDIATE` transaction, so a cursor never moves past a message that is
//! not committed; the unique (channel, account, platform id) index is the
//! durable dedupe.

use rusqlite::{OptionalExtension, params};

use super::columns::sql_limit;
use super::{InboxItem, InboxSettled, InboxStats, InboxStore, NewInbound, SqliteStore, StoreError};

/// Migration 6: the channel inbox and the platform cursors.
pub(super) const MIGRATION: &str = "CREATE TABLE channel_inbox (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        channel      TEXT NOT NULL,
        account      TEXT NOT NULL,
        platform_id  TEXT, -- NULL: the platform gave none (not deduplicated)
        conversation TEXT NOT NULL,
        payload      TEXT NOT NULL, -- '' once settled
        state        TEXT NOT NULL, -- pending, answered, refused, done
        received_ms  INTEGER NOT NULL,
        settled_ms   INTEGER
    );
    CREATE UNIQUE INDEX channel_inbox_dedupe ON channel_inbox (channel, account, platform_id);
    CREATE INDEX channel_inbox_pending ON channel_inbox (channel, state, seq);
    CREATE INDEX channel_inbox_settled ON channel_inbox (settled_ms) WHERE settled_ms IS NOT NULL;
    CREATE TABLE channel_cursors (
        channel    TEXT NOT NULL,
        account    TEXT NOT NULL,
        cursor     TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (channel, account)
    ) WITHOUT ROWID;";

impl InboxStore for SqliteStore {
    fn commit_inbound(
        &self,
        channel: &str,
        account: &str,
        messages: &[NewInbound],
        cursor: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.write_tx(|tx, now| {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO channel_inbox
                 (channel, account, platform_id, conversation, payload, state, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            )?;
            let mut new = 0;
            for m in messages {
                let id = (!m.platform_id.is_empty()).then_some(m.platform_id.as_str());
                new += insert.execute(params![
                    channel,
                    account,
                    id,
                    m.conversation,
                    m.payload,
                    now
                ])?;
            }
            if let Some(c) = cursor {
                tx.prepare_cached(
                    "INSERT INTO channel_cursors (channel, account, cursor, updated_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (channel, account) DO UPDATE
                     SET cursor = excluded.cursor, updated_ms = excluded.updated_ms",
                )?
                .execute(params![channel, account, c, now])?;
            }
            Ok(new)
        })
    }

    fn inbox_cursor(&self, channel: &str, account: &str) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT cursor FROM channel_cursors WHERE channel = ?1 AND account = ?2",
                )?
                .query_row(params![channel, account], |r| r.get(0))
                .optional()?)
        })
    }

    fn inbox_pending(
        &self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, channel, account, conversation, payload FROM channel_inbox
                 WHERE channel = ?1 AND state = 'pending' AND seq > ?2
                 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![channel, after, sql_limit(limit)], |r| {
                Ok(InboxItem {
                    seq: r.get(0)?,
                    channel: r.get(1)?,
                    account: r.get(2)?,
                    conversation: r.get(3)?,
                    payload: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn inbox_settle(&self, seq: i64, how: InboxSettled) -> Result<(), StoreError> {
        self.write_tx(|tx, now| {
            settle(tx, seq, how, now)?;
            Ok(())
        })
    }

    fn inbox_progress(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT progress FROM channel_inbox WHERE seq = ?1 AND state = 'pending'",
                )?
                .query_row(params![seq], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
    }

    fn inbox_set_progress(&self, seq: i64, progress: &str) -> Result<(), StoreError> {
        self.write_tx(|tx, _| set_progress(tx, seq, progress))
    }

    fn inbox_stats(&self, channel: &str) -> Result<InboxStats, StoreError> {
        self.read(|conn| {
            let pending: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM channel_inbox WHERE channel = ?1 AND state = 'pending'",
                )?
                .query_row(params![channel], |r| r.get(0))?;
            Ok(InboxStats {
                pending: pending.max(0) as u64,
            })
        })
    }

    fn inbox_prune(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        self.write_tx(|tx, _| {
            Ok(tx
                .prepare_cached(
                    "DELETE FROM channel_inbox WHERE seq IN (
                        SELECT seq FROM channel_inbox
                        WHERE settled_ms IS NOT NULL AND settled_ms < ?1 LIMIT ?2)",
                )?
                .execute(params![before_ms, sql_limit(limit)])?)
        })
    }
}

/// Settle inbox message `seq` inside a write transaction (the outbox uses
/// this to record "answered" with the final reply).
pub(super) fn settle(
    tx: &rusqlite::Connection,
    seq: i64,
    how: InboxSettled,
    now: i64,
) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "UPDATE channel_inbox SET state = ?2, payload = '', progress = NULL, settled_ms = ?3
             WHERE seq = ?1 AND state = 'pending'",
        )?
        .execute(params![seq, how.as_str(), now])?)
}

/// Record the reply progress of unsettled inbox message `seq` inside a
/// write transaction.
fn set_progress(tx: &rusqlite::Connection, seq: i64, progress: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE channel_inbox SET progress = ?2 WHERE seq = ?1 AND state = 'pending'",
    )?
    .execute(params![seq, progress])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, conv: &str) -> NewInbound {
        NewInbound {
            platform_id: id.into(),
            conversation: conv.into(),
            payload: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    #[test]
    fn commit_dedupes_keeps_the_cursor_and_settles() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Limit(e.to_string()))?;
        let path = dir.path().join("db");
        {
            let s = SqliteStore::open(&path)?;
            assert_eq!(
                s.commit_inbound("c", "default", &[msg("1", "a"), msg("2", "b")], Some("7"))?,
                2
            );
            assert_eq!(
                s.commit_inbound(
                    "c",
                    "default",
                    &[msg("1", "a"), msg("", "a"), msg("", "a")],
                    None
                )?,
                2
            );
            assert_eq!(
                s.commit_inbound("c", "other", &[msg("1", "a")], Some("x"))?,
                1
            );
        }
        let s = SqliteStore::open(&path)?;
        assert_eq!(s.inbox_cursor("c", "default")?.as_deref(), Some("7"));
        assert_eq!(s.inbox_cursor("c", "other")?.as_deref(), Some("x"));
        let p = s.inbox_pending("c", 0, 10)?;
        assert_eq!(p.len(), 5);
        assert_eq!(s.inbox_pending("c", p[1].seq, 2)?.len(), 2);
        s.inbox_set_progress(p[0].seq, "{\"consumed\":3}")?;
        assert_eq!(
            s.inbox_progress(p[0].seq)?.as_deref(),
            Some("{\"consumed\":3}")
        );
        s.inbox_settle(p[0].seq, InboxSettled::Answered)?;
        assert_eq!(s.inbox_progress(p[0].seq)?, None, "settled: progress gone");
        assert_eq!(s.inbox_stats("c")?.pending, 4);
        // InboxSettled stays deduplicated until pruned.
        assert_eq!(s.commit_inbound("c", "default", &[msg("1", "a")], None)?, 0);
        assert_eq!(s.inbox_prune(i64::MAX, 100)?, 1);
        assert_eq!(s.commit_inbound("c", "default", &[msg("1", "a")], None)?, 1);
        Ok(())
    }
}
