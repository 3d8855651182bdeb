//! [`PairingStore`] on the embedded SQLite database (tables from migration 5
//! in `sqlite.rs`). Every change runs in one `IMMEDIATE` transaction, so two
//! pushes from one sender never get two codes and an account never holds
//! more pending requests than allowed, even with several gateway processes
//! (or the `pincer pairing` command) on one database.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::sqlite_outbox::insert_outbound;
use super::{
    ApproveOutcome, ApprovedSender, PairingNotice, PairingRequest, PairingStore, RequestOutcome,
    SqliteStore, StoreError,
};

/// Migration 5: pending pairing requests (one per sender, codes unique per
/// channel account) and approved senders.
pub(super) const MIGRATION: &str = "CREATE TABLE channel_pairing_requests (
        channel      TEXT NOT NULL,
        account      TEXT NOT NULL,
        code         TEXT NOT NULL,
        sender       TEXT NOT NULL,
        sender_name  TEXT,
        conversation TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        PRIMARY KEY (channel, account, code),
        UNIQUE (channel, account, sender)
    ) WITHOUT ROWID;
    CREATE TABLE channel_pairing_approved (
        channel     TEXT NOT NULL,
        account     TEXT NOT NULL,
        sender      TEXT NOT NULL,
        sender_name TEXT,
        approved_ms INTEGER NOT NULL,
        PRIMARY KEY (channel, account, sender)
    ) WITHOUT ROWID;";

/// The `channel_pairing_requests` columns [`request_row`] reads, in order.
macro_rules! request_cols {
    () => {
        "channel, account, code, sender, sender_name, conversation, created_ms, expires_ms"
    };
}

fn request_row(r: &Row<'_>) -> rusqlite::Result<PairingRequest> {
    Ok(PairingRequest {
        channel: r.get(0)?,
        account_id: r.get(1)?,
        code: r.get(2)?,
        sender: r.get(3)?,
        sender_name: r.get(4)?,
        conversation: r.get(5)?,
        created_ms: r.get(6)?,
        expires_ms: r.get(7)?,
    })
}

fn approved(
    conn: &Connection,
    channel: &str,
    account: &str,
    sender: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM channel_pairing_approved
             WHERE channel = ?1 AND account = ?2 AND sender = ?3)",
        )?
        .query_row(params![channel, account, sender], |r| r.get(0))?)
}

impl PairingStore for SqliteStore {
    fn is_approved(&self, channel: &str, account: &str, sender: &str) -> Result<bool, StoreError> {
        self.read(|conn| approved(conn, channel, account, sender))
    }

    fn request_pairing(
        &self,
        request: &PairingRequest,
        notice: &PairingNotice,
        now_ms: i64,
        max_pending: usize,
    ) -> Result<RequestOutcome, StoreError> {
        let (channel, account) = (&request.channel, &request.account_id);
        self.write_tx(|tx, now| {
            tx.prepare_cached(
                "DELETE FROM channel_pairing_requests
                 WHERE channel = ?1 AND account = ?2 AND expires_ms <= ?3",
            )?
            .execute(params![channel, account, now_ms])?;
            if approved(tx, channel, account, &request.sender)? {
                return Ok(RequestOutcome::Approved);
            }
            let pending: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM channel_pairing_requests
                     WHERE channel = ?1 AND account = ?2 AND sender = ?3)",
                )?
                .query_row(params![channel, account, request.sender], |r| r.get(0))?;
            if pending {
                return Ok(RequestOutcome::AlreadyPending);
            }
            let count: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM channel_pairing_requests WHERE channel = ?1 AND account = ?2",
                )?
                .query_row(params![channel, account], |r| r.get(0))?;
            if count >= max_pending as i64 {
                return Ok(RequestOutcome::Full);
            }
            tx.prepare_cached(concat!(
                "INSERT INTO channel_pairing_requests (",
                request_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                channel,
                account,
                request.code,
                request.sender,
                request.sender_name,
                request.conversation,
                request.created_ms,
                request.expires_ms,
            ])?;
            insert_outbound(
                tx,
                &notice.outbox,
                &notice.account,
                None,
                &notice.message,
                now,
            )?;
            Ok(RequestOutcome::Created(request.clone()))
        })
    }

    fn pending_pairings(
        &self,
        channel: &str,
        account: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<PairingRequest>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                request_cols!(),
                " FROM channel_pairing_requests
                 WHERE channel = ?1 AND (?2 IS NULL OR account = ?2) AND expires_ms > ?3
                 ORDER BY created_ms, code"
            ))?;
            let rows = stmt.query_map(params![channel, account, now_ms], request_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn approved_senders(
        &self,
        channel: &str,
        account: Option<&str>,
    ) -> Result<Vec<ApprovedSender>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT channel, account, sender, sender_name, approved_ms
                 FROM channel_pairing_approved
                 WHERE channel = ?1 AND (?2 IS NULL OR account = ?2)
                 ORDER BY approved_ms, sender",
            )?;
            let rows = stmt.query_map(params![channel, account], |r| {
                Ok(ApprovedSender {
                    channel: r.get(0)?,
                    account_id: r.get(1)?,
                    sender: r.get(2)?,
                    sender_name: r.get(3)?,
                    approved_ms: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn approve_pairing(
        &self,
        channel: &str,
        account: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<ApproveOutcome, StoreError> {
        self.write_tx(|tx, _| {
            let Some(req) = take(tx, channel, account, code)? else {
                return Ok(ApproveOutcome::Unknown);
            };
            if req.expires_ms <= now_ms {
                return Ok(ApproveOutcome::Expired);
            }
            tx.prepare_cached(
                "INSERT INTO channel_pairing_approved (channel, account, sender, sender_name, approved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (channel, account, sender) DO NOTHING",
            )?
            .execute(params![channel, account, req.sender, req.sender_name, now_ms])?;
            Ok(ApproveOutcome::Approved(ApprovedSender {
                channel: channel.to_string(),
                account_id: account.to_string(),
                sender: req.sender,
                sender_name: req.sender_name,
                approved_ms: now_ms,
            }))
        })
    }

    fn dismiss_pairing(
        &self,
        channel: &str,
        account: &str,
        code: &str,
    ) -> Result<Option<PairingRequest>, StoreError> {
        self.write_tx(|tx, _| take(tx, channel, account, code))
    }
}

/// Delete and return the request with `code`.
fn take(
    tx: &Connection,
    channel: &str,
    account: &str,
    code: &str,
) -> Result<Option<PairingRequest>, StoreError> {
    Ok(tx
        .prepare_cached(concat!(
            "DELETE FROM channel_pairing_requests
             WHERE channel = ?1 AND account = ?2 AND code = ?3
             RETURNING ",
            request_cols!()
        ))?
        .query_row(params![channel, account, code], request_row)
        .optional()?)
}
