//! [`LeaseStore`] on PostgreSQL (`channel_leases`): acquisition is one
//! upsert that only takes a row nobody holds (released, or run out by the
//! server's clock, so nodes' clocks never have to agree) or this node
//! held (a restarted node takes its accounts back at once: its node id
//! is kept in its data directory) and bumps the fencing token; a fenced inbox commit locks the lease row (`FOR SHARE`)
//! and checks its token in the commit's own transaction, so a takeover
//! (which updates the row) is ordered before or after the whole commit,
//! never in the middle.

use super::PgStore;
use super::inbox::commit_rows;
use crate::store::{Fence, LeaseRow, LeaseStore, NewInbound, StoreError};

/// The server's clock in Unix ms (SQL).
macro_rules! db_now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

fn ms(lease_ms: u64) -> i64 {
    i64::try_from(lease_ms).unwrap_or(i64::MAX)
}

impl LeaseStore for PgStore {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn lease_acquire(&self, channel: &str, lease_ms: u64) -> Result<Option<Fence>, StoreError> {
        let owner = self.node.as_str();
        let lease = ms(lease_ms);
        self.write(|db| {
            let row = db.opt(
                concat!(
                    "INSERT INTO channel_leases AS l (channel, owner, token, expires_ms, acquired_ms)
                     VALUES ($1, $2, 1, ",
                    db_now!(),
                    " + $3, ",
                    db_now!(),
                    ")
                     ON CONFLICT (channel) DO UPDATE
                     SET owner = excluded.owner, token = l.token + 1,
                         expires_ms = excluded.expires_ms, acquired_ms = excluded.acquired_ms
                     WHERE l.expires_ms <= excluded.acquired_ms OR l.owner = excluded.owner
                     RETURNING token"
                ),
                &[&channel, &owner, &lease],
            )?;
            Ok(row
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .map(|token| Fence {
                    channel: channel.to_string(),
                    owner: owner.to_string(),
                    token,
                }))
        })
    }

    fn lease_renew(&self, fence: &Fence, lease_ms: u64) -> Result<bool, StoreError> {
        let lease = ms(lease_ms);
        self.write(|db| {
            Ok(db.exec(
                concat!(
                    "UPDATE channel_leases SET expires_ms = ",
                    db_now!(),
                    " + $4
                     WHERE channel = $1 AND owner = $2 AND token = $3"
                ),
                &[&fence.channel, &fence.owner, &fence.token, &lease],
            )? == 1)
        })
    }

    fn lease_release(&self, fence: &Fence) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE channel_leases SET expires_ms = 0
                 WHERE channel = $1 AND owner = $2 AND token = $3",
                &[&fence.channel, &fence.owner, &fence.token],
            )?;
            Ok(())
        })
    }

    fn lease_row(&self, channel: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.read(|db| {
            db.opt(
                "SELECT channel, owner, token, expires_ms FROM channel_leases WHERE channel = $1",
                &[&channel],
            )?
            .map(|r| {
                Ok(LeaseRow {
                    channel: r.try_get(0)?,
                    owner: r.try_get(1)?,
                    token: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                })
            })
            .transpose()
        })
    }

    fn commit_inbound_fenced(
        &self,
        channel: &str,
        account: &str,
        messages: &[NewInbound],
        cursor: Option<&str>,
        fence: &Fence,
    ) -> Result<usize, StoreError> {
        self.write(|db| {
            let current = db
                .opt(
                    "SELECT owner, token FROM channel_leases WHERE channel = $1 FOR SHARE",
                    &[&fence.channel],
                )?
                .map(|r| -> Result<(String, i64), StoreError> {
                    Ok((r.try_get(0)?, r.try_get(1)?))
                })
                .transpose()?;
            match current {
                Some((owner, token)) if owner == fence.owner && token == fence.token => {}
                Some((owner, token)) => {
                    return Err(StoreError::Fenced(format!(
                        "lease of `{}` is held by {owner} with token {token}, not {} with token {}",
                        fence.channel, fence.owner, fence.token
                    )));
                }
                None => {
                    return Err(StoreError::Fenced(format!(
                        "no lease of `{}` exists",
                        fence.channel
                    )));
                }
            }
            commit_rows(db, channel, account, messages, cursor, Some(fence.token))
        })
    }
}
