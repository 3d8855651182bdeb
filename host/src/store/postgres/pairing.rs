//! [`PairingStore`] on PostgreSQL. A pairing request takes its account's
//! advisory lock, so two pushes from one sender never get two codes and an
//! account never holds more pending requests than allowed, however many
//! gateways share the database.

use postgres::{GenericClient, Row, Transaction};

use super::PgStore;
use super::conn::Db;
use super::outbox::insert_outbound;
use crate::store::{
    ApproveOutcome, ApprovedSender, PairingNotice, PairingRequest, PairingStore, RequestOutcome,
    StoreError,
};

/// The `channel_pairing_requests` columns [`request_row`] reads, in order.
macro_rules! request_cols {
    () => {
        "channel, account, code, sender, sender_name, conversation, created_ms, expires_ms"
    };
}

fn request_row(r: &Row) -> Result<PairingRequest, StoreError> {
    Ok(PairingRequest {
        channel: r.try_get(0)?,
        account_id: r.try_get(1)?,
        code: r.try_get(2)?,
        sender: r.try_get(3)?,
        sender_name: r.try_get(4)?,
        conversation: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        expires_ms: r.try_get(7)?,
    })
}

fn approved<C: GenericClient>(
    db: &mut Db<'_, C>,
    channel: &str,
    account: &str,
    sender: &str,
) -> Result<bool, StoreError> {
    Ok(db
        .one(
            "SELECT EXISTS (SELECT 1 FROM channel_pairing_approved
             WHERE channel = $1 AND account = $2 AND sender = $3)",
            &[&channel, &account, &sender],
        )?
        .try_get(0)?)
}

impl PairingStore for PgStore {
    fn is_approved(&self, channel: &str, account: &str, sender: &str) -> Result<bool, StoreError> {
        self.read(|db| approved(db, channel, account, sender))
    }

    fn request_pairing(
        &self,
        request: &PairingRequest,
        notice: &PairingNotice,
        now_ms: i64,
        max_pending: usize,
    ) -> Result<RequestOutcome, StoreError> {
        let (channel, account) = (request.channel.as_str(), request.account_id.as_str());
        let lock = format!("pincer:pairing:{channel}:{account}");
        self.write(|db| {
            db.exec(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&lock],
            )?;
            db.exec(
                "DELETE FROM channel_pairing_requests
                 WHERE channel = $1 AND account = $2 AND expires_ms <= $3",
                &[&channel, &account, &now_ms],
            )?;
            if approved(db, channel, account, &request.sender)? {
                return Ok(RequestOutcome::Approved);
            }
            let pending: bool = db
                .one(
                    "SELECT EXISTS (SELECT 1 FROM channel_pairing_requests
                     WHERE channel = $1 AND account = $2 AND sender = $3)",
                    &[&channel, &account, &request.sender],
                )?
                .try_get(0)?;
            if pending {
                return Ok(RequestOutcome::AlreadyPending);
            }
            let count: i64 = db
                .one(
                    "SELECT count(*) FROM channel_pairing_requests WHERE channel = $1 AND account = $2",
                    &[&channel, &account],
                )?
                .try_get(0)?;
            if count >= i64::try_from(max_pending).unwrap_or(i64::MAX) {
                return Ok(RequestOutcome::Full);
            }
            db.exec(
                concat!(
                    "INSERT INTO channel_pairing_requests (",
                    request_cols!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &channel,
                    &account,
                    &request.code,
                    &request.sender,
                    &request.sender_name,
                    &request.conversation,
                    &request.created_ms,
                    &request.expires_ms,
                ],
            )?;
            insert_outbound(db, &notice.outbox, &notice.account, None, &notice.message)?;
            Ok(RequestOutcome::Created(request.clone()))
        })
    }

    fn pending_pairings(
        &self,
        channel: &str,
        account: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<PairingRequest>, StoreError> {
        self.read(|db| {
            db.query(
                concat!(
                    "SELECT ",
                    request_cols!(),
                    " FROM channel_pairing_requests
                     WHERE channel = $1 AND ($2::text IS NULL OR account = $2::text)
                       AND expires_ms > $3
                     ORDER BY created_ms, code"
                ),
                &[&channel, &account, &now_ms],
            )?
            .iter()
            .map(request_row)
            .collect()
        })
    }

    fn approved_senders(
        &self,
        channel: &str,
        account: Option<&str>,
    ) -> Result<Vec<ApprovedSender>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT channel, account, sender, sender_name, approved_ms
                 FROM channel_pairing_approved
                 WHERE channel = $1 AND ($2::text IS NULL OR account = $2::text)
                 ORDER BY approved_ms, sender",
                &[&channel, &account],
            )?
            .iter()
            .map(|r| {
                Ok(ApprovedSender {
                    channel: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    sender: r.try_get(2)?,
                    sender_name: r.try_get(3)?,
                    approved_ms: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn approve_pairing(
        &self,
        channel: &str,
        account: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<ApproveOutcome, StoreError> {
        self.write(|db| {
            let Some(req) = take(db, channel, account, code)? else {
                return Ok(ApproveOutcome::Unknown);
            };
            if req.expires_ms <= now_ms {
                return Ok(ApproveOutcome::Expired);
            }
            db.exec(
                "INSERT INTO channel_pairing_approved
                 (channel, account, sender, sender_name, approved_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (channel, account, sender) DO NOTHING",
                &[&channel, &account, &req.sender, &req.sender_name, &now_ms],
            )?;
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
        self.write(|db| take(db, channel, account, code))
    }
}

/// Delete and return the request with `code`.
fn take(
    db: &mut Db<'_, Transaction<'_>>,
    channel: &str,
    account: &str,
    code: &str,
) -> Result<Option<PairingRequest>, StoreError> {
    db.opt(
        concat!(
            "DELETE FROM channel_pairing_requests
             WHERE channel = $1 AND account = $2 AND code = $3
             RETURNING ",
            request_cols!()
        ),
        &[&channel, &account, &code],
    )?
    .as_ref()
    .map(request_row)
    .transpose()
}
