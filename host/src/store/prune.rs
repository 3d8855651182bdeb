//! Pruning in bounded batches: old events (keeping each sequence scope's
//! newest, so sequence numbers carry on) and settled webhook deliveries are
//! deleted at most [`PRUNE_BATCH`] rows per write transaction, so a prune of
//! millions of rows holds the writer only briefly at a time and waiting
//! writers get their turn between batches (see [`SqliteStore::write_tx`]).

use rusqlite::params;

use super::columns::sql_limit;
use super::pool::offload;
use super::{SqliteStore, StoreError};

/// Rows a prune examines per write transaction.
pub const PRUNE_BATCH: usize = 1000;

impl SqliteStore {
    /// Delete events older than `before_ms` except the newest of each
    /// sequence scope, examining at most `batch` old events per
    /// transaction (in `(ts, id)` order, on the `events_by_ts` index).
    /// `between` is called after each batch but the last with the number
    /// deleted so far, while no lock is held. Returns how many were deleted.
    pub fn prune_events_in_batches(
        &self,
        before_ms: i64,
        batch: usize,
        mut between: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        offload(|| {
            let mut cursor = (i64::MIN, i64::MIN);
            let mut total = 0;
            loop {
                let (deleted, examined, last) = self.write_tx(|tx, _| {
                    // The next `batch` old events (a walk over the
                    // (ts, id) index alone) ...
                    let keys = tx
                        .prepare_cached(
                            "SELECT ts, id FROM events INDEXED BY events_by_ts
                             WHERE ts < ?1 AND (ts, id) > (?2, ?3)
                             ORDER BY ts, id LIMIT ?4",
                        )?
                        .query_map(
                            params![before_ms, cursor.0, cursor.1, sql_limit(batch)],
                            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                        )?
                        .collect::<Result<Vec<_>, _>>()?;
                    let Some(&last) = keys.last() else {
                        return Ok((0, 0, None));
                    };
                    // ... of which those with a newer event in their scope
                    // go (one seek on the (scope, seq) index each).
                    let deleted = tx
                        .prepare_cached(
                            "DELETE FROM events INDEXED BY events_by_ts
                             WHERE ts < ?1 AND (ts, id) > (?2, ?3) AND (ts, id) <= (?4, ?5)
                               AND EXISTS (SELECT 1 FROM events n
                                   WHERE n.scope = events.scope AND n.seq > events.seq)",
                        )?
                        .execute(params![before_ms, cursor.0, cursor.1, last.0, last.1])?;
                    Ok((deleted as u64, keys.len(), Some(last)))
                })?;
                total += deleted;
                match last {
                    Some(last) if examined == batch => cursor = last,
                    _ => return Ok(total),
                }
                between(total);
            }
        })
    }

    /// Delete settled (delivered or failed) webhook deliveries created
    /// before `before_ms`, with their attempts, at most `batch` per
    /// transaction (in id order). `between` is called after each full
    /// batch with the number deleted so far, while no lock is held. Returns
    /// how many were deleted.
    pub fn prune_deliveries_in_batches(
        &self,
        before_ms: i64,
        batch: usize,
        mut between: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        offload(|| {
            let mut after = 0;
            let mut total = 0;
            loop {
                // Attempts go with their delivery (ON DELETE CASCADE).
                let ids = self.write_tx(|tx, _| {
                    Ok(tx
                        .prepare_cached(
                            "DELETE FROM webhook_deliveries WHERE id IN (
                                 SELECT id FROM webhook_deliveries
                                 WHERE id > ?2 AND status IN ('delivered', 'failed')
                                   AND created_ms < ?1
                                 ORDER BY id LIMIT ?3)
                             RETURNING id",
                        )?
                        .query_map(params![before_ms, after, sql_limit(batch)], |r| {
                            r.get::<_, i64>(0)
                        })?
                        .collect::<Result<Vec<_>, _>>()?)
                })?;
                total += ids.len() as u64;
                match ids.iter().max() {
                    Some(&last) if ids.len() == batch => after = last,
                    _ => return Ok(total),
                }
                between(total);
            }
        })
    }
}
