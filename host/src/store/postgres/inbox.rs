//! [`InboxStore`] on PostgreSQL: a poll's messages and its new cursor in
//! one transaction, deduplicated by the unique (channel, account, platform
//! id) index. Commits to one channel take that channel's advisory lock, so
//! inbox `seq`s commit in order and the processor, which pages by `seq`,
//! never skips one.

use postgres::Transaction;

use super::conn::Db;
use super::{PgStore, limit};
use crate::store::{InboxItem, InboxSettled, InboxStats, InboxStore, NewInbound, StoreError};

impl InboxStore for PgStore {
    fn commit_inbound(
        &self,
        channel: &str,
        account: &str,
        messages: &[NewInbound],
        cursor: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.write(|db| commit_rows(db, channel, account, messages, cursor, None))
    }

    fn inbox_cursor(&self, channel: &str, account: &str) -> Result<Option<String>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT cursor FROM channel_cursors WHERE channel = $1 AND account = $2",
                &[&channel, &account],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
        })
    }

    fn inbox_pending(
        &self,
        channel: &str,
        after: i64,
        max: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT seq, channel, account, conversation, payload FROM channel_inbox
                 WHERE channel = $1 AND state = 'pending' AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&channel, &after, &limit(max)],
            )?
            .iter()
            .map(|r| {
                Ok(InboxItem {
                    seq: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    account: r.try_get(2)?,
                    conversation: r.try_get(3)?,
                    payload: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn inbox_settle(&self, seq: i64, how: InboxSettled) -> Result<(), StoreError> {
        self.write(|db| {
            settle(db, seq, how)?;
            Ok(())
        })
    }

    fn inbox_progress(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.read(|db| {
            Ok(db
                .opt(
                    "SELECT progress FROM channel_inbox WHERE seq = $1 AND state = 'pending'",
                    &[&seq],
                )?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten())
        })
    }

    fn inbox_set_progress(&self, seq: i64, progress: &str) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE channel_inbox SET progress = $2 WHERE seq = $1 AND state = 'pending'",
                &[&seq, &progress],
            )?;
            Ok(())
        })
    }

    fn inbox_stats(&self, channel: &str) -> Result<InboxStats, StoreError> {
        self.read(|db| {
            let pending: i64 = db
                .one(
                    "SELECT count(*) FROM channel_inbox WHERE channel = $1 AND state = 'pending'",
                    &[&channel],
                )?
                .try_get(0)?;
            Ok(InboxStats {
                pending: pending.max(0) as u64,
            })
        })
    }

    fn inbox_prune(&self, before_ms: i64, max: usize) -> Result<usize, StoreError> {
        self.write(|db| {
            Ok(db.exec(
                "DELETE FROM channel_inbox WHERE seq IN (
                    SELECT seq FROM channel_inbox
                    WHERE settled_ms IS NOT NULL AND settled_ms < $1 LIMIT $2)",
                &[&before_ms, &limit(max)],
            )? as usize)
        })
    }
}

/// Commit `messages` (and `cursor`) of (`channel`, `account`) in the
/// caller's transaction under the channel's advisory lock; with `fence`,
/// recorded as committed under that lease token (checked by the caller).
pub(super) fn commit_rows(
    db: &mut Db<'_, Transaction<'_>>,
    channel: &str,
    account: &str,
    messages: &[NewInbound],
    cursor: Option<&str>,
    fence: Option<i64>,
) -> Result<usize, StoreError> {
    let now = db.now;
    let lock = format!("pincer:inbox:{channel}");
    db.exec(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock],
    )?;
    let mut new = 0;
    for m in messages {
        let id = (!m.platform_id.is_empty()).then_some(m.platform_id.as_str());
        new += db.exec(
            "INSERT INTO channel_inbox
             (channel, account, platform_id, conversation, payload, state, received_ms, fence)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)
             ON CONFLICT (channel, account, platform_id) DO NOTHING",
            &[
                &channel,
                &account,
                &id,
                &m.conversation,
                &m.payload,
                &now,
                &fence,
            ],
        )? as usize;
    }
    if new > 0 {
        // The lease holder's processor wakes at commit (ids only).
        db.exec(
            "SELECT pg_notify($1, $2)",
            &[&super::cluster::INBOX_CHANNEL, &channel],
        )?;
    }
    if let Some(c) = cursor {
        db.exec(
            "INSERT INTO channel_cursors (channel, account, cursor, updated_ms, fence)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (channel, account) DO UPDATE
             SET cursor = excluded.cursor, updated_ms = excluded.updated_ms,
                 fence = excluded.fence",
            &[&channel, &account, &c, &now, &fence],
        )?;
    }
    Ok(new)
}

/// Settle inbox message `seq` in the caller's transaction (the outbox uses
/// this to record "answered" with the final reply).
pub(super) fn settle(
    db: &mut Db<'_, Transaction<'_>>,
    seq: i64,
    how: InboxSettled,
) -> Result<u64, StoreError> {
    let now = db.now;
    db.exec(
        "UPDATE channel_inbox SET state = $2, payload = '', progress = NULL, settled_ms = $3
         WHERE seq = $1 AND state = 'pending'",
        &[&seq, &how.as_str(), &now],
    )
}
